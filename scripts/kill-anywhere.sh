#!/usr/bin/env bash
# SIGKILL anywhere: runs a config once uninterrupted, then again while killing
# can-train with SIGKILL at KILLS random moments, each time continuing with
# --resume, and checks that every artifact of the killed-and-resumed run equals the
# uninterrupted run's (scripts/compare-runs.py: byte for byte, timings aside).
#   bash scripts/kill-anywhere.sh [CONFIG] [KILLS]   # defaults: configs/tiny-mocan.yaml, 20
# SEED (default 1) seeds the moments. Exits non-zero on any difference, or when a
# resumed run fails.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/tiny-mocan.yaml}
kills=${2:-20}
name=$(basename "$config" .yaml)
export OMP_NUM_THREADS=1
mkdir -p runs
a=runs/kill-anywhere-$name-a
b=runs/kill-anywhere-$name-b
rm -rf "$a" "$b" "$a.log" "$b.log"

start=$(date +%s%N)
build/can-train --config "$config" --set run.dir="$a" > "$a.log" 2>&1
seconds=$(awk -v ns=$(( $(date +%s%N) - start )) 'BEGIN { printf "%.2f", ns / 1e9 }')
echo "kill-anywhere: $config uninterrupted in ${seconds} s"

# Moments uniform in (0, 2·seconds/kills]: the kills spread over the whole run,
# restarts included, and each attempt is killed at a different point of its work.
RANDOM=${SEED:-1}
landed=0
resume=""
while true; do
  build/can-train --config "$config" --set run.dir="$b" $resume >> "$b.log" 2>&1 &
  pid=$!
  resume="--resume"
  if [ "$landed" -lt "$kills" ]; then
    delay=$(awk -v s="$seconds" -v k="$kills" -v r=$RANDOM 'BEGIN { printf "%.2f", 0.05 + 2 * s / k * r / 32767 }')
    sleep "$delay"
    if kill -KILL "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      landed=$((landed + 1))
      stage=$(grep -o "stage [a-z_]*: starting" "$b.log" | tail -n 1 | cut -d' ' -f2 | tr -d ':')
      echo "kill-anywhere: SIGKILL $landed after ${delay} s (in stage ${stage:-none})"
      continue
    fi
  fi
  status=0
  wait "$pid" || status=$?
  if [ "$status" -ne 0 ]; then
    tail -n 20 "$b.log"
    echo "kill-anywhere: the resumed run failed with exit status $status"
    exit 1
  fi
  break
done
echo "kill-anywhere: $landed SIGKILLs landed; the run then finished"
python3 scripts/compare-runs.py "$a" "$b"
echo "kill-anywhere: every artifact equals the uninterrupted run's"
