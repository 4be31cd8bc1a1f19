//! `MultiCropLoader`: the Rust loader (`dino_data::loader::Loader`) as a Python iterable that
//! replaces `DataLoader(ImageFolder(root, DataAugmentationDINO(...)))` in a PyTorch loop.
//!
//! One iteration is one epoch (`len(loader)` batches), as with a `DataLoader`. The Rust loader
//! runs on its own threads across epochs: when the next iteration asks for the epoch that
//! follows the one just finished (the usual loop, with or without `set_epoch`), it keeps the
//! batches it already prepared; any other epoch, or an iteration abandoned half way, restarts
//! it at the requested epoch. Either way batch `s` of epoch `e` is the same bytes, because the
//! Rust loader's output depends only on (seed, epoch, dataset index), not on threads or timing.
//!
//! While a batch is awaited the GIL is released and the wait wakes every 50 ms to run Python's
//! signal handlers, so Ctrl-C raises `KeyboardInterrupt` at once and stops the loader's threads.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;
use dino_config::{AugmentationConfig, Config, DataConfig};
use dino_data::augmentation::DataAugmentationDino;
use dino_data::batch::MultiCropBatch;
use dino_data::dataset::{open_dataset, Dataset};
use dino_data::loader::{check_options, epoch_order, Loader, LoaderOptions, Shard};
use pyo3::exceptions::{PyStopIteration, PyUserWarning};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::arrays::{crop_list, int64, Pixels};
use crate::errors::{bad_arg, data_error, file_config_error, LoaderError};
use crate::options::{augmentation, count, data, official, section_dict, DataArgs};

/// How long one wait for a batch lasts before Python's signal handlers run.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// The Rust loader while it runs, and the position of the next batch it will send.
struct Running {
    loader: Loader,
    epoch: u64,
    step: u64,
}

/// The DINO multi-crop loader over a dataset folder: ``DataLoader(ImageFolder(root,
/// DataAugmentationDINO(...)), batch_size, shuffle=True, drop_last=True)`` in Rust threads.
///
/// ``root`` is an ImageFolder (``root/<class>/<image>``, label = sorted class index), a flat
/// folder of images (label 0), CIFAR-10 binary batches or MNIST-family IDX files (``format``
/// ``"auto"`` detects which). Iterating gives one epoch, ``len(loader)`` batches of
/// ``(crops, labels)``:
///
/// - ``crops``: a list of ``2 + local_crops_number`` arrays, the official list of crops batched:
///   ``crops[0]``, ``crops[1]`` the global views ``[B, 3, global_crops_size, global_crops_size]``,
///   then the local views ``[B, 3, local_crops_size, local_crops_size]``; ``uint8`` RGB
///   (normalize on the device: ``(x / 255 - mean) / std``), or ``float32`` normalized with
///   ``normalize=True``. The 2 globals are views into one ``[2, B, 3, H, W]`` array and the
///   locals into one ``[n, B, 3, h, w]`` array that owns the Rust buffer (no copy);
/// - ``labels``: ``int64`` ``[B]`` class indices;
/// - with ``return_indices=True`` a third item, ``int64`` ``[B]`` dataset indices used.
///
/// Arguments (``global_crops_scale`` .. ``local_crops_size`` are the official
/// ``DataAugmentationDINO``'s, with its defaults):
///
/// - ``batch_size``: images per batch and rank (official ``--batch_size_per_gpu 64``);
/// - ``global_crops_scale`` (0.4, 1.0), ``local_crops_scale`` (0.05, 0.4): RandomResizedCrop
///   area ranges; ``local_crops_number`` 8; ``global_crops_size`` 224, ``local_crops_size`` 96;
/// - ``threads``: Rust worker threads, 0 = all cores;
/// - ``seed``: seed of the shuffle and of every augmentation draw (official ``--seed 0``);
/// - ``shuffle``: a seeded new order each epoch (official); False: index order;
/// - ``drop_last``: drop each epoch's last incomplete batch (official True);
/// - ``rank``, ``world_size``: this process's share of every epoch under ``torch.distributed``,
///   dealt as ``DistributedSampler`` deals it and as the Rust trainer shards (rank ``r`` reads
///   positions ``r, r + world_size, ...`` of the epoch order; without ``drop_last`` the order is
///   padded by repeating its start). Pass ``dist.get_rank()``, ``dist.get_world_size()``;
/// - ``normalize``: ``float32`` ``(x / 255 - mean) / std`` crops instead of ``uint8``;
/// - ``return_indices``: also yield the dataset indices;
/// - ``prefetch``: batches prepared ahead (back-pressure beyond that);
/// - ``format``: ``"auto"``, ``"image_folder"``, ``"flat"``, ``"cifar10_bin"`` or ``"idx"``;
/// - ``split``: ``"train"`` or ``"test"`` (CIFAR-10 binary and IDX only);
/// - ``max_failed_fraction``: fraction of the dataset that may fail to load before
///   ``LoaderError`` (0.01); ``max_image_pixels``: larger images are rejected from their
///   header (Pillow's decompression-bomb limit);
/// - ``**augmentation``: any other ``[augmentation]`` key of the Rust config, e.g.
///   ``blur_global1_p=0.0``, ``solarize_p=0.0``, ``crop_ratio=(0.75, 1.333)``, ``mean``, ``std``
///   (all keys and defaults: ``default_config()["augmentation"]``).
///
/// A bad image (corrupt, truncated, unsupported, too large) is skipped: a random other image of
/// the dataset takes its place, ``skipped`` counts it, ``failures`` names it with the reason and
/// a ``UserWarning`` is issued once per image. A bad argument raises ``ValueError`` naming it;
/// a missing ``root`` ``FileNotFoundError``. Batches are awaited without holding the GIL, and
/// Ctrl-C raises ``KeyboardInterrupt`` at once.
///
/// Epochs: each iteration reads epoch ``loader.epoch``, which then advances by one;
/// ``set_epoch(e)`` sets it, as ``DistributedSampler.set_epoch``. The Rust threads keep working
/// across epoch boundaries when the next iteration reads the next epoch.
#[pyclass(module = "dino_multicrop")]
pub struct MultiCropLoader {
    dataset: Arc<dyn Dataset>,
    transform: DataAugmentationDino,
    opts: LoaderOptions,
    data_cfg: DataConfig,
    per_epoch: u64,
    normalize: bool,
    return_indices: bool,
    /// The epoch the next iteration reads.
    next_epoch: u64,
    /// An iteration is under way (between `__iter__` and its `StopIteration`).
    iterating: bool,
    running: Option<Running>,
    /// The epoch order last used to find replaced samples, by epoch.
    order: Option<(u64, Arc<Vec<usize>>)>,
    /// Delivered samples that replace an image that failed to load.
    skipped: u64,
    /// Distinct images that failed, by dataset index: `path: reason`.
    failures: BTreeMap<usize, String>,
}

impl MultiCropLoader {
    /// Opens the dataset (without the GIL) and checks every option before any work.
    fn build(
        py: Python<'_>,
        data_cfg: DataConfig,
        aug: &AugmentationConfig,
        opts: LoaderOptions,
        flags: (bool, bool),
        from_args: bool,
    ) -> PyResult<Self> {
        let transform =
            DataAugmentationDino::new(aug).map_err(|e| data_error(e.into(), from_args))?;
        let cfg = data_cfg.clone();
        let dataset = py
            .detach(move || {
                open_dataset(
                    std::path::Path::new(&cfg.path),
                    cfg.format,
                    &cfg.split,
                    &cfg,
                )
            })
            .map_err(|e| data_error(e, from_args))?;
        let per_epoch = check_options(dataset.len(), &transform, &opts)
            .map_err(|e| data_error(e, from_args))?;
        Ok(Self {
            dataset: Arc::from(dataset),
            transform,
            opts,
            data_cfg,
            per_epoch,
            normalize: flags.0,
            return_indices: flags.1,
            next_epoch: 0,
            iterating: false,
            running: None,
            order: None,
            skipped: 0,
            failures: BTreeMap::new(),
        })
    }

    /// Stops the Rust loader's threads and waits for them (without the GIL: each finishes the
    /// sample it is on).
    fn stop(&mut self, py: Python<'_>) {
        self.iterating = false;
        if let Some(r) = self.running.take() {
            py.detach(move || drop(r));
        }
    }

    /// Stops the Rust loader's threads without waiting for them, so an exception (Ctrl-C above
    /// all) reaches Python at once; a helper thread joins them after their current sample.
    fn abandon(&mut self) {
        self.iterating = false;
        if let Some(r) = self.running.take() {
            // Should the OS refuse the thread, the closure and the loader in it are dropped
            // right here, which only makes the wait longer.
            let _ = std::thread::Builder::new()
                .name("dino-multicrop-stop".into())
                .spawn(move || drop(r));
        }
    }

    /// Starts an iteration over epoch `next_epoch`, reusing the running loader when it stands
    /// at the start of that epoch.
    fn start_epoch(&mut self, py: Python<'_>) -> PyResult<()> {
        let e = self.next_epoch;
        let ready = matches!(&self.running, Some(r) if r.epoch == e && r.step == 0);
        if !ready {
            self.stop(py);
            let opts = LoaderOptions {
                epochs: e..u64::MAX,
                start_step: 0,
                ..self.opts.clone()
            };
            let (dataset, transform) = (self.dataset.clone(), self.transform.clone());
            let loader = py
                .detach(move || Loader::spawn(dataset, transform, opts))
                .map_err(|err| data_error(err, true))?;
            self.running = Some(Running {
                loader,
                epoch: e,
                step: 0,
            });
        }
        self.iterating = true;
        self.next_epoch = e + 1;
        Ok(())
    }

    /// The next batch of the running loader, waiting without the GIL and running Python's
    /// signal handlers every [`SIGNAL_POLL`]. On any error the loader is stopped.
    fn receive(&mut self, py: Python<'_>) -> PyResult<MultiCropBatch> {
        loop {
            let Some(r) = &self.running else {
                return Err(LoaderError::new_err("the loader is not running"));
            };
            let rx = r.loader.receiver();
            match py.detach(|| rx.recv_timeout(SIGNAL_POLL)) {
                Ok(Ok(batch)) => return Ok(batch),
                Ok(Err(e)) => {
                    self.abandon();
                    return Err(data_error(e, true));
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(interrupt) = py.check_signals() {
                        self.abandon();
                        return Err(interrupt);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.abandon();
                    return Err(LoaderError::new_err(
                        "the loader's producer ended without sending the epoch's batches",
                    ));
                }
            }
        }
    }

    /// Counts the samples of `batch` that replace an image that failed to load (the dataset
    /// index used differs from the one the epoch order puts at that position) and warns once
    /// per distinct bad image, with the Rust loader's reason.
    fn account_failures(&mut self, py: Python<'_>, batch: &MultiCropBatch) -> PyResult<()> {
        let len = self.dataset.len();
        let order = match &self.order {
            Some((e, o)) if *e == batch.epoch => o.clone(),
            _ => {
                let (seed, epoch, shuffle) = (self.opts.seed, batch.epoch, self.opts.shuffle);
                let o = Arc::new(py.detach(move || {
                    if shuffle {
                        epoch_order(seed, epoch, len)
                    } else {
                        (0..len).collect()
                    }
                }));
                self.order = Some((batch.epoch, o.clone()));
                o
            }
        };
        let first = batch.step as usize * self.opts.batch_size;
        let mut new = Vec::new();
        for (b, used) in batch.indices.iter().enumerate() {
            let planned = order[self.opts.shard.position(first + b, len)];
            if *used as usize != planned {
                self.skipped += 1;
                if !self.failures.contains_key(&planned) {
                    new.push(planned);
                }
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let reasons: BTreeMap<usize, String> = match &self.running {
            Some(r) => r.loader.stats().failures().into_iter().collect(),
            None => BTreeMap::new(),
        };
        for index in new {
            let what = reasons
                .get(&index)
                .cloned()
                .unwrap_or_else(|| self.dataset.describe(index));
            let msg = format!(
                "dino_multicrop: skipped an image that failed to load (a random other image of \
                 the dataset takes its place in the batch): {what}"
            );
            self.failures.insert(index, what);
            let msg = CString::new(msg.replace('\0', " ")).expect("no NUL left");
            PyErr::warn(py, &py.get_type::<PyUserWarning>(), &msg, 2)?;
        }
        Ok(())
    }
}

#[pymethods]
impl MultiCropLoader {
    /// See `dino_multicrop.pyi`.
    #[new]
    #[pyo3(signature = (
        root,
        batch_size = 64,
        *,
        global_crops_scale = vec![0.4, 1.0],
        local_crops_scale = vec![0.05, 0.4],
        local_crops_number = 8,
        global_crops_size = 224,
        local_crops_size = 96,
        threads = 0,
        seed = 0,
        shuffle = true,
        drop_last = true,
        rank = 0,
        world_size = 1,
        normalize = false,
        return_indices = false,
        prefetch = 2,
        format = "auto",
        split = "train",
        max_failed_fraction = 0.01,
        max_image_pixels = 178_956_970,
        **augmentation_keys
    ))]
    // The real defaults (pyo3 would show the scale ranges as `...`), pinned by a test.
    #[pyo3(
        text_signature = "(root, batch_size=64, *, global_crops_scale=(0.4, 1.0), \
        local_crops_scale=(0.05, 0.4), local_crops_number=8, global_crops_size=224, \
        local_crops_size=96, threads=0, seed=0, shuffle=True, drop_last=True, rank=0, \
        world_size=1, normalize=False, return_indices=False, prefetch=2, format='auto', \
        split='train', max_failed_fraction=0.01, max_image_pixels=178956970, **augmentation)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        root: std::path::PathBuf,
        batch_size: i64,
        global_crops_scale: Vec<f64>,
        local_crops_scale: Vec<f64>,
        local_crops_number: i64,
        global_crops_size: i64,
        local_crops_size: i64,
        threads: i64,
        seed: i64,
        shuffle: bool,
        drop_last: bool,
        rank: i64,
        world_size: i64,
        normalize: bool,
        return_indices: bool,
        prefetch: i64,
        format: &str,
        split: &str,
        max_failed_fraction: f64,
        max_image_pixels: i64,
        augmentation_keys: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let aug = augmentation(
            official(
                global_crops_scale,
                local_crops_scale,
                local_crops_number,
                global_crops_size,
                local_crops_size,
            ),
            augmentation_keys,
        )?;
        let data_args = DataArgs {
            format,
            split,
            max_failed_fraction,
            max_image_pixels,
            drop_last,
        };
        let data_cfg = data(&root.to_string_lossy(), &data_args)?;
        let opts = LoaderOptions {
            batch_size: count("batch_size", batch_size, 1)? as usize,
            seed: count("seed", seed, 0)?,
            epochs: 0..1,
            start_step: 0,
            threads: count("threads", threads, 0)? as usize,
            prefetch: count("prefetch", prefetch, 0)? as usize,
            drop_last,
            shuffle,
            max_failed_fraction,
            shard: shard(rank, world_size)?,
            masking: None,
        };
        Self::build(py, data_cfg, &aug, opts, (normalize, return_indices), true)
    }

    /// The loader of a TOML preset of the Rust trainer (e.g. ``configs/cifar10_cpu.toml``):
    /// its ``[augmentation]``, its ``[data]`` (format, split, drop_last, max_failed_fraction,
    /// max_image_pixels), ``optim.batch_size``, ``runtime.seed``, ``runtime.data_threads`` and
    /// ``runtime.prefetch_batches``. ``overrides`` are ``"section.key=value"`` strings applied
    /// first (``dino train --set``); ``root``, ``batch_size``, ``threads`` and ``seed`` replace
    /// the config's when given. The config is validated as ``dino train`` validates it: a bad
    /// key raises ``ValueError`` naming it. Same config and seed: the same batches as ``dino
    /// train``'s loader.
    #[staticmethod]
    #[pyo3(signature = (
        config,
        root = None,
        batch_size = None,
        *,
        overrides = Vec::new(),
        threads = None,
        seed = None,
        shuffle = true,
        rank = 0,
        world_size = 1,
        normalize = false,
        return_indices = false
    ))]
    #[pyo3(
        text_signature = "(config, root=None, batch_size=None, *, overrides=(), \
        threads=None, seed=None, shuffle=True, rank=0, world_size=1, normalize=False, \
        return_indices=False)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn from_config(
        py: Python<'_>,
        config: std::path::PathBuf,
        root: Option<std::path::PathBuf>,
        batch_size: Option<i64>,
        overrides: Vec<String>,
        threads: Option<i64>,
        seed: Option<i64>,
        shuffle: bool,
        rank: i64,
        world_size: i64,
        normalize: bool,
        return_indices: bool,
    ) -> PyResult<Self> {
        let sets: Vec<&str> = overrides.iter().map(String::as_str).collect();
        let cfg = Config::from_file(&config, &sets).map_err(file_config_error)?;
        let mut data_cfg = cfg.data.clone();
        if let Some(root) = root {
            data_cfg.path = root.to_string_lossy().into_owned();
        }
        if data_cfg.path.is_empty() {
            return Err(bad_arg(
                "root",
                format!("{} sets no data.path: give root", config.display()),
            ));
        }
        let mut opts = LoaderOptions {
            shuffle,
            shard: shard(rank, world_size)?,
            ..LoaderOptions::from_config(&cfg)
        };
        if let Some(b) = batch_size {
            opts.batch_size = count("batch_size", b, 1)? as usize;
        }
        if let Some(t) = threads {
            opts.threads = count("threads", t, 0)? as usize;
        }
        if let Some(s) = seed {
            opts.seed = count("seed", s, 0)?;
        }
        Self::build(
            py,
            data_cfg,
            &cfg.augmentation,
            opts,
            (normalize, return_indices),
            false,
        )
    }

    /// Batches in one epoch of this rank.
    fn __len__(&self) -> usize {
        self.per_epoch as usize
    }

    /// Starts an epoch; see `dino_multicrop.pyi`.
    fn __iter__(mut slf: PyRefMut<'_, Self>) -> PyResult<PyRefMut<'_, Self>> {
        let py = slf.py();
        slf.start_epoch(py)?;
        Ok(slf)
    }

    /// The next `(crops, labels)` (or `(crops, labels, indices)`) of the epoch.
    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        if !self.iterating {
            self.start_epoch(py)?;
        }
        let Some(r) = &mut self.running else {
            return Err(LoaderError::new_err("the loader is not running"));
        };
        if r.step == self.per_epoch {
            r.epoch += 1;
            r.step = 0;
            self.iterating = false;
            return Err(PyStopIteration::new_err(()));
        }
        let mut batch = self.receive(py)?;
        if let Some(r) = &mut self.running {
            r.step += 1;
        }
        self.account_failures(py, &batch)?;
        let norm = self.normalize.then(|| {
            let a = self.transform.config();
            (a.mean, a.std)
        });
        let pixels = py.detach(|| Pixels::take(&mut batch, norm));
        let crops = crop_list(py, &batch, pixels)?;
        let labels = int64(py, std::mem::take(&mut batch.labels));
        if self.return_indices {
            let indices = batch.indices.iter().map(|&i| i as i64).collect();
            PyTuple::new(py, [crops.into_any(), labels, int64(py, indices)])
        } else {
            PyTuple::new(py, [crops.into_any(), labels])
        }
    }

    /// Sets the epoch the next iteration reads (its shuffle and augmentation streams).
    fn set_epoch(&mut self, epoch: i64) -> PyResult<()> {
        self.next_epoch = count("epoch", epoch, 0)?;
        Ok(())
    }

    /// The epoch the next iteration reads.
    #[getter]
    fn epoch(&self) -> u64 {
        self.next_epoch
    }

    /// Images per batch (of this rank).
    #[getter]
    fn batch_size(&self) -> usize {
        self.opts.batch_size
    }

    /// Samples in the dataset (all ranks together).
    #[getter]
    fn dataset_size(&self) -> usize {
        self.dataset.len()
    }

    /// Class names; label ``i`` is ``classes[i]`` (empty for unlabeled data).
    #[getter]
    fn classes(&self) -> Vec<String> {
        self.dataset.classes().to_vec()
    }

    /// Delivered samples that stand in for an image that failed to load.
    #[getter]
    fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Each distinct image that failed to load: ``"path: reason"``, by dataset index.
    #[getter]
    fn failures(&self) -> Vec<String> {
        self.failures.values().cloned().collect()
    }

    /// The resolved ``{"augmentation": ..., "data": ..., "loader": ...}``.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("augmentation", section_dict(py, self.transform.config())?)?;
        d.set_item("data", section_dict(py, &self.data_cfg)?)?;
        let o = &self.opts;
        let loader = PyDict::new(py);
        loader.set_item("batch_size", o.batch_size)?;
        loader.set_item("seed", o.seed)?;
        loader.set_item("threads", o.threads)?;
        loader.set_item("prefetch", o.prefetch)?;
        loader.set_item("shuffle", o.shuffle)?;
        loader.set_item("drop_last", o.drop_last)?;
        loader.set_item("rank", o.shard.rank)?;
        loader.set_item("world_size", o.shard.world_size)?;
        loader.set_item("normalize", self.normalize)?;
        d.set_item("loader", loader)?;
        Ok(d)
    }

    /// The running Rust loader's counters: failed load attempts, batches and samples built,
    /// seconds spent loading and augmenting (summed over threads), seconds its producer waited
    /// for the consumer. Empty before the first iteration.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.running {
            Some(r) => section_dict(py, &r.loader.stats().snapshot()),
            None => Ok(PyDict::new(py).into_any()),
        }
    }

    /// Stops the loader's threads now (they also stop when it is garbage collected).
    fn close(&mut self, py: Python<'_>) {
        self.stop(py);
    }

    fn __repr__(&self) -> String {
        format!(
            "MultiCropLoader({:?}, batch_size={}, images={}, batches_per_epoch={}, crops=2x{} + {}x{}, rank={}/{})",
            self.data_cfg.path,
            self.opts.batch_size,
            self.dataset.len(),
            self.per_epoch,
            self.transform.global_size(),
            self.transform.n_local(),
            self.transform.local_size(),
            self.opts.shard.rank,
            self.opts.shard.world_size
        )
    }
}

/// `rank` of `world_size`, checked: `ValueError` naming the argument that is out of range.
fn shard(rank: i64, world_size: i64) -> PyResult<Shard> {
    let world_size = count("world_size", world_size, 1)? as usize;
    let rank = count("rank", rank, 0)? as usize;
    if rank >= world_size {
        return Err(bad_arg(
            "rank",
            format!("{rank} is not below world_size = {world_size}"),
        ));
    }
    Ok(Shard { rank, world_size })
}
