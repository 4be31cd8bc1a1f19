//! Gradient accumulation (`optim.accum_steps`): one optimizer step every `N` micro-batches,
//! equal to one step on the `N`-times larger batch.
//!
//! The rules, and where each is applied:
//! - the loader's batch (`optim.batch_size`) is a micro-batch; an optimizer step sees
//!   `batch_size · N · world_size` images, and the official lr rule uses that effective batch
//!   ([`crate::schedule::Schedules::new`]);
//! - the schedules, the logged records, `--max-steps`, the save policy and the resume position
//!   count **optimizer** steps: an epoch has [`optimizer_steps`]`(micro-batches, N)` of them and
//!   its last `micro-batches mod N` micro-batches are not used (as `drop_last` does for an
//!   incomplete batch; the loader still produces them, the loop skips them);
//! - each micro-batch's loss is scaled by `1 / N` before backward, gradients accumulate, and
//!   `zero_grad` happens at the start of a window only ([`Window::is_first`]);
//! - every micro-batch of a window uses the same (old) center, and the center is updated once,
//!   at the window's end, from the mean of the micro-batch centers (= the big batch's center);
//! - across processes, gradients and the center are averaged once per window, at its end
//!   (DDP's `no_sync` on the other micro-batches); the mean of the per-rank window sums equals
//!   the per-micro-batch averaging, since both are linear;
//! - clipping, the optimizer (and under fp16 the loss scaler's unscale / skip / update), the
//!   EMA and the checkpoint policy run once per window;
//! - checkpoints are written at window ends only, so a resume is exact at optimizer-step
//!   boundaries, which are the only positions a checkpoint records.
//!
//! Not exact: BatchNorm (ResNet backbones, `head.use_bn`) normalises each micro-batch with its
//! own statistics, as DDP without SyncBatchNorm does per rank; and the teacher diagnostic
//! `teacher_mean_entropy` (a non-linear function of the batch) is logged as the mean over the
//! micro-batches. Stochastic depth draws each micro-batch's masks from (seed, micro-batch index,
//! rank), so the masks differ from a big batch's (same distribution).

/// Where a micro-batch sits in its accumulation window of `len` micro-batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Position in the window, `0..len`.
    pub index: usize,
    /// Micro-batches per optimizer step (`optim.accum_steps`, ≥ 1).
    pub len: usize,
}

impl Window {
    /// No accumulation: a window of one micro-batch (the official step).
    pub const SINGLE: Window = Window { index: 0, len: 1 };

    /// The first micro-batch: gradients are zeroed before its backward.
    pub fn is_first(&self) -> bool {
        self.index == 0
    }

    /// The last micro-batch: the center update and the cross-rank averages follow its backward.
    pub fn is_last(&self) -> bool {
        self.index + 1 >= self.len
    }

    /// The factor each micro-batch's loss is scaled by before backward, `1 / len`, so the
    /// accumulated gradient is that of the mean over the window's images.
    pub fn loss_scale(&self) -> f64 {
        1.0 / self.len.max(1) as f64
    }

    /// The index of this micro-batch over the whole run, `it · len + index` for optimizer step
    /// `it`: the seed of its stochastic-depth masks (equal to `it` without accumulation, so an
    /// unaccumulated run draws what it always drew).
    pub fn micro_index(&self, it: usize) -> usize {
        it * self.len.max(1) + self.index
    }
}

/// Optimizer steps in an epoch of `micro_batches` micro-batches at `accum_steps` micro-batches
/// a step: `⌊micro_batches / accum_steps⌋` (an incomplete window at the epoch end is dropped).
pub fn optimizer_steps(micro_batches: usize, accum_steps: usize) -> usize {
    micro_batches / accum_steps.max(1)
}

/// Mean of `values` (the logged loss of a window is the mean of its micro-batches' losses:
/// each is a mean over equally many images). One value comes back unchanged.
pub fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_steps() {
        assert!(Window::SINGLE.is_first() && Window::SINGLE.is_last());
        assert_eq!(Window::SINGLE.loss_scale(), 1.0);
        assert_eq!(Window::SINGLE.micro_index(7), 7);
        let w = Window { index: 1, len: 4 };
        assert!(!w.is_first() && !w.is_last());
        assert_eq!(w.loss_scale(), 0.25);
        assert_eq!(w.micro_index(3), 13);
        assert!(Window { index: 3, len: 4 }.is_last());
        assert_eq!(optimizer_steps(10, 3), 3);
        assert_eq!(optimizer_steps(10, 1), 10);
        assert_eq!(optimizer_steps(2, 3), 0);
    }

    #[test]
    fn mean_of_one_value_is_that_value() {
        let x = 0.1 + 0.2;
        assert_eq!(mean([x]).to_bits(), x.to_bits());
        assert_eq!(mean([1.0, 2.0, 4.0]), 7.0 / 3.0);
    }
}
