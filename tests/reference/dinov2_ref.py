#!/usr/bin/env python3
"""A DINOv2-layout ViT of our own in plain PyTorch, written from reading facebookresearch/dinov2
(`models/vision_transformer.py` DinoVisionTransformer, `layers/block.py`, `layers/attention.py`,
`layers/layer_scale.py`, `layers/swiglu_ffn.py` SwiGLUFFNFused, `hub/backbones.py`), for the
parity tests of `crates/model/tests/dinov2_parity.rs`. Nothing here imports dinov2.

Builds a small random network with the torch.hub backbone's state-dict names (`cls_token`,
`pos_embed` for `img_size` px, `register_tokens`, `mask_token`, `patch_embed.proj.*`,
`blocks.N.norm1`, `attn.qkv`, `attn.proj`, `ls1.gamma`, `mlp.fc1/fc2` or `mlp.w12/w3`,
`ls2.gamma`, `norm`), and writes into --out:
  * `hub.pth`: the state dict as the hub file holds it (torch.save of a plain dict);
  * `tokens.safetensors`: inputs `x{i}` [B, 3, H, W] and the normalized outputs `cls{i}` [B, D],
    `reg{i}` [B, R, D], `patch{i}` [B, N, D] for each size, in inference mode; also
    `attn{i}` [B, heads, N], the last block's CLS attention over the patch keys. With --masks
    also `mask_token` [1, D], random patch masks `masks{i}` [B, N] (1.0 = masked, about a third
    of the patches, none in the first crop) and the outputs `mcls{i}`, `mpatch{i}` of the network
    whose masked patch embeddings are replaced by `mask_token` before CLS and the position table
    are added (dinov2 `prepare_tokens_with_masks`, iBOT's student);
  * with --images DIR, `photos.safetensors`: `cls` [N, D] and `patch` [N, P, D] of real photos
    through the evaluation transform (`crates/cli/tests/dinov2_embed_cli.rs` compares
    `dino embed` of the imported file with them).
Prints one JSON line with the shape it used (and the photos' paths, in order).
"""
import argparse
import json
import math
import struct

import torch
import torch.nn.functional as F


def write_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().float()
        data = t.numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
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


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def to_tensor(img):
    """A PIL RGB image as the ImageNet-normalized float tensor [3, H, W] (torchvision's
    ToTensor + Normalize, the evaluation transform of eval_knn.py / dinov2)."""
    import numpy as np
    t = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
    return (t - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def center_crop(img, side, resize=256):
    """Resize(resize, bicubic) on the short side, then CenterCrop(side), as the evaluation."""
    from PIL import Image
    s = min(img.size)
    img = img.resize((round(img.width * resize / s), round(img.height * resize / s)),
                     Image.BICUBIC)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((left, top, left + side, top + side))


def photo_paths(folder, count):
    """The first `count` JPEGs under `folder` in ImageFolder order (class folders by name, files
    by name within each)."""
    import os
    paths = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        paths += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(".jpg")]
    return paths[:count]


def make_weights(a, g):
    """Random weights (scaled so every part of the network matters) under the hub names."""
    d, p, r = a.dim, a.patch, a.registers
    hidden = int(d * a.mlp_ratio)
    if a.ffn == "swiglu":
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8

    # --hub-init: token and layer weights 5x smaller (std 0.04 against the official init's
    # trunc_normal 0.02), so real photos give features about as smooth in the pixels as the hub
    # models' (the default's larger weights make every part count on random inputs, and amplify
    # a resize's rounding: mean cosine 0.87 on photos against 0.9999 with this flag).
    big = 0.2 if a.hub_init else 1.0

    def rnd(*shape, std=0.02):
        return torch.randn(*shape, generator=g) * std

    grid = a.img_size // p
    sd = {
        "cls_token": rnd(1, 1, d, std=0.5 * big),
        "pos_embed": rnd(1, 1 + grid * grid, d, std=0.5 * big),
        "mask_token": rnd(1, d),
        "patch_embed.proj.weight": rnd(d, 3, p, p, std=0.05),
        "patch_embed.proj.bias": rnd(d),
    }
    if r:
        sd["register_tokens"] = rnd(1, r, d, std=0.5 * big)
    for i in range(a.depth):
        b = f"blocks.{i}."
        sd[b + "norm1.weight"] = 1 + rnd(d, std=0.1)
        sd[b + "norm1.bias"] = rnd(d, std=0.1)
        sd[b + "attn.qkv.weight"] = rnd(3 * d, d, std=0.2 * big)
        sd[b + "attn.qkv.bias"] = rnd(3 * d, std=0.1)
        sd[b + "attn.proj.weight"] = rnd(d, d, std=0.2 * big)
        sd[b + "attn.proj.bias"] = rnd(d, std=0.1)
        sd[b + "norm2.weight"] = 1 + rnd(d, std=0.1)
        sd[b + "norm2.bias"] = rnd(d, std=0.1)
        if a.ffn == "swiglu":
            sd[b + "mlp.w12.weight"] = rnd(2 * hidden, d, std=0.2 * big)
            sd[b + "mlp.w12.bias"] = rnd(2 * hidden, std=0.1)
            sd[b + "mlp.w3.weight"] = rnd(d, hidden, std=0.2 * big)
            sd[b + "mlp.w3.bias"] = rnd(d, std=0.1)
        else:
            sd[b + "mlp.fc1.weight"] = rnd(hidden, d, std=0.2 * big)
            sd[b + "mlp.fc1.bias"] = rnd(hidden, std=0.1)
            sd[b + "mlp.fc2.weight"] = rnd(d, hidden, std=0.2 * big)
            sd[b + "mlp.fc2.bias"] = rnd(d, std=0.1)
        if a.layerscale:
            # Trained gains are far from their 1e-5 start: use values that make the branches count.
            sd[b + "ls1.gamma"] = a.layerscale * (1 + rnd(d, std=0.5))
            sd[b + "ls2.gamma"] = a.layerscale * (1 + rnd(d, std=0.5))
    sd["norm.weight"] = 1 + rnd(d, std=0.1)
    sd["norm.bias"] = rnd(d, std=0.1)
    return sd


def pos_table(sd, a, h, w):
    """The position table for an h x w input, as DinoVisionTransformer.interpolate_pos_encoding
    resizes it: untouched for its own square grid; else bicubic, with scale factors
    (g + offset) / g0 when the offset is non-zero, or to the explicit size (antialiased or not)."""
    pos = sd["pos_embed"]
    n0 = pos.shape[1] - 1
    g0 = int(math.sqrt(n0))
    gh, gw = h // a.patch, w // a.patch
    if gh * gw == n0 and h == w:
        return pos
    grid = pos[:, 1:].reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
    if a.offset:
        out = F.interpolate(grid, mode="bicubic", antialias=a.antialias,
                            scale_factor=((gh + a.offset) / g0, (gw + a.offset) / g0))
    else:
        out = F.interpolate(grid, mode="bicubic", antialias=a.antialias, size=(gh, gw))
    assert out.shape[-2:] == (gh, gw)
    out = out.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
    return torch.cat([pos[:, :1], out], dim=1)


def forward(sd, a, x, masks=None):
    d, heads = a.dim, a.heads
    eps = 1e-6
    b, _, h, w = x.shape
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=a.patch)
    t = t.flatten(2).transpose(1, 2)
    if masks is not None:
        t = torch.where(masks.unsqueeze(-1), sd["mask_token"].unsqueeze(0), t)
    t = torch.cat([sd["cls_token"].expand(b, -1, -1), t], dim=1) + pos_table(sd, a, h, w)
    if a.registers:
        t = torch.cat([t[:, :1], sd["register_tokens"].expand(b, -1, -1), t[:, 1:]], dim=1)
    attn_last = None
    for i in range(a.depth):
        p = f"blocks.{i}."
        y = F.layer_norm(t, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
        n = y.shape[1]
        qkv = F.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        qkv = qkv.reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (d // heads) ** -0.5, qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        attn_last = att
        y = (att @ v).transpose(1, 2).reshape(b, n, d)
        y = F.linear(y, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        if a.layerscale:
            y = y * sd[p + "ls1.gamma"]
        t = t + y
        y = F.layer_norm(t, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
        if a.ffn == "swiglu":
            x1, x2 = F.linear(y, sd[p + "mlp.w12.weight"], sd[p + "mlp.w12.bias"]).chunk(2, dim=-1)
            y = F.linear(F.silu(x1) * x2, sd[p + "mlp.w3.weight"], sd[p + "mlp.w3.bias"])
        else:
            y = F.linear(F.gelu(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                         sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        if a.layerscale:
            y = y * sd[p + "ls2.gamma"]
        t = t + y
    t = F.layer_norm(t, (d,), sd["norm.weight"], sd["norm.bias"], eps)
    r = a.registers
    return t[:, 0], t[:, 1:1 + r], t[:, 1 + r:], attn_last[:, :, 0, 1 + r:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dim", type=int, default=48)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--patch", type=int, default=14)
    ap.add_argument("--img-size", type=int, default=518)
    ap.add_argument("--mlp-ratio", type=float, default=4.0)
    ap.add_argument("--registers", type=int, default=0)
    ap.add_argument("--layerscale", type=float, default=0.0)
    ap.add_argument("--ffn", choices=["mlp", "swiglu"], default="mlp")
    ap.add_argument("--offset", type=float, default=0.1)
    ap.add_argument("--antialias", action="store_true")
    ap.add_argument("--sizes", default="224x224,98x140")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--images", default=None,
                    help="also write photos.safetensors: `cls` [N, D] of the first --count "
                         "JPEGs of this folder at --crop px (resize 256 bicubic, center crop, "
                         "ImageNet normalization), their paths in the printed JSON")
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--hub-init", action="store_true",
                    help="weights near the official init's scale (5x smaller than the default)")
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--masks", action="store_true")
    a = ap.parse_args()
    torch.set_default_dtype(torch.float64)  # the reference in double: its own error is nil
    g = torch.Generator().manual_seed(a.seed)
    sd = make_weights(a, g)
    torch.save({k: v.float() for k, v in sd.items()}, f"{a.out}/hub.pth")
    # The Rust side runs float32 weights: the reference computes with the same rounded values.
    sd = {k: v.float().double() for k, v in sd.items()}
    out = {}
    for i, size in enumerate(a.sizes.split(",")):
        h, w = (int(s) for s in size.split("x"))
        x = torch.randn(a.batch, 3, h, w, generator=g).float().double()
        with torch.no_grad():
            cls, reg, patch, attn = forward(sd, a, x)
        out.update({f"x{i}": x, f"cls{i}": cls, f"reg{i}": reg, f"patch{i}": patch,
                    f"attn{i}": attn})
        if a.masks:
            n = (h // a.patch) * (w // a.patch)
            masks = torch.rand(a.batch, n, generator=g) < 1 / 3
            masks[0] = False
            with torch.no_grad():
                mcls, _, mpatch, _ = forward(sd, a, x, masks)
            out.update({f"masks{i}": masks.double(), f"mcls{i}": mcls, f"mpatch{i}": mpatch,
                        "mask_token": sd["mask_token"]})
    write_safetensors(f"{a.out}/tokens.safetensors", out)
    paths = []
    if a.images:
        from PIL import Image
        paths = photo_paths(a.images, a.count)
        x = torch.stack([to_tensor(center_crop(Image.open(p).convert("RGB"), a.crop))
                         for p in paths]).double()
        with torch.no_grad():
            cls, reg, patch, _ = forward(sd, a, x)
        write_safetensors(f"{a.out}/photos.safetensors", {"cls": cls, "patch": patch})
    print(json.dumps({"paths": paths, "dim": a.dim, "depth": a.depth, "heads": a.heads, "patch": a.patch,
                      "img_size": a.img_size, "registers": a.registers,
                      "layerscale": a.layerscale, "ffn": a.ffn, "sizes": a.sizes}))


if __name__ == "__main__":
    main()
