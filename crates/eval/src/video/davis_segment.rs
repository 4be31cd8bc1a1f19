//! A DAVIS sequence segmented end to end (official `eval_video_tracking_davis` and
//! `read_frame` / `read_seg`), then scored with J and F on its annotated frames: frames are
//! decoded one at a time, resized so that the shorter side is `short_side` and the longer a
//! multiple of the patch size, embedded with the last block's patch tokens, and the first
//! frame's mask is propagated ([`crate::video::segmentation::Propagator`]); each prediction is written as
//! a palette PNG as soon as it is made, so a long video never sits in memory.
//!
//! Checks come first ([`prepare_sequence`]): the layout, every annotation's values and sizes,
//! and a video of at least two frames, before a model is loaded or a file written.
//!
// Full paths: rustdoc resolves these from the parent module, as `mod` has an outer doc too.
//! [`prepare_sequence`]: crate::video::davis_segment::prepare_sequence

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dino_data::transforms::normalize_chw_into;
use dino_model::{ModelError, VisionTransformer};
use image::RgbImage;
use tch::{Device, Tensor};

use crate::features::{count_and_first, non_finite_rows};
use crate::video::davis::{
    pascal_palette, read_annotation, write_index_png, DavisError, DavisSequence, IndexMask, Palette,
};
use crate::video::davis_metrics::{boundary_f, jaccard, FrameScore, ObjectScore, BOUND_TH};
use crate::video::segmentation::{
    one_hot, resize_nearest, soft_to_labels, Propagator, SegmentConfig,
};

/// Errors of segmenting a sequence.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The layout or an annotation is not what DAVIS holds.
    #[error(transparent)]
    Davis(#[from] DavisError),
    /// A propagation setting it cannot run with (see [`SegmentConfig::validate`]).
    #[error("{0}")]
    Config(String),
    /// Tensors of the wrong shape given to the propagation.
    #[error("{0}")]
    Shape(String),
    /// The backbone failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// libtorch failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A frame could not be decoded.
    #[error(transparent)]
    Decode(#[from] dino_data::error::DataError),
    /// A frame could not be resized.
    #[error(transparent)]
    Transform(#[from] dino_data::transforms::TransformError),
    /// Nothing to propagate into, or nothing to propagate.
    #[error("sequence {name}: {why}")]
    Sequence {
        /// The sequence.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// A frame's patch features hold NaN or infinite values (the shared feature check,
    /// `crate::features::non_finite_rows`): the propagation would be NaN affinities.
    #[error(
        "the patch features of {} hold NaN or infinite values ({count} of {patches} patches): \
         the network that made them is broken",
        .frame.display()
    )]
    NonFinite {
        /// The frame.
        frame: PathBuf,
        /// Patches with a non-finite feature.
        count: usize,
        /// Patches of the frame.
        patches: i64,
    },
    /// A frame of another size than the first.
    #[error("{} is {got_w}x{got_h} but the first frame of its sequence is {want_w}x{want_h} (the frames of a video must share one size)", .path.display())]
    FrameSize {
        /// The frame.
        path: PathBuf,
        /// Its width.
        got_w: u32,
        /// Its height.
        got_h: u32,
        /// The first frame's width.
        want_w: u32,
        /// The first frame's height.
        want_h: u32,
    },
    /// The output folder could not be written.
    #[error("{}", .path.display())]
    Io {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// How frames are fed to the backbone.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct FrameOptions {
    /// Shorter side of the model input in pixels, rounded down to a multiple of the patch size
    /// (official `read_frame`'s 480).
    pub short_side: u32,
    /// Per-channel mean of the input normalisation (the model's training one).
    pub mean: [f64; 3],
    /// Per-channel standard deviation.
    pub std: [f64; 3],
    /// Decoding limit on a frame's pixels.
    #[serde(skip)]
    pub max_pixels: u64,
}

/// The model input size `(width, height)` of a `width × height` frame: the shorter side
/// `short_side` (rounded down to a multiple of `patch`), the longer `short_side · long / short`
/// rounded down to a multiple of `patch` (official `read_frame` rounds the longer side down to
/// a multiple of 64, which 480 px and patch 8 or 16 also meet; here any patch size works).
///
/// # Errors
/// [`SegmentError::Sequence`]-free: returns `None` when `short_side` is below one patch.
pub fn model_size(width: u32, height: u32, short_side: u32, patch: u32) -> Option<(u32, u32)> {
    let short = short_side / patch * patch;
    if short == 0 {
        return None;
    }
    let long = |a: u32, b: u32| {
        let v = u64::from(short) * u64::from(a) / u64::from(b);
        (v / u64::from(patch) * u64::from(patch)) as u32
    };
    // Official: portrait when height > width, landscape (or square) otherwise.
    Some(if height > width {
        (short, long(height, width).max(patch))
    } else {
        (long(width, height).max(patch), short)
    })
}

/// The last block's patch tokens `[h·w, D]` (after the final norm, CLS dropped; official
/// `extract_feature`) of `img` resized to `size` (Pillow bicubic) and normalised.
///
/// # Errors
/// [`SegmentError::Transform`], [`SegmentError::Model`], [`SegmentError::Torch`].
pub fn frame_features(
    backbone: &VisionTransformer,
    img: &RgbImage,
    size: (u32, u32),
    opts: &FrameOptions,
    device: Device,
) -> Result<Tensor, SegmentError> {
    let resized;
    let img = if img.dimensions() == size {
        img
    } else {
        resized = dino_data::transforms::resize(img, size.0, size.1)?;
        &resized
    };
    let mut chw = vec![0f32; 3 * size.0 as usize * size.1 as usize];
    normalize_chw_into(img, opts.mean, opts.std, &mut chw);
    let x = Tensor::f_from_slice(&chw)?
        .f_view([1, 3, i64::from(size.1), i64::from(size.0)])?
        .f_to_device(device)?;
    let tokens = tch::no_grad(|| backbone.intermediate_features(&x, 1))?;
    let last = tokens.into_iter().next().expect("one layer asked for");
    Ok(last.patches.f_get(0)?)
}

/// A sequence checked and its annotations read, ready to segment.
pub struct PreparedSequence {
    /// The layout's sequence.
    pub seq: DavisSequence,
    /// The first frame's object ids (void as background).
    pub first: IndexMask,
    /// The palette predictions are written with (the first annotation's, or the PASCAL map).
    pub palette: Palette,
    /// Objects `1..=n_objects`.
    pub n_objects: u8,
    /// Ground truth of the scored frames: annotated frames other than the first and the last
    /// (the toolkit's semi-supervised protocol, `all_gt_masks[:, 1:-1]`).
    pub truth: BTreeMap<usize, IndexMask>,
}

/// Reads and checks everything about `seq` that can be checked without a model: the first
/// annotation has at least one object, every other annotation holds only its ids (or void),
/// and the video has at least two frames. A video shorter than `n_last_frames + 1` is fine: its
/// context is all its previous frames, as in the official queue.
///
/// # Errors
/// As [`read_annotation`]; [`SegmentError::Sequence`] for a single frame or no object.
pub fn prepare_sequence(seq: DavisSequence) -> Result<PreparedSequence, SegmentError> {
    let fail = |why: String| SegmentError::Sequence {
        name: seq.name.clone(),
        why,
    };
    if seq.frames.len() < 2 {
        return Err(fail(
            "has a single frame: there is nothing to propagate its annotation to".into(),
        ));
    }
    let (first, palette) = read_annotation(&seq.annotations[&0], None)?;
    let n_objects = first.max_object();
    if n_objects == 0 {
        return Err(fail(format!(
            "{} marks no object (all pixels 0 or 255)",
            seq.annotations[&0].display()
        )));
    }
    let last = seq.frames.len() - 1;
    let mut truth = BTreeMap::new();
    for (&i, path) in &seq.annotations {
        if i == 0 {
            continue;
        }
        // Read (and so checked) even when not scored.
        let (mask, _) = read_annotation(path, Some(n_objects))?;
        if i != last {
            truth.insert(i, mask);
        }
    }
    Ok(PreparedSequence {
        palette: palette.unwrap_or_else(pascal_palette),
        seq,
        first,
        n_objects,
        truth,
    })
}

/// Segments a prepared sequence into `out` (a new folder, written as `.<name>.partial` beside it and
/// renamed at the end, so a failure leaves no half-written predictions), and scores the
/// predictions of the scored frames. Returns one [`ObjectScore`] per object (`<seq>_<id>`), with
/// no frames (NaN means) when the sequence has no scored frame.
///
/// # Errors
/// [`SegmentError::Io`] when `out` exists or cannot be written; decoding, model and
/// propagation errors; [`SegmentError::FrameSize`] for a frame of another size;
/// [`SegmentError::NonFinite`] for patch features holding NaN or infinities.
pub fn segment_sequence(
    prep: &PreparedSequence,
    backbone: &VisionTransformer,
    cfg: SegmentConfig,
    opts: &FrameOptions,
    device: Device,
    out: &Path,
) -> Result<Vec<ObjectScore>, SegmentError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SegmentError::Io { path, source }
    };
    if out.exists() {
        return Err(SegmentError::Io {
            path: out.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "already exists"),
        });
    }
    let partial = out.with_file_name(format!(
        ".{}.partial",
        out.file_name().unwrap_or_default().to_string_lossy()
    ));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    std::fs::create_dir_all(&partial).map_err(io(&partial))?;
    let result = run(prep, backbone, cfg, opts, device, &partial);
    match result {
        Ok(scores) => {
            std::fs::rename(&partial, out).map_err(io(out))?;
            Ok(scores)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

fn run(
    prep: &PreparedSequence,
    backbone: &VisionTransformer,
    cfg: SegmentConfig,
    opts: &FrameOptions,
    device: Device,
    dir: &Path,
) -> Result<Vec<ObjectScore>, SegmentError> {
    let seq = &prep.seq;
    let patch = backbone.config().patch_size;
    let (w0, h0) = seq.size;
    let size = model_size(w0, h0, opts.short_side, patch as u32).ok_or_else(|| {
        SegmentError::Sequence {
            name: seq.name.clone(),
            why: format!("--size {} is below one patch ({patch} px)", opts.short_side),
        }
    })?;
    let (gw, gh) = (size.0 / patch as u32, size.1 / patch as u32);
    let name_of = |i: usize| {
        dir.join(
            seq.frames[i]
                .with_extension("png")
                .file_name()
                .expect("a frame file"),
        )
    };
    let decode = |i: usize| -> Result<RgbImage, SegmentError> {
        let img = dino_data::decode::decode_file(&seq.frames[i], opts.max_pixels)?;
        if img.dimensions() != seq.size {
            return Err(SegmentError::FrameSize {
                path: seq.frames[i].clone(),
                got_w: img.width(),
                got_h: img.height(),
                want_w: w0,
                want_h: h0,
            });
        }
        Ok(img)
    };
    // Official: the first prediction is the given annotation itself.
    write_index_png(&name_of(0), &prep.first, &prep.palette)?;
    let small = resize_nearest(&prep.first, gw, gh);
    let labels = one_hot(&small, i64::from(prep.n_objects) + 1, device)?;
    let features = |i: usize| -> Result<Tensor, SegmentError> {
        let f = frame_features(backbone, &decode(i)?, size, opts, device)?;
        if let Some((count, _)) = count_and_first(&non_finite_rows(&f)?)? {
            return Err(SegmentError::NonFinite {
                frame: seq.frames[i].clone(),
                count,
                patches: f.size()[0],
            });
        }
        Ok(f)
    };
    let feats = features(0)?;
    let mut prop = Propagator::new(cfg, &feats, &labels)?;
    let mut per_object: Vec<Vec<FrameScore>> = vec![Vec::new(); prep.n_objects as usize];
    for i in 1..seq.frames.len() {
        let feats = features(i)?;
        let soft = prop.step(&feats)?;
        let pred = soft_to_labels(&soft, patch, w0, h0)?;
        write_index_png(&name_of(i), &pred, &prep.palette)?;
        if let Some(truth) = prep.truth.get(&i) {
            for (k, scores) in per_object.iter_mut().enumerate() {
                let id = k as u8 + 1;
                let (g, p) = (truth.object(id), pred.object(id));
                scores.push(FrameScore {
                    frame: i,
                    j: jaccard(&g, &p),
                    f: boundary_f(&g, &p, w0 as usize, h0 as usize, BOUND_TH),
                });
            }
        }
    }
    Ok(per_object
        .into_iter()
        .enumerate()
        .map(|(k, frames)| ObjectScore::new(format!("{}_{}", seq.name, k + 1), frames))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_sizes() {
        // DAVIS 854x480 at 480 / patch 16: 480 x 848 (official: 832, a multiple of 64).
        assert_eq!(model_size(854, 480, 480, 16), Some((848, 480)));
        // 640x480 at 120 / patch 4: a 30 x 40 patch grid, the grid DINO's ViT/16 gets at 480.
        assert_eq!(model_size(640, 480, 120, 4), Some((160, 120)));
        // Portrait, and a short side that is no multiple of the patch.
        assert_eq!(model_size(480, 640, 122, 4), Some((120, 160)));
        assert_eq!(model_size(640, 480, 3, 4), None);
    }
}
