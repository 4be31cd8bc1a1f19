//! Range and cross-section checks, each error naming its key.

use crate::{
    AugmentationConfig, Centering, Config, ConfigError, DataFormat, Ffn, ModelConfig, Objective,
};

type R = Result<(), ConfigError>;

fn prob(key: &str, v: f64) -> R {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("is a probability, must be in [0, 1], got {v}"),
        ))
    }
}

fn positive(key: &str, v: f64) -> R {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be a finite number > 0, got {v}"),
        ))
    }
}

fn non_negative(key: &str, v: f64) -> R {
    if v >= 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be a finite number >= 0, got {v}"),
        ))
    }
}

fn nonzero(key: &str, v: usize) -> R {
    if v > 0 {
        Ok(())
    } else {
        Err(ConfigError::invalid(key, "must be at least 1"))
    }
}

/// `[min, max]` with `lo <= min <= max <= hi` (and min > lo when `open_lo`).
fn range(key: &str, r: [f64; 2], lo: f64, hi: f64, open_lo: bool) -> R {
    let [a, b] = r;
    if !(a.is_finite() && b.is_finite()) || a > b {
        return Err(ConfigError::invalid(
            key,
            format!("must be [min, max] with min <= max, got [{a}, {b}]"),
        ));
    }
    if (open_lo && a <= lo) || a < lo || b > hi {
        let l = if open_lo { "(" } else { "[" };
        return Err(ConfigError::invalid(
            key,
            format!("must lie in {l}{lo}, {hi}], got [{a}, {b}]"),
        ));
    }
    Ok(())
}

fn multiple_of_patch(key: &str, size: usize, patch: usize) -> R {
    if size == 0 || size % patch != 0 {
        Err(ConfigError::invalid(
            key,
            format!("must be a positive multiple of model.patch_size ({patch}), got {size}"),
        ))
    } else {
        Ok(())
    }
}

/// The numbers that fix a ViT's shape, as [`check_vit_shape`] checks them (built from a
/// `[model]` section by [`ModelConfig::vit_shape`], or by the model crate from its own
/// `VitConfig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VitShape {
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Token width D.
    pub embed_dim: usize,
    /// Number of blocks.
    pub depth: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// MLP hidden width = floor(embed_dim * mlp_ratio).
    pub mlp_ratio: f64,
    /// Stochastic-depth rate of the last block.
    pub drop_path_rate: f64,
    /// Side of the square image the position table is sized for, in pixels.
    pub img_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl ModelConfig {
    /// The shape this section describes (arch presets resolved by [`ModelConfig::dims`]).
    pub fn vit_shape(&self) -> VitShape {
        let (embed_dim, depth, num_heads) = self.dims();
        VitShape {
            patch_size: self.patch_size,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio: self.mlp_ratio,
            drop_path_rate: self.drop_path_rate,
            img_size: self.img_size,
            layer_norm_eps: self.layer_norm_eps,
        }
    }
}

/// The one home of the ViT shape rules: sizes at least 1, heads dividing the width, a positive
/// MLP ratio giving at least one hidden unit, a drop-path rate in [0, 1), an image at least one
/// patch wide (the official `PatchEmbed` floors `img_size / patch_size`) and a positive
/// LayerNorm epsilon. `Config::validate` adds its own limits on top (patch size at most 64,
/// `img_size` a multiple of it).
///
/// # Errors
/// [`ConfigError::Invalid`] naming the `model.*` key that breaks a rule.
pub fn check_vit_shape(s: &VitShape) -> Result<(), ConfigError> {
    nonzero("model.patch_size", s.patch_size)?;
    nonzero("model.embed_dim", s.embed_dim)?;
    nonzero("model.depth", s.depth)?;
    nonzero("model.num_heads", s.num_heads)?;
    if s.embed_dim % s.num_heads != 0 {
        return Err(ConfigError::invalid(
            "model.num_heads",
            format!(
                "must divide model.embed_dim ({}), got {}",
                s.embed_dim, s.num_heads
            ),
        ));
    }
    positive("model.mlp_ratio", s.mlp_ratio)?;
    if (s.embed_dim as f64 * s.mlp_ratio).floor() < 1.0 {
        return Err(ConfigError::invalid(
            "model.mlp_ratio",
            format!(
                "{} gives no MLP hidden unit at width {}",
                s.mlp_ratio, s.embed_dim
            ),
        ));
    }
    if !(0.0..1.0).contains(&s.drop_path_rate) {
        return Err(ConfigError::invalid(
            "model.drop_path_rate",
            format!("must be in [0, 1), got {}", s.drop_path_rate),
        ));
    }
    if s.img_size < s.patch_size {
        return Err(ConfigError::invalid(
            "model.img_size",
            format!(
                "must be at least model.patch_size ({}), got {}",
                s.patch_size, s.img_size
            ),
        ));
    }
    positive("model.layer_norm_eps", s.layer_norm_eps)
}

/// The one home of the multi-crop rules that do not depend on the model: crop sizes at least
/// 1 (the local size only when there are local crops), scale ranges within (0, 1], an aspect
/// ratio range with 0 < lo <= hi, probabilities in [0, 1], jitter strengths finite and >= 0
/// (hue at most 0.5, as torchvision's `ColorJitter`), a blur sigma range with 0 < lo <= hi and a
/// positive normalisation std. `Config::validate` adds that crop sizes are multiples of
/// `model.patch_size`.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the `augmentation.*` key that breaks a rule.
pub fn check_augmentation(a: &AugmentationConfig) -> Result<(), ConfigError> {
    nonzero(
        "augmentation.global_crops_size",
        a.global_crops_size as usize,
    )?;
    if a.local_crops_number > 0 {
        nonzero("augmentation.local_crops_size", a.local_crops_size as usize)?;
    }
    range(
        "augmentation.global_crops_scale",
        a.global_crops_scale,
        0.0,
        1.0,
        true,
    )?;
    range(
        "augmentation.local_crops_scale",
        a.local_crops_scale,
        0.0,
        1.0,
        true,
    )?;
    range("augmentation.crop_ratio", a.crop_ratio, 0.0, f64::MAX, true)?;
    for (k, v) in [
        ("augmentation.flip_p", a.flip_p),
        ("augmentation.color_jitter_p", a.color_jitter_p),
        ("augmentation.grayscale_p", a.grayscale_p),
        ("augmentation.blur_global1_p", a.blur_global1_p),
        ("augmentation.blur_global2_p", a.blur_global2_p),
        ("augmentation.blur_local_p", a.blur_local_p),
        ("augmentation.solarize_p", a.solarize_p),
    ] {
        prob(k, v)?;
    }
    for (k, v) in [
        ("augmentation.brightness", a.brightness),
        ("augmentation.contrast", a.contrast),
        ("augmentation.saturation", a.saturation),
    ] {
        non_negative(k, v)?;
    }
    if !(0.0..=0.5).contains(&a.hue) {
        return Err(ConfigError::invalid(
            "augmentation.hue",
            format!("must be in [0, 0.5], got {}", a.hue),
        ));
    }
    range("augmentation.blur_sigma", a.blur_sigma, 0.0, 1e3, true)?;
    for (i, s) in a.std.iter().enumerate() {
        positive(&format!("augmentation.std[{i}]"), *s)?;
    }
    Ok(())
}

/// The DINOv2 backbone options (`num_register_tokens`, `layerscale_init`, `ffn`,
/// `pos_interpolation`): a ViT's only, so a ResNet refuses each one set away from its default;
/// LayerScale's initial gain is finite and not negative (0 = off).
fn check_vit_options(m: &ModelConfig) -> R {
    non_negative("model.layerscale_init", m.layerscale_init)?;
    if !m.arch.is_resnet() {
        return Ok(());
    }
    let d = ModelConfig::default();
    let set: [(&str, bool); 4] = [
        (
            "model.num_register_tokens",
            m.num_register_tokens != d.num_register_tokens,
        ),
        (
            "model.layerscale_init",
            m.layerscale_init != d.layerscale_init,
        ),
        ("model.ffn", m.ffn != d.ffn),
        (
            "model.pos_interpolation",
            m.pos_interpolation != d.pos_interpolation,
        ),
    ];
    match set.iter().find(|(_, on)| *on) {
        Some((key, _)) => Err(ConfigError::invalid(
            key,
            format!(
                "is a Vision Transformer option (DINOv2's backbone), and {} has no tokens or \
                 transformer blocks: leave it at its default or pick a ViT arch",
                m.arch.name()
            ),
        )),
        None => Ok(()),
    }
}

pub(crate) fn validate(c: &Config) -> R {
    // [method]
    if c.method.objective == Objective::Supervised && c.data.format == DataFormat::Flat {
        return Err(ConfigError::invalid(
            "method.objective",
            "\"supervised\" trains on labels, and data.format = \"flat\" has no labels: give \
             class folders (root/<class>/<image>), CIFAR-10 or IDX data",
        ));
    }

    // [data]
    prob("data.max_failed_fraction", c.data.max_failed_fraction)?;
    if c.data.max_image_pixels == 0 {
        return Err(ConfigError::invalid(
            "data.max_image_pixels",
            "must be at least 1",
        ));
    }
    if !matches!(c.data.split.as_str(), "train" | "test") {
        return Err(ConfigError::invalid(
            "data.split",
            format!("must be \"train\" or \"test\", got {:?}", c.data.split),
        ));
    }

    // [model] first: crop sizes depend on the patch size.
    let m = &c.model;
    let resnet = m.arch.is_resnet();
    // A ResNet takes any image size (global average pooling): the ViT keys do not apply to it.
    // Its "patch" for the crop-size rules below is 1.
    let patch = if resnet { 1 } else { m.patch_size };
    if !resnet && m.cifar_stem {
        return Err(ConfigError::invalid(
            "model.cifar_stem",
            format!(
                "is for the ResNet archs (resnet18, resnet34, resnet50), not {}",
                m.arch.name()
            ),
        ));
    }
    check_vit_options(m)?;
    if !resnet {
        if !(1..=64).contains(&m.patch_size) {
            return Err(ConfigError::invalid(
                "model.patch_size",
                format!("must be in 1..=64, got {}", m.patch_size),
            ));
        }
        check_vit_shape(&m.vit_shape())?;
        // dinov2 `SwiGLUFFNFused`: hidden = (int(int(D · r) · 2/3) + 7) // 8 · 8 (as
        // `VitConfig::ffn_hidden`), which is 0 when int(D · r) is 1: no hidden unit.
        let mlp_hidden = (m.dims().0 as f64 * m.mlp_ratio) as i64;
        if m.ffn == Ffn::Swiglu && ((mlp_hidden as f64 * 2.0 / 3.0) as i64 + 7) / 8 * 8 < 1 {
            return Err(ConfigError::invalid(
                "model.mlp_ratio",
                format!(
                    "{} gives no hidden unit with model.ffn = \"swiglu\" at width {}: DINOv2's \
                     SwiGLU width is (int(int(width · ratio) · 2/3) + 7) // 8 · 8 = 0; \
                     width · ratio must be at least 2",
                    m.mlp_ratio,
                    m.dims().0
                ),
            ));
        }
        // Stricter than a ViT needs (it floors img_size / patch_size): a config's table is exact.
        multiple_of_patch("model.img_size", m.img_size, m.patch_size)?;
    }
    let depth = m.dims().1;

    // [augmentation]
    let a = &c.augmentation;
    check_augmentation(a)?;
    multiple_of_patch(
        "augmentation.global_crops_size",
        a.global_crops_size as usize,
        patch,
    )?;
    if a.local_crops_number > 0 {
        multiple_of_patch(
            "augmentation.local_crops_size",
            a.local_crops_size as usize,
            patch,
        )?;
    }

    // [head]
    nonzero("head.out_dim", c.head.out_dim)?;
    nonzero("head.hidden_dim", c.head.hidden_dim)?;
    nonzero("head.bottleneck_dim", c.head.bottleneck_dim)?;
    nonzero("head.nlayers", c.head.nlayers)?;

    // [loss]
    positive("loss.student_temp", c.loss.student_temp)?;
    positive("loss.teacher_temp", c.loss.teacher_temp)?;
    positive("loss.warmup_teacher_temp", c.loss.warmup_teacher_temp)?;
    prob("loss.center_momentum", c.loss.center_momentum)?;
    non_negative("loss.koleo_weight", c.loss.koleo_weight)?;
    let koleo = c.loss.koleo_weight > 0.0;
    let sinkhorn = c.loss.centering == Centering::SinkhornKnopp;
    if c.method.objective == Objective::Supervised && (koleo || sinkhorn) {
        return Err(ConfigError::invalid(
            if koleo {
                "loss.koleo_weight"
            } else {
                "loss.centering"
            },
            "is a DINO loss option (method.objective = \"dino\"); the supervised objective \
             has no teacher and no CLS regularizer",
        ));
    }
    // Both terms see the whole batch at once (KoLeo: each crop's nearest neighbours;
    // Sinkhorn-Knopp: the column and row sums), so summing micro-batch gradients would not be
    // the gradient of the large batch.
    if c.optim.accum_steps > 1 && (koleo || sinkhorn) {
        return Err(ConfigError::invalid(
            "optim.accum_steps",
            format!(
                "must be 1 with {}: the term is computed over the whole batch at once, which \
                 gradient accumulation splits into micro-batches (got {})",
                if koleo {
                    "loss.koleo_weight > 0 (KoLeo's nearest neighbours)"
                } else {
                    "loss.centering = \"sinkhorn_knopp\" (its row and column sums)"
                },
                c.optim.accum_steps
            ),
        ));
    }
    // KoLeo's neighbours are the other images of this process's batch (per process, as the
    // official code): at 1 there is none, and the term is 0 with no gradient at every step.
    if koleo && c.optim.batch_size == 1 {
        return Err(ConfigError::invalid(
            "optim.batch_size",
            "must be at least 2 with loss.koleo_weight > 0: KoLeo pushes each image's CLS away \
             from its nearest neighbour among the other images of the process's batch, and at \
             batch 1 there is none (the term would be 0 at every step; under a launcher the \
             batch is per process)",
        ));
    }
    check_ibot(c)?;
    if c.loss.warmup_teacher_temp_epochs > c.optim.epochs {
        return Err(ConfigError::invalid(
            "loss.warmup_teacher_temp_epochs",
            format!(
                "must not exceed optim.epochs ({}), got {}",
                c.optim.epochs, c.loss.warmup_teacher_temp_epochs
            ),
        ));
    }

    // [optim]
    let o = &c.optim;
    nonzero("optim.batch_size", o.batch_size)?;
    nonzero("optim.accum_steps", o.accum_steps)?;
    // The head runs once per crop group then; with BatchNorm its statistics would be each
    // group's instead of all crops' (the backbone already runs per resolution group).
    if o.backward_per_crop_group && c.head.use_bn {
        return Err(ConfigError::invalid(
            "optim.backward_per_crop_group",
            "needs head.use_bn = false: the head's BatchNorm normalises over all crops of a \
             step, which a per-group forward does not see together",
        ));
    }
    // Both are DINO step features (the center, the teacher targets, the crop groups); the
    // supervised baseline is a comparison run, kept to one plain step.
    if c.method.objective == Objective::Supervised {
        if o.accum_steps > 1 {
            return Err(ConfigError::invalid(
                "optim.accum_steps",
                format!(
                    "gradient accumulation is implemented for method.objective = \"dino\" only; \
                     the supervised objective needs 1, got {}",
                    o.accum_steps
                ),
            ));
        }
        if o.backward_per_crop_group {
            return Err(ConfigError::invalid(
                "optim.backward_per_crop_group",
                "is a DINO loss feature (method.objective = \"dino\"); the supervised \
                 objective needs false",
            ));
        }
    }
    nonzero("optim.epochs", o.epochs)?;
    positive("optim.lr", o.lr)?;
    non_negative("optim.min_lr", o.min_lr)?;
    non_negative("optim.weight_decay", o.weight_decay)?;
    non_negative("optim.weight_decay_end", o.weight_decay_end)?;
    non_negative("optim.clip_grad", o.clip_grad)?;
    for (i, b) in o.betas.iter().enumerate() {
        if !(0.0..1.0).contains(b) {
            return Err(ConfigError::invalid(
                &format!("optim.betas[{i}]"),
                format!("must be in [0, 1), got {b}"),
            ));
        }
    }
    positive("optim.eps", o.eps)?;
    if !(0.0..1.0).contains(&o.momentum) {
        return Err(ConfigError::invalid(
            "optim.momentum",
            format!("must be in [0, 1), got {}", o.momentum),
        ));
    }
    positive("optim.lars_eta", o.lars_eta)?;

    // [schedule]
    let s = &c.schedule;
    if s.warmup_epochs > o.epochs {
        return Err(ConfigError::invalid(
            "schedule.warmup_epochs",
            format!(
                "must not exceed optim.epochs ({}), got {}",
                o.epochs, s.warmup_epochs
            ),
        ));
    }
    // Freezing for more epochs than the run has is freezing for the whole run: the same bound
    // as the warm-up, so a preset's value is scaled and a `--set` one refused alike.
    for (key, epochs) in [
        ("schedule.freeze_last_layer", s.freeze_last_layer),
        ("schedule.freeze_backbone_epochs", s.freeze_backbone_epochs),
    ] {
        if epochs > o.epochs {
            return Err(ConfigError::invalid(
                key,
                format!("must not exceed optim.epochs ({}), got {epochs}", o.epochs),
            ));
        }
    }
    prob("schedule.momentum_teacher", s.momentum_teacher)?;
    prob("schedule.momentum_teacher_end", s.momentum_teacher_end)?;

    // [checkpoint]
    if c.checkpoint.output_dir.trim().is_empty() {
        return Err(ConfigError::invalid(
            "checkpoint.output_dir",
            "must not be empty",
        ));
    }
    nonzero(
        "checkpoint.latest_every_epochs",
        c.checkpoint.latest_every_epochs,
    )?;

    // [eval]
    let e = &c.eval;
    if e.knn_k.is_empty() {
        return Err(ConfigError::invalid(
            "eval.knn_k",
            "must list at least one k",
        ));
    }
    for (i, k) in e.knn_k.iter().enumerate() {
        nonzero(&format!("eval.knn_k[{i}]"), *k)?;
    }
    positive("eval.knn_temperature", e.knn_temperature)?;
    if e.knn_every_epochs > 0 {
        for (k, v) in [
            ("eval.knn_train_path", &e.knn_train_path),
            ("eval.knn_val_path", &e.knn_val_path),
        ] {
            if v.trim().is_empty() {
                return Err(ConfigError::invalid(
                    k,
                    "must name a labeled dataset when eval.knn_every_epochs > 0",
                ));
            }
        }
    }
    if !(e.resize_ratio >= 1.0 && e.resize_ratio.is_finite()) {
        return Err(ConfigError::invalid(
            "eval.resize_ratio",
            format!("must be >= 1, got {}", e.resize_ratio),
        ));
    }
    multiple_of_patch("eval.crop_size", e.crop_size as usize, patch)?;
    // A ResNet's linear-probe feature is its pooled output (official eval_linear.py), so
    // n_last_blocks only applies to a ViT.
    if !resnet && (e.n_last_blocks == 0 || e.n_last_blocks > depth) {
        return Err(ConfigError::invalid(
            "eval.n_last_blocks",
            format!(
                "must be in 1..={depth} (the model depth), got {}",
                e.n_last_blocks
            ),
        ));
    }
    nonzero("eval.linear_epochs", e.linear_epochs)?;
    positive("eval.linear_lr", e.linear_lr)?;
    nonzero("eval.linear_batch_size", e.linear_batch_size)?;
    nonzero("eval.batch_size", e.batch_size)?;

    // [runtime]
    let r = &c.runtime;
    nonzero("runtime.prefetch_batches", r.prefetch_batches)?;
    nonzero("runtime.log_every", r.log_every)?;
    nonzero("runtime.dist_timeout_s", r.dist_timeout_s as usize)?;
    Ok(())
}

/// `[ibot]`: ranges always; with the term on (`ibot.loss_weight > 0`), what it needs: a ViT
/// (patch tokens and a `mask_token`), the DINO objective (a teacher), a positive mask
/// probability and ratio (dinov2 `ssl_meta_arch.py` asserts both), a BatchNorm-free DINO head
/// when it is shared (the head would normalise CLS and patch tokens together), and a separate
/// head's sizes.
fn check_ibot(c: &Config) -> R {
    let i = &c.ibot;
    non_negative("ibot.loss_weight", i.loss_weight)?;
    prob("ibot.mask_sample_probability", i.mask_sample_probability)?;
    range(
        "ibot.mask_ratio_min_max",
        i.mask_ratio_min_max,
        0.0,
        1.0,
        false,
    )?;
    if !i.enabled() {
        return Ok(());
    }
    if c.model.arch.is_resnet() {
        return Err(ConfigError::invalid(
            "ibot.loss_weight",
            format!(
                "iBOT masks patch tokens of a Vision Transformer, and {} has none: set it to 0 \
                 or pick a ViT arch",
                c.model.arch.name()
            ),
        ));
    }
    if c.method.objective == Objective::Supervised {
        return Err(ConfigError::invalid(
            "ibot.loss_weight",
            "is a DINO loss option (method.objective = \"dino\"); the supervised objective has \
             no teacher",
        ));
    }
    if i.mask_sample_probability <= 0.0 {
        return Err(ConfigError::invalid(
            "ibot.mask_sample_probability",
            "must be > 0 with ibot.loss_weight > 0: no crop would be masked (dinov2 asserts \
             it too)",
        ));
    }
    if i.mask_ratio_min_max[1] <= 0.0 {
        return Err(ConfigError::invalid(
            "ibot.mask_ratio_min_max",
            "needs a max > 0 with ibot.loss_weight > 0: no patch would be masked (dinov2 \
             asserts it too)",
        ));
    }
    if i.separate_head {
        nonzero("ibot.head_out_dim", i.head_out_dim)?;
        nonzero("ibot.head_hidden_dim", i.head_hidden_dim)?;
        nonzero("ibot.head_bottleneck_dim", i.head_bottleneck_dim)?;
        nonzero("ibot.head_nlayers", i.head_nlayers)?;
    }
    if c.head.use_bn {
        return Err(ConfigError::invalid(
            "head.use_bn",
            "must be false with ibot.loss_weight > 0: the head's BatchNorm would normalise over \
             the masked patch tokens as well as the CLS tokens (dinov2's head has no BatchNorm)",
        ));
    }
    Ok(())
}
