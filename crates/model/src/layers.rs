//! The parametrised building blocks the networks here are made of, with PyTorch's names
//! (`weight`, `bias`, `running_mean`, …) and PyTorch's default initialisation.

use crate::error::ModelError;
use crate::init::{default_bias, default_weight, fill_, trunc_normal_, TRUNC_NORMAL_STD};
use tch::{nn, Kind, TchError, Tensor};

/// PyTorch's BatchNorm epsilon (`nn.BatchNorm1d/2d(eps=1e-5)`).
pub const BN_EPS: f64 = 1e-5;
/// PyTorch's BatchNorm running-statistics momentum (`momentum=0.1`).
pub const BN_MOMENTUM: f64 = 0.1;

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

/// `nn.BatchNorm1d(dim)` / `nn.BatchNorm2d(dim)` (the same op over `[B, C]` or `[B, C, H, W]`)
/// with its state-dict entries: parameters `weight` (1) and `bias` (0), buffers
/// `running_mean` (0), `running_var` (1) and `num_batches_tracked` (int64, 0). Buffers are
/// non-trainable variables, so they are saved, loaded and copied with the weights but get no
/// gradient, no weight decay and no EMA.
///
/// Training mode normalises with the batch statistics and updates the running ones in place
/// (`running = (1 − 0.1)·running + 0.1·batch`, the variance unbiased) and counts the batch;
/// evaluation mode normalises with the running statistics — all as PyTorch. As PyTorch's
/// `F.batch_norm`, training mode refuses an input with one value per channel (N · H · W = 1),
/// which libtorch's op would turn into a NaN running variance.
#[derive(Debug)]
pub(crate) struct BatchNorm {
    /// The variable path, for errors (`backbone.layer4.0.bn1`).
    name: String,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: Tensor,
}

impl BatchNorm {
    pub(crate) fn new(p: &nn::Path, dim: i64) -> Result<Self, TchError> {
        let weight = p.f_ones("weight", &[dim])?;
        let bias = p.f_zeros("bias", &[dim])?;
        let running_mean = p.f_zeros_no_train("running_mean", &[dim])?;
        let running_var = p.f_ones_no_train("running_var", &[dim])?;
        let nbt = Tensor::f_zeros([], (Kind::Int64, p.device()))?;
        let num_batches_tracked = p.add("num_batches_tracked", nbt, false);
        Ok(Self {
            name: p.components().collect::<Vec<_>>().join("."),
            weight,
            bias,
            running_mean,
            running_var,
            num_batches_tracked,
        })
    }

    /// `[B, C, ..]` → same shape; `train` selects batch statistics (and updates the running ones).
    ///
    /// # Errors
    /// [`ModelError::OneValuePerChannel`] in training mode when `B · H · W` (`B` for `[B, C]`)
    /// is 1, before any statistic changes; libtorch errors.
    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        if train {
            let size = x.size();
            let per_channel: i64 = size
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != 1)
                .map(|(_, &d)| d)
                .product();
            if per_channel == 1 {
                return Err(ModelError::OneValuePerChannel {
                    layer: self.name.clone(),
                    shape: size,
                });
            }
            let mut n = self.num_batches_tracked.shallow_clone();
            let _ = tch::no_grad(|| n.f_add_scalar_(1))?;
        }
        Ok(x.f_batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            BN_MOMENTUM,
            BN_EPS,
            true,
        )?)
    }
}
