//! Datasets: a small [`Dataset`] trait and the on-disk layouts DINO is trained on.
//!
//! | layout | type | labels |
//! | --- | --- | --- |
//! | `root/<class>/<image>` (torchvision `ImageFolder`) | [`ImageFiles::image_folder`] | sorted class index |
//! | a folder of images, searched recursively | [`ImageFiles::flat`] | 0 |
//! | CIFAR-10 binary batches | [`Cifar10Bin`] | byte 0 of each record |
//! | MNIST-family gzipped IDX | [`Idx`] | the labels file |
//!
//! Labels are positions in each dataset's own class list; [`align_classes`] re-numbers an
//! evaluated dataset by the class names of the training bank, which every evaluation does.
//!
//! [`open_dataset`] picks one from a [`DataFormat`] (or detects it) and checks that the dataset
//! is non-empty before returning, so a wrong path fails before any training work.

mod cifar;
mod classes;
mod extract;
mod files;
mod idx;

pub use cifar::Cifar10Bin;
pub use classes::{align_classes, Aligned, UnknownClass};
pub use extract::extract_cifar10_tarball;
pub use files::{ImageFiles, IMAGE_EXTENSIONS};
pub use idx::Idx;

use std::path::Path;

use dino_config::{DataConfig, DataFormat};
use image::RgbImage;

use crate::error::DataError;

/// One decoded sample.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Upright RGB8 pixels, HWC.
    pub image: RgbImage,
    /// Class index (0 for unlabeled data).
    pub label: i64,
}

/// A random-access collection of labeled images. Loading is thread-safe: the loader calls
/// [`Dataset::load`] from many threads at once.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// True when there are no samples (never for a dataset returned by [`open_dataset`]).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Decodes sample `index` (`0..len()`). Errors name the file or `file#record`.
    fn load(&self, index: usize) -> Result<Sample, DataError>;
    /// The class index of sample `index`, without decoding where the layout allows (every
    /// dataset of this crate); the default decodes the sample.
    fn label(&self, index: usize) -> Result<i64, DataError> {
        self.load(index).map(|s| s.label)
    }
    /// Where sample `index` comes from: a path, or `file#record` for record files.
    fn describe(&self, index: usize) -> String;
    /// Class names; label `i` is `classes()[i]`. Empty for unlabeled data.
    fn classes(&self) -> &[String];
}

/// Opens the dataset at `path` in `format` (detected for [`DataFormat::Auto`]).
///
/// `split` (`"train"` or `"test"`) selects the files of CIFAR-10 and IDX datasets and is ignored
/// for folders. `cfg.max_image_pixels` bounds every decoded image. Detection for `Auto`, first
/// match wins: `data_batch_*.bin` / `test_batch.bin` → CIFAR-10; `*-idx3-ubyte[.gz]` → IDX;
/// any visible sub-folder → ImageFolder; otherwise a flat folder.
///
/// Errors: [`DataError::NotFound`], [`DataError::Empty`], [`DataError::Layout`] before any
/// sample is decoded; I/O and format errors of the index files.
pub fn open_dataset(
    path: &Path,
    format: DataFormat,
    split: &str,
    cfg: &DataConfig,
) -> Result<Box<dyn Dataset>, DataError> {
    if !path.exists() {
        return Err(DataError::NotFound { path: path.into() });
    }
    if !path.is_dir() {
        return Err(DataError::Layout(format!(
            "dataset path {path:?} is a file; give the folder that holds the images or batches"
        )));
    }
    let format = match format {
        DataFormat::Auto => detect_format(path)?,
        f => f,
    };
    let ds: Box<dyn Dataset> = match format {
        DataFormat::ImageFolder => Box::new(ImageFiles::image_folder(path, cfg.max_image_pixels)?),
        DataFormat::Flat => Box::new(ImageFiles::flat(path, cfg.max_image_pixels)?),
        DataFormat::Cifar10Bin => Box::new(Cifar10Bin::open(path, split)?),
        DataFormat::Idx => Box::new(Idx::open(path, split)?),
        DataFormat::Auto => unreachable!("resolved above"),
    };
    if ds.is_empty() {
        return Err(DataError::Empty {
            path: path.into(),
            reason: format!("no samples in the {format:?} dataset"),
        });
    }
    Ok(ds)
}

/// [`open_dataset`] with the path, format and split of the `[data]` config section.
pub fn open_configured(cfg: &DataConfig) -> Result<Box<dyn Dataset>, DataError> {
    if cfg.path.is_empty() {
        return Err(DataError::Layout(
            "no dataset path: set data.path or pass --data".into(),
        ));
    }
    open_dataset(Path::new(&cfg.path), cfg.format, &cfg.split, cfg)
}

/// The layout of a folder, as [`DataFormat::Auto`] resolves it.
pub fn detect_format(path: &Path) -> Result<DataFormat, DataError> {
    let mut has_dir = false;
    for entry in std::fs::read_dir(path).map_err(|e| DataError::io(path, e))? {
        let entry = entry.map_err(|e| DataError::io(path, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if (name.starts_with("data_batch_") || name == "test_batch.bin") && name.ends_with(".bin") {
            return Ok(DataFormat::Cifar10Bin);
        }
        if name.contains("-idx3-ubyte") {
            return Ok(DataFormat::Idx);
        }
        has_dir |= entry.path().is_dir();
    }
    Ok(if has_dir {
        DataFormat::ImageFolder
    } else {
        DataFormat::Flat
    })
}

pub(crate) fn check_index(index: usize, len: usize) -> Result<(), DataError> {
    if index < len {
        Ok(())
    } else {
        Err(DataError::IndexOutOfRange { index, len })
    }
}
