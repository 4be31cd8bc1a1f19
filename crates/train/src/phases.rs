//! Where a DINO step's time goes: a clock the method marks at the boundaries of its phases
//! (forward, loss statistics, backward, optimizer, EMA), for `dino bench train`'s time split.
//! Off in training. When on, each mark waits for the device (CUDA kernels are asynchronous), so
//! the split is of finished work; that wait costs the overlap of host and device, which is why
//! the bench reports the step time of the run without the clock beside it.

use serde::Serialize;
use std::time::Instant;
use tch::Device;

/// A phase of a DINO step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Teacher forward on the global crops, student forward, the loss.
    Forward,
    /// The loss diagnostics (teacher entropy, mean entropy, center norm) and the step's one
    /// read-back of them with the loss.
    Statistics,
    /// Backward, the gradients written into the flat buffers, the center update, the
    /// cross-rank averages.
    Backward,
    /// Per-parameter clipping and the update rule (and the fp16 loss scaler's work).
    Optimizer,
    /// The teacher's EMA.
    Ema,
}

/// Seconds spent in each [`Phase`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PhaseTimes {
    /// [`Phase::Forward`].
    pub forward: f64,
    /// [`Phase::Statistics`].
    pub statistics: f64,
    /// [`Phase::Backward`].
    pub backward: f64,
    /// [`Phase::Optimizer`].
    pub optimizer: f64,
    /// [`Phase::Ema`].
    pub ema: f64,
}

impl PhaseTimes {
    /// Forward + backward (the model's work).
    pub fn forward_backward(&self) -> f64 {
        self.forward + self.backward
    }

    /// Statistics + optimizer + EMA: the bookkeeping around the model.
    pub fn bookkeeping(&self) -> f64 {
        self.statistics + self.optimizer + self.ema
    }
}

/// The clock: time since the last mark goes to the phase named by the next.
#[derive(Debug)]
pub struct PhaseClock {
    device: Device,
    last: Instant,
    times: PhaseTimes,
}

impl PhaseClock {
    /// A clock for work on `device`.
    pub fn new(device: Device) -> Self {
        Self {
            device,
            last: Instant::now(),
            times: PhaseTimes::default(),
        }
    }

    fn sync(&self) {
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
    }

    /// Starts timing from now (after the device finished what was queued): what happened since
    /// the last mark belongs to no phase.
    pub fn begin(&mut self) {
        self.sync();
        self.last = Instant::now();
    }

    /// Adds the time since the last mark (or [`PhaseClock::begin`]) to `phase`.
    pub fn mark(&mut self, phase: Phase) {
        self.sync();
        let now = Instant::now();
        let dt = (now - self.last).as_secs_f64();
        self.last = now;
        let slot = match phase {
            Phase::Forward => &mut self.times.forward,
            Phase::Statistics => &mut self.times.statistics,
            Phase::Backward => &mut self.times.backward,
            Phase::Optimizer => &mut self.times.optimizer,
            Phase::Ema => &mut self.times.ema,
        };
        *slot += dt;
    }

    /// The times so far, and a fresh start.
    pub fn take(&mut self) -> PhaseTimes {
        std::mem::take(&mut self.times)
    }
}
