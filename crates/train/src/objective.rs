//! The training objective as the loop sees it: [`TrainMethod`], the DINO method
//! ([`DinoMethod`]) or the supervised baseline ([`SupervisedMethod`]), picked from
//! `method.objective` by [`TrainMethod::new`]. This is the one place that tells the two apart:
//! each operation of a step is one `match` here. The loop ([`crate::trainer::train`]), the save
//! policy, the run logger and its epoch hooks only ever hold a [`TrainMethod`].

use crate::accumulation::{mean, Window};
use crate::checkpoint::{CheckpointTensors, LoadedCheckpoint};
use crate::distributed::Dist;
use crate::init_from::InitReport;
use crate::loss::LossStats;
use crate::method::DinoMethod;
use crate::optim::StepOutcome;
use crate::supervised::{loss_stats, SupervisedMethod};
use dino_config::{Config, Objective};
use dino_data::batch::MultiCropBatch;
use dino_model::{Backbone, ComputePrecision};
use std::path::Path;
use tch::Device;

/// What one step reports: the loss as named terms (DINO's with the teacher diagnostics; the
/// supervised objective's cross-entropy), and the supervised objective's train accuracy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepStats {
    /// The total loss (nats) and its named terms with their statistics.
    pub loss: LossStats,
    /// Supervised only: top-1 accuracy on the step's training crops (percent).
    pub train_top1: Option<f64>,
}

impl StepStats {
    /// The record of an optimizer step from its micro-batches' stats: the mean of each value
    /// over the window, the total and each term's statistics ([`LossStats::summarize`]; one
    /// micro-batch comes back unchanged). The loss is then the loss of the window's images;
    /// DINO's `center_norm` and `teacher_temp` are the same in every micro-batch;
    /// `teacher_mean_entropy` is a mean of the micro-batches' values (see
    /// [`crate::accumulation`]).
    pub fn window_mean(micro: &[StepStats]) -> StepStats {
        StepStats {
            loss: LossStats::summarize(micro.iter().map(|s| &s.loss), false),
            train_top1: micro
                .iter()
                .map(|s| s.train_top1)
                .collect::<Option<Vec<f64>>>()
                .map(mean),
        }
    }
}

/// The objective of `method.objective`: one step split as dinov2's `SSLMetaArch` splits it
/// (forward and backward, optimizer step, teacher EMA), its checkpoint contents, and the
/// backbone the epoch hooks (online k-NN) evaluate.
pub enum TrainMethod {
    /// `method.objective = "dino"`: student, teacher, the DINO loss (and DINOv2's terms).
    Dino(Box<DinoMethod>),
    /// `method.objective = "supervised"`: the same backbone with a linear classifier.
    Supervised(Box<SupervisedMethod>),
}

impl TrainMethod {
    /// The method of `method.objective`: DINO for `n_crops` crops, or the supervised baseline
    /// with a classifier to `n_classes` classes (the training set's).
    ///
    /// # Errors
    /// As [`DinoMethod::new`] and [`SupervisedMethod::new`].
    pub fn new(
        cfg: &Config,
        n_crops: usize,
        n_classes: usize,
        device: Device,
        precision: ComputePrecision,
        dist: &Dist,
    ) -> anyhow::Result<Self> {
        Ok(match cfg.method.objective {
            Objective::Dino => Self::Dino(Box::new(DinoMethod::new(
                cfg, n_crops, device, precision, dist,
            )?)),
            Objective::Supervised => Self::Supervised(Box::new(SupervisedMethod::new(
                cfg, n_classes, device, precision, dist,
            )?)),
        })
    }

    /// Loss and gradients of one micro-batch of the step at global iteration `it`, at
    /// position `window` of its accumulation window (gradients accumulate over the window and
    /// are averaged across ranks at its end; see [`crate::accumulation`]).
    ///
    /// # Errors
    /// A non-finite loss ([`crate::metrics::NonFiniteLoss`]), libtorch errors, a failed
    /// collective; the supervised objective refuses a window of more than one micro-batch.
    pub fn forward_backward(
        &mut self,
        batch: &MultiCropBatch,
        it: usize,
        window: Window,
        dist: &Dist,
    ) -> anyhow::Result<StepStats> {
        match self {
            Self::Dino(m) => Ok(StepStats {
                loss: m.forward_backward(batch, it, window, dist)?,
                train_top1: None,
            }),
            Self::Supervised(m) => {
                // The config refuses optim.accum_steps > 1 for this objective
                // (dino_config::validate).
                anyhow::ensure!(
                    window.len == 1,
                    "optim.accum_steps: the supervised objective does not accumulate gradients"
                );
                let s = m.forward_backward(batch, it, dist)?;
                Ok(StepStats {
                    loss: loss_stats(&s),
                    train_top1: Some(s.top1),
                })
            }
        }
    }

    /// The update of a step in `epoch` at learning rate `lr` and weight decay `wd` (DINO also
    /// freezes the last layer and, in the head warm-up, the backbone by `epoch`).
    ///
    /// # Errors
    /// libtorch errors.
    pub fn optimizer_step(
        &mut self,
        lr: f64,
        wd: f64,
        epoch: usize,
    ) -> anyhow::Result<StepOutcome> {
        match self {
            Self::Dino(m) => m.optimizer_step(lr, wd, epoch),
            Self::Supervised(m) => m.optimizer_step(lr, wd),
        }
    }

    /// The EMA of the student into the teacher with `momentum`; nothing where there is no
    /// teacher (supervised).
    ///
    /// # Errors
    /// A momentum outside [0, 1], libtorch errors.
    pub fn update_teacher(&self, momentum: f64) -> anyhow::Result<()> {
        match self {
            Self::Dino(m) => m.update_teacher(momentum),
            Self::Supervised(_) => Ok(()),
        }
    }

    /// Restores the state a checkpoint of this objective holds.
    ///
    /// # Errors
    /// A checkpoint that does not fit these networks or this optimizer.
    pub fn restore(&mut self, ck: &LoadedCheckpoint) -> anyhow::Result<()> {
        match self {
            Self::Dino(m) => m.restore(ck),
            Self::Supervised(m) => m.restore(ck),
        }
    }

    /// Starts the networks from the weights of `path` (`dino train --init-from`); the
    /// supervised objective refuses.
    ///
    /// # Errors
    /// A file that does not fit the networks; the supervised objective.
    pub fn init_from(&mut self, path: &Path) -> anyhow::Result<InitReport> {
        match self {
            Self::Dino(m) => m.init_from(path),
            Self::Supervised(_) => anyhow::bail!(
                "--init-from {} is for method.objective = \"dino\"",
                path.display()
            ),
        }
    }

    /// The tensors a checkpoint holds.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn checkpoint_tensors(&self) -> anyhow::Result<CheckpointTensors<'_>> {
        match self {
            Self::Dino(m) => m.checkpoint_tensors(),
            Self::Supervised(m) => m.checkpoint_tensors(),
        }
    }

    /// The device the networks live on.
    pub fn device(&self) -> Device {
        match self {
            Self::Dino(m) => m.device(),
            Self::Supervised(m) => m.device(),
        }
    }

    /// The forward precision in force.
    pub fn precision(&self) -> ComputePrecision {
        match self {
            Self::Dino(m) => m.precision(),
            Self::Supervised(m) => m.precision(),
        }
    }

    /// The backbone evaluations read during training: DINO's teacher, the supervised network.
    pub fn eval_backbone(&self) -> &Backbone {
        match self {
            Self::Dino(m) => &m.teacher.backbone,
            Self::Supervised(m) => &m.backbone,
        }
    }
}
