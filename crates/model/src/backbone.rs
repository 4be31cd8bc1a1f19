//! The backbone of a DINO network: a Vision Transformer or a torchvision ResNet (official
//! `main_dino.py`: `vits.__dict__[arch]` or `torchvision_models.__dict__[arch]`). Student,
//! teacher, evaluation and import all hold a [`Backbone`] and ask it for one thing, the
//! `[B, D]` feature; what only a ViT has (tokens, attention) is reached through
//! [`Backbone::vit`].

use crate::error::ModelError;
use crate::resnet::{ResNet, ResNetConfig};
use crate::vit::{VisionTransformer, VitConfig};
use dino_config::ModelConfig;
use tch::{nn, Tensor};

/// The shape of a [`Backbone`].
#[derive(Debug, Clone, PartialEq)]
pub enum BackboneConfig {
    /// A Vision Transformer.
    Vit(VitConfig),
    /// A torchvision ResNet.
    ResNet(ResNetConfig),
}

impl BackboneConfig {
    /// The backbone a `[model]` section describes: a ResNet for `resnet18|34|50`, else the ViT
    /// of [`VitConfig::from_model`].
    ///
    /// # Errors
    /// As [`VitConfig::from_model`].
    pub fn from_model(m: &ModelConfig) -> Result<Self, ModelError> {
        Ok(match ResNetConfig::from_model(m) {
            Some(r) => Self::ResNet(r),
            None => Self::Vit(VitConfig::from_model(m)?),
        })
    }

    /// The same backbone with (or without) iBOT's `mask_token` (a ViT's; a ResNet is
    /// unchanged, and the config refuses iBOT for it).
    pub fn with_mask_token(self, on: bool) -> Self {
        match self {
            Self::Vit(v) => Self::Vit(v.with_mask_token(on)),
            r => r,
        }
    }

    /// The teacher's (and evaluation's) version: the official code gives stochastic depth to
    /// the student's ViT only; a ResNet is unchanged.
    pub fn without_drop_path(self) -> Self {
        match self {
            Self::Vit(v) => Self::Vit(v.with_drop_path(0.0)),
            r => r,
        }
    }

    /// Feature width D: the ViT's embed_dim, or 512 / 2048 for a ResNet (the DINO head's input).
    pub fn embed_dim(&self) -> i64 {
        match self {
            Self::Vit(v) => v.embed_dim,
            Self::ResNet(r) => r.embed_dim(),
        }
    }

    /// A variable name every state dict of this architecture has (`cls_token`, `conv1.weight`),
    /// used to find under which prefix a file keeps its backbone.
    pub fn marker_key(&self) -> &'static str {
        match self {
            Self::Vit(_) => "cls_token",
            Self::ResNet(_) => "conv1.weight",
        }
    }
}

impl From<VitConfig> for BackboneConfig {
    fn from(v: VitConfig) -> Self {
        Self::Vit(v)
    }
}

impl From<&VitConfig> for BackboneConfig {
    fn from(v: &VitConfig) -> Self {
        Self::Vit(v.clone())
    }
}

impl From<ResNetConfig> for BackboneConfig {
    fn from(r: ResNetConfig) -> Self {
        Self::ResNet(r)
    }
}

impl From<&ResNetConfig> for BackboneConfig {
    fn from(r: &ResNetConfig) -> Self {
        Self::ResNet(r.clone())
    }
}

impl From<&BackboneConfig> for BackboneConfig {
    fn from(b: &BackboneConfig) -> Self {
        b.clone()
    }
}

/// Which tokens a caller reads from the backbone's last block: the seam where a training method
/// tells the backbone what its loss needs, so that a ViT can leave the rest uncomputed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScope {
    /// Only the final CLS token (DINO's loss, the supervised classifier): a ViT runs its last
    /// block for the CLS row only ([`VisionTransformer::forward_cls`]), the same math as
    /// [`TokenScope::AllTokens`] up to float rounding.
    ClsOnly,
    /// Every token through the last block: the official forward
    /// ([`VisionTransformer::forward_t`]), bit for bit the path before `ClsOnly` existed. A loss
    /// on the patch tokens (iBOT's masked-token loss, issue #31) must ask for this and read the
    /// tokens from [`VisionTransformer::forward_tokens`].
    AllTokens,
}

impl TokenScope {
    /// The scope of a loss that reads only CLS under `model.cls_only_last_block`: `ClsOnly`
    /// when it is on, else `AllTokens`.
    pub fn for_cls_loss(cls_only_last_block: bool) -> Self {
        if cls_only_last_block {
            Self::ClsOnly
        } else {
            Self::AllTokens
        }
    }
}

/// A ViT or a ResNet, with the official state-dict names at its variable-store path.
#[derive(Debug)]
pub enum Backbone {
    /// A Vision Transformer (CLS feature).
    Vit(VisionTransformer),
    /// A torchvision ResNet (pooled feature, `fc` = identity).
    ResNet(ResNet),
}

impl Backbone {
    /// Builds and initialises the backbone under `p` (see [`VisionTransformer::new`],
    /// [`ResNet::new`]).
    ///
    /// # Errors
    /// The constructor's.
    pub fn new(p: &nn::Path, cfg: &BackboneConfig) -> Result<Self, ModelError> {
        Ok(match cfg {
            BackboneConfig::Vit(v) => Self::Vit(VisionTransformer::new(p, v)?),
            BackboneConfig::ResNet(r) => Self::ResNet(ResNet::new(p, r)?),
        })
    }

    /// The DINO feature `[B, D]` of a normalised float batch `[B, 3, H, W]`: the ViT's final-norm
    /// CLS token, or the ResNet's average-pooled `layer4`. `train` turns on stochastic depth
    /// (ViT) or BatchNorm's batch statistics and running-statistics update (ResNet).
    ///
    /// # Errors
    /// The network's input and libtorch errors.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        match self {
            Self::Vit(v) => v.forward_t(x, train),
            Self::ResNet(r) => r.forward_t(x, train),
        }
    }

    /// [`Backbone::forward_t`] computing only the tokens `scope` says are read: with
    /// [`TokenScope::ClsOnly`] a ViT's last block runs for the CLS row only
    /// ([`VisionTransformer::forward_cls`]). A ResNet has no tokens and ignores `scope`.
    ///
    /// # Errors
    /// As [`Backbone::forward_t`].
    pub fn forward_scoped(
        &self,
        x: &Tensor,
        train: bool,
        scope: TokenScope,
    ) -> Result<Tensor, ModelError> {
        match (self, scope) {
            (Self::Vit(v), TokenScope::ClsOnly) => v.forward_cls(x, train),
            _ => self.forward_t(x, train),
        }
    }

    /// Feature width D.
    pub fn embed_dim(&self) -> i64 {
        match self {
            Self::Vit(v) => v.embed_dim(),
            Self::ResNet(r) => r.embed_dim(),
        }
    }

    /// The architecture's name for messages (`vit` with its width, or `resnet50`).
    pub fn describe(&self) -> String {
        match self {
            Self::Vit(v) => {
                let c = v.config();
                format!(
                    "ViT (width {}, depth {}, patch {})",
                    c.embed_dim, c.depth, c.patch_size
                )
            }
            Self::ResNet(r) => {
                let c = r.config();
                let stem = if c.cifar_stem {
                    " with the CIFAR stem"
                } else {
                    ""
                };
                format!("{}{stem}", c.name())
            }
        }
    }

    /// The ViT, when this is one.
    pub fn as_vit(&self) -> Option<&VisionTransformer> {
        match self {
            Self::Vit(v) => Some(v),
            Self::ResNet(_) => None,
        }
    }

    /// The ViT, mutably (e.g. to switch its position-embedding interpolation), when this is one.
    pub fn as_vit_mut(&mut self) -> Option<&mut VisionTransformer> {
        match self {
            Self::Vit(v) => Some(v),
            Self::ResNet(_) => None,
        }
    }

    /// The ViT, for what only a transformer has (`what`: "attention maps", "patch tokens", …).
    ///
    /// # Errors
    /// [`ModelError::NotAVit`] naming `what` and this backbone.
    pub fn vit(&self, what: &str) -> Result<&VisionTransformer, ModelError> {
        self.as_vit().ok_or_else(|| ModelError::NotAVit {
            what: what.to_string(),
            arch: self.describe(),
        })
    }
}
