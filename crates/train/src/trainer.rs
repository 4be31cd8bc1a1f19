//! The DINO training loop (official `train_dino` + `train_one_epoch`, `main_dino.py`; dinov2's
//! `do_train`), read top to bottom in [`train`]: join the job, open the data, build the method
//! of `method.objective` ([`TrainMethod::new`]: [`crate::method::DinoMethod`], student, teacher,
//! loss, optimizer; or the supervised baseline, [`crate::supervised::SupervisedMethod`]), resume
//! if asked, then per iteration: schedules → [`TrainMethod::forward_backward`] →
//! [`TrainMethod::optimizer_step`] → [`TrainMethod::update_teacher`] → one record to the
//! [`RunLogger`] → the [`Checkpointer`]'s save policy; at each epoch end the logger's summary,
//! hooks (online k-NN) and curves. The setup helpers follow `train`.

use crate::accumulation::{optimizer_steps, Window};
use crate::checkpoint::{self, CheckpointMeta};
use crate::distributed::Dist;
use crate::epoch_sums::EpochSums;
use crate::metrics::{NonFiniteLoss, StepRecord, StepTiming};
use crate::objective::{StepStats, TrainMethod};
use crate::online_knn::OnlineKnn;
use crate::run_logger::{EpochHook, RunLogger};
use crate::runtime::{apply_threads, Threads};
use crate::save_policy::{next_position, Checkpointer};
use crate::schedule::Schedules;
use crate::supervised::supervised_augmentation;
use anyhow::{bail, Context};
use dino_config::{Config, Objective};
use dino_data::augmentation::DataAugmentationDino;
use dino_data::dataset::{open_configured, Dataset};
use dino_data::loader::{batches_per_epoch, Loader, LoaderOptions, Shard};
use dino_model::{resolve_precision, select_device, Bf16Support, ComputePrecision, ModelError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::Device;

/// Options of one `dino train` invocation that are not part of the run configuration.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from the latest checkpoint in `checkpoint.output_dir`.
    pub resume: bool,
    /// Stop after this many optimizer steps of this invocation (tests, smoke runs); the
    /// schedules still span the configured epochs.
    pub max_steps: Option<usize>,
    /// Show an interactive progress bar (plain log lines when false or not a terminal).
    pub progress: bool,
    /// Start student and teacher from these weights (`--init-from`, see
    /// [`crate::init_from`]); optimizer, schedules and center start fresh. Not with `resume`.
    pub init_from: Option<PathBuf>,
    /// Set (by a SIGINT/SIGTERM handler of the caller) to stop the run cleanly: the step under
    /// way finishes, the latest checkpoint is written at that position, and the summary says
    /// `interrupted`. Checked once per optimizer step.
    pub stop: Option<&'static AtomicBool>,
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainSummary {
    /// Run folder.
    pub output_dir: PathBuf,
    /// Epoch and step-in-epoch where the run stopped (the resume position).
    pub epoch: usize,
    /// Step within `epoch`.
    pub step_in_epoch: usize,
    /// Iterations done by this invocation.
    pub steps: usize,
    /// Mean loss over the last epoch (or the steps done).
    pub last_loss: f64,
    /// First logged loss of this invocation.
    pub first_loss: f64,
    /// Images per second of this process over this invocation (an image = all its crops).
    pub images_per_s: f64,
    /// Processes that trained together (the whole job sees `images_per_s · world_size`).
    pub world_size: usize,
    /// This process's rank (0 reports for the job).
    pub rank: usize,
    /// Fraction of the wall time spent waiting for the data loader.
    pub data_wait_fraction: f64,
    /// Collapse warnings that fired.
    pub collapse_warnings: Vec<String>,
    /// Samples skipped because they failed to decode.
    pub failed_samples: u64,
    /// Threads in force.
    pub threads: Threads,
    /// Device used.
    pub device: String,
    /// Optimizer steps in an epoch.
    pub steps_per_epoch: usize,
    /// Whether the run stopped because [`TrainOptions::stop`] was set (the checkpoint holds the
    /// position `epoch`, `step_in_epoch`).
    pub interrupted: bool,
    /// Forward precision this invocation ran in, `fp32`, `bf16` or `fp16` (`runtime.precision`
    /// with `auto` resolved on this machine).
    pub precision: String,
}

/// Trains DINO as configured; see the module doc for the order of operations.
///
/// # Errors
/// A dataset that cannot be opened, a checkpoint that cannot be read or written, too many
/// undecodable images, or a non-finite loss (the message says which checkpoint, if any, the run
/// folder holds to resume from).
pub fn train(cfg: &Config, opts: &TrainOptions) -> anyhow::Result<TrainSummary> {
    let threads = apply_threads(&cfg.runtime);
    // Under a launcher (`dino launch`, torchrun) the job's variables are set: join it first, so
    // a bad variable or an unreachable rank 0 fails before any work.
    let dist = Dist::from_env(Duration::from_secs(cfg.runtime.dist_timeout_s))?;
    let device = training_device(cfg, &dist)?;
    let precision = training_precision(cfg, device, &dist);
    let out_dir = PathBuf::from(&cfg.checkpoint.output_dir);

    // Data first: a missing or empty dataset fails before any model is built.
    let data = TrainData::open(cfg, &dist)?;
    let niter = data.niter;
    if dist.is_main() {
        tracing::info!(
            "{}: {} images, {} classes; {niter} steps per epoch × {} epochs; run folder {}",
            cfg.data.path,
            data.dataset.len(),
            data.n_classes,
            cfg.optim.epochs,
            out_dir.display()
        );
        if let Some(note) = unused_images_note(cfg, data.dataset.len(), niter, dist.world_size) {
            tracing::info!("{note}");
        }
    }
    let knn = if dist.is_main() {
        OnlineKnn::open(cfg)?
    } else {
        None
    };
    let mut method = TrainMethod::new(
        cfg,
        data.transform.n_crops(),
        data.n_classes,
        device,
        precision,
        &dist,
    )?;
    if let Some(path) = &opts.init_from {
        anyhow::ensure!(
            !opts.resume,
            "--init-from starts a new run; it cannot go with --resume"
        );
        let report = method.init_from(path)?;
        if dist.is_main() {
            tracing::info!("{}", report.describe());
        }
    }
    // The official lr rule uses the effective batch of an optimizer step:
    // lr · batch_size_per_gpu · accum_steps · world_size / 256.
    let schedules = Schedules::new(cfg, niter, dist.world_size)?;
    let (mut epoch, mut step, carried) =
        start_run(cfg, opts.resume, &out_dir, &mut method, niter, &dist)?;

    if opts.resume && dist.is_main() {
        // Steps past the checkpoint were logged by the interrupted invocation and are run
        // again now: their records go, so the log never repeats a step.
        let path = out_dir.join("metrics.jsonl");
        let dropped = crate::metrics::truncate_past(&path, epoch * niter + step, epoch)?;
        if dropped > 0 {
            tracing::info!(
                "{}: {dropped} records past the checkpoint (global step {} on) removed; they \
                 are trained again",
                path.display(),
                epoch * niter + step
            );
        }
    }
    let loader = data.spawn_loader(cfg, epoch, step)?;
    let loader_stats = loader.stats();
    let mut checkpointer = Checkpointer::new(cfg, &out_dir, niter, dist.world_size, dist.is_main());
    let hooks: Vec<Box<dyn EpochHook>> = knn.into_iter().map(|k| Box::new(k) as _).collect();
    // The progress bar and its ETA count to where this invocation stops (--max-steps).
    let remaining = (cfg.optim.epochs * niter).saturating_sub(epoch * niter + step);
    let remaining = opts.max_steps.map_or(remaining, |m| remaining.min(m));
    let (main, progress) = (dist.is_main(), opts.progress);
    let mut logger = RunLogger::open(cfg, &out_dir, niter, remaining, main, progress, hooks)?;
    if let Some(sums) = carried {
        logger.continue_epoch(sums);
    }

    let accum = cfg.optim.accum_steps.max(1);
    let mut interrupted = false;
    'steps: loop {
        if opts.max_steps.is_some_and(|m| logger.steps() >= m) {
            break;
        }
        if opts.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            interrupted = true;
            break;
        }
        // One optimizer step (official train_one_epoch): the loss and gradients of its
        // `optim.accum_steps` micro-batches, then the update and the EMA teacher.
        let t_step = Instant::now();
        let (mut wait, mut images) = (Duration::ZERO, 0usize);
        let mut micro_stats = Vec::with_capacity(accum);
        let mut sv = None;
        while micro_stats.len() < accum {
            let t_wait = Instant::now();
            let Some(msg) = loader.recv() else {
                break 'steps;
            };
            wait += t_wait.elapsed();
            let batch = msg.context("data loader")?;
            let micro = batch.step as usize;
            // An epoch's last micro-batches that fill no whole window are not used
            // (crate::accumulation; never with accum_steps = 1).
            if micro >= niter * accum {
                continue;
            }
            (epoch, step) = (batch.epoch as usize, micro / accum);
            let window = Window {
                index: micro % accum,
                len: accum,
            };
            let it = epoch * niter + step;
            sv = Some(schedules.at(it).context("iteration past the schedules")?);
            let stats = method
                .forward_backward(&batch, it, window, &dist)
                .map_err(|e| explain_stop(e, &out_dir, &dist, (epoch, step)))?;
            micro_stats.push(stats);
            images += batch.batch_size;
        }
        let sv = sv.context("an optimizer step without micro-batches")?;
        let stats = StepStats::window_mean(&micro_stats);
        let outcome = method.optimizer_step(sv.lr, sv.wd, epoch)?;
        method.update_teacher(sv.momentum)?;

        let timing = StepTiming {
            images,
            data_wait: wait,
            total: t_step.elapsed(),
        };
        let record = StepRecord {
            loss_scale: outcome.loss_scale,
            skipped_step: outcome.loss_scale.map(|_| outcome.skipped),
            train_top1: stats.train_top1,
            ..StepRecord::new(
                (epoch, step, epoch * niter + step),
                &sv,
                stats.loss,
                &timing,
            )
        };
        logger.log_step(record, &timing)?;
        checkpointer.after_step(&method, epoch, step, &logger.epoch_sums())?;
        if step + 1 == niter {
            logger.end_epoch(epoch, &method)?;
        }
        (epoch, step) = next_position(epoch, step, niter);
    }
    // A stop before the end (max_steps, inside an epoch or after an epoch whose save was skipped
    // by checkpoint.latest_every_epochs) keeps its position, so --resume continues from there.
    checkpointer.at_stop(&method, epoch, step, &logger.epoch_sums())?;
    // Nobody leaves while rank 0 may still be writing the checkpoint the others would resume.
    dist.barrier()?;
    let totals = logger.finish();
    Ok(TrainSummary {
        output_dir: out_dir,
        epoch,
        step_in_epoch: step,
        steps: totals.steps,
        last_loss: totals.last_loss,
        first_loss: totals.first_loss,
        images_per_s: totals.images_per_s,
        world_size: dist.world_size,
        rank: dist.rank,
        data_wait_fraction: totals.data_wait_fraction,
        collapse_warnings: totals.collapse_warnings,
        failed_samples: loader_stats.snapshot().failed_samples,
        threads,
        device: format!("{device:?}"),
        steps_per_epoch: niter,
        interrupted,
        precision: precision.to_string(),
    })
}

/// The device of this process: `runtime.device`, and under a multi-process CUDA job the GPU of
/// its local rank (official: `torch.cuda.set_device(args.gpu)` with `LOCAL_RANK`).
fn training_device(cfg: &Config, dist: &Dist) -> anyhow::Result<Device> {
    let mut device = select_device(cfg.runtime.device)?;
    if dist.world_size > 1 && matches!(device, Device::Cuda(_)) {
        device = Device::Cuda(dist.local_rank);
    }
    if dist.world_size > 1 {
        tracing::info!(
            rank = dist.rank,
            world_size = dist.world_size,
            "joined the process group"
        );
    }
    Ok(device)
}

/// `runtime.precision` resolved on this machine, and said on rank 0. `auto` is resolved once,
/// here; a resumed run resolves it again on its own machine (see `dino_config::Precision::Auto`).
/// The loop and the checkpoints only ever see fp32, bf16 or fp16.
fn training_precision(cfg: &Config, device: Device, dist: &Dist) -> ComputePrecision {
    let precision = resolve_precision(cfg.runtime.precision, Bf16Support::detect(device));
    if dist.is_main() {
        tracing::info!("{precision}");
        if let Some(w) = precision.warning() {
            tracing::warn!("{w}");
        }
    }
    precision.resolved
}

/// The training set of this process: the dataset, its shard, the multi-crop transform (without
/// local crops for the supervised objective), its number of classes, and the optimizer steps
/// per epoch.
pub(crate) struct TrainData {
    dataset: Arc<dyn Dataset>,
    shard: Shard,
    transform: DataAugmentationDino,
    n_classes: usize,
    pub(crate) niter: usize,
}

impl TrainData {
    pub(crate) fn open(cfg: &Config, dist: &Dist) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !cfg.data.path.is_empty(),
            "no training data: set data.path or pass --data DIR"
        );
        let dataset: Arc<dyn Dataset> = Arc::from(
            open_configured(&cfg.data).with_context(|| format!("opening {}", cfg.data.path))?,
        );
        let shard = dist.shard();
        let shard_len = shard.len(dataset.len(), cfg.data.drop_last);
        let micro_batches =
            batches_per_epoch(shard_len, cfg.optim.batch_size, cfg.data.drop_last) as usize;
        let niter = optimizer_steps(micro_batches, cfg.optim.accum_steps);
        // Before any model is built: no BatchNorm pass of a step may see one value per channel,
        // the epoch's smaller last batch included (data.drop_last = false).
        let last = last_micro_batch(shard_len, micro_batches, niter, cfg);
        dino_config::check_batchnorm(cfg, last.map(|n| (n, shard_len)))?;
        anyhow::ensure!(
            niter > 0,
            "data.path: {} samples give no full batch of optim.batch_size = {} x \
             optim.accum_steps = {} per process ({} processes)",
            dataset.len(),
            cfg.optim.batch_size,
            cfg.optim.accum_steps,
            dist.world_size
        );
        let n_classes = dataset.classes().len();
        let transform = match cfg.method.objective {
            Objective::Dino => DataAugmentationDino::new(&cfg.augmentation)?,
            Objective::Supervised => {
                anyhow::ensure!(
                    n_classes >= 2,
                    "method.objective = \"supervised\" trains on labels, and {} has {}: give \
                     class folders (root/<class>/<image>), CIFAR-10 or IDX data",
                    cfg.data.path,
                    if n_classes == 0 {
                        "none (a flat folder of images)".to_string()
                    } else {
                        format!("only one class ({})", dataset.classes()[0])
                    }
                );
                DataAugmentationDino::new(&supervised_augmentation(&cfg.augmentation))?
            }
        };
        Ok(Self {
            dataset,
            shard,
            transform,
            n_classes,
            niter,
        })
    }

    /// The loader from resume position (`epoch`, optimizer step `step`) to the last configured
    /// epoch: it starts at micro-batch `step · optim.accum_steps`.
    pub(crate) fn spawn_loader(
        self,
        cfg: &Config,
        epoch: usize,
        step: usize,
    ) -> anyhow::Result<Loader> {
        Ok(Loader::spawn(
            self.dataset,
            self.transform,
            LoaderOptions {
                epochs: epoch as u64..cfg.optim.epochs as u64,
                start_step: (step * cfg.optim.accum_steps.max(1)) as u64,
                shard: self.shard,
                ..LoaderOptions::from_config(cfg)
            },
        )?)
    }
}

/// What an epoch leaves out under `data.drop_last = true` (the official loader's
/// `drop_last=True`): `n` images, `niter` optimizer steps of `optim.batch_size ·
/// optim.accum_steps` images on each of `world_size` processes; `None` when every image is
/// used or `drop_last` is off.
pub fn unused_images_note(
    cfg: &Config,
    n: usize,
    niter: usize,
    world_size: usize,
) -> Option<String> {
    let global = cfg.optim.step_batch_size() * world_size;
    let unused = n.saturating_sub(niter * global);
    if !cfg.data.drop_last || unused == 0 {
        return None;
    }
    let batch = if global == cfg.optim.batch_size {
        format!("batch {global}")
    } else {
        format!(
            "batch {} × {} micro-batches × {world_size} processes = {global} images a step",
            cfg.optim.batch_size,
            cfg.optim.accum_steps.max(1)
        )
    };
    Some(format!(
        "{unused} of {n} images unused per epoch: {batch}, drop_last as the official loader \
         (a different subset each epoch, the order being shuffled; data.drop_last = false uses \
         them in a smaller last batch)"
    ))
}

/// The size of an epoch's last micro-batch when it is smaller than `optim.batch_size` and used
/// (`data.drop_last = false` with `shard_len` not a multiple of the batch; with
/// `optim.accum_steps` > 1 only when it falls inside the epoch's last whole window, see
/// [`crate::accumulation`]); `None` when every micro-batch used is full.
fn last_micro_batch(
    shard_len: usize,
    micro_batches: usize,
    niter: usize,
    cfg: &Config,
) -> Option<usize> {
    let b = cfg.optim.batch_size;
    let rest = shard_len % b;
    let used = micro_batches <= niter * cfg.optim.accum_steps.max(1);
    (!cfg.data.drop_last && rest != 0 && used).then_some(rest)
}

/// Resumes from the latest checkpoint in `out_dir` (`resume`), or refuses a folder that already
/// holds one; then rank 0 stores the run's config there. Returns the start position and, for a
/// resume inside an epoch, the sums of that epoch's steps done (when the checkpoint has them
/// for this position).
fn start_run(
    cfg: &Config,
    resume: bool,
    out_dir: &Path,
    method: &mut TrainMethod,
    niter: usize,
    dist: &Dist,
) -> anyhow::Result<(usize, usize, Option<EpochSums>)> {
    let (mut epoch, mut step, mut carried) = (0usize, 0usize, None);
    if resume {
        let ck = checkpoint::load_latest(out_dir)
            .with_context(|| format!("resuming from {}", out_dir.display()))?;
        let saved = ck.meta.config()?.method.objective;
        anyhow::ensure!(
            saved == cfg.method.objective,
            "{} was trained with method.objective = \"{saved}\"; it cannot be resumed as \
             \"{}\"",
            out_dir.display(),
            cfg.method.objective
        );
        method.restore(&ck)?;
        epoch = ck.meta.epoch;
        let saved_step_batch = ck.meta.config()?.optim.step_batch_size();
        step = resume_step(
            &ck.meta,
            saved_step_batch,
            cfg.optim.step_batch_size(),
            dist,
            niter,
        );
        // A resume at another step (another world size or batch) sums the epoch afresh.
        carried = ck
            .meta
            .epoch_sums
            .clone()
            .filter(|s| step > 0 && s.epoch == epoch && s.steps == step);
        if dist.is_main() {
            tracing::info!(
                "resumed {}: {}",
                out_dir.display(),
                resume_position(epoch, step, niter, cfg.optim.epochs)
            );
        }
    } else if checkpoint::load_latest(out_dir).is_ok() {
        bail!(
            "{} already holds a checkpoint: pass --resume to continue it, or choose another \
             checkpoint.output_dir / --output",
            out_dir.display()
        );
    }
    if dist.is_main() {
        std::fs::create_dir_all(out_dir)
            .with_context(|| format!("creating {}", out_dir.display()))?;
        let stored = out_dir.join("config.toml");
        std::fs::write(&stored, cfg.to_toml_string())
            .with_context(|| format!("writing {}", stored.display()))?;
    }
    if epoch >= cfg.optim.epochs {
        tracing::info!("training already finished ({} epochs)", cfg.optim.epochs);
    }
    Ok((epoch, step, carried))
}

/// A non-finite loss, or a BatchNorm that got one value per channel, stops the run with what the
/// run folder holds to resume from (rank 0 reads it; the others point there); the BatchNorm stop
/// also names the step and the cure. Any other error passes unchanged.
fn explain_stop(
    e: anyhow::Error,
    out_dir: &Path,
    dist: &Dist,
    (epoch, step): (usize, usize),
) -> anyhow::Error {
    let one_value = matches!(
        e.downcast_ref::<ModelError>(),
        Some(ModelError::OneValuePerChannel { .. })
    );
    if !e.is::<NonFiniteLoss>() && !one_value {
        return e;
    }
    let note = if dist.is_main() {
        resume_note(out_dir)
    } else {
        format!(
            "Rank 0 reports what {} holds to resume from",
            out_dir.display()
        )
    };
    if one_value {
        // dino_config::check_batchnorm refuses what the configuration and the dataset size
        // show before training; this is what got past it (e.g. a library caller's batch).
        return anyhow::anyhow!(
            "epoch {}, step {}: {e:#}. This step's batch is too small for the network's \
             BatchNorm: use model.cifar_stem = true, larger crops, a larger optim.batch_size or \
             more local crops, or data.drop_last = true. Nothing of this step was saved. {note}.",
            epoch + 1,
            step + 1
        );
    }
    anyhow::anyhow!("{e}. {note}.")
}

/// Where a run resumed at position (`epoch`, `step`) (0-based, `step` steps of `epoch` done)
/// stands, in the 1-based numbering of the progress lines (`epoch e/E step s/S`): the next
/// step to train and the run's steps done.
pub fn resume_position(epoch: usize, step: usize, niter: usize, epochs: usize) -> String {
    let done = epoch * niter + step;
    let total = epochs * niter;
    if done >= total {
        return format!("all {total} steps of {epochs} epochs done");
    }
    format!(
        "continuing at epoch {}/{epochs} step {}/{niter} ({done} of {total} steps done)",
        epoch + 1,
        step + 1
    )
}

/// The optimizer step within the resumed epoch for this run's world size and images per
/// process and step (`step_batch` = `optim.batch_size · optim.accum_steps`; `saved_step_batch`
/// the checkpoint's): the checkpoint's position in samples over all ranks, divided by the new
/// global batch. The same world size and step batch resume exactly; another one continues from
/// the last whole global batch at or before the saved position (a few images of that epoch may
/// be seen twice or skipped: logged).
fn resume_step(
    meta: &CheckpointMeta,
    saved_step_batch: usize,
    step_batch: usize,
    dist: &Dist,
    niter: usize,
) -> usize {
    let world_size = dist.world_size;
    if meta.world_size == world_size && saved_step_batch == step_batch {
        return meta.step_in_epoch;
    }
    let global_batch = (step_batch * world_size) as u64;
    let step = (meta.data_position / global_batch) as usize;
    if meta.data_position % global_batch != 0 && dist.is_main() {
        tracing::warn!(
            "the checkpoint was written by {} process(es) at {} images per process and step, \
             and this run has {} at {}: resuming epoch {} at step {} (sample {} of {} saved)",
            meta.world_size,
            saved_step_batch,
            world_size,
            step_batch,
            meta.epoch + 1,
            step + 1,
            step as u64 * global_batch,
            meta.data_position
        );
    }
    step.min(niter)
}

/// What `dir` holds to resume from after a non-finite loss, read back from disk so the message
/// states what is there: the latest checkpoint's files and resume position, and whether its
/// values are finite (it was saved after the last finite loss, but that step's update may
/// already have overflowed), or that no checkpoint was written yet.
fn resume_note(dir: &Path) -> String {
    let ck = match checkpoint::load_latest(dir) {
        Ok(ck) => ck,
        Err(checkpoint::CheckpointError::NotFound { .. }) => {
            return format!(
                "No checkpoint was written yet in {}: nothing to resume from; fix the cause and \
                 start the run again",
                dir.display()
            )
        }
        Err(e) => {
            return format!(
                "The latest checkpoint in {} cannot be used ({e}): nothing to resume from",
                dir.display()
            )
        }
    };
    let finite = ck.tensors.values().all(|t| {
        t.f_isfinite()
            .and_then(|f| f.f_all())
            .and_then(|a| a.f_int64_value(&[]))
            .is_ok_and(|v| v != 0)
    });
    let files = format!(
        "{} and {}",
        dir.join(format!("{}.safetensors", checkpoint::LATEST))
            .display(),
        dir.join(format!("{}.json", checkpoint::LATEST)).display()
    );
    let (e, s) = (ck.meta.epoch, ck.meta.step_in_epoch);
    if finite {
        format!(
            "The latest checkpoint, {files} (resume position: epoch {}, step {}), was written \
             before this step and holds finite values: `dino train --resume {}` continues from \
             it (add --set KEY=VALUE to change the cause)",
            e + 1,
            s + 1,
            dir.display()
        )
    } else {
        format!(
            "The latest checkpoint, {files} (resume position: epoch {}, step {}), already holds \
             NaN or infinite values: resuming from it would fail the same way; start the run \
             again with the cause changed",
            e + 1,
            s + 1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What got past `dino_config::check_batchnorm` stops the step with the layer, the step, the
    /// cure and what the run folder holds; other errors pass unchanged.
    #[test]
    fn a_batchnorm_stop_names_the_layer_the_step_and_the_cure() {
        let tmp = tempfile::tempdir().unwrap();
        let e = anyhow::Error::from(ModelError::OneValuePerChannel {
            layer: "backbone.layer4.0.bn1".into(),
            shape: vec![1, 512, 1, 1],
        });
        let msg = explain_stop(e, tmp.path(), &Dist::single(), (3, 17)).to_string();
        for part in [
            "epoch 4, step 18",
            "backbone.layer4.0.bn1",
            "one value per channel",
            "model.cifar_stem = true",
            "data.drop_last = true",
            "No checkpoint was written yet",
        ] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
        let other = explain_stop(
            anyhow::anyhow!("disk full"),
            tmp.path(),
            &Dist::single(),
            (0, 0),
        );
        assert_eq!(other.to_string(), "disk full");
    }
}
