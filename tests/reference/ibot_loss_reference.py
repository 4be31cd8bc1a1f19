"""Reference values for crates/train/src/loss/ibot.rs (DINOv2's iBOT patch loss).

Written from reading `dinov2/loss/ibot_patch_loss.py` (iBOTPatchLoss: softmax_center_teacher,
sinkhorn_knopp_teacher, forward_masked, update_center / apply_center_update),
`dinov2/data/collate.py` (mask_indices_list, masks_weight) and `dinov2/train/ssl_meta_arch.py`
(the term is forward_masked * loss_scales (2) * ibot_loss_scale (1/2) * ibot.loss_weight), not
copied. In float32, as the official loss (it casts to float).

For masks [2B, N] (bool) and head outputs of every patch of the 2B global crops, student
s_all and teacher t_all [2B, N, K] (the head is row-wise, so selecting the masked rows before
or after it is the same), the masked rows in crop-major order, their weights 1 / (masked
patches of the crop), the teacher targets softmax((t - center) / temp) ("center") or 3
Sinkhorn-Knopp iterations with B = M ("sk"), the term
    weight * -sum_p w_p sum_k t_p[k] log_softmax(s_p / 0.1)[k] / (2B),
its gradient with respect to s_all, and the next center 0.9 c + 0.1 mean_p t_p.

Writes masks.npy (float 0/1), s_all.npy, t_all.npy, center.npy, and per centering mode
loss_{mode}.npy, grad_{mode}.npy, targets_{mode}.npy; new_center.npy.

Usage: python ibot_loss_reference.py OUT_DIR WEIGHT TEMP
"""
import os
import sys

import numpy as np
import torch


def sinkhorn(t, temp, n_rows, iters=3):
    q = torch.exp(t / temp).t()
    k = q.shape[0]
    q = q / q.sum()
    for _ in range(iters):
        q = q / q.sum(dim=1, keepdim=True)
        q = q / k
        q = q / q.sum(dim=0, keepdim=True)
        q = q / n_rows
    return (q * n_rows).t()


def main():
    out, weight, temp = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    g = torch.Generator().manual_seed(0)
    crops, n, k = 6, 16, 32
    masks = torch.rand(crops, n, generator=g) < 0.35
    masks[2] = False  # a crop without any masked patch
    masks[4, :] = False
    masks[4, 5] = True  # a crop with one
    s_all = torch.randn(crops, n, k, generator=g) * 3
    # Teacher logits of a cosine-like size: exp(t / 0.07) stays finite for Sinkhorn-Knopp.
    t_all = torch.randn(crops, n, k, generator=g) * 0.3
    center = torch.randn(1, k, generator=g) * 0.1
    flat = masks.flatten()
    idx = flat.nonzero().flatten()
    m = idx.shape[0]
    w = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
    t_sel = t_all.flatten(0, 1)[idx]
    np.save(os.path.join(out, "masks.npy"), masks.float().numpy())
    np.save(os.path.join(out, "s_all.npy"), s_all.numpy())
    np.save(os.path.join(out, "t_all.npy"), t_all.numpy())
    np.save(os.path.join(out, "center.npy"), center.numpy())
    for mode in ("center", "sk"):
        if mode == "center":
            targets = torch.softmax((t_sel - center) / temp, dim=-1)
        else:
            targets = sinkhorn(t_sel, temp, m)
        s = s_all.clone().requires_grad_(True)
        s_sel = s.flatten(0, 1)[idx]
        per_patch = torch.sum(targets * torch.log_softmax(s_sel / 0.1, dim=-1), dim=-1)
        loss = -(per_patch * w).sum() / masks.shape[0]
        loss = loss * 2 * 0.5 * weight
        loss.backward()
        np.save(os.path.join(out, f"loss_{mode}.npy"), np.array(loss.item(), dtype=np.float64))
        np.save(os.path.join(out, f"grad_{mode}.npy"), s.grad.numpy())
        np.save(os.path.join(out, f"targets_{mode}.npy"), targets.numpy())
    batch_center = torch.sum(t_sel.unsqueeze(0).mean(1), dim=0, keepdim=True) / 1
    new_center = center * 0.9 + batch_center * (1 - 0.9)
    np.save(os.path.join(out, "new_center.npy"), new_center.numpy())


if __name__ == "__main__":
    main()
