#!/usr/bin/env bash
# The checks too long for .ci/run, run before resolving an issue that touches them:
#   bash scripts/ci-extended.sh
#   1. scripts/check-cuda-build.sh   every target compiled and linked against the CUDA LibTorch (no GPU)
#   2. scripts/kill-resume-check.sh  SIGINT during DPO, --resume, byte-identical results (with and without LoRA)
#   3. scripts/kill-anywhere.sh      SIGKILL at 20 random moments of tiny MoCAN, of tiny PeCAN and of tiny
#                                    MoCAN with two constraints, and at 12 of tiny primal-dual, each
#                                    resumed, every artifact compared with an uninterrupted run
#   4. scripts/kill-at-syscalls.sh   SIGKILL (by strace) at 24 writes, fsyncs and renames of tiny MoCAN and
#                                    of tiny PeCAN, each resumed and compared
#   5. scripts/full-disk-check.sh    a tmpfs that fills in each stage of tiny MoCAN and of tiny PeCAN, then
#                                    read-only: clear errors, nothing lost, resumed runs compared
#   6. scripts/sanitize.sh           the test suite built with AddressSanitizer and UndefinedBehaviorSanitizer
#   7. scripts/fuzz.sh 60            every fuzz target for 60 s under libFuzzer, ASan and UBSan
#   8. scripts/nightly.sh            the tiny configs' numbers against the committed baseline
#   9. scripts/check-workflows.sh    .github/workflows/*.yml through actionlint
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
run kill-anywhere-two-constraints bash scripts/kill-anywhere.sh configs/tiny-mocan-two-constraints.yaml 20
run kill-anywhere-primal-dual env PIPELINE=primal_dual bash scripts/kill-anywhere.sh configs/tiny-mocan.yaml 12
run kill-at-syscalls-mocan bash scripts/kill-at-syscalls.sh configs/tiny-mocan.yaml 24
run kill-at-syscalls-pecan bash scripts/kill-at-syscalls.sh configs/tiny-pecan.yaml 24
run full-disk-mocan bash scripts/full-disk-check.sh configs/tiny-mocan.yaml
run full-disk-pecan bash scripts/full-disk-check.sh configs/tiny-pecan.yaml
run sanitize bash scripts/sanitize.sh
run fuzz bash scripts/fuzz.sh 60
run nightly bash scripts/nightly.sh
run check-workflows bash scripts/check-workflows.sh
if [ ${#failed[@]} -gt 0 ]; then echo "ci-extended: failed: ${failed[*]}" >&2; exit 1; fi
echo "ci-extended: every check passed" >&2
