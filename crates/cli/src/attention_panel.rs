//! One picture per image for `dino attention`: photo | mean map | each head | mask, side by
//! side, each tile named under it; under each map its colour scale (viridis, each map drawn from
//! its own minimum to its maximum attention) with those two values at its ends; on the mask,
//! the kept patches' outline; under all, a legend of two lines saying what the mask keeps and
//! what the scales measure. Tiles smaller than [`MIN_TILE`] px are enlarged (nearest
//! neighbour, whole patches stay sharp) so that the maps and the text can be read. Built from the files
//! `dino_eval::attention::write_maps` wrote and the maps themselves.

use anyhow::Context;
use dino_eval::attention::{threshold_mask, AttentionMaps};
use image::{imageops, Rgb, RgbImage};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};

/// Gap between tiles and between the rows under them, in pixels.
pub const GAP: u32 = 4;
/// Height of each map's colour scale, in pixels.
pub const BAR: u32 = 10;
/// Height of a row of text (tile names; the scale's end values; each legend line), in pixels.
pub const TEXT: u32 = 18;
/// Lines of the legend under the scales.
pub const LEGEND_LINES: u32 = 2;
/// Tiles narrower than this are enlarged by a whole factor to at least this width (a 48-px
/// image of 6 × 6 patches becomes 192 px, 32 px a patch: readable at a glance).
pub const MIN_TILE: u32 = 160;
/// Width of the mask's outline, inside the kept patches, in panel pixels.
pub const OUTLINE_WIDTH: u32 = 2;
/// The outline's colour.
pub const OUTLINE: Rgb<u8> = Rgb([255, 255, 255]);
/// Font size of the text, in pixels.
const FONT_PX: f64 = 14.0;

/// The whole factor a `w`-px-wide tile is enlarged by in the panel.
pub fn tile_scale(w: u32) -> u32 {
    MIN_TILE.div_ceil(w.max(1)).max(1)
}

/// Writes `dir/panel.png` from `img.png`, `attn-mean.png`, `attn-head{i}.png` and
/// `mask_th{threshold}_mean.png` in `dir`, with `maps` (the attention of that image on a
/// `patch`-px grid) for the scales' values and the mask's outline. Returns its path.
///
/// Layout (tiles `s·w × s·h` for `w × h` images, `s` = [`tile_scale`]): the tiles with [`GAP`]
/// between them; [`GAP`], a row of names ([`TEXT`]); [`GAP`], each map's scale ([`BAR`]);
/// [`GAP`], a row with each scale's minimum (left) and maximum (right); [`GAP`], the legend
/// ([`LEGEND_LINES`] rows of [`TEXT`]). Without a font (see
/// `dino_train::curves::text_available`) the text rows stay blank.
///
/// # Errors
/// A tile that cannot be read, maps that do not fit the tiles, or the panel that cannot be
/// written.
pub fn write_panel(
    dir: &Path,
    maps: &AttentionMaps,
    patch: u32,
    threshold: f64,
) -> anyhow::Result<PathBuf> {
    let heads = maps.heads.len();
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
    anyhow::ensure!(
        (maps.w as u32 * patch, maps.h as u32 * patch) == (w, h),
        "{}×{} maps of {patch}-px patches for a {w}×{h} image",
        maps.h,
        maps.w
    );
    let s = tile_scale(w);
    let (tw, th) = (w * s, h * s);
    let n = tiles.len() as u32;
    let x_of = |i: u32| i * (tw + GAP);
    let names_y = th + GAP;
    let bar_y = names_y + TEXT + GAP;
    let values_y = bar_y + BAR + GAP;
    let legend_y = values_y + TEXT + GAP;
    let mut panel = RgbImage::from_pixel(
        n * tw + (n - 1) * GAP,
        legend_y + LEGEND_LINES * TEXT,
        Rgb([255; 3]),
    );
    for (i, tile) in tiles.iter().enumerate() {
        let big = imageops::resize(tile, tw, th, imageops::FilterType::Nearest);
        imageops::replace(&mut panel, &big, i64::from(x_of(i as u32)), 0);
    }
    // The kept patches' outline on the mask tile (the last).
    let mean = maps.mean();
    let keep = threshold_mask(&mean, threshold)?;
    let cell = patch * s;
    let kept = |x: i64, y: i64| {
        x >= 0
            && y >= 0
            && x < i64::from(tw)
            && y < i64::from(th)
            && keep[(y as u32 / cell) as usize * maps.w + (x as u32 / cell) as usize]
    };
    let x0 = x_of(n - 1);
    for y in 0..th as i64 {
        for x in 0..tw as i64 {
            let edge = (1..=i64::from(OUTLINE_WIDTH)).any(|d| {
                [(d, 0), (-d, 0), (0, d), (0, -d)]
                    .iter()
                    .any(|(dx, dy)| !kept(x + dx, y + dy))
            });
            if kept(x, y) && edge {
                panel.put_pixel(x0 + x as u32, y as u32, OUTLINE);
            }
        }
    }
    // Each map's scale under it (tiles 1 ..= heads + 1: mean, then the heads).
    let map_values: Vec<&[f32]> = std::iter::once(mean.as_slice())
        .chain(maps.heads.iter().map(Vec::as_slice))
        .collect();
    for i in 1..=heads as u32 + 1 {
        for x in 0..tw {
            let c = colorous::VIRIDIS.eval_continuous(f64::from(x) / f64::from(tw.max(2) - 1));
            for y in bar_y..bar_y + BAR {
                panel.put_pixel(x_of(i) + x, y, Rgb([c.r, c.g, c.b]));
            }
        }
    }
    if font_available() {
        let mut texts = vec![(x_of(0), names_y, HPos::Left, "photo".to_string())];
        texts.push((x_of(1), names_y, HPos::Left, "mean".to_string()));
        for i in 0..heads {
            texts.push((x_of(i as u32 + 2), names_y, HPos::Left, format!("head {i}")));
        }
        texts.push((
            x0,
            names_y,
            HPos::Left,
            format!("mask {:.0}%", threshold * 100.0),
        ));
        texts.push((
            0,
            legend_y,
            HPos::Left,
            format!(
                "mask: the fewest patches holding {:.0} % of the mean map's attention mass, \
                 tinted and outlined in white (the rest shown as the photo)",
                threshold * 100.0
            ),
        ));
        texts.push((
            0,
            legend_y + TEXT,
            HPos::Left,
            "maps: the CLS token's attention over the patches (last block); each scale runs \
             from its map's minimum to its maximum"
                .to_string(),
        ));
        for (i, values) in map_values.iter().enumerate() {
            let (lo, hi) = values
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            let x = x_of(i as u32 + 1);
            texts.push((x, values_y, HPos::Left, two_digits(lo)));
            texts.push((x + tw - 1, values_y, HPos::Right, two_digits(hi)));
        }
        draw_texts(&mut panel, &texts)?;
    }
    let path = dir.join("panel.png");
    panel
        .save(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Whether the panel's text can be drawn: the plots' font (`dino_train::curves`) is there and
/// registered. Warns once, in the panel's words, when it is missing.
fn font_available() -> bool {
    use dino_train::curves::{text_available, DEFAULT_FONT, FONT_ENV};
    static WARNED: std::sync::Once = std::sync::Once::new();
    let path =
        std::env::var_os(FONT_ENV).map_or_else(|| PathBuf::from(DEFAULT_FONT), PathBuf::from);
    if path.is_file() && text_available() {
        return true;
    }
    WARNED.call_once(|| {
        tracing::warn!(
            "panel.png is drawn without its names and scale values: no font at {} (install \
             Debian's fonts-dejavu-core, or set {FONT_ENV} to a .ttf file)",
            path.display()
        );
    });
    false
}

/// Draws each `(x, y, horizontal anchor, text)` on `panel` (the top of the text at `y`).
fn draw_texts(panel: &mut RgbImage, texts: &[(u32, u32, HPos, String)]) -> anyhow::Result<()> {
    let (w, h) = panel.dimensions();
    let buf: &mut [u8] = std::ops::DerefMut::deref_mut(panel);
    let root = BitMapBackend::with_buffer(buf, (w, h)).into_drawing_area();
    for (x, y, hpos, text) in texts {
        let style = TextStyle::from(("sans-serif", FONT_PX).into_font())
            .color(&BLACK)
            .pos(Pos::new(*hpos, VPos::Top));
        root.draw_text(text, &style, (*x as i32, *y as i32))
            .map_err(|e| anyhow::anyhow!("drawing the panel's text: {e}"))?;
    }
    root.present()
        .map_err(|e| anyhow::anyhow!("drawing the panel's text: {e}"))
}

/// `v` with two significant digits (`0.046`, `0.0012`, `0.50`), as a scale's end is labelled.
pub fn two_digits(v: f32) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let decimals = (1 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_values_have_two_significant_digits() {
        assert_eq!(two_digits(0.046_2), "0.046");
        assert_eq!(two_digits(0.001_23), "0.0012");
        assert_eq!(two_digits(0.5), "0.50");
        assert_eq!(two_digits(3.0), "3.0");
        assert_eq!(two_digits(0.0), "0");
    }

    #[test]
    fn small_tiles_are_enlarged_to_at_least_min_tile() {
        assert_eq!(tile_scale(16), 10);
        assert_eq!(tile_scale(32), 5);
        assert_eq!(tile_scale(48), 4);
        assert_eq!(tile_scale(100), 2);
        assert_eq!(tile_scale(160), 1);
        assert_eq!(tile_scale(224), 1);
    }
}
