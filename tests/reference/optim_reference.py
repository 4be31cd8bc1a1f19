"""Reference values for crates/train/src/optim/{sgd,lars}.rs and crates/train/src/grad_scaler.rs.

Each mode runs 20 iterations (4 epochs of 5) of the official DINO optimizer recipe
(facebookresearch/dino main_dino.py / utils.py) over a small set of named parameters with fixed
random gradients: `get_params_groups` (group 1 without weight decay), per-iteration lr and wd
from `cosine_scheduler` (wd on group 0 only), per-parameter `clip_gradients` (clip 3.0) and
`cancel_gradients_last_layer` (last layer frozen during epoch 0).

`sgd OUT`: torch.optim.SGD(params_groups, lr=0, momentum=0.9), as main_dino.py builds it.
`lars OUT`: LARS written here from the description of the official utils.LARS: for parameters
    with ndim != 1, d = g + wd*p and d *= eta*|p|/|d| (1 when either norm is 0); then
    mu = momentum*mu + d; p -= lr*mu (mu created as zeros). momentum 0.9, eta 0.001.
`scaler OUT`: AdamW driven by torch.amp.GradScaler("cpu", growth_interval=3) as main_dino.py's
    fp16 branch: scaler.scale(loss).backward() with loss = sum over params of sum(p * raw), so
    each gradient is scale * raw (some raw values inf or NaN, one of them in the frozen last
    layer), then unscale_, clip_gradients, cancel_gradients_last_layer, scaler.step,
    scaler.update.

Writes names.txt, meta.txt (niter epochs clip freeze), init.<name>.npy, grad_<it>.<name>.npy
(the gradient before clipping; for `scaler` the raw gradient before scaling), param_<it>.<name>.npy (after iteration it), lr.npy,
wd.npy, buf.<name>.npy (final momentum buffer, sgd/lars), and for `scaler`: scale.npy
(scale used by each iteration's backward), scale_after.npy, tracker_after.npy, skipped.npy.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from adamw_reference import (  # noqa: E402
    cancel_gradients_last_layer,
    clip_gradients,
    cosine_scheduler,
    get_params_groups,
)

# name, shape, trainable, zero-initialised
SPECS = [
    ("backbone.cls_token", (1, 1, 4), True, False),
    ("backbone.pos_embed", (1, 3, 4), True, False),
    ("backbone.blocks.0.norm1.weight", (4,), True, False),
    ("backbone.blocks.0.norm1.bias", (4,), True, False),
    ("backbone.blocks.0.mlp.fc1.weight", (6, 4), True, False),
    ("backbone.blocks.0.mlp.fc1.bias", (6,), True, False),
    ("head.mlp.0.weight", (5, 6), True, False),
    # A zero weight: LARS's trust ratio falls back to 1 while its norm is 0.
    ("head.mlp.2.weight", (5, 5), True, True),
    ("head.last_layer.weight_g", (3, 1), False, False),
    ("head.last_layer.weight_v", (3, 5), True, False),
]
NITER, EPOCHS, CLIP, FREEZE = 5, 4, 3.0, 1


class Lars(torch.optim.Optimizer):
    def __init__(self, params, momentum=0.9, eta=0.001):
        super().__init__(params, dict(lr=0.0, weight_decay=0.0, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim != 1:
                    d = d.add(p, alpha=group["weight_decay"])
                    pn, dn = torch.norm(p), torch.norm(d)
                    one = torch.ones_like(pn)
                    ratio = torch.where(dn > 0, group["eta"] * pn / dn, one)
                    d = d.mul(torch.where(pn > 0.0, ratio, one))
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                state["mu"].mul_(group["momentum"]).add_(d)
                p.add_(state["mu"], alpha=-group["lr"])


def make_params(out, g):
    named = []
    for name, shape, trainable, zero in SPECS:
        t = torch.zeros(shape) if zero else torch.randn(shape, generator=g)
        p = torch.nn.Parameter(t, requires_grad=trainable)
        named.append((name, p))
        np.save(f"{out}/init.{name}.npy", p.detach().numpy())
    return named


def raw_grad(p, it, idx, g):
    # Alternate small and large gradients so clipping fires for some params and steps.
    scale = 5.0 if (it + idx) % 3 == 0 else 0.3
    return torch.randn(p.shape, generator=g) * scale


def set_schedules(opt, lr, wd):
    for i, group in enumerate(opt.param_groups):
        group["lr"] = lr
        if i == 0:
            group["weight_decay"] = wd


def write_common(out, named, lr_s, wd_s):
    np.save(f"{out}/lr.npy", lr_s)
    np.save(f"{out}/wd.npy", wd_s)
    with open(f"{out}/names.txt", "w") as f:
        f.write("\n".join(n for n, *_ in SPECS) + "\n")
    with open(f"{out}/meta.txt", "w") as f:
        f.write(f"{NITER} {EPOCHS} {CLIP} {FREEZE}\n")


def momentum_run(out, kind):
    g = torch.Generator().manual_seed(2)
    named = make_params(out, g)
    base_lr = 0.03 if kind == "sgd" else 0.3
    lr_s = cosine_scheduler(base_lr, 1e-4, EPOCHS, NITER, warmup_epochs=1)
    wd_s = cosine_scheduler(0.04, 0.4, EPOCHS, NITER)
    groups = get_params_groups(named)
    opt = torch.optim.SGD(groups, lr=0, momentum=0.9) if kind == "sgd" else Lars(groups)
    for it in range(EPOCHS * NITER):
        set_schedules(opt, lr_s[it], wd_s[it])
        opt.zero_grad()
        for idx, (name, p) in enumerate(named):
            if not p.requires_grad:
                continue
            grad = raw_grad(p, it, idx, g)
            np.save(f"{out}/grad_{it}.{name}.npy", grad.numpy())
            p.grad = grad.clone()
        clip_gradients(named, CLIP)
        cancel_gradients_last_layer(it // NITER, named, FREEZE)
        opt.step()
        for name, p in named:
            np.save(f"{out}/param_{it}.{name}.npy", p.detach().numpy())
    key = "momentum_buffer" if kind == "sgd" else "mu"
    for name, p in named:
        if p in opt.state:
            np.save(f"{out}/buf.{name}.npy", opt.state[p][key].numpy())
    write_common(out, named, lr_s, wd_s)


# (iteration, parameter, value) put into the raw gradient before scaling.
BAD = [
    (2, "head.last_layer.weight_v", float("inf")),  # frozen, but unscale_ comes first
    (6, "backbone.pos_embed", float("nan")),
    (7, "head.mlp.0.weight", float("-inf")),
    (15, "backbone.blocks.0.norm1.bias", float("nan")),
]


def scaler_run(out):
    g = torch.Generator().manual_seed(3)
    named = make_params(out, g)
    lr_s = cosine_scheduler(0.01, 1e-4, EPOCHS, NITER, warmup_epochs=1)
    wd_s = cosine_scheduler(0.04, 0.4, EPOCHS, NITER)
    opt = torch.optim.AdamW(get_params_groups(named))
    scaler = torch.amp.GradScaler("cpu", growth_interval=3)
    scales, after, tracker, skipped = [], [], [], []
    for it in range(EPOCHS * NITER):
        set_schedules(opt, lr_s[it], wd_s[it])
        opt.zero_grad()
        scale = scaler.get_scale()
        loss = None
        for idx, (name, p) in enumerate(named):
            if not p.requires_grad:
                continue
            raw = raw_grad(p, it, idx, g)
            for bad_it, bad_name, v in BAD:
                if bad_it == it and bad_name == name:
                    raw.view(-1)[1] = v
            np.save(f"{out}/grad_{it}.{name}.npy", raw.numpy())
            # d/dp sum(p * raw) = raw: the backward of the scaled loss gives scale * raw.
            term = (p * raw).sum()
            loss = term if loss is None else loss + term
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        clip_gradients(named, CLIP)
        cancel_gradients_last_layer(it // NITER, named, FREEZE)
        found = sum(v.item() for v in scaler._found_inf_per_device(opt).values())
        scaler.step(opt)
        scaler.update()
        scales.append(scale)
        after.append(scaler.get_scale())
        tracker.append(int(scaler._get_growth_tracker()))
        skipped.append(int(found != 0))
        for name, p in named:
            np.save(f"{out}/param_{it}.{name}.npy", p.detach().numpy())
    np.save(f"{out}/scale.npy", np.array(scales, dtype=np.float64))
    np.save(f"{out}/scale_after.npy", np.array(after, dtype=np.float64))
    np.save(f"{out}/tracker_after.npy", np.array(tracker, dtype=np.int64))
    np.save(f"{out}/skipped.npy", np.array(skipped, dtype=np.int64))
    write_common(out, named, lr_s, wd_s)


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    if mode == "scaler":
        scaler_run(out)
    else:
        momentum_run(out, {"sgd": "sgd", "lars": "lars"}[mode])
