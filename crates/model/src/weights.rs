//! Reading and writing weights as safetensors under the official PyTorch state-dict names.
//!
//! A [`tch::nn::VarStore`] built with [`crate::MultiCropWrapper::new`] at the root has exactly
//! the keys of the official `MultiCropWrapper.state_dict()` (`backbone.…`, `head.…`); a bare
//! [`crate::VisionTransformer`] at the root has the keys of the official backbone's state dict
//! (`cls_token`, `blocks.0.norm1.weight`, …). A PyTorch state dict written as safetensors
//! therefore loads with no renaming table. Official `.pth` checkpoints are converted first by
//! [`crate::import_official`].

use crate::error::WeightsError;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tch::{nn::VarStore, Tensor};

/// The tensor names of a safetensors file, read from its header alone (8-byte little-endian
/// length, then the JSON table; `__metadata__` left out), so asking what a checkpoint holds
/// does not load its tensors.
///
/// # Errors
/// [`WeightsError::Io`] when the file cannot be read or its header is not a JSON table.
pub fn safetensors_names(path: &Path) -> Result<Vec<String>, WeightsError> {
    use std::io::Read;
    let io = |cause| WeightsError::Io {
        path: path.display().to_string(),
        cause,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io)?;
    let mut header = vec![0u8; u64::from_le_bytes(len) as usize];
    f.read_exact(&mut header).map_err(io)?;
    let table: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    Ok(table
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k != "__metadata__")
        .collect())
}

/// Checks from its first bytes that `path` is a safetensors file, so that a PyTorch `.pth`
/// given by mistake gets an answer that says what it is and how to convert it, instead of the
/// parser's `HeaderTooLarge` (tch-rs#247).
///
/// safetensors starts with an 8-byte little-endian header length and the JSON header's `{`;
/// `torch.save` writes a zip archive (`PK\x03\x04`, PyTorch >= 1.6) or a pickle (`\x80`
/// protocol byte, older files).
///
/// # Errors
/// [`WeightsError::Io`] when the file cannot be read; [`WeightsError::NotSafetensors`] naming
/// the file, what it looks like and, for PyTorch checkpoints and `.pth`/`.pt` names, the exact
/// `dino import` command.
pub fn check_safetensors(path: &Path) -> Result<(), WeightsError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let io = |cause| WeightsError::Io {
        path: shown.clone(),
        cause,
    };
    let mut head = Vec::with_capacity(9);
    std::fs::File::open(path)
        .map_err(io)?
        .take(9)
        .read_to_end(&mut head)
        .map_err(io)?;
    let what = match head.as_slice() {
        [n @ .., b'{'] if n.len() == 8 => return Ok(()),
        [b'P', b'K', 3, 4, ..] => "a zip archive: a PyTorch checkpoint saved by torch.save",
        [0x80, 2..=5, ..] => "a Python pickle: a PyTorch checkpoint saved by torch.save",
        h if h.len() < 9 => "too short for a safetensors header",
        _ => "no safetensors header",
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let torch_like =
        what.contains("PyTorch") || matches!(ext.as_str(), "pth" | "pt" | "tar" | "ckpt" | "bin");
    let hint = if torch_like {
        let stem = path.with_extension("safetensors");
        format!(
            "; a PyTorch checkpoint? convert it first: dino import --from {} --out {}",
            path.display(),
            stem.display()
        )
    } else {
        String::new()
    };
    Err(WeightsError::NotSafetensors {
        path: shown,
        what: what.into(),
        hint,
    })
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Variables copied from the file.
    pub loaded: usize,
    /// Network variables the file lacks (left unchanged). Empty after a strict load.
    pub missing: Vec<String>,
    /// File tensors (under the selected prefix) with no variable. Empty after a strict load.
    pub unexpected: Vec<String>,
}

/// Loads every variable of `vs` from the safetensors file `path` (names must match exactly).
/// Values are copied into the existing variables, keeping their kind and device (a bf16 or
/// fp64 file loads into an fp32 network as fp32).
///
/// With `strict`, any missing or unexpected name is an error listing all of them and nothing is
/// changed; without it, matching names are loaded and the rest reported.
///
/// # Errors
/// [`WeightsError::KeyMismatch`] (strict), [`WeightsError::Shape`] when a matching name has
/// another shape (always, before anything is copied), [`WeightsError::Torch`] when the file
/// cannot be read or parsed.
pub fn load_safetensors(
    vs: &mut VarStore,
    path: &Path,
    strict: bool,
) -> Result<LoadReport, WeightsError> {
    load_safetensors_with_prefix(vs, path, "", strict)
}

/// As [`load_safetensors`], considering only the file's tensors whose name starts with
/// `prefix`, with the prefix removed: e.g. `prefix = "backbone."` loads the backbone of a
/// `MultiCropWrapper` file into a bare [`crate::VisionTransformer`] store, ignoring `head.*`.
///
/// # Errors
/// As [`load_safetensors`].
pub fn load_safetensors_with_prefix(
    vs: &mut VarStore,
    path: &Path,
    prefix: &str,
    strict: bool,
) -> Result<LoadReport, WeightsError> {
    check_safetensors(path)?;
    let file: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)?
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix(prefix).map(|k| (k.to_string(), t)))
        .collect();
    let vars = vs.variables();
    let names: BTreeSet<&String> = vars.keys().collect();
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !file.contains_key(n.as_str()))
        .map(|n| n.to_string())
        .collect();
    let unexpected: Vec<String> = file
        .keys()
        .filter(|k| !vars.contains_key(k.as_str()))
        .map(|k| format!("{prefix}{k}"))
        .collect();
    let shown = path.display().to_string();
    if strict && !(missing.is_empty() && unexpected.is_empty()) {
        return Err(WeightsError::KeyMismatch {
            path: shown,
            missing,
            unexpected,
        });
    }
    for (name, var) in &vars {
        if let Some(src) = file.get(name) {
            if src.size() != var.size() {
                return Err(WeightsError::Shape {
                    path: shown,
                    name: name.clone(),
                    expected: var.size(),
                    found: src.size(),
                });
            }
        }
    }
    let mut loaded = 0;
    tch::no_grad(|| -> Result<(), WeightsError> {
        for (name, var) in &vars {
            if let Some(src) = file.get(name) {
                let mut v = var.shallow_clone();
                v.f_copy_(src)?;
                loaded += 1;
            }
        }
        Ok(())
    })?;
    Ok(LoadReport {
        loaded,
        missing,
        unexpected,
    })
}

/// Writes every variable of `vs` (trainable or not, e.g. a frozen `last_layer.weight_g` and
/// BatchNorm running statistics) to `path` as safetensors, on the CPU, under its name.
///
/// # Errors
/// [`WeightsError::Torch`] when the file cannot be written.
pub fn save_safetensors(vs: &VarStore, path: &Path) -> Result<(), WeightsError> {
    let vars = vs.variables();
    let mut named: Vec<(String, Tensor)> = Vec::with_capacity(vars.len());
    for (k, v) in vars {
        named.push((
            k,
            v.f_detach()?
                .f_to_device(tch::Device::Cpu)?
                .f_contiguous()?,
        ));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Tensor::write_safetensors(&named, path)?;
    Ok(())
}
