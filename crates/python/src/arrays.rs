//! Crops → NumPy arrays that own the Rust buffers (no copy), which `torch.from_numpy` wraps
//! (again without a copy).
//!
//! A loader batch holds its crops view-major (`dino_data::batch`): `globals` is one
//! `[2, B, 3, Hg, Wg]` buffer and `locals` one `[n_local, B, 3, Hl, Wl]` buffer. Each becomes one
//! NumPy array owning the `Vec` (`PyArray::from_owned_array`), and the list of crops the
//! official training loop expects — `[B, 3, H, W]` per view, the 2 globals then the locals — is
//! made of views into those two arrays (`array[v]`), so nothing is copied after the workers
//! wrote the pixels.

use dino_data::batch::MultiCropBatch;
use dino_data::transforms::normalize_u8_chw_into;
use ndarray::{Array, IxDyn};
use numpy::{Element, PyArray, PyArray1};
use pyo3::prelude::*;
use pyo3::types::PyList;

/// Pixel buffers of one batch, `u8` as the workers wrote them or normalized `f32`.
pub enum Pixels {
    /// `globals`, `locals` as `u8`.
    U8(Vec<u8>, Vec<u8>),
    /// `(v / 255 − mean) / std` in `f32`, the same layout.
    F32(Vec<f32>, Vec<f32>),
}

impl Pixels {
    /// Takes the batch's buffers, normalizing them to `f32` when `norm` is given as
    /// `(mean, std)` (runs without the GIL: call it inside `py.detach`).
    pub fn take(batch: &mut MultiCropBatch, norm: Option<([f64; 3], [f64; 3])>) -> Self {
        let (g, l) = (
            std::mem::take(&mut batch.globals),
            std::mem::take(&mut batch.locals),
        );
        match norm {
            None => Pixels::U8(g, l),
            Some((mean, std)) => {
                let gs = batch.global_size as usize;
                let ls = batch.local_size as usize;
                Pixels::F32(
                    normalized(&g, gs * gs, mean, std),
                    normalized(&l, ls * ls, mean, std),
                )
            }
        }
    }
}

fn normalized(src: &[u8], plane: usize, mean: [f64; 3], std: [f64; 3]) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    if !src.is_empty() {
        normalize_u8_chw_into(src, plane, mean, std, &mut out);
    }
    out
}

/// The list of per-view arrays `[B, 3, H, W]`: 2 globals, then `n_local` locals.
pub fn crop_list<'py>(
    py: Python<'py>,
    batch: &MultiCropBatch,
    pixels: Pixels,
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    match pixels {
        Pixels::U8(g, l) => push_views(&list, batch, g, l)?,
        Pixels::F32(g, l) => push_views(&list, batch, g, l)?,
    }
    Ok(list)
}

fn push_views<T: Element>(
    list: &Bound<'_, PyList>,
    batch: &MultiCropBatch,
    globals: Vec<T>,
    locals: Vec<T>,
) -> PyResult<()> {
    let py = list.py();
    let g = owned(py, &batch.globals_shape(), globals)?;
    for v in 0..2 {
        list.append(g.get_item(v)?)?;
    }
    if batch.n_local > 0 {
        let l = owned(py, &batch.locals_shape(), locals)?;
        for v in 0..batch.n_local {
            list.append(l.get_item(v)?)?;
        }
    }
    Ok(())
}

/// A NumPy array of `shape` that owns `data` (C order; no copy).
pub fn owned<'py, T: Element>(
    py: Python<'py>,
    shape: &[usize],
    data: Vec<T>,
) -> PyResult<Bound<'py, PyAny>> {
    let array = Array::from_shape_vec(IxDyn(shape), data).map_err(|e| {
        pyo3::exceptions::PyValueError::new_err(format!("buffer does not fit {shape:?}: {e}"))
    })?;
    Ok(PyArray::from_owned_array(py, array).into_any())
}

/// A 1-D `int64` array owning `values`.
pub fn int64<'py>(py: Python<'py>, values: Vec<i64>) -> Bound<'py, PyAny> {
    PyArray1::from_vec(py, values).into_any()
}
