//! The Vision Transformer backbone of DINO (Dosovitskiy et al. 2021; official
//! `vision_transformer.py`, `VisionTransformer` with `num_classes = 0`).
//!
//! Patch embedding (Conv2d, kernel = stride = patch) → prepend CLS → add the learned absolute
//! position embedding (bicubically resized for other grids, see [`crate::pos_embed`]) → `depth`
//! pre-norm blocks → final LayerNorm. Variable names equal the official state-dict keys
//! (`patch_embed.proj.weight`, `cls_token`, `pos_embed`, `blocks.{i}.attn.qkv.weight`, …,
//! `norm.bias`).

use crate::block::{Block, BlockOptions};
use crate::error::ModelError;
use crate::init::{default_bias, default_weight, trunc_normal_, TRUNC_NORMAL_STD};
use crate::layers::LayerNorm;
use crate::pos_embed::{interpolate_pos_embed, PosInterp};
use crate::tokens::{cls_attention_over_patches, Tokens};
use dino_config::{check_vit_shape, AttentionKernel, Ffn, ModelConfig, VitShape};
use tch::{nn, Tensor};

/// Sizes of a [`VisionTransformer`]. Build it from the run configuration with
/// [`VitConfig::from_model`], or from a preset.
#[derive(Debug, Clone, PartialEq)]
pub struct VitConfig {
    /// Patch side in pixels (official `--patch_size`, default 16; 4, 8, 14, 16 are all fine).
    pub patch_size: i64,
    /// Token width D.
    pub embed_dim: i64,
    /// Number of blocks.
    pub depth: i64,
    /// Attention heads; must divide `embed_dim`.
    pub num_heads: i64,
    /// MLP hidden width = ⌊embed_dim · mlp_ratio⌋ (official 4).
    pub mlp_ratio: f64,
    /// Bias in the fused qkv projection (official True).
    pub qkv_bias: bool,
    /// Stochastic-depth rate of the last block; block i gets `rate · i / (depth − 1)`.
    pub drop_path_rate: f64,
    /// Side of the square image the position table is sized for, (img_size / patch)² entries
    /// (official 224; ⌊img_size / patch⌋ as in the official `PatchEmbed`).
    pub img_size: i64,
    /// LayerNorm epsilon (official named configs: 1e-6).
    pub layer_norm_eps: f64,
    /// How the position table is resized to other grids (default exact size;
    /// `model.pos_interpolation`).
    pub pos_interp: PosInterp,
    /// Register tokens R after CLS, without position embedding (`model.num_register_tokens`;
    /// 0 = DINO v1, DINOv2 `_reg` models 4). Variable `register_tokens` `[1, R, D]`.
    pub num_register_tokens: i64,
    /// LayerScale's initial gain on both residual branches (`model.layerscale_init`; 0 = off,
    /// DINO v1; DINOv2 1e-5). Variables `blocks.{i}.ls1.gamma`, `blocks.{i}.ls2.gamma` `[D]`.
    pub layerscale_init: f64,
    /// The blocks' feed-forward network (`model.ffn`): `mlp.fc1`/`mlp.fc2` or SwiGLU's
    /// `mlp.w12`/`mlp.w3`.
    pub ffn: Ffn,
    /// The blocks' attention kernel in the batched forward (`model.attention`): fused SDPA or
    /// the official explicit `q @ kᵀ`, softmax, `@ v`. Attention maps are explicit either way.
    pub attention: AttentionKernel,
    /// A learned `mask_token` `[1, D]` (zeros at init, dinov2 `models/vision_transformer.py`)
    /// that replaces the embeddings of masked patches ([`VisionTransformer::forward_features_masked`]):
    /// iBOT's student (`ibot.loss_weight > 0`; the teacher has the variable too, as in dinov2,
    /// and never uses it). Off for DINO v1: no variable.
    pub mask_token: bool,
}

impl VitConfig {
    /// The backbone described by the `[model]` section (arch presets resolved by
    /// [`ModelConfig::dims`]). The teacher is built with [`VitConfig::with_drop_path`]`(0.0)`:
    /// the official code gives stochastic depth to the student only.
    ///
    /// # Errors
    /// [`ModelError::Config`] on zero sizes, heads not dividing the width, a rate outside [0, 1)
    /// or an image smaller than a patch.
    pub fn from_model(m: &ModelConfig) -> Result<Self, ModelError> {
        let (embed_dim, depth, num_heads) = m.dims();
        let cfg = Self {
            patch_size: m.patch_size as i64,
            embed_dim: embed_dim as i64,
            depth: depth as i64,
            num_heads: num_heads as i64,
            mlp_ratio: m.mlp_ratio,
            qkv_bias: m.qkv_bias,
            drop_path_rate: m.drop_path_rate,
            img_size: m.img_size as i64,
            layer_norm_eps: m.layer_norm_eps,
            pos_interp: PosInterp::from_config(m.pos_interpolation),
            num_register_tokens: m.num_register_tokens as i64,
            layerscale_init: m.layerscale_init,
            ffn: m.ffn,
            attention: m.attention,
            mask_token: false,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// `vit_tiny` (192 wide, 12 blocks, 3 heads) at the official defaults otherwise.
    pub fn vit_tiny(patch_size: i64) -> Self {
        Self::preset(patch_size, 192, 12, 3)
    }

    /// `vit_small` (384, 12, 6), the official default arch.
    pub fn vit_small(patch_size: i64) -> Self {
        Self::preset(patch_size, 384, 12, 6)
    }

    /// `vit_base` (768, 12, 12).
    pub fn vit_base(patch_size: i64) -> Self {
        Self::preset(patch_size, 768, 12, 12)
    }

    fn preset(patch_size: i64, embed_dim: i64, depth: i64, num_heads: i64) -> Self {
        let d = ModelConfig::default();
        Self {
            patch_size,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio: d.mlp_ratio,
            qkv_bias: d.qkv_bias,
            drop_path_rate: d.drop_path_rate,
            img_size: d.img_size as i64,
            layer_norm_eps: d.layer_norm_eps,
            pos_interp: PosInterp::ExactSize,
            num_register_tokens: 0,
            layerscale_init: 0.0,
            ffn: Ffn::Mlp,
            attention: AttentionKernel::Sdpa,
            mask_token: false,
        }
    }

    /// The same network with (or without) a `mask_token` (iBOT).
    pub fn with_mask_token(mut self, on: bool) -> Self {
        self.mask_token = on;
        self
    }

    /// The same network with another stochastic-depth rate (0 for the teacher).
    pub fn with_drop_path(mut self, rate: f64) -> Self {
        self.drop_path_rate = rate;
        self
    }

    /// Side of the stored position grid, ⌊img_size / patch⌋.
    pub fn grid_size(&self) -> i64 {
        self.img_size / self.patch_size
    }

    /// MLP hidden width, `int(embed_dim * mlp_ratio)` as in the official code.
    pub fn mlp_hidden(&self) -> i64 {
        (self.embed_dim as f64 * self.mlp_ratio) as i64
    }

    /// The hidden width the blocks' feed-forward network actually has: [`VitConfig::mlp_hidden`]
    /// for the MLP; for SwiGLU dinov2's `SwiGLUFFNFused` rule, `(int(h · 2/3) + 7) // 8 · 8`
    /// with `h = mlp_hidden()` (1536 → 1024 for ViT-S, 6144 → 4096 for ViT-g).
    pub fn ffn_hidden(&self) -> i64 {
        let h = self.mlp_hidden();
        match self.ffn {
            Ffn::Mlp => h,
            Ffn::Swiglu => ((h as f64 * 2.0 / 3.0) as i64 + 7) / 8 * 8,
        }
    }

    /// Per-block stochastic-depth rates, linear from 0 to `drop_path_rate`
    /// (official `torch.linspace(0, drop_path_rate, depth)`).
    pub fn drop_path_rates(&self) -> Vec<f64> {
        let n = self.depth;
        (0..n)
            .map(|i| {
                if n > 1 {
                    self.drop_path_rate * i as f64 / (n - 1) as f64
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// The shape as dino-config's rules see it (negative sizes read as 0, which they reject).
    pub fn shape(&self) -> VitShape {
        let size = |v: i64| v.max(0) as usize;
        VitShape {
            patch_size: size(self.patch_size),
            embed_dim: size(self.embed_dim),
            depth: size(self.depth),
            num_heads: size(self.num_heads),
            mlp_ratio: self.mlp_ratio,
            drop_path_rate: self.drop_path_rate,
            img_size: size(self.img_size),
            layer_norm_eps: self.layer_norm_eps,
        }
    }

    /// Checks the sizes with [`dino_config::check_vit_shape`], the one home of the shape rules
    /// (a config that passed `Config::validate` always passes).
    ///
    /// # Errors
    /// [`ModelError::Config`] naming the first bad value and its `model.*` key.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_vit_shape(&self.shape()).map_err(|e| ModelError::Config(e.to_string()))
    }
}

/// The DINO ViT backbone. Input: float `[B, 3, H, W]`, already normalised, H and W multiples of
/// the patch size (square or not).
#[derive(Debug)]
pub struct VisionTransformer {
    cfg: VitConfig,
    patch_weight: Tensor,
    patch_bias: Tensor,
    cls_token: Tensor,
    pos_embed: Tensor,
    register_tokens: Option<Tensor>,
    mask_token: Option<Tensor>,
    blocks: Vec<Block>,
    norm: LayerNorm,
}

impl VisionTransformer {
    /// Creates the variables under `p` and initialises them as the official code does, drawing
    /// from libtorch's default generator (seed with [`tch::manual_seed`]); with the same seed
    /// the weights equal PyTorch's `vit_*()` bit for bit (checked in `tests/parity.rs`).
    ///
    /// # Errors
    /// [`ModelError::Config`] from [`VitConfig::validate`]; [`ModelError::Torch`].
    pub fn new(p: &nn::Path, cfg: &VitConfig) -> Result<Self, ModelError> {
        cfg.validate()?;
        let (d, ps) = (cfg.embed_dim, cfg.patch_size);
        let g = cfg.grid_size();
        // Registration order of the official module: patch_embed, cls_token, pos_embed, blocks, norm.
        let pe = p / "patch_embed" / "proj";
        let patch_weight = default_weight(&pe, "weight", &[d, 3, ps, ps])?;
        let patch_bias = default_bias(&pe, "bias", d, 3 * ps * ps)?;
        let mut cls_token = p.f_zeros("cls_token", &[1, 1, d])?;
        let mut pos_embed = p.f_zeros("pos_embed", &[1, 1 + g * g, d])?;
        let r = cfg.num_register_tokens;
        let mut register_tokens = match r {
            0 => None,
            _ => Some(p.f_zeros("register_tokens", &[1, r, d])?),
        };
        let opts = BlockOptions {
            layerscale_init: cfg.layerscale_init,
            ffn: cfg.ffn,
            attention: cfg.attention,
        };
        let blocks_p = p / "blocks";
        let mut blocks = cfg
            .drop_path_rates()
            .into_iter()
            .enumerate()
            .map(|(i, dp)| {
                Block::new(
                    &(&blocks_p / i),
                    d,
                    cfg.num_heads,
                    cfg.ffn_hidden(),
                    cfg.qkv_bias,
                    cfg.layer_norm_eps,
                    dp,
                    opts,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let norm = LayerNorm::new(&(p / "norm"), d, cfg.layer_norm_eps)?;
        // dinov2 registers `mask_token` last, as zeros it keeps (no draw: the other weights
        // are those of a network without it).
        let mask_token = match cfg.mask_token {
            true => Some(p.f_zeros("mask_token", &[1, d])?),
            false => None,
        };
        // Then the official re-initialisation, in its order: pos_embed, cls_token, and
        // `self.apply(_init_weights)` over the Linear layers in module order.
        trunc_normal_(&mut pos_embed, TRUNC_NORMAL_STD)?;
        trunc_normal_(&mut cls_token, TRUNC_NORMAL_STD)?;
        if let Some(reg) = register_tokens.as_mut() {
            // dinov2 `init_weights`: `nn.init.normal_(self.register_tokens, std=1e-6)`.
            let _ = tch::no_grad(|| reg.f_normal_(0.0, 1e-6))?;
        }
        for b in blocks.iter_mut() {
            b.attn.qkv.init_trunc_normal()?;
            b.attn.proj.init_trunc_normal()?;
            b.mlp.init_trunc_normal()?;
        }
        Ok(Self {
            cfg: cfg.clone(),
            patch_weight,
            patch_bias,
            cls_token,
            pos_embed,
            register_tokens,
            mask_token,
            blocks,
            norm,
        })
    }

    /// The sizes this network was built with.
    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// Switches how the position table is resized for other grids (e.g. to
    /// [`PosInterp::OfficialScaleFactor`] to reproduce official v1 numbers).
    pub fn set_pos_interp(&mut self, mode: PosInterp) {
        self.cfg.pos_interp = mode;
    }

    /// Token width D (the CLS feature size).
    pub fn embed_dim(&self) -> i64 {
        self.cfg.embed_dim
    }

    /// Per-block stochastic-depth rates actually used.
    pub fn drop_path_rates(&self) -> Vec<f64> {
        self.blocks.iter().map(|b| b.drop_path_rate()).collect()
    }

    /// The `[1, 1 + gh·gw, D]` position embedding for an `H × W` input (the stored table when
    /// the grid matches, else bicubically resized; differentiable).
    ///
    /// # Errors
    /// [`ModelError::NotPatchMultiple`]; see [`interpolate_pos_embed`].
    pub fn pos_embed_for(&self, height: i64, width: i64) -> Result<Tensor, ModelError> {
        let (gh, gw) = self.grid_for(height, width)?;
        interpolate_pos_embed(&self.pos_embed, gh, gw, self.cfg.pos_interp)
    }

    fn grid_for(&self, height: i64, width: i64) -> Result<(i64, i64), ModelError> {
        let p = self.cfg.patch_size;
        if height < p || width < p || height % p != 0 || width % p != 0 {
            return Err(ModelError::NotPatchMultiple {
                height,
                width,
                patch: p,
            });
        }
        Ok((height / p, width / p))
    }

    /// Patch embedding + CLS + position embedding, then the register tokens right after CLS
    /// (no position embedding: dinov2 `prepare_tokens_with_masks`): `[B, 3, H, W]` →
    /// `[B, 1 + R + N, D]`.
    fn prepare_tokens(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        self.prepare_tokens_masked(x, None)
    }

    /// [`Self::prepare_tokens`] with the embeddings of the patches `masks` sets (`[B, N]` bool,
    /// row-major over the patch grid) replaced by `mask_token` before CLS and the position
    /// embedding are added (dinov2 `prepare_tokens_with_masks`).
    fn prepare_tokens_masked(
        &self,
        x: &Tensor,
        masks: Option<&Tensor>,
    ) -> Result<Tensor, ModelError> {
        let size = x.size();
        if size.len() != 4 || size[1] != 3 || !crate::init::is_float(x.kind()) {
            return Err(ModelError::BadInput {
                shape: size,
                kind: x.kind(),
            });
        }
        let (b, h, w) = (size[0], size[2], size[3]);
        let pos = self.pos_embed_for(h, w)?;
        let p = self.cfg.patch_size;
        let patches = x
            .f_conv2d(
                &self.patch_weight,
                Some(&self.patch_bias),
                [p, p],
                [0, 0],
                [1, 1],
                1,
            )?
            .f_flatten(2, 3)?
            .f_transpose(1, 2)?;
        let patches = match masks {
            None => patches,
            Some(m) => {
                let token = self.mask_token.as_ref().ok_or_else(|| {
                    ModelError::Config("masks given to a ViT built without a mask_token".into())
                })?;
                let n = patches.size()[1];
                if m.size() != [b, n] || m.kind() != tch::Kind::Bool {
                    return Err(ModelError::Config(format!(
                        "masks must be bool [{b}, {n}] (crops, patches), got {:?} {:?}",
                        m.kind(),
                        m.size()
                    )));
                }
                let token = token.to_kind(patches.kind()).f_unsqueeze(0)?;
                // where(mask, token, patch): tch's `a.where_self(cond, b)` is torch.where(cond, a, b).
                token.f_where_self(&m.f_unsqueeze(-1)?, &patches)?
            }
        };
        let cls = self.cls_token.f_expand([b, 1, self.cfg.embed_dim], false)?;
        let t = Tensor::f_cat(&[cls, patches], 1)?.f_add(&pos)?;
        let Some(reg) = &self.register_tokens else {
            return Ok(t);
        };
        let n = t.size()[1];
        let reg = reg.f_expand([b, self.cfg.num_register_tokens, self.cfg.embed_dim], false)?;
        Ok(Tensor::f_cat(
            &[t.f_narrow(1, 0, 1)?, reg, t.f_narrow(1, 1, n - 1)?],
            1,
        )?)
    }

    /// All tokens after the final LayerNorm: `[B, 3, H, W]` → `[B, 1 + R + N, D]`, CLS first,
    /// then the R register tokens, then the patches row by row. Callers outside this crate read
    /// them by name through [`VisionTransformer::forward_features`]. `train` enables stochastic depth.
    ///
    /// # Errors
    /// [`ModelError::BadInput`], [`ModelError::NotPatchMultiple`], [`ModelError::Torch`].
    pub fn forward_tokens(&self, x: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        let mut t = self.prepare_tokens(x)?;
        for b in &self.blocks {
            t = b.forward(&t, train)?;
        }
        Ok(self.norm.forward(&t)?)
    }

    /// The normalised tokens by name (DINOv2 `forward_features`): `cls` `[B, D]`, `registers`
    /// `[B, R, D]`, `patches` `[B, N, D]` (N = (H/p)·(W/p), row by row). `train` enables
    /// stochastic depth.
    ///
    /// # Errors
    /// As [`VisionTransformer::forward_tokens`].
    pub fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tokens, ModelError> {
        let seq = self.forward_tokens(x, train)?;
        Ok(Tokens::split(&seq, self.num_register_tokens())?)
    }

    /// [`VisionTransformer::forward_features`] of crops whose masked patches (`masks`, bool
    /// `[B, N]`, row-major over the patch grid; `None` = no mask) are replaced by the
    /// `mask_token` after the patch embedding (dinov2 `prepare_tokens_with_masks`: iBOT's
    /// student on its global crops). The full last block always: the iBOT loss reads the patch
    /// tokens.
    ///
    /// # Errors
    /// As [`VisionTransformer::forward_tokens`]; [`ModelError::Config`] for masks of another
    /// shape or kind, or masks given to a network built without a `mask_token`.
    pub fn forward_features_masked(
        &self,
        x: &Tensor,
        masks: Option<&Tensor>,
        train: bool,
    ) -> Result<Tokens, ModelError> {
        let mut t = self.prepare_tokens_masked(x, masks)?;
        for b in &self.blocks {
            t = b.forward(&t, train)?;
        }
        let seq = self.norm.forward(&t)?;
        Ok(Tokens::split(&seq, self.num_register_tokens())?)
    }

    /// Whether the network has a `mask_token` (iBOT).
    pub fn has_mask_token(&self) -> bool {
        self.mask_token.is_some()
    }

    /// Register tokens R between CLS and the patches (0 for DINO v1).
    pub fn num_register_tokens(&self) -> i64 {
        self.cfg.num_register_tokens
    }

    /// The normalised CLS token `[B, D]` (the official `forward`; DINO's feature).
    ///
    /// # Errors
    /// As [`VisionTransformer::forward_tokens`].
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        Ok(self.forward_tokens(x, train)?.f_select(1, 0)?)
    }

    /// The normalised CLS token `[B, D]` as [`VisionTransformer::forward_t`] computes it, with
    /// the last block run for the CLS row only (keys and values still over every token; see
    /// `Block::forward_cls`): the training forward of a loss that reads only CLS
    /// (`model.cls_only_last_block`). Equal to `forward_t` up to float rounding, loss and
    /// gradients within 1e-5 (`tests/cls_only_block.rs`), with the same stochastic-depth draws
    /// from the same generator state. On the CIFAR-10 preset (17 tokens) the last block's work
    /// drops to about a fifth (the step: 1.23-1.35x); docs/BENCHMARKS.md, "CLS-only last block
    /// and the model forward".
    ///
    /// # Errors
    /// As [`VisionTransformer::forward_tokens`].
    pub fn forward_cls(&self, x: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        let mut t = self.prepare_tokens(x)?;
        let (last, rest) = self.blocks.split_last().expect("depth >= 1 is validated");
        for b in rest {
            t = b.forward(&t, train)?;
        }
        let cls = last.forward_cls(&t, train)?;
        Ok(self.norm.forward(&cls)?.f_select(1, 0)?)
    }

    /// The normalised CLS tokens `[Σ B_g, D]` of several crop groups (`xs`, each `[B_g, 3, H_g,
    /// W_g]`, e.g. the global and the local crops), in order: [`VisionTransformer::forward_t`]
    /// of each group concatenated (or [`VisionTransformer::forward_cls`] with `cls_only`), with
    /// the groups' tokens packed into one `[Σ B_g·N_g, D]` matrix through every block
    /// (`Block::forward_packed`: one matrix product per projection for all groups instead of
    /// one per group, the attention within each group), the CLS-only last block and the final
    /// norm per group. `runtime.pack_crop_groups` turns it on for the student.
    ///
    /// Why: on the CPU the per-call cost of a matrix product (packing the weight, waking the
    /// threads) is paid once instead of once per group, and the weight gradients are one
    /// longer product each: the ViT-S/16 training step on 64 px and 32 px crops 1.02–1.09x per
    /// round on a 2-core AMD EPYC Zen 3 (docs/BENCHMARKS.md, "The allocator, a one-pass EMA and
    /// packed crop groups"). The math is the per-group path's, row by row the same ops; the
    /// weight gradients sum the groups' rows in one product, so they round differently (loss
    /// and gradients within 1e-5: `tests/cls_only_block.rs`).
    /// Stochastic depth draws every mask before the first block, group after group and block
    /// after block, as the per-group path draws them (fp32 draws), so from the same generator
    /// state both drop the same samples.
    ///
    /// # Errors
    /// As [`VisionTransformer::forward_tokens`]; [`ModelError::BadCrops`] for no groups.
    pub fn forward_groups(
        &self,
        xs: &[Tensor],
        train: bool,
        cls_only: bool,
    ) -> Result<Tensor, ModelError> {
        let Some(first) = xs.first() else {
            return Err(ModelError::BadCrops("no crop groups".into()));
        };
        let device = first.device();
        let tokens = xs
            .iter()
            .map(|x| self.prepare_tokens(x))
            .collect::<Result<Vec<_>, _>>()?;
        let d = self.cfg.embed_dim;
        let groups: Vec<(i64, i64)> = tokens.iter().map(|t| (t.size()[0], t.size()[1])).collect();
        let draws = groups
            .iter()
            .map(|&(b, _)| {
                self.blocks
                    .iter()
                    .map(|blk| blk.draw(b, train, device))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rows = tokens
            .iter()
            .zip(&groups)
            .map(|(t, &(b, n))| t.f_reshape([b * n, d]))
            .collect::<Result<Vec<_>, _>>()?;
        let mut x = Tensor::f_cat(&rows, 0)?;
        let packed = self.blocks.len() - usize::from(cls_only);
        for (i, blk) in self.blocks[..packed].iter().enumerate() {
            // Each sample's keep mask repeated over its tokens, group after group: `[T, 1]`.
            let per_row = |k: usize| -> Result<Tensor, tch::TchError> {
                let rows = draws.iter().zip(&groups).map(|(g, &(b, n))| {
                    let m = &g[i].as_ref().expect("every group draws for this block")[k];
                    m.f_expand([b, n, 1], false)?.f_reshape([b * n, 1])
                });
                Tensor::f_cat(&rows.collect::<Result<Vec<_>, _>>()?, 0)
            };
            let masks = match draws[0][i] {
                Some(_) => Some([per_row(0)?, per_row(1)?]),
                None => None,
            };
            x = blk.forward_packed(&x, &groups, masks.as_ref())?;
        }
        let mut cls = Vec::with_capacity(groups.len());
        let mut row = 0;
        for (g, &(b, n)) in groups.iter().enumerate() {
            let t = x.f_narrow(0, row, b * n)?.f_view([b, n, d])?;
            let t = match cls_only {
                true => self.blocks[packed].forward_cls_drawn(&t, draws[g][packed].as_ref())?,
                false => t,
            };
            cls.push(self.norm.forward(&t)?.f_select(1, 0)?);
            row += b * n;
        }
        Ok(Tensor::f_cat(&cls, 0)?)
    }

    /// Attention probabilities of the last block, `[B, heads, T, T]` with T = 1 + R + N,
    /// computed in inference mode through the explicit softmax path (official
    /// `get_last_selfattention`). Row 0 is the CLS query; then R register rows, then the
    /// patches row by row. An attention map reads [`VisionTransformer::last_cls_attention`].
    ///
    /// # Errors
    /// As [`VisionTransformer::forward_tokens`].
    pub fn last_selfattention(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let mut t = self.prepare_tokens(x)?;
        let (last, rest) = self.blocks.split_last().expect("depth >= 1 is validated");
        for b in rest {
            t = b.forward(&t, false)?;
        }
        Ok(last.forward_with_attn(&t)?.1)
    }

    /// The CLS query's attention over the patch keys in the last block, `[B, heads, N]`
    /// (N = gh · gw, row by row; registers left out, not renormalised): what an attention map
    /// shows. Inference mode, explicit softmax path (official `get_last_selfattention`, row 0,
    /// patch columns).
    ///
    /// # Errors
    /// As [`VisionTransformer::forward_tokens`].
    pub fn last_cls_attention(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let attn = self.last_selfattention(x)?;
        Ok(cls_attention_over_patches(
            &attn,
            self.num_register_tokens(),
        )?)
    }

    /// [`VisionTransformer::intermediate_layers`] by name: the tokens of each of the last `n`
    /// blocks through the final LayerNorm, oldest first, each split into `cls` `[B, D]`,
    /// `registers` `[B, R, D]` and `patches` `[B, N, D]` (DINOv2 `get_intermediate_layers`
    /// with `return_class_token`). What the linear probe, token export and video segmentation
    /// read.
    ///
    /// # Errors
    /// As [`VisionTransformer::intermediate_layers`].
    pub fn intermediate_features(&self, x: &Tensor, n: usize) -> Result<Vec<Tokens>, ModelError> {
        let r = self.num_register_tokens();
        self.intermediate_layers(x, n)?
            .iter()
            .map(|t| Ok(Tokens::split(t, r)?))
            .collect()
    }

    /// The token sequences `[B, 1 + R + N, D]` output by each of the last `n` blocks, each passed
    /// through the final LayerNorm (official `get_intermediate_layers`), oldest first; inference
    /// mode. The linear probe concatenates their CLS tokens.
    ///
    /// # Errors
    /// [`ModelError::BadLayerCount`] unless 1 ≤ n ≤ depth; as [`VisionTransformer::forward_tokens`].
    pub fn intermediate_layers(&self, x: &Tensor, n: usize) -> Result<Vec<Tensor>, ModelError> {
        let depth = self.blocks.len();
        if n == 0 || n > depth {
            return Err(ModelError::BadLayerCount { n, depth });
        }
        let mut t = self.prepare_tokens(x)?;
        let mut out = Vec::with_capacity(n);
        for (i, b) in self.blocks.iter().enumerate() {
            t = b.forward(&t, false)?;
            if i >= depth - n {
                out.push(self.norm.forward(&t)?);
            }
        }
        Ok(out)
    }

    /// Every block's output through the explicit attention path, with its attention
    /// probabilities; used to check the fused kernel against the explicit one.
    #[doc(hidden)]
    pub fn forward_tokens_explicit(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let mut t = self.prepare_tokens(x)?;
        for b in &self.blocks {
            t = b.forward_with_attn(&t)?.0;
        }
        Ok(self.norm.forward(&t)?)
    }
}
