//! The two parametrised building blocks every network here is made of, with PyTorch's names
//! (`weight`, `bias`) and PyTorch's default initialisation.

use crate::init::{default_bias, default_weight, fill_, trunc_normal_, TRUNC_NORMAL_STD};
use tch::{nn, TchError, Tensor};

/// `nn.Linear(in_dim, out_dim, bias)`: weight `[out, in]`, bias `[out]`.
#[derive(Debug)]
pub(crate) struct Linear {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
}

impl Linear {
    /// PyTorch default init (drawn now, in creation order, like `nn.Linear.__init__`).
    pub(crate) fn new(
        p: &nn::Path,
        in_dim: i64,
        out_dim: i64,
        bias: bool,
    ) -> Result<Self, TchError> {
        let weight = default_weight(p, "weight", &[out_dim, in_dim])?;
        let bias = if bias {
            Some(default_bias(p, "bias", out_dim, in_dim)?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// `[.., in] → [.., out]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_linear(&self.weight, self.bias.as_ref())
    }

    /// The official `_init_weights` for Linear layers: weight trunc-normal(0.02), bias 0.
    pub(crate) fn init_trunc_normal(&mut self) -> Result<(), TchError> {
        trunc_normal_(&mut self.weight, TRUNC_NORMAL_STD)?;
        if let Some(b) = self.bias.as_mut() {
            fill_(b, 0.0)?;
        }
        Ok(())
    }
}

/// `nn.LayerNorm(dim, eps)`: weight 1, bias 0.
#[derive(Debug)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    dim: i64,
    eps: f64,
}

impl LayerNorm {
    pub(crate) fn new(p: &nn::Path, dim: i64, eps: f64) -> Result<Self, TchError> {
        let weight = p.f_ones("weight", &[dim])?;
        let bias = p.f_zeros("bias", &[dim])?;
        Ok(Self {
            weight,
            bias,
            dim,
            eps,
        })
    }

    /// Normalises over the last dimension.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_layer_norm(
            [self.dim],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}
