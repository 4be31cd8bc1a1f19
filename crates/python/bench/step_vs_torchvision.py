#!/usr/bin/env python3
"""End to end: images per second of whole DINO training steps of
examples/python/dino_step_with_rust_loader.py fed by the wheel (`--loader rust`) and by the
official-style torchvision + Pillow DataLoader (`--loader torchvision`), same config, folder,
device and number of loader threads / worker processes.

Each measurement is a fresh process of the example (its warm-up steps, then `--steps` timed
steps). The two loaders run back to back, round after round, alternating which goes first; the
report gives every round, each side's median images/s and data-wait fraction, and the median
over rounds of the per-round ratio rust / torchvision. One JSON document on stdout.

usage: step_vs_torchvision.py --config PRESET.toml --data DIR [--set k=v]... [--workers 2]
                              [--device cpu] [--warmup 2] [--steps 6] [--rounds 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.normpath(
    os.path.join(HERE, "..", "..", "..", "examples", "python", "dino_step_with_rust_loader.py"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    base = [sys.executable, EXAMPLE, "--config", args.config, "--data", args.data,
            "--workers", str(args.workers), "--device", args.device, "--warmup",
            str(args.warmup), "--steps", str(args.steps)]
    for s in args.set:
        base += ["--set", s]
    rounds, last = [], {}
    for r in range(args.rounds):
        got = {"loadavg_before": os.getloadavg()[0]}
        for loader in (["rust", "torchvision"] if r % 2 == 0 else ["torchvision", "rust"]):
            out = subprocess.run(base + ["--loader", loader], capture_output=True, text=True,
                                 check=True).stdout
            last[loader] = json.loads(out.strip().splitlines()[-1])
            got[loader] = round(last[loader]["images_per_s"], 2)
            got[f"{loader}_data_wait"] = round(last[loader]["data_wait_fraction"], 3)
        got["loadavg_after"] = os.getloadavg()[0]
        rounds.append(got)
        print(json.dumps(got), file=sys.stderr)
    print(json.dumps({
        "config": args.config, "set": args.set, "data": args.data, "workers": args.workers,
        "device": last["rust"]["device"], "precision": last["rust"]["precision"],
        "vit": last["rust"]["vit"], "patch_size": last["rust"]["patch_size"],
        "batch_size": last["rust"]["batch_size"], "global_crops": last["rust"]["global_crops"],
        "local_crops": last["rust"]["local_crops"], "steps": args.steps, "rounds": rounds,
        "median_images_per_s": {k: statistics.median(r[k] for r in rounds)
                                for k in ("rust", "torchvision")},
        "median_data_wait": {k: statistics.median(r[f"{k}_data_wait"] for r in rounds)
                             for k in ("rust", "torchvision")},
        "median_ratio_rust_vs_torchvision": round(
            statistics.median(r["rust"] / r["torchvision"] for r in rounds), 2),
        "torch_threads": last["rust"]["torch_threads"], "torch": last["rust"]["torch"],
    }, indent=1))


if __name__ == "__main__":
    main()
