//! torchvision's ResNets (He et al. 2016; `torchvision/models/resnet.py`, the v1.5 bottleneck
//! with its stride on the 3×3 conv) as the official `main_dino.py` uses them for
//! `--arch resnet50`: `fc` replaced by identity (official `MultiCropWrapper`), so the output is
//! the globally average-pooled `layer4` feature, `[B, 512]` (resnet18/34) or `[B, 2048]`
//! (resnet50).
//!
//! Variable names are torchvision's state-dict keys without `fc` (`conv1.weight`,
//! `bn1.running_mean`, `layer1.0.conv2.weight`, `layer2.0.downsample.0.weight`,
//! `layer2.0.downsample.1.num_batches_tracked`, …), which is exactly the layout of the official
//! `dino_resnet50_pretrain.pth`. Initialisation is torchvision's, drawn in its order (so
//! `tch::manual_seed(s)` gives `torch.manual_seed(s); resnetNN()`'s weights bit for bit, checked
//! in `tests/resnet_parity.rs`): PyTorch's default conv init at construction (the downsample
//! conv of a stage before its first block, as `_make_layer` builds it), the 1000-class `fc`'s
//! draws (made and thrown away, to keep the generator in step), then `kaiming_normal_(mode =
//! "fan_out", nonlinearity = "relu")` over every conv in module order; BatchNorm weight 1,
//! bias 0.
//!
//! The optional CIFAR stem (`model.cifar_stem`) replaces the 7×7 stride-2 `conv1` and the
//! max-pool by a 3×3 stride-1 `conv1` and nothing, for 32-px images; the names are unchanged.

use crate::error::ModelError;
use crate::init::{default_bias_bound, default_weight, kaiming_uniform_a_sqrt5_bound};
use crate::layers::BatchNorm;
use dino_config::{Arch, ModelConfig};
use tch::{nn, Kind, TchError, Tensor};

/// Classes of the torchvision classifier whose `fc` the official code discards; its init still
/// draws from the generator.
const TORCHVISION_CLASSES: i64 = 1000;

/// The two residual block kinds of torchvision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// `BasicBlock`: 3×3, 3×3; expansion 1 (resnet18, resnet34).
    Basic,
    /// `Bottleneck`: 1×1, 3×3 (strided), 1×1 to 4× the width; expansion 4 (resnet50).
    Bottleneck,
}

impl BlockKind {
    /// Output channels over the stage width (`block.expansion`).
    pub fn expansion(self) -> i64 {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The shape of a [`ResNet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResNetConfig {
    /// Block kind.
    pub block: BlockKind,
    /// Blocks in `layer1` … `layer4`.
    pub layers: [usize; 4],
    /// 3×3 stride-1 `conv1` and no max-pool (for 32-px images) instead of torchvision's stem.
    pub cifar_stem: bool,
}

impl ResNetConfig {
    /// torchvision `resnet18`.
    pub fn resnet18() -> Self {
        Self::new(BlockKind::Basic, [2, 2, 2, 2])
    }

    /// torchvision `resnet34`.
    pub fn resnet34() -> Self {
        Self::new(BlockKind::Basic, [3, 4, 6, 3])
    }

    /// torchvision `resnet50`.
    pub fn resnet50() -> Self {
        Self::new(BlockKind::Bottleneck, [3, 4, 6, 3])
    }

    fn new(block: BlockKind, layers: [usize; 4]) -> Self {
        Self {
            block,
            layers,
            cifar_stem: false,
        }
    }

    /// The same network with the CIFAR stem on or off.
    pub fn with_cifar_stem(mut self, on: bool) -> Self {
        self.cifar_stem = on;
        self
    }

    /// The ResNet a `[model]` section names, or `None` for a ViT arch.
    pub fn from_model(m: &ModelConfig) -> Option<Self> {
        let cfg = match m.arch {
            Arch::Resnet18 => Self::resnet18(),
            Arch::Resnet34 => Self::resnet34(),
            Arch::Resnet50 => Self::resnet50(),
            _ => return None,
        };
        Some(cfg.with_cifar_stem(m.cifar_stem))
    }

    /// Width of the pooled feature: 512 · expansion (official `student.fc.weight.shape[1]`).
    pub fn embed_dim(&self) -> i64 {
        512 * self.block.expansion()
    }

    /// The torchvision name (`resnet18`, `resnet34`, `resnet50`), or `resnet` for another shape.
    pub fn name(&self) -> &'static str {
        match (self.block, self.layers) {
            (BlockKind::Basic, [2, 2, 2, 2]) => "resnet18",
            (BlockKind::Basic, [3, 4, 6, 3]) => "resnet34",
            (BlockKind::Bottleneck, [3, 4, 6, 3]) => "resnet50",
            _ => "resnet",
        }
    }
}

/// A bias-free `nn.Conv2d` with "same" padding (k / 2), as torchvision's `conv1x1`, `conv3x3`
/// and the 7×7 stem.
#[derive(Debug)]
struct Conv {
    weight: Tensor,
    stride: i64,
    padding: i64,
}

impl Conv {
    /// PyTorch's default Conv2d init (`kaiming_uniform_(a = √5)`), drawn now.
    fn new(p: &nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> Result<Self, TchError> {
        Ok(Self {
            weight: default_weight(p, "weight", &[cout, cin, k, k])?,
            stride,
            padding: k / 2,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_conv2d(
            &self.weight,
            None::<Tensor>,
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            1,
        )
    }

    /// torchvision's `kaiming_normal_(w, mode = "fan_out", nonlinearity = "relu")`:
    /// N(0, √2 / √(out · kh · kw)), with the f64 steps of `torch.nn.init`.
    fn init_kaiming_normal_fan_out(&mut self) -> Result<(), TchError> {
        let s = self.weight.size();
        let fan_out = s[0] * s[2] * s[3];
        let std = 2f64.sqrt() / (fan_out as f64).sqrt();
        tch::no_grad(|| self.weight.f_normal_(0.0, std).map(|_| ()))
    }
}

/// One conv and the BatchNorm after it (`convN` / `bnN`, or `downsample.0` / `downsample.1`).
#[derive(Debug)]
struct ConvBn {
    conv: Conv,
    bn: BatchNorm,
}

impl ConvBn {
    fn new(
        conv_p: &nn::Path,
        bn_p: &nn::Path,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
    ) -> Result<Self, TchError> {
        let conv = Conv::new(conv_p, cin, cout, k, stride)?;
        let bn = BatchNorm::new(bn_p, cout)?;
        Ok(Self { conv, bn })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        self.bn.forward(&self.conv.forward(x)?, train)
    }
}

/// A residual block: its convs in order (ReLU between them), plus the shortcut, then ReLU.
#[derive(Debug)]
struct ResBlock {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl ResBlock {
    /// torchvision's block at `p` (`layerI.J`), its downsample already built by the caller.
    fn new(
        p: &nn::Path,
        kind: BlockKind,
        inplanes: i64,
        planes: i64,
        stride: i64,
        downsample: Option<ConvBn>,
    ) -> Result<Self, TchError> {
        // (in, out, kernel, stride) of conv1, conv2[, conv3].
        let shapes: Vec<(i64, i64, i64, i64)> = match kind {
            BlockKind::Basic => vec![(inplanes, planes, 3, stride), (planes, planes, 3, 1)],
            BlockKind::Bottleneck => vec![
                (inplanes, planes, 1, 1),
                (planes, planes, 3, stride),
                (planes, planes * 4, 1, 1),
            ],
        };
        let convs = shapes
            .into_iter()
            .enumerate()
            .map(|(i, (cin, cout, k, s))| {
                let n = i + 1;
                ConvBn::new(
                    &(p / format!("conv{n}")),
                    &(p / format!("bn{n}")),
                    cin,
                    cout,
                    k,
                    s,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { convs, downsample })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        let mut h = x.shallow_clone();
        let last = self.convs.len() - 1;
        for (i, cb) in self.convs.iter().enumerate() {
            h = cb.forward(&h, train)?;
            if i < last {
                h = h.f_relu()?;
            }
        }
        let identity = match &self.downsample {
            Some(d) => d.forward(x, train)?,
            None => x.shallow_clone(),
        };
        Ok(h.f_add(&identity)?.f_relu()?)
    }

    /// The convs in torchvision's module order: the block's own, then the downsample's.
    fn convs_mut(&mut self) -> impl Iterator<Item = &mut Conv> {
        self.convs
            .iter_mut()
            .chain(self.downsample.as_mut())
            .map(|cb| &mut cb.conv)
    }
}

/// A torchvision ResNet without its classifier. Input: float `[B, 3, H, W]`, already
/// normalised, any size at least 1 px after the stem's strides (32 for torchvision's stem, 8
/// for the CIFAR one); output: the pooled feature `[B, embed_dim]`.
#[derive(Debug)]
pub struct ResNet {
    cfg: ResNetConfig,
    stem: ConvBn,
    layers: Vec<Vec<ResBlock>>,
}

impl ResNet {
    /// Creates the variables under `p` and initialises them as torchvision does, drawing from
    /// libtorch's default generator in torchvision's order (see the module docs).
    ///
    /// # Errors
    /// [`ModelError::Config`] for a stage without blocks; [`ModelError::Torch`].
    pub fn new(p: &nn::Path, cfg: &ResNetConfig) -> Result<Self, ModelError> {
        if cfg.layers.contains(&0) {
            return Err(ModelError::Config(format!(
                "every ResNet stage needs a block, got {:?}",
                cfg.layers
            )));
        }
        let (k, s) = if cfg.cifar_stem { (3, 1) } else { (7, 2) };
        let stem = ConvBn::new(&(p / "conv1"), &(p / "bn1"), 3, 64, k, s)?;
        let exp = cfg.block.expansion();
        let mut inplanes = 64;
        let mut layers = Vec::with_capacity(4);
        for (i, (&n, planes)) in cfg.layers.iter().zip([64, 128, 256, 512]).enumerate() {
            let lp = p / format!("layer{}", i + 1);
            let stride = if i == 0 { 1 } else { 2 };
            let mut blocks = Vec::with_capacity(n);
            for j in 0..n {
                let bp = &lp / j;
                let block = if j == 0 {
                    // _make_layer builds the downsample before the block.
                    let downsample = if stride != 1 || inplanes != planes * exp {
                        let dp = &bp / "downsample";
                        Some(ConvBn::new(
                            &(&dp / 0),
                            &(&dp / 1),
                            inplanes,
                            planes * exp,
                            1,
                            stride,
                        )?)
                    } else {
                        None
                    };
                    ResBlock::new(&bp, cfg.block, inplanes, planes, stride, downsample)?
                } else {
                    ResBlock::new(&bp, cfg.block, inplanes, planes, 1, None)?
                };
                inplanes = planes * exp;
                blocks.push(block);
            }
            layers.push(blocks);
        }
        // torchvision builds `fc = Linear(512 · expansion, 1000)` last; the official code then
        // replaces it by identity. Its draws are made and dropped so the generator stays in step.
        tch::no_grad(|| -> Result<(), TchError> {
            let d = cfg.embed_dim();
            let opts = (Kind::Float, p.device());
            let b = kaiming_uniform_a_sqrt5_bound(d);
            let _ = Tensor::f_empty([TORCHVISION_CLASSES, d], opts)?.f_uniform_(-b, b)?;
            let b = default_bias_bound(d);
            let _ = Tensor::f_empty([TORCHVISION_CLASSES], opts)?.f_uniform_(-b, b)?;
            Ok(())
        })?;
        let mut net = Self {
            cfg: cfg.clone(),
            stem,
            layers,
        };
        // `for m in self.modules()`: conv1, then each block's convs and its downsample's.
        net.stem.conv.init_kaiming_normal_fan_out()?;
        for block in net.layers.iter_mut().flatten() {
            for conv in block.convs_mut() {
                conv.init_kaiming_normal_fan_out()?;
            }
        }
        Ok(net)
    }

    /// The shape this network was built with.
    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }

    /// Width of the pooled feature.
    pub fn embed_dim(&self) -> i64 {
        self.cfg.embed_dim()
    }

    /// The `layer4` feature map `[B, 512 · expansion, h, w]` (before pooling). `train` selects
    /// BatchNorm's batch statistics and updates the running ones.
    ///
    /// # Errors
    /// [`ModelError::BadInput`] unless `x` is a float `[B, 3, H, W]`; [`ModelError::Torch`]
    /// (e.g. an image too small for the strides).
    pub fn forward_map(&self, x: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        let size = x.size();
        if size.len() != 4 || size[1] != 3 || !crate::init::is_float(x.kind()) {
            return Err(ModelError::BadInput {
                shape: size,
                kind: x.kind(),
            });
        }
        let mut h = self.stem.forward(x, train)?.f_relu()?;
        if !self.cfg.cifar_stem {
            h = h.f_max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)?;
        }
        for block in self.layers.iter().flatten() {
            h = block.forward(&h, train)?;
        }
        Ok(h)
    }

    /// The pooled feature `[B, embed_dim]` (torchvision's `forward` with `fc = Identity`, the
    /// official DINO backbone output).
    ///
    /// # Errors
    /// As [`ResNet::forward_map`].
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        Ok(self
            .forward_map(x, train)?
            .f_adaptive_avg_pool2d([1, 1])?
            .f_flatten(1, -1)?)
    }
}
