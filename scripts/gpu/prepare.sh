#!/usr/bin/env bash
# Collects what a GPU machine without a package registry lacks to build CAN (docs/design.md §7):
# the Debian -dev packages of CAN's C++ dependencies other than LibTorch, with the library
# packages they depend on. LibTorch comes from that machine's own PyTorch.
# Run on a Debian machine where apt works (no root needed), from anywhere in the project:
#   bash scripts/gpu/prepare.sh
# Writes .devdeps/ in the project's root (ignored by git; its old .deb files are replaced): the
# .deb files (apt-get download) and build.sh, which runs scripts/gpu/build.sh. Bring .devdeps/
# along with the working tree; on the GPU machine, from the project's root:
#   bash .devdeps/build.sh ctest --test-dir build-cuda -L gpu     build, then run a command
#   bash scripts/gpu/session.sh                                   build, GPU tests, tiny run, benchmarks
# DEVDEPS_EXTRA names more packages to collect; CAN_DEVDEPS_DIR replaces .devdeps/.
#
# The packages must not need a newer glibc than the GPU machine has. Debian 12's (glibc 2.36) run
# on the Ubuntu 24.04 machine (glibc 2.39) that CAN was built on; Debian 13's (glibc 2.41) may not.
# If build.sh fails there on a GLIBC_2.xx symbol, collect from Debian 12, or build those
# libraries from source with an old enough toolchain.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CAN_DEVDEPS_DIR:-$root/.devdeps}
case "$(cat /etc/debian_version 2> /dev/null)" in
  13* | trixie*) echo "prepare.sh: warning: Debian 13 packages may need a newer glibc than the GPU machine has" >&2 ;;
esac

# scripts/setup.sh's C++ packages, with fmt and GoogleTest's sources named explicitly.
dev="libsentencepiece-dev sentencepiece nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
     libgtest-dev libgmock-dev googletest libyaml-cpp-dev liblzma-dev zlib1g-dev libpcre2-dev libutf8proc-dev libgloo-dev
     ${DEVDEPS_EXTRA:-}"
# The library packages each -dev package depends on (their names differ between Debian 12 and 13),
# leaving out the C and C++ runtimes every machine has.
libraries=$(for package in $dev; do apt-cache depends "$package" 2> /dev/null | awk '/Depends: lib/ {print $2}'; done \
  | { grep -vE -- '-dev$|^(libc6|libgcc-s1|libstdc\+\+6|libgomp1)$' || true; } | sort -u)

mkdir -p "$target"
cd "$target"
rm -f ./*.deb
for package in $dev $libraries; do
  apt-get download "$package" 2>&1 | grep -vE '^W: Download is performed unsandboxed|^Get:|^Fetched ' || true
done
for package in $dev; do
  compgen -G "${package}_*.deb" > /dev/null || { echo "prepare.sh: $package was not downloaded" >&2; exit 1; }
done

# build.sh runs the project's own scripts/gpu/build.sh on the packages beside it, so that the
# two never drift apart.
rm -f build.sh
cat > build.sh << 'EOF'
#!/usr/bin/env bash
# Written by scripts/gpu/prepare.sh. On the GPU machine, from CAN's root: bash .devdeps/build.sh [CMD ARGS...]
# builds build-cuda/ with the packages in this folder (scripts/gpu/build.sh), then runs CMD.
[ -f scripts/gpu/build.sh ] || { echo "build.sh: run it from CAN's root (no scripts/gpu/build.sh here)" >&2; exit 1; }
CAN_DEVDEPS_DIR=$(cd "$(dirname "$0")" && pwd)
export CAN_DEVDEPS_DIR
exec bash scripts/gpu/build.sh "$@"
EOF
chmod +x build.sh
du -sh . | sed 's/^/prepare.sh: /'
