//! A generated video with exact masks, in the DAVIS layout, for trying and testing
//! `dino video segment`: elliptical cut-outs of photos (the objects) glide over another photo
//! (the background) along seeded straight paths that bounce off the frame's edges; object 2
//! passes over object 1. Every frame is annotated (the masks are exact by construction).

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::video::davis::{pascal_palette, write_index_png, DavisError, IndexMask};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    /// Sequence name (folder name in the layout).
    pub name: String,
    /// Frames.
    pub frames: usize,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Seed of the photo choice, object sizes and paths.
    pub seed: u64,
}

impl Default for SynthSpec {
    fn default() -> Self {
        Self {
            name: "synth".into(),
            frames: 24,
            width: 480,
            height: 360,
            seed: 0,
        }
    }
}

/// Errors of generating a sequence.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// Fewer than three photos to pick from, or a degenerate size.
    #[error("{0}")]
    Input(String),
    /// A photo could not be read.
    #[error(transparent)]
    Decode(#[from] dino_data::error::DataError),
    /// A photo could not be resized.
    #[error(transparent)]
    Transform(#[from] dino_data::transforms::TransformError),
    /// Writing the layout failed.
    #[error(transparent)]
    Davis(#[from] DavisError),
    /// A frame could not be encoded.
    #[error("{}", .path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: image::ImageError,
    },
}

/// One moving elliptical cut-out.
struct Sprite {
    texture: RgbImage,
    rx: f64,
    ry: f64,
    pos: (f64, f64),
    vel: (f64, f64),
}

impl Sprite {
    fn contains(&self, x: f64, y: f64) -> Option<(u32, u32)> {
        let (dx, dy) = ((x - self.pos.0) / self.rx, (y - self.pos.1) / self.ry);
        if dx * dx + dy * dy > 1.0 {
            return None;
        }
        let tx = ((dx + 1.0) / 2.0 * f64::from(self.texture.width() - 1)).round() as u32;
        let ty = ((dy + 1.0) / 2.0 * f64::from(self.texture.height() - 1)).round() as u32;
        Some((tx, ty))
    }

    /// Moves one frame on, bouncing off the edges of a `w × h` frame.
    fn advance(&mut self, w: f64, h: f64) {
        for (p, v, r, lim) in [
            (&mut self.pos.0, &mut self.vel.0, self.rx, w),
            (&mut self.pos.1, &mut self.vel.1, self.ry, h),
        ] {
            *p += *v;
            if *p - r < 0.0 || *p + r > lim {
                *v = -*v;
                *p = p.clamp(r, lim - r);
            }
        }
    }
}

/// Photo files under `dir` (searched recursively: .jpg, .jpeg, .png), sorted.
fn photos(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| {
                let x = x.to_string_lossy().to_ascii_lowercase();
                x == "jpg" || x == "jpeg" || x == "png"
            }) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Writes sequence `spec.name` into the DAVIS layout under `root`
/// (`JPEGImages/480p/<name>/00000.jpg…`, `Annotations/480p/<name>/00000.png…`, every frame
/// annotated) from photos under `from`: one background and two object photos, picked with the
/// seed. The same seed and photos give the same files. Returns the three photos used.
///
/// # Errors
/// [`SynthError::Input`] for fewer than three photos, fewer than two frames or a frame under
/// 64 pixels a side (checked before anything is written); decoding and writing errors.
pub fn generate(from: &Path, root: &Path, spec: &SynthSpec) -> Result<Vec<PathBuf>, SynthError> {
    if spec.frames < 2 || spec.width < 64 || spec.height < 64 {
        return Err(SynthError::Input(format!(
            "need at least 2 frames of at least 64x64 pixels, got {} of {}x{}",
            spec.frames, spec.width, spec.height
        )));
    }
    let all = photos(from);
    if all.len() < 3 {
        return Err(SynthError::Input(format!(
            "{} holds {} photos; a background and two objects need 3",
            from.display(),
            all.len()
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut picked: Vec<PathBuf> = Vec::new();
    while picked.len() < 3 {
        let p = &all[rng.random_range(0..all.len())];
        if !picked.contains(p) {
            picked.push(p.clone());
        }
    }
    let max_pixels = dino_config::DataConfig::default().max_image_pixels;
    let load = |p: &Path, w: u32, h: u32| -> Result<RgbImage, SynthError> {
        let img = dino_data::decode::decode_file(p, max_pixels)?;
        Ok(dino_data::transforms::resize(&img, w, h)?)
    };
    let (w, h) = (f64::from(spec.width), f64::from(spec.height));
    let background = load(&picked[0], spec.width, spec.height)?;
    let mut sprites = Vec::new();
    for photo in &picked[1..] {
        // Semi-axes of 12-22 % of the frame's width, 15-28 % of its height.
        let rx = w * rng.random_range(0.12..0.22);
        let ry = h * rng.random_range(0.15..0.28);
        let texture = load(photo, (2.0 * rx) as u32, (2.0 * ry) as u32)?;
        let pos = (rng.random_range(rx..w - rx), rng.random_range(ry..h - ry));
        // 1-3 % of the frame's width per frame, any direction.
        let speed = w * rng.random_range(0.01..0.03);
        let angle = rng.random_range(0.0..std::f64::consts::TAU);
        sprites.push(Sprite {
            texture,
            rx,
            ry,
            pos,
            vel: (speed * angle.cos(), speed * angle.sin()),
        });
    }
    let frames = root.join("JPEGImages/480p").join(&spec.name);
    let anns = root.join("Annotations/480p").join(&spec.name);
    for d in [&frames, &anns] {
        std::fs::create_dir_all(d).map_err(|source| DavisError::Io {
            path: d.clone(),
            source,
        })?;
    }
    let palette = pascal_palette();
    for t in 0..spec.frames {
        let mut frame = background.clone();
        let mut mask = IndexMask {
            width: spec.width,
            height: spec.height,
            data: vec![0; spec.width as usize * spec.height as usize],
        };
        for (k, s) in sprites.iter().enumerate() {
            for y in 0..spec.height {
                for x in 0..spec.width {
                    if let Some((tx, ty)) = s.contains(f64::from(x) + 0.5, f64::from(y) + 0.5) {
                        let px: Rgb<u8> = *s.texture.get_pixel(tx, ty);
                        frame.put_pixel(x, y, px);
                        mask.data[(y * spec.width + x) as usize] = k as u8 + 1;
                    }
                }
            }
        }
        let stem = format!("{t:05}");
        let path = frames.join(format!("{stem}.jpg"));
        let file = std::fs::File::create(&path).map_err(|source| DavisError::Io {
            path: path.clone(),
            source,
        })?;
        let mut enc =
            image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 95);
        enc.encode_image(&frame)
            .map_err(|source| SynthError::Image { path, source })?;
        write_index_png(&anns.join(format!("{stem}.png")), &mask, &palette)?;
        for s in &mut sprites {
            s.advance(w, h);
        }
    }
    Ok(picked)
}
