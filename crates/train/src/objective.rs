//! The training objective as the loop sees it: [`TrainMethod`], implemented by the DINO method
//! ([`DinoMethod`]) and the supervised baseline ([`SupervisedMethod`]), and [`build_method`],
//! which picks one from `method.objective`. The loop ([`crate::trainer::train`]), the save
//! policy, the run logger and its epoch hooks only ever hold a `dyn TrainMethod`.

use crate::accumulation::{mean, Window};
use crate::checkpoint::{CheckpointTensors, LoadedCheckpoint};
use crate::distributed::Dist;
use crate::loss::LossStats;
use crate::method::DinoMethod;
use crate::optim::StepOutcome;
use crate::supervised::{loss_stats, SupervisedMethod};
use dino_config::{Config, Objective};
use dino_data::batch::MultiCropBatch;
use dino_model::{Backbone, ComputePrecision};
use tch::Device;

/// What one step reports: the loss with the DINO teacher diagnostics (zeros for the supervised
/// objective, which has no teacher), and the supervised objective's train accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepStats {
    /// The loss (nats) and, for DINO, the teacher diagnostics.
    pub loss: LossStats,
    /// Supervised only: top-1 accuracy on the step's training crops (percent).
    pub train_top1: Option<f64>,
}

impl StepStats {
    /// The record of an optimizer step from its micro-batches' stats: the mean of each field
    /// over the window (one micro-batch comes back unchanged). The loss is then the loss of the
    /// window's images; `center_norm` and `teacher_temp` are the same in every micro-batch;
    /// `teacher_mean_entropy` is a mean of the micro-batches' values (see
    /// [`crate::accumulation`]).
    pub fn window_mean(micro: &[StepStats]) -> StepStats {
        let m = |f: fn(&StepStats) -> f64| mean(micro.iter().map(f));
        StepStats {
            loss: LossStats {
                loss: m(|s| s.loss.loss),
                teacher_entropy: m(|s| s.loss.teacher_entropy),
                kl: m(|s| s.loss.kl),
                teacher_mean_entropy: m(|s| s.loss.teacher_mean_entropy),
                center_norm: m(|s| s.loss.center_norm),
                teacher_temp: m(|s| s.loss.teacher_temp),
                koleo: m(|s| s.loss.koleo),
            },
            train_top1: micro
                .iter()
                .map(|s| s.train_top1)
                .collect::<Option<Vec<f64>>>()
                .map(mean),
        }
    }
}

/// One training objective: a step split as dinov2's `SSLMetaArch` splits it, its checkpoint
/// contents, and the backbone the epoch hooks (online k-NN) evaluate.
pub trait TrainMethod {
    /// Loss and gradients of one micro-batch of the step at global iteration `it`, at
    /// position `window` of its accumulation window (gradients accumulate over the window and
    /// are averaged across ranks at its end; see [`crate::accumulation`]).
    ///
    /// # Errors
    /// A non-finite loss ([`crate::metrics::NonFiniteLoss`]), libtorch errors, a failed
    /// collective; the supervised objective refuses a window of more than one micro-batch.
    fn forward_backward(
        &mut self,
        batch: &MultiCropBatch,
        it: usize,
        window: Window,
        dist: &Dist,
    ) -> anyhow::Result<StepStats>;

    /// The update of a step in `epoch` at learning rate `lr` and weight decay `wd`.
    ///
    /// # Errors
    /// libtorch errors.
    fn optimizer_step(&mut self, lr: f64, wd: f64, epoch: usize) -> anyhow::Result<StepOutcome>;

    /// The EMA of the student into the teacher with `momentum`; nothing where there is no
    /// teacher.
    ///
    /// # Errors
    /// A momentum outside [0, 1], libtorch errors.
    fn update_teacher(&self, momentum: f64) -> anyhow::Result<()>;

    /// Restores the state a checkpoint of this objective holds.
    ///
    /// # Errors
    /// A checkpoint that does not fit these networks or this optimizer.
    fn restore(&mut self, ck: &LoadedCheckpoint) -> anyhow::Result<()>;

    /// Starts the networks from the weights of `path` (`dino train --init-from`); an objective
    /// without that support refuses.
    ///
    /// # Errors
    /// A file that does not fit the networks; an objective that cannot start from a file.
    fn init_from(
        &mut self,
        path: &std::path::Path,
    ) -> anyhow::Result<crate::init_from::InitReport> {
        anyhow::bail!(
            "--init-from {} is for method.objective = \"dino\"",
            path.display()
        )
    }

    /// The tensors a checkpoint holds.
    ///
    /// # Errors
    /// libtorch errors.
    fn checkpoint_tensors(&self) -> anyhow::Result<CheckpointTensors<'_>>;

    /// The device the networks live on.
    fn device(&self) -> Device;

    /// The forward precision in force.
    fn precision(&self) -> ComputePrecision;

    /// The backbone evaluations read during training: DINO's teacher, the supervised network.
    fn eval_backbone(&self) -> &Backbone;
}

/// The method of `method.objective`: DINO for `n_crops` crops, or the supervised baseline with
/// a classifier to `n_classes` classes (the training set's).
///
/// # Errors
/// As [`DinoMethod::new`] and [`SupervisedMethod::new`].
pub fn build_method(
    cfg: &Config,
    n_crops: usize,
    n_classes: usize,
    device: Device,
    precision: ComputePrecision,
    dist: &Dist,
) -> anyhow::Result<Box<dyn TrainMethod>> {
    Ok(match cfg.method.objective {
        Objective::Dino => Box::new(DinoMethod::new(cfg, n_crops, device, precision, dist)?),
        Objective::Supervised => Box::new(SupervisedMethod::new(
            cfg, n_classes, device, precision, dist,
        )?),
    })
}

impl TrainMethod for DinoMethod {
    fn forward_backward(
        &mut self,
        batch: &MultiCropBatch,
        it: usize,
        window: Window,
        dist: &Dist,
    ) -> anyhow::Result<StepStats> {
        Ok(StepStats {
            loss: DinoMethod::forward_backward(self, batch, it, window, dist)?,
            train_top1: None,
        })
    }

    fn optimizer_step(&mut self, lr: f64, wd: f64, epoch: usize) -> anyhow::Result<StepOutcome> {
        DinoMethod::optimizer_step(self, lr, wd, epoch)
    }

    fn update_teacher(&self, momentum: f64) -> anyhow::Result<()> {
        DinoMethod::update_teacher(self, momentum)
    }

    fn restore(&mut self, ck: &LoadedCheckpoint) -> anyhow::Result<()> {
        DinoMethod::restore(self, ck)
    }

    fn init_from(
        &mut self,
        path: &std::path::Path,
    ) -> anyhow::Result<crate::init_from::InitReport> {
        DinoMethod::init_from(self, path)
    }

    fn checkpoint_tensors(&self) -> anyhow::Result<CheckpointTensors<'_>> {
        DinoMethod::checkpoint_tensors(self)
    }

    fn device(&self) -> Device {
        DinoMethod::device(self)
    }

    fn precision(&self) -> ComputePrecision {
        DinoMethod::precision(self)
    }

    fn eval_backbone(&self) -> &Backbone {
        &self.teacher.backbone
    }
}

impl TrainMethod for SupervisedMethod {
    fn forward_backward(
        &mut self,
        batch: &MultiCropBatch,
        it: usize,
        window: Window,
        dist: &Dist,
    ) -> anyhow::Result<StepStats> {
        // The config refuses optim.accum_steps > 1 for this objective (dino_config::validate).
        anyhow::ensure!(
            window.len == 1,
            "optim.accum_steps: the supervised objective does not accumulate gradients"
        );
        let s = SupervisedMethod::forward_backward(self, batch, it, dist)?;
        Ok(StepStats {
            loss: loss_stats(&s),
            train_top1: Some(s.top1),
        })
    }

    fn optimizer_step(&mut self, lr: f64, wd: f64, _epoch: usize) -> anyhow::Result<StepOutcome> {
        SupervisedMethod::optimizer_step(self, lr, wd)
    }

    fn update_teacher(&self, _momentum: f64) -> anyhow::Result<()> {
        Ok(())
    }

    fn restore(&mut self, ck: &LoadedCheckpoint) -> anyhow::Result<()> {
        SupervisedMethod::restore(self, ck)
    }

    fn checkpoint_tensors(&self) -> anyhow::Result<CheckpointTensors<'_>> {
        SupervisedMethod::checkpoint_tensors(self)
    }

    fn device(&self) -> Device {
        SupervisedMethod::device(self)
    }

    fn precision(&self) -> ComputePrecision {
        SupervisedMethod::precision(self)
    }

    fn eval_backbone(&self) -> &Backbone {
        &self.backbone
    }
}
