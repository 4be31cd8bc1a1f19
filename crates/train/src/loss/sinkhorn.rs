//! Sinkhorn-Knopp teacher targets (DINOv2's `train.centering = "sinkhorn_knopp"`, from SwAV;
//! `sinkhorn_knopp_teacher` in `dinov2/loss/dino_clstoken_loss.py`): instead of subtracting an
//! EMA center, the teacher's `exp(t / τ_t)` over the batch is alternately normalised so that
//! every prototype gets the same total mass (1/K) and every sample a distribution (each row
//! of the result sums to 1). Three iterations, as the official default.
//!
//! Several processes: the total sum and the per-prototype sums are all-reduced (summed) and
//! the sample count is the global one, so each rank's rows equal the rows the single process
//! computes on the global batch (up to the order of the float sums).

use tch::{Kind, TchError, Tensor};

/// Iterations of the official `sinkhorn_knopp_teacher(n_iterations=3)`.
pub const SINKHORN_ITERATIONS: usize = 3;

/// The Sinkhorn-Knopp targets `[R, K]` (Float, no grad; rows sum to 1) of the teacher logits
/// `teacher` `[R, K]` at temperature `temp`, with `iterations` rounds. `all_reduce_sum` sums a
/// tensor across processes in place (the identity for one process) and `world_size` is the
/// number of processes; every process must hold the same R.
///
/// No max is subtracted before the exponential, as the official code: with a
/// `norm_last_layer` head the logits are cosines, `exp(1/0.04)` is far from overflow; a head
/// with unnormalised logits above ~88·τ_t would overflow fp32 there as it does here.
///
/// # Errors
/// libtorch errors, or whatever `all_reduce_sum` returns.
pub fn sinkhorn_knopp<E: From<TchError>>(
    teacher: &Tensor,
    temp: f64,
    iterations: usize,
    world_size: usize,
    all_reduce_sum: &dyn Fn(&mut Tensor) -> Result<(), E>,
) -> Result<Tensor, E> {
    let rows = (teacher.size().first().copied().unwrap_or(0) as usize * world_size) as f64;
    sinkhorn_knopp_rows(teacher, temp, iterations, rows, all_reduce_sum)
}

/// [`sinkhorn_knopp`] where the processes may hold different numbers of rows (iBOT's masked
/// patches, dinov2 `iBOTPatchLoss.sinkhorn_knopp_teacher`): `global_rows` is their total (the
/// all-reduced count), the B of the column normalisation.
///
/// # Errors
/// libtorch errors, or whatever `all_reduce_sum` returns.
pub fn sinkhorn_knopp_rows<E: From<TchError>>(
    teacher: &Tensor,
    temp: f64,
    iterations: usize,
    global_rows: f64,
    all_reduce_sum: &dyn Fn(&mut Tensor) -> Result<(), E>,
) -> Result<Tensor, E> {
    let _guard = tch::no_grad_guard();
    let size = teacher.size();
    // Q is K × B as in the paper's notation.
    let mut q = teacher
        .f_to_kind(Kind::Float)?
        .f_div_scalar(temp)?
        .f_exp()?
        .f_tr()?;
    let b = global_rows;
    let k = size[1] as f64;
    let mut total = q.f_sum(Kind::Float)?.f_reshape([1])?;
    all_reduce_sum(&mut total)?;
    q = q.f_div(&total)?;
    for _ in 0..iterations {
        let mut rows = q.f_sum_dim_intlist(1, true, Kind::Float)?;
        all_reduce_sum(&mut rows)?;
        q = q.f_div(&rows)?.f_div_scalar(k)?;
        let cols = q.f_sum_dim_intlist(0, true, Kind::Float)?;
        q = q.f_div(&cols)?.f_div_scalar(b)?;
    }
    Ok(q.f_mul_scalar(b)?.f_tr()?)
}
