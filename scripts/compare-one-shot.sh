#!/usr/bin/env bash
# One-shot dualization (MoCAN) against the iterative primal-dual baseline, at the same
# margin, on the same models and pairs (docs/results.md, "One-shot against primal-dual"):
# for each seed, a MoCAN run trains the world's reference, reward and cost models and
# aligns once; a primal-dual run (pipeline: primal_dual) is given those very models
# (models.policy, models.reward, models.cost) and aligns in rounds. Then
# scripts/compare_one_shot.py writes OUT/comparison.json, comparison.md and comparison.svg.
#   bash scripts/setup.sh build && bash scripts/compare-one-shot.sh [--tiny] [--seeds K] --out DIR
# --tiny: configs/tiny-mocan.yaml (a few minutes in all); otherwise configs/mocan.yaml, the
# embedded default. Seeds are run.seed = 1..K (default 3). Each run is single-threaded;
# JOBS (default 1) seeds run at a time. CAN_BUILD_DIR (default build) holds can-train.
set -euo pipefail
config=configs/mocan.yaml
seeds=3
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) config=configs/tiny-mocan.yaml; shift ;;
    --seeds) seeds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "compare-one-shot: unknown argument '$1' (expected --tiny, --seeds K, --out DIR)" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || { echo "compare-one-shot: --out DIR is required" >&2; exit 2; }
out=$(realpath -m "$out")  # DIR as the caller named it; the runs start from the repository root
cd "$(dirname "$0")/.."
[[ "$seeds" =~ ^[1-9][0-9]*$ ]] || { echo "compare-one-shot: --seeds takes a positive integer, got '$seeds'" >&2; exit 2; }
can_train=${CAN_BUILD_DIR:-build}/can-train
[ -x "$can_train" ] || { echo "compare-one-shot: $can_train is missing; run bash scripts/setup.sh build" >&2; exit 2; }
export OMP_NUM_THREADS=1
mkdir -p "$out"

run_seed() {  # both methods for one seed; logs in DIR/seed-<s>/*.log
  local seed=$1 dir="$out/seed-$1"
  mkdir -p "$dir"
  "$can_train" --config "$config" --set run.seed="$seed" --set run.dir="$dir/one_shot" --resume \
    > "$dir/one_shot.log" 2>&1 || { echo "seed $seed: one-shot failed, see $dir/one_shot.log" >&2; return 1; }
  local costs=() cost
  for cost in "$dir"/one_shot/cost_model "$dir"/one_shot/cost_model_*; do
    [ -d "$cost" ] && costs+=("$cost/model")
  done
  local cost_list
  cost_list=$(IFS=,; echo "[${costs[*]}]")
  "$can_train" --config "$config" --set run.seed="$seed" --set pipeline=primal_dual \
    --set run.dir="$dir/primal_dual" --set models.policy="$dir/one_shot/reference/model" \
    --set models.reward="$dir/one_shot/reward_model/model" --set models.cost="$cost_list" --resume \
    > "$dir/primal_dual.log" 2>&1 || { echo "seed $seed: primal-dual failed, see $dir/primal_dual.log" >&2; return 1; }
  echo "compare-one-shot: seed $seed done"
}

jobs_at_once=${JOBS:-1}
pids=()
for seed in $(seq 1 "$seeds"); do
  run_seed "$seed" &
  pids+=($!)
  if [ "${#pids[@]}" -ge "$jobs_at_once" ]; then
    wait "${pids[0]}"
    pids=("${pids[@]:1}")
  fi
done
for pid in "${pids[@]}"; do wait "$pid"; done
python=python3
[ -x .venv/bin/python3 ] && python=.venv/bin/python3
"$python" scripts/compare_one_shot.py "$out" "bash scripts/compare-one-shot.sh $([ "$config" = configs/tiny-mocan.yaml ] && echo '--tiny ')--seeds $seeds --out $out"
