"""Reference values for crates/train/src/{optim,schedule}.rs.

`optim OUT_DIR`: a few steps of torch.optim.AdamW over a small set of named parameters with the
official DINO recipe (facebookresearch/dino): `get_params_groups` (no decay for `.bias` and 1-D
params, frozen params skipped), per-iteration lr / wd from `cosine_scheduler` (wd on group 0
only), per-parameter `clip_gradients`, and `cancel_gradients_last_layer` (grads of `last_layer`
set to None while epoch < freeze_last_layer). Gradients are fixed random tensors. Writes
names.txt, init.<name>.npy, grad_<it>.<name>.npy, param_<it>.<name>.npy, norms_<it>.npy,
lr.npy, wd.npy, meta.txt (niter, epochs, clip, freeze_last_layer), step.<name>.npy.

`schedules OUT_DIR`: the schedules of main_dino.py for the default config with batch 64,
37 iterations per epoch, 100 epochs, teacher temperature 0.04 -> 0.07 over 30 epochs:
lr.npy, wd.npy, momentum.npy, teacher_temp.npy (float64).
"""
import os
import sys

import numpy as np
import torch


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0,
                     start_warmup_value=0):
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


def get_params_groups(named):
    regularized, not_regularized = [], []
    for name, param in named:
        if not param.requires_grad:
            continue
        if name.endswith(".bias") or len(param.shape) == 1:
            not_regularized.append(param)
        else:
            regularized.append(param)
    return [{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}]


def clip_gradients(named, clip):
    norms = []
    for _, p in named:
        if p.grad is not None:
            param_norm = p.grad.data.norm(2)
            norms.append(param_norm.item())
            clip_coef = clip / (param_norm + 1e-6)
            if clip_coef < 1:
                p.grad.data.mul_(clip_coef)
    return norms


def cancel_gradients_last_layer(epoch, named, freeze_last_layer):
    if epoch >= freeze_last_layer:
        return
    for n, p in named:
        if "last_layer" in n:
            p.grad = None


SPECS = [  # name, shape, trainable
    ("backbone.cls_token", (1, 1, 4), True),
    ("backbone.pos_embed", (1, 3, 4), True),
    ("backbone.blocks.0.norm1.weight", (4,), True),
    ("backbone.blocks.0.norm1.bias", (4,), True),
    ("backbone.blocks.0.mlp.fc1.weight", (6, 4), True),
    ("backbone.blocks.0.mlp.fc1.bias", (6,), True),
    ("head.mlp.0.weight", (5, 6), True),
    ("head.last_layer.weight_g", (3, 1), False),
    ("head.last_layer.weight_v", (3, 5), True),
]


def optim(out):
    niter, epochs, clip, freeze = 3, 3, 3.0, 1
    lr_s = cosine_scheduler(0.01, 1e-4, epochs, niter, warmup_epochs=1)
    wd_s = cosine_scheduler(0.04, 0.4, epochs, niter)
    g = torch.Generator().manual_seed(1)
    named = []
    for name, shape, trainable in SPECS:
        p = torch.nn.Parameter(torch.randn(shape, generator=g), requires_grad=trainable)
        named.append((name, p))
        np.save(f"{out}/init.{name}.npy", p.detach().numpy())
    opt = torch.optim.AdamW(get_params_groups(named))
    for it in range(epochs * niter):
        epoch = it // niter
        for i, group in enumerate(opt.param_groups):
            group["lr"] = lr_s[it]
            if i == 0:
                group["weight_decay"] = wd_s[it]
        opt.zero_grad()
        for idx, (name, p) in enumerate(named):
            if not p.requires_grad:
                continue
            # Alternate small and large gradients so clipping fires for some params and steps.
            scale = 5.0 if (it + idx) % 3 == 0 else 0.3
            grad = torch.randn(p.shape, generator=g) * scale
            np.save(f"{out}/grad_{it}.{name}.npy", grad.numpy())
            p.grad = grad.clone()
        norms = clip_gradients(named, clip)
        cancel_gradients_last_layer(epoch, named, freeze)
        opt.step()
        np.save(f"{out}/norms_{it}.npy", np.array(norms, dtype=np.float64))
        for name, p in named:
            np.save(f"{out}/param_{it}.{name}.npy", p.detach().numpy())
    for name, p in named:
        if p in opt.state:
            np.save(f"{out}/step.{name}.npy", np.array([int(opt.state[p]["step"])], dtype=np.int64))
    np.save(f"{out}/lr.npy", lr_s)
    np.save(f"{out}/wd.npy", wd_s)
    with open(f"{out}/names.txt", "w") as f:
        f.write("\n".join(n for n, _, _ in SPECS) + "\n")
    with open(f"{out}/meta.txt", "w") as f:
        f.write(f"{niter} {epochs} {clip} {freeze}\n")


def schedules(out):
    batch, niter, epochs = 64, 37, 100
    lr = cosine_scheduler(0.0005 * batch / 256.0, 1e-6, epochs, niter, 10)
    wd = cosine_scheduler(0.04, 0.4, epochs, niter)
    momentum = cosine_scheduler(0.996, 1.0, epochs, niter)
    tt = np.concatenate((np.linspace(0.04, 0.07, 30), np.ones(epochs - 30) * 0.07))
    for k, v in dict(lr=lr, wd=wd, momentum=momentum, teacher_temp=tt).items():
        np.save(f"{out}/{k}.npy", np.asarray(v, dtype=np.float64))


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    {"optim": optim, "schedules": schedules}[mode](out)
