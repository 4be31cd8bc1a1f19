//! `DataAugmentationDINO`: the per-image multi-crop transform, for users who keep their own
//! `Dataset` and `DataLoader` (the official code's `DataAugmentationDINO` in `main_dino.py`,
//! with our Pillow-exact augmentation ops).
//!
//! Randomness: every call draws from one ChaCha8 stream, never from Python's or NumPy's global
//! state. With `index=i` the stream is the Rust loader's for dataset index `i` in the current
//! epoch (`rng_for(seed, epoch, i, Augment)`), so the crops equal `MultiCropLoader`'s for that
//! image, whichever process or thread computes them. Without an index, the stream is keyed by a
//! per-object call counter and, inside a `torch.utils.data` worker, by the worker's seed (which
//! differs between workers and epochs and follows `torch.manual_seed`): forked workers then do
//! not repeat each other's crops, the classic pitfall of seeding in the parent process.

use std::sync::atomic::{AtomicU64, Ordering};

use dino_data::augmentation::DataAugmentationDino;
use dino_data::batch::write_chw;
use dino_data::rng::{rng_for, Stream};
use dino_data::transforms::normalize_chw_into;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::arrays::owned;
use crate::errors::data_error;
use crate::image_in::rgb_image;
use crate::options::{augmentation, count, official, section_dict};

/// The multi-crop transform of one image, for an existing ``torch.utils.data.Dataset``: the
/// official ``DataAugmentationDINO(global_crops_scale, local_crops_scale, local_crops_number)``
/// with the same arguments and defaults, plus the crop sizes, ``seed``, ``normalize`` and any
/// ``[augmentation]`` key of the Rust config.
///
/// ``transform(image)`` takes a PIL image (converted with ``.convert("RGB")`` as the official
/// loader does), a NumPy ``uint8`` array ``[H, W, 3]`` (``[H, W]`` gray, ``[H, W, 4]`` RGBA:
/// alpha dropped) or a path (decoded as the Rust loader decodes: format by content, EXIF
/// orientation applied, ``max_image_pixels`` limit). It returns a list of ``2 +
/// local_crops_number`` NumPy arrays in CHW layout, the 2 globals ``[3, global_crops_size,
/// global_crops_size]`` then the locals ``[3, local_crops_size, local_crops_size]``: ``uint8``
/// RGB by default (``torch.from_numpy(c).float().div(255)`` then ``Normalize`` gives the
/// official tensors), or ``float32`` normalized as ``ToTensor`` + ``Normalize(mean, std)``
/// with ``normalize=True`` (``torch.from_numpy(c)`` is then the official tensor). A
/// ``DataLoader``'s default collate turns the list into the official list of ``[B, 3, H, W]``
/// tensors.
///
/// Reproducible from ``seed``: ``transform(image, index=i)`` draws from the Rust loader's
/// stream for dataset index ``i`` in epoch ``transform.epoch`` (``set_epoch`` or ``epoch=``),
/// so it gives the very crops ``MultiCropLoader`` gives for that image, in any process. Without
/// ``index`` each call draws from a stream keyed by a call counter and, inside a DataLoader
/// worker, the worker's seed, so workers never repeat each other's crops. Errors: ``TypeError``
/// for another input type, ``ValueError`` for a bad argument (naming it) or array shape,
/// ``OSError`` for a file that cannot be decoded.
#[pyclass(module = "dino_multicrop", name = "DataAugmentationDINO", frozen)]
pub struct PyDataAugmentationDino {
    transform: DataAugmentationDino,
    seed: u64,
    epoch: AtomicU64,
    calls: AtomicU64,
    normalize: bool,
    max_image_pixels: u64,
}

#[pymethods]
impl PyDataAugmentationDino {
    /// See `dino_multicrop.pyi`.
    #[new]
    #[pyo3(signature = (
        global_crops_scale = vec![0.4, 1.0],
        local_crops_scale = vec![0.05, 0.4],
        local_crops_number = 8,
        *,
        global_crops_size = 224,
        local_crops_size = 96,
        seed = 0,
        normalize = false,
        max_image_pixels = 178_956_970,
        **augmentation_keys
    ))]
    // The real defaults (pyo3 would show the scale ranges as `...`), pinned by a test.
    #[pyo3(
        text_signature = "(global_crops_scale=(0.4, 1.0), local_crops_scale=(0.05, 0.4), \
        local_crops_number=8, *, global_crops_size=224, local_crops_size=96, seed=0, \
        normalize=False, max_image_pixels=178956970, **augmentation)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        global_crops_scale: Vec<f64>,
        local_crops_scale: Vec<f64>,
        local_crops_number: i64,
        global_crops_size: i64,
        local_crops_size: i64,
        seed: i64,
        normalize: bool,
        max_image_pixels: i64,
        augmentation_keys: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let cfg = augmentation(
            official(
                global_crops_scale,
                local_crops_scale,
                local_crops_number,
                global_crops_size,
                local_crops_size,
            ),
            augmentation_keys,
        )?;
        let transform = DataAugmentationDino::new(&cfg).map_err(|e| data_error(e.into(), true))?;
        Ok(Self {
            transform,
            seed: count("seed", seed, 0)?,
            epoch: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            normalize,
            max_image_pixels: count("max_image_pixels", max_image_pixels, 1)?,
        })
    }

    /// The crops of one image; see `dino_multicrop.pyi`.
    #[pyo3(signature = (image, index = None, epoch = None))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
        index: Option<i64>,
        epoch: Option<i64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let img = rgb_image(py, image, self.max_image_pixels)?;
        let epoch = match epoch {
            Some(e) => count("epoch", e, 0)?,
            None => self.epoch.load(Ordering::Relaxed),
        };
        let mut rng = match index {
            Some(i) => rng_for(self.seed, epoch, count("index", i, 0)?, Stream::Augment),
            None => {
                let call = self.calls.fetch_add(1, Ordering::Relaxed);
                let worker = torch_worker_seed(py)?;
                // Odd multiplier: distinct worker seeds give distinct stream keys.
                let seed = self.seed ^ worker.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                rng_for(seed, epoch, call, Stream::Other)
            }
        };
        let transform = &self.transform;
        let crops = py.detach(|| transform.apply(&img, &mut rng));
        let list = PyList::empty(py);
        let (mean, std) = (transform.config().mean, transform.config().std);
        for crop in &crops {
            let (w, h) = crop.dimensions();
            let shape = [3, h as usize, w as usize];
            let n = 3 * w as usize * h as usize;
            if self.normalize {
                let mut out = vec![0f32; n];
                normalize_chw_into(crop, mean, std, &mut out);
                list.append(owned(py, &shape, out)?)?;
            } else {
                let mut out = vec![0u8; n];
                write_chw(crop, &mut out);
                list.append(owned(py, &shape, out)?)?;
            }
        }
        Ok(list)
    }

    /// Sets the epoch of the streams of later calls (default 0).
    fn set_epoch(&self, epoch: i64) -> PyResult<()> {
        self.epoch
            .store(count("epoch", epoch, 0)?, Ordering::Relaxed);
        Ok(())
    }

    /// The epoch of the streams of later calls.
    #[getter]
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// The seed of every stream.
    #[getter]
    fn seed(&self) -> u64 {
        self.seed
    }

    /// 2 + local_crops_number.
    #[getter]
    fn n_crops(&self) -> usize {
        self.transform.n_crops()
    }

    /// The resolved ``[augmentation]`` section.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        section_dict(py, self.transform.config())
    }

    fn __repr__(&self) -> String {
        let c = self.transform.config();
        format!(
            "DataAugmentationDINO(global_crops_scale={:?}, local_crops_scale={:?}, \
             local_crops_number={}, global_crops_size={}, local_crops_size={}, seed={})",
            c.global_crops_scale,
            c.local_crops_scale,
            c.local_crops_number,
            c.global_crops_size,
            c.local_crops_size,
            self.seed
        )
    }
}

/// `torch.utils.data.get_worker_info().seed` inside a DataLoader worker, else 0. Reads
/// `sys.modules` only: it never imports torch.
fn torch_worker_seed(py: Python<'_>) -> PyResult<u64> {
    let modules = py.import("sys")?.getattr("modules")?;
    let Some(data) = modules
        .call_method1("get", ("torch.utils.data",))?
        .extract::<Option<Bound<'_, PyAny>>>()?
    else {
        return Ok(0);
    };
    let info = data.call_method0("get_worker_info")?;
    if info.is_none() {
        return Ok(0);
    }
    // The seed is a Python int of up to 64 bits (base_seed + worker id), possibly negative.
    let seed: i128 = info.getattr("seed")?.extract()?;
    Ok(seed as u64)
}
