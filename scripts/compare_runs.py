#!/usr/bin/env python3
"""Checks that two `dino train` run folders hold the same training, bit for bit.

Usage: python3 scripts/compare_runs.py BEFORE_RUN AFTER_RUN [--rtol R]

Compared:
  - metrics.jsonl: the sequence of (kind, epoch, step, loss) over every step and epoch record,
    with each loss equal as a float (JSON keeps the shortest repr that round-trips an f64);
  - every checkpoint*.safetensors in either folder: the same tensor names, and for each tensor
    the same dtype, shape and raw bytes. `checkpoint.save_id` (a fresh random id per save) is
    left out.
Timing fields (images_per_s, data_wait_fraction, elapsed_s) differ from run to run and are not
compared. Exits 0 when everything matches, 1 with the differences otherwise. Standard library
only: the safetensors header is read directly (8-byte little-endian length, JSON, raw data).

With `--rtol R` (a change that keeps the math but not the float rounding, e.g. the CLS-only
last block of `model.cls_only_last_block`), floats need only agree to R: each loss within
R · max(1, |before|), each float tensor within R · max(1, max |before|) element-wise; the largest
differences are printed either way, so the report says how far the runs drifted.
"""
import array
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


def floats(dtype: str, raw: bytes):
    """The values of a float tensor's raw bytes (F32, F64, BF16, F16), else None."""
    if dtype in ("F32", "F64"):
        return array.array("f" if dtype == "F32" else "d", raw).tolist()
    if dtype == "BF16":
        halves = array.array("H", raw)
        return array.array("f", array.array("I", (h << 16 for h in halves)).tobytes()).tolist()
    if dtype == "F16":
        return [struct.unpack("<e", raw[i : i + 2])[0] for i in range(0, len(raw), 2)]
    return None


def close(x, y, rtol: float) -> tuple[bool, float]:
    """Whether tensors (dtype, shape, bytes) x and y agree to rtol, and their scaled difference."""
    if x == y:
        return True, 0.0
    if x[:2] != y[:2]:
        return False, float("inf")
    fx, fy = floats(x[0], x[2]), floats(y[0], y[2])
    if fx is None or fy is None:
        return False, float("inf")
    scale = max([1.0] + [abs(v) for v in fx])
    d = max(abs(u - v) for u, v in zip(fx, fy)) / scale
    return d <= rtol, d


def main(before: Path, after: Path, rtol: float | None = None) -> int:
    problems, inexact = [], False
    a, b = losses(before), losses(after)
    if len(a) != len(b):
        problems.append(f"metrics.jsonl: {len(a)} records before, {len(b)} after")
    worst_loss = 0.0
    for x, y in zip(a, b):
        if x[:3] != y[:3]:
            problems.append(f"metrics.jsonl: {x} before, {y} after")
        elif x[3] != y[3]:
            inexact = True
            d = abs(x[3] - y[3]) / max(1.0, abs(x[3]))
            worst_loss = max(worst_loss, d)
            if rtol is None or d > rtol:
                problems.append(f"metrics.jsonl: {x} before, {y} after")
    n_steps = sum(1 for r in a if r[0] == "step")
    print(f"metrics.jsonl: {len(a)} records ({n_steps} step, {len(a) - n_steps} epoch) compared")
    if rtol is not None:
        print(f"metrics.jsonl: largest scaled loss difference {worst_loss:.3e} (rtol {rtol:g})")

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
        inexact = inexact or bool(diff)
        total = sum(len(v[2]) for v in ta.values())
        print(f"{name}: {len(ta)} tensors ({total} bytes) compared, {len(diff)} differ")
        if rtol is not None:
            scaled = {k: close(ta[k], tb[k], rtol) for k in diff}
            diff = [k for k in diff if not scaled[k][0]]
            worst = sorted(scaled.items(), key=lambda kv: -kv[1][1])[:3]
            for k, (_, d) in worst:
                print(f"{name}: {k} scaled difference {d:.3e}")
        for k in diff[:10]:
            problems.append(f"{name}: {k} differs")

    for p in problems:
        print("DIFFERENT:", p)
    if problems:
        print(f"{len(problems)} difference(s)")
    else:
        print(f"within rtol {rtol:g}" if inexact else "identical")
    return 0 if not problems else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    tol = None
    if len(args) == 4 and args[2] == "--rtol":
        tol = float(args[3])
        args = args[:2]
    if len(args) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(args[0]), Path(args[1]), tol))
