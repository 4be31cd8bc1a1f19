//! Colour ops of DINO's augmentation with Pillow's arithmetic (torchvision 0.28
//! `transforms/_functional_pil.py` + Pillow `ImageEnhance`, `Image.blend`, `convert`).
//!
//! - brightness/contrast/saturation are `ImageEnhance` enhancers: `Image.blend(degenerate, img,
//!   factor)` computed in C `float` as `d + factor·(x − d)`, truncated to u8 (clipped first
//!   when `factor` is outside [0, 1]) — Pillow `libImaging/Blend.c`;
//! - hue shifts H in Pillow's 8-bit HSV with uint8 wrap-around (`libImaging/Convert.c`
//!   `rgb2hsv_row` / `hsv2rgb`, float/double mix reproduced exactly);
//! - grayscale is `convert("L")`: fixed-point ITU-R 601-2 luma.

use super::crop::uniform;
use dino_config::AugmentationConfig;
use rand::Rng;

/// One of the four ColorJitter ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitterOp {
    /// [`adjust_brightness`].
    Brightness,
    /// [`adjust_contrast`].
    Contrast,
    /// [`adjust_saturation`].
    Saturation,
    /// [`adjust_hue`].
    Hue,
}

/// Sampled ColorJitter parameters: the op order and each factor (`None` = op disabled
/// because its strength is 0, as torchvision).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorJitterParams {
    /// Application order (a uniform random permutation).
    pub order: [JitterOp; 4],
    /// Brightness factor in `[max(0, 1 − b), 1 + b]`.
    pub brightness: Option<f64>,
    /// Contrast factor in `[max(0, 1 − c), 1 + c]`.
    pub contrast: Option<f64>,
    /// Saturation factor in `[max(0, 1 − s), 1 + s]`.
    pub saturation: Option<f64>,
    /// Hue shift in turns, in `[−h, h]`.
    pub hue: Option<f64>,
}

/// `ColorJitter.get_params` of torchvision: a random permutation of the 4 ops, then one
/// uniform factor per enabled op (brightness, contrast, saturation, hue, in that draw order).
pub fn sample_jitter<R: Rng + ?Sized>(cfg: &AugmentationConfig, rng: &mut R) -> ColorJitterParams {
    let mut order = [
        JitterOp::Brightness,
        JitterOp::Contrast,
        JitterOp::Saturation,
        JitterOp::Hue,
    ];
    for i in (1..4).rev() {
        let j = rng.random_range(0..=i);
        order.swap(i, j);
    }
    let mut factor = |s: f64| (s > 0.0).then(|| uniform(rng, (1.0 - s).max(0.0), 1.0 + s));
    let brightness = factor(cfg.brightness);
    let contrast = factor(cfg.contrast);
    let saturation = factor(cfg.saturation);
    let hue = (cfg.hue > 0.0).then(|| uniform(rng, -cfg.hue, cfg.hue));
    ColorJitterParams {
        order,
        brightness,
        contrast,
        saturation,
        hue,
    }
}

/// Applies the ops of `p` in its order (torchvision `ColorJitter.forward`).
pub fn apply_jitter(img: &mut [u8], p: &ColorJitterParams) {
    for op in p.order {
        match op {
            JitterOp::Brightness => p.brightness.map(|f| adjust_brightness(img, f)),
            JitterOp::Contrast => p.contrast.map(|f| adjust_contrast(img, f)),
            JitterOp::Saturation => p.saturation.map(|f| adjust_saturation(img, f)),
            JitterOp::Hue => p.hue.map(|f| adjust_hue(img, f)),
        };
    }
}

/// Pillow `convert("L")` of one pixel: `(19595 R + 38470 G + 7471 B + 2^15) >> 16`.
#[inline]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

/// `Image.blend(d, x, alpha)` for one value, in C float arithmetic (Pillow `Blend.c`). Rust's
/// saturating float-to-u8 cast is exactly Pillow's clip-then-truncate (and plain truncation
/// when `alpha` is in [0, 1], where the value cannot leave [0, 255]).
#[inline(always)]
fn blend_one(d: u8, x: u8, alpha: f32) -> u8 {
    (f32::from(d) + alpha * (i32::from(x) - i32::from(d)) as f32) as u8
}

fn blend_lut(d: u8, alpha: f32) -> [u8; 256] {
    let mut lut = [0u8; 256];
    for (x, o) in lut.iter_mut().enumerate() {
        *o = blend_one(d, x as u8, alpha);
    }
    lut
}

/// `ImageEnhance.Brightness(img).enhance(factor)`: blend with black. `img` is packed RGB8.
pub fn adjust_brightness(img: &mut [u8], factor: f64) {
    let lut = blend_lut(0, factor as f32);
    img.iter_mut().for_each(|v| *v = lut[*v as usize]);
}

/// `ImageEnhance.Contrast(img).enhance(factor)`: blend with a constant image equal to
/// `int(mean(L) + 0.5)`, the rounded mean luma. `img` is packed RGB8.
pub fn adjust_contrast(img: &mut [u8], factor: f64) {
    let n = img.len() / 3;
    if n == 0 {
        return;
    }
    let sum: u64 = img
        .chunks_exact(3)
        .map(|p| u64::from(luma(p[0], p[1], p[2])))
        .sum();
    let mean = (sum as f64 / n as f64 + 0.5) as u8;
    let lut = blend_lut(mean, factor as f32);
    img.iter_mut().for_each(|v| *v = lut[*v as usize]);
}

/// `ImageEnhance.Color(img).enhance(factor)`: blend each pixel with its luma (the image
/// converted to L and back to RGB). `img` is packed RGB8.
pub fn adjust_saturation(img: &mut [u8], factor: f64) {
    let alpha = factor as f32;
    for px in img.chunks_exact_mut(3) {
        let d = luma(px[0], px[1], px[2]);
        for c in px.iter_mut() {
            *c = blend_one(d, *c, alpha);
        }
    }
}

/// Pillow `rgb2hsv_row`: 8-bit (H, S, V); float/double steps as in the C source.
fn rgb_to_hsv_exact(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if maxc == minc {
        return (0, 0, maxc);
    }
    let cr = f32::from(maxc - minc);
    let s = cr / f32::from(maxc);
    let rc = f32::from(maxc - r) / cr;
    let gc = f32::from(maxc - g) / cr;
    let bc = f32::from(maxc - b) / cr;
    let h: f32 = if r == maxc {
        bc - gc
    } else if g == maxc {
        (2.0 + f64::from(rc) - f64::from(bc)) as f32
    } else {
        (4.0 + f64::from(gc) - f64::from(rc)) as f32
    };
    // fmod(h/6 + 1, 1) for an argument in [5/6, 11/6]: subtracting 1 is exact there.
    let x = f64::from(h) / 6.0 + 1.0;
    let h = (if x >= 1.0 { x - 1.0 } else { x }) as f32;
    let uh = ((f64::from(h) * 255.0) as i32).clamp(0, 255) as u8;
    let us = ((f64::from(s) * 255.0) as i32).clamp(0, 255) as u8;
    (uh, us, maxc)
}

/// [`rgb_to_hsv_exact`] results tabulated: H depends only on which channel is the maximum
/// (Pillow's r, g, b precedence) and the other two channels' distances to it; S on
/// (max − min, max). Built once per process (4 × 64 Ki entries) from the exact function.
struct HsvTables {
    /// `[case][d1][d2]`: case 0 = R max (d1 = max−G, d2 = max−B), 1 = G max (max−R, max−B),
    /// 2 = B max (max−G, max−R).
    hue: Vec<u8>,
    /// `[max − min][max]`.
    sat: Vec<u8>,
}

fn hsv_tables() -> &'static HsvTables {
    static T: std::sync::OnceLock<HsvTables> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut hue = vec![0u8; 3 << 16];
        let mut sat = vec![0u8; 1 << 16];
        for d1 in 0..256usize {
            for d2 in 0..256usize {
                let (a, b) = (255 - d1 as u8, 255 - d2 as u8);
                let i = (d1 << 8) | d2;
                hue[i] = rgb_to_hsv_exact(255, a, b).0;
                // G max requires R < G (R ties go to the R case), B max requires R, G < B.
                hue[(1 << 16) | i] = if d1 > 0 {
                    rgb_to_hsv_exact(a, 255, b).0
                } else {
                    0
                };
                hue[(2 << 16) | i] = if d1 > 0 && d2 > 0 {
                    rgb_to_hsv_exact(b, a, 255).0
                } else {
                    0
                };
            }
        }
        for cr in 0..256usize {
            for mx in cr.max(1)..256usize {
                sat[(cr << 8) | mx] =
                    rgb_to_hsv_exact(mx as u8, (mx - cr) as u8, (mx - cr) as u8).1;
            }
        }
        HsvTables { hue, sat }
    })
}

/// Pillow `rgb2hsv_row` for one pixel, via [`HsvTables`].
#[inline(always)]
fn rgb_to_hsv(r: u8, g: u8, b: u8, t: &HsvTables) -> (u8, u8, u8) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if maxc == minc {
        return (0, 0, maxc);
    }
    let (case, d1, d2) = if r == maxc {
        (0usize, maxc - g, maxc - b)
    } else if g == maxc {
        (1, maxc - r, maxc - b)
    } else {
        (2, maxc - g, maxc - r)
    };
    let h = t.hue[(case << 16) | (usize::from(d1) << 8) | usize::from(d2)];
    let s = t.sat[(usize::from(maxc - minc) << 8) | usize::from(maxc)];
    (h, s, maxc)
}

/// Per-H constants of Pillow's `hsv2rgb`: sector `i` and remainder `f` (float).
struct HueTables {
    sector: [u8; 256],
    frac: [f32; 256],
    fs: [f32; 256],
}

fn hue_tables() -> &'static HueTables {
    static T: std::sync::OnceLock<HueTables> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut t = HueTables {
            sector: [0; 256],
            frac: [0.0; 256],
            fs: [0.0; 256],
        };
        for v in 0..256usize {
            let hd = f64::from(v as f32) * 6.0 / 255.0;
            let i = hd.floor() as i32;
            t.sector[v] = (i % 6) as u8;
            t.frac[v] = (hd - f64::from(i as f32)) as f32;
            t.fs[v] = (f64::from(v as f32) / 255.0) as f32;
        }
        t
    })
}

/// Pillow `hsv2rgb` for one pixel.
#[inline]
fn hsv_to_rgb(h: u8, s: u8, v: u8, t: &HueTables) -> [u8; 3] {
    if s == 0 {
        return [v, v, v];
    }
    let f = t.frac[h as usize];
    let fs = t.fs[s as usize];
    let vf = f64::from(v);
    // C `round` (half away from zero) of a value in [0, 255], without a libm call.
    let c8 = |x: f64| {
        let i = x as i32;
        (if x - f64::from(i) >= 0.5 { i + 1 } else { i }).clamp(0, 255) as u8
    };
    let p = c8(vf * (1.0 - f64::from(fs)));
    let q = c8(vf * (1.0 - f64::from(fs * f)));
    let tt = c8(vf * (1.0 - f64::from(fs) * (1.0 - f64::from(f))));
    match t.sector[h as usize] {
        0 => [v, tt, p],
        1 => [q, v, p],
        2 => [p, v, tt],
        3 => [p, q, v],
        4 => [tt, p, v],
        _ => [v, p, q],
    }
}

/// torchvision `F_pil.adjust_hue`: convert to PIL HSV, add `uint8(int32(hue_factor·255))` to H
/// with wrap-around, convert back. `hue_factor` is in turns (torchvision requires
/// [−0.5, 0.5]; other values wrap the same way). `img` is packed RGB8.
pub fn adjust_hue(img: &mut [u8], hue_factor: f64) {
    let shift = (hue_factor * 255.0) as i32 as u8;
    let t = hue_tables();
    let ht = hsv_tables();
    for px in img.chunks_exact_mut(3) {
        let (h, s, v) = rgb_to_hsv(px[0], px[1], px[2], ht);
        px.copy_from_slice(&hsv_to_rgb(h.wrapping_add(shift), s, v, t));
    }
}

/// torchvision `F_pil.to_grayscale(img, 3)`: Pillow luma replicated to the 3 channels.
pub fn to_grayscale(img: &mut [u8]) {
    for px in img.chunks_exact_mut(3) {
        let l = luma(px[0], px[1], px[2]);
        px.fill(l);
    }
}

/// Pillow `ImageOps.solarize(img, threshold)`: values `>= threshold` become `255 − v`
/// (DINO `utils.Solarization` uses the default 128).
pub fn solarize(img: &mut [u8], threshold: u8) {
    img.iter_mut().for_each(|v| {
        if *v >= threshold {
            *v = 255 - *v
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_matches_pillow_constants() {
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(255, 0, 0), 76); // 0.299·255 = 76.2
        assert_eq!(luma(0, 255, 0), 150); // 0.587·255 = 149.7
        assert_eq!(luma(0, 0, 255), 29); // 0.114·255 = 29.1
    }

    #[test]
    fn hsv_roundtrip_is_close_and_grey_is_fixed() {
        let t = hue_tables();
        for &(r, g, b) in &[
            (10u8, 200u8, 30u8),
            (255, 0, 0),
            (0, 0, 255),
            (90, 90, 90),
            (1, 2, 3),
        ] {
            let (h, s, v) = rgb_to_hsv(r, g, b, hsv_tables());
            let back = hsv_to_rgb(h, s, v, t);
            for (a, b) in back.iter().zip([r, g, b]) {
                assert!(
                    (i32::from(*a) - i32::from(b)).abs() <= 3,
                    "{r},{g},{b} -> {back:?}"
                );
            }
        }
    }

    #[test]
    fn hsv_tables_equal_the_exact_conversion() {
        let t = hsv_tables();
        for r in (0..256).step_by(3) {
            for g in (0..256).step_by(5) {
                for b in 0..256 {
                    let (r, g, b) = (r as u8, g as u8, b as u8);
                    assert_eq!(
                        rgb_to_hsv(r, g, b, t),
                        rgb_to_hsv_exact(r, g, b),
                        "{r},{g},{b}"
                    );
                }
            }
        }
    }

    #[test]
    fn blend_truncates_and_clips() {
        assert_eq!(blend_one(0, 101, 0.5), 50);
        assert_eq!(blend_one(0, 200, 1.4), 255);
        assert_eq!(blend_one(100, 0, 1.4), 0);
    }
}
