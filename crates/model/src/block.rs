//! The pre-norm transformer block with stochastic depth (official `Block`, `Mlp`, `DropPath`).

use crate::attention::Attention;
use crate::layers::{LayerNorm, Linear};
use dino_config::{AttentionKernel, Ffn};
use tch::{nn, Device, Kind, TchError, Tensor};

/// The feed-forward network of a block (`model.ffn`).
#[derive(Debug)]
pub(crate) enum Mlp {
    /// `Linear(D, hidden) → GELU (exact erf) → Linear(hidden, D)`; names `fc1`, `fc2` (DINO v1
    /// `Mlp`).
    Gelu { fc1: Linear, fc2: Linear },
    /// DINOv2's `SwiGLUFFNFused` (`layers/swiglu_ffn.py`): `w12` `Linear(D, 2·hidden)`, split
    /// in halves x₁, x₂, `silu(x₁) · x₂`, then `w3` `Linear(hidden, D)`; `hidden` is already the
    /// rounded SwiGLU width ([`crate::VitConfig::ffn_hidden`]).
    SwiGlu { w12: Linear, w3: Linear },
}

impl Mlp {
    pub(crate) fn new(p: &nn::Path, dim: i64, hidden: i64, ffn: Ffn) -> Result<Self, TchError> {
        Ok(match ffn {
            Ffn::Mlp => Self::Gelu {
                fc1: Linear::new(&(p / "fc1"), dim, hidden, true)?,
                fc2: Linear::new(&(p / "fc2"), hidden, dim, true)?,
            },
            Ffn::Swiglu => Self::SwiGlu {
                w12: Linear::new(&(p / "w12"), dim, 2 * hidden, true)?,
                w3: Linear::new(&(p / "w3"), hidden, dim, true)?,
            },
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        match self {
            Self::Gelu { fc1, fc2 } => fc2.forward(&fc1.forward(x)?.f_gelu("none")?),
            Self::SwiGlu { w12, w3 } => {
                let x12 = w12.forward(x)?.f_chunk(2, -1)?;
                w3.forward(&x12[0].f_silu()?.f_mul(&x12[1])?)
            }
        }
    }

    /// The official `_init_weights` of every Linear layer, in module order.
    pub(crate) fn init_trunc_normal(&mut self) -> Result<(), TchError> {
        let (a, b) = match self {
            Self::Gelu { fc1, fc2 } => (fc1, fc2),
            Self::SwiGlu { w12, w3 } => (w12, w3),
        };
        a.init_trunc_normal()?;
        b.init_trunc_normal()
    }
}

/// LayerScale (dinov2 `layers/layer_scale.py`): `x · gamma`, `gamma` `[D]` initialised to a
/// constant; the variable is `gamma` under `ls1` / `ls2`.
#[derive(Debug)]
pub(crate) struct LayerScale {
    gamma: Tensor,
}

impl LayerScale {
    /// `None` when `init` is 0 (dinov2: `init_values=None or 0 => no layerscale`).
    pub(crate) fn new(p: &nn::Path, dim: i64, init: f64) -> Result<Option<Self>, TchError> {
        if init == 0.0 {
            return Ok(None);
        }
        let gamma = p.f_var("gamma", &[dim], nn::Init::Const(init))?;
        Ok(Some(Self { gamma }))
    }

    fn apply(ls: &Option<Self>, x: Tensor) -> Result<Tensor, TchError> {
        match ls {
            Some(l) => x.f_mul(&l.gamma),
            None => Ok(x),
        }
    }
}

/// Stochastic depth (Huang et al. 2016) per sample: in training, each sample's residual branch
/// is zeroed with probability `rate` and the survivors are scaled by 1/(1 − rate), so the
/// expectation is unchanged (official `drop_path`). Identity when not training or `rate == 0`.
/// `x` is `[B, ...]`; the Bernoulli draw uses libtorch's generator on `x`'s device.
pub fn drop_path(x: &Tensor, rate: f64, train: bool) -> Result<Tensor, TchError> {
    if !train || rate == 0.0 {
        return Ok(x.shallow_clone());
    }
    let mut shape = vec![1i64; x.dim()];
    shape[0] = x.size()[0];
    let mask = drop_mask(&shape, rate, (x.kind(), x.device()))?;
    apply_drop_mask(x, &mask, rate)
}

/// The per-sample keep mask of [`drop_path`] (1 kept, 0 dropped) of `shape` `[B, 1, ..]`:
/// floor(keep + U[0,1)) is 1 with probability keep, exactly as the official code draws it.
fn drop_mask(shape: &[i64], rate: f64, options: (Kind, Device)) -> Result<Tensor, TchError> {
    (Tensor::f_rand(shape, options)? + (1.0 - rate)).f_floor()
}

/// `x` with the samples (or tokens) `mask` drops zeroed and the rest scaled by 1/(1 − rate);
/// `mask` broadcasts against `x`.
fn apply_drop_mask(x: &Tensor, mask: &Tensor, rate: f64) -> Result<Tensor, TchError> {
    let keep = 1.0 - rate;
    match x.kind() {
        // One pass instead of the official two (`x.div(keep) * mask`), forward and backward:
        // x / (keep / mask) divides a kept sample by keep and a dropped one by +inf, which is
        // the official result bit for bit in fp32 (a correctly rounded x / keep, or a zero of
        // x's sign; NaN where the official gives NaN), and so is its gradient g / (keep / mask).
        // Half precisions keep the official ops: keep / mask in bf16 or fp16 would round keep.
        Kind::Float | Kind::Double => x.f_div(&mask.f_reciprocal()?.f_mul_scalar(keep)?),
        _ => x.f_div_scalar(keep)?.f_mul(&mask.f_to_kind(x.kind())?),
    }
}

/// The stochastic-depth masks of one block for a crop group: `[B, 1, 1]` keep masks of the
/// attention and the MLP residual, drawn in that order (as [`Block::forward`] draws them), or
/// `None` when the block drops nothing.
pub(crate) type BlockDraws = Option<[Tensor; 2]>;

/// `x + DropPath(LS₁(Attn(LN₁(x))))`, then `x + DropPath(LS₂(MLP(LN₂(x))))`; LS is LayerScale
/// when `model.layerscale_init` > 0, else the identity (DINO v1's block). Stochastic depth stays
/// v1's per-sample mask on both branches (dinov2 drops a subset of the batch instead above a
/// rate of 0.1: the same expectation, other draws).
#[derive(Debug)]
pub(crate) struct Block {
    norm1: LayerNorm,
    pub(crate) attn: Attention,
    ls1: Option<LayerScale>,
    norm2: LayerNorm,
    pub(crate) mlp: Mlp,
    ls2: Option<LayerScale>,
    drop_path: f64,
}

/// The per-block options of DINOv2 (`model.layerscale_init`, `model.ffn`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockOptions {
    pub(crate) layerscale_init: f64,
    pub(crate) ffn: Ffn,
    pub(crate) attention: AttentionKernel,
}

impl Block {
    /// Variables are created in PyTorch's registration order (norm1, attn, ls1, norm2, mlp,
    /// ls2) so the default-init draws line up with the official modules.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        p: &nn::Path,
        dim: i64,
        num_heads: i64,
        mlp_hidden: i64,
        qkv_bias: bool,
        eps: f64,
        drop_path: f64,
        opts: BlockOptions,
    ) -> Result<Self, TchError> {
        Ok(Self {
            norm1: LayerNorm::new(&(p / "norm1"), dim, eps)?,
            attn: Attention::new(&(p / "attn"), dim, num_heads, qkv_bias)?
                .with_kernel(opts.attention),
            ls1: LayerScale::new(&(p / "ls1"), dim, opts.layerscale_init)?,
            norm2: LayerNorm::new(&(p / "norm2"), dim, eps)?,
            mlp: Mlp::new(&(p / "mlp"), dim, mlp_hidden, opts.ffn)?,
            ls2: LayerScale::new(&(p / "ls2"), dim, opts.layerscale_init)?,
            drop_path,
        })
    }

    /// `[B, N, D]` → `[B, N, D]` (fused attention kernel).
    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let y = LayerScale::apply(&self.ls1, self.attn.forward(&self.norm1.forward(x)?)?)?;
        let x = x.f_add(&drop_path(&y, self.drop_path, train)?)?;
        self.mlp_residual(&x, train)
    }

    /// The CLS row of [`Block::forward`]: `[B, N, D]` → `[B, 1, D]`, equal to
    /// `forward(x, train).narrow(1, 0, 1)` up to float rounding. LayerNorm 1, keys and values
    /// run over all tokens ([`Attention::forward_cls`]); the query, attention output,
    /// projection, both residuals, LayerNorm 2 and the MLP over the CLS row only. Stochastic
    /// depth draws one value per sample from the generator, at the same two points and with
    /// the same `[B, 1, 1]` shape as [`Block::forward`], so from the same generator state both
    /// paths drop the same samples.
    pub(crate) fn forward_cls(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let y = LayerScale::apply(&self.ls1, self.attn.forward_cls(&self.norm1.forward(x)?)?)?;
        let x = x
            .f_narrow(1, 0, 1)?
            .f_add(&drop_path(&y, self.drop_path, train)?)?;
        self.mlp_residual(&x, train)
    }

    /// Draws this block's stochastic-depth masks for a group of `b` crops (fp32 draws on
    /// `device`), as [`Block::forward`] on that group would draw them from the same generator
    /// state: nothing when not training or at rate 0.
    pub(crate) fn draw(&self, b: i64, train: bool, device: Device) -> Result<BlockDraws, TchError> {
        if !train || self.drop_path == 0.0 {
            return Ok(None);
        }
        let draw = || drop_mask(&[b, 1, 1], self.drop_path, (Kind::Float, device));
        Ok(Some([draw()?, draw()?]))
    }

    /// [`Block::forward`] on the tokens of several crop groups packed row-wise, `x` `[T, D]`
    /// with T = Σ B_g·N_g (group g's `[B_g, N_g, D]` tokens flattened, in order; `groups` the
    /// (B_g, N_g)): LayerNorms, projections, MLP and residuals run on all T rows at once, the
    /// attention within each group ([`Attention::forward_packed`]). `masks`: the attention and
    /// MLP residuals' keep masks per row `[T, 1]` (each sample's [`Block::draw`] repeated over
    /// its tokens), `None` without stochastic depth. Row by row the same ops as `forward` on
    /// each group, so the same result up to the rounding of the larger matrix products.
    pub(crate) fn forward_packed(
        &self,
        x: &Tensor,
        groups: &[(i64, i64)],
        masks: Option<&[Tensor; 2]>,
    ) -> Result<Tensor, TchError> {
        let drop = |y: Tensor, i: usize| self.drop_drawn(y, masks, i);
        let y = LayerScale::apply(
            &self.ls1,
            self.attn.forward_packed(&self.norm1.forward(x)?, groups)?,
        )?;
        let x = x.f_add(&drop(y, 0)?)?;
        let y = LayerScale::apply(&self.ls2, self.mlp.forward(&self.norm2.forward(&x)?)?)?;
        x.f_add(&drop(y, 1)?)
    }

    /// [`Block::forward_cls`] with masks drawn beforehand ([`Block::draw`], `[B, 1, 1]`).
    pub(crate) fn forward_cls_drawn(
        &self,
        x: &Tensor,
        masks: Option<&[Tensor; 2]>,
    ) -> Result<Tensor, TchError> {
        let drop = |y: Tensor, i: usize| self.drop_drawn(y, masks, i);
        let y = LayerScale::apply(&self.ls1, self.attn.forward_cls(&self.norm1.forward(x)?)?)?;
        let x = x.f_narrow(1, 0, 1)?.f_add(&drop(y, 0)?)?;
        let y = LayerScale::apply(&self.ls2, self.mlp.forward(&self.norm2.forward(&x)?)?)?;
        x.f_add(&drop(y, 1)?)
    }

    /// Residual branch `y` with the `i`-th of the masks drawn beforehand (0: attention, 1: MLP)
    /// applied; `y` itself without stochastic depth.
    fn drop_drawn(
        &self,
        y: Tensor,
        masks: Option<&[Tensor; 2]>,
        i: usize,
    ) -> Result<Tensor, TchError> {
        match masks {
            Some(m) => apply_drop_mask(&y, &m[i], self.drop_path),
            None => Ok(y),
        }
    }

    /// Inference forward through the explicit attention path; also returns the attention
    /// probabilities `[B, heads, N, N]`.
    pub(crate) fn forward_with_attn(&self, x: &Tensor) -> Result<(Tensor, Tensor), TchError> {
        let (y, attn) = self.attn.forward_with_attn(&self.norm1.forward(x)?)?;
        let x = x.f_add(&LayerScale::apply(&self.ls1, y)?)?;
        Ok((self.mlp_residual(&x, false)?, attn))
    }

    fn mlp_residual(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let y = LayerScale::apply(&self.ls2, self.mlp.forward(&self.norm2.forward(x)?)?)?;
        x.f_add(&drop_path(&y, self.drop_path, train)?)
    }

    /// Drop-path rate of this block.
    pub(crate) fn drop_path_rate(&self) -> f64 {
        self.drop_path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn drop_path_zeroes_or_rescales_whole_samples() {
        tch::manual_seed(0);
        let x = Tensor::ones([4000, 3, 5], (Kind::Float, Device::Cpu));
        let y = drop_path(&x, 0.25, true).unwrap();
        let per_sample = y.view([4000, 15]);
        let mins = per_sample.min_dim(1, false).0;
        let maxs = per_sample.max_dim(1, false).0;
        assert!(mins.equal(&maxs), "a sample is dropped or kept as a whole");
        let kept = maxs.gt(0.0).to_kind(Kind::Float);
        let frac = kept.mean(Kind::Float).double_value(&[]);
        assert!((frac - 0.75).abs() < 0.03, "keep fraction {frac}");
        let scale = maxs.max().double_value(&[]);
        assert!(
            (scale - 1.0 / 0.75).abs() < 1e-6,
            "survivors scaled by 1/keep: {scale}"
        );
        assert!(drop_path(&x, 0.25, false).unwrap().equal(&x));
        assert!(drop_path(&x, 0.0, true).unwrap().equal(&x));
    }

    /// The one-division form of [`drop_path`] (`apply_drop_mask`) equals the official
    /// `x.div(keep_prob) * random_tensor` bit for bit, forward and backward, signed zeros and
    /// non-finite inputs included, in kept and dropped samples alike.
    #[test]
    fn drop_path_is_the_official_arithmetic_bit_for_bit() {
        let keep = 1.0 - 0.1;
        let shape = [64, 5, 7];
        let x = Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 3.0;
        let _ = x.get(0).get(0).fill_(f64::INFINITY);
        let _ = x.get(1).get(0).fill_(f64::NAN);
        let _ = x.get(2).get(0).fill_(-0.0);
        let x = x.set_requires_grad(true);
        // A non-uniform incoming gradient, negative entries included (signed zeros).
        let g = Tensor::randn(shape, (Kind::Float, Device::Cpu));
        let forward_backward = |y: Tensor| {
            let gx = Tensor::run_backward(&[(&y * &g).sum(Kind::Float)], &[&x], false, false);
            (y.detach(), gx[0].copy())
        };
        // Every third sample dropped: a fixed mask, so the test reads no shared generator.
        let mask = Tensor::arange(64, (Kind::Float, Device::Cpu))
            .fmod(3.0)
            .ne(0.0)
            .to_kind(Kind::Float)
            .view([64, 1, 1]);
        let ours = forward_backward(apply_drop_mask(&x, &mask, 0.1).unwrap());
        let official = forward_backward(x.f_div_scalar(keep).unwrap() * &mask);
        let bits = |t: &Tensor| {
            Vec::<f32>::try_from(t.flatten(0, -1))
                .unwrap()
                .into_iter()
                .map(f32::to_bits)
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&ours.0), bits(&official.0), "forward");
        assert_eq!(bits(&ours.1), bits(&official.1), "gradient");
    }
}
