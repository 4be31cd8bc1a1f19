//! The 2-D feature map as a PNG: one dot per image, coloured by class, a legend of the classes
//! on the right, drawn with `plotters`' bitmap backend. Text (title, legend names) needs the
//! font the caller registered under the family `"sans-serif"` (the `dino` binary registers
//! DejaVu Sans through `dino_train::curves::text_available`); without it the dots and legend
//! swatches are still drawn.

use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// The font family the caller registers.
const FAMILY: &str = "sans-serif";

/// Errors of [`draw_map`].
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Coordinates and labels differ in count, or a size is too small.
    #[error("map plot: {0}")]
    Input(String),
    /// Drawing or writing failed.
    #[error("writing {}: {reason}", .path.display())]
    Write {
        /// The PNG.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The colour of class `c` of `n`: Tableau 10 for up to 10 classes, else evenly spaced hues of
/// the sinebow map.
pub fn class_colour(c: usize, n: usize) -> RGBColor {
    let col = if n <= 10 {
        colorous::TABLEAU10[c % 10]
    } else {
        colorous::SINEBOW.eval_rational(c, n)
    };
    RGBColor(col.r, col.g, col.b)
}

/// Draws `points` (one per image) coloured by `labels` (indices into `class_names`; a label
/// without a name is shown as its number) into a `width × height` PNG at `path`, with `title`
/// on top and the legend on the right when `text` is true. Written to `<path>.tmp` and renamed.
/// Non-finite points are left out.
///
/// # Errors
/// [`PlotError::Input`] when `points` and `labels` differ in length, a label is negative, or
/// the image is smaller than 200 × 150; [`PlotError::Write`] when drawing or saving fails.
pub fn draw_map(
    path: &Path,
    points: &[[f64; 2]],
    labels: &[i64],
    class_names: &[String],
    title: &str,
    size: (u32, u32),
    text: bool,
) -> Result<(), PlotError> {
    draw_map_with_thumbnails(path, points, labels, class_names, title, size, text, &[])
}

/// A small picture drawn at a point of the map (the paper's and blog's t-SNE figures show
/// sample images where they fall).
#[derive(Debug, Clone)]
pub struct Thumbnail {
    /// Index of the point (into `points`).
    pub point: usize,
    /// The picture, drawn centred on the point with a 2-px frame in its class colour.
    pub image: image::RgbImage,
}

impl Thumbnail {
    /// `img` shrunk to fit `side × side` pixels, aspect kept, for point `point`.
    pub fn of(point: usize, img: &image::RgbImage, side: u32) -> Self {
        let (w, h) = img.dimensions();
        let scale = f64::from(side) / f64::from(w.max(h).max(1));
        let fit = |v: u32| ((f64::from(v) * scale).round() as u32).clamp(1, side.max(1));
        Self {
            point,
            image: image::imageops::thumbnail(img, fit(w), fit(h)),
        }
    }
}

/// [`draw_map`] with `thumbnails` drawn over the dots (in the order given; later ones on top).
/// A thumbnail of a non-finite or out-of-range point is skipped.
///
/// # Errors
/// As [`draw_map`].
#[allow(clippy::too_many_arguments)]
pub fn draw_map_with_thumbnails(
    path: &Path,
    points: &[[f64; 2]],
    labels: &[i64],
    class_names: &[String],
    title: &str,
    (width, height): (u32, u32),
    text: bool,
    thumbnails: &[Thumbnail],
) -> Result<(), PlotError> {
    if points.len() != labels.len() {
        return Err(PlotError::Input(format!(
            "{} points for {} labels",
            points.len(),
            labels.len()
        )));
    }
    if labels.iter().any(|&l| l < 0) {
        return Err(PlotError::Input("labels must be >= 0".into()));
    }
    if width < 200 || height < 150 {
        return Err(PlotError::Input(format!(
            "{width}x{height} is too small (at least 200x150)"
        )));
    }
    let write_err = |reason: String| PlotError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let n_classes = labels
        .iter()
        .map(|&l| l as usize + 1)
        .max()
        .unwrap_or(0)
        .max(class_names.len());
    let name = |c: usize| class_names.get(c).cloned().unwrap_or_else(|| c.to_string());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in points
        .iter()
        .filter(|p| p[0].is_finite() && p[1].is_finite())
    {
        (x0, x1, y0, y1) = (x0.min(p[0]), x1.max(p[0]), y0.min(p[1]), y1.max(p[1]));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = |lo: f64, hi: f64| {
        let m = ((hi - lo) * 0.03).max(1e-9);
        (lo - m, hi + m)
    };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
    // Dots shrink as the map fills: 10k points stay apart at radius 2 on a 1000-px plot.
    let radius = if points.len() > 3000 { 2 } else { 3 };
    let font = (height as f64 / 45.0).clamp(11.0, 22.0);
    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    // Pixel centres of the thumbnails' points, read from the chart's coordinate map.
    let mut thumb_at: Vec<(usize, (i32, i32))> = Vec::new();
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        let legend_w = if text {
            (width as f64 * 0.2) as u32
        } else {
            40
        };
        let (plot, legend) = root.split_horizontally(width - legend_w);
        let mut builder = ChartBuilder::on(&plot);
        builder.margin(10);
        if text && !title.is_empty() {
            builder.caption(title, (FAMILY, font * 1.1));
        }
        let mut chart = builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| write_err(e.to_string()))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .disable_y_axis()
            .draw()
            .map_err(|e| write_err(e.to_string()))?;
        plot.draw(&Rectangle::new(
            [
                (0, 0),
                (
                    plot.dim_in_pixel().0 as i32 - 1,
                    plot.dim_in_pixel().1 as i32 - 1,
                ),
            ],
            RGBColor(200, 200, 200),
        ))
        .map_err(|e| write_err(e.to_string()))?;
        // Classes are drawn in an order that interleaves them, so no class hides under the
        // last one drawn: point i in index order (datasets list images class by class, so
        // a stride walk mixes them).
        let n = points.len();
        let stride = if n > 1 { coprime_stride(n) } else { 1 };
        chart
            .draw_series((0..n).map(|i| (i * stride) % n).filter_map(|i| {
                let p = points[i];
                (p[0].is_finite() && p[1].is_finite()).then(|| {
                    let c = class_colour(labels[i] as usize, n_classes);
                    Circle::new((p[0], p[1]), radius, c.mix(0.75).filled())
                })
            }))
            .map_err(|e| write_err(e.to_string()))?;
        for t in thumbnails {
            if let Some(p) = points
                .get(t.point)
                .filter(|p| p[0].is_finite() && p[1].is_finite())
            {
                let (px, py) = chart.backend_coord(&(p[0], p[1]));
                thumb_at.push((t.point, (px, py)));
            }
        }
        // Legend: a swatch and the class name per row, as many rows as fit.
        let row_h = (font * 1.5) as i32;
        let top = (font * 2.5) as i32;
        let fits = ((height as i32 - top) / row_h).max(1) as usize;
        for c in 0..n_classes.min(fits) {
            let y = top + c as i32 * row_h;
            let colour = class_colour(c, n_classes);
            legend
                .draw(&Circle::new((12, y), (font * 0.4) as i32, colour.filled()))
                .map_err(|e| write_err(e.to_string()))?;
            if text {
                legend
                    .draw(&Text::new(
                        name(c),
                        (24, y - (font * 0.45) as i32),
                        (FAMILY, font * 0.9),
                    ))
                    .map_err(|e| write_err(e.to_string()))?;
            }
        }
        root.present().map_err(|e| write_err(e.to_string()))?;
    }
    let mut img = image::RgbImage::from_raw(width, height, pixels)
        .ok_or_else(|| write_err("pixel buffer of the wrong size".into()))?;
    for (t, (_, (px, py))) in thumbnails
        .iter()
        .filter(|t| thumb_at.iter().any(|(i, _)| *i == t.point))
        .zip(&thumb_at)
    {
        let RGBColor(r, g, b) = class_colour(labels[t.point] as usize, n_classes);
        let (w, h) = t.image.dimensions();
        let mut framed = image::RgbImage::from_pixel(w + 4, h + 4, image::Rgb([r, g, b]));
        image::imageops::overlay(&mut framed, &t.image, 2, 2);
        let (x, y) = (
            i64::from(*px) - i64::from(w + 4) / 2,
            i64::from(*py) - i64::from(h + 4) / 2,
        );
        image::imageops::overlay(&mut img, &framed, x, y);
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| write_err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| write_err(e.to_string()))
}

/// A stride near n · 0.618 that is coprime with n, so `i · stride mod n` visits every index once.
fn coprime_stride(n: usize) -> usize {
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let mut s = ((n as f64 * 0.618) as usize).max(1);
    while gcd(s, n) != 1 {
        s += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_take_their_class_colour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.png");
        let points: Vec<[f64; 2]> = (0..30).map(|i| [(i % 3) as f64, (i / 3) as f64]).collect();
        let labels: Vec<i64> = (0..30).map(|i| i % 3).collect();
        let names = vec!["cat".to_string(), "dog".into(), "ship".into()];
        draw_map(&path, &points, &labels, &names, "test", (400, 300), false).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (400, 300));
        // Every class's legend swatch is drawn in its full colour.
        for c in 0..3 {
            let RGBColor(r, g, b) = class_colour(c, 3);
            assert!(img.pixels().any(|p| p.0 == [r, g, b]), "class {c}");
        }
        assert!(!dir.path().join("map.png.tmp").exists());
        let err = draw_map(&path, &points[..2], &labels, &names, "", (400, 300), false);
        assert!(matches!(err, Err(PlotError::Input(_))));
    }

    #[test]
    fn thumbnails_are_drawn_at_their_points_in_a_class_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.png");
        let points = vec![[0.0, 0.0], [1.0, 1.0], [0.5, 0.2]];
        let labels = vec![0, 1, 1];
        let magenta = image::RgbImage::from_pixel(64, 32, image::Rgb([255, 0, 255]));
        let thumbs = [Thumbnail::of(2, &magenta, 20)];
        assert_eq!(thumbs[0].image.dimensions(), (20, 10), "aspect kept");
        draw_map_with_thumbnails(&path, &points, &labels, &[], "", (400, 300), false, &thumbs)
            .unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let inside = img.pixels().filter(|p| p.0 == [255, 0, 255]).count();
        assert_eq!(inside, 20 * 10, "the whole thumbnail, once");
        let RGBColor(r, g, b) = class_colour(1, 2);
        // Its frame: the pixel left of the thumbnail's first magenta pixel is the class colour.
        let (x, y) = img
            .enumerate_pixels()
            .find(|(_, _, p)| p.0 == [255, 0, 255])
            .map(|(x, y, _)| (x, y))
            .unwrap();
        assert_eq!(img.get_pixel(x - 1, y).0, [r, g, b]);
        // The point (0.5, 0.2) is left of centre and below it.
        assert!(x + 10 < 400 / 2 && y > 300 / 2, "({x}, {y})");
    }

    #[test]
    fn the_stride_visits_every_index() {
        for n in [2, 10, 48, 10_000] {
            let s = coprime_stride(n);
            let mut seen: Vec<usize> = (0..n).map(|i| (i * s) % n).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
        }
    }
}
