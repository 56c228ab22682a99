#!/usr/bin/env bash
# Starts a 3-node Floodgate cluster on this machine, serving examples/, until Ctrl-C.
#
#   tools/run_cluster.sh [BUILD_DIR]
#
# Node a: HTTP 8080, gRPC 8081; b: 8090, 8091; c: 8100, 8101; peers on 9001..9003. Each node
# gets its own copy of examples/ (so a config change reaches the others through the cluster,
# not through a shared directory).
set -euo pipefail
build_dir=${1:-build}
bin="$build_dir/floodgate"
"$bin" validate examples/ >/dev/null
work=$(mktemp -d /tmp/floodgate-cluster.XXXXXX)
peers="a=127.0.0.1:9001,b=127.0.0.1:9002,c=127.0.0.1:9003"
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
i=0
for node in a b c; do
  mkdir -p "$work/$node"
  cp examples/*.yaml "$work/$node/"
  http=$((8080 + 10 * i))
  "$bin" serve --config "$work/$node" --http "127.0.0.1:$http" --grpc "127.0.0.1:$((http + 1))" \
    --cluster-key "${FLOODGATE_CLUSTER_KEY:-run-cluster-demo-key}" --node-id "$node" --peers "$peers" 2>"$work/$node.log" &
  pids+=($!)
  i=$((i + 1))
done
cat <<MSG

Three nodes serve examples/ (logs in $work/*.log). Try, from another shell:
  for p in 8080 8090 8100; do curl -s -o /dev/null -w '%{http_code} ' "http://127.0.0.1:\$p/v1/check?domain=api&user_id=alice"; done
  curl -s http://127.0.0.1:8080/v1/cluster
  curl -s http://127.0.0.1:8090/metrics | grep floodgate_cluster
Stop with Ctrl-C.

MSG
wait
