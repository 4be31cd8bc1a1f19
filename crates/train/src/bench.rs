//! `dino bench train`: images per second of the full DINO step — teacher forward on the 2
//! global crops, student forward and backward on all crops, loss and center, per-parameter
//! clipping, optimizer, EMA — the same calls as [`crate::trainer::train`], without logging or
//! checkpoints.
//!
//! Two inputs:
//! - [`BenchInput::Synthetic`]: one batch of seeded random crops, normalized and put on the
//!   device once and reused every step: the model-bound speed (no decode, augmentation or
//!   host-to-device copy);
//! - [`BenchInput::Loader`]: the configured dataset through the real multi-crop loader, as in
//!   training: the end-to-end speed, with the fraction of time spent waiting for data.
//!
//! `benches/dino_step_torch.py` times the same step in PyTorch (eager and `torch.compile`) and
//! `benches/train_step_compare.py` runs both back to back and prints one table.

use crate::accumulation::Window;
use crate::distributed::Dist;
use crate::method::DinoMethod;
use crate::runtime::apply_threads;
use crate::schedule::Schedules;
use crate::trainer::TrainData;
use anyhow::Context;
use dino_config::Config;
use dino_data::batch::MultiCropBatch;
use dino_model::{resolve_precision, select_device, Bf16Support};
use rand::{RngCore, SeedableRng};
use serde::Serialize;
use std::time::Instant;
use tch::Device;

/// Where the bench's crops come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchInput {
    /// Fixed random crops already on the device (model-bound).
    Synthetic,
    /// The configured dataset through the multi-crop loader (end to end).
    Loader,
}

impl BenchInput {
    /// `"synthetic"` or `"loader"`, as in the report.
    pub fn name(self) -> &'static str {
        match self {
            BenchInput::Synthetic => "synthetic",
            BenchInput::Loader => "loader",
        }
    }
}

/// What to time.
#[derive(Debug, Clone)]
pub struct TrainBenchOptions {
    /// Crops from where.
    pub input: BenchInput,
    /// Untimed steps first (libtorch's first steps allocate and pick kernels).
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
}

/// Step time statistics in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct StepMillis {
    /// Median over the timed steps.
    pub median: f64,
    /// Mean over the timed steps.
    pub mean: f64,
    /// Fastest timed step.
    pub min: f64,
}

/// One bench result (`dino bench train --json` prints it as one JSON line; the PyTorch script
/// prints the same fields).
#[derive(Debug, Clone, Serialize)]
pub struct TrainBenchReport {
    /// `"dino"` (this crate); the PyTorch script says `"pytorch-eager"` / `"pytorch-compile"`.
    pub implementation: String,
    /// `"synthetic"` or `"loader"`.
    pub input: String,
    /// libtorch device, e.g. `Cpu` or `Cuda(0)`.
    pub device: String,
    /// Resolved compute precision (`fp32`, `bf16`, `fp16`).
    pub precision: String,
    /// `[embed_dim, depth, num_heads]` of the ViT.
    pub vit: [usize; 3],
    /// `model.patch_size`.
    pub patch_size: usize,
    /// Images per micro-batch (`optim.batch_size`).
    pub batch_size: usize,
    /// Micro-batches per optimizer step (`optim.accum_steps`); a timed step is one optimizer
    /// step.
    pub accum_steps: usize,
    /// `optim.backward_per_crop_group`: the student forwarded and back-propagated one crop
    /// resolution group at a time.
    pub backward_per_crop_group: bool,
    /// `[2, global_size]`: the global crops per image and their side in pixels.
    pub global_crops: [usize; 2],
    /// `[local_crops_number, local_size]`.
    pub local_crops: [usize; 2],
    /// `head.out_dim`.
    pub out_dim: usize,
    /// Untimed steps.
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
    /// Images (each with all its crops) per second of wall time over the timed steps.
    pub images_per_s: f64,
    /// Per-step wall time.
    pub step_ms: StepMillis,
    /// Fraction of the timed wall time spent waiting for the loader (0 for synthetic input).
    pub data_wait_fraction: f64,
    /// libtorch intra-op threads.
    pub torch_threads: usize,
    /// The last timed step's loss (a finite number says the step really ran).
    pub last_loss: f64,
    /// Resident memory of this process (MiB) once the networks, optimizer and input were built,
    /// before the first step (`VmRSS`; Linux only, else null).
    pub rss_before_mib: Option<f64>,
    /// Peak resident memory of this process (MiB) over its whole life (`VmHWM`, the kernel's
    /// high-water mark, as `getrusage`'s `ru_maxrss`; Linux only). Minus `rss_before_mib`: what
    /// the steps added at their peak (activations, gradients, optimizer state). Run one setting
    /// per process.
    pub peak_rss_mib: Option<f64>,
}

/// Runs `opts.warmup + opts.steps` DINO steps of `cfg` on `cfg.runtime.device` and times the
/// last `opts.steps`. The schedules are the run's, taken from the epoch after the last layer's
/// freeze (so every parameter is updated, as in most of a run); under [`BenchInput::Loader`]
/// `data.path` must name a dataset with at least one full batch.
///
/// Each step ends with the device synchronized (the loss is read back, as the training loop
/// does every step), so step times are wall times of finished work.
///
/// # Errors
/// `opts.steps == 0`, `method.objective` other than `dino`, a missing or empty dataset, the loader ending before the timed steps
/// are done, model and libtorch errors, a non-finite loss.
pub fn run_train_bench(cfg: &Config, opts: &TrainBenchOptions) -> anyhow::Result<TrainBenchReport> {
    anyhow::ensure!(opts.steps > 0, "--steps must be at least 1");
    anyhow::ensure!(
        cfg.method.objective == dino_config::Objective::Dino,
        "method.objective: `dino bench train` times the DINO step; the supervised objective has no bench"
    );
    // The loader input checks its dataset's last batch too (TrainData::open).
    dino_config::check_batchnorm(cfg, None)?;
    let threads = apply_threads(&cfg.runtime);
    let dist = Dist::single();
    let device = select_device(cfg.runtime.device)?;
    let precision = resolve_precision(cfg.runtime.precision, Bf16Support::detect(device)).resolved;
    let total = opts.warmup + opts.steps;
    let aug = &cfg.augmentation;
    let n_crops = 2 + aug.local_crops_number;

    let (loader, niter) = match opts.input {
        BenchInput::Synthetic => (None, total),
        BenchInput::Loader => {
            let data = TrainData::open(cfg, &dist)?;
            let niter = data.niter;
            (Some(data.spawn_loader(cfg, 0, 0)?), niter)
        }
    };
    let mut method = DinoMethod::new(cfg, n_crops, device, precision, &dist)?;
    let schedules = Schedules::new(cfg, niter, 1)?;
    // Past the frozen last layer, inside the configured epochs.
    let epoch = cfg
        .schedule
        .freeze_last_layer
        .min(cfg.optim.epochs.saturating_sub(1));
    let fixed = match opts.input {
        BenchInput::Synthetic => Some(method.input_crops(&synthetic_batch(cfg))?),
        BenchInput::Loader => None,
    };

    let mut times = Vec::with_capacity(opts.steps);
    let (mut wait_s, mut last_loss) = (0.0, f64::NAN);
    let accum = cfg.optim.accum_steps.max(1);
    let rss_before = memory::current_rss_bytes();
    for i in 0..total {
        let t0 = Instant::now();
        let step = i % niter;
        let it = epoch * niter + step;
        // One optimizer step: `optim.accum_steps` micro-batches (the same fixed crops each time
        // for synthetic input).
        let mut losses = Vec::with_capacity(accum);
        for index in 0..accum {
            let window = Window { index, len: accum };
            let micro = (epoch, step * accum + index);
            let stats = match (&fixed, &loader) {
                (Some(crops), _) => {
                    method.forward_backward_crops(crops, micro, it, window, &dist)?
                }
                (None, Some(loader)) => {
                    let t_wait = Instant::now();
                    let batch = loader
                        .recv()
                        .context("the loader ended before the bench's steps were done")?
                        .context("data loader")?;
                    if i >= opts.warmup {
                        wait_s += t_wait.elapsed().as_secs_f64();
                    }
                    let crops = method.input_crops(&batch)?;
                    method.forward_backward_crops(&crops, micro, it, window, &dist)?
                }
                (None, None) => unreachable!("one input is always set"),
            };
            losses.push(stats.loss);
        }
        let loss = crate::accumulation::mean(losses);
        let sv = schedules
            .at(epoch * niter + step)
            .context("bench step past the schedules")?;
        method.optimizer_step(sv.lr, sv.wd, epoch)?;
        method.update_teacher(sv.momentum)?;
        synchronize(device);
        if i >= opts.warmup {
            times.push(t0.elapsed().as_secs_f64());
            last_loss = loss;
        }
    }

    let wall: f64 = times.iter().sum();
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let model = &cfg.model;
    let (embed_dim, depth, heads) = model.dims();
    Ok(TrainBenchReport {
        implementation: "dino".into(),
        input: opts.input.name().into(),
        device: format!("{device:?}"),
        precision: precision.to_string(),
        vit: [embed_dim, depth, heads],
        patch_size: model.patch_size,
        batch_size: cfg.optim.batch_size,
        global_crops: [2, aug.global_crops_size as usize],
        local_crops: [aug.local_crops_number, aug.local_crops_size as usize],
        out_dim: cfg.head.out_dim,
        warmup: opts.warmup,
        steps: opts.steps,
        accum_steps: accum,
        backward_per_crop_group: cfg.optim.backward_per_crop_group,
        images_per_s: (opts.steps * cfg.optim.batch_size * accum) as f64 / wall,
        step_ms: StepMillis {
            median: sorted[sorted.len() / 2] * 1e3,
            mean: wall / times.len() as f64 * 1e3,
            min: sorted[0] * 1e3,
        },
        data_wait_fraction: wait_s / wall,
        torch_threads: threads.torch,
        last_loss,
        rss_before_mib: rss_before.map(mib),
        peak_rss_mib: memory::peak_rss_bytes().map(mib),
    })
}

/// One batch of `optim.batch_size` images of uniformly random u8 crops at the configured sizes,
/// from `runtime.seed`.
fn synthetic_batch(cfg: &Config) -> MultiCropBatch {
    let aug = &cfg.augmentation;
    let mut batch = MultiCropBatch::zeroed(
        0,
        0,
        cfg.optim.batch_size,
        aug.global_crops_size,
        aug.local_crops_size,
        aug.local_crops_number,
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.runtime.seed);
    rng.fill_bytes(&mut batch.globals);
    rng.fill_bytes(&mut batch.locals);
    batch
}

/// Bytes → MiB.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// This process's resident memory from `/proc/self/status` (Linux).
mod memory {
    /// The `kB` value of `field` (e.g. `VmRSS:`) in `/proc/self/status`, in bytes.
    fn status_bytes(field: &str) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kb: u64 = line[field.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    /// Resident set size now.
    pub(super) fn current_rss_bytes() -> Option<u64> {
        status_bytes("VmRSS:")
    }

    /// Peak resident set size of the process so far (high-water mark).
    pub(super) fn peak_rss_bytes() -> Option<u64> {
        status_bytes("VmHWM:")
    }
}

/// Waits for the device's queued work (CUDA kernels are asynchronous; CPU ops are not).
fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}
