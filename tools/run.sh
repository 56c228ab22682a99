#!/usr/bin/env bash
# `make run`: validate examples/, then serve them in the foreground until Ctrl-C.
set -euo pipefail
build_dir=${1:-build}
http=${FLOODGATE_HTTP:-127.0.0.1:8080}
grpc=${FLOODGATE_GRPC:-127.0.0.1:8081}
bin="$build_dir/floodgate"
# Admin calls (PUT/DELETE /v1/config/...) need this token; the docs' examples use it as $TOKEN.
export FLOODGATE_ADMIN_TOKEN=${FLOODGATE_ADMIN_TOKEN:-make-run-token}

"$bin" validate examples/
cat <<MSG

Serving examples/ (edit a file there and it is reloaded within a second).
Web console: http://$http/ui (docs/console.md)
Try, from another shell:
  curl -i 'http://$http/v1/check?domain=api&user_id=alice'
  curl -s -XPOST http://$http/json -d '{"domain":"api","descriptors":[{"entries":[{"key":"user_id","value":"alice"}]}]}'
  curl -s http://$http/metrics | grep ratelimit_service
  curl -s http://$http/v1/config
  admin calls (docs/http_api.md) need -H "Authorization: Bearer $FLOODGATE_ADMIN_TOKEN"
  grpc: envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit on $grpc
Stop with Ctrl-C (SIGTERM drains in-flight requests).

MSG
exec "$bin" serve --config examples/ --http "$http" --grpc "$grpc"
