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
use crate::phases::PhaseTimes;
use crate::runtime::apply_threads;
use crate::schedule::Schedules;
use crate::trainer::TrainData;
use anyhow::Context;
use dino_config::Config;
use dino_data::batch::MultiCropBatch;
use dino_data::loader::Loader;
use dino_model::{resolve_precision, select_device, Bf16Support};
use rand::{RngCore, SeedableRng};
use serde::Serialize;
use std::time::Instant;
use tch::{Device, Tensor};

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

/// Where a step's time goes, milliseconds per step (medians over the split's steps; see
/// [`crate::phases`]).
#[derive(Debug, Clone, Serialize)]
pub struct PhaseMillis {
    /// Waiting for the loader (0 for synthetic input).
    pub data_wait: f64,
    /// Teacher and student forward, the loss, backward with the gradients written, the center.
    pub forward_backward: f64,
    /// Loss statistics + clipping and the optimizer + the teacher's EMA.
    pub bookkeeping: f64,
    /// The parts: forward (with the loss), loss statistics (with the step's one host read),
    /// backward, optimizer (clipping and the update), EMA.
    pub forward: f64,
    /// See `forward`.
    pub statistics: f64,
    /// See `forward`.
    pub backward: f64,
    /// See `forward`.
    pub optimizer: f64,
    /// See `forward`.
    pub ema: f64,
    /// Steps the split was measured on: the timed steps on the CPU (where the clock costs
    /// nothing); on an accelerator extra steps after them, since the clock waits for the device
    /// at every boundary.
    pub steps: usize,
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
    /// `runtime.overlap_teacher`: the teacher's forward in a second thread beside the
    /// student's (where it applies: CPU, two or more libtorch threads, no iBOT, joint backward).
    pub overlap_teacher: bool,
    /// `runtime.pack_crop_groups`: the student's crop groups through each ViT block together.
    pub pack_crop_groups: bool,
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
    /// Time split of a step ([`PhaseMillis`]).
    pub phase_ms: PhaseMillis,
    /// libtorch intra-op threads.
    pub torch_threads: usize,
    /// The process's allocator settings, as the binary set them (`None` when not reported).
    pub allocator: Option<String>,
    /// How libtorch's OpenMP threads wait (`OMP_WAIT_POLICY` / `GOMP_SPINCOUNT` in force, as
    /// the binary reports them; `None` when not reported).
    pub omp_wait: Option<String>,
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
        BenchInput::Synthetic => {
            let batch = synthetic_batch(cfg);
            Some((method.input_crops(&batch)?, method.input_masks(&batch)?))
        }
        BenchInput::Loader => None,
    };

    let mut times = Vec::with_capacity(opts.steps);
    let (mut wait_s, mut last_loss) = (0.0, f64::NAN);
    let rss_before = memory::current_rss_bytes();
    // The time split: on the CPU over the timed steps (the clock's marks cost nothing there); on
    // an accelerator over extra steps after them, because each mark waits for the device.
    let on_cpu = device == Device::Cpu;
    if on_cpu {
        method.enable_phase_clock();
    }
    let split_steps = if on_cpu { 0 } else { opts.steps.min(5) };
    let mut splits = Vec::new();
    let step = StepInputs {
        fixed: fixed.as_ref().map(|(c, m)| (c.as_slice(), m.as_ref())),
        loader: loader.as_ref(),
        schedules: &schedules,
        epoch,
        niter,
        accum: cfg.optim.accum_steps.max(1),
    };
    for i in 0..total + split_steps {
        if i == total {
            method.enable_phase_clock();
        }
        let t0 = Instant::now();
        let (loss, wait) = step.run(&mut method, i, &dist)?;
        synchronize(device);
        let elapsed = t0.elapsed().as_secs_f64();
        if let Some(p) = method.take_phase_times() {
            if i >= opts.warmup {
                splits.push((wait, p));
            }
        }
        if i >= opts.warmup && i < total {
            times.push(elapsed);
            wait_s += wait;
            last_loss = loss;
        }
    }
    let accum = cfg.optim.accum_steps.max(1);
    let wall: f64 = times.iter().sum();
    let phase_ms = phase_medians(&splits);
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
        overlap_teacher: cfg.runtime.overlap_teacher,
        pack_crop_groups: cfg.runtime.pack_crop_groups,
        images_per_s: (opts.steps * cfg.optim.batch_size * accum) as f64 / wall,
        step_ms: StepMillis {
            median: sorted[sorted.len() / 2] * 1e3,
            mean: wall / times.len() as f64 * 1e3,
            min: sorted[0] * 1e3,
        },
        data_wait_fraction: wait_s / wall,
        phase_ms,
        torch_threads: threads.torch,
        allocator: None,
        omp_wait: None,
        last_loss,
        rss_before_mib: rss_before.map(mib),
        peak_rss_mib: memory::peak_rss_bytes().map(mib),
    })
}

/// What one bench step reads: fixed crops (and their iBOT masks when iBOT is on) or the
/// loader, and the schedules' position.
struct StepInputs<'a> {
    fixed: Option<(&'a [Tensor], Option<&'a Tensor>)>,
    loader: Option<&'a Loader>,
    schedules: &'a Schedules,
    epoch: usize,
    niter: usize,
    accum: usize,
}

impl StepInputs<'_> {
    /// Step `i`: one optimizer step of `accum` micro-batches (the same fixed crops each time
    /// for synthetic input), the update and the EMA, as the training loop runs them. Returns
    /// the loss (mean over the micro-batches) and the seconds spent waiting for the loader.
    fn run(&self, method: &mut DinoMethod, i: usize, dist: &Dist) -> anyhow::Result<(f64, f64)> {
        let (epoch, step) = (self.epoch, i % self.niter);
        let it = epoch * self.niter + step;
        let mut losses = Vec::with_capacity(self.accum);
        let mut wait = 0.0;
        for index in 0..self.accum {
            let window = Window {
                index,
                len: self.accum,
            };
            let micro = (epoch, step * self.accum + index);
            let stats = match (self.fixed, self.loader) {
                (Some((crops, masks)), _) => {
                    method.forward_backward_masked(crops, masks, micro, it, window, dist)?
                }
                (None, Some(loader)) => {
                    let t_wait = Instant::now();
                    let batch = loader
                        .recv()
                        .context("the loader ended before the bench's steps were done")?
                        .context("data loader")?;
                    wait += t_wait.elapsed().as_secs_f64();
                    let crops = method.input_crops(&batch)?;
                    let masks = method.input_masks(&batch)?;
                    method.forward_backward_masked(
                        &crops,
                        masks.as_ref(),
                        micro,
                        it,
                        window,
                        dist,
                    )?
                }
                (None, None) => unreachable!("one input is always set"),
            };
            losses.push(stats.loss);
        }
        let sv = self
            .schedules
            .at(it)
            .context("bench step past the schedules")?;
        method.optimizer_step(sv.lr, sv.wd, epoch)?;
        method.update_teacher(sv.momentum)?;
        Ok((crate::accumulation::mean(losses), wait))
    }
}

/// Median milliseconds per step of each phase over `splits` ((data wait s, phase times)).
fn phase_medians(splits: &[(f64, PhaseTimes)]) -> PhaseMillis {
    let median = |f: &dyn Fn(&(f64, PhaseTimes)) -> f64| -> f64 {
        let mut v: Vec<f64> = splits.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).map_or(f64::NAN, |x| x * 1e3)
    };
    PhaseMillis {
        data_wait: median(&|s| s.0),
        forward_backward: median(&|s| s.1.forward_backward()),
        bookkeeping: median(&|s| s.1.bookkeeping()),
        forward: median(&|s| s.1.forward),
        statistics: median(&|s| s.1.statistics),
        backward: median(&|s| s.1.backward),
        optimizer: median(&|s| s.1.optimizer),
        ema: median(&|s| s.1.ema),
        steps: splits.len(),
    }
}

/// One batch of `optim.batch_size` images of uniformly random u8 crops at the configured sizes,
/// from `runtime.seed`; with iBOT on, the global crops' masks as the loader draws them for the
/// first step of an epoch.
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
    if let Some(m) = dino_data::masking::MaskingOptions::from_config(cfg) {
        let images: Vec<usize> = (0..cfg.optim.batch_size).collect();
        batch.masks = dino_data::masking::batch_masks(&m, cfg.runtime.seed, 0, 0, &images, &images);
        let (gh, gw) = m.generator.grid();
        batch.mask_grid = [gh, gw];
    }
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
