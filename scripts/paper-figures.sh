#!/usr/bin/env bash
# The paper's Figures 1, 3 and 4 from finished runs (docs/results.md):
#   fig1-dual.svg/.json        the safety scores of π_ref's samples, D̂(λ) for b = 0.5, 1, 1.5 with
#                              λ*, and PGD's path from λ₀ = 1 (can-dual --landscape)
#   fig4-subsample.svg/.json   λ* for b = 1 on random subsets of the prompts and of each prompt's
#                              responses, 20 subsets per size (can-dual --subsample-prompts ...)
#   fig3-win-rates.svg/.md     with a PeCAN run: judge win rates against the reference of MoCAN,
#                              PeCAN and PeCAN's two DPO baselines (helpfulness only, safety only),
#                              evaluated on the same prompts with the same sampling (can-eval, can-report)
#   fig3-mocan-sweep.svg       with a margin sweep in the MoCAN run: its sweep.svg (achieved reward
#                              against achieved safety improvement across margins)
# Figures 1 and 4 use the MoCAN run's offline scores and dual.beta. For Figure 3 both runs should
# share one reference policy, so that every win rate is against the same responses:
#   can-train --config configs/pecan.yaml --set run.dir=runs/pecan
#   can-train --config configs/mocan.yaml --set run.dir=runs/mocan --set models.policy=runs/pecan/reference/model
#   bash scripts/paper-figures.sh runs/mocan runs/pecan docs/figures
set -euo pipefail
cd "$(dirname "$0")/.."
mocan=${1:?usage: paper-figures.sh MOCAN_RUN [PECAN_RUN] [OUT_DIR]}
pecan=${2:-}
out_dir=${3:-docs/figures}
scores="$mocan/offline_scores/scores.jsonl"
[[ -f "$scores" ]] || { echo "paper-figures.sh: $scores does not exist: run can-train first" >&2; exit 1; }
# The value of SECTION.KEY in a run's config.resolved.yaml (two-space indented keys), without
# the quotes YAML puts around a string. Called as `x=$(config_value ...) || exit 1`, since a
# failure inside an argument's $(...) would not stop the script.
config_value() {
  local value
  value=$(sed -n "/^$2:/,/^[a-z]/s/^  $3: //p" "$1/config.resolved.yaml")
  [[ -n "$value" ]] || { echo "paper-figures.sh: no $2.$3 in $1/config.resolved.yaml" >&2; return 1; }
  value=${value#\"}
  echo "${value%\"}"
}
# Runs can-dual; exit 4 (some solve did not converge) is said, not swallowed by set -e.
can_dual() {
  local status=0
  build/can-dual "$@" || status=$?
  (( status == 0 )) || { echo "paper-figures.sh: can-dual $* exited with $status (4: a solve did not converge)" >&2; exit "$status"; }
}
beta=$(config_value "$mocan" dual beta) || exit 1
mkdir -p "$out_dir"
can_dual --scores "$scores" --beta "$beta" --landscape 0.5,1,1.5 --json --plot "$out_dir/fig1-dual.svg" \
  > "$out_dir/fig1-dual.json"
can_dual --scores "$scores" --beta "$beta" --margin 1 --subsample-prompts 25,50,100,200 \
  --subsample-responses 2,4,8,16 --repeats 20 --json --plot "$out_dir/fig4-subsample.svg" \
  > "$out_dir/fig4-subsample.json"
echo "paper-figures.sh: wrote fig1-dual and fig4-subsample into $out_dir"
[[ -f "$mocan/sweep.svg" ]] && cp "$mocan/sweep.svg" "$out_dir/fig3-mocan-sweep.svg"
[[ -n "$pecan" ]] || exit 0

# The baselines are evaluated as the pipeline's eval stage evaluates: its prompts, template, options and seed.
num_prompts=$(config_value "$pecan" eval num_prompts) || exit 1
max_new_tokens=$(config_value "$pecan" eval max_new_tokens) || exit 1
temperature=$(config_value "$pecan" eval temperature) || exit 1
top_p=$(config_value "$pecan" eval top_p) || exit 1
seed=$(config_value "$pecan" run seed) || exit 1
batch_size=$(config_value "$pecan" sampling batch_size) || exit 1
chat_template=$(config_value "$pecan" data chat_template) || exit 1
baselines="$pecan/paper-figures-baselines"
for baseline in helpfulness_dpo safety_dpo; do
  build/can-eval --policy "$pecan/$baseline/model" --reference "$pecan/reference/model" \
    --reward "$pecan/reward_model/model" --cost "$pecan/cost_model/model" \
    --prompts "$pecan/data/prompts_test.jsonl" --prompt-set held_out_templates --num-prompts "$num_prompts" \
    --max-new-tokens "$max_new_tokens" --temperature "$temperature" --top-p "$top_p" --seed "$seed" \
    --batch-size "$batch_size" --chat-template "$chat_template" \
    --out "$baselines/$baseline" > "$baselines-$baseline.log" 2>&1 \
    || { tail -n 5 "$baselines-$baseline.log"; exit 1; }
done
build/can-report --report "MoCAN=$mocan/eval" --report "PeCAN=$pecan/eval" \
  --report "DPO, helpfulness only=$baselines/helpfulness_dpo" --report "DPO, safety only=$baselines/safety_dpo" \
  --plot "$out_dir/fig3-win-rates.svg" --markdown "$out_dir/fig3-win-rates.md" > /dev/null
echo "paper-figures.sh: wrote fig3-win-rates into $out_dir"
