#!/usr/bin/env python3
"""Images per second delivered to Python: the `dino_multicrop` wheel's MultiCropLoader against
the official-style torchvision + Pillow DataLoader, same folder, batch, crops and parallelism.

- wheel: `MultiCropLoader(data, batch, threads=W)` iterated epoch after epoch (`set_epoch`);
  what arrives is the list of 2 + 8 crop arrays `[B, 3, H, W]`, `uint8` (normalization left to
  the device) or, with `normalize=True`, `float32` normalized in Rust;
- torchvision: benches/torchvision_multicrop.py (ImageFolder + Pillow + the DINO multi-crop in
  a DataLoader with W worker processes, persistent workers), whose crops arrive as normalized
  `float32` tensors, as in the official code.

Each measurement is a fresh process: one warm-up batch (thread / worker start, page cache),
then `--batches` timed batches, consumer doing nothing. The sides run back to back, round after
round, in the order wheel-u8, wheel-f32, torchvision (reversed every other round); the report
gives every round, the median images/s of each side, and the median over rounds of the
per-round ratio wheel / torchvision. One JSON document on stdout.

usage: loader_vs_torchvision.py --data DIR [--batch 64] [--batches 20] [--workers 2]
                                [--rounds 3]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
TORCHVISION = os.path.join(REPO, "benches", "torchvision_multicrop.py")


def wheel_side(data, batch, batches, workers, normalize):
    """Runs in its own process: the wheel's loader, timed like the torchvision script."""
    import dino_multicrop  # noqa: PLC0415

    loader = dino_multicrop.MultiCropLoader(data, batch, threads=workers, normalize=normalize)

    def stream():
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            yield from loader
            epoch += 1

    it = stream()
    crops, _ = next(it)  # warm-up
    t0 = time.perf_counter()
    for _ in range(batches):
        crops, _ = next(it)
    wall = time.perf_counter() - t0
    return {
        "pipeline": f"dino_multicrop MultiCropLoader ({crops[0].dtype})",
        "dataset_len": loader.dataset_size, "batch_size": batch, "batches": batches,
        "workers": workers, "wall_s": round(wall, 3),
        "images_per_s": round(batches * batch / wall, 2), "skipped": loader.skipped,
    }


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--side", choices=["wheel-u8", "wheel-f32"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(wheel_side(args.data, args.batch, args.batches, args.workers,
                                    args.side == "wheel-f32")))
        return

    me = [sys.executable, os.path.abspath(__file__), "--data", args.data, "--batch",
          str(args.batch), "--batches", str(args.batches), "--workers", str(args.workers)]
    sides = {
        "wheel-u8": me + ["--side", "wheel-u8"],
        "wheel-f32": me + ["--side", "wheel-f32"],
        "torchvision": [sys.executable, TORCHVISION, "--data", args.data, "--batch",
                        str(args.batch), "--batches", str(args.batches), "--workers",
                        str(args.workers)],
    }
    rounds = []
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        got = {"loadavg_before": os.getloadavg()[0]}
        for name in order:
            got[name] = run(sides[name])["images_per_s"]
        got["loadavg_after"] = os.getloadavg()[0]
        rounds.append(got)
        print(json.dumps(got), file=sys.stderr)
    med = {n: statistics.median(r[n] for r in rounds) for n in sides}
    ratio = {n: round(statistics.median(r[n] / r["torchvision"] for r in rounds), 2)
             for n in ("wheel-u8", "wheel-f32")}
    print(json.dumps({
        "data": args.data, "batch_size": args.batch, "batches": args.batches,
        "workers": args.workers, "crops": "2x224 + 8x96 (official)", "rounds": rounds,
        "median_images_per_s": med, "median_ratio_vs_torchvision": ratio,
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }, indent=1))


if __name__ == "__main__":
    main()
