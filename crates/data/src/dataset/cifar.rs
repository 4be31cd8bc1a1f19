//! CIFAR-10 "binary version" batches (Krizhevsky 2009; layout of `cifar-10-batches-bin`).

use std::path::{Path, PathBuf};

use image::RgbImage;

use super::{check_index, Dataset, Sample};
use crate::error::DataError;

/// Bytes per record: 1 label byte, then 32×32 red, green and blue planes (row-major).
pub const RECORD: usize = 1 + 3 * 1024;

/// The standard class names, used when `batches.meta.txt` is absent.
const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The CIFAR-10 binary batches of one split, held in memory (30 MB per batch).
#[derive(Debug, Clone)]
pub struct Cifar10Bin {
    files: Vec<(PathBuf, usize)>,
    data: Vec<u8>,
    classes: Vec<String>,
}

impl Cifar10Bin {
    /// Reads `data_batch_1.bin` .. `data_batch_5.bin` (split `train`, whichever exist, in that
    /// order) or `test_batch.bin` (split `test`) from `dir`. Class names come from
    /// `batches.meta.txt` when present.
    ///
    /// Errors: unknown split, no batch file, a file size that is not a whole number of
    /// 3073-byte records (a label byte and 32×32×3 pixel bytes), or a label byte above 9.
    pub fn open(dir: &Path, split: &str) -> Result<Self, DataError> {
        let names: Vec<String> = match split {
            "train" => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            "test" => vec!["test_batch.bin".into()],
            other => {
                return Err(DataError::Layout(format!(
                    "CIFAR-10 split must be \"train\" or \"test\", not {other:?}"
                )))
            }
        };
        let (mut files, mut data) = (Vec::new(), Vec::new());
        for name in &names {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
            if bytes.is_empty() || bytes.len() % RECORD != 0 {
                return Err(bad(
                    &path,
                    format!("{} bytes is not a multiple of {RECORD}", bytes.len()),
                ));
            }
            if let Some(r) = bytes.chunks_exact(RECORD).position(|r| r[0] > 9) {
                return Err(bad(
                    &path,
                    format!("record {r} has label {}", bytes[r * RECORD]),
                ));
            }
            files.push((path, bytes.len() / RECORD));
            data.extend_from_slice(&bytes);
        }
        if files.is_empty() {
            return Err(DataError::Empty {
                path: dir.into(),
                reason: format!(
                    "no CIFAR-10 batch file for split {split:?} ({})",
                    names.join(", ")
                ),
            });
        }
        let meta = dir.join("batches.meta.txt");
        let classes = match std::fs::read_to_string(&meta) {
            Ok(text) => text
                .lines()
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
            Err(_) => CLASSES.iter().map(|s| s.to_string()).collect(),
        };
        Ok(Self {
            files,
            data,
            classes,
        })
    }
}

fn bad(path: &Path, reason: String) -> DataError {
    DataError::BadFormat {
        path: path.into(),
        format: "CIFAR-10 binary",
        reason,
    }
}

impl Dataset for Cifar10Bin {
    fn len(&self) -> usize {
        self.data.len() / RECORD
    }

    fn load(&self, index: usize) -> Result<Sample, DataError> {
        check_index(index, self.len())?;
        let rec = &self.data[index * RECORD..(index + 1) * RECORD];
        let planes = &rec[1..];
        let mut rgb = Vec::with_capacity(3 * 1024);
        for p in 0..1024 {
            rgb.extend_from_slice(&[planes[p], planes[1024 + p], planes[2048 + p]]);
        }
        let image = RgbImage::from_raw(32, 32, rgb).expect("32*32*3 bytes");
        Ok(Sample {
            image,
            label: rec[0] as i64,
        })
    }

    fn label(&self, index: usize) -> Result<i64, DataError> {
        check_index(index, self.len())?;
        Ok(self.data[index * RECORD] as i64)
    }

    fn describe(&self, index: usize) -> String {
        let mut i = index;
        for (path, n) in &self.files {
            if i < *n {
                return format!("{}#{i}", path.display());
            }
            i -= n;
        }
        format!("<index {index}>")
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }
}
