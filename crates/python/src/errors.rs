//! Rust errors → Python exceptions, keeping the Rust message.
//!
//! | Rust | Python |
//! | --- | --- |
//! | a bad keyword argument, a config key out of range, an unusable dataset folder | `ValueError` naming the argument or key |
//! | a dataset path or image file that does not exist | `FileNotFoundError` |
//! | an unreadable file, an image that cannot be decoded (the transform) | `OSError` |
//! | the loader stopped (too many failed images, a worker panicked, no threads) | [`LoaderError`] (a `RuntimeError`) |

use dino_config::ConfigError;
use dino_data::error::DataError;
use dino_data::transforms::TransformError;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::PyErr;

pyo3::create_exception!(
    dino_multicrop,
    LoaderError,
    PyRuntimeError,
    "The loader stopped: more images failed to load than ``max_failed_fraction`` allows, a \
     worker panicked, or its threads could not start. The message is the Rust loader's."
);

/// A `ValueError` for keyword argument `name`: "invalid argument `name`: reason".
pub fn bad_arg(name: &str, reason: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("invalid argument `{name}`: {reason}"))
}

/// A config error from keyword arguments: the `section.key` path becomes the argument's name
/// (`augmentation.std[1]` → `std`), the reason is kept.
pub fn arg_config_error(e: ConfigError) -> PyErr {
    match &e {
        ConfigError::Invalid { key, reason } => bad_arg(argument_name(key), reason),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// A config error from a TOML preset: the message names the key path in the file.
pub fn file_config_error(e: ConfigError) -> PyErr {
    match &e {
        ConfigError::Io { .. } => PyOSError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// The keyword argument a config key path is set by: its last segment without an index.
pub fn argument_name(key: &str) -> &str {
    let last = key.rsplit('.').next().unwrap_or(key);
    last.split('[').next().unwrap_or(last)
}

/// A [`DataError`] as the Python exception of the table above. `from_args` says whether the
/// configuration came from keyword arguments (config keys then become argument names).
pub fn data_error(e: DataError, from_args: bool) -> PyErr {
    let msg = e.to_string();
    match e {
        DataError::NotFound { .. } => PyFileNotFoundError::new_err(msg),
        DataError::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        DataError::Io { .. } | DataError::Decode { .. } => PyOSError::new_err(msg),
        DataError::Empty { .. } | DataError::Layout(_) | DataError::BadFormat { .. } => {
            bad_arg("root", msg)
        }
        DataError::BadOption { name, reason } => match name {
            "shard" => bad_arg("rank", reason),
            // Loader::spawn's name for zero-sized crops.
            "crop size" => bad_arg("global_crops_size", reason),
            // The loader names the config key; the Python argument is the bare field.
            "data.max_failed_fraction" => bad_arg("max_failed_fraction", reason),
            _ => bad_arg(name, reason),
        },
        DataError::Transform(TransformError::Config(c)) if from_args => arg_config_error(c),
        DataError::Transform(TransformError::BadParameter { name, reason }) if from_args => {
            bad_arg(argument_name(name), reason)
        }
        DataError::Transform(_) => PyValueError::new_err(msg),
        DataError::TooManyFailures { .. }
        | DataError::Spawn(_)
        | DataError::IndexOutOfRange { .. } => LoaderError::new_err(msg),
    }
}
