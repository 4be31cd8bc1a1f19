//! What the parity tests share: the repository root, the project virtualenv's Python, running a
//! reference script of `tests/reference/` into a fresh folder, and reading its safetensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::Tensor;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The project virtualenv's Python (`scripts/setup.sh` makes it); panics naming the fix.
pub fn python() -> PathBuf {
    let p = repo().join(".venv/bin/python");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}

/// Runs `tests/reference/<script>` with `args` and `--out` a fresh folder, which it returns;
/// panics with the script's stderr when it fails.
pub fn reference(script: &str, args: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .arg(repo().join("tests/reference").join(script))
        .args(args)
        .arg("--out")
        .arg(dir.path())
        .output()
        .expect("run scripts/setup.sh: the venv python does not start");
    assert!(
        out.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Every tensor of a safetensors file by name.
pub fn read(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}
