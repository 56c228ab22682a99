#!/usr/bin/env bash
# What cluster mode costs, in ONE run on 127.0.0.1: a plain node against a 3-node cluster whose
# load all goes to one node (the entry node), so 2/3 of the checks are forwarded to their owner.
#   gRPC, closed loop (bench/grpc_load, 50 in flight, 100k random users of domain `bench`):
#     1 plain node with its default (native) gRPC server, and with --grpc-impl grpcpp (cluster
#     mode used it before fe43ab7; now both serve it, docs/grpc.md); 3 nodes (forwards batched per
#     turn of the event loop); 3 nodes with a `consistency: local` limit (decided on
#     the entry node, no hop; its hits are only reported to the owner in the background).
#   gRPC, open loop at half the 3-node peak (--rate): 3 nodes, and 1 plain node (grpcpp, native)
#   at the same rate.
#   HTTP, closed loop (`wrk -t2 -c50`, bench/wrk/check_users.lua): 1 plain node and 3 nodes.
# CPU per check = utime+stime from /proc over the run / checks answered, for the entry node and
# for all the run's processes together (the peers' common.sh method). Forwarded share and mean
# batch size come from the entry node's GET /v1/cluster counters before and after each run.
# Each repetition runs every setup in turn, on fresh processes, so a change in the shared
# machine's speed hits every setup alike; every figure printed is the median of REPS runs (each
# column on its own). Takes about 10 REPS (DURATION + 1) s.
# Usage: bench/compare_cluster.sh [BUILD_DIR]
# Env: REPS (3), DURATION (10 s per run), CONNS (50), USERS (100000).
# Results: bench/results/cluster-<stamp>/ (cluster.csv, table.md, raw/: load tool output and
# every node's stderr).
set -euo pipefail
build=$(realpath "${1:-build}")
here=$(cd "$(dirname "$0")/.." && pwd)
# fg_listening_port, kv, median.
. "$here/bench/lib.sh"
REPS=${REPS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
USERS=${USERS:-100000}
CLK_TCK=$(getconf CLK_TCK)
out="$here/bench/results/cluster-$(date -u +%Y%m%dT%H%M%SZ)"
raw="$out/raw"
csv="$out/cluster.csv"

die() {
  echo "compare_cluster: $*" >&2
  exit 1
}
for tool in "$build/floodgate" "$build/bench/grpc_load"; do
  [ -x "$tool" ] || die "$tool is not built (ninja -C $build floodgate grpc_load)"
done
for tool in curl python3; do
  command -v "$tool" >/dev/null || die "needs $tool"
done
have_wrk=0
command -v wrk >/dev/null && have_wrk=1
mkdir -p "$raw"
echo "scenario,rep,checks,rps,p50_ms,p99_ms,entry_cpu_us,all_cpu_us,forwarded_share,batch_mean,failed" \
  >"$csv"
work=$(mktemp -d /tmp/floodgate-cluster-XXXXXX)

# ---- Nodes. Every node running is in `pids`; they are stopped by pid, and the trap stops
# whatever is left however the script ends.
pids=()
declare -A node_pid node_http node_grpc node_err
stop_nodes() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 80); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  pids=()
}
cleanup() {
  stop_nodes
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Config: the bench domain, plus `user_local`, the same limit with `consistency: local`.
mkdir -p "$work/config"
cp "$here/bench/config/bench.yaml" "$work/config/bench.yaml"
cat >>"$work/config/bench.yaml" <<'EOF'
  - key: user_local
    rate_limit: {unit: second, requests_per_unit: 1000000, consistency: local}
EOF

# free_ports N: N free TCP ports on 127.0.0.1 (the peer ports must be known before the nodes
# start; HTTP and gRPC use port 0 and are read from the listening line).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
# start_node NAME [FLAGS...]: starts `floodgate serve` in the background; stdout goes to
# $work/NAME.out (for wait_listening), stderr to raw/NAME-<n>.err.
starts=0
start_node() {
  local name=$1
  shift
  starts=$((starts + 1))
  node_err[$name]="$raw/$name-$starts.err"
  "$build/floodgate" serve --config "$work/config" --http 127.0.0.1:0 --grpc 127.0.0.1:0 "$@" \
    >"$work/$name.out" 2>"${node_err[$name]}" &
  node_pid[$name]=$!
  pids+=($!)
}
# wait_listening NAME: waits (30 s at most) for "floodgate: listening http=P grpc=Q".
wait_listening() {
  local name=$1 line=""
  for _ in $(seq 300); do
    line=$(grep -m1 '^floodgate: listening' "$work/$name.out" 2>/dev/null || true)
    [ -n "$line" ] && break
    kill -0 "${node_pid[$name]}" 2>/dev/null ||
      die "node $name exited before listening: $(cat "${node_err[$name]}")"
    sleep 0.1
  done
  [ -n "$line" ] || die "node $name printed no listening line within 30 s"
  node_http[$name]=$(fg_listening_port http "$line")
  node_grpc[$name]=$(fg_listening_port grpc "$line")
}
# check_alive WHAT: fails clearly if a running node died (or was killed) during WHAT.
check_alive() {
  local n
  for n in "${!node_pid[@]}"; do
    [[ " ${pids[*]} " == *" ${node_pid[$n]} "* ]] || continue
    kill -0 "${node_pid[$n]}" 2>/dev/null ||
      die "node $n (pid ${node_pid[$n]}) died during $1: $(tail -5 "${node_err[$n]}")"
  done
}
# start_plain [FLAGS...]: one node, no cluster flags; it is the entry node.
start_plain() {
  start_node plain "$@"
  wait_listening plain
  entry=plain
}
# start_cluster [FLAGS...]: nodes a, b, c; waits until a sees all three alive; a is the entry.
start_cluster() {
  local ports peers n alive
  read -r -a ports <<<"$(free_ports 3)"
  peers="a=127.0.0.1:${ports[0]},b=127.0.0.1:${ports[1]},c=127.0.0.1:${ports[2]}"
  for n in a b c; do start_node "$n" --cluster-key bench-key --node-id "$n" --peers "$peers" "$@"; done
  for n in a b c; do wait_listening "$n"; done
  entry=a
  for _ in $(seq 100); do
    alive=$(cluster_json | grep -o '"alive":true' | wc -l)
    [ "$alive" = 3 ] && return 0
    sleep 0.1
  done
  die "node a does not see all 3 members alive after 10 s: $(cluster_json)"
}
cluster_json() { curl -s "http://127.0.0.1:${node_http[a]}/v1/cluster" || true; }

# ---- Measurement.
cpu_ticks() { # cpu_ticks PID...: utime+stime summed, in clock ticks
  local s=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && s=$((s + $(awk '{print $14+$15}' "/proc/$p/stat")))
  done
  echo "$s"
}
us_per_check() { # us_per_check TICKS0 TICKS1 CHECKS
  awk -v a="$1" -v b="$2" -v n="$3" -v hz="$CLK_TCK" \
    'BEGIN { if (n > 0) printf "%.1f", (b - a) / hz * 1e6 / n }'
}
# forward_counters: "FORWARDED BATCHES" of the entry node, summed over its peers ("0 0" alone).
forward_counters() {
  if [ "$entry" != a ]; then
    echo "0 0"
    return
  fi
  cluster_json | tr ',{}' '\n' |
    awk -F: '$1 == "\"forwarded\"" { f += $2 } $1 == "\"forward_batches\"" { b += $2 }
             END { printf "%d %d\n", f, b }'
}
to_ms() { # to_ms 850.00us|1.20ms|1.02s
  awk -v v="$1" 'BEGIN { if (sub(/us$/, "", v)) printf "%.3f", v / 1000
                         else if (sub(/ms$/, "", v)) printf "%.3f", v
                         else if (sub(/s$/, "", v)) printf "%.3f", v * 1000 }'
}
# run_load SCENARIO grpc|http [GRPC_LOAD_FLAGS...]: one run (repetition $rep) against the entry
# node; appends a row to the CSV.
run_load() {
  local scenario=$1 kind=$2 f="$raw/$1-rep$rep.txt" all0 all1 e0 e1 fw0 ba0 fw1 ba1
  local checks rps p50 p99 failed share batch entry_us all_us
  shift 2
  [ "$kind" = http ] && [ "$have_wrk" = 0 ] && return 0
  read -r fw0 ba0 <<<"$(forward_counters)"
  all0=$(cpu_ticks "${pids[@]}")
  e0=$(cpu_ticks "${node_pid[$entry]}")
  if [ "$kind" = grpc ]; then
    timeout $((DURATION + 60)) "$build/bench/grpc_load" --target "127.0.0.1:${node_grpc[$entry]}" \
      --seconds "$DURATION" --users "$USERS" "$@" >"$f" 2>&1 || true
  else
    USERS=$USERS MAX_REQ=5000000 timeout $((DURATION + 30)) wrk -t2 -c"$CONNS" -d"${DURATION}s" \
      --timeout 5s --latency -s "$here/bench/wrk/check_users.lua" \
      "http://127.0.0.1:${node_http[$entry]}/" >"$f" 2>&1 || true
  fi
  e1=$(cpu_ticks "${node_pid[$entry]}")
  all1=$(cpu_ticks "${pids[@]}")
  read -r fw1 ba1 <<<"$(forward_counters)"
  check_alive "$scenario rep $rep"
  if [ "$kind" = grpc ]; then
    summary=$(cat "$f")
    checks=$(kv "$summary" requests) rps=$(kv "$summary" rps) p50=$(kv "$summary" p50_ms)
    p99=$(kv "$summary" p99_ms) failed=$(kv "$summary" failed)
  else
    checks=$(awk '/requests in/ { print $1 }' "$f")
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$f")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$f")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$f")")
    failed=$(awk '/Non-2xx/ { print $NF }' "$f")
  fi
  [ -n "$checks" ] || die "$kind load failed in $scenario rep $rep: $(tail -3 "$f")"
  share=$(awk -v f=$((fw1 - fw0)) -v n="$checks" 'BEGIN { printf "%.3f", f / n }')
  batch=$(awk -v f=$((fw1 - fw0)) -v b=$((ba1 - ba0)) 'BEGIN { if (b > 0) printf "%.1f", f / b }')
  entry_us=$(us_per_check "$e0" "$e1" "$checks")
  all_us=$(us_per_check "$all0" "$all1" "$checks")
  echo "$scenario,$rep,$checks,$rps,$p50,$p99,$entry_us,$all_us,$share,$batch,${failed:-0}" |
    tee -a "$csv"
}
# column SCENARIO COLUMN [PRINTF_FORMAT]: the median of COLUMN over SCENARIO's rows of the CSV,
# "-" if there is no value.
column() {
  local m
  m=$(awk -F, -v s="$1" -v col="$2" '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
    $1 == s && $c != "" { print $c + 0 }' "$csv" | median)
  if [ -z "$m" ]; then echo "-"; else awk -v m="$m" -v f="${3:-%s}" 'BEGIN { printf f "\n", m }'; fi
}

echo "== compare_cluster: REPS=$REPS DURATION=${DURATION}s; $(nproc) cores shared by every node" \
  "and the load generator"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for rep in $(seq "$REPS"); do
  # One plain node: its default gRPC server (native), then grpc++, the server cluster mode
  # always uses, so that what forwarding costs is not mixed up with the front end's cost.
  start_plain
  run_load grpc-1n grpc --concurrency "$CONNS"
  run_load http-1n http
  stop_nodes
  start_plain --grpc-impl grpcpp
  run_load grpc-1n-grpcpp grpc --concurrency "$CONNS"
  stop_nodes
  # Three nodes, batching on (the default, up to 128 a batch), all load to node a.
  start_cluster
  run_load grpc-3n grpc --concurrency "$CONNS"
  run_load grpc-3n-local grpc --concurrency "$CONNS" --key user_local
  run_load http-3n http
  stop_nodes
done
# Open loop at half the 3-node peak (its median closed-loop rate): latency a caller sees there,
# with the plain node (both gRPC servers) at the same rate for reference.
half=$(awk -v p="$(column grpc-3n rps)" 'BEGIN { printf "%d", p / 2 }')
for rep in $(seq "$REPS"); do
  start_cluster
  run_load grpc-3n-open grpc --concurrency 1000 --rate "$half"
  stop_nodes
  start_plain --grpc-impl grpcpp
  run_load grpc-1n-grpcpp-open grpc --concurrency 1000 --rate "$half"
  stop_nodes
  start_plain
  run_load grpc-1n-open grpc --concurrency 1000 --rate "$half"
  stop_nodes
done
finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)

row() { # row LABEL SCENARIO
  printf '| %s | %s | %s / %s | %s | %s | %s | %s |\n' "$1" \
    "$(column "$2" rps %d | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')" \
    "$(column "$2" p50_ms %.2f)" "$(column "$2" p99_ms %.2f)" "$(column "$2" entry_cpu_us %.1f)" \
    "$(column "$2" all_cpu_us %.1f)" "$(column "$2" forwarded_share %.2f)" \
    "$(column "$2" batch_mean %.1f)"
}
{
  echo "Run $started - $finished, REPS=$REPS, DURATION=${DURATION}s, medians;" \
    "$(nproc) cores shared by every node and the load generator; load average before: $load_before."
  echo
  echo "| setup | checks/s | p50 / p99 ms | CPU µs/check, entry node | CPU µs/check, all nodes" \
    "| forwarded share | mean batch |"
  echo "|---|---|---|---|---|---|---|"
  row "gRPC, 1 plain node (native gRPC server), 50 in flight" grpc-1n
  row "gRPC, 1 plain node, --grpc-impl grpcpp" grpc-1n-grpcpp
  row "gRPC, 3 nodes, load to one" grpc-3n
  row "gRPC, 3 nodes, consistency: local (no hop)" grpc-3n-local
  row "gRPC, 3 nodes, open loop at $half/s" grpc-3n-open
  row "gRPC, 1 plain node (grpcpp), open loop at $half/s" grpc-1n-grpcpp-open
  row "gRPC, 1 plain node (native), open loop at $half/s" grpc-1n-open
  if [ "$have_wrk" = 1 ]; then
    row "HTTP, 1 plain node, wrk -t2 -c$CONNS" http-1n
    row "HTTP, 3 nodes, load to one, wrk -t2 -c$CONNS" http-3n
  fi
  echo
  echo "CPU per check: utime+stime (/proc) over the run / checks answered; \"all nodes\" sums the"
  echo "three processes (forwarding, owner work, replication). Forwarded share and mean batch: the"
  echo "entry node's /v1/cluster forwarded / checks and forwarded / forward_batches."
} | tee "$out/table.md"
echo "results in $out"
