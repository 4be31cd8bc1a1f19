//! What is measured in training: the one per-step record ([`StepRecord`]), the per-epoch
//! summary derived from it ([`EpochRecord`]), their JSONL file, and the non-finite-loss guard.
//! How they are shown lives in [`crate::run_logger`] and [`crate::curves`].
//!
//! The official trainer logs `train_loss`, `train_lr`, `train_wd` once per epoch to `log.txt`
//! and exits on a non-finite loss; the paper (Sec. 5.3, Fig. 7) diagnoses collapse from the
//! teacher entropy and KL(teacher‖student), which are logged here every step and watched by
//! [`crate::collapse`].

use crate::loss::LossStats;
use crate::schedule::StepValues;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MetricsError {
    let path = path.to_path_buf();
    move |cause| MetricsError::Io { op, path, cause }
}

/// Name of the epoch record's extra value holding the mean train accuracy of the supervised
/// objective ([`StepRecord::train_top1`], percent).
pub const TRAIN_TOP1: &str = "train_top1";

/// The loss was NaN or infinite: training must stop (official: `sys.exit(1)` after printing
/// "Loss is nan, stopping training").
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "loss is {value} at epoch {}, step {} (1-based): stopping. Usual causes: learning rate \
     too high, fp16 overflow (use fp32/bf16), a too small out_dim or teacher temperature; \
     gradient clipping (optim.clip_grad) helps",
    .epoch + 1,
    .step + 1
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

/// The one record of a training step: what the trainer hands the run logger each step and
/// what a `"kind": "step"` JSONL line holds: `epoch`, `step`, `global_step`, `lr`, `wd`,
/// `momentum`, `images_per_s`, `data_wait_fraction`, and the loss statistics ([`LossStats`],
/// flattened): the total `loss` and each term's statistics as `"term/statistic"` keys
/// (`dino/loss`, `dino/teacher_entropy`, `dino/kl`, `dino/teacher_mean_entropy`,
/// `dino/center_norm`, `dino/teacher_temp`, `koleo/loss`, …). Lines written before the terms
/// had names (`teacher_entropy`, `kl`, … at the top level) read as the same statistics.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepRecord {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Step within the epoch (0-based).
    pub step: usize,
    /// Global iteration (schedule index).
    pub global_step: usize,
    /// Loss (of the global batch, averaged over ranks) and its named terms with their
    /// statistics (nats).
    #[serde(flatten)]
    pub stats: LossStats,
    /// Learning rate.
    pub lr: f64,
    /// Weight decay of the regularized group.
    pub wd: f64,
    /// Teacher EMA momentum.
    pub momentum: f64,
    /// Training throughput, images per second (one image = all its crops).
    pub images_per_s: f64,
    /// Fraction of the step's wall time spent waiting for the data loader, in [0, 1].
    pub data_wait_fraction: f64,
    /// fp16 only: the loss scale this step's backward used (`GradScaler.get_scale()` before
    /// its update). Absent from the JSON line in other precisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// fp16 only: `true` when a gradient was inf or NaN, so the optimizer step was skipped and
    /// the scale halved. Absent from the JSON line in other precisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_step: Option<bool>,
    /// Supervised objective only: top-1 accuracy (percent) of the step's training crops before
    /// the update. Absent from DINO's JSON lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_top1: Option<f64>,
}

impl StepRecord {
    /// The record of iteration `global_step` (= `epoch · niter + step`): its scheduled values
    /// `sv`, the loss statistics, and throughput from `timing`.
    pub fn new(
        (epoch, step, global_step): (usize, usize, usize),
        sv: &StepValues,
        stats: LossStats,
        timing: &StepTiming,
    ) -> Self {
        let total = timing.total.as_secs_f64();
        Self {
            epoch,
            step,
            global_step,
            stats,
            lr: sv.lr,
            wd: sv.wd,
            momentum: sv.momentum,
            images_per_s: timing.images as f64 / total,
            data_wait_fraction: timing.data_wait.as_secs_f64() / total,
            loss_scale: None,
            skipped_step: None,
            train_top1: None,
        }
    }
}

/// Wall-clock cost of one step, measured by the loop.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepTiming {
    /// Images of the batch on this process.
    pub images: usize,
    /// Time spent waiting for the data loader.
    pub data_wait: Duration,
    /// The whole step: the wait, input upload, forward, backward, optimizer step and EMA.
    pub total: Duration,
}

/// One JSONL line per epoch (`"kind": "epoch"`): means of the epoch's steps plus free-form
/// extras (e.g. `knn_top1`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Steps averaged.
    pub steps: usize,
    /// Learning rate at the epoch's last step (official `train_lr` is the epoch mean; both kept).
    pub lr_last: f64,
    /// Mean learning rate (official `train_lr`).
    pub lr: f64,
    /// Mean weight decay (official `train_wd`).
    pub wd: f64,
    /// Mean teacher momentum.
    pub momentum: f64,
    /// The mean loss (official `train_loss`) and each term's statistics over the epoch's steps
    /// ([`LossStats::epoch_summary`]: means, and the last step's teacher temperature and center
    /// norm), under the keys of the step lines (`loss`, `dino/teacher_entropy`, `dino/kl`, …).
    #[serde(flatten)]
    pub stats: LossStats,
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

impl EpochRecord {
    /// The summary of `epoch` from its step records, in order: means of the per-step values
    /// (summed from 0 in step order, then divided by the count), and the last step's learning
    /// rate, teacher temperature and center norm (statistics of the terms by name, see
    /// [`LossStats::epoch_summary`]); zeros and no terms when `steps` is empty. `extra` holds
    /// the mean train accuracy as [`TRAIN_TOP1`] when the steps have one (supervised), and is
    /// empty otherwise; epoch hooks such as the online k-NN add theirs.
    pub fn from_steps(epoch: usize, steps: &[StepRecord], elapsed_s: f64) -> Self {
        // One computation for a whole epoch and for one carried across a resume.
        let mut sums = crate::epoch_sums::EpochSums::new(epoch);
        steps.iter().for_each(|r| sums.add(r));
        sums.record(elapsed_s)
    }
}

/// Removes from `path` (a run's `metrics.jsonl`, when it exists) the records past a resume
/// position: step records of global step `global_step` or later and epoch records of epoch
/// `epoch` or later, which an interrupted invocation logged after the checkpoint it left and
/// which the resumed run trains again. Other lines are kept byte for byte; a torn last line is
/// dropped. Returns how many records were removed (0 leaves the file untouched).
///
/// # Errors
/// [`MetricsError::Io`] when the file cannot be read or rewritten.
pub fn truncate_past(path: &Path, global_step: usize, epoch: usize) -> Result<usize, MetricsError> {
    if !path.exists() {
        return Ok(0);
    }
    let text = fs::read_to_string(path).map_err(io_err("read", path))?;
    let mut kept = String::with_capacity(text.len());
    let mut dropped = 0;
    let torn = !text.is_empty() && !text.ends_with('\n');
    let n = text.lines().count();
    for (i, line) in text.lines().enumerate() {
        let keep = match serde_json::from_str::<Record>(line) {
            Ok(Record::Step(r)) => r.global_step < global_step,
            Ok(Record::Epoch(r)) => r.epoch < epoch,
            // Unparsable lines are not ours to judge, except a torn last line.
            Err(_) => !(torn && i + 1 == n),
        };
        if keep {
            kept.push_str(line);
            kept.push('\n');
        } else if !line.trim().is_empty() {
            dropped += 1;
        }
    }
    if dropped > 0 {
        // Written beside and renamed, so a crash now leaves the old file or the new one.
        let tmp = path.with_extension("jsonl.tmp");
        fs::write(&tmp, kept).map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("replace", path))?;
    }
    Ok(dropped)
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

/// The step records of `records`, in file order (e.g. a resumed run's history for the curves).
pub fn step_records(records: Vec<Record>) -> Vec<StepRecord> {
    records
        .into_iter()
        .filter_map(|r| match r {
            Record::Step(s) => Some(s),
            Record::Epoch(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::stats::{
        dino_term, CENTER_NORM, DINO, KL, KOLEO, LOSS, TEACHER_ENTROPY, TEACHER_MEAN_ENTROPY,
        TEACHER_TEMP,
    };
    use crate::loss::TermStats;

    /// A step line as every `metrics.jsonl` before the one-record refactor wrote it.
    const OLD_STEP_LINE: &str = r#"{"kind":"step","epoch":1,"step":2,"global_step":12,"loss":10.5,"lr":0.0001,"wd":0.04,"momentum":0.996,"teacher_temp":0.04,"teacher_entropy":3.25,"teacher_mean_entropy":4.0,"kl":7.25,"center_norm":0.5,"images_per_s":120.0,"data_wait_fraction":0.125}"#;

    /// A KoLeo step line and an epoch line as `metrics.jsonl` was written before the terms had
    /// names (the format of the KoLeo merge, main at efb2e85).
    const OLD_KOLEO_LINE: &str = r#"{"kind":"step","epoch":0,"step":0,"global_step":0,"loss":8.5,"teacher_entropy":7.5,"kl":0.75,"teacher_mean_entropy":7.6,"center_norm":0.0,"teacher_temp":0.04,"koleo":0.25,"lr":0.0,"wd":0.04,"momentum":0.99,"images_per_s":50.0,"data_wait_fraction":0.01}"#;
    const OLD_EPOCH_LINE: &str = r#"{"kind":"epoch","epoch":0,"steps":3,"loss":9.0,"lr_last":0.0003,"lr":0.0002,"wd":0.04,"momentum":0.99,"teacher_temp":0.04,"teacher_entropy":7.0,"teacher_mean_entropy":7.5,"kl":2.0,"center_norm":0.25,"images_per_s":10.0,"data_wait_fraction":0.5,"elapsed_s":2.5,"extra":{"knn_top1":31.5}}"#;

    #[test]
    fn old_lines_read_as_named_terms_and_new_lines_name_every_statistic() {
        let Record::Step(r) = serde_json::from_str::<Record>(OLD_STEP_LINE).unwrap() else {
            panic!("not a step record");
        };
        assert_eq!((r.epoch, r.step, r.global_step), (1, 2, 12));
        assert_eq!(r.stats.loss, 10.5);
        assert_eq!(r.stats.terms.len(), 1, "{:?}", r.stats);
        assert_eq!(r.stats.get(DINO, LOSS), Some(10.5));
        assert_eq!(r.stats.get(DINO, KL), Some(7.25));
        assert_eq!(r.stats.get(DINO, TEACHER_ENTROPY), Some(3.25));
        assert_eq!(r.stats.get(DINO, TEACHER_MEAN_ENTROPY), Some(4.0));
        assert_eq!(r.stats.get(DINO, CENTER_NORM), Some(0.5));
        assert_eq!(r.stats.get(DINO, TEACHER_TEMP), Some(0.04));
        assert_eq!(
            (r.lr, r.images_per_s, r.data_wait_fraction),
            (1e-4, 120.0, 0.125)
        );
        // Written again: the total and every DINO statistic under its "dino/" key, the same
        // values, and nothing else changed.
        let old: serde_json::Value = serde_json::from_str(OLD_STEP_LINE).unwrap();
        let new = serde_json::to_value(Record::Step(r.clone())).unwrap();
        let mut renamed = old.as_object().unwrap().clone();
        for stat in [
            TEACHER_ENTROPY,
            KL,
            TEACHER_MEAN_ENTROPY,
            CENTER_NORM,
            TEACHER_TEMP,
        ] {
            let v = renamed.remove(stat).unwrap();
            renamed.insert(format!("dino/{stat}"), v);
        }
        renamed.insert("dino/loss".into(), old["loss"].clone());
        assert_eq!(new, serde_json::Value::Object(renamed));
        let line = serde_json::to_string(&Record::Step(r.clone())).unwrap();
        assert_eq!(
            serde_json::from_str::<Record>(&line).unwrap(),
            Record::Step(r)
        );

        // KoLeo: the old total was DINO's loss plus the KoLeo term.
        let Record::Step(k) = serde_json::from_str::<Record>(OLD_KOLEO_LINE).unwrap() else {
            panic!("not a step record");
        };
        assert_eq!(k.stats.loss, 8.5);
        assert_eq!(k.stats.get(DINO, LOSS), Some(8.25));
        assert_eq!(k.stats.get(DINO, KL), Some(0.75));
        assert_eq!(k.stats.get(KOLEO, LOSS), Some(0.25));
        let line = serde_json::to_string(&Record::Step(k)).unwrap();
        assert!(line.contains(r#""koleo/loss":0.25"#), "{line}");
        assert!(
            !line.contains("weight"),
            "an unknown weight is not written: {line}"
        );

        let Record::Epoch(e) = serde_json::from_str::<Record>(OLD_EPOCH_LINE).unwrap() else {
            panic!("not an epoch record");
        };
        assert_eq!((e.epoch, e.steps, e.stats.loss), (0, 3, 9.0));
        assert_eq!(e.stats.get(DINO, KL), Some(2.0));
        assert_eq!(e.stats.get(DINO, CENTER_NORM), Some(0.25));
        assert_eq!(e.extra.get("knn_top1"), Some(&31.5));
        let again = serde_json::to_string(&Record::Epoch(e.clone())).unwrap();
        assert!(again.contains(r#""dino/kl":2.0"#), "{again}");
        assert_eq!(
            serde_json::from_str::<Record>(&again).unwrap(),
            Record::Epoch(e)
        );
    }

    #[test]
    fn a_weighted_term_round_trips_with_its_weight() {
        let stats = LossStats::from_terms(vec![
            dino_term(8.0, 7.0, 7.5, 0.5, 0.04),
            TermStats::new(KOLEO, 0.1, -0.5),
        ]);
        assert_eq!(stats.loss, 7.5);
        let r = StepRecord {
            stats,
            ..StepRecord::default()
        };
        let line = serde_json::to_string(&Record::Step(r.clone())).unwrap();
        for key in [
            r#""loss":7.5"#,
            r#""dino/loss":8.0"#,
            r#""dino/kl":1.0"#,
            r#""koleo/loss":-0.5"#,
            r#""koleo/weight":0.1"#,
        ] {
            assert!(line.contains(key), "{key} in {line}");
        }
        assert!(!line.contains("dino/weight"), "{line}");
        assert_eq!(
            serde_json::from_str::<Record>(&line).unwrap(),
            Record::Step(r)
        );
    }

    #[test]
    fn epoch_summary_means_steps_and_keeps_the_last_values() {
        let step = |i: usize, loss: f64| StepRecord {
            epoch: 0,
            step: i,
            global_step: i,
            stats: LossStats::from_terms(vec![dino_term(
                loss,
                1.0,
                2.0,
                10.0 + i as f64,
                i as f64,
            )]),
            lr: 1e-4 * (i + 1) as f64,
            ..StepRecord::default()
        };
        let steps: Vec<StepRecord> = (0..3).map(|i| step(i, 10.0 - i as f64)).collect();
        let e = EpochRecord::from_steps(0, &steps, 2.5);
        assert_eq!((e.steps, e.stats.loss, e.elapsed_s), (3, 9.0, 2.5));
        assert!((e.lr - 2e-4).abs() < 1e-15 && (e.lr_last - 3e-4).abs() < 1e-15);
        // The DINO term's statistics by name: means, and the last temperature and center norm.
        assert_eq!(e.stats.get(DINO, TEACHER_TEMP), Some(2.0));
        assert_eq!(e.stats.get(DINO, CENTER_NORM), Some(12.0));
        assert_eq!(e.stats.get(DINO, LOSS), Some(9.0));
        assert_eq!(e.stats.get(DINO, KL), Some(8.0));
        assert_eq!(e.stats.get(DINO, TEACHER_MEAN_ENTROPY), Some(2.0));
        // The mean is the running sum from 0 in step order, as the trainer always computed it.
        let losses = [0.1, 0.2, 0.3];
        let steps: Vec<StepRecord> = losses.iter().map(|&l| step(0, l)).collect();
        assert_eq!(
            EpochRecord::from_steps(0, &steps, 0.0).stats.loss.to_bits(),
            ((0.0 + 0.1 + 0.2 + 0.3) / 3.0f64).to_bits()
        );
        let empty = EpochRecord::from_steps(4, &[], 0.0);
        assert_eq!(
            (empty.steps, empty.stats.loss.to_bits()),
            (0, 0.0f64.to_bits())
        );
        assert!(empty.stats.terms.is_empty());
    }
}
