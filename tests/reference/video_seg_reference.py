"""Reference label propagation and DAVIS J / F for crates/eval (tests/video_seg_reference.rs).

Written from the description of the official DINO `eval_video_segmentation.py` and of the
DAVIS-2017 toolkit's `metrics.py` (davis2017-evaluation), not copied:

Propagation. Each frame's features are [h*w, D] (patch tokens, row by row). The first frame's
label map (original size) is shrunk to the h x w grid with Pillow NEAREST and one-hot encoded
[C, h, w]. For every later frame: the context is the first frame (given labels) plus the last
`n_last` frames (their predicted soft labels). Features are L2-normalised per patch; affinity
exp(cos / T) between each context patch (source) and each target patch; multiplied by a 0/1
window (|row diff| <= r and |col diff| <= r; r = 0: no window); for each target the sources
whose affinity is below the k-th largest over all context frames are zeroed, then each target's
column is normalised to sum 1. Soft labels of the target = context labels [C, n*h*w] @ aff.
The soft labels are bilinearly upsampled by the patch size (align_corners=False), each channel
with a positive max rescaled to [0, 1] by its min and max, arg-max over channels, and resized to
the original size with Pillow NEAREST.

J: |A & B| / |A | B|, 1 when the union is empty. F: boundary maps (a pixel differs from its east,
south or south-east neighbour; last row east only; last column south only; bottom-right pixel
never), tolerance ceil(0.008 * diagonal) pixels, each boundary dilated by a disk
(x^2 + y^2 <= r^2) (written here with numpy shifts: no OpenCV or scikit-image), precision =
share of predicted boundary pixels on the dilated true boundary, recall the converse, F =
2PR/(P+R); empty-boundary conventions (both empty: 1; one empty: P or R = 0 / 1).

Usage: python video_seg_reference.py OUT_DIR
Writes prop_<case>_feats.npy [T, h*w, D] f32, prop_<case>_first.npy [H, W] u8 (first frame labels,
original size), mask pairs jf_<i>_{gt,pred}.npy (bool as u8), their J and F in jf_values.npy [n, 2] f64
and results.json.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def nearest(labels, width, height):
    return np.array(Image.fromarray(labels).resize((width, height), Image.NEAREST))


def window(h, w, r):
    m = torch.zeros(h, w, h, w)
    for i in range(h):
        for j in range(w):
            m[i, j, max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1] = 1
    return m.reshape(h * w, h * w)


def propagate(feats, first, patch, h, w, n_last, r, k, T):
    """feats: [T, h*w, D] float32; first: [H, W] uint8. Returns per step (aff, soft, labels)."""
    H, W = first.shape
    small = nearest(first, w, h)
    C = int(first.max()) + 1
    onehot = F.one_hot(torch.from_numpy(small.astype(np.int64)), C).permute(2, 0, 1).float()
    ctx = [(torch.from_numpy(feats[0]), onehot)]
    first_ctx = ctx[0]
    queue = []
    mask = window(h, w, r) if r > 0 else None
    out = []
    for t in range(1, feats.shape[0]):
        tar = torch.from_numpy(feats[t])
        used = [first_ctx] + queue
        src = torch.stack([f for f, _ in used])  # n, hw, D
        n = src.shape[0]
        tn = F.normalize(tar, dim=1)
        sn = F.normalize(src, dim=2)
        aff = torch.exp(torch.einsum("td,nsd->nts", tn, sn) / T)  # n, target, source
        if mask is not None:
            aff = aff * mask.unsqueeze(0)
        aff = aff.permute(0, 2, 1).reshape(n * h * w, h * w)  # source x target
        kth = aff.topk(k, dim=0).values.min(dim=0).values
        aff = torch.where(aff < kth, torch.zeros_like(aff), aff)
        aff = aff / aff.sum(dim=0, keepdim=True)
        segs = torch.stack([s for _, s in used])  # n, C, h, w
        segs = segs.permute(1, 0, 2, 3).reshape(C, n * h * w)
        soft = (segs @ aff).reshape(C, h, w)
        if len(queue) == n_last:
            queue.pop(0)
        queue.append((tar, soft))
        up = F.interpolate(soft[None], size=(h * patch, w * patch), mode="bilinear",
                           align_corners=False)[0]
        for c in range(C):
            ch = up[c]
            if ch.max() > 0:
                ch = ch - ch.min()
                up[c] = ch / ch.max()
        lab = up.argmax(dim=0).numpy().astype(np.uint8)
        lab = nearest(lab, W, H)
        out.append((aff.numpy(), soft.numpy(), lab))
    return small, out


def seg2bmap(seg):
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def dilate(b, r):
    H, W = b.shape
    out = np.zeros_like(b)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dx * dx + dy * dy > r * r:
                continue
            # out[y + dy, x + dx] |= b[y, x]
            ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
            xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
            out[yd, xd] |= b[ys, xs]
    return out


def jaccard(gt, pred):
    inter = np.sum(gt & pred)
    union = np.sum(gt | pred)
    return 1.0 if union == 0 else float(inter) / float(union)


def f_measure(gt, pred, bound_th=0.008):
    r = int(math.ceil(bound_th * math.hypot(*gt.shape)))
    fb, gb = seg2bmap(pred), seg2bmap(gt)
    fd, gd = dilate(fb, r), dilate(gb, r)
    n_fg, n_gt = int(fb.sum()), int(gb.sum())
    if n_fg == 0 and n_gt > 0:
        p, rc = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        p, rc = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        p, rc = 1.0, 1.0
    else:
        p = np.sum(fb & gd) / float(n_fg)
        rc = np.sum(gb & fd) / float(n_gt)
    return 0.0 if p + rc == 0 else float(2 * p * rc / (p + rc))


def mask_pairs(rng):
    pairs = []
    H, W = 45, 60
    yy, xx = np.mgrid[0:H, 0:W]
    rect = lambda x0, y0, x1, y1: (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
    pairs.append((rect(10, 10, 30, 30), rect(12, 11, 33, 30)))
    pairs.append((rect(10, 10, 30, 30), rect(25, 20, 50, 40)))
    disk_ = ((xx - 30) ** 2 + (yy - 22) ** 2) <= 15 ** 2
    ell = ((xx - 32) / 18.0) ** 2 + ((yy - 21) / 12.0) ** 2 <= 1
    pairs.append((disk_, ell))
    pairs.append((disk_, np.zeros_like(disk_)))
    pairs.append((np.zeros_like(disk_), np.zeros_like(disk_)))
    pairs.append((np.ones_like(disk_), disk_))  # full-frame truth: boundary only at edges
    for _ in range(3):  # speckled masks: many small boundaries, two sizes
        for shape in [(45, 60), (97, 131)]:
            blocks = rng.random((shape[0] // 5 + 1, shape[1] // 5 + 1)) < 0.4
            a = np.kron(blocks, np.ones((5, 5), dtype=bool))[: shape[0], : shape[1]]
            b = a ^ (rng.random(shape) < 0.02)
            pairs.append((a, b))
    return pairs


def main(out):
    out = Path(out)
    rng = np.random.default_rng(0)
    results = {"propagation": {}, "jf": []}
    cases = {
        # n_last, window, topk, T, frames, grid, dim, patch, original size (W, H)
        "small": dict(n_last=2, r=1, k=3, T=0.1, frames=6, h=4, w=5, d=8, patch=4, W=23, H=17),
        "official": dict(n_last=7, r=12, k=5, T=0.1, frames=5, h=6, w=7, d=16, patch=8, W=61, H=45),
        "nowindow": dict(n_last=1, r=0, k=4, T=0.7, frames=4, h=3, w=4, d=6, patch=2, W=9, H=7),
    }
    for name, c in cases.items():
        # Smooth features over time, so frames resemble each other as in a video.
        base = rng.standard_normal((c["h"] * c["w"], c["d"])).astype(np.float32)
        feats = np.stack([base + 0.5 * rng.standard_normal(base.shape).astype(np.float32)
                          for _ in range(c["frames"])])
        first = rng.integers(0, 3, size=(c["H"], c["W"])).astype(np.uint8)
        first[: c["H"] // 2, : c["W"] // 2] = 1
        np.save(out / f"prop_{name}_feats.npy", feats)
        np.save(out / f"prop_{name}_first.npy", first)
        small, steps = propagate(feats, first, c["patch"], c["h"], c["w"], c["n_last"], c["r"],
                                 c["k"], c["T"])
        for t, (aff, soft, lab) in enumerate(steps, start=1):
            np.save(out / f"prop_{name}_aff{t}.npy", np.ascontiguousarray(aff, dtype=np.float32))
            np.save(out / f"prop_{name}_soft{t}.npy", np.ascontiguousarray(soft, dtype=np.float32))
            np.save(out / f"prop_{name}_labels{t}.npy", np.ascontiguousarray(lab))
        np.save(out / f"prop_{name}_small.npy", np.ascontiguousarray(small))
        results["propagation"][name] = dict(c, steps=len(steps))
    values = []
    for i, (gt, pred) in enumerate(mask_pairs(rng)):
        np.save(out / f"jf_{i}_gt.npy", gt.astype(np.uint8))
        np.save(out / f"jf_{i}_pred.npy", pred.astype(np.uint8))
        values.append([jaccard(gt, pred), f_measure(gt, pred)])
        results["jf"].append({"j": values[-1][0], "f": values[-1][1],
                              "height": gt.shape[0], "width": gt.shape[1]})
    # Exact float64 values (a JSON parser may round the last digit).
    np.save(out / "jf_values.npy", np.array(values, dtype=np.float64))
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
