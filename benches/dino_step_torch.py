#!/usr/bin/env python3
"""The full DINO training step in PyTorch, timed the way `dino bench train` times ours.

One step, as `main_dino.py`'s `train_one_epoch`: teacher forward on the 2 global crops without
gradient, student forward on all crops (the multi-crop wrapper: one backbone call per crop
size), the DINO loss against the center and the center's EMA, backward, per-parameter gradient
clipping, AdamW with the official two parameter groups (no weight decay on biases and 1-D
parameters), then the teacher's EMA.

The model, crops, batch, optimizer values, precision and device come from a resolved config
(`dino config show ... > cfg.toml`), so both sides run the same job.

Three ways to write the step (`--style`):
- `official`: the project's reference modules (tests/reference/vit_reference.py,
  crates/model/python/dino_vit.py, attention through `F.scaled_dot_product_attention` as our
  training path uses) with the bookkeeping as main_dino.py writes it — the clip loop reads each
  gradient norm back with `.item()`, the EMA loops over parameters, `torch.optim.AdamW` with its
  default implementation;
- `foreach`: the same modules and math without host syncs — `torch._foreach_norm` and a tensor
  clip coefficient, `torch._foreach_mul_/add_` for the EMA, AdamW `fused=True` (CPU and CUDA);
- `main_dino`: the official code itself, from a checkout of facebookresearch/dino given with
  `--official PATH` (never vendored): its `VisionTransformer`, `DINOHead`,
  `utils.MultiCropWrapper`, `main_dino.DINOLoss` (with its all-reduce, on a one-process Gloo
  group), `utils.get_params_groups` + `torch.optim.AdamW`, `utils.clip_gradients`,
  `utils.cancel_gradients_last_layer` and the EMA loop of `train_one_epoch`, on the same shapes.
`--compile` wraps student and teacher in `torch.compile` (default mode).

Process settings, as ours (`dino bench train` prints the same fields): `--threads N`
(`torch.set_num_threads`; 0 keeps libtorch's default), `--alloc keep` (the default: glibc
`mallopt(M_MMAP_THRESHOLD, 32 MiB)` and `mallopt(M_TRIM_THRESHOLD, 1 GiB)`, what the `dino`
binary sets at start-up, crates/cli/src/alloc.rs) or `--alloc default` (glibc's defaults), and
libgomp's waiting policy from the environment (`omp_wait`; `dino` runs with
`OMP_WAIT_POLICY=PASSIVE` unless told otherwise, crates/cli/src/omp.rs, and
train_step_compare.py gives the PyTorch sides the same).

Inputs (`--input`): `synthetic` = one batch of seeded random u8 crops normalized on the device
once and reused (model-bound); `loader` = an ImageFolder through torchvision's DINO multi-crop
(benches/torchvision_multicrop.py) in DataLoader workers (end to end).

Prints one JSON line with the same fields as `dino bench train --json`, the phase split of a
step included (`phase_ms`: data wait, forward+backward, bookkeeping = clipping + optimizer + EMA
+ the loss read-back; medians over the timed steps, the device synchronized at each boundary).

usage: dino_step_torch.py --config cfg.toml [--style official|foreach|main_dino]
                          [--official PATH] [--compile] [--threads N] [--alloc keep|default]
                          [--input synthetic|loader --data DIR --workers N] [--warmup 3] [--steps 10]
"""
import argparse
import ctypes
import json
import math
import os
import statistics
import sys
import time
import tomllib


def keep_freed_memory():
    """glibc's mallopt as crates/cli/src/alloc.rs sets it for the `dino` process. Called before
    torch is imported, so every tensor of the run sees it."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold, m_mmap_max = -1, -3, -4
    return (libc.mallopt(m_mmap_threshold, 32 << 20) == 1
            and libc.mallopt(m_trim_threshold, 1 << 30) == 1
            and libc.mallopt(m_mmap_max, 0) == 1)


def alloc_from_argv(argv):
    """`--alloc`, read before argparse runs: the settings must precede torch's import."""
    wanted = "keep"
    if "--alloc" in argv and argv.index("--alloc") + 1 < len(argv):
        wanted = argv[argv.index("--alloc") + 1]
    if __name__ != "__main__" or wanted != "keep":
        return "glibc defaults"
    if keep_freed_memory():
        return "glibc mmap_threshold=32MiB trim_threshold=1GiB mmap_max=0"
    return "glibc defaults (mallopt refused)"


ALLOC = alloc_from_argv(sys.argv)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

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
        if device.type == "cuda":
            prec = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        else:  # as `dino`: bf16 where the CPU multiplies bf16 natively
            prec = "bf16" if cpu_has_native_bf16() else "fp32"
    return device, prec


def omp_wait():
    """libgomp's waiting policy in force, in the words `dino` reports it (crates/cli/src/omp.rs)."""
    p, s = os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT")
    if p and s:
        return f"OMP_WAIT_POLICY={p} GOMP_SPINCOUNT={s}"
    if p or s:
        return f"OMP_WAIT_POLICY={p}" if p else f"GOMP_SPINCOUNT={s}"
    return "libgomp default (spin, then sleep)"


def cpu_has_native_bf16():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    return False


class ProjectStep:
    """`official` and `foreach`: the project's reference modules with either bookkeeping."""

    def __init__(self, cfg, device, style):
        rt, o, lcfg, a = cfg["runtime"], cfg["optim"], cfg["loss"], cfg["augmentation"]
        assert o["optimizer"] == "adamw", "the PyTorch step implements AdamW (the official default)"
        torch.manual_seed(rt["seed"])
        self.student = build(cfg, cfg["model"]["drop_path_rate"], device)
        self.teacher = build(cfg, 0.0, device)
        self.teacher.load_state_dict(self.student.state_dict())
        for p in self.teacher.parameters():
            p.requires_grad = False
        self.student.train()
        self.teacher.train()  # the official teacher runs in train mode (BN head: batch stats)
        self.params = [p for p in self.student.parameters() if p.requires_grad]
        fused = style == "foreach"
        self.opt = torch.optim.AdamW(param_groups(self.student), lr=o["lr"] * o["batch_size"] / 256,
                                     betas=tuple(o["betas"]), eps=o["eps"],
                                     weight_decay=o["weight_decay"],
                                     **({"fused": True} if fused else {}))
        self.loss_fn = DinoLoss(cfg["head"]["out_dim"], 2 + a["local_crops_number"],
                                lcfg["student_temp"], lcfg["center_momentum"], device)
        self.clip = clip_foreach if style == "foreach" else clip_official
        self.ema = ema_foreach if style == "foreach" else ema_official
        self.clip_grad, self.temp = o["clip_grad"], lcfg["teacher_temp"]
        self.m = cfg["schedule"]["momentum_teacher"]
        self.s_fwd, self.t_fwd = self.student, self.teacher

    def compile(self):
        self.s_fwd, self.t_fwd = torch.compile(self.student), torch.compile(self.teacher)

    def forward_backward(self, crops, autocast, scaler):
        with autocast():
            with torch.no_grad():
                t_out = self.t_fwd(crops[:1])
            s_out = self.s_fwd(crops)
        loss = self.loss_fn(s_out.float(), t_out.float(), self.temp)
        lval = loss.item()  # the official loop checks math.isfinite(loss.item()) every step
        if not math.isfinite(lval):
            sys.exit(f"non-finite loss {lval}")
        self.opt.zero_grad(set_to_none=True)
        (loss if scaler is None else scaler.scale(loss)).backward()
        return lval

    def bookkeeping(self, scaler):
        if scaler is None:
            if self.clip_grad:
                self.clip(self.params, self.clip_grad)
            self.opt.step()
        else:
            if self.clip_grad:
                scaler.unscale_(self.opt)
                self.clip(self.params, self.clip_grad)
            scaler.step(self.opt)
            scaler.update()
        self.ema(self.teacher, self.student, self.m)


class MainDinoStep:
    """`main_dino`: the official modules and functions of facebookresearch/dino at `path`, the
    body of `train_one_epoch` for one iteration (its CUDA calls skipped on the CPU)."""

    def __init__(self, cfg, device, path):
        import torch.distributed as dist  # noqa: PLC0415
        import torch.nn as nn  # noqa: PLC0415
        from functools import partial  # noqa: PLC0415
        sys.path.insert(0, os.path.abspath(path))
        import main_dino  # noqa: PLC0415
        import utils as dino_utils  # noqa: PLC0415
        import vision_transformer as vits  # noqa: PLC0415
        import warnings  # noqa: PLC0415
        warnings.filterwarnings("ignore", category=FutureWarning)  # nn.utils.weight_norm
        if not dist.is_initialized():  # DINOLoss.update_center all-reduces unconditionally
            import socket  # noqa: PLC0415
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                                    world_size=1)
        rt, m, h, o, lcfg, a = (cfg[k] for k in
                                ("runtime", "model", "head", "optim", "loss", "augmentation"))
        assert o["optimizer"] == "adamw", "the PyTorch step implements AdamW (the official default)"
        dim, depth, heads = vit_dims(m)
        torch.manual_seed(rt["seed"])

        def vit(drop_path_rate):
            return vits.VisionTransformer(
                patch_size=m["patch_size"], embed_dim=dim, depth=depth, num_heads=heads,
                mlp_ratio=m["mlp_ratio"], qkv_bias=m["qkv_bias"], img_size=[m["img_size"]],
                norm_layer=partial(nn.LayerNorm, eps=m["layer_norm_eps"]),
                drop_path_rate=drop_path_rate)

        def head(norm_last_layer):
            # The official CLI fixes nlayers / hidden / bottleneck at the DINOHead defaults; a
            # preset that changes them gets the same shapes on both sides.
            return vits.DINOHead(dim, h["out_dim"], use_bn=h["use_bn"],
                                 norm_last_layer=norm_last_layer, nlayers=h["nlayers"],
                                 hidden_dim=h["hidden_dim"], bottleneck_dim=h["bottleneck_dim"])

        self.student = dino_utils.MultiCropWrapper(vit(m["drop_path_rate"]),
                                                   head(h["norm_last_layer"])).to(device)
        self.teacher = dino_utils.MultiCropWrapper(vit(0.0), head(True)).to(device)
        self.teacher.load_state_dict(self.student.state_dict())
        for p in self.teacher.parameters():
            p.requires_grad = False
        self.n_crops = 2 + a["local_crops_number"]
        self.loss_fn = main_dino.DINOLoss(
            h["out_dim"], self.n_crops, lcfg["warmup_teacher_temp"], lcfg["teacher_temp"],
            lcfg["warmup_teacher_temp_epochs"], o["epochs"], lcfg["student_temp"],
            lcfg["center_momentum"]).to(device)
        self.opt = torch.optim.AdamW(dino_utils.get_params_groups(self.student))
        for i, group in enumerate(self.opt.param_groups):
            group["lr"] = o["lr"] * o["batch_size"] / 256
            if i == 0:
                group["weight_decay"] = o["weight_decay"]
        self.utils, self.clip_grad = dino_utils, o["clip_grad"]
        self.freeze_last_layer = cfg["schedule"]["freeze_last_layer"]
        # Past the frozen last layer, as `dino bench train` times it.
        self.epoch = min(self.freeze_last_layer, o["epochs"] - 1)
        self.m = cfg["schedule"]["momentum_teacher"]
        self.batch = o["batch_size"]
        self.s_fwd, self.t_fwd = self.student, self.teacher

    def compile(self):
        self.s_fwd, self.t_fwd = torch.compile(self.student), torch.compile(self.teacher)

    def forward_backward(self, crops, autocast, scaler):
        # The official loader yields one tensor per view.
        images = list(crops[0].chunk(2)) + (list(crops[1].chunk(self.n_crops - 2))
                                            if len(crops) > 1 else [])
        with autocast():
            teacher_output = self.t_fwd(images[:2])
            student_output = self.s_fwd(images)
            loss = self.loss_fn(student_output, teacher_output, self.epoch)
        lval = loss.item()
        if not math.isfinite(lval):
            sys.exit(f"Loss is {lval}, stopping training")
        self.opt.zero_grad()
        (loss if scaler is None else scaler.scale(loss)).backward()
        return lval

    def bookkeeping(self, scaler):
        u = self.utils
        if scaler is None:
            if self.clip_grad:
                u.clip_gradients(self.student, self.clip_grad)
            u.cancel_gradients_last_layer(self.epoch, self.student, self.freeze_last_layer)
            self.opt.step()
        else:
            if self.clip_grad:
                scaler.unscale_(self.opt)
                u.clip_gradients(self.student, self.clip_grad)
            u.cancel_gradients_last_layer(self.epoch, self.student, self.freeze_last_layer)
            scaler.step(self.opt)
            scaler.update()
        with torch.no_grad():
            m = self.m
            for param_q, param_k in zip(self.student.parameters(), self.teacher.parameters()):
                param_k.data.mul_(m).add_((1 - m) * param_q.detach().data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="resolved TOML from `dino config show`")
    ap.add_argument("--style", choices=["official", "foreach", "main_dino"], default="official")
    ap.add_argument("--official", help="checkout of facebookresearch/dino (--style main_dino)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--input", choices=["synthetic", "loader"], default="synthetic")
    ap.add_argument("--data")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--device", help="override runtime.device (cpu, cuda)")
    ap.add_argument("--precision", help="override runtime.precision (fp32, bf16, fp16)")
    ap.add_argument("--threads", type=int,
                    help="libtorch intra-op threads (default: runtime.torch_threads; 0 = "
                         "libtorch's default)")
    ap.add_argument("--alloc", choices=["keep", "default"], default="keep",
                    help="glibc allocator settings (keep = the dino binary's)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    with open(args.config, "rb") as f:
        cfg = tomllib.load(f)
    rt, o, a = cfg["runtime"], cfg["optim"], cfg["augmentation"]
    threads = rt["torch_threads"] if args.threads is None else args.threads
    if threads:
        torch.set_num_threads(threads)
    device, prec = resolve(cfg, args.device)
    prec = args.precision or prec
    if args.style == "main_dino":
        assert args.official, "--style main_dino needs --official PATH (a facebookresearch/dino checkout)"
        step = MainDinoStep(cfg, device, args.official)
    else:
        step = ProjectStep(cfg, device, args.style)
    if args.compile:
        step.compile()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)
    scaler = torch.amp.GradScaler(device.type) if prec == "fp16" else None

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

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
    phases = {"data_wait": [], "forward_backward": [], "bookkeeping": []}
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        crops = next(batches)
        sync()
        t1 = time.perf_counter()
        lval = step.forward_backward(crops, autocast, scaler)
        sync()
        t2 = time.perf_counter()
        step.bookkeeping(scaler)
        sync()
        t3 = time.perf_counter()
        if i >= args.warmup:
            times.append(t3 - t0)
            waits += t1 - t0
            for k, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2)):
                phases[k].append(v)
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
        "phase_ms": {k: statistics.median(v) * 1e3 for k, v in phases.items()},
        "data_wait_fraction": waits / wall, "torch_threads": torch.get_num_threads(),
        "allocator": ALLOC, "omp_wait": omp_wait(),
        "env": {k: os.environ[k] for k in sorted(os.environ)
                if k.startswith(("OMP_", "MKL_", "ATEN_", "ONEDNN_", "DNNL_", "KMP_"))},
        "last_loss": last, "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
