#!/usr/bin/env python3
"""The full DINO step, ours against PyTorch, back to back on the same machine: one table.

Runs, for each input (`synthetic` = model-bound, `loader` = end to end) and each of `--rounds`
rounds, in this order: `dino bench train --json`, PyTorch eager as main_dino.py writes it
(`official`), PyTorch eager without host syncs (`foreach`), and — unless `--no-compile` —
PyTorch `torch.compile` (`foreach`). Every side reads the same resolved config
(`dino config show`), so model, crops, batch, optimizer, precision and device are equal.
Interleaving the sides round by round spreads background load over all of them. The table
keeps each side's best round (images/s) and gives the ratio ours / PyTorch.

    cargo build --release -p dino-cli
    .venv/bin/python benches/train_step_compare.py --dino target/release/dino \
        --config configs/vit_small16_imagenet.toml --set runtime.precision=\"bf16\" \
        --data /path/to/images --inputs synthetic,loader --rounds 2

Prints every measurement as a JSON line, then a Markdown table (docs/BENCHMARKS.md's format).
"""
import argparse
import json
import os
import platform
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


def gpu_name():
    try:
        import torch  # noqa: PLC0415
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return None


def run_json(cmd):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


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
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to start)")
    args = ap.parse_args()
    inputs = [i for i in args.inputs.split(",") if i]
    if "loader" in inputs and not args.data:
        sys.exit("--inputs loader needs --data DIR")

    cfg_args = (["--config", args.config] if args.config else []) + sum(
        (["--set", s] for s in args.set), [])
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = os.path.join(tmp, "config.toml")
        show = subprocess.run([args.dino, "config", "show", *cfg_args], check=True,
                              capture_output=True, text=True).stdout
        with open(cfg_path, "w") as f:
            f.write(show)
        step = ["--warmup", str(args.warmup), "--steps", str(args.steps)]
        torch_step = [sys.executable, os.path.join(HERE, "dino_step_torch.py"), "--config", cfg_path,
                      *step]
        sides = [("dino", lambda i: [args.dino, "bench", "train", "--json", *cfg_args, "--input", i,
                                     *(["--data", args.data] if i == "loader" else []), *step]),
                 ("pytorch-eager (official)", lambda i: [*torch_step, "--style", "official",
                                                          "--input", i, *loader_args(args, i)]),
                 ("pytorch-eager (foreach)", lambda i: [*torch_step, "--style", "foreach",
                                                         "--input", i, *loader_args(args, i)])]
        if not args.no_compile:
            sides.append(("pytorch-compile (foreach)",
                          lambda i: [*torch_step, "--style", "foreach", "--compile", "--input", i,
                                     *loader_args(args, i)]))
        best = {}
        for _ in range(args.rounds):
            for i in inputs:
                for name, cmd in sides:
                    for r in run_json(cmd(i)):
                        print(json.dumps(r), flush=True)
                        key = (i, name)
                        if key not in best or r["images_per_s"] > best[key]["images_per_s"]:
                            best[key] = r

    first = next(iter(best.values()))
    where = gpu_name() if first["device"].lower().startswith("cuda") else None
    print()
    print(f"machine: {where or cpu_name()} ({os.cpu_count()} logical CPUs); "
          f"ViT {first['vit']} patch {first['patch_size']}, batch {first['batch_size']}, "
          f"crops {first['global_crops']} + {first['local_crops']}, {first['precision']}, "
          f"device {first['device']}; best of {args.rounds} round(s) of {args.steps} steps")
    print()
    print("| input | implementation | images/s | step median (ms) | data wait | ours / this |")
    print("|---|---|---|---|---|---|")
    for (i, name), r in best.items():
        ours = best.get((i, "dino"))
        ratio = ours["images_per_s"] / r["images_per_s"] if ours else float("nan")
        print(f"| {i} | {name} | {r['images_per_s']:.1f} | {r['step_ms']['median']:.1f} | "
              f"{100 * r['data_wait_fraction']:.1f} % | {ratio:.2f}x |")


def loader_args(args, i):
    return ["--data", args.data, "--workers", str(args.workers)] if i == "loader" else []


if __name__ == "__main__":
    main()
