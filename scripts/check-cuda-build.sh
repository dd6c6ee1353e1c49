#!/usr/bin/env bash
# Compiles and links every target of CAN against the CUDA build of LibTorch,
# without a GPU: proof that the sources a GPU user builds still compile.
#   bash scripts/check-cuda-build.sh
# Creates .venv-cuda/ (torch==2.14.1, a CUDA 13 wheel, with its nvidia-* wheels
# and nvcc; several GB, once) and build-cuda-check/; runs nothing. Exits non-zero
# on any configure, compile or link error. Part of scripts/ci-extended.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-cuda
requirements=(torch==2.14.1 "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-crt==13.0.*"
              "nvidia-nvvm==13.0.*")
stamp=$venv/requirements.installed
if ! printf '%s\n' "${requirements[@]}" | cmp -s - "$stamp"; then
  [ -x $venv/bin/python3 ] || python3 -m venv $venv
  echo "check-cuda-build: pip install ${requirements[*]} into $venv/"
  $venv/bin/python3 -m pip install -q "${requirements[@]}"
  printf '%s\n' "${requirements[@]}" > "$stamp"
fi

# The wheels hold a CUDA toolkit in pieces (nvidia/cu13: nvcc, headers, versioned
# libraries). CMake wants one root with lib64/ and unversioned library names: a root
# of symbolic links gives it one. bin/ is copied, not linked: nvcc finds lib64/
# relative to its own real location.
site=$($venv/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cuda=$site/nvidia/cu13
toolkit=$PWD/$venv/cuda-toolkit
rm -rf "$toolkit" && mkdir -p "$toolkit/lib64"
cp -r "$cuda/bin" "$toolkit/bin"
for folder in include nvvm; do ln -s "$cuda/$folder" "$toolkit/$folder"; done
for library in "$cuda"/lib/*.so.*; do
  name=$(basename "$library")
  ln -sf "$library" "$toolkit/lib64/$name"
  ln -sf "$library" "$toolkit/lib64/${name%%.so.*}.so"
done
for archive in "$cuda"/lib/*.a; do [ -e "$archive" ] && ln -s "$archive" "$toolkit/lib64/"; done

# The architectures to compile for, named so that LibTorch's CMake does not probe for a GPU.
export TORCH_CUDA_ARCH_LIST=9.0
torch_prefix=$($venv/bin/python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
echo "check-cuda-build: torch $($venv/bin/python3 -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
cmake -S . -B build-cuda-check -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix" -DCUDAToolkit_ROOT="$toolkit" -DCUDA_TOOLKIT_ROOT_DIR="$toolkit" -DCMAKE_CUDA_COMPILER="$toolkit/bin/nvcc" \
  | tee build-cuda-check.configure.log
grep -q -- '-- LibTorch .*(CUDA: ON)' build-cuda-check.configure.log || { echo "check-cuda-build: LibTorch without CUDA" >&2; exit 1; }
cmake --build build-cuda-check -j "$(nproc)"
echo "check-cuda-build: every target compiled and linked against the CUDA LibTorch"
