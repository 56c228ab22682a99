#!/usr/bin/env python3
"""Checks that the code keeps its layers (docs/architecture.md).

Every non-test source file under src/, include/ and bench/ may include headers of our own only
from the layers its folder may use; no non-test source includes testing/. With --max-lines N,
also fails on a non-test source file longer than N lines. Prints one line per violation, in the
reader's terms, and exits 1 if there is any.

    tools/check_layers.py [--root DIR] [--max-lines N]
    tools/check_layers.py --self-test     # proves the check fails on a bad tree
"""

import argparse
import os
import re
import sys
import tempfile

# What each folder may include, by layer name (see LayerOf). The lowest layers first.
ALLOWED = {
    "public": {"public"},
    "common": {"common"},
    "core": {"public", "core"},
    "store": {"public", "core", "store"},
    "limiter": {"public", "core", "store", "limiter"},
    "cluster": {"public", "core", "store", "cluster", "net", "common", "proto"},
    "discovery": {"discovery", "common", "proto"},
    "service": {"public", "core", "limiter", "service", "common", "proto"},
    "admin": {"public", "core", "limiter", "cluster", "service", "admin", "common", "proto"},
    "net": {"net", "common"},
    # The Redis client (a connection layer of its own kind) and the Store over it.
    "redis": {"redis", "net", "common"},
    "redis_store": {"public", "core", "store", "redis", "redis_store", "common"},
    # A front end sees the service interface, the connection layer and the wire formats, and
    # the limiter's request/response value types that the service interface is written in.
    "http": {"public", "http", "service", "net", "common", "proto", "limiter-types"},
    "grpc": {"public", "grpc", "service", "net", "common", "proto", "limiter-types"},
    "server": {"public", "core", "store", "limiter", "cluster", "service", "admin", "net",
               "http", "grpc", "server", "discovery", "common", "proto", "limiter-types", "redis",
               "redis_store"},
    "bench": {"public", "proto", "common", "bench"},
}

# Folder prefix -> layer; the longest prefix wins.
FOLDERS = {
    "include/floodgate": "public",
    "src/common": "common",
    "src/core": "core",
    "src/store": "store",
    "src/limiter": "limiter",
    "src/cluster": "cluster",
    "src/discovery": "discovery",
    "src/service": "service",
    "src/admin": "admin",
    "src/net": "net",
    "src/redis": "redis",
    "src/redis_store": "redis_store",
    "src/frontends/http": "http",
    "src/frontends/grpc": "grpc",
    "src/server": "server",
    "bench": "bench",
    "testing": "testing",
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
SOURCE = re.compile(r"\.(h|cc)$")


def LayerOf(path):
    best = None
    for prefix, layer in FOLDERS.items():
        if path == prefix or path.startswith(prefix + "/"):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return best[1] if best else None


def IsTest(path):
    name = os.path.basename(path)
    return name.endswith("_test.cc") or name.endswith("_test.h")


def IncludedLayer(root, header):
    """Returns the layer a quoted include belongs to, or None when it is not ours."""
    if header == "src/limiter/limiter.h":
        return "limiter-types"
    if header.startswith("testing/"):
        return "testing"
    if header.endswith(".pb.h"):
        return "proto"
    if header.startswith("floodgate/") and os.path.exists(os.path.join(root, "include", header)):
        return "public"
    return LayerOf(header)


def Check(root, max_lines):
    problems = []
    for top in ("include", "src", "bench"):
        for folder, _, files in os.walk(os.path.join(root, top)):
            for name in sorted(files):
                path = os.path.relpath(os.path.join(folder, name), root)
                if not SOURCE.search(name) or IsTest(path):
                    continue
                layer = LayerOf(path)
                with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
                    lines = f.read().splitlines()
                if max_lines and len(lines) > max_lines:
                    problems.append(f"{path}: {len(lines)} lines, more than {max_lines}: split it "
                                    "along a seam")
                if layer is None:
                    continue
                allowed = ALLOWED[layer]
                if "limiter" in allowed:
                    allowed = allowed | {"limiter-types"}
                for number, line in enumerate(lines, 1):
                    match = INCLUDE.match(line)
                    if not match:
                        continue
                    included = IncludedLayer(root, match.group(1))
                    if included is None or included in allowed:
                        continue
                    if included == "testing":
                        problems.append(f"{path}:{number}: includes {match.group(1)}: test "
                                        "support may not be linked into the server")
                    else:
                        problems.append(f"{path}:{number}: the {layer} layer may not include "
                                        f"{match.group(1)} (layer {included}); see "
                                        "docs/architecture.md")
    return problems


def SelfTest():
    """Builds a small tree with one violation of each kind and checks that each is reported."""
    with tempfile.TemporaryDirectory() as root:
        def Write(path, text):
            os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
            with open(os.path.join(root, path), "w") as f:
                f.write(text)
        Write("include/floodgate/store.h", "#pragma once\n")
        Write("src/core/ok.cc", '#include "floodgate/store.h"\n#include "absl/status/status.h"\n')
        Write("src/net/bad.cc", '#include "src/service/rate_limit_service.h"\n')
        Write("src/frontends/grpc/bad.cc", '#include "src/frontends/http/http_util.h"\n')
        Write("src/store/bad.cc", '#include "testing/fake_clock.h"\n')
        Write("src/store/fine_test.cc", '#include "testing/fake_clock.h"\n')
        Write("src/core/long.cc", "//\n" * 11)
        problems = Check(root, 10)
        expected = ["src/net/bad.cc:1", "src/frontends/grpc/bad.cc:1", "src/store/bad.cc:1",
                    "src/core/long.cc: 11 lines"]
        missing = [e for e in expected if not any(p.startswith(e) for p in problems)]
        extra = [p for p in problems if not any(p.startswith(e) for e in expected)]
        if missing or extra:
            print("self-test failed; missing:", missing, "unexpected:", extra)
            return 1
        print(f"self-test passed: {len(problems)} planted violations found, none else")
        return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(os.path.dirname(__file__), ".."))
    parser.add_argument("--max-lines", type=int, default=0)
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        return SelfTest()
    problems = Check(os.path.abspath(args.root), args.max_lines)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} layering problem(s)")
        return 1
    print("layers: every include goes down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
