//! Pillow's `ImageFilter.GaussianBlur(radius=sigma)` (DINO `utils.GaussianBlur`): not a sampled
//! Gaussian kernel but Pillow's extended box blur (Gwosdek et al. 2011), 3 horizontal passes then
//! 3 vertical passes, each rounded to u8 (Pillow `libImaging/BoxBlur.c`).
//!
//! One pass with float box radius `r = l + a` (`l` integer part): every output is
//! `(ww·Σ_{|k|<=l} x[i+k] + fw·(x[i−l−1] + x[i+l+1]) + 2^23) >> 24` with indices clamped to the
//! edge, `ww = floor(2^24 / (2r + 1))` and `fw = (2^24 − (2l + 1)·ww) / 2`. We keep running sums
//! so a pass costs O(pixels) whatever sigma is; the vertical passes run over whole rows at once
//! (vectorisable) instead of transposing the image as Pillow does (same arithmetic).

/// Reusable buffers for [`gaussian_blur_with`].
#[derive(Debug, Default, Clone)]
pub struct BlurScratch {
    tmp: Vec<u8>,
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
    scratch.acc.resize(3 * w, 0);
    let tmp = &mut scratch.tmp[..];
    for _ in 0..3 {
        for (src, dst) in img.chunks_exact(3 * w).zip(tmp.chunks_exact_mut(3 * w)) {
            horizontal_line(src, dst, r, ww, fw);
        }
        img.copy_from_slice(tmp);
    }
    for pass in 0..3 {
        // Ping-pong: img -> tmp -> img -> tmp, then copy back.
        if pass % 2 == 0 {
            vertical(img, tmp, w, h, r, ww, fw, &mut scratch.acc);
        } else {
            vertical(tmp, img, w, h, r, ww, fw, &mut scratch.acc);
        }
    }
    img.copy_from_slice(tmp);
}

#[inline(always)]
fn save(bulk: u32) -> u8 {
    (bulk.wrapping_add(1 << 23) >> 24) as u8
}

/// One horizontal pass over one RGB row (clamped edges).
fn horizontal_line(src: &[u8], dst: &mut [u8], r: usize, ww: u32, fw: u32) {
    let n = src.len() / 3;
    let last = n - 1;
    let at = |i: isize, c: usize| -> u32 {
        let i = i.clamp(0, last as isize) as usize;
        u32::from(src[3 * i + c])
    };
    let ri = r as isize;
    let mut acc = [0u32; 3];
    for (c, a) in acc.iter_mut().enumerate() {
        for k in (-ri - 1)..ri {
            *a += at(k, c);
        }
    }
    // Interior positions need no clamping: [x-r-1, x+r+1] inside [0, last].
    let lo = (r + 1).min(n);
    let hi = n.saturating_sub(r + 1).max(lo);
    let mut x = 0usize;
    while x < lo {
        step_clamped(&mut acc, x as isize, ri, &at, dst, ww, fw);
        x += 1;
    }
    while x < hi {
        let (sub, add, far) = (3 * (x - r - 1), 3 * (x + r), 3 * (x + r + 1));
        for c in 0..3 {
            acc[c] = acc[c]
                .wrapping_add(u32::from(src[add + c]))
                .wrapping_sub(u32::from(src[sub + c]));
            let bulk = acc[c]
                .wrapping_mul(ww)
                .wrapping_add((u32::from(src[sub + c]) + u32::from(src[far + c])) * fw);
            dst[3 * x + c] = save(bulk);
        }
        x += 1;
    }
    while x < n {
        step_clamped(&mut acc, x as isize, ri, &at, dst, ww, fw);
        x += 1;
    }
}

#[inline(always)]
fn step_clamped(
    acc: &mut [u32; 3],
    x: isize,
    r: isize,
    at: &impl Fn(isize, usize) -> u32,
    dst: &mut [u8],
    ww: u32,
    fw: u32,
) {
    for c in 0..3 {
        acc[c] = acc[c]
            .wrapping_add(at(x + r, c))
            .wrapping_sub(at(x - r - 1, c));
        let bulk = acc[c]
            .wrapping_mul(ww)
            .wrapping_add((at(x - r - 1, c) + at(x + r + 1, c)) * fw);
        dst[3 * x as usize + c] = save(bulk);
    }
}

/// One vertical pass from `src` to `dst`, all columns at once with a row of running sums.
#[allow(clippy::too_many_arguments)]
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
    let row_len = 3 * w;
    let last = h as isize - 1;
    let row = |y: isize| -> &[u8] {
        let y = y.clamp(0, last) as usize;
        &src[y * row_len..(y + 1) * row_len]
    };
    let ri = r as isize;
    acc.fill(0);
    for k in (-ri - 1)..ri {
        for (a, &v) in acc.iter_mut().zip(row(k)) {
            *a += u32::from(v);
        }
    }
    for (y, out) in dst.chunks_exact_mut(row_len).enumerate() {
        let y = y as isize;
        let (sub, add, far) = (row(y - ri - 1), row(y + ri), row(y + ri + 1));
        for ((((a, o), &s), &ad), &f) in acc
            .iter_mut()
            .zip(out.iter_mut())
            .zip(sub)
            .zip(add)
            .zip(far)
        {
            *a = a.wrapping_add(u32::from(ad)).wrapping_sub(u32::from(s));
            let bulk = a
                .wrapping_mul(ww)
                .wrapping_add((u32::from(s) + u32::from(f)) * fw);
            *o = save(bulk);
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
