//! SGD with momentum (`torch.optim.SGD`, no dampening, no Nesterov), as the official
//! `main_dino.py` builds it: `torch.optim.SGD(params_groups, lr=0, momentum=0.9)`, lr and weight
//! decay then set per iteration from the schedules. PyTorch's single-tensor order of operations.

use super::{alpha, Update};
use tch::{TchError, Tensor};

/// The state name of SGD: PyTorch's `momentum_buffer`.
pub const BUFFERS: [&str; 1] = ["momentum_buffer"];

/// SGD's hyper-parameter (`optim.momentum`, official 0.9).
#[derive(Debug, Clone, Copy)]
pub struct Sgd {
    /// Momentum μ (0 disables the buffer).
    pub momentum: f64,
}

impl Sgd {
    /// One update of `u.param` with `buffers = [momentum_buffer]`:
    /// `d = g + wd·p` (coupled weight decay, skipped when wd is 0);
    /// `b = d` on the parameter's first update (PyTorch creates the buffer as a copy), else
    /// `b = μ·b + d`; `p −= lr·b`.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn update(&self, u: Update<'_>, buffers: &mut [Tensor]) -> Result<(), TchError> {
        let [buf] = buffers else {
            unreachable!("SGD keeps one buffer per parameter")
        };
        // grad.add(param, alpha=wd): one fused multiply-add, as addcmul with a scalar tensor.
        let d = if u.decay != 0.0 {
            u.grad.f_addcmul(u.param, &alpha(u.decay, u.param)?)?
        } else {
            u.grad.shallow_clone()
        };
        let d = if self.momentum != 0.0 {
            if u.step == 1 {
                buf.f_copy_(&d)?;
            } else {
                // buf.mul_(μ).add_(d, alpha=1 − dampening) with dampening 0: a plain add.
                let _ = buf.f_mul_scalar_(self.momentum)?;
                let _ = buf.f_add_(&d)?;
            }
            buf.shallow_clone()
        } else {
            d
        };
        // param.add_(d, alpha=-lr).
        let _ = u.param.f_addcmul_(&d, &alpha(-u.lr, u.param)?)?;
        Ok(())
    }
    /// [`Sgd::update`] with the decayed gradient written into `scratch` (shaped like the
    /// parameter) instead of a fresh tensor; equal bit for bit (see [`super::adamw::AdamW::update_with`]).
    ///
    /// # Errors
    /// libtorch errors.
    pub fn update_with(
        &self,
        u: Update<'_>,
        buffers: &mut [Tensor],
        scratch: &mut Tensor,
    ) -> Result<(), TchError> {
        let [buf] = buffers else {
            unreachable!("SGD keeps one buffer per parameter")
        };
        let d = if u.decay != 0.0 {
            let _ = u
                .grad
                .f_addcmul_out(scratch, u.param, &alpha(u.decay, u.param)?)?;
            scratch.shallow_clone()
        } else {
            u.grad.shallow_clone()
        };
        let d = if self.momentum != 0.0 {
            if u.step == 1 {
                buf.f_copy_(&d)?;
            } else {
                let _ = buf.f_mul_scalar_(self.momentum)?;
                let _ = buf.f_add_(&d)?;
            }
            buf.shallow_clone()
        } else {
            d
        };
        let _ = u.param.f_addcmul_(&d, &alpha(-u.lr, u.param)?)?;
        Ok(())
    }
}
