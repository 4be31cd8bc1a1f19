//! DINOv2's iBOT patch loss (`ibot.loss_weight`; dinov2 `loss/ibot_patch_loss.py`
//! `iBOTPatchLoss.forward_masked`, wired as `train/ssl_meta_arch.py` does): for each patch the
//! student saw as its `mask_token`, the cross-entropy between the teacher's distribution of that
//! patch (from the unmasked crop, centred and sharpened with its own EMA center, or
//! Sinkhorn-Knopp over the masked patches) and the student's `log_softmax(s / τ_s)`, each patch
//! weighted by `1 / (masked patches of its crop)` (`masks_weight`), summed and divided by the
//! number of global crops 2·B. `ssl_meta_arch.py` multiplies it by `loss_scales = 2` and
//! `ibot_loss_scale = 1 / 2`, i.e. by 1, then by `ibot.loss_weight`.
//!
//! The teacher temperature is DINO's of the epoch, the student temperature and the center
//! momentum DINO's (`loss.student_temp`, `loss.center_momentum`; dinov2's `iBOTPatchLoss`
//! defaults 0.1 and 0.9, the DINO ones).

use super::sinkhorn;
use super::LossError;
use dino_config::{Centering, LossConfig};
use tch::{Device, Kind, TchError, Tensor};

/// The iBOT term with its center `[1, K]` (the state `ibot_center` of checkpoints).
#[derive(Debug)]
pub struct IbotPatchLoss {
    out_dim: usize,
    weight: f64,
    student_temp: f64,
    center_momentum: f64,
    centering: Centering,
    center: Tensor,
}

/// Which patches a batch masks, on the device: the indices into the flattened `[2·B · N]`
/// patch tokens, their weights, and the number of crops.
#[derive(Debug)]
pub struct MaskedPatches {
    /// `[M]` Int64: positions of the masked patches in the flattened `[2·B · N]` tokens, in
    /// crop-major then patch order (official `mask_indices_list`).
    pub indices: Tensor,
    /// `[M]` Float: `1 / (masked patches of the crop)` per masked patch (official
    /// `masks_weight`).
    pub weights: Tensor,
    /// Number of crops the masks are over (2·B, official `student_masks_flat.shape[0]`).
    pub n_crops: i64,
    /// M, the number of masked patches (one host read when built).
    pub count: i64,
}

impl MaskedPatches {
    /// From the bool masks `[2·B, N]` (view-major as the crops): the indices, weights and
    /// count (official `collate_data_and_cast`).
    ///
    /// # Errors
    /// A mask tensor that is not 2-D bool; libtorch errors.
    pub fn from_masks(masks: &Tensor) -> Result<Self, LossError> {
        let s = masks.size();
        if s.len() != 2 || masks.kind() != Kind::Bool {
            return Err(LossError::Shape {
                what: "iBOT masks",
                expected: "bool [2·B, N]".into(),
                got: s,
            });
        }
        let flat = masks.f_flatten(0, 1)?;
        let indices = flat.f_nonzero()?.f_flatten(0, 1)?;
        let per_crop = masks
            .f_sum_dim_intlist(-1, true, Kind::Float)?
            .f_clamp_min(1.0)?
            .f_reciprocal()?
            .f_expand_as(masks)?;
        let weights = per_crop.f_flatten(0, 1)?.f_index_select(0, &indices)?;
        let count = indices.size()[0];
        Ok(Self {
            indices,
            weights,
            n_crops: s[0],
            count,
        })
    }

    /// The masked patches of one view's crops (`view_masks` `[B, N]`, a run of the batch's
    /// `[2·B, N]` masks) as part of a batch of `n_crops` (2·B) crops: indices into that view's
    /// `[B · N]` tokens, the crops' own `masks_weight`, and the batch's divisor, so the views'
    /// terms ([`IbotPatchLoss::term`]) add up to the term of all crops at once; the view's
    /// teacher targets are its run of the batch's rows (the indices are crop-major). Used by
    /// `optim.backward_per_crop_group`. One host read (the count).
    ///
    /// # Errors
    /// As [`MaskedPatches::from_masks`].
    pub fn of_view(view_masks: &Tensor, n_crops: i64) -> Result<Self, LossError> {
        let mut view = Self::from_masks(view_masks)?;
        view.n_crops = n_crops;
        Ok(view)
    }

    /// The rows of `tokens` (`[2·B, N, D]`) at the masked patches: `[M, D]`.
    ///
    /// # Errors
    /// libtorch errors (a token tensor of another shape).
    pub fn select(&self, tokens: &Tensor) -> Result<Tensor, TchError> {
        tokens.f_flatten(0, 1)?.f_index_select(0, &self.indices)
    }
}

impl IbotPatchLoss {
    /// The term for `out_dim` prototypes (the DINO head's K, or `ibot.head_out_dim` with a
    /// separate head) at `weight` (`ibot.loss_weight`), temperatures, momentum and centering
    /// from `[loss]`. The center starts as zeros `[1, K]` (official `register_buffer("center",
    /// torch.zeros(1, 1, patch_out_dim))`).
    ///
    /// # Errors
    /// `out_dim` 0; libtorch errors.
    pub fn new(out_dim: usize, weight: f64, cfg: &LossConfig) -> Result<Self, LossError> {
        if out_dim == 0 {
            return Err(LossError::Invalid("iBOT out_dim must be positive".into()));
        }
        Ok(Self {
            out_dim,
            weight,
            student_temp: cfg.student_temp,
            center_momentum: cfg.center_momentum,
            centering: cfg.centering,
            center: Tensor::f_zeros([1, out_dim as i64], (Kind::Float, Device::Cpu))?,
        })
    }

    /// `ibot.loss_weight`.
    pub fn weight(&self) -> f64 {
        self.weight
    }

    /// The center `[1, K]` (Float).
    pub fn center(&self) -> &Tensor {
        &self.center
    }

    /// Replaces the center (checkpoint restore). Errors unless `center` is `[1, K]`.
    ///
    /// # Errors
    /// Another shape; libtorch errors.
    pub fn set_center(&mut self, center: &Tensor) -> Result<(), LossError> {
        self.center = super::center::restored(center, self.out_dim, "ibot_center")?;
        Ok(())
    }

    /// The teacher targets `[M, K]` (Float, detached, rows sum to 1) of the teacher's head
    /// outputs at the masked patches `teacher` `[M, K]`, at temperature `temp`: `softmax((t −
    /// center) / temp)` (official `softmax_center_teacher`), or under `loss.centering =
    /// "sinkhorn_knopp"` the Sinkhorn-Knopp targets over the masked patches of all
    /// `all_reduce_sum`'s processes, `global_count` of them (official
    /// `sinkhorn_knopp_teacher(n_masked_patches_tensor)`, the count all-reduced).
    ///
    /// # Errors
    /// libtorch errors, the collective's error.
    pub fn targets(
        &self,
        teacher: &Tensor,
        temp: f64,
        global_count: f64,
        all_reduce_sum: &dyn Fn(&mut Tensor) -> Result<(), LossError>,
    ) -> Result<Tensor, LossError> {
        match self.centering {
            Centering::Center => Ok(tch::no_grad(|| -> Result<Tensor, TchError> {
                let c = self.center.f_to_device(teacher.device())?;
                teacher
                    .f_to_kind(Kind::Float)?
                    .f_sub(&c)?
                    .f_div_scalar(temp)?
                    .f_softmax(-1, Kind::Float)
            })?),
            Centering::SinkhornKnopp => sinkhorn::sinkhorn_knopp_rows(
                teacher,
                temp,
                sinkhorn::SINKHORN_ITERATIONS,
                global_count,
                all_reduce_sum,
            ),
        }
    }

    /// The weighted term (scalar, attached to the student graph): `weight · (−Σ_p w_p Σ_k
    /// t_p[k] log_softmax(s_p / τ_s)[k]) / n_crops` over the masked patches p of `masked`
    /// (official `forward_masked` with `masks_weight`). `student` `[M, K]` raw head outputs,
    /// `targets` `[M, K]` from [`IbotPatchLoss::targets`].
    ///
    /// # Errors
    /// Shapes that differ; libtorch errors.
    pub fn term(
        &self,
        student: &Tensor,
        targets: &Tensor,
        masked: &MaskedPatches,
    ) -> Result<Tensor, LossError> {
        if student.size() != targets.size() || student.size() != [masked.count, self.out_dim as i64]
        {
            return Err(LossError::Shape {
                what: "iBOT student outputs",
                expected: format!(
                    "[{}, {}] as the teacher targets",
                    masked.count, self.out_dim
                ),
                got: student.size(),
            });
        }
        let logp = student
            .f_to_kind(Kind::Float)?
            .f_div_scalar(self.student_temp)?
            .f_log_softmax(-1, Kind::Float)?;
        let per_patch = targets
            .f_mul(&logp)?
            .f_sum_dim_intlist(-1, false, Kind::Float)?;
        Ok(per_patch
            .f_mul(&masked.weights)?
            .f_sum(Kind::Float)?
            .f_neg()?
            .f_div_scalar(masked.n_crops as f64)?
            .f_mul_scalar(self.weight)?)
    }

    /// Sum of the teacher's raw outputs over the masked patches `[M, K]` → (`[1, K]`, M);
    /// `None` when no patch is masked (the official mean of nothing would be NaN and poison the
    /// center; here the center then stays). The batch center is the sum over M (official
    /// `reduce_center_update`: `sum(t.mean(1), 0)` of `[1, M, K]`); with several processes or
    /// micro-batches, the summed sums over the summed counts (see `update_center`).
    ///
    /// # Errors
    /// libtorch errors.
    pub fn patch_sum(teacher: &Tensor) -> Result<Option<(Tensor, usize)>, LossError> {
        let m = teacher.size().first().copied().unwrap_or(0);
        if m == 0 {
            return Ok(None);
        }
        let sum = tch::no_grad(|| {
            teacher
                .f_to_kind(Kind::Float)?
                .f_sum_dim_intlist(0, true, Kind::Float)
        })?;
        Ok(Some((sum, m as usize)))
    }

    /// EMA update `c ← m·c + (1 − m)·batch_center` (official `apply_center_update`). The
    /// trainer's batch center is the mean over every masked patch of the step, all processes
    /// and micro-batches together, so any split equals one process; the official code averages
    /// the processes' own means instead (the same when each masks as many patches).
    ///
    /// # Errors
    /// A batch center of another shape; libtorch errors.
    pub fn update_center(&mut self, batch_center: &Tensor) -> Result<(), LossError> {
        self.center = super::center::ema(
            &self.center,
            batch_center,
            self.center_momentum,
            self.out_dim,
            "iBOT batch center",
        )?;
        Ok(())
    }
}
