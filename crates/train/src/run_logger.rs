//! The run logger: fed one [`StepRecord`] per step, it shows and keeps what the run measures —
//! the `metrics.jsonl` line (every `runtime.log_every` steps and at each epoch's last), the
//! progress bar or a plain log line, the collapse monitor ([`crate::collapse`]) — and at each
//! epoch end the epoch summary, the epoch hooks (online k-NN, [`crate::online_knn`]) and
//! `curves.png` ([`crate::curves`]).
//!
//! Rank 0 writes, shows and judges; other ranks only keep the means their summary reports.
//! The curves are drawn from the step records kept in memory: the run folder's earlier
//! `metrics.jsonl` lines (a resumed run) are read once, when the logger opens.

use crate::collapse::{CollapseConfig, CollapseMonitor};
use crate::curves::plot_curves;
use crate::epoch_sums::EpochSums;
use crate::loss::stats::{DINO, KL, TEACHER_ENTROPY};
use crate::loss::LossStats;
use crate::metrics::TRAIN_TOP1;
use crate::metrics::{read_jsonl, step_records, MetricsWriter, StepRecord, StepTiming};
use crate::objective::TrainMethod;
use dino_config::{Config, Objective};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Work run at the end of chosen epochs (rank 0), whose named values join the epoch's record.
pub trait EpochHook {
    /// Whether the hook runs at the end of `epoch` (0-based).
    fn due(&self, epoch: usize) -> bool;
    /// Runs the hook on the networks as they are at the end of `epoch`.
    ///
    /// # Errors
    /// Whatever the hook cannot do; it stops the run.
    fn run(&mut self, epoch: usize, method: &TrainMethod) -> anyhow::Result<BTreeMap<String, f64>>;
}

/// What the logger saw over this invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTotals {
    /// Steps done.
    pub steps: usize,
    /// First loss of this invocation (NaN when no step was done).
    pub first_loss: f64,
    /// Mean loss over the last epoch, or over the steps of an epoch left unfinished.
    pub last_loss: f64,
    /// Images per second of this process, over the wall time since the logger opened.
    pub images_per_s: f64,
    /// Fraction of that wall time spent waiting for the data loader.
    pub data_wait_fraction: f64,
    /// Collapse warnings that fired.
    pub collapse_warnings: Vec<String>,
}

/// Rank 0's outputs: the files and the monitor.
struct Outputs {
    metrics: MetricsWriter,
    curves: PathBuf,
    history: Vec<StepRecord>,
    /// DINO only: the supervised objective has no teacher to collapse.
    collapse: Option<CollapseMonitor>,
    hooks: Vec<Box<dyn EpochHook>>,
    bar: indicatif::ProgressBar,
}

/// See the module doc.
pub struct RunLogger {
    out: Option<Outputs>,
    niter: usize,
    /// Configured epochs, for the `epoch e/E` of the progress (1-based there).
    epochs: usize,
    log_every: usize,
    ln_k: f64,
    /// The running epoch's sums, carried over from the checkpoint on a resume inside an
    /// epoch ([`RunLogger::continue_epoch`]).
    epoch_sums: EpochSums,
    epoch_start: Instant,
    run_start: Instant,
    steps: usize,
    images: usize,
    data_wait: Duration,
    first_loss: f64,
    last_epoch_loss: f64,
    warnings: Vec<String>,
}

impl RunLogger {
    /// A logger for the run configured by `cfg`, in `dir`, with `niter` steps an epoch and
    /// `remaining` steps left to train (the progress bar's length). `main` (rank 0) opens
    /// `dir/metrics.jsonl` for appending, reads the step records it already holds for the
    /// curves, and shows a progress bar when `progress` is set and stderr is a terminal
    /// (plain log lines otherwise). `hooks` run at epoch ends on rank 0.
    ///
    /// # Errors
    /// `metrics.jsonl` cannot be opened for appending.
    pub fn open(
        cfg: &Config,
        dir: &Path,
        niter: usize,
        remaining: usize,
        main: bool,
        progress: bool,
        hooks: Vec<Box<dyn EpochHook>>,
    ) -> anyhow::Result<Self> {
        let out = if main {
            let path = dir.join("metrics.jsonl");
            let history = if path.exists() {
                read_jsonl(&path).map(step_records).unwrap_or_else(|e| {
                    tracing::warn!("curves.png starts afresh: {e}");
                    Vec::new()
                })
            } else {
                Vec::new()
            };
            Some(Outputs {
                metrics: MetricsWriter::append(&path)?,
                curves: dir.join("curves.png"),
                history,
                // No collapse verdict during the lr warm-up, when a healthy run is still near
                // uniform.
                collapse: (cfg.method.objective == Objective::Dino).then(|| {
                    CollapseMonitor::new(
                        cfg.head.out_dim,
                        CollapseConfig::for_warmup(cfg.schedule.warmup_epochs * niter),
                    )
                }),
                hooks,
                bar: progress_bar(progress, remaining),
            })
        } else {
            None
        };
        Ok(Self {
            out,
            niter,
            epochs: cfg.optim.epochs,
            log_every: cfg.runtime.log_every,
            ln_k: (cfg.head.out_dim as f64).ln(),
            epoch_sums: EpochSums::new(0),
            epoch_start: Instant::now(),
            run_start: Instant::now(),
            steps: 0,
            images: 0,
            data_wait: Duration::ZERO,
            first_loss: f64::NAN,
            last_epoch_loss: f64::NAN,
            warnings: Vec::new(),
        })
    }

    /// Steps logged by this invocation.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Continues the epoch whose earlier steps `sums` holds (a resume inside an epoch, the
    /// sums read from the checkpoint): its summary then covers all of its steps, those of
    /// earlier invocations included.
    pub fn continue_epoch(&mut self, sums: EpochSums) {
        self.epoch_sums = sums;
    }

    /// The running epoch's sums so far, its wall time up to now included (saved in a
    /// checkpoint written inside an epoch).
    pub fn epoch_sums(&self) -> EpochSums {
        let mut sums = self.epoch_sums.clone();
        sums.elapsed_s.0 += self.epoch_start.elapsed().as_secs_f64();
        sums
    }

    /// Logs one step: its record, and the timing its throughput came from.
    ///
    /// # Errors
    /// `metrics.jsonl` cannot be written.
    pub fn log_step(&mut self, record: StepRecord, timing: &StepTiming) -> anyhow::Result<()> {
        self.steps += 1;
        self.images += timing.images;
        self.data_wait += timing.data_wait;
        if self.first_loss.is_nan() {
            self.first_loss = record.stats.loss;
        }
        let since_start = self.run_start.elapsed().as_secs_f64();
        let images_per_s = self.images as f64 / since_start;
        if let Some(out) = self.out.as_mut() {
            let (epoch, step) = (record.epoch, record.step);
            if step % self.log_every == 0 || step + 1 == self.niter {
                out.metrics.write_step(&record)?;
                out.history.push(record.clone());
                if out.bar.is_hidden() {
                    tracing::info!(
                        "epoch {}/{} step {}/{} loss {} lr {:.2e} {images_per_s:.1} img/s since start, data wait {:.0}%",
                        epoch + 1,
                        self.epochs,
                        step + 1,
                        self.niter,
                        loss_with_terms(&record.stats),
                        record.lr,
                        100.0 * self.data_wait.as_secs_f64() / since_start
                    );
                }
            }
            let warning = out
                .collapse
                .as_mut()
                .and_then(|c| c.observe(record.global_step, &record.stats));
            if let Some(w) = warning {
                let msg = w.to_string();
                tracing::warn!("{msg}");
                self.warnings.push(msg);
            }
            out.bar.set_message(format!(
                "epoch {}/{} loss {:.4} lr {:.2e} {images_per_s:.1} img/s",
                epoch + 1,
                self.epochs,
                record.stats.loss,
                record.lr
            ));
            out.bar.inc(1);
        }
        if self.epoch_sums.epoch != record.epoch || self.epoch_sums.steps == 0 {
            self.epoch_sums = EpochSums::new(record.epoch);
        }
        self.epoch_sums.add(&record);
        Ok(())
    }

    /// Closes `epoch`: on rank 0 writes its summary (with the due hooks' values), redraws the
    /// curves and logs a line; every rank starts the next epoch's means.
    ///
    /// # Errors
    /// A hook fails, or `metrics.jsonl` cannot be written.
    pub fn end_epoch(&mut self, epoch: usize, method: &TrainMethod) -> anyhow::Result<()> {
        let elapsed = self.epoch_start.elapsed().as_secs_f64();
        let mut rec = self.epoch_sums.record(elapsed);
        rec.epoch = epoch;
        self.last_epoch_loss = rec.stats.loss;
        self.epoch_sums = EpochSums::new(epoch + 1);
        self.epoch_start = Instant::now();
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        for hook in out.hooks.iter_mut().filter(|h| h.due(epoch)) {
            rec.extra.extend(hook.run(epoch, method)?);
        }
        out.metrics.write_epoch(&rec)?;
        if let Err(e) = plot_curves(&out.curves, &out.history, Some(self.ln_k), 900, 600) {
            tracing::warn!("could not draw curves.png: {e}");
        }
        let mut diagnostics = String::new();
        if let Some(top1) = rec.extra.get(TRAIN_TOP1) {
            diagnostics = format!(", train top-1 {top1:.2}%");
        }
        // The DINO term's teacher diagnostics, by name.
        if let (Some(h), Some(kl)) = (
            rec.stats.get(DINO, TEACHER_ENTROPY),
            rec.stats.get(DINO, KL),
        ) {
            diagnostics = format!(", teacher entropy {h:.3}, KL {kl:.3}");
        }
        tracing::info!(
            "epoch {}/{} done: loss {}{diagnostics}, {:.1} img/s in this epoch",
            epoch + 1,
            self.epochs,
            loss_with_terms(&rec.stats),
            rec.images_per_s
        );
        Ok(())
    }

    /// Clears the progress bar and returns the totals of this invocation (throughput over the
    /// wall time since the logger opened, final checkpoint included when called after it).
    pub fn finish(self) -> RunTotals {
        if let Some(out) = &self.out {
            out.bar.finish_and_clear();
        }
        let wall = self.run_start.elapsed().as_secs_f64().max(1e-9);
        let last_loss = if self.epoch_sums.steps == 0 {
            self.last_epoch_loss
        } else {
            self.epoch_sums.record(0.0).stats.loss
        };
        RunTotals {
            steps: self.steps,
            first_loss: self.first_loss,
            last_loss,
            images_per_s: self.images as f64 / wall,
            data_wait_fraction: self.data_wait.as_secs_f64() / wall,
            collapse_warnings: self.warnings,
        }
    }
}

/// The total loss for a log line, with each term's value beside it when there are several
/// (`8.1234 (dino 8.0000, koleo 0.1234)`).
fn loss_with_terms(stats: &LossStats) -> String {
    let total = format!("{:.4}", stats.loss);
    if stats.terms.len() < 2 {
        return total;
    }
    let terms: Vec<String> = stats
        .terms
        .iter()
        .map(|t| format!("{} {:.4}", t.name, t.loss()))
        .collect();
    format!("{total} ({})", terms.join(", "))
}

fn progress_bar(enabled: bool, total: usize) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::Dist;
    use crate::loss::TermStats;
    use crate::metrics::{EpochRecord, Record, StepTiming};

    /// A tiny model: the logger only needs a method to hand its hooks.
    fn tiny_config(dir: &Path) -> Config {
        Config::from_toml_str(
            &format!(
                "[model]\narch = \"custom\"\nembed_dim = 16\ndepth = 1\nnum_heads = 2\n\
                 patch_size = 4\nimg_size = 8\n[head]\nout_dim = 16\nhidden_dim = 16\n\
                 bottleneck_dim = 8\n[augmentation]\nglobal_crops_size = 8\nlocal_crops_size = 4\n\
                 [eval]\nn_last_blocks = 1\n[runtime]\nlog_every = 2\n[checkpoint]\noutput_dir = \"{}\"\n",
                dir.display()
            ),
            &[],
        )
        .unwrap()
    }

    /// Reports one value at the end of epoch 1.
    struct Probe;
    impl EpochHook for Probe {
        fn due(&self, epoch: usize) -> bool {
            epoch == 1
        }
        fn run(&mut self, _: usize, _: &TrainMethod) -> anyhow::Result<BTreeMap<String, f64>> {
            Ok(BTreeMap::from([("probe".to_string(), 0.5)]))
        }
    }

    fn record(epoch: usize, step: usize, loss: f64) -> StepRecord {
        StepRecord {
            epoch,
            step,
            global_step: epoch * 3 + step,
            stats: LossStats::from_terms(vec![TermStats::new(DINO, 1.0, loss)]),
            ..StepRecord::default()
        }
    }

    #[test]
    fn logs_every_nth_step_and_epoch_summaries_on_rank_0() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = tiny_config(dir.path());
        // A resumed run: one step line already on disk joins the curves' history.
        std::fs::write(
            dir.path().join("metrics.jsonl"),
            serde_json::to_string(&Record::Step(record(0, 0, 9.0))).unwrap() + "\n",
        )
        .unwrap();
        let method = TrainMethod::Dino(Box::new(
            crate::method::DinoMethod::new(
                &cfg,
                4,
                tch::Device::Cpu,
                dino_model::ComputePrecision::Fp32,
                &Dist::single(),
            )
            .unwrap(),
        ));
        let hooks: Vec<Box<dyn EpochHook>> = vec![Box::new(Probe)];
        let mut log = RunLogger::open(&cfg, dir.path(), 3, 6, true, false, hooks).unwrap();
        let timing = StepTiming {
            images: 4,
            data_wait: Duration::from_millis(1),
            total: Duration::from_millis(4),
        };
        for epoch in 1..3 {
            for step in 0..3 {
                let loss = 8.0 - (epoch * 3 + step) as f64;
                log.log_step(record(epoch, step, loss), &timing).unwrap();
            }
            log.end_epoch(epoch, &method).unwrap();
        }
        log.log_step(record(3, 0, 1.5), &timing).unwrap();
        let out = log.out.as_ref().unwrap();
        // log_every = 2 over 3-step epochs: steps 0 and 2 (the epoch's last) of each epoch.
        let logged: Vec<(usize, usize)> = out.history.iter().map(|r| (r.epoch, r.step)).collect();
        assert_eq!(logged, [(0, 0), (1, 0), (1, 2), (2, 0), (2, 2), (3, 0)]);
        assert!(dir.path().join("curves.png").exists());

        let records = read_jsonl(&dir.path().join("metrics.jsonl")).unwrap();
        let epochs: Vec<&EpochRecord> = records
            .iter()
            .filter_map(|r| match r {
                Record::Epoch(e) => Some(e),
                Record::Step(_) => None,
            })
            .collect();
        assert_eq!(records.len(), 1 + 5 + 2);
        assert_eq!(
            (epochs[0].epoch, epochs[0].steps, epochs[0].stats.loss),
            (1, 3, 4.0)
        );
        // The hook ran at the end of epoch 1 only, its value in that epoch's record.
        assert_eq!(epochs[0].extra.get("probe"), Some(&0.5));
        assert!(epochs[1].extra.is_empty());

        let totals = log.finish();
        assert_eq!(totals.steps, 7);
        assert_eq!(totals.first_loss, 5.0);
        // The unfinished epoch 3's mean, not epoch 2's.
        assert_eq!(totals.last_loss, 1.5);
        assert!(totals.collapse_warnings.is_empty());
    }

    #[test]
    fn other_ranks_write_nothing_but_keep_their_means() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = tiny_config(dir.path());
        let mut log = RunLogger::open(&cfg, dir.path(), 3, 3, false, false, vec![]).unwrap();
        for step in 0..2 {
            log.log_step(record(0, step, 2.0 + step as f64), &StepTiming::default())
                .unwrap();
        }
        let totals = log.finish();
        assert_eq!((totals.steps, totals.last_loss), (2, 2.5));
        assert!(!dir.path().join("metrics.jsonl").exists());
    }
}
