//! Typed, validated configuration for DINO training and evaluation.
//!
//! One [`Config`] with a section per concern (data, augmentation, model, head, loss, optim,
//! schedule, checkpoint, eval, runtime, method). Every default equals the official DINO default
//! (`facebookresearch/dino` `main_dino.py` argparse, `eval_knn.py`, `eval_linear.py`) unless its
//! doc comment says otherwise, and every field documents its meaning where it is declared.
//! A preset file lists only what differs from the defaults; `--set section.key=value` overrides
//! any key. Unknown keys, wrong types and out-of-range values are rejected before any work with
//! the key path and the reason ([`ConfigError`]).
//!
//! ```
//! use dino_config::Config;
//!
//! let cfg = Config::from_toml_str("[optim]\nbatch_size = 32\n", &["loss.teacher_temp=0.05"])?;
//! assert_eq!(cfg.optim.batch_size, 32);
//! assert_eq!(cfg.loss.teacher_temp, 0.05);
//! assert_eq!(cfg.head.out_dim, 65536); // official default
//! // The learning rate actually used follows the linear scaling rule lr * batch / 256.
//! assert!((cfg.optim.scaled_lr() - 0.0005 * 32.0 / 256.0).abs() < 1e-12);
//!
//! let err = Config::from_toml_str("[optim]\nlr = -1.0\n", &[]).unwrap_err();
//! assert_eq!(err.key(), "optim.lr");
//! # Ok::<(), dino_config::ConfigError>(())
//! ```

mod batchnorm;
mod derived;
mod error;
mod sections;
mod suggest;
mod validate;

pub use batchnorm::{
    batchnorm_passes, check_batchnorm, resnet_map_sides, resnet_min_side_above_one, BatchNormPass,
};
pub use derived::file_safe_name;
pub use error::ConfigError;
pub use sections::*;
pub use validate::{check_augmentation, check_vit_shape, VitShape};

use std::path::Path;

/// The whole run configuration. Each section's defaults are the official DINO values.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the images come from and how bad files are treated.
    pub data: DataConfig,
    /// The multi-crop augmentation (`DataAugmentationDINO`).
    pub augmentation: AugmentationConfig,
    /// The ViT backbone.
    pub model: ModelConfig,
    /// The DINO projection head.
    pub head: HeadConfig,
    /// The DINO loss: temperatures and centering.
    pub loss: LossConfig,
    /// Optimizer, batch and epochs.
    pub optim: OptimConfig,
    /// Per-iteration schedules other than lr / weight decay end points.
    pub schedule: ScheduleConfig,
    /// Checkpoint location and frequency.
    pub checkpoint: CheckpointConfig,
    /// k-NN, linear probe and online evaluation.
    pub eval: EvalConfig,
    /// Seed, device, thread pools, precision, logging.
    pub runtime: RuntimeConfig,
    /// What the network is trained for: DINO self-distillation (default) or the supervised
    /// baseline.
    pub method: MethodConfig,
    /// DINOv2's iBOT masked-patch loss and its masks (off by default).
    pub ibot: IbotConfig,
}

impl Config {
    /// Parses a TOML document (a preset: only what differs from the defaults), applies
    /// `section.key=value` overrides in order, and validates the result.
    ///
    /// Override values are TOML values (`0.05`, `true`, `[0.4, 1.0]`, `"vit_small"`); a value that
    /// does not parse as TOML is taken as a string, so `--set model.arch=vit_tiny` works unquoted.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key path: TOML syntax, unknown key, wrong type, malformed
    /// override, or a value out of range (see [`Config::validate`]).
    pub fn from_toml_str(text: &str, overrides: &[&str]) -> Result<Self, ConfigError> {
        Self::from_toml_str_noted(text, overrides).map(|(cfg, _)| cfg)
    }

    /// As [`Config::from_toml_str`], with one note per value that followed another key, for
    /// the caller to log: `eval.crop_size` from `augmentation.global_crops_size` when unset, and
    /// the keys bounded by the run (`schedule.warmup_epochs`, `loss.warmup_teacher_temp_epochs`,
    /// `schedule.freeze_last_layer` and `schedule.freeze_backbone_epochs` at most
    /// `optim.epochs`, `eval.n_last_blocks` at most the depth) capped when their value came from
    /// the defaults or `text`. A key given in `overrides` is never changed: a conflicting one is
    /// refused.
    ///
    /// # Errors
    /// As [`Config::from_toml_str`].
    pub fn from_toml_str_noted(
        text: &str,
        overrides: &[&str],
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    message: e.to_string(),
                })?;
        // The overrides alone too: a bounded key given there is refused when it conflicts,
        // one from the file or the defaults scaled to fit (`derived::apply`).
        let mut cli = toml::Table::new();
        for ov in overrides {
            apply_override(&mut table, ov)?;
            apply_override(&mut cli, ov)?;
        }
        let mut cfg: Config = serde_path_to_error::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| {
            let key = e.path().to_string();
            let mut reason = plain_words(e.into_inner().message().trim());
            if reason.starts_with("unknown field") {
                if let Some(near) = suggest::nearest_key(&key) {
                    reason = format!("did you mean `{near}`? ({reason})");
                }
            }
            ConfigError::Invalid {
                key: if key == "." { String::new() } else { key },
                reason,
            }
        })?;
        let notes = derived::apply(&mut cfg, &table, &cli);
        cfg.validate()?;
        Ok((cfg, notes))
    }

    /// Reads a preset file (see [`Config::from_toml_str`]).
    ///
    /// # Errors
    /// [`ConfigError::Io`] when the file cannot be read, else as [`Config::from_toml_str`].
    pub fn from_file(path: impl AsRef<Path>, overrides: &[&str]) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml_str(&text, overrides)
    }

    /// As [`Config::from_file`], with the notes of [`Config::from_toml_str_noted`].
    ///
    /// # Errors
    /// As [`Config::from_file`].
    pub fn from_file_noted(
        path: impl AsRef<Path>,
        overrides: &[&str],
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml_str_noted(&text, overrides)
    }

    /// The defaults with overrides applied (no preset file).
    ///
    /// # Errors
    /// As [`Config::from_toml_str`].
    pub fn with_overrides(overrides: &[&str]) -> Result<Self, ConfigError> {
        Self::from_toml_str("", overrides)
    }

    /// The fully resolved configuration as TOML (every key, defaults included).
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).expect("a Config always serializes to TOML")
    }

    /// Checks every range and cross-section constraint; called by the constructors above.
    ///
    /// # Errors
    /// The first violation found, as [`ConfigError::Invalid`] with its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::validate(self)
    }
}

/// serde's type names in a user's words (`expected usize` → `expected a whole number (0 or
/// more)`), so a config error does not speak Rust.
fn plain_words(message: &str) -> String {
    let mut m = message.to_string();
    for (rust, plain) in [
        ("usize", "a whole number (0 or more)"),
        ("u64", "a whole number (0 or more)"),
        ("u32", "a whole number (0 or more)"),
        ("u8", "a whole number from 0 to 255"),
        ("i64", "a whole number"),
        ("f64", "a number"),
        ("f32", "a number"),
        (
            "an array of length 2",
            "a list of 2 numbers such as [0.4, 1.0] (or 0.4,1.0 in --set)",
        ),
        (
            "an array of length 3",
            "a list of 3 numbers such as [0.485, 0.456, 0.406]",
        ),
        ("a sequence", "a list such as [10, 20] (or 10,20 in --set)"),
        ("a boolean", "true or false"),
    ] {
        m = m.replace(&format!("expected {rust}"), &format!("expected {plain}"));
    }
    m.replace("invalid type: floating point", "invalid type: the number")
        .replace("invalid type: integer", "invalid type: the whole number")
}

/// Sets `a.b.c = value` in a TOML table, creating intermediate tables.
fn apply_override(table: &mut toml::Table, ov: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::Override {
        text: ov.to_string(),
        reason: reason.to_string(),
    };
    let (key, raw) = ov
        .split_once('=')
        .ok_or_else(|| bad("expected section.key=value"))?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("empty key segment"));
    }
    let raw = raw.trim();
    let parse = |text: &str| {
        format!("v = {text}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
    };
    // `0.3,1.0` is the array `[0.3, 1.0]`, as a shell user types a list; anything else that is
    // not TOML is a string.
    let value = parse(raw)
        .or_else(|| {
            raw.contains(',')
                .then(|| parse(&format!("[{raw}]")))
                .flatten()
        })
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, parents) = parts.split_last().expect("non-empty");
    let mut cur = table;
    for (i, p) in parents.iter().enumerate() {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| ConfigError::Invalid {
            key: parts[..=i].join("."),
            reason: "is not a section, cannot set a key inside it".into(),
        })?;
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests;
