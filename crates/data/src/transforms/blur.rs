//! Pillow's `ImageFilter.GaussianBlur(radius=sigma)` (DINO `utils.GaussianBlur`): not a sampled
//! Gaussian kernel but Pillow's extended box blur (Gwosdek et al. 2011), 3 horizontal passes then
//! 3 vertical passes, each rounded to u8 (Pillow `libImaging/BoxBlur.c`).
//!
//! One pass with float box radius `r = l + a` (`l` integer part): every output is
//! `(ww·Σ_{|k|<=l} x[i+k] + fw·(x[i−l−1] + x[i+l+1]) + 2^23) >> 24` with indices clamped to the
//! edge, `ww = floor(2^24 / (2r + 1))` and `fw = (2^24 − (2l + 1)·ww) / 2`. Running sums make a
//! pass O(pixels) whatever sigma is; every pass runs down whole rows at once (vectorisable), the
//! horizontal ones on the transposed image (same arithmetic as Pillow's per-line loop).
//! The passes are compiled a second time for AVX2 and picked at run time (`simd.rs`): the
//! baseline x86-64 target has no 32-bit integer multiply, which made them 2.4x slower.

use super::simd::avx2_dispatch;

/// Reusable buffers for [`gaussian_blur_with`].
#[derive(Debug, Default, Clone)]
pub struct BlurScratch {
    tmp: Vec<u8>,
    tmp2: Vec<u8>,
    acc: Vec<u32>,
}

/// Pillow `_gaussian_blur_radius(sigma, 3)`: the float box radius of each of the 3 passes,
/// computed in C `float` as Pillow does.
pub fn pillow_box_radius(sigma: f32) -> f32 {
    let passes = 3.0f32;
    let sigma2 = sigma * sigma / passes;
    let big_l = (12.0 * f64::from(sigma2) + 1.0).sqrt() as f32;
    let l = ((f64::from(big_l) - 1.0) / 2.0).floor() as f32;
    let mut a = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2);
    a /= 6.0 * (sigma2 - (l + 1.0) * (l + 1.0));
    l + a
}

/// Box weights of one pass: (integer radius, ww, fw), as `ImagingHorizontalBoxBlur`.
fn box_weights(radius: f32) -> (usize, u32, u32) {
    let r = radius as i32;
    let ww = ((1u32 << 24) as f32 / (radius * 2.0 + 1.0)) as u32;
    let fw = ((1u32 << 24) - (r as u32 * 2 + 1) * ww) / 2;
    (r as usize, ww, fw)
}

/// `img.filter(ImageFilter.GaussianBlur(radius=sigma))` on a packed RGB8 `width`x`height`
/// buffer, in place. `sigma` is Pillow's "radius" (a standard deviation in pixels); `sigma <= 0`
/// or non-finite leaves the image unchanged (Pillow returns a copy for 0).
pub fn gaussian_blur(img: &mut [u8], width: u32, height: u32, sigma: f64) {
    gaussian_blur_with(img, width, height, sigma, &mut BlurScratch::default());
}

/// [`gaussian_blur`] with caller-owned scratch buffers (no allocation once warmed up).
/// Does nothing if `img.len() != 3·width·height`.
pub fn gaussian_blur_with(
    img: &mut [u8],
    width: u32,
    height: u32,
    sigma: f64,
    scratch: &mut BlurScratch,
) {
    let (w, h) = (width as usize, height as usize);
    if !(sigma.is_finite() && sigma > 0.0) || w == 0 || h == 0 || img.len() != 3 * w * h {
        return;
    }
    let radius = pillow_box_radius(sigma as f32);
    if radius == 0.0 {
        return;
    }
    let (r, ww, fw) = box_weights(radius);
    scratch.tmp.resize(img.len(), 0);
    scratch.tmp2.resize(img.len(), 0);
    scratch.acc.resize(3 * w.max(h), 0);
    blur_passes(img, scratch, (w, h), (r, ww, fw));
}

avx2_dispatch! {
    /// The six box passes (see the module doc), result in `img`.
    fn blur_passes(
        img: &mut [u8],
        scratch: &mut BlurScratch,
        size: (usize, usize),
        weights: (usize, u32, u32),
    ) = blur_passes_impl;
}

#[inline(always)]
fn blur_passes_impl(
    img: &mut [u8],
    scratch: &mut BlurScratch,
    (w, h): (usize, usize),
    (r, ww, fw): (usize, u32, u32),
) {
    let BlurScratch { tmp, tmp2, acc } = scratch;
    // Horizontal passes = vertical passes on the transposed image (Pillow transposes too, for
    // the vertical ones); the vertical kernel runs over whole rows and vectorises.
    transpose(img, w, h, tmp);
    three_vertical_passes(tmp, tmp2, h, w, r, ww, fw, acc);
    transpose(tmp, h, w, img);
    three_vertical_passes(img, tmp, w, h, r, ww, fw, acc);
}

#[inline(always)]
/// Transposes a packed RGB8 `w`x`h` image into `dst` (`h`x`w`).
fn transpose(src: &[u8], w: usize, h: usize, dst: &mut [u8]) {
    const B: usize = 16;
    for y0 in (0..h).step_by(B) {
        for x0 in (0..w).step_by(B) {
            for y in y0..(y0 + B).min(h) {
                for x in x0..(x0 + B).min(w) {
                    let (s, d) = (3 * (y * w + x), 3 * (x * h + y));
                    dst[d..d + 3].copy_from_slice(&src[s..s + 3]);
                }
            }
        }
    }
}

/// Three vertical box passes; the result ends in `a` (`b` is scratch of the same size).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn three_vertical_passes(
    a: &mut [u8],
    b: &mut [u8],
    w: usize,
    h: usize,
    r: usize,
    ww: u32,
    fw: u32,
    acc: &mut [u32],
) {
    vertical(a, b, w, h, r, ww, fw, acc);
    vertical(b, a, w, h, r, ww, fw, acc);
    vertical(a, b, w, h, r, ww, fw, acc);
    a.copy_from_slice(b);
}

/// One vertical pass from `src` to `dst`, all columns at once with a row of running sums:
/// `out = (ww·Σ_{|k|<=r} x[y+k] + fw·(x[y−r−1] + x[y+r+1]) + 2^23) >> 24`, rows clamped.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn vertical(
    src: &[u8],
    dst: &mut [u8],
    w: usize,
    h: usize,
    r: usize,
    ww: u32,
    fw: u32,
    acc: &mut [u32],
) {
    let n = 3 * w;
    let last = h as isize - 1;
    let row = |y: isize| -> &[u8] {
        let y = y.clamp(0, last) as usize;
        &src[y * n..(y + 1) * n]
    };
    let ri = r as isize;
    let acc = &mut acc[..n];
    acc.fill(0);
    for k in (-ri - 1)..ri {
        for (a, &v) in acc.iter_mut().zip(row(k)) {
            *a += u32::from(v);
        }
    }
    for (y, out) in dst.chunks_exact_mut(n).enumerate().take(h) {
        let y = y as isize;
        let (sub, add, far) = (row(y - ri - 1), row(y + ri), row(y + ri + 1));
        let (sub, add, far, out) = (&sub[..n], &add[..n], &far[..n], &mut out[..n]);
        for i in 0..n {
            let s = u32::from(sub[i]);
            let a = acc[i].wrapping_add(u32::from(add[i])).wrapping_sub(s);
            acc[i] = a;
            let bulk = a
                .wrapping_mul(ww)
                .wrapping_add((s + u32::from(far[i])) * fw);
            out[i] = (bulk.wrapping_add(1 << 23) >> 24) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_is_unchanged() {
        for sigma in [0.1, 0.7, 2.0, 9.0] {
            let mut img = vec![77u8; 3 * 17 * 5];
            gaussian_blur(&mut img, 17, 5, sigma);
            assert!(img.iter().all(|&v| v == 77), "sigma {sigma}");
        }
    }

    #[test]
    fn radius_grows_with_sigma_and_blur_spreads_an_impulse() {
        assert!(pillow_box_radius(0.1) < pillow_box_radius(1.0));
        assert!(pillow_box_radius(1.0) < pillow_box_radius(2.0));
        let (w, h) = (9u32, 9u32);
        let mut img = vec![0u8; 3 * 81];
        img[3 * (4 * 9 + 4)] = 255;
        gaussian_blur(&mut img, w, h, 1.5);
        assert!(img[3 * (4 * 9 + 4)] < 255 && img[3 * (4 * 9 + 5)] > 0 && img[3 * (5 * 9 + 4)] > 0);
        assert_eq!(img[3 * (4 * 9 + 4) + 1], 0, "channels stay separate");
    }
}
