"""Reference outputs of DINO's augmentation ops, computed with torchvision 0.28 on PIL images
(the backend the official DataAugmentationDINO in facebookresearch/dino main_dino.py runs on).

Usage: pillow_ops.py DATA_DIR OUT_DIR

Writes raw RGB8 files (row-major HWC, no header) and OUT_DIR/cases.txt, one case per line as
space-separated key=value tokens: case, op, in, iw, ih, out, ow, oh, plus the op's parameters
(resize: top left cw ch; brightness/contrast/saturation/hue: f; blur: sigma; eval: crop ratio).
Inputs are decoded here with Pillow so JPEG decoder differences cannot leak into the comparison.
"""

import os
import sys

import numpy as np
from PIL import Image, ImageFilter, ImageOps
import torchvision.transforms as T
import torchvision.transforms.functional as F
from torchvision.transforms import InterpolationMode

PHOTOS = [
    "hymenoptera/train/ants/0013035.jpg",
    "hymenoptera/train/ants/1030023514_aad5c608f9.jpg",
    "hymenoptera/val/bees/1032546534_06907fe3b3.jpg",
]
SMALL = ["cifar10/samples/test_cat_0000.jpg", "cifar10/samples/test_ship_0000.jpg"]


def main():
    data, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    lines = []

    def save(img, name):
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        arr.tofile(os.path.join(out, name))
        return arr.shape[1], arr.shape[0]

    def case(name, op, src_name, src, result, **params):
        ow, oh = save(result, name + ".out")
        iw, ih = src.size
        extra = " ".join(f"{k}={v!r}" for k, v in params.items())
        lines.append(
            f"case={name} op={op} in={src_name} iw={iw} ih={ih} out={name}.out ow={ow} oh={oh} {extra}".strip()
        )

    for k, rel in enumerate(PHOTOS + SMALL):
        img = Image.open(os.path.join(data, rel)).convert("RGB")
        src_name = f"img{k}.in"
        save(img, src_name)
        w, h = img.size
        tag = f"i{k}"
        bic = InterpolationMode.BICUBIC
        crops = []
        if w >= 200:
            crops = [
                ("resize_down_global", (0, 0, h, w), 224),
                ("resize_down_global", (h // 7, w // 5, int(h * 0.63), int(w * 0.71)), 224),
                ("resize_down_local", (h // 3, w // 4, int(h * 0.4), int(w * 0.3)), 96),
                ("resize_up_global", (h // 2, w // 2, 61, 47), 224),
                ("resize_up_local", (11, 17, 41, 53), 96),
            ]
        else:
            crops = [
                ("resize_up_global", (0, 0, h, w), 224),
                ("resize_up_local", (3, 2, 20, 27), 96),
                ("resize_down_local", (0, 0, h, w), 24),
            ]
        for j, (op, (top, left, ch, cw), size) in enumerate(crops):
            res = F.resized_crop(img, top, left, ch, cw, [size, size], bic, antialias=True)
            case(f"{tag}_{op}_{j}", "resize", src_name, img, res, top=top, left=left, cw=cw, ch=ch)
        for f in [0.6, 0.83, 1.0, 1.37, 1.4]:
            case(f"{tag}_brightness_{f}", "brightness", src_name, img, F.adjust_brightness(img, f), f=f)
        for f in [0.6, 0.91, 1.23, 1.4]:
            case(f"{tag}_contrast_{f}", "contrast", src_name, img, F.adjust_contrast(img, f), f=f)
        for f in [0.8, 0.97, 1.13, 1.2]:
            case(f"{tag}_saturation_{f}", "saturation", src_name, img, F.adjust_saturation(img, f), f=f)
        for f in [-0.1, -0.037, 0.0, 0.05, 0.1, 0.5]:
            case(f"{tag}_hue_{f}", "hue", src_name, img, F.adjust_hue(img, f), f=f)
        case(f"{tag}_grayscale", "grayscale", src_name, img, F.rgb_to_grayscale(img, 3))
        for s in [0.1, 0.5, 1.0, 1.37, 2.0]:
            # DINO utils.GaussianBlur: img.filter(ImageFilter.GaussianBlur(radius=sigma)).
            case(f"{tag}_blur_{s}", "blur", src_name, img, img.filter(ImageFilter.GaussianBlur(radius=s)), sigma=s)
        case(f"{tag}_solarize", "solarize", src_name, img, ImageOps.solarize(img, 128))
        case(f"{tag}_flip", "flip", src_name, img, F.hflip(img))
        for crop, ratio in [(224, 256 / 224), (96, 1.0), (32, 1.14)]:
            tf = T.Compose([T.Resize(round(crop * ratio), interpolation=bic), T.CenterCrop(crop)])
            case(f"{tag}_eval_{crop}", "eval", src_name, img, tf(img), crop=crop, ratio=ratio)

    with open(os.path.join(out, "cases.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
