//! AdamW (`torch.optim.AdamW`, decoupled weight decay, no amsgrad), PyTorch's single-tensor
//! order of operations, so that CPU results match PyTorch's.

use super::Update;
use tch::{TchError, Tensor};

/// The state names of AdamW: PyTorch's `exp_avg` (first moment) and `exp_avg_sq` (second).
pub const BUFFERS: [&str; 2] = ["exp_avg", "exp_avg_sq"];

/// AdamW's hyper-parameters (`optim.betas`, `optim.eps`; PyTorch defaults 0.9, 0.999, 1e-8).
#[derive(Debug, Clone, Copy)]
pub struct AdamW {
    /// First-moment decay β1.
    pub beta1: f64,
    /// Second-moment decay β2.
    pub beta2: f64,
    /// Denominator ε.
    pub eps: f64,
}

impl AdamW {
    /// One update of `u.param` with `buffers = [exp_avg, exp_avg_sq]`:
    /// `p *= 1 − lr·wd; m = lerp(m, g, 1 − β1); v = β2·v + (1 − β2)·g²;
    /// p −= lr/(1 − β1^step) · m / (√v / √(1 − β2^step) + ε)`.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn update(&self, u: Update<'_>, buffers: &mut [Tensor]) -> Result<(), TchError> {
        let (beta1, beta2, eps) = (self.beta1, self.beta2, self.eps);
        let [exp_avg, exp_avg_sq] = buffers else {
            unreachable!("AdamW keeps two buffers per parameter")
        };
        if u.decay != 0.0 {
            let _ = u.param.f_mul_scalar_(1.0 - u.lr * u.decay)?;
        }
        let _ = exp_avg.f_lerp_(u.grad, 1.0 - beta1)?;
        let _ = exp_avg_sq.f_mul_scalar_(beta2)?;
        // torch's addcmul_(g, g, value=1-β2) evaluates (value·g)·g.
        let _ = exp_avg_sq.f_addcmul_(&u.grad.f_mul_scalar(1.0 - beta2)?, u.grad)?;
        let bias_correction1 = 1.0 - beta1.powf(u.step as f64);
        let bias_correction2 = 1.0 - beta2.powf(u.step as f64);
        let step_size = u.lr / bias_correction1;
        let denom = exp_avg_sq
            .f_sqrt()?
            .f_div_scalar(bias_correction2.sqrt())?
            .f_add_scalar(eps)?;
        // torch's addcdiv_(m, d, value=-s) evaluates (value·m)/d.
        let _ = u
            .param
            .f_addcdiv_(&exp_avg.f_mul_scalar(-step_size)?, &denom)?;
        Ok(())
    }
    /// [`AdamW::update`] with its temporaries written into `scratch` (two buffers shaped like
    /// the parameter) instead of fresh tensors: the same kernels in the same order, so equal
    /// bit for bit. A flat group is updated chunk by chunk through this, so the update
    /// allocates nothing and each chunk's passes stay in cache.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn update_with(
        &self,
        u: Update<'_>,
        buffers: &mut [Tensor],
        [s1, s2]: [&mut Tensor; 2],
    ) -> Result<(), TchError> {
        let (beta1, beta2, eps) = (self.beta1, self.beta2, self.eps);
        let [exp_avg, exp_avg_sq] = buffers else {
            unreachable!("AdamW keeps two buffers per parameter")
        };
        if u.decay != 0.0 {
            let _ = u.param.f_mul_scalar_(1.0 - u.lr * u.decay)?;
        }
        let _ = exp_avg.f_lerp_(u.grad, 1.0 - beta1)?;
        let _ = exp_avg_sq.f_mul_scalar_(beta2)?;
        let _ = u.grad.f_mul_scalar_out(s1, 1.0 - beta2)?;
        let _ = exp_avg_sq.f_addcmul_(s1, u.grad)?;
        let bias_correction1 = 1.0 - beta1.powf(u.step as f64);
        let bias_correction2 = 1.0 - beta2.powf(u.step as f64);
        let step_size = u.lr / bias_correction1;
        let _ = exp_avg_sq.f_sqrt_out(s1)?;
        let _ = s1.f_div_scalar_(bias_correction2.sqrt())?;
        let _ = s1.f_add_scalar_(eps)?;
        let _ = exp_avg.f_mul_scalar_out(s2, -step_size)?;
        let _ = u.param.f_addcdiv_(s2, s1)?;
        Ok(())
    }
}
