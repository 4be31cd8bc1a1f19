//! Features of a whole dataset through a frozen backbone (official `extract_features` in
//! `eval_knn.py`): evaluation transform (resize the shorter side, centre crop, normalize), then
//! the backbone in eval mode under no-grad, batch by batch. Decoding and the transform run in
//! parallel on the rayon pool; the forward pass on the caller's thread.

use crate::features::FeatureSet;
use dino_data::dataset::Dataset;
use dino_data::transforms::eval::EvalTransform;
use dino_model::Backbone;
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

/// What [`embed_dataset`] computes per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeatureKind {
    /// The normalized CLS token `[D]` (official k-NN feature); a ResNet's pooled feature.
    #[default]
    Cls,
    /// The CLS token averaged over the input at scales 1, 1/√2 and 1/2 (bilinear resize of the
    /// normalized crop), then L2-normalized: the official `--multiscale` descriptor of
    /// `eval_image_retrieval.py` / `eval_copy_detection.py` (`utils.multi_scale`). With
    /// `patch_tokens` the patch tokens are those of scale 1.
    ClsMultiScale,
    /// The linear-probe feature: CLS tokens of the last `n` blocks concatenated, optionally with
    /// the last block's mean patch token (official `eval_linear.py`). A ResNet gives its pooled
    /// feature, as `eval_linear.py` does for torchvision models (`n`, `avgpool` ignored).
    LastBlocks {
        /// Number of blocks.
        n: usize,
        /// Append the mean patch token.
        avgpool: bool,
    },
}

/// Settings of [`embed_dataset`].
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// Images per forward pass.
    pub batch_size: usize,
    /// Evaluation resize + centre crop.
    pub transform: EvalTransform,
    /// Normalization mean (RGB, [0, 1] units).
    pub mean: [f64; 3],
    /// Normalization std.
    pub std: [f64; 3],
    /// Which feature.
    pub kind: FeatureKind,
    /// Also keep the last block's patch tokens `[N, P, D]` (after the final norm); ViT only.
    pub patch_tokens: bool,
    /// Embed at most this many images (the first ones), e.g. for quick checks.
    pub limit: Option<usize>,
}

/// Errors of [`embed_dataset`].
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// Every image failed to decode.
    #[error("no image of the dataset could be decoded ({failed} failures; first: {first})")]
    NothingDecoded {
        /// Number of failures.
        failed: usize,
        /// The first failure.
        first: String,
    },
    /// The model failed.
    #[error(transparent)]
    Model(#[from] dino_model::ModelError),
    /// libtorch failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// Bad feature shapes.
    #[error(transparent)]
    Features(#[from] crate::features::FeaturesError),
}

/// Features of `dataset` (in index order) and how many images were skipped because they failed
/// to decode (each skipped image is logged with its path; it gets no row).
///
/// Output: [`FeatureSet`] with `features` `[N, F]` f32 on the CPU (F = D for
/// [`FeatureKind::Cls`]), `labels` `[N]`, `paths` from [`Dataset::describe`].
///
/// # Errors
/// [`EmbedError::NothingDecoded`] when no image decodes; model and libtorch errors;
/// [`dino_model::ModelError::NotAVit`] for patch tokens of a ResNet (before any image is read).
pub fn embed_dataset(
    backbone: &Backbone,
    dataset: &dyn Dataset,
    opts: &EmbedOptions,
    device: Device,
) -> Result<(FeatureSet, usize), EmbedError> {
    let whole = backbone;
    let backbone = match backbone {
        Backbone::Vit(v) => v,
        Backbone::ResNet(_) if opts.patch_tokens => {
            return Err(backbone.vit("patch tokens").unwrap_err().into())
        }
        // The multi-scale descriptor averages the pooled feature over scales, as the official
        // `utils.multi_scale` does for any model.
        resnet if opts.kind == FeatureKind::ClsMultiScale => {
            return embed_with(dataset, opts, device, |x| {
                Ok((multi_scale_cls(resnet, x)?, None))
            })
        }
        // CLS and linear-probe features are both the pooled feature (official eval_linear.py).
        resnet => {
            return embed_with(dataset, opts, device, |x| {
                Ok((resnet.forward_t(x, false)?, None))
            })
        }
    };
    embed_with(dataset, opts, device, |x| {
        Ok(match opts.kind {
            FeatureKind::Cls if !opts.patch_tokens => (backbone.forward_t(x, false)?, None),
            FeatureKind::Cls => {
                let tokens = backbone.forward_features(x, false)?;
                (tokens.cls, Some(tokens.patches))
            }
            FeatureKind::ClsMultiScale => {
                let patches = match opts.patch_tokens {
                    true => Some(backbone.forward_features(x, false)?.patches),
                    false => None,
                };
                (multi_scale_cls(whole, x)?, patches)
            }
            FeatureKind::LastBlocks { n, avgpool } => {
                let layers = backbone.intermediate_features(x, n)?;
                let patches = match (opts.patch_tokens, layers.last()) {
                    (true, Some(last)) => Some(last.patches.shallow_clone()),
                    _ => None,
                };
                (
                    crate::features::probe::concat_last_blocks(&layers, avgpool)?,
                    patches,
                )
            }
        })
    })
}

/// The scales of the official multi-scale descriptor (`utils.multi_scale`).
pub const MULTI_SCALES: [f64; 3] = [1.0, std::f64::consts::FRAC_1_SQRT_2, 0.5];

/// CLS tokens `[B, D]` of `x` `[B, 3, H, W]` (a ResNet's pooled feature) averaged over
/// [`MULTI_SCALES`] and L2-normalized per image. Each scale s < 1 resizes `x` bilinearly to
/// `floor(H·s) × floor(W·s)` with PyTorch's `interpolate(scale_factor=s, align_corners=False)`
/// sampling (the scale itself, not the rounded size, maps coordinates), as the official code;
/// for a ViT it then drops the rows and columns past the last whole patch, which the official
/// stride-P patch convolution never reads.
///
/// # Errors
/// Model and libtorch errors (e.g. a scale too small for one patch).
pub fn multi_scale_cls(backbone: &Backbone, x: &Tensor) -> Result<Tensor, EmbedError> {
    let size = x.size();
    let (h, w) = (size[2], size[3]);
    let mut sum: Option<Tensor> = None;
    for s in MULTI_SCALES {
        let input = if s == 1.0 {
            x.shallow_clone()
        } else {
            let out = [(h as f64 * s).floor() as i64, (w as f64 * s).floor() as i64];
            let y = x.f_upsample_bilinear2d(out, false, s, s)?;
            match backbone {
                // The official patch embedding (a stride-P convolution) ignores the last H mod
                // P rows and W mod P columns; ours needs whole patches, so they are cut here.
                Backbone::Vit(v) => {
                    let p = v.config().patch_size;
                    y.f_narrow(2, 0, out[0] / p * p)?
                        .f_narrow(3, 0, out[1] / p * p)?
                }
                Backbone::ResNet(_) => y,
            }
        };
        let f = backbone.forward_t(&input, false)?;
        sum = Some(match sum {
            None => f,
            Some(acc) => acc.f_add(&f)?,
        });
    }
    let v = sum
        .expect("three scales")
        .f_div_scalar(MULTI_SCALES.len() as f64)?;
    let norm = v
        .f_norm_scalaropt_dim(2.0, [1i64].as_slice(), true)?
        .f_clamp_min(1e-12)?;
    Ok(v.f_div(&norm)?)
}

/// Raw-pixel features: the normalized evaluation crop, flattened to `[N, 3·H·W]` (the
/// baseline a learned feature must beat).
///
/// # Errors
/// As [`embed_dataset`].
pub fn embed_pixels(
    dataset: &dyn Dataset,
    opts: &EmbedOptions,
    device: Device,
) -> Result<(FeatureSet, usize), EmbedError> {
    embed_with(dataset, opts, device, |x| Ok((x.f_flatten(1, -1)?, None)))
}

/// One decoded sample: the crop's CHW bytes and its label, or why it failed.
type Decoded = Result<(Vec<u8>, i64), String>;

/// The decode → transform → normalize loop of [`embed_dataset`] with any feature function
/// `f(x [B, 3, H, W] normalized) -> (features [B, F], optional patch tokens [B, P, D])`.
///
/// # Errors
/// As [`embed_dataset`], plus whatever `f` returns.
pub fn embed_with(
    dataset: &dyn Dataset,
    opts: &EmbedOptions,
    device: Device,
    mut f: impl FnMut(&Tensor) -> Result<(Tensor, Option<Tensor>), EmbedError>,
) -> Result<(FeatureSet, usize), EmbedError> {
    let (mut feats, mut patches, mut labels, mut paths) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let failed = for_each_batch(dataset, opts, device, |batch| {
        let (feat, patch) = f(&batch.x)?;
        if let Some(p) = patch {
            patches.push(p.f_to_device(Device::Cpu)?);
        }
        feats.push(feat.f_to_device(Device::Cpu)?);
        labels.extend_from_slice(&batch.labels);
        paths.extend(batch.indices.iter().map(|&i| dataset.describe(i)));
        Ok::<(), EmbedError>(())
    })?;
    let set = FeatureSet::new(
        Tensor::f_cat(&feats, 0)?,
        Tensor::f_from_slice(&labels)?,
        if patches.is_empty() {
            None
        } else {
            Some(Tensor::f_cat(&patches, 0)?)
        },
        paths,
    )?
    .with_classes(dataset.classes().to_vec());
    Ok((set, failed))
}

/// One batch of [`for_each_batch`]: the images that decoded, in index order.
#[derive(Debug)]
pub struct EvalBatch {
    /// Normalized evaluation crops `[B, 3, S, S]` f32 on the device (S = the crop size).
    pub x: Tensor,
    /// Dataset indices of the B rows.
    pub indices: Vec<usize>,
    /// Labels of the B rows.
    pub labels: Vec<i64>,
}

/// Runs `f` on every batch of `dataset` (the first `opts.limit` images) in index order, under
/// no-grad: decode and evaluation transform on the rayon pool, then normalization on `device`.
/// Images that fail to decode are logged with their path and get no row; a batch where none
/// decodes is not passed to `f`. Memory is bounded by one batch. Returns how many failed.
///
/// # Errors
/// [`EmbedError::NothingDecoded`] when no image decodes (after the whole pass); libtorch errors;
/// whatever `f` returns (which stops the pass).
pub fn for_each_batch<E: From<EmbedError>>(
    dataset: &dyn Dataset,
    opts: &EmbedOptions,
    device: Device,
    mut f: impl FnMut(EvalBatch) -> Result<(), E>,
) -> Result<usize, E> {
    let torch = |e: tch::TchError| E::from(EmbedError::Torch(e));
    let n = opts.limit.map_or(dataset.len(), |l| l.min(dataset.len()));
    let crop = opts.transform.crop_size() as i64;
    let mean = Tensor::f_from_slice(&opts.mean.map(|v| v as f32))
        .and_then(|t| t.f_view([1, 3, 1, 1])?.f_to_device(device))
        .map_err(torch)?;
    let std = Tensor::f_from_slice(&opts.std.map(|v| v as f32))
        .and_then(|t| t.f_view([1, 3, 1, 1])?.f_to_device(device))
        .map_err(torch)?;
    let (mut rows, mut failed, mut first_failure) = (0usize, 0usize, String::new());
    let _guard = tch::no_grad_guard();
    for start in (0..n).step_by(opts.batch_size.max(1)) {
        let end = (start + opts.batch_size.max(1)).min(n);
        let decoded: Vec<(usize, Decoded)> = (start..end)
            .into_par_iter()
            .map(|i| {
                let r = dataset.load(i).map_err(|e| e.to_string()).map(|s| {
                    let img = opts.transform.apply(&s.image);
                    let mut chw = vec![0u8; img.as_raw().len()];
                    dino_data::batch::write_chw(&img, &mut chw);
                    (chw, s.label)
                });
                (i, r)
            })
            .collect();
        let mut bytes = Vec::with_capacity(decoded.len() * (3 * crop * crop) as usize);
        let (mut indices, mut labels) = (Vec::new(), Vec::new());
        for (i, r) in decoded {
            match r {
                Ok((chw, label)) => {
                    bytes.extend_from_slice(&chw);
                    labels.push(label);
                    indices.push(i);
                }
                Err(e) => {
                    tracing::warn!(path = %dataset.describe(i), reason = %e, "skipping an image that failed to decode");
                    if failed == 0 {
                        first_failure = format!("{}: {e}", dataset.describe(i));
                    }
                    failed += 1;
                }
            }
        }
        if indices.is_empty() {
            continue;
        }
        let x = Tensor::f_from_slice(&bytes)
            .and_then(|t| {
                t.f_view([indices.len() as i64, 3, crop, crop])?
                    .f_to_device(device)?
                    .f_to_kind(Kind::Float)?
                    .f_div_scalar(255.0)?
                    .f_sub(&mean)?
                    .f_div(&std)
            })
            .map_err(torch)?;
        rows += indices.len();
        f(EvalBatch { x, indices, labels })?;
    }
    if rows == 0 {
        return Err(EmbedError::NothingDecoded {
            failed,
            first: first_failure,
        }
        .into());
    }
    Ok(failed)
}
