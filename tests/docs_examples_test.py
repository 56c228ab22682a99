#!/usr/bin/env python3
"""Runs the shell examples of README.md and docs/*.md against a real server and checks their
answers against the documented ones, so that the docs stay the source and keep working when
pasted.

The convention (docs/testing-docs is this docstring):

* A fenced block marked ```sh is run. Inside it, a line starting with `$ ` is a command; the lines
  after it, up to the next `$ ` line, are its documented output. A command goes on over lines
  ending in `\\`, over an open quote, and over a here-document (`<<'EOF'` ... `EOF`). A ```sh
  block with no `$ ` line is a list of commands whose output is not shown: each must exit 0.
* In documented output, `...` stands for any text (values that change from run to run: leases,
  times, remaining counts); any run of whitespace matches any whitespace or none (docs wrap long
  JSON); everything else must match exactly. A command must exit 0 unless its output ends with a
  line `[exit N]`.
* Shell variables that a command sets (lower-case names) are kept for the next commands of the
  same file, so one example can use the lease an earlier one got.
* A block that the test cannot run (it needs another host, several nodes, Kubernetes, or starts
  a server of its own) carries the line `<!-- not run: <reason> -->` right before its fence.
  Any other block (```sh, ```bash, ```console or no language) that calls curl, grpcurl or
  floodgate without that marker is an error, so that no example escapes the test silently.

Each file gets a fresh server, started the way `make run` starts it (tools/run.sh: the same
examples/ folder, flags and admin token) but on free ports and with a temporary state folder;
`localhost:8080`, `127.0.0.1:8080` and `:8081` in the commands are rewritten to its ports.
Commands run in a scratch folder where `build/` is the build folder and `examples/` the
repository's, with `TOKEN` set to the admin token `make run` uses.

Usage: docs_examples_test.py --root REPO --build-dir BUILD [FILE...]
       docs_examples_test.py --self-test
"""

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field

COMMAND_TIMEOUT_S = 20
START_TIMEOUT_S = 30
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.+?)\s*-->\s*$")
FENCE = re.compile(r"^```\s*([A-Za-z0-9_+-]*)\s*$")
# A call in command position: at the start of a line (after an optional `$ ` prompt) or after
# `|`, `;`, `&&` or `$(`, possibly with a path (`build/floodgate`).
CALLS = re.compile(r"(?:^\s*(?:\$\s+)?|[|;&(]\s*)(?:[\w./-]*/)?(?:curl|grpcurl|floodgate)(?=\s|$)")
SHELLISH = {"", "sh", "bash", "console", "shell"}


@dataclass
class Example:
    file: str
    line: int  # 1-based line of the command's first line
    command: str
    expected: list = field(default_factory=list)  # documented output lines; [] = not checked
    shown: bool = False  # the block shows outputs (prompt mode)


@dataclass
class Block:
    file: str
    line: int  # the fence's line
    lang: str
    lines: list
    not_run: str | None


def parse_blocks(path, text):
    blocks = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        marker = NOT_RUN.match(lines[start - 1]) if start > 0 else None
        blocks.append(Block(path, start + 1, m.group(1), lines[start + 1:j],
                            marker.group(1) if marker else None))
        i = j + 1
    return blocks


def _complete(command):
    """Whether `command` is a whole shell command: no trailing backslash, quotes closed."""
    if command.endswith("\\"):
        return False
    try:
        shlex.split(command, comments=True)
    except ValueError:
        return False
    return True


HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")


def _take_command(lines, i, first):
    """Reads one command starting at lines[i] (whose text is `first`); returns (command, next)."""
    parts = [first]
    i += 1
    while not _complete("\n".join(parts)) and i < len(lines):
        parts.append(lines[i])
        i += 1
    for m in HEREDOC.finditer("\n".join(parts)):
        word = m.group(2)
        while i < len(lines):
            parts.append(lines[i])
            i += 1
            if lines[i - 1].strip() == word:
                break
    return "\n".join(parts), i


def examples_of(block):
    out = []
    lines = block.lines
    prompt_mode = any(l.startswith("$ ") for l in lines)
    i = 0
    while i < len(lines):
        line = lines[i]
        first = i
        if prompt_mode:
            if not line.startswith("$ "):
                i += 1  # text before the first prompt: not expected to occur
                continue
            command, i = _take_command(lines, i, line[2:])
            expected = []
            while i < len(lines) and not lines[i].startswith("$ "):
                expected.append(lines[i])
                i += 1
            while expected and not expected[-1].strip():
                expected.pop()
            out.append(Example(block.file, block.line + 1 + first, command, expected, True))
        else:
            if not line.strip() or line.lstrip().startswith("#"):
                i += 1
                continue
            command, i = _take_command(lines, i, line)
            out.append(Example(block.file, block.line + 1 + first, command))
    return out


def pattern_of(expected_lines):
    """A regex for documented output: `...` is any text, whitespace runs match any whitespace."""
    text = "\n".join(expected_lines).strip()
    parts = []
    for piece in re.split(r"(\.\.\.|\s+)", text):
        if piece == "...":
            parts.append(r".*?")
        elif piece and piece.isspace():
            parts.append(r"\s*")
        elif piece:
            parts.append(re.escape(piece))
    return re.compile("".join(parts), re.DOTALL)


def expected_exit(expected):
    if expected and re.fullmatch(r"\[exit (\d+)\]", expected[-1].strip()):
        return int(expected[-1].strip()[6:-1]), expected[:-1]
    return 0, expected


def rewrite(command, http_port, grpc_port):
    for host in ("localhost", "127.0.0.1"):
        command = command.replace(f"{host}:8080", f"127.0.0.1:{http_port}")
        command = command.replace(f"{host}:8081", f"127.0.0.1:{grpc_port}")
    return command


def make_run_token(root):
    with open(os.path.join(root, "tools", "run.sh")) as f:
        m = re.search(r"FLOODGATE_ADMIN_TOKEN:-([^}]+)\}", f.read())
    if not m:
        sys.exit("tools/run.sh sets no default admin token (FLOODGATE_ADMIN_TOKEN:-...)")
    return m.group(1)


class Server:
    """The server `make run` starts (tools/run.sh), on free ports, with its own state folder."""

    def __init__(self, root, build_dir, scratch):
        env = dict(os.environ)
        env.update(FLOODGATE_HTTP="127.0.0.1:0", FLOODGATE_GRPC="127.0.0.1:0",
                   FLOODGATE_STATE_DIR=os.path.join(scratch, "state"))
        env.pop("FLOODGATE_ADMIN_TOKEN", None)  # run.sh's own default, as `make run` has it
        self.proc = subprocess.Popen(["bash", "tools/run.sh", build_dir], cwd=root, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.http = self.grpc = None
        seen = []
        signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError()))
        signal.alarm(START_TIMEOUT_S)
        try:
            for line in self.proc.stdout:
                seen.append(line)
                m = re.search(r"listening http=(\d+) grpc=(\d+)", line)
                if m:
                    self.http, self.grpc = int(m.group(1)), int(m.group(2))
                    break
        except TimeoutError:
            pass
        finally:
            signal.alarm(0)
        if self.http is None:
            self.stop()
            sys.exit("make run's server did not start:\n" + "".join(seen))
        # Keep reading what the server prints, so that it never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def check_file(root, build_dir, rel, token):
    """Runs one file's examples; returns (ran, failures, not_run)."""
    with open(os.path.join(root, rel)) as f:
        blocks = parse_blocks(rel, f.read())
    failures = []
    not_run = []
    runnable = []
    for b in blocks:
        calls = any(CALLS.search(l) for l in b.lines)
        if b.not_run is not None:
            not_run.append(f"{rel}:{b.line}: {b.not_run}")
        elif b.lang == "sh":
            runnable.append(b)
        elif b.lang in SHELLISH and calls:
            failures.append(f"{rel}:{b.line}: a shell example that is neither ```sh (run by "
                            f"this test) nor marked <!-- not run: reason -->")
    examples = [e for b in runnable for e in examples_of(b)]
    if not examples:
        return 0, failures, not_run
    with tempfile.TemporaryDirectory(prefix="fg-docs-") as scratch:
        work = os.path.join(scratch, "cwd")
        os.mkdir(work)
        os.symlink(os.path.abspath(build_dir), os.path.join(work, "build"))
        os.symlink(os.path.join(root, "examples"), os.path.join(work, "examples"))
        server = Server(root, os.path.abspath(build_dir), scratch)
        env = dict(os.environ, TOKEN=token, FLOODGATE_HTTP=f"127.0.0.1:{server.http}",
                   FLOODGATE_GRPC=f"127.0.0.1:{server.grpc}")
        env.pop("FLOODGATE_ADMIN_TOKEN", None)
        env["FG_DOCS_VARS"] = os.path.join(scratch, "vars.sh")
        open(env["FG_DOCS_VARS"], "w").close()
        try:
            for e in examples:
                failures.extend(run_example(e, work, env, server))
        finally:
            server.stop()
    return len(examples), failures, not_run


def run_example(e, work, env, server):
    command = rewrite(e.command, server.http, server.grpc)
    want_rc, expected = expected_exit(e.expected)
    # Shell variables a command sets (lower-case names) are kept for the file's next commands.
    script = (f'source "$FG_DOCS_VARS"\n{command}\n__fg_rc=$?\n'
              'for __v in $(compgen -v); do case $__v in [a-z]*) declare -p "$__v";; esac; done'
              ' > "$FG_DOCS_VARS"\nexit $__fg_rc\n')
    try:
        done = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return [f"{e.file}:{e.line}: timed out after {COMMAND_TIMEOUT_S}s: {e.command}"]
    out = done.stdout.replace("\r\n", "\n")
    problems = []
    if done.returncode != want_rc:
        problems.append(f"exit status {done.returncode}, documented {want_rc}")
    if expected and not pattern_of(expected).fullmatch(out.strip()):
        problems.append("output differs from the documented one")
    if not problems:
        return []
    return [f"{e.file}:{e.line}: {'; '.join(problems)}\n  command: {e.command}\n"
            f"  documented:\n    " + "\n    ".join(e.expected) +
            f"\n  got (stdout):\n    " + "\n    ".join(out.rstrip().split("\n")) +
            (f"\n  stderr:\n    {done.stderr.strip()}" if done.stderr.strip() else "")]


def self_test():
    doc = "\n".join([
        "text", "```sh", "$ echo '{\"a\": 1,' \\", "    '\"b\": 2}'", "{\"a\": 1, ...}", "",
        "$ cat <<'EOF'", "x", "EOF", "x", "$ false", "[exit 1]", "```",
        "<!-- not run: needs three hosts -->", "```sh", "floodgate serve", "```",
        "```", "curl -s x", "```", "```yaml", "curl: not a command", "```"])
    blocks = parse_blocks("t.md", doc)
    assert [b.lang for b in blocks] == ["sh", "sh", "", "yaml"], blocks
    assert blocks[1].not_run == "needs three hosts"
    ex = examples_of(blocks[0])
    assert [e.command for e in ex] == [
        "echo '{\"a\": 1,' \\\n    '\"b\": 2}'", "cat <<'EOF'\nx\nEOF", "false"], ex
    assert ex[0].expected == ["{\"a\": 1, ...}"] and ex[0].line == 3, ex[0]
    assert expected_exit(ex[2].expected) == (1, [])
    p = pattern_of(["{\"a\": 1,", "  ...}"])
    assert p.fullmatch('{"a": 1, "b": 2}') and p.fullmatch('{"a":1,"b":2}')
    assert not p.fullmatch('{"a": 2, "b": 2}')
    assert rewrite("curl localhost:8080/x 127.0.0.1:8081", 5, 6) == \
        "curl 127.0.0.1:5/x 127.0.0.1:6"
    assert CALLS.search("curl -s x") and CALLS.search("$ build/floodgate check")
    assert CALLS.search("x=$(curl -s y)") and not CALLS.search("curly")
    assert not CALLS.search("include/floodgate/  public value types")
    print("self-test passed")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root")
    parser.add_argument("--build-dir")
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("files", nargs="*")
    args = parser.parse_args()
    if args.self_test:
        self_test()
        return 0
    root = os.path.abspath(args.root)
    files = args.files or ["README.md"] + sorted(
        os.path.join("docs", f) for f in os.listdir(os.path.join(root, "docs"))
        if f.endswith(".md"))
    token = make_run_token(root)
    total = 0
    failures = []
    not_run = []
    for rel in files:
        ran, failed, skipped = check_file(root, args.build_dir, rel, token)
        total += ran
        failures += failed
        not_run += skipped
    for line in not_run:
        print(f"not run: {line}")
    for f in failures:
        print(f"FAIL {f}")
    print(f"{total} examples run, {len(failures)} failed, {len(not_run)} blocks marked not run")
    return 1 if failures or total == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
