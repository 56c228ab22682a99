#!/usr/bin/env bash
# Runs every fuzz target of a sanitizer build for a bounded time each, one after the other:
#   fuzz/run.sh <build-san dir> <seconds per target> [target ...]
# Each starts from its seed corpus, fuzz/corpus/<target>/ (read only), and from what earlier runs
# found, <build>/fuzz-corpus/<target>/ (new inputs go there, not into the repo). A crash, leak,
# sanitizer report or timeout stops that target, leaves the input in <build>/fuzz-artifacts/ and
# makes the script exit 1 once every target has run. docs/testing.md has the details.
set -uo pipefail
build=${1:?usage: fuzz/run.sh <build-san dir> <seconds per target> [target ...]}
seconds=${2:?usage: fuzz/run.sh <build-san dir> <seconds per target> [target ...]}
shift 2
src=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for seeds in "$src"/corpus/*/; do
    targets+=("$(basename "$seeds")")
  done
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:detect_odr_violation=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for target in "${targets[@]}"; do
  binary=$build/fuzz/$target
  if [ ! -x "$binary" ]; then
    echo "fuzz: $binary is missing: build it with 'make build-san'" >&2
    failed+=("$target")
    continue
  fi
  work=$build/fuzz-corpus/$target
  artifacts=$build/fuzz-artifacts
  mkdir -p "$work" "$artifacts"
  echo "== $target: ${seconds}s"
  # -timeout: one input taking longer is a finding (a hang); -rss_limit_mb: so is a blow-up.
  if ! "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$artifacts/$target-" "$work" "$src/corpus/$target" \
      > "$build/fuzz-$target.log" 2>&1; then
    echo "fuzz: $target found a problem (log: $build/fuzz-$target.log, input in $artifacts/):" >&2
    grep -E "ERROR|SUMMARY|runtime error|Test unit written" "$build/fuzz-$target.log" | head -20 >&2
    failed+=("$target")
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$build/fuzz-$target.log" |
      tr '\n' ' '
    echo
  fi
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: problems in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, nothing found"
