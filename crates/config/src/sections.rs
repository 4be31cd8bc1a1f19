//! The config sections. Doc comments are the user documentation of each key (shown by
//! `dino config show` readers and the README); "official" means `facebookresearch/dino` @ 7c446df.

use serde::{Deserialize, Serialize};

/// Dataset layout on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// Detect from the path: CIFAR-10 `*.bin` batches, gzipped IDX files, class folders, or a
    /// flat folder of images.
    #[default]
    Auto,
    /// `root/<class>/<image>`, classes sorted, label = class index (torchvision `ImageFolder`).
    ImageFolder,
    /// A folder of unlabeled images (label 0), searched recursively.
    Flat,
    /// CIFAR-10 binary version: `data_batch_1..5.bin` / `test_batch.bin` (1 label byte + 3072
    /// bytes of R, G, B 32x32 planes per record).
    Cifar10Bin,
    /// The MNIST family's gzipped IDX files (`*-images-idx3-ubyte.gz` + `*-labels-idx1-ubyte.gz`).
    Idx,
}

/// `[data]`: where images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Training images (official `--data_path`). A folder, a CIFAR-10 batch folder, or an IDX
    /// folder. Empty means "give it with `--data`".
    pub path: String,
    /// Layout of `path` (see [`DataFormat`]).
    pub format: DataFormat,
    /// Which split to read for formats that hold several in one folder (`train` or `test` for
    /// CIFAR-10 binary batches and IDX files; ignored for folders).
    pub split: String,
    /// Fraction of samples that may fail to decode before the run stops with an error. Failed
    /// samples are skipped, counted and replaced, so the batch shape never changes. Not in the
    /// official code (its `ImageFolder` crashes on the first bad file).
    pub max_failed_fraction: f64,
    /// Images whose header declares more pixels than this are rejected before decoding
    /// (decompression bombs). Default: Pillow's `DecompressionBombError` limit, 2 x 89,478,485.
    pub max_image_pixels: u64,
    /// Drop the last incomplete batch of an epoch (official `DataLoader(drop_last=True)`).
    /// With `false` and a ResNet (or `head.use_bn`), a last batch so small that some
    /// BatchNorm would see one value per channel (e.g. one image whose local crops are 1 × 1 at
    /// `layer4`) is refused before training starts, naming the cure; the dataset size fixes it,
    /// since undecodable images are replaced, never dropped. Should a BatchNorm still get one
    /// value per channel at run time, the step stops with an error naming the layer, the step
    /// and the cure, and the latest checkpoint is left as it was (not skipped and counted: a
    /// step without that batch's BatchNorm statistics would silently differ from the
    /// configured one).
    pub drop_last: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            path: String::new(),
            format: DataFormat::Auto,
            split: "train".into(),
            max_failed_fraction: 0.01,
            max_image_pixels: 178_956_970,
            drop_last: true,
        }
    }
}

/// `[augmentation]`: DINO multi-crop (`DataAugmentationDINO` in `main_dino.py`). Per image the
/// output is `[global_1, global_2, local_1 .. local_n]`, each view: RandomResizedCrop (bicubic,
/// Pillow's kernel) → horizontal flip → ColorJitter (w.p. `color_jitter_p`) → grayscale →
/// Gaussian blur → solarize (global 2 only) → normalize.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentationConfig {
    /// Side of the 2 global crops in pixels (official 224).
    pub global_crops_size: u32,
    /// RandomResizedCrop area range of the global crops (official `--global_crops_scale 0.4 1.`).
    pub global_crops_scale: [f64; 2],
    /// Number of local crops (official `--local_crops_number 8`); 0 disables multi-crop.
    pub local_crops_number: usize,
    /// Side of the local crops in pixels (official 96).
    pub local_crops_size: u32,
    /// RandomResizedCrop area range of the local crops (official `--local_crops_scale 0.05 0.4`).
    pub local_crops_scale: [f64; 2],
    /// RandomResizedCrop aspect-ratio range, sampled log-uniformly (torchvision default 3/4, 4/3).
    pub crop_ratio: [f64; 2],
    /// Horizontal flip probability (official `RandomHorizontalFlip(p=0.5)`).
    pub flip_p: f64,
    /// Probability of applying ColorJitter (official `RandomApply([ColorJitter], p=0.8)`).
    pub color_jitter_p: f64,
    /// ColorJitter brightness: factor ~ U(1 - b, 1 + b) (official 0.4).
    pub brightness: f64,
    /// ColorJitter contrast: factor ~ U(1 - c, 1 + c) (official 0.4).
    pub contrast: f64,
    /// ColorJitter saturation: factor ~ U(1 - s, 1 + s) (official 0.2).
    pub saturation: f64,
    /// ColorJitter hue: shift ~ U(-h, h) turns (official 0.1).
    pub hue: f64,
    /// RandomGrayscale probability, ITU-R 601-2 luma (official 0.2).
    pub grayscale_p: f64,
    /// Gaussian blur probability on global crop 1 (official `GaussianBlur(1.0)`).
    pub blur_global1_p: f64,
    /// Gaussian blur probability on global crop 2 (official `GaussianBlur(0.1)`).
    pub blur_global2_p: f64,
    /// Gaussian blur probability on each local crop (official `GaussianBlur(p=0.5)`).
    pub blur_local_p: f64,
    /// Blur sigma range in pixels, sigma ~ U(min, max) (official `radius_min 0.1`, `radius_max 2.`).
    pub blur_sigma: [f64; 2],
    /// Solarization probability on global crop 2 only (official `Solarization(0.2)`).
    pub solarize_p: f64,
    /// Solarization threshold: values >= t become 255 - v (Pillow `ImageOps.solarize` default 128).
    pub solarize_threshold: u8,
    /// Per-channel normalization mean, RGB, in [0, 1] units (ImageNet).
    pub mean: [f64; 3],
    /// Per-channel normalization std, RGB, in [0, 1] units (ImageNet).
    pub std: [f64; 3],
}

impl Default for AugmentationConfig {
    fn default() -> Self {
        Self {
            global_crops_size: 224,
            global_crops_scale: [0.4, 1.0],
            local_crops_number: 8,
            local_crops_size: 96,
            local_crops_scale: [0.05, 0.4],
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            flip_p: 0.5,
            color_jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.2,
            hue: 0.1,
            grayscale_p: 0.2,
            blur_global1_p: 1.0,
            blur_global2_p: 0.1,
            blur_local_p: 0.5,
            blur_sigma: [0.1, 2.0],
            solarize_p: 0.2,
            solarize_threshold: 128,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }
}

/// The backbone: a named ViT size of the official `vision_transformer.py`, or one of the
/// torchvision ResNets the official `main_dino.py` accepts through `--arch` (any name of
/// `torchvision.models`; these three are the ones built here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// embed_dim 192, depth 12, heads 3.
    VitTiny,
    /// embed_dim 384, depth 12, heads 6 (official default `--arch vit_small`).
    VitSmall,
    /// embed_dim 768, depth 12, heads 12.
    VitBase,
    /// Sizes from `embed_dim`, `depth` and `num_heads`.
    Custom,
    /// torchvision `resnet18`: basic blocks [2, 2, 2, 2], 512-wide pooled feature.
    Resnet18,
    /// torchvision `resnet34`: basic blocks [3, 4, 6, 3], 512-wide pooled feature.
    Resnet34,
    /// torchvision `resnet50`: bottleneck blocks [3, 4, 6, 3], 2048-wide pooled feature.
    Resnet50,
}

impl Arch {
    /// (embed_dim, depth, num_heads) of a named ViT size; `None` for `Custom` and the ResNets.
    pub fn dims(self) -> Option<(usize, usize, usize)> {
        match self {
            Arch::VitTiny => Some((192, 12, 3)),
            Arch::VitSmall => Some((384, 12, 6)),
            Arch::VitBase => Some((768, 12, 12)),
            Arch::Custom | Arch::Resnet18 | Arch::Resnet34 | Arch::Resnet50 => None,
        }
    }

    /// True for the torchvision ResNets (no patches, no tokens, no attention).
    pub fn is_resnet(self) -> bool {
        matches!(self, Arch::Resnet18 | Arch::Resnet34 | Arch::Resnet50)
    }

    /// The name as written in a config and as the official `--arch` (`vit_small`, `resnet50`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::VitTiny => "vit_tiny",
            Arch::VitSmall => "vit_small",
            Arch::VitBase => "vit_base",
            Arch::Custom => "custom",
            Arch::Resnet18 => "resnet18",
            Arch::Resnet34 => "resnet34",
            Arch::Resnet50 => "resnet50",
        }
    }
}

/// `[model]`: the backbone, a Vision Transformer (`vision_transformer.py`) or a torchvision
/// ResNet. The ViT keys (`patch_size` … `layer_norm_eps`, `cls_only_last_block`) are ignored
/// by a ResNet, and `cifar_stem` by a ViT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Named size (official `--arch vit_small`); `custom` uses the three keys below;
    /// `resnet18`, `resnet34`, `resnet50` are torchvision's ResNets (official `--arch resnet50`).
    pub arch: Arch,
    /// Patch side in pixels (official `--patch_size 16`).
    pub patch_size: usize,
    /// Token width for `arch = "custom"` (ignored otherwise).
    pub embed_dim: usize,
    /// Number of blocks for `arch = "custom"`.
    pub depth: usize,
    /// Attention heads for `arch = "custom"`; must divide `embed_dim`.
    pub num_heads: usize,
    /// MLP hidden width as a multiple of embed_dim (official 4).
    pub mlp_ratio: f64,
    /// Bias in the fused qkv projection (official `qkv_bias=True`).
    pub qkv_bias: bool,
    /// Stochastic depth rate of the last block, linear from 0 over the blocks; student only
    /// (official `--drop_path_rate 0.1`).
    pub drop_path_rate: f64,
    /// Image side the position-embedding table is built for, (img_size / patch_size)^2 patches
    /// (official `img_size=[224]`); other sizes are interpolated bicubically.
    pub img_size: usize,
    /// LayerNorm epsilon (official named configs: 1e-6).
    pub layer_norm_eps: f64,
    /// ResNets only: the CIFAR stem for 32-px images (a 3×3 stride-1 `conv1` and no max-pool,
    /// as in He et al. 2016 §4.2 and the CIFAR recipes of SimCLR and solo-learn) instead of
    /// torchvision's 7×7 stride-2 `conv1` and 3×3 stride-2 max-pool, which leave a 32-px image
    /// 1×1 at `layer4`. Not in the official code (ImageNet only); default false.
    pub cifar_stem: bool,
    /// Training runs the last ViT block for the CLS token only: its query, attention output,
    /// projection, residual, MLP and the final LayerNorm (LayerNorm 1, keys and values still
    /// for every token), because the DINO loss and the supervised classifier read nothing else.
    /// The same math as the full block up to float rounding (loss and gradients within 1e-5 of
    /// the full path, `crates/model/tests/cls_only_block.rs`, same stochastic-depth draws), with
    /// less work: the CIFAR-10 preset's step 1.23-1.35x faster, ViT-S/16 at small crops 1.03x
    /// (docs/BENCHMARKS.md, "CLS-only last block and the model forward"). `false` runs the full
    /// last block, bit for bit the step of the binaries before this key. Evaluation, attention maps, patch
    /// tokens and video always run the full block. Not an official hyper-parameter (an
    /// implementation choice: the official code computes every token and drops all but CLS);
    /// ignored by a ResNet. Default true.
    pub cls_only_last_block: bool,
    /// Learned register tokens (Darcet et al., "Vision Transformers Need Registers", ICLR 2024),
    /// placed right after CLS with no position embedding (dinov2
    /// `models/vision_transformer.py`, `prepare_tokens_with_masks`), left out of attention
    /// maps, patch features, video segmentation and token export. Default 0 (DINO v1, and
    /// dinov2 `ssl_default_config.yaml` `student.num_register_tokens: 0`); the DINOv2 `_reg`
    /// backbones use 4 (`hub/backbones.py`, `dinov2_vits14_reg`). ViT only.
    pub num_register_tokens: usize,
    /// LayerScale (Touvron et al. 2021): a learned per-channel gain `gamma` on both residual
    /// branches of every block, initialised to this value (dinov2 `layers/layer_scale.py`,
    /// `layers/block.py` `ls1`, `ls2`). 0 turns it off, as dinov2's `init_values=None or 0 =>
    /// no layerscale` (`models/vision_transformer.py`); default 0 (DINO v1). DINOv2 trains with
    /// 1e-5 (`ssl_default_config.yaml` `student.layerscale: 1.0e-05`). ViT only.
    pub layerscale_init: f64,
    /// The blocks' feed-forward network: `"mlp"` (Linear → GELU → Linear, DINO v1 and dinov2
    /// `student.ffn_layer: "mlp"`, the default) or `"swiglu"` (dinov2 `layers/swiglu_ffn.py`
    /// `SwiGLUFFNFused`: `w3(silu(x₁) · x₂)` with `[x₁, x₂] = w12(x)`, hidden width
    /// `(int(embed_dim · mlp_ratio · 2/3) + 7) // 8 · 8`; the ViT-g/14 recipe,
    /// `configs/train/vitg14.yaml` `ffn_layer: swiglufused`). ViT only.
    pub ffn: Ffn,
    /// The attention kernel of the ViT blocks in training and feature extraction: `"sdpa"`
    /// (libtorch's fused `scaled_dot_product_attention`, default, as the binaries before this
    /// key) or `"explicit"` (the official code's `q @ kᵀ`, softmax, `@ v`). The same math up to
    /// float rounding (outputs and gradients within 1e-5, `crates/model/src/attention.rs`);
    /// attention maps are explicit either way (they need the probabilities). Not an official
    /// hyper-parameter: an implementation choice, for speed. ViT only.
    pub attention: AttentionKernel,
    /// How the position table is resized for a patch grid other than its own (dinov2
    /// `models/vision_transformer.py` `interpolate_pos_encoding`): `"exact_size"` (bicubic to
    /// the grid's size, the default, as before this key), `"scale_factor"` (bicubic with scale
    /// factors `(g + 0.1) / g₀`: DINO v1's `interpolate_pos_encoding` and DINOv2's plain models,
    /// `interpolate_offset: 0.1`, `interpolate_antialias: false`) or `"antialias"` (antialiased
    /// bicubic to the grid's size: DINOv2's register models, `hub/backbones.py` `_reg`:
    /// `interpolate_antialias=True, interpolate_offset=0.0`). ViT only.
    pub pos_interpolation: PosInterpolation,
}

/// `model.ffn`: the feed-forward network of each ViT block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Ffn {
    /// `fc1` → GELU → `fc2`, hidden `embed_dim · mlp_ratio` (DINO v1; default).
    #[default]
    Mlp,
    /// DINOv2's fused SwiGLU: `w12` → SiLU-gated product → `w3`, hidden width rounded to 8.
    Swiglu,
}

/// `model.attention`: how a ViT block computes `softmax(Q·Kᵀ · head_dim^−0.5) · V` in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKernel {
    /// libtorch's fused `scaled_dot_product_attention` (flash / memory-efficient kernels; no
    /// `[N, N]` probability tensor kept for backward). Default: the fast path on GPUs and for
    /// long token sequences.
    #[default]
    Sdpa,
    /// The official code's explicit attention: `q @ kᵀ · scale`, softmax, `@ v`, as three ops.
    /// Faster on a CPU at the few tokens of the CPU presets (16-17): the CIFAR-10 preset's
    /// student forward + backward 1.13-1.23x faster on a 2-core AMD EPYC Zen 3
    /// (docs/BENCHMARKS.md, "The step on an AVX2-only CPU").
    Explicit,
}

/// `model.pos_interpolation`: how the position table is resized to another patch grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PosInterpolation {
    /// Bicubic to the explicit grid size (default).
    #[default]
    ExactSize,
    /// Bicubic with scale factors `(g + 0.1) / g₀` (DINO v1; DINOv2 `interpolate_offset: 0.1`).
    ScaleFactor,
    /// Antialiased bicubic to the explicit grid size (DINOv2 register models, offset 0).
    Antialias,
}

impl ModelConfig {
    /// (embed_dim, depth, num_heads) after resolving `arch`.
    pub fn dims(&self) -> (usize, usize, usize) {
        self.arch
            .dims()
            .unwrap_or((self.embed_dim, self.depth, self.num_heads))
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: Arch::VitSmall,
            patch_size: 16,
            embed_dim: 384,
            depth: 12,
            num_heads: 6,
            mlp_ratio: 4.0,
            qkv_bias: true,
            drop_path_rate: 0.1,
            img_size: 224,
            layer_norm_eps: 1e-6,
            cifar_stem: false,
            cls_only_last_block: true,
            num_register_tokens: 0,
            layerscale_init: 0.0,
            ffn: Ffn::Mlp,
            attention: AttentionKernel::Sdpa,
            pos_interpolation: PosInterpolation::ExactSize,
        }
    }
}

/// `[head]`: the DINO projection head (`DINOHead`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadConfig {
    /// Number of prototypes K, the softmax width (official `--out_dim 65536`).
    pub out_dim: usize,
    /// Hidden width of the MLP (official 2048).
    pub hidden_dim: usize,
    /// Width of the L2-normalized bottleneck (official 256).
    pub bottleneck_dim: usize,
    /// Number of Linear layers in the MLP (official 3).
    pub nlayers: usize,
    /// BatchNorm after each hidden Linear (official `--use_bn_in_head False`).
    pub use_bn: bool,
    /// Fix the weight-norm gain of the last layer at 1 (official `--norm_last_layer True`).
    pub norm_last_layer: bool,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            out_dim: 65536,
            hidden_dim: 2048,
            bottleneck_dim: 256,
            nlayers: 3,
            use_bn: false,
            norm_last_layer: true,
        }
    }
}

/// `[loss]`: `DINOLoss`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Student softmax temperature (official 0.1).
    pub student_temp: f64,
    /// Teacher temperature after warm-up (official `--teacher_temp 0.04`).
    pub teacher_temp: f64,
    /// Teacher temperature at epoch 0 (official `--warmup_teacher_temp 0.04`).
    pub warmup_teacher_temp: f64,
    /// Epochs of linear teacher-temperature warm-up (official code default 0; the paper's
    /// boosted setting uses 0.04 → 0.07 over 30).
    pub warmup_teacher_temp_epochs: usize,
    /// EMA momentum of the teacher center (official 0.9). Used by `centering = "center"` only.
    pub center_momentum: f64,
    /// How the teacher's logits are turned into targets (see [`Centering`]): `"center"` (DINO
    /// v1, default) or `"sinkhorn_knopp"` (DINOv2: `train.centering: sinkhorn_knopp` in
    /// `dinov2/configs/train/vitl14.yaml` and `vitg14.yaml`, the paper's recipe, Sec. 4;
    /// `ssl_default_config.yaml` itself defaults to `"centering"`).
    pub centering: Centering,
    /// Weight of the KoLeo regularizer on the student's backbone CLS tokens of the two global
    /// crops (DINOv2, Sablayrolles et al. 2019): `weight · (KoLeo(crop 1) + KoLeo(crop 2))`,
    /// added to the DINO loss. 0 (default) = DINO v1, no term. DINOv2: 0.1
    /// (`dino.koleo_loss_weight` in `dinov2/configs/ssl_default_config.yaml`). Computed per
    /// process over its own batch, as the official code (see `crates/train/src/loss/koleo.rs`).
    pub koleo_weight: f64,
}

/// `loss.centering`: how the teacher's head outputs become its target distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Centering {
    /// DINO v1: `softmax((t − center) / τ_t)` with the EMA center (official `DINOLoss`).
    #[default]
    Center,
    /// DINOv2's `sinkhorn_knopp_teacher`: 3 Sinkhorn-Knopp iterations on `exp(t / τ_t)` over the
    /// global batch (sums all-reduced across processes). The EMA center is then neither used nor
    /// updated; it stays in the checkpoint as it was.
    SinkhornKnopp,
}

impl Centering {
    /// The TOML spelling (`center`, `sinkhorn_knopp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Center => "center",
            Self::SinkhornKnopp => "sinkhorn_knopp",
        }
    }
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            student_temp: 0.1,
            teacher_temp: 0.04,
            warmup_teacher_temp: 0.04,
            warmup_teacher_temp_epochs: 0,
            center_momentum: 0.9,
            centering: Centering::Center,
            koleo_weight: 0.0,
        }
    }
}

/// The optimizer of the student (official `--optimizer adamw|sgd|lars`). All three use DINO's
/// two parameter groups (weight decay from the schedule on the regularized group, none on biases
/// and 1-D parameters), the cosine lr and weight-decay schedules, per-parameter clipping and the
/// frozen last layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// `torch.optim.AdamW` with `optim.betas` and `optim.eps` (official default, for ViTs).
    #[default]
    Adamw,
    /// `torch.optim.SGD` with momentum `optim.momentum` (official `SGD(params_groups, lr=0,
    /// momentum=0.9)`); the official ResNet-50 recipe uses it with lr 0.03.
    Sgd,
    /// The official `utils.LARS` (Barlow Twins' LARS; "to use with convnet and large batches"):
    /// momentum `optim.momentum`, trust coefficient `optim.lars_eta`; parameters with one
    /// dimension (biases, norms) get neither weight decay nor the layer-wise adaptation.
    Lars,
}

impl OptimizerKind {
    /// The TOML spelling (`adamw`, `sgd`, `lars`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Adamw => "adamw",
            Self::Sgd => "sgd",
            Self::Lars => "lars",
        }
    }
}

impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[optim]`: optimizer, batch and epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// `adamw`, `sgd` or `lars` (see [`OptimizerKind`]; official `--optimizer adamw`).
    pub optimizer: OptimizerKind,
    /// Images per micro-batch on this process: what the data loader produces and one
    /// forward/backward takes (official `--batch_size_per_gpu 64`). An optimizer step sees
    /// `batch_size · accum_steps · world_size` images (the effective batch, which the lr rule
    /// uses).
    pub batch_size: usize,
    /// Gradient accumulation: micro-batches per optimizer step (≥ 1; 1 = none, official).
    /// A step over `accum_steps` micro-batches equals one step on the `accum_steps`-times larger
    /// batch: each micro-batch's loss is scaled by `1 / accum_steps`, every micro-batch of a
    /// window uses the same center and the center is updated once from all of them, and clipping,
    /// the optimizer, the EMA, the logged record and checkpoints happen once per optimizer step.
    /// Schedules count optimizer steps: an epoch has `⌊micro-batches / accum_steps⌋` of them and
    /// its last `micro-batches mod accum_steps` micro-batches are not used (as `drop_last`).
    /// Checkpoints are taken at optimizer-step boundaries only; `--max-steps` counts optimizer
    /// steps. DINO only (the supervised objective refuses values above 1).
    pub accum_steps: usize,
    /// Forward and backward the student one crop group at a time (one view of B crops at a time:
    /// global view 1, global view 2, then each local view), with the teacher targets computed once: the DINO loss is a sum over
    /// (teacher view, student view) pairs, so each group's terms are back-propagated as soon as
    /// its forward is done and only one group's activations are alive: lower peak memory, the
    /// same gradient as the joint backward up to float rounding (stochastic-depth masks are
    /// drawn per forward, so with `model.drop_path_rate > 0` they differ from the joint
    /// forward's, with the same distribution). DINOv2's terms split the same way: a global
    /// view's KoLeo and its masked patches' share of the iBOT term go into that view's
    /// backward. DINO only, and not with `head.use_bn`; false: one joint backward (official).
    pub backward_per_crop_group: bool,
    /// Training epochs (official `--epochs 100`).
    pub epochs: usize,
    /// Peak learning rate at batch 256; the rate used is `lr * global_batch / 256`
    /// (official `--lr 0.0005`, linear scaling rule).
    pub lr: f64,
    /// Learning rate at the end of the cosine schedule (official `--min_lr 1e-6`).
    pub min_lr: f64,
    /// Weight decay at the start, cosine to `weight_decay_end` (official 0.04).
    pub weight_decay: f64,
    /// Weight decay at the end (official 0.4). Biases and 1-D parameters get none.
    pub weight_decay_end: f64,
    /// Maximal gradient norm of each parameter, clipped separately; 0 disables
    /// (official `--clip_grad 3.0`).
    pub clip_grad: f64,
    /// AdamW (beta1, beta2) (PyTorch `AdamW` defaults used by the official code). AdamW only.
    pub betas: [f64; 2],
    /// AdamW epsilon (PyTorch default). AdamW only.
    pub eps: f64,
    /// AdamW through libtorch's fused kernel (`torch.optim.AdamW(fused=True)`, CPU and CUDA):
    /// each parameter, gradient and moment read and written once per step instead of by ten
    /// separate passes. The same update up to rounding: its arithmetic differs from the official
    /// single-tensor AdamW in the last bits (30 steps: unit-scale weights within 5e-7, DINO
    /// losses within 2e-5 relative; `crates/train/tests/optim_flat.rs`). On by default because
    /// it pays: the optimizer phase of a ViT-S/16 step 2.8x faster on the CPU
    /// (docs/bench/train_step.md); the fastest PyTorch baseline runs it too. false: the
    /// single-tensor arithmetic of the official `torch.optim.AdamW(params_groups)`, bit for
    /// bit (use it to compare a run with one from a binary before this option). AdamW only (SGD
    /// and LARS have no fused kernel here).
    pub fused: bool,
    /// Momentum of SGD and LARS (official `SGD(momentum=0.9)` and `utils.LARS(momentum=0.9)`).
    /// Not used by AdamW.
    pub momentum: f64,
    /// LARS trust coefficient η: a weight's update is scaled by η·‖w‖/‖update‖ (official
    /// `utils.LARS(eta=0.001)`). LARS only.
    pub lars_eta: f64,
}

impl OptimConfig {
    /// `lr * batch_size * accum_steps / 256` for one process (the linear scaling rule of
    /// `main_dino.py` on the batch of one optimizer step).
    pub fn scaled_lr(&self) -> f64 {
        self.lr * self.step_batch_size() as f64 / 256.0
    }

    /// Images per optimizer step on this process: `batch_size · accum_steps`.
    pub fn step_batch_size(&self) -> usize {
        self.batch_size * self.accum_steps
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            accum_steps: 1,
            backward_per_crop_group: false,
            epochs: 100,
            lr: 0.0005,
            min_lr: 1e-6,
            weight_decay: 0.04,
            weight_decay_end: 0.4,
            clip_grad: 3.0,
            betas: [0.9, 0.999],
            eps: 1e-8,
            fused: true,
            optimizer: OptimizerKind::Adamw,
            momentum: 0.9,
            lars_eta: 0.001,
        }
    }
}

/// `[schedule]`: warm-up, last-layer freezing and the teacher EMA (per iteration, cosine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Epochs of linear learning-rate warm-up from 0 (official `--warmup_epochs 10`).
    pub warmup_epochs: usize,
    /// Epochs during which the head's last layer gets no update at all
    /// (official `--freeze_last_layer 1`).
    pub freeze_last_layer: usize,
    /// Epochs during which the backbone is frozen, for student and teacher: its weights get no
    /// update at all (no optimizer step, no weight decay, no EMA into the teacher's backbone),
    /// and it runs as in evaluation (a ResNet's BatchNorm normalises with its running
    /// statistics and leaves them and `num_batches_tracked` unchanged, as torchvision's
    /// `FrozenBatchNorm2d`; a ViT has no stochastic depth). So the backbone, its BatchNorm
    /// statistics and its features stay bitwise what was loaded, and the teacher's backbone
    /// bitwise equal to the student's. Only the head trains: its weights, the teacher head's
    /// EMA, the center and, with `head.use_bn`, the head's BatchNorm statistics. A fresh head on
    /// a pretrained backbone (`dino train --init-from`) thus cannot wreck it (dino#80, #207).
    /// Counted from the run's first epoch, so a run resumed inside them stays frozen. 0
    /// (default) freezes nothing; not in the official code.
    pub freeze_backbone_epochs: usize,
    /// Teacher EMA momentum at the start, cosine to `momentum_teacher_end`
    /// (official `--momentum_teacher 0.996`).
    pub momentum_teacher: f64,
    /// Teacher EMA momentum at the end (official 1.0).
    pub momentum_teacher_end: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            warmup_epochs: 10,
            freeze_last_layer: 1,
            freeze_backbone_epochs: 0,
            momentum_teacher: 0.996,
            momentum_teacher_end: 1.0,
        }
    }
}

/// `[checkpoint]`: where and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Run folder for checkpoints, metrics and plots (official `--output_dir "."`). Unset, it
    /// is `runs/<data folder name>` when `data.path` is given, else `runs/dino`.
    pub output_dir: String,
    /// Keep a numbered checkpoint every this many epochs besides the latest
    /// (official `--saveckp_freq 20`); 0 keeps only the latest.
    pub saveckp_freq: usize,
    /// Also write the latest checkpoint every this many steps within an epoch, so an
    /// interrupted run loses little (0: only at epoch ends, as the official code).
    pub every_steps: usize,
    /// Write the latest checkpoint at the end of every this many epochs (official: every epoch,
    /// 1). The last epoch, and every epoch that keeps a numbered checkpoint, are always written.
    /// Raise it for many short epochs on a small dataset, where one save (ViT-S/16 with the
    /// 65,536-wide head: about 650 MB) can cost as much as the epoch itself. Must be at least 1.
    pub latest_every_epochs: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            output_dir: "runs/dino".into(),
            saveckp_freq: 20,
            every_steps: 0,
            latest_every_epochs: 1,
        }
    }
}

/// `[eval]`: k-NN (`eval_knn.py`), linear probe (`eval_linear.py`) and online k-NN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Neighbour counts of the weighted k-NN (official `--nb_knn 10 20 100 200`).
    pub knn_k: Vec<usize>,
    /// Vote temperature: weight exp(similarity / T) (official `--temperature 0.07`).
    pub knn_temperature: f64,
    /// Labeled images for the k-NN memory bank during online evaluation.
    pub knn_train_path: String,
    /// Labeled validation images for online k-NN.
    pub knn_val_path: String,
    /// Run online k-NN every this many epochs (0: never). Not in the official trainer.
    pub knn_every_epochs: usize,
    /// Evaluation resize: shorter side = crop * resize_ratio, then centre crop
    /// (official Resize(256) + CenterCrop(224), ratio 256/224).
    pub resize_ratio: f64,
    /// Side of the evaluation centre crop (official 224). Unset, it follows
    /// `augmentation.global_crops_size` (224 by default), so a model is evaluated at the size it
    /// trained at.
    pub crop_size: u32,
    /// Linear probe: CLS tokens of the last n blocks are concatenated (official 4 for ViT-S).
    pub n_last_blocks: usize,
    /// Linear probe: also concatenate the mean patch token (official False for ViT-S).
    pub avgpool_patchtokens: bool,
    /// Linear probe epochs (official 100).
    pub linear_epochs: usize,
    /// Linear probe lr at batch 256, scaled by batch / 256 (official 0.001).
    pub linear_lr: f64,
    /// Linear probe batch size (official 128 per GPU).
    pub linear_batch_size: usize,
    /// Batch size when computing features.
    pub batch_size: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            knn_k: vec![10, 20, 100, 200],
            knn_temperature: 0.07,
            knn_train_path: String::new(),
            knn_val_path: String::new(),
            knn_every_epochs: 0,
            resize_ratio: 256.0 / 224.0,
            crop_size: 224,
            n_last_blocks: 4,
            avgpool_patchtokens: false,
            linear_epochs: 100,
            linear_lr: 0.001,
            linear_batch_size: 128,
            batch_size: 128,
        }
    }
}

/// Numeric precision of the forward pass, as configured. `auto` is resolved to `fp32` or `bf16`
/// once, before training, on the machine that runs it (`dino_model::resolve_precision`); `fp16`
/// is only ever chosen explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Full fp32 (default). The official default is fp16 autocast with a GradScaler
    /// (`--use_fp16 True`, here `fp16`); fp32 is the exact choice that runs fast everywhere,
    /// CPUs included.
    #[default]
    Fp32,
    /// bf16 autocast (no loss scaling needed), on CUDA or CPU; weights and optimizer state stay
    /// fp32. On CPUs with AVX512-BF16 or AMX it speeds a step up (1.4x on an AVX512-BF16 CPU,
    /// docs/BENCHMARKS.md); on others libtorch emulates bf16 and a step is far slower (12.8x on
    /// an AVX2-only AMD EPYC for `configs/cifar10_cpu.toml`: 18.4 against 235.0 images/s).
    /// The official code offers fp16 + GradScaler (`--use_fp16 True`, here `fp16`) instead.
    Bf16,
    /// fp16 autocast with dynamic loss scaling, the official `--use_fp16 True`: the loss is
    /// multiplied by a scale before backward (PyTorch `GradScaler`: 2^16 at the start, x2 after
    /// 2,000 steps in a row with finite gradients, x0.5 and the optimizer step skipped when any
    /// gradient is inf or NaN), gradients are unscaled before the per-parameter clipping, and
    /// the scaler's state is saved in checkpoints. Weights and optimizer state stay fp32. The
    /// fast mixed precision of GPUs without bf16 (V100, T4, RTX 20xx); libtorch also runs it on
    /// CPUs, where it is much slower than fp32 without native fp16 arithmetic.
    Fp16,
    /// `bf16` where the device multiplies bf16 natively: a CUDA GPU of compute capability 8.0 or
    /// later (Ampere on; PyTorch's `torch.cuda.is_bf16_supported()` test), or a CPU with the
    /// AVX512-BF16 or AMX-BF16 flag; `fp32` everywhere else. Ours, for presets that must be fast
    /// on more than one CPU family. Each `dino train` invocation resolves it on its own machine
    /// and logs the choice and the reason; the run's `config.toml` keeps `auto`, so a run resumed
    /// on another machine takes that machine's choice (the state saved in a checkpoint is fp32
    /// either way). Pin `fp32` or `bf16` to forbid that.
    Auto,
}

impl Precision {
    /// The TOML spelling (`fp32`, `bf16`, `fp16`, `auto`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
            Self::Fp16 => "fp16",
            Self::Auto => "auto",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where tensors live: `runtime.device`, written `auto`, `cpu`, `cuda` or `cuda:N` in TOML and
/// parsed once, when the config is read (an unknown spelling is an error naming the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceRequest {
    /// CUDA device 0 when libtorch sees one, else the CPU (official: `cuda` always).
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device `N` (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl TryFrom<String> for DeviceRequest {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    format!("must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got {s:?}")
                }),
        }
    }
}

impl From<DeviceRequest> for String {
    fn from(d: DeviceRequest) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// `[runtime]`: seed, device and threads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Seed of every random choice: weights, shuffling, every augmentation draw
    /// (official `--seed 0`). Output does not depend on thread counts.
    pub seed: u64,
    /// `auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N` (see [`DeviceRequest`]).
    pub device: DeviceRequest,
    /// libtorch intra-op threads; 0 = all cores.
    pub torch_threads: usize,
    /// On the CPU with two or more libtorch threads, the teacher's forward on the global
    /// crops runs in a second thread beside the student's forward, the threads shared between
    /// the two (one each on two cores), instead of both forwards in turn on all threads. Why:
    /// the small matrices of a CPU-sized ViT keep two threads of one forward well short of
    /// twice one thread's speed, and two forwards side by side use the cores better
    /// (docs/BENCHMARKS.md, "The step on an AVX2-only CPU": 1.08x on the CIFAR-10 preset's
    /// model-bound step, 1.11x end to end, none on ViT-S/16 with small crops, 2-core AMD EPYC
    /// Zen 3). The same math up to rounding (a reduction split over another number of threads
    /// rounds differently; every random draw stays on the calling thread, the teacher draws
    /// none): false gives the serial step's arithmetic bit for bit. Off by default so that a
    /// run reproduces the figures of docs/RESULTS.md, which were trained without it. Ignored
    /// on CUDA, with iBOT and with `optim.backward_per_crop_group` (there the teacher's output
    /// feeds the student's forward or its loss in pieces).
    pub overlap_teacher: bool,
    /// The student's crop groups (the global and the local crops, two resolutions) go through
    /// each ViT block together: LayerNorms, projections, MLP and residuals on all their tokens
    /// in one matrix, the attention within each group (as DINOv2's `forward_features_list`),
    /// instead of the whole ViT once per group. Why: on the CPU each matrix product pays its
    /// weight packing and thread wake-up once instead of once per group, and each weight
    /// gradient is one longer product (docs/BENCHMARKS.md, "The allocator, a one-pass EMA and
    /// packed crop groups": the ViT-S/16 step on 64 px and 32 px crops 1.02–1.09x per round,
    /// 2-core AMD EPYC Zen 3).
    /// The same math with the same stochastic-depth draws; the weight gradients sum the
    /// groups' rows in one product and so round differently (loss and gradients within 1e-5
    /// of the per-group path): false gives the per-group arithmetic bit for bit. Off by
    /// default so that a run reproduces the figures of docs/RESULTS.md. Applies to a ViT
    /// student whose crops come in two or more resolutions; not with
    /// `optim.backward_per_crop_group` (one group per forward) nor to iBOT's masked global
    /// crops (they go through the ViT on their own).
    pub pack_crop_groups: bool,
    /// Augmentation (rayon) threads; 0 = all cores.
    pub data_threads: usize,
    /// Batches the loader may prepare ahead of the trainer (bounded channel capacity).
    pub prefetch_batches: usize,
    /// Forward precision (see [`Precision`]).
    pub precision: Precision,
    /// Write a metrics line every this many steps.
    pub log_every: usize,
    /// Multi-process training: seconds the rendezvous and each collective may wait for a peer
    /// before the run stops with an error (a dead or missing worker never hangs the others).
    /// torch.distributed's default for Gloo and NCCL: 30 minutes.
    pub dist_timeout_s: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            device: DeviceRequest::Auto,
            torch_threads: 0,
            overlap_teacher: false,
            pack_crop_groups: false,
            data_threads: 0,
            prefetch_batches: 2,
            precision: Precision::Fp32,
            log_every: 10,
            dist_timeout_s: 1800,
        }
    }
}

/// The training objective (`method.objective`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// DINO self-distillation without labels (paper §3): student and EMA teacher with the DINO
    /// head and loss.
    #[default]
    Dino,
    /// Ours, the baseline of the paper's supervised rows (§4.2.1, Table 5, Fig. 3-4: a ViT of the
    /// same size trained with labels, there DeiT): the same backbone, data loader, augmentation
    /// and optimizer, with a linear classifier on the CLS feature and cross-entropy on the
    /// dataset's labels (class folders, CIFAR-10, IDX). Each image's 2 global crops are two
    /// labelled samples; local crops are not made (`augmentation.local_crops_number` is ignored).
    /// The DINO head, loss and teacher EMA are not used; the checkpoint stores the trained
    /// network under both `student.*` and `teacher.*`, so every evaluation reads it as it reads
    /// a DINO run.
    Supervised,
}

impl Objective {
    /// The TOML spelling (`dino`, `supervised`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dino => "dino",
            Self::Supervised => "supervised",
        }
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[method]`: what the network is trained for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MethodConfig {
    /// `dino` (default) or `supervised` (see [`Objective`]; `dino train --objective`).
    pub objective: Objective,
}

/// `[ibot]`: DINOv2's iBOT masked-image-modelling term (Zhou et al. 2022; dinov2
/// `loss/ibot_patch_loss.py`, `train/ssl_meta_arch.py`, masks from `data/masking.py` and
/// `data/collate.py`). Off by default (`loss_weight = 0`: DINO v1, no masks drawn, no
/// `mask_token`); its DINOv2 values live in `configs/dinov2_vits14.toml`. ViT and
/// `method.objective = "dino"` only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IbotConfig {
    /// Weight of the iBOT patch loss: cross-entropy between the teacher's prototypes of each
    /// masked patch of the unmasked global crops and the student's of the same patch of the
    /// masked crops. 0 (default) = DINO v1, no term, no masks; DINOv2: 1.0
    /// (`ibot.loss_weight` in `dinov2/configs/ssl_default_config.yaml`).
    pub loss_weight: f64,
    /// Fraction of the batch's global crops that get a mask (`int(2·B · p)` of the 2·B crops,
    /// dinov2 `data/collate.py`); DINOv2 and default 0.5 (`ibot.mask_sample_probability`).
    pub mask_sample_probability: f64,
    /// `[min, max]` of the masked fraction of the patches: the masked crops' ratios are spread
    /// over it (crop i of n draws from the i-th of n equal sub-intervals, then the crops are
    /// shuffled; dinov2 `data/collate.py`). DINOv2 and default [0.1, 0.5]
    /// (`ibot.mask_ratio_min_max`).
    pub mask_ratio_min_max: [f64; 2],
    /// Run the masked patch tokens through a head of their own (`ibot_head.*`, sized by the
    /// `head_*` keys below) instead of the DINO head (`head.*`). Default false
    /// (`ibot.separate_head: false`).
    pub separate_head: bool,
    /// Prototypes of the separate iBOT head (`ibot.head_n_prototypes: 65536`); used only with
    /// `separate_head`, as is the iBOT center's width.
    pub head_out_dim: usize,
    /// Hidden width of the separate iBOT head's MLP (`ibot.head_hidden_dim: 2048`).
    pub head_hidden_dim: usize,
    /// Bottleneck width of the separate iBOT head (`ibot.head_bottleneck_dim: 256`).
    pub head_bottleneck_dim: usize,
    /// Layers of the separate iBOT head's MLP (`ibot.head_nlayers: 3`).
    pub head_nlayers: usize,
}

impl Default for IbotConfig {
    fn default() -> Self {
        Self {
            loss_weight: 0.0,
            mask_sample_probability: 0.5,
            mask_ratio_min_max: [0.1, 0.5],
            separate_head: false,
            head_out_dim: 65536,
            head_hidden_dim: 2048,
            head_bottleneck_dim: 256,
            head_nlayers: 3,
        }
    }
}

impl IbotConfig {
    /// Whether the iBOT term is on (`loss_weight > 0`, as dinov2's `do_ibot`).
    pub fn enabled(&self) -> bool {
        self.loss_weight > 0.0
    }
}
