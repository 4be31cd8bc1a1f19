#!/usr/bin/env python3
"""Interleaved A/B timing of `dino bench train` between binaries and/or `--set` switches.

Each side is NAME=BINARY[,KEY=VALUE...]: a `dino` binary and the `--set` overrides only it gets.
Every round runs each side once (`dino bench train --json`, one process per run), the order
rotating from round to round so that load from other jobs hits every side alike. Prints each
run's JSON line as it comes, then a table: the median images/s of each side over the rounds and,
against the first side, the median of the per-round ratios (this side's images/s over the first
side's, > 1: faster) with their spread; and the same for each run's fastest step, the estimator
least disturbed by other jobs on a shared machine. Environment variables given with --env apply to every
run (e.g. the ISA cap of docs/BENCHMARKS.md).

usage: dino_ab.py --side main=/tmp/dino-main --side new=target/release/dino \\
           --side off=target/release/dino,model.cls_only_last_block=false \\
           --rounds 5 -- --config configs/cifar10_cpu.toml --set 'runtime.precision="fp32"'
Everything after `--` goes to every `dino bench train` call.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run(binary, sets, common, env):
    cmd = [binary, "bench", "train", "--json", *common]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def main():
    argv = sys.argv[1:]
    common = argv[argv.index("--") + 1:] if "--" in argv else []
    mine = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--side", action="append", required=True, help="NAME=BINARY[,KEY=VALUE...]")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for every run")
    a = ap.parse_args(mine)
    sides = []
    for s in a.side:
        name, rest = s.split("=", 1)
        binary, *sets = rest.split(",")
        sides.append((name, binary, sets))
    env = dict(os.environ)
    for e in a.env:
        k, v = e.split("=", 1)
        env[k] = v
    speed = {name: [] for name, _, _ in sides}
    fastest = {name: [] for name, _, _ in sides}
    for r in range(a.rounds):
        k = r % len(sides)
        for name, binary, sets in sides[k:] + sides[:k]:
            rep = run(binary, sets, common, env)
            speed[name].append(rep["images_per_s"])
            fastest[name].append(rep["step_ms"]["min"])
            print(json.dumps({"round": r, "side": name, **rep}), flush=True)
    first = sides[0][0]
    # Two estimators: images/s over each run's timed steps, and each run's fastest step (the
    # least disturbed by other jobs on a shared machine).
    print(f"\n| side | median images/s | ratio to {first} (median of rounds) | spread "
          f"| median fastest step (ms) | fastest-step ratio to {first} | spread |")
    print("|---|---|---|---|---|---|---|")
    for name, _, _ in sides:
        ratios = [x / y for x, y in zip(speed[name], speed[first])]
        fast = [y / x for x, y in zip(fastest[name], fastest[first])]
        print(f"| {name} | {statistics.median(speed[name]):.1f} | "
              f"{statistics.median(ratios):.3f}x | {min(ratios):.3f}–{max(ratios):.3f} | "
              f"{statistics.median(fastest[name]):.0f} | {statistics.median(fast):.3f}x | "
              f"{min(fast):.3f}–{max(fast):.3f} |")


if __name__ == "__main__":
    main()
