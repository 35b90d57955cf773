#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# scripts/test.sh - install what is missing, build, and run every test:
#   build/       unit + integration tests (sync, threads and async modes)
#   build-asan/  the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   build-tsan/  unit + threads- and async-mode integration tests under ThreadSanitizer
#   build-fuzz/  the codec and config fuzzers, FUZZ_SECONDS each
# Ends with one summary line over all of them.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
ensure_packages $FCGATE_PACKAGES $FCGATE_TEST_PACKAGES || exit 1

total_pass=0 total_fail=0 failed_sets=()

# run_set NAME DIR [CTEST ARGS...] - ctest in DIR, counts into the totals.
run_set() {
  local name=$1 dir=$2; shift 2
  say "tests: $name"
  local out=$dir.ctest.log
  (cd "$dir" && ctest --output-on-failure --no-tests=error "$@") 2>&1 | tee "$out"
  local line pass fail
  line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "$out" | tail -1)
  if [[ -z $line ]]; then
    total_fail=$((total_fail + 1)); failed_sets+=("$name (no summary)")
    return
  fi
  fail=$(sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\1/' <<< "$line")
  pass=$(($(sed -E 's/.* out of ([0-9]+).*/\1/' <<< "$line") - fail))
  total_pass=$((total_pass + pass)); total_fail=$((total_fail + fail))
  ((fail == 0)) || failed_sets+=("$name")
}

export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

say "building"
build "$TOP/build" -DFCGATE_TEST_MODES="sync;threads;async"
build "$TOP/build-asan" -DCMAKE_C_COMPILER=clang -DFCGATE_SANITIZE=address,undefined \
  -DFCGATE_TEST_MODES="sync;threads;async"
build "$TOP/build-tsan" -DCMAKE_C_COMPILER=clang -DFCGATE_SANITIZE=thread \
  -DFCGATE_TEST_MODES="threads;async"
build "$TOP/build-fuzz" -DCMAKE_C_COMPILER=clang -DFCGATE_SANITIZE=address,undefined \
  -DFCGATE_FUZZ=ON -DFCGATE_FUZZ_SECONDS="$FUZZ_SECONDS" -DFCGATE_TEST_MODES=""

run_set plain "$TOP/build"
run_set asan+ubsan "$TOP/build-asan"
run_set tsan "$TOP/build-tsan"
run_set fuzz "$TOP/build-fuzz" -R '^fuzz\.'

echo
((${#failed_sets[@]})) && echo "failed in: ${failed_sets[*]}"
echo "all: $total_pass passed, $total_fail failed"
((total_fail == 0))
