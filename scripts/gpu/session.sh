#!/usr/bin/env bash
# One use of the GPU machine, from the project root, with .devdeps/ present (README, GPU):
#   bash scripts/gpu/session.sh [BUDGET_SECONDS] [--skip-bench]      (default 540)
# In order, each step with its own time limit inside the budget, every result
# written under $OUT (default gpu-out/) as soon as it exists:
#   1. configure build-cuda/ against the machine's own PyTorch and the packages of .devdeps/
#      (scripts/gpu/prepare.sh collects them where apt works; scripts/gpu/build.sh unpacks them)
#   2. build the GPU tests, llama_test, can-train and bench_gpu (-k 0: one failure stops nothing else)
#   3. the GPU tests and llama_test, with their measured differences (--gtest_output JSON)
#   4. configs/tiny-mocan.yaml on CUDA in float32, then with run.compute_dtype=bfloat16
#   5. scripts/bench-gpu.sh --skip-build with whatever time is left (its cases land in $OUT as they end)
# steps.txt says what each step returned and how long it took. Everything is also packed
# into $OUT/gpu-session.tar.gz (the device tool brings back only a few files). Exit
# status 1 when any step failed or was not run, after packing.
set -uo pipefail
cd "$(dirname "$0")/../.."
budget=${1:-540}
bench=1
[ "${2:-}" = --skip-bench ] && bench=0
out=${OUT:-gpu-out}
mkdir -p "$out"
begin=$SECONDS

# step NAME LIMIT COMMAND...: runs COMMAND for at most LIMIT seconds (less if the budget is shorter),
# output in $out/NAME.log, one line in $out/steps.txt.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((budget - (SECONDS - begin)))
  if [ "$left" -lt 15 ]; then echo "$name: not run (budget spent)" >> "$out/steps.txt"; return 1; fi
  [ "$limit" -gt "$left" ] && limit=$left
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local status=$?
  echo "$name: exit $status after $((SECONDS - start)) s (limit $limit s)" >> "$out/steps.txt"
  return "$status"
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
  cmake --version | head -n 1; c++ --version | head -n 1; nproc; date -u
} > "$out/system.txt" 2>&1

# The packages of .devdeps/ and the configure arguments, as scripts/gpu/build.sh makes them.
. scripts/gpu/build.sh
devdeps_unpack 2>> "$out/system.txt" && cuda_configure_args 2>> "$out/system.txt" \
  || echo "devdeps: failed (system.txt says why)" >> "$out/steps.txt"

step configure 120 cmake -S . -B build-cuda "${CUDA_CONFIGURE_ARGS[@]}"
targets=(gpu_model_test gpu_hf_parity_test gpu_distributed_test llama_test can-train bench_gpu)
step build 330 cmake --build build-cuda -j "$(nproc)" --target "${targets[@]}" -- -k 0
tail -n 40 "$out/build.log" > "$out/build.tail.log"

export CAN_SOURCE_DIR=$PWD CAN_BINARY_DIR=$PWD/build-cuda
for test in gpu_model_test gpu_hf_parity_test gpu_distributed_test llama_test; do
  [ -x build-cuda/$test ] && step "$test" 120 build-cuda/$test --gtest_output=json:"$out/$test.json"
done

for dtype in float32 bfloat16; do
  run=runs/gpu-tiny-mocan-$dtype
  rm -rf "$run"
  if [ -x build-cuda/can-train ]; then
    step "tiny_mocan_$dtype" 150 build-cuda/can-train --config configs/tiny-mocan.yaml --set run.device=cuda \
      --set run.compute_dtype=$dtype --set run.dir=$run
    mkdir -p "$out/tiny-mocan-$dtype"
    cp "$run"/eval/report.json "$run"/eval/report.md "$run"/dual/dual.json "$out/tiny-mocan-$dtype/" 2>/dev/null
    cp "$run"/*.json "$run"/*.log "$out/tiny-mocan-$dtype/" 2>/dev/null
  fi
done

left=$((budget - (SECONDS - begin)))
[ "$bench" = 1 ] && [ -x build-cuda/bench_gpu ] && step bench "$left" bash scripts/bench-gpu.sh --skip-build
tar -czf /tmp/gpu-session.tar.gz -C "$out" . && mv /tmp/gpu-session.tar.gz "$out/"
! grep -v ': exit 0 after' "$out/steps.txt"
