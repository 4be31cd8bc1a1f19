#!/usr/bin/env python3
"""PyTorch reference for the Rust `dino-model` crate: the DINO ViT, DINO head and multi-crop wrapper.

Written from the DINO paper (Caron et al. 2021, §3.1 and appendix) and the description of the
official `vision_transformer.py` / `utils.MultiCropWrapper` (module names, registration order,
init), not copied. Same module/parameter names as the official code, so `state_dict()` keys are
the official ones.

Modes (all write safetensors with a small built-in writer; the `safetensors` package is not needed):
  parity   --arch A --patch P --out DIR [--sizes 224x224,96x96,224x160] [--batch 2] [--out-dim 256]
           DIR/init.safetensors     state dict right after seeded construction (init parity)
           DIR/weights.safetensors  the same weights perturbed (LayerNorm/bias/g away from 1/0)
           DIR/io.safetensors       input.HxW, cls.HxW, attn.HxW, logits.HxW, inter.HxW (last 2
                                    blocks, stacked), cls_official.HxW (v1 scale-factor pos-embed),
                                    cls_map.HxW (last block's CLS row over the patches,
                                    [B, heads, H/P, W/P]: the attention maps' layout)
  head_bn  --out DIR               a BatchNorm head: train-mode and eval-mode outputs and stats
  checkpoints --out DIR            official-style .pth files for the importer, plus the expected
                                   converted tensors
"""
import argparse
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

# The ViT itself lives with the model crate (dino export traces it too).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "crates", "model", "python"))
from dino_vit import (Attention, Block, Mlp, PatchEmbed, VisionTransformer,  # noqa: E402,F401
                      drop_path, trunc_normal_)

ARCHS = {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6), "vit_base": (768, 12, 12)}
DTYPES = {torch.float32: "F32", torch.int64: "I64"}


def write_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        data = t.numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for c in chunks:
            f.write(c)


class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, use_bn=False, norm_last_layer=True, nlayers=3,
                 hidden_dim=2048, bottleneck_dim=256):
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers = []
            dims = [in_dim] + [hidden_dim] * (nlayers - 1)
            for i in range(nlayers - 1):
                layers.append(nn.Linear(dims[i], hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight)
                nn.init.zeros_(m.bias)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    def forward(self, x):
        x = F.normalize(self.mlp(x), dim=-1, p=2, eps=1e-12)
        return self.last_layer(x)


class MultiCropWrapper(nn.Module):
    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops):
        sizes = torch.tensor([c.shape[-2] * 100000 + c.shape[-1] for c in crops])
        ends = torch.cumsum(torch.unique_consecutive(sizes, return_counts=True)[1], 0)
        feats, start = [], 0
        for end in ends.tolist():
            feats.append(self.backbone(torch.cat(crops[start:end])))
            start = end
        return self.head(torch.cat(feats))


def build(arch, patch, depth, out_dim, seed, **head_kw):
    dim, d, heads = ARCHS[arch]
    torch.manual_seed(seed)
    vit = VisionTransformer(patch=patch, dim=dim, depth=depth or d, heads=heads)
    head = DINOHead(dim, out_dim, **head_kw)
    return MultiCropWrapper(vit, head)


def perturb_(model, seed):
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.is_floating_point():
                scale = 0.3 if p.dim() <= 1 or name.endswith("weight_g") else 0.02
                p.add_(torch.randn(p.shape, generator=g) * scale)


def parse_size(s):
    h, w = s.split("x")
    return int(h), int(w)


def mode_parity(a):
    model = build(a.arch, a.patch, a.depth, a.out_dim, a.seed)
    write_safetensors(os.path.join(a.out, "init.safetensors"), model.state_dict())
    perturb_(model, a.seed)
    write_safetensors(os.path.join(a.out, "weights.safetensors"), model.state_dict())
    model.eval()
    g = torch.Generator().manual_seed(a.seed + 7)
    io = {}
    with torch.no_grad():
        for s in a.sizes.split(","):
            h, w = parse_size(s)
            x = torch.randn(a.batch, 3, h, w, generator=g)
            io[f"input.{s}"] = x
            io[f"cls.{s}"] = model.backbone(x)
            io[f"attn.{s}"] = attn = model.backbone.last_selfattention(x)
            # Patch tokens come row by row (Conv2d output flattened over H then W), so the CLS
            # row over them reshapes to H/P rows of W/P columns, whatever the aspect ratio.
            io[f"cls_map.{s}"] = attn[:, :, 0, 1:].reshape(
                a.batch, attn.shape[1], h // a.patch, w // a.patch)
            io[f"logits.{s}"] = model([x])
            io[f"inter.{s}"] = torch.stack(model.backbone.intermediate_layers(x, 2))
            if (h // a.patch, w // a.patch) != (224 // a.patch,) * 2:
                model.backbone.official_interp = True
                io[f"cls_official.{s}"] = model.backbone(x)
                model.backbone.official_interp = False
    write_safetensors(os.path.join(a.out, "io.safetensors"), io)


def mode_head_bn(a):
    torch.manual_seed(a.seed)
    head = DINOHead(48, 16, use_bn=True, norm_last_layer=False, nlayers=3, hidden_dim=32,
                    bottleneck_dim=8)
    perturb_(head, a.seed)
    out = {f"w.{k}": v.clone() for k, v in head.state_dict().items()}
    x = torch.randn(6, 48, generator=torch.Generator().manual_seed(5))
    head.train()
    with torch.no_grad():
        out["train_out"] = head(x)
    head.eval()
    with torch.no_grad():
        out["eval_out"] = head(x)
    out["x"] = x
    out.update({f"after.{k}": v.clone() for k, v in head.state_dict().items()})
    write_safetensors(os.path.join(a.out, "head_bn.safetensors"), out)


def mode_checkpoints(a):
    student = build("vit_tiny", 16, 2, 64, a.seed, hidden_dim=32, bottleneck_dim=16)
    teacher = build("vit_tiny", 16, 2, 64, a.seed + 1, hidden_dim=32, bottleneck_dim=16)
    s_sd, t_sd = student.state_dict(), teacher.state_dict()
    # Released backbone-only weights: the bare ViT state dict.
    torch.save(teacher.backbone.state_dict(), os.path.join(a.out, "backbone_only.pth"))
    # Training checkpoint: student wrapped in DistributedDataParallel ('module.'), teacher not.
    ckpt = {
        "student": {f"module.{k}": v for k, v in s_sd.items()},
        "teacher": dict(t_sd),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "epoch": 3,
        "args": argparse.Namespace(arch="vit_tiny", patch_size=16, out_dim=64),
        "dino_loss": {"center": torch.zeros(1, 64)},
    }
    torch.save(ckpt, os.path.join(a.out, "checkpoint.pth"))
    write_safetensors(os.path.join(a.out, "expected_student.safetensors"), s_sd)
    write_safetensors(os.path.join(a.out, "expected_teacher.safetensors"), t_sd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["parity", "head_bn", "checkpoints"])
    ap.add_argument("--arch", default="vit_small", choices=sorted(ARCHS))
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--depth", type=int, default=0, help="0 = the arch's depth")
    ap.add_argument("--sizes", default="224x224,96x96,224x160")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--out-dim", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    {"parity": mode_parity, "head_bn": mode_head_bn, "checkpoints": mode_checkpoints}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
