//! Linear probe on frozen, precomputed features (DINO paper §4.1, official `eval_linear.py`).
//!
//! A single `Linear(F → classes)` layer is trained with cross-entropy by SGD (momentum 0.9, no
//! weight decay) at `base_lr · batch / 256`, annealed per epoch to 0 by a cosine
//! (`CosineAnnealingLR(T_max = epochs, eta_min = 0)`), and evaluated on the validation set after
//! every epoch; the report holds the final and the best top-1 (the official script prints the
//! best, which slightly inflates it: report both).
//!
//! Unlike the official script the features are computed once, not per augmented crop: the
//! official training set is seen through RandomResizedCrop + flip each epoch. The official ViT
//! probe feature (the last blocks' CLS tokens) is
//! [`concat_last_blocks`](crate::features::probe::concat_last_blocks), with the other feature kinds.

use crate::features::{check_train_eval, FeatureSet, FeaturesError};
use dino_config::EvalConfig;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, TchError, Tensor};

/// Rows per forward pass when evaluating (memory bound only, no effect on results).
const EVAL_CHUNK: i64 = 1024;

/// Bad input to the linear probe.
#[derive(Debug, thiserror::Error)]
pub enum LinearError {
    /// The features or labels (see [`FeatureSet::new`] and [`check_train_eval`]).
    #[error(transparent)]
    Features(#[from] FeaturesError),
    /// A setting is out of range.
    #[error("invalid linear-probe setting: {0}")]
    Config(String),
    /// libtorch failed.
    #[error(transparent)]
    Torch(#[from] TchError),
}

/// Settings of [`train_linear_probe`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearProbeConfig {
    /// Training epochs, also the cosine period (official `--epochs 100`).
    pub epochs: usize,
    /// Learning rate at batch 256; the SGD lr is `base_lr · batch_size / 256`
    /// (official `--lr 0.001`).
    pub base_lr: f64,
    /// Mini-batch size (official `--batch_size_per_gpu 128`, one GPU).
    pub batch_size: usize,
    /// SGD momentum (official 0.9, hard-coded).
    pub momentum: f64,
    /// Seed of the weight initialisation and of every epoch's shuffle.
    pub seed: u64,
}

impl Default for LinearProbeConfig {
    fn default() -> Self {
        Self::from_eval(&EvalConfig::default(), 0)
    }
}

impl LinearProbeConfig {
    /// Epochs, lr and batch size from the `[eval]` config section; momentum 0.9.
    pub fn from_eval(eval: &EvalConfig, seed: u64) -> Self {
        Self {
            epochs: eval.linear_epochs,
            base_lr: eval.linear_lr,
            batch_size: eval.linear_batch_size,
            momentum: 0.9,
            seed,
        }
    }

    /// The SGD learning rate of epoch 0: `base_lr · batch_size / 256` (linear scaling rule,
    /// official `args.lr * (args.batch_size_per_gpu * world_size) / 256`).
    pub fn scaled_lr(&self) -> f64 {
        self.base_lr * self.batch_size as f64 / 256.0
    }

    fn validate(&self) -> Result<(), LinearError> {
        let bad = |m: &str| Err(LinearError::Config(m.to_string()));
        if self.epochs == 0 {
            return bad("epochs must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1");
        }
        if !(self.base_lr.is_finite() && self.base_lr > 0.0) {
            return bad("base_lr must be finite and > 0");
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum must lie in [0, 1)");
        }
        Ok(())
    }
}

/// Learning rate of `epoch` (0-based) under `CosineAnnealingLR(T_max = epochs, eta_min = 0)`
/// stepped once per epoch: `lr · (1 + cos(π · epoch / epochs)) / 2`.
pub fn cosine_annealing_lr(lr: f64, epoch: usize, epochs: usize) -> f64 {
    0.5 * lr * (1.0 + (std::f64::consts::PI * epoch as f64 / epochs as f64).cos())
}

/// The trained linear layer, named as the official `LinearClassifier.linear`.
#[derive(Debug)]
pub struct LinearClassifier {
    /// `[classes, F]`.
    pub weight: Tensor,
    /// `[classes]`.
    pub bias: Tensor,
}

impl LinearClassifier {
    /// Logits `[N, classes]` of features `[N, F]`.
    ///
    /// # Errors
    /// A libtorch error when the feature width does not match.
    pub fn forward(&self, features: &Tensor) -> Result<Tensor, TchError> {
        features
            .f_to_kind(Kind::Float)?
            .f_matmul(&self.weight.f_tr()?)?
            .f_add(&self.bias)
    }

    /// Top-1 classes `[N]` (i64) of features `[N, F]`.
    ///
    /// # Errors
    /// As [`LinearClassifier::forward`].
    pub fn predict(&self, features: &Tensor) -> Result<Tensor, TchError> {
        self.forward(features)?.f_argmax(1, false)
    }
}

/// Metrics after one training epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 0-based epoch.
    pub epoch: usize,
    /// SGD learning rate used during this epoch.
    pub lr: f64,
    /// Mean cross-entropy over this epoch's mini-batches.
    pub train_loss: f64,
    /// Mean cross-entropy on the validation set after the epoch.
    pub val_loss: f64,
    /// Validation top-1 accuracy in percent.
    pub val_top1: f64,
    /// Validation top-5 in percent; `None` with fewer than 5 classes (as the official script).
    pub val_top5: Option<f64>,
}

/// Result of [`train_linear_probe`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearProbeReport {
    /// One entry per epoch.
    pub history: Vec<EpochStats>,
    /// Top-1 (%) after the last epoch.
    pub final_top1: f64,
    /// Top-5 (%) after the last epoch.
    pub final_top5: Option<f64>,
    /// Best top-1 (%) over the epochs: what the official script reports.
    pub best_top1: f64,
    /// Top-5 (%) at the epoch of the best top-1.
    pub best_top5: Option<f64>,
    /// 0-based epoch of the best top-1 (the first, on ties).
    pub best_epoch: usize,
    /// Training features.
    pub n_train: usize,
    /// Validation features.
    pub n_val: usize,
    /// Feature width F.
    pub feature_dim: usize,
    /// Classes: 1 + the largest train or validation label.
    pub num_classes: usize,
    /// Settings used.
    pub config: LinearProbeConfig,
}

/// Trains a linear classifier on `train` and evaluates it on `val` after every epoch. See
/// [`train_linear_probe_with`].
///
/// # Errors
/// As [`train_linear_probe_with`].
pub fn train_linear_probe(
    train: &FeatureSet,
    val: &FeatureSet,
    cfg: &LinearProbeConfig,
) -> Result<(LinearClassifier, LinearProbeReport), LinearError> {
    train_linear_probe_with(train, val, cfg, |_| {})
}

/// Trains a linear classifier, calling `on_epoch` after each epoch's validation (for logging).
///
/// Shapes: features `[N, F]` f32 and labels `[N]` i64 with values `>= 0`, as [`FeatureSet`]
/// holds them (on the CPU). Initialisation: weight N(0, 0.01²), bias 0
/// (official `LinearClassifier`); the draw and every epoch's shuffle come from `cfg.seed`
/// (ChaCha8), so results do not depend on thread count. The last mini-batch of an epoch may be
/// smaller (the official loader keeps it).
///
/// # Errors
/// [`LinearError::Features`] for an empty set, a negative label or feature widths that differ
/// ([`check_train_eval`]); [`LinearError::Config`] for a setting out of range; a libtorch failure.
pub fn train_linear_probe_with(
    train: &FeatureSet,
    val: &FeatureSet,
    cfg: &LinearProbeConfig,
    mut on_epoch: impl FnMut(&EpochStats),
) -> Result<(LinearClassifier, LinearProbeReport), LinearError> {
    cfg.validate()?;
    check_train_eval(train, val, "val", true)?;
    let device = train.features.device();
    let (n_train, dim) = (train.len() as i64, train.dim());
    let n_val = val.len() as i64;
    let (train_x, train_labels) = (&train.features, &train.labels);
    let (val_x, val_labels) = (&val.features, &val.labels);
    let num_classes = 1 + train_labels
        .f_max()?
        .f_int64_value(&[])?
        .max(val_labels.f_max()?.f_int64_value(&[])?);

    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let classifier = LinearClassifier {
        weight: Tensor::from_slice(&normal_samples(
            &mut rng,
            (num_classes * dim) as usize,
            0.01,
        ))
        .f_view([num_classes, dim])?
        .f_to_device(device)?
        .set_requires_grad(true),
        bias: Tensor::f_zeros([num_classes], (Kind::Float, device))?.set_requires_grad(true),
    };
    let mut velocity = [
        Tensor::f_zeros_like(&classifier.weight)?,
        Tensor::f_zeros_like(&classifier.bias)?,
    ];
    let base_lr = cfg.scaled_lr();
    let mut history = Vec::with_capacity(cfg.epochs);
    let mut order: Vec<i64> = (0..n_train).collect();
    for epoch in 0..cfg.epochs {
        let lr = cosine_annealing_lr(base_lr, epoch, cfg.epochs);
        // Stream 0 drew the weights; epoch e shuffles from stream e + 1.
        rng.set_stream(epoch as u64 + 1);
        rng.set_word_pos(0);
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        let mut batches = 0usize;
        for batch in order.chunks(cfg.batch_size) {
            let idx = Tensor::from_slice(batch).f_to_device(device)?;
            let x = train_x.f_index_select(0, &idx)?;
            let y = train_labels.f_index_select(0, &idx)?;
            let loss = cross_entropy(&classifier.forward(&x)?, &y)?;
            for p in [&classifier.weight, &classifier.bias] {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.f_zero_()?;
                }
            }
            loss.f_backward()?;
            loss_sum += loss.f_double_value(&[])?;
            batches += 1;
            sgd_step(&classifier, &mut velocity, lr, cfg.momentum)?;
        }
        let stats = tch::no_grad(|| evaluate(&classifier, val_x, val_labels, num_classes))?;
        let stats = EpochStats {
            epoch,
            lr,
            train_loss: loss_sum / batches as f64,
            val_loss: stats.0,
            val_top1: stats.1,
            val_top5: stats.2,
        };
        on_epoch(&stats);
        history.push(stats);
    }
    let last = history.last().expect("epochs >= 1").clone();
    let best = history
        .iter()
        .fold(
            &history[0],
            |b, s| if s.val_top1 > b.val_top1 { s } else { b },
        )
        .clone();
    let classifier = LinearClassifier {
        weight: classifier.weight.detach(),
        bias: classifier.bias.detach(),
    };
    let report = LinearProbeReport {
        history,
        final_top1: last.val_top1,
        final_top5: last.val_top5,
        best_top1: best.val_top1,
        best_top5: best.val_top5,
        best_epoch: best.epoch,
        n_train: n_train as usize,
        n_val: n_val as usize,
        feature_dim: dim as usize,
        num_classes: num_classes as usize,
        config: cfg.clone(),
    };
    Ok((classifier, report))
}

/// `torch.optim.SGD` with momentum, dampening 0, no weight decay, no Nesterov:
/// `v ← μ·v + g; p ← p − lr·v` (the first step's `v = g` follows from `v = 0`).
fn sgd_step(
    classifier: &LinearClassifier,
    velocity: &mut [Tensor; 2],
    lr: f64,
    momentum: f64,
) -> Result<(), TchError> {
    tch::no_grad(|| {
        for (p, v) in [&classifier.weight, &classifier.bias]
            .into_iter()
            .zip(velocity.iter_mut())
        {
            let _ = v.f_mul_scalar_(momentum)?.f_add_(&p.grad())?;
            let _ = p.shallow_clone().f_sub_(&v.f_mul_scalar(lr)?)?;
        }
        Ok(())
    })
}

/// (mean cross-entropy, top-1 %, top-5 % when there are at least 5 classes).
fn evaluate(
    classifier: &LinearClassifier,
    x: &Tensor,
    y: &Tensor,
    num_classes: i64,
) -> Result<(f64, f64, Option<f64>), TchError> {
    let n = x.size()[0];
    let (mut loss, mut top1, mut top5) = (0.0, 0i64, 0i64);
    let mut start = 0;
    while start < n {
        let len = EVAL_CHUNK.min(n - start);
        let logits = classifier.forward(&x.f_narrow(0, start, len)?)?;
        let target = y.f_narrow(0, start, len)?;
        loss += cross_entropy(&logits, &target)?.f_double_value(&[])? * len as f64;
        let (_, best) = logits.f_topk(5.min(num_classes), 1, true, true)?;
        let hit = best.f_eq_tensor(&target.f_view([-1, 1])?)?;
        top1 += hit.f_select(1, 0)?.f_sum(Kind::Int64)?.f_int64_value(&[])?;
        top5 += hit.f_sum(Kind::Int64)?.f_int64_value(&[])?;
        start += len;
    }
    let pct = |h: i64| h as f64 * 100.0 / n as f64;
    Ok((
        loss / n as f64,
        pct(top1),
        (num_classes >= 5).then(|| pct(top5)),
    ))
}

/// Mean cross-entropy of logits `[N, C]` against classes `[N]` (`nn.CrossEntropyLoss()`).
fn cross_entropy(logits: &Tensor, target: &Tensor) -> Result<Tensor, TchError> {
    logits.f_cross_entropy_loss::<Tensor>(target, None, tch::Reduction::Mean, -100, 0.0)
}

/// `n` draws from N(0, std²) by Box–Muller (rand 0.9 has no normal distribution without
/// `rand_distr`); portable because ChaCha8 is.
fn normal_samples(rng: &mut ChaCha8Rng, n: usize, std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            // 1 - u lies in (0, 1], so the logarithm is finite.
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random::<f64>();
            (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn defaults_are_official() {
        // eval_linear.py: --epochs 100, --lr 0.001, --batch_size_per_gpu 128, SGD momentum 0.9.
        let cfg = LinearProbeConfig::default();
        assert_eq!(cfg.epochs, 100);
        assert_eq!(cfg.base_lr, 0.001);
        assert_eq!(cfg.batch_size, 128);
        assert_eq!(cfg.momentum, 0.9);
        // lr = 0.001 * 128 / 256.
        assert_eq!(cfg.scaled_lr(), 0.0005);
    }

    #[test]
    fn cosine_schedule_values() {
        // CosineAnnealingLR(T_max=4, eta_min=0) from lr 1: 1, (1 + cos(π/4))/2, 1/2, (1 - cos(π/4))/2.
        let lrs: Vec<f64> = (0..4).map(|e| cosine_annealing_lr(1.0, e, 4)).collect();
        let expected = [1.0, 0.853_553_390_593_273_8, 0.5, 0.146_446_609_406_726_24];
        for (a, b) in lrs.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{lrs:?}");
        }
        // Official defaults: epoch 0 at 0.0005, halfway 0.00025, last epoch 99 near 0.
        assert_eq!(cosine_annealing_lr(0.0005, 0, 100), 0.0005);
        assert!((cosine_annealing_lr(0.0005, 50, 100) - 0.00025).abs() < 1e-15);
        let last = cosine_annealing_lr(0.0005, 99, 100);
        assert!((last - 0.0005 * (1.0 - (std::f64::consts::PI / 100.0).cos()) / 2.0).abs() < 1e-18);
        assert!(last < 1.3e-7);
    }

    #[test]
    fn normal_init_has_std_0_01() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let xs = normal_samples(&mut rng, 20_000, 0.01);
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 3e-4, "{mean}");
        assert!((var.sqrt() - 0.01).abs() < 3e-4, "{}", var.sqrt());
    }

    #[test]
    fn sgd_matches_torch_semantics() {
        // torch.optim.SGD(momentum=0.9, dampening=0, weight_decay=0): v1 = g, p1 = p0 - lr·g;
        // v2 = 0.9·v1 + g = 1.9·g, p2 = p1 - lr·1.9·g. With g = (1, -2), lr = 0.1, p0 = (1, 1):
        // p1 = (0.9, 1.2), p2 = (0.71, 1.58). Bias gradient 3: 0 → -0.3 → -0.87.
        let classifier = LinearClassifier {
            weight: Tensor::from_slice(&[1f32, 1.0])
                .view([1, 2])
                .set_requires_grad(true),
            bias: Tensor::zeros([1], (Kind::Float, Device::Cpu)).set_requires_grad(true),
        };
        let mut velocity = [
            Tensor::zeros_like(&classifier.weight),
            Tensor::zeros_like(&classifier.bias),
        ];
        let g = Tensor::from_slice(&[1f32, -2.0]).view([1, 2]);
        let mut expected = vec![(vec![0.9f32, 1.2], -0.3f32), (vec![0.71, 1.58], -0.87)];
        expected.reverse();
        for _ in 0..2 {
            for p in [&classifier.weight, &classifier.bias] {
                let mut grad = p.grad();
                if grad.defined() {
                    let _ = grad.zero_();
                }
            }
            ((&classifier.weight * &g).sum(Kind::Float) + &classifier.bias * 3.0)
                .sum(Kind::Float)
                .backward();
            sgd_step(&classifier, &mut velocity, 0.1, 0.9).unwrap();
            let (w, b) = expected.pop().unwrap();
            let got = Vec::<f32>::try_from(classifier.weight.view([-1])).unwrap();
            assert!(
                got.iter().zip(&w).all(|(a, b)| (a - b).abs() < 1e-6),
                "{got:?}"
            );
            let got_b = classifier.bias.double_value(&[0]) as f32;
            assert!((got_b - b).abs() < 1e-6, "{got_b}");
        }
    }
}
