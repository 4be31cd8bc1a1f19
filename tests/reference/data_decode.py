"""Reference decodes for crates/data/tests/nasty_files.rs: what the official loader's Pillow path
(torchvision `pil_loader`: Image.open + convert("RGB")) gives, plus the EXIF transpose we apply.

usage: data_decode.py <image_dir> <out_dir>
Writes <out_dir>/<file>.rgb (raw RGB8, row-major) for every file Pillow decodes and a manifest
<out_dir>/manifest.txt with lines "<file>\t<width>\t<height>" or "<file>\tERR\t<message>".
"""
import os
import sys

from PIL import Image, ImageOps

Image.MAX_IMAGE_PIXELS = 178_956_970 // 2  # Pillow's default; bombs raise above 2x this


def main(src, out):
    os.makedirs(out, exist_ok=True)
    lines = []
    for name in sorted(os.listdir(src)):
        if name.startswith(".") or name.endswith(".md"):
            continue
        try:
            with open(os.path.join(src, name), "rb") as f:
                img = Image.open(f)
                img.load()
                img = ImageOps.exif_transpose(img).convert("RGB")
        except Exception as e:  # noqa: BLE001 - every failure is data here
            lines.append(f"{name}\tERR\t{type(e).__name__}: {e}")
            continue
        with open(os.path.join(out, name + ".rgb"), "wb") as f:
            f.write(img.tobytes())
        lines.append(f"{name}\t{img.width}\t{img.height}")
    with open(os.path.join(out, "manifest.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
