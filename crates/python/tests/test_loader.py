"""MultiCropLoader: shapes and dtypes, byte equality with the Rust loader, sharding, bad input,
bad arguments, epochs, Ctrl-C and the GIL."""

import _thread
import os
import signal
import threading
import time
import warnings

import numpy as np
import pytest

import dino_multicrop as dm
from conftest import REPO, as_views, dump_batches, make_folder, shared

MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
SMALL = dict(global_crops_size=32, local_crops_size=16, local_crops_number=3)


def test_the_default_batch_is_the_official_64(folder):
    root, _ = folder
    # main_dino.py --batch_size_per_gpu 64: more than these 10 images, so no batch at all.
    with pytest.raises(ValueError, match="`batch_size`.*no batch of 64"):
        dm.MultiCropLoader(root)


def test_official_crops_shapes_and_dtypes(folder):
    root, files = folder
    loader = dm.MultiCropLoader(root, 4, threads=2)
    assert len(loader) == len(files) // 4 == 2
    assert loader.classes == ["ants", "bees"] and loader.dataset_size == 10
    batches = list(loader)
    assert len(batches) == 2
    crops, labels = batches[0]
    assert len(crops) == 10
    for c in crops[:2]:
        assert c.shape == (4, 3, 224, 224) and c.dtype == np.uint8
    for c in crops[2:]:
        assert c.shape == (4, 3, 96, 96) and c.dtype == np.uint8
    assert labels.shape == (4,) and labels.dtype == np.int64
    assert set(labels.tolist()) <= {0, 1}
    # Crops differ from view to view (they are random views, not copies).
    assert not np.array_equal(crops[0], crops[1])


def test_crops_are_views_of_the_rust_buffer_and_torch_wraps_them_without_copy(folder):
    root, _ = folder
    crops, _ = next(iter(dm.MultiCropLoader(root, 4, **SMALL)))
    g0, g1, l0, l1 = crops[0], crops[1], crops[2], crops[3]
    # The 2 globals are consecutive views of one [2, B, 3, H, W] array, the locals of another,
    # whose memory the Rust Vec owns (its base is not a NumPy-allocated array).
    assert g0.base is g1.base and g0.base.shape == (2, 4, 3, 32, 32)
    assert l0.base is l1.base and l0.base.shape == (3, 4, 3, 16, 16)
    assert g1.ctypes.data - g0.ctypes.data == g0.nbytes
    assert not g0.base.flags.owndata
    assert type(g0.base.base).__name__ == "PySliceContainer"
    assert g0.flags.c_contiguous
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(g0)
    assert t.data_ptr() == g0.ctypes.data and t.dtype == torch.uint8


def test_normalize_gives_float32_tochw_normalize_of_the_same_crops(folder):
    root, _ = folder
    (u8, _), (f32, _) = (
        next(iter(dm.MultiCropLoader(root, 4, normalize=n, **SMALL))) for n in (False, True)
    )
    for a, b in zip(u8, f32):
        assert b.dtype == np.float32 and b.shape == a.shape
        # torchvision's ToTensor + Normalize in float32: (x / 255 - mean) / std.
        expected = (a.astype(np.float32) / np.float32(255) - MEAN) / STD
        np.testing.assert_array_equal(b, expected)


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_same_bytes_as_the_rust_loader(tmp_path, folder, threads):
    root, _ = folder
    kwargs = dict(SMALL, seed=5, threads=threads, solarize_p=0.5, drop_last=False)
    sets = ["augmentation.global_crops_size=32", "augmentation.local_crops_size=16",
            "augmentation.local_crops_number=3", "augmentation.solarize_p=0.5",
            "runtime.seed=5", f"runtime.data_threads={3 - threads}", "optim.batch_size=4",
            "data.drop_last=false"]
    for epoch in (0, 1):
        rust, _ = dump_batches(root, tmp_path / f"rust{epoch}", sets=sets, epoch=epoch)
        loader = dm.MultiCropLoader(root, 4, return_indices=True, **kwargs)
        loader.set_epoch(epoch)
        ours = list(loader)
        assert len(ours) == len(rust) == 3  # 10 images, batch 4, no drop_last: 4, 4, 2
        for (crops, labels, indices), r in zip(ours, rust):
            np.testing.assert_array_equal(indices, r["indices"])
            np.testing.assert_array_equal(labels, r["labels"])
            for a, b in zip(crops, as_views(r), strict=True):
                assert a.tobytes() == b.tobytes()


def test_cifar_preset_shapes_and_same_bytes_as_the_rust_loader(tmp_path):
    root = tmp_path / "cifar"
    make_folder(root, classes=("airplane", "cat", "dog"), per_class=4, size=32)
    preset = REPO / "configs" / "cifar10_cpu.toml"
    loader = dm.MultiCropLoader.from_config(preset, root, 4, threads=2)
    cfg = loader.config
    assert cfg["data"]["format"] == "image_folder"
    assert cfg["augmentation"]["blur_global1_p"] == 0.0
    batches = list(loader)
    assert len(batches) == 3
    for crops, labels in batches:
        assert len(crops) == 2  # the preset has no local crops
        for c in crops:
            assert c.shape == (4, 3, 32, 32) and c.dtype == np.uint8
    rust, _ = dump_batches(root, tmp_path / "rust", config=preset,
                           sets=["optim.batch_size=4", "runtime.data_threads=1"])
    assert len(rust) == 3
    for (crops, labels), r in zip(batches, rust):
        np.testing.assert_array_equal(labels, r["labels"])
        for a, b in zip(crops, as_views(r), strict=True):
            assert a.tobytes() == b.tobytes()


def test_from_config_rejects_a_bad_key_naming_it(tmp_path, folder):
    root, _ = folder
    preset = REPO / "configs" / "cifar10_cpu.toml"
    with pytest.raises(ValueError, match=r"augmentation\.hue"):
        dm.MultiCropLoader.from_config(preset, root, 4, overrides=["augmentation.hue=0.9"])
    with pytest.raises(ValueError, match=r"augmentation\.nope"):
        dm.MultiCropLoader.from_config(preset, root, 4, overrides=["augmentation.nope=1"])
    with pytest.raises(OSError, match="missing.toml"):
        dm.MultiCropLoader.from_config(tmp_path / "missing.toml", root, 4)


def test_two_ranks_partition_an_epoch_with_no_image_twice(tmp_path):
    root = tmp_path / "images"
    make_folder(root, per_class=6)  # 12 images: 6 per rank
    whole = dm.MultiCropLoader(root, 4, return_indices=True, drop_last=False, **SMALL)
    whole.set_epoch(3)
    single = {}
    for crops, _, indices in whole:
        for b, i in enumerate(indices.tolist()):
            single[i] = [c[b].tobytes() for c in crops]
    seen = {}
    for rank in range(2):
        loader = dm.MultiCropLoader(root, 2, rank=rank, world_size=2, return_indices=True,
                                    drop_last=False, **SMALL)
        assert len(loader) == 3
        loader.set_epoch(3)
        for crops, _, indices in loader:
            for b, i in enumerate(indices.tolist()):
                assert i not in seen, f"image {i} read by ranks {seen[i]} and {rank}"
                seen[i] = rank
                # Each image's crops depend only on (seed, epoch, index): as in one process.
                assert [c[b].tobytes() for c in crops] == single[i]
    assert sorted(seen) == list(range(12))
    assert {r for r in seen.values()} == {0, 1}


def test_shards_match_the_rust_trainer_sharding(tmp_path):
    root = tmp_path / "images"
    make_folder(root, per_class=5)  # 10 images over 3 ranks: padded to 12 as DistributedSampler
    for rank in range(3):
        rust, _ = dump_batches(root, tmp_path / f"r{rank}", rank=rank, world_size=3,
                               sets=["optim.batch_size=2", "data.drop_last=false",
                                     "augmentation.global_crops_size=32",
                                     "augmentation.local_crops_size=16",
                                     "augmentation.local_crops_number=3"])
        loader = dm.MultiCropLoader(root, 2, rank=rank, world_size=3, drop_last=False,
                                    return_indices=True, **SMALL)
        ours = list(loader)
        assert [len(i) for _, _, i in ours] == [len(r["indices"]) for r in rust] == [2, 2]
        for (crops, _, indices), r in zip(ours, rust):
            np.testing.assert_array_equal(indices, r["indices"])
            assert crops[0].tobytes() == r["globals"][0].tobytes()


def test_without_shuffle_the_epoch_is_in_index_order(folder):
    root, _ = folder
    loader = dm.MultiCropLoader(root, 5, shuffle=False, return_indices=True, **SMALL)
    assert [i.tolist() for _, _, i in loader] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert [lab.tolist() for _, lab, _ in loader] == [[0] * 5, [1] * 5]


def test_epochs_advance_and_set_epoch_replays_one(folder):
    root, _ = folder
    loader = dm.MultiCropLoader(root, 5, return_indices=True, **SMALL)

    def epoch():
        return [(i.tolist(), [c.tobytes() for c in crops]) for crops, _, i in loader]

    e0, e1 = epoch(), epoch()  # the second iteration continues the running Rust loader
    assert loader.epoch == 2
    assert e0 != e1 and sorted(sum((i for i, _ in e0), [])) == list(range(10))
    loader.set_epoch(0)
    assert epoch() == e0  # restarted at epoch 0
    fresh = dm.MultiCropLoader(root, 5, return_indices=True, **SMALL)
    fresh.set_epoch(1)
    assert [(i.tolist(), [c.tobytes() for c in crops]) for crops, _, i in fresh] == e1
    # An iteration abandoned half way: the next one restarts the Rust loader cleanly.
    loader.set_epoch(1)
    it = iter(loader)
    next(it)
    loader.set_epoch(1)
    assert epoch() == e1 and loader.epoch == 2


def test_nasty_files_are_skipped_counted_and_named():
    nasty = shared("nasty")
    bad = {"truncated.jpg", "corrupt_header.jpg", "empty.jpg", "arithmetic_coded.jpg",
           "jpeg_12bit.jpg", "jpeg_lossless.jpg", "bomb_65536x65536.png",
           "huge_20000x14000.jpg"}
    # Every file is read once (no drop_last); 8 of 29 fail, more than the default 1 %.
    loader = dm.MultiCropLoader(nasty, 8, drop_last=False, max_failed_fraction=0.5,
                                global_crops_size=64, local_crops_size=32, threads=2)
    with pytest.warns(UserWarning, match="failed to load") as caught:
        batches = list(loader)
    assert sum(len(labels) for _, labels in batches) == loader.dataset_size == 29
    assert loader.skipped == len(bad)
    named = {f.split(": ")[0].rsplit("/", 1)[-1] for f in loader.failures}
    assert named == bad
    assert len([w for w in caught if "failed to load" in str(w.message)]) == len(bad)
    assert any("exceeds the limit" in f for f in loader.failures)
    # With the default max_failed_fraction the loader stops with the Rust message.
    strict = dm.MultiCropLoader(nasty, 8, drop_last=False, global_crops_size=64,
                                local_crops_size=32)
    with pytest.raises(dm.LoaderError, match="max_failed_fraction"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            list(strict)


@pytest.mark.parametrize("kwargs, name", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=11), "batch_size"),  # 10 images with drop_last
    (dict(global_crops_scale=(0.4,)), "global_crops_scale"),
    (dict(local_crops_scale=(0.5, 0.1)), "local_crops_scale"),
    (dict(local_crops_number=-1), "local_crops_number"),
    (dict(global_crops_size=0), "global_crops_size"),
    (dict(threads=-1), "threads"),
    (dict(seed=-1), "seed"),
    (dict(rank=2, world_size=2), "rank"),
    (dict(world_size=0), "world_size"),
    (dict(format="zip"), "format"),
    (dict(split="val"), "split"),
    (dict(max_failed_fraction=1.5), "max_failed_fraction"),
    (dict(hue=0.7), "hue"),
    (dict(std=(0.2, 0.0, 0.2)), "std"),
    (dict(solarize_threshold=300), "solarize_threshold"),
    (dict(flip_p="often"), "flip_p"),
    (dict(num_workers=4), "num_workers"),
])
def test_a_bad_argument_raises_value_error_naming_it(folder, kwargs, name):
    root, _ = folder
    args = dict(batch_size=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"`{name}`"):
        dm.MultiCropLoader(root, **args)


def test_a_missing_or_empty_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dm.MultiCropLoader(tmp_path / "nowhere", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="root"):
        dm.MultiCropLoader(tmp_path / "empty", 2)


def slow_loader(tmp_path):
    """Very large crops on one thread: a batch takes seconds, even in a release build on an
    AVX-512 CPU (with the default 8 local crops a batch there took 0.3-1 s, so an interrupt at
    0.3 s sometimes came after it)."""
    root = tmp_path / "slow" / "a"
    first = make_folder(tmp_path / "slow", classes=("a",), per_class=1, size=1024)[0]
    for i in range(1, 4):
        os.link(first, root / f"copy_{i}.png")
    return dm.MultiCropLoader(tmp_path / "slow", 4, threads=1, prefetch=0,
                              global_crops_size=2048, local_crops_size=1024,
                              local_crops_number=24)


def test_ctrl_c_stops_the_wait_for_a_batch_at_once(tmp_path):
    # A job started in the background of a non-interactive shell (`cmd &`) inherits SIGINT
    # ignored, and then `interrupt_main` does nothing: give the test Python's own handler.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_stops_the_wait(tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_stops_the_wait(tmp_path):
    loader = slow_loader(tmp_path)
    it = iter(loader)
    threading.Timer(0.1, _thread.interrupt_main).start()
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        next(it)
    waited = time.perf_counter() - t0
    # The loader was stopped; a new iteration starts it again and shows how long a batch takes.
    t0 = time.perf_counter()
    crops, _ = next(iter(loader))
    batch = time.perf_counter() - t0
    assert crops[0].shape == (4, 3, 2048, 2048)
    assert batch > 1.0, f"a batch took only {batch:.2f} s: make slow_loader slower"
    # Raised within a few signal polls (50 ms) of the interrupt, not at the end of the batch.
    assert waited < 0.1 + 0.4 < batch, f"KeyboardInterrupt after {waited:.2f} s"


def test_the_gil_is_released_while_the_rust_threads_work(tmp_path):
    loader = slow_loader(tmp_path)
    ticks, done = [0], threading.Event()

    def count():
        while not done.is_set():
            ticks[0] += 1
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    t0 = time.perf_counter()
    next(iter(loader))
    waited = time.perf_counter() - t0
    done.set()
    t.join()
    # Were the GIL held during the wait, the counting thread could not tick at all.
    assert waited > 1.0, f"the batch took only {waited:.2f} s: make slow_loader slower"
    assert ticks[0] >= 100, (waited, ticks[0])


def test_the_pytorch_example_trains_on_the_wheels_batches(tmp_path):
    """examples/python/dino_step_with_rust_loader.py, two steps of a tiny ViT on the CPU."""
    pytest.importorskip("torch")
    import json
    import subprocess
    import sys

    root = tmp_path / "images"
    make_folder(root, per_class=4)
    sets = ["model.arch=custom", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
            "model.patch_size=16", "model.img_size=32", "eval.n_last_blocks=1",
            "head.hidden_dim=32", "head.bottleneck_dim=16", "head.out_dim=64",
            "augmentation.global_crops_size=32", "augmentation.local_crops_size=16",
            "augmentation.local_crops_number=2", "optim.batch_size=4",
            "runtime.torch_threads=1"]
    for loader in ("rust", "torchvision"):
        cmd = [sys.executable, str(REPO / "examples" / "python" / "dino_step_with_rust_loader.py"),
               "--config", str(REPO / "configs" / "cifar10_cpu.toml"), "--data", str(root),
               "--loader", loader, "--workers", "1", "--device", "cpu", "--warmup", "1",
               "--steps", "2"]
        for s in sets:
            cmd += ["--set", s]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout.strip().splitlines()[-1])
        assert out["global_crops"] == [2, 32] and out["local_crops"] == [2, 16]
        assert out["images_per_s"] > 0 and out["last_loss"] == out["last_loss"]  # not NaN
