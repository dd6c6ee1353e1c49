#!/usr/bin/env bash
# The paper's Figures 1 and 4 from the offline scores of a finished run (docs/results.md):
#   fig1-dual.svg/.json        the safety scores of π_ref's samples, D̂(λ) for b = 0.5, 1, 1.5 with
#                              λ*, and PGD's path from λ₀ = 1 (can-dual --landscape)
#   fig4-subsample.svg/.json   λ* for b = 1 on random subsets of the prompts and of each prompt's
#                              responses, 20 subsets per size (can-dual --subsample-prompts ...)
# β is the run's dual.beta.
#   can-train --config configs/mocan.yaml && bash scripts/paper-figures.sh runs/mocan docs/figures
set -euo pipefail
cd "$(dirname "$0")/.."
run_dir=${1:?usage: paper-figures.sh RUN_DIR [OUT_DIR]}
out_dir=${2:-docs/figures}
scores="$run_dir/offline_scores/scores.jsonl"
[[ -f "$scores" ]] || { echo "paper-figures.sh: $scores does not exist: run can-train first" >&2; exit 1; }
beta=$(sed -n '/^dual:/,/^[a-z]/s/^  beta: //p' "$run_dir/config.resolved.yaml")
[[ -n "$beta" ]] || { echo "paper-figures.sh: no dual.beta in $run_dir/config.resolved.yaml" >&2; exit 1; }
mkdir -p "$out_dir"
build/can-dual --scores "$scores" --beta "$beta" --landscape 0.5,1,1.5 --json --plot "$out_dir/fig1-dual.svg" \
  > "$out_dir/fig1-dual.json"
build/can-dual --scores "$scores" --beta "$beta" --margin 1 --subsample-prompts 25,50,100,200 \
  --subsample-responses 2,4,8,16 --repeats 20 --json --plot "$out_dir/fig4-subsample.svg" \
  > "$out_dir/fig4-subsample.json"
echo "paper-figures.sh: wrote fig1-dual and fig4-subsample (.svg, .json) into $out_dir"
