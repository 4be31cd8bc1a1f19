//! Weight initialisation, drawn from libtorch's default generator (seed it with
//! [`tch::manual_seed`]) in the same order and with the same arithmetic as PyTorch, so a Rust
//! network and a PyTorch network built from the same seed start from identical weights.
//!
//! Two families, as in the official `vision_transformer.py`:
//! - PyTorch's layer defaults (`nn.Linear.reset_parameters`, `nn.Conv2d`): weight
//!   `kaiming_uniform_(a = √5)` = U(±1/√fan_in) and bias U(±1/√fan_in). The official code keeps
//!   them for the patch-embedding convolution and the head's weight-normalised last layer.
//! - `trunc_normal_(std = 0.02)` (official `utils.trunc_normal_`, truncated at ±2 *absolute*, i.e.
//!   ±100 σ) for every other Linear weight, `cls_token` and `pos_embed`.

use tch::{nn, Kind, TchError, Tensor};

/// Standard deviation of the official truncated-normal initialisation.
pub const TRUNC_NORMAL_STD: f64 = 0.02;
/// Truncation bounds of the official `trunc_normal_` (absolute values, not multiples of std).
pub const TRUNC_NORMAL_BOUND: f64 = 2.0;

/// Bound b of PyTorch's default `kaiming_uniform_(a = √5)` weight init, U(−b, b), for a layer
/// with `fan_in` inputs. Computed with the exact floating-point steps of `torch.nn.init` so the
/// uniform draws are bit-identical.
pub fn kaiming_uniform_a_sqrt5_bound(fan_in: i64) -> f64 {
    let a = 5f64.sqrt();
    let gain = (2.0 / (1.0 + a * a)).sqrt();
    let std = gain / (fan_in as f64).sqrt();
    3f64.sqrt() * std
}

/// Bound of PyTorch's default bias init, U(±1/√fan_in).
pub fn default_bias_bound(fan_in: i64) -> f64 {
    1.0 / (fan_in as f64).sqrt()
}

/// A trainable weight with PyTorch's default Linear/Conv init; `fan_in` = product of all but the
/// first dimension.
pub(crate) fn default_weight(p: &nn::Path, name: &str, dims: &[i64]) -> Result<Tensor, TchError> {
    let fan_in: i64 = dims[1..].iter().product();
    let b = kaiming_uniform_a_sqrt5_bound(fan_in);
    p.f_var(name, dims, nn::Init::Uniform { lo: -b, up: b })
}

/// A trainable bias with PyTorch's default init for a layer with `fan_in` inputs.
pub(crate) fn default_bias(
    p: &nn::Path,
    name: &str,
    dim: i64,
    fan_in: i64,
) -> Result<Tensor, TchError> {
    let b = default_bias_bound(fan_in);
    p.f_var(name, &[dim], nn::Init::Uniform { lo: -b, up: b })
}

/// In-place `trunc_normal_(t, std, a = −2, b = 2)` exactly as the official `utils.py` computes
/// it: U(2l−1, 2u−1) → erfinv → ×std·√2 → +0 → clamp(±2), where l, u are the normal CDF at the
/// bounds. For std ≤ 0.2 the bounds lie ≥ 10 σ out, so l = 0 and u = 1 exactly in f64, which is
/// what this function assumes (it is only used with std = 0.02).
pub fn trunc_normal_(t: &mut Tensor, std: f64) -> Result<(), TchError> {
    if !(std > 0.0 && std <= 0.2) {
        return Err(TchError::Kind(format!(
            "trunc_normal_ supports 0 < std <= 0.2, got {std}"
        )));
    }
    tch::no_grad(|| -> Result<(), TchError> {
        let _ = t.f_uniform_(-1.0, 1.0)?;
        let _ = t.f_erfinv_()?;
        let _ = t.f_mul_scalar_(std * 2f64.sqrt())?;
        let _ = t.f_add_scalar_(0.0)?;
        let _ = t.f_clamp_(-TRUNC_NORMAL_BOUND, TRUNC_NORMAL_BOUND)?;
        Ok(())
    })
}

/// In-place fill, without recording it in the autograd graph.
pub(crate) fn fill_(t: &mut Tensor, v: f64) -> Result<(), TchError> {
    tch::no_grad(|| t.f_fill_(v).map(|_| ()))
}

/// True when a tensor holds floating-point values (the only kinds the networks run on).
pub(crate) fn is_float(k: Kind) -> bool {
    matches!(k, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kaiming_bound_is_one_over_sqrt_fan_in() {
        // torch.nn.init.kaiming_uniform_(a=sqrt(5)) reduces to 1/sqrt(fan_in).
        for fan in [3 * 16 * 16, 192, 256, 2048] {
            let b = kaiming_uniform_a_sqrt5_bound(fan);
            assert!((b - 1.0 / (fan as f64).sqrt()).abs() < 1e-12, "{fan}: {b}");
        }
    }
}
