//! LARS as the official `utils.LARS` (Barlow Twins' variant, "to use with convnet and large
//! batches"): for every parameter that is not 1-D, coupled weight decay and the layer-wise trust
//! ratio; 1-D parameters (biases, norm weights) get neither; then heavy-ball momentum. Official
//! order of operations, so that CPU results match the Python code.

use super::flat::Layout;
use super::{alpha, Update};
use tch::{TchError, Tensor};

/// The state name of LARS: the official `mu` (momentum buffer, created as zeros).
pub const BUFFERS: [&str; 1] = ["mu"];

/// LARS's hyper-parameters (official `LARS(momentum=0.9, eta=0.001)`).
#[derive(Debug, Clone, Copy)]
pub struct Lars {
    /// Momentum μ.
    pub momentum: f64,
    /// Trust coefficient η.
    pub eta: f64,
}

impl Lars {
    /// One update of `u.param` (any parameter with `ndim != 1`) with `buffers = [mu]`:
    /// `d = g + wd·p`, then `d *= q` with `q = η·‖p‖/‖d‖` when both norms are positive, else 1;
    /// for 1-D parameters `d = g`. Then `mu = μ·mu + d; p −= lr·mu`.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn update(&self, u: Update<'_>, buffers: &mut [Tensor]) -> Result<(), TchError> {
        let [mu] = buffers else {
            unreachable!("LARS keeps one buffer per parameter")
        };
        let d = if u.param.dim() != 1 {
            // dp.add(p, alpha=wd), applied even when wd is 0, as the official code does.
            let d = u.grad.f_addcmul(u.param, &alpha(u.decay, u.param)?)?;
            let param_norm = u.param.f_norm()?;
            let update_norm = d.f_norm()?;
            let one = param_norm.f_ones_like()?;
            let trust = param_norm
                .f_mul_scalar(self.eta)?
                .f_div(&update_norm)?
                .f_where_self(&update_norm.f_gt(0.0)?, &one)?
                .f_where_self(&param_norm.f_gt(0.0)?, &one)?;
            d.f_mul(&trust)?
        } else {
            u.grad.shallow_clone()
        };
        let _ = mu.f_mul_scalar_(self.momentum)?;
        let _ = mu.f_add_(&d)?;
        // p.add_(mu, alpha=-lr).
        let _ = u.param.f_addcmul_(mu, &alpha(-u.lr, u.param)?)?;
        Ok(())
    }

    /// [`Lars::update`] on a whole flat group (`u.param`, `u.grad` and `buffers = [mu]` are
    /// the group's buffers, `scratch` one more of the same length for the decayed update),
    /// whose parameters are all 1-D or all not: the decayed update `d`
    /// in one op, the trust ratio from the per-parameter norms of `p` and `d` as one vector,
    /// applied per parameter ([`Layout::scale_segments`]), then the momentum as one op. Equal
    /// bit for bit to [`Lars::update`] on each parameter.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn update_group(
        &self,
        u: Update<'_>,
        buffers: &mut [Tensor],
        layout: &Layout,
        counts: &Tensor,
        scratch: &mut Tensor,
    ) -> Result<(), TchError> {
        let [mu] = buffers else {
            unreachable!("LARS keeps one buffer per parameter")
        };
        let one_d = layout.segments.first().is_some_and(|s| s.shape.len() == 1);
        let d = if !one_d {
            let _ = u
                .grad
                .f_addcmul_out(scratch, u.param, &alpha(u.decay, u.param)?)?;
            let mut d = scratch.shallow_clone();
            let param_norm = layout.segment_norms(u.param)?;
            let update_norm = layout.segment_norms(&d)?;
            let one = param_norm.f_ones_like()?;
            let trust = param_norm
                .f_mul_scalar(self.eta)?
                .f_div(&update_norm)?
                .f_where_self(&update_norm.f_gt(0.0)?, &one)?
                .f_where_self(&param_norm.f_gt(0.0)?, &one)?;
            layout.scale_segments(&mut d, &trust, counts)?;
            d
        } else {
            u.grad.shallow_clone()
        };
        let _ = mu.f_mul_scalar_(self.momentum)?;
        let _ = mu.f_add_(&d)?;
        let _ = u.param.f_addcmul_(mu, &alpha(-u.lr, u.param)?)?;
        Ok(())
    }
}
