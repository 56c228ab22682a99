#!/usr/bin/env bash
# How cluster cost grows with nodes (issue 12's targets), in ONE run on 127.0.0.1: 1, 3 and 5
# nodes, each measured with the same gRPC load (bench/grpc_load, closed loop, CONNS in flight,
# USERS random users of domain `bench`, limit 1e6/s so every check is decided and passes):
#   one     all load to node 1, so (N-1)/N of the checks are forwarded to their owner
#   spread  load round-robin over every node (each node forwards what it does not own)
#   local   load to node 1 on `user_local`, the same limit with `consistency: local` (decided
#           on the entry node; its hits are reported to the owner in the background)
#   hot     load spread over every node, 90% of checks on one key (exact, and with
#           consistency: local)
#   open    3 nodes, load to one, open loop at half the 3-node `one` peak: the latency a caller
#           sees when the cluster is not saturated; and 1 node at the same rate, for the tail
#           the machine and the load tool add alone
# and HTTP (`wrk -t2 -cCONNS`, bench/wrk/check_users.lua) on 1 and 3 nodes, load to one.
# CPU per check = utime+stime (/proc) of EVERY node over the run / checks answered: the figure
# that carries to bigger machines, since capacity(N) = N x cores / CPU per check. Forwarded share
# and mean batch come from every node's GET /v1/cluster counters. Each repetition runs every setup on
# fresh processes, so a change in the shared machine's speed hits all alike; every figure is the
# median of REPS runs, and each ratio is the median of the ratios taken within one repetition.
# Takes about REPS x 17 x (DURATION + 2) s.
# Usage: bench/scale_cluster.sh [BUILD_DIR]
# Env: REPS (3), DURATION (10 s per run), CONNS (50), USERS (100000), NODES ("1 3 5").
# Results: bench/results/scale-<stamp>/ (scale.csv, table.md, raw/: load output, node stderr).
set -euo pipefail
build=$(realpath "${1:-build}")
here=$(cd "$(dirname "$0")/.." && pwd)
# fg_listening_port, kv, median.
. "$here/bench/lib.sh"
REPS=${REPS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
USERS=${USERS:-100000}
NODES=${NODES:-"1 3 5"}
KEY=bench-scale-cluster-key
CLK_TCK=$(getconf CLK_TCK)
out="$here/bench/results/scale-$(date -u +%Y%m%dT%H%M%SZ)"
raw="$out/raw"
csv="$out/scale.csv"

die() {
  echo "scale_cluster: $*" >&2
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
echo "scenario,rep,checks,rps,p50_ms,p99_ms,all_cpu_us,forwarded_share,batch_mean,failed,ctx_switches_per_check" >"$csv"
work=$(mktemp -d /tmp/floodgate-scale-XXXXXX)

# ---- Nodes n1..nN; every running node's pid is in `pids`.
pids=()
nodes=()
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
  nodes=()
}
cleanup() {
  stop_nodes
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$work/config"
cp "$here/bench/config/bench.yaml" "$work/config/bench.yaml"
cat >>"$work/config/bench.yaml" <<'EOF'
  - key: user_local
    rate_limit: {unit: second, requests_per_unit: 1000000, consistency: local}
EOF

free_ports() { # free_ports N: N free TCP ports on 127.0.0.1
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
starts=0
start_node() { # start_node NAME [FLAGS...]
  local name=$1
  shift
  starts=$((starts + 1))
  node_err[$name]="$raw/$name-$starts.err"
  "$build/floodgate" serve --config "$work/config" --http 127.0.0.1:0 --grpc 127.0.0.1:0 "$@" \
    >"$work/$name.out" 2>"${node_err[$name]}" &
  node_pid[$name]=$!
  pids+=($!)
  nodes+=("$name")
}
wait_listening() { # wait_listening NAME: 30 s at most for "floodgate: listening http=P grpc=Q"
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
cluster_json() { curl -s "http://127.0.0.1:${node_http[n1]}/v1/cluster" || true; }
# start_cluster N: nodes n1..nN (one plain node when N = 1); waits until n1 sees all alive.
start_cluster() {
  local count=$1 ports peers="" i alive
  if [ "$count" = 1 ]; then
    start_node n1
    wait_listening n1
    return 0
  fi
  read -r -a ports <<<"$(free_ports "$count")"
  for i in $(seq "$count"); do peers+="${peers:+,}n$i=127.0.0.1:${ports[$((i - 1))]}"; done
  for i in $(seq "$count"); do
    start_node "n$i" --node-id "n$i" --peers "$peers" --cluster-key "$KEY"
  done
  for i in $(seq "$count"); do wait_listening "n$i"; done
  for _ in $(seq 100); do
    alive=$(cluster_json | grep -o '"alive":true' | wc -l)
    [ "$alive" = "$count" ] && return 0
    sleep 0.1
  done
  die "node n1 does not see all $count members alive after 10 s: $(cluster_json)"
}
check_alive() { # check_alive WHAT: fails clearly if a node died during WHAT
  local n
  for n in "${nodes[@]}"; do
    kill -0 "${node_pid[$n]}" 2>/dev/null ||
      die "node $n (pid ${node_pid[$n]}) died during $1: $(tail -5 "${node_err[$n]}")"
  done
}

# ---- Measurement.
cpu_ticks() { # cpu_ticks PID...: utime+stime summed, in clock ticks
  local s=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && s=$((s + $(awk '{print $14+$15}' "/proc/$p/stat")))
  done
  echo "$s"
}
ctx_switches() { # ctx_switches PID...: voluntary + involuntary context switches of every thread
  local p
  for p in "$@"; do cat /proc/"$p"/task/*/status 2>/dev/null; done |
    awk '/^(non)?voluntary_ctxt_switches:/ { s += $2 } END { printf "%d\n", s }'
}
forward_counters() { # "FORWARDED BATCHES" summed over every node and its peers ("0 0" alone)
  local n
  [ "${#nodes[@]}" -gt 1 ] || {
    echo "0 0"
    return
  }
  for n in "${nodes[@]}"; do curl -s "http://127.0.0.1:${node_http[$n]}/v1/cluster" || true; done |
    tr ',{}' '\n' |
    awk -F: '$1 == "\"forwarded\"" { f += $2 } $1 == "\"forward_batches\"" { b += $2 }
             END { printf "%d %d\n", f, b }'
}
to_ms() { # to_ms 850.00us|1.20ms|1.02s
  awk -v v="$1" 'BEGIN { if (sub(/us$/, "", v)) printf "%.3f", v / 1000
                         else if (sub(/ms$/, "", v)) printf "%.3f", v
                         else if (sub(/s$/, "", v)) printf "%.3f", v * 1000 }'
}
grpc_targets() { # grpc_targets one|spread: the --target list
  local n list=""
  if [ "$1" = one ]; then
    echo "127.0.0.1:${node_grpc[n1]}"
    return
  fi
  for n in "${nodes[@]}"; do list+="${list:+,}127.0.0.1:${node_grpc[$n]}"; done
  echo "$list"
}
# run_load SCENARIO grpc|http one|spread [GRPC_LOAD_FLAGS...]: one run (repetition $rep);
# appends a row to the CSV.
run_load() {
  local scenario=$1 kind=$2 where=$3 f="$raw/$1-rep$rep.txt" all0 all1 fw0 ba0 fw1 ba1
  local checks rps p50 p99 failed share batch all_us summary cs0 cs1 cs
  shift 3
  [ "$kind" = http ] && [ "$have_wrk" = 0 ] && return 0
  read -r fw0 ba0 <<<"$(forward_counters)"
  local n per0=() per1=()
  for n in "${nodes[@]}"; do per0+=("$(cpu_ticks "${node_pid[$n]}")"); done
  all0=$(cpu_ticks "${pids[@]}")
  cs0=$(ctx_switches "${pids[@]}")
  if [ "$kind" = grpc ]; then
    timeout $((DURATION + 60)) "$build/bench/grpc_load" --target "$(grpc_targets "$where")" \
      --seconds "$DURATION" --users "$USERS" "$@" >"$f" 2>&1 || true
  else
    USERS=$USERS MAX_REQ=5000000 timeout $((DURATION + 30)) wrk -t2 -c"$CONNS" -d"${DURATION}s" \
      --timeout 5s --latency -s "$here/bench/wrk/check_users.lua" \
      "http://127.0.0.1:${node_http[n1]}/" >"$f" 2>&1 || true
  fi
  all1=$(cpu_ticks "${pids[@]}")
  cs1=$(ctx_switches "${pids[@]}")
  for n in "${nodes[@]}"; do per1+=("$(cpu_ticks "${node_pid[$n]}")"); done
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
  all_us=$(awk -v a="$all0" -v b="$all1" -v n="$checks" -v hz="$CLK_TCK" \
    'BEGIN { if (n > 0) printf "%.2f", (b - a) / hz * 1e6 / n }')
  cs=$(awk -v a="$cs0" -v b="$cs1" -v n="$checks" 'BEGIN { if (n > 0) printf "%.3f", (b - a) / n }')
  echo "$scenario,$rep,$checks,$rps,$p50,$p99,$all_us,$share,$batch,${failed:-0},$cs" | tee -a "$csv"
  # Each node's share, for reading where the CPU goes (entry node against owners).
  local i=0
  for n in "${nodes[@]}"; do
    awk -v n="$n" -v a="${per0[$i]}" -v b="${per1[$i]}" -v c="$checks" -v hz="$CLK_TCK" \
      'BEGIN { printf "%s cpu_us_per_check=%.2f\n", n, (b - a) / hz * 1e6 / c }'
    i=$((i + 1))
  done >"$raw/$scenario-rep$rep.cpu"
}
# value SCENARIO COLUMN REP: one cell of the CSV.
value() {
  awk -F, -v s="$1" -v col="$2" -v r="$3" '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
    $1 == s && $2 == r { print $c }' "$csv"
}
# column SCENARIO COLUMN [FORMAT]: the median of COLUMN over SCENARIO's rows, "-" if none.
column() {
  local m
  m=$(awk -F, -v s="$1" -v col="$2" '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
    $1 == s && $c != "" { print $c + 0 }' "$csv" | median)
  if [ -z "$m" ]; then echo "-"; else awk -v m="$m" -v f="${3:-%s}" 'BEGIN { printf f "\n", m }'; fi
}
# ratio A B COLUMN: the median over repetitions of A's COLUMN / B's COLUMN in the same
# repetition, "-" if none.
ratio() {
  local r a b m
  m=$(for r in $(seq "$REPS"); do
    a=$(value "$1" "$3" "$r") b=$(value "$2" "$3" "$r")
    [ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) print a / b }'
  done | median)
  if [ -z "$m" ]; then echo "-"; else printf '%.2fx\n' "$m"; fi
}

echo "== scale_cluster: NODES=\"$NODES\" REPS=$REPS DURATION=${DURATION}s; $(nproc) cores" \
  "shared by every node and the load generator"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for rep in $(seq "$REPS"); do
  for n in $NODES; do
    start_cluster "$n"
    run_load "grpc-${n}n-one" grpc one --concurrency "$CONNS"
    if [ "$n" != 1 ]; then
      run_load "grpc-${n}n-spread" grpc spread --concurrency "$CONNS"
      run_load "grpc-${n}n-local" grpc one --concurrency "$CONNS" --key user_local
    fi
    if [ "$n" = 1 ] || [ "$n" = 3 ]; then
      run_load "grpc-${n}n-hot" grpc spread --concurrency "$CONNS" --hot-share 0.9
      [ "$n" = 1 ] || run_load "grpc-${n}n-hot-local" grpc spread --concurrency "$CONNS" \
        --hot-share 0.9 --key user_local
      run_load "http-${n}n" http one
    fi
    stop_nodes
  done
done
# Open loop at half the 3-node peak, load to one node: latency when not saturated.
half=$(awk -v p="$(column grpc-3n-one rps)" 'BEGIN { printf "%d", p / 2 }')
if [ "$half" -gt 0 ]; then
  for rep in $(seq "$REPS"); do
    # The same offered load on one node: the tail the machine and the load tool add alone.
    start_cluster 1
    run_load grpc-1n-open grpc one --concurrency 1000 --rate "$half"
    stop_nodes
    start_cluster 3
    run_load grpc-3n-open grpc one --concurrency 1000 --rate "$half"
    stop_nodes
  done
fi
finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)

row() { # row LABEL SCENARIO BASELINE
  printf '| %s | %s | %s / %s | %s | %s | %s | %s | %s |\n' "$1" \
    "$(column "$2" rps %d | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')" \
    "$(column "$2" p50_ms %.2f)" "$(column "$2" p99_ms %.2f)" "$(column "$2" all_cpu_us %.2f)" \
    "$(ratio "$2" "$3" all_cpu_us)" "$(column "$2" forwarded_share %.2f)" \
    "$(column "$2" batch_mean %.1f)" "$(column "$2" ctx_switches_per_check %.2f)"
}
{
  echo "Run $started - $finished, REPS=$REPS, DURATION=${DURATION}s, $CONNS in flight, medians;" \
    "$(nproc) cores shared by every node and the load generator; load average before:" \
    "$load_before."
  echo
  echo "| setup | checks/s | p50 / p99 ms | CPU µs/check, all nodes | vs 1 node | forwarded" \
    "share | mean batch | context switches/check |"
  echo "|---|---|---|---|---|---|---|---|"
  row "gRPC, 1 node" grpc-1n-one grpc-1n-one
  for n in $NODES; do
    [ "$n" = 1 ] && continue
    row "gRPC, $n nodes, load to one" "grpc-${n}n-one" grpc-1n-one
    row "gRPC, $n nodes, load spread" "grpc-${n}n-spread" grpc-1n-one
    row "gRPC, $n nodes, consistency: local" "grpc-${n}n-local" grpc-1n-one
  done
  row "gRPC, 1 node, hot key (90%)" grpc-1n-hot grpc-1n-hot
  row "gRPC, 3 nodes, hot key (90%), spread, exact" grpc-3n-hot grpc-1n-hot
  row "gRPC, 3 nodes, hot key (90%), spread, local" grpc-3n-hot-local grpc-1n-hot
  row "gRPC, 1 node, open loop at $half/s" grpc-1n-open grpc-1n-open
  row "gRPC, 3 nodes, load to one, open loop at $half/s" grpc-3n-open grpc-1n-open
  if [ "$have_wrk" = 1 ]; then
    row "HTTP, 1 node, wrk -t2 -c$CONNS" http-1n http-1n
    row "HTTP, 3 nodes, load to one" http-3n http-1n
  fi
  echo
  echo "Hot key against spread keys, 3 nodes (checks/s, same repetition): exact" \
    "$(ratio grpc-3n-hot grpc-3n-spread rps), local $(ratio grpc-3n-hot-local grpc-3n-spread rps)."
  echo
  echo "CPU per check: utime+stime (/proc) of every node over the run / checks answered;" \
    "\"vs 1 node\": the median of the per-repetition ratios to the 1-node row named. Forwarded" \
    "share and mean batch: forwarded / checks and forwarded / forward_batches, summed over" \
    "every node's /v1/cluster. Context switches: voluntary + involuntary, every thread of every" \
    "node (/proc/PID/task/*/status), per check answered."
} | tee "$out/table.md"
echo "results in $out"
