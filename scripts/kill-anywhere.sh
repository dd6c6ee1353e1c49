#!/usr/bin/env bash
# SIGKILL anywhere: runs a config once uninterrupted, then again while killing
# can-train with SIGKILL at KILLS random moments, each time continuing with
# --resume, and checks that every artifact of the killed-and-resumed run equals the
# uninterrupted run's (scripts/compare-runs.py: byte for byte, timings aside).
#   bash scripts/kill-anywhere.sh [CONFIG] [KILLS]   # defaults: configs/tiny-mocan.yaml, 20
# PIPELINE, when set, overrides the config's pipeline (e.g. PIPELINE=primal_dual).
# SEED (default 1) seeds the moments; the kills are spread over every stage (below).
# Exits non-zero on any difference, or when a resumed run fails.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/tiny-mocan.yaml}
kills=${2:-20}
name=$(basename "$config" .yaml)${PIPELINE:+-$PIPELINE}
pipeline=()
[ -n "${PIPELINE:-}" ] && pipeline=(--set pipeline="$PIPELINE")
export OMP_NUM_THREADS=1
mkdir -p runs
a=runs/kill-anywhere-$name-a
b=runs/kill-anywhere-$name-b
rm -rf "$a" "$b" "$a.log" "$b.log" "$b.attempt"

start=$(date +%s%N)
build/can-train --config "$config" "${pipeline[@]}" --set run.dir="$a" > "$a.log" 2>&1
seconds=$(awk -v ns=$(( $(date +%s%N) - start )) 'BEGIN { printf "%.2f", ns / 1e9 }')
echo "kill-anywhere: $config uninterrupted in ${seconds} s"

# Kill k aims at stage floor(k·S/KILLS) of the S stages, in run order, so that the
# kills spread over every stage: it waits until that stage starts, then kills at a
# moment uniform in (0, the stage's uninterrupted duration]. A stage already
# finished by then is passed over. Then the run is resumed until it finishes.
mapfile -t stages < <(python3 -c 'import json, sys
for stage in json.load(open(sys.argv[1]))["stages"]: print(stage["name"], stage["seconds"])' "$a/stages.json")
RANDOM=${SEED:-1}
landed=0
resume=""
attempt() {  # starts one attempt in the background; its log goes to $b.attempt, then into $b.log
  : > "$b.attempt"
  build/can-train --config "$config" "${pipeline[@]}" --set run.dir="$b" $resume > "$b.attempt" 2>&1 &
  pid=$!
  resume="--resume"
}
finish_attempt() {  # waits for the attempt to end by itself; fails the script when it failed
  local status=0
  wait "$pid" || status=$?
  cat "$b.attempt" >> "$b.log"
  if [ "$status" -ne 0 ]; then
    tail -n 20 "$b.attempt"
    echo "kill-anywhere: a resumed run failed with exit status $status"
    exit 1
  fi
}
for ((k = 0; k < kills; k++)); do
  read -r stage stage_seconds <<< "${stages[$((k * ${#stages[@]} / kills))]}"
  [ -d "$b/$stage" ] && continue
  attempt
  until grep -qE "stage $stage: (starting|resuming)" "$b.attempt"; do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  delay=$(awk -v s="$stage_seconds" -v r=$RANDOM 'BEGIN { printf "%.2f", s * (r + 1) / 32768 }')
  sleep "$delay"
  if kill -KILL "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
    cat "$b.attempt" >> "$b.log"
    landed=$((landed + 1))
    now=$(grep -oE "stage [a-z_0-9.-]*: (starting|resuming)" "$b.attempt" | tail -n 1 | cut -d' ' -f2 | tr -d ':')
    echo "kill-anywhere: SIGKILL $landed, ${delay} s into stage $stage (running: ${now:-none})"
  else
    finish_attempt
  fi
done
attempt
finish_attempt
echo "kill-anywhere: $landed SIGKILLs landed; the run then finished"
python3 scripts/compare-runs.py "$a" "$b"
echo "kill-anywhere: every artifact equals the uninterrupted run's"
