//! Per-iteration schedules of DINO: learning rate, weight decay, teacher EMA momentum (cosine,
//! `utils.cosine_scheduler`) and the per-epoch teacher temperature (`DINOLoss.__init__`), all
//! precomputed as plain `f64` tables exactly as the official `main_dino.py` builds them.

use dino_config::Config;

/// Invalid schedule lengths (the official code fails on these with an assertion or a negative
/// `np.ones` size).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// More warm-up epochs than epochs.
    #[error("{what}: {warmup} warm-up epochs exceed the {epochs} training epochs")]
    WarmupTooLong {
        /// Which schedule.
        what: &'static str,
        /// Warm-up epochs asked for.
        warmup: usize,
        /// Training epochs.
        epochs: usize,
    },
    /// Zero epochs or zero iterations per epoch.
    #[error("a schedule needs at least one epoch and one iteration per epoch (got {epochs} epochs x {niter_per_epoch} iterations)")]
    Empty {
        /// Training epochs.
        epochs: usize,
        /// Iterations per epoch.
        niter_per_epoch: usize,
    },
}

/// `numpy.linspace(start, stop, num)` (endpoint included), reproducing numpy's arithmetic
/// (`i * step + start`, last value set to `stop`) so tables match the official ones bit for bit
/// where the platform `cos`/`mul` agree.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut y: Vec<f64> = (0..num)
        .map(|i| {
            if step == 0.0 {
                (i as f64 / div) * delta + start
            } else {
                i as f64 * step + start
            }
        })
        .collect();
    y[num - 1] = stop;
    y
}

/// The official `utils.cosine_scheduler(base_value, final_value, epochs, niter_per_ep,
/// warmup_epochs, start_warmup_value)`: one value per iteration, length `epochs * niter_per_ep`.
///
/// The first `warmup_epochs * niter_per_ep` values are `linspace(start_warmup, base, n_warmup)`
/// (so the last warm-up iteration already equals `base`); the remaining `I` values are
/// `final + 0.5 (base - final)(1 + cos(pi i / I))` for `i = 0 .. I-1`, so the very last value is
/// slightly above `final`.
///
/// Errors: `warmup_epochs > epochs` (the official assertion on the length fails there).
pub fn cosine_scheduler(
    base: f64,
    final_value: f64,
    epochs: usize,
    niter_per_ep: usize,
    warmup_epochs: usize,
    start_warmup: f64,
) -> Result<Vec<f64>, ScheduleError> {
    if warmup_epochs > epochs {
        return Err(ScheduleError::WarmupTooLong {
            what: "cosine schedule",
            warmup: warmup_epochs,
            epochs,
        });
    }
    let total = epochs * niter_per_ep;
    let warmup_iters = warmup_epochs * niter_per_ep;
    let mut schedule = Vec::with_capacity(total);
    if warmup_epochs > 0 {
        schedule.extend(linspace(start_warmup, base, warmup_iters));
    }
    let n = total - warmup_iters;
    schedule.extend((0..n).map(|i| {
        let cos = (std::f64::consts::PI * i as f64 / n as f64).cos();
        final_value + 0.5 * (base - final_value) * (1.0 + cos)
    }));
    debug_assert_eq!(schedule.len(), total);
    Ok(schedule)
}

/// The official teacher temperature per **epoch** (`DINOLoss.teacher_temp_schedule`):
/// `linspace(warmup_temp, temp, warmup_epochs)` followed by `temp` for the remaining epochs.
/// Note that with a warm-up, epoch `warmup_epochs - 1` already uses `temp`.
///
/// Errors: `warmup_epochs > epochs` (official: a negative `np.ones` size).
pub fn teacher_temp_schedule(
    warmup_temp: f64,
    temp: f64,
    warmup_epochs: usize,
    epochs: usize,
) -> Result<Vec<f64>, ScheduleError> {
    if warmup_epochs > epochs {
        return Err(ScheduleError::WarmupTooLong {
            what: "teacher temperature",
            warmup: warmup_epochs,
            epochs,
        });
    }
    let mut s = linspace(warmup_temp, temp, warmup_epochs);
    s.resize(epochs, temp);
    Ok(s)
}

/// Every schedule of a run, indexed by the global iteration `it = epoch * niter_per_epoch + step`
/// (teacher temperature by epoch), built as `train_dino` in `main_dino.py` does.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedules {
    /// Learning rate per iteration: cosine from `optim.lr * effective_batch / 256` to
    /// `optim.min_lr`, with a linear warm-up from 0 over `schedule.warmup_epochs`.
    pub lr: Vec<f64>,
    /// Weight decay of the regularized group per iteration: cosine `optim.weight_decay` →
    /// `optim.weight_decay_end`, no warm-up.
    pub wd: Vec<f64>,
    /// Teacher EMA momentum per iteration: cosine `schedule.momentum_teacher` →
    /// `schedule.momentum_teacher_end`, no warm-up.
    pub momentum: Vec<f64>,
    /// Teacher temperature per epoch (see [`teacher_temp_schedule`]).
    pub teacher_temp: Vec<f64>,
    /// Iterations per epoch (`len(data_loader)`).
    pub niter_per_epoch: usize,
    /// Training epochs.
    pub epochs: usize,
}

/// The scheduled values for one iteration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepValues {
    /// Learning rate of every parameter group.
    pub lr: f64,
    /// Weight decay of the regularized group.
    pub wd: f64,
    /// Teacher EMA momentum applied after this iteration's optimizer step.
    pub momentum: f64,
    /// Teacher temperature of this iteration's epoch.
    pub teacher_temp: f64,
}

impl Schedules {
    /// Builds the tables from the `optim`, `schedule` and `loss` sections, one entry per
    /// optimizer step (`niter_per_epoch` of them an epoch; with `optim.accum_steps` = N, an
    /// optimizer step is N micro-batches, see [`crate::accumulation`]). `world_size` is the
    /// number of processes sharing an iteration (1 on one device); the official linear scaling
    /// rule uses the effective batch of one optimizer step,
    /// `optim.batch_size * optim.accum_steps * world_size`.
    pub fn new(
        cfg: &Config,
        niter_per_epoch: usize,
        world_size: usize,
    ) -> Result<Self, ScheduleError> {
        let epochs = cfg.optim.epochs;
        if epochs == 0 || niter_per_epoch == 0 {
            return Err(ScheduleError::Empty {
                epochs,
                niter_per_epoch,
            });
        }
        let effective_batch = (cfg.optim.step_batch_size() * world_size.max(1)) as f64;
        let base_lr = cfg.optim.lr * effective_batch / 256.0;
        Ok(Self {
            lr: cosine_scheduler(
                base_lr,
                cfg.optim.min_lr,
                epochs,
                niter_per_epoch,
                cfg.schedule.warmup_epochs,
                0.0,
            )?,
            wd: cosine_scheduler(
                cfg.optim.weight_decay,
                cfg.optim.weight_decay_end,
                epochs,
                niter_per_epoch,
                0,
                0.0,
            )?,
            momentum: cosine_scheduler(
                cfg.schedule.momentum_teacher,
                cfg.schedule.momentum_teacher_end,
                epochs,
                niter_per_epoch,
                0,
                0.0,
            )?,
            teacher_temp: teacher_temp_schedule(
                cfg.loss.warmup_teacher_temp,
                cfg.loss.teacher_temp,
                cfg.loss.warmup_teacher_temp_epochs,
                epochs,
            )?,
            niter_per_epoch,
            epochs,
        })
    }

    /// Total iterations, `epochs * niter_per_epoch`.
    pub fn total_iters(&self) -> usize {
        self.lr.len()
    }

    /// Values at global iteration `it`; `None` past the end of training.
    pub fn at(&self, it: usize) -> Option<StepValues> {
        Some(StepValues {
            lr: *self.lr.get(it)?,
            wd: *self.wd.get(it)?,
            momentum: *self.momentum.get(it)?,
            teacher_temp: *self.teacher_temp.get(it / self.niter_per_epoch)?,
        })
    }
}
