//! RandomResizedCrop box sampling, exactly as torchvision's `RandomResizedCrop.get_params`
//! (torchvision 0.28 `transforms/transforms.py`), with draws taken from the caller's RNG.

use rand::Rng;

/// An integer crop box in pixels: columns `left..left + width`, rows `top..top + height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First column.
    pub left: u32,
    /// First row.
    pub top: u32,
    /// Width in pixels (> 0 for a non-empty image).
    pub width: u32,
    /// Height in pixels (> 0 for a non-empty image).
    pub height: u32,
}

impl CropBox {
    /// The whole `width`x`height` image.
    pub fn full(width: u32, height: u32) -> Self {
        Self {
            left: 0,
            top: 0,
            width,
            height,
        }
    }

    /// Whether the box is non-empty and lies inside a `width`x`height` image.
    pub fn fits(&self, width: u32, height: u32) -> bool {
        self.width > 0
            && self.height > 0
            && u64::from(self.left) + u64::from(self.width) <= u64::from(width)
            && u64::from(self.top) + u64::from(self.height) <= u64::from(height)
    }
}

/// Python's `round()` (round half to even), which torchvision uses for crop sizes and offsets.
pub fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// Samples a RandomResizedCrop box for a `width`x`height` image.
///
/// Up to 10 tries: target area = `W·H·U(scale)`, aspect = `exp(U(ln ratio0, ln ratio1))`,
/// `w = round(sqrt(area·aspect))`, `h = round(sqrt(area/aspect))`; accepted when
/// `0 < w <= W` and `0 < h <= H`, then top `~ U{0..H-h}` and left `~ U{0..W-w}` (drawn in that
/// order, as torchvision). Otherwise [`center_crop_fallback`]. Never panics: for an empty image it
/// returns the empty full box; any non-empty image gives a box with `fits(W, H)`.
/// Draw order per try: area fraction, log-aspect (two `f64` draws), then top and left.
pub fn sample_resized_crop<R: Rng + ?Sized>(
    width: u32,
    height: u32,
    scale: [f64; 2],
    ratio: [f64; 2],
    rng: &mut R,
) -> CropBox {
    if width == 0 || height == 0 {
        return CropBox::full(width, height);
    }
    let area = f64::from(width) * f64::from(height);
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target_area = area * uniform(rng, scale[0], scale[1]);
        let aspect = uniform(rng, lr0, lr1).exp();
        let w = round_half_even((target_area * aspect).sqrt());
        let h = round_half_even((target_area / aspect).sqrt());
        if w > 0.0 && w <= f64::from(width) && h > 0.0 && h <= f64::from(height) {
            let (w, h) = (w as u32, h as u32);
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return CropBox {
                left,
                top,
                width: w,
                height: h,
            };
        }
    }
    center_crop_fallback(width, height, ratio)
}

/// torchvision's fallback after 10 failed tries: the largest centred box whose aspect is the
/// image's clamped to `[ratio0, ratio1]` (sizes rounded half-to-even, clamped to `1..=side` so
/// extreme ratios still give a valid box). `width`, `height` must be > 0.
pub fn center_crop_fallback(width: u32, height: u32, ratio: [f64; 2]) -> CropBox {
    let (wf, hf) = (f64::from(width), f64::from(height));
    let in_ratio = wf / hf;
    let (rmin, rmax) = (ratio[0].min(ratio[1]), ratio[0].max(ratio[1]));
    let (w, h) = if in_ratio < rmin {
        (width, clamp_side(round_half_even(wf / rmin), height))
    } else if in_ratio > rmax {
        (clamp_side(round_half_even(hf * rmax), width), height)
    } else {
        (width, height)
    };
    CropBox {
        left: (width - w) / 2,
        top: (height - h) / 2,
        width: w,
        height: h,
    }
}

fn clamp_side(v: f64, max: u32) -> u32 {
    if v.is_nan() || v < 1.0 {
        1
    } else if v >= f64::from(max) {
        max
    } else {
        v as u32
    }
}

/// `torch.empty(1).uniform_(a, b)`: `a + (b - a)·U[0, 1)`.
pub(crate) fn uniform<R: Rng + ?Sized>(rng: &mut R, a: f64, b: f64) -> f64 {
    a + (b - a) * rng.random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn python_round_semantics() {
        for (x, want) in [
            (0.5, 0.0),
            (1.5, 2.0),
            (2.5, 2.0),
            (-0.5, 0.0),
            (2.4, 2.0),
            (2.6, 3.0),
        ] {
            assert_eq!(round_half_even(x), want, "round({x})");
        }
    }

    #[test]
    fn degenerate_shapes_give_valid_boxes() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (w, h) in [(1, 1), (900, 100), (1, 13), (13, 1), (2, 1), (5000, 3)] {
            for _ in 0..200 {
                for scale in [[0.05, 0.4], [0.4, 1.0]] {
                    let b = sample_resized_crop(w, h, scale, [0.75, 4.0 / 3.0], &mut rng);
                    assert!(b.fits(w, h), "{b:?} in {w}x{h}");
                }
            }
        }
        // Extreme ratio ranges still fit.
        assert!(center_crop_fallback(3, 3, [10.0, 20.0]).fits(3, 3));
        assert!(center_crop_fallback(3, 3, [0.01, 0.02]).fits(3, 3));
        assert_eq!(
            sample_resized_crop(0, 5, [0.1, 1.0], [0.75, 1.3], &mut rng).width,
            0
        );
    }

    #[test]
    fn fallback_matches_torchvision() {
        // 900x100: in_ratio 9 > 4/3 -> h = 100, w = round(133.33) = 133, centred.
        assert_eq!(
            center_crop_fallback(900, 100, [0.75, 4.0 / 3.0]),
            CropBox {
                left: 383,
                top: 0,
                width: 133,
                height: 100
            }
        );
        // 10x100: in_ratio 0.1 < 3/4 -> w = 10, h = round(13.33) = 13.
        assert_eq!(
            center_crop_fallback(10, 100, [0.75, 4.0 / 3.0]),
            CropBox {
                left: 0,
                top: 43,
                width: 10,
                height: 13
            }
        );
    }
}
