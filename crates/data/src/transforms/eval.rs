//! The evaluation transform of DINO's k-NN / linear scripts:
//! `Resize(round(crop·ratio), interpolation=BICUBIC)` then `CenterCrop(crop)` (official
//! `eval_knn.py` / `eval_linear.py` use `Resize(256, interpolation=3)`, `CenterCrop(224)`),
//! with torchvision 0.28's size and offset rounding on PIL images.

use super::{round_half_even, CropBox, CropResizer, TransformError};
use image::RgbImage;

/// Resize-shorter-side + centre crop.
#[derive(Debug, Clone)]
pub struct EvalTransform {
    crop: u32,
    short: u32,
}

impl EvalTransform {
    /// `crop_size` > 0 pixels; the shorter side is resized to `round(crop_size·resize_ratio)`
    /// (> 0). Official: 224 and 256/224. Errors: [`TransformError::BadParameter`].
    pub fn new(crop_size: u32, resize_ratio: f64) -> Result<Self, TransformError> {
        let bad = |reason: String| TransformError::BadParameter {
            name: "eval.resize",
            reason,
        };
        if crop_size == 0 {
            return Err(bad("crop size must be > 0".into()));
        }
        let short = (f64::from(crop_size) * resize_ratio).round();
        if !(short >= 1.0 && short <= f64::from(u16::MAX)) {
            return Err(bad(format!(
                "resize ratio {resize_ratio} gives shorter side {short}"
            )));
        }
        Ok(Self {
            crop: crop_size,
            short: short as u32,
        })
    }

    /// Side of the output in pixels.
    pub fn crop_size(&self) -> u32 {
        self.crop
    }

    /// Target length of the shorter side before cropping.
    pub fn resize_size(&self) -> u32 {
        self.short
    }

    /// The `crop`x`crop` RGB8 result. torchvision `Resize(int)`: shorter side to `s`, longer to
    /// `int(s·long/short)`; `CenterCrop`: offsets `round((side − crop)/2)` (half-to-even),
    /// zero padding where the image is smaller than the crop. An empty input gives a black image.
    pub fn apply(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = img.dimensions();
        let c = self.crop;
        let mut out = RgbImage::new(c, c);
        if w == 0 || h == 0 {
            return out;
        }
        let s = u64::from(self.short);
        let (nw, nh) = if w <= h {
            (s, s * u64::from(h) / u64::from(w))
        } else {
            (s * u64::from(w) / u64::from(h), s)
        };
        let (nw, nh) = (nw.max(1) as u32, nh.max(1) as u32);
        let resized;
        let src = if (nw, nh) == (w, h) {
            img
        } else {
            let mut dst = RgbImage::new(nw, nh);
            if CropResizer::new()
                .resized_crop_into(img, CropBox::full(w, h), &mut dst)
                .is_err()
            {
                return out;
            }
            resized = dst;
            &resized
        };
        let off = |side: u32| -> i64 {
            if c > side {
                -(i64::from(c - side) / 2)
            } else {
                round_half_even(f64::from(side - c) / 2.0) as i64
            }
        };
        let (ox, oy) = (off(nw), off(nh));
        let row = 3 * nw as usize;
        for y in 0..c as i64 {
            let sy = y + oy;
            if sy < 0 || sy >= i64::from(nh) {
                continue;
            }
            let x0 = ox.max(0);
            let x1 = (ox + i64::from(c)).min(i64::from(nw));
            if x1 <= x0 {
                continue;
            }
            let s0 = sy as usize * row + 3 * x0 as usize;
            let len = 3 * (x1 - x0) as usize;
            let d0 = (y as usize * c as usize + (x0 - ox) as usize) * 3;
            out.as_mut()[d0..d0 + len].copy_from_slice(&src.as_raw()[s0..s0 + len]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_bad_parameters() {
        assert!(EvalTransform::new(0, 1.0).is_err());
        assert!(EvalTransform::new(224, f64::NAN).is_err());
        let t = EvalTransform::new(224, 256.0 / 224.0).unwrap();
        assert_eq!(t.resize_size(), 256);
        for (w, h) in [(500, 375), (1, 1), (31, 900), (224, 224)] {
            assert_eq!(t.apply(&RgbImage::new(w, h)).dimensions(), (224, 224));
        }
        // Smaller than the crop: zero padded around the centre.
        let small = EvalTransform::new(8, 0.5).unwrap();
        let img = RgbImage::from_pixel(4, 4, image::Rgb([200, 200, 200]));
        let out = small.apply(&img);
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(3, 3).0, [200, 200, 200]);
    }
}
