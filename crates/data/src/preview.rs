//! A picture of the augmentation (`dino augment preview`): one row per image, the original
//! scaled to the global-crop height, then its two global crops and its local crops.
//!
//! The images are the first ones of epoch 0's shuffled order and their crops use the loader's
//! streams (`rng_for(seed, 0, index, Augment)`), so the preview shows exactly the views epoch 0
//! of a run with the same seed trains on.

use image::{imageops, Rgb, RgbImage};

use crate::augmentation::DataAugmentationDino;
use crate::dataset::Dataset;
use crate::error::DataError;
use crate::loader::epoch_order;
use crate::rng::{rng_for, Stream};

/// Gap between tiles, pixels.
const PAD: u32 = 4;
/// Background gray level.
const BACKGROUND: u8 = 40;

/// Renders `n_images` rows (fewer if the dataset is smaller; images that fail to load are
/// skipped). The original is scaled to height `global_size` and at most 3 × that wide.
///
/// Errors: `n_images == 0` ([`DataError::BadOption`]) or no image of the dataset loading.
pub fn render_grid(
    dataset: &dyn Dataset,
    transform: &DataAugmentationDino,
    n_images: usize,
    seed: u64,
) -> Result<RgbImage, DataError> {
    if n_images == 0 {
        return Err(DataError::BadOption {
            name: "n_images",
            reason: "must be at least 1".into(),
        });
    }
    let g = transform.global_size();
    let mut rows = Vec::new();
    let mut last_err = None;
    for index in epoch_order(seed, 0, dataset.len()) {
        if rows.len() == n_images {
            break;
        }
        let sample = match dataset.load(index) {
            Ok(s) => s,
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        };
        let img = &sample.image;
        let w =
            ((img.width() as f64 * g as f64 / img.height() as f64).round() as u32).clamp(1, 3 * g);
        let original = imageops::resize(img, w, g, imageops::FilterType::Triangle);
        let crops = transform.apply(img, &mut rng_for(seed, 0, index as u64, Stream::Augment));
        let mut tiles = vec![original];
        tiles.extend(crops);
        rows.push(tiles);
    }
    if rows.is_empty() {
        return Err(last_err.unwrap_or(DataError::Empty {
            path: "<dataset>".into(),
            reason: "no samples".into(),
        }));
    }
    let row_width = |tiles: &[RgbImage]| tiles.iter().map(|t| t.width() + PAD).sum::<u32>() + PAD;
    let width = rows.iter().map(|r| row_width(r)).max().unwrap_or(1);
    let row_height = rows
        .iter()
        .flat_map(|r| r.iter().map(|t| t.height()))
        .max()
        .unwrap_or(g);
    let height = rows.len() as u32 * (row_height + PAD) + PAD;
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([BACKGROUND; 3]));
    for (r, tiles) in rows.iter().enumerate() {
        let y = PAD + r as u32 * (row_height + PAD);
        let mut x = PAD;
        for t in tiles {
            imageops::replace(&mut canvas, t, x as i64, y as i64);
            x += t.width() + PAD;
        }
    }
    Ok(canvas)
}
