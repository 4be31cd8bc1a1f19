//! Converting official PyTorch `.pth` checkpoints to safetensors (runs
//! `python/import_checkpoint.py` of this crate, embedded in the library, with the project's Python).

use crate::error::WeightsError;
use crate::python::run_script;
use std::path::{Path, PathBuf};

/// The converter, compiled in so the library needs no repository checkout at run time.
const SCRIPT: &str = include_str!("../python/import_checkpoint.py");

/// What [`import_official`] converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The checkpoint entry used (`teacher`, `student`, …); `None` for a bare state dict.
    pub key: Option<String>,
    /// `"backbone"` (backbone-only source, keys given a `backbone.` prefix) or `"multicrop"`
    /// (source had `backbone.` / `head.` keys).
    pub layout: String,
    /// Tensors written.
    pub tensors: usize,
    /// Of which under `backbone.`.
    pub backbone_tensors: usize,
    /// Of which under `head.`.
    pub head_tensors: usize,
    /// Prefixes removed from the source names (`module.` from DistributedDataParallel).
    pub stripped_prefixes: Vec<String>,
    /// Source entries that were not tensors and were dropped.
    pub skipped: Vec<String>,
    /// The Python interpreter that ran the conversion.
    pub python: PathBuf,
    /// The ViT recognised from the tensors, as `[model]` keys (`patch_size`, `embed_dim`,
    /// `depth`, `num_heads`, `mlp_ratio`, `qkv_bias`, `img_size`, `num_register_tokens`,
    /// `layerscale_init`, `ffn` and, for a DINOv2 file, `pos_interpolation`); also stored in the
    /// output's metadata as `dino_model`. `None` for a ResNet. See
    /// [`ImportReport::config_overrides`].
    pub model: Option<serde_json::Value>,
}

impl ImportReport {
    /// What was converted, as a sentence for the user (`dino import` prints it), e.g.
    /// "Converted x.pth (its `teacher` entry, prefixes `module.` removed) to x.safetensors: 180
    /// tensors, 172 of the backbone and 8 of the head."
    pub fn describe(&self, from: &Path, out: &Path) -> String {
        let mut source = Vec::new();
        match &self.key {
            Some(k) => source.push(format!("its `{k}` entry")),
            None => source.push("a bare state dict".to_string()),
        }
        if self.layout == "backbone" {
            source.push("a backbone alone, named `backbone.*`".to_string());
        }
        if !self.stripped_prefixes.is_empty() {
            let p: Vec<String> = self
                .stripped_prefixes
                .iter()
                .map(|p| format!("`{p}`"))
                .collect();
            source.push(format!("prefixes {} removed", p.join(", ")));
        }
        let head = match self.head_tensors {
            0 => "no head".to_string(),
            n => format!("{n} of the head"),
        };
        let mut text = format!(
            "Converted {} ({}) to {}: {} tensors, {} of the backbone and {head}.",
            from.display(),
            source.join(", "),
            out.display(),
            self.tensors,
            self.backbone_tensors
        );
        let sets = self.config_overrides();
        if !sets.is_empty() {
            text.push_str(&format!(
                " Recognised a ViT; load it with these model keys: {}.",
                sets.join(" ")
            ));
        }
        if !self.skipped.is_empty() {
            text.push_str(&format!(
                " Left out {} entries that hold no tensor: {}.",
                self.skipped.len(),
                self.skipped.join(", ")
            ));
        }
        text
    }
}

impl ImportReport {
    /// The recognised ViT as a `[model]` section (the other keys at their defaults); `None` for
    /// a ResNet.
    pub fn model_config(&self) -> Option<dino_config::ModelConfig> {
        serde_json::from_value(self.model.clone()?).ok()
    }

    /// The recognised model as `--set` overrides (`model.patch_size=14`, `model.ffn="swiglu"`,
    /// …), sorted by key; empty for a ResNet.
    pub fn config_overrides(&self) -> Vec<String> {
        let Some(serde_json::Value::Object(m)) = &self.model else {
            return Vec::new();
        };
        let mut keys: Vec<_> = m.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        keys.into_iter()
            .map(|(k, v)| format!("model.{k}={v}"))
            .collect()
    }
}

/// Converts the PyTorch checkpoint `from` to the safetensors file `out` with the key names of
/// [`crate::MultiCropWrapper`] (`backbone.…`, `head.…`). Handles the released backbone-only
/// `.pth` files and full training checkpoints (`student` / `teacher` entries, `module.` and
/// `backbone.` prefixes); `key` picks the entry (default: `teacher` when present). The output
/// loads with [`crate::load_safetensors`] (strict for a full wrapper; with
/// [`crate::load_safetensors_with_prefix`]`("backbone.")` into a bare backbone).
///
/// # Errors
/// [`WeightsError::Import`] when Python cannot start, the file is not a readable checkpoint,
/// the key is absent (the message lists the available ones), or the output cannot be written.
pub fn import_official(
    from: &Path,
    out: &Path,
    key: Option<&str>,
) -> Result<ImportReport, WeightsError> {
    let err = |reason: String| WeightsError::Import {
        from: from.display().to_string(),
        reason,
    };
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--from".as_ref(),
        from.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ];
    if let Some(k) = key {
        args.push("--key".as_ref());
        args.push(std::ffi::OsStr::new(k));
    }
    let (v, python) = run_script(&[("import_checkpoint.py", SCRIPT)], &args).map_err(err)?;
    let strs = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let num = |k: &str| v[k].as_u64().unwrap_or(0) as usize;
    Ok(ImportReport {
        key: v["key"].as_str().map(String::from),
        layout: v["layout"].as_str().unwrap_or("").to_string(),
        tensors: num("tensors"),
        backbone_tensors: num("backbone"),
        head_tensors: num("head"),
        stripped_prefixes: strs("stripped"),
        skipped: strs("skipped"),
        python,
        model: Some(v["model"].clone()).filter(|m| m.is_object()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_a_sentence() {
        let mut r = ImportReport {
            key: Some("teacher".into()),
            layout: "multicrop".into(),
            tensors: 158,
            backbone_tensors: 150,
            head_tensors: 8,
            stripped_prefixes: vec!["module.".into()],
            skipped: vec!["epoch".into()],
            python: PathBuf::from("python3"),
            model: None,
        };
        let text = r.describe(Path::new("ck.pth"), Path::new("ck.safetensors"));
        assert_eq!(
            text,
            "Converted ck.pth (its `teacher` entry, prefixes `module.` removed) to \
             ck.safetensors: 158 tensors, 150 of the backbone and 8 of the head. Left out 1 \
             entries that hold no tensor: epoch."
        );
        (r.key, r.layout, r.head_tensors) = (None, "backbone".into(), 0);
        (r.stripped_prefixes, r.skipped) = (vec![], vec![]);
        let text = r.describe(Path::new("b.pth"), Path::new("b.safetensors"));
        assert!(
            !text.contains("ImportReport") && !text.contains("None"),
            "{text}"
        );
        assert!(
            text.contains("(a bare state dict, a backbone alone, named `backbone.*`)")
                && text.ends_with("and no head."),
            "{text}"
        );
    }
}
