#!/usr/bin/env python3
"""Checks that two `dino train` run folders hold the same training, bit for bit.

Usage: python3 scripts/compare_runs.py BEFORE_RUN AFTER_RUN

Compared:
  - metrics.jsonl: the sequence of (kind, epoch, step, loss) over every step and epoch record,
    with each loss equal as a float (JSON keeps the shortest repr that round-trips an f64);
  - every checkpoint*.safetensors in either folder: the same tensor names, and for each tensor
    the same dtype, shape and raw bytes. `checkpoint.save_id` (a fresh random id per save) is
    left out.
Timing fields (images_per_s, data_wait_fraction, elapsed_s) differ from run to run and are not
compared. Exits 0 when everything matches, 1 with the differences otherwise. Standard library
only: the safetensors header is read directly (8-byte little-endian length, JSON, raw data).
"""
import json
import struct
import sys
from pathlib import Path

SKIPPED_TENSORS = {"checkpoint.save_id"}


def losses(run: Path):
    out = []
    for n, line in enumerate((run / "metrics.jsonl").read_text().splitlines(), 1):
        if not line.strip():
            continue
        r = json.loads(line)
        step = r.get("global_step", r.get("step")) if r["kind"] == "step" else None
        out.append((r["kind"], r["epoch"], step, r["loss"]))
    return out


def tensors(path: Path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or name in SKIPPED_TENSORS:
            continue
        a, b = info["data_offsets"]
        out[name] = (info["dtype"], tuple(info["shape"]), body[a:b])
    return out


def main(before: Path, after: Path) -> int:
    problems = []
    a, b = losses(before), losses(after)
    if len(a) != len(b):
        problems.append(f"metrics.jsonl: {len(a)} records before, {len(b)} after")
    for x, y in zip(a, b):
        if x != y:
            problems.append(f"metrics.jsonl: {x} before, {y} after")
    n_steps = sum(1 for r in a if r[0] == "step")
    print(f"metrics.jsonl: {len(a)} records ({n_steps} step, {len(a) - n_steps} epoch) compared")

    names = sorted({p.name for d in (before, after) for p in d.glob("checkpoint*.safetensors")})
    if not names:
        problems.append("no checkpoint*.safetensors in either folder")
    for name in names:
        if not (before / name).exists() or not (after / name).exists():
            problems.append(f"{name}: only in one folder")
            continue
        ta, tb = tensors(before / name), tensors(after / name)
        if ta.keys() != tb.keys():
            problems.append(f"{name}: tensor names differ: {sorted(ta.keys() ^ tb.keys())[:5]}")
        diff = [k for k in sorted(ta.keys() & tb.keys()) if ta[k] != tb[k]]
        for k in diff[:10]:
            problems.append(f"{name}: {k} differs")
        total = sum(len(v[2]) for v in ta.values())
        print(f"{name}: {len(ta)} tensors ({total} bytes) compared, {len(diff)} differ")

    for p in problems:
        print("DIFFERENT:", p)
    print("identical" if not problems else f"{len(problems)} difference(s)")
    return 0 if not problems else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
