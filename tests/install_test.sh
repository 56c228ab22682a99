#!/usr/bin/env bash
# `cmake --install` (cmake/FloodgateInstall.cmake) into a fresh prefix: the tree a package or
# the Dockerfile's image is made of. The installed binary runs and prints the project's version,
# the installed examples validate, the docs, the licence, the systemd unit and its example
# environment file are there, and deploy/prometheus and deploy/grafana are installed when the
# source has them.
#
#   tests/install_test.sh BUILD_DIR SOURCE_DIR PROJECT_VERSION
set -uo pipefail
build=$(realpath "$1")
src=$(realpath "$2")
version=$3
work=$(mktemp -d /tmp/floodgate-install-XXXXXX)
trap 'rm -rf "$work"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

prefix="$work/usr"
if ! cmake --install "$build" --prefix "$prefix" > "$work/install.log" 2>&1; then
  cat "$work/install.log"
  echo "0 passed, 1 failed"
  exit 1
fi

bin="$prefix/bin/floodgate"
[ -x "$bin" ] && ok || bad "no executable bin/floodgate"
out=$("$bin" --version 2>&1)
[[ "$out" == "floodgate $version (commit "*", built "*")" ]] && ok \
  || bad "installed bin/floodgate --version: '$out' (want floodgate $version (commit ..., built ...))"

# Every example config, installed, is a valid config for the installed binary.
examples="$prefix/share/floodgate/examples"
[ -f "$examples/api.yaml" ] && ok || bad "no share/floodgate/examples/api.yaml"
"$bin" validate "$examples" > "$work/out" 2>&1 && ok || bad "validate installed examples: $(cat "$work/out")"
for f in "$src"/examples/*.yaml; do
  cmp -s "$f" "$examples/$(basename "$f")" && ok || bad "examples/$(basename "$f") not installed as is"
done

doc="$prefix/share/doc/floodgate"
for f in README.md CHANGELOG.md LICENSE deploy.md config.md cluster.md; do
  [ -s "$doc/$f" ] && ok || bad "no share/doc/floodgate/$f"
done
grep -q "Apache License" "$doc/LICENSE" && ok || bad "share/doc/floodgate/LICENSE is not the Apache licence"

unit="$prefix/lib/systemd/system/floodgate.service"
cmp -s "$src/deploy/systemd/floodgate.service" "$unit" && ok || bad "no lib/systemd/system/floodgate.service"
[ -f "$prefix/share/floodgate/systemd/floodgate.default" ] && ok \
  || bad "no share/floodgate/systemd/floodgate.default"

# Alert rules and dashboards: installed when the source has them, and nothing when not.
for d in prometheus grafana; do
  if [ -d "$src/deploy/$d" ]; then
    (cd "$src/deploy/$d" && find . -type f | sort) > "$work/want"
    (cd "$prefix/share/floodgate/$d" 2>/dev/null && find . -type f | sort) > "$work/got"
    [ -s "$work/want" ] && cmp -s "$work/want" "$work/got" && ok \
      || bad "deploy/$d not installed as share/floodgate/$d: $(diff "$work/want" "$work/got")"
  else
    [ ! -e "$prefix/share/floodgate/$d" ] && ok || bad "share/floodgate/$d installed from nothing"
  fi
done

# Nothing outside the prefix's usual folders (no /etc: the config is the operator's).
extra=$(cd "$prefix" && ls | grep -vxE 'bin|share|lib')
[ -z "$extra" ] && ok || bad "unexpected top-level folders under the prefix: $extra"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
