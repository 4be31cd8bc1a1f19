"""The Python API itself: official defaults, signatures, and the stub (dino_multicrop.pyi)
saying what the module says at run time."""

import ast
import inspect
import re
from pathlib import Path

import pytest

import dino_multicrop as dm

STUB = ast.parse((Path(__file__).resolve().parents[1] / "dino_multicrop.pyi").read_text())

# facebookresearch/dino @ 7c446df, main_dino.py: DataAugmentationDINO(global_crops_scale,
# local_crops_scale, local_crops_number) with --global_crops_scale (0.4, 1.),
# --local_crops_scale (0.05, 0.4), --local_crops_number 8, RandomResizedCrop(224) and (96);
# --batch_size_per_gpu 64, --seed 0; torch DataLoader(drop_last=True) over
# DistributedSampler(shuffle=True).
OFFICIAL = {
    "global_crops_scale": (0.4, 1.0),
    "local_crops_scale": (0.05, 0.4),
    "local_crops_number": 8,
    "global_crops_size": 224,
    "local_crops_size": 96,
}
OFFICIAL_LOADER = {"batch_size": 64, "seed": 0, "shuffle": True, "drop_last": True, "rank": 0,
                   "world_size": 1}


def words(text):
    return re.sub(r"\s+", " ", inspect.cleandoc(text or "")).strip()


def stub_class(name):
    return next(n for n in STUB.body if isinstance(n, ast.ClassDef) and n.name == name)


def stub_defaults(func):
    """The literal defaults of a stub function (`...` ones left out)."""
    a = func.args
    out = {}
    pos = a.posonlyargs + a.args
    for arg, d in zip(pos[len(pos) - len(a.defaults):], a.defaults):
        out[arg.arg] = ast.literal_eval(d)
    for arg, d in zip(a.kwonlyargs, a.kw_defaults):
        if d is not None:
            out[arg.arg] = ast.literal_eval(d)
    return {k: v for k, v in out.items() if v is not Ellipsis}


def test_official_defaults_in_the_signatures_and_the_config():
    for cls in (dm.MultiCropLoader, dm.DataAugmentationDINO):
        params = inspect.signature(cls).parameters
        for key, value in OFFICIAL.items():
            assert params[key].default == value, (cls.__name__, key)
    params = inspect.signature(dm.MultiCropLoader).parameters
    for key, value in OFFICIAL_LOADER.items():
        assert params[key].default == value, key
    aug = dm.default_config()["augmentation"]
    for key, value in OFFICIAL.items():
        assert aug[key] == pytest.approx(list(value) if isinstance(value, tuple) else value), key
    # The other official values of DataAugmentationDINO (flip, jitter, grayscale, blur,
    # solarize, normalization), as the Rust config pins them.
    assert (aug["flip_p"], aug["color_jitter_p"], aug["grayscale_p"]) == (0.5, 0.8, 0.2)
    assert (aug["brightness"], aug["contrast"], aug["saturation"], aug["hue"]) == (
        0.4, 0.4, 0.2, 0.1)
    assert (aug["blur_global1_p"], aug["blur_global2_p"], aug["blur_local_p"]) == (1.0, 0.1, 0.5)
    assert aug["blur_sigma"] == [0.1, 2.0] and aug["solarize_p"] == 0.2
    assert aug["mean"] == [0.485, 0.456, 0.406] and aug["std"] == [0.229, 0.224, 0.225]


def test_the_signature_defaults_are_the_ones_applied(folder):
    """The text signatures are written by hand (pyo3 shows tuples as `...`): they must be
    the defaults the constructors really apply."""
    root, _ = folder
    cfg = dm.MultiCropLoader(root, 2).config
    params = inspect.signature(dm.MultiCropLoader).parameters
    for key in OFFICIAL:
        want = params[key].default
        assert cfg["augmentation"][key] == (list(want) if isinstance(want, tuple) else want)
    for key in ("seed", "shuffle", "drop_last", "rank", "world_size", "threads", "prefetch"):
        assert cfg["loader"][key] == params[key].default, key
    for key in ("format", "split", "max_failed_fraction", "max_image_pixels"):
        assert cfg["data"][key] == params[key].default, key
    assert cfg["augmentation"] == dm.default_config()["augmentation"]
    assert dm.DataAugmentationDINO().config == dm.default_config()["augmentation"]


def test_the_stub_matches_the_module():
    for name in ("MultiCropLoader", "DataAugmentationDINO"):
        node = stub_class(name)
        runtime = getattr(dm, name)
        assert words(ast.get_docstring(node)) == words(runtime.__doc__), name
        init = next(f for f in node.body if isinstance(f, ast.FunctionDef)
                    and f.name == "__init__")
        sig = inspect.signature(runtime).parameters
        for key, value in stub_defaults(init).items():
            assert sig[key].default == value, (name, key)
        for f in node.body:
            if isinstance(f, ast.FunctionDef) and not f.name.startswith("__"):
                member = getattr(runtime, f.name)
                doc = ast.get_docstring(f)
                if doc:
                    assert words(doc) == words(member.__doc__), (name, f.name)
    assert words(ast.get_docstring(STUB)) == words(dm.__doc__)
    assert words(ast.get_docstring(stub_class("LoaderError"))) == words(dm.LoaderError.__doc__)
    assert issubclass(dm.LoaderError, RuntimeError)
    for name in ("default_config", "load_config"):
        fn = next(n for n in STUB.body if isinstance(n, ast.FunctionDef) and n.name == name)
        assert words(ast.get_docstring(fn)) == words(getattr(dm, name).__doc__), name
    # Every public name of the module is in the stub, and the other way round.
    # (maturin's package re-exports the extension module `dino_multicrop.dino_multicrop`.)
    public = {n for n in dir(dm) if not n.startswith("_")
              and not inspect.ismodule(getattr(dm, n))}
    stubbed = {n.name for n in STUB.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    assert public == stubbed


def test_load_config_resolves_a_preset_as_dino_config_show(tmp_path):
    repo = Path(__file__).resolve().parents[3]
    cfg = dm.load_config(repo / "configs" / "cifar10_cpu.toml", ["optim.batch_size=16"])
    assert cfg["model"]["patch_size"] == 8 and cfg["augmentation"]["global_crops_size"] == 32
    assert cfg["optim"]["batch_size"] == 16
    # Keys the preset leaves alone keep the official defaults.
    assert cfg["loss"]["teacher_temp"] == dm.default_config()["loss"]["teacher_temp"] == 0.04
    assert dm.load_config() == dm.default_config()
    assert set(dm.default_config()) >= {"data", "augmentation", "model", "head", "loss", "optim",
                                        "schedule", "runtime"}
    with pytest.raises(ValueError, match=r"optim\.lr"):
        dm.load_config(overrides=["optim.lr=-1"])
    with pytest.raises(OSError, match="nope.toml"):
        dm.load_config(tmp_path / "nope.toml")
