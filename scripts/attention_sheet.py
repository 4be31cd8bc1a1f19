#!/usr/bin/env python3
"""Contact sheet of `dino attention --boxes` runs: one row per image, the photo with its
hand-drawn boxes, then for each run its mean map and every head's map, with the map's lift (from
the run's scores.json: attention density in the boxes over that of the whole image).

Usage:
  attention_sheet.py --boxes docs/hymenoptera_val_boxes.json --out sheet.jpg \
      [--tile 96] [--bare] [--rows N] LABEL=OUT_DIR [LABEL=OUT_DIR ...]

OUT_DIR is the --out folder of `dino attention --boxes ... --data ...` (sub-folders named after
the box keys, and scores.json). By default the tiles are the PNGs `dino attention` wrote (heat
map blended over the photo); `--bare` draws each map from attn.npy alone (VIRIDIS, min-max per
map, as the official plt.imsave) with the boxes outlined, which is easier to judge. `--rows N`
keeps the first N photos of each class folder (by file name). Needs Pillow
and numpy (the project's .venv has both).
"""
import argparse
import json
import pathlib

import numpy as np
from PIL import Image, ImageDraw

# matplotlib's VIRIDIS at 0, 0.25, 0.5, 0.75 and 1, linearly interpolated in between.
VIRIDIS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)


def tile_of(path, tile):
    im = Image.open(path).convert("RGB")
    return im.resize((tile, tile), Image.BICUBIC)


def bare_tile(attn, index, tile):
    """Map `index` of attn.npy ([heads, h, w]; index None = mean over heads) as a VIRIDIS image."""
    m = attn.mean(axis=0) if index is None else attn[index]
    m = (m - m.min()) / max(float(m.max() - m.min()), 1e-12)
    pos = m * (len(VIRIDIS) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(VIRIDIS) - 2)
    frac = (pos - lo)[..., None]
    rgb = VIRIDIS[lo] * (1 - frac) + VIRIDIS[lo + 1] * frac
    im = Image.fromarray(rgb.round().astype(np.uint8), "RGB")
    return im.resize((tile, tile), Image.NEAREST)


def outline(im, boxes, colour):
    d = ImageDraw.Draw(im)
    w, h = im.size
    for x0, y0, x1, y1 in boxes:
        d.rectangle([x0 * w, y0 * h, x1 * w - 1, y1 * h - 1], outline=colour, width=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--boxes", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tile", type=int, default=96)
    ap.add_argument("--bare", action="store_true", help="maps from attn.npy, boxes outlined")
    ap.add_argument("--rows", type=int, help="first N photos of each class folder")
    ap.add_argument("runs", nargs="+", help="LABEL=DIR")
    a = ap.parse_args()
    boxes = {k: v for k, v in json.load(open(a.boxes)).items() if not k.startswith("_")}
    keys = sorted(boxes)
    if a.rows:
        classes = sorted({k.split("/")[0] for k in keys})
        keys = [k for c in classes for k in [k for k in keys if k.split("/")[0] == c][: a.rows]]
    runs = []
    for spec in a.runs:
        label, _, d = spec.partition("=")
        d = pathlib.Path(d)
        scores = json.load(open(d / "scores.json"))["images"]
        heads = len(next(iter(scores.values()))["heads"])
        runs.append((label, d, scores, heads))
    t = a.tile
    header = 18
    cols = 1 + sum(1 + h for _, _, _, h in runs)
    sheet = Image.new("RGB", (cols * t, header + len(keys) * t), "white")
    draw = ImageDraw.Draw(sheet)
    x = t
    for label, _, _, heads in runs:
        names = ["mean"] + [f"head {i}" for i in range(heads)]
        for i, n in enumerate(names):
            draw.text((x + i * t + 3, 3), f"{label}: {n}" if i == 0 else n, fill="black")
        x += (1 + heads) * t
    for r, key in enumerate(keys):
        stem = str(pathlib.PurePosixPath(key).with_suffix(""))
        y = header + r * t
        photo = tile_of(runs[0][1] / stem / "img.png", t)
        outline(photo, boxes[key], (255, 40, 40))
        sheet.paste(photo, (0, y))
        x = t
        for _, folder, scores, heads in runs:
            s = scores[stem]
            maps = [("attn-mean.png", None, s["mean"])] + [
                (f"attn-head{i}.png", i, s["heads"][i]) for i in range(heads)
            ]
            attn = np.load(folder / stem / "attn.npy") if a.bare else None
            for name, index, score in maps:
                if a.bare:
                    im = bare_tile(attn, index, t)
                    outline(im, boxes[key], (255, 40, 40))
                else:
                    im = tile_of(folder / stem / name, t)
                sheet.paste(im, (x, y))
                # The lift: attention density on the object relative to the whole image.
                draw.text((x + 3, y + t - 13), f"{score['lift']:.2f}", fill="white")
                x += t
    sheet.save(a.out, **({"quality": 88} if a.out.endswith((".jpg", ".jpeg")) else {}))
    print(a.out, sheet.size)


if __name__ == "__main__":
    main()
