#!/usr/bin/env bash
# The Redis backend side by side (issue 15), in ONE run on 127.0.0.1, the same work everywhere:
# token bucket (GCRA) checks of USERS random users at 1000 a day with a burst of 1000, so every
# check is a full decision that passes, CONNS in flight:
#   lua       the peers' Redis + Lua GCRA script (../shared/peers/redis/gcra.lua), one EVALSHA per
#             check, unpipelined (`redis-benchmark -c CONNS -P 1 -r USERS`): what teams run today
#   redis1    one stateless Floodgate node with --store redis:// on the same Redis (gRPC
#             ShouldRateLimit from bench/grpc_load)
#   redis2    two stateless nodes on that Redis, the load spread over both
#   p2p2      Floodgate's own peer-to-peer cluster of two nodes (memory store), load spread
#   memory1   one Floodgate node on its memory store (the floor)
# Per setup: checks/s, p50/p99 (ms), Redis CPU per check (µs: redis-server's utime+stime over
# checks answered), Floodgate CPU per check (all nodes) and the total. Each repetition runs every
# setup on fresh processes and a fresh Redis; every figure is the median of REPS runs.
# Usage: bench/redis_backend.sh [BUILD_DIR]
# Env: REPS (3), DURATION (10 s per run), CONNS (50), USERS (100000), PEERS (../shared/peers).
# Results: bench/results/redis-<stamp>/ (redis.csv, table.md, raw/).
set -euo pipefail
build=$(realpath "${1:-build}")
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
REPS=${REPS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
USERS=${USERS:-100000}
peers=${PEERS:-$here/../shared/peers}
CLK_TCK=$(getconf CLK_TCK)
out="$here/bench/results/redis-$(date -u +%Y%m%dT%H%M%SZ)"
raw="$out/raw"
csv="$out/redis.csv"
die() {
  echo "redis_backend: $*" >&2
  exit 1
}
for tool in "$build/floodgate" "$build/bench/grpc_load"; do
  [ -x "$tool" ] || die "$tool is not built (ninja -C $build floodgate grpc_load)"
done
for tool in redis-server redis-cli redis-benchmark python3; do
  command -v "$tool" >/dev/null || die "needs $tool"
done
[ -r "$peers/redis/gcra.lua" ] || die "needs the peers' script $peers/redis/gcra.lua"
mkdir -p "$raw"
echo "setup,rep,checks,rps,p50_ms,p99_ms,redis_cpu_us,floodgate_cpu_us,total_cpu_us,failed" >"$csv"
work=$(mktemp -d /tmp/floodgate-redis-XXXXXX)
pids=()
redis_pid=""
stop_all() {
  local p
  for p in "${pids[@]}" $redis_pid; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}" $redis_pid; do
    for _ in $(seq 80); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  pids=()
  redis_pid=""
}
trap 'stop_all; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

mkdir -p "$work/config"
cat >"$work/config/bench.yaml" <<'YAML'
domain: bench
descriptors:
  - key: user
    rate_limit: {algorithm: token_bucket, unit: day, requests_per_unit: 1000, burst: 1000}
YAML
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
cpu_ticks() {
  local s=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && s=$((s + $(awk '{print $14+$15}' "/proc/$p/stat")))
  done
  echo "$s"
}
start_redis() {
  local port
  port=$(free_ports 1)
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$work" \
    --io-threads 1 >"$raw/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 100); do redis-cli -p "$port" PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  redis_port=$port
}
node_grpc=()
start_node() { # start_node NAME FLAGS...: appends its gRPC port to node_grpc
  local name=$1 line=""
  shift
  "$build/floodgate" serve --config "$work/config" --http 127.0.0.1:0 --grpc 127.0.0.1:0 "$@" \
    >"$work/$name.out" 2>"$raw/$name.err" &
  pids+=($!)
  for _ in $(seq 300); do
    line=$(grep -m1 '^floodgate: listening' "$work/$name.out" 2>/dev/null || true)
    [ -n "$line" ] && break
    kill -0 "${pids[-1]}" 2>/dev/null || die "node $name exited: $(cat "$raw/$name.err")"
    sleep 0.1
  done
  [ -n "$line" ] || die "node $name printed no listening line"
  node_grpc+=("127.0.0.1:$(fg_listening_port grpc "$line")")
  last_http=$(fg_listening_port http "$line")
}
record() { # record SETUP REP CHECKS RPS P50 P99 REDIS_TICKS FG_TICKS FAILED
  awk -v s="$1" -v r="$2" -v n="$3" -v rps="$4" -v p50="$5" -v p99="$6" -v rt="$7" -v ft="$8" \
    -v f="$9" -v hz="$CLK_TCK" 'BEGIN {
      rc = n > 0 ? rt / hz * 1e6 / n : 0; fc = n > 0 ? ft / hz * 1e6 / n : 0
      printf "%s,%s,%d,%d,%s,%s,%.2f,%.2f,%.2f,%s\n", s, r, n, rps, p50, p99, rc, fc, rc + fc, f }' |
    tee -a "$csv"
}
grpc_run() { # grpc_run SETUP REP: load spread over node_grpc, CPU of Redis (if any) and the nodes
  local setup=$1 rep=$2 targets line r0 f0 r1 f1
  targets=$(IFS=,; echo "${node_grpc[*]}")
  r0=$(cpu_ticks $redis_pid); f0=$(cpu_ticks "${pids[@]}")
  line=$("$build/bench/grpc_load" --target "$targets" --seconds "$DURATION" --concurrency "$CONNS" \
    --users "$USERS" --key user)
  r1=$(cpu_ticks $redis_pid); f1=$(cpu_ticks "${pids[@]}")
  echo "$setup rep=$rep $line" >>"$raw/load.txt"
  record "$setup" "$rep" "$(kv "$line" ok)" "$(kv "$line" rps)" "$(kv "$line" p50_ms)" \
    "$(kv "$line" p99_ms)" $((r1 - r0)) $((f1 - f0)) "$(kv "$line" failed)"
}

for rep in $(seq "$REPS"); do
  # ---- The peers' script, unpipelined.
  start_redis
  sha=$(redis-cli -p "$redis_port" SCRIPT LOAD "$(cat "$peers/redis/gcra.lua")")
  n=$((25000 * DURATION))
  r0=$(cpu_ticks "$redis_pid")
  res=$(timeout $((DURATION * 6 + 60)) redis-benchmark -p "$redis_port" -c "$CONNS" -P 1 -n "$n" \
    -r "$USERS" EVALSHA "$sha" 1 rl:__rand_int__ 1000 86400000 1000)
  r1=$(cpu_ticks "$redis_pid")
  echo "lua rep=$rep $res" >>"$raw/load.txt"
  rps=$(awk '/throughput summary/{print int($3)}' <<<"$res")
  read -r p50 p99 <<<"$(awk '/avg +min +p50/{getline; print $3, $5}' <<<"$res")"
  record lua "$rep" "$n" "$rps" "$p50" "$p99" $((r1 - r0)) 0 0
  stop_all

  # ---- Stateless Floodgate nodes on one Redis: one, then two.
  for count in 1 2; do
    start_redis
    node_grpc=()
    for i in $(seq "$count"); do start_node "redis$count-n$i" --store "redis://127.0.0.1:$redis_port"; done
    grpc_run "redis$count" "$rep"
    redis-cli -p "$redis_port" INFO keyspace >>"$raw/load.txt"
    stop_all
  done

  # ---- Floodgate's own cluster of two nodes, then one node alone, no Redis.
  read -r -a ports <<<"$(free_ports 2)"
  members="n1=127.0.0.1:${ports[0]},n2=127.0.0.1:${ports[1]}"
  node_grpc=()
  for i in 1 2; do start_node "p2p-n$i" --node-id "n$i" --peers "$members" --cluster-key bench-redis-key; done
  for _ in $(seq 100); do  # until n2 sees both members alive
    [ "$(curl -s "http://127.0.0.1:$last_http/v1/cluster" | grep -o '"alive":true' | wc -l)" = 2 ] && break
    sleep 0.1
  done
  grpc_run p2p2 "$rep"
  stop_all
  node_grpc=()
  start_node memory-n1
  grpc_run memory1 "$rep"
  stop_all
done

python3 - "$csv" >"$out/table.md" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
order = ["lua", "redis1", "redis2", "p2p2", "memory1"]
cols = ["rps", "p50_ms", "p99_ms", "redis_cpu_us", "floodgate_cpu_us", "total_cpu_us"]
print("| setup | checks/s | p50 ms | p99 ms | Redis CPU µs/check | Floodgate CPU µs/check | total µs/check |")
print("|---|---|---|---|---|---|---|")
med = {}
for s in order:
    got = [r for r in rows if r["setup"] == s]
    if not got:
        continue
    med[s] = {c: statistics.median(float(r[c]) for r in got) for c in cols}
    m = med[s]
    print(f"| {s} | {m['rps']:.0f} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} | {m['redis_cpu_us']:.2f} | {m['floodgate_cpu_us']:.2f} | {m['total_cpu_us']:.2f} |")
if "lua" in med and "redis2" in med and med["redis2"]["redis_cpu_us"] > 0:
    l, r = med["lua"], med["redis2"]
    print()
    print(f"Redis CPU per check, Lua script / Floodgate on Redis (2 nodes): {l['redis_cpu_us'] / r['redis_cpu_us']:.2f}x")
    print(f"Checks per Redis CPU-second, Floodgate (2 nodes) / Lua script: {(1e6 / r['redis_cpu_us']) / (1e6 / l['redis_cpu_us']):.2f}x")
PY
cat "$out/table.md"
echo "results in $out"
