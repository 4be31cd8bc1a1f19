//! libtorch's multi-tensor optimizer kernels that tch does not expose, through the crate's C++
//! shim (`csrc/fused.cpp`): `_fused_adamw_` (what `torch.optim.AdamW(fused=True)` runs; CPU and
//! CUDA kernels) and `_foreach_norm` (one launch for many norms on CUDA; on the CPU a loop of
//! `linalg_vector_norm`, the same values as each tensor's own norm).
//!
//! ```
//! use tch::{Device, Kind, Tensor};
//! let p = Tensor::ones([3], (Kind::Float, Device::Cpu));
//! let g = Tensor::full([3], 0.5, (Kind::Float, Device::Cpu));
//! let (m, v) = (p.zeros_like(), p.zeros_like());
//! let step = Tensor::from(1.0f32);
//! let h = dino_distributed::fused::AdamW { lr: 0.1, beta1: 0.9, beta2: 0.999, weight_decay: 0.0, eps: 1e-8 };
//! dino_distributed::fused::fused_adamw(&[&p], &[&g], &[&m], &[&v], &[&step], h)?;
//! // The first Adam step moves each weight by lr (m̂ / √v̂ = 1).
//! assert!((p.double_value(&[0]) - 0.9).abs() < 1e-6);
//! let n = dino_distributed::fused::foreach_norm(&[&g])?;
//! assert!((n[0].double_value(&[]) - 0.75f64.sqrt()).abs() < 1e-6);
//! # Ok::<(), anyhow::Error>(())
//! ```

use crate::ffi;
use std::ffi::c_void;
use tch::Tensor;

/// AdamW's hyper-parameters for one [`fused_adamw`] call (one parameter group).
#[derive(Debug, Clone, Copy)]
pub struct AdamW {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay β1.
    pub beta1: f64,
    /// Second-moment decay β2.
    pub beta2: f64,
    /// Decoupled weight decay of the group.
    pub weight_decay: f64,
    /// Denominator ε.
    pub eps: f64,
}

fn ptrs(ts: &[&Tensor]) -> Vec<*mut c_void> {
    // The shim only reads the `at::Tensor` handles; the kernels write through their storage.
    ts.iter().map(|t| t.as_ptr() as *mut c_void).collect()
}

/// One AdamW step (decoupled weight decay, no amsgrad) of every parameter in `params`, in place,
/// with libtorch's fused kernel: each parameter, its gradient, `exp_avg` and `exp_avg_sq` read
/// and written once. `steps` are the parameters' step counts as 0-dim Float tensors on the
/// parameters' device, already counting this step. The arithmetic is PyTorch's fused one
/// (`torch.optim.AdamW(fused=True)`), which differs from the single-tensor sequence of ops in
/// the last bits.
///
/// # Errors
/// Lists of different lengths; libtorch's checks (devices, kinds, shapes).
pub fn fused_adamw(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avgs: &[&Tensor],
    exp_avg_sqs: &[&Tensor],
    steps: &[&Tensor],
    h: AdamW,
) -> anyhow::Result<()> {
    let n = params.len();
    anyhow::ensure!(
        [grads.len(), exp_avgs.len(), exp_avg_sqs.len(), steps.len()]
            .iter()
            .all(|&l| l == n),
        "fused AdamW: {n} parameters but {} gradients, {} exp_avg, {} exp_avg_sq, {} steps",
        grads.len(),
        exp_avgs.len(),
        exp_avg_sqs.len(),
        steps.len()
    );
    let (p, g, m, v, s) = (
        ptrs(params),
        ptrs(grads),
        ptrs(exp_avgs),
        ptrs(exp_avg_sqs),
        ptrs(steps),
    );
    // SAFETY: every pointer is an `at::Tensor*` kept alive by the borrowed tensors for the call;
    // the five arrays hold `n` entries each (checked above).
    let err = unsafe {
        ffi::dino_fused_adamw(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n as i64,
            h.lr,
            h.beta1,
            h.beta2,
            h.weight_decay,
            h.eps,
        )
    };
    ffi::take_error(err)
}

/// The L2 norm of each tensor (0-dim, the tensors' kind and device), by `_foreach_norm`.
///
/// # Errors
/// libtorch's checks.
pub fn foreach_norm(tensors: &[&Tensor]) -> anyhow::Result<Vec<Tensor>> {
    let input = ptrs(tensors);
    let mut out = vec![std::ptr::null_mut::<c_void>(); tensors.len()];
    // SAFETY: `input` holds live `at::Tensor*`; on success the shim wrote one new, owned
    // `at::Tensor*` per entry of `out`, which `from_ptr` takes over.
    let err =
        unsafe { ffi::dino_foreach_norm(input.as_ptr(), input.len() as i64, out.as_mut_ptr()) };
    ffi::take_error(err)?;
    Ok(out
        .into_iter()
        // SAFETY: see above; each pointer is non-null and owned by nobody else.
        .map(|p| unsafe { Tensor::from_ptr(p as *mut torch_sys::C_tensor) })
        .collect())
}
