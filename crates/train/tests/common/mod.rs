//! Helpers shared by the integration tests: run a reference script of `tests/reference/` with
//! the project virtualenv's Python and read its `.npy` outputs (parity tests). The tiny training
//! runs of the `dino` binary's tests are in crates/cli/tests/common.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use tch::Tensor;

/// The project virtualenv's Python; fails (never skips) when it is missing.
pub fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        p.exists(),
        "the Python reference environment {} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}

/// Runs `tests/reference/<script>` with `args`, where `{out}` is replaced by a fresh temporary
/// folder, which is returned (deleted on drop).
pub fn run_reference(script: &str, args: &[&str]) -> tempfile::TempDir {
    let out = tempfile::tempdir().expect("temp dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/reference")
        .join(script);
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{out}", &out.path().to_string_lossy()))
        .collect();
    let res = Command::new(python())
        .arg(&script)
        .args(&args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("failed to start the reference Python (run scripts/setup.sh)");
    assert!(
        res.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    out
}

/// Reads `<dir>/<name>.npy`.
pub fn npy(dir: &Path, name: &str) -> Tensor {
    Tensor::read_npy(dir.join(format!("{name}.npy")))
        .unwrap_or_else(|e| panic!("reading {name}.npy: {e}"))
}

/// The values of a tensor as f64.
pub fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(
        &t.to_kind(tch::Kind::Double)
            .to_device(tch::Device::Cpu)
            .reshape([-1]),
    )
    .unwrap()
}

/// Asserts |a − b| <= atol + rtol·|b| elementwise.
pub fn assert_close(what: &str, a: &[f64], b: &[f64], atol: f64, rtol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= atol + rtol * y.abs(),
            "{what}[{i}]: got {x}, expected {y} (diff {:e})",
            (x - y).abs()
        );
    }
}
