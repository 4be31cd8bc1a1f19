#!/usr/bin/env python3
"""The full DINO step, ours against PyTorch, back to back on the same machine: one table.

Sides, each a fresh process per round: `dino bench train --json` (ours), PyTorch eager in the
project's modules with the bookkeeping as main_dino.py writes it (`official`) and without host
syncs (`foreach`, fused AdamW), with `--official PATH` the official `main_dino.py` step itself
from a facebookresearch/dino checkout (`main_dino`, never vendored), and with `--compile` the
foreach side under `torch.compile`. Every side reads the same resolved config (`dino config
show`), so model, crops, batch, optimizer, precision and device are equal; the PyTorch sides get
the libtorch thread count and the precision `dino env` resolves for ours, ours' allocator
settings (`--alloc keep`) and libgomp waiting policy (`OMP_WAIT_POLICY=PASSIVE` unless the
caller set one); every side prints its settings.

`--rounds` rounds (at least 5 for a figure), the order of the sides alternating: forward in even
rounds, reversed in odd ones, so neither side always runs first. For each side: the median
images/s over the rounds and, against ours, the median of the per-round ratios ours / that side
with their min-max spread. `phase_ms` (data wait, forward+backward, bookkeeping) is each side's
median over its rounds of its per-step medians.

    cargo build --release --locked -p dino-cli
    .venv/bin/python benches/train_step_compare.py --dino target/release/dino \\
        --config configs/cifar10_cpu.toml --set runtime.precision=\\"fp32\\" \\
        --official /path/to/facebookresearch/dino --rounds 5

Prints every measurement as a JSON line (also to `--out FILE` when given), then a Markdown table
(docs/BENCHMARKS.md's format) with the machine, load and process settings above it.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def gpu_name():
    try:
        import torch  # noqa: PLC0415
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return None


def side_env():
    """The environment of every side: libgomp's waiting policy as `dino` sets its own
    (OMP_WAIT_POLICY=PASSIVE unless the caller chose one), so both wait alike."""
    env = dict(os.environ)
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def run_json(cmd):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env=side_env()).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dino", default="target/release/dino", help="the dino binary")
    ap.add_argument("--config", help="preset TOML (default: the official defaults)")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE override (repeatable)")
    ap.add_argument("--data", help="image folder for the loader input")
    ap.add_argument("--inputs", default="synthetic", help="comma list: synthetic,loader")
    ap.add_argument("--workers", type=int, default=os.cpu_count(),
                    help="PyTorch DataLoader workers (loader input)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--official", metavar="PATH",
                    help="a facebookresearch/dino checkout: also time its main_dino.py step")
    ap.add_argument("--sides", default="official,foreach",
                    help="PyTorch eager styles beside ours (comma list of official, foreach)")
    ap.add_argument("--compile", action="store_true", help="add torch.compile (slow to start)")
    ap.add_argument("--alloc", choices=["keep", "default"], default="keep",
                    help="the PyTorch sides' glibc allocator settings (keep = ours)")
    ap.add_argument("--out", help="also append every JSON line to this file")
    args = ap.parse_args()
    inputs = [i for i in args.inputs.split(",") if i]
    if "loader" in inputs and not args.data:
        sys.exit("--inputs loader needs --data DIR")

    cfg_args = (["--config", args.config] if args.config else []) + sum(
        (["--set", s] for s in args.set), [])
    env = json.loads(subprocess.run([args.dino, "env", "--json", *cfg_args], check=True,
                                    capture_output=True, text=True).stdout)
    threads, precision = env["threads"]["torch"], env["precision"]
    out = open(args.out, "a") if args.out else None
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = os.path.join(tmp, "config.toml")
        show = subprocess.run([args.dino, "config", "show", *cfg_args], check=True,
                              capture_output=True, text=True).stdout
        with open(cfg_path, "w") as f:
            f.write(show)
        step = ["--warmup", str(args.warmup), "--steps", str(args.steps)]
        torch_step = [sys.executable, os.path.join(HERE, "dino_step_torch.py"), "--config",
                      cfg_path, "--threads", str(threads), "--precision", precision,
                      "--alloc", args.alloc, *step]

        def torch_side(style, *extra):
            return lambda i: [*torch_step, "--style", style, *extra, "--input", i,
                              *loader_args(args, i)]

        sides = [("dino", lambda i: [args.dino, "bench", "train", "--json", *cfg_args,
                                     "--input", i,
                                     *(["--data", args.data] if i == "loader" else []), *step])]
        for style in [s for s in args.sides.split(",") if s]:
            sides.append((f"pytorch-eager ({style})", torch_side(style)))
        if args.official:
            sides.append(("pytorch-eager (main_dino)",
                          torch_side("main_dino", "--official", args.official)))
        if args.compile:
            sides.append(("pytorch-compile (foreach)", torch_side("foreach", "--compile")))
        runs = {}  # (input, side) -> one report per round
        for r in range(args.rounds):
            order = sides if r % 2 == 0 else sides[::-1]
            for i in inputs:
                for name, cmd in order:
                    for rep in run_json(cmd(i)):
                        rep["round"] = r
                        line = json.dumps(rep)
                        print(line, flush=True)
                        if out:
                            print(line, file=out, flush=True)
                        runs.setdefault((i, name), []).append(rep)
    load_after = load_average()

    first = runs[(inputs[0], "dino")][0]
    where = gpu_name() if first["device"].lower().startswith("cuda") else None
    torch_rep = next((v[0] for k, v in runs.items() if k[1] != "dino"), {})
    isa = {k: v for k, v in os.environ.items()
           if k in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")}
    print()
    print(f"machine: {where or cpu_name()} ({os.cpu_count()} logical CPUs); load average "
          f"{load_before} before, {load_after} after; ISA caps: {isa or 'none'}")
    print(f"ViT {first['vit']} patch {first['patch_size']}, batch {first['batch_size']}, "
          f"crops {first['global_crops']} + {first['local_crops']}, head {first['out_dim']}, "
          f"{first['precision']}, device {first['device']}; {args.rounds} rounds of "
          f"{args.warmup} warm-up + {args.steps} timed steps, order alternating")
    print(f"libtorch threads: ours {first['torch_threads']}, PyTorch "
          f"{torch_rep.get('torch_threads', '-')}; allocator: ours {first.get('allocator')}, "
          f"PyTorch {torch_rep.get('allocator', '-')}; OpenMP wait: ours "
          f"{first.get('omp_wait')}, PyTorch {torch_rep.get('omp_wait', '-')}")
    print()
    print("| input | implementation | images/s (median) | step ms (median) | data wait ms | "
          "fwd+bwd ms | bookkeeping ms | ours / this: median of rounds | spread |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (i, name), reps in runs.items():
        ours = {rep["round"]: rep["images_per_s"] for rep in runs.get((i, "dino"), [])}
        ratios = [ours[rep["round"]] / rep["images_per_s"] for rep in reps if rep["round"] in ours]
        med = lambda f: statistics.median(f(rep) for rep in reps)  # noqa: E731
        ph = lambda k: med(lambda rep: rep.get("phase_ms", {}).get(k, float("nan")))  # noqa: E731
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "-"
        print(f"| {i} | {name} | {med(lambda rep: rep['images_per_s']):.1f} | "
              f"{med(lambda rep: rep['step_ms']['median']):.1f} | {ph('data_wait'):.1f} | "
              f"{ph('forward_backward'):.1f} | {ph('bookkeeping'):.1f} | "
              f"{statistics.median(ratios):.2f}x | {spread} |")


def loader_args(args, i):
    return ["--data", args.data, "--workers", str(args.workers)] if i == "loader" else []


if __name__ == "__main__":
    main()
