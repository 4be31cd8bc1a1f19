//! Turning the CIFAR-10 JPEG tarball (`shared/data/cifar10/cifar-10-jpeg.tar.gz`, members
//! `train/<class>/NNNN.jpg` and `test/<class>/NNNN.jpg`) into two ImageFolder trees.

use std::path::Path;

use crate::error::DataError;

/// Name of the file written last, so a finished extraction is not repeated.
const DONE: &str = ".extracted";

/// Extracts the `train/` and `test/` members of a gzipped tar of ImageFolder trees into
/// `out_dir` (created if needed) and returns the number of image files.
///
/// Afterwards `out_dir/train` and `out_dir/test` open as [`super::ImageFiles::image_folder`].
/// Idempotent: a completed extraction leaves a `.extracted` marker holding the count and a
/// second call returns that count without touching the files. Members outside `train/` and
/// `test/` are ignored; paths are unpacked with `tar`'s `unpack_in`, which refuses `..` and
/// absolute paths.
///
/// Errors: I/O errors, a corrupt archive, or an archive with no file under `train/` or `test/`.
pub fn extract_cifar10_tarball(tar_gz: &Path, out_dir: &Path) -> Result<usize, DataError> {
    let done = out_dir.join(DONE);
    if let Ok(text) = std::fs::read_to_string(&done) {
        if let Ok(n) = text.trim().parse() {
            return Ok(n);
        }
    }
    if !tar_gz.is_file() {
        return Err(DataError::NotFound {
            path: tar_gz.into(),
        });
    }
    std::fs::create_dir_all(out_dir).map_err(|e| DataError::io(out_dir, e))?;
    let file = std::fs::File::open(tar_gz).map_err(|e| DataError::io(tar_gz, e))?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::with_capacity(1 << 20, file));
    let mut archive = tar::Archive::new(gz);
    let io = |e| DataError::io(tar_gz, e);
    let mut count = 0usize;
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(io)?.into_owned();
        let top = path.components().next().map(|c| c.as_os_str().to_owned());
        if top.as_deref() != Some("train".as_ref()) && top.as_deref() != Some("test".as_ref()) {
            continue;
        }
        if entry.unpack_in(out_dir).map_err(io)? {
            count += 1;
        }
    }
    if count == 0 {
        return Err(DataError::Empty {
            path: tar_gz.into(),
            reason: "no file under train/ or test/ in the archive".into(),
        });
    }
    std::fs::write(&done, format!("{count}\n")).map_err(|e| DataError::io(&done, e))?;
    Ok(count)
}
