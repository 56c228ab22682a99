#!/usr/bin/env bash
# Real nginx (Debian package) protects an upstream through Floodgate's HTTP check with
# auth_request (examples/nginx/floodgate.conf.in). The limit must hold through nginx: the first
# 3 requests of a user pass, the 4th gets 429 with Retry-After, another user still passes.
set -euo pipefail
bin=$(realpath "$1")
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/floodgate-nginx-XXXXXX)
fg_pid=""
cleanup() {
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  [ -n "$fg_pid" ] && kill "$fg_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mkdir -p "$work/config" "$work/logs"
# The example asks about domain "api" and key user_id, as examples/api.yaml defines them; here
# with a limit of 3 a day, so that the 4th request is refused whenever the test runs.
cat > "$work/config/api.yaml" <<'YAML'
domain: api
descriptors:
  - key: user_id
    rate_limit: {unit: day, requests_per_unit: 3, name: per-user}
YAML

# Start Floodgate on free ports and read its listening line (no sleeping).
exec 3< <(exec "$bin" serve --config "$work/config" --http 127.0.0.1:0 --grpc 127.0.0.1:0 2>"$work/floodgate.err")
fg_pid=$!
read -r -t 30 line <&3 || { echo "floodgate did not start"; cat "$work/floodgate.err"; exit 1; }
fg_port=$(sed -n 's/.*http=\([0-9]*\).*/\1/p' <<<"$line")
[ -n "$fg_port" ] || { echo "no port in: $line"; exit 1; }

nginx_port=$(free_port)
upstream_port=$(free_port)
sed -e "s/@LISTEN@/127.0.0.1:$nginx_port/" -e "s/@FLOODGATE@/127.0.0.1:$fg_port/" \
    -e "s/@UPSTREAM@/127.0.0.1:$upstream_port/" \
    "$here/examples/nginx/floodgate.conf.in" > "$work/site.conf"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/logs/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $work/body; proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fcgi; uwsgi_temp_path $work/uwsgi; scgi_temp_path $work/scgi;
  server { listen 127.0.0.1:$upstream_port; location / { return 200 "upstream ok\n"; } }
  include $work/site.conf;
}
CONF
# Daemon mode: nginx returns once its sockets are bound.
nginx -p "$work" -c "$work/nginx.conf"

fail=0
request() { curl -s -o "$work/body.txt" -D "$work/headers.txt" -w '%{http_code}' -H "X-User-Id: $1" "http://127.0.0.1:$nginx_port/hello"; }
for i in 1 2 3; do
  code=$(request alice)
  if [ "$code" != 200 ]; then echo "FAIL: request $i for alice: $code"; fail=1; fi
done
grep -qi '^RateLimit:' "$work/headers.txt" || { echo "FAIL: no RateLimit header on a pass"; fail=1; }
code=$(request alice)
if [ "$code" != 429 ]; then echo "FAIL: 4th request for alice: $code, want 429"; fail=1; fi
grep -qi '^Retry-After: [0-9]' "$work/headers.txt" || { echo "FAIL: no Retry-After on 429"; cat "$work/headers.txt"; fail=1; }
code=$(request bob)
if [ "$code" != 200 ]; then echo "FAIL: bob: $code"; fail=1; fi
grep -q 'upstream ok' "$work/body.txt" || { echo "FAIL: bob did not reach the upstream"; fail=1; }

if [ $fail = 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; cat "$work/logs/error.log" "$work/floodgate.err"; fi
exit $fail
