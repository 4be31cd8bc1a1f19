//! Attention over a video (official `video_generation.py`): for each frame, the last block's
//! CLS attention per head ([`crate::attention`]), optionally smoothed over the previous frames,
//! the map shown (the mean over heads, or one head), its threshold mask (smallest patch set
//! holding `threshold` of the mass, official 0.6), and a side-by-side picture
//! `original | attention | mask`.
//!
//! Frames come fitted to the patch grid ([`dino_data::video::FrameSource`]); nothing here keeps
//! more than the smoothing window of maps, so memory does not grow with the video's length.
//!
//! Differences from the official script: it saves the bare mean map (inferno colours) and
//! computes but does not draw the masks; here the heat map (VIRIDIS, min-max per frame) is
//! blended over the frame, as `dino attention` does for photos, and the mask is drawn beside it.

use std::collections::VecDeque;

use dino_model::VisionTransformer;
use image::{Rgb, RgbImage};
use tch::Device;

use crate::attention::{
    heatmap_overlay, mask_overlay, threshold_mask, AttentionError, AttentionImage, AttentionMaps,
};

/// Width in pixels of the white gap between the three panels of [`side_by_side`].
pub const PANEL_GAP: u32 = 4;

/// Colour of the mask panel (the first CATEGORY10 colour, as the first mask of `dino attention`).
const MASK_COLOUR: Rgb<u8> = Rgb([0x1f, 0x77, 0xb4]);

/// The last block's CLS attention of one frame whose sides are already multiples of the
/// backbone's patch size: normalised with `mean` and `std` (torchvision `Normalize`) and run on
/// `device` without gradients. Maps `h × w` with `h = height / patch`, `w = width / patch`.
///
/// # Errors
/// [`AttentionError::ImageSize`] when a side is not a positive multiple of the patch;
/// [`AttentionError::Model`] / [`AttentionError::Torch`] from the backbone and libtorch.
pub fn frame_attention(
    backbone: &VisionTransformer,
    frame: &RgbImage,
    mean: [f64; 3],
    std: [f64; 3],
    device: Device,
) -> Result<AttentionMaps, AttentionError> {
    let patch = u32::try_from(backbone.config().patch_size).unwrap_or(0);
    let (width, height) = frame.dimensions();
    if patch == 0 || width == 0 || height == 0 || width % patch != 0 || height % patch != 0 {
        return Err(AttentionError::ImageSize {
            width,
            height,
            patch,
        });
    }
    let seen = AttentionImage {
        image: frame.clone(),
        resized: (width, height),
        h: (height / patch) as usize,
        w: (width / patch) as usize,
    };
    let x = seen.to_tensor(mean, std)?.f_to_device(device)?;
    let attn = tch::no_grad(|| backbone.last_cls_attention(&x))?;
    AttentionMaps::from_cls_attention(&attn, seen.h, seen.w)
}

/// Temporal smoothing of the maps: each head's map becomes the mean of its maps over the current
/// frame and up to `window − 1` previous ones (a causal moving average; `window` 1 is no
/// smoothing). Holds at most `window` maps.
#[derive(Debug, Clone)]
pub struct MapSmoother {
    window: usize,
    recent: VecDeque<AttentionMaps>,
}

impl MapSmoother {
    /// A smoother over `window` frames (at least 1).
    ///
    /// # Errors
    /// [`AttentionError::Shape`] for a zero window.
    pub fn new(window: usize) -> Result<Self, AttentionError> {
        if window == 0 {
            return Err(AttentionError::Shape(
                "the smoothing window must hold at least one frame".into(),
            ));
        }
        Ok(Self {
            window,
            recent: VecDeque::with_capacity(window),
        })
    }

    /// Adds the maps of the next frame and returns the smoothed maps.
    ///
    /// # Errors
    /// [`AttentionError::Shape`] when the grid or the number of heads differs from the previous
    /// frames'.
    pub fn push(&mut self, maps: AttentionMaps) -> Result<AttentionMaps, AttentionError> {
        if let Some(prev) = self.recent.back() {
            if (prev.h, prev.w, prev.heads.len()) != (maps.h, maps.w, maps.heads.len()) {
                return Err(AttentionError::Shape(format!(
                    "frame maps {}×{} with {} heads after {}×{} with {}",
                    maps.h,
                    maps.w,
                    maps.heads.len(),
                    prev.h,
                    prev.w,
                    prev.heads.len()
                )));
            }
        }
        if self.recent.len() == self.window {
            self.recent.pop_front();
        }
        self.recent.push_back(maps);
        if self.window == 1 {
            return Ok(self.recent[0].clone());
        }
        let n = self.recent.len() as f32;
        let first = &self.recent[0];
        let heads = (0..first.heads.len())
            .map(|k| {
                (0..first.h * first.w)
                    .map(|i| self.recent.iter().map(|m| m.heads[k][i]).sum::<f32>() / n)
                    .collect()
            })
            .collect();
        Ok(AttentionMaps {
            h: first.h,
            w: first.w,
            heads,
        })
    }
}

/// Which map of a frame is drawn and thresholded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShownMap {
    /// The mean over heads (the official video's map).
    Mean,
    /// One head, 0-based.
    Head(usize),
}

/// What one frame's attention gives.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameResult {
    /// The map drawn, `h · w` weights row-major.
    pub map: Vec<f32>,
    /// Its threshold mask, one flag per patch.
    pub mask: Vec<bool>,
    /// Share of the patches inside the mask, in [0, 1].
    pub mask_area: f64,
}

/// The shown map of `maps` and its threshold mask.
///
/// # Errors
/// [`AttentionError::Shape`] for a head the model does not have; [`AttentionError::Threshold`]
/// unless `0 < threshold < 1`.
pub fn shown(
    maps: &AttentionMaps,
    which: ShownMap,
    threshold: f64,
) -> Result<FrameResult, AttentionError> {
    let map = match which {
        ShownMap::Mean => maps.mean(),
        ShownMap::Head(k) => maps
            .heads
            .get(k)
            .ok_or_else(|| {
                AttentionError::Shape(format!(
                    "head {k} asked for, the model has {} (0 to {})",
                    maps.heads.len(),
                    maps.heads.len().saturating_sub(1)
                ))
            })?
            .clone(),
    };
    let mask = threshold_mask(&map, threshold)?;
    let mask_area = mask.iter().filter(|&&m| m).count() as f64 / mask.len().max(1) as f64;
    Ok(FrameResult {
        map,
        mask,
        mask_area,
    })
}

/// The size of [`side_by_side`]'s picture for `width × height` frames: three panels and two
/// [`PANEL_GAP`] gaps.
pub fn side_by_side_size(width: u32, height: u32) -> (u32, u32) {
    (3 * width + 2 * PANEL_GAP, height)
}

/// `frame | heat map of map over it | mask over it`, separated by white gaps of [`PANEL_GAP`]
/// pixels ([`side_by_side_size`]). `frame`: sides multiples of `patch`; `result`: its patch grid.
///
/// # Errors
/// As [`heatmap_overlay`] when the frame, the patch and the map disagree.
pub fn side_by_side(
    frame: &RgbImage,
    result: &FrameResult,
    patch: u32,
) -> Result<RgbImage, AttentionError> {
    let heat = heatmap_overlay(frame, &result.map, patch)?;
    let mask = mask_overlay(frame, &result.mask, patch, MASK_COLOUR)?;
    let (w, h) = frame.dimensions();
    let (ow, oh) = side_by_side_size(w, h);
    let mut out = RgbImage::from_pixel(ow, oh, Rgb([255, 255, 255]));
    for (i, panel) in [frame, &heat, &mask].into_iter().enumerate() {
        image::imageops::replace(&mut out, panel, i64::from(i as u32 * (w + PANEL_GAP)), 0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(values: &[f32]) -> AttentionMaps {
        AttentionMaps {
            h: 1,
            w: values.len(),
            heads: vec![values.to_vec(), values.iter().map(|v| 1.0 - v).collect()],
        }
    }

    #[test]
    fn smoothing_is_a_causal_window_mean() {
        let mut s = MapSmoother::new(2).unwrap();
        let a = s.push(maps(&[1.0, 0.0])).unwrap();
        assert_eq!(a.heads[0], [1.0, 0.0]);
        let b = s.push(maps(&[0.0, 0.0])).unwrap();
        assert_eq!(b.heads[0], [0.5, 0.0]);
        assert_eq!(b.heads[1], [0.5, 1.0]);
        // The first frame has left the window.
        let c = s.push(maps(&[0.0, 1.0])).unwrap();
        assert_eq!(c.heads[0], [0.0, 0.5]);
        assert!(s.push(maps(&[0.0, 1.0, 2.0])).is_err());
        assert!(MapSmoother::new(0).is_err());
        // Window 1: the maps themselves.
        let mut one = MapSmoother::new(1).unwrap();
        one.push(maps(&[0.3, 0.7])).unwrap();
        assert_eq!(one.push(maps(&[0.9, 0.1])).unwrap(), maps(&[0.9, 0.1]));
    }

    #[test]
    fn shown_map_and_mask() {
        let m = AttentionMaps {
            h: 1,
            w: 4,
            heads: vec![vec![0.7, 0.1, 0.1, 0.1], vec![0.1, 0.1, 0.1, 0.7]],
        };
        let head0 = shown(&m, ShownMap::Head(0), 0.6).unwrap();
        assert_eq!(head0.mask, [true, false, false, false]);
        assert_eq!(head0.mask_area, 0.25);
        let mean = shown(&m, ShownMap::Mean, 0.6).unwrap();
        assert_eq!(mean.map, m.mean());
        // 0.4, 0.1, 0.1, 0.4: the two 0.4 patches hold 0.8 ≥ 0.6, one alone 0.4 does not.
        assert_eq!(mean.mask, [true, false, false, true]);
        let err = shown(&m, ShownMap::Head(2), 0.6).unwrap_err();
        assert!(err.to_string().contains("head 2"), "{err}");
    }

    #[test]
    fn panels_sit_side_by_side() {
        let frame = RgbImage::from_fn(8, 4, |x, _| Rgb([x as u8 * 30, 0, 0]));
        let r = FrameResult {
            map: vec![1.0, 0.0],
            mask: vec![true, false],
            mask_area: 0.5,
        };
        let out = side_by_side(&frame, &r, 4).unwrap();
        assert_eq!(out.dimensions(), side_by_side_size(8, 4));
        assert_eq!(out.dimensions(), (3 * 8 + 2 * PANEL_GAP, 4));
        // The first panel is the frame; the gap is white; the mask panel leaves the right
        // (unmasked) patch as it was.
        assert_eq!(out.get_pixel(5, 1), frame.get_pixel(5, 1));
        assert_eq!(*out.get_pixel(8, 0), Rgb([255, 255, 255]));
        let x0 = 2 * (8 + PANEL_GAP);
        assert_eq!(out.get_pixel(x0 + 6, 2), frame.get_pixel(6, 2));
        assert_ne!(out.get_pixel(x0 + 1, 2), frame.get_pixel(1, 2));
        assert!(side_by_side(&frame, &r, 3).is_err());
    }
}
