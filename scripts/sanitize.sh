#!/usr/bin/env bash
# The test suite (labels unit, e2e, reference) built with AddressSanitizer (and its
# LeakSanitizer) and UndefinedBehaviorSanitizer:
#   bash scripts/sanitize.sh     builds build-sanitize/, runs every test there
# Any report fails the test that made it: the sanitizers abort the program at the
# first one. Every target of CAN's own is instrumented; LibTorch, the Debian libraries
# and the sentencepiece backend (loaded into a namespace of its own) are not.
# Suppressions: scripts/sanitizer-suppressions/, each entry with its reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh build > /dev/null  # Debian packages and .venv/ (LibTorch)
# clang builds the instrumented code several times faster than gcc; -O1 with line
# tables keeps the reports readable and the build small.
bash scripts/install-packages.sh clang-14 libclang-rt-14-dev
CC=clang-14 CXX=clang++-14 cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" -DCAN_SANITIZE=address,undefined \
  > build-sanitize.configure.log 2>&1 || { cat build-sanitize.configure.log; exit 1; }
cmake --build build-sanitize -j "$(nproc)"
suppressions=$PWD/scripts/sanitizer-suppressions
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1
export LSAN_OPTIONS=suppressions=$suppressions/lsan.txt:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$suppressions/ubsan.txt
OMP_NUM_THREADS=1 ctest --test-dir build-sanitize -L 'unit|e2e|reference' --output-on-failure -j "$(nproc)"
