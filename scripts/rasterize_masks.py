"""Rasterise hand-drawn polygon annotations (a JSON like docs/box_video_masks.json) into DAVIS
palette PNGs: Annotations/480p/<sequence>/<frame>.png under DAVIS_ROOT, object ids as pixel
values on the PASCAL colour map DAVIS uses. Needs Pillow (the project's .venv has it).

Usage: python scripts/rasterize_masks.py MASKS.json DAVIS_ROOT
"""

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw


def pascal_palette():
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def main(spec, root):
    spec = json.loads(Path(spec).read_text())
    out = Path(root) / "Annotations" / "480p" / spec["sequence"]
    out.mkdir(parents=True, exist_ok=True)
    for frame, objects in spec["frames"].items():
        im = Image.new("P", (spec["width"], spec["height"]), 0)
        im.putpalette(pascal_palette())
        draw = ImageDraw.Draw(im)
        for obj_id, poly in sorted(objects.items(), key=lambda kv: int(kv[0])):
            draw.polygon([tuple(p) for p in poly], fill=int(obj_id))
        im.save(out / f"{frame}.png")
    print(f"wrote {len(spec['frames'])} annotations into {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
