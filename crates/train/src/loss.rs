//! The DINO loss (`DINOLoss` in `main_dino.py`, paper Sec. 3.1 and Alg. 1): cross-entropy
//! between the centred, sharpened teacher distribution of each global view and the student
//! distribution of every *other* view, plus the EMA center and collapse diagnostics.
//!
//! DINOv2's additions live in their own files: [`koleo`] (the KoLeo term on the student's CLS
//! features) and [`sinkhorn`] (Sinkhorn-Knopp teacher targets, `loss.centering`). The
//! statistics of an evaluation are a list of named terms ([`stats`]: `dino`, `koleo`, …).

mod center;
pub mod ibot;
pub mod koleo;
pub mod sinkhorn;
pub mod stats;

pub use stats::{LossStats, TermStats};

use crate::schedule::{teacher_temp_schedule, ScheduleError};
use dino_config::{Centering, LossConfig};
use tch::{Device, Kind, TchError, Tensor};

/// Errors of the loss: wrong logit shapes, an epoch past the temperature schedule, libtorch.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    /// A logits tensor does not have the documented shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which input.
        what: &'static str,
        /// The expected shape in words.
        expected: String,
        /// The actual shape.
        got: Vec<i64>,
    },
    /// `epoch` is not covered by the teacher-temperature schedule.
    #[error("epoch {epoch} is past the teacher-temperature schedule ({epochs} epochs)")]
    EpochOutOfRange {
        /// Requested epoch (0-based).
        epoch: usize,
        /// Length of the schedule.
        epochs: usize,
    },
    /// Bad construction arguments.
    #[error("invalid DINO loss setting: {0}")]
    Invalid(String),
    /// The teacher-temperature schedule could not be built.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// A libtorch operation failed.
    #[error(transparent)]
    Torch(#[from] TchError),
    /// A collective across processes (Sinkhorn-Knopp's all-reduced sums) failed.
    #[error("collective across processes failed: {0}")]
    Collective(String),
}

/// One evaluation of the loss.
#[derive(Debug)]
pub struct LossOutput {
    /// Scalar loss tensor (Float), attached to the student graph for `backward`.
    pub loss: Tensor,
    /// Diagnostics (one host sync).
    pub stats: LossStats,
}

/// One term of the DINO loss: ((teacher view j, student view v), the scalar batch mean of
/// `−Σ_k t_j[k] · s_v[k]`).
pub type PairTerm = ((usize, usize), Tensor);

/// The teacher side of one loss evaluation ([`DinoLoss::targets`]): the teacher distribution
/// `[2·B, K]` (Float, detached; centred and sharpened softmax, or Sinkhorn-Knopp) and its log,
/// split per global view.
#[derive(Debug)]
pub struct TeacherTargets {
    log_probs: Tensor,
    probs: Tensor,
    views: Vec<Tensor>,
    center: Tensor,
    temp: f64,
    batch: i64,
}

impl TeacherTargets {
    /// Images per view, B.
    pub fn batch(&self) -> i64 {
        self.batch
    }
}

/// DINO loss with its center buffer and teacher-temperature schedule.
#[derive(Debug)]
pub struct DinoLoss {
    out_dim: usize,
    n_crops: usize,
    student_temp: f64,
    center_momentum: f64,
    teacher_temp_schedule: Vec<f64>,
    center: Tensor,
    centering: Centering,
    /// DINOv2's iBOT patch term and its center (`ibot.loss_weight > 0`), kept here so its
    /// centering state travels with DINO's by name.
    ibot: Option<ibot::IbotPatchLoss>,
}

/// Checkpoint name of the iBOT center (dinov2's `ibot_patch_loss.center`).
pub const IBOT_CENTER: &str = "ibot_center";

impl DinoLoss {
    /// `out_dim` = K prototypes, `n_crops` = 2 global + local crops (official `ncrops`),
    /// temperatures and center momentum from `cfg`, `epochs` = length of the per-epoch teacher
    /// temperature schedule. The center starts as zeros `[1, K]` (Float, CPU; it moves to the
    /// logits' device at the first [`DinoLoss::update_center`]).
    pub fn new(
        out_dim: usize,
        n_crops: usize,
        cfg: &LossConfig,
        epochs: usize,
    ) -> Result<Self, LossError> {
        if out_dim == 0 {
            return Err(LossError::Invalid("out_dim must be positive".into()));
        }
        if n_crops < 2 {
            return Err(LossError::Invalid(format!(
                "n_crops must count the 2 global crops (got {n_crops})"
            )));
        }
        let teacher_temp_schedule = teacher_temp_schedule(
            cfg.warmup_teacher_temp,
            cfg.teacher_temp,
            cfg.warmup_teacher_temp_epochs,
            epochs,
        )?;
        let center = Tensor::f_zeros([1, out_dim as i64], (Kind::Float, Device::Cpu))?;
        Ok(Self {
            out_dim,
            n_crops,
            student_temp: cfg.student_temp,
            center_momentum: cfg.center_momentum,
            teacher_temp_schedule,
            center,
            centering: cfg.centering,
            ibot: None,
        })
    }

    /// This loss with DINOv2's iBOT patch term ([`ibot::IbotPatchLoss`]) beside DINO's.
    pub fn with_ibot(mut self, term: ibot::IbotPatchLoss) -> Self {
        self.ibot = Some(term);
        self
    }

    /// The iBOT term, when on.
    pub fn ibot(&self) -> Option<&ibot::IbotPatchLoss> {
        self.ibot.as_ref()
    }

    /// The iBOT term, when on, to update its center.
    pub fn ibot_mut(&mut self) -> Option<&mut ibot::IbotPatchLoss> {
        self.ibot.as_mut()
    }

    /// Number of prototypes K.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Number of crops (2 global + locals).
    pub fn n_crops(&self) -> usize {
        self.n_crops
    }

    /// Number of (teacher view, student view) pairs averaged: 2 (n_crops − 1) (18 for 10 crops).
    pub fn n_loss_terms(&self) -> usize {
        2 * (self.n_crops - 1)
    }

    /// Teacher temperature of `epoch` (0-based).
    pub fn teacher_temp(&self, epoch: usize) -> Result<f64, LossError> {
        self.teacher_temp_schedule
            .get(epoch)
            .copied()
            .ok_or(LossError::EpochOutOfRange {
                epoch,
                epochs: self.teacher_temp_schedule.len(),
            })
    }

    /// `loss.centering`: the EMA center or Sinkhorn-Knopp.
    pub fn centering(&self) -> Centering {
        self.centering
    }

    /// The center `[1, K]` (Float), for checkpoints.
    pub fn center(&self) -> &Tensor {
        &self.center
    }

    /// The names of the centering states a checkpoint holds for this loss: `center` (DINO's
    /// EMA center, kept under Sinkhorn-Knopp too, unchanged, so a run may switch back) and,
    /// with iBOT, `ibot_center`.
    pub fn centering_state_names(&self) -> Vec<&'static str> {
        self.centering_states()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    /// The centering states by name, for checkpoints ([`DinoLoss::centering_state_names`]).
    pub fn centering_states(&self) -> Vec<(&'static str, &Tensor)> {
        let mut states = vec![("center", &self.center)];
        if let Some(ibot) = &self.ibot {
            states.push((IBOT_CENTER, ibot.center()));
        }
        states
    }

    /// Restores the centering state `name` (checkpoint resume).
    ///
    /// # Errors
    /// An unknown name, or a shape that does not fit (see [`DinoLoss::set_center`]).
    pub fn set_centering_state(&mut self, name: &str, state: &Tensor) -> Result<(), LossError> {
        match (name, self.ibot.as_mut()) {
            ("center", _) => self.set_center(state),
            (IBOT_CENTER, Some(ibot)) => ibot.set_center(state),
            (other, _) => Err(LossError::Invalid(format!(
                "no centering state named {other:?} in this loss"
            ))),
        }
    }

    /// Replaces the center (checkpoint restore). Errors unless `center` is `[1, K]`.
    pub fn set_center(&mut self, center: &Tensor) -> Result<(), LossError> {
        self.center = center::restored(center, self.out_dim, "center")?;
        Ok(())
    }

    fn check_shapes(&self, student: &Tensor, teacher: &Tensor) -> Result<i64, LossError> {
        let k = self.out_dim as i64;
        let t = teacher.size();
        if t.len() != 2 || t[1] != k || t[0] == 0 || t[0] % 2 != 0 {
            return Err(LossError::Shape {
                what: "teacher logits",
                expected: format!("[2·B, {k}] with B > 0"),
                got: t,
            });
        }
        let b = t[0] / 2;
        let n = self.n_crops as i64;
        if student.size() != [n * b, k] {
            return Err(LossError::Shape {
                what: "student logits",
                expected: format!("[{n}·{b}, {k}] (n_crops·B, K), view-major"),
                got: student.size(),
            });
        }
        Ok(b)
    }

    /// Evaluates the loss without touching the center (one process).
    ///
    /// `student`: `[n_crops·B, K]` raw head outputs, view-major (`[g1; g2; l1; …]`, B rows
    /// each); `teacher`: `[2·B, K]` raw teacher outputs for the two global views. Both are cast
    /// to Float. Student: `log_softmax(z / τ_s)`; teacher: `softmax((z − c) / τ_t(epoch))`
    /// (or the Sinkhorn-Knopp targets, `loss.centering`), detached. The loss is the mean over the 2 (n_crops − 1) pairs (j ∈ {0, 1}, v ≠ j) of the
    /// batch mean of `−Σ_k t_j[k] · s_v[k]`, as `DINOLoss.forward`.
    pub fn forward(
        &self,
        student: &Tensor,
        teacher: &Tensor,
        epoch: usize,
    ) -> Result<LossOutput, LossError> {
        let (loss, targets) = self.loss_and_targets(student, teacher, epoch)?;
        let stats = self.stats(&loss, &targets)?;
        Ok(LossOutput { loss, stats })
    }

    /// [`DinoLoss::forward`] without the diagnostics: the loss (attached to the student graph)
    /// and the teacher targets it used, for [`DinoLoss::stats_tensor`]. No host sync.
    ///
    /// # Errors
    /// As [`DinoLoss::forward`].
    pub fn loss_and_targets(
        &self,
        student: &Tensor,
        teacher: &Tensor,
        epoch: usize,
    ) -> Result<(Tensor, TeacherTargets), LossError> {
        self.loss_and_targets_across(student, teacher, epoch, 1, &|_| Ok(()))
    }

    /// [`DinoLoss::forward`] without the diagnostics, in a job of `world_size` processes
    /// (`all_reduce_sum` as [`DinoLoss::targets_across`]): the loss (attached to the student
    /// graph) and the teacher targets it used, for [`DinoLoss::stats_tensor_with`].
    ///
    /// # Errors
    /// As [`DinoLoss::forward`], and the collective's error.
    pub fn loss_and_targets_across(
        &self,
        student: &Tensor,
        teacher: &Tensor,
        epoch: usize,
        world_size: usize,
        all_reduce_sum: &dyn Fn(&mut Tensor) -> Result<(), LossError>,
    ) -> Result<(Tensor, TeacherTargets), LossError> {
        self.check_shapes(student, teacher)?;
        let targets = self.targets_across(teacher, epoch, world_size, all_reduce_sum)?;
        let terms = self.pair_terms(student, 0, &targets)?;
        let loss = self.combine(terms.into_iter().map(|(_, t)| t))?;
        Ok((loss, targets))
    }

    /// The teacher side of the loss, computed once per batch from the raw teacher logits
    /// `[2·B, K]` with the current center and the teacher temperature of `epoch`: the centred,
    /// sharpened distribution of each global view (detached); under
    /// `loss.centering = "sinkhorn_knopp"` the Sinkhorn-Knopp targets of this process alone.
    /// [`DinoLoss::pair_terms`] takes the student side, whole or one crop group at a time.
    ///
    /// # Errors
    /// A teacher shape other than `[2·B, K]`, an epoch past the schedule, libtorch errors.
    pub fn targets(&self, teacher: &Tensor, epoch: usize) -> Result<TeacherTargets, LossError> {
        self.targets_across(teacher, epoch, 1, &|_| Ok(()))
    }

    /// [`DinoLoss::targets`] in a job of `world_size` processes: `all_reduce_sum` sums a tensor
    /// across them in place (Sinkhorn-Knopp's all-reduced sums, as the official
    /// `sinkhorn_knopp_teacher`; the center needs none, its update is averaged separately).
    ///
    /// # Errors
    /// As [`DinoLoss::targets`], and the collective's error.
    pub fn targets_across(
        &self,
        teacher: &Tensor,
        epoch: usize,
        world_size: usize,
        all_reduce_sum: &dyn Fn(&mut Tensor) -> Result<(), LossError>,
    ) -> Result<TeacherTargets, LossError> {
        let k = self.out_dim as i64;
        let t = teacher.size();
        if t.len() != 2 || t[1] != k || t[0] == 0 || t[0] % 2 != 0 {
            return Err(LossError::Shape {
                what: "teacher logits",
                expected: format!("[2·B, {k}] with B > 0"),
                got: t,
            });
        }
        let temp = self.teacher_temp(epoch)?;
        let center = self.center.f_to_device(teacher.device())?;
        let (probs, log_probs) = match self.centering {
            Centering::Center => {
                let logits = tch::no_grad(|| {
                    teacher
                        .f_to_kind(Kind::Float)?
                        .f_sub(&center)?
                        .f_div_scalar(temp)
                })?;
                let probs = logits.f_softmax(-1, Kind::Float)?.f_detach()?;
                let log_probs = tch::no_grad(|| logits.f_log_softmax(-1, Kind::Float))?;
                (probs, log_probs)
            }
            Centering::SinkhornKnopp => {
                let probs = sinkhorn::sinkhorn_knopp(
                    teacher,
                    temp,
                    sinkhorn::SINKHORN_ITERATIONS,
                    world_size,
                    all_reduce_sum,
                )?;
                // 0·log 0 = 0 in the entropy: the clamp only guards the log.
                let log_probs = tch::no_grad(|| probs.f_clamp_min(f64::MIN_POSITIVE)?.f_log())?;
                (probs, log_probs)
            }
        };
        let views = probs.f_chunk(2, 0)?;
        Ok(TeacherTargets {
            log_probs,
            probs,
            views,
            center,
            temp,
            batch: t[0] / 2,
        })
    }

    /// The loss terms of the student views `first_view ..` held in `student` (`[n·B, K]` raw
    /// head outputs of n consecutive views, view-major), against every *other* teacher view:
    /// `((j, v), batch mean of −Σ_k t_j[k] · log_softmax(s_v / τ_s)[k])`, in the order of the
    /// official double loop (j outer, v inner). Terms of all views, divided by
    /// [`DinoLoss::n_loss_terms`], make the loss; the student side of each term depends on its
    /// view only, so a crop group's terms can be back-propagated before the next group's
    /// forward.
    ///
    /// # Errors
    /// A student tensor that is not whole views of B rows, or that runs past `n_crops` views;
    /// libtorch errors.
    pub fn pair_terms(
        &self,
        student: &Tensor,
        first_view: usize,
        targets: &TeacherTargets,
    ) -> Result<Vec<PairTerm>, LossError> {
        let (b, k) = (targets.batch, self.out_dim as i64);
        let s = student.size();
        let n_views = if s.len() == 2 && s[1] == k && s[0] > 0 && s[0] % b == 0 {
            (s[0] / b) as usize
        } else {
            0
        };
        if n_views == 0 || first_view + n_views > self.n_crops {
            return Err(LossError::Shape {
                what: "student logits",
                expected: format!(
                    "[n·{b}, {k}]: whole views {first_view}.. of the {} crops",
                    self.n_crops
                ),
                got: s,
            });
        }
        let student = student.f_to_kind(Kind::Float)?;
        // log_softmax is row-wise, so taking it once before chunking equals the official
        // per-pair `F.log_softmax(student_out[v])`.
        let student_logp = student
            .f_div_scalar(self.student_temp)?
            .f_log_softmax(-1, Kind::Float)?;
        let student_views = student_logp.f_chunk(n_views as i64, 0)?;
        let mut terms = Vec::new();
        for (j, q) in targets.views.iter().enumerate() {
            for (i, s) in student_views.iter().enumerate() {
                let v = first_view + i;
                if v == j {
                    continue;
                }
                let term = q
                    .f_neg()?
                    .f_mul(s)?
                    .f_sum_dim_intlist(-1, false, Kind::Float)?
                    .f_mean(Kind::Float)?;
                terms.push(((j, v), term));
            }
        }
        Ok(terms)
    }

    /// The loss from its terms: their sum, in the given order, over [`DinoLoss::n_loss_terms`]
    /// (official `total_loss /= n_loss_terms`). Given the terms of all views in the official
    /// order, it is the joint loss bit for bit.
    ///
    /// # Errors
    /// No terms; libtorch errors.
    pub fn combine(&self, terms: impl IntoIterator<Item = Tensor>) -> Result<Tensor, LossError> {
        let mut total: Option<Tensor> = None;
        for term in terms {
            total = Some(match total {
                None => term,
                Some(t) => t.f_add(&term)?,
            });
        }
        Ok(total
            .ok_or_else(|| LossError::Invalid("no loss terms".into()))?
            .f_div_scalar(self.n_loss_terms() as f64)?)
    }

    /// The diagnostics of a loss value `loss` (scalar) computed against `targets` (one host
    /// sync: [`DinoLoss::stats_tensor`], then [`DinoLoss::read_stats`]).
    ///
    /// # Errors
    /// libtorch errors.
    pub fn stats(&self, loss: &Tensor, targets: &TeacherTargets) -> Result<LossStats, LossError> {
        self.read_stats(&self.stats_tensor(loss, targets)?, targets)
    }

    /// The diagnostics as one tensor on the logits' device, `[loss, teacher entropy, teacher
    /// mean entropy, center norm]` (Double), without a host sync: the step reads it together
    /// with the loss in its one sync ([`DinoLoss::read_stats`]).
    ///
    /// # Errors
    /// libtorch errors.
    pub fn stats_tensor(
        &self,
        loss: &Tensor,
        targets: &TeacherTargets,
    ) -> Result<Tensor, LossError> {
        self.stats_tensor_with(loss, &[], targets)
    }

    /// [`DinoLoss::stats_tensor`] of the DINO term `loss` with the weighted values of the
    /// other terms (scalars, e.g. KoLeo's) appended in order, so they come back in the same
    /// host sync: [`DinoLoss::read_stats_with`] then names them.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn stats_tensor_with(
        &self,
        loss: &Tensor,
        other_terms: &[&Tensor],
        targets: &TeacherTargets,
    ) -> Result<Tensor, LossError> {
        let values = tch::no_grad(|| -> Result<Tensor, TchError> {
            let teacher_probs = &targets.probs;
            let rows = teacher_probs.size()[0] as f64;
            let teacher_logp = &targets.log_probs;
            let entropy = teacher_probs
                .f_mul(teacher_logp)?
                .f_sum(Kind::Float)?
                .f_div_scalar(-rows)?;
            let mean_p = teacher_probs.f_mean_dim(0, false, Kind::Float)?;
            // 0·log 0 = 0: the clamp only guards the log, the product is then exactly 0.
            let mean_entropy = mean_p
                .f_mul(&mean_p.f_clamp_min(f64::MIN_POSITIVE)?.f_log()?)?
                .f_sum(Kind::Float)?
                .f_neg()?;
            let center_norm = targets.center.f_norm()?;
            let mut values = vec![loss.f_detach()?, entropy, mean_entropy, center_norm];
            for t in other_terms {
                values.push(t.f_detach()?.f_to_device(loss.device())?);
            }
            Tensor::f_stack(&values, 0)?.f_to_kind(Kind::Double)
        })?;
        Ok(values)
    }

    /// [`DinoLoss::stats_tensor`] output on the host (one device sync, which also brings the
    /// loss for the finiteness check): the DINO term alone.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn read_stats(
        &self,
        values: &Tensor,
        targets: &TeacherTargets,
    ) -> Result<LossStats, LossError> {
        self.read_stats_with(values, targets, &[])
    }

    /// [`DinoLoss::stats_tensor_with`] output on the host (one device sync): the DINO term
    /// ([`stats::dino_term`]) and, after it, the other terms named and weighted as
    /// `other_terms` lists them (`(name, weight)`, in the order their values were appended);
    /// the total is their sum in that order.
    ///
    /// # Errors
    /// libtorch errors; fewer values than terms.
    pub fn read_stats_with(
        &self,
        values: &Tensor,
        targets: &TeacherTargets,
        other_terms: &[(&str, f64)],
    ) -> Result<LossStats, LossError> {
        let v: Vec<f64> = Vec::<f64>::try_from(&values.f_to_device(Device::Cpu)?)?;
        if v.len() != 4 + other_terms.len() {
            return Err(LossError::Invalid(format!(
                "{} statistics for the DINO term and {} more",
                v.len(),
                other_terms.len()
            )));
        }
        let mut terms = vec![stats::dino_term(v[0], v[1], v[2], v[3], targets.temp)];
        for (&(name, weight), &value) in other_terms.iter().zip(&v[4..]) {
            terms.push(TermStats::new(name, weight, value));
        }
        Ok(LossStats::from_terms(terms))
    }

    /// Mean of the raw (uncentred) teacher logits over all `2·B` rows, `[1, K]` Float, no grad.
    ///
    /// Official `update_center` sums over rows, all-reduces and divides by `2·B·world_size`; with
    /// equal per-process batches that is the all-reduce **mean** of this value, so a
    /// multi-process trainer averages these across processes before [`DinoLoss::update_center`].
    pub fn batch_center(teacher: &Tensor) -> Result<Tensor, LossError> {
        let rows = teacher.size().first().copied().unwrap_or(0);
        if teacher.dim() != 2 || rows == 0 {
            return Err(LossError::Shape {
                what: "teacher logits",
                expected: "[2·B, K] with B > 0".into(),
                got: teacher.size(),
            });
        }
        Ok(tch::no_grad(|| {
            teacher
                .f_to_kind(Kind::Float)?
                .f_sum_dim_intlist(0, true, Kind::Float)?
                .f_div_scalar(rows as f64)
        })?)
    }

    /// EMA update `c ← m·c + (1 − m)·batch_center` with `m` = `center_momentum` (official 0.9).
    /// Called after the loss, so each step uses the previous center. The center moves to
    /// `batch_center`'s device.
    pub fn update_center(&mut self, batch_center: &Tensor) -> Result<(), LossError> {
        self.center = center::ema(
            &self.center,
            batch_center,
            self.center_momentum,
            self.out_dim,
            "batch center",
        )?;
        Ok(())
    }

    /// One single-process step as the official `forward`: evaluates the loss with the current
    /// center, then updates the center from this batch's teacher logits.
    pub fn step(
        &mut self,
        student: &Tensor,
        teacher: &Tensor,
        epoch: usize,
    ) -> Result<LossOutput, LossError> {
        let out = self.forward(student, teacher, epoch)?;
        let batch_center = Self::batch_center(teacher)?;
        self.update_center(&batch_center)?;
        Ok(out)
    }
}
