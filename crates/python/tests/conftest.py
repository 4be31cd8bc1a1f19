"""Shared fixtures of the wheel's tests: small generated image folders, the real-data folder
beside the repository, and the Rust side to compare with (`dump_batches`, an example of the
dino-data crate that writes a `Loader`'s batches to .npy)."""

import functools
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[3]
# `shared/` sits beside the repository (beside /work/main and every worktree alike), as the Rust
# tests find it (crates/data/tests/common/mod.rs).
SHARED_DATA = REPO.parent / "shared" / "data"


def shared(name):
    """`shared/data/<name>` beside the repository, or skip the test with a message."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is missing: this real-data test needs the shared data folder")
    return path


def make_folder(root, classes=("ants", "bees"), per_class=5, size=None, ext="png"):
    """An ImageFolder `root/<class>/img_NNN.png` of varied sizes and content (or all `size`
    pixels square); returns the sorted file list, the order the loader indexes."""
    files = []
    for c, name in enumerate(classes):
        d = Path(root) / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = (size, size) if size else (60 + 13 * i + 7 * c, 45 + 11 * ((3 * i + c) % 5))
            y, x = np.mgrid[0:h, 0:w]
            px = np.stack(
                [x * 255 // w, y * 255 // h, (x * y + 37 * i + 91 * c) % 256], axis=-1
            ).astype(np.uint8)
            path = d / f"img_{i:03d}.{ext}"
            Image.fromarray(px).save(path)
            files.append(path)
    return sorted(files)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    files = make_folder(root)
    return root, files


@functools.lru_cache(maxsize=None)
def dump_batches_exe():
    """Builds the `dump_batches` example once per session and returns its path.

    Built as `cargo test --workspace` builds examples (test profile, features resolved over the
    whole workspace), so after scripts/test.sh's `cargo test` this is only a freshness check;
    `cargo run -p dino-data` would resolve features for dino-data alone and compile all of its
    dependencies a second time.
    """
    exe = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not Path(exe).exists():
        pytest.skip("cargo is not installed: the comparison with the Rust loader needs it")
    build = subprocess.run(
        [exe, "build", "--quiet", "--locked", "--profile", "test", "--workspace", "--example",
         "dump_batches", "--message-format", "json"],
        cwd=REPO, capture_output=True, text=True)
    assert build.returncode == 0, f"building dump_batches failed:\n{build.stderr}"
    for line in build.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "dump_batches":
            return msg["executable"]
    raise AssertionError("cargo built no dump_batches executable")


def dump_batches(root, out, *, config=None, sets=(), epoch=0, rank=0, world_size=1,
                 shuffle=True):
    """Runs the Rust loader (the dino-data example `dump_batches`) on `root` and returns its
    batches as dicts of arrays, plus its JSON summary."""
    cmd = [dump_batches_exe(), "--data", str(root), "--out", str(out), "--epoch", str(epoch),
           "--rank", str(rank), "--world-size", str(world_size)]
    if config:
        cmd += ["--config", str(config)]
    for s in sets:
        cmd += ["--set", s]
    if not shuffle:
        cmd.append("--no-shuffle")
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, f"dump_batches failed:\n{run.stderr}"
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    batches = []
    for k in range(summary["batches"]):
        batches.append({
            what: np.load(Path(out) / f"batch_{k}_{what}.npy")
            for what in ("globals", "locals", "labels", "indices")
        })
    return batches, summary


def as_views(batch):
    """A Rust batch as the wheel's list of crops: the 2 globals, then the locals."""
    return [batch["globals"][0], batch["globals"][1], *batch["locals"]]
