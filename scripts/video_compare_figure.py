"""Side-by-side figure of `dino video attention` runs: one row per input, the frame, then each
model's attention map and mask.

Each `dino video attention` frame PNG is `original | attention | mask`, three equal panels with a
4-px gap (crates/eval/src/video_attention.rs). This script cuts them apart and lays the runs of
several models next to each other, so the paper's video figure (frames: original | supervised |
DINO) can be drawn from our own runs.

    .venv/bin/python scripts/video_compare_figure.py --out fig.png --scale 0.5 \
        --rows vt box --models supervised=/tmp/vfig/sup_e1 DINO=/tmp/vfig/dino_full

reads `<model dir>_<row>/frames/000000.png` for every model and row.
"""

import argparse

from PIL import Image, ImageDraw

GAP = 4
LABEL_H = 14


def panels(path):
    """The three panels (original, attention, mask) of one side-by-side frame."""
    im = Image.open(path).convert("RGB")
    w = (im.width - 2 * GAP) // 3
    if 3 * w + 2 * GAP != im.width:
        raise SystemExit(f"{path}: width {im.width} is not 3 panels with {GAP}-px gaps")
    return [im.crop((i * (w + GAP), 0, i * (w + GAP) + w, im.height)) for i in range(3)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--rows", nargs="+", required=True, help="row tags: <model dir>_<tag>")
    ap.add_argument("--models", nargs="+", required=True, help="label=run prefix")
    ap.add_argument("--frame", default="000000.png")
    args = ap.parse_args()
    models = [m.split("=", 1) for m in args.models]

    grid = []  # rows of (label, image)
    for tag in args.rows:
        row = []
        for i, (label, prefix) in enumerate(models):
            orig, attn, mask = panels(f"{prefix}_{tag}/frames/{args.frame}")
            if i == 0:
                row.append(("frame", orig))
            row += [(f"{label}: attention", attn), (f"{label}: mask", mask)]
        grid.append(row)

    pw = int(grid[0][0][1].width * args.scale)
    ph = int(grid[0][0][1].height * args.scale)
    cols = len(grid[0])
    sheet = Image.new("RGB", (cols * (pw + GAP) - GAP, len(grid) * (ph + LABEL_H + GAP)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(grid):
        y = r * (ph + LABEL_H + GAP)
        for c, (label, im) in enumerate(row):
            x = c * (pw + GAP)
            draw.text((x + 2, y + 1), label, fill="black")
            sheet.paste(im.resize((pw, ph), Image.BILINEAR), (x, y + LABEL_H))
    sheet.save(args.out)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main()
