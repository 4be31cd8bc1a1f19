//! The DAVIS-2017 folder layout (`JPEGImages/<resolution>/<seq>/*.jpg`,
//! `Annotations/<resolution>/<seq>/*.png`) and its annotations: palette ("indexed") PNGs whose
//! pixel values are object ids, 0 the background, 1..=N the objects of the first frame, 255
//! "void" (davis2017-evaluation `davis.py`, `get_all_masks`). Predictions are written back in
//! the same layout with the first annotation's palette, so the official toolkit can score them
//! (official `eval_video_segmentation.py`, `imwrite_indexed`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// The pixel value DAVIS reserves for "void" (unlabelled) pixels; the semi-supervised protocol
/// counts them as background (the toolkit zeroes them and passes no void mask).
pub const VOID: u8 = 255;

/// Errors of reading or writing the layout; each names the file or folder.
#[derive(Debug, thiserror::Error)]
pub enum DavisError {
    /// A folder of the layout is missing.
    #[error("{} is missing (a DAVIS folder holds JPEGImages/<resolution>/<sequence>/ and Annotations/<resolution>/<sequence>/)", .0.display())]
    MissingFolder(PathBuf),
    /// A sequence folder holds no `.jpg` frame.
    #[error("{} holds no .jpg frame", .0.display())]
    NoFrames(PathBuf),
    /// The first frame has no annotation: there is nothing to propagate.
    #[error("{} is missing: the first frame's annotation is what gets propagated", .0.display())]
    MissingAnnotation(PathBuf),
    /// An annotation whose name matches no frame of the sequence.
    #[error("annotation {} matches no frame of the sequence (frames are JPEGImages/…/<name>.jpg)", .0.display())]
    OrphanAnnotation(PathBuf),
    /// An annotation that is not a palette PNG or 8-bit grey PNG of object ids.
    #[error("{} is a {color} PNG; DAVIS annotations are palette (indexed) PNGs of object ids (0 background, 1..N objects, 255 void)", .path.display())]
    NotIndexed {
        /// The file.
        path: PathBuf,
        /// Its colour type and bit depth as the PNG header says.
        color: String,
    },
    /// A pixel value the annotation cannot hold.
    #[error("{}: pixel value {value} {why}", .path.display())]
    UnexpectedIndex {
        /// The file.
        path: PathBuf,
        /// The value.
        value: u8,
        /// What it conflicts with.
        why: String,
    },
    /// Frame and annotation sizes differ.
    #[error("{} is {got_w}x{got_h} but the frames of its sequence are {want_w}x{want_h}", .path.display())]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Its width.
        got_w: u32,
        /// Its height.
        got_h: u32,
        /// The frames' width.
        want_w: u32,
        /// The frames' height.
        want_h: u32,
    },
    /// Reading or writing a file failed.
    #[error("{}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The PNG could not be decoded or encoded.
    #[error("{}", .path.display())]
    Png {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A frame's header could not be read.
    #[error("{}", .path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: image::ImageError,
    },
}

/// A map of object ids, row-major, `width × height` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexMask {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// One object id per pixel, row by row.
    pub data: Vec<u8>,
}

impl IndexMask {
    /// The largest id other than [`VOID`] (0 for an empty mask).
    pub fn max_object(&self) -> u8 {
        self.data
            .iter()
            .copied()
            .filter(|&v| v != VOID)
            .max()
            .unwrap_or(0)
    }

    /// Pixels of object `id` as flags, row by row.
    pub fn object(&self, id: u8) -> Vec<bool> {
        self.data.iter().map(|&v| v == id).collect()
    }
}

/// RGB entries of a PNG palette (at most 256).
pub type Palette = Vec<[u8; 3]>;

/// The PASCAL VOC colour map DAVIS uses (davis2017-evaluation `utils._pascal_color_map`): entry
/// i spreads the bits of i over the high bits of R, G and B. Used when an annotation carries no
/// palette of its own (an 8-bit grey PNG).
pub fn pascal_palette() -> Palette {
    (0..256u32)
        .map(|i| {
            let (mut r, mut g, mut b, mut c) = (0u8, 0u8, 0u8, i);
            for j in 0..8 {
                r |= ((c & 1) as u8) << (7 - j);
                g |= (((c >> 1) & 1) as u8) << (7 - j);
                b |= (((c >> 2) & 1) as u8) << (7 - j);
                c >>= 3;
            }
            [r, g, b]
        })
        .collect()
}

/// Reads an annotation: a palette PNG of any bit depth (1, 2, 4, 8: Pillow writes small palettes
/// with fewer bits) or an 8-bit grey PNG, both read as object ids. Returns the ids and the
/// palette (`None` for grey). A palette PNG whose pixels index past its palette is refused.
///
/// # Errors
/// [`DavisError::Io`] / [`DavisError::Png`] for an unreadable file; [`DavisError::NotIndexed`]
/// for an RGB, RGBA, grey+alpha or 16-bit PNG; [`DavisError::UnexpectedIndex`] for an index
/// with no palette entry.
pub fn read_index_png(path: &Path) -> Result<(IndexMask, Option<Palette>), DavisError> {
    let file = File::open(path).map_err(|source| DavisError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let png_err = |e: png::DecodingError| DavisError::Png {
        path: path.to_path_buf(),
        source: Box::new(e),
    };
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(png_err)?;
    let info = reader.info();
    let (color, depth) = (info.color_type, info.bit_depth);
    let palette: Option<Palette> = info
        .palette
        .as_ref()
        .map(|p| p.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect());
    let indexed = color == png::ColorType::Indexed;
    let grey8 = color == png::ColorType::Grayscale && depth == png::BitDepth::Eight;
    if !indexed && !grey8 {
        return Err(DavisError::NotIndexed {
            path: path.to_path_buf(),
            color: format!("{color:?} {}-bit", depth as u8),
        });
    }
    let size = reader.output_buffer_size().ok_or_else(|| DavisError::Png {
        path: path.to_path_buf(),
        source: "image too large".into(),
    })?;
    let mut buf = vec![0u8; size];
    let out = reader.next_frame(&mut buf).map_err(png_err)?;
    let (width, height) = (out.width, out.height);
    let bits = depth as usize;
    let per_byte = 8 / bits;
    let mut data = Vec::with_capacity(width as usize * height as usize);
    for row in buf.chunks(out.line_size).take(height as usize) {
        for x in 0..width as usize {
            // Sub-byte pixels are packed from the most significant bits (PNG spec §7.2).
            let byte = row[x / per_byte];
            let shift = 8 - bits * (x % per_byte + 1);
            data.push((byte >> shift) & ((1u16 << bits) - 1) as u8);
        }
    }
    if let Some(p) = &palette {
        if let Some(&value) = data.iter().find(|&&v| v as usize >= p.len()) {
            return Err(DavisError::UnexpectedIndex {
                path: path.to_path_buf(),
                value,
                why: format!("has no entry in the file's {}-colour palette", p.len()),
            });
        }
    }
    Ok((
        IndexMask {
            width,
            height,
            data,
        },
        palette,
    ))
}

/// Writes `mask` as an 8-bit palette PNG with `palette` (official `imwrite_indexed`, which
/// puts the first annotation's palette on every prediction). The palette is padded with black
/// up to the largest id.
///
/// # Errors
/// [`DavisError::Io`] / [`DavisError::Png`] when the file cannot be written.
pub fn write_index_png(path: &Path, mask: &IndexMask, palette: &Palette) -> Result<(), DavisError> {
    let io = |source| DavisError::Io {
        path: path.to_path_buf(),
        source,
    };
    let png_err = |e: png::EncodingError| DavisError::Png {
        path: path.to_path_buf(),
        source: Box::new(e),
    };
    let mut entries = palette.clone();
    let needed = mask.data.iter().copied().max().unwrap_or(0) as usize + 1;
    if entries.len() < needed {
        entries.resize(needed, [0, 0, 0]);
    }
    let file = File::create(path).map_err(io)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), mask.width, mask.height);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(entries.concat());
    let mut writer = enc.write_header().map_err(png_err)?;
    writer.write_image_data(&mask.data).map_err(png_err)?;
    writer.finish().map_err(png_err)
}

/// One sequence of the layout: its frames in order and the frames that have an annotation.
#[derive(Debug, Clone)]
pub struct DavisSequence {
    /// The sequence name (its folder name).
    pub name: String,
    /// `.jpg` frames, sorted by file name (official `sorted(glob("*.jpg"))`; DAVIS names are
    /// zero-padded, so this is the temporal order).
    pub frames: Vec<PathBuf>,
    /// Frame index → its annotation PNG (`<frame stem>.png`); always holds frame 0.
    pub annotations: BTreeMap<usize, PathBuf>,
    /// `(width, height)` of the first frame (read from its header).
    pub size: (u32, u32),
}

/// Sequence names of `root` at `resolution`: the sub-folders of `JPEGImages/<resolution>`,
/// sorted.
///
/// # Errors
/// [`DavisError::MissingFolder`] when the folder is missing; [`DavisError::Io`].
pub fn list_sequences(root: &Path, resolution: &str) -> Result<Vec<String>, DavisError> {
    let dir = root.join("JPEGImages").join(resolution);
    if !dir.is_dir() {
        return Err(DavisError::MissingFolder(dir));
    }
    let io = |source| DavisError::Io {
        path: dir.clone(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.path().is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Opens sequence `name` of `root` at `resolution` and checks it before any work: frames
/// exist, the first frame is annotated, every annotation names a frame and has the first
/// frame's size. Pixel values are checked by [`read_annotation`].
///
/// # Errors
/// [`DavisError::MissingFolder`], [`DavisError::NoFrames`],
/// [`DavisError::MissingAnnotation`], [`DavisError::OrphanAnnotation`],
/// [`DavisError::SizeMismatch`], [`DavisError::Image`], [`DavisError::Io`].
pub fn open_sequence(
    root: &Path,
    resolution: &str,
    name: &str,
) -> Result<DavisSequence, DavisError> {
    let frame_dir = root.join("JPEGImages").join(resolution).join(name);
    let ann_dir = root.join("Annotations").join(resolution).join(name);
    for d in [&frame_dir, &ann_dir] {
        if !d.is_dir() {
            return Err(DavisError::MissingFolder(d.clone()));
        }
    }
    let frames = files_with_ext(&frame_dir, "jpg")?;
    if frames.is_empty() {
        return Err(DavisError::NoFrames(frame_dir));
    }
    let stem = |p: &Path| p.file_stem().map(|s| s.to_os_string());
    let index: BTreeMap<_, _> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (stem(f), i))
        .collect();
    let first = ann_dir.join(frames[0].with_extension("png").file_name().expect("a file"));
    if !first.is_file() {
        return Err(DavisError::MissingAnnotation(first));
    }
    let size = image::image_dimensions(&frames[0]).map_err(|source| DavisError::Image {
        path: frames[0].clone(),
        source,
    })?;
    let mut annotations = BTreeMap::new();
    for ann in files_with_ext(&ann_dir, "png")? {
        let Some(&i) = index.get(&stem(&ann)) else {
            return Err(DavisError::OrphanAnnotation(ann));
        };
        let dims = png_dimensions(&ann)?;
        if dims != size {
            return Err(DavisError::SizeMismatch {
                path: ann,
                got_w: dims.0,
                got_h: dims.1,
                want_w: size.0,
                want_h: size.1,
            });
        }
        annotations.insert(i, ann);
    }
    Ok(DavisSequence {
        name: name.to_string(),
        frames,
        annotations,
        size,
    })
}

/// Reads annotation `path` of a sequence whose first frame has objects `1..=n_objects`: every
/// pixel must be 0, an object id up to `n_objects`, or [`VOID`] (which becomes background, as
/// in the toolkit's semi-supervised protocol). Pass `None` for the first frame itself (any id
/// up to 254).
///
/// # Errors
/// As [`read_index_png`]; [`DavisError::UnexpectedIndex`] for an id above `n_objects`.
pub fn read_annotation(
    path: &Path,
    n_objects: Option<u8>,
) -> Result<(IndexMask, Option<Palette>), DavisError> {
    let (mut mask, palette) = read_index_png(path)?;
    if let Some(n) = n_objects {
        if let Some(&value) = mask.data.iter().find(|&&v| v > n && v != VOID) {
            return Err(DavisError::UnexpectedIndex {
                path: path.to_path_buf(),
                value,
                why: format!(
                    "is no object of the sequence: its first frame's annotation has objects 1..={n}"
                ),
            });
        }
    }
    for v in &mut mask.data {
        if *v == VOID {
            *v = 0;
        }
    }
    Ok((mask, palette))
}

/// Files of `dir` ending in `.ext`, sorted by name.
fn files_with_ext(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, DavisError> {
    let io = |source| DavisError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case(ext))
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `(width, height)` from a PNG header.
fn png_dimensions(path: &Path) -> Result<(u32, u32), DavisError> {
    image::image_dimensions(path).map_err(|source| DavisError::Image {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pascal_palette_starts_as_davis_does() {
        let p = pascal_palette();
        // DAVIS's first colours: black, dark red, dark green, olive.
        assert_eq!(
            &p[..4],
            &[[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
        );
        assert_eq!(p.len(), 256);
    }

    #[test]
    fn palette_png_round_trips_with_its_palette() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.png");
        let mask = IndexMask {
            width: 5,
            height: 3,
            data: vec![0, 1, 2, 1, 0, 0, 0, 2, 2, 0, 1, 1, 1, 1, 1],
        };
        let palette = vec![[1, 2, 3], [4, 5, 6], [7, 8, 9]];
        write_index_png(&path, &mask, &palette).unwrap();
        let (back, pal) = read_index_png(&path).unwrap();
        assert_eq!(back, mask);
        assert_eq!(pal.unwrap(), palette);
    }
}
