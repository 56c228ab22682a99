#!/usr/bin/env bash
# Two builds of floodgate under the same load in ONE run, alternating A, B, A, B... so that the
# machine's drift hits both alike; prints the median of each figure per build and B/A.
#   HTTP: GET /v1/check, bench/http_load (50 connections, 100k random users): HTTP_REQUESTS
#         checks asked for at once (a rate far above what a node answers), so the 50 connections
#         run closed loop until they are answered.
#   gRPC: ShouldRateLimit, bench/grpc_load closed loop (50 in flight, 100k random users).
# Server CPU per check = the server's utime+stime over checks answered (the load tools read
# /proc/PID/stat). The load tools of build B drive both builds.
# Usage: bench/compare_builds.sh BUILD_A BUILD_B
# Env: REPS (5), DURATION (8 s of gRPC load), HTTP_REQUESTS (400000).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
a=$(realpath "$1")
b=$(realpath "$2")
REPS=${REPS:-5}
DURATION=${DURATION:-8}
HTTP_REQUESTS=${HTTP_REQUESTS:-400000}
tools="$b/bench"
work=$(mktemp -d /tmp/floodgate-builds-XXXXXX)
fg_pid=""
cleanup() {
  [ -n "$fg_pid" ] && kill "$fg_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# run BUILD NAME: one rep of both loads against a fresh node of BUILD; appends to $work/NAME.
run() {
  fg_start_node "$work/$2.err" "$1/floodgate" serve --config "$here/bench/config" \
    --http 127.0.0.1:0 --grpc 127.0.0.1:0
  local http grpc
  http=$("$tools/http_load" --port "$fg_http" --seconds 3600 --rate 1e9 \
    --max-requests "$HTTP_REQUESTS" --users 100000 --connections 50 --server-pid "$fg_pid")
  grpc=$("$tools/grpc_load" --target "127.0.0.1:$fg_grpc" --seconds "$DURATION" \
    --users 100000 --server-pid "$fg_pid")
  echo "$(kv "$http" rps) $(kv "$http" server_cpu_us_per_req) $(kv "$grpc" rps)" \
    "$(kv "$grpc" server_cpu_us_per_req)" >>"$work/$2"
  kill "$fg_pid"
  wait "$fg_pid" 2>/dev/null || true
  fg_pid=""
}

for rep in $(seq "$REPS"); do
  run "$a" A
  run "$b" B
  echo "rep $rep: A $(tail -1 "$work/A") | B $(tail -1 "$work/B")" >&2
done

col() { awk -v c="$2" '{print $c}' "$work/$1" | median; }
echo "Run $(date -u +%FT%TZ), REPS=$REPS (alternating), DURATION=${DURATION}s, medians"
echo "A: $a"
echo "B: $b"
echo
echo "| figure | A | B | B/A |"
echo "|---|---|---|---|"
names=("HTTP checks/s" "HTTP server CPU µs/check" "gRPC checks/s" "gRPC server CPU µs/check")
for c in 1 2 3 4; do
  va=$(col A "$c")
  vb=$(col B "$c")
  echo "| ${names[$((c - 1))]} | $va | $vb | $(awk -v x="$va" -v y="$vb" 'BEGIN{printf "%.3f", y / x}') |"
done
