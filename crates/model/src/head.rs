//! The DINO projection head (official `DINOHead`, `vision_transformer.py`; paper §3.1, Fig. 9).
//!
//! `[B, D]` → MLP (`nlayers` Linear layers, GELU between, optional BatchNorm) → bottleneck
//! `[B, 256]` → L2 normalise (eps 1e-12) → weight-normalised `Linear(256, K, bias = False)` →
//! logits `[B, K]`.
//!
//! Variable names are the official state-dict keys: `mlp.{i}.weight|bias` at the
//! `nn.Sequential` indices (`mlp.0`, `mlp.2`, `mlp.4` without BatchNorm; `mlp.0`, `mlp.1` (BN),
//! `mlp.3`, `mlp.4` (BN), `mlp.6` with it), `mlp.weight|bias` when `nlayers == 1`, and
//! `last_layer.weight_g [K, 1]`, `last_layer.weight_v [K, bottleneck]`.

use crate::error::ModelError;
use crate::init::default_weight;
use crate::layers::{BatchNorm, Linear};
use dino_config::HeadConfig;
use tch::{nn, Kind, Tensor};

/// F.normalize's eps: ‖x‖ is clamped below at this value.
pub const NORMALIZE_EPS: f64 = 1e-12;
/// `nn.BatchNorm1d` defaults used when `use_bn` is on (PyTorch's, shared by the ResNets' `BatchNorm2d`).
pub use crate::layers::{BN_EPS, BN_MOMENTUM};

#[derive(Debug)]
enum MlpLayer {
    Linear(Linear),
    BatchNorm(BatchNorm),
    Gelu,
}

/// The DINO head. Build with [`DinoHead::new`]; the input width is the backbone's embed_dim.
#[derive(Debug)]
pub struct DinoHead {
    mlp: Vec<MlpLayer>,
    weight_g: Tensor,
    weight_v: Tensor,
    out_dim: i64,
}

impl DinoHead {
    /// Creates the head under `p` (the wrapper passes `root / "head"`). MLP Linear weights get
    /// trunc-normal(0.02) and zero biases; `last_layer.weight_v` keeps PyTorch's default
    /// kaiming-uniform init (the official code creates it after its init pass);
    /// `last_layer.weight_g` is 1 and, when `norm_last_layer`, a non-trainable variable (saved
    /// and loaded but never given a gradient), so logits are cosine similarities in [−1, 1].
    /// Random draws follow the official order (MLP defaults, MLP trunc-normal, then `weight_v`).
    ///
    /// # Errors
    /// [`ModelError::Config`] on zero sizes; [`ModelError::Torch`].
    pub fn new(p: &nn::Path, in_dim: i64, cfg: &HeadConfig) -> Result<Self, ModelError> {
        let (hidden, bottleneck, out_dim) = (
            cfg.hidden_dim as i64,
            cfg.bottleneck_dim as i64,
            cfg.out_dim as i64,
        );
        if in_dim < 1 || bottleneck < 1 || out_dim < 1 || (cfg.nlayers > 1 && hidden < 1) {
            return Err(ModelError::Config(format!(
                "head sizes must be positive: {cfg:?}, in {in_dim}"
            )));
        }
        let mp = p / "mlp";
        let mut mlp = Vec::new();
        // official: nlayers = max(nlayers, 1)
        if cfg.nlayers <= 1 {
            mlp.push(MlpLayer::Linear(Linear::new(
                &mp, in_dim, bottleneck, true,
            )?));
        } else {
            let mut dims = vec![(in_dim, hidden)];
            dims.extend(std::iter::repeat_n((hidden, hidden), cfg.nlayers - 2));
            for (i, o) in dims {
                mlp.push(MlpLayer::Linear(Linear::new(
                    &(&mp / mlp.len()),
                    i,
                    o,
                    true,
                )?));
                if cfg.use_bn {
                    mlp.push(MlpLayer::BatchNorm(BatchNorm::new(&(&mp / mlp.len()), o)?));
                }
                mlp.push(MlpLayer::Gelu);
            }
            mlp.push(MlpLayer::Linear(Linear::new(
                &(&mp / mlp.len()),
                hidden,
                bottleneck,
                true,
            )?));
        }
        for l in mlp.iter_mut() {
            if let MlpLayer::Linear(l) = l {
                l.init_trunc_normal()?;
            }
        }
        let lp = p / "last_layer";
        let g = Tensor::f_ones([out_dim, 1], (Kind::Float, p.device()))?;
        let weight_g = lp.add("weight_g", g, !cfg.norm_last_layer);
        let weight_v = default_weight(&lp, "weight_v", &[out_dim, bottleneck])?;
        Ok(Self {
            mlp,
            weight_g,
            weight_v,
            out_dim,
        })
    }

    /// Number of prototypes K.
    pub fn out_dim(&self) -> i64 {
        self.out_dim
    }

    /// The L2-normalised bottleneck `[B, bottleneck]` for features `[B, D]`.
    ///
    /// # Errors
    /// [`ModelError::Torch`] (e.g. a width other than D).
    pub fn bottleneck(&self, x: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        let mut h = x.shallow_clone();
        for l in &self.mlp {
            h = match l {
                MlpLayer::Linear(l) => l.forward(&h)?,
                MlpLayer::BatchNorm(bn) => bn.forward(&h, train)?,
                MlpLayer::Gelu => h.f_gelu("none")?,
            };
        }
        let norm = h
            .f_norm_scalaropt_dim(2, [-1], true)?
            .f_clamp_min(NORMALIZE_EPS)?;
        Ok(h.f_div(&norm)?)
    }

    /// The effective last-layer weight `[K, bottleneck]`, row k = g_k · v_k / ‖v_k‖.
    ///
    /// # Errors
    /// [`ModelError::Torch`].
    pub fn last_layer_weight(&self) -> Result<Tensor, ModelError> {
        Ok(Tensor::f_internal_weight_norm(
            &self.weight_v,
            &self.weight_g,
            0,
        )?)
    }

    /// Logits `[B, K]` for features `[B, D]`. `train` only matters with BatchNorm.
    ///
    /// # Errors
    /// [`ModelError::Torch`].
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        let z = self.bottleneck(x, train)?;
        Ok(z.f_linear(&self.last_layer_weight()?, None::<Tensor>)?)
    }
}

/// True for the variables of the head's last layer (official `cancel_gradients_last_layer`
/// matches `"last_layer" in name`): `head.last_layer.weight_v` and, when trainable,
/// `head.last_layer.weight_g`. The trainer freezes these during the first
/// `freeze_last_layer` epochs (no update at all, not even weight decay).
pub fn is_last_layer(name: &str) -> bool {
    name.contains("last_layer")
}

/// Official `utils.get_params_groups`: a trainable variable is weight-decayed unless its name
/// ends in `.bias` or it is 1-D. Not decayed here: every `*.bias`, every LayerNorm/BatchNorm
/// `weight` (`norm1`, `norm2`, `norm`, BN `mlp.{i}.weight`). Decayed: Linear/conv weights,
/// `cls_token` `[1,1,D]`, `pos_embed` `[1,1+N,D]` (3-D, so the official code decays them) and
/// `last_layer.weight_g` `[K,1]` when trainable.
pub fn is_regularized(name: &str, shape: &[i64]) -> bool {
    !(name.ends_with(".bias") || shape.len() == 1)
}
