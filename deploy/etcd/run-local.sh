#!/usr/bin/env bash
# Starts a local etcd and three Floodgate nodes that find each other through it, all on
# 127.0.0.1, serving examples/, until Ctrl-C.
#
#   deploy/etcd/run-local.sh [BUILD_DIR]     (from the repository's top folder)
#
# etcd listens on 2379 (clients) and 2380 (its peers); nodes a, b, c take their flags from
# deploy/etcd/node-{a,b,c}.env: HTTP 8080, 8090, 8100; gRPC one above; peers 9001..9003. Each
# node gets its own copy of examples/. Needs Debian's etcd-server and etcd-client (make deps).
# Ctrl-C stops the nodes first, so that each leaves the cluster and deregisters, then etcd.
set -euo pipefail
build_dir=${1:-build}
bin="$build_dir/floodgate"
here=$(dirname "$0")
for tool in etcd etcdctl; do
  command -v "$tool" >/dev/null || { echo "$tool not found: install etcd-server and etcd-client" >&2; exit 1; }
done
"$bin" validate examples/ >/dev/null
work=$(mktemp -d /tmp/floodgate-etcd.XXXXXX)
etcd_pid=
pids=()
cleanup() {
  trap - EXIT INT TERM
  if ((${#pids[@]})); then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if [[ -n $etcd_pid ]]; then
    kill -TERM "$etcd_pid" 2>/dev/null || true
    wait "$etcd_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# A one-member etcd. setsid keeps it and the nodes out of the terminal's process group, so that
# Ctrl-C reaches this script only and it can stop them in order.
setsid etcd --name run-local --data-dir "$work/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster run-local=http://127.0.0.1:2380 --initial-cluster-state new \
  --logger zap --log-level error --log-outputs stderr 2>"$work/etcd.log" &
etcd_pid=$!
for _ in $(seq 50); do
  ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 endpoint health >/dev/null 2>&1 && break
  kill -0 "$etcd_pid" 2>/dev/null || { cat "$work/etcd.log" >&2; exit 1; }
  sleep 0.2
done

for node in a b c; do
  mkdir -p "$work/$node"
  cp examples/*.yaml "$work/$node/"
  (
    set -a
    # shellcheck source=/dev/null
    . "$here/node-$node.env"
    set +a
    export FLOODGATE_CLUSTER_KEY=${FLOODGATE_CLUSTER_KEY:-run-local-demo-key}
    exec setsid "$bin" serve --config "$work/$node" 2>"$work/$node.log"
  ) &
  pids+=($!)
done
cat <<MSG

etcd on 127.0.0.1:2379 and three nodes serving examples/ (logs in $work/*.log). Try, from
another shell:
  ETCDCTL_API=3 etcdctl get --prefix /floodgate/default/members/
  curl -s http://127.0.0.1:8080/v1/cluster
  for p in 8080 8090 8100; do curl -s -o /dev/null -w '%{http_code} ' "http://127.0.0.1:\$p/v1/check?domain=api&user_id=alice"; done
  curl -s http://127.0.0.1:8090/metrics | grep -E 'floodgate_cluster_(members|discovery)'
Stop with Ctrl-C.

MSG
wait
