//! What the reference tests share: running one of `tests/reference/*.py` with the project's
//! virtualenv into a temporary folder and reading the `results.json` it writes there.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `tests/reference/<script> <dir>`; returns the folder (its fixtures) and the results.
/// Fails with a setup hint when the virtualenv or a package (e.g. scikit-learn) is missing.
pub fn run_reference(script: &str) -> (tempfile::TempDir, Value) {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(&python)
        .arg(repo_root().join("tests/reference").join(script))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{script} failed (a package missing? run scripts/setup.sh)"
    );
    let results = std::fs::read_to_string(dir.path().join("results.json")).unwrap();
    (dir, serde_json::from_str(&results).unwrap())
}
