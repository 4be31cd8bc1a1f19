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
    /// output's metadata as `dino_model` ([`MODEL_METADATA`], read back by
    /// [`stored_model`]). `None` for a ResNet. See
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
                " Recognised a ViT with these model keys, stored in the file (every command that \
                 loads it reads them; a --set of the same key wins): {}.",
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
        match &self.model {
            Some(serde_json::Value::Object(m)) => model_sets(m),
            _ => Vec::new(),
        }
    }
}

/// `[model]` keys as `--set` overrides (`model.k=v`, the value as JSON, which TOML reads the
/// same for the numbers, booleans and strings a ViT's keys hold), sorted by key.
fn model_sets(m: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let mut keys: Vec<_> = m.iter().collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    keys.into_iter()
        .map(|(k, v)| format!("model.{k}={v}"))
        .collect()
}

/// Metadata key under which `dino import` stores the recognised ViT (JSON of `[model]` keys).
pub const MODEL_METADATA: &str = "dino_model";

/// The `[model]` keys a weights file carries: what `dino import` recognised and stored in the
/// file's metadata ([`MODEL_METADATA`]), read back by [`stored_model`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoredModel(pub serde_json::Map<String, serde_json::Value>);

impl StoredModel {
    /// The keys as `--set` overrides sorted by key (`model.embed_dim=384`, `model.ffn="swiglu"`,
    /// …): what [`ImportReport::config_overrides`] printed when the file was written.
    pub fn sets(&self) -> Vec<String> {
        model_sets(&self.0)
    }

    /// The keys as a `[model]` section (every other key at its default); `None` when they do
    /// not form one (a key this version does not know).
    pub fn model_config(&self) -> Option<dino_config::ModelConfig> {
        serde_json::from_value(serde_json::Value::Object(self.0.clone())).ok()
    }
}

/// The `[model]` keys `dino import` stored in the safetensors file `file` (its header's
/// `__metadata__`, entry [`MODEL_METADATA`]). `Ok(None)` for a safetensors file without them
/// (a ResNet, a run's checkpoint, an export, a file imported before the keys were stored).
/// Only the header is read, not the tensors.
///
/// # Errors
/// [`WeightsError::Io`] when the file cannot be read; [`WeightsError::NotSafetensors`] for a
/// header that is not safetensors JSON or a `dino_model` entry that is not a JSON object.
pub fn stored_model(file: &Path) -> Result<Option<StoredModel>, WeightsError> {
    use std::io::Read;
    let shown = file.display().to_string();
    let bad = |what: String| WeightsError::NotSafetensors {
        path: shown.clone(),
        what,
        hint: String::new(),
    };
    let io = |cause| WeightsError::Io {
        path: shown.clone(),
        cause,
    };
    let mut f = std::fs::File::open(file).map_err(io)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io)?;
    // safetensors caps its header at 100 MB; a larger length is not a header.
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return Err(bad(format!("a header length of {len} bytes")));
    }
    let mut json = vec![0u8; len as usize];
    f.read_exact(&mut json).map_err(io)?;
    let header: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| bad(format!("header: {e}")))?;
    let Some(text) = header["__metadata__"][MODEL_METADATA].as_str() else {
        return Ok(None);
    };
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(m)) => Ok(Some(StoredModel(m))),
        _ => Err(bad(format!(
            "metadata {MODEL_METADATA} is not a JSON object of [model] keys: {text}"
        ))),
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
