#!/usr/bin/env bash
# Kills a tiny MoCAN run with Ctrl-C (SIGINT) during DPO, resumes it with --resume and
# checks that the report and the aligned model are byte-identical to an uninterrupted run.
#   bash scripts/kill-resume-check.sh                       # full fine-tuning
#   EXTRA="--set lora.rank=4 --set lora.dropout=0.1" bash scripts/kill-resume-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
export OMP_NUM_THREADS=1
S="--set dpo.epochs=12 --set dpo.save_every=10 ${EXTRA:-}"
rm -rf runs/kill-a runs/kill-b
build/can-train --config configs/tiny-mocan.yaml --set run.dir=runs/kill-a $S > runs/kill-a.log 2>&1
build/can-train --config configs/tiny-mocan.yaml --set run.dir=runs/kill-b $S > runs/kill-b.log 2>&1 &
pid=$!
until grep -q "dpo update 40/" runs/kill-b.log 2>/dev/null; do
  kill -0 $pid 2>/dev/null || { tail -n 20 runs/kill-b.log; echo "kill-resume: the run ended before DPO"; exit 1; }
  sleep 0.2
done
kill -INT $pid
status=0; wait $pid || status=$?
[ $status -eq 130 ] || { echo "kill-resume: exit status $status after SIGINT, expected 130"; exit 1; }
grep -E "interrupted|checkpoint" runs/kill-b.log | tail -3
build/can-train --config configs/tiny-mocan.yaml --set run.dir=runs/kill-b $S --resume > runs/kill-b2.log 2>&1
grep -E "resum" runs/kill-b2.log | head -3
cmp runs/kill-a/eval/report.json runs/kill-b/eval/report.json
cmp runs/kill-a/dpo/model/model.safetensors runs/kill-b/dpo/model/model.safetensors
echo "kill-resume: report.json and the DPO model are byte-identical to the uninterrupted run"
