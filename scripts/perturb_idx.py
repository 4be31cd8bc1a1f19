"""Writes a perturbed copy of an IDX test split (MNIST / Fashion-MNIST layout): the images
darkened, solarized or shifted, the labels copied.

Raw-pixel k-NN compares images pixel by pixel, so it depends on the test images looking exactly
like the training images: same exposure, same position. DINO's augmentations (colour jitter,
solarization, random resized crops) train its features to ignore some of these changes. The main
job (scripts/main_job.sh) scores k-NN on such a copy, with the unchanged training split as the
memory bank, to show how each feature copes.

    python scripts/perturb_idx.py --from /usr/share/datasets/fashion-mnist --out DIR --brightness 0.5

writes DIR/t10k-images-idx3-ubyte.gz and DIR/t10k-labels-idx1-ubyte.gz. Perturbations, applied
in this order:
- --brightness F: every pixel times F (torchvision's adjust_brightness), rounded and clipped;
- --solarize T: pixels >= T inverted (255 - x), as torchvision's solarize;
- --max-shift N: each image moved by a whole-pixel offset (dx, dy) drawn uniformly from
  [-N, N]^2 (numpy PCG64 seeded by --seed), the uncovered border filled with 0.
Keep "fashion" in DIR's name for Fashion-MNIST: the IDX reader takes the class names from it.
"""

import argparse
import gzip
import os
import shutil

import numpy as np


def read_images(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n, h, w = np.frombuffer(data[:16], dtype=">u4")
    if magic != 2051:
        raise SystemExit(f"{path}: not an IDX image file (magic {magic}, expected 2051)")
    return np.frombuffer(data[16:], dtype=np.uint8).reshape(n, h, w)


def shift(images, max_shift, seed):
    rng = np.random.Generator(np.random.PCG64(seed))
    n, h, w = images.shape
    offsets = rng.integers(-max_shift, max_shift + 1, size=(n, 2))
    out = np.zeros_like(images)
    for i, (dx, dy) in enumerate(offsets):
        src = images[i, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
        out[i, max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def perturb(images, brightness, solarize, max_shift, seed):
    x = images
    if brightness != 1.0:
        x = np.clip(np.round(x.astype(np.float64) * brightness), 0, 255).astype(np.uint8)
    if solarize is not None:
        x = np.where(x >= solarize, 255 - x, x).astype(np.uint8)
    if max_shift > 0:
        x = shift(x, max_shift, seed)
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="src", required=True, help="IDX folder (t10k-* files)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--brightness", type=float, default=1.0, help="factor, > 0")
    ap.add_argument("--solarize", type=int, default=None, help="threshold, 0-255")
    ap.add_argument("--max-shift", type=int, default=0, help="pixels, each axis")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.brightness <= 0:
        raise SystemExit("--brightness must be > 0")
    if args.max_shift < 0:
        raise SystemExit("--max-shift must be >= 0")
    if args.solarize is not None and not 0 <= args.solarize <= 255:
        raise SystemExit("--solarize must be in 0..=255")
    images = read_images(os.path.join(args.src, "t10k-images-idx3-ubyte.gz"))
    out = perturb(images, args.brightness, args.solarize, args.max_shift, args.seed)
    os.makedirs(args.out, exist_ok=True)
    n, h, w = out.shape
    header = np.array([2051, n, h, w], dtype=">u4").tobytes()
    with gzip.open(os.path.join(args.out, "t10k-images-idx3-ubyte.gz"), "wb") as f:
        f.write(header + out.tobytes())
    shutil.copyfile(
        os.path.join(args.src, "t10k-labels-idx1-ubyte.gz"),
        os.path.join(args.out, "t10k-labels-idx1-ubyte.gz"),
    )
    print(f"wrote {n} perturbed test images into {args.out}")


if __name__ == "__main__":
    main()
