#!/usr/bin/env bash
# In-process decisions: Floodgate's limiter against rate-limiter-flexible's RateLimiterMemory,
# in ONE run, alternating. Peer: ../shared/peers/node/micro.js (its pinned package-lock.json);
# ours: build/src/limiter/limiter_benchmark, scenario by scenario (see that file's header).
# Usage: bench/compare_inprocess.sh [BUILD_DIR]   Env: REPS (3), PEERS (../shared/peers).
# Needs node and npm (skipped with a message when missing).
set -euo pipefail
build=$(realpath "${1:-build}")
here=$(cd "$(dirname "$0")/.." && pwd)
peers_src=${PEERS:-$here/../shared/peers}
reps=${REPS:-3}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "compare_inprocess: node/npm not installed, skipped"; exit 0
fi
work=$(mktemp -d /tmp/floodgate-inprocess-XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -r "$peers_src/node" "$work/node"; chmod -R u+w "$work/node"
(cd "$work/node" && npm ci --silent --no-audit --no-fund >/dev/null)
out="$here/bench/results/inprocess-$(date -u +%Y%m%dT%H%M%SZ)"; mkdir -p "$out"
for rep in $(seq "$reps"); do
  (cd "$work/node" && MAX_SECONDS=60 node --expose-gc micro.js one 2000000 &&
   MAX_SECONDS=60 node --expose-gc micro.js many 1000000) >> "$out/node.jsonl"
  "$build/src/limiter/limiter_benchmark" --benchmark_format=json >> "$out/floodgate-rep$rep.json" 2>/dev/null
done
python3 - "$out" <<'PY'
import json, statistics, sys, glob
out = sys.argv[1]
node = [json.loads(l) for l in open(f"{out}/node.jsonl") if l.startswith("{")]
med = statistics.median
peer = {
    "one key": med(r["ops_per_s"] for r in node if r["mode"] == "one"),
    "1M new keys": med(r["ops_per_s"] for r in node if r["mode"] == "many"),
    "random existing keys": med(r["hit_ops_per_s"] for r in node if r["mode"] == "many"),
}
ours = {"one key": [], "1M new keys": [], "random existing keys": []}
names = {"BM_CheckOneKey": "one key", "BM_CheckNewKeys": "1M new keys",
         "BM_CheckExistingKeys": "random existing keys"}
for f in glob.glob(f"{out}/floodgate-rep*.json"):
    for b in json.load(open(f))["benchmarks"]:
        if b["name"] in names:
            ours[names[b["name"]]].append(b["items_per_second"])
print("| scenario | Floodgate limiter (ops/s) | RateLimiterMemory (ops/s) | ratio |")
print("|---|---|---|---|")
for k in peer:
    o = med(ours[k])
    print(f"| {k} | {o/1e6:.2f} M | {peer[k]/1e6:.3f} M | {o/peer[k]:.1f}x |")
print("node RSS bytes per key:", med(r["rss_bytes_per_key"] for r in node if r["mode"] == "many"))
PY
