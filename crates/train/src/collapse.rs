//! The collapse monitor: warns when the teacher's output sits at one of DINO's two collapse
//! signatures for a sustained stretch of training.
//!
//! DINO paper §5.3, Fig. 7 (Caron et al. 2021) tells the two collapses apart with two curves:
//! with centering alone the teacher output becomes **uniform** — its entropy rises to ln K — and
//! with sharpening alone **one dimension dominates** — its entropy falls to 0; in both,
//! KL(teacher ‖ student) falls to 0: the target no longer depends on the image and the student
//! has nothing left to learn from it. A healthy run keeps the entropy between the two.
//!
//! [`CollapseMonitor`] is fed one step's [`LossStats`] at a time, and reads the DINO term's
//! statistics by name (its loss, teacher entropy, batch-mean entropy and KL: a KoLeo term in the
//! total changes none of them); it judges only
//! - after a **grace period**: at the start of a run the lr warms up from 0, so the network is
//!   still close to its initialisation, where a ViT maps all images to nearly the same output
//!   and the centered teacher is near uniform (docs/RESULTS.md, CIFAR-10 probes); the center
//!   itself starts at 0 and needs ~44 steps (0.9⁴⁴ ≈ 1 %) to track the teacher. A healthy run
//!   is near uniform then, and only then;
//! - on a **sustained** signature: it must hold on at least `sustain` of the last `window`
//!   steps, so one odd batch neither raises nor resets a warning.
//!
//! The signatures, with h = teacher entropy / ln K (per sample, averaged over the batch):
//! - [`CollapseKind::UniformTeacher`]: h ≥ `uniform_entropy` (0.95) and the window's mean KL
//!   ≤ `kl_near_zero` · ln K (0.15). Measured on the tiny run of `tests/collapse.rs` (K = 64):
//!   without a momentum teacher (the collapse of the paper's Table 7) h settles at 0.97–0.98
//!   with a BatchNorm head (which the former rule, a window mean h ≥ 0.98, missed) and at 1.00
//!   without, with KL 0.2–0.45 nats (0.05–0.11 ln K). Healthy runs stay well below 0.95 (tiny
//!   run: h ≤ 0.75; docs/RESULTS.md: 0.91 for the official ViT-S/16 recipe after 786
//!   iterations and for the Imagenette run at the end of its warm-up), collapsed ones above it
//!   (docs/RESULTS.md: 0.98 for the collapsed CIFAR-10 probe). The entropy is the criterion that
//!   separates: KL alone does not (healthy runs went as low as 0.14 ln K on the tiny run and
//!   0.04 ln K for that ViT-S/16, both with the entropy far below 0.95). The KL gate confirms
//!   the paper's second sign, that the student has caught up with the near-uniform target, so
//!   a student still far from it is not flagged yet.
//! - [`CollapseKind::UniformLoss`]: the loss within `loss_rel_tol` (1 %) of ln K. The cross
//!   entropy against a uniform student is exactly ln K whatever the teacher, so a loss pinned
//!   there means a uniform student: the plateaus at 11.09 = ln 65536 and 8.32 = ln 4096 of dino
//!   issues #246 and #43.
//! - [`CollapseKind::OneHotTeacher`]: the entropy of the batch-mean teacher distribution
//!   ≤ `one_hot_entropy` (0.02) · ln K — every sample on the same prototype, one dimension
//!   dominates — or the per-sample entropy that low with the KL near zero (Fig. 7's sharpening
//!   curve). A sharp teacher whose samples spread over the prototypes is healthy.
//!
//! A warning repeats at most once per `window` steps while the collapse persists.

use crate::loss::stats::{DINO, KL, LOSS, TEACHER_ENTROPY, TEACHER_MEAN_ENTROPY};
use crate::loss::LossStats;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Thresholds of [`CollapseMonitor`]; see the module doc for why each value. Not from the
/// official code, which has no monitor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CollapseConfig {
    /// Global steps before which nothing is judged: the lr warm-up, and at least the center's
    /// settling time (50 steps at center momentum 0.9). [`CollapseConfig::for_warmup`] sets it.
    pub grace_steps: usize,
    /// Steps over which a signature must be sustained (and between repeated warnings).
    pub window: usize,
    /// Fraction of the window's steps on which a per-step signature must hold, in (0, 1].
    pub sustain: f64,
    /// Teacher entropy / ln K at or above which the teacher counts as near uniform.
    pub uniform_entropy: f64,
    /// Window-mean KL(teacher ‖ student) / ln K at or below which the student counts as having
    /// nothing left to learn.
    pub kl_near_zero: f64,
    /// Loss within `loss_rel_tol · ln K` of ln K → the student output is uniform.
    pub loss_rel_tol: f64,
    /// Entropy / ln K at or below which the teacher counts as one-hot.
    pub one_hot_entropy: f64,
}

impl Default for CollapseConfig {
    fn default() -> Self {
        Self {
            grace_steps: 50,
            window: 100,
            sustain: 0.9,
            uniform_entropy: 0.95,
            kl_near_zero: 0.15,
            loss_rel_tol: 0.01,
            one_hot_entropy: 0.02,
        }
    }
}

impl CollapseConfig {
    /// The defaults with the grace period extended to the lr warm-up (`warmup_steps`
    /// iterations, `schedule.warmup_epochs` × iterations per epoch), when that is longer.
    pub fn for_warmup(warmup_steps: usize) -> Self {
        let d = Self::default();
        Self {
            grace_steps: d.grace_steps.max(warmup_steps),
            ..d
        }
    }
}

/// Which collapse a warning reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollapseKind {
    /// The loss is pinned at ln K: the student output is uniform.
    UniformLoss,
    /// The teacher output is near uniform and the student has matched it (paper Fig. 7,
    /// centering without sharpening).
    UniformTeacher,
    /// One prototype dominates the teacher output (paper Fig. 7, sharpening without centering).
    OneHotTeacher,
}

/// A collapse warning with a message for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct CollapseWarning {
    /// The kind.
    pub kind: CollapseKind,
    /// Global step at which it fired.
    pub step: usize,
    /// Human-readable explanation and remedies.
    pub message: String,
}

impl std::fmt::Display for CollapseWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Watches the loss statistics step by step (see the module doc for the rule).
#[derive(Debug, Clone)]
pub struct CollapseMonitor {
    cfg: CollapseConfig,
    ln_k: f64,
    recent: VecDeque<Observed>,
    last_fired: Option<usize>,
}

/// The DINO term's statistics of one step, as the monitor keeps them.
#[derive(Debug, Clone, Copy)]
struct Observed {
    /// The DINO term's loss (not the total: the ln K plateau is the DINO cross-entropy's).
    loss: f64,
    teacher_entropy: f64,
    teacher_mean_entropy: f64,
    kl: f64,
}

impl Observed {
    fn of(stats: &LossStats) -> Option<Self> {
        let dino = stats.term(DINO)?;
        Some(Self {
            loss: dino.get(LOSS)?,
            teacher_entropy: dino.get(TEACHER_ENTROPY)?,
            teacher_mean_entropy: dino.get(TEACHER_MEAN_ENTROPY)?,
            kl: dino.get(KL)?,
        })
    }
}

impl CollapseMonitor {
    /// A monitor for `out_dim` = K prototypes.
    pub fn new(out_dim: usize, cfg: CollapseConfig) -> Self {
        Self {
            cfg,
            ln_k: (out_dim.max(1) as f64).ln(),
            recent: VecDeque::with_capacity(cfg.window.max(1)),
            last_fired: None,
        }
    }

    /// ln K, the loss and entropy of uniform outputs.
    pub fn ln_k(&self) -> f64 {
        self.ln_k
    }

    /// The thresholds in force.
    pub fn config(&self) -> &CollapseConfig {
        &self.cfg
    }

    /// Feeds the statistics of global step `step`; returns a warning when a collapse signature
    /// has been sustained over the last `window` steps past the grace period. Statistics
    /// without a DINO term (or without one of the statistics it reads) are not judged.
    pub fn observe(&mut self, step: usize, stats: &LossStats) -> Option<CollapseWarning> {
        let c = self.cfg;
        if step < c.grace_steps {
            return None;
        }
        let stats = Observed::of(stats)?;
        let w = c.window.max(1);
        if self.recent.len() == w {
            self.recent.pop_front();
        }
        self.recent.push_back(stats);
        if self.recent.len() < w || self.last_fired.is_some_and(|s| step < s + w) {
            return None;
        }
        let ln_k = self.ln_k;
        let n = w as f64;
        let needed = ((c.sustain * n).ceil() as usize).clamp(1, w);
        let held = |f: &dyn Fn(&Observed) -> bool| self.recent.iter().filter(|s| f(s)).count();
        let mean = |f: fn(&Observed) -> f64| self.recent.iter().map(f).sum::<f64>() / n;
        let (h, h_batch, kl) = (
            mean(|s| s.teacher_entropy) / ln_k,
            mean(|s| s.teacher_mean_entropy) / ln_k,
            mean(|s| s.kl),
        );
        let kl_small = kl <= c.kl_near_zero * ln_k;

        let uniform = held(&|s| s.teacher_entropy >= c.uniform_entropy * ln_k);
        let pinned = held(&|s| (s.loss - ln_k).abs() <= c.loss_rel_tol * ln_k);
        let one_prototype = held(&|s| s.teacher_mean_entropy <= c.one_hot_entropy * ln_k);
        let one_hot = held(&|s| s.teacher_entropy <= c.one_hot_entropy * ln_k);

        let (kind, message) = if uniform >= needed && kl_small {
            (
                CollapseKind::UniformTeacher,
                format!(
                    "possible uniform collapse at step {step}: the teacher entropy was at least \
                     {:.0}% of ln K = {ln_k:.3} on {uniform} of the last {w} steps (mean {:.1}%) \
                     and KL(teacher‖student) averaged {kl:.4} nats: the teacher output is almost \
                     uniform and the student has nothing left to learn (DINO paper §5.3, Fig. 7; \
                     dino issue #246). Centering dominates sharpening: lower loss.teacher_temp, \
                     raise schedule.momentum_teacher or lower optim.lr",
                    100.0 * c.uniform_entropy,
                    100.0 * h
                ),
            )
        } else if pinned >= needed {
            (
                CollapseKind::UniformLoss,
                format!(
                    "possible uniform collapse at step {step}: the loss stayed within {:.1}% of \
                     ln K = {ln_k:.3} on {pinned} of the last {w} steps, the value of a uniform \
                     student output (dino issues #246, #43). Lower loss.teacher_temp, raise \
                     schedule.momentum_teacher or lower optim.lr",
                    100.0 * c.loss_rel_tol
                ),
            )
        } else if one_prototype >= needed || (one_hot >= needed && kl_small) {
            (
                CollapseKind::OneHotTeacher,
                format!(
                    "possible collapse at step {step}: the teacher is one-hot, one dimension \
                     dominates (entropy {:.2}% of ln K, batch-mean entropy {:.2}%, KL {kl:.4} \
                     nats over the last {w} steps; DINO paper §5.3, Fig. 7). Sharpening \
                     dominates centering: raise loss.teacher_temp or lower \
                     loss.center_momentum",
                    100.0 * h,
                    100.0 * h_batch
                ),
            )
        } else {
            return None;
        };
        self.last_fired = Some(step);
        Some(CollapseWarning {
            kind,
            step,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(entropy: f64, kl: f64, batch_entropy: f64) -> LossStats {
        LossStats::from_terms(vec![crate::loss::stats::dino_term(
            entropy + kl,
            entropy,
            batch_entropy,
            1.0,
            0.04,
        )
        .with(KL, kl)])
    }

    #[test]
    fn grace_steps_are_not_judged_and_not_remembered() {
        let cfg = CollapseConfig::for_warmup(300);
        assert_eq!(cfg.grace_steps, 300);
        assert_eq!(CollapseConfig::for_warmup(10).grace_steps, 50);
        let mut m = CollapseMonitor::new(64, cfg);
        let uniform = stats(m.ln_k(), 0.0, m.ln_k());
        // A uniform start lasting the whole warm-up never fires, and its steps do not count
        // towards the first window after it.
        assert!((0..300).all(|i| m.observe(i, &uniform).is_none()));
        assert!((300..399).all(|i| m.observe(i, &uniform).is_none()));
        let w = m
            .observe(399, &uniform)
            .expect("a full window after the warm-up");
        assert_eq!(w.kind, CollapseKind::UniformTeacher);
    }

    #[test]
    fn a_few_off_steps_neither_prevent_nor_fake_a_sustained_signature() {
        let mut m = CollapseMonitor::new(64, CollapseConfig::default());
        let ln_k = m.ln_k();
        // 10 % of the steps off the signature: still sustained (sustain = 0.9).
        let fired: Vec<usize> = (0..250)
            .filter_map(|i| {
                let h = if i % 10 == 3 { 0.5 } else { 0.97 };
                m.observe(i, &stats(h * ln_k, 0.1, ln_k)).map(|w| w.step)
            })
            .collect();
        assert_eq!(fired, [149, 249]);
        // 11 % off: not sustained.
        let mut m = CollapseMonitor::new(64, CollapseConfig::default());
        assert!((0..400).all(|i| {
            let h = if i % 9 == 3 { 0.5 } else { 0.97 };
            m.observe(i, &stats(h * ln_k, 0.1, ln_k)).is_none()
        }));
    }
}
