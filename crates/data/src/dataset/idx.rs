//! The MNIST family's IDX files (LeCun et al.; Fashion-MNIST uses the same format): a big-endian
//! header `[0, 0, type, ndim]`, `ndim` u32 sizes, then the data. Images are `u8` type `0x08` with
//! 3 dims (count, rows, cols); labels `u8` with 1 dim.

use std::io::Read;
use std::path::{Path, PathBuf};

use image::RgbImage;

use super::{check_index, Dataset, Sample};
use crate::error::DataError;

/// Fashion-MNIST's classes (Xiao, Rasul, Vollgraf 2017), used when the path mentions "fashion".
const FASHION: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// One split of an IDX dataset in memory; gray images are returned as RGB (replicated).
#[derive(Debug, Clone)]
pub struct Idx {
    images_path: PathBuf,
    pixels: Vec<u8>,
    labels: Vec<u8>,
    rows: u32,
    cols: u32,
    classes: Vec<String>,
}

impl Idx {
    /// Reads `<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]` from `dir`,
    /// with prefix `train` for split `train` and `t10k` for split `test`. Class names are
    /// Fashion-MNIST's when the folder path contains "fashion", else the label numbers.
    ///
    /// Errors: unknown split, missing files, bad magic numbers, sizes that disagree with the
    /// header, or image and label counts that differ.
    pub fn open(dir: &Path, split: &str) -> Result<Self, DataError> {
        let prefix = match split {
            "train" => "train",
            "test" | "t10k" => "t10k",
            other => {
                return Err(DataError::Layout(format!(
                    "IDX split must be \"train\" or \"test\", not {other:?}"
                )))
            }
        };
        let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let (dims, pixels) = read_idx(&images_path, 3)?;
        let (ldims, labels) = read_idx(&labels_path, 1)?;
        if dims[0] != ldims[0] {
            return Err(bad(
                &labels_path,
                format!("{} labels for {} images", ldims[0], dims[0]),
            ));
        }
        if dims[1] == 0 || dims[2] == 0 {
            return Err(bad(
                &images_path,
                format!("image size {}x{}", dims[2], dims[1]),
            ));
        }
        let n_classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
        let fashion = dir.to_string_lossy().to_lowercase().contains("fashion") && n_classes <= 10;
        let classes = if fashion {
            FASHION.iter().map(|s| s.to_string()).collect()
        } else {
            (0..n_classes).map(|i| i.to_string()).collect()
        };
        Ok(Self {
            images_path,
            pixels,
            labels,
            rows: dims[1],
            cols: dims[2],
            classes,
        })
    }
}

fn bad(path: &Path, reason: String) -> DataError {
    DataError::BadFormat {
        path: path.into(),
        format: "IDX",
        reason,
    }
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(DataError::Empty {
        path: dir.into(),
        reason: format!("no {stem}.gz or {stem}"),
    })
}

/// Returns (sizes, data) of a `u8` IDX file with `ndim` dimensions, gunzipping `.gz` files.
fn read_idx(path: &Path, ndim: u8) -> Result<(Vec<u32>, Vec<u8>), DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let mut bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::io(path, e))?;
        out
    } else {
        raw
    };
    let header = 4 + 4 * ndim as usize;
    if bytes.len() < header {
        return Err(bad(
            path,
            format!("{} bytes is shorter than the header", bytes.len()),
        ));
    }
    if bytes[..4] != [0, 0, 0x08, ndim] {
        return Err(bad(
            path,
            format!(
                "magic {:02X?}, expected [00, 00, 08, {ndim:02X}] (u8 data)",
                &bytes[..4]
            ),
        ));
    }
    let dims: Vec<u32> = (0..ndim as usize)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")))
        .collect();
    let expected: u64 = dims.iter().map(|&d| d as u64).product();
    let have = (bytes.len() - header) as u64;
    if have != expected {
        return Err(bad(
            path,
            format!("header {dims:?} needs {expected} data bytes, found {have}"),
        ));
    }
    bytes.drain(..header);
    Ok((dims, bytes))
}

impl Dataset for Idx {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn load(&self, index: usize) -> Result<Sample, DataError> {
        check_index(index, self.len())?;
        let n = (self.rows * self.cols) as usize;
        let gray = &self.pixels[index * n..(index + 1) * n];
        let rgb: Vec<u8> = gray.iter().flat_map(|&v| [v, v, v]).collect();
        let image = RgbImage::from_raw(self.cols, self.rows, rgb).expect("rows*cols*3 bytes");
        Ok(Sample {
            image,
            label: self.labels[index] as i64,
        })
    }

    fn label(&self, index: usize) -> Result<i64, DataError> {
        check_index(index, self.len())?;
        Ok(self.labels[index] as i64)
    }

    fn describe(&self, index: usize) -> String {
        format!("{}#{index}", self.images_path.display())
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }
}
