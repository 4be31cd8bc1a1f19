"""Reference values for crates/train/src/loss/sinkhorn.rs (Sinkhorn-Knopp teacher targets).

Written from reading `dinov2/loss/dino_clstoken_loss.py` (`sinkhorn_knopp_teacher`, not
copied): Q = exp(teacher / temp)ᵀ (K × B), divided by its total sum; then n iterations of
"divide each prototype row by its sum, then by K; divide each sample column by its sum, then by
B"; finally multiplied by B and transposed back, so each row of the result sums to 1. Over
several processes the total sum and the row sums are all-reduced and B is the global count of
rows; this script computes the single-process result on the whole batch, and the same over two
column shards with the sums added by hand (what the all-reduce does), which must agree.

Writes teacher_{case}.npy [R, K] (fp32), q_{case}.npy [R, K] (fp32, single process),
q2_{case}.npy (the two-shard emulation, rows in the same order). Cases: "small" (R=8, K=16,
temp 0.04), "wide" (R=12, K=256, temp 0.07), "sharp" (R=6, K=32, temp 0.04, logits in [-1, 1]
scaled by 3 so exp(75) is reached but stays finite in fp32).

Usage: python sinkhorn_reference.py OUT_DIR
"""
import os
import sys

import numpy as np
import torch


def sk(shards, temp, n_iter=3):
    qs = [torch.exp(t.float() / temp).t() for t in shards]
    b = sum(q.shape[1] for q in qs)
    k = qs[0].shape[0]
    total = sum(q.sum() for q in qs)
    qs = [q / total for q in qs]
    for _ in range(n_iter):
        rows = sum(q.sum(dim=1, keepdim=True) for q in qs)
        qs = [q / rows / k for q in qs]
        qs = [q / q.sum(dim=0, keepdim=True) / b for q in qs]
    return torch.cat([(q * b).t() for q in qs], 0)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    cases = {
        "small": (torch.rand(8, 16, generator=g) * 2 - 1, 0.04),
        "wide": (torch.rand(12, 256, generator=g) * 2 - 1, 0.07),
        "sharp": ((torch.rand(6, 32, generator=g) * 2 - 1) * 3, 0.04),
    }
    for name, (t, temp) in cases.items():
        q = sk([t], temp)
        half = t.shape[0] // 2
        q2 = sk([t[:half], t[half:]], temp)
        assert torch.allclose(q.sum(-1), torch.ones(t.shape[0]), atol=1e-5), name
        np.save(f"{out}/teacher_{name}.npy", t.numpy().astype(np.float32))
        np.save(f"{out}/temp_{name}.npy", np.array([temp], dtype=np.float64))
        np.save(f"{out}/q_{name}.npy", q.numpy().astype(np.float32))
        np.save(f"{out}/q2_{name}.npy", q2.numpy().astype(np.float32))


if __name__ == "__main__":
    main()
