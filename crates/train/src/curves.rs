//! The training curves as a PNG (`curves.png` in the run folder), drawn with `plotters`: a 2 × 2
//! grid of panels — loss, learning rate, the DINO term's teacher entropy and KL(teacher ‖
//! student), read by name ([`crate::loss::stats`]) — each against the global step, with axes,
//! ticks, a title and a legend; the loss and entropy panels carry a dashed line at ln K, where a
//! uniform output sits (paper §5.3, Fig. 7). When the loss has several terms (DINO + KoLeo),
//! the loss panel draws each term's value beside the total.
//!
//! Text needs a font file. `plotters`' default font backend asks fontconfig for system fonts,
//! which a fresh CI machine may lack; here the font is one file read from a known path
//! ([`FONT_ENV`], else [`DEFAULT_FONT`], which `scripts/setup.sh` installs with Debian's
//! `fonts-dejavu-core`). When it cannot be read the curves are still drawn, without any text,
//! and one warning says why: a plot is never worth stopping a run.

use crate::loss::stats::{DINO, KL, TEACHER_ENTROPY};
use crate::metrics::{io_err, MetricsError, StepRecord};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Environment variable naming a TrueType/OpenType font file for the plot's text.
pub const FONT_ENV: &str = "DINO_PLOT_FONT";
/// The font used when [`FONT_ENV`] is unset: DejaVu Sans from Debian's `fonts-dejavu-core`.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// The family name the font is registered under in `plotters`.
const FAMILY: &str = "sans-serif";

/// Colours of the four panels' curves (loss, lr, teacher entropy, KL).
pub const PANEL_COLORS: [[u8; 3]; 4] =
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40]];

/// Colours of the loss panel's per-term curves, in term order (drawn only when the loss has
/// more than one term).
const TERM_COLORS: [[u8; 3]; 4] = [
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 190, 207],
];

/// One panel: its title, the curve's legend label, the value drawn (NaN where a record lacks
/// it: left out), whether the dashed ln K reference belongs to it, and whether each term's
/// loss is drawn beside the value.
struct Panel {
    title: &'static str,
    label: &'static str,
    value: fn(&StepRecord) -> f64,
    ln_k_line: bool,
    terms: bool,
}

/// The DINO term's statistic `stat` of a record, NaN without one.
fn dino_stat(r: &StepRecord, stat: &str) -> f64 {
    r.stats.get(DINO, stat).unwrap_or(f64::NAN)
}

const PANELS: [Panel; 4] = [
    Panel {
        title: "loss",
        label: "total loss (nats)",
        value: |r| r.stats.loss,
        ln_k_line: true,
        terms: true,
    },
    Panel {
        title: "learning rate",
        label: "lr",
        value: |r| r.lr,
        ln_k_line: false,
        terms: false,
    },
    Panel {
        title: "teacher entropy",
        label: "entropy (nats)",
        value: |r| dino_stat(r, TEACHER_ENTROPY),
        ln_k_line: true,
        terms: false,
    },
    Panel {
        title: "KL(teacher || student)",
        label: "KL (nats)",
        value: |r| dino_stat(r, KL),
        ln_k_line: false,
        terms: false,
    },
];

/// Reads the font at `path` and registers it with `plotters` for the plot's text. The bytes
/// are kept for the life of the process (`plotters` holds a `'static` reference).
///
/// # Errors
/// The file cannot be read, or is not a font `ab_glyph` can parse (the message names the path).
pub fn register_font_file(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| format!("{} is not a TrueType/OpenType font", path.display()))
}

/// Whether the plot's text can be drawn: registers the font of [`FONT_ENV`] or [`DEFAULT_FONT`]
/// on the first call, and warns once when it cannot (later calls return the same answer).
pub fn text_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let path = std::env::var_os(FONT_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_FONT));
        match register_font_file(&path) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(
                    "curves.png is drawn without text: {e} (install Debian's fonts-dejavu-core, \
                     or set {FONT_ENV} to a .ttf file)"
                );
                false
            }
        }
    })
}

/// Renders `steps` (one point each, in order) as a `width × height` RGB PNG at `path` (see the
/// module doc), with ln K reference lines when `ln_k` is given, and text when a font is
/// available ([`text_available`]). Non-finite values are left out. Written to `<path>.tmp` and
/// renamed, so readers never see a partial image.
///
/// # Errors
/// An image smaller than 40 × 40, a drawing failure, or a file that cannot be written.
pub fn plot_curves(
    path: &Path,
    steps: &[StepRecord],
    ln_k: Option<f64>,
    width: u32,
    height: u32,
) -> Result<(), MetricsError> {
    draw_curves(path, steps, ln_k, (width, height), text_available())
}

/// [`plot_curves`] with the choice of text made by the caller: `text = false` draws the axes,
/// grid and curves only, and reads no font.
///
/// # Errors
/// As [`plot_curves`].
pub fn draw_curves(
    path: &Path,
    steps: &[StepRecord],
    ln_k: Option<f64>,
    (width, height): (u32, u32),
    text: bool,
) -> Result<(), MetricsError> {
    let plot_err = |reason: String| MetricsError::Plot {
        path: path.to_path_buf(),
        reason,
    };
    if width < 40 || height < 40 {
        return Err(plot_err(format!(
            "{width}x{height} is too small (at least 40x40)"
        )));
    }
    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        let areas = root.split_evenly((2, 2));
        for ((area, panel), rgb) in areas.iter().zip(&PANELS).zip(PANEL_COLORS) {
            let reference = ln_k.filter(|v| panel.ln_k_line && v.is_finite());
            draw_panel(
                area,
                steps,
                panel,
                reference,
                RGBColor(rgb[0], rgb[1], rgb[2]),
                text,
            )
            .map_err(|e| plot_err(format!("{}: {e}", panel.title)))?;
        }
        root.present().map_err(|e| plot_err(e.to_string()))?;
    }
    let img = image::RgbImage::from_raw(width, height, pixels)
        .ok_or_else(|| plot_err("pixel buffer of the wrong size".into()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err("create folder", dir))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| plot_err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename", &tmp))
}

/// The axis range of `values` (and of `reference`), padded by 5 % so curves do not run along
/// the frame; a flat or empty series gets ±0.5 around its value (or 0..1).
fn value_range(values: impl Iterator<Item = f64>, reference: Option<f64>) -> (f64, f64) {
    let (lo, hi) = values
        .chain(reference)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 * hi.abs().max(1.0) {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = 0.05 * (hi - lo);
    (lo - pad, hi + pad)
}

/// Compact label for an axis value: 4 significant digits, scientific outside [0.01, 10^4).
fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if (0.01..10_000.0).contains(&a) {
        let decimals = (3 - a.log10().floor() as i64).clamp(0, 5) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.2e}")
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    steps: &[StepRecord],
    panel: &Panel,
    reference: Option<f64>,
    color: RGBColor,
    text: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let points: Vec<(i64, f64)> = steps
        .iter()
        .map(|r| (r.global_step as i64, (panel.value)(r)))
        .filter(|(_, y)| y.is_finite())
        .collect();
    // Steps only grow: the x axis spans exactly the logged steps, on whole numbers.
    let xs = match (points.first(), points.last()) {
        (Some(first), Some(last)) => first.0..last.0.max(first.0 + 1),
        _ => 0..1,
    };
    let terms = if panel.terms {
        term_series(steps)
    } else {
        Vec::new()
    };
    let term_values = terms.iter().flat_map(|(_, pts)| pts.iter().map(|p| p.1));
    let (y0, y1) = value_range(points.iter().map(|p| p.1).chain(term_values), reference);
    let (px, _) = area.dim_in_pixel();
    // Font sizes follow the panel width, so a small image keeps its text legible and a large
    // one is not cramped (plotters' sizes are in pixels).
    let font = (px as f64 / 28.0).clamp(10.0, 20.0);
    let mut builder = ChartBuilder::on(area);
    builder.margin(6);
    if text {
        builder
            .caption(panel.title, (FAMILY, font * 1.2))
            .x_label_area_size(font * 2.4)
            .y_label_area_size(font * 4.2);
    }
    let mut chart = builder.build_cartesian_2d(xs.clone(), y0..y1)?;
    // A tick computed as 0 may come out as a rounding residue (5.6e-17): print it as 0.
    let y_fmt = |v: &f64| fmt_value(if v.abs() < 1e-9 * (y1 - y0) { 0.0 } else { *v });
    let mut mesh = chart.configure_mesh();
    mesh.x_labels(6)
        .y_labels(6)
        .max_light_lines(2)
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(215, 215, 215));
    if text {
        mesh.label_style((FAMILY, font * 0.8))
            .x_desc("step")
            .axis_desc_style((FAMILY, font * 0.8))
            .y_label_formatter(&y_fmt);
    }
    mesh.draw()?;
    let line = color.stroke_width(2);
    chart
        .draw_series(LineSeries::new(points.iter().copied(), line))?
        .label(panel.label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], line));
    for ((name, pts), rgb) in terms.iter().zip(TERM_COLORS.iter().cycle()) {
        let term_line = RGBColor(rgb[0], rgb[1], rgb[2]).stroke_width(1);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), term_line))?
            .label(format!("{name} term"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], term_line));
    }
    if let [only] = points[..] {
        // A line needs two points; the first logged step is a dot.
        chart.draw_series(std::iter::once(Circle::new(only, 3, color.filled())))?;
    }
    if let Some(r) = reference {
        let dashed = RGBColor(110, 110, 110).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(
                [(xs.start, r), (xs.end, r)],
                6,
                4,
                dashed,
            ))?
            .label("ln K (uniform)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], dashed));
    }
    if text && !points.is_empty() {
        chart
            .configure_series_labels()
            .label_font((FAMILY, font * 0.75))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    Ok(())
}

/// Each term's weighted value against the global step, by term name in order of first
/// appearance, when some record's loss has more than one term (none otherwise: the one term's
/// curve is the total).
fn term_series(steps: &[StepRecord]) -> Vec<(String, Vec<(i64, f64)>)> {
    if steps.iter().all(|r| r.stats.terms.len() < 2) {
        return Vec::new();
    }
    let mut series: Vec<(String, Vec<(i64, f64)>)> = Vec::new();
    for r in steps {
        for t in &r.stats.terms {
            let point = (r.global_step as i64, t.loss());
            if !point.1.is_finite() {
                continue;
            }
            match series.iter_mut().find(|(n, _)| *n == t.name) {
                Some((_, pts)) => pts.push(point),
                None => series.push((t.name.clone(), vec![point])),
            }
        }
    }
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_are_compact() {
        assert_eq!(fmt_value(11.090354), "11.09");
        assert_eq!(fmt_value(0.04), "0.04000");
        assert_eq!(fmt_value(1.25e-4), "1.25e-4");
        assert_eq!(fmt_value(-2.5), "-2.500");
        assert_eq!(fmt_value(0.0), "0");
        assert_eq!(fmt_value(123456.0), "1.23e5");
    }

    #[test]
    fn ranges_pad_and_survive_flat_or_empty_series() {
        assert_eq!(value_range([1.0, 3.0].into_iter(), None), (0.9, 3.1));
        // The reference widens the range: ln K above every value.
        assert_eq!(value_range([1.0, 3.0].into_iter(), Some(5.0)), (0.8, 5.2));
        assert_eq!(value_range([2.0, 2.0].into_iter(), None), (1.5, 2.5));
        assert_eq!(value_range(std::iter::empty(), None), (0.0, 1.0));
    }

    #[test]
    fn without_a_font_the_curves_are_still_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let steps: Vec<StepRecord> = (0..50)
            .map(|i| StepRecord {
                global_step: i,
                stats: crate::loss::LossStats::from_terms(vec![
                    crate::loss::stats::dino_term(5.0 - i as f64 / 20.0, 2.0, 3.0, 0.5, 0.04)
                        .with(KL, 1.0),
                    crate::loss::TermStats::new(crate::loss::stats::KOLEO, 0.1, 0.25),
                ]),
                lr: 1e-4 * i as f64,
                ..StepRecord::default()
            })
            .collect();
        draw_curves(&path, &steps, Some(4.16), (400, 300), false).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (400, 300));
        for c in PANEL_COLORS {
            assert!(img.pixels().any(|p| p.0 == c), "no curve in colour {c:?}");
        }
        // Two terms: each term's curve beside the total in the loss panel.
        for c in &TERM_COLORS[..2] {
            assert!(
                img.pixels().any(|p| p.0 == *c),
                "no term curve in colour {c:?}"
            );
        }
        assert!(register_font_file(Path::new("/nonexistent/font.ttf")).is_err());
    }
}
