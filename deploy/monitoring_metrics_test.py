#!/usr/bin/env python3
"""Checks that every metric the Grafana dashboard and the Prometheus alert rules query exists.

Starts real servers on free ports: a two-node cluster (so the floodgate_cluster_* families are
served) and a node on a Redis store that is not there (so the floodgate_redis_* families are,
with floodgate_redis_up 0). Reads each /metrics, takes the families from their `# TYPE` lines
(printed even while a family has no sample), and the series names each family may have (a
histogram X has X_bucket, X_sum and X_count, never a bare X). Then every metric name in every
panel's and template variable's query of deploy/grafana/floodgate-dashboard.json, every alert's
`expr` in deploy/prometheus/floodgate-alerts.yml (but `up`, which Prometheus makes) and every
metric an annotation template queries must be one of them. Also checks that the dashboard is
importable as documented: the datasource is the ${DS_PROMETHEUS} variable on every panel and
target, there are instance and domain variables, panel ids are unique and panels do not overlap.

Usage: monitoring_metrics_test.py --floodgate BUILD/floodgate --root REPO
"""

import argparse
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request

START_TIMEOUT_S = 30
LISTENING = re.compile(r"floodgate: listening http=(\d+) grpc=(\d+)")

# PromQL words that look like metric names: keywords, aggregation modifiers, and the names of
# functions and aggregations (also when written without a parenthesis right after them).
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan", "sum", "min", "max", "avg", "count", "stddev", "stdvar",
    "topk", "bottomk", "quantile", "count_values", "group",
}


def metric_names(expr):
    """Returns the metric names a PromQL (or Grafana-templated PromQL) expression selects."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals: label values, regexes
    e = re.sub(r"\{[^{}]*\}", " ", e)  # label matchers
    # Grafana's label_values(selector, label) and label_values(label): the label is no metric.
    e = re.sub(r"\blabel_values\(([^,()]*),\s*\w+\s*\)", r"(\1)", e)
    e = re.sub(r"\blabel_values\(\s*\w+\s*\)", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)  # range and subquery selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)  # Grafana variables: $__rate_interval, ${instance}
    names = set()
    # Not after a word character or a dot: the exponent of 1e3, the unit of `offset 5m`.
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        name, call = m.group(1), m.group(2)
        if call or name in PROMQL_WORDS:
            continue
        names.add(name)
    return names


def self_check():
    """The extractor on expressions whose answer is known (a wrong one would hide a typo)."""
    cases = {
        'histogram_quantile(0.99, sum by (le, frontend) (rate(x_seconds_bucket{i=~"$instance"}'
        '[$__rate_interval])))': {"x_seconds_bucket"},
        'sum by (domain) (rate(a_total{domain="b_total"}[5m])) > 3 * sum by (domain) '
        '(rate(a_total[1h])) and on (domain) c > 1e3': {"a_total", "c"},
        "time() - start_seconds": {"start_seconds"},
        'label_values(floodgate_requests_total, instance)': {"floodgate_requests_total"},
        "up == 0 or absent(up) unless count(y) bool > 0": {"up", "y"},
        "label_values(instance)": set(),
        "mem / (cap > 0) > 0.9": {"mem", "cap"},
        "d offset 5m > 1e3 and s > 0.5": {"d", "s"},
    }
    for expr, want in cases.items():
        got = metric_names(expr)
        if got != want:
            sys.exit(f"self-check: metric_names({expr!r}) = {sorted(got)}, want {sorted(want)}")


def series_names(text):
    """Returns {series name: family} for every family with a `# TYPE` line in /metrics text."""
    names = {}
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        family, kind = m.group(1), m.group(2)
        if kind == "histogram":
            suffixes = ["_bucket", "_sum", "_count"]
        elif kind == "summary":
            suffixes = ["", "_sum", "_count"]
        else:
            suffixes = [""]
        for s in suffixes:
            names[family + s] = family
    return names


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Server:
    """One `floodgate serve` on free HTTP/gRPC ports (port 0); reads the ports it prints."""

    def __init__(self, binary, args, name):
        self.name = name
        self.proc = subprocess.Popen(
            [binary, "serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"] + args,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()
        self.http = None

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_listening(self):
        while self.http is None:
            try:
                line = self.lines.get(timeout=START_TIMEOUT_S)
            except queue.Empty:
                line = None
            if line is None:
                sys.exit(f"{self.name}: did not start:\n" + "".join(self.seen))
            self.seen.append(line)
            m = LISTENING.search(line)
            if m:
                self.http = int(m.group(1))

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=10) as r:
            return r.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def alert_rules(path):
    """Returns [(alert, expr)] of a rules file, and the metrics its annotations query.

    A small reader for the shapes floodgate-alerts.yml uses (an `expr:` on one line or as a
    `>-` / `|` block), so that the test needs no YAML module; an alert without an expr it can
    read fails the test."""
    with open(path) as f:
        lines = f.read().split("\n")
    rules, alert = [], None
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*- alert:\s*(\S+)\s*$", lines[i])
        if m:
            alert = m.group(1)
        m = re.match(r"^(\s*)expr:\s*(.*)$", lines[i])
        if m:
            indent, value = len(m.group(1)), m.group(2).strip()
            if value in (">-", ">", "|", "|-"):
                body = []
                while i + 1 < len(lines) and (not lines[i + 1].strip() or
                                              len(lines[i + 1]) - len(lines[i + 1].lstrip()) > indent):
                    i += 1
                    body.append(lines[i].strip())
                value = " ".join(b for b in body if b)
            elif value.startswith(("'", '"')):
                value = value[1:-1]
            if alert is None or not value:
                sys.exit(f"{path}:{i + 1}: an expr outside an alert, or one this test cannot read")
            rules.append((alert, value))
            alert = None
        i += 1
    text = "\n".join(lines)
    queried = set(re.findall(r'printf "([a-zA-Z_:][a-zA-Z0-9_:]*)\{', text))
    alerts = len(re.findall(r"^\s*- alert:", text, re.M))
    if not rules or len(rules) != alerts:
        sys.exit(f"{path}: read {len(rules)} exprs for {alerts} alerts")
    return rules, queried


def dashboard_queries(path, failures):
    """Returns [(where, expr)] of the dashboard; appends structural problems to `failures`."""
    with open(path) as f:
        dash = json.load(f)
    ds = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    if variables.get("DS_PROMETHEUS", {}).get("type") != "datasource":
        failures.append("dashboard: no datasource variable DS_PROMETHEUS")
    for name in ("instance", "domain"):
        if variables.get(name, {}).get("type") != "query":
            failures.append(f"dashboard: no query variable {name}")
    queries = []
    for name, v in variables.items():
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            queries.append((f"variable {name}", q))
    ids = set()
    cells = {}  # (column, row) of the grid: the panel there
    panels = 0
    for p in dash["panels"]:
        if p["id"] in ids:
            failures.append(f"dashboard: panel id {p['id']} twice")
        ids.add(p["id"])
        g = p["gridPos"]
        if g["x"] < 0 or g["x"] + g["w"] > 24:
            failures.append(f"dashboard: panel {p['title']!r} is outside the 24 columns")
        for cell in ((x, y) for x in range(g["x"], g["x"] + g["w"])
                     for y in range(g["y"], g["y"] + g["h"])):
            if cell in cells:
                failures.append(f"dashboard: panel {p['title']!r} overlaps {cells[cell]!r}")
                break
            cells[cell] = p["title"]
        if p["type"] == "row":
            continue
        panels += 1
        if p.get("datasource") != ds:
            failures.append(f"dashboard: panel {p['title']!r} does not use ${{DS_PROMETHEUS}}")
        if not p.get("targets"):
            failures.append(f"dashboard: panel {p['title']!r} has no query")
        for t in p.get("targets", []):
            if t.get("datasource") != ds:
                failures.append(f"dashboard: a query of {p['title']!r} does not use ${{DS_PROMETHEUS}}")
            queries.append((f"panel {p['title']!r}", t["expr"]))
    if panels == 0:
        failures.append("dashboard: no panels")
    return queries


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--floodgate", required=True)
    parser.add_argument("--root", required=True)
    args = parser.parse_args()
    self_check()
    failures = []
    dashboard = os.path.join(args.root, "deploy", "grafana", "floodgate-dashboard.json")
    rules_file = os.path.join(args.root, "deploy", "prometheus", "floodgate-alerts.yml")
    queries = dashboard_queries(dashboard, failures)
    rules, annotation_metrics = alert_rules(rules_file)
    queries += [(f"alert {a}", e) for a, e in rules]
    queries += [("an alert annotation", n) for n in annotation_metrics]

    scratch = tempfile.mkdtemp(prefix="fg-monitoring-")
    servers = []
    try:
        config = os.path.join(scratch, "config")  # examples/*.yaml, as tools/run_cluster.sh
        os.mkdir(config)
        examples = os.path.join(args.root, "examples")
        for f in os.listdir(examples):
            if f.endswith(".yaml"):
                shutil.copy(os.path.join(examples, f), config)
        peer_a, peer_b, redis = free_ports(3)
        peers = f"a=127.0.0.1:{peer_a},b=127.0.0.1:{peer_b}"
        for node in ("a", "b"):
            servers.append(Server(args.floodgate,
                                  ["--config", config, "--node-id", node, "--peers", peers,
                                   "--cluster-key", "monitoring-test-key",
                                   "--max-memory", "256MiB"], f"node {node}"))
        servers.append(Server(args.floodgate,
                              ["--config", config, "--store", f"redis://127.0.0.1:{redis}"],
                              "redis node"))
        texts = {}
        for s in servers:
            s.wait_listening()
        # One check, so that the per-rule families have a sample as well.
        servers[0].get("/v1/check?domain=api&user_id=alice")
        for s in servers:
            texts[s.name] = s.get("/metrics")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    known = {}
    for text in texts.values():
        known.update(series_names(text))
    for must in ("floodgate_cluster_quorum", "floodgate_redis_up", "process_open_fds",
                 "floodgate_build_info", "floodgate_decision_latency_seconds_bucket"):
        if must not in known:
            failures.append(f"/metrics of the test's servers lacks {must}: the servers are not "
                            "what this test needs")
    checked = set()
    for where, expr in queries:
        names = metric_names(expr)
        if not names and where.startswith("panel"):
            failures.append(f"{where}: no metric in {expr!r}")
        for name in sorted(names):
            if name == "up" and where.startswith("alert"):
                continue  # made by Prometheus, not served
            checked.add(name)
            if name not in known:
                families = {f for n, f in known.items() if n.startswith(name) or name.startswith(f)}
                hint = f" (families near it: {', '.join(sorted(families))})" if families else ""
                failures.append(f"{where}: {name} is not served by floodgate{hint}")
    if failures:
        print("\n".join(failures))
        sys.exit(1)
    print(f"ok: {len(queries)} queries, {len(checked)} metric names, all served "
          f"({len(known)} series names from {len(texts)} servers)")


if __name__ == "__main__":
    main()
