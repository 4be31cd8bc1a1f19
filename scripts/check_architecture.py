#!/usr/bin/env python3
"""Checks that docs/ARCHITECTURE.md names only things that exist (run by scripts/test.sh).

Every `backticked` span of the document is read; three kinds are checked:

- a repository path (`crates/...`, `scripts/...`, `docs/...`, `configs/...`, `.ci/...`,
  `.cargo/...`): the file or folder exists. A bare file name (`block.rs`) is taken relative to
  the folder of the last path named before it on the same line (a table row reads
  `crates/model/src/vit.rs`, `block.rs`);
- `path::item` (`crates/train/src/method.rs::forward_backward`): the file exists and defines
  `item` (fn, struct, enum, trait, type, const, static, mod, or a Python def/class);
- a crate path (`dino_train::trainer::train`, `dino_eval::features::FeatureSet`): the module
  resolves to a file of the crate (`crates/<name>/src/...rs` or `.../mod.rs`), and the first
  segment after it is defined or re-exported there; further segments (a method, a variant) must
  appear in that file or in the file defining the type.

Other spans (commands, config keys, file names of a run such as `metrics.jsonl`) are not
checked. Exits 1 listing every name that is missing. Standard library only.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "ARCHITECTURE.md")
ROOTS = ("crates/", "scripts/", "docs/", "configs/", ".ci/", ".cargo/", "tests/")
FILE_EXT = (".rs", ".py", ".sh", ".cpp", ".h", ".pyi")  # bare names of source files
SPAN = re.compile(r"`([^`\n]+)`")
CRATE_PATH = re.compile(r"^(dino_[a-z_]+)((?:::[A-Za-z_][A-Za-z0-9_]*)+)$")
DEF_KINDS = r"(?:pub(?:\([a-z]+\))?\s+)?(?:async\s+)?(?:unsafe\s+)?(?:fn|struct|enum|trait|type|const|static|mod|union)"


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def glob_targets(path, text):
    """Files a `pub use x::*;` in `path` re-exports from (sibling modules)."""
    out = []
    for m in re.finditer(r"\bpub\s+use\s+(?:self::)?([a-z_][a-z0-9_]*)::\*\s*;", text):
        base = os.path.dirname(path)
        for cand in (os.path.join(base, m.group(1) + ".rs"), os.path.join(base, m.group(1), "mod.rs")):
            if os.path.isfile(cand):
                out.append(cand)
    return out


def defined_in(path, item, seen=None):
    """The file (path itself or a glob re-export's target) that defines `item`, or None."""
    seen = seen or set()
    if path in seen:
        return None
    seen.add(path)
    text = read(path)
    for target in glob_targets(path, text):
        found = defined_in(target, item, seen)
        if found:
            return found
    strict = [p for p in (
        rf"\b{DEF_KINDS}\s+{re.escape(item)}\b",
        rf"^\s*(?:def|class)\s+{re.escape(item)}\b",
        rf"\bpub\s+use\s+[^;]*\b{re.escape(item)}\b[^;]*;",
        rf"^\s*{re.escape(item)}\s*[\(\{{,]",
    ) if re.search(p, text, re.MULTILINE)]
    return path if strict else None


def module_file(crate_dir, segments):
    """Longest prefix of `segments` that is a module file under crate_dir/src; returns
    (file, rest)."""
    src = os.path.join(crate_dir, "src")
    best = (os.path.join(src, "lib.rs"), segments)
    if not os.path.isfile(best[0]):
        best = (os.path.join(src, "main.rs"), segments)
    for i in range(1, len(segments) + 1):
        base = os.path.join(src, *segments[:i])
        for cand in (base + ".rs", os.path.join(base, "mod.rs")):
            if os.path.isfile(cand):
                best = (cand, segments[i:])
    return best


def check_items(file, items, label):
    """`items[0]` defined in `file`; later items appear as words in the defining file."""
    if not items:
        return None
    where = defined_in(file, items[0])
    if where is None:
        return f"{label}: `{items[0]}` is not defined in {os.path.relpath(file, ROOT)}"
    for extra in items[1:]:
        # A method or variant: a `fn extra` or a variant `extra` in the file that defines the
        # type, or (an impl elsewhere) in any file of its crate.
        pattern = rf"\bfn\s+{re.escape(extra)}\b|^\s*{re.escape(extra)}\s*[\(\{{,]"
        crate_src = where.split("/src/")[0] + "/src"
        files = [where] + [
            os.path.join(d, f) for d, _, fs in os.walk(crate_src) for f in fs if f.endswith(".rs")
        ]
        if not any(re.search(pattern, read(f), re.MULTILINE) for f in files):
            return f"{label}: `{extra}` not found for `{items[0]}`"
    return None


def crate_dirs():
    dirs = {}
    for name in os.listdir(os.path.join(ROOT, "crates")):
        cargo = os.path.join(ROOT, "crates", name, "Cargo.toml")
        if not os.path.isfile(cargo):
            continue
        text = read(cargo)
        lib = re.search(r'^\[lib\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.MULTILINE | re.DOTALL)
        pkg = re.search(r'^name\s*=\s*"([^"]+)"', text, re.MULTILINE)
        for n in filter(None, [lib and lib.group(1), pkg and pkg.group(1)]):
            dirs[n.replace("-", "_")] = os.path.join(ROOT, "crates", name)
    return dirs


def main():
    doc = read(sys.argv[1] if len(sys.argv) > 1 else DOC)
    crates = crate_dirs()
    problems, checked = [], 0
    for lineno, line in enumerate(doc.splitlines(), 1):
        context = None
        for span in SPAN.findall(line):
            span = span.strip()
            if " " in span:
                continue
            label = f"ARCHITECTURE.md:{lineno}"
            m = CRATE_PATH.match(span)
            if m and m.group(1) in crates:
                checked += 1
                segs = m.group(2).split("::")[1:]
                file, rest = module_file(crates[m.group(1)], segs)
                if not rest:
                    continue
                err = check_items(file, rest, label)
                if err:
                    problems.append(err)
                continue
            path, items = span, []
            if "::" in span:
                path, *items = span.split("::")
            path = path.rstrip("/")
            if path.startswith(ROOTS):
                full = os.path.join(ROOT, path)
                context = full if os.path.isdir(full) else os.path.dirname(full)
            elif "/" not in path and path.endswith(FILE_EXT) and context:
                full = os.path.join(context, path)
            else:
                continue
            checked += 1
            if not os.path.exists(full):
                problems.append(f"{label}: `{span}`: no {os.path.relpath(full, ROOT)}")
                continue
            if items:
                err = check_items(full, items, label)
                if err:
                    problems.append(err)
    for p in problems:
        print(p)
    if problems:
        print(f"docs/ARCHITECTURE.md: {len(problems)} of {checked} names missing")
        return 1
    print(f"docs/ARCHITECTURE.md: all {checked} paths and items exist")
    return 0


if __name__ == "__main__":
    sys.exit(main())
