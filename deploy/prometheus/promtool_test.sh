#!/usr/bin/env bash
# Checks the alert rules and runs their unit tests with promtool (ctest: promtool_rules_test).
# A missing promtool is a failure, not a skip: Debian's `prometheus` package provides it.
set -euo pipefail
dir=$(cd "$(dirname "$0")" && pwd)
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool_test.sh: promtool not found; install it with" \
    "'apt-get install --no-install-recommends prometheus' (Debian's package)" >&2
  exit 1
fi
promtool check rules "$dir/floodgate-alerts.yml"
cd "$dir"
promtool test rules floodgate-alerts_test.yml
