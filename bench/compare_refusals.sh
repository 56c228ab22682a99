#!/usr/bin/env bash
# Two builds of floodgate refusing one hot key on every check, in ONE run, alternating A, B, A,
# B... (as compare_builds.sh, whose allowed-check figures this complements): bench/http_load
# sends HTTP_REQUESTS checks of one user against bench/config's `limited` key (10 a second), 50
# connections closed loop, so all but a handful are refused (429). Prints the median checks/s
# and server CPU per check (utime+stime over checks answered) per build, and B/A.
# Usage: bench/compare_refusals.sh BUILD_A BUILD_B     Env: REPS (5), HTTP_REQUESTS (300000).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
a=$(realpath "$1")
b=$(realpath "$2")
REPS=${REPS:-5}
HTTP_REQUESTS=${HTTP_REQUESTS:-300000}
work=$(mktemp -d /tmp/floodgate-refusals-XXXXXX)
fg_pid=""
cleanup() {
  [ -n "$fg_pid" ] && kill "$fg_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 1 "$REPS"); do
  for name in A B; do
    build=$([ "$name" = A ] && echo "$a" || echo "$b")
    fg_start_node "$work/$name.err" "$build/floodgate" serve --config "$here/bench/config" \
      --http 127.0.0.1:0 --grpc 127.0.0.1:0
    out=$("$b/bench/http_load" --port "$fg_http" --seconds 3600 --rate 1e9 \
      --max-requests "$HTTP_REQUESTS" --users 1 --key limited --connections 50 \
      --server-pid "$fg_pid")
    kill "$fg_pid"
    wait "$fg_pid" 2>/dev/null || true
    fg_pid=""
    echo "$(kv "$out" rps) $(kv "$out" server_cpu_us_per_req) $(kv "$out" status429)" >>"$work/$name"
  done
done
col() { awk "{print \$$2}" "$work/$1" | median; }
echo "A: $a"
echo "B: $b"
echo
echo "| figure | A | B | B/A |"
echo "|---|---|---|---|"
for f in "refused-key HTTP checks/s:1" "refused-key HTTP server CPU µs/check:2"; do
  label=${f%%:*}
  n=${f##*:}
  va=$(col A "$n")
  vb=$(col B "$n")
  echo "| $label | $va | $vb | $(awk -v a="$va" -v b="$vb" 'BEGIN{printf "%.3f", b / a}') |"
done
echo "(429 answers per run, B: $(awk '{print $3}' "$work/B" | tr '\n' ' '))"
