//! Training metrics: JSONL records per step and per epoch, the curves as a PNG, and the
//! non-finite-loss guard.
//!
//! The official trainer logs `train_loss`, `train_lr`, `train_wd` once per epoch to `log.txt`
//! and exits on a non-finite loss; the paper (Sec. 5.3, Fig. 7) diagnoses collapse from the
//! teacher entropy and KL(teacher‖student), which are logged here every step and watched by
//! [`crate::collapse`].

use crate::loss::LossStats;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Errors of metric output.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// File system error.
    #[error("{op} {path}: {cause}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error (in the message only, so an error chain prints it once).
        cause: std::io::Error,
    },
    /// A record could not be serialised or parsed.
    #[error("{path}: bad metrics record: {reason}")]
    Record {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// PNG encoding failed.
    #[error("writing plot {path}: {reason}")]
    Plot {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MetricsError {
    let path = path.to_path_buf();
    move |cause| MetricsError::Io { op, path, cause }
}

/// The loss was NaN or infinite: training must stop (official: `sys.exit(1)` after printing
/// "Loss is nan, stopping training").
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "loss is {value} at epoch {epoch}, step {step}: stopping. Usual causes: learning rate too \
     high, fp16 overflow (use fp32/bf16), a too small out_dim or teacher temperature; gradient \
     clipping (optim.clip_grad) helps"
)]
pub struct NonFiniteLoss {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Step within the epoch (0-based).
    pub step: usize,
    /// The offending value.
    pub value: f64,
}

/// `Err` when `loss` is NaN or ±∞, naming the epoch and step.
pub fn check_finite(loss: f64, epoch: usize, step: usize) -> Result<(), NonFiniteLoss> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(NonFiniteLoss {
            epoch,
            step,
            value: loss,
        })
    }
}

/// One JSONL line per logged training step (`"kind": "step"`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepRecord {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Step within the epoch (0-based).
    pub step: usize,
    /// Global iteration (schedule index).
    pub global_step: usize,
    /// DINO loss (nats).
    pub loss: f64,
    /// Learning rate.
    pub lr: f64,
    /// Weight decay of the regularized group.
    pub wd: f64,
    /// Teacher EMA momentum.
    pub momentum: f64,
    /// Teacher temperature.
    pub teacher_temp: f64,
    /// Mean per-sample teacher entropy (nats).
    pub teacher_entropy: f64,
    /// Entropy of the batch-mean teacher distribution (nats).
    pub teacher_mean_entropy: f64,
    /// Mean KL(teacher ‖ student) (nats).
    pub kl: f64,
    /// L2 norm of the center.
    pub center_norm: f64,
    /// Training throughput, images per second (one image = all its crops).
    pub images_per_s: f64,
    /// Fraction of the step's wall time spent waiting for the data loader, in [0, 1].
    pub data_wait_fraction: f64,
}

impl StepRecord {
    /// Copies the loss diagnostics into the record.
    pub fn with_loss_stats(mut self, s: &LossStats) -> Self {
        self.loss = s.loss;
        self.teacher_entropy = s.teacher_entropy;
        self.teacher_mean_entropy = s.teacher_mean_entropy;
        self.kl = s.kl;
        self.center_norm = s.center_norm;
        self.teacher_temp = s.teacher_temp;
        self
    }
}

/// One JSONL line per epoch (`"kind": "epoch"`): means of the epoch's steps plus free-form
/// extras (e.g. `knn_top1`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Steps averaged.
    pub steps: usize,
    /// Mean loss (official `train_loss`).
    pub loss: f64,
    /// Learning rate at the epoch's last step (official `train_lr` is the epoch mean; both kept).
    pub lr_last: f64,
    /// Mean learning rate (official `train_lr`).
    pub lr: f64,
    /// Mean weight decay (official `train_wd`).
    pub wd: f64,
    /// Mean teacher momentum.
    pub momentum: f64,
    /// Teacher temperature of the epoch.
    pub teacher_temp: f64,
    /// Mean teacher entropy (nats).
    pub teacher_entropy: f64,
    /// Mean batch-mean teacher entropy (nats).
    pub teacher_mean_entropy: f64,
    /// Mean KL (nats).
    pub kl: f64,
    /// Center norm at the last step.
    pub center_norm: f64,
    /// Mean images per second.
    pub images_per_s: f64,
    /// Mean data-wait fraction.
    pub data_wait_fraction: f64,
    /// Wall time of the epoch in seconds.
    pub elapsed_s: f64,
    /// Further metrics by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, f64>,
}

/// A metrics line: what [`MetricsWriter`] writes and [`read_jsonl`] reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// Per step.
    Step(StepRecord),
    /// Per epoch.
    Epoch(EpochRecord),
}

/// Appends records to a JSONL file, one flushed line each (a crash loses at most the line being
/// written).
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsWriter {
    /// Opens `path` for appending (created with its folder if missing), so a resumed run
    /// continues the same file.
    pub fn append(path: &Path) -> Result<Self, MetricsError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_err("create folder", dir))?;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err("open", path))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
        })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one record as one line and flushes.
    pub fn write(&mut self, record: &Record) -> Result<(), MetricsError> {
        let line = serde_json::to_string(record).map_err(|e| MetricsError::Record {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        writeln!(self.out, "{line}").map_err(io_err("write", &self.path))?;
        self.out.flush().map_err(io_err("flush", &self.path))
    }

    /// Writes a step record.
    pub fn write_step(&mut self, r: &StepRecord) -> Result<(), MetricsError> {
        self.write(&Record::Step(r.clone()))
    }

    /// Writes an epoch record.
    pub fn write_epoch(&mut self, r: &EpochRecord) -> Result<(), MetricsError> {
        self.write(&Record::Epoch(r.clone()))
    }
}

/// Reads every record of a JSONL metrics file (blank lines skipped; a truncated last line, as
/// left by a crash, is ignored; any other bad line is an error naming its line number).
pub fn read_jsonl(path: &Path) -> Result<Vec<Record>, MetricsError> {
    let f = File::open(path).map_err(io_err("open", path))?;
    let lines: Vec<String> = BufReader::new(f)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(io_err("read", path))?;
    let n = lines.len();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == n => {}
            Err(e) => {
                return Err(MetricsError::Record {
                    path: path.to_path_buf(),
                    reason: format!("line {}: {e}", i + 1),
                })
            }
        }
    }
    Ok(out)
}

/// Running means of an epoch's step records, turned into an [`EpochRecord`].
#[derive(Debug, Clone, Default)]
pub struct EpochAccumulator {
    n: usize,
    sum: StepRecord,
    last: StepRecord,
}

impl EpochAccumulator {
    /// Adds one step.
    pub fn push(&mut self, r: &StepRecord) {
        self.n += 1;
        let s = &mut self.sum;
        s.loss += r.loss;
        s.lr += r.lr;
        s.wd += r.wd;
        s.momentum += r.momentum;
        s.teacher_entropy += r.teacher_entropy;
        s.teacher_mean_entropy += r.teacher_mean_entropy;
        s.kl += r.kl;
        s.images_per_s += r.images_per_s;
        s.data_wait_fraction += r.data_wait_fraction;
        self.last = r.clone();
    }

    /// Steps added so far.
    pub fn len(&self) -> usize {
        self.n
    }

    /// No step added yet.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The epoch summary (means; zeros when empty).
    pub fn finish(&self, epoch: usize, elapsed_s: f64) -> EpochRecord {
        let k = self.n.max(1) as f64;
        let s = &self.sum;
        EpochRecord {
            epoch,
            steps: self.n,
            loss: s.loss / k,
            lr_last: self.last.lr,
            lr: s.lr / k,
            wd: s.wd / k,
            momentum: s.momentum / k,
            teacher_temp: self.last.teacher_temp,
            teacher_entropy: s.teacher_entropy / k,
            teacher_mean_entropy: s.teacher_mean_entropy / k,
            kl: s.kl / k,
            center_norm: self.last.center_norm,
            images_per_s: s.images_per_s / k,
            data_wait_fraction: s.data_wait_fraction / k,
            elapsed_s,
            extra: BTreeMap::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plot

/// Curves drawn by [`plot_curves`], one point per logged step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Global steps (x axis).
    pub step: Vec<f64>,
    /// Loss.
    pub loss: Vec<f64>,
    /// Learning rate.
    pub lr: Vec<f64>,
    /// Teacher entropy.
    pub teacher_entropy: Vec<f64>,
    /// KL(teacher ‖ student).
    pub kl: Vec<f64>,
}

impl History {
    /// Appends a step.
    pub fn push(&mut self, r: &StepRecord) {
        self.step.push(r.global_step as f64);
        self.loss.push(r.loss);
        self.lr.push(r.lr);
        self.teacher_entropy.push(r.teacher_entropy);
        self.kl.push(r.kl);
    }

    /// The step records of `records` (e.g. from [`read_jsonl`] on resume).
    pub fn from_records(records: &[Record]) -> Self {
        let mut h = Self::default();
        for r in records {
            if let Record::Step(s) = r {
                h.push(s);
            }
        }
        h
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.step.len()
    }

    /// No points.
    pub fn is_empty(&self) -> bool {
        self.step.is_empty()
    }
}

/// Colours of the four panels' curves (loss, lr, teacher entropy, KL), also used for each
/// panel's frame so the text-free plot stays readable.
pub const PANEL_COLORS: [[u8; 3]; 4] =
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40]];

/// A 3 × 5 pixel font for the plot's numbers and titles, drawn from code so no font file is
/// needed. Rows top to bottom, 3 bits each (left = 4).
fn glyph(ch: char) -> Option<[u8; 5]> {
    Some(match ch {
        '0' | 'O' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' | 'S' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        'e' => [2, 5, 7, 4, 3],
        'L' => [4, 4, 4, 4, 7],
        'R' => [6, 5, 6, 5, 5],
        'H' => [5, 5, 7, 5, 5],
        'K' => [5, 5, 6, 5, 5],
        ' ' => [0; 5],
        _ => return None,
    })
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

struct Canvas {
    img: image::RgbImage,
}

impl Canvas {
    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as u32) < self.img.width() && (y as u32) < self.img.height() {
            self.img.put_pixel(x as u32, y as u32, image::Rgb(c));
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
        // Bresenham.
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.put(x, y, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Draws `s` with its top-left corner at (x, y) on a white box; `scale` pixels per font dot.
    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: [u8; 3]) {
        let n = s.chars().count() as i64;
        for yy in y - 1..y + 5 * scale + 1 {
            for xx in x - 1..x + n * 4 * scale {
                self.put(xx, yy, [255, 255, 255]);
            }
        }
        for (i, ch) in s.chars().enumerate() {
            let Some(rows) = glyph(ch) else { continue };
            let gx = x + i as i64 * 4 * scale;
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                self.put(gx + col * scale + dx, y + r as i64 * scale + dy, c);
                            }
                        }
                    }
                }
            }
        }
    }

    fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        self.line((x0, y0), (x1, y0), c);
        self.line((x1, y0), (x1, y1), c);
        self.line((x1, y1), (x0, y1), c);
        self.line((x0, y1), (x0, y0), c);
    }

    /// Draws `ys` against `xs` inside the box, y scaled to [min, max] of the finite values (and of
    /// `reference` when given, drawn dashed: e.g. ln K).
    #[allow(clippy::too_many_arguments)]
    fn panel(
        &mut self,
        (x0, y0, x1, y1): (i64, i64, i64, i64),
        xs: &[f64],
        ys: &[f64],
        reference: Option<f64>,
        color: [u8; 3],
        title: &str,
    ) {
        let grid = [225, 225, 225];
        for i in 1..4 {
            let y = y0 + (y1 - y0) * i / 4;
            self.line((x0, y), (x1, y), grid);
            let x = x0 + (x1 - x0) * i / 4;
            self.line((x, y0), (x, y1), grid);
        }
        self.rect(x0, y0, x1, y1, color);
        let pts: Vec<(f64, f64)> = xs
            .iter()
            .zip(ys)
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| (*x, *y))
            .collect();
        let scale = if y1 - y0 >= 160 { 2 } else { 1 };
        if pts.is_empty() {
            let w = title.chars().count() as i64 * 4 * scale;
            self.text((x0 + x1 - w) / 2, y0 + 4, title, scale, color);
            return;
        }
        let (mut lo, mut hi) = pts
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| {
                (l.min(p.1), h.max(p.1))
            });
        if let Some(r) = reference.filter(|r| r.is_finite()) {
            lo = lo.min(r);
            hi = hi.max(r);
        }
        if hi - lo < 1e-12 * hi.abs().max(1.0) {
            lo -= 0.5;
            hi += 0.5;
        }
        let (xmin, xmax) = (pts[0].0, pts[pts.len() - 1].0.max(pts[0].0 + 1e-9));
        let pad = 3;
        let (w, h) = ((x1 - x0 - 2 * pad) as f64, (y1 - y0 - 2 * pad) as f64);
        let map = |x: f64, y: f64| {
            (
                x0 + pad + ((x - xmin) / (xmax - xmin) * w).round() as i64,
                y1 - pad - ((y - lo) / (hi - lo) * h).round() as i64,
            )
        };
        if let Some(r) = reference.filter(|r| r.is_finite()) {
            let (_, yr) = map(xmin, r);
            let mut x = x0 + pad;
            while x < x1 - pad {
                self.line((x, yr), ((x + 5).min(x1 - pad), yr), [120, 120, 120]);
                x += 10;
            }
        }
        if pts.len() == 1 {
            let (px, py) = map(pts[0].0, pts[0].1);
            for d in -1..=1 {
                self.line((px - 1, py + d), (px + 1, py + d), color);
            }
            self.labels((x0, y0, x1, y1), (lo, hi), xmax, title, scale, color);
            return;
        }
        for w in pts.windows(2) {
            let a = map(w[0].0, w[0].1);
            let b = map(w[1].0, w[1].1);
            self.line(a, b, color);
            // Two pixels thick for legibility.
            self.line((a.0, a.1 + 1), (b.0, b.1 + 1), color);
        }
        self.labels((x0, y0, x1, y1), (lo, hi), xmax, title, scale, color);
    }

    /// Title (top centre), y range (top / bottom left) and last step (bottom right).
    fn labels(
        &mut self,
        (x0, y0, x1, y1): (i64, i64, i64, i64),
        (lo, hi): (f64, f64),
        last_step: f64,
        title: &str,
        scale: i64,
        color: [u8; 3],
    ) {
        let label = [60, 60, 60];
        let text_w = |s: &str| s.chars().count() as i64 * 4 * scale;
        let h = 5 * scale;
        self.text((x0 + x1 - text_w(title)) / 2, y0 + 4, title, scale, color);
        self.text(x0 + 5, y0 + 4, &fmt_value(hi), scale, label);
        self.text(x0 + 5, y1 - 4 - h, &fmt_value(lo), scale, label);
        let steps = format!("{}", last_step.round() as i64);
        self.text(x1 - 5 - text_w(&steps), y1 - 4 - h, &steps, scale, label);
    }
}

/// Renders the curves as a `width × height` RGB PNG at `path`: a 2 × 2 grid of panels — loss
/// (top left, "LOSS", dashed line at `ln_k` when given), learning rate (top right, "LR"), teacher
/// entropy (bottom left, "H", dashed at `ln_k`), KL (bottom right, "KL") — each against the
/// global step, y scaled to its own range (max / min printed top / bottom left, last step bottom
/// right), frame and curve in [`PANEL_COLORS`]. Text uses a built-in pixel font: no font files.
/// Written to a temporary file and renamed, so readers never see a partial image.
pub fn plot_curves(
    path: &Path,
    history: &History,
    ln_k: Option<f64>,
    width: u32,
    height: u32,
) -> Result<(), MetricsError> {
    if width < 40 || height < 40 {
        return Err(MetricsError::Plot {
            path: path.to_path_buf(),
            reason: format!("{width}x{height} is too small (at least 40x40)"),
        });
    }
    let mut c = Canvas {
        img: image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255])),
    };
    let (w, h) = (width as i64, height as i64);
    let m = 8;
    let boxes = [
        (m, m, w / 2 - m / 2, h / 2 - m / 2),
        (w / 2 + m / 2, m, w - 1 - m, h / 2 - m / 2),
        (m, h / 2 + m / 2, w / 2 - m / 2, h - 1 - m),
        (w / 2 + m / 2, h / 2 + m / 2, w - 1 - m, h - 1 - m),
    ];
    let series: [(&[f64], Option<f64>, &str); 4] = [
        (&history.loss, ln_k, "LOSS"),
        (&history.lr, None, "LR"),
        (&history.teacher_entropy, ln_k, "H"),
        (&history.kl, None, "KL"),
    ];
    for ((bx, (ys, r, title)), col) in boxes.iter().zip(series).zip(PANEL_COLORS) {
        c.panel(*bx, &history.step, ys, r, col, title);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err("create folder", dir))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    c.img
        .save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| MetricsError::Plot {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    fs::rename(&tmp, path).map_err(io_err("rename", &tmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_are_compact_and_drawable() {
        assert_eq!(fmt_value(11.090354), "11.09");
        assert_eq!(fmt_value(0.04), "0.04000");
        assert_eq!(fmt_value(1.25e-4), "1.25e-4");
        assert_eq!(fmt_value(-2.5), "-2.500");
        assert_eq!(fmt_value(0.0), "0");
        assert_eq!(fmt_value(123456.0), "1.23e5");
        for v in [11.09, 1.25e-4, -2.5, 123456.0, 0.0] {
            assert!(fmt_value(v).chars().all(|c| glyph(c).is_some()), "{v}");
        }
        assert!("LOSS LR H KL".chars().all(|c| glyph(c).is_some()));
    }
}
