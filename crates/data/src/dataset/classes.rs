//! One class-name → index map for every evaluation.
//!
//! Each labelled dataset numbers its classes by its own sorted folder list (torchvision
//! `ImageFolder`), so a validation folder that holds only some of the training classes, or one
//! more, numbers them differently: its `b_blue` is label 0 while the training bank's `b_blue` is
//! label 1, and k-NN or a linear probe then scores against the wrong labels without a word
//! (facebookresearch/dino#282; the review of dino PR #21). [`align_classes`] views a dataset
//! with the class indices of a reference (the training bank), by class *name*.

use super::{Dataset, Sample};
use crate::error::DataError;

/// What to do with a sample whose class the reference does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownClass {
    /// Fail, naming the classes (default: a silently smaller validation set would change the
    /// meaning of the accuracy).
    #[default]
    Error,
    /// Leave those samples out; [`Aligned::skipped`] counts them.
    Skip,
}

/// A dataset seen with a reference's class indices: sample `i` is a sample of the inner dataset,
/// its label the reference index of its class name. Built by [`align_classes`].
pub struct Aligned {
    inner: Box<dyn Dataset>,
    /// Inner index of each visible sample (`None`: all of them, in order).
    keep: Option<Vec<usize>>,
    /// Inner label → reference label (`-1`: class unknown to the reference, never visible).
    remap: Vec<i64>,
    classes: Vec<String>,
    skipped: usize,
    skipped_classes: Vec<String>,
}

impl Aligned {
    /// Samples left out because the reference lacks their class ([`UnknownClass::Skip`]).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Names of the classes left out ([`UnknownClass::Skip`]), sorted.
    pub fn skipped_classes(&self) -> &[String] {
        &self.skipped_classes
    }

    fn inner_index(&self, index: usize) -> Result<usize, DataError> {
        match &self.keep {
            None => Ok(index),
            Some(k) => k.get(index).copied().ok_or(DataError::IndexOutOfRange {
                index,
                len: k.len(),
            }),
        }
    }

    fn map_label(&self, label: i64) -> i64 {
        if self.classes.is_empty() {
            return label; // unlabelled on both sides: nothing to match
        }
        usize::try_from(label)
            .ok()
            .and_then(|l| self.remap.get(l).copied())
            .unwrap_or(-1)
    }
}

impl Dataset for Aligned {
    fn len(&self) -> usize {
        self.keep.as_ref().map_or(self.inner.len(), Vec::len)
    }

    fn load(&self, index: usize) -> Result<Sample, DataError> {
        let mut s = self.inner.load(self.inner_index(index)?)?;
        s.label = self.map_label(s.label);
        Ok(s)
    }

    fn label(&self, index: usize) -> Result<i64, DataError> {
        Ok(self.map_label(self.inner.label(self.inner_index(index)?)?))
    }

    fn describe(&self, index: usize) -> String {
        match self.inner_index(index) {
            Ok(i) => self.inner.describe(i),
            Err(_) => format!("<index {index}>"),
        }
    }

    /// The reference's classes: label `i` is `classes()[i]`.
    fn classes(&self) -> &[String] {
        &self.classes
    }
}

/// `ds` with the class indices of `reference` (the class names of the training bank, e.g.
/// `bank.classes()`), matched by name.
///
/// - Both unlabelled (no class names, e.g. flat folders): `ds` unchanged.
/// - One labelled and the other not: an error, since its labels would mean nothing.
/// - A class of `ds` missing from `reference`: an error naming it and the reference's classes,
///   or with [`UnknownClass::Skip`] its samples are left out (labels are read without decoding
///   through [`Dataset::label`]) and counted.
///
/// Classes of `reference` that `ds` lacks are fine (a validation set of some classes).
///
/// # Errors
/// [`DataError::Layout`] as above; errors of [`Dataset::label`].
pub fn align_classes(
    reference: &[String],
    ds: Box<dyn Dataset>,
    unknown: UnknownClass,
) -> Result<Aligned, DataError> {
    let own = ds.classes().to_vec();
    let (remap, missing): (Vec<i64>, Vec<String>) = match (reference.is_empty(), own.is_empty()) {
        (true, true) => (Vec::new(), Vec::new()),
        (false, true) => {
            return Err(DataError::Layout(format!(
                "the evaluated dataset has no classes (no class folders) but the training bank \
                 has {}: put its images into class folders with the bank's names",
                reference.len()
            )))
        }
        (true, false) => {
            return Err(DataError::Layout(format!(
                "the training bank has no classes (no class folders) but the evaluated dataset \
                 has {} ({}): labels cannot be matched",
                own.len(),
                preview(&own)
            )))
        }
        (false, false) => {
            let mut missing = Vec::new();
            let remap = own
                .iter()
                .map(|name| match reference.iter().position(|r| r == name) {
                    Some(i) => i as i64,
                    None => {
                        missing.push(name.clone());
                        -1
                    }
                })
                .collect();
            (remap, missing)
        }
    };
    let unlabelled = remap.is_empty();
    let mut aligned = Aligned {
        inner: ds,
        keep: None,
        remap,
        classes: reference.to_vec(),
        skipped: 0,
        skipped_classes: Vec::new(),
    };
    if unlabelled || missing.is_empty() {
        return Ok(aligned);
    }
    if unknown == UnknownClass::Error {
        return Err(DataError::Layout(format!(
            "class{} {} of the evaluated dataset {} not among the training bank's {} classes \
             ({}); labels follow class names, so each evaluated class needs a bank folder of \
             the same name (or skip those images: --skip-unknown-classes)",
            if missing.len() == 1 { "" } else { "es" },
            preview(&missing),
            if missing.len() == 1 { "is" } else { "are" },
            reference.len(),
            preview(reference),
        )));
    }
    let mut keep = Vec::with_capacity(aligned.inner.len());
    for i in 0..aligned.inner.len() {
        if aligned.map_label(aligned.inner.label(i)?) >= 0 {
            keep.push(i);
        }
    }
    aligned.skipped = aligned.inner.len() - keep.len();
    aligned.keep = Some(keep);
    let mut missing = missing;
    missing.sort();
    aligned.skipped_classes = missing;
    Ok(aligned)
}

/// Up to 8 names, quoted, then a count of the rest.
fn preview(names: &[String]) -> String {
    let mut s: Vec<String> = names.iter().take(8).map(|n| format!("{n:?}")).collect();
    if names.len() > 8 {
        s.push(format!("… {} more", names.len() - 8));
    }
    s.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    /// Labels `labels` over classes `classes`, 1×1 images.
    struct Fake {
        classes: Vec<String>,
        labels: Vec<i64>,
    }

    impl Dataset for Fake {
        fn len(&self) -> usize {
            self.labels.len()
        }
        fn load(&self, index: usize) -> Result<Sample, DataError> {
            Ok(Sample {
                image: RgbImage::new(1, 1),
                label: self.labels[index],
            })
        }
        fn describe(&self, index: usize) -> String {
            format!("fake#{index}")
        }
        fn classes(&self) -> &[String] {
            &self.classes
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn fake(classes: &[&str], labels: &[i64]) -> Box<dyn Dataset> {
        Box::new(Fake {
            classes: names(classes),
            labels: labels.to_vec(),
        })
    }

    fn labels(ds: &dyn Dataset) -> Vec<i64> {
        (0..ds.len()).map(|i| ds.load(i).unwrap().label).collect()
    }

    #[test]
    fn a_subset_of_classes_takes_the_bank_indices() {
        // val holds only the bank's second class: its own label 0 must become 1.
        let val = align_classes(
            &names(&["a_red", "b_blue"]),
            fake(&["b_blue"], &[0, 0]),
            UnknownClass::Error,
        )
        .unwrap();
        assert_eq!(labels(&val), [1, 1]);
        assert_eq!(val.label(1).unwrap(), 1);
        assert_eq!(val.classes(), names(&["a_red", "b_blue"]));
    }

    #[test]
    fn classes_in_another_order_are_matched_by_name() {
        let val = align_classes(
            &names(&["cat", "dog", "eel"]),
            fake(&["dog", "eel"], &[1, 0, 1]),
            UnknownClass::Error,
        )
        .unwrap();
        assert_eq!(labels(&val), [2, 1, 2]);
    }

    #[test]
    fn an_unknown_class_is_an_error_naming_it_or_skipped_and_counted() {
        let err = align_classes(
            &names(&["a", "b"]),
            fake(&["a", "zebra"], &[0, 1, 1]),
            UnknownClass::Error,
        )
        .err()
        .expect("zebra is not in the bank");
        let msg = err.to_string();
        assert!(
            msg.contains("\"zebra\"") && msg.contains("\"a\", \"b\""),
            "{msg}"
        );

        let val = align_classes(
            &names(&["a", "b"]),
            fake(&["a", "zebra"], &[1, 0, 1, 0]),
            UnknownClass::Skip,
        )
        .unwrap();
        assert_eq!((val.len(), val.skipped()), (2, 2));
        assert_eq!(val.skipped_classes(), names(&["zebra"]));
        assert_eq!(labels(&val), [0, 0]);
        assert_eq!(val.describe(1), "fake#3");
        assert!(val.load(2).is_err());
    }

    #[test]
    fn labelled_against_unlabelled_is_an_error_and_two_unlabelled_pass() {
        assert!(align_classes(&names(&["a"]), fake(&[], &[0]), UnknownClass::Skip).is_err());
        assert!(align_classes(&[], fake(&["a"], &[0]), UnknownClass::Skip).is_err());
        let flat = align_classes(&[], fake(&[], &[0, 0]), UnknownClass::Error).unwrap();
        assert_eq!(labels(&flat), [0, 0]);
    }
}
