#!/usr/bin/env bash
# The overload scenarios of docs/overload.md, each against a fresh `floodgate serve` over HTTP,
# each ending with a PASS or FAIL line for its bound:
#   hot       90% of the checks on one key, against the same load spread over 100k keys
#             (closed-loop peak, and p99 open loop at half the spread peak): hot >= spread / 2.
#             The spread peak is the capacity the crowd scales to.
#   overload  the closed-loop peak of 200 connections x 8 pipelined, then open loop at twice it:
#             answered p99 <= 5 ms and the excess answered at once (no caller gives up after
#             its 20 ms timeout, no errors).
#   crowd     normal rate, 100x for CROWD_PEAK_S, normal again (100x = CROWD_LOAD x capacity):
#             no crash, tracked users admitted exactly their limit in every window.
#   flood     FLOOD_KEYS new keys as fast as the driver goes (closed loop) against
#             --max-memory FLOOD_CAP: RSS under the cap, tracked users exact.
# Load: bench/overload/overload_load.cc, overload_client.{h,cc} and bench/proc_stats.{h,cc}, built
# here into BUILD_DIR/bench/. The driver, the server and whatever else runs share the machine's
# cores. Before each measurement the script waits until no other load generator runs (up to 10
# minutes, then it notes this and goes on). It also waits up to 60 s for the rest of the machine
# to calm down. It records what ran meanwhile in noise.txt, and runs a measurement again once if
# a load generator ran during it.
#
# Usage: bench/overload/run.sh [BUILD_DIR]       (about 6 minutes on the 2-core machine)
# Env: SCENARIOS ("hot overload crowd flood"), REPS (3: repetitions of the closed-loop runs),
#   HOT_S (6), OVERLOAD_S (20), CROWD_NORMAL_S (10), CROWD_PEAK_S (30), CROWD_LOAD (0.8),
#   FLOOD_KEYS (10000000), FLOOD_MAX_S (150), FLOOD_CAP (268435456 bytes), CAPACITY (checks/s:
#   skips measuring it when the hot scenario is not run), RETRY (1), OTHER_CPU_MAX (0.3 cores),
#   PLOT (1: draw docs/img/overload-*.png), PYTHON (/usr/bin/python3).
# Results: bench/results/overload-<stamp>/ (summary.txt, noise.txt, per run: NAME.txt with the
# driver's figures, NAME.csv its time series).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
build=$(realpath "${1:-build}")
# fg_start_node, kv, median.
. "$here/bench/lib.sh"
scenarios=${SCENARIOS:-hot overload crowd flood}
reps=${REPS:-3}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$here/bench/results/overload-$stamp"
mkdir -p "$out"
summary="$out/summary.txt"
driver="$build/bench/overload_load"
srcs=("$here/bench/overload/overload_load.cc" "$here/bench/overload/overload_client.cc"
  "$here/bench/proc_stats.cc")
stale=0
[ -x "$driver" ] || stale=1
for f in "${srcs[@]}" "$here/bench/overload/overload_client.h" "$here/bench/proc_stats.h"; do
  if [ "$f" -nt "$driver" ]; then stale=1; fi
done
if [ $stale = 1 ]; then
  mkdir -p "$build/bench"
  ${CXX:-c++} -O2 -std=c++20 -Wall -I "$here" -o "$driver" "${srcs[@]}"
fi

fg_pid=""
# Optional CPU pinning (e.g. "taskset -c 0") for the server and the load driver; see scenario d.
server_cpu=""
driver_cpu=""
cleanup() {
  if [ -n "$fg_pid" ]; then kill "$fg_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

log() { echo "$*" | tee -a "$summary"; }

# Prints the load generators running that this script did not start (the machine is shared).
ancestors=" "
a=$$
while [ -n "$a" ] && [ "$a" -gt 1 ]; do
  ancestors="$ancestors$a "
  a=$(awk '{print $4}' "/proc/$a/stat" 2>/dev/null || true)
done
foreign_load() {
  local p a mine
  local pattern='grpc_load|http_load|wrk |redis-benchmark|compare_servers|scale_cluster'
  for p in $(pgrep -f "$pattern" || true); do
    # Ours when it is one of our ancestors (make bench) or runs under this script.
    mine=0
    [[ "$ancestors" == *" $p "* ]] && mine=1
    a=$p
    while [ $mine = 0 ] && [ -n "$a" ] && [ "$a" -gt 1 ]; do
      [ "$a" = $$ ] && mine=1
      a=$(awk '{print $4}' "/proc/$a/stat" 2>/dev/null || true)
    done
    if [ $mine = 0 ]; then printf ' %s' "$p"; fi
  done
}

# above A B: true when the number A is greater than B.
above() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a > b)}'; }

# Prints the cores the machine used over one second.
busy_cores() {
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  sleep 1
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  awk -v a="$a" -v b="$b" -v hz="$(getconf CLK_TCK)" \
    'BEGIN{split(a, x, " "); split(b, y, " "); printf "%.2f", (y[1] - x[1]) / hz}'
}

# Waits until no other load generator runs (gives up after 10 minutes and says so), then up to
# QUIET_MAX_S (60) more for the rest of the machine (builds...) to use under OTHER_CPU_MAX cores.
wait_quiet() {
  local waited=0 pids busy
  while :; do
    pids=$(foreign_load)
    if [ -z "$pids" ]; then
      waited=0
      while busy=$(busy_cores) && above "$busy" "${OTHER_CPU_MAX:-0.3}"; do
        if [ $waited -ge "${QUIET_MAX_S:-60}" ]; then
          echo "machine still busy ($busy cores) after ${QUIET_MAX_S:-60} s; measuring anyway"
          return 0
        fi
        [ $waited = 0 ] && echo "waiting for the machine to calm down ($busy cores busy)"
        sleep 4
        waited=$((waited + 5))
      done
      return 0
    fi
    if [ $waited -ge 600 ]; then
      log "NOTE: other load generators still running after 10 minutes ($pids); measuring anyway"
      return 0
    fi
    [ $waited = 0 ] && echo "waiting for other load generators to finish:$pids"
    sleep 5
    waited=$((waited + 5))
  done
}

# start_server NAME [serve flags...]: sets fg_pid and fg_port.
start_server() {
  local name=$1
  shift
  # $server_cpu is a command prefix (e.g. "taskset -c 0"): split on purpose.
  # shellcheck disable=SC2086
  fg_start_node "$out/floodgate-$name.err" $server_cpu "$build/floodgate" serve \
    --config "$here/bench/overload/config" --http 127.0.0.1:0 --grpc 127.0.0.1:0 "$@" || true
  fg_port=$fg_http
}

# Returns 0 when the server is still up and answers its health check.
server_alive() {
  kill -0 "$fg_pid" 2>/dev/null &&
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$fg_port/healthcheck")" = 200 ]
}

stop_server() {
  kill "$fg_pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$fg_pid" 2>/dev/null || break; sleep 0.1; done
  fg_pid=""
}

# run_load NAME ARGS...: runs the driver against the current server, keeps its output and series.
# Notes in noise.txt when another load generator ran meanwhile (then the scenario is run again)
# or the rest of the machine (builds...) used more than OTHER_CPU_MAX cores on average.
run_load() {
  local name=$1 watcher other
  shift
  : >"$out/$name.foreign"
  (while :; do
    f=$(foreign_load)
    [ -n "$f" ] && echo "$f" >>"$out/$name.foreign"
    sleep 2
  done) &
  watcher=$!
  $driver_cpu "$driver" --port "$fg_port" --server-pid "$fg_pid" --series "$out/$name.csv" "$@" \
    >"$out/$name.txt" 2>"$out/$name.err" || true
  kill "$watcher" 2>/dev/null || true
  wait "$watcher" 2>/dev/null || true
  other=$(kv "$(grep '^total' "$out/$name.txt")" other_cpu)
  if [ -s "$out/$name.foreign" ]; then
    echo "LOAD $name: other load generators ran meanwhile:$(sort -u "$out/$name.foreign" |
      tr '\n' ' ')" >>"$out/noise.txt"
  fi
  if above "${other:-0}" "${OTHER_CPU_MAX:-0.3}"; then
    echo "CPU $name: the rest of the machine used $other cores on average" >>"$out/noise.txt"
  fi
  cat "$out/$name.txt"
}

# measure NAME ARGS...: run_load after waiting for quiet, and once more when another load
# generator ran meanwhile (RETRY=0: never). For runs that can be repeated on the same server.
measure() {
  local name=$1 before
  before=$(noise_lines)
  wait_quiet >&2
  run_load "$@" >/dev/null
  if [ "${RETRY:-1}" = 1 ] &&
     tail -n +$((before + 1)) "$out/noise.txt" 2>/dev/null | grep -q "^LOAD $name:"; then
    echo "RETRY $name: run again" >>"$out/noise.txt"
    wait_quiet >&2
    run_load "$@" >/dev/null
  fi
  cat "$out/$name.txt"
}

# run_scenario FUNCTION: runs it; when another load generator ran meanwhile, waits for quiet and
# runs it once more (RETRY=0: never). The function logs its PASS/FAIL line through `verdict`,
# which adds what else ran on the machine.
noise_from=0
noise_lines() { [ -f "$out/noise.txt" ] && wc -l <"$out/noise.txt" || echo 0; }
verdict() {
  local notes
  notes=$(tail -n +$((noise_from + 1)) "$out/noise.txt" 2>/dev/null | cut -d: -f1 | sort -u |
    paste -sd, || true)
  if [ -n "$notes" ]; then
    log "$* [beside other work: $notes; see noise.txt]"
  else
    log "$*"
  fi
}
run_scenario() {
  noise_from=$(noise_lines)
  "$1"
  if [ "${RETRY:-1}" = 1 ] &&
     tail -n +$((noise_from + 1)) "$out/noise.txt" 2>/dev/null | grep -q '^LOAD'; then
    log "NOTE: $1 ran beside other load generators; running it again"
    noise_from=$(noise_lines)
    "$1"
  fi
}

src_state=$(git -C "$here" diff --quiet -- src || echo ' (src modified)')
log "# overload scenarios, $(date -u +%FT%TZ), $(nproc) cores, build $build"
log "# git $(git -C "$here" rev-parse --short HEAD)$src_state"

capacity=${CAPACITY:-}

hot_args() {
  case $1 in
    spread) echo --key spread --users 100000 ;;
    # 90% on one allowed key: every check a full decision in the store.
    hot) echo --key spread --users 100000 --hot 0.9 --hot-value hot ;;
    # 90% on one key far over its limit: the over-limit fast path.
    hot-limited) echo --key spread --users 100000 --hot 0.9 --hot-key limited --hot-value x ;;
  esac
}

# pass_if CONDITION VAR=VALUE...: PASS when the awk condition holds, else FAIL.
pass_if() {
  local condition=$1 vars=()
  shift
  for v in "$@"; do vars+=(-v "$v"); done
  awk "${vars[@]}" "BEGIN{print ($condition) ? \"PASS\" : \"FAIL\"}"
}

# ---- c. hot key: closed-loop peak (50 connections) and open-loop p99 at half the spread peak.
# The spread peak is the capacity the crowd scales to.
declare -A peak
scenario_hot() {
  local hot_s=${HOT_S:-6} mode rep line rates p99s half ratio
  wait_quiet
  start_server hot
  for mode in spread hot hot-limited; do
    rates=""
    p99s=""
    for rep in $(seq "$reps"); do
      line=$(measure "hot-$mode-closed-$rep" --phase "closed:$hot_s:$mode" --connections 50 \
               --depth 1 $(hot_args $mode) | grep '^phase' || true)
      rates="$rates $(kv "$line" rps)"
      p99s="$p99s $(kv "$line" p99_ms)"
    done
    peak[$mode]=$(median <<<"$rates")
    log "hot: $mode closed loop: checks/s per rep:$rates -> median ${peak[$mode]};" \
      "p99 ms median $(median <<<"$p99s")"
  done
  half=$(awk -v r="${peak[spread]}" 'BEGIN{printf "%d", r / 2}')
  for mode in spread hot hot-limited; do
    p99s=""
    for rep in $(seq "$reps"); do
      line=$(measure "hot-$mode-open-$rep" --phase "$half:$hot_s:$mode" --connections 50 \
               --depth 1 $(hot_args $mode) | grep '^phase' || true)
      p99s="$p99s $(kv "$line" p99_ms)"
    done
    log "hot: $mode open loop at $half/s: p99 ms per rep:$p99s -> median $(median <<<"$p99s")"
  done
  server_alive || log "hot: server died"
  stop_server
  capacity=${peak[spread]}
  for mode in hot hot-limited; do
    ratio=$(awk -v h="${peak[$mode]}" -v s="${peak[spread]}" 'BEGIN{printf "%.2f", h / s}')
    verdict "$(pass_if 'r >= 0.5' r="$ratio") hot ($mode): ${peak[$mode]}/s against" \
      "${peak[spread]}/s spread, ratio $ratio (bound >= 0.5)"
  done
}

scenario_capacity() {
  local rates="" rep line
  wait_quiet
  start_server capacity
  for rep in $(seq "$reps"); do
    line=$(measure "capacity-$rep" --phase "closed:${HOT_S:-6}:capacity" --connections 50 \
             --depth 1 $(hot_args spread) | grep '^phase' || true)
    rates="$rates $(kv "$line" rps)"
  done
  stop_server
  capacity=$(median <<<"$rates")
}

# ---- d. open loop at 2x capacity, between two phases at half of it. The server gets one core
# (pinned, one HTTP thread) and the callers the other, so that the server, not the load
# generator, is what runs out. Callers: 128 connections with up to 8 requests in flight on each
# (pipelined): 1024 outstanding, Envoy's default circuit breaker (max_requests) on its rate limit
# cluster. A request that finds all 1024 taken is failed at once by the caller (--fail-fast),
# which then applies its failure mode, as Envoy does. Capacity is the closed-loop peak of the
# same callers.
scenario_overload() {
  local rates="" rep line total peak2 half double alive=yes
  local server_cpu="taskset -c 0" driver_cpu="taskset -c 1"
  local callers=(--connections 128 --depth 8 $(hot_args spread))
  wait_quiet
  start_server overload --http-threads 1
  for rep in $(seq "$reps"); do
    line=$(measure "overload-peak-$rep" --phase "closed:${HOT_S:-6}:peak" "${callers[@]}" |
             grep '^phase' || true)
    rates="$rates $(kv "$line" rps)"
  done
  peak2=$(median <<<"$rates")
  peak2=${peak2%.*}
  log "overload: closed loop, one server core, 128 connections x 8 in flight: checks/s per" \
    "rep:$rates -> median $peak2"
  half=$((peak2 / 2))
  double=$((peak2 * 2))
  wait_quiet
  run_load overload --phase "$half:5:before" --phase "$double:${OVERLOAD_S:-20}:2x" \
    --phase "$half:5:after" "${callers[@]}" --fail-fast --metrics | tee -a "$summary"
  server_alive || alive=no
  stop_server
  line=$(grep '^phase=2x' "$out/overload.txt" || true)
  total=$(grep '^total' "$out/overload.txt" || true)
  verdict "$(pass_if 'p <= 5 && a == 0 && o == 0 && e == 0 && up == "yes"' \
      p="$(kv "$line" p99_ms)" a="$(kv "$line" abandoned)" o="$(kv "$line" other)" \
      e="$(kv "$total" conn_errors)" up=$alive)" \
    "overload: offered $double/s (2x), answered $(kv "$line" rps)/s," \
    "p50 $(kv "$line" p50_ms) ms, p99 $(kv "$line" p99_ms) ms (bound <= 5; from sending:" \
    "p50 $(kv "$line" wire_p50_ms), p99 $(kv "$line" wire_p99_ms))," \
    "failed at once by the callers' circuit breaker $(kv "$line" overflow)," \
    "abandoned $(kv "$line" abandoned), other statuses $(kv "$line" other)," \
    "connection errors $(kv "$total" conn_errors), server alive $alive"
}

# ---- a. flash crowd: normal, 100x normal, normal; 100 tracked users at 20/s against 10/s.
scenario_crowd() {
  local normal crowd alive=yes tr_line total p99s
  normal=$(awk -v c="$capacity" -v f="${CROWD_LOAD:-0.8}" 'BEGIN{printf "%d", c * f / 100}')
  crowd=$((normal * 100))
  wait_quiet
  start_server crowd
  run_load crowd --phase "$normal:${CROWD_NORMAL_S:-10}:normal" \
    --phase "$crowd:${CROWD_PEAK_S:-30}:crowd" --phase "$normal:${CROWD_NORMAL_S:-10}:after" \
    --connections 50 --depth 8 --key crowd --users 1000000 \
    --tracked 100 --tracked-rate 20 --tracked-limit 10 --tracked-window 1 \
    --windows "$out/crowd-windows.csv" --metrics | tee -a "$summary"
  server_alive || alive=no
  stop_server
  tr_line=$(grep '^tracked' "$out/crowd.txt" || true)
  total=$(grep '^total' "$out/crowd.txt" || true)
  p99s=$(for ph in normal crowd after; do
    kv "$(grep "^phase=$ph " "$out/crowd.txt" || true)" p99_ms
  done | paste -sd/)
  verdict "$(pass_if 'c > 0 && c == x && o == 0 && e == 0 && up == "yes"' \
      c="$(kv "$tr_line" windows_checked)" x="$(kv "$tr_line" exact)" o="$(kv "$tr_line" over)" \
      e="$(kv "$total" conn_errors)" up=$alive)" \
    "crowd: normal $normal/s, crowd $crowd/s; tracked windows exact $(kv "$tr_line" exact) of" \
    "$(kv "$tr_line" windows_checked), over $(kv "$tr_line" over), under" \
    "$(kv "$tr_line" under); p99 ms normal/crowd/after $p99s; connection errors" \
    "$(kv "$total" conn_errors), server alive $alive"
}

# ---- b. key flood: FLOOD_KEYS new keys (closed loop, 16 connections x 16 pipelined) against
# --max-memory FLOOD_CAP (256 MiB); 100 tracked users at 20/s against 10/s throughout.
scenario_flood() {
  local cap=${FLOOD_CAP:-268435456} keys=${FLOOD_KEYS:-10000000} alive=yes
  local line tr_line total sent secs rss_kb hwm_kb
  wait_quiet
  start_server flood --max-memory "$cap"
  echo "$cap" >"$out/flood-cap.txt"
  run_load flood --phase idle:3:before --phase "closed:${FLOOD_MAX_S:-150}:flood:$keys" \
    --phase idle:5:after --connections 16 --depth 16 --key flood --new-keys k \
    --tracked 100 --tracked-rate 20 --tracked-limit 10 --tracked-window 1 \
    --windows "$out/flood-windows.csv" --metrics | tee -a "$summary"
  server_alive || alive=no
  curl -s "http://127.0.0.1:$fg_port/metrics" | grep -E '^floodgate_(store|fast)' \
    >"$out/flood-metrics.txt" || true
  stop_server
  line=$(grep '^phase=flood' "$out/flood.txt" || true)
  tr_line=$(grep '^tracked' "$out/flood.txt" || true)
  total=$(grep '^total' "$out/flood.txt" || true)
  sent=$(kv "$line" requests)
  secs=$(kv "$line" seconds)
  rss_kb=$(kv "$total" rss_max_kb)
  hwm_kb=$(kv "$total" hwm_kb)
  verdict "$(pass_if 'r * 1024 <= cap && h * 1024 <= cap && c > 0 && c == x && o == 0 &&
                     up == "yes"' \
      r="$rss_kb" h="$hwm_kb" cap="$cap" c="$(kv "$tr_line" windows_checked)" \
      x="$(kv "$tr_line" exact)" o="$(kv "$tr_line" over)" up=$alive)" \
    "flood: $sent new keys in $secs s ($(kv "$line" rps)/s, p99 $(kv "$line" p99_ms) ms;" \
    "$keys would take $(awk -v n="$sent" -v s="$secs" -v k="$keys" \
      'BEGIN{printf "%.0f", (n > 0) ? k / (n / s) : 0}') s);" \
    "RSS max sampled $((rss_kb / 1024)) MiB, VmHWM $((hwm_kb / 1024)) MiB" \
    "(cap $((cap / 1048576)) MiB); tracked windows exact $(kv "$tr_line" exact) of" \
    "$(kv "$tr_line" windows_checked), over $(kv "$tr_line" over), under" \
    "$(kv "$tr_line" under), max admitted $(kv "$tr_line" max_admitted);" \
    "$(tr '\n' ' ' <"$out/flood-metrics.txt")server alive $alive"
}

[[ " $scenarios " == *" hot "* ]] && run_scenario scenario_hot
[ -z "$capacity" ] && run_scenario scenario_capacity
capacity=${capacity%.*}
log "capacity (closed loop, 50 connections, 100k keys, median): $capacity checks/s"
[[ " $scenarios " == *" overload "* ]] && run_scenario scenario_overload
[[ " $scenarios " == *" crowd "* ]] && run_scenario scenario_crowd
[[ " $scenarios " == *" flood "* ]] && run_scenario scenario_flood

if [ "${PLOT:-1}" = 1 ]; then
  "${PYTHON:-/usr/bin/python3}" "$here/bench/overload/plot.py" "$out" "$here/docs/img" ||
    echo "plotting failed (needs python3-matplotlib)"
fi
echo "results in $out"
grep -E '^(PASS|FAIL|NOTE)' "$summary"
