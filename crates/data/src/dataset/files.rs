//! Image files in folders: torchvision's `ImageFolder` layout and a flat (unlabeled) folder.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{check_index, Dataset, Sample};
use crate::decode::decode_file;
use crate::error::DataError;

/// File extensions taken as images (compared case-insensitively). The content decides the
/// decoder, so a mislabeled file still decodes (see [`crate::decode`]).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

/// Nesting depth beyond which folders are not searched.
const MAX_DEPTH: usize = 32;

/// A sorted list of image files with a label each.
#[derive(Debug, Clone)]
pub struct ImageFiles {
    classes: Vec<String>,
    files: Vec<PathBuf>,
    labels: Vec<i64>,
    max_pixels: u64,
}

impl ImageFiles {
    /// `root/<class>/**/<image>`: one class per visible sub-folder of `root`, classes sorted by
    /// name, label = position in that order, files of a class sorted by path (torchvision
    /// `ImageFolder` conventions). Files directly in `root` are ignored, as there.
    ///
    /// Errors: no class folder, or a class folder without images (torchvision raises too;
    /// silently dropping a class would shift every later label).
    pub fn image_folder(root: &Path, max_pixels: u64) -> Result<Self, DataError> {
        let mut classes = Vec::new();
        for entry in std::fs::read_dir(root).map_err(|e| DataError::io(root, e))? {
            let entry = entry.map_err(|e| DataError::io(root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.path().is_dir() {
                classes.push(name);
            }
        }
        classes.sort();
        if classes.is_empty() {
            return Err(DataError::Empty {
                path: root.into(),
                reason: "no class sub-folders (root/<class>/<image>); use format \"flat\" for \
                         a folder of unlabeled images"
                    .into(),
            });
        }
        let (mut files, mut labels) = (Vec::new(), Vec::new());
        for (label, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            let before = files.len();
            walk(&dir, &mut files)?;
            if files.len() == before {
                return Err(DataError::Empty {
                    path: dir,
                    reason: format!(
                        "class folder has no images (extensions: {})",
                        IMAGE_EXTENSIONS.join(", ")
                    ),
                });
            }
            files[before..].sort();
            labels.resize(files.len(), label as i64);
        }
        Ok(Self {
            classes,
            files,
            labels,
            max_pixels,
        })
    }

    /// Every image under `root`, recursively, sorted by path, all with label 0 and no classes.
    pub fn flat(root: &Path, max_pixels: u64) -> Result<Self, DataError> {
        let mut files = Vec::new();
        walk(root, &mut files)?;
        if files.is_empty() {
            return Err(DataError::Empty {
                path: root.into(),
                reason: format!("no image files ({})", IMAGE_EXTENSIONS.join(", ")),
            });
        }
        files.sort();
        Ok(Self {
            classes: Vec::new(),
            labels: vec![0; files.len()],
            files,
            max_pixels,
        })
    }

    /// The image paths in index order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The labels in index order (without decoding).
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }
}

impl Dataset for ImageFiles {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn load(&self, index: usize) -> Result<Sample, DataError> {
        check_index(index, self.files.len())?;
        Ok(Sample {
            image: decode_file(&self.files[index], self.max_pixels)?,
            label: self.labels[index],
        })
    }

    fn describe(&self, index: usize) -> String {
        self.files
            .get(index)
            .map_or_else(|| format!("<index {index}>"), |p| p.display().to_string())
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Appends the image files under `dir`, following links but entering each real folder once
/// (a link back to an ancestor would otherwise list the same files again and again).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let mut seen = HashSet::new();
    walk_inner(dir, 0, &mut seen, out)
}

fn walk_inner(
    dir: &Path,
    depth: usize,
    seen: &mut HashSet<PathBuf>,
    out: &mut Vec<PathBuf>,
) -> Result<(), DataError> {
    let real = std::fs::canonicalize(dir).map_err(|e| DataError::io(dir, e))?;
    if depth > MAX_DEPTH || !seen.insert(real) {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            walk_inner(&path, depth + 1, seen, out)?;
        } else if is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}
