//! The error type of the data crate.
//!
//! Bad input never panics: missing folders, empty datasets, corrupt or hostile image files and
//! loader failures all come back as a [`DataError`] naming the file (or `file#record`) and the
//! reason, so the trainer can print it and stop before any work is wasted.

use std::path::PathBuf;

use crate::transforms::TransformError;

/// Everything that can go wrong while opening, reading or batching a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The dataset path does not exist.
    #[error("dataset path {path:?} does not exist")]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The path exists but holds nothing usable.
    #[error("dataset {path:?} is empty: {reason}")]
    Empty {
        /// The path given.
        path: PathBuf,
        /// What was looked for.
        reason: String,
    },
    /// A file system error. The message carries the cause, which is deliberately not also
    /// exposed as `source()`: the loader logs `{}` alone, and an error chain (`{:#}`) would
    /// otherwise print the cause twice.
    #[error("{path:?}: {cause}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// An image that cannot be turned into RGB8 (cause in the message, as for `Io`).
    #[error("{what}: {cause}")]
    Decode {
        /// The file path or `file#record`.
        what: String,
        /// Why.
        cause: DecodeError,
    },
    /// A binary dataset file (CIFAR-10, IDX) whose layout is wrong.
    #[error("{path:?}: bad {format} file: {reason}")]
    BadFormat {
        /// The file.
        path: PathBuf,
        /// The format expected.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A dataset layout that cannot be used with the options given.
    #[error("{0}")]
    Layout(String),
    /// An index past the end of the dataset.
    #[error("index {index} out of range for a dataset of {len} samples")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The dataset size.
        len: usize,
    },
    /// Invalid loader or benchmark options.
    #[error("invalid loader option `{name}`: {reason}")]
    BadOption {
        /// The option.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// More distinct samples failed than `max_failed_fraction` allows.
    #[error(
        "{failed} distinct samples failed to load, more than data.max_failed_fraction = \
         {fraction} of {len} allows (last: {last}); raise it with --set \
         data.max_failed_fraction=F to skip more"
    )]
    TooManyFailures {
        /// Distinct failed samples so far.
        failed: usize,
        /// The allowed fraction.
        fraction: f64,
        /// Dataset size.
        len: usize,
        /// The last failure, `path: reason`.
        last: String,
    },
    /// The augmentation could not be built.
    #[error(transparent)]
    Transform(#[from] TransformError),
    /// The loader's worker pool could not be created.
    #[error("cannot start the loader: {0}")]
    Spawn(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            cause,
        }
    }
}

/// Why one image could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A zero-byte file.
    #[error("empty file")]
    Empty,
    /// The magic bytes match no supported format.
    #[error("unknown image format (magic bytes {0})")]
    UnknownFormat(String),
    /// A format or coding variant the decoder cannot read.
    #[error("unsupported {format}: {reason}")]
    Unsupported {
        /// The sniffed format.
        format: &'static str,
        /// The variant.
        reason: String,
    },
    /// The file ends early.
    #[error("truncated {format}: {reason}")]
    Truncated {
        /// The sniffed format.
        format: &'static str,
        /// Where it ends.
        reason: String,
    },
    /// The header declares more pixels than allowed.
    #[error("{width}x{height} = {} pixels exceeds the limit of {limit} (max_image_pixels)", *width as u64 * *height as u64)]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The limit in pixels.
        limit: u64,
    },
    /// A zero width or height.
    #[error("image has zero size ({width}x{height})")]
    ZeroSize {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// The decoder's own error.
    #[error("{format} decoder: {source}")]
    Decoder {
        /// The sniffed format.
        format: &'static str,
        /// The `image` error.
        #[source]
        source: image::ImageError,
    },
}
