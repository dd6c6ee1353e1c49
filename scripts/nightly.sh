#!/usr/bin/env bash
# Nightly regression: runs the tiny MoCAN and PeCAN configs and compares the
# numbers of their reports with the committed baseline (scripts/nightly-baseline.json)
# within the tolerances stated there; exits 1 on any regression and prints which
# number moved. With --update-baseline it rewrites the baseline from this run.
# Single-threaded, so the numbers are reproducible on one machine kind.
#   bash scripts/setup.sh build && bash scripts/nightly.sh [--update-baseline]
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
mkdir -p runs
for pipeline in mocan pecan; do
  rm -rf "runs/nightly-$pipeline"
  build/can-train --config "configs/tiny-$pipeline.yaml" --set "run.dir=runs/nightly-$pipeline" \
    > "runs/nightly-$pipeline.log" 2>&1 || { tail -n 20 "runs/nightly-$pipeline.log"; exit 1; }
done
python3 scripts/compare_reports.py scripts/nightly-baseline.json runs/nightly-mocan runs/nightly-pecan "$@"
