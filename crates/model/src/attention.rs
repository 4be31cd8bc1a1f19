//! Multi-head self-attention with one fused qkv projection (official `Attention`).

use crate::layers::Linear;
use dino_config::AttentionKernel;
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
    kernel: AttentionKernel,
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
            kernel: AttentionKernel::Sdpa,
        })
    }

    /// The same attention computed by `kernel` in [`Attention::forward`] and
    /// [`Attention::forward_cls`] (`model.attention`).
    pub(crate) fn with_kernel(mut self, kernel: AttentionKernel) -> Self {
        self.kernel = kernel;
        self
    }

    /// `softmax(q·kᵀ · scale) · v` on `[B, heads, Nq, hd]` queries and `[B, heads, N, hd]` keys
    /// and values, by the configured kernel.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor, TchError> {
        match self.kernel {
            AttentionKernel::Sdpa => Tensor::f_scaled_dot_product_attention(
                q,
                k,
                v,
                None::<Tensor>,
                0.0,
                false,
                self.scale,
                false,
            ),
            AttentionKernel::Explicit => q
                .f_matmul(&k.f_transpose(-2, -1)?)?
                .f_mul_scalar(self.scale)?
                .f_softmax(-1, q.kind())?
                .f_matmul(v),
        }
    }

    /// `[B, N, D]` → q, k, v each `[B, heads, N, head_dim]`.
    ///
    /// The fused projection is split along its last dimension rather than reshaped to
    /// `[B, N, 3, heads, head_dim]`, permuted and indexed: the same three views (same strides,
    /// so the forward is bit for bit the same), but the backward concatenates the three
    /// gradients in one pass, where three selects each zero-fill a `[3, B, heads, N, head_dim]`
    /// buffer and add them up (docs/BENCHMARKS.md, "CLS-only last block and the model forward").
    fn heads(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor, [i64; 3]), TchError> {
        let (b, n, c) = x.size3()?;
        let qkv = self.qkv.forward(x)?.f_split(c, -1)?;
        Ok((
            self.per_head(&qkv[0], b, n)?,
            self.per_head(&qkv[1], b, n)?,
            self.per_head(&qkv[2], b, n)?,
            [b, n, c],
        ))
    }

    /// `[B, N, D]` (any strides whose last dimension is dense) → `[B, heads, N, head_dim]`, a view.
    fn per_head(&self, t: &Tensor, b: i64, n: i64) -> Result<Tensor, TchError> {
        let c = t.size()[2];
        t.f_reshape([b, n, self.num_heads, c / self.num_heads])?
            .f_transpose(1, 2)
    }

    fn merge(&self, o: &Tensor, [b, n, c]: [i64; 3]) -> Result<Tensor, TchError> {
        self.proj
            .forward(&o.f_transpose(1, 2)?.f_reshape([b, n, c])?)
    }

    /// `[B, N, D]` → `[B, N, D]`, the training path: libtorch's fused
    /// `scaled_dot_product_attention` (no `[N, N]` probability tensor kept for backward on the
    /// fast kernels), or the explicit ops under `model.attention = "explicit"`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let (q, k, v, dims) = self.heads(x)?;
        let o = self.attend(&q, &k, &v)?;
        self.merge(&o, dims)
    }

    /// [`Attention::forward`] on the tokens of several crop groups packed row-wise: `x`
    /// `[T, D]`, group g's `[B_g, N_g, D]` tokens flattened in order (`groups` the (B_g, N_g),
    /// Σ B_g·N_g = T) → `[T, D]`. The qkv and output projections run on all T rows at once (one
    /// matrix product each instead of one per group: DINOv2's `forward_features_list` does the
    /// same with a block-diagonal mask); the attention stays within each group's crops.
    pub(crate) fn forward_packed(
        &self,
        x: &Tensor,
        groups: &[(i64, i64)],
    ) -> Result<Tensor, TchError> {
        let c = x.size2()?.1;
        let qkv = self.qkv.forward(x)?;
        let mut out = Vec::with_capacity(groups.len());
        let mut row = 0;
        for &(b, n) in groups {
            let g = qkv
                .f_narrow(0, row, b * n)?
                .f_view([b, n, 3 * c])?
                .f_split(c, -1)?;
            let o = self.attend(
                &self.per_head(&g[0], b, n)?,
                &self.per_head(&g[1], b, n)?,
                &self.per_head(&g[2], b, n)?,
            )?;
            out.push(o.f_transpose(1, 2)?.f_reshape([b * n, c])?);
            row += b * n;
        }
        self.proj.forward(&Tensor::f_cat(&out, 0)?)
    }

    /// The CLS row of [`Attention::forward`]: `[B, N, D]` (token 0 the CLS token) →
    /// `[B, 1, D]`, equal to `forward(x).narrow(1, 0, 1)` up to float rounding. Keys and values
    /// are projected for all N tokens, the query for the CLS token only, and the attention
    /// output and its projection are one row: the last block of a training forward whose loss
    /// reads only CLS. The fused qkv weight is split by narrowing the same variable (q rows
    /// `0..D`, k and v rows `D..3D`), so its name and gradient stay `qkv.weight`'s.
    pub(crate) fn forward_cls(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let (b, n, c) = x.size3()?;
        let w = &self.qkv.weight;
        let bias = |start, len| -> Result<Option<Tensor>, TchError> {
            self.qkv
                .bias
                .as_ref()
                .map(|all| all.f_narrow(0, start, len))
                .transpose()
        };
        let q = x
            .f_narrow(1, 0, 1)?
            .f_linear(&w.f_narrow(0, 0, c)?, bias(0, c)?.as_ref())?;
        let kv = x
            .f_linear(&w.f_narrow(0, c, 2 * c)?, bias(c, 2 * c)?.as_ref())?
            .f_split(c, -1)?;
        let o = self.attend(
            &self.per_head(&q, b, 1)?,
            &self.per_head(&kv[0], b, n)?,
            &self.per_head(&kv[1], b, n)?,
        )?;
        self.merge(&o, [b, 1, c])
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// The heads as the official code and this file before the split took them: reshape to
    /// `[B, N, 3, heads, head_dim]`, permute, select.
    fn heads_by_select(a: &Attention, x: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (b, n, c) = x.size3().unwrap();
        let qkv = a
            .qkv
            .forward(x)
            .unwrap()
            .reshape([b, n, 3, a.num_heads, c / a.num_heads])
            .permute([2, 0, 3, 1, 4]);
        (qkv.select(0, 0), qkv.select(0, 1), qkv.select(0, 2))
    }

    fn attend(a: &Attention, (q, k, v): (Tensor, Tensor, Tensor), dims: [i64; 3]) -> Tensor {
        let o = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            a.scale,
            false,
        );
        a.merge(&o, dims).unwrap()
    }

    /// Splitting the fused projection changes the backward's memory traffic, not one bit of the
    /// output or of any gradient (input, qkv and proj weights and biases).
    #[test]
    fn split_heads_are_the_selected_heads_bit_for_bit() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let a = Attention::new(&vs.root(), 96, 4, true).unwrap();
        let x0 = Tensor::randn([5, 17, 96], (Kind::Float, Device::Cpu));
        let g = Tensor::randn([5, 17, 96], (Kind::Float, Device::Cpu));
        let run = |split: bool| {
            let x = x0.copy().set_requires_grad(true);
            for v in vs.trainable_variables() {
                let mut grad = v.grad();
                if grad.defined() {
                    let _ = grad.zero_();
                }
            }
            let y = if split {
                a.forward(&x).unwrap()
            } else {
                attend(&a, heads_by_select(&a, &x), [5, 17, 96])
            };
            (&y * &g).sum(Kind::Float).backward();
            let mut out = vec![y.detach(), x.grad()];
            let vars = vs.variables();
            let mut names: Vec<_> = vars.keys().cloned().collect();
            names.sort();
            out.extend(names.iter().map(|n| vars[n].grad().copy()));
            out
        };
        let (split, select) = (run(true), run(false));
        assert_eq!(split.len(), 2 + 4);
        for (i, (s, r)) in split.iter().zip(&select).enumerate() {
            assert!(s.equal(r), "tensor {i} differs");
            assert!(s.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        }
    }

    /// `model.attention = "explicit"` computes the fused kernel's attention: the full path's
    /// and the CLS-only path's outputs and every gradient (input, qkv and proj weights and
    /// biases) within 1e-5 of SDPA's, and not bit for bit (the switch reaches the kernel).
    #[test]
    fn explicit_kernel_matches_sdpa() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let sdpa = Attention::new(&vs.root(), 96, 4, true).unwrap();
        let other = nn::VarStore::new(Device::Cpu);
        let explicit = Attention::new(&other.root(), 96, 4, true)
            .unwrap()
            .with_kernel(AttentionKernel::Explicit);
        // The same weights: the first module's variables.
        let explicit = Attention {
            qkv: Linear {
                weight: sdpa.qkv.weight.shallow_clone(),
                bias: sdpa.qkv.bias.as_ref().map(Tensor::shallow_clone),
            },
            proj: Linear {
                weight: sdpa.proj.weight.shallow_clone(),
                bias: sdpa.proj.bias.as_ref().map(Tensor::shallow_clone),
            },
            ..explicit
        };
        let x0 = Tensor::randn([5, 17, 96], (Kind::Float, Device::Cpu));
        for cls_only in [false, true] {
            let run = |a: &Attention| {
                let x = x0.copy().set_requires_grad(true);
                let params = [
                    &a.qkv.weight,
                    a.qkv.bias.as_ref().unwrap(),
                    &a.proj.weight,
                    a.proj.bias.as_ref().unwrap(),
                ];
                let y = match cls_only {
                    true => a.forward_cls(&x).unwrap(),
                    false => a.forward(&x).unwrap(),
                };
                let g = Tensor::ones_like(&y).cumsum(1, Kind::Float);
                let mut inputs = vec![x.shallow_clone()];
                inputs.extend(params.iter().map(|p| p.shallow_clone()));
                let loss = (&y * &g).sum(Kind::Float);
                let mut out = vec![y.detach()];
                out.extend(Tensor::run_backward(&[loss], &inputs, false, false));
                out
            };
            let (a, b) = (run(&sdpa), run(&explicit));
            let mut any_differs = false;
            for (i, (s, e)) in a.iter().zip(&b).enumerate() {
                let scale = s.abs().max().double_value(&[]).max(1.0);
                let d = (s - e).abs().max().double_value(&[]) / scale;
                assert!(
                    d <= 1e-5,
                    "cls_only {cls_only}: tensor {i} differs by {d:e}"
                );
                any_differs |= !s.equal(e);
            }
            assert!(any_differs, "cls_only {cls_only}: both ran the same kernel");
        }
    }
}
