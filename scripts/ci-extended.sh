#!/usr/bin/env bash
# The checks too long for .ci/run, run before resolving an issue that touches them:
#   bash scripts/ci-extended.sh
#   1. scripts/check-cuda-build.sh   every target compiled and linked against the CUDA LibTorch (no GPU)
#   2. scripts/kill-resume-check.sh  SIGINT during DPO, --resume, byte-identical results (with and without LoRA)
#   3. scripts/kill-anywhere.sh      SIGKILL at 20 random moments of tiny MoCAN and of tiny PeCAN, each
#                                    resumed, every artifact compared with an uninterrupted run
#   4. scripts/nightly.sh            the tiny configs' numbers against the committed baseline
# Every check runs; the exit status is 1 when any failed, and the summary names them.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh build || exit 1
failed=()
run() {
  local name=$1
  shift
  echo "== ci-extended: $name" >&2
  local start=$SECONDS
  if "$@"; then echo "== ci-extended: $name passed in $((SECONDS - start)) s" >&2
  else failed+=("$name"); echo "== ci-extended: $name FAILED after $((SECONDS - start)) s" >&2; fi
}
run check-cuda-build bash scripts/check-cuda-build.sh
run kill-resume bash scripts/kill-resume-check.sh
run kill-resume-lora env EXTRA="--set lora.rank=4 --set lora.dropout=0.1" bash scripts/kill-resume-check.sh
run kill-anywhere-mocan bash scripts/kill-anywhere.sh configs/tiny-mocan.yaml 20
run kill-anywhere-pecan bash scripts/kill-anywhere.sh configs/tiny-pecan.yaml 20
run nightly bash scripts/nightly.sh
if [ ${#failed[@]} -gt 0 ]; then echo "ci-extended: failed: ${failed[*]}" >&2; exit 1; fi
echo "ci-extended: every check passed" >&2
