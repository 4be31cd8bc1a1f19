#!/usr/bin/env python3
"""Rebuilds docs/BENCHMARKS.md from its header and the per-part pages in docs/bench/.

Each page's headings are demoted one level (outside code fences) so they nest under the
collecting page. Usage: python3 scripts/bench_page.py
"""
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = ["data.md", "augment.md", "model.md", "trainer.md", "train_step.md"]
MARK = "<!-- generated from docs/bench/*.md by scripts/bench_page.py: edit those pages -->"


def demote(text: str) -> str:
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        out.append("#" + line if line.startswith("#") and not fenced else line)
    return "\n".join(out)


def main() -> None:
    target = ROOT / "docs" / "BENCHMARKS.md"
    old = target.read_text()
    header = old.split(MARK)[0] if MARK in old else old.split("\n## ")[0]
    parts = [header.rstrip() + "\n\n" + MARK]
    for name in PAGES:
        page = ROOT / "docs" / "bench" / name
        if page.exists():
            parts.append(demote(page.read_text().strip()))
    target.write_text("\n\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
