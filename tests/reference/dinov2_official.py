#!/usr/bin/env python3
"""By-hand check against the OFFICIAL DINOv2 model (not run in CI: it needs a clone of
facebookresearch/dinov2 on PYTHONPATH). Builds `dinov2_vits14(pretrained=False)` or
`dinov2_vits14_reg(pretrained=False)` from `dinov2.hub.backbones` (random weights; xFormers
absent, the code falls back to plain PyTorch), saves its state dict as the hub file holds it
(`hub.pth`), and writes the official `forward_features` of real photos to `tokens.safetensors`:
inputs `x{i}` and `cls{i}` [B, D], `patch{i}` [B, N, D] for a 224 x 224 center crop and a
non-square 182 x 252 resize. Used by `crates/model/tests/dinov2_parity.rs`
(`official_dinov2_hub_file_by_hand`, ignored by default).

Usage: PYTHONPATH=/work/ref/dinov2 python dinov2_official.py --images DIR --out DIR [--reg]
"""
import argparse
import json
import os
import sys

import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from dinov2_ref import center_crop, photo_paths, to_tensor, write_safetensors  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reg", action="store_true")
    ap.add_argument("--count", type=int, default=16)
    a = ap.parse_args()
    from dinov2.hub.backbones import dinov2_vits14, dinov2_vits14_reg

    torch.manual_seed(0)
    model = (dinov2_vits14_reg if a.reg else dinov2_vits14)(pretrained=False).eval()
    torch.save(model.state_dict(), f"{a.out}/hub.pth")
    paths = photo_paths(a.images, a.count)
    imgs = [Image.open(p).convert("RGB") for p in paths]
    out = {}
    for i, prep in enumerate([lambda im: center_crop(im, 224),
                              lambda im: im.resize((252, 182), Image.BICUBIC)]):
        x = torch.stack([to_tensor(prep(im)) for im in imgs])
        with torch.no_grad():
            f = model.forward_features(x)
        out.update({f"x{i}": x, f"cls{i}": f["x_norm_clstoken"],
                    f"patch{i}": f["x_norm_patchtokens"]})
    write_safetensors(f"{a.out}/tokens.safetensors", out)
    print(json.dumps({"images": len(imgs), "paths": paths, "reg": a.reg,
                      "params": sum(p.numel() for p in model.parameters())}))


if __name__ == "__main__":
    main()
