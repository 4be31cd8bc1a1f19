//! The EMA center a centered loss keeps (DINO's `center`, iBOT's `ibot_center`, official
//! `DINOLoss.center` and `iBOTPatchLoss.center`): its shape check on restore and its update, one
//! computation for both terms.

use super::LossError;
use tch::{Kind, TchError, Tensor};

/// `center` as the state to keep: Float, detached, a copy; errors unless it is `[1, out_dim]`
/// (`what` names the state in the error).
///
/// # Errors
/// [`LossError::Shape`]; libtorch errors.
pub(crate) fn restored(
    center: &Tensor,
    out_dim: usize,
    what: &'static str,
) -> Result<Tensor, LossError> {
    check(center, out_dim, what)?;
    Ok(center.f_to_kind(Kind::Float)?.f_detach_copy()?)
}

/// The EMA update `m·center + (1 − m)·batch_center` (official `update_center` /
/// `apply_center_update`), on `batch_center`'s device; errors unless `batch_center` is
/// `[1, out_dim]`.
///
/// # Errors
/// [`LossError::Shape`]; libtorch errors.
pub(crate) fn ema(
    center: &Tensor,
    batch_center: &Tensor,
    momentum: f64,
    out_dim: usize,
    what: &'static str,
) -> Result<Tensor, LossError> {
    check(batch_center, out_dim, what)?;
    Ok(tch::no_grad(|| -> Result<Tensor, TchError> {
        let c = center.f_to_device(batch_center.device())?;
        c.f_mul_scalar(momentum)?.f_add(
            &batch_center
                .f_to_kind(Kind::Float)?
                .f_mul_scalar(1.0 - momentum)?,
        )
    })?)
}

fn check(t: &Tensor, out_dim: usize, what: &'static str) -> Result<(), LossError> {
    if t.size() != [1, out_dim as i64] {
        return Err(LossError::Shape {
            what,
            expected: format!("[1, {out_dim}]"),
            got: t.size(),
        });
    }
    Ok(())
}
