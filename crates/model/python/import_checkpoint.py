#!/usr/bin/env python3
"""Convert an official DINO PyTorch checkpoint to safetensors under `MultiCropWrapper` names.

Usage: import_checkpoint.py --from model.pth --out model.safetensors [--key teacher]

Accepted inputs (facebookresearch/dino):
  * backbone-only weights, e.g. the released `dino_deitsmall16_pretrain.pth`
    (keys `cls_token`, `blocks.0.attn.qkv.weight`, ...) or `dino_resnet50_pretrain.pth`
    (torchvision keys without `fc`: `conv1.weight`, `layer1.0.bn1.running_mean`, ...); a
    torchvision state dict's `fc.weight` / `fc.bias` are dropped (reported as skipped), as the
    official MultiCropWrapper replaces `fc` by identity;
  * full training checkpoints `checkpoint.pth` with `student` / `teacher` entries, whose keys carry
    `module.` (DistributedDataParallel) and `backbone.` / `head.` (MultiCropWrapper) prefixes;
  * any bare state dict in either naming;
  * DINOv2's torch.hub backbone files (`dinov2_vits14_pretrain.pth`,
    `dinov2_vits14_reg4_pretrain.pth`, ...: dinov2 `hub/backbones.py`): the same ViT names plus
    `register_tokens`, `blocks.N.ls1.gamma` / `ls2.gamma` (LayerScale), `mlp.w12` / `mlp.w3`
    (SwiGLU) and `mask_token` (iBOT's masked-patch token, dropped and reported as skipped: no
    backbone here reads it until iBOT). The ViT's shape and options are recognised from the
    tensors (see `recognise_vit`), printed under "model" and stored in the file's metadata as
    `dino_model` (JSON of `[model]` keys).

Output keys are those of the Rust `MultiCropWrapper`: `backbone.<official ViT key>` and, when the
source has a head, `head.<official DINOHead key>`. Floating tensors are written as float32.
Without --key, a checkpoint with a `teacher` entry yields the teacher (the official evaluation
default `--checkpoint_key teacher`). The file is read with `torch.load(weights_only=True)`
(only `argparse.Namespace` is allowed in addition, for the official `args` entry), so a
checkpoint cannot run code while being read.

Prints one JSON line describing what was converted; exits 2 with a message on bad input.
Writes safetensors itself (8-byte header length, JSON header, raw little-endian data) so the
`safetensors` Python package is not needed.
"""
import argparse
import json
import struct
import sys

import torch

DTYPES = {torch.float32: "F32", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8",
          torch.bool: "BOOL"}


def write_safetensors(path, tensors, metadata=None):
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in DTYPES:
            raise ValueError(f"{name}: unsupported dtype {t.dtype}")
        data = t.numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for c in chunks:
            f.write(c)


def fail(msg):
    print(f"import_checkpoint: {msg}", file=sys.stderr)
    sys.exit(2)


def is_state_dict(obj):
    return isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values())


def select(ckpt, key):
    if not isinstance(ckpt, dict):
        fail(f"expected a dict, found {type(ckpt).__name__}")
    if key is not None:
        if key not in ckpt:
            fail(f"no entry {key!r}; top-level keys: {sorted(map(str, ckpt))}")
        return ckpt[key], key
    if is_state_dict(ckpt):
        return ckpt, None
    for k in ("teacher", "state_dict", "model"):
        if k in ckpt and isinstance(ckpt[k], dict):
            return ckpt[k], k
    fail(f"cannot find a state dict; top-level keys: {sorted(map(str, ckpt))} (use --key)")


def convert(sd):
    tensors, skipped, stripped = {}, [], set()
    for k, v in sd.items():
        if not torch.is_tensor(v):
            skipped.append(k)
            continue
        if k.startswith("module."):
            k = k[len("module."):]
            stripped.add("module.")
        if v.is_floating_point():
            v = v.float()
        tensors[k] = v
    if not tensors:
        fail("the selected entry holds no tensors")
    # A torchvision classifier's `fc` (e.g. torchvision's own ImageNet ResNet weights): the
    # official MultiCropWrapper replaces it by nn.Identity, so DINO checkpoints never have it.
    for k in ("fc.weight", "fc.bias", "backbone.fc.weight", "backbone.fc.bias"):
        if k in tensors:
            del tensors[k]
            skipped.append(f"{k} (classifier; DINO's backbone has fc = identity)")
    if any(k.startswith(("backbone.", "head.")) for k in tensors):
        layout = "multicrop"
        other = sorted(k for k in tensors if not k.startswith(("backbone.", "head.")))
        if other:
            fail(f"mixed naming: {other[:5]} beside backbone./head. keys")
    else:
        layout = "backbone"
        tensors = {f"backbone.{k}": v for k, v in tensors.items()}
    return tensors, layout, sorted(stripped), sorted(skipped)


def recognise_vit(t):
    """The `[model]` keys of a backbone's ViT from its tensors (names without `backbone.`), or
    None when it is not a ViT. Heads are not stored in a state dict: every DINO and DINOv2 ViT
    has 64-wide heads (vit_small 6 x 64, vit_base 12 x 64, vit_large 16 x 64, vit_giant2 24 x 64),
    so num_heads = embed_dim / 64 (at least 1). The position interpolation follows the hub
    builders (dinov2 `hub/backbones.py`): antialiased with offset 0 for the register models, the
    0.1-offset scale factors otherwise."""
    if "cls_token" not in t or "patch_embed.proj.weight" not in t:
        return None
    dim, _, patch, _ = t["patch_embed.proj.weight"].shape
    depth = 1 + max(int(k.split(".")[1]) for k in t if k.startswith("blocks."))
    rows = t["pos_embed"].shape[1] - 1
    grid = int(round(rows ** 0.5))
    if grid * grid != rows:
        fail(f"pos_embed has {rows} patch entries, not a square grid")
    registers = t["register_tokens"].shape[1] if "register_tokens" in t else 0
    if "blocks.0.mlp.w12.weight" in t:
        ffn, hidden = "swiglu", t["blocks.0.mlp.w3.weight"].shape[1]
        # SwiGLUFFNFused: hidden = (int(dim * ratio * 2 / 3) + 7) // 8 * 8; the ratio is 4 in
        # every dinov2 arch: check that it gives this width.
        ratio = 4.0
        if (int(int(dim * ratio) * 2 / 3) + 7) // 8 * 8 != hidden:
            fail(f"SwiGLU hidden width {hidden} is not the mlp_ratio 4 width of dim {dim}")
    else:
        ffn = "mlp"
        ratio = t["blocks.0.mlp.fc1.weight"].shape[0] / dim
    layerscale = "blocks.0.ls1.gamma" in t
    model = {
        "arch": "custom", "patch_size": int(patch), "embed_dim": int(dim), "depth": depth,
        "num_heads": max(1, int(dim) // 64), "mlp_ratio": float(ratio),
        "qkv_bias": "blocks.0.attn.qkv.bias" in t, "img_size": int(grid * patch),
        "num_register_tokens": int(registers), "ffn": ffn,
        # The gains are loaded from the file; the init only switches the variables on
        # (DINOv2's training value, ssl_default_config.yaml student.layerscale).
        "layerscale_init": 1e-5 if layerscale else 0.0,
    }
    if registers or layerscale or ffn == "swiglu":
        model["pos_interpolation"] = "antialias" if registers else "scale_factor"
    return model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from", dest="src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--key", default=None)
    a = ap.parse_args(argv)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(a.src, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        fail(f"{a.src}: no such file")
    except Exception as e:  # noqa: BLE001 - report any unpickling failure as bad input
        fail(f"{a.src}: cannot be read as a PyTorch checkpoint with weights_only=True: {e}")
    sd, used = select(ckpt, a.key)
    if not isinstance(sd, dict):
        fail(f"entry {used!r} is a {type(sd).__name__}, not a state dict")
    tensors, layout, stripped, skipped = convert(sd)
    for k in ("backbone.mask_token",):
        if k in tensors:
            del tensors[k]
            skipped.append(f"{k[len('backbone.'):]} (DINOv2's iBOT mask token; unused here)")
    model = recognise_vit({k[len("backbone."):]: v for k, v in tensors.items()
                           if k.startswith("backbone.")})
    meta = {"format": "pt", "dino_source_key": used or "", "dino_layout": layout}
    if model is not None:
        meta["dino_model"] = json.dumps(model, sort_keys=True)
    write_safetensors(a.out, tensors, meta)
    print(json.dumps({
        "key": used, "layout": layout, "tensors": len(tensors),
        "backbone": sum(k.startswith("backbone.") for k in tensors),
        "head": sum(k.startswith("head.") for k in tensors),
        "stripped": stripped, "skipped": skipped, "model": model,
    }))


if __name__ == "__main__":
    main()
