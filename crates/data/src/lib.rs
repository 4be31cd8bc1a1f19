//! The DINO data pipeline, without libtorch: datasets on disk, robust decoding, the multi-crop
//! augmentation of DINO (Caron et al. 2021, §3.1 and `DataAugmentationDINO` of the official
//! `main_dino.py`) and a parallel, deterministic loader that sends typed `u8` batches over a
//! bounded channel to the trainer, which turns them into tensors on its own thread.
//!
//! Modules, in pipeline order:
//! - [`dataset`] — the [`Dataset`](dataset::Dataset) trait, ImageFolder / flat folders / CIFAR-10
//!   binary / IDX, [`open_dataset`](dataset::open_dataset), and the CIFAR-10 tarball extractor;
//! - [`decode`] — bytes → upright RGB8 (format by magic bytes, pixel limit, EXIF, truncation);
//! - [`transforms`], [`augmentation`] — the augmentation ops and the per-image multi-crop;
//! - [`rng`] — the per-sample random streams that make everything seed-determined;
//! - [`batch`] — [`MultiCropBatch`](batch::MultiCropBatch), view-major `u8` CHW crops;
//! - [`masking`] — iBOT's block masks of the global crops (DINOv2), carried in the batch;
//! - [`loader`] — [`Loader`](loader::Loader), the producer thread + rayon pool + channel;
//! - [`bench`](mod@bench), [`preview`] — throughput report and crop picture for the CLI;
//! - [`video`] — frames of a video file (through `ffmpeg`) or a frames folder, one at a time,
//!   fitted to the patch grid; MP4 / GIF output;
//! - [`error`] — [`DataError`](error::DataError).
//!
//! Open a folder, spawn the loader and receive a batch:
//!
//! ```
//! use std::sync::Arc;
//! use dino_config::{AugmentationConfig, DataConfig, DataFormat};
//! use dino_data::dataset::{open_dataset, Dataset};
//! use dino_data::loader::{Loader, LoaderOptions};
//! use dino_data::augmentation::DataAugmentationDino;
//!
//! // A tiny ImageFolder: root/<class>/<image>.
//! let root = tempfile::tempdir()?;
//! for (class, shade) in [("cats", 60u8), ("dogs", 200u8)] {
//!     std::fs::create_dir(root.path().join(class))?;
//!     for i in 0..3u8 {
//!         let img = image::RgbImage::from_fn(48, 40, |x, y| image::Rgb([shade, x as u8 * 5, y as u8 + i]));
//!         img.save(root.path().join(class).join(format!("{i}.png")))?;
//!     }
//! }
//! let dataset = open_dataset(root.path(), DataFormat::Auto, "train", &DataConfig::default())?;
//! assert_eq!(dataset.classes(), ["cats", "dogs"]);
//!
//! let aug = AugmentationConfig { global_crops_size: 32, local_crops_size: 16, local_crops_number: 2, ..Default::default() };
//! let opts = LoaderOptions { batch_size: 4, epochs: 0..1, threads: 2, ..Default::default() };
//! let loader = Loader::spawn(Arc::from(dataset), DataAugmentationDino::new(&aug)?, opts)?;
//! let batch = loader.recv().expect("one batch")?;
//! assert_eq!(batch.globals_shape(), [2, 4, 3, 32, 32]); // [view, B, C, H, W], u8
//! assert_eq!(batch.locals_shape(), [2, 4, 3, 16, 16]);
//! assert_eq!(batch.labels.len(), 4);
//! assert!(loader.recv().is_none()); // 6 images, batch 4, drop_last: one batch per epoch
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod rng;
// Datasets, decoding, batches, the loader.
pub mod batch;
pub mod bench;
pub mod copydetect;
pub mod dataset;
pub mod decode;
pub mod error;
pub mod loader;
pub mod masking;
pub mod preview;
// Augmentation.
pub mod augmentation;
pub mod transforms;
// Video input (frames folders, video files through ffmpeg) and output.
pub mod video;
