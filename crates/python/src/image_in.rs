//! One image from Python → upright RGB8 (`image::RgbImage`), for `DataAugmentationDINO`.
//!
//! Accepted, in the order tried:
//! - a path (`str` or `os.PathLike`): decoded by `dino_data::decode::decode_file`, exactly as
//!   the loader decodes its files (format by magic bytes, pixel limit, EXIF orientation);
//! - a NumPy `uint8` array `[H, W, 3]` (RGB), `[H, W, 4]` (RGBA, alpha dropped), `[H, W, 1]` or
//!   `[H, W]` (gray, replicated);
//! - a PIL image: `image.convert("RGB")` unless it already is RGB, as the official loader's
//!   `pil_loader` does, then its bytes.

use dino_data::decode::decode_file;
use image::RgbImage;
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::errors::data_error;

/// Reads `image` (see the module doc). Decoding a path runs without the GIL.
///
/// # Errors
/// `TypeError` for any other object or a non-`uint8` array, `ValueError` for an array of
/// another shape, `OSError`/`FileNotFoundError` for a file that cannot be read or decoded.
pub fn rgb_image(py: Python<'_>, image: &Bound<'_, PyAny>, max_pixels: u64) -> PyResult<RgbImage> {
    if image.is_instance_of::<PyString>() || image.hasattr("__fspath__")? {
        let path: std::path::PathBuf = image.extract()?;
        return py
            .detach(|| decode_file(&path, max_pixels))
            .map_err(|e| data_error(e, false));
    }
    if let Ok(array) = image.cast::<PyUntypedArray>() {
        return from_array(array);
    }
    if image.hasattr("convert")? && image.hasattr("tobytes")? && image.hasattr("mode")? {
        return from_pil(image);
    }
    Err(PyTypeError::new_err(format!(
        "expected a path, a NumPy uint8 array [H, W, 3] or a PIL image, got {}",
        image.get_type().name()?
    )))
}

fn from_array(array: &Bound<'_, PyUntypedArray>) -> PyResult<RgbImage> {
    let array = array.cast::<PyArrayDyn<u8>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "the image array must have dtype uint8, got {}",
            array.dtype()
        ))
    })?;
    let shape = array.shape().to_vec();
    let channels = match shape.as_slice() {
        [_, _] => 1,
        [_, _, c @ (1 | 3 | 4)] => *c,
        _ => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "the image array must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got shape \
                 {shape:?}"
            )))
        }
    };
    let (h, w) = (shape[0], shape[1]);
    let view = array.readonly();
    // A C-contiguous array is copied as one slice; any other layout (Fortran order, strided
    // views) through ndarray's iterator, which walks in logical (row-major) order. Not
    // `as_slice` alone: it also accepts Fortran-contiguous memory, in the wrong order for us.
    let pixels: Vec<u8> = match view.as_slice() {
        Ok(s) if array.is_c_contiguous() => s.to_vec(),
        _ => view.as_array().iter().copied().collect(),
    };
    let rgb: Vec<u8> = match channels {
        3 => pixels,
        1 => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        _ => pixels
            .chunks_exact(channels)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
    };
    rgb_from_raw(w, h, rgb)
}

fn from_pil(image: &Bound<'_, PyAny>) -> PyResult<RgbImage> {
    let mode: String = image.getattr("mode")?.extract()?;
    let rgb = if mode == "RGB" {
        image.clone()
    } else {
        image.call_method1("convert", ("RGB",))?
    };
    let (w, h): (usize, usize) = rgb.getattr("size")?.extract()?;
    let bytes = rgb.call_method0("tobytes")?;
    let bytes = bytes.cast::<PyBytes>()?;
    rgb_from_raw(w, h, bytes.as_bytes().to_vec())
}

fn rgb_from_raw(w: usize, h: usize, rgb: Vec<u8>) -> PyResult<RgbImage> {
    let too_big =
        || pyo3::exceptions::PyValueError::new_err(format!("a {w}x{h} image is too large"));
    let (w, h) = (
        u32::try_from(w).map_err(|_| too_big())?,
        u32::try_from(h).map_err(|_| too_big())?,
    );
    if w == 0 || h == 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "the image has zero size ({w}x{h})"
        )));
    }
    RgbImage::from_raw(w, h, rgb).ok_or_else(|| {
        pyo3::exceptions::PyValueError::new_err(format!("{w}x{h} RGB pixels expected"))
    })
}
