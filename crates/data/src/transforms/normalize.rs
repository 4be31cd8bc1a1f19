//! `ToTensor` + `Normalize(mean, std)` for CPU consumers (the trainer may instead ship u8 crops
//! to the GPU and normalise there).

use image::RgbImage;

/// Writes `img` as a normalised CHW `f32` tensor `[3, H, W]` into `out`:
/// `(v / 255 − mean[c]) / std[c]`, computed in `f32` like torchvision's `ToTensor` + `Normalize`.
/// `mean`/`std` are in [0, 1] units (ImageNet: (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225)).
///
/// # Panics
/// If `out.len() != 3·H·W` (a caller bug, like `copy_from_slice`).
pub fn normalize_chw_into(img: &RgbImage, mean: [f64; 3], std: [f64; 3], out: &mut [f32]) {
    let plane = img.width() as usize * img.height() as usize;
    assert_eq!(
        out.len(),
        3 * plane,
        "normalize_chw_into: out must hold 3*H*W values"
    );
    let lut = channel_luts(mean, std);
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        r[i] = lut[0][px[0] as usize];
        g[i] = lut[1][px[1] as usize];
        b[i] = lut[2][px[2] as usize];
    }
}

/// [`normalize_chw_into`] for crops that are already `u8` CHW, as the loader's batches hold
/// them: `src` is any number of `[3, H, W]` crops back to back (`[N, 3, H, W]` with
/// `plane = H·W`), `out` receives the same layout in `f32`, `(v / 255 − mean[c]) / std[c]`
/// in `f32`, bit for bit what torchvision's `ToTensor` + `Normalize` give for the same pixels.
/// Used by the Python wheel's `normalize=True`.
///
/// # Panics
/// If `plane` is 0, `src.len()` is not a multiple of `3·plane`, or `out.len() != src.len()`.
pub fn normalize_u8_chw_into(
    src: &[u8],
    plane: usize,
    mean: [f64; 3],
    std: [f64; 3],
    out: &mut [f32],
) {
    assert!(
        plane > 0 && src.len() % (3 * plane) == 0 && out.len() == src.len(),
        "normalize_u8_chw_into: src must be [N, 3, H, W] with H*W = plane, out the same length"
    );
    let lut = channel_luts(mean, std);
    let planes = src.chunks_exact(plane).zip(out.chunks_exact_mut(plane));
    for (k, (src, out)) in planes.enumerate() {
        let lut = &lut[k % 3];
        for (v, x) in src.iter().zip(out.iter_mut()) {
            *x = lut[*v as usize];
        }
    }
}

/// Per channel, the normalised `f32` of each of the 256 byte values.
fn channel_luts(mean: [f64; 3], std: [f64; 3]) -> [[f32; 256]; 3] {
    let mut lut = [[0f32; 256]; 3];
    for c in 0..3 {
        let (m, s) = (mean[c] as f32, std[c] as f32);
        for (v, o) in lut[c].iter_mut().enumerate() {
            *o = (v as f32 / 255.0 - m) / s;
        }
    }
    lut
}

#[cfg(test)]
mod tests {
    #[test]
    fn planes_and_values() {
        let img = image::RgbImage::from_raw(2, 1, vec![0, 128, 255, 255, 0, 0]).unwrap();
        let mut out = vec![0f32; 6];
        super::normalize_chw_into(&img, [0.5; 3], [0.5; 3], &mut out);
        assert_eq!(out[0], -1.0); // R of pixel 0
        assert_eq!(out[1], 1.0); // R of pixel 1
        assert!((out[2] - (128.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6); // G of pixel 0
        assert_eq!(out[5], -1.0); // B of pixel 1

        // The same pixels as u8 CHW (two crops back to back) give the same values.
        let mut chw = vec![0u8; 6];
        crate::batch::write_chw(&img, &mut chw);
        let two: Vec<u8> = chw.iter().chain(chw.iter()).copied().collect();
        let mut out2 = vec![0f32; 12];
        let (mean, std) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
        super::normalize_u8_chw_into(&two, 2, mean, std, &mut out2);
        super::normalize_chw_into(&img, mean, std, &mut out);
        assert_eq!(&out2[..6], &out[..]);
        assert_eq!(&out2[6..], &out[..]);
        // G of pixel 1 is 0: (0 / 255 - 0.456) / 0.224 in f32.
        assert_eq!(out2[3], (0.0f32 - 0.456f32) / 0.224f32);
    }
}
