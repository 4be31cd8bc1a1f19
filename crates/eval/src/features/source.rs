//! Where evaluated features come from: the teacher or student of a training run folder (with
//! the run's own configuration), a `.safetensors` backbone (e.g. made by `dino import` from an
//! official `.pth`, its architecture from the given config), the same architecture at random
//! initialisation, or raw pixels.
//!
//! [`Embedder`](crate::features::source::Embedder) loads one such source and embeds datasets with it;
//! `dino eval`, `dino embed` and `dino attention` all go through it, so every command resolves a
//! source the same way.

use std::path::{Path, PathBuf};

use dino_config::{Config, ConfigError};
use dino_data::dataset::Dataset;
use dino_data::transforms::eval::EvalTransform;
use dino_data::transforms::TransformError;
use dino_model::{
    load_safetensors_with_prefix, Backbone, BackboneConfig, ModelError, WeightsError,
};
use tch::{nn, Device};

use crate::features::embed::{embed_dataset, embed_pixels, EmbedError, EmbedOptions, FeatureKind};
use crate::features::FeatureSet;

/// Which network features come from (`dino eval … --which`; for a training checkpoint the
/// official `--checkpoint_key`, default teacher). The one "which network" type: the CLI parses
/// it directly (crate feature `clap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Source {
    /// The checkpoint's EMA teacher (official default).
    #[default]
    Teacher,
    /// The checkpoint's student.
    Student,
    /// The same architecture at random initialisation (seed `runtime.seed`): the baseline a
    /// trained network must beat.
    Random,
    /// Raw pixels of the evaluation crop, flattened.
    Pixels,
}

impl Source {
    /// Whether this source is a baseline that needs no trained weights (random, pixels).
    pub fn is_baseline(self) -> bool {
        matches!(self, Source::Random | Source::Pixels)
    }

    /// Prefix of this network's backbone in a training checkpoint's tensor names; `None` for
    /// the baselines, which have no trained weights.
    fn prefix(self) -> Option<&'static str> {
        match self {
            Source::Teacher => Some("teacher.backbone."),
            Source::Student => Some("student.backbone."),
            Source::Random | Source::Pixels => None,
        }
    }
}

/// Errors of resolving and loading a feature source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The teacher or the student was asked for without a checkpoint to take it from.
    #[error(
        "the {0:?} features need a checkpoint (only the random and pixel baselines can do \
         without one)"
    )]
    NoCheckpoint(Source),
    /// [`load_backbone`] was asked for a baseline (random, pixels), which has no weights.
    #[error("the {0:?} baseline has no trained weights to load")]
    Baseline(Source),
    /// A folder given as a run folder holds no `checkpoint.json`.
    #[error("{} holds no checkpoint.json (not a dino run folder?)", .0.display())]
    NotARunFolder(PathBuf),
    /// A file could not be read.
    #[error("reading {}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `checkpoint.json` is not what `dino train` writes.
    #[error("reading {}", .path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The configuration stored in a run folder is invalid (with the overrides applied).
    #[error("configuration stored in {}", .path.display())]
    StoredConfig {
        /// The run folder's `checkpoint.json`.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ConfigError,
    },
    /// The weights do not fit the architecture, or the file is not safetensors.
    #[error("loading the backbone from {} (prefix `{prefix}`)", .file.display())]
    Load {
        /// The safetensors file.
        file: PathBuf,
        /// The prefix of the backbone's tensor names in it.
        prefix: String,
        /// The cause (lists missing and unexpected keys); boxed, as it is the largest cause.
        #[source]
        source: Box<WeightsError>,
    },
    /// The weights loaded hold NaN or infinite values (e.g. a student whose BatchNorm running
    /// variance became NaN): no feature of them would be finite.
    #[error(
        "the backbone in {} (prefix `{prefix}`) holds NaN or infinite values in {} tensor(s): \
         {}{}; features of it cannot be evaluated (for a training run, try the other network \
         with --which, or an earlier checkpoint)",
        .file.display(),
        .tensors.len(),
        .tensors.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
        if .tensors.len() > 5 { ", …" } else { "" }
    )]
    NonFiniteWeights {
        /// The safetensors file.
        file: PathBuf,
        /// The prefix of the backbone's tensor names in it.
        prefix: String,
        /// The non-finite tensors, by their name in the backbone, sorted.
        tensors: Vec<String>,
    },
    /// The file is not safetensors (the message says how to convert a PyTorch checkpoint).
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The architecture cannot be built, or the device is unavailable.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The evaluation crop settings are invalid.
    #[error(transparent)]
    Transform(#[from] TransformError),
    /// Embedding failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// libtorch failed reading a weight file.
    #[error("reading {}", .path.display())]
    Torch {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: tch::TchError,
    },
}

/// A backbone ready for evaluation, with the variable store that owns its weights.
pub struct Pretrained {
    /// Owns the weights.
    pub vs: nn::VarStore,
    /// The ViT (no stochastic depth) or ResNet.
    pub backbone: Backbone,
    /// The configuration the backbone was built from.
    pub config: Config,
}

impl Pretrained {
    /// The architecture of `config.model` at random initialisation, seeded with
    /// `runtime.seed` (no stochastic depth): the baseline a trained network must beat.
    ///
    /// # Errors
    /// [`SourceError::Model`] for a model configuration the backbone cannot be built from.
    pub fn random(config: &Config, device: Device) -> Result<Self, SourceError> {
        tch::manual_seed(config.runtime.seed as i64);
        let (vs, backbone) = frozen_backbone(config, false, device, |_| Ok(()))?;
        Ok(Self {
            vs,
            backbone,
            config: config.clone(),
        })
    }
}

/// Builds `config.model`'s backbone (a ViT without stochastic depth, or a ResNet; with iBOT's
/// `mask_token` when the weights to load carry one, so an iBOT run loads strictly though no
/// evaluation masks a patch), fills it with `load`, and freezes it.
fn frozen_backbone(
    config: &Config,
    mask_token: bool,
    device: Device,
    load: impl FnOnce(&mut nn::VarStore) -> Result<(), SourceError>,
) -> Result<(nn::VarStore, Backbone), SourceError> {
    let cfg = BackboneConfig::from_model(&config.model)?
        .without_drop_path()
        .with_mask_token(mask_token);
    let mut vs = nn::VarStore::new(device);
    let backbone = Backbone::new(&vs.root(), &cfg)?;
    load(&mut vs)?;
    vs.freeze();
    Ok((vs, backbone))
}

/// Names of the variables of `vs` holding a NaN or an infinity, sorted.
/// (`file` names the weights in a libtorch error.)
fn non_finite_variables(vs: &nn::VarStore, file: &Path) -> Result<Vec<String>, SourceError> {
    let mut bad = Vec::new();
    for (name, t) in vs.variables() {
        let finite = t
            .f_isfinite()
            .and_then(|f| f.f_all())
            .and_then(|a| a.f_int64_value(&[]))
            .map_err(|source| SourceError::Torch {
                path: file.to_path_buf(),
                source,
            })?;
        if finite == 0 {
            bad.push(name);
        }
    }
    bad.sort();
    Ok(bad)
}

/// The one field of a run folder's `checkpoint.json` that evaluation needs. The file is
/// written by `dino_train::checkpoint` (`CheckpointMeta`), which this crate cannot name:
/// dino-train depends on dino-eval.
#[derive(serde::Deserialize)]
struct StoredConfig {
    /// The resolved run configuration as TOML.
    config_toml: String,
}

/// The resolved configuration stored in a run folder's `checkpoint.json`, with `key=value`
/// overrides applied on top (validated again).
///
/// # Errors
/// [`SourceError::NotARunFolder`] when `dir` has no `checkpoint.json`; [`SourceError::Io`] or
/// [`SourceError::Json`] for an unreadable one; [`SourceError::StoredConfig`] for an override
/// that is invalid for the run.
pub fn run_config(dir: &Path, overrides: &[&str]) -> Result<Config, SourceError> {
    let path = dir.join("checkpoint.json");
    if !path.exists() {
        return Err(SourceError::NotARunFolder(dir.to_path_buf()));
    }
    let bytes = std::fs::read(&path).map_err(|source| SourceError::Io {
        path: path.clone(),
        source,
    })?;
    let stored: StoredConfig =
        serde_json::from_slice(&bytes).map_err(|source| SourceError::Json {
            path: path.clone(),
            source,
        })?;
    Config::from_toml_str(&stored.config_toml, overrides)
        .map_err(|source| SourceError::StoredConfig { path, source })
}

/// The configuration an evaluation of `source` runs with, when it is the run folder's own:
/// `Some` (read by [`run_config`], `overrides` on top) when `checkpoint` is a run folder and
/// the caller has no preset file of its own (`preset_given` false), so that a CIFAR-10 run is
/// evaluated at its own crop size. `None` when the caller's configuration (preset and
/// overrides) applies: for a `.safetensors` file, for a run folder with a preset, and for the
/// baselines without a checkpoint.
///
/// # Errors
/// [`SourceError::NoCheckpoint`] for the teacher or student without a checkpoint; as
/// [`run_config`].
pub fn run_folder_config(
    checkpoint: Option<&Path>,
    source: Source,
    preset_given: bool,
    overrides: &[&str],
) -> Result<Option<Config>, SourceError> {
    match checkpoint {
        Some(c) if c.is_dir() && !preset_given => run_config(c, overrides).map(Some),
        Some(_) => Ok(None),
        None if source.is_baseline() => Ok(None),
        None => Err(SourceError::NoCheckpoint(source)),
    }
}

/// Loads a backbone. `path` is a run folder (holding `checkpoint.json`) or a `.safetensors`
/// file with backbone keys at the root or under `backbone.` / `teacher.backbone.` /
/// `student.backbone.`. For files, `fallback` gives the architecture and every other setting.
/// For folders the run's own configuration is used (so a CIFAR-10 run is evaluated at its
/// own crop size), with the `key=value` `overrides` (the CLI's `--set`) applied on top.
///
/// # Errors
/// [`SourceError::Baseline`] when `which` is not the teacher or the student; as
/// [`run_config`]; [`SourceError::Weights`] for a file that is not safetensors (the message
/// says how to convert a PyTorch checkpoint); [`SourceError::Load`] for weights that do not fit
/// the architecture (listing missing and unexpected keys); [`SourceError::NonFiniteWeights`] for
/// weights or BatchNorm statistics holding NaN or infinities.
pub fn load_backbone(
    path: &Path,
    which: Source,
    fallback: &Config,
    overrides: &[&str],
    device: Device,
) -> Result<Pretrained, SourceError> {
    let network = which.prefix().ok_or(SourceError::Baseline(which))?;
    let (config, file, prefix, names) = if path.is_dir() {
        let cfg = run_config(path, overrides)?;
        let file = path.join("checkpoint.safetensors");
        // A missing or unreadable file is reported by the load below.
        let names = dino_model::safetensors_names(&file).unwrap_or_default();
        (cfg, file, network.to_string(), names)
    } else {
        dino_model::check_safetensors(path)?;
        let names = dino_model::safetensors_names(path)?;
        // The first prefix under which a backbone of this architecture is found (its
        // `cls_token` for a ViT, its `conv1.weight` for a ResNet).
        let marker = BackboneConfig::from_model(&fallback.model)?.marker_key();
        let prefix = [network, "backbone.", ""]
            .into_iter()
            .find(|p| names.iter().any(|n| *n == format!("{p}{marker}")))
            .unwrap_or("")
            .to_string();
        (fallback.clone(), path.to_path_buf(), prefix, names)
    };
    let mask_token = names.iter().any(|n| *n == format!("{prefix}mask_token"));
    let (vs, backbone) = frozen_backbone(&config, mask_token, device, |vs| {
        load_safetensors_with_prefix(vs, &file, &prefix, true)
            .map(|_| ())
            .map_err(|source| SourceError::Load {
                file: file.clone(),
                prefix: prefix.clone(),
                source: Box::new(source),
            })
    })?;
    let tensors = non_finite_variables(&vs, &file)?;
    if !tensors.is_empty() {
        return Err(SourceError::NonFiniteWeights {
            file,
            prefix,
            tensors,
        });
    }
    Ok(Pretrained {
        vs,
        backbone,
        config,
    })
}

/// Embeds datasets with one feature [`Source`].
pub struct Embedder {
    /// The configuration features are computed with: the run folder's for a run, else the
    /// caller's (crop size, normalisation, batch size, architecture).
    pub cfg: Config,
    device: Device,
    source: Source,
    /// Every source has a backbone, pixels included (its configuration is the one used).
    pretrained: Pretrained,
}

impl Embedder {
    /// Loads `source` on `device`: the teacher or student from `checkpoint` (a run folder or a
    /// `.safetensors` file, see [`load_backbone`]), or for the baselines the architecture at
    /// random initialisation (a run folder's own when `checkpoint` is one, else `fallback`'s).
    /// `fallback` is the configuration from [`run_folder_config`] or the caller's.
    ///
    /// # Errors
    /// [`SourceError::NoCheckpoint`] for the teacher or student without `checkpoint`; as
    /// [`load_backbone`] and [`Pretrained::random`].
    pub fn new(
        checkpoint: Option<&Path>,
        source: Source,
        fallback: &Config,
        overrides: &[&str],
        device: Device,
    ) -> Result<Self, SourceError> {
        // The baselines take only the architecture: no weights are read for them.
        let p = match (checkpoint, source) {
            (Some(c), Source::Teacher) => {
                load_backbone(c, Source::Teacher, fallback, overrides, device)?
            }
            (Some(c), Source::Student) => {
                load_backbone(c, Source::Student, fallback, overrides, device)?
            }
            (None, Source::Teacher | Source::Student) => {
                return Err(SourceError::NoCheckpoint(source))
            }
            (Some(c), _) if c.is_dir() => Pretrained::random(&run_config(c, overrides)?, device)?,
            _ => Pretrained::random(fallback, device)?,
        };
        Ok(Self {
            cfg: p.config.clone(),
            device,
            source,
            pretrained: p,
        })
    }

    /// The loaded backbone (the random one for [`Source::Pixels`]).
    pub fn backbone(&self) -> &Backbone {
        &self.pretrained.backbone
    }

    /// The backbone's variables (official names at the root), e.g. for `dino export`.
    pub fn variables(&self) -> &nn::VarStore {
        &self.pretrained.vs
    }

    /// The device features are computed on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The source features come from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Embedding settings from `cfg.eval` (batch size, evaluation resize and crop) and
    /// `cfg.augmentation`'s normalisation, for features of `kind`, with the last block's patch
    /// tokens when `patch_tokens`.
    ///
    /// # Errors
    /// [`SourceError::Transform`] for invalid evaluation crop settings.
    pub fn options(
        &self,
        kind: FeatureKind,
        patch_tokens: bool,
    ) -> Result<EmbedOptions, SourceError> {
        let e = &self.cfg.eval;
        Ok(EmbedOptions {
            batch_size: e.batch_size,
            transform: EvalTransform::new(e.crop_size, e.resize_ratio)?,
            mean: self.cfg.augmentation.mean,
            std: self.cfg.augmentation.std,
            kind,
            patch_tokens,
            limit: None,
        })
    }

    /// Features of `ds` in index order (see [`embed_dataset`]); images that fail to decode are
    /// skipped with a warning.
    ///
    /// # Errors
    /// [`SourceError::Embed`] when no image decodes, or from the model.
    pub fn embed(&self, ds: &dyn Dataset, opts: &EmbedOptions) -> Result<FeatureSet, SourceError> {
        let (set, failed) = match self.source {
            Source::Pixels => embed_pixels(ds, opts, self.device)?,
            _ => embed_dataset(&self.pretrained.backbone, ds, opts, self.device)?,
        };
        if failed > 0 {
            tracing::warn!("{failed} image(s) failed to decode and were skipped");
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_folder_config_applies_to_a_folder_without_a_preset() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path();
        let file = run.join("weights.safetensors");
        // Baselines need no checkpoint; the teacher and student do.
        assert!(run_folder_config(None, Source::Random, false, &[])
            .unwrap()
            .is_none());
        assert!(run_folder_config(None, Source::Pixels, true, &[])
            .unwrap()
            .is_none());
        assert!(matches!(
            run_folder_config(None, Source::Student, false, &[]),
            Err(SourceError::NoCheckpoint(Source::Student))
        ));
        // A weight file and a folder with a preset take the caller's configuration.
        assert!(run_folder_config(Some(&file), Source::Teacher, false, &[])
            .unwrap()
            .is_none());
        assert!(run_folder_config(Some(run), Source::Teacher, true, &[])
            .unwrap()
            .is_none());
        // A folder without a preset must be a run folder.
        let err = run_folder_config(Some(run), Source::Teacher, false, &[]).unwrap_err();
        assert!(matches!(err, SourceError::NotARunFolder(_)), "{err}");
        let stored = Config::with_overrides(&["optim.lr=0.25"]).unwrap();
        let meta = serde_json::json!({ "config_toml": stored.to_toml_string(), "epoch": 3 });
        std::fs::write(run.join("checkpoint.json"), meta.to_string()).unwrap();
        let cfg = run_folder_config(Some(run), Source::Random, false, &["optim.epochs=70"])
            .unwrap()
            .unwrap();
        assert_eq!(cfg.optim.lr, 0.25);
        assert_eq!(cfg.optim.epochs, 70);
        // An override the run's configuration rejects names the file.
        let err = run_config(run, &["optim.nope=1"]).unwrap_err();
        assert!(matches!(err, SourceError::StoredConfig { .. }), "{err}");
        assert!(err.to_string().contains("checkpoint.json"), "{err}");
    }
}
