//! Video object segmentation by label propagation with frozen patch features (paper §4.2.1,
//! Table 5; official `eval_video_segmentation.py`, after Jabri et al. 2020): each new frame's
//! patches take the labels of their most similar patches in the first frame (whose mask is
//! given) and in the last `n_last_frames` frames (whose masks were predicted), searched within a
//! `size_mask_neighborhood` window, the top `k` weighted by a softmax with a temperature.
//!
//! Shapes: a frame's features are `[h·w, D]` (the last block's patch tokens after the final
//! norm, row by row), a soft segmentation is `[C, h, w]` (C = objects + background), on one
//! device, f32.

use std::collections::VecDeque;

use tch::{Device, Kind, Tensor};

use crate::video::davis::IndexMask;
use crate::video::davis_segment::SegmentError;

/// Settings of the propagation; every default is the official one
/// (`eval_video_segmentation.py` argparse, and the constant in `label_propagation`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SegmentConfig {
    /// Predicted frames kept as context besides the first (official `--n_last_frames 7`).
    pub n_last_frames: usize,
    /// Source patches are restricted to this many patches around the query in each direction;
    /// 0 = no restriction (official `--size_mask_neighborhood 12`).
    pub size_mask_neighborhood: usize,
    /// Source patches whose labels are accumulated per query (official `--topk 5`).
    pub topk: usize,
    /// Softmax temperature of the cosine affinities (official: `exp(aff / 0.1)`, a constant in
    /// `label_propagation`).
    pub temperature: f64,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        Self {
            n_last_frames: 7,
            size_mask_neighborhood: 12,
            topk: 5,
            temperature: 0.1,
        }
    }
}

impl SegmentConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`SegmentError::Config`] for `n_last_frames` or `topk` 0 (the official queue of size 0
    /// would never be popped) or a temperature that is not positive.
    pub fn validate(&self) -> Result<(), SegmentError> {
        if self.n_last_frames == 0 {
            return Err(SegmentError::Config(
                "n_last_frames must be at least 1".into(),
            ));
        }
        if self.topk == 0 {
            return Err(SegmentError::Config("topk must be at least 1".into()));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(SegmentError::Config(format!(
                "temperature must be positive, got {}",
                self.temperature
            )));
        }
        Ok(())
    }
}

/// The `[h·w, h·w]` 0/1 mask (query patch × source patch) of official `restrict_neighborhood`:
/// 1 where the source lies within `size` patches of the query in both rows and columns.
///
/// # Errors
/// [`SegmentError::Torch`].
pub fn neighborhood_mask(
    h: i64,
    w: i64,
    size: i64,
    device: Device,
) -> Result<Tensor, SegmentError> {
    let near = |n: i64| -> Result<Tensor, SegmentError> {
        let r = Tensor::f_arange(n, (Kind::Int64, device))?;
        let d = r.f_unsqueeze(1)?.f_sub(&r.f_unsqueeze(0)?)?.f_abs()?;
        Ok(d.f_le(size)?)
    };
    let rows = near(h)?.f_view([h, 1, h, 1])?;
    let cols = near(w)?.f_view([1, w, 1, w])?;
    Ok(rows
        .f_logical_and(&cols)?
        .f_to_kind(Kind::Float)?
        .f_reshape([h * w, h * w])?)
}

/// Affinities from every source patch of `n` context frames to every target patch (official
/// `label_propagation`): features L2-normalised per patch, `exp(cos / temperature)`, times the
/// neighbourhood `mask` when given, then for each target only the `topk` largest over all
/// context patches kept (ties with the k-th kept too) and normalised to sum 1.
///
/// `target`: `[h·w, D]`; `sources`: `[n, h·w, D]`; `mask`: `[h·w, h·w]` (query × source).
/// Returns `[n·h·w, h·w]` (source, frame-major × target).
///
/// # Errors
/// [`SegmentError::Shape`] for shapes that do not fit or `topk` above `n·h·w`;
/// [`SegmentError::Torch`].
pub fn affinity(
    target: &Tensor,
    sources: &Tensor,
    mask: Option<&Tensor>,
    topk: usize,
    temperature: f64,
) -> Result<Tensor, SegmentError> {
    let (hw, d) = target.size2()?;
    let (n, hw_s, d_s) = sources.size3()?;
    if (hw_s, d_s) != (hw, d) {
        return Err(SegmentError::Shape(format!(
            "target features [{hw}, {d}] against sources [{n}, {hw_s}, {d_s}]"
        )));
    }
    if topk as i64 > n * hw {
        return Err(SegmentError::Shape(format!(
            "topk {topk} is more than the {} context patches",
            n * hw
        )));
    }
    let normalize = |t: &Tensor| -> Result<Tensor, SegmentError> {
        // F.normalize: x / max(‖x‖, 1e-12).
        let norm = t.f_norm_scalaropt_dim(2, [-1], true)?.f_clamp_min(1e-12)?;
        Ok(t.f_div(&norm)?)
    };
    let tar = normalize(target)?;
    let src = normalize(sources)?;
    // [n, target, source]
    let mut aff = tar
        .f_unsqueeze(0)?
        .f_matmul(&src.f_transpose(1, 2)?)?
        .f_div_scalar(temperature)?
        .f_exp()?;
    if let Some(m) = mask {
        aff = aff.f_mul(&m.f_unsqueeze(0)?)?;
    }
    let aff = aff.f_transpose(2, 1)?.f_reshape([n * hw, hw])?;
    let (top, _) = aff.f_topk(topk as i64, 0, true, true)?;
    let (kth, _) = top.f_min_dim(0, true)?;
    let kept = aff.f_mul(&aff.f_ge_tensor(&kth)?.f_to_kind(Kind::Float)?)?;
    let sum = kept.f_sum_dim_intlist([0i64].as_slice(), true, Kind::Float)?;
    Ok(kept.f_div(&sum)?)
}

/// One-hot `[C, h, w]` f32 of a label grid (official `to_one_hot`), on `device`.
///
/// # Errors
/// [`SegmentError::Shape`] for a label at or above `classes`; [`SegmentError::Torch`].
pub fn one_hot(labels: &IndexMask, classes: i64, device: Device) -> Result<Tensor, SegmentError> {
    if let Some(&v) = labels.data.iter().find(|&&v| i64::from(v) >= classes) {
        return Err(SegmentError::Shape(format!(
            "label {v} with {classes} classes"
        )));
    }
    let l = Tensor::f_from_slice(&labels.data)?
        .f_to_kind(Kind::Int64)?
        .f_to_device(device)?;
    let oh = l.f_one_hot(classes)?.f_to_kind(Kind::Float)?;
    Ok(oh.f_transpose(0, 1)?.f_reshape([
        classes,
        i64::from(labels.height),
        i64::from(labels.width),
    ])?)
}

/// Nearest-neighbour resize of a label map as Pillow's `resize(…, NEAREST)` (the official code
/// resizes annotations and predictions with it). Pillow's `ImagingScaleAffine` walks the input
/// with a running sum: `s = in / out`, position `s / 2`, then `+ s` per output pixel, read at its
/// floor. The sum is kept here in the same order, since `(x + ½) · s` computed directly can land
/// on the other side of an integer (e.g. row 7 of 48 → 45 rows reads 7 in Pillow, 8 directly).
pub fn resize_nearest(mask: &IndexMask, width: u32, height: u32) -> IndexMask {
    let table = |i: u32, n: u32| -> Vec<usize> {
        let s = f64::from(i) / f64::from(n);
        let mut pos = s * 0.5;
        (0..n)
            .map(|_| {
                let v = (pos as usize).min(i as usize - 1);
                pos += s;
                v
            })
            .collect()
    };
    let xs = table(mask.width, width);
    let mut data = Vec::with_capacity(width as usize * height as usize);
    for y in table(mask.height, height) {
        let row = y * mask.width as usize;
        data.extend(xs.iter().map(|&x| mask.data[row + x]));
    }
    IndexMask {
        width,
        height,
        data,
    }
}

/// The labels of a soft segmentation `[C, h, w]` at `(width, height)` pixels (official
/// `eval_video_tracking_davis`): bilinear upsampling by `patch` (`align_corners=False`), each
/// channel with a positive maximum rescaled to [0, 1] by its min and max (`norm_mask`), the
/// arg-max channel, and a nearest resize to `(width, height)`.
///
/// # Errors
/// [`SegmentError::Torch`].
pub fn soft_to_labels(
    soft: &Tensor,
    patch: i64,
    width: u32,
    height: u32,
) -> Result<IndexMask, SegmentError> {
    let (c, h, w) = soft.size3()?;
    let up = soft
        .f_unsqueeze(0)?
        .f_upsample_bilinear2d(
            [h * patch, w * patch],
            false,
            Some(patch as f64),
            Some(patch as f64),
        )?
        .f_squeeze_dim(0)?;
    let mut channels = Vec::with_capacity(c as usize);
    for i in 0..c {
        let ch = up.f_get(i)?;
        if ch.f_max()?.f_double_value(&[])? > 0.0 {
            let shifted = ch.f_sub(&ch.f_min()?)?;
            channels.push(shifted.f_div(&shifted.f_max()?)?);
        } else {
            channels.push(ch);
        }
    }
    let labels = Tensor::f_stack(&channels, 0)?
        .f_argmax(0, false)?
        .f_to_kind(Kind::Uint8)?
        .f_to_device(Device::Cpu)?
        .f_contiguous()?;
    let data = Vec::<u8>::try_from(labels.f_flatten(0, -1)?)?;
    let grid = IndexMask {
        width: (w * patch) as u32,
        height: (h * patch) as u32,
        data,
    };
    Ok(resize_nearest(&grid, width, height))
}

/// Propagates the first frame's labels through a video, one frame at a time (official
/// `eval_video_tracking_davis`): the context of each new frame is the first frame with its
/// given labels and the last `n_last_frames` frames with their predicted soft labels (fewer at
/// the start: a video shorter than `n_last_frames` simply uses all its previous frames).
pub struct Propagator {
    cfg: SegmentConfig,
    h: i64,
    w: i64,
    first: (Tensor, Tensor),
    queue: VecDeque<(Tensor, Tensor)>,
    mask: Option<Tensor>,
}

impl Propagator {
    /// Starts from the first frame's features `[h·w, D]` and its labels `[C, h, w]` (one-hot).
    ///
    /// # Errors
    /// As [`SegmentConfig::validate`]; [`SegmentError::Shape`] for shapes that do not fit or
    /// `topk` above `h·w`.
    pub fn new(
        cfg: SegmentConfig,
        features: &Tensor,
        labels: &Tensor,
    ) -> Result<Self, SegmentError> {
        cfg.validate()?;
        let (_, h, w) = labels.size3()?;
        let (hw, _) = features.size2()?;
        if hw != h * w {
            return Err(SegmentError::Shape(format!(
                "{hw} feature rows for a {h}x{w} label grid"
            )));
        }
        if cfg.topk as i64 > hw {
            return Err(SegmentError::Shape(format!(
                "topk {} is more than the {hw} patches of a frame",
                cfg.topk
            )));
        }
        let mask = if cfg.size_mask_neighborhood > 0 {
            Some(neighborhood_mask(
                h,
                w,
                cfg.size_mask_neighborhood as i64,
                features.device(),
            )?)
        } else {
            None
        };
        Ok(Self {
            cfg,
            h,
            w,
            first: (features.shallow_clone(), labels.shallow_clone()),
            queue: VecDeque::with_capacity(cfg.n_last_frames),
            mask,
        })
    }

    /// The soft labels `[C, h, w]` of the next frame from its features `[h·w, D]`, which then
    /// join the context (the oldest predicted frame leaving it when it is full).
    ///
    /// # Errors
    /// As [`affinity`].
    pub fn step(&mut self, features: &Tensor) -> Result<Tensor, SegmentError> {
        let (feats, segs): (Vec<&Tensor>, Vec<&Tensor>) = std::iter::once(&self.first)
            .chain(self.queue.iter())
            .map(|(f, s)| (f, s))
            .unzip();
        let sources = Tensor::f_stack(&feats, 0)?;
        let aff = affinity(
            features,
            &sources,
            self.mask.as_ref(),
            self.cfg.topk,
            self.cfg.temperature,
        )?;
        let segs = Tensor::f_stack(&segs, 0)?;
        let (n, c, h, w) = segs.size4()?;
        // [C, n·h·w], sources frame-major as in `affinity`.
        let segs = segs
            .f_reshape([n, c, h * w])?
            .f_transpose(2, 1)?
            .f_reshape([n * h * w, c])?
            .f_transpose(0, 1)?;
        let out = segs.f_matmul(&aff)?.f_reshape([c, self.h, self.w])?;
        if self.queue.len() == self.cfg.n_last_frames {
            self.queue.pop_front();
        }
        self.queue
            .push_back((features.shallow_clone(), out.shallow_clone()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_defaults() {
        // eval_video_segmentation.py: --n_last_frames 7, --size_mask_neighborhood 12,
        // --topk 5, and `torch.exp(torch.bmm(feat_tar, feat_sources) / 0.1)`.
        let c = SegmentConfig::default();
        assert_eq!(c.n_last_frames, 7);
        assert_eq!(c.size_mask_neighborhood, 12);
        assert_eq!(c.topk, 5);
        assert_eq!(c.temperature, 0.1);
        assert!(SegmentConfig {
            n_last_frames: 0,
            ..c
        }
        .validate()
        .is_err());
        assert!(SegmentConfig { topk: 0, ..c }.validate().is_err());
    }

    #[test]
    fn neighborhood_window() {
        let m = neighborhood_mask(3, 4, 1, Device::Cpu).unwrap();
        assert_eq!(m.size(), [12, 12]);
        // Query (0,0) sees (0,0),(0,1),(1,0),(1,1) only.
        let row: Vec<f32> = Vec::try_from(m.get(0)).unwrap();
        let seen: Vec<usize> = (0..12).filter(|&i| row[i] > 0.0).collect();
        assert_eq!(seen, [0, 1, 4, 5]);
    }

    #[test]
    fn nearest_resize_as_pillow() {
        // 2 → 5 columns: positions .2, .6, 1.0, 1.4, 1.8 → 0,0,1,1,1 (Pillow NEAREST).
        let m = IndexMask {
            width: 2,
            height: 1,
            data: vec![3, 7],
        };
        assert_eq!(resize_nearest(&m, 5, 1).data, [3, 3, 7, 7, 7]);
        // 48 → 45 rows: Pillow's running sum reads row 7 for output row 7 ((7 + ½) · 48 / 45
        // is 8 exactly, the sum falls just short of it).
        let col = IndexMask {
            width: 1,
            height: 48,
            data: (0..48).collect(),
        };
        assert_eq!(resize_nearest(&col, 1, 45).data[7], 7);
    }
}
