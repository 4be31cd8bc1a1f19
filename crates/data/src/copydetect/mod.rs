//! A copy-detection benchmark generated from a folder of photos, in the spirit of Copydays
//! "strong" (DINO paper Table 4, official `eval_copy_detection.py`), which is not available
//! here: some photos become *originals*, each with a few strongly edited *copies* (the
//! queries), and others are *distractors* in the database or a separate *whitening* set (the
//! official code learns its PCA whitening on distractor images it never searches).
//!
//! Layout written under the output folder:
//!
//! ```text
//! originals/o0000.jpg …      database: the photos copied
//! distractors/d00000.jpg …   database: other photos
//! whitening/w00000.jpg …     photos to learn the whitening on (never searched)
//! queries/o0000_c0.jpg …     the edited copies, JPEG quality 10–50
//! ground_truth.csv           query,original,edits (file names within their folders)
//! ```
//!
//! Originals, distractors and whitening photos are byte copies of the source files. The same
//! source folder and seed give byte-identical output whatever the thread count: every copy draws
//! from its own generator (`rng_for(seed, 0, copy index, Stream::Other)`).

/// The edits applied to the copies.
pub mod edits;
/// The built-in bitmap font of the text overlays.
pub mod font;

use crate::dataset::ImageFiles;
use crate::decode::decode_file;
use crate::error::DataError;
use crate::rng::{rng_for, Stream};
use image::codecs::jpeg::JpegEncoder;
use rand::Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// The ground-truth file of a benchmark folder.
pub const GROUND_TRUTH: &str = "ground_truth.csv";
/// The four image folders of a benchmark, in the order of [`CopyDetectSummary`].
pub const FOLDERS: [&str; 4] = ["originals", "distractors", "whitening", "queries"];

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyDetectSpec {
    /// Photos that get copies (Copydays has 157).
    pub originals: usize,
    /// Edited copies of each original.
    pub copies: usize,
    /// Other photos in the database (at least one; the patch overlays come from them).
    pub distractors: usize,
    /// Photos of the whitening set (may be 0: then the benchmark is searched without whitening).
    pub whitening: usize,
    /// Distinct edits chained in each copy (1..=7), before the JPEG re-compression.
    pub edits_per_copy: usize,
    /// Seed of the selection and of every edit.
    pub seed: u64,
    /// Largest decoded image, in pixels.
    pub max_pixels: u64,
}

impl Default for CopyDetectSpec {
    fn default() -> Self {
        Self {
            originals: 100,
            copies: 2,
            distractors: 500,
            whitening: 500,
            edits_per_copy: 3,
            seed: 0,
            max_pixels: 64 << 20,
        }
    }
}

/// Numbers of images written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyDetectSummary {
    /// Originals.
    pub originals: usize,
    /// Distractors in the database.
    pub distractors: usize,
    /// Whitening photos.
    pub whitening: usize,
    /// Edited copies (queries).
    pub queries: usize,
}

/// One row of the ground truth: a copy and the original it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPair {
    /// File name in `queries/`.
    pub query: String,
    /// File name in `originals/`.
    pub original: String,
    /// The edits applied, in order (`;`-separated records).
    pub edits: String,
}

fn bad(name: &'static str, reason: String) -> DataError {
    DataError::BadOption { name, reason }
}

/// Checks the spec and the output folder (absent or empty) before anything is read.
fn check_spec(spec: &CopyDetectSpec, out: &Path) -> Result<(), DataError> {
    if spec.originals == 0 {
        return Err(bad("originals", "needs at least one original".into()));
    }
    if spec.distractors == 0 {
        return Err(bad(
            "distractors",
            "needs at least one distractor (the database and the patch overlays)".into(),
        ));
    }
    if spec.copies == 0 {
        return Err(bad("copies", "needs at least one copy per original".into()));
    }
    if !(1..=edits::ALL.len()).contains(&spec.edits_per_copy) {
        return Err(bad(
            "edits_per_copy",
            format!("must be 1..={}", edits::ALL.len()),
        ));
    }
    if out.exists() {
        let empty = out.is_dir()
            && std::fs::read_dir(out)
                .map_err(|e| DataError::io(out, e))?
                .next()
                .is_none();
        if !empty {
            return Err(DataError::Layout(format!(
                "output {} exists and is not an empty folder; give a new one",
                out.display()
            )));
        }
    }
    Ok(())
}

/// The source's extension, lower-cased (`jpg` when it has none).
fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "jpg".into())
}

/// One edited copy: (file name, JPEG bytes, ground-truth row).
fn make_copy(
    spec: &CopyDetectSpec,
    index: usize,
    original: (&Path, &str),
    distractors: &[PathBuf],
) -> Result<(String, Vec<u8>, CopyPair), DataError> {
    let mut rng = rng_for(spec.seed, 0, index as u64, Stream::Other);
    let mut img = decode_file(original.0, spec.max_pixels)?;
    // A partial Fisher-Yates shuffle picks the distinct edits in a random order.
    let mut order = edits::ALL;
    let patch_src = distractors[rng.random_range(0..distractors.len())].as_path();
    let patch_img = decode_file(patch_src, spec.max_pixels)?;
    let mut notes = Vec::new();
    for i in 0..spec.edits_per_copy {
        let j = rng.random_range(i..order.len());
        order.swap(i, j);
        let (next, note) = edits::apply(order[i], img, &mut rng, &patch_img);
        img = next;
        notes.push(note);
    }
    let quality = rng.random_range(10..=50u8);
    notes.push(format!("jpeg({quality})"));
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode_image(&img)
        .map_err(|e| DataError::Layout(format!("encoding a copy of {}: {e}", original.1)))?;
    let stem = original.1.split('.').next().unwrap_or(original.1);
    let name = format!("{stem}_c{}.jpg", index % spec.copies);
    let pair = CopyPair {
        query: name.clone(),
        original: original.1.to_string(),
        edits: notes.join(";"),
    };
    Ok((name, bytes, pair))
}

/// Generates the benchmark from every image under `from` (recursively, sorted by path) into
/// `out`. The photos are shuffled by the seed and taken in turn as originals, distractors and
/// whitening photos; each original gets `spec.copies` copies, each with `spec.edits_per_copy`
/// distinct [`edits::Edit`]s in random order, then saved as JPEG at a quality drawn from 10–50.
///
/// Written into a hidden sibling folder first and renamed to `out` at the end, so a failure
/// leaves nothing behind.
///
/// # Errors
/// [`DataError::BadOption`] for a bad spec, [`DataError::Layout`] when `out` exists and is not
/// an empty folder or `from` holds fewer photos than asked for, both before any work; decode
/// and I/O errors naming the file.
pub fn generate(
    from: &Path,
    out: &Path,
    spec: &CopyDetectSpec,
) -> Result<CopyDetectSummary, DataError> {
    check_spec(spec, out)?;
    if !from.is_dir() {
        return Err(DataError::NotFound { path: from.into() });
    }
    let mut files = ImageFiles::flat(from, spec.max_pixels)?.files().to_vec();
    let need = spec.originals + spec.distractors + spec.whitening;
    if files.len() < need {
        return Err(DataError::Layout(format!(
            "{} holds {} images; {} originals + {} distractors + {} whitening photos need {need}",
            from.display(),
            files.len(),
            spec.originals,
            spec.distractors,
            spec.whitening
        )));
    }
    let mut rng = rng_for(spec.seed, 0, 0, Stream::Shuffle);
    for i in (1..files.len()).rev() {
        let j = rng.random_range(0..=i);
        files.swap(i, j);
    }
    let (originals, rest) = files.split_at(spec.originals);
    let (distractors, rest) = rest.split_at(spec.distractors);
    let whitening = &rest[..spec.whitening];

    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "copydetect".into());
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    }
    let staging = out.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let result = write_all(spec, originals, distractors, whitening, &staging);
    match result {
        Ok(summary) => {
            if out.exists() {
                std::fs::remove_dir(out).map_err(|e| DataError::io(out, e))?;
            }
            std::fs::rename(&staging, out).map_err(|e| DataError::io(out, e))?;
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// Everything of [`generate`] after the selection, into `dir`.
fn write_all(
    spec: &CopyDetectSpec,
    originals: &[PathBuf],
    distractors: &[PathBuf],
    whitening: &[PathBuf],
    dir: &Path,
) -> Result<CopyDetectSummary, DataError> {
    for sub in FOLDERS {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| DataError::io(&d, e))?;
    }
    let copy_set = |paths: &[PathBuf], sub: &str, prefix: &str, width: usize| {
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let file = format!("{prefix}{i:0width$}.{}", extension(p));
                let dst = dir.join(sub).join(&file);
                std::fs::copy(p, &dst).map_err(|e| DataError::io(p, e))?;
                Ok(file)
            })
            .collect::<Result<Vec<String>, DataError>>()
    };
    let original_names = copy_set(originals, "originals", "o", 4)?;
    copy_set(distractors, "distractors", "d", 5)?;
    copy_set(whitening, "whitening", "w", 5)?;
    let copies: Vec<(String, Vec<u8>, CopyPair)> = (0..originals.len() * spec.copies)
        .into_par_iter()
        .map(|i| {
            let o = i / spec.copies;
            make_copy(spec, i, (&originals[o], &original_names[o]), distractors)
        })
        .collect::<Result<_, _>>()?;
    let mut csv = String::from("query,original,edits\n");
    for (name, bytes, pair) in &copies {
        let path = dir.join("queries").join(name);
        std::fs::write(&path, bytes).map_err(|e| DataError::io(&path, e))?;
        csv.push_str(&format!(
            "{},{},{}\n",
            pair.query, pair.original, pair.edits
        ));
    }
    let gt = dir.join(GROUND_TRUTH);
    std::fs::write(&gt, csv).map_err(|e| DataError::io(&gt, e))?;
    Ok(CopyDetectSummary {
        originals: originals.len(),
        distractors: spec.distractors,
        whitening: whitening.len(),
        queries: copies.len(),
    })
}

/// Reads `bench/ground_truth.csv` and checks that every query and every original it names is
/// a file in `bench/queries/` and `bench/originals/`.
///
/// # Errors
/// [`DataError::NotFound`] without the file; [`DataError::Layout`] for a malformed row, no rows
/// (an empty query set), or a query or original that is missing, naming it.
pub fn read_ground_truth(bench: &Path) -> Result<Vec<CopyPair>, DataError> {
    let path = bench.join(GROUND_TRUTH);
    if !path.is_file() {
        return Err(DataError::NotFound { path });
    }
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.splitn(3, ',');
        let (Some(query), Some(original)) = (fields.next(), fields.next()) else {
            return Err(DataError::Layout(format!(
                "{} line {}: expected query,original,edits",
                path.display(),
                n + 1
            )));
        };
        for (sub, file) in [("queries", query), ("originals", original)] {
            if !bench.join(sub).join(file).is_file() {
                return Err(DataError::Layout(format!(
                    "{} line {}: {sub}/{file} does not exist",
                    path.display(),
                    n + 1
                )));
            }
        }
        pairs.push(CopyPair {
            query: query.into(),
            original: original.into(),
            edits: fields.next().unwrap_or("").into(),
        });
    }
    if pairs.is_empty() {
        return Err(DataError::Layout(format!(
            "{} lists no copies: the query set is empty",
            path.display()
        )));
    }
    Ok(pairs)
}
