#!/usr/bin/env python3
"""Runs the workspace's Rust tests as `cargo test --workspace --locked` does, in two lanes.

Why (issue #28 item 5): the CLI's integration tests (one binary, each test spawning `dino` on a
single libtorch thread, a third of the suite's time) leave one of a 2-core machine's cores idle;
every other binary runs beside them in a second lane. Inside each binary tests still run one at a
time (RUST_TEST_THREADS=1 from .cargo/config.toml: libtorch's generator is process-global), so
nothing a test can observe changes; only two binaries, two separate processes, overlap.

Steps: `cargo test --workspace --locked --no-run` builds every test binary once (the same build
`cargo test` does; cargo's JSON messages name each executable); lane 1 runs the `dino-cli`
integration binary, lane 2 every other test binary then the doc tests
(`cargo test --workspace --locked --doc`, which reuses the build). Each binary runs from its
package's folder, as cargo runs it. Lane 1's output is printed when it ends; lane 2's as it
goes. Exits non-zero when any binary fails, after both lanes are done, with a one-line total.

Standard-library Python only (CI machines run it before the virtualenv exists).
"""
import json
import os
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LANE_1 = ("crates/cli", "cli")  # (package folder, integration-test target)
RESULT = re.compile(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored")


def test_binaries():
    """[(package folder, target, kind, executable)] of `cargo test --no-run`, the folder
    relative to the repository."""
    cmd = ["cargo", "test", "--workspace", "--locked", "--no-run",
           "--message-format=json-render-diagnostics"]
    out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, check=True, text=True).stdout
    bins = []
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        msg = json.loads(line)
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg["profile"]["test"]:
            continue  # a `[[bin]]` built for the tests to spawn, not a test binary
        target = msg["target"]
        folder = os.path.relpath(os.path.dirname(msg["manifest_path"]), ROOT)
        bins.append((folder, target["name"], target["kind"][0], msg["executable"]))
    return bins


def run(cmd, cwd, sink):
    """Runs `cmd`, writing its output to `sink`; returns (exit code, output)."""
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sink.write(p.stdout)
    sink.flush()
    return p.returncode, p.stdout


class Buffer:
    """A lane's output held until the lane ends."""

    def __init__(self):
        self.parts = []

    def write(self, s):
        self.parts.append(s)

    def flush(self):
        pass


def lane(jobs, sink, results):
    for name, cmd, cwd in jobs:
        t0 = time.monotonic()
        sink.write(f"\n     Running {name}\n")
        code, out = run(cmd, cwd, sink)
        counts = [tuple(map(int, m.groups())) for m in RESULT.finditer(out)]
        results.append((name, code, counts, time.monotonic() - t0))


def main():
    if len(sys.argv) > 1:
        # Filters or cargo options: the plain command, one lane.
        sys.exit(subprocess.run(["cargo", "test", "--workspace", "--locked", *sys.argv[1:]],
                                cwd=ROOT).returncode)
    t_build = time.monotonic()
    bins = test_binaries()
    print(f"run_tests.py: {len(bins)} test binaries built in {time.monotonic() - t_build:.0f} s",
          flush=True)
    first = [b for b in bins if (b[0], b[1]) == LANE_1 and b[2] == "test"]
    rest = [b for b in bins if b not in first]
    if len(first) != 1:
        sys.exit(f"run_tests.py: expected one {LANE_1} test binary, found {len(first)}")
    job = lambda b: (f"{b[0]} {b[2]} {b[1]} ({os.path.relpath(b[3], ROOT)})", [b[3]],
                     os.path.join(ROOT, b[0]))
    lane1 = [job(b) for b in first]
    lane2 = [job(b) for b in rest]
    lane2.append(("doc tests", ["cargo", "test", "--workspace", "--locked", "--doc"], ROOT))
    results1, results2 = [], []
    buf = Buffer()
    t0 = time.monotonic()
    t = threading.Thread(target=lane, args=(lane1, buf, results1))
    t.start()
    lane(lane2, sys.stdout, results2)
    t.join()
    sys.stdout.write("".join(buf.parts))
    passed = failed = ignored = 0
    bad = []
    for name, code, counts, secs in results1 + results2:
        for p, f, i in counts:
            passed, failed, ignored = passed + p, failed + f, ignored + i
        if code != 0:
            bad.append(name)
    print(f"\nrun_tests.py: {passed} passed, {failed} failed, {ignored} ignored in "
          f"{len(results1) + len(results2)} runs, {time.monotonic() - t0:.0f} s "
          f"(lane 1 {sum(r[3] for r in results1):.0f} s, lane 2 {sum(r[3] for r in results2):.0f} s)")
    if bad:
        print("failed: " + ", ".join(bad))
        sys.exit(1)


if __name__ == "__main__":
    main()
