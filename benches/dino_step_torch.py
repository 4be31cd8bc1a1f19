#!/usr/bin/env python3
"""The full DINO training step in PyTorch, timed the way `dino bench train` times ours.

One step, as `main_dino.py`'s `train_one_epoch`: teacher forward on the 2 global crops without
gradient, student forward on all crops (the multi-crop wrapper: one backbone call per crop
size), the DINO loss against the center and the center's EMA, backward, per-parameter gradient
clipping, AdamW with the official two parameter groups (no weight decay on biases and 1-D
parameters), then the teacher's EMA. Model, head and wrapper are the project's own reference
modules (tests/reference/vit_reference.py, crates/model/python/dino_vit.py), with attention
through `F.scaled_dot_product_attention` as our training path uses.

The model, crops, batch, optimizer values, precision and device come from a resolved config
(`dino config show ... > cfg.toml`), so both sides run the same job.

Two ways to write the bookkeeping around the model (`--style`):
- `official`: as main_dino.py writes it — the clip loop reads each gradient norm back with
  `.item()`, the EMA loops over parameters, `torch.optim.AdamW` with its default
  implementation;
- `foreach`: the same math without host syncs — `torch._foreach_norm` and a tensor clip
  coefficient, `torch._foreach_mul_/add_` for the EMA, AdamW `fused=True` on CUDA.
`--compile` wraps student and teacher in `torch.compile` (default mode).

Inputs (`--input`): `synthetic` = one batch of seeded random u8 crops normalized on the device
once and reused (model-bound); `loader` = an ImageFolder through torchvision's DINO multi-crop
(benches/torchvision_multicrop.py) in DataLoader workers (end to end).

Prints one JSON line with the same fields as `dino bench train --json`.

usage: dino_step_torch.py --config cfg.toml [--style official|foreach] [--compile]
                          [--input synthetic|loader --data DIR --workers N] [--warmup 3] [--steps 10]
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
import tomllib

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
sys.path.insert(0, HERE)
import vit_reference as ref  # noqa: E402

ARCHS = {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6), "vit_base": (768, 12, 12)}


def sdpa_forward(self, x):
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)
    return self.proj(o.transpose(1, 2).reshape(b, n, c)), None


def vit_dims(m):
    return ARCHS.get(m["arch"], (m["embed_dim"], m["depth"], m["num_heads"]))


def build(cfg, drop_path, device):
    m, h = cfg["model"], cfg["head"]
    dim, depth, heads = vit_dims(m)
    vit = ref.VisionTransformer(patch=m["patch_size"], dim=dim, depth=depth, heads=heads,
                                mlp_ratio=m["mlp_ratio"], qkv_bias=m["qkv_bias"],
                                drop_path_rate=drop_path, img_size=m["img_size"],
                                eps=m["layer_norm_eps"])
    for blk in vit.blocks:
        blk.attn.forward = sdpa_forward.__get__(blk.attn)
    head = ref.DINOHead(dim, h["out_dim"], use_bn=h["use_bn"], norm_last_layer=h["norm_last_layer"],
                        nlayers=h["nlayers"], hidden_dim=h["hidden_dim"],
                        bottleneck_dim=h["bottleneck_dim"])
    return ref.MultiCropWrapper(vit, head).to(device)


class DinoLoss:
    """The DINO loss (paper eq. 1, §3.1): cross-entropy between the centered, sharpened teacher
    softmax of each global view and the student softmax of every other view, averaged over the
    pairs; then the center's EMA with the teacher logits' batch mean."""

    def __init__(self, out_dim, n_crops, student_temp, center_momentum, device):
        self.center = torch.zeros(1, out_dim, device=device)
        self.n_crops, self.student_temp, self.m = n_crops, student_temp, center_momentum

    def __call__(self, student_out, teacher_out, teacher_temp):
        s = (student_out / self.student_temp).chunk(self.n_crops)
        t = F.softmax((teacher_out - self.center) / teacher_temp, dim=-1).detach().chunk(2)
        total, terms = 0.0, 0
        for iq, q in enumerate(t):
            for v, sv in enumerate(s):
                if v != iq:
                    total = total + torch.sum(-q * F.log_softmax(sv, dim=-1), dim=-1).mean()
                    terms += 1
        with torch.no_grad():
            batch_center = teacher_out.sum(0, keepdim=True) / len(teacher_out)
            self.center.mul_(self.m).add_(batch_center, alpha=1 - self.m)
        return total / terms


def param_groups(model):
    reg, noreg = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (noreg if name.endswith(".bias") or p.ndim == 1 else reg).append(p)
    return [{"params": reg}, {"params": noreg, "weight_decay": 0.0}]


def clip_official(params, clip):
    for p in params:
        if p.grad is not None:
            norm = p.grad.data.norm(2)
            _ = norm.item()  # the official loop collects the norms as Python floats
            coef = clip / (norm + 1e-6)
            if coef < 1:
                p.grad.data.mul_(coef)


def clip_foreach(params, clip):
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch._foreach_norm(grads)
    coefs = [(clip / (n + 1e-6)).clamp(max=1.0) for n in norms]
    torch._foreach_mul_(grads, coefs)


def ema_official(teacher, student, m):
    with torch.no_grad():
        for ps, pt in zip(student.parameters(), teacher.parameters()):
            pt.data.mul_(m).add_((1 - m) * ps.detach().data)


def ema_foreach(teacher, student, m):
    with torch.no_grad():
        tp, sp = list(teacher.parameters()), list(student.parameters())
        torch._foreach_mul_(tp, m)
        torch._foreach_add_(tp, sp, alpha=1 - m)


def normalize(u8, mean, std):
    return (u8.float() / 255.0 - mean) / std


def synthetic_crops(cfg, device, seed):
    a, b = cfg["augmentation"], cfg["optim"]["batch_size"]
    g = torch.Generator().manual_seed(seed)
    mean = torch.tensor(a["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(a["std"], device=device).view(1, 3, 1, 1)
    gs, ls, nl = a["global_crops_size"], a["local_crops_size"], a["local_crops_number"]
    crops = [torch.randint(0, 256, (2 * b, 3, gs, gs), generator=g, dtype=torch.uint8)]
    if nl > 0:
        crops.append(torch.randint(0, 256, (nl * b, 3, ls, ls), generator=g, dtype=torch.uint8))
    return [normalize(c.to(device), mean, std) for c in crops]


def loader_batches(cfg, data, workers, device):
    from torchvision import datasets  # noqa: PLC0415
    from torchvision_multicrop import DinoMultiCrop  # noqa: PLC0415
    a = cfg["augmentation"]
    tf = DinoMultiCrop(global_scale=tuple(a["global_crops_scale"]),
                       local_scale=tuple(a["local_crops_scale"]), n_local=a["local_crops_number"],
                       global_size=a["global_crops_size"], local_size=a["local_crops_size"])
    ds = datasets.ImageFolder(data, transform=tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=cfg["optim"]["batch_size"], shuffle=True,
                                     num_workers=workers, drop_last=True, pin_memory=device.type == "cuda",
                                     persistent_workers=workers > 0)
    while True:
        for views, _ in dl:
            crops = [torch.cat(views[:2])]
            if len(views) > 2:
                crops.append(torch.cat(views[2:]))
            yield [c.to(device, non_blocking=True) for c in crops]


def resolve(cfg, device_arg):
    rt = cfg["runtime"]
    want = device_arg or rt["device"]
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device("cuda" if want.startswith("cuda") else "cpu")
    prec = rt["precision"]
    if prec == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        prec = "bf16" if bf16 else "fp32"  # as `dino`: CPU auto means fp32 unless AVX512-BF16
    return device, prec


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="resolved TOML from `dino config show`")
    ap.add_argument("--style", choices=["official", "foreach"], default="official")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--input", choices=["synthetic", "loader"], default="synthetic")
    ap.add_argument("--data")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--device", help="override runtime.device (cpu, cuda)")
    ap.add_argument("--precision", help="override runtime.precision (fp32, bf16, fp16)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    with open(args.config, "rb") as f:
        cfg = tomllib.load(f)
    rt, o, lcfg, a = cfg["runtime"], cfg["optim"], cfg["loss"], cfg["augmentation"]
    if rt["torch_threads"]:
        torch.set_num_threads(rt["torch_threads"])
    device, prec = resolve(cfg, args.device)
    prec = args.precision or prec
    assert o["optimizer"] == "adamw", "the PyTorch step implements AdamW (the official default)"

    torch.manual_seed(rt["seed"])
    student = build(cfg, cfg["model"]["drop_path_rate"], device)
    teacher = build(cfg, 0.0, device)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    student.train()
    teacher.train()  # the official teacher runs in train mode (its BN head uses batch stats)
    params = [p for p in student.parameters() if p.requires_grad]
    fused = args.style == "foreach" and device.type == "cuda"
    opt = torch.optim.AdamW(param_groups(student), lr=o["lr"] * o["batch_size"] / 256,
                            betas=tuple(o["betas"]), eps=o["eps"], weight_decay=o["weight_decay"],
                            **({"fused": True} if fused else {}))
    n_crops = 2 + a["local_crops_number"]
    loss_fn = DinoLoss(cfg["head"]["out_dim"], n_crops, lcfg["student_temp"],
                       lcfg["center_momentum"], device)
    clip = clip_foreach if args.style == "foreach" else clip_official
    ema = ema_foreach if args.style == "foreach" else ema_official
    s_fwd, t_fwd = student, teacher
    if args.compile:
        s_fwd, t_fwd = torch.compile(student), torch.compile(teacher)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)
    scaler = torch.amp.GradScaler(device.type) if prec == "fp16" else None
    m = cfg["schedule"]["momentum_teacher"]

    if args.input == "synthetic":
        fixed = synthetic_crops(cfg, device, rt["seed"])
        batches = iter(lambda: fixed, None)
    else:
        assert args.data, "--input loader needs --data DIR"
        batches = loader_batches(cfg, args.data, args.workers, device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times, waits, last = [], 0.0, float("nan")
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        crops = next(batches)
        if i >= args.warmup:
            sync()
            waits += time.perf_counter() - t0
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            with torch.no_grad():
                t_out = t_fwd(crops[:1])
            s_out = s_fwd(crops)
        loss = loss_fn(s_out.float(), t_out.float(), lcfg["teacher_temp"])
        lval = loss.item()  # the official loop checks math.isfinite(loss.item()) every step
        if not math.isfinite(lval):
            sys.exit(f"non-finite loss {lval}")
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            if o["clip_grad"]:
                clip(params, o["clip_grad"])
            opt.step()
        else:
            scaler.scale(loss).backward()
            if o["clip_grad"]:
                scaler.unscale_(opt)
                clip(params, o["clip_grad"])
            scaler.step(opt)
            scaler.update()
        ema(teacher, student, m)
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
            last = lval

    wall = sum(times)
    dim, depth, heads = vit_dims(cfg["model"])
    name = "pytorch-compile" if args.compile else "pytorch-eager"
    print(json.dumps({
        "implementation": f"{name} ({args.style})", "input": args.input,
        "device": str(device), "precision": prec, "vit": [dim, depth, heads],
        "patch_size": cfg["model"]["patch_size"], "batch_size": o["batch_size"],
        "global_crops": [2, a["global_crops_size"]],
        "local_crops": [a["local_crops_number"], a["local_crops_size"]],
        "out_dim": cfg["head"]["out_dim"], "warmup": args.warmup, "steps": args.steps,
        "images_per_s": args.steps * o["batch_size"] / wall,
        "step_ms": {"median": statistics.median(times) * 1e3, "mean": wall / len(times) * 1e3,
                    "min": min(times) * 1e3},
        "data_wait_fraction": waits / wall, "torch_threads": torch.get_num_threads(),
        "last_loss": last, "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
