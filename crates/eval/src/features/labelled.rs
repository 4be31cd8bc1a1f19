//! The labelled datasets of an evaluation: a training bank and the sets scored against it, all
//! numbered by the bank's class names (see [`dino_data::dataset::align_classes`]).
//!
//! Every evaluation that compares labels across two folders (k-NN, linear probe, online k-NN,
//! and those built later) opens them here, so a validation folder holding only some of the
//! bank's classes, or the same classes in another order, is scored against the right labels.

use std::path::Path;

use dino_config::{DataConfig, DataFormat};
use dino_data::dataset::{align_classes, open_dataset, Aligned, Dataset, UnknownClass};
use dino_data::error::DataError;

/// A training bank and one evaluated set carrying the bank's class indices.
pub struct TrainVal {
    /// The bank (k-NN memory bank, linear probe training set), labels by its sorted classes.
    pub train: Box<dyn Dataset>,
    /// The evaluated set, labels re-numbered by class name to the bank's.
    pub val: Aligned,
}

impl TrainVal {
    /// Opens `train` (split "train") and `val` (split "test": CIFAR-10 / IDX folders hold both
    /// splits) in any [`DataFormat::Auto`] layout, and aligns `val` to `train`'s classes.
    ///
    /// # Errors
    /// [`DataError`] from [`open_dataset`] (the message names the path); from
    /// [`align_classes`] when `val` has a class the bank lacks (with [`UnknownClass::Error`]),
    /// or when only one of the two is labelled.
    pub fn open(
        train: &Path,
        val: &Path,
        data: &DataConfig,
        unknown: UnknownClass,
    ) -> Result<Self, DataError> {
        let bank = open_dataset(train, DataFormat::Auto, "train", data)?;
        let val_ds = open_dataset(val, DataFormat::Auto, "test", data)?;
        let val = align_classes(bank.classes(), val_ds, unknown).map_err(|e| match e {
            DataError::Layout(m) => DataError::Layout(format!(
                "{} against the bank {}: {m}",
                val.display(),
                train.display()
            )),
            other => other,
        })?;
        Ok(Self { train: bank, val })
    }

    /// A line for the log when images of classes unknown to the bank were left out.
    pub fn skipped_note(&self) -> Option<String> {
        (self.val.skipped() > 0).then(|| {
            format!(
                "{} evaluated image(s) of class(es) not in the training bank were skipped: {}",
                self.val.skipped(),
                self.val.skipped_classes().join(", ")
            )
        })
    }
}
