//! The model keys a weights file of `dino import` carries (stored in its metadata), read by
//! every command that loads a backbone from a file — `--checkpoint` of the evaluation commands
//! (`crate::eval::ModelArgs::embedder`) and `dino train --init-from` — so the file is used
//! without repeating the `--set model.*` lines the import printed. They go between the preset
//! and the user's `--set`: over the preset's `[model]` (the file knows its own shape; a DINOv2
//! preset's 224-px table is not a hub file's 518), under an explicit `--set`, which wins with
//! one warning line naming what the file said.

use anyhow::Context;
use dino_config::{Config, ModelConfig};
use dino_model::StoredModel;
use std::path::{Path, PathBuf};

/// The model keys stored in one weights file.
pub struct FileModel {
    file: PathBuf,
    stored: StoredModel,
}

/// The keys whose resolved values are the network's shape under a named arch
/// ([`ModelConfig::dims`]): compared through `dims()`, not field by field.
const DIMS_KEYS: [&str; 4] = ["arch", "embed_dim", "depth", "num_heads"];

impl FileModel {
    /// The keys `file` carries; `None` for a folder, a missing file, or a safetensors file
    /// without stored keys (a run's checkpoint, an export, a ResNet's import).
    ///
    /// # Errors
    /// A file whose safetensors header cannot be read, or whose stored keys are not a JSON
    /// object. (A file that is not safetensors at all is `None`: its loader reports it.)
    pub fn read(file: &Path) -> anyhow::Result<Option<Self>> {
        if !file.is_file() || dino_model::check_safetensors(file).is_err() {
            return Ok(None);
        }
        let stored = dino_model::stored_model(file)
            .with_context(|| format!("reading the model keys stored in {}", file.display()))?;
        Ok(stored.map(|stored| Self {
            file: file.to_path_buf(),
            stored,
        }))
    }

    /// The `--set` overrides the file stands for, in the order `model.key=value` by key; to
    /// be applied after the preset and before the user's `--set`.
    pub fn sets(&self) -> Vec<String> {
        self.stored.sets()
    }

    /// The keys of `user_sets` (`--set key=value` as given, shortcuts included) that contradict
    /// the file in the resolved `cfg`: `(key, the file's value, the value used)`, by key (for
    /// the network's shape, the shape keys the user set, joined).
    /// A key counts only when the user set it (the preset's `[model]` yields to the file
    /// silently); `arch`, `embed_dim`, `depth` and `num_heads` contradict when the resolved
    /// width, depth or heads differ (`vit_small` is the file's `custom` 384 × 12 × 6).
    pub fn conflicts(&self, cfg: &Config, user_sets: &[String]) -> Vec<(String, String, String)> {
        let set_by_user = |key: &str| {
            user_sets
                .iter()
                .any(|s| s.split('=').next().map(str::trim) == Some(&format!("model.{key}")))
        };
        let Some(file_model) = self.stored.model_config() else {
            return Vec::new();
        };
        let used = serde_json::to_value(&cfg.model).unwrap_or_default();
        let mut out = Vec::new();
        let dims_set: Vec<&str> = DIMS_KEYS.into_iter().filter(|k| set_by_user(k)).collect();
        if file_model.dims() != cfg.model.dims() && !dims_set.is_empty() {
            let show = |m: &ModelConfig| {
                let (w, d, h) = m.dims();
                format!("{} (width {w}, depth {d}, {h} heads)", m.arch.name())
            };
            out.push((
                dims_set.join(", model."),
                show(&file_model),
                show(&cfg.model),
            ));
        }
        for (key, value) in &self.stored.0 {
            if DIMS_KEYS.contains(&key.as_str()) || !set_by_user(key) {
                continue;
            }
            let now = &used[key.as_str()];
            let same = match (value.as_f64(), now.as_f64()) {
                (Some(a), Some(b)) => a == b,
                _ => value == now,
            };
            if !same {
                out.push((key.clone(), value.to_string(), now.to_string()));
            }
        }
        out.sort();
        out
    }

    /// Logs what the file gave: one line naming the keys taken from it, and one warning line
    /// when an explicit `--set` contradicts it (the `--set` is what was used).
    pub fn report(&self, cfg: &Config, user_sets: &[String]) {
        tracing::info!(
            "{} carries the model it was imported with (dino import): {} (over the preset's \
             [model]; an explicit --set model.* wins)",
            self.file.display(),
            self.sets().join(" ")
        );
        let conflicts = self.conflicts(cfg, user_sets);
        if !conflicts.is_empty() {
            let each: Vec<String> = conflicts
                .iter()
                .map(|(k, file, used)| {
                    format!("model.{k}: the file says {file}, --set gives {used}")
                })
                .collect();
            tracing::warn!(
                "--set overrides the model stored in {} ({}): the --set values are used, and \
                 the weights load only if they still fit",
                self.file.display(),
                each.join("; ")
            );
        }
    }
}
