#!/usr/bin/env bash
# The command line: `validate` accepts examples/ and refuses a bad file with file:line and a
# non-zero exit; `check` decides from the command line; flags come from the environment too.
set -uo pipefail
bin=$(realpath "$1")
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/floodgate-cli-XXXXXX)
trap 'rm -rf "$work"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

"$bin" validate "$here/examples/" > "$work/out" 2>&1 && ok || bad "validate examples/: $(cat "$work/out")"

printf 'domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n' > "$work/bad.yaml"
"$bin" validate "$work/bad.yaml" > "$work/out" 2>&1
[ $? -ne 0 ] && ok || bad "validate accepted a bad unit"
grep -q "bad.yaml:4" "$work/out" && ok || bad "no file:line in: $(cat "$work/out")"

printf 'domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: day, requests_per_unit: 1}\n' > "$work/d.yaml"
"$bin" check --config "$work/d.yaml" --domain d k=v > "$work/out" 2>&1 && ok || bad "check: $(cat "$work/out")"
grep -q "^OK" "$work/out" && ok || bad "check did not print OK"
"$bin" check --config "$work/d.yaml" --domain d --hits 2 k=v > "$work/out" 2>&1
[ $? -eq 1 ] && grep -q "^OVER_LIMIT" "$work/out" && ok || bad "2 hits over a limit of 1 passed"

# Environment instead of flags: FLOODGATE_CONFIG, FLOODGATE_HTTP, FLOODGATE_GRPC.
exec 3< <(FLOODGATE_CONFIG="$work/d.yaml" FLOODGATE_HTTP=127.0.0.1:0 FLOODGATE_GRPC=127.0.0.1:0 \
          exec "$bin" serve 2>/dev/null)
pid=$!
if read -r -t 30 line <&3 && [[ "$line" == *"config=$work/d.yaml"* ]]; then ok; else bad "serve from env: '$line'"; fi
kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
"$bin" serve > "$work/out" 2>&1
[ $? -ne 0 ] && grep -q "needs --config" "$work/out" && ok || bad "serve without a config did not explain"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
