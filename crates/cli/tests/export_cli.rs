//! `dino export` end to end: a TorchScript export of a preset's architecture loads in libtorch
//! and gives CLS features of the preset's width at a non-square size; bad requests fail before
//! any model is built and write nothing.

use std::path::PathBuf;
use std::process::Command;
use tch::{Device, Kind, Tensor};

fn dino() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dino"));
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    c.env("DINO_PYTHON", repo.join(".venv/bin/python"));
    c.current_dir(repo);
    c
}

#[test]
fn torchscript_export_of_a_preset_runs_in_libtorch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested/vit.pt");
    let o = dino()
        .args([
            "export",
            "--which",
            "random",
            "--config",
            "configs/cifar10_cpu.toml",
        ])
        .args(["--format", "torchscript", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = tch::CModule::load(&out).unwrap();
    // The preset: width 128, patch 8; 24 x 40 is a grid the 32-px table was never sized for.
    let x = Tensor::randn([3, 3, 24, 40], (Kind::Float, Device::Cpu));
    let y = tch::no_grad(|| m.forward_ts(&[x])).unwrap();
    assert_eq!(y.size(), [3, 128]);
}

#[test]
fn bad_requests_fail_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vit.onnx");
    let base = ["export", "--config", "configs/cifar10_cpu.toml", "--out"];
    for (extra, needle) in [
        (
            vec!["--which", "random", "--format", "tensorrt"],
            "possible values",
        ),
        (
            vec!["--which", "pixels", "--format", "onnx"],
            "no network to export",
        ),
        (vec!["--format", "onnx"], "--checkpoint is required"),
    ] {
        let o = dino().args(base).arg(&out).args(&extra).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(needle),
            "{extra:?}: {err}"
        );
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
}
