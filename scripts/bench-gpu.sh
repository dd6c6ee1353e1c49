#!/usr/bin/env bash
# The GPU benchmarks in one command (bench/gpu/README.md): CAN's build-cuda/bench_gpu against
# PyTorch + transformers (bench/gpu/*.py) on the same machine in the same run, merged into
# bench/results/gpu-<date>.json (also copied into $OUT when that is set) with a short table.
#   bash scripts/bench-gpu.sh               GPU machine, .devdeps/ present (scripts/gpu/prepare.sh): builds
#                                           build-cuda/ (scripts/gpu/build.sh), then runs every case
#   bash scripts/bench-gpu.sh --skip-build  uses build-cuda/bench_gpu as it is
#   bash scripts/bench-gpu.sh --smoke       any machine: build/bench_gpu, tiny shapes on the CPU, no
#                                           Python benchmarks; the merged JSON goes to a temporary
#                                           folder, never into bench/results/
# A case that fails is recorded under "errors" in the JSON and the others still run; the exit
# status is then 1. Step counts keep the run to about 5 minutes on an H100 after the build (most
# of it building the 7B model on the CPU); the build itself may take as long again.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=gpu
build=1
for argument in "$@"; do
  case "$argument" in
    --smoke) mode=smoke ;;
    --skip-build) build=0 ;;
    *) echo "bench-gpu.sh: unknown argument '$argument' (expected --smoke or --skip-build)" >&2; exit 2 ;;
  esac
done

date=$(date -u +%F)
if [ "$mode" = smoke ]; then
  bench=build/bench_gpu
  device=cpu
  dpo_args=(--shape tiny --batch 2 --seq 32 --steps 2 --warmup 1)
  sampling_args=(--shape tiny --batch 4 --prompt-length 8 --new-tokens 8 --steps 1)
  lora_args=(--shape tiny --batch 2 --seq 32 --steps 2 --warmup 1)
else
  bench=build-cuda/bench_gpu
  device=cuda
  dpo_args=(--shape 1b --batch 8 --seq 512 --steps 20 --warmup 5)
  sampling_args=(--shape 1b --batch 64 --prompt-length 64 --new-tokens 256 --steps 2)
  lora_args=(--shape 7b --batch 4 --seq 512 --steps 10 --warmup 3)
  output=bench/results/gpu-$date.json
  # A second run on the same day (another GPU kind) does not overwrite the first.
  [ -e "$output" ] && output=bench/results/gpu-$date-$(date -u +%H%M).json
  if [ "$build" = 1 ]; then
    bash scripts/gpu/build.sh || { echo "bench-gpu.sh: the CUDA build failed" >&2; exit 1; }
  fi
  # The C++ libraries bench_gpu links (spdlog, yaml-cpp, ...): the packages of .devdeps/, unpacked.
  . scripts/gpu/build.sh
  devdeps_unpack || exit 1
fi
[ -x "$bench" ] || { echo "bench-gpu.sh: $bench is missing: build it first" >&2; exit 1; }
run_dir=$(mktemp -d /tmp/can-bench-gpu.XXXXXX)
[ "$mode" = smoke ] && output=$run_dir/gpu-smoke-$date.json

# run_case NAME LIMIT_SECONDS COMMAND...: stdout to NAME.json, or stderr to NAME.err when it fails.
failed=0
run_case() {
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*" >&2
  local start=$SECONDS
  if timeout "$limit" "$@" > "$run_dir/$name.out" 2> "$run_dir/$name.log"; then
    mv "$run_dir/$name.out" "$run_dir/$name.json"
  else
    local status=$?
    { echo "exit status $status (124: over the ${limit} s limit)"; tail -n 40 "$run_dir/$name.log"; } > "$run_dir/$name.err"
    tail -n 5 "$run_dir/$name.err" >&2
    failed=1
  fi
  echo "   $((SECONDS - start)) s" >&2
  # Into $OUT at once, so that a run cut short still brings back the cases it finished.
  if [ -n "${OUT:-}" ]; then mkdir -p "$OUT/bench-gpu" && cp "$run_dir/$name".* "$OUT/bench-gpu/"; fi
}

if [ "$mode" = gpu ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n 1 > "$run_dir/nvidia_smi.csv"
  python3 - "$run_dir" <<'EOF'
import json, pathlib, sys
run_dir = pathlib.Path(sys.argv[1])
name, driver, memory = [field.strip() for field in (run_dir / "nvidia_smi.csv").read_text().split(",")]
system = {"device_name": name, "driver": driver, "memory_total": memory}
try:
    import torch, transformers
    system.update(torch=torch.__version__, cuda=torch.version.cuda, transformers=transformers.__version__)
except ImportError as error:
    system["python_error"] = str(error)
(run_dir / "system.json").write_text(json.dumps(system))
EOF
  if [ -n "${OUT:-}" ]; then mkdir -p "$OUT/bench-gpu" && cp "$run_dir/system.json" "$OUT/bench-gpu/"; fi
fi

run_case can_dpo 300 "$bench" dpo --device "$device" "${dpo_args[@]}"
[ "$mode" = gpu ] && run_case pytorch_dpo 300 python3 bench/gpu/dpo_step.py --device cuda "${dpo_args[@]}"
run_case can_sampling 300 "$bench" sampling --device "$device" "${sampling_args[@]}"
if [ "$mode" = gpu ]; then
  run_case transformers_sampling 300 python3 bench/gpu/sampling.py --device cuda "${sampling_args[@]}"
  # memory.used every 200 ms while the 7B case runs: the peak when the allocator's statistics are missing.
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$run_dir/lora_nvidia_smi.txt" &
  smi_pid=$!
fi
run_case can_lora 400 "$bench" lora --device "$device" "${lora_args[@]}"
if [ "$mode" = gpu ]; then kill "$smi_pid" && wait "$smi_pid" 2>/dev/null; fi

python3 bench/gpu/merge_results.py "$run_dir" --output "$output" --date "$date" || failed=1
if [ "$mode" = smoke ]; then
  # The plumbing works when the merged file has every section and a CAN figure in each.
  python3 - "$output" <<'EOF' || failed=1
import json, sys
result = json.load(open(sys.argv[1]))
for key in ("device", "date"):
    assert result.get(key), f"smoke: '{key}' missing in {sys.argv[1]}"
for section, key in (("dpo_step", "can_tokens_per_second"), ("sampling", "can_tokens_per_second"),
                     ("lora_7b", "tokens_per_second")):
    assert result[section][key] > 0, f"smoke: {section}.{key} is {result[section][key]!r}"
assert "errors" not in result, f"smoke: errors {result['errors']}"
print("smoke: every section has its CAN figure")
EOF
fi
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/bench-gpu"
  cp "$output" "$OUT/"
  cp "$run_dir"/* "$OUT/bench-gpu/" 2>/dev/null
fi
echo "run folder: $run_dir" >&2
exit "$failed"
