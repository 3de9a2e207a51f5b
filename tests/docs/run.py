#!/usr/bin/env python3
"""The documentation test: every command block of README.md and docs/*.md, run in order
against a fresh enc, each shown output compared with what the commands print.

How a page is read (docs/testing.md says the same for writers):

- A fenced block whose info string is `sh` is run, in order, in one bash shell per page
  (variables carry over between blocks), and must exit 0 (`set -e` while it runs).
- `sh serve` starts enc: it runs in the background for the rest of the page, and the next
  block waits until enc answers `/healthz`.
- `sh not-run` is shown, not run: it needs what a test machine has not (AWS, a Puppet
  server's own files, root) or it is the test command itself. It must pass `bash -n` and
  `shellcheck`, and every `enc <subcommand>` in it must be one `enc --help` lists.
- A block whose info string is `<language> output` (json, yaml, text) right after a run
  block is compared with that block's standard output. In JSON, a string `"<...>"` (such as
  `"<time>"` or `"<id>"`) stands for any value, a key `"..."` for any other keys, and a last
  element `"..."` for any further elements. In text and YAML, one of `TEXT_PLACEHOLDERS`
  (`<time>`, `<id>`, `<token>`, `<date>`, ...) stands for any run of characters within a line
  (any other `<...>` is text, as `<h1>` is), and a line that is only `...` for any number of
  lines.
- Every other block (file contents, configuration) is left alone.
- Every relative link of a page must lead to a file that exists.

Each page runs with its own empty HOME (so `~` is fresh), the repository as its working
directory, CARGO_HOME and RUSTUP_HOME kept, and enc's own port in place of 8080: ENC_LISTEN
is set to it, and `8080` in a block stands for it.

Usage: tests/docs/run.py [page ...]   (default: README.md and docs/*.md)
Needs target/debug/enc (cargo build), bash, curl, jq, shellcheck.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The longest a page may take; a block that never ends (a server not marked `serve`) fails it.
PAGE_SECONDS = 300
FENCE = re.compile(r"^( *)(`{3,})(.*)$")


def blocks(page):
    """(line, info, text) of each fenced block of a Markdown page, an indented one (in a
    list item) too, its indentation taken off."""
    found, lines, i = [], page.read_text().split("\n"), 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = len(match.group(1)), match.group(2), match.group(3).strip()
        start = i + 1
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            i += 1
        text = [line[min(indent, len(line) - len(line.lstrip(" "))):] for line in lines[start:i]]
        found.append((start, info, "\n".join(text) + "\n"))
        i += 1
    return found


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def placeholder(value):
    return isinstance(value, str) and value.startswith("<") and value.endswith(">")


def json_matches(expected, actual, where="$"):
    """Differences between a shown JSON value (with placeholders) and the real one."""
    if placeholder(expected):
        return []
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: shown an object, got {json.dumps(actual)[:200]}"]
        open_ended = expected.get("...") == "..."
        wrong = []
        for key, value in expected.items():
            if key == "...":
                continue
            if key not in actual:
                wrong.append(f"{where}.{key}: shown, but not in the answer")
            else:
                wrong += json_matches(value, actual[key], f"{where}.{key}")
        if not open_ended:
            wrong += [f"{where}.{k}: in the answer, not shown" for k in actual if k not in expected]
        return wrong
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{where}: shown an array, got {json.dumps(actual)[:200]}"]
        open_ended = bool(expected) and expected[-1] == "..."
        shown = expected[:-1] if open_ended else expected
        if len(actual) < len(shown) or (not open_ended and len(actual) != len(shown)):
            return [f"{where}: shown {len(shown)} elements, got {len(actual)}"]
        wrong = []
        for n, (e, a) in enumerate(zip(shown, actual)):
            wrong += json_matches(e, a, f"{where}[{n}]")
        return wrong
    if expected != actual or type(expected) is not type(actual):
        return [f"{where}: shown {json.dumps(expected)}, got {json.dumps(actual)}"]
    return []


# What may stand for something else in shown text: a fixed list, so that text such as `<h1>`
# or clap's `<EMBEDDED_CACHE_MIB>` is compared as written.
TEXT_PLACEHOLDERS = {
    "...", "time", "date", "today", "yesterday", "id", "sha", "hash", "token", "secret",
    "version", "n", "count", "age", "why", "from", "to", "created_at", "a new UUIDv7",
}


def line_pattern(line):
    parts = re.split(r"(<[^<>\s][^<>]*>)", line)
    return re.compile(
        "".join(".+?" if p[1:-1] in TEXT_PLACEHOLDERS and placeholder(p) else re.escape(p) for p in parts)
        + r"\Z"
    )


def text_matches(expected, actual):
    """Whether shown text (with placeholders and `...` lines) matches the real text."""
    shown = expected.rstrip("\n").split("\n")
    real = actual.rstrip("\n").split("\n") if actual.strip() else []

    def match(i, j):
        if i == len(shown):
            return j == len(real)
        if shown[i].strip() == "...":
            return any(match(i + 1, k) for k in range(j, len(real) + 1))
        return j < len(real) and line_pattern(shown[i].rstrip()).match(real[j].rstrip()) and match(i + 1, j + 1)

    return [] if match(0, 0) else ["the output differs from what the page shows"]


def check_not_run(text, subcommands):
    """A block shown but not run: valid bash, clean for shellcheck, real enc subcommands."""
    wrong = []
    syntax = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    if syntax.returncode:
        wrong.append(f"bash -n: {syntax.stderr.strip()}")
    lint = subprocess.run(["shellcheck", "--shell=bash", "--severity=warning", "-"],
                          input=text, text=True, capture_output=True)
    if lint.returncode:
        wrong.append(f"shellcheck:\n{lint.stdout.strip()}")
    for name in re.findall(r"(?:^|[\s/;|&(])enc\s+([a-z][a-z-]*)", text):
        if name not in subcommands:
            wrong.append(f"`enc {name}`: no such subcommand (enc --help lists {sorted(subcommands)})")
    return wrong


def broken_links(page):
    """Relative links of a page (outside code blocks) to files that do not exist."""
    text = page.read_text()
    for _, _, code in blocks(page):
        text = text.replace(code, "")
    wrong = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        path = target.split("#", 1)[0]
        if path and not re.match(r"[a-z]+:", path) and not (page.parent / path).exists():
            wrong.append(f"{page.name}: a link to {target}, which does not exist")
    return wrong


def run_page(page, enc, subcommands):
    """Runs one page; returns its failures."""
    found = blocks(page)
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="enc-docs-"))
    home = work / "home"
    home.mkdir()
    failures, steps, outputs = [], [], {}
    previous = None
    for line, info, text in found:
        words = info.split()
        if words[:1] == ["sh"] and words[1:] == ["not-run"]:
            failures += [f"{page.name}:{line}: {w}" for w in check_not_run(text, subcommands)]
            previous = None
        elif words[:1] == ["sh"] and words[1:] in ([], ["serve"]):
            n = len(steps)
            steps.append((line, words[1:] == ["serve"], text.replace("8080", str(port))))
            previous = n
        elif len(words) == 2 and words[1] == "output":
            if previous is None:
                failures.append(f"{page.name}:{line}: an output block must follow a run block")
            else:
                outputs[previous] = (line, words[0], text.replace("8080", str(port)))
            previous = None
        elif words[:1] == ["sh"] or words[:1] in (["bash"], ["shell"], ["console"], ["zsh"]):
            # A command block this test would not run: refused, so none is skipped silently.
            failures.append(f"{page.name}:{line}: unknown block kind `{info}` (sh, sh serve or sh not-run)")
        else:
            previous = None
    if not steps:
        shutil.rmtree(work)
        return failures
    script = ["set -uo pipefail", f'cd "{ROOT}"']
    for n, (line, serve, text) in enumerate(steps):
        (work / f"block.{n}.sh").write_text(text)
        script.append(f'echo {n} > "{work}/current"')
        if serve:
            script.append(f'source "{work}/block.{n}.sh" > "{work}/out.{n}" 2>&1 &')
            script.append(
                f'for _ in $(seq 300); do curl -fs "http://127.0.0.1:{port}/healthz" >/dev/null && break; sleep 0.1; done'
            )
            script.append(f'curl -fs "http://127.0.0.1:{port}/healthz" >/dev/null || {{ echo "enc did not start" > "{work}/err.{n}"; exit 1; }}')
        else:
            script.append("set -e")
            script.append(f'source "{work}/block.{n}.sh" > "{work}/out.{n}" 2> "{work}/err.{n}"')
            script.append("set +e")
    script.append(f'echo done > "{work}/current"')
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "ENC_LISTEN": f"127.0.0.1:{port}",
        "CARGO_HOME": os.environ.get("CARGO_HOME", str(Path.home() / ".cargo")),
        "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", str(Path.home() / ".rustup")),
    }
    # A session of its own, so that whatever the page started (enc) is stopped with it.
    shell = subprocess.Popen(["bash", "-c", "\n".join(script)], env=env, cwd=ROOT, start_new_session=True)
    late = False
    try:
        shell.wait(timeout=PAGE_SECONDS)
    except subprocess.TimeoutExpired:
        late = True
    finally:
        try:
            os.killpg(shell.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    reached = (work / "current").read_text().strip() if (work / "current").exists() else "0"
    if reached != "done":
        n = int(reached)
        line, _, text = steps[n]
        err = (work / f"err.{n}").read_text() if (work / f"err.{n}").exists() else ""
        out = (work / f"out.{n}").read_text() if (work / f"out.{n}").exists() else ""
        what = f"did not finish within {PAGE_SECONDS} s (the page's limit)" if late else "failed"
        failures.append(f"{page.name}:{line}: the block {what}:\n{text}--- stdout:\n{out[-2000:]}--- stderr:\n{err[-2000:]}")
    last = len(steps) if reached == "done" else int(reached)
    for n, (line, kind, shown) in sorted(outputs.items()):
        if n >= last:
            continue
        actual = (work / f"out.{n}").read_text()
        if kind == "json":
            try:
                wrong = json_matches(json.loads(shown), json.loads(actual))
            except json.JSONDecodeError as e:
                wrong = [f"not JSON: {e}"]
        else:
            wrong = text_matches(shown, actual)
        if wrong:
            failures.append(
                f"{page.name}:{line}: the output of the block at line {steps[n][0]} is not what the page shows:\n  "
                + "\n  ".join(wrong) + f"\n--- shown:\n{shown}--- printed:\n{actual}"
            )
    shutil.rmtree(work, ignore_errors=True)
    return failures


def main():
    # Stopped from outside (a timeout, a cancelled CI job): end through `finally`, which stops
    # what the page started (its own session, out of reach of the signal).
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, lambda *_: sys.exit(1))
    enc = ROOT / "target" / "debug" / "enc"
    if not enc.exists():
        sys.exit(f"{enc} is missing: cargo build first")
    help_text = subprocess.run([str(enc), "--help"], capture_output=True, text=True).stdout
    commands = help_text.split("Commands:", 1)[1].split("Options:", 1)[0]
    subcommands = set(re.findall(r"^\s{2}([a-z][a-z-]*)\s", commands, re.M))
    pages = [Path(p).resolve() for p in sys.argv[1:]] or [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    failed = 0
    for page in pages:
        failures = broken_links(page) + run_page(page, enc, subcommands)
        kinds = [info.split() for _, info, _ in blocks(page)]
        runs = sum(1 for k in kinds if k[:1] == ["sh"] and k[1:] in ([], ["serve"]))
        shown = sum(1 for k in kinds if k[:1] == ["sh"] and k[1:] == ["not-run"])
        compared = sum(1 for k in kinds if len(k) == 2 and k[1] == "output")
        print(f"{os.path.relpath(page, ROOT)}: {runs} blocks run, {compared} outputs compared, "
              f"{shown} shown but not run (checked), {len(failures)} failures")
        for failure in failures:
            print(f"  {failure}")
        failed += len(failures)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
