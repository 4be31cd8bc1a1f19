"""Reference values for crates/train/src/loss/koleo.rs (the KoLeo regularizer of DINOv2).

Written from reading `dinov2/loss/koleo_loss.py` and `dinov2/train/ssl_meta_arch.py` (not
copied): for features x [B, D] of one crop, normalise each row to unit L2 norm (norm clamped
at eps = 1e-8), find each row's nearest other row by the largest inner product (the diagonal
excluded), take the Euclidean distance ||x_i - x_nn(i) + eps|| (torch's pairwise_distance adds
eps to the difference) and average -log(d_i + eps) over the rows. The training term is
weight * (KoLeo(global crop 1) + KoLeo(global crop 2)): a sum over the two global crops, not a
mean, on the student's backbone CLS tokens, in fp32.

Writes, per case, x_{case}.npy [2B, D] (the two global crops' features, view-major), loss_{case}.npy
(the weighted term, float64) and grad_{case}.npy (d term / d x). Cases: "random" (B=8, D=16),
"dups" (B=4 with two identical rows in each crop), "two" (B=2), "wide" (B=16, D=384).

Usage: python koleo_reference.py OUT_DIR WEIGHT
"""
import os
import sys

import numpy as np
import torch


def koleo_one_crop(x, eps=1e-8):
    n = x.shape[0]
    norms = torch.sqrt((x * x).sum(-1, keepdim=True)).clamp_min(eps)
    u = x / norms
    with torch.no_grad():
        sim = u @ u.T
        sim[torch.arange(n), torch.arange(n)] = -1.0
        nearest = sim.max(dim=1).indices
    diff = u - u[nearest] + eps
    d = torch.sqrt((diff * diff).sum(-1))
    return -(torch.log(d + eps)).mean()


def term(x, weight):
    a, b = x.chunk(2)
    return weight * (koleo_one_crop(a) + koleo_one_crop(b))


def main():
    out, weight = sys.argv[1], float(sys.argv[2])
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    cases = {
        "random": torch.randn(16, 16, generator=g),
        "two": torch.randn(4, 8, generator=g),
        "wide": torch.randn(32, 384, generator=g),
    }
    dups = torch.randn(8, 16, generator=g)
    dups[1] = dups[0]
    dups[6] = dups[5]
    cases["dups"] = dups
    for name, x in cases.items():
        x = x.float().requires_grad_(True)
        loss = term(x, weight)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all(), name
        np.save(f"{out}/x_{name}.npy", x.detach().numpy().astype(np.float32))
        np.save(f"{out}/loss_{name}.npy", np.array([loss.item()], dtype=np.float64))
        np.save(f"{out}/grad_{name}.npy", x.grad.numpy().astype(np.float32))


if __name__ == "__main__":
    main()
