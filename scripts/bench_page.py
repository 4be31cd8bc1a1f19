#!/usr/bin/env python3
"""Rebuilds docs/BENCHMARKS.md from its header and the per-part pages in docs/bench/.

Each page's headings are demoted one level (outside code fences) so they nest under the
collecting page. Usage: python3 scripts/bench_page.py [--check]

With --check nothing is written: exits 1 naming the first differing line when docs/BENCHMARKS.md
is not what the pages give (scripts/test.sh runs it, so an edit made to the collected page
instead of its part fails the tests rather than being lost at the next rebuild).
"""
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = ["data.md", "augment.md", "model.md", "trainer.md", "train_step.md",
         "crop_group_memory.md", "wheel.md", "test_command.md", "ibot_step.md"]
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
    new = "\n\n".join(parts) + "\n"
    if "--check" not in sys.argv[1:]:
        target.write_text(new)
        return
    if new != old:
        a, b = old.splitlines(), new.splitlines()
        line = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        sys.exit(f"docs/BENCHMARKS.md differs from docs/bench/*.md from line {line + 1}: edit "
                 "the page in docs/bench/ and run python3 scripts/bench_page.py")


if __name__ == "__main__":
    main()
