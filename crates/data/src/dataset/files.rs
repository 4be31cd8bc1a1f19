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
                reason:
                    "no class sub-folders (root/<class>/<image>); for a folder of unlabeled images \
                         pass --set data.format=\"flat\""
                        .into(),
            });
        }
        // One walk state for all classes: a link inside one class folder back to the root (or
        // into a sibling class) must not list another class's images under this label.
        let real_root = std::fs::canonicalize(root).map_err(|e| DataError::io(root, e))?;
        let mut class_dirs = Vec::with_capacity(classes.len());
        for class in &classes {
            let dir = root.join(class);
            class_dirs.push(std::fs::canonicalize(&dir).map_err(|e| DataError::io(&dir, e))?);
        }
        let mut walker = Walker::new(class_dirs.clone());
        walker.seen.insert(real_root);
        let (mut files, mut labels) = (Vec::new(), Vec::new());
        for (label, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            let before = files.len();
            walker.own = Some(class_dirs[label].clone());
            walker.walk(&dir, 0, &mut files)?;
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
        Walker::new(Vec::new()).walk(root, 0, &mut files)?;
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

    /// The given image files in the given order, all with label 0 and no classes (a list a
    /// benchmark's ground truth names, e.g. revisited Oxford/Paris). Files are not checked
    /// here: a missing or undecodable one fails when loaded, as in the other layouts.
    pub fn from_files(files: Vec<PathBuf>, max_pixels: u64) -> Self {
        Self {
            classes: Vec::new(),
            labels: vec![0; files.len()],
            files,
            max_pixels,
        }
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

    fn label(&self, index: usize) -> Result<i64, DataError> {
        check_index(index, self.files.len())?;
        Ok(self.labels[index])
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

/// The state of one folder walk, shared by all classes of an ImageFolder.
///
/// Links are followed, but each real folder is entered once over the whole walk, and a folder
/// or linked file that really lives in another class's folder is left to that class: a link
/// back to the dataset root (or into a sibling class) would otherwise list that class's images
/// a second time under the wrong label. Files reached through links that lead outside every
/// class folder (datasets assembled from a shared pool of images) are kept.
struct Walker {
    /// Real folders entered so far (for an ImageFolder, with the root itself: its loose files
    /// belong to no class).
    seen: HashSet<PathBuf>,
    /// Real paths of all class folders (empty for a flat folder).
    classes: Vec<PathBuf>,
    /// The real path of the class being walked.
    own: Option<PathBuf>,
}

impl Walker {
    fn new(classes: Vec<PathBuf>) -> Self {
        Self {
            seen: HashSet::new(),
            classes,
            own: None,
        }
    }

    /// True when `real` lies in the folder of a class other than the one being walked.
    fn foreign(&self, real: &Path) -> bool {
        self.classes
            .iter()
            .filter(|c| Some(*c) != self.own.as_ref())
            .any(|c| real.starts_with(c))
    }

    /// Appends the image files under `dir`.
    fn walk(&mut self, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
        let real = std::fs::canonicalize(dir).map_err(|e| DataError::io(dir, e))?;
        if depth > MAX_DEPTH || self.foreign(&real) || !self.seen.insert(real) {
            return Ok(());
        }
        for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
            let entry = entry.map_err(|e| DataError::io(dir, e))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                self.walk(&path, depth + 1, out)?;
            } else if is_image(&path) && self.take_file(&entry, &path)? {
                out.push(path);
            }
        }
        Ok(())
    }

    /// Whether a file entry is listed: plain files always (their folder was entered once); a
    /// linked file only when its target lies outside every class folder, since a target inside
    /// one is listed by that class's own walk (or is a duplicate in this one).
    fn take_file(&self, entry: &std::fs::DirEntry, path: &Path) -> Result<bool, DataError> {
        let linked = entry
            .file_type()
            .map_err(|e| DataError::io(path, e))?
            .is_symlink();
        if !linked {
            return Ok(true);
        }
        let real = std::fs::canonicalize(path).map_err(|e| DataError::io(path, e))?;
        Ok(!self.classes.iter().any(|c| real.starts_with(c)))
    }
}
