//! The strong edits of the copy-detection benchmark, after the "strong" set of Copydays
//! (Jégou et al. 2008; DINO paper Table 4): crops, rescales, blur, rotations, colour changes,
//! text and patch overlays; the JPEG re-compression at quality 10–50 is done when the copy is
//! saved ([`copydetect::generate`]). Every edit draws its parameters from the caller's
//! generator, so a copy depends on its seed alone.
//!
// Full paths: rustdoc resolves these from the parent module, as `mod` has an outer doc too.
//! [`copydetect::generate`]: crate::copydetect::generate

use crate::transforms::{blur, color};
use image::{imageops, RgbImage};
use rand::Rng;

/// One kind of edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// Keep a random 25–60 % of the area, aspect ratio 3/4–4/3.
    Crop,
    /// Downscale by a factor 0.25–0.6 (bilinear).
    Rescale,
    /// Gaussian blur, sigma 1.5–4 pixels of the image as it is at that step.
    Blur,
    /// Rotate by ±10–40 degrees about the centre (bilinear, black corners, same size).
    Rotate,
    /// Brightness 0.5–1.5, contrast 0.5–1.5, saturation 0–2 and hue ±0.3 (Pillow's
    /// `ImageEnhance`, as the augmentation); a quarter of the time grayscale instead.
    Colour,
    /// One or two random words of capitals and digits, glyphs 8–16 % of the height.
    Text,
    /// A rectangle of 10–25 % of the area pasted from another (distractor) photo.
    Patch,
}

/// Every edit, in the order the generator draws from.
pub const ALL: [Edit; 7] = [
    Edit::Crop,
    Edit::Rescale,
    Edit::Blur,
    Edit::Rotate,
    Edit::Colour,
    Edit::Text,
    Edit::Patch,
];

/// Applies `edit` to `img`, drawing its parameters from `rng`; `patch_source` is the photo a
/// [`Edit::Patch`] takes its rectangle from. Returns the edited image and a short record of the
/// parameters for the ground-truth file (e.g. `crop(0.42)`).
pub fn apply<R: Rng + ?Sized>(
    edit: Edit,
    img: RgbImage,
    rng: &mut R,
    patch_source: &RgbImage,
) -> (RgbImage, String) {
    match edit {
        Edit::Crop => crop(img, rng),
        Edit::Rescale => {
            let f = rng.random_range(0.25..0.6);
            let (w, h) = scaled(img.dimensions(), f);
            let out = imageops::resize(&img, w, h, imageops::FilterType::Triangle);
            (out, format!("rescale({f:.2})"))
        }
        Edit::Blur => {
            let sigma = rng.random_range(1.5..4.0);
            let (w, h) = img.dimensions();
            let mut raw = img.into_raw();
            blur::gaussian_blur(&mut raw, w, h, sigma);
            (from_raw(w, h, raw), format!("blur({sigma:.1})"))
        }
        Edit::Rotate => {
            let deg = rng.random_range(10.0..40.0) * if rng.random::<bool>() { 1.0 } else { -1.0 };
            (rotate(&img, deg), format!("rotate({deg:.0})"))
        }
        Edit::Colour => colour(img, rng),
        Edit::Text => text(img, rng),
        Edit::Patch => patch(img, rng, patch_source),
    }
}

fn from_raw(w: u32, h: u32, raw: Vec<u8>) -> RgbImage {
    RgbImage::from_raw(w, h, raw).expect("an edit keeps 3·w·h bytes")
}

/// `(w, h)` scaled by `f`, at least 1x1.
fn scaled((w, h): (u32, u32), f: f64) -> (u32, u32) {
    let s = |x: u32| ((f64::from(x) * f).round() as u32).max(1);
    (s(w), s(h))
}

fn crop<R: Rng + ?Sized>(img: RgbImage, rng: &mut R) -> (RgbImage, String) {
    let (w, h) = img.dimensions();
    let area: f64 = rng.random_range(0.25..0.6);
    let log_ratio = rng.random_range((0.75f64).ln()..(4.0f64 / 3.0).ln());
    let ratio = log_ratio.exp();
    let cw = ((f64::from(w) * (area * ratio).sqrt()).round() as u32).clamp(1, w);
    let ch = ((f64::from(h) * (area / ratio).sqrt()).round() as u32).clamp(1, h);
    let x = rng.random_range(0..=w - cw);
    let y = rng.random_range(0..=h - ch);
    let out = imageops::crop_imm(&img, x, y, cw, ch).to_image();
    (out, format!("crop({area:.2})"))
}

/// Rotation by `deg` degrees (counter-clockwise) about the centre, bilinear, outside black.
fn rotate(img: &RgbImage, deg: f64) -> RgbImage {
    let (w, h) = img.dimensions();
    let (s, c) = deg.to_radians().sin_cos();
    let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
    let mut out = RgbImage::new(w, h);
    for (ox, oy, px) in out.enumerate_pixels_mut() {
        // Inverse map the output pixel centre into the source.
        let (dx, dy) = (f64::from(ox) + 0.5 - cx, f64::from(oy) + 0.5 - cy);
        let sx = c * dx - s * dy + cx - 0.5;
        let sy = s * dx + c * dy + cy - 0.5;
        let (x0, y0) = (sx.floor(), sy.floor());
        let (fx, fy) = (sx - x0, sy - y0);
        let mut acc = [0.0f64; 3];
        for (xi, yi, wgt) in [
            (x0, y0, (1.0 - fx) * (1.0 - fy)),
            (x0 + 1.0, y0, fx * (1.0 - fy)),
            (x0, y0 + 1.0, (1.0 - fx) * fy),
            (x0 + 1.0, y0 + 1.0, fx * fy),
        ] {
            if xi >= 0.0 && yi >= 0.0 && xi < f64::from(w) && yi < f64::from(h) {
                let p = img.get_pixel(xi as u32, yi as u32).0;
                for k in 0..3 {
                    acc[k] += wgt * f64::from(p[k]);
                }
            }
        }
        px.0 = acc.map(|v| v.round().clamp(0.0, 255.0) as u8);
    }
    out
}

fn colour<R: Rng + ?Sized>(img: RgbImage, rng: &mut R) -> (RgbImage, String) {
    let (w, h) = img.dimensions();
    let mut raw = img.into_raw();
    if rng.random_range(0..4) == 0 {
        color::to_grayscale(&mut raw);
        return (from_raw(w, h, raw), "grayscale".into());
    }
    let b = rng.random_range(0.5..1.5);
    let c = rng.random_range(0.5..1.5);
    let s = rng.random_range(0.0..2.0);
    let hue = rng.random_range(-0.3..0.3);
    color::adjust_brightness(&mut raw, b);
    color::adjust_contrast(&mut raw, c);
    color::adjust_saturation(&mut raw, s);
    color::adjust_hue(&mut raw, hue);
    let note = format!("colour(b{b:.2} c{c:.2} s{s:.2} h{hue:.2})");
    (from_raw(w, h, raw), note)
}

fn text<R: Rng + ?Sized>(img: RgbImage, rng: &mut R) -> (RgbImage, String) {
    use super::font::{draw_text, CHARSET, GLYPH_H};
    let (w, h) = img.dimensions();
    let mut raw = img.into_raw();
    let lines = rng.random_range(1..=2);
    let mut words = Vec::new();
    for _ in 0..lines {
        let len = rng.random_range(4..=10);
        let word: Vec<u8> = (0..len)
            .map(|_| CHARSET[rng.random_range(0..CHARSET.len())])
            .collect();
        let frac = rng.random_range(0.08..0.16);
        let scale = ((f64::from(h) * frac / f64::from(GLYPH_H)).round() as u32).max(1);
        let color = [rng.random(), rng.random(), rng.random()];
        let x = rng.random_range(-(i64::from(w) / 4)..i64::from(w) * 3 / 4);
        let y = rng.random_range(0..i64::from(h).max(1));
        draw_text(&mut raw, (w, h), &word, (x, y), scale, color);
        words.push(String::from_utf8(word).expect("ASCII"));
    }
    (from_raw(w, h, raw), format!("text({})", words.join(" ")))
}

fn patch<R: Rng + ?Sized>(mut img: RgbImage, rng: &mut R, src: &RgbImage) -> (RgbImage, String) {
    let (w, h) = img.dimensions();
    let area: f64 = rng.random_range(0.10..0.25);
    let side = area.sqrt();
    let (pw, ph) = scaled((w, h), side);
    // The pasted rectangle is the whole source photo resized, so its content is not the
    // original's whatever the source's size.
    let piece = imageops::resize(src, pw, ph, imageops::FilterType::Triangle);
    let x = rng.random_range(0..=w - pw);
    let y = rng.random_range(0..=h - ph);
    imageops::replace(&mut img, &piece, i64::from(x), i64::from(y));
    (img, format!("patch({area:.2})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn photo(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]))
    }

    #[test]
    fn every_edit_changes_the_image_and_is_seeded() {
        let src = RgbImage::from_pixel(40, 30, image::Rgb([0, 255, 0]));
        for edit in ALL {
            let run = |seed| {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                apply(edit, photo(64, 48), &mut rng, &src)
            };
            let (a, note) = run(1);
            assert_eq!(run(1).0, a, "{edit:?} is not reproducible");
            assert!(!note.is_empty());
            assert!(a.width() >= 1 && a.height() >= 1);
            assert_ne!(a, photo(64, 48), "{edit:?} left the image as it was");
        }
    }

    #[test]
    fn rotation_by_zero_is_the_identity() {
        assert_eq!(rotate(&photo(9, 7), 0.0), photo(9, 7));
    }
}
