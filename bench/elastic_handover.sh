#!/usr/bin/env bash
# Elastic cluster (issue 13): what a join and a graceful leave cost, on 127.0.0.1, found through
# a real etcd. For every repetition, on fresh processes (etcd, then nodes n1..n3, --replicas 2):
#   load     KEYS distinct live keys (`user` of domain `bench`, limit 1e6/hour, so they stay
#            live for the run) through n1 with wrk and a sequential-key script; SPENT keys of a
#            3/hour limit spent fully (hits=3). Resident memory (VmRSS) of every node before and
#            after.
#   before   RATE checks/s, open loop (bench/grpc_load --rate, random keys of the KEYS loaded),
#            spread over n1..n3 for WINDOW s: p50/p99 and CPU per check.
#   join     the same load for WINDOW s; n4 starts 1 s into it. From n4's process start: its
#            listening line, and the moment every node (n4 included) logs "(4 members)". CPU per
#            check counts n4 too (its start-up is part of what a join costs).
#   warm-up  right after (n4 is a few seconds old; it fetches state for up to 30 s after it
#            starts): every spent key probed through n4 (each must stay refused: a 200 is a key
#            the join reset), then SAMPLE loaded keys checked through n4 twice (wrk). The first
#            pass fetches the state of the keys n4 now owns from their previous owner and
#            replica (warmup_fetches counts one per key and peer asked); the second fetches
#            nothing. Fetch bytes = the bytes on n4's peer connections (ss: tcp_info
#            bytes_received, bytes_sent) in pass 1 minus pass 2: forwards, replication and
#            heartbeats are the same in both passes, so what remains is the fetch frames.
#   leave    RATE checks/s again for WINDOW s: 1/4 of them to n1, 3/4 spread over n2..n4 (two
#            grpc_load processes); n1 gets SIGTERM 1 s in. Its "left the cluster" line (states,
#            bytes, time), when each survivor logs "(3 members)", and the failed checks of each
#            group: the survivors' must be 0; n1's are what a client retries on another node.
# Every node's stdout and stderr lines are time-stamped as they arrive ($EPOCHREALTIME), so
# the join and leave times are exact to the line, not to a polling interval.
# Every figure is the median of REPS; the CPU and p99 ratios are medians of the ratios taken
# within one repetition. Takes about REPS x (15 + KEYS / 30000 + 3 x WINDOW) s.
# Usage: bench/elastic_handover.sh [BUILD_DIR]
# Env: REPS (3), KEYS (1000000), SAMPLE (min(KEYS, 50000)), SPENT (200), RATE (4000 checks/s),
#      WINDOW (5 s).
# Results: bench/results/elastic-<stamp>/ (elastic.csv, table.md, raw/: node logs, tool output).
set -euo pipefail
build=$(realpath "${1:-build}")
here=$(cd "$(dirname "$0")/.." && pwd)
# fg_listening_port, kv, median.
. "$here/bench/lib.sh"
REPS=${REPS:-3}
KEYS=${KEYS:-1000000}
SAMPLE=${SAMPLE:-$((KEYS < 50000 ? KEYS : 50000))}
SPENT=${SPENT:-200}
RATE=${RATE:-4000}
WINDOW=${WINDOW:-5}
CLUSTER_KEY=bench-elastic-key
CLK_TCK=$(getconf CLK_TCK)
out="$here/bench/results/elastic-$(date -u +%Y%m%dT%H%M%SZ)"
raw="$out/raw"
csv="$out/elastic.csv"

die() {
  echo "elastic_handover: $*" >&2
  exit 1
}
for tool in "$build/floodgate" "$build/bench/grpc_load"; do
  [ -x "$tool" ] || die "$tool is not built (ninja -C $build floodgate grpc_load)"
done
for tool in curl python3 wrk etcd; do
  command -v "$tool" >/dev/null || die "needs $tool"
done
[ "$SAMPLE" -le "$KEYS" ] || die "SAMPLE ($SAMPLE) must be at most KEYS ($KEYS)"
mkdir -p "$raw"
work=$(mktemp -d /tmp/floodgate-elastic-XXXXXX)

# ---- Processes. Every pid this script starts is in `pids` (nodes, load tools) or `etcd_pid`.
pids=()
declare -A node_pid node_http node_grpc node_start
etcd_pid=""
stop_all() { # the nodes and tools first, etcd last (a leaving node revokes its lease)
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}" "$etcd_pid"; do
    [ -n "$p" ] || continue
    if [ "$p" = "$etcd_pid" ]; then kill "$p" 2>/dev/null || true; fi
    for _ in $(seq 80); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  pids=()
  node_pid=()
  etcd_pid=""
}
cleanup() {
  stop_all
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$work/config"
cat >"$work/config/bench.yaml" <<'EOF'
# Keys that stay live for the whole run (an hour-long window), and keys to spend.
domain: bench
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 1000000}
  - key: spent
    rate_limit: {unit: hour, requests_per_unit: 3}
EOF
# wrk: GET /v1/check?domain=bench&user=K for K = FIRST..LAST, each key once (thread t of THREADS
# takes FIRST+t, FIRST+t+THREADS, ...); then the thread stops, dropping the answers still in
# flight (their checks were sent and are decided), and leaves a file MARKS/<thread>. Counts
# answers by status.
cat >"$work/seq.lua" <<'EOF'
local first = tonumber(os.getenv("FIRST") or "1")
local last = tonumber(os.getenv("LAST"))
local nthreads = tonumber(os.getenv("THREADS"))
local threads = {}
local made = 0
function setup(thread)
  thread:set("tid", made)
  made = made + 1
  table.insert(threads, thread)
end
function init(args)
  nextkey = first + tid
  finished = false
  statuses = {}
end
function request()
  local k = nextkey
  if k > last then
    finished = true
    k = last
  else
    nextkey = nextkey + nthreads
  end
  return wrk.format(nil, "/v1/check?domain=bench&user=" .. k)
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if finished and not told then
    -- wrk runs until -d even when every thread stopped: tell the script, which sends SIGINT.
    told = true
    io.open(os.getenv("MARKS") .. "/" .. tid, "w"):close()
    wrk.thread:stop()
  end
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses")) do total[s] = (total[s] or 0) + n end
  end
  local line = "STATUS"
  for s, n in pairs(total) do line = line .. " s" .. s .. "=" .. n end
  print(line)
end
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
now_us() { echo "${EPOCHREALTIME/./}"; }
stamp_lines() { # stamp_lines FILE: copies stdin to FILE, each line prefixed by its arrival (µs)
  local l
  while IFS= read -r l; do printf '%s %s\n' "${EPOCHREALTIME/./}" "$l"; done >"$1"
}
start_etcd() {
  local ports
  read -r -a ports <<<"$(free_ports 2)"
  etcd_url="http://127.0.0.1:${ports[0]}"
  etcd --name bench --data-dir "$work/etcd-$rep" --listen-client-urls "$etcd_url" \
    --advertise-client-urls "$etcd_url" --listen-peer-urls "http://127.0.0.1:${ports[1]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${ports[1]}" \
    --initial-cluster "bench=http://127.0.0.1:${ports[1]}" --log-level error \
    >"$raw/etcd-rep$rep.log" 2>&1 &
  etcd_pid=$!
  for _ in $(seq 100); do
    curl -s -m 1 "$etcd_url/health" 2>/dev/null | grep -q '"health":"true"' && return 0
    sleep 0.1
  done
  die "etcd did not become healthy in 10 s: $(tail -3 "$raw/etcd-rep$rep.log")"
}
start_node() { # start_node NAME: a node on etcd; its start time (µs) in node_start
  local name=$1 port
  port=$(free_ports 1)
  node_start[$name]=$(now_us)
  "$build/floodgate" serve --config "$work/config" --http 127.0.0.1:0 --grpc 127.0.0.1:0 \
    --node-id "$name" --peer "127.0.0.1:$port" --etcd "$etcd_url" --cluster-key "$CLUSTER_KEY" \
    > >(stamp_lines "$raw/$name-rep$rep.out") 2> >(stamp_lines "$raw/$name-rep$rep.err") &
  node_pid[$name]=$!
  pids+=("$!")
}
wait_listening() { # wait_listening NAME: 30 s at most; sets node_http, node_grpc
  local name=$1 line=""
  for _ in $(seq 300); do
    line=$(grep -m1 ' floodgate: listening' "$raw/$name-rep$rep.out" 2>/dev/null || true)
    [ -n "$line" ] && break
    kill -0 "${node_pid[$name]}" 2>/dev/null ||
      die "node $name exited before listening: $(tail -5 "$raw/$name-rep$rep.err")"
    sleep 0.05
  done
  [ -n "$line" ] || die "node $name printed no listening line within 30 s"
  node_http[$name]=$(fg_listening_port http "$line")
  node_grpc[$name]=$(fg_listening_port grpc "$line")
}
cluster_field() { # cluster_field NAME FIELD: a top-level number of NAME's GET /v1/cluster
  curl -s -m 2 "http://127.0.0.1:${node_http[$1]}/v1/cluster" |
    sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" | head -1
}
wait_members() { # wait_members COUNT NAME...: 15 s at most until every NAME reports COUNT
  local count=$1 n ok
  shift
  for _ in $(seq 150); do
    ok=1
    for n in "$@"; do [ "$(cluster_field "$n" member_count)" = "$count" ] || ok=0; done
    [ "$ok" = 1 ] && return 0
    sleep 0.1
  done
  die "not every node of $* reports member_count=$count after 15 s"
}
# logged_at NAME PATTERN: the time (µs) of the first line of NAME's stderr matching PATTERN.
logged_at() { grep -m1 -- "$2" "$raw/$1-rep$rep.err" 2>/dev/null | cut -d' ' -f1; }
cpu_ticks() { # cpu_ticks PID...: utime+stime summed, in clock ticks
  local s=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && s=$((s + $(awk '{print $14+$15}' "/proc/$p/stat")))
  done
  echo "$s"
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# peer_bytes NAME: "RECEIVED SENT", the bytes on NAME's TCP connections (ss: tcp_info's
# bytes_received and bytes_sent) except its HTTP and gRPC front ends and etcd: the peer protocol.
peer_bytes() {
  ss -tinpH state established | awk -v pid="pid=${node_pid[$1]}," -v http="${node_http[$1]}" \
    -v grpc="${node_grpc[$1]}" -v etcd="${etcd_url##*:}" '
    /^[^ \t]/ { n = split($4, l, ":"); m = split($5, r, ":")
                mine = index($0, pid) > 0 && l[n] != http && l[n] != grpc && r[m] != etcd; next }
    mine { for (i = 1; i <= NF; i++) {
             if ($i ~ /^bytes_received:/) { sub(/.*:/, "", $i); rx += $i }
             if ($i ~ /^bytes_sent:/) { sub(/.*:/, "", $i); tx += $i } }
           mine = 0 }
    END { printf "%d %d\n", rx, tx }'
}
grpc_targets() { # grpc_targets NAME...
  local n list=""
  for n in "$@"; do list+="${list:+,}127.0.0.1:${node_grpc[$n]}"; done
  echo "$list"
}
grpc_bg() { # grpc_bg FILE RATE NAME...: bench/grpc_load open loop for WINDOW s; sets load_pid
  local f=$1 rate=$2
  shift 2
  timeout $((WINDOW + 30)) "$build/bench/grpc_load" --target "$(grpc_targets "$@")" \
    --seconds "$WINDOW" --rate "$rate" --concurrency 1000 --users "$KEYS" >"$f" 2>&1 &
  load_pid=$!
  pids+=("$load_pid")
}
wrk_pass() { # wrk_pass FILE NAME FIRST LAST: every key FIRST..LAST once through NAME (wrk)
  local marks="$work/marks" wrk_pid
  rm -rf "$marks"
  mkdir "$marks"
  MARKS=$marks FIRST=$3 LAST=$4 THREADS=2 timeout 630 wrk -t2 -c32 -d600s --timeout 5s \
    --latency -s "$work/seq.lua" "http://127.0.0.1:${node_http[$2]}/" >"$1" 2>&1 &
  wrk_pid=$!
  pids+=("$wrk_pid")
  while kill -0 "$wrk_pid" 2>/dev/null && [ "$(ls "$marks" | wc -l)" -lt 2 ]; do sleep 0.05; done
  kill -INT "$wrk_pid" 2>/dev/null || true # timeout passes it on; wrk then prints its summary
  wait "$wrk_pid" || true
  grep -q '^STATUS' "$1" || die "wrk through $2 failed: $(tail -3 "$1")"
}
wrk_status() { sed -n "s/.*\<s$2=\([0-9]*\).*/\1/p" "$1" | head -1; } # wrk_status FILE CODE
wrk_ms() { # wrk_ms FILE 50%|99%: a latency percentile in ms
  awk -v p="$2" '$1 == p { v = $2; if (sub(/us$/, "", v)) printf "%.3f", v / 1000
                           else if (sub(/ms$/, "", v)) printf "%.3f", v
                           else if (sub(/s$/, "", v)) printf "%.3f", v * 1000 }' "$1"
}
spend_keys() { # spend_keys NAME HITS: SPENT `spent` keys with HITS hits each; prints the codes
  local i args=()
  for i in $(seq "$SPENT"); do
    args+=(-o /dev/null "http://127.0.0.1:${node_http[$1]}/v1/check?domain=bench&spent=$i&hits=$2")
  done
  curl -s -m 60 -w '%{http_code}\n' "${args[@]}"
}
per_check_us() { # per_check_us TICKS CHECKS
  awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.2f", t / hz * 1e6 / n }'
}
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "") printf "%.0f", (b - a) / 1000 }'; }
record() { # record NAME VALUE: one figure of this repetition
  echo "$rep,$1,$2" >>"$csv"
  printf '  %-28s %s\n' "$1" "$2"
}

echo "rep,figure,value" >"$csv"
echo "== elastic_handover: REPS=$REPS KEYS=$KEYS SAMPLE=$SAMPLE SPENT=$SPENT RATE=$RATE/s" \
  "WINDOW=${WINDOW}s; $(nproc) cores shared by etcd, every node and the load tools"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for rep in $(seq "$REPS"); do
  echo "-- repetition $rep"
  start_etcd
  for n in n1 n2 n3; do start_node "$n"; done
  for n in n1 n2 n3; do wait_listening "$n"; done
  wait_members 3 n1 n2 n3
  rss0=0
  for n in n1 n2 n3; do rss0=$((rss0 + $(rss_kb "${node_pid[$n]}"))); done

  # -- Load KEYS keys, spend SPENT others.
  t0=$(now_us)
  wrk_pass "$raw/load-rep$rep.txt" n1 1 "$KEYS"
  t1=$(now_us)
  # A thread stops at its first answer after its last key, so up to one check per connection
  # (32) was sent and decided but its answer not counted.
  [ "$(wrk_status "$raw/load-rep$rep.txt" 200)" -ge $((KEYS - 32)) ] ||
    die "loading: not every check passed: $(grep STATUS "$raw/load-rep$rep.txt")"
  record load_keys_per_s "$(awk -v k="$KEYS" -v d=$((t1 - t0)) 'BEGIN { printf "%.0f", k / d * 1e6 }')"
  spend_keys n1 3 >/dev/null
  [ "$(spend_keys n1 1 | grep -c '^429$')" = "$SPENT" ] || die "the spent keys are not refused"
  rss1=0
  for n in n1 n2 n3; do rss1=$((rss1 + $(rss_kb "${node_pid[$n]}"))); done
  record rss_3_nodes_before_mib "$(awk -v k="$rss0" 'BEGIN { printf "%.0f", k / 1024 }')"
  record rss_3_nodes_loaded_mib "$(awk -v k="$rss1" 'BEGIN { printf "%.0f", k / 1024 }')"
  record rss_bytes_per_key "$(awk -v a="$rss0" -v b="$rss1" -v k="$KEYS" 'BEGIN { printf "%.0f", (b - a) * 1024 / k }')"

  # -- Steady load before the join.
  c0=$(cpu_ticks "${node_pid[n1]}" "${node_pid[n2]}" "${node_pid[n3]}")
  grpc_bg "$raw/before-rep$rep.txt" "$RATE" n1 n2 n3
  wait "$load_pid" || true
  c1=$(cpu_ticks "${node_pid[n1]}" "${node_pid[n2]}" "${node_pid[n3]}")
  s=$(cat "$raw/before-rep$rep.txt")
  [ -n "$(kv "$s" requests)" ] || die "grpc_load failed before the join: $s"
  record before_checks "$(kv "$s" requests)"
  record before_failed "$(kv "$s" failed)"
  record before_p50_ms "$(kv "$s" p50_ms)"
  record before_p99_ms "$(kv "$s" p99_ms)"
  record before_cpu_us_per_check "$(per_check_us $((c1 - c0)) "$(kv "$s" requests)")"

  # -- The same load; n4 joins 1 s into it.
  c0=$(cpu_ticks "${node_pid[n1]}" "${node_pid[n2]}" "${node_pid[n3]}")
  grpc_bg "$raw/join-rep$rep.txt" "$RATE" n1 n2 n3
  sleep 1
  start_node n4
  wait "$load_pid" || true
  c1=$(cpu_ticks "${node_pid[n1]}" "${node_pid[n2]}" "${node_pid[n3]}" "${node_pid[n4]}")
  wait_listening n4
  wait_members 4 n1 n2 n3 n4
  s=$(cat "$raw/join-rep$rep.txt")
  [ -n "$(kv "$s" requests)" ] || die "grpc_load failed during the join: $s"
  record join_checks "$(kv "$s" requests)"
  record join_failed "$(kv "$s" failed)"
  record join_p50_ms "$(kv "$s" p50_ms)"
  record join_p99_ms "$(kv "$s" p99_ms)"
  record join_cpu_us_per_check "$(per_check_us $((c1 - c0)) "$(kv "$s" requests)")"
  listen=$(grep -m1 ' floodgate: listening' "$raw/n4-rep$rep.out" | cut -d' ' -f1)
  record join_listening_ms "$(ms_between "${node_start[n4]}" "$listen")"
  owned=0
  for n in n1 n2 n3 n4; do
    at=$(logged_at "$n" '(4 members)')
    [ -n "$at" ] || die "$n logged no '(4 members)' line"
    if [ "$at" -gt "$owned" ]; then owned=$at; fi
  done
  record join_all_see_4_ms "$(ms_between "${node_start[n4]}" "$owned")"

  # -- Through n4 while it warms up: the spent keys, then SAMPLE keys twice.
  record spent_keys_probed "$SPENT"
  record spent_keys_reset "$(spend_keys n4 1 | grep -c '^200$' || true)"
  f0=$(cluster_field n4 warmup_fetches)
  read -r r0 w0 <<<"$(peer_bytes n4)"
  wrk_pass "$raw/pass1-rep$rep.txt" n4 1 "$SAMPLE"
  read -r r1 w1 <<<"$(peer_bytes n4)"
  f1=$(cluster_field n4 warmup_fetches)
  wrk_pass "$raw/pass2-rep$rep.txt" n4 1 "$SAMPLE"
  read -r r2 w2 <<<"$(peer_bytes n4)"
  f2=$(cluster_field n4 warmup_fetches)
  age=$(ms_between "${node_start[n4]}" "$(now_us)")
  [ "$age" -lt 30000 ] || echo "  (warning: n4 is ${age} ms old after the passes; its warm-up" \
    "window is 30 s, so pass 1 may have fetched less than it would have)"
  record pass1_warmup_fetches $((f1 - f0))
  record pass2_warmup_fetches $((f2 - f1))
  refused=$(wrk_status "$raw/pass1-rep$rep.txt" 429)
  record pass1_refused "${refused:-0}"
  record pass1_p50_ms "$(wrk_ms "$raw/pass1-rep$rep.txt" 50%)"
  record pass1_p99_ms "$(wrk_ms "$raw/pass1-rep$rep.txt" 99%)"
  record pass2_p50_ms "$(wrk_ms "$raw/pass2-rep$rep.txt" 50%)"
  record pass2_p99_ms "$(wrk_ms "$raw/pass2-rep$rep.txt" 99%)"
  record fetch_bytes_in $(((r1 - r0) - (r2 - r1)))
  record fetch_bytes_out $(((w1 - w0) - (w2 - w1)))
  record fetch_bytes_per_fetch "$(awk -v b=$(((r1 - r0) - (r2 - r1) + (w1 - w0) - (w2 - w1))) \
    -v f=$((f1 - f0)) 'BEGIN { if (f > 0) printf "%.0f", b / f }')"
  record warmup_fetches_n4_total "$(cluster_field n4 warmup_fetches)"
  record rss_n4_mib "$(awk -v k="$(rss_kb "${node_pid[n4]}")" 'BEGIN { printf "%.0f", k / 1024 }')"

  # -- Graceful leave of n1 under the same total load.
  c0=$(cpu_ticks "${node_pid[n1]}" "${node_pid[n2]}" "${node_pid[n3]}" "${node_pid[n4]}")
  grpc_bg "$raw/leave-others-rep$rep.txt" $((RATE * 3 / 4)) n2 n3 n4
  others_pid=$load_pid
  grpc_bg "$raw/leave-leaver-rep$rep.txt" $((RATE / 4)) n1
  leaver_pid=$load_pid
  sleep 1
  term=$(now_us)
  kill -TERM "${node_pid[n1]}"
  wait "$others_pid" "$leaver_pid" || true
  for _ in $(seq 100); do kill -0 "${node_pid[n1]}" 2>/dev/null || break; sleep 0.1; done
  kill -0 "${node_pid[n1]}" 2>/dev/null && die "n1 still runs 10 s after SIGTERM"
  wait "${node_pid[n1]}" || true
  gone=$(now_us)
  wait_members 3 n2 n3 n4
  line=$(grep -m1 'left the cluster' "$raw/n1-rep$rep.err" || true)
  [ -n "$line" ] || die "n1 logged no 'left the cluster' line: $(tail -5 "$raw/n1-rep$rep.err")"
  record leave_states "$(sed -n 's/.*: \([0-9]*\) states.*/\1/p' <<<"$line")"
  record leave_bytes "$(sed -n 's/.*states (\([0-9]*\) bytes).*/\1/p' <<<"$line")"
  record leave_handover_time "$(sed -n 's/.* handed over in \([^ ]*\).*/\1/p' <<<"$line")"
  dropped=0
  for n in n2 n3 n4; do
    at=$(logged_at "$n" 'n1 left (3 members)')
    [ -n "$at" ] || die "$n logged no 'n1 left (3 members)' line"
    if [ "$at" -gt "$dropped" ]; then dropped=$at; fi
  done
  record leave_all_see_3_ms "$(ms_between "$term" "$dropped")"
  record leave_exit_ms "$(ms_between "$term" "$gone")"
  s=$(cat "$raw/leave-others-rep$rep.txt")
  record leave_survivor_checks "$(kv "$s" requests)"
  record leave_survivor_failed "$(kv "$s" failed)"
  record leave_survivor_p99_ms "$(kv "$s" p99_ms)"
  s=$(cat "$raw/leave-leaver-rep$rep.txt")
  record leave_leaver_checks "$(kv "$s" requests)"
  record leave_leaver_failed "$(kv "$s" failed)"
  stop_all
done
finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)

col() { # col FIGURE [FORMAT]: the median over repetitions, "-" if none
  local m
  m=$(awk -F, -v f="$1" '$2 == f && $3 != "" { print $3 + 0 }' "$csv" | median)
  if [ -z "$m" ]; then echo "-"; else awk -v m="$m" -v f="${2:-%s}" 'BEGIN { printf f "\n", m }'; fi
}
ratio() { # ratio A B: the median over repetitions of A / B within one repetition
  local r a b m
  m=$(for r in $(seq "$REPS"); do
    a=$(awk -F, -v f="$1" -v r="$r" '$1 == r && $2 == f { print $3 }' "$csv")
    b=$(awk -F, -v f="$2" -v r="$r" '$1 == r && $2 == f { print $3 }' "$csv")
    [ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) print a / b }'
  done | median)
  if [ -z "$m" ]; then echo "-"; else printf '%.2fx\n' "$m"; fi
}
all() { awk -F, -v f="$1" '$2 == f { printf "%s%s", sep, $3; sep = " " } END { print "" }' "$csv"; }
{
  echo "Run $started - $finished, REPS=$REPS, KEYS=$KEYS, SAMPLE=$SAMPLE, SPENT=$SPENT," \
    "RATE=$RATE/s, WINDOW=${WINDOW}s, medians; $(nproc) cores shared by etcd, every node and" \
    "the load tools; load average before: $load_before."
  echo
  echo "| | figure |"
  echo "|---|---|"
  echo "| loading KEYS keys through n1 (wrk, each key once) | $(col load_keys_per_s %d) keys/s |"
  echo "| resident memory, 3 nodes, empty / loaded | $(col rss_3_nodes_before_mib) / $(col rss_3_nodes_loaded_mib) MiB ($(col rss_bytes_per_key) B per key, 2 copies each) |"
  echo "| join: start to listening line | $(col join_listening_ms) ms (each rep: $(all join_listening_ms)) |"
  echo "| join: start to every node at member_count 4 | $(col join_all_see_4_ms) ms (each rep: $(all join_all_see_4_ms)) |"
  echo "| spent keys probed through n4 / reset by the join | $(col spent_keys_probed) / $(col spent_keys_reset) |"
  echo "| check pass of SAMPLE keys through n4: warm-up fetches, 1st / 2nd pass | $(col pass1_warmup_fetches) / $(col pass2_warmup_fetches) |"
  echo "| fetch traffic on n4's peer connections (pass 1 - pass 2, ss), in / out | $(col fetch_bytes_in) / $(col fetch_bytes_out) B ($(col fetch_bytes_per_fetch) B per fetch) |"
  echo "| check latency through n4, 1st pass p50 / p99 | $(col pass1_p50_ms) / $(col pass1_p99_ms) ms |"
  echo "| check latency through n4, 2nd pass p50 / p99 | $(col pass2_p50_ms) / $(col pass2_p99_ms) ms |"
  echo "| resident memory of n4 after the passes | $(col rss_n4_mib) MiB |"
  echo "| steady $RATE/s, ${WINDOW} s before the join: p50 / p99, CPU per check | $(col before_p50_ms %.2f) / $(col before_p99_ms %.2f) ms, $(col before_cpu_us_per_check %.1f) µs |"
  echo "| the same, ${WINDOW} s around the join: p50 / p99, CPU per check | $(col join_p50_ms %.2f) / $(col join_p99_ms %.2f) ms, $(col join_cpu_us_per_check %.1f) µs |"
  echo "| around / before the join: CPU per check, p99 | $(ratio join_cpu_us_per_check before_cpu_us_per_check), $(ratio join_p99_ms before_p99_ms) |"
  echo "| failed checks before / around the join | $(col before_failed) / $(col join_failed) |"
  echo "| leave (SIGTERM n1): handed over | $(col leave_states) states, $(col leave_bytes) B, in $(all leave_handover_time) |"
  echo "| leave: SIGTERM to every survivor at member_count 3 | $(col leave_all_see_3_ms) ms (each rep: $(all leave_all_see_3_ms)) |"
  echo "| leave: SIGTERM to n1's exit | $(col leave_exit_ms) ms |"
  echo "| leave: failed checks on the survivors / of their checks | $(col leave_survivor_failed) / $(col leave_survivor_checks) (p99 $(col leave_survivor_p99_ms %.2f) ms) |"
  echo "| leave: failed checks sent to n1 / of its checks (a client retries these elsewhere) | $(col leave_leaver_failed) / $(col leave_leaver_checks) |"
} | tee "$out/table.md"
echo "results in $out"
