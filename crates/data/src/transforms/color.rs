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
use super::simd::avx2_dispatch;
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

/// `Image.blend(d, x, alpha)` for one value, in C float arithmetic (Pillow `Blend.c`):
/// `d + alpha·(x − d)` clipped to [0, 255] and truncated (Pillow clips only when `alpha` is
/// outside [0, 1], where the value cannot leave [0, 255] anyway). Written with an explicit clamp
/// and an unchecked conversion so that loops of it vectorise (Rust's saturating `as` does not).
#[inline(always)]
fn blend_one(d: u8, x: u8, alpha: f32) -> u8 {
    let y = f32::from(d) + alpha * f32::from(i16::from(x) - i16::from(d));
    // Not `clamp`, which passes NaN through: `max` returns 0 for NaN, so `y` is finite and in
    // [0, 255] here.
    #[allow(clippy::manual_clamp)]
    let y = y.max(0.0).min(255.0);
    // SAFETY: `y` is finite and in [0, 255], representable in `i32` after truncation.
    unsafe { y.to_int_unchecked::<i32>() as u8 }
}

/// `img[i] = blend(d, img[i], alpha)` for every value.
#[inline(always)]
fn blend_const_impl(img: &mut [u8], d: u8, alpha: f32) {
    img.iter_mut().for_each(|v| *v = blend_one(d, *v, alpha));
}

avx2_dispatch! {
    fn blend_const(img: &mut [u8], d: u8, alpha: f32) = blend_const_impl;
}

/// `ImageEnhance.Brightness(img).enhance(factor)`: blend with black. `img` is packed RGB8.
pub fn adjust_brightness(img: &mut [u8], factor: f64) {
    blend_const(img, 0, factor as f32);
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
    blend_const(img, mean, factor as f32);
}

/// Pixels per block of [`adjust_saturation`].
const SAT_BLOCK: usize = 64;

/// Saturation in blocks: each pixel's luma repeated for its 3 values, then one blend loop over
/// the block's values (vectorises; a loop per pixel does not).
#[inline(always)]
fn saturation_impl(img: &mut [u8], alpha: f32) {
    for block in img.chunks_mut(3 * SAT_BLOCK) {
        let mut d = [0u8; 3 * SAT_BLOCK];
        for (px, dk) in block.chunks_exact(3).zip(d.chunks_exact_mut(3)) {
            dk.fill(luma(px[0], px[1], px[2]));
        }
        for (x, &dk) in block.iter_mut().zip(&d) {
            *x = blend_one(dk, *x, alpha);
        }
    }
}

avx2_dispatch! {
    fn saturation(img: &mut [u8], alpha: f32) = saturation_impl;
}

/// `ImageEnhance.Color(img).enhance(factor)`: blend each pixel with its luma (the image
/// converted to L and back to RGB). `img` is packed RGB8.
pub fn adjust_saturation(img: &mut [u8], factor: f64) {
    saturation(img, factor as f32);
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

/// Pillow `rgb2hsv_row` for one pixel, via [`HsvTables`]. Branch-free (selects, no jumps):
/// which channel is the maximum is data-dependent and mispredicted branches dominated the cost.
/// Grey pixels need no special case: index 0 of both tables holds Pillow's (0, 0).
#[inline(always)]
fn rgb_to_hsv(r: u8, g: u8, b: u8, t: &HsvTables) -> (u8, u8, u8) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let case = if r == maxc {
        0
    } else if g == maxc {
        1
    } else {
        2
    };
    let d1 = if case == 1 { maxc - r } else { maxc - g };
    let d2 = if case == 2 { maxc - r } else { maxc - b };
    let h = t.hue[(case << 16) | (usize::from(d1) << 8) | usize::from(d2)];
    let s = t.sat[(usize::from(maxc - minc) << 8) | usize::from(maxc)];
    (h, s, maxc)
}

/// One of Pillow `hsv2rgb`'s rounded products `round(v·(1 − k/255²))`, where `k` is
/// `255·s` for p, `s·fr` for q and `s·(255 − fr)` for t, with `fr = 6h mod 255` (so that
/// Pillow's `f = fr/255` and `fs = s/255`). `v·(255² − k) < 2^24` is exact in `f32`, and
/// adding 2^23 rounds to an integer in the low mantissa bits (a float-to-int conversion that
/// vectorises, unlike Rust's saturating `as`). The exhaustive test
/// `f32_products_equal_pillow_everywhere` shows this equals Pillow's float/double expression
/// for all 2^24 (h, s, v): bit-exact.
#[inline(always)]
fn hsv_product(v: f32, k: f32) -> u8 {
    const ROUND: f32 = 8_388_608.0; // 2^23
    ((v * (65025.0 - k) * (1.0 / 65025.0) + ROUND).to_bits() & 0xFF) as u8
}

/// Pillow `hsv2rgb`'s sector `i = floor(6h/255) mod 6` and `fr = 6h mod 255` (h = 255 gives
/// i = 6 → 0 and fr = 0, as in Pillow).
#[inline(always)]
fn hue_sector(h: u8) -> (u8, u16) {
    let h6 = 6 * u16::from(h);
    let i = h6 / 255;
    let fr = h6 - 255 * i;
    ((i % 6) as u8, fr)
}

/// Pillow `hsv2rgb`'s choice of output by sector, as selects (vectorisable; a `match` here
/// compiles to a jump table): 0 (v,t,p) 1 (q,v,p) 2 (p,v,t) 3 (p,q,v) 4 (t,p,v) 5 (v,p,q).
/// `s == 0` needs no case of its own: it makes p = q = t = v.
#[inline(always)]
fn sector_select(sector: u8, v: u8, p: u8, q: u8, t: u8) -> [u8; 3] {
    let pick = |is_v: bool, is_q: bool, is_t: bool| {
        let x = if is_t { t } else { p };
        let x = if is_q { q } else { x };
        if is_v {
            v
        } else {
            x
        }
    };
    let r = pick(sector == 0 || sector == 5, sector == 1, sector == 4);
    let g = pick(sector == 1 || sector == 2, sector == 3, sector == 0);
    let b = pick(sector == 3 || sector == 4, sector == 5, sector == 2);
    [r, g, b]
}

/// Pillow `hsv2rgb` for one pixel.
#[inline(always)]
fn hsv_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    let (sector, fr) = hue_sector(h);
    let (sf, vf, frf) = (f32::from(s), f32::from(v), f32::from(fr));
    let p = hsv_product(vf, 255.0 * sf);
    let q = hsv_product(vf, sf * frf);
    let t = hsv_product(vf, sf * (255.0 - frf));
    sector_select(sector, v, p, q, t)
}

/// Pixels per block of [`adjust_hue`]: small enough for stack arrays in L1.
const HUE_BLOCK: usize = 64;

/// torchvision `F_pil.adjust_hue`: convert to PIL HSV, add `uint8(int32(hue_factor·255))` to H
/// with wrap-around, convert back. `hue_factor` is in turns (torchvision requires
/// [−0.5, 0.5]; other values wrap the same way). `img` is packed RGB8. Bit-exact with Pillow.
///
/// Works in blocks of pixels in two stages so that the arithmetic vectorises: RGB→HSV table
/// look-ups into small planar arrays (scalar), then HSV→RGB over those arrays (branch-free).
pub fn adjust_hue(img: &mut [u8], hue_factor: f64) {
    let shift = (hue_factor * 255.0) as i32 as u8;
    let ht = hsv_tables();
    hue_blocks(img, shift, ht);
}

avx2_dispatch! {
    fn hue_blocks(img: &mut [u8], shift: u8, ht: &HsvTables) = hue_blocks_impl;
}

#[inline(always)]
fn hue_blocks_impl(img: &mut [u8], shift: u8, ht: &HsvTables) {
    for block in img.chunks_mut(3 * HUE_BLOCK) {
        let (mut h, mut s, mut v) = ([0u8; HUE_BLOCK], [0u8; HUE_BLOCK], [0u8; HUE_BLOCK]);
        for (k, px) in block.chunks_exact(3).enumerate() {
            let (hk, sk, vk) = rgb_to_hsv(px[0], px[1], px[2], ht);
            (h[k], s[k], v[k]) = (hk.wrapping_add(shift), sk, vk);
        }
        let (mut r, mut g, mut b) = ([0u8; HUE_BLOCK], [0u8; HUE_BLOCK], [0u8; HUE_BLOCK]);
        for k in 0..HUE_BLOCK {
            [r[k], g[k], b[k]] = hsv_to_rgb(h[k], s[k], v[k]);
        }
        for (k, px) in block.chunks_exact_mut(3).enumerate() {
            let out = [r[k], g[k], b[k]];
            px.copy_from_slice(&out);
        }
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
        for &(r, g, b) in &[
            (10u8, 200u8, 30u8),
            (255, 0, 0),
            (0, 0, 255),
            (90, 90, 90),
            (1, 2, 3),
        ] {
            let (h, s, v) = rgb_to_hsv(r, g, b, hsv_tables());
            let back = hsv_to_rgb(h, s, v);
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

    /// Pillow `hsv2rgb` transcribed literally (branches, `s == 0` case, switch on `i % 6`).
    fn hsv_to_rgb_literal(h: u8, s: u8, v: u8) -> [u8; 3] {
        if s == 0 {
            return [v, v, v];
        }
        let hd = f64::from(h) * 6.0 / 255.0;
        let i = hd.floor() as i32;
        let f = (hd - f64::from(i as f32)) as f32;
        let fs = (f64::from(s) / 255.0) as f32;
        let vf = f64::from(v);
        let c = |x: f64| x.round().clamp(0.0, 255.0) as u8;
        let p = c(vf * (1.0 - f64::from(fs)));
        let q = c(vf * (1.0 - f64::from(fs * f)));
        let t = c(vf * (1.0 - f64::from(fs) * (1.0 - f64::from(f))));
        match i % 6 {
            0 => [v, t, p],
            1 => [q, v, p],
            2 => [p, v, t],
            3 => [p, q, v],
            4 => [t, p, v],
            _ => [v, p, q],
        }
    }

    #[test]
    fn f32_products_equal_pillow_everywhere() {
        for h in 0..=255u8 {
            for s in 0..=255u8 {
                for v in 0..=255u8 {
                    assert_eq!(
                        hsv_to_rgb(h, s, v),
                        hsv_to_rgb_literal(h, s, v),
                        "{h},{s},{v}"
                    );
                }
            }
        }
    }

    #[test]
    fn blocked_hue_equals_per_pixel_round_trip() {
        // 1000 pixels: several full blocks and a partial one.
        let img: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect();
        for factor in [-0.5, -0.11, 0.0, 0.07, 0.5] {
            let shift = (factor * 255.0) as i32 as u8;
            let mut got = img.clone();
            adjust_hue(&mut got, factor);
            for (px, out) in img.chunks_exact(3).zip(got.chunks_exact(3)) {
                let (h, s, v) = rgb_to_hsv_exact(px[0], px[1], px[2]);
                assert_eq!(
                    out,
                    hsv_to_rgb_literal(h.wrapping_add(shift), s, v),
                    "{px:?}"
                );
            }
        }
    }

    #[test]
    fn blend_equals_pillow_float_arithmetic() {
        // Pillow: `(UINT8)CLIP8(d + alpha * (x - d))` with the sum in C float; truncation.
        let pillow = |d: u8, x: u8, a: f32| {
            let y = f32::from(d) + a * (i32::from(x) - i32::from(d)) as f32;
            y as u8
        };
        for a in [f32::NAN, -0.5, 0.0f32, 0.13, 0.6, 0.999, 1.0, 1.37, 1.8] {
            for d in 0..=255u8 {
                let mut row: Vec<u8> = (0..=255u8).collect();
                blend_const(&mut row, d, a);
                for x in 0..=255u8 {
                    assert_eq!(blend_one(d, x, a), pillow(d, x, a), "{d} {x} {a}");
                    assert_eq!(row[usize::from(x)], pillow(d, x, a), "{d} {x} {a}");
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
