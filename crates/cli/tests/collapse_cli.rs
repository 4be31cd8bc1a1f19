//! The collapse monitor in real training: tiny runs without a momentum teacher (which
//! collapse, paper Table 7) with and without a BatchNorm head are flagged, and a healthy control
//! is not. The monitor on synthetic sequences: crates/train/tests/collapse.rs.

use std::process::Command;

use crate::common;
use common::tiny::tiny_run;

// Tiny real runs (K = 64, 240 iterations, about 6 s each on 2 cores).

/// Trains the tiny model for 40 epochs of 6 steps with `sets`; returns the collapse warnings
/// of the `--json` summary and the log (stderr).
fn tiny_train(sets: &[&str]) -> (Vec<String>, String) {
    let (tmp, cfg) = tiny_run("");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dino"));
    cmd.args(["train", "--json", "--no-progress", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(tmp.path().join("run"));
    // lr 0.008 per 256 images: the runs move within 240 steps (the default 5e-4 barely leaves
    // the initialisation at batch 8). With the BatchNorm head the teacher entropy then settles
    // at 97-98 % of ln K, where the former rule (a window mean of at least 98 %) never fired.
    for s in [
        "optim.epochs=40",
        "optim.lr=0.008",
        "checkpoint.every_steps=0",
    ]
    .iter()
    .chain(sets)
    {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "dino train failed:\n{log}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = summary["collapse_warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    (warnings, log)
}

/// No momentum teacher (the teacher is the student, paper Table 7: collapse) and a flat
/// teacher temperature of 0.2, as in dino issue #246's failing settings.
const NO_MOMENTUM_TEACHER: [&str; 4] = [
    "schedule.momentum_teacher=0",
    "schedule.momentum_teacher_end=0",
    "loss.teacher_temp=0.2",
    "loss.warmup_teacher_temp=0.2",
];

fn assert_uniform_collapse_reported(warnings: &[String], log: &str) {
    assert!(!warnings.is_empty(), "no collapse warning; log:\n{log}");
    for w in warnings {
        assert!(w.contains("uniform collapse"), "{w}");
        let step: usize = w
            .split("at step ")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no step in {w}"));
        assert!(
            step >= 149,
            "fired at step {step}, before the grace and a full window"
        );
        // The summary and the log carry the same warning.
        assert!(log.contains(w.as_str()), "{w} missing from the log");
    }
    assert!(log.contains("WARN"), "{log}");
}

#[test]
fn tiny_run_without_momentum_teacher_and_batchnorm_head_is_flagged() {
    let mut sets = NO_MOMENTUM_TEACHER.to_vec();
    sets.push("head.use_bn=true");
    let (warnings, log) = tiny_train(&sets);
    assert_uniform_collapse_reported(&warnings, &log);
}

#[test]
fn tiny_run_without_momentum_teacher_and_plain_head_is_flagged() {
    let mut sets = NO_MOMENTUM_TEACHER.to_vec();
    sets.push("head.use_bn=false");
    let (warnings, log) = tiny_train(&sets);
    assert_uniform_collapse_reported(&warnings, &log);
}

#[test]
fn tiny_healthy_run_is_not_flagged() {
    // The official momentum and temperatures with the same head and lr.
    let (warnings, log) = tiny_train(&["head.use_bn=true"]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(!log.contains("collapse"), "{log}");
}
