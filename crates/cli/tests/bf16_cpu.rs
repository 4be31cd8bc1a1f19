//! `runtime.precision = "bf16"` on CPU: the forward passes really run under autocast (the
//! weights differ from an fp32 run of the same seed), training stays finite, and the saved
//! weights, optimizer state and center stay fp32. `runtime.precision = "auto"` trains exactly as
//! the precision it resolves to on this CPU, says so, and records it, also across `--resume`.

use std::path::Path;
use std::process::Command;

use crate::common;
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

/// Runs `dino` with `args`, asserts success, and returns its stderr (the log).
fn dino(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dino"))
        .args(args)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "dino {args:?} failed:\n{log}");
    log
}

/// The `precision` field of the run's `checkpoint.json`.
fn recorded_precision(run: &Path) -> String {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("checkpoint.json")).unwrap()).unwrap();
    meta["precision"].as_str().unwrap_or_default().to_string()
}

#[test]
fn auto_precision_trains_as_its_resolution_and_records_it() {
    // What `auto` must become here: bf16 only on a CPU with avx512_bf16 or amx_bf16.
    let native = dino_model::CpuBf16Flags::detect().native();
    let expect = if native { "bf16" } else { "fp32" };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_images(&data);
    let (da, dp) = (tmp.path().join("auto"), tmp.path().join("pinned"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&dp).unwrap();
    let (ra, rp) = (da.join("run"), dp.join("run"));
    let train = |cfg: &Path, run: &Path| {
        dino(&[
            "train".as_ref(),
            "--no-progress".as_ref(),
            "--max-steps".as_ref(),
            "3".as_ref(),
            "--config".as_ref(),
            cfg.as_os_str(),
            "--output".as_ref(),
            run.as_os_str(),
        ])
    };
    let resume = |run: &Path| {
        dino(&[
            "train".as_ref(),
            "--no-progress".as_ref(),
            "--max-steps".as_ref(),
            "2".as_ref(),
            "--resume".as_ref(),
            run.as_os_str(),
        ])
    };

    let log = train(&write_config(&da, &data, "precision = \"auto\""), &ra);
    let line = format!("precision auto → {expect} (CPU has ");
    assert!(log.contains(&line), "no {line:?} in the log:\n{log}");
    assert!(
        !log.contains("emulates bf16"),
        "auto never picks emulated bf16:\n{log}"
    );
    let pinned = format!("precision = \"{expect}\"");
    train(&write_config(&dp, &data, &pinned), &rp);
    assert_eq!(recorded_precision(&ra), expect);
    assert_eq!(recorded_precision(&rp), expect);
    // The run keeps the setting, not its resolution: a resume re-resolves on its own machine.
    let stored = std::fs::read_to_string(ra.join("config.toml")).unwrap();
    assert!(stored.contains("precision = \"auto\""), "{stored}");

    // Resumed, it resolves the same way on the same machine and stays equal to the pinned run.
    let log = resume(&ra);
    assert!(log.contains(&line), "no {line:?} after --resume:\n{log}");
    resume(&rp);
    assert_eq!(recorded_precision(&ra), expect);
    let (a, p) = (tensors(&ra), tensors(&rp));
    assert_eq!(a.len(), p.len());
    for ((na, ta), (np, tp)) in a.iter().zip(&p) {
        assert_eq!(na, np);
        assert!(
            ta.equal(tp),
            "{na}: auto differs from pinned {expect} after 3 + 2 steps"
        );
    }
}

#[test]
fn env_reports_the_cpu_bf16_flags_and_what_auto_picks() {
    let flags = dino_model::CpuBf16Flags::detect();
    let expect = if flags.native() { "bf16" } else { "fp32" };
    let out = Command::new(env!("CARGO_BIN_EXE_dino"))
        .args(["env", "--json", "--set", "runtime.device=cpu"])
        .args(["--set", "runtime.precision=bf16"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["cpu_bf16_flags"], serde_json::json!(flags.names()));
    assert_eq!(r["auto_precision"], expect, "{r}");
    assert!(
        r["auto_precision_reason"]
            .as_str()
            .unwrap()
            .starts_with("CPU has "),
        "{r}"
    );
    // A pinned value is reported as pinned, whatever auto would pick.
    assert_eq!(r["config_precision"], "bf16");
    assert_eq!(r["precision"], "bf16");
    let text = Command::new(env!("CARGO_BIN_EXE_dino"))
        .args(["env", "--set", "runtime.device=cpu"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("precision       auto → {expect} on Cpu (CPU has ")),
        "{text}"
    );
}
