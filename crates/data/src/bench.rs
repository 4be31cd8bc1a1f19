//! Loader throughput measurement (`dino bench data`): decode + multi-crop + batching, end to end,
//! with the consumer doing nothing, so the number is what the loader can feed a trainer.
//!
//! ```no_run
//! use dino_data::bench::{run_bench, BenchOptions};
//!
//! let opts = BenchOptions {
//!     batches: 10,
//!     threads: 2,
//!     ..BenchOptions::new("shared/data/hymenoptera/train")
//! };
//! let report = run_bench(&opts)?;
//! println!("{:.0} images/s, {:.0} crops/s", report.images_per_s, report.crops_per_s);
//! # Ok::<(), dino_data::error::DataError>(())
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use dino_config::{AugmentationConfig, DataConfig, DataFormat};

use crate::augmentation::DataAugmentationDino;
use crate::dataset::open_dataset;
use crate::error::DataError;
use crate::loader::{Loader, LoaderOptions, Shard};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Dataset folder.
    pub data: PathBuf,
    /// Its layout (`Auto` detects).
    pub format: DataFormat,
    /// Split for CIFAR-10 / IDX.
    pub split: String,
    /// Images per batch (official 64).
    pub batch_size: usize,
    /// Timed batches (after the warm-up); the loader cycles through epochs as needed.
    pub batches: usize,
    /// Untimed batches first (page cache, pool start-up).
    pub warmup_batches: usize,
    /// Loader threads; 0 = all cores.
    pub threads: usize,
    /// Seed of the loader.
    pub seed: u64,
    /// Crop settings (official defaults: 2 × 224 + 8 × 96).
    pub augmentation: AugmentationConfig,
    /// Pixel limit and failure fraction.
    pub data_config: DataConfig,
}

impl BenchOptions {
    /// Official crop settings, batch 64, 20 timed batches after 1 warm-up, all cores, seed 0.
    pub fn new(data: impl Into<PathBuf>) -> Self {
        Self {
            data: data.into(),
            format: DataFormat::Auto,
            split: "train".into(),
            batch_size: 64,
            batches: 20,
            warmup_batches: 1,
            threads: 0,
            seed: 0,
            augmentation: AugmentationConfig::default(),
            data_config: DataConfig::default(),
        }
    }
}

/// Result of [`run_bench`]; rates are per wall-clock second of the timed part.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BenchReport {
    /// The dataset folder.
    pub data: String,
    /// Samples in the dataset.
    pub dataset_len: usize,
    /// Timed batches.
    pub batches: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Loader threads actually used.
    pub threads: usize,
    /// Views per image (2 + local crops).
    pub crops_per_image: usize,
    /// Wall seconds of the timed batches.
    pub wall_s: f64,
    /// Images per second.
    pub images_per_s: f64,
    /// Crops per second (`images_per_s × crops_per_image`).
    pub crops_per_s: f64,
    /// Failed loads during the timed part.
    pub failed: u64,
    /// Thread-seconds reading + decoding during the timed part.
    pub load_s: f64,
    /// Thread-seconds augmenting + packing during the timed part.
    pub augment_s: f64,
}

/// Runs the loader over `opts.data` and measures it.
///
/// Errors: those of [`open_dataset`], [`DataAugmentationDino::new`], [`Loader::spawn`], or the first error
/// the loader sends; `batches == 0` is a [`DataError::BadOption`].
pub fn run_bench(opts: &BenchOptions) -> Result<BenchReport, DataError> {
    if opts.batches == 0 {
        return Err(DataError::BadOption {
            name: "batches",
            reason: "must be at least 1".into(),
        });
    }
    let dataset: Arc<dyn crate::dataset::Dataset> =
        open_dataset(&opts.data, opts.format, &opts.split, &opts.data_config)?.into();
    let dataset_len = dataset.len();
    let transform = DataAugmentationDino::new(&opts.augmentation)?;
    let crops_per_image = transform.n_crops();
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let loader = Loader::spawn(
        dataset,
        transform,
        LoaderOptions {
            batch_size: opts.batch_size,
            seed: opts.seed,
            epochs: 0..u64::MAX,
            start_step: 0,
            threads,
            prefetch: 2,
            drop_last: true,
            shuffle: true,
            max_failed_fraction: opts.data_config.max_failed_fraction,
            shard: Shard::WHOLE,
            masking: None,
        },
    )?;
    let next = || {
        loader
            .recv()
            .unwrap_or_else(|| Err(DataError::Spawn("loader ended".into())))
    };
    for _ in 0..opts.warmup_batches {
        next()?;
    }
    let before = loader.stats().snapshot();
    let t0 = Instant::now();
    let mut images = 0usize;
    for _ in 0..opts.batches {
        images += next()?.batch_size;
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let after = loader.stats().snapshot();
    let images_per_s = images as f64 / wall_s;
    Ok(BenchReport {
        data: opts.data.display().to_string(),
        dataset_len,
        batches: opts.batches,
        batch_size: opts.batch_size,
        threads,
        crops_per_image,
        wall_s,
        images_per_s,
        crops_per_s: images_per_s * crops_per_image as f64,
        failed: after.failed_samples - before.failed_samples,
        load_s: after.load_s - before.load_s,
        augment_s: after.augment_s - before.augment_s,
    })
}
