//! One picture per image for `dino attention`: photo | mean map | each head | mask, side by
//! side, with the colour scale of the maps under them (viridis, low attention left, high
//! right; each map scaled from its own minimum to its maximum), from the files
//! `dino_eval::attention::write_maps` wrote.

use anyhow::Context;
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

/// Gap between tiles and height of the colour bar, in pixels.
const GAP: u32 = 4;
const BAR: u32 = 10;

/// Writes `dir/panel.png` from `img.png`, `attn-mean.png`, `attn-head{i}.png` (i < `heads`)
/// and `mask_th{threshold}_mean.png` in `dir` (the mask: the patches keeping `threshold` of
/// the mean map's attention mass, drawn over the photo). Returns its path.
///
/// # Errors
/// A tile that cannot be read, or the panel that cannot be written.
pub fn write_panel(dir: &Path, heads: usize, threshold: f64) -> anyhow::Result<PathBuf> {
    let mut names = vec!["img.png".to_string(), "attn-mean.png".to_string()];
    names.extend((0..heads).map(|i| format!("attn-head{i}.png")));
    names.push(format!("mask_th{threshold}_mean.png"));
    let tiles: Vec<RgbImage> = names
        .iter()
        .map(|n| {
            let p = dir.join(n);
            image::open(&p)
                .with_context(|| format!("reading {}", p.display()))
                .map(|i| i.to_rgb8())
        })
        .collect::<anyhow::Result<_>>()?;
    let (w, h) = tiles[0].dimensions();
    let n = tiles.len() as u32;
    let mut panel = RgbImage::from_pixel(n * w + (n - 1) * GAP, h + GAP + BAR, Rgb([255; 3]));
    for (i, tile) in tiles.iter().enumerate() {
        let x0 = i as u32 * (w + GAP);
        for (x, y, px) in tile.enumerate_pixels() {
            if x < w && y < h {
                panel.put_pixel(x0 + x, y, *px);
            }
        }
    }
    // The scale under the maps (tiles 1 ..= heads + 1).
    let (x0, x1) = (w + GAP, (heads as u32 + 2) * (w + GAP) - GAP);
    for x in x0..x1 {
        let c = colorous::VIRIDIS.eval_continuous(f64::from(x - x0) / f64::from(x1 - x0 - 1));
        for y in h + GAP..h + GAP + BAR {
            panel.put_pixel(x, y, Rgb([c.r, c.g, c.b]));
        }
    }
    let path = dir.join("panel.png");
    panel
        .save(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
