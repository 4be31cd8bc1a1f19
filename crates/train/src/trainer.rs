//! The DINO training loop (official `train_dino` + `train_one_epoch`, `main_dino.py`), read top to
//! bottom: build student and teacher, resume if asked, then per iteration: schedules → teacher
//! forward on the 2 global crops (no grad) → student forward on all crops → loss and center →
//! backward → per-parameter clipping → AdamW (last layer frozen in the first epochs) → EMA
//! teacher → metrics; a checkpoint at each epoch end (and every `checkpoint.every_steps`).

use crate::checkpoint::{self, CheckpointMeta, CheckpointTensors};
use crate::collapse::{CollapseConfig, CollapseMonitor};
use crate::distributed::Dist;
use crate::loss::DinoLoss;
use crate::metrics::{self, EpochAccumulator, MetricsWriter, StepRecord};
use crate::optim::{frozen_last_layer, AdamW};
use crate::runtime::{apply_threads, Threads};
use crate::schedule::Schedules;
use crate::teacher::{ema_update, init_teacher_from_student};
use anyhow::{bail, Context};
use dino_config::Config;
use dino_data::batch::MultiCropBatch;
use dino_data::dataset::open_configured;
use dino_data::loader::{batches_per_epoch, Loader, LoaderOptions};
use dino_data::multicrop::MultiCrop;
use dino_model::{
    resolve_precision, select_device, with_precision, Bf16Support, ComputePrecision,
    MultiCropWrapper, VitConfig,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{nn, Device, Kind, Tensor};

/// Options of one `dino train` invocation that are not part of the run configuration.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from the latest checkpoint in `checkpoint.output_dir`.
    pub resume: bool,
    /// Stop after this many iterations of this invocation (tests, smoke runs); the schedules
    /// still span the configured epochs.
    pub max_steps: Option<usize>,
    /// Show an interactive progress bar (plain log lines when false or not a terminal).
    pub progress: bool,
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
    /// Forward precision this invocation ran in, `fp32` or `bf16` (`runtime.precision` with
    /// `auto` resolved on this machine).
    pub precision: String,
}

/// Seeds libtorch's generator for iteration `it` of rank `rank`, so stochastic depth draws
/// depend only on (seed, iteration, rank): a resumed run sees the same masks as an uninterrupted
/// one, and ranks draw different masks for their different images.
fn seed_iteration(seed: u64, it: usize, rank: usize) {
    let mixed = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((it as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
        .wrapping_add((rank as u64).wrapping_mul(0x8CB9_2BA7_2F3D_8DD7));
    tch::manual_seed((mixed >> 1) as i64);
}

/// u8 crops `[V·B, 3, H, W]` → normalized float on `device` (official `ToTensor + Normalize`).
fn to_input(
    bytes: &[u8],
    shape: [i64; 4],
    mean: &Tensor,
    std: &Tensor,
    device: Device,
) -> anyhow::Result<Tensor> {
    let t = Tensor::f_from_slice(bytes)?
        .f_view(shape)?
        .f_to_device(device)?;
    Ok(t.f_to_kind(Kind::Float)?
        .f_div_scalar(255.0)?
        .f_sub(mean)?
        .f_div(std)?)
}

/// The student and teacher networks with their variable stores.
pub struct Networks {
    /// Student variables (`backbone.*`, `head.*`).
    pub student_vs: nn::VarStore,
    /// Student network.
    pub student: MultiCropWrapper,
    /// Teacher variables, same names.
    pub teacher_vs: nn::VarStore,
    /// Teacher network (no stochastic depth, never gets gradients).
    pub teacher: MultiCropWrapper,
}

impl Networks {
    /// Builds the student from `tch::manual_seed(runtime.seed)` and the teacher as its copy
    /// (official: `teacher.load_state_dict(student.state_dict())`, teacher without drop-path).
    ///
    /// # Errors
    /// Model configuration errors.
    pub fn new(cfg: &Config, device: Device) -> anyhow::Result<Self> {
        let vit = VitConfig::from_model(&cfg.model)?;
        tch::manual_seed(cfg.runtime.seed as i64);
        let student_vs = nn::VarStore::new(device);
        let student = MultiCropWrapper::new(&student_vs.root(), &vit, &cfg.head)?;
        let mut teacher_vs = nn::VarStore::new(device);
        let teacher = MultiCropWrapper::new(
            &teacher_vs.root(),
            &vit.clone().with_drop_path(0.0),
            &cfg.head,
        )?;
        init_teacher_from_student(&mut teacher_vs, &student_vs)?;
        Ok(Self {
            student_vs,
            student,
            teacher_vs,
            teacher,
        })
    }
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
    let mut device = select_device(cfg.runtime.device_request().map_err(anyhow::Error::msg)?)?;
    if dist.world_size > 1 && matches!(device, Device::Cuda(_)) {
        // One GPU per process (official: torch.cuda.set_device(args.gpu) with LOCAL_RANK).
        device = Device::Cuda(dist.local_rank);
    }
    if dist.world_size > 1 {
        tracing::info!(
            rank = dist.rank,
            world_size = dist.world_size,
            "joined the process group"
        );
    }
    let out_dir = PathBuf::from(&cfg.checkpoint.output_dir);
    // `auto` is resolved once, here, on the machine running this invocation; a resumed run
    // resolves it again on its own machine (see `dino_config::Precision::Auto`). The loop and
    // the checkpoints only ever see fp32 or bf16.
    let precision = resolve_precision(cfg.runtime.precision, Bf16Support::detect(device));
    if dist.is_main() {
        tracing::info!("{precision}");
        if let Some(w) = precision.warning() {
            tracing::warn!("{w}");
        }
    }
    let precision = precision.resolved;

    // Data first: a missing or empty dataset fails before any model is built.
    anyhow::ensure!(
        !cfg.data.path.is_empty(),
        "no training data: set data.path or pass --data DIR"
    );
    let dataset: Arc<dyn dino_data::dataset::Dataset> = Arc::from(
        open_configured(&cfg.data).with_context(|| format!("opening {}", cfg.data.path))?,
    );
    let shard = dist.shard();
    let niter = batches_per_epoch(
        shard.len(dataset.len(), cfg.data.drop_last),
        cfg.optim.batch_size,
        cfg.data.drop_last,
    ) as usize;
    anyhow::ensure!(
        niter > 0,
        "data.path: {} samples give no full batch of optim.batch_size = {} per process ({} \
         processes)",
        dataset.len(),
        cfg.optim.batch_size,
        dist.world_size
    );
    if cfg.eval.knn_every_epochs > 0 && dist.is_main() {
        // The online k-NN folders are opened (and their classes matched) now, so a wrong path
        // or a validation class the bank lacks fails before the first epoch, not after it.
        dino_eval::labelled::TrainVal::open(
            Path::new(&cfg.eval.knn_train_path),
            Path::new(&cfg.eval.knn_val_path),
            &cfg.data,
            dino_data::dataset::UnknownClass::Error,
        )
        .context("online k-NN data (eval.knn_train_path, eval.knn_val_path)")?;
    }
    let transform = MultiCrop::new(&cfg.augmentation)?;
    let n_crops = transform.n_crops();

    let mut nets = Networks::new(cfg, device)?;
    if dist.world_size > 1 {
        dist.broadcast_from_main(&nets.student_vs)?;
        init_teacher_from_student(&mut nets.teacher_vs, &nets.student_vs)?;
    }
    let mut optimizer = AdamW::from_var_store(&nets.student_vs, &cfg.optim)?;
    let mut loss_fn = DinoLoss::new(cfg.head.out_dim, n_crops, &cfg.loss, cfg.optim.epochs)?;
    // The official lr rule uses the global batch: lr · batch_size_per_gpu · world_size / 256.
    let schedules = Schedules::new(cfg, niter, dist.world_size)?;
    let param_names: Vec<String> = optimizer.param_names().map(str::to_string).collect();

    let (mut epoch, mut step) = (0usize, 0usize);
    if opts.resume {
        let ck = checkpoint::load_latest(&out_dir)
            .with_context(|| format!("resuming from {}", out_dir.display()))?;
        ck.restore_student(&nets.student_vs)?;
        ck.restore_teacher(&nets.teacher_vs)?;
        optimizer.load_state(&ck.optim_state())?;
        loss_fn.set_center(ck.center()?)?;
        epoch = ck.meta.epoch;
        step = resume_step(&ck.meta, cfg.optim.batch_size, &dist, niter);
        if dist.is_main() {
            tracing::info!(epoch, step, dir = %out_dir.display(), "resumed");
        }
    } else if checkpoint::load_latest(&out_dir).is_ok() {
        bail!(
            "{} already holds a checkpoint: pass --resume to continue it, or choose another \
             checkpoint.output_dir / --output",
            out_dir.display()
        );
    }
    if dist.is_main() {
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("creating {}", out_dir.display()))?;
        let stored = out_dir.join("config.toml");
        std::fs::write(&stored, cfg.to_toml_string())
            .with_context(|| format!("writing {}", stored.display()))?;
    }
    if epoch >= cfg.optim.epochs {
        tracing::info!("training already finished ({} epochs)", cfg.optim.epochs);
    }

    let loader = Loader::spawn(
        dataset,
        transform,
        LoaderOptions {
            epochs: epoch as u64..cfg.optim.epochs as u64,
            start_step: step as u64,
            shard,
            ..LoaderOptions::from_config(cfg)
        },
    )?;
    let loader_stats = loader.stats();

    let mean = Tensor::f_from_slice(&cfg.augmentation.mean.map(|v| v as f32))?
        .f_view([1, 3, 1, 1])?
        .f_to_device(device)?;
    let std = Tensor::f_from_slice(&cfg.augmentation.std.map(|v| v as f32))?
        .f_view([1, 3, 1, 1])?
        .f_to_device(device)?;
    let mut metrics_out = if dist.is_main() {
        Some(MetricsWriter::append(&out_dir.join("metrics.jsonl"))?)
    } else {
        None
    };
    // No collapse verdict during the lr warm-up, when a healthy run is still near uniform.
    let mut collapse = CollapseMonitor::new(
        cfg.head.out_dim,
        CollapseConfig::for_warmup(cfg.schedule.warmup_epochs * niter),
    );
    let mut warnings = Vec::new();
    let bar = progress_bar(
        opts.progress && dist.is_main(),
        (cfg.optim.epochs * niter).saturating_sub(epoch * niter + step),
    );

    let run_start = Instant::now();
    let (mut steps_done, mut images, mut wait_total) = (0usize, 0usize, Duration::ZERO);
    let mut first_loss = f64::NAN;
    let mut acc = EpochAccumulator::default();
    let mut epoch_start = Instant::now();
    let mut last_epoch_loss = f64::NAN;
    // The resume position (epoch, step) of the last checkpoint written by this invocation.
    let mut saved_at: Option<(usize, usize)> = None;

    loop {
        if opts.max_steps.is_some_and(|m| steps_done >= m) {
            break;
        }
        let t_wait = Instant::now();
        let Some(msg) = loader.recv() else { break };
        let wait = t_wait.elapsed();
        let batch: MultiCropBatch = msg.context("data loader")?;
        let t_step = Instant::now();
        (epoch, step) = (batch.epoch as usize, batch.step as usize);
        let it = epoch * niter + step;
        let sv = schedules.at(it).context("iteration past the schedules")?;
        let b = batch.batch_size as i64;

        let (g, l) = (batch.global_size as i64, batch.local_size as i64);
        let globals = to_input(&batch.globals, [2 * b, 3, g, g], &mean, &std, device)?;
        let mut crops = vec![globals.shallow_clone()];
        if batch.n_local > 0 {
            crops.push(to_input(
                &batch.locals,
                [batch.n_local as i64 * b, 3, l, l],
                &mean,
                &std,
                device,
            )?);
        }

        seed_iteration(cfg.runtime.seed, it, dist.rank);
        // Under bf16 autocast the logits come out bf16; the loss (softmax over out_dim
        // prototypes at temperature 0.04-0.1) and the center run in fp32.
        let teacher_out = tch::no_grad(|| {
            with_precision(precision, device, || {
                nets.teacher.forward_t(&[globals], true)
            })
        })?
        .to_kind(tch::Kind::Float);
        let student_out =
            with_precision(precision, device, || nets.student.forward_t(&crops, true))?
                .to_kind(tch::Kind::Float);
        let mut out = loss_fn.forward(&student_out, &teacher_out, epoch)?;
        // Official update_center: all-reduce of the teacher logits' sum / (2 · global batch),
        // i.e. the mean over ranks of each rank's mean (equal per-rank batches).
        let mut batch_center = DinoLoss::batch_center(&teacher_out)?;
        dist.average(&mut batch_center)?;
        loss_fn.update_center(&batch_center)?;
        // Every rank logs, checks and stops on the loss of the global batch.
        out.stats.loss = dist.mean_scalar(out.stats.loss)?;
        if let Err(e) = metrics::check_finite(out.stats.loss, epoch, step) {
            let note = if dist.is_main() {
                resume_note(&out_dir)
            } else {
                format!(
                    "Rank 0 reports what {} holds to resume from",
                    out_dir.display()
                )
            };
            bail!("{e}. {note}.");
        }

        optimizer.zero_grad();
        out.loss.f_backward()?;
        // DDP: the gradient of the global batch mean is the mean of the ranks' gradients.
        if dist.world_size > 1 {
            dist.average_grads(&mut optimizer.grads()?)?;
        }
        if cfg.optim.clip_grad > 0.0 {
            optimizer.clip_gradients(cfg.optim.clip_grad)?;
        }
        let frozen = frozen_last_layer(
            param_names.iter().map(String::as_str),
            epoch,
            cfg.schedule.freeze_last_layer,
        );
        optimizer.step(sv.lr, sv.wd, &frozen)?;
        ema_update(&nets.teacher_vs, &nets.student_vs, sv.momentum)?;

        // Bookkeeping: everything below reads host scalars only.
        let step_time = t_step.elapsed() + wait;
        steps_done += 1;
        images += batch.batch_size;
        wait_total += wait;
        if first_loss.is_nan() {
            first_loss = out.stats.loss;
        }
        let record = StepRecord {
            epoch,
            step,
            global_step: it,
            lr: sv.lr,
            wd: sv.wd,
            momentum: sv.momentum,
            images_per_s: batch.batch_size as f64 / step_time.as_secs_f64(),
            data_wait_fraction: wait.as_secs_f64() / step_time.as_secs_f64(),
            ..StepRecord::default()
        }
        .with_loss_stats(&out.stats);
        acc.push(&record);
        if let Some(m) = metrics_out
            .as_mut()
            .filter(|_| step % cfg.runtime.log_every == 0 || step + 1 == niter)
        {
            m.write_step(&record)?;
            if bar.is_hidden() {
                tracing::info!(
                    "epoch {epoch} step {step}/{niter} loss {:.4} lr {:.2e} {:.1} img/s since start, data wait {:.0}%",
                    record.loss,
                    record.lr,
                    images as f64 / run_start.elapsed().as_secs_f64(),
                    100.0 * wait_total.as_secs_f64() / run_start.elapsed().as_secs_f64()
                );
            }
        }
        if let Some(w) = collapse.observe(it, &out.stats).filter(|_| dist.is_main()) {
            let msg = w.to_string();
            tracing::warn!("{msg}");
            warnings.push(msg);
        }
        bar.set_message(format!(
            "epoch {epoch} loss {:.4} lr {:.2e} {:.1} img/s",
            record.loss,
            record.lr,
            images as f64 / run_start.elapsed().as_secs_f64()
        ));
        bar.inc(1);

        let epoch_done = step + 1 == niter;
        let (next_epoch, next_step) = if epoch_done {
            (epoch + 1, 0)
        } else {
            (epoch, step + 1)
        };
        let every = cfg.checkpoint.every_steps;
        let numbered = if epoch_done {
            checkpoint::numbered_name(epoch, cfg.checkpoint.saveckp_freq)
        } else {
            None
        };
        let epoch_save = epoch_done && epoch_end_save_due(epoch, cfg, numbered.is_some());
        if dist.is_main() && (epoch_save || (every > 0 && (step + 1) % every == 0)) {
            save(
                &out_dir,
                &nets,
                &optimizer,
                &loss_fn,
                cfg,
                next_epoch,
                next_step,
                niter,
                dist.world_size,
                numbered.as_deref(),
                precision,
            )?;
            saved_at = Some((next_epoch, next_step));
        }
        if epoch_done && dist.is_main() {
            let mut rec = acc.finish(epoch, epoch_start.elapsed().as_secs_f64());
            let every = cfg.eval.knn_every_epochs;
            if every > 0 && (epoch + 1) % every == 0 {
                let report = online_knn(cfg, &nets.teacher.backbone, device)?;
                for s in &report.scores {
                    rec.extra.insert(format!("knn_top1_k{}", s.k), s.top1);
                }
                tracing::info!(
                    "epoch {epoch} online k-NN (teacher): {}",
                    report
                        .scores
                        .iter()
                        .map(|s| format!("{}-NN {:.2}%", s.k, s.top1))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            last_epoch_loss = rec.loss;
            let m = metrics_out.as_mut().expect("rank 0 writes metrics");
            m.write_epoch(&rec)?;
            let records = metrics::read_jsonl(m.path())?;
            let history = metrics::History::from_records(&records);
            let ln_k = Some((cfg.head.out_dim as f64).ln());
            if let Err(e) =
                metrics::plot_curves(&out_dir.join("curves.png"), &history, ln_k, 900, 600)
            {
                tracing::warn!("could not draw curves.png: {e}");
            }
            tracing::info!(
                "epoch {epoch} done: loss {:.4}, teacher entropy {:.3}, KL {:.3}, {:.1} img/s in this epoch",
                rec.loss,
                rec.teacher_entropy,
                rec.kl,
                rec.images_per_s
            );
            acc = EpochAccumulator::default();
            epoch_start = Instant::now();
        } else if epoch_done {
            last_epoch_loss = acc.finish(epoch, 0.0).loss;
            acc = EpochAccumulator::default();
            epoch_start = Instant::now();
        }
        (epoch, step) = (next_epoch, next_step);
    }
    bar.finish_and_clear();
    // A stop before the end (max_steps, inside an epoch or after an epoch whose save was skipped
    // by checkpoint.latest_every_epochs) keeps its position, so --resume continues from there.
    if steps_done > 0 && saved_at != Some((epoch, step)) && dist.is_main() {
        save(
            &out_dir,
            &nets,
            &optimizer,
            &loss_fn,
            cfg,
            epoch,
            step,
            niter,
            dist.world_size,
            None,
            precision,
        )?;
    }
    // Nobody leaves while rank 0 may still be writing the checkpoint the others would resume.
    dist.barrier()?;
    let wall = run_start.elapsed().as_secs_f64();
    let last_loss = if acc.is_empty() {
        last_epoch_loss
    } else {
        acc.finish(epoch, 0.0).loss
    };
    Ok(TrainSummary {
        output_dir: out_dir,
        epoch,
        step_in_epoch: step,
        steps: steps_done,
        last_loss,
        first_loss,
        images_per_s: images as f64 / wall.max(1e-9),
        world_size: dist.world_size,
        rank: dist.rank,
        data_wait_fraction: wait_total.as_secs_f64() / wall.max(1e-9),
        collapse_warnings: warnings,
        failed_samples: loader_stats.snapshot().failed_samples,
        threads,
        device: format!("{device:?}"),
        precision: precision.to_string(),
    })
}

/// Weighted k-NN of the teacher's CLS features on `eval.knn_train_path` (bank) and
/// `eval.knn_val_path` (official eval_knn.py protocol), run inside training.
fn online_knn(
    cfg: &Config,
    backbone: &dino_model::VisionTransformer,
    device: Device,
) -> anyhow::Result<dino_eval::knn::KnnReport> {
    use dino_eval::embed::{embed_dataset, EmbedOptions, FeatureKind};
    let e = &cfg.eval;
    anyhow::ensure!(
        !e.knn_train_path.is_empty() && !e.knn_val_path.is_empty(),
        "eval.knn_every_epochs is set but eval.knn_train_path / eval.knn_val_path are empty"
    );
    // Labels of the validation folder follow the bank's class names.
    let sets = dino_eval::labelled::TrainVal::open(
        Path::new(&e.knn_train_path),
        Path::new(&e.knn_val_path),
        &cfg.data,
        dino_data::dataset::UnknownClass::Error,
    )
    .context("online k-NN data")?;
    let opts = EmbedOptions {
        batch_size: e.batch_size,
        transform: dino_data::transforms::EvalTransform::new(e.crop_size, e.resize_ratio)?,
        mean: cfg.augmentation.mean,
        std: cfg.augmentation.std,
        kind: FeatureKind::Cls,
        patch_tokens: false,
        limit: None,
    };
    let (train, _) = embed_dataset(backbone, sets.train.as_ref(), &opts, device)?;
    let (test, _) = embed_dataset(backbone, &sets.val, &opts, device)?;
    let report = dino_eval::knn::knn_eval(
        &train.features,
        &train.labels,
        &test.features,
        &test.labels,
        &dino_eval::knn::KnnConfig::from_eval(e),
    )?;
    for note in report.capped_notes() {
        tracing::info!("online k-NN: {note}");
    }
    Ok(report)
}

/// The step within the resumed epoch for this run's world size: the checkpoint's position in
/// samples over all ranks, divided by the new global batch. The same world size resumes exactly;
/// another one continues from the last whole global batch at or before the saved position (a
/// few images of that epoch may be seen twice or skipped: logged).
fn resume_step(meta: &CheckpointMeta, batch_size: usize, dist: &Dist, niter: usize) -> usize {
    let world_size = dist.world_size;
    if meta.world_size == world_size {
        return meta.step_in_epoch;
    }
    let global_batch = (batch_size * world_size) as u64;
    let step = (meta.data_position / global_batch) as usize;
    if meta.data_position % global_batch != 0 && dist.is_main() {
        tracing::warn!(
            "the checkpoint was written by {} process(es) and this run has {}: resuming epoch {} \
             at step {step} (sample {} of {} saved)",
            meta.world_size,
            world_size,
            meta.epoch,
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
            "The latest checkpoint, {files} (resume position: epoch {e}, step {s}), was written \
             before this step and holds finite values: `dino train --resume {}` continues from \
             it (add --set KEY=VALUE to change the cause)",
            dir.display()
        )
    } else {
        format!(
            "The latest checkpoint, {files} (resume position: epoch {e}, step {s}), already holds \
             NaN or infinite values: resuming from it would fail the same way; start the run \
             again with the cause changed"
        )
    }
}

/// Whether the end of `epoch` (0-based) writes the latest checkpoint: every
/// `checkpoint.latest_every_epochs` epochs (official: every epoch), at the last epoch, and
/// whenever a numbered copy is kept.
fn epoch_end_save_due(epoch: usize, cfg: &Config, numbered: bool) -> bool {
    (epoch + 1) % cfg.checkpoint.latest_every_epochs.max(1) == 0
        || epoch + 1 == cfg.optim.epochs
        || numbered
}

#[allow(clippy::too_many_arguments)]
fn save(
    dir: &Path,
    nets: &Networks,
    optimizer: &AdamW,
    loss_fn: &DinoLoss,
    cfg: &Config,
    epoch: usize,
    step_in_epoch: usize,
    niter: usize,
    world_size: usize,
    numbered: Option<&str>,
    precision: ComputePrecision,
) -> anyhow::Result<()> {
    let mut meta = CheckpointMeta::new(cfg, epoch, step_in_epoch, epoch * niter + step_in_epoch);
    meta.precision = precision.to_string();
    meta.data_position = (step_in_epoch * cfg.optim.batch_size * world_size) as u64;
    meta.world_size = world_size;
    meta.seed = cfg.runtime.seed;
    meta.versions
        .insert("dino".into(), env!("CARGO_PKG_VERSION").into());
    meta.versions
        .insert("libtorch".into(), crate::runtime::LIBTORCH_VERSION.into());
    let parts = CheckpointTensors {
        student: &nets.student_vs,
        teacher: &nets.teacher_vs,
        optim: optimizer.state_tensors()?,
        center: loss_fn.center(),
    };
    checkpoint::save_checkpoint(dir, &parts, &meta, numbered)?;
    Ok(())
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

    #[test]
    fn epoch_end_saves_follow_latest_every_epochs() {
        let mut cfg = Config::default();
        cfg.optim.epochs = 10;
        let due = |cfg: &Config, numbered: &[usize]| -> Vec<usize> {
            (0..cfg.optim.epochs)
                .filter(|&e| epoch_end_save_due(e, cfg, numbered.contains(&e)))
                .collect()
        };
        // Official: checkpoint.pth after every epoch.
        assert_eq!(due(&cfg, &[]), (0..10).collect::<Vec<_>>());
        cfg.checkpoint.latest_every_epochs = 4;
        // Epochs 4 and 8 (1-based), the last one, and the one that keeps a numbered copy.
        assert_eq!(due(&cfg, &[]), vec![3, 7, 9]);
        assert_eq!(due(&cfg, &[0, 5]), vec![0, 3, 5, 7, 9]);
    }
}
