//! Backbones for evaluation: from a training run folder (teacher or student of its latest
//! checkpoint, with the run's own configuration) or from a safetensors file (e.g. made by
//! `dino import` from an official `.pth`), whose architecture comes from the given config.

use crate::checkpoint;
use anyhow::Context;
use dino_config::Config;
use dino_model::{load_safetensors_with_prefix, VisionTransformer, VitConfig};
use std::path::Path;
use tch::{nn, Device, Tensor};

/// Which network of a training checkpoint (official `--checkpoint_key`, default teacher).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
pub enum Which {
    /// The EMA teacher (what the paper evaluates).
    #[default]
    Teacher,
    /// The student.
    Student,
}

/// A backbone ready for evaluation, with the variable store that owns its weights.
pub struct Pretrained {
    /// Owns the weights.
    pub vs: nn::VarStore,
    /// The ViT (no stochastic depth).
    pub backbone: VisionTransformer,
    /// The configuration the backbone was built from.
    pub config: Config,
}

impl Pretrained {
    /// The architecture of `config.model` at random initialisation, seeded with
    /// `runtime.seed` (no stochastic depth): the baseline a trained network must beat.
    ///
    /// # Errors
    /// A model configuration the ViT cannot be built from.
    pub fn random(config: &Config, device: Device) -> anyhow::Result<Self> {
        tch::manual_seed(config.runtime.seed as i64);
        let vit = VitConfig::from_model(&config.model)?.with_drop_path(0.0);
        let mut vs = nn::VarStore::new(device);
        let backbone = VisionTransformer::new(&vs.root(), &vit)?;
        vs.freeze();
        Ok(Self {
            vs,
            backbone,
            config: config.clone(),
        })
    }
}

/// The resolved configuration stored in a run folder's `checkpoint.json`, with `key=value`
/// overrides applied on top (validated again).
///
/// # Errors
/// No `checkpoint.json` in `dir`, an unreadable one, or an override that is invalid for the run.
pub fn run_config(dir: &Path, overrides: &[&str]) -> anyhow::Result<Config> {
    let ck_json = dir.join("checkpoint.json");
    anyhow::ensure!(
        ck_json.exists(),
        "{} holds no checkpoint.json (not a dino run folder?)",
        dir.display()
    );
    let meta: checkpoint::CheckpointMeta = serde_json::from_slice(&std::fs::read(&ck_json)?)
        .with_context(|| format!("reading {}", ck_json.display()))?;
    Config::from_toml_str(&meta.config_toml, overrides)
        .with_context(|| format!("configuration stored in {}", ck_json.display()))
}

/// Loads a backbone. `path` is a run folder (holding `checkpoint.json`) or a `.safetensors`
/// file with backbone keys at the root or under `backbone.` / `teacher.backbone.` /
/// `student.backbone.`. For files, `fallback` gives the architecture and every other setting.
/// For folders the run's own configuration is used (so a CIFAR-10 run is evaluated at its
/// own crop size), with the `key=value` `overrides` (the CLI's `--set`) applied on top.
///
/// # Errors
/// A missing or unreadable checkpoint, or weights that do not fit the architecture (the error
/// lists missing and unexpected keys).
pub fn load_backbone(
    path: &Path,
    which: Which,
    fallback: &Config,
    overrides: &[&str],
    device: Device,
) -> anyhow::Result<Pretrained> {
    let prefix_of = |w: Which| match w {
        Which::Teacher => "teacher.backbone.",
        Which::Student => "student.backbone.",
    };
    let (config, file, prefix) = if path.is_dir() {
        let cfg = run_config(path, overrides)?;
        (
            cfg,
            path.join("checkpoint.safetensors"),
            prefix_of(which).to_string(),
        )
    } else {
        dino_model::check_safetensors(path)?;
        let names: Vec<String> = Tensor::read_safetensors(path)
            .with_context(|| format!("reading {}", path.display()))?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let prefix = [prefix_of(which), "backbone.", ""]
            .into_iter()
            .find(|p| {
                names
                    .iter()
                    .any(|n| n.starts_with(p) && n.ends_with("cls_token"))
            })
            .unwrap_or("")
            .to_string();
        (fallback.clone(), path.to_path_buf(), prefix)
    };
    let vit = VitConfig::from_model(&config.model)?.with_drop_path(0.0);
    let mut vs = nn::VarStore::new(device);
    let backbone = VisionTransformer::new(&vs.root(), &vit)?;
    load_safetensors_with_prefix(&mut vs, &file, &prefix, true).with_context(|| {
        format!(
            "loading the backbone from {} (prefix `{prefix}`)",
            file.display()
        )
    })?;
    vs.freeze();
    Ok(Pretrained {
        vs,
        backbone,
        config,
    })
}
