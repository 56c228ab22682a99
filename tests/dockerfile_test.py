#!/usr/bin/env python3
"""Checks the Dockerfile without Docker (docs/deploy.md, "Container image").

- Both stages are Debian 12; the build stage runs the Makefile's `make build`.
- The runtime stage installs a Debian package for every shared library the built binary links
  (ldd, then dpkg -S), and no -dev package: a new library linked without its package here fails.
- It runs as a non-root numeric user, the same uid as deploy/kubernetes/ runs it.
- ENTRYPOINT is `floodgate serve`; the binary, started with the image's CMD (its paths moved to
  a temporary folder, its ports to free ones), serves, and the HEALTHCHECK's URL answers 200 on
  the port CMD gives --http; EXPOSE lists the CMD's HTTP and gRPC ports and the peer port.
- .dockerignore keeps .git and build folders out of the context.

    tests/dockerfile_test.py --root SOURCE_DIR --binary BUILD/floodgate
Prints one line per failure and "N passed, N failed"; exits 77 (skipped) without dpkg or ldd.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request

PEER_PORT = "7946"  # deploy/kubernetes/ and docs/cluster.md


def Instructions(text):
    """Returns the Dockerfile's instructions as (KEYWORD, argument text), continuations joined."""
    out = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    return out


def ExecForm(arg):
    """Returns a JSON array instruction argument (ENTRYPOINT ["a", "b"]) as a list."""
    return json.loads(arg)


def RequiredPackages(binary):
    """Returns the Debian packages holding the shared libraries `binary` links."""
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libraries = {}
    for line in ldd.splitlines():
        m = re.match(r"\s*(\S+) => (/\S+)", line)
        if m:
            libraries[m.group(1)] = (m.group(2), os.path.realpath(m.group(2)))
    # One dpkg -S for all (it takes a second per call); it names the package of each path it
    # knows, as "package[:arch]: path" (a library may be known by its link or its target).
    paths = sorted({p for pair in libraries.values() for p in pair})
    r = subprocess.run(["dpkg", "-S"] + paths, capture_output=True, text=True)
    owners = {}
    for line in r.stdout.splitlines():
        package, _, path = line.partition(": ")
        owners[path.strip()] = package.split(":")[0].strip()
    return {name: owners.get(path, owners.get(real))
            for name, (path, real) in libraries.items()}


def AptPackages(run_args):
    """Returns the packages of every `apt-get install` in RUN arguments."""
    packages = set()
    for command in re.split(r"&&|;", run_args):
        words = shlex.split(command)
        if "apt-get" in words and "install" in words:
            after = words[words.index("install") + 1:]
            packages.update(w for w in after if not w.startswith("-"))
    return packages


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--binary", required=True)
    args = parser.parse_args()
    if not shutil.which("dpkg") or not shutil.which("ldd"):
        print("skipped: needs dpkg and ldd (a Debian machine)")
        return 77

    failures = []
    passed = [0]

    def Check(ok, message):
        if ok:
            passed[0] += 1
        else:
            failures.append(message)
            print("FAIL: " + message)

    with open(os.path.join(args.root, "Dockerfile")) as f:
        instructions = Instructions(f.read())
    froms = [i for i, (k, _) in enumerate(instructions) if k == "FROM"]
    Check(len(froms) == 2, f"want two stages, found {len(froms)} FROM lines")
    for i in froms:
        image = instructions[i][1].split()[0]
        Check(image in ("debian:12", "debian:bookworm"), f"FROM {image}: want debian:12")
    build = instructions[froms[0]:froms[-1]]
    runtime = instructions[froms[-1]:]
    build_runs = " ".join(a for k, a in build if k == "RUN")
    Check(re.search(r"\bmake build\b", build_runs) is not None,
          "the build stage does not run `make build`")

    # Every linked library's package, installed in the runtime stage; no headers there.
    installed = set()
    for keyword, arg in runtime:
        if keyword == "RUN":
            installed |= AptPackages(arg)
    required = RequiredPackages(args.binary)
    for library, package in sorted(required.items()):
        Check(package is not None, f"{library}: no Debian package owns it (dpkg -S)")
        if package is not None:
            Check(package in installed,
                  f"{library} is in Debian package {package}, not installed by the runtime stage")
    Check(len(required) >= 5, f"ldd found only {len(required)} libraries: {required}")
    dev = sorted(p for p in installed if p.endswith("-dev"))
    Check(not dev, f"the runtime stage installs -dev packages: {dev}")
    Check("curl" in installed, "the runtime stage lacks curl, which HEALTHCHECK runs")

    # A non-root numeric user, the one deploy/kubernetes/ runs as.
    users = [a for k, a in runtime if k == "USER"]
    Check(len(users) >= 1, "no USER in the runtime stage")
    uid = users[-1].split(":")[0] if users else ""
    Check(uid.isdigit() and uid != "0", f"USER {uid}: want a numeric non-root uid")
    for manifest in ("statefulset.yaml", "single/deployment.yaml"):
        path = os.path.join(args.root, "deploy/kubernetes", manifest)
        if os.path.exists(path):
            with open(path) as f:
                Check(f"runAsUser: {uid}" in f.read(), f"deploy/kubernetes/{manifest} does not "
                      f"run as the image's uid {uid}")

    entrypoint = [ExecForm(a) for k, a in runtime if k == "ENTRYPOINT"]
    Check(entrypoint == [["floodgate", "serve"]], f"ENTRYPOINT {entrypoint}: want floodgate serve")
    cmds = [ExecForm(a) for k, a in runtime if k == "CMD"]
    cmd = cmds[-1] if cmds else []
    Check("--config=/etc/floodgate" in cmd, f"CMD {cmd} does not serve /etc/floodgate")
    flags = dict(a[2:].split("=", 1) for a in cmd if a.startswith("--") and "=" in a)
    http_port = flags.get("http", "").rpartition(":")[2]
    grpc_port = flags.get("grpc", "").rpartition(":")[2]
    exposed = set(" ".join(a for k, a in runtime if k == "EXPOSE").split())
    for port, what in ((http_port, "--http"), (grpc_port, "--grpc"), (PEER_PORT, "peer")):
        Check(port and port in exposed, f"EXPOSE {sorted(exposed)} lacks the {what} port {port}")
    health = [a for k, a in runtime if k == "HEALTHCHECK"]
    url = None
    if health:
        m = re.search(r"(http://127\.0\.0\.1:(\d+)(/\S*?))\"", health[-1])
        if m:
            url = m
    Check(url is not None, f"HEALTHCHECK does not curl http://127.0.0.1:PORT/...: {health}")
    if url:
        Check(url.group(2) == http_port and url.group(3) == "/healthcheck",
              f"HEALTHCHECK {url.group(1)}: want /healthcheck on the --http port {http_port}")

    # The binary with the image's CMD serves, and answers the health check's path.
    with tempfile.TemporaryDirectory(prefix="floodgate-docker-") as work:
        config = os.path.join(work, "etc")
        os.mkdir(config)
        shutil.copy(os.path.join(args.root, "examples/api.yaml"), config)
        state = os.path.join(work, "state")
        argv = [args.binary] + entrypoint[0][1:] if entrypoint else [args.binary, "serve"]
        for a in cmd:
            a = a.replace("/etc/floodgate", config).replace("/var/lib/floodgate", state)
            a = re.sub(r"^(--(http|grpc))=0\.0\.0\.0:\d+$", r"\1=127.0.0.1:0", a)
            argv.append(a)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOODGATE_")}
        server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env)
        try:
            line = server.stdout.readline()
            m = re.match(r"floodgate: listening http=(\d+) grpc=(\d+)", line)
            Check(m is not None, f"{argv} did not serve: '{line.strip()}' "
                  f"{server.stderr.read() if server.poll() is not None else ''}")
            if m and url:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{m.group(1)}{url.group(3)}", timeout=10) as reply:
                    Check(reply.status == 200, f"{url.group(3)} answered {reply.status}")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        Check(server.returncode == 0, f"SIGTERM: exit code {server.returncode}")

    # The context: no .git, no build folders.
    with open(os.path.join(args.root, ".dockerignore")) as f:
        ignored = {l.strip() for l in f if l.strip() and not l.startswith("#")}
    for name in (".git", "build", "build-*"):
        Check(name in ignored, f".dockerignore does not leave out {name}")
    for keyword, arg in instructions:
        if keyword == "COPY" and not arg.startswith("--from"):
            for source in arg.split()[:-1]:
                Check(source == "." or os.path.exists(os.path.join(args.root, source)),
                      f"COPY {source}: no such file in the repository")

    print(f"{passed[0]} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
