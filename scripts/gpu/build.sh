#!/usr/bin/env bash
# Builds CAN on a GPU machine that reaches no package registry (docs/design.md §7): LibTorch
# from the machine's own PyTorch (its CUDA build, found through its python3), every other
# C++ library from the Debian packages that scripts/gpu/prepare.sh collected into .devdeps/.
# Run on the GPU machine, with .devdeps/ in the project's root:
#   bash scripts/gpu/build.sh                configure and build every target into build-cuda/
#   bash scripts/gpu/build.sh CMD ARGS...    then run CMD with the unpacked libraries on
#                                            LD_LIBRARY_PATH (ctest --test-dir build-cuda -L gpu)
#   bash .devdeps/build.sh ...               the same (prepare.sh writes it; it runs this script)
# Writes the unpacked packages under $CAN_DEVDEPS_PREFIX (default /tmp/devdeps; unpacked once per
# machine) and build-cuda/ in the project's root (cmake's output in build-cuda/configure.log).
# CMAKE_EXTRA_ARGS adds configure arguments (e.g. -DTORCH_CUDA_ARCH_LIST=9.0); CAN_DEVDEPS_DIR
# replaces .devdeps/ as the folder of .deb files.
#
# Sourced (scripts/gpu/session.sh, scripts/bench-gpu.sh), it defines two functions and runs nothing:
#   devdeps_unpack        unpacks the .deb files once, puts their libraries on LD_LIBRARY_PATH and
#                         their programs on PATH; returns 1, saying why, when there are none
#   cuda_configure_args   sets the array CUDA_CONFIGURE_ARGS: cmake's arguments for build-cuda/
#                         (generator, Release, the PyTorch's CMake prefix and the unpacked packages)

CAN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CAN_DEVDEPS_DIR=${CAN_DEVDEPS_DIR:-$CAN_ROOT/.devdeps}
CAN_DEVDEPS_PREFIX=${CAN_DEVDEPS_PREFIX:-/tmp/devdeps}
CUDA_CONFIGURE_ARGS=()

devdeps_unpack() {
  if [ ! -d "$CAN_DEVDEPS_PREFIX/usr" ]; then
    local packages=("$CAN_DEVDEPS_DIR"/*.deb)
    if [ ! -e "${packages[0]}" ]; then
      echo "build.sh: no .deb files in $CAN_DEVDEPS_DIR: run bash scripts/gpu/prepare.sh where apt works" \
        "and bring .devdeps/ along (docs/design.md §7)" >&2
      return 1
    fi
    # Into a temporary folder first, so that an interrupted unpacking is not taken for a finished one.
    rm -rf "$CAN_DEVDEPS_PREFIX.partial"
    mkdir -p "$CAN_DEVDEPS_PREFIX.partial"
    local package
    for package in "${packages[@]}"; do dpkg -x "$package" "$CAN_DEVDEPS_PREFIX.partial" || return 1; done
    mv "$CAN_DEVDEPS_PREFIX.partial" "$CAN_DEVDEPS_PREFIX"
  fi
  export LD_LIBRARY_PATH="$CAN_DEVDEPS_PREFIX/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PATH="$CAN_DEVDEPS_PREFIX/usr/bin:$PATH"
}

# The PyTorch's prefix comes first, so that its LibTorch wins over any other (a CPU wheel in
# .venv/ that CMakeLists.txt would otherwise prefer).
cuda_configure_args() {
  local torch_prefix
  torch_prefix=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)') || {
    echo "build.sh: python3 cannot import torch; the GPU build needs the machine's PyTorch" >&2
    return 1
  }
  local extra=()
  read -r -a extra <<< "${CMAKE_EXTRA_ARGS:-}"
  CUDA_CONFIGURE_ARGS=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=$torch_prefix;$CAN_DEVDEPS_PREFIX/usr")
  if command -v ninja > /dev/null; then CUDA_CONFIGURE_ARGS+=(-G Ninja); fi
  CUDA_CONFIGURE_ARGS+=("${extra[@]}")
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$CAN_ROOT"
  devdeps_unpack
  cuda_configure_args
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2> /dev/null || true
  mkdir -p build-cuda
  cmake -S . -B build-cuda "${CUDA_CONFIGURE_ARGS[@]}" > build-cuda/configure.log 2>&1 \
    || { tail -n 60 build-cuda/configure.log; exit 1; }
  grep -E '^-- LibTorch' build-cuda/configure.log || true
  cmake --build build-cuda -j "$(nproc)" 2>&1 | tail -n 30
  if [ $# -gt 0 ]; then "$@"; fi
fi
