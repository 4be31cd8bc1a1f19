//! `runtime.precision = "bf16"` on CPU: the forward passes really run under autocast (the
//! weights differ from an fp32 run of the same seed), training stays finite, and the saved
//! weights, optimizer state and center stay fp32.

use std::path::Path;
use std::process::Command;

mod common;
use common::tiny::{make_images, tensors, write_config};

fn train(cfg: &Path, out: &Path) {
    let st = Command::new(env!("CARGO_BIN_EXE_dino"))
        .args(["train", "--no-progress", "--max-steps", "4", "--config"])
        .arg(cfg)
        .arg("--output")
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success(), "dino train failed for {}", cfg.display());
}

#[test]
fn bf16_autocast_trains_on_cpu_with_fp32_state() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_images(&data);
    let (d32, d16) = (tmp.path().join("fp32"), tmp.path().join("bf16"));
    std::fs::create_dir_all(&d32).unwrap();
    std::fs::create_dir_all(&d16).unwrap();
    train(&write_config(&d32, &data, ""), &d32.join("run"));
    train(
        &write_config(&d16, &data, "precision = \"bf16\""),
        &d16.join("run"),
    );

    let (a, b) = (tensors(&d32.join("run")), tensors(&d16.join("run")));
    assert_eq!(a.len(), b.len());
    let mut max_diff = 0f64;
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        if ta.kind() == tch::Kind::Float {
            assert_eq!(tb.kind(), tch::Kind::Float, "{nb} saved as {:?}", tb.kind());
            assert!(tb.isfinite().all().int64_value(&[]) == 1, "{nb} not finite");
            let d = (ta - tb).abs().max().double_value(&[]);
            max_diff = max_diff.max(d);
        }
    }
    // Same seed, same data: only the arithmetic differs, so a zero difference would mean
    // autocast never reached the training forward.
    assert!(
        max_diff > 0.0,
        "bf16 run is bitwise equal to fp32: autocast not applied"
    );
    assert!(
        max_diff < 0.5,
        "bf16 drifted far from fp32 in 4 steps: {max_diff}"
    );
}
