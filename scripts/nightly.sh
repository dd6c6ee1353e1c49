#!/usr/bin/env bash
# Nightly regression: runs the tiny MoCAN and PeCAN configs, with one constraint and
# with two (configs/tiny-mocan-two-constraints.yaml), and compares the
# numbers of their reports with the committed baseline (scripts/nightly-baseline.json)
# within the tolerances stated there; exits 1 on any regression and prints which
# number moved. With --update-baseline it rewrites the baseline from this run.
# Single-threaded, so the numbers are reproducible on one machine kind.
#   bash scripts/setup.sh build && bash scripts/nightly.sh [--update-baseline]
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
mkdir -p runs
# run name, config, extra arguments
runs=("mocan configs/tiny-mocan.yaml" "pecan configs/tiny-pecan.yaml"
      "mocan-two-constraints configs/tiny-mocan-two-constraints.yaml"
      "pecan-two-constraints configs/tiny-mocan-two-constraints.yaml --set pipeline=pecan")
for run in "${runs[@]}"; do
  read -r name config extra <<< "$run"
  rm -rf "runs/nightly-$name"
  # shellcheck disable=SC2086  # $extra is a list of arguments
  build/can-train --config "$config" --set "run.dir=runs/nightly-$name" $extra \
    > "runs/nightly-$name.log" 2>&1 || { tail -n 20 "runs/nightly-$name.log"; exit 1; }
done
python3 scripts/compare_reports.py scripts/nightly-baseline.json runs/nightly-mocan runs/nightly-pecan \
  runs/nightly-mocan-two-constraints runs/nightly-pecan-two-constraints "$@"
