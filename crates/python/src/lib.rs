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
//! - [`errors`] — Rust errors → Python exceptions (`ValueError` naming the argument, ...).
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

/// `dino_multicrop.default_config()`: every `[augmentation]` and `[data]` key with its default
/// (the official DINO values), as the Rust config defines them.
#[pyfunction]
fn default_config(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyDict>> {
    let cfg = dino_config::Config::default();
    let d = pyo3::types::PyDict::new(py);
    d.set_item(
        "augmentation",
        options::section_dict(py, &cfg.augmentation)?,
    )?;
    d.set_item("data", options::section_dict(py, &cfg.data)?)?;
    Ok(d)
}

/// The module: classes, the error type, `default_config`, `__version__`.
#[pymodule]
fn dino_multicrop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<loader::MultiCropLoader>()?;
    m.add_class::<transform::PyDataAugmentationDino>()?;
    m.add("LoaderError", m.py().get_type::<errors::LoaderError>())?;
    m.add_function(wrap_pyfunction!(default_config, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
