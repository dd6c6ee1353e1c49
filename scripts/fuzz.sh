#!/usr/bin/env bash
# Fuzzes every parser of outside input (fuzz/fuzz_<target>.cpp) with libFuzzer under
# AddressSanitizer and UndefinedBehaviorSanitizer:
#   bash scripts/fuzz.sh SECONDS    builds build-fuzz/ with clang, runs each target SECONDS seconds
# Each target starts from the seeds can_fuzz_seeds writes, the inputs that once crashed
# it (fuzz/regressions/<target>/) and the corpus it grew in earlier runs
# (build-fuzz/corpus/<target>/). Exits non-zero when any target crashed, leaked, hit a
# sanitizer report, ran out of memory or took over 20 s on one input; the input is kept
# in build-fuzz/findings/<target>/. Replay one with build-fuzz/fuzz_<target> FILE; once
# fixed, add it to fuzz/regressions/<target>/ so that .ci/run replays it for good.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: bash scripts/fuzz.sh SECONDS}

bash scripts/setup.sh build > /dev/null  # Debian packages and .venv/ (LibTorch)
# clang with libFuzzer and the sanitizer runtimes
bash scripts/install-packages.sh clang-14 libfuzzer-14-dev libclang-rt-14-dev
CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" -DCAN_FUZZ=ON -DCAN_SANITIZE=address,undefined > build-fuzz.configure.log 2>&1 || { cat build-fuzz.configure.log; exit 1; }
targets=()
for source in fuzz/fuzz_*.cpp; do
  name=$(basename "$source" .cpp)
  targets+=("${name#fuzz_}")
done
cmake --build build-fuzz -j "$(nproc)" --target can_fuzz_seeds "${targets[@]/#/fuzz_}"
build-fuzz/can_fuzz_seeds build-fuzz/fuzz-seeds . > /dev/null

# allocator_may_return_null: a malloc ASan cannot serve returns null, as outside ASan. (A throwing
# operator new still aborts under ASan; the one input known to reach it, a damaged pickle whose memo id
# made LibTorch's unpickler ask for 28 GB, is now refused before unpickling: src/io/pytorch_bin.cpp.)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:symbolize=1:allocator_may_return_null=1
# The sanitizer suite's suppressions: leaks inside libraries that are not instrumented, each with its reason.
export LSAN_OPTIONS=suppressions=$PWD/scripts/sanitizer-suppressions/lsan.txt:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMP_NUM_THREADS=1
failed=()
summary=build-fuzz/fuzz-summary.txt
printf '%-18s %8s %10s %8s  %s\n' target seconds runs corpus result > "$summary"
for target in "${targets[@]}"; do
  corpus=build-fuzz/corpus/$target findings=build-fuzz/findings/$target
  mkdir -p "$corpus" "$findings"
  inputs=("$corpus" "build-fuzz/fuzz-seeds/$target")
  [ -d "fuzz/regressions/$target" ] && inputs+=("fuzz/regressions/$target")
  log=build-fuzz/fuzz-$target.log
  echo "fuzz: $target for $seconds s (log $log)"
  status=0
  "build-fuzz/fuzz_$target" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$findings/" "${inputs[@]}" > "$log" 2>&1 || status=$?
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  result=ok
  if [ "$status" -ne 0 ]; then
    result="FAILED (exit $status): $(ls -t "$findings" | head -1)"
    failed+=("$target")
    grep -E '^(==[0-9]+==ERROR|SUMMARY|fuzz:)' "$log" | head -5 >&2 || true
  fi
  printf '%-18s %8s %10s %8s  %s\n' "$target" "$seconds" "$runs" "$(ls "$corpus" | wc -l)" "$result" >> "$summary"
done
cat "$summary"
if [ ${#failed[@]} -gt 0 ]; then echo "fuzz: findings in ${failed[*]} (inputs under build-fuzz/findings/)" >&2; exit 1; fi
echo "fuzz: no findings"
