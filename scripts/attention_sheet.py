#!/usr/bin/env python3
"""Contact sheet of `dino attention --boxes` runs: one row per image, the photo with its
hand-drawn boxes, then for each run its mean map and every head's map (with the run's lift per
map, from its scores.json).

Usage:
  attention_sheet.py --boxes docs/hymenoptera_val_boxes.json --out sheet.jpg \
      [--tile 96] LABEL=OUT_DIR [LABEL=OUT_DIR ...]

OUT_DIR is the --out folder of `dino attention --boxes ... --data ...` (sub-folders named after
the box keys, and scores.json). Needs Pillow (the project's .venv has it).
"""
import argparse
import json
import pathlib

from PIL import Image, ImageDraw


def tile_of(path, tile):
    im = Image.open(path).convert("RGB")
    return im.resize((tile, tile), Image.BICUBIC)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--boxes", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tile", type=int, default=96)
    ap.add_argument("runs", nargs="+", help="LABEL=DIR")
    a = ap.parse_args()
    boxes = {k: v for k, v in json.load(open(a.boxes)).items() if not k.startswith("_")}
    keys = sorted(boxes)
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
        d = ImageDraw.Draw(photo)
        for x0, y0, x1, y1 in boxes[key]:
            d.rectangle([x0 * t, y0 * t, x1 * t - 1, y1 * t - 1], outline=(255, 40, 40), width=2)
        sheet.paste(photo, (0, y))
        x = t
        for _, folder, scores, heads in runs:
            s = scores[stem]
            maps = [("attn-mean.png", s["mean"])] + [
                (f"attn-head{i}.png", s["heads"][i]) for i in range(heads)
            ]
            for name, score in maps:
                sheet.paste(tile_of(folder / stem / name, t), (x, y))
                # The lift: attention density on the object relative to the whole image.
                draw.text((x + 3, y + t - 13), f"{score['lift']:.2f}", fill="white")
                x += t
    sheet.save(a.out, **({"quality": 88} if a.out.endswith((".jpg", ".jpeg")) else {}))
    print(a.out, sheet.size)


if __name__ == "__main__":
    main()
