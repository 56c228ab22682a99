#!/usr/bin/env bash
# `make bench`: every Google Benchmark with repetitions, medians only. Output in bench/results/.
set -euo pipefail
build_dir=${1:-build}
out=bench/results
mkdir -p "$out"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
reps=${REPS:-5}
for b in src/core/algorithms_benchmark src/store/store_benchmark; do
  name=$(basename "$b")
  echo "== $name (median of $reps)"
  "$build_dir/$b" --benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true \
    --benchmark_out="$out/$name-$stamp.json" --benchmark_out_format=json | grep -E "median|^-|Benchmark"
done
echo "JSON results in $out/"
