#!/usr/bin/env python3
"""Checks deploy/systemd/floodgate.service (docs/deploy.md, "systemd").

- `systemd-analyze verify` finds nothing to say about it (run on a copy whose ExecStart names
  the built binary: verify wants the command to exist), and `systemd-analyze security --offline`
  rates its exposure at most MAX_EXPOSURE. Both only where systemd-analyze is installed.
- It has the settings a platform team expects: Type=simple (the server has no sd_notify), no
  ExecReload (no SIGHUP handler: the server reloads its config folder by itself), a dynamic
  user, the state folder as StateDirectory= passed as --state-dir, the environment file,
  Restart=on-failure, LimitNOFILE and the hardening list.
- Its ExecStart line, with /etc/floodgate and /var/lib/floodgate moved to a temporary folder and
  the variables of deploy/systemd/floodgate.default (ports moved to free ones), starts the
  binary: it serves, /healthcheck answers 200, an admin change lands in the state folder, and
  KillSignal stops it with exit code 0.
- Every FLOODGATE_* variable floodgate.default names (set or commented out) is one that
  `floodgate serve --help` lists.

    tests/systemd_unit_test.py --root SOURCE_DIR --binary BUILD/floodgate
Prints one line per failure and "N passed, N failed".
"""

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request

MAX_EXPOSURE = 2.5  # systemd-analyze security: 0 (locked down) to 10 (exposed); 1.9 when written

REQUIRED = {
    "Type": "simple",
    "EnvironmentFile": "-/etc/default/floodgate",
    "User": "floodgate",
    "DynamicUser": "yes",
    "StateDirectory": "floodgate",
    "Restart": "on-failure",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallFilter": "@system-service",
    "CapabilityBoundingSet": "",
}


def ReadUnit(path):
    """Returns {section: {key: [values]}} of a unit file."""
    sections = {}
    current = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or line.startswith(";"):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
                continue
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def ReadEnvFile(path):
    """Returns the KEY=VALUE lines of an environment file, and every FLOODGATE_* name in it."""
    values = {}
    names = set()
    with open(path) as f:
        for line in f:
            names.update(re.findall(r"\b(FLOODGATE_[A-Z0-9_]+)=", line))
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values, names


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--binary", required=True)
    args = parser.parse_args()
    binary = os.path.realpath(args.binary)
    unit_path = os.path.join(args.root, "deploy/systemd/floodgate.service")
    default_path = os.path.join(args.root, "deploy/systemd/floodgate.default")

    failures = []
    passed = [0]

    def Check(ok, message):
        if ok:
            passed[0] += 1
        else:
            failures.append(message)
            print("FAIL: " + message)

    unit = ReadUnit(unit_path)
    service = unit.get("Service", {})
    for key, want in REQUIRED.items():
        got = service.get(key, [None])[-1]
        Check(got == want, f"[Service] {key}={got}, want {key}={want}")
    Check("ExecReload" not in service, "ExecReload: the server handles no SIGHUP (it would stop it)")
    Check("ExecStop" not in service, "ExecStop: SIGTERM (KillSignal) is how the server drains")
    nofile = service.get("LimitNOFILE", ["0"])[-1]
    Check(nofile.isdigit() and int(nofile) >= 65536, f"LimitNOFILE={nofile}: want at least 65536")
    Check(unit.get("Install", {}).get("WantedBy") == ["multi-user.target"],
          "[Install] WantedBy=multi-user.target missing")

    exec_start = shlex.split(service.get("ExecStart", [""])[-1])
    Check(exec_start[:2] == ["/usr/bin/floodgate", "serve"],
          f"ExecStart {exec_start}: want /usr/bin/floodgate serve ...")
    Check(exec_start[2:4] == ["--config", "/etc/floodgate"], f"ExecStart {exec_start}: want "
          "--config /etc/floodgate first")
    state_dir = "/var/lib/" + service.get("StateDirectory", [""])[-1]
    Check("--state-dir" in exec_start and
          exec_start[exec_start.index("--state-dir") + 1] == state_dir,
          f"ExecStart does not pass the StateDirectory {state_dir} as --state-dir")

    analyze = shutil.which("systemd-analyze")
    with tempfile.TemporaryDirectory(prefix="floodgate-systemd-") as work:
        if analyze:
            with open(unit_path) as f:
                text = f.read()
            copy = os.path.join(work, "floodgate.service")
            with open(copy, "w") as f:
                f.write(text.replace("ExecStart=/usr/bin/floodgate", "ExecStart=" + binary))
            r = subprocess.run([analyze, "verify", copy], capture_output=True, text=True)
            Check(r.returncode == 0 and not (r.stdout + r.stderr).strip(),
                  f"systemd-analyze verify: exit {r.returncode}: {r.stdout}{r.stderr}")
            r = subprocess.run([analyze, "security", "--offline=yes", copy], capture_output=True,
                               text=True)
            m = re.search(r"Overall exposure level for floodgate\.service: ([0-9.]+)", r.stdout)
            Check(m is not None and float(m.group(1)) <= MAX_EXPOSURE,
                  f"systemd-analyze security: want exposure at most {MAX_EXPOSURE}: "
                  f"{m.group(0) if m else r.stdout + r.stderr}")
        else:
            print("note: no systemd-analyze; verify and security not run")

        # The ExecStart line runs: the binary takes every flag, serves and stops on KillSignal.
        config = os.path.join(work, "etc")
        os.mkdir(config)
        shutil.copy(os.path.join(args.root, "examples/api.yaml"), config)
        state = os.path.join(work, "state")
        argv = [binary] + [a.replace("/etc/floodgate", config).replace(state_dir, state)
                           for a in exec_start[1:]]
        env_values, env_names = ReadEnvFile(default_path)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOODGATE_")}
        env.update(env_values)
        for key in ("FLOODGATE_HTTP", "FLOODGATE_GRPC"):
            Check(key in env_values, f"floodgate.default does not set {key}")
            env[key] = "127.0.0.1:0"
        server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env)
        try:
            line = server.stdout.readline()
            m = re.match(r"floodgate: listening http=(\d+) grpc=(\d+) config=(\S+)", line)
            Check(m is not None and m.group(3) == config,
                  f"ExecStart as {argv}: did not serve {config}: '{line.strip()}' "
                  f"{server.stderr.read() if server.poll() is not None else ''}")
            if m:
                base = f"http://127.0.0.1:{m.group(1)}"
                with urllib.request.urlopen(base + "/healthcheck", timeout=10) as reply:
                    Check(reply.status == 200, f"/healthcheck answered {reply.status}")
                body = (b"domain: web\ndescriptors:\n  - key: k\n"
                        b"    rate_limit: {unit: day, requests_per_unit: 1}\n")
                put = urllib.request.Request(base + "/v1/config/web", data=body, method="PUT")
                with urllib.request.urlopen(put, timeout=10) as reply:
                    Check(reply.status == 200, f"PUT /v1/config/web answered {reply.status}")
                Check(os.path.exists(os.path.join(state, "web.yaml")),
                      f"the admin change is not in the --state-dir folder {state}")
        finally:
            kill = service.get("KillSignal", ["SIGTERM"])[-1]
            server.send_signal(getattr(signal, kill))
            server.wait(timeout=30)
        Check(server.returncode == 0, f"{kill}: exit code {server.returncode}")

    # Every variable the example environment file names is a flag's.
    help_text = subprocess.run([binary, "serve", "--help"], capture_output=True,
                               text=True).stdout
    for name in sorted(env_names):
        Check(f"(Env:{name})" in help_text, f"floodgate.default names {name}, which no flag reads")
    Check(len(env_names) >= 5, f"floodgate.default names only {sorted(env_names)}")

    print(f"{passed[0]} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
