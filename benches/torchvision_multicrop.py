"""Reference throughput of the official-style DINO data pipeline: torchvision ImageFolder +
Pillow + the DINO multi-crop augmentation in DataLoader worker processes.

The augmentation follows the paper (Caron et al. 2021, Sec. 3.1 and Appendix) and the
official defaults: 2 global views (RandomResizedCrop 224, scale (0.4, 1), bicubic) and 8 local
views (96, scale (0.05, 0.4)); each view: horizontal flip p 0.5, colour jitter (0.4, 0.4, 0.2,
0.1) w.p. 0.8, grayscale p 0.2, Gaussian blur (Pillow, sigma ~ U(0.1, 2)) w.p. 1.0 / 0.1 / 0.5
for global 1 / global 2 / locals, solarization w.p. 0.2 on global 2 only, then ToTensor +
ImageNet Normalize. DataLoader: shuffle, drop_last, `--workers` processes, batch `--batch`.

Timing: one warm-up batch, then `--batches` batches; prints one JSON line with images/s.
Compare with `dino bench data` (crates/data/src/bench.rs) on the same folder and settings;
see docs/bench/data.md.

usage: torchvision_multicrop.py --data DIR [--batch 64] [--batches 10] [--workers 2]
"""
import argparse
import json
import os
import platform
import random
import time

import torch
from PIL import ImageFilter, ImageOps
from torchvision import datasets, transforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class MaybeBlur:
    """Pillow Gaussian blur with radius (= sigma) ~ U(lo, hi), applied with probability p."""

    def __init__(self, p, lo=0.1, hi=2.0):
        self.p, self.lo, self.hi = p, lo, hi

    def __call__(self, img):
        if random.random() < self.p:
            return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.lo, self.hi)))
        return img


class MaybeSolarize:
    """Pillow solarize (threshold 128) with probability p."""

    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        return ImageOps.solarize(img) if random.random() < self.p else img


class DinoMultiCrop:
    def __init__(self, global_scale=(0.4, 1.0), local_scale=(0.05, 0.4), n_local=8,
                 global_size=224, local_size=96):
        bicubic = transforms.InterpolationMode.BICUBIC
        photometric = [
            transforms.RandomHorizontalFlip(p=0.5),
            transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            transforms.RandomGrayscale(p=0.2),
        ]
        to_tensor = [transforms.ToTensor(), transforms.Normalize(MEAN, STD)]

        def view(size, scale, extra):
            crop = transforms.RandomResizedCrop(size, scale=scale, interpolation=bicubic)
            return transforms.Compose([crop, *photometric, *extra, *to_tensor])

        self.global1 = view(global_size, global_scale, [MaybeBlur(1.0)])
        self.global2 = view(global_size, global_scale, [MaybeBlur(0.1), MaybeSolarize(0.2)])
        self.local = view(local_size, local_scale, [MaybeBlur(0.5)])
        self.n_local = n_local

    def __call__(self, img):
        return [self.global1(img), self.global2(img)] + [
            self.local(img) for _ in range(self.n_local)
        ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    transform = DinoMultiCrop()
    dataset = datasets.ImageFolder(args.data, transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers,
        drop_last=True, persistent_workers=args.workers > 0,
    )

    def batches():
        while True:  # cycle epochs; persistent workers avoid re-forking per epoch
            yield from loader

    it = batches()
    next(it)  # warm-up: worker start-up, page cache
    t0 = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    wall = time.perf_counter() - t0
    images = args.batches * args.batch
    print(json.dumps({
        "pipeline": "torchvision+Pillow DataLoader",
        "data": args.data, "dataset_len": len(dataset), "batch_size": args.batch,
        "batches": args.batches, "workers": args.workers, "wall_s": round(wall, 3),
        "images_per_s": round(images / wall, 2),
        "crops_per_s": round(images * (2 + transform.n_local) / wall, 1),
        "torch": torch.__version__, "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
