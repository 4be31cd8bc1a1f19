//! The KoLeo regularizer of DINOv2 (Kozachenko-Leonenko differential-entropy estimator,
//! Sablayrolles et al. 2019, "Spreading vectors for similarity search"; DINOv2 Sec. 4,
//! `dinov2/loss/koleo_loss.py` and its use in `dinov2/train/ssl_meta_arch.py`): it pushes the
//! student's CLS features of a batch apart by penalising `−log` of each one's distance to its
//! nearest neighbour in the batch.
//!
//! What it is applied to, as the official step: the student's backbone CLS tokens (after the
//! final norm, before the head) of the two global crops, each crop separately (no neighbour
//! across the two views of one image), the two values **summed** and multiplied by
//! `loss.koleo_weight`. (The official log shows that sum halved; the loss it back-propagates is
//! the sum, which is what is logged here as `koleo`.) In fp32 whatever the forward precision.
//!
//! Several processes: each computes the term over its own batch shard, as the official code (no
//! all-gather of the features), so its value depends on the per-process batch.
//!
//! Edge cases (dinov2 issue #314 reports NaN at batch 1):
//! - a crop of one image has no neighbour: its KoLeo is 0 here, with no gradient. The official
//!   code pairs the row with itself and returns the constant `−log((√D + 1)·1e-8)` (16.81 at
//!   D = 16) with a zero gradient, so the gradients agree and only the logged value differs;
//! - duplicate images (identical features) are at distance `‖1·1e-8‖ = √D·1e-8`: a large but
//!   finite value, and as each is the other's nearest neighbour their gradients cancel exactly
//!   (the official fp32 result too; `tests/reference/koleo_reference.py`, case "dups").

use tch::{Kind, TchError, Tensor};

/// `eps` of the official `F.normalize(eps=1e-8)`, `nn.PairwiseDistance(eps=1e-8)` and
/// `−log(d + 1e-8)`.
pub const KOLEO_EPS: f64 = 1e-8;

/// KoLeo of one crop's features `x` `[B, D]` (any float kind; computed in Float): rows
/// normalised to unit L2 norm (norm clamped at [`KOLEO_EPS`]), each row's nearest other row
/// by the largest inner product, `d_i = ‖u_i − u_nn(i) + eps‖`, the mean over rows of
/// `−log(d_i + eps)`. A scalar Float tensor; 0 (no gradient) when B < 2.
///
/// # Errors
/// libtorch errors (a tensor that is not 2-D).
pub fn koleo(x: &Tensor) -> Result<Tensor, TchError> {
    let n = x.size().first().copied().unwrap_or(0);
    if n < 2 {
        return Tensor::f_zeros([], (Kind::Float, x.device()));
    }
    let x = x.f_to_kind(Kind::Float)?;
    let norms = x
        .f_norm_scalaropt_dim(2, [-1i64].as_slice(), true)?
        .f_clamp_min(KOLEO_EPS)?;
    let u = x.f_div(&norms)?;
    let nearest = tch::no_grad(|| -> Result<Tensor, TchError> {
        let mut dots = u.f_mm(&u.f_tr()?)?;
        let _ = dots.f_fill_diagonal_(-1.0, false)?;
        // max(dim) as the official `torch.max(dots, dim=1)`, for the same tie-breaking.
        Ok(dots.f_max_dim(1, false)?.1)
    })?;
    let d = u
        .f_sub(&u.f_index_select(0, &nearest)?)?
        .f_add_scalar(KOLEO_EPS)?
        .f_norm_scalaropt_dim(2, [-1i64].as_slice(), false)?;
    d.f_add_scalar(KOLEO_EPS)?
        .f_log()?
        .f_mean(Kind::Float)?
        .f_neg()
}

/// The training term: `weight · Σ_v KoLeo(global crop v)` over the two global crops of
/// `global_cls` `[2·B, D]` (view-major: crop 1's B rows, then crop 2's), as the official
/// `koleo_loss_weight * sum(koleo_loss(p) for p in student_cls_tokens.chunk(2))`.
///
/// # Errors
/// libtorch errors; a row count that is not even.
pub fn koleo_term(global_cls: &Tensor, weight: f64) -> Result<Tensor, TchError> {
    let rows = global_cls.size().first().copied().unwrap_or(0);
    if rows == 0 || rows % 2 != 0 {
        return Err(TchError::Shape(format!(
            "KoLeo: expected the two global crops' features [2·B, D], got {:?}",
            global_cls.size()
        )));
    }
    let views = global_cls.f_chunk(2, 0)?;
    koleo(&views[0])?
        .f_add(&koleo(&views[1])?)?
        .f_mul_scalar(weight)
}
