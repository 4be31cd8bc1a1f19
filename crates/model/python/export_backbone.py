"""`dino export`: a ViT backbone (safetensors with the official parameter names, as `dino` writes
them) exported as TorchScript or ONNX, with the batch, image height and width left dynamic.

The exported graph takes images `[B, 3, H, W]` (normalised, H and W multiples of the patch size)
and returns the final-norm CLS token `[B, D]`, the feature k-NN and `dino embed` use.

Usage: export_backbone.py --weights W.safetensors --config SHAPE.json --format onnx|torchscript
       --out FILE
SHAPE.json: {"patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias",
             "layer_norm_eps", "img_size", "official_interp"}.
Prints one JSON line: {"out": FILE, "format": ..., "parameters": N}.
"""
import argparse
import json
import os
import struct
import sys
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dino_vit import VisionTransformer  # noqa: E402


def read_safetensors(path):
    """The F32 tensors of a safetensors file (the only dtype a dino backbone holds)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            sys.exit(f"{path}: tensor {name} is {meta['dtype']}, expected F32")
        a, b = meta["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype="<f4").copy()).reshape(meta["shape"])
    return out


class ClsFeature(torch.nn.Module):
    """The backbone's output as `dino embed` gives it: the final-norm CLS token."""

    def __init__(self, vit):
        super().__init__()
        self.vit = vit

    def forward(self, image):
        return self.vit(image)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(a.config) as f:
        c = json.load(f)
    vit = VisionTransformer(patch=c["patch_size"], dim=c["embed_dim"], depth=c["depth"],
                            heads=c["num_heads"], mlp_ratio=c["mlp_ratio"], qkv_bias=c["qkv_bias"],
                            img_size=c["img_size"], eps=c["layer_norm_eps"],
                            official_interp=c["official_interp"], export_friendly=True)
    missing, unexpected = vit.load_state_dict(read_safetensors(a.weights), strict=False)
    if missing or unexpected:
        sys.exit(f"weights do not fit the ViT: missing {missing}, unexpected {unexpected}")
    model = ClsFeature(vit).eval()
    # A non-square example, so that no size is mistaken for a square one.
    p = c["patch_size"]
    example = torch.randn(2, 3, 2 * p * 3, p * 3 * 3)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = c.get("metadata", {})
        if a.format == "torchscript":
            traced = torch.jit.trace(model, example, check_trace=False)
            torch.jit.save(traced, a.out, _extra_files={"metadata.json": json.dumps(meta)})
        else:
            torch.onnx.export(model, (example,), a.out, input_names=["image"],
                              output_names=["cls"], opset_version=17, dynamo=False,
                              dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                            "cls": {0: "batch"}})
            if meta:
                # The preprocessing travels with the graph (onnxruntime: modelmeta.custom_metadata_map).
                import onnx
                m = onnx.load(a.out)
                for k, v in meta.items():
                    p_ = m.metadata_props.add()
                    p_.key, p_.value = k, v
                onnx.save(m, a.out)
    print(json.dumps({"out": a.out, "format": a.format,
                      "parameters": sum(t.numel() for t in vit.state_dict().values())}))


if __name__ == "__main__":
    main()
