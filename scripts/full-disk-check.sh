#!/usr/bin/env bash
# Full and read-only disks. Runs a config once uninterrupted, then once per stage with
# its run directory on a tmpfs that fills during that stage (the space the stages
# before it hold, plus half of what the stage itself leaves), and checks each time
# that can-train stops with exit status 1 and an error naming the file it could
# not write and "No space left on device"; that every stage it left finished equals
# the uninterrupted run's; that on the same file system made read-only, --resume
# stops with exit status 1 naming the read-only file system and changes nothing; and
# that, given room again, --resume finishes with every artifact equal to the
# uninterrupted run's (scripts/compare-runs.py).
#   bash scripts/full-disk-check.sh [CONFIG]   # default: configs/tiny-mocan.yaml
# Needs root (it mounts tmpfs, in a mount namespace of its own that ends with it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CAN_FULL_DISK_NAMESPACE:-}" ]; then
  exec unshare --mount --propagation private env CAN_FULL_DISK_NAMESPACE=1 bash "$0" "$@"
fi
config=${1:-configs/tiny-mocan.yaml}
name=$(basename "$config" .yaml)
export OMP_NUM_THREADS=1
mkdir -p runs
a=runs/full-disk-$name-a
mnt=runs/full-disk-$name-mnt
b=$mnt/run
rm -rf "$a" "$a.log"
mkdir -p "$mnt"
build/can-train --config "$config" --set run.dir="$a" > "$a.log" 2>&1
# Sizes in 4 KiB blocks as tmpfs counts them: every file takes whole blocks.
blocks() { du -s --block-size=4096 "$@" | awk '{ total += $1 } END { print total + 0 }'; }
needed=$(blocks "$a")
mapfile -t stages < <(python3 -c 'import json, sys
for stage in json.load(open(sys.argv[1]))["stages"]: print(stage["name"])' "$a/stages.json")
echo "full-disk: $config uninterrupted: $needed blocks of 4 KiB in its run directory"

tree_digest() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16); }

for ((s = 0; s < ${#stages[@]}; s++)); do
  # The stages before this one run with room to spare (a stage's checkpoints can take
  # more than every later stage together); then the file system shrinks to what they
  # hold plus half of what this stage leaves, and the run continues into it.
  mount -t tmpfs -o size=$((needed * 4096 * 4)) tmpfs "$mnt"
  resume=()
  if [ "$s" -gt 0 ]; then
    build/can-train --config "$config" --set run.dir="$b" --stages "$(IFS=,; echo "${stages[*]:0:s}")" \
      > "$mnt.log" 2>&1 || { tail -n 20 "$mnt.log"; echo "full-disk: the stages before ${stages[s]} failed"; exit 1; }
    resume=(--resume)
  fi
  used=$(df --output=used --block-size=4096 "$mnt" | tail -n 1 | tr -d ' ')
  own=$(blocks "$a/${stages[s]}")
  size=$(( (used + (own + 1) / 2) * 4096 ))
  mount -o remount,size=$size "$mnt"
  status=0
  build/can-train --config "$config" --set run.dir="$b" "${resume[@]}" > "$mnt.log" 2>&1 || status=$?
  error=$(grep -E "error|Error" "$mnt.log" | tail -n 1 | cut -c1-300)
  if [ "$status" -ne 1 ] || ! grep -q "No space left on device" "$mnt.log" || ! grep -q "$b/" <<< "$error"; then
    tail -n 8 "$mnt.log"
    echo "full-disk: with $size bytes: expected exit status 1 and an error naming a file of $b and ENOSPC (got $status)"
    exit 1
  fi
  python3 scripts/compare-runs.py --finished-stages "$a" "$b" > "$mnt.compare" ||
    { cat "$mnt.compare"; echo "full-disk: a stage the stopped run left finished differs"; exit 1; }
  finished=$(tail -n 1 "$mnt.compare" | cut -d' ' -f1)
  echo "full-disk: aimed at ${stages[s]}, $size bytes: stopped after $finished stages: $error"

  mount -o remount,ro "$mnt"
  before=$(tree_digest "$b")
  status=0
  build/can-train --config "$config" --set run.dir="$b" --resume > "$mnt.log" 2>&1 || status=$?
  error=$(grep -E "error|Error" "$mnt.log" | tail -n 1 | cut -c1-300)
  if [ "$status" -ne 1 ] || ! grep -q "Read-only file system" <<< "$error" || [ "$(tree_digest "$b")" != "$before" ]; then
    tail -n 8 "$mnt.log"
    echo "full-disk: read-only: expected exit status 1, an error naming the read-only file system, no change (got $status)"
    exit 1
  fi
  echo "full-disk: read-only: refused, nothing changed: $error"

  mount -o remount,rw,size=$((needed * 4096 * 4)) "$mnt"
  build/can-train --config "$config" --set run.dir="$b" --resume > "$mnt.log" 2>&1 ||
    { tail -n 20 "$mnt.log"; echo "full-disk: the resumed run failed"; exit 1; }
  python3 scripts/compare-runs.py "$a" "$b" > "$mnt.compare" ||
    { cat "$mnt.compare"; echo "full-disk: the resumed run differs from the uninterrupted one"; exit 1; }
  umount "$mnt"
done
echo "full-disk: ${#stages[@]} full disks and read-only resumes: clear errors, and every resumed run equals the uninterrupted one"
