"""DataAugmentationDINO: inputs, outputs, seed streams shared with the loader, DataLoader
workers, errors."""

import numpy as np
import pytest
from PIL import Image

import dino_multicrop as dm
from conftest import make_folder

SMALL = dict(global_crops_size=32, local_crops_size=16)


def test_official_signature_and_crops(folder):
    _, files = folder
    t = dm.DataAugmentationDINO((0.4, 1.0), (0.05, 0.4), 8)  # main_dino.py's positional call
    assert t.n_crops == 10 and t.config == dm.default_config()["augmentation"]
    crops = t(files[0])
    assert len(crops) == 10
    for c in crops[:2]:
        assert c.shape == (3, 224, 224) and c.dtype == np.uint8
    for c in crops[2:]:
        assert c.shape == (3, 96, 96) and c.dtype == np.uint8


def test_path_pil_and_array_inputs_give_the_same_crops(folder):
    _, files = folder
    t = dm.DataAugmentationDINO(local_crops_number=2, **SMALL)
    pil = Image.open(files[3])
    rgb = np.asarray(pil.convert("RGB"))
    by_path = t(files[3], index=3)
    for other in (t(str(files[3]), index=3), t(pil, index=3), t(rgb, index=3),
                  t(np.asfortranarray(rgb), index=3), t(pil.convert("RGBA"), index=3),
                  t(np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], -1),
                    index=3)):
        assert [c.tobytes() for c in other] == [c.tobytes() for c in by_path]
    gray = np.asarray(pil.convert("L"))
    g = t(gray, index=3)
    assert all(np.array_equal(c[0], c[1]) and np.array_equal(c[1], c[2]) for c in g)


def test_index_streams_equal_the_loaders_crops(folder):
    root, files = folder
    loader = dm.MultiCropLoader(root, 5, return_indices=True, seed=3, local_crops_number=2,
                                **SMALL)
    loader.set_epoch(2)
    t = dm.DataAugmentationDINO(local_crops_number=2, seed=3, **SMALL)
    t.set_epoch(2)
    for crops, _, indices in loader:
        for b, i in enumerate(indices.tolist()):
            mine = t(files[i], index=i)
            assert [c.tobytes() for c in mine] == [v[b].tobytes() for v in crops]
            assert [c.tobytes() for c in t(files[i], index=i, epoch=2)] == [
                c.tobytes() for c in mine]


def test_seeded_streams_are_reproducible(folder):
    _, files = folder

    def run(seed):
        t = dm.DataAugmentationDINO(seed=seed, local_crops_number=2, **SMALL)
        return [[c.tobytes() for c in t(f)] for f in files[:4]]

    assert run(1) == run(1)
    assert run(1) != run(2)
    first = run(1)
    assert first[0] != first[1]  # each call draws anew


def test_normalize_matches_totensor_normalize(folder):
    _, files = folder
    u8 = dm.DataAugmentationDINO(local_crops_number=1, **SMALL)(files[0], index=0)
    f32 = dm.DataAugmentationDINO(local_crops_number=1, normalize=True, **SMALL)(files[0],
                                                                                 index=0)
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)
    for a, b in zip(u8, f32):
        assert b.dtype == np.float32
        np.testing.assert_array_equal(b, (a.astype(np.float32) / np.float32(255) - mean) / std)


def test_bad_inputs_and_arguments(folder, tmp_path):
    _, files = folder
    t = dm.DataAugmentationDINO(local_crops_number=1, **SMALL)
    with pytest.raises(TypeError, match="uint8"):
        t(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        t(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(TypeError, match="PIL image"):
        t(42)
    with pytest.raises(FileNotFoundError):
        t(tmp_path / "missing.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    with pytest.raises(OSError, match="bad.jpg"):
        t(tmp_path / "bad.jpg")
    with pytest.raises(ValueError, match="`local_crops_scale`"):
        dm.DataAugmentationDINO((0.4, 1.0), (0.5, 0.1), 8)
    with pytest.raises(ValueError, match="`grayscale_p`"):
        dm.DataAugmentationDINO(grayscale_p=2.0)
    with pytest.raises(ValueError, match="`index`"):
        t(files[0], index=-1)


def test_inside_a_torch_dataloader_with_workers(tmp_path):
    torch = pytest.importorskip("torch")
    root = tmp_path / "same"
    # The same picture 8 times: only the random streams can make the crops differ.
    files = make_folder(root, classes=("a",), per_class=1, size=40)
    t = dm.DataAugmentationDINO(local_crops_number=2, **SMALL)

    class Same(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return t(files[0]), 0

    torch.manual_seed(0)
    dl = torch.utils.data.DataLoader(Same(), batch_size=2, num_workers=2)
    batches = [crops for crops, _ in dl]
    crops = batches[0]
    assert [tuple(c.shape) for c in crops] == [(2, 3, 32, 32)] * 2 + [(2, 3, 16, 16)] * 2
    assert crops[0].dtype == torch.uint8
    # Worker 0 made batches 0 and 2, worker 1 batches 1 and 3 from the same parent state:
    # their crops differ because each worker's stream is keyed by its own seed.
    firsts = [b[0][0].numpy().tobytes() for b in batches]
    assert len(set(firsts)) == 4
