//! `dino_multicrop`: the DINO multi-crop data pipeline of `dino-data` as a Python module for
//! PyTorch training loops (PyO3, one abi3 wheel for CPython ≥ 3.9). No libtorch: crops are
//! NumPy arrays that own the Rust buffers, which `torch.from_numpy` wraps without a copy.
//!
//! - [`loader`] — `MultiCropLoader`, the Rust loader (threads, prefetch, seed-exact batches,
//!   `torch.distributed` sharding) as an iterable of `(crops, labels)`;
//! - [`transform`] — `DataAugmentationDINO`, the per-image transform for an existing `Dataset`;
//! - [`options`] — keyword arguments → the `[augmentation]` / `[data]` config sections;
//! - [`arrays`] — crops → NumPy arrays without copying; `normalize=True` to `f32`;
//! - [`image_in`] — a path, a NumPy array or a PIL image → RGB8;
//! - [`errors`] — Rust errors → Python exceptions (`ValueError` naming the argument, ...);
//! - `default_config()`, `load_config(path, overrides)` — the Rust trainer's configuration
//!   (defaults, or a preset resolved and validated as `dino config show` does) as dicts.
//!
//! The Python-side documentation (every argument, shapes, dtypes) is the stub
//! `dino_multicrop.pyi` beside this crate's `Cargo.toml`; the tests are `tests/test_*.py`.

pub mod arrays;
pub mod errors;
pub mod image_in;
pub mod loader;
pub mod options;
pub mod transform;

use pyo3::prelude::*;

/// Every key of the Rust trainer's configuration with its default (the official DINO values),
/// section by section: ``{"data": {...}, "augmentation": {...}, "model": {...}, ...}``.
#[pyfunction]
fn default_config(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    options::section_dict(py, &dino_config::Config::default())
}

/// A TOML preset of the Rust trainer (e.g. ``configs/cifar10_cpu.toml``, only what differs from
/// the defaults) resolved as ``dino config show`` resolves it: the defaults, the preset, then
/// ``overrides`` (``"section.key=value"``, as ``dino train --set``), validated as ``dino
/// train`` validates it. Returns every section as a dict; without ``path``, the defaults with
/// the overrides. A bad key raises ``ValueError`` naming it, a missing file ``OSError``.
#[pyfunction]
#[pyo3(signature = (path = None, overrides = Vec::new()))]
#[pyo3(text_signature = "(path=None, overrides=())")]
fn load_config(
    py: Python<'_>,
    path: Option<std::path::PathBuf>,
    overrides: Vec<String>,
) -> PyResult<Bound<'_, PyAny>> {
    let sets: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let cfg = match path {
        Some(p) => dino_config::Config::from_file(p, &sets),
        None => dino_config::Config::with_overrides(&sets),
    }
    .map_err(errors::file_config_error)?;
    options::section_dict(py, &cfg)
}

/// DINO multi-crop augmentation and loading in Rust, for PyTorch training loops.
///
/// The augmentation is the official ``DataAugmentationDINO`` of facebookresearch/dino
/// (``main_dino.py``): per image 2 global crops (RandomResizedCrop ``global_crops_size``, scale
/// ``global_crops_scale``, bicubic) and ``local_crops_number`` local crops (``local_crops_size``,
/// ``local_crops_scale``); each crop: horizontal flip p 0.5, ColorJitter(0.4, 0.4, 0.2, 0.1) w.p.
/// 0.8, grayscale p 0.2, Gaussian blur (p 1.0 / 0.1 / 0.5 for global 1 / global 2 / locals, sigma
/// ~ U(0.1, 2)), solarize (global 2 only, p 0.2). The pixel ops follow Pillow's kernels; the crops
/// are ``uint8`` unless ``normalize=True`` asks for ``ToTensor`` + ``Normalize(mean, std)`` in
/// ``float32``.
///
/// Every random draw comes from a stream seeded by ``(seed, epoch, dataset index)``: the same seed
/// gives the same bytes whatever the number of threads, and the same bytes as the Rust trainer's
/// loader (``dino train``) with the same configuration.
///
/// Arrays own the Rust buffers (no copy); ``torch.from_numpy(a)`` wraps them without a copy too::
///
///     loader = MultiCropLoader("data/train", 64, threads=8)
///     for epoch in range(100):
///         loader.set_epoch(epoch)
///         for crops, labels in loader:          # crops: 2 + 8 arrays [64, 3, H, W] uint8
///             crops = [torch.from_numpy(c).cuda(non_blocking=True) for c in crops]
///             crops = [(c.float() / 255 - mean) / std for c in crops]   # on the device
#[pymodule]
fn dino_multicrop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<loader::MultiCropLoader>()?;
    m.add_class::<transform::PyDataAugmentationDino>()?;
    m.add("LoaderError", m.py().get_type::<errors::LoaderError>())?;
    m.add_function(wrap_pyfunction!(default_config, m)?)?;
    m.add_function(wrap_pyfunction!(load_config, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
