#!/usr/bin/env bash
# Sets up CAN on a fresh Debian 12 or 13 machine and runs one job:
#   bash scripts/setup.sh main    install, build, run the main job on the embedded default
#   bash scripts/setup.sh test    install, build, run the test suite (labels unit, e2e, reference)
#   bash scripts/setup.sh build   install and build only
# Idempotent: Debian packages already present are not reinstalled, .venv/ is reused
# when it already satisfies requirements.txt, and the build is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
job=${1:-build}

packages=(
  build-essential cmake ninja-build git python3 python3-venv
  libsentencepiece-dev sentencepiece
  nlohmann-json3-dev libcli11-dev libspdlog-dev libgtest-dev libgmock-dev libyaml-cpp-dev
  liblzma-dev zlib1g-dev libpcre2-dev libutf8proc-dev libgloo-dev
)
bash scripts/install-packages.sh "${packages[@]}"

# LibTorch comes from the PyTorch wheel in .venv/ (CMakeLists.txt finds it there).
# A .venv/ without a working pip (a venv that failed half-way) is made anew.
.venv/bin/python3 -m pip --version > /dev/null 2>&1 || python3 -m venv --clear .venv
stamp=.venv/requirements.installed
if ! { cat requirements.txt; .venv/bin/python3 --version; } | cmp -s - "$stamp"; then
  echo "setup: pip install -r requirements.txt into .venv/"
  .venv/bin/python3 -m pip install -q -r requirements.txt
  { cat requirements.txt; .venv/bin/python3 --version; } > "$stamp"
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > build.configure.log 2>&1 || { cat build.configure.log; exit 1; }
grep -E '^-- LibTorch' build.configure.log
cmake --build build -j "$(nproc)"

case "$job" in
  build) ;;
  main) bash scripts/main-job.sh ;;
  # Tests run as many at a time as there are cores, each single-threaded:
  # oversubscribed OpenMP threads spin and slow tiny models tenfold.
  test) OMP_NUM_THREADS=1 ctest --test-dir build -L 'unit|e2e|reference' --output-on-failure -j "$(nproc)" ;;
  *) echo "setup: unknown job '$job' (expected main, test or build)" >&2; exit 2 ;;
esac
