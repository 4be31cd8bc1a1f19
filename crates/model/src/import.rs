//! Converting official PyTorch `.pth` checkpoints to safetensors (runs
//! `python/import_checkpoint.py` of this crate, embedded in the library, with the project's Python).

use crate::error::WeightsError;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
}

/// The Python used for conversions: `$DINO_PYTHON` if set; else the first
/// `.venv/bin/python` found walking up from the running executable's folder (a binary in
/// `target/release/` finds the repository's `.venv`); else `python3` from `PATH`.
pub fn find_python() -> PathBuf {
    if let Some(p) = std::env::var_os("DINO_PYTHON") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            let cand = dir.join(".venv").join("bin").join("python");
            if cand.is_file() {
                return cand;
            }
        }
    }
    PathBuf::from("python3")
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
    let python = find_python();
    let err = |reason: String| WeightsError::Import {
        from: from.display().to_string(),
        reason,
    };
    let mut cmd = Command::new(&python);
    cmd.arg("-").arg("--from").arg(from).arg("--out").arg(out);
    if let Some(k) = key {
        cmd.arg("--key").arg(k);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            err(format!(
                "cannot run {} ({e}); set DINO_PYTHON or run scripts/setup.sh",
                python.display()
            ))
        })?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(SCRIPT.as_bytes())
        .map_err(|e| err(format!("writing the script to {}: {e}", python.display())))?;
    let output = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !output.status.success() {
        let msg = String::from_utf8_lossy(&output.stderr);
        let last = msg
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message");
        return Err(err(format!(
            "{} exited with {}: {}",
            python.display(),
            output.status,
            last
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| err(format!("bad report {line:?}: {e}")))?;
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
    })
}
