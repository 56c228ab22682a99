#!/usr/bin/env bash
# Floodgate's front ends against the peers, in ONE run, on the same load generators:
#   HTTP: nginx limit_req (1 worker, 100k random users; no burst and burst=1000 nodelay)
#         vs GET /v1/check (100k random users, limit 1e6/s so every check is a full decision),
#         both with `wrk -t2 -c50` and ../shared/peers/wrk's user scripts.
#   gRPC: Redis + Lua GCRA EVALSHA (`redis-benchmark -c 50 -P 1`, 1M random keys and one hot key)
#         vs ShouldRateLimit (bench/grpc_load, 50 in flight, 100k random users).
#   Latency at half the peak: grpc_load --rate and http_load --rate (open loop) at 50% of the
#   measured peak of each front end.
# Server CPU per request = the server's utime+stime over requests answered, as the peers'
# common.sh computes it. Usage: bench/compare_servers.sh [BUILD_DIR]
# Env: REPS (3), DURATION (10), PEERS (../shared/peers). Results: bench/results/servers-<stamp>/.
set -euo pipefail
build=$(realpath "${1:-build}")
here=$(cd "$(dirname "$0")/.." && pwd)
peers_src=${PEERS:-$here/../shared/peers}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$here/bench/results/servers-$stamp"
mkdir -p "$out"
work=$(mktemp -d /tmp/floodgate-compare-XXXXXX)
cp -r "$peers_src" "$work/peers"; chmod -R u+w "$work/peers"
export RUN_DIR="$work/run" RESULTS_DIR="$out" REPS=${REPS:-3} DURATION=${DURATION:-10}
export NGINX_PORT=${NGINX_PORT:-18188} REDIS_PORT=${REDIS_PORT:-18190}
. "$work/peers/common.sh"
. "$here/bench/lib.sh"
fg_pid=""
cleanup() {
  [ -n "$fg_pid" ] && kill "$fg_pid" 2>/dev/null || true
  "$work/peers/nginx/stop.sh" >/dev/null 2>&1 || true
  "$work/peers/redis/stop.sh" >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
RAW="$out/raw"; mkdir -p "$RAW"; CSV="$out/http.csv"; echo "$WRK_CSV_HEADER" > "$CSV"
export RAW CSV

start_floodgate() {
  fg_start_node "$RAW/floodgate.err" "$build/floodgate" serve --config "$here/bench/config" \
    --http 127.0.0.1:0 --grpc 127.0.0.1:0 || true
}

# ---- HTTP: nginx limit_req, 1 worker, then Floodgate, same wrk and user count.
WORKERS=1 "$work/peers/nginx/start.sh" >/dev/null
SYSTEM=nginx-limit_req SERVER_PIDS="$(cat "$RUN_DIR/nginx/nginx.pid") $(pgrep -P "$(cat "$RUN_DIR/nginx/nginx.pid")" | tr '\n' ' ')"
export SYSTEM SERVER_PIDS
USERS=100000 PATH_PREFIX=/limited wrk_run 100k-noburst "http://127.0.0.1:$NGINX_PORT/" "$work/peers/wrk/users.lua"
USERS=100000 PATH_PREFIX=/limited_b wrk_run 100k-burst "http://127.0.0.1:$NGINX_PORT/" "$work/peers/wrk/users.lua"
"$work/peers/nginx/stop.sh" >/dev/null 2>&1 || true

start_floodgate
SYSTEM=floodgate-http SERVER_PIDS=$fg_pid; export SYSTEM SERVER_PIDS
USERS=100000 wrk_run 100k "http://127.0.0.1:$fg_http/" "$here/bench/wrk/check_users.lua"
KEY=limited USERS=1 wrk_run hot-refused "http://127.0.0.1:$fg_http/" "$here/bench/wrk/check_users.lua"
# Open loop at half the best closed-loop HTTP rate: the latency a caller sees at that load.
http_peak=$(awk -F, '$1=="floodgate-http" && $2=="100k" {if ($5>m) m=$5} END{printf "%d", m}' "$CSV")
http_csv="$out/http_open_loop.csv"; echo "system,scenario,rep,result" > "$http_csv"
for rep in $(seq "$REPS"); do
  line=$("$build/bench/http_load" --port "$fg_http" --rate $((http_peak / 2)) --seconds "$DURATION" \
           --users 100000 --connections 50 --server-pid "$fg_pid")
  echo "floodgate-http,open-loop-$((http_peak / 2))-rps,$rep,$line" | tee -a "$http_csv"
done

# ---- gRPC: Floodgate ShouldRateLimit (closed loop), then open loop at half the peak.
grpc_csv="$out/grpc.csv"; echo "system,scenario,rep,result" > "$grpc_csv"
peak=0
for rep in $(seq "$REPS"); do
  line=$("$build/bench/grpc_load" --target "127.0.0.1:$fg_grpc" --seconds "$DURATION" \
           --users 100000 --server-pid "$fg_pid")
  echo "floodgate-grpc,100k,$rep,$line" | tee -a "$grpc_csv"
  rps=$(sed -n 's/.* rps=\([0-9]*\).*/\1/p' <<<"$line"); [ "$rps" -gt "$peak" ] && peak=$rps
done
half=$((peak / 2))
for rep in $(seq "$REPS"); do
  line=$("$build/bench/grpc_load" --target "127.0.0.1:$fg_grpc" --seconds "$DURATION" \
           --users 100000 --rate "$half" --concurrency 1000 --server-pid "$fg_pid")
  echo "floodgate-grpc,open-loop-$half-rps,$rep,$line" | tee -a "$grpc_csv"
done
kill "$fg_pid"; wait "$fg_pid" 2>/dev/null || true; fg_pid=""

# ---- Redis + Lua GCRA (the peers' script and commands), -c 50 -P 1.
sha=$("$work/peers/redis/start.sh")
redis_pid=$(cat "$RUN_DIR/redis/redis.pid")
redis_csv="$out/redis.csv"; echo "system,scenario,rep,requests,rps,p50_ms,p99_ms,server_cpu_us_per_req" > "$redis_csv"
for scenario in rand1M hot; do
  for rep in $(seq "$REPS"); do
    if [ $scenario = rand1M ]; then args=(-r 1000000 EVALSHA "$sha" 1 rl:__rand_int__ 1000 86400000 1000)
    else args=(EVALSHA "$sha" 1 rl:hot 1000000 1000 1000000); fi
    n=$((30000 * DURATION))
    c0=$(cpu_ticks "$redis_pid")
    res=$(timeout $((DURATION * 5 + 60)) redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c 50 -P 1 -n "$n" "${args[@]}")
    c1=$(cpu_ticks "$redis_pid")
    rps=$(awk '/throughput summary/{print $3}' <<<"$res")
    lat=$(awk '/avg +min +p50/{getline; print $3","$5}' <<<"$res")
    cpu=$(awk -v a="$c0" -v b="$c1" -v n="$n" -v hz="$CLK_TCK" 'BEGIN{printf "%.1f", (b-a)/hz*1e6/n}')
    echo "redis-lua-gcra,$scenario,$rep,$n,$rps,$lat,$cpu" | tee -a "$redis_csv"
  done
done
"$work/peers/redis/stop.sh" >/dev/null 2>&1 || true
echo "results in $out"
