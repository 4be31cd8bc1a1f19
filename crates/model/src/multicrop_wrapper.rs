//! Backbone + head over a list of crops of several resolutions (official
//! `utils.MultiCropWrapper`, paper §3.1 "multi-crop").

use crate::backbone::{Backbone, BackboneConfig, TokenScope};
use crate::error::ModelError;
use crate::head::DinoHead;
use dino_config::HeadConfig;
use tch::{nn, Tensor};

/// A student or teacher network: a [`Backbone`] (ViT or ResNet) at `backbone.*` and
/// [`DinoHead`] at `head.*`, so a [`nn::VarStore`] holding it has exactly the official
/// `MultiCropWrapper` state-dict keys (`backbone.blocks.0.attn.qkv.weight` or
/// `backbone.layer1.0.conv1.weight`, `head.mlp.0.weight`, `head.last_layer.weight_v`, …; a
/// ResNet has no `fc`, which the official wrapper replaces by identity).
#[derive(Debug)]
pub struct MultiCropWrapper {
    /// The ViT or ResNet.
    pub backbone: Backbone,
    /// The DINO head.
    pub head: DinoHead,
    /// Whether a ViT takes several resolution groups through its blocks together
    /// ([`crate::VisionTransformer::forward_groups`], `runtime.pack_crop_groups`) rather than
    /// one group after another. Off after [`MultiCropWrapper::new`].
    pub pack_groups: bool,
}

impl MultiCropWrapper {
    /// Builds backbone then head under `p / "backbone"` and `p / "head"` (the official order,
    /// so the same seed gives PyTorch's weights); the head's input width is the backbone's
    /// feature width (384 for ViT-S, 512 for resnet18/34, 2048 for resnet50).
    ///
    /// # Errors
    /// As [`Backbone::new`] and [`DinoHead::new`].
    pub fn new(
        p: &nn::Path,
        backbone: impl Into<BackboneConfig>,
        head: &HeadConfig,
    ) -> Result<Self, ModelError> {
        let backbone = Backbone::new(&(p / "backbone"), &backbone.into())?;
        let head = DinoHead::new(&(p / "head"), backbone.embed_dim(), head)?;
        Ok(Self {
            backbone,
            head,
            pack_groups: false,
        })
    }

    /// Backbone features `[ΣB, D]` (ViT CLS token, ResNet pooled map) of all crops, in input
    /// order. Consecutive crops of the same
    /// height and width are concatenated and go through the backbone in one pass (the official
    /// wrapper groups by width only; grouping by both sizes also handles non-square crops).
    /// Each crop tensor is `[B_i, 3, H_i, W_i]`; `B_i` may differ between tensors (e.g. the data
    /// loader's `[2B, 3, 224, 224]` globals and `[8B, 3, 96, 96]` locals).
    ///
    /// `scope` says which of the backbone's tokens are read ([`Backbone::forward_scoped`]); the
    /// features are CLS tokens either way.
    ///
    /// # Errors
    /// [`ModelError::BadCrops`] on an empty list; backbone errors.
    pub fn backbone_features(
        &self,
        crops: &[Tensor],
        train: bool,
        scope: TokenScope,
    ) -> Result<Tensor, ModelError> {
        if crops.is_empty() {
            return Err(ModelError::BadCrops("no crops".into()));
        }
        let groups = Self::resolution_groups(crops)
            .into_iter()
            .map(|group| match group.len() {
                1 => Ok(crops[group.start].shallow_clone()),
                _ => Tensor::f_cat(&crops[group], 0),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let (true, true, Some(vit)) =
            (self.pack_groups, groups.len() > 1, self.backbone.as_vit())
        {
            return vit.forward_groups(&groups, train, scope == TokenScope::ClsOnly);
        }
        let mut feats = Vec::new();
        for group in &groups {
            feats.push(self.backbone.forward_scoped(group, train, scope)?);
        }
        Ok(if feats.len() == 1 {
            feats.pop().expect("one group")
        } else {
            Tensor::f_cat(&feats, 0)?
        })
    }

    /// The runs of consecutive crop tensors of equal height and width, as index ranges into
    /// `crops`, in order: the groups [`MultiCropWrapper::backbone_features`] passes through the
    /// backbone together (a tensor that is not `[B, 3, H, W]` forms a group of its own). The
    /// data loader's crops `[globals, locals]` give two groups.
    pub fn resolution_groups(crops: &[Tensor]) -> Vec<std::ops::Range<usize>> {
        let hw = |t: &Tensor| {
            let s = t.size();
            (s.len() == 4).then(|| (s[2], s[3]))
        };
        let mut groups = Vec::new();
        let mut start = 0;
        while start < crops.len() {
            let key = hw(&crops[start]);
            let mut end = start + 1;
            while end < crops.len() && key.is_some() && hw(&crops[end]) == key {
                end += 1;
            }
            groups.push(start..end);
            start = end;
        }
        groups
    }

    /// Head logits `[ΣB, K]` of all crops, in input order: the backbone once per group of
    /// same-resolution crops, then the head once on all features. With a ResNet in training
    /// mode, BatchNorm's batch statistics are those of each group (the global crops together,
    /// the local crops together), as in the official wrapper.
    ///
    /// # Errors
    /// As [`MultiCropWrapper::backbone_features`].
    pub fn forward_t(&self, crops: &[Tensor], train: bool) -> Result<Tensor, ModelError> {
        self.forward_modes(crops, train, train, TokenScope::AllTokens)
    }

    /// [`MultiCropWrapper::forward_t`] with the backbone and the head each in its own mode, and
    /// only the backbone tokens `scope` says are read.
    ///
    /// - `backbone_train = false` runs the backbone as in evaluation (a ResNet's BatchNorm
    ///   normalises with its running statistics and leaves them unchanged, a ViT has no
    ///   stochastic depth) while the head trains, as `schedule.freeze_backbone_epochs` needs
    ///   (torchvision's `backbone.eval()` on a frozen feature extractor). Gradients still flow
    ///   through the backbone to the input; whether its weights are updated is the optimizer's
    ///   business.
    /// - `scope`: the training methods pass [`TokenScope::ClsOnly`] under
    ///   `model.cls_only_last_block`, since the DINO head reads only CLS.
    ///
    /// # Errors
    /// As [`MultiCropWrapper::backbone_features`].
    pub fn forward_modes(
        &self,
        crops: &[Tensor],
        backbone_train: bool,
        head_train: bool,
        scope: TokenScope,
    ) -> Result<Tensor, ModelError> {
        let f = self.backbone_features(crops, backbone_train, scope)?;
        self.head.forward_t(&f, head_train)
    }
}
