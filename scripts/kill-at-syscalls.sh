#!/usr/bin/env bash
# SIGKILL at the moments that matter: at a write, an fsync or a rename. Runs a config
# once under strace, uninterrupted, listing every write, fsync and rename of
# can-train; then, for KILLS of those calls spread evenly over the run (a quarter
# of each kind), runs the config again from scratch with strace killing can-train
# (SIGKILL) as it makes that call, checks that every stage the killed run left
# finished equals the uninterrupted run's (no half-written stage is ever taken as
# finished), resumes it with --resume and checks that every artifact equals the
# uninterrupted run's (scripts/compare-runs.py: byte for byte, timings aside).
#   bash scripts/kill-at-syscalls.sh [CONFIG] [KILLS]   # defaults: configs/tiny-mocan.yaml, 24
# (std::ofstream writes large buffers with writev, small ones with write.)
# Exits non-zero on any difference, when a kill did not land, or when a resumed run fails.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/tiny-mocan.yaml}
kills=${2:-24}
name=$(basename "$config" .yaml)
bash scripts/install-packages.sh strace
export OMP_NUM_THREADS=1
mkdir -p runs
a=runs/kill-at-syscalls-$name-a
b=runs/kill-at-syscalls-$name-b
trace=runs/kill-at-syscalls-$name.trace
rm -rf "$a" "$b" "$a.log" "$b.log" "$trace"

syscalls=(rename fsync write writev)
strace -f -qq -y -e trace="$(IFS=,; echo "${syscalls[*]}")" -o "$trace" \
  build/can-train --config "$config" --set run.dir="$a" > "$a.log" 2>&1
# strace counts calls per thread: every call of interest must come from one thread,
# the one the injection counts on.
threads=$(awk '{print $1}' "$trace" | sort -u | wc -l)
[ "$threads" -eq 1 ] || { echo "kill-at-syscalls: calls from $threads threads; the counts below assume one" >&2; exit 1; }
declare -A total
for syscall in "${syscalls[@]}"; do
  total[$syscall]=$(grep -cE "^[0-9]+ +$syscall\(" "$trace")
done
echo "kill-at-syscalls: $config uninterrupted: ${total[rename]} renames, ${total[fsync]} fsyncs, ${total[write]} writes, ${total[writev]} writevs"

for ((k = 0; k < kills; k++)); do
  syscall=${syscalls[$((k % ${#syscalls[@]}))]}
  # The i-th of this kind's kills, at the middle of the i-th of its equal slices of the run.
  per_kind=$(( (kills + ${#syscalls[@]} - 1 - k % ${#syscalls[@]}) / ${#syscalls[@]} ))
  i=$((k / ${#syscalls[@]}))
  call=$(( (2 * i + 1) * total[$syscall] / (2 * per_kind) + 1 ))
  what=$(grep -E "^[0-9]+ +$syscall\(" "$trace" | sed -n "${call}p" | cut -c1-160)
  rm -rf "$b"
  status=0
  { strace -f -qq -o /dev/null -e trace="$syscall" -e inject="$syscall:signal=KILL:when=$call" \
      build/can-train --config "$config" --set run.dir="$b" > "$b.log" 2>&1; } 2> /dev/null || status=$?
  if [ "$status" -ne 137 ]; then
    tail -n 5 "$b.log"
    echo "kill-at-syscalls: the kill at $syscall $call did not land (exit status $status)"
    exit 1
  fi
  python3 scripts/compare-runs.py --finished-stages "$a" "$b" > "$b.compare" ||
    { cat "$b.compare"; echo "kill-at-syscalls: a stage the stopped run left finished differs"; exit 1; }
  finished=$(tail -n 1 "$b.compare" | cut -d' ' -f1)
  echo "kill-at-syscalls: SIGKILL $((k + 1))/$kills at $syscall $call/${total[$syscall]} ($finished stages finished): $what"
  build/can-train --config "$config" --set run.dir="$b" --resume >> "$b.log" 2>&1 ||
    { tail -n 20 "$b.log"; echo "kill-at-syscalls: the resumed run failed"; exit 1; }
  python3 scripts/compare-runs.py "$a" "$b" > "$b.compare" ||
    { cat "$b.compare"; echo "kill-at-syscalls: the resumed run differs from the uninterrupted one"; exit 1; }
done
echo "kill-at-syscalls: $kills SIGKILLs at writes, fsyncs and renames; every resumed run equals the uninterrupted one"
