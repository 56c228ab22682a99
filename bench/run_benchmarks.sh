#!/usr/bin/env bash
# `make bench`: every Google Benchmark (medians of REPS), then the same-run comparisons with the
# peers: in process (rate-limiter-flexible) and over the network (nginx limit_req, Redis + Lua),
# then 1, 3 and 5 nodes (cluster cost as it grows, bench/scale_cluster.sh), then a node joining
# and leaving a loaded cluster (bench/elastic_handover.sh).
# Output under bench/results/. Env: REPS (5 for Google Benchmark, 3 for the comparisons),
# SKIP_PEERS=1 to run only the Google Benchmarks. Takes about 42 minutes; run nothing else.
set -euo pipefail
build_dir=${1:-build}
out=bench/results
mkdir -p "$out"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
reps=${REPS:-5}
for b in src/core/algorithms_benchmark src/store/store_benchmark src/limiter/limiter_benchmark; do
  name=$(basename "$b")
  echo "== $name (median of $reps)"
  "$build_dir/$b" --benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true \
    --benchmark_out="$out/$name-$stamp.json" --benchmark_out_format=json | grep -E "median|^-|Benchmark"
done
[ "${SKIP_PEERS:-0}" = 1 ] && exit 0
echo "== in process: limiter vs rate-limiter-flexible"
REPS=3 bench/compare_inprocess.sh "$build_dir"
echo "== servers: HTTP vs nginx limit_req, gRPC vs Redis + Lua"
REPS=3 DURATION=10 bench/compare_servers.sh "$build_dir"
echo "== cluster: 1, 3 and 5 nodes, load to one and spread, local, hot key"
REPS=3 DURATION=10 bench/scale_cluster.sh "$build_dir"
echo "== elastic cluster: join and leave with 1M live keys, on etcd (bench/elastic_handover.sh)"
REPS=3 bench/elastic_handover.sh "$build_dir"
echo "== overload: flash crowd, key flood, hot key, 2x capacity (docs/overload.md)"
bench/overload/run.sh "$build_dir"
echo "results in $out/"
