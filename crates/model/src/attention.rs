//! Multi-head self-attention with one fused qkv projection (official `Attention`).

use crate::layers::Linear;
use tch::{nn, TchError, Tensor};

/// `softmax(Q·Kᵀ · head_dim^−0.5) · V` over `num_heads` heads, then an output projection.
/// Weights: `qkv.weight [3D, D]`, `qkv.bias [3D]` (when `qkv_bias`), `proj.weight [D, D]`,
/// `proj.bias [D]`.
#[derive(Debug)]
pub(crate) struct Attention {
    pub(crate) qkv: Linear,
    pub(crate) proj: Linear,
    num_heads: i64,
    scale: f64,
}

impl Attention {
    pub(crate) fn new(
        p: &nn::Path,
        dim: i64,
        num_heads: i64,
        qkv_bias: bool,
    ) -> Result<Self, TchError> {
        let qkv = Linear::new(&(p / "qkv"), dim, 3 * dim, qkv_bias)?;
        let proj = Linear::new(&(p / "proj"), dim, dim, true)?;
        let head_dim = dim / num_heads;
        Ok(Self {
            qkv,
            proj,
            num_heads,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    /// `[B, N, D]` → q, k, v each `[B, heads, N, head_dim]`.
    fn heads(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor, [i64; 3]), TchError> {
        let (b, n, c) = x.size3()?;
        let qkv = self
            .qkv
            .forward(x)?
            .f_reshape([b, n, 3, self.num_heads, c / self.num_heads])?
            .f_permute([2, 0, 3, 1, 4])?;
        Ok((
            qkv.f_select(0, 0)?,
            qkv.f_select(0, 1)?,
            qkv.f_select(0, 2)?,
            [b, n, c],
        ))
    }

    fn merge(&self, o: &Tensor, [b, n, c]: [i64; 3]) -> Result<Tensor, TchError> {
        self.proj
            .forward(&o.f_transpose(1, 2)?.f_reshape([b, n, c])?)
    }

    /// `[B, N, D]` → `[B, N, D]` through libtorch's fused `scaled_dot_product_attention`
    /// (the training path: no `[N, N]` probability tensor kept for backward on the fast kernels).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let (q, k, v, dims) = self.heads(x)?;
        let o = Tensor::f_scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            self.scale,
            false,
        )?;
        self.merge(&o, dims)
    }

    /// The explicit path of the official code: returns the output `[B, N, D]` and the attention
    /// probabilities `[B, heads, N, N]` (rows sum to 1).
    pub(crate) fn forward_with_attn(&self, x: &Tensor) -> Result<(Tensor, Tensor), TchError> {
        let (q, k, v, dims) = self.heads(x)?;
        let attn = q
            .f_matmul(&k.f_transpose(-2, -1)?)?
            .f_mul_scalar(self.scale)?
            .f_softmax(-1, q.kind())?;
        let o = attn.f_matmul(&v)?;
        Ok((self.merge(&o, dims)?, attn))
    }
}
