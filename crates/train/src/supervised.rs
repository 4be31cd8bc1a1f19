//! The supervised baseline (`method.objective = "supervised"`): the DINO run's ViT trained with
//! labels, so that every comparison the paper draws against a supervised network of the same
//! size (§4.2.1: attention masks, Table 5 video segmentation, the k-NN tables) can be made here
//! with the same backbone, data, augmentation, optimizer and budget.
//!
//! What it is, and where each choice comes from:
//! - **Network**: the configured [`Backbone`] (ViT or ResNet) at `backbone.*` (the name a DINO
//!   network's backbone has) and a linear classifier `classifier.weight` `[C, D]`,
//!   `classifier.bias` `[C]` on its normalised CLS token (DeiT's and timm's `head` on the CLS
//!   token; named `classifier` here so it is never mistaken for the DINO head). The backbone is
//!   built from `tch::manual_seed(runtime.seed)` first, exactly as the DINO student is, so both
//!   objectives start from the same weights; the classifier follows (truncated normal,
//!   std 0.02, zero bias: DeiT / timm `_init_weights`).
//! - **Augmentation**: the DINO pipeline's two global crops (RandomResizedCrop at
//!   `augmentation.global_crops_scale`, flip, colour jitter, grayscale, blur, solarize as
//!   configured), each a labelled sample; no local crops are made. The paper's supervised rows
//!   are DeiT (Touvron et al. 2021), whose recipe is RandomResizedCrop + flip plus RandAugment,
//!   mixup, cutmix and random erasing; we keep DINO's own photometric pipeline instead, so that
//!   the two runs differ in the objective alone (issue #18: "the same backbone and
//!   augmentation"), and it is as strong a crop-and-colour augmentation as DeiT's minus the
//!   label-mixing parts, which have no counterpart in DINO.
//! - **Loss**: cross-entropy (mean over the `2B` crops) against the dataset's labels (class
//!   folders, CIFAR-10, IDX; a dataset without classes is refused before any work). No label
//!   smoothing.
//! - **Optimizer**: the DINO run's own ([`Optimizer`]: AdamW / SGD / LARS as `optim.optimizer`,
//!   the same two parameter groups, the cosine lr schedule with warm-up and the lr scaling rule,
//!   the cosine weight-decay schedule, per-parameter clipping at `optim.clip_grad`). DeiT also
//!   trains ViTs with AdamW, lr 5e-4 · batch / 512, weight decay 0.05, cosine schedule and
//!   warm-up, i.e. the same family of settings. Nothing is frozen; the teacher momentum schedule
//!   is unused.
//! - **Checkpoint**: there is no teacher. [`SupervisedMethod::checkpoint_tensors`] hands the
//!   one variable store as both student and teacher, so the file holds the trained network
//!   under `student.backbone.*` and `teacher.backbone.*` (every evaluation reads
//!   `teacher.backbone.*` by default, official `--checkpoint_key teacher`), the classifier as
//!   `student.classifier.*` / `teacher.classifier.*`, the optimizer state, and no `center`.
//!
//! Resume is exact as for DINO: the loader's crops depend only on (seed, epoch, index), and
//! stochastic depth is reseeded from (seed, iteration, rank) at each step.

use crate::checkpoint::{CheckpointTensors, LoadedCheckpoint};
use crate::distributed::Dist;
use crate::grad_scaler::{GradScaler, ScalerOptions};
use crate::input::Normalizer;
use crate::loss::stats::CROSS_ENTROPY;
use crate::loss::{LossStats, TermStats};
use crate::method::seed_iteration;
use crate::metrics::check_finite;
use crate::optim::{Optimizer, StepOutcome};
use dino_config::{AugmentationConfig, Config};
use dino_data::batch::MultiCropBatch;
use dino_model::init::trunc_normal_;
use dino_model::{with_precision, Backbone, BackboneConfig, ComputePrecision, TokenScope};
use std::collections::HashSet;
use tch::{nn, Device, Kind, Reduction, Tensor};

/// The augmentation of the supervised objective: the configured DINO pipeline without local
/// crops (only the two global crops are trained on, so none are made).
pub fn supervised_augmentation(a: &AugmentationConfig) -> AugmentationConfig {
    AugmentationConfig {
        local_crops_number: 0,
        ..a.clone()
    }
}

/// Loss and train accuracy of one supervised step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SupervisedStats {
    /// Cross-entropy (nats), mean over the global batch's crops and ranks.
    pub loss: f64,
    /// Top-1 accuracy on the step's training crops (percent), before the update, mean over
    /// ranks.
    pub top1: f64,
}

/// Everything one supervised training step changes, and how.
pub struct SupervisedMethod {
    /// The variables: `backbone.*` (official ViT names) and `classifier.{weight,bias}`.
    pub vs: nn::VarStore,
    /// The ViT (stochastic depth at `model.drop_path_rate` in training).
    pub backbone: Backbone,
    /// The optimizer (`optim.optimizer`) over every variable.
    pub optimizer: Optimizer,
    /// The fp16 loss scaler (`runtime.precision = "fp16"` only).
    pub scaler: Option<GradScaler>,
    weight: Tensor,
    bias: Tensor,
    n_classes: i64,
    input: Normalizer,
    device: Device,
    precision: ComputePrecision,
    seed: u64,
    clip_grad: f64,
    /// CLS only under `model.cls_only_last_block`: the classifier reads nothing else.
    scope: TokenScope,
}

impl SupervisedMethod {
    /// Builds the ViT from `tch::manual_seed(runtime.seed)` (the DINO student's initial
    /// weights) and a classifier to `n_classes` classes, then the optimizer. With several
    /// processes every rank starts from rank 0's weights.
    ///
    /// # Errors
    /// Fewer than 2 classes, model configuration errors, libtorch errors, a failed broadcast.
    pub fn new(
        cfg: &Config,
        n_classes: usize,
        device: Device,
        precision: ComputePrecision,
        dist: &Dist,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            n_classes >= 2,
            "method.objective = \"supervised\" needs at least 2 classes, the data has {n_classes}"
        );
        let net = BackboneConfig::from_model(&cfg.model)?;
        tch::manual_seed(cfg.runtime.seed as i64);
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let backbone = Backbone::new(&(&root / "backbone"), &net)?;
        let c = &root / "classifier";
        let d = backbone.embed_dim();
        let mut weight = c.f_var("weight", &[n_classes as i64, d], nn::Init::Const(0.0))?;
        trunc_normal_(&mut weight, 0.02)?;
        let bias = c.f_var("bias", &[n_classes as i64], nn::Init::Const(0.0))?;
        if dist.world_size > 1 {
            dist.broadcast_from_main(&vs)?;
        }
        let optimizer = Optimizer::from_var_store(&vs, &cfg.optim)?;
        let scaler = if precision.needs_loss_scaling() {
            Some(GradScaler::new(ScalerOptions::default(), device)?)
        } else {
            None
        };
        Ok(Self {
            vs,
            backbone,
            optimizer,
            scaler,
            weight,
            bias,
            n_classes: n_classes as i64,
            input: Normalizer::new(cfg.augmentation.mean, cfg.augmentation.std, device)?,
            device,
            precision,
            seed: cfg.runtime.seed,
            clip_grad: cfg.optim.clip_grad,
            scope: TokenScope::for_cls_loss(cfg.model.cls_only_last_block),
        })
    }

    /// Classes of the classifier.
    pub fn n_classes(&self) -> usize {
        self.n_classes as usize
    }

    /// Class logits `[N, C]` of images `[N, 3, H, W]` (normalised), in the forward precision;
    /// `train` enables stochastic depth. Under `model.cls_only_last_block` the ViT's last block
    /// runs for the CLS row only ([`TokenScope::ClsOnly`]).
    ///
    /// # Errors
    /// Backbone errors (input shape), libtorch errors.
    pub fn logits(&self, x: &Tensor, train: bool) -> anyhow::Result<Tensor> {
        with_precision(self.precision, self.device, || -> anyhow::Result<Tensor> {
            let cls = self.backbone.forward_scoped(x, train, self.scope)?;
            Ok(cls.f_linear(&self.weight, Some(&self.bias))?)
        })
    }

    /// The first half of a step at global iteration `it`: the backbone and classifier on the
    /// batch's 2 global crops (`[2B, 3, H, W]`, view-major, so crop `v·B + b` is image `b`'s
    /// view `v` and gets label `labels[b]`), the cross-entropy, then `zero_grad` and backward,
    /// with the gradients averaged across ranks. Stochastic depth draws from libtorch's
    /// generator seeded by (`runtime.seed`, `it`, rank), as in [`crate::method::DinoMethod`].
    ///
    /// # Errors
    /// A label outside `0..C`, a non-finite loss ([`crate::metrics::NonFiniteLoss`], before
    /// backward), libtorch errors, a failed collective.
    pub fn forward_backward(
        &mut self,
        batch: &MultiCropBatch,
        it: usize,
        dist: &Dist,
    ) -> anyhow::Result<SupervisedStats> {
        let (epoch, step) = (batch.epoch as usize, batch.step as usize);
        let b = batch.batch_size as i64;
        let g = batch.global_size as i64;
        if let Some(bad) = batch
            .labels
            .iter()
            .find(|&&l| !(0..self.n_classes).contains(&l))
        {
            anyhow::bail!(
                "label {bad} in epoch {}, step {} is outside the classifier's {} classes",
                epoch + 1,
                step + 1,
                self.n_classes
            );
        }
        let input = self.input.to_input(&batch.globals, [2 * b, 3, g, g])?;
        let labels = Tensor::f_from_slice(&batch.labels)?.f_to_device(self.device)?;
        let targets = Tensor::f_cat(&[&labels, &labels], 0)?;

        seed_iteration(self.seed, it, dist.rank);
        let logits = self.logits(&input, true)?.f_to_kind(Kind::Float)?;
        let loss =
            logits.f_cross_entropy_loss::<Tensor>(&targets, None, Reduction::Mean, -100, 0.0)?;
        let correct = tch::no_grad(|| -> Result<f64, tch::TchError> {
            logits
                .f_argmax(-1, false)?
                .f_eq_tensor(&targets)?
                .f_to_kind(Kind::Float)?
                .f_mean(Kind::Float)?
                .f_double_value(&[])
        })?;
        let stats = SupervisedStats {
            loss: dist.mean_scalar(loss.f_double_value(&[])?)?,
            top1: dist.mean_scalar(100.0 * correct)?,
        };
        check_finite(stats.loss, epoch, step)?;

        self.optimizer.zero_grad();
        match &self.scaler {
            Some(scaler) => self.optimizer.backward(&scaler.scale_loss(&loss)?)?,
            None => self.optimizer.backward(&loss)?,
        }
        if dist.world_size > 1 {
            dist.average_grads(&mut self.optimizer.grad_buffers(&Default::default())?)?;
        }
        Ok(stats)
    }

    /// The optimizer half of a step: per-parameter clipping at `optim.clip_grad`, then the
    /// optimizer at learning rate `lr` and weight decay `wd`; nothing is frozen. Under fp16 the
    /// loss scaler's unscale, skip and update as for DINO.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn optimizer_step(&mut self, lr: f64, wd: f64) -> anyhow::Result<StepOutcome> {
        Ok(self.optimizer.clip_and_step(
            self.clip_grad,
            lr,
            wd,
            &HashSet::new(),
            self.scaler.as_mut(),
        )?)
    }

    /// Restores the network (`student.*`), the optimizer state and, under fp16, the loss
    /// scaler (a checkpoint without one starts a fresh scaler, as for DINO).
    ///
    /// # Errors
    /// A checkpoint that does not fit this network or optimizer, a malformed scaler state.
    pub fn restore(&mut self, ck: &LoadedCheckpoint) -> anyhow::Result<()> {
        ck.restore_student(&self.vs)?;
        self.optimizer.load_state(&ck.optim_state())?;
        if let Some(scaler) = &mut self.scaler {
            let state = ck.scaler_state();
            if state.is_empty() {
                tracing::info!(
                    "the checkpoint has no fp16 loss-scaler state: the scaler starts again at \
                     its initial scale"
                );
            } else {
                scaler
                    .load_state(&state)
                    .map_err(|e| anyhow::anyhow!("checkpoint loss scaler: {e}"))?;
            }
        }
        Ok(())
    }

    /// The tensors a checkpoint holds: the network as both student and teacher (see the module
    /// doc), the optimizer state, the fp16 scaler state, no center.
    ///
    /// # Errors
    /// libtorch errors while collecting the optimizer state.
    pub fn checkpoint_tensors(&self) -> anyhow::Result<CheckpointTensors<'_>> {
        Ok(CheckpointTensors {
            student: &self.vs,
            teacher: &self.vs,
            optim: self.optimizer.state_tensors()?,
            scaler: self
                .scaler
                .as_ref()
                .map(GradScaler::state_tensors)
                .unwrap_or_default(),
            centers: Vec::new(),
        })
    }

    /// The device the network lives on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The forward precision in force.
    pub fn precision(&self) -> ComputePrecision {
        self.precision
    }
}

/// The step's loss statistics: one term, [`CROSS_ENTROPY`], whose value is the total (there is
/// no teacher, so no DINO diagnostics).
pub fn loss_stats(s: &SupervisedStats) -> LossStats {
    LossStats::from_terms(vec![TermStats::new(CROSS_ENTROPY, 1.0, s.loss)])
}
