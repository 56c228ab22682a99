#!/usr/bin/env bash
# The command line: `validate` accepts examples/ and refuses a bad file with file:line and a
# non-zero exit; `check` decides from the command line; flags come from the environment too;
# unknown flags and values that are flags are refused by name (exit 2); --help and --version
# exit 0; sizes are human; errors are in the flags' terms (issue 11); envoyproxy/ratelimit's
# environment variables start it too.
set -uo pipefail
bin=$(realpath "$1")
# The version project(floodgate VERSION ...) in CMakeLists.txt gives (tests/CMakeLists.txt).
version=${2:?usage: cli_test.sh FLOODGATE_BINARY PROJECT_VERSION}
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

# Runs the binary with a time bound (a command line that is wrongly accepted would start a
# server); leaves stdout+stderr in $work/out and returns its exit code.
run() { timeout 20 "$bin" "$@" > "$work/out" 2>&1; }
has() { grep -qF -- "$1" "$work/out"; }
ports=(--http 127.0.0.1:0 --grpc 127.0.0.1:0)

# A misspelt or unknown flag is refused by name, before anything starts.
run serve --config "$work/d.yaml" "${ports[@]}" --admin_token s3cret
[ $? -eq 2 ] && has "unknown flag --admin_token" && has "did you mean --admin-token?" && ok \
  || bad "--admin_token: $(cat "$work/out")"
run serve --config "$work/d.yaml" "${ports[@]}" --htpp-threads 4
[ $? -eq 2 ] && has "unknown flag --htpp-threads" && ok || bad "--htpp-threads: $(cat "$work/out")"
run check --config "$work/d.yaml" --domain d --bogus 1 k=v
[ $? -eq 2 ] && has "unknown flag --bogus" && ok || bad "check --bogus: $(cat "$work/out")"

# --help / -h on the program and every command: exit 0, every flag with meaning, default, env.
for args in "--help" "-h" "serve --help" "serve -h" "validate --help" "check --help"; do
  # shellcheck disable=SC2086
  run $args
  [ $? -eq 0 ] && has "Usage: floodgate" && ok || bad "'$args' did not print help with exit 0"
done
run serve --help
has "--max-memory SIZE=0 (Env:FLOODGATE_MAX_MEMORY)" && has "memory budget" \
  && has "--http HOST:PORT=127.0.0.1:8080 (Env:FLOODGATE_HTTP)" && ok \
  || bad "serve --help lacks a flag's meaning, default or variable: $(cat "$work/out")"
# --version and `version`: one line, the project's version, the commit (one of this repository's
# when built from a git checkout) and the compiler.
run --version
[ $? -eq 0 ] && [ "$(wc -l < "$work/out")" -eq 1 ] \
  && grep -qE "^floodgate ${version//./\\.} \(commit ([0-9a-f]{4,}|unknown), built [a-z]+ [0-9.]+\)\$" "$work/out" \
  && ok || bad "--version (want floodgate $version (commit ..., built ...)): $(cat "$work/out")"
cp "$work/out" "$work/version"
run version
[ $? -eq 0 ] && cmp -s "$work/out" "$work/version" && ok || bad "'version' differs from --version: $(cat "$work/out")"
commit=$(sed -nE 's/.*\(commit ([0-9a-f]+|unknown),.*/\1/p' "$work/version")
if git -C "$here" rev-parse --git-dir > /dev/null 2>&1 && [ "$commit" != unknown ]; then
  git -C "$here" cat-file -e "$commit^{commit}" 2>/dev/null && ok || bad "--version names $commit, not a commit of $here"
fi

# A value that is a flag is refused, naming the flag that lacks its value.
run serve --config --http 127.0.0.1:0
[ $? -eq 2 ] && has "--config needs a value (PATH) but is followed by '--http'" && ok \
  || bad "--config --http: $(cat "$work/out")"
run serve --config
[ $? -eq 2 ] && has "--config needs a value" && ok || bad "--config at the end: $(cat "$work/out")"

# Human sizes; a size out of range is refused in the flag's terms.
exec 3< <(exec "$bin" serve --config "$work/d.yaml" "${ports[@]}" --max-memory 256MiB 2>/dev/null)
pid=$!
if read -r -t 30 line <&3 && [[ "$line" == *"listening"* ]]; then ok; else bad "--max-memory 256MiB: '$line'"; fi
kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
exec 3<&-
run serve --config "$work/d.yaml" "${ports[@]}" --max-memory 1000
[ $? -eq 2 ] && has "--max-memory must be 0 (no cap) or at least 64MiB (got 1000 bytes)" \
  && ! has "StoreOptions" && ok || bad "--max-memory 1000: $(cat "$work/out")"
FLOODGATE_MAX_MEMORY=1MiB run serve --config "$work/d.yaml" "${ports[@]}"
[ $? -eq 2 ] && has "at least 64MiB (got 1MiB)" && ok || bad "FLOODGATE_MAX_MEMORY=1MiB: $(cat "$work/out")"

# validate on a folder without YAML is an error, not "ok, nothing".
mkdir "$work/empty"
run validate "$work/empty"
[ $? -eq 1 ] && has "no config files (*.yaml or *.yml)" && ok || bad "validate empty folder: $(cat "$work/out")"

# check without --config says so (it printed "floodgate: : No such file or directory").
run check --domain d k=v
[ $? -eq 2 ] && has "check needs --config" && ok || bad "check without --config: $(cat "$work/out")"

# A bad config at start: its error once, without "still serving version 0".
run serve --config "$work/bad.yaml" "${ports[@]}"
code=$?
[ $code -eq 1 ] && [ "$(grep -c "bad.yaml:4" "$work/out")" -eq 1 ] && ! has "still serving" && ok \
  || bad "bad config at start (exit $code): $(cat "$work/out")"

# envoyproxy/ratelimit's variables (docs/config.md, "Envoy's switches"): PORT, GRPC_PORT and the
# runtime directory <RUNTIME_ROOT>/<RUNTIME_SUBDIRECTORY>/<RUNTIME_APPDIRECTORY> serve; a swap
# of RUNTIME_ROOT's `current` symlink is picked up; HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED fails
# /healthcheck while the config has no domain.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Polls `$@` every 50ms until it succeeds, for at most 10s.
eventually() { for _ in $(seq 200); do "$@" && return 0; sleep 0.05; done; return 1; }
status_of() { curl -s -o /dev/null -w '%{http_code}' "$1"; }
# Checks domain $1 twice against a limit of 1 a day: the second is refused once $1 is served.
# Each call checks a key of its own, so that a reload between the two checks only delays it.
calls=0
limited() {
  calls=$((calls + 1))
  local url="http://127.0.0.1:$http_port/v1/check?domain=$1&k=$2-$calls"
  [ "$(status_of "$url")" = 200 ] && [ "$(status_of "$url")" = 429 ]
}
healthcheck_is() { [ "$(status_of "http://127.0.0.1:$http_port/healthcheck")" = "$1" ]; }
# Starts the server in the Envoy environment given as arguments; sets $pid, reads its first line.
start_envoy_env() {
  http_port=$(free_port); grpc_port=$(free_port)
  exec 3< <(env HOST=127.0.0.1 PORT="$http_port" GRPC_HOST=127.0.0.1 GRPC_PORT="$grpc_port" \
            FLOODGATE_CONFIG_POLL=50ms "$@" "$bin" serve 2>/dev/null)
  pid=$!
  line=""
  read -r -t 30 line <&3
}
stop() { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; exec 3<&-; }

rt="$work/runtime"
for v in v1 v2; do mkdir -p "$rt/$v/ratelimit/config"; done
printf 'domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: day, requests_per_unit: 1}\n' \
  > "$rt/v1/ratelimit/config/a.yaml"
printf 'domain: b\ndescriptors:\n  - key: k\n    rate_limit: {unit: day, requests_per_unit: 1}\n' \
  > "$rt/v2/ratelimit/config/b.yaml"
ln -s v1 "$rt/current"
start_envoy_env RUNTIME_ROOT="$rt/current" RUNTIME_SUBDIRECTORY=ratelimit RUNTIME_WATCH_ROOT=true
[[ "$line" == "floodgate: listening http=$http_port grpc=$grpc_port config=$rt/current/ratelimit/config" ]] \
  && ok || bad "Envoy env: ports or runtime directory not taken: '$line'"
limited a 1 && ok || bad "Envoy env: domain a of the runtime directory is not served"
limited b 1 && bad "Envoy env: domain b is served before the swap" || ok
# The swap as a runtime deployer makes it: a new link renamed over `current` (atomic).
ln -s v2 "$rt/current.new" && mv -T "$rt/current.new" "$rt/current"
eventually limited b 2 && ok || bad "Envoy env: the swap of $rt/current to v2 was not picked up"
limited a 2 && bad "Envoy env: domain a still served after the swap" || ok
healthcheck_is 200 && ok || bad "Envoy env: /healthcheck with a config is not 200"
stop

mkdir -p "$rt/empty/config"
start_envoy_env RUNTIME_ROOT="$rt/empty" FORCE_START_WITHOUT_INITIAL_CONFIG=true \
  HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED=true
[[ "$line" == *"listening"* ]] && ok || bad "Envoy env: an empty config with FORCE_START did not start: '$line'"
healthcheck_is 503 && ok || bad "HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED: /healthcheck is not 503 without a domain"
cp "$rt/v1/ratelimit/config/a.yaml" "$rt/empty/config/"
eventually healthcheck_is 200 && ok || bad "HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED: /healthcheck not 200 once a domain loaded"
rm "$rt/empty/config/a.yaml"
eventually healthcheck_is 503 && ok || bad "HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED: /healthcheck not 503 after a reload to no domain"
stop
# The same empty config without it: healthy.
start_envoy_env RUNTIME_ROOT="$rt/empty" FORCE_START_WITHOUT_INITIAL_CONFIG=true
healthcheck_is 200 && ok || bad "an empty config without HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED is not healthy"
stop

# Refusals name the variable; our flag and FLOODGATE_* come before Envoy's name.
NEAR_LIMIT_RATIO=abc run serve --config "$work/d.yaml" "${ports[@]}"
[ $? -eq 2 ] && has "NEAR_LIMIT_RATIO=abc: not a number" && ok || bad "NEAR_LIMIT_RATIO=abc: $(cat "$work/out")"
MERGE_DOMAIN_CONFIG=true run serve --config "$work/d.yaml" "${ports[@]}"
[ $? -eq 2 ] && has "MERGE_DOMAIN_CONFIG=true: not supported" && ok || bad "MERGE_DOMAIN_CONFIG=true: $(cat "$work/out")"
exec 3< <(PORT=1 FLOODGATE_HTTP=127.0.0.1:0 exec "$bin" serve --config "$work/d.yaml" --grpc 127.0.0.1:0 2>/dev/null)
pid=$!
if read -r -t 30 line <&3 && [[ "$line" == *"listening http="* && "$line" != *"http=1 "* ]]; then ok; else bad "FLOODGATE_HTTP did not win over PORT: '$line'"; fi
stop

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
