#!/usr/bin/env python3
"""Checks the Kubernetes manifests of deploy/kubernetes/ (the cluster) and
deploy/kubernetes/single/ (one node) without a cluster (docs/deploy.md, "Kubernetes").

Each kustomization is rendered (`kubectl kustomize` where kubectl is installed; else its
resources are read as listed, and `kubectl` is noted as not run). Then, for every workload
(Deployment, StatefulSet, DaemonSet) and every container:
- liveness and readiness probes GET /healthcheck on the container's HTTP port (the one --http
  listens on);
- CPU and memory requests and a memory limit; --max-memory below the memory limit;
- a non-root pod (runAsNonRoot, a non-zero runAsUser) and a container that cannot escalate;
- the --config folder is a mount of a ConfigMap of the same kustomization, whose files
  `floodgate validate` accepts;
- the flags (args; the image's entrypoint is `floodgate serve`) are all known to
  `floodgate serve`, and the FLOODGATE_* variables are all read by a flag.
Every Service selects a workload of its own kustomization and names its ports; no Service of
one kustomization selects another's pods. The single node's args are also started for real on
free ports, and its probe path answers 200.

    tests/kubernetes_manifests_test.py --root SOURCE_DIR --binary BUILD/floodgate
Prints one line per failure and "N passed, N failed"; exits 77 (skipped) without PyYAML.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request

try:
    import yaml
except ImportError:
    yaml = None

KUSTOMIZATIONS = ["deploy/kubernetes", "deploy/kubernetes/single"]
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}


def Render(root, folder):
    """Returns the kustomization's objects and how they were read."""
    path = os.path.join(root, folder)
    kubectl = shutil.which("kubectl")
    if kubectl:
        r = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"kubectl kustomize {folder}: {r.stderr}")
        return [d for d in yaml.safe_load_all(r.stdout) if d], "kubectl kustomize"
    with open(os.path.join(path, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    objects = []
    for resource in kustomization.get("resources", []):
        with open(os.path.join(path, resource)) as f:
            objects += [d for d in yaml.safe_load_all(f) if d]
    return objects, "its resources (no kubectl)"


def Flags(args):
    """Returns {flag: value} of --flag=value arguments."""
    return dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)


def Selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def Bytes(quantity):
    """Returns a Kubernetes memory quantity or a --max-memory size in bytes."""
    m = re.fullmatch(r"(\d+)\s*([KMGT]i?)?B?", quantity)
    if not m:
        return None
    units = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return int(m.group(1)) * units[m.group(2)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--binary", required=True)
    args = parser.parse_args()
    if yaml is None:
        print("skipped: needs PyYAML (Debian's python3-yaml)")
        return 77
    binary = os.path.realpath(args.binary)
    help_text = subprocess.run([binary, "serve", "--help"], capture_output=True,
                               text=True).stdout

    failures = []
    passed = [0]

    def Check(ok, message):
        if ok:
            passed[0] += 1
        else:
            failures.append(message)
            print("FAIL: " + message)

    rendered = {}
    for folder in KUSTOMIZATIONS:
        objects, how = Render(args.root, folder)
        print(f"{folder}: {len(objects)} objects, read with {how}")
        rendered[folder] = objects

    work = tempfile.mkdtemp(prefix="floodgate-k8s-")
    try:
        for folder, objects in rendered.items():
            configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
            workloads = [o for o in objects if o["kind"] in WORKLOADS]
            Check(len(workloads) == 1, f"{folder}: {len(workloads)} workloads, want 1")
            for w in workloads:
                where = f"{folder}: {w['kind']} {w['metadata']['name']}"
                pod = w["spec"]["template"]["spec"]
                labels = w["spec"]["template"]["metadata"].get("labels", {})
                Check(Selects(w["spec"]["selector"].get("matchLabels"), labels),
                      f"{where}: its selector does not match its pods' labels")
                security = pod.get("securityContext", {})
                Check(security.get("runAsNonRoot") is True, f"{where}: no runAsNonRoot: true")
                Check(security.get("runAsUser", 0) != 0, f"{where}: runAsUser is 0 or unset")
                Check(pod.get("terminationGracePeriodSeconds", 30) >= 15,
                      f"{where}: a grace period too short for the leave and the drain")
                volumes = {v["name"]: v for v in pod.get("volumes", [])}
                for c in pod["containers"]:
                    here = f"{where} container {c['name']}"
                    Check(not c.get("args") or c["args"][0] != "serve",
                          f"{here}: args start with serve; the image's entrypoint is "
                          "`floodgate serve` already")
                    flags = Flags(c.get("args", []))
                    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
                    http_port = int(flags.get("http", "127.0.0.1:8080").rpartition(":")[2])
                    Check(ports.get("http") == http_port,
                          f"{here}: port 'http' is {ports.get('http')}, --http is {http_port}")
                    for probe in ("livenessProbe", "readinessProbe"):
                        get = c.get(probe, {}).get("httpGet", {})
                        port = get.get("port")
                        port = ports.get(port) if isinstance(port, str) else port
                        Check(get.get("path") == "/healthcheck" and port == http_port,
                              f"{here}: {probe} is not GET /healthcheck on the HTTP port: "
                              f"{c.get(probe)}")
                    resources = c.get("resources", {})
                    for kind, name in (("requests", "cpu"), ("requests", "memory"),
                                       ("limits", "memory")):
                        Check(name in resources.get(kind, {}),
                              f"{here}: no resources.{kind}.{name}")
                    limit = Bytes(str(resources.get("limits", {}).get("memory", "")))
                    if "max-memory" in flags:
                        budget = Bytes(flags["max-memory"])
                        Check(limit and budget and budget < limit,
                              f"{here}: --max-memory {flags['max-memory']} is not below the "
                              f"memory limit")
                    csc = c.get("securityContext", {})
                    Check(csc.get("allowPrivilegeEscalation") is False,
                          f"{here}: allowPrivilegeEscalation is not false")
                    Check("ALL" in csc.get("capabilities", {}).get("drop", []),
                          f"{here}: capabilities are not all dropped")

                    # The config folder: a ConfigMap of this kustomization, valid for the binary.
                    config = flags.get("config")
                    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
                    mount = mounts.get(config)
                    Check(mount is not None, f"{here}: --config={config} is not a mount")
                    source = volumes.get(mount["name"], {}) if mount else {}
                    cm_name = source.get("configMap", {}).get("name")
                    Check(cm_name in configmaps,
                          f"{here}: --config={config} is not a ConfigMap of {folder} "
                          f"({cm_name} among {sorted(configmaps)})")
                    if cm_name in configmaps:
                        cm_dir = os.path.join(work, folder.replace("/", "_"), "config")
                        os.makedirs(cm_dir)
                        for name, text in configmaps[cm_name].get("data", {}).items():
                            with open(os.path.join(cm_dir, name), "w") as f:
                                f.write(text)
                        r = subprocess.run([binary, "validate", cm_dir], capture_output=True,
                                           text=True)
                        Check(r.returncode == 0, f"{folder}: ConfigMap {cm_name} does not "
                              f"validate: {r.stdout}{r.stderr}")
                    state = flags.get("state-dir", "")
                    Check(any(state == p or state.startswith(p + "/") for p in mounts
                              if not mounts[p].get("readOnly")),
                          f"{here}: --state-dir={state} is not on a writable mount "
                          "(the root filesystem is read-only)")

                    # Every flag and variable is one `floodgate serve` knows.
                    r = subprocess.run([binary, "serve"] + c.get("args", []) + ["--help"],
                                       capture_output=True, text=True)
                    Check(r.returncode == 0, f"{here}: floodgate serve refuses its args: "
                          f"{r.stderr.strip()}")
                    for env in c.get("env", []):
                        if env["name"].startswith("FLOODGATE_"):
                            Check(f"(Env:{env['name']})" in help_text,
                                  f"{here}: no flag reads {env['name']}")

            # Services: select this kustomization's pods, and name ports the pods have.
            pod_labels = [w["spec"]["template"]["metadata"].get("labels", {}) for w in workloads]
            pod_ports = {p["name"] for w in workloads
                         for c in w["spec"]["template"]["spec"]["containers"]
                         for p in c.get("ports", [])}
            for s in (o for o in objects if o["kind"] == "Service"):
                where = f"{folder}: Service {s['metadata']['name']}"
                Check(any(Selects(s["spec"].get("selector"), l) for l in pod_labels),
                      f"{where} selects none of its workload's pods")
                for p in s["spec"].get("ports", []):
                    Check(p.get("targetPort") in pod_ports,
                          f"{where}: targetPort {p.get('targetPort')} is no container port")
                for other, other_objects in rendered.items():
                    if other == folder:
                        continue
                    for w in (o for o in other_objects if o["kind"] in WORKLOADS):
                        Check(not Selects(s["spec"].get("selector"),
                                          w["spec"]["template"]["metadata"].get("labels", {})),
                              f"{where} also selects the pods of {other}")

        # The single node's args, started for real on free ports.
        single = [o for o in rendered["deploy/kubernetes/single"] if o["kind"] in WORKLOADS]
        if single:
            c = single[0]["spec"]["template"]["spec"]["containers"][0]
            config_dir = os.path.join(work, "deploy_kubernetes_single", "config")
            state_dir = os.path.join(work, "single-state")
            argv = [binary, "serve"]
            for a in c["args"]:
                a = a.replace("/etc/floodgate", config_dir).replace("/var/lib/floodgate",
                                                                     state_dir)
                a = re.sub(r"^(--(http|grpc))=0\.0\.0\.0:\d+$", r"\1=127.0.0.1:0", a)
                argv.append(a)
            env = {k: v for k, v in os.environ.items() if not k.startswith("FLOODGATE_")}
            server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env)
            try:
                line = server.stdout.readline()
                m = re.match(r"floodgate: listening http=(\d+) ", line)
                Check(m is not None, f"the single node's args did not serve: '{line.strip()}' "
                      f"{server.stderr.read() if server.poll() is not None else ''}")
                if m:
                    path = c["readinessProbe"]["httpGet"]["path"]
                    with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}{path}",
                                                timeout=10) as reply:
                        Check(reply.status == 200, f"{path} answered {reply.status}")
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=30)
            Check(server.returncode == 0, f"SIGTERM: exit code {server.returncode}")
    finally:
        shutil.rmtree(work)

    print(f"{passed[0]} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
