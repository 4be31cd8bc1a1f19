#!/usr/bin/env python3
"""The project's PyTorch DINO training step (benches/dino_step_torch.py) fed by the Rust
multi-crop loader of the `dino_multicrop` wheel instead of torchvision, on an image folder, on
the CPU or a CUDA GPU.

What changes against the official `main_dino.py` loop is only where the crops come from:

    loader = dino_multicrop.MultiCropLoader(root, batch_size, threads=N, seed=..., ...)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for crops, _ in loader:        # 2 + n_local uint8 arrays [B, 3, H, W], Rust-owned
            crops = [torch.from_numpy(c).to(device, non_blocking=True) for c in crops]
            crops = [normalize(c) for c in crops]       # (x / 255 - mean) / std on the device
            ... teacher(crops[:2]), student(crops), loss, backward, step, EMA ...

`torch.from_numpy` wraps the Rust buffers without a copy; the crops travel to the device as
uint8 (a quarter of the bytes of float32) and are normalized there. The model, head, loss,
optimizer, clipping and EMA are benches/dino_step_torch.py's (the project's reference modules),
built from a config of the Rust trainer: a preset such as configs/cifar10_cpu.toml (resolved
and validated by `dino_multicrop.load_config`, as `dino config show` does) plus `--set`
overrides. The loader takes the config's [augmentation], [data] and runtime seed / prefetch.

`--loader torchvision` runs the same step on benches/torchvision_multicrop.py's official-style
pipeline (ImageFolder + Pillow + DataLoader workers), for the comparison in docs/BENCHMARKS.md.
Prints one JSON line: images/s of whole steps (data wait included), the fraction of the time
spent waiting for data, the last loss.

usage: dino_step_with_rust_loader.py --config PRESET.toml --data DIR [--set section.key=value]...
           [--loader rust|torchvision] [--workers N] [--device cpu|cuda] [--steps 10]
           [--warmup 3] [--style official|foreach]
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import dino_multicrop
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "benches"))
import dino_step_torch as step  # noqa: E402  (its imports put tests/reference on sys.path)


def rust_batches(cfg, data, threads, device):
    """The wheel's loader, epoch after epoch: crops as Rust-owned uint8 arrays → the device →
    normalized there, concatenated per resolution as the multi-crop wrapper takes them."""
    a, rt, d = cfg["augmentation"], cfg["runtime"], cfg["data"]
    extra = {k: a[k] for k in ("crop_ratio", "flip_p", "color_jitter_p", "brightness", "contrast",
                               "saturation", "hue", "grayscale_p", "blur_global1_p",
                               "blur_global2_p", "blur_local_p", "blur_sigma", "solarize_p",
                               "solarize_threshold", "mean", "std")}
    loader = dino_multicrop.MultiCropLoader(
        data, cfg["optim"]["batch_size"],
        global_crops_scale=a["global_crops_scale"], local_crops_scale=a["local_crops_scale"],
        local_crops_number=a["local_crops_number"], global_crops_size=a["global_crops_size"],
        local_crops_size=a["local_crops_size"], threads=threads, seed=rt["seed"],
        prefetch=rt["prefetch_batches"], drop_last=d["drop_last"], format=d["format"],
        split=d["split"], max_failed_fraction=d["max_failed_fraction"],
        max_image_pixels=d["max_image_pixels"], **extra)
    mean = torch.tensor(a["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(a["std"], device=device).view(1, 3, 1, 1)
    pin = device.type == "cuda"
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        for crops, _ in loader:
            views = [torch.from_numpy(c) for c in crops]
            groups = [torch.cat(views[:2])]
            if len(views) > 2:
                groups.append(torch.cat(views[2:]))
            if pin:
                groups = [g.pin_memory() for g in groups]
            yield [step.normalize(g.to(device, non_blocking=True), mean, std) for g in groups]
        epoch += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True,
                    help="a preset of the Rust trainer (or `dino config show` output)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a config key, as `dino train --set` (repeatable)")
    ap.add_argument("--data", required=True, help="an ImageFolder (root/<class>/<image>)")
    ap.add_argument("--loader", choices=["rust", "torchvision"], default="rust")
    ap.add_argument("--workers", type=int, default=os.cpu_count(),
                    help="Rust loader threads / DataLoader worker processes")
    ap.add_argument("--device", help="cpu or cuda (default: runtime.device of the config)")
    ap.add_argument("--style", choices=["official", "foreach"], default="official")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    cfg = dino_multicrop.load_config(args.config, args.set)
    rt, o, lcfg, a = cfg["runtime"], cfg["optim"], cfg["loss"], cfg["augmentation"]
    if rt["torch_threads"]:
        torch.set_num_threads(rt["torch_threads"])
    device, prec = step.resolve(cfg, args.device)
    assert o["optimizer"] == "adamw", "the PyTorch step implements AdamW (the official default)"

    torch.manual_seed(rt["seed"])
    student = step.build(cfg, cfg["model"]["drop_path_rate"], device)
    teacher = step.build(cfg, 0.0, device)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    student.train()
    teacher.train()
    params = [p for p in student.parameters() if p.requires_grad]
    fused = args.style == "foreach" and device.type == "cuda"
    opt = torch.optim.AdamW(step.param_groups(student), lr=o["lr"] * o["batch_size"] / 256,
                            betas=tuple(o["betas"]), eps=o["eps"], weight_decay=o["weight_decay"],
                            **({"fused": True} if fused else {}))
    n_crops = 2 + a["local_crops_number"]
    loss_fn = step.DinoLoss(cfg["head"]["out_dim"], n_crops, lcfg["student_temp"],
                            lcfg["center_momentum"], device)
    clip = step.clip_foreach if args.style == "foreach" else step.clip_official
    ema = step.ema_foreach if args.style == "foreach" else step.ema_official
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)
    scaler = torch.amp.GradScaler(device.type) if prec == "fp16" else None
    m = cfg["schedule"]["momentum_teacher"]

    if args.loader == "rust":
        batches = rust_batches(cfg, args.data, args.workers, device)
    else:
        batches = step.loader_batches(cfg, args.data, args.workers, device)

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
                t_out = teacher(crops[:1])
            s_out = student(crops)
        loss = loss_fn(s_out.float(), t_out.float(), lcfg["teacher_temp"])
        lval = loss.item()
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
    print(json.dumps({
        "loader": "dino_multicrop (Rust)" if args.loader == "rust"
        else "torchvision+Pillow DataLoader",
        "workers": args.workers, "device": str(device), "precision": prec,
        "vit": list(step.vit_dims(cfg["model"])), "patch_size": cfg["model"]["patch_size"],
        "batch_size": o["batch_size"], "global_crops": [2, a["global_crops_size"]],
        "local_crops": [a["local_crops_number"], a["local_crops_size"]],
        "warmup": args.warmup, "steps": args.steps,
        "images_per_s": args.steps * o["batch_size"] / wall,
        "step_ms": {"median": statistics.median(times) * 1e3, "mean": wall / len(times) * 1e3},
        "data_wait_fraction": waits / wall, "torch_threads": torch.get_num_threads(),
        "last_loss": last, "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
