//! Gradient accumulation (`optim.accum_steps`, issue #17): 2 micro-batches of 4 make the same
//! optimizer steps as 1 batch of 8, on one process and on two (`dino launch`, 2 micro-batches of
//! 2 per process); checkpoints sit at optimizer-step boundaries and resume exactly there; 0 is
//! refused before any work.
//!
//! Why the runs can be compared: the loader deals micro-batch `2s` and `2s + 1` of batch 4 the
//! epoch-order positions `[8s, 8s + 8)` of batch `s` of 8 (and with 2 processes each rank takes
//! every other position of them), and each image's crops depend only on (seed, epoch, index).
//! Stochastic depth is off (its masks depend on how images are split) and the precision is fp32.
//!
//! Tolerance: the runs differ only in float summation order (a mean over 8 rows vs the mean of
//! two means of 4, gradients summed over micro-batches). After 18 AdamW steps we allow 5e-5
//! absolute on every logged loss and on every weight, center and optimizer moment (the bar of
//! the distributed test); `--nocapture` prints the measured worst differences.

use std::path::Path;
use std::process::Command;

use crate::common;
use common::tiny::{tensors, tiny_run};

const DINO: &str = env!("CARGO_BIN_EXE_dino");

/// torchrun's variables, removed so a single-process run is one even under a launcher.
const DIST_VARS: [&str; 6] = [
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
];

/// No stochastic depth, fp32, one step record per optimizer step.
const COMMON: [&str; 5] = [
    "--no-progress",
    "--set",
    "model.drop_path_rate=0.0",
    "--set",
    "runtime.precision=\"fp32\"",
];

fn dino(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(DINO);
    for v in DIST_VARS {
        c.env_remove(v);
    }
    c.args(args).output().unwrap()
}

fn ok(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `train` (or `launch --nproc-per-node 2 -- train` when `two`) of `cfg` into `out` with
/// `batch` images per micro-batch and `accum` micro-batches per step.
fn run(cfg: &str, out: &Path, two: bool, batch: usize, accum: usize, extra: &[&str]) {
    let (b, a) = (
        format!("optim.batch_size={batch}"),
        format!("optim.accum_steps={accum}"),
    );
    let mut args = if two {
        vec!["launch", "--nproc-per-node", "2", "--", "train"]
    } else {
        vec!["train"]
    };
    args.extend(["--config", cfg, "--output", out.to_str().unwrap()]);
    args.extend(COMMON);
    args.extend(["--set", &b, "--set", &a]);
    args.extend(extra);
    ok(
        dino(&args),
        &format!(
            "{} process(es), batch {batch} x accum {accum}",
            1 + two as usize
        ),
    );
}

/// (global_step, loss, lr) of every step record in the run's metrics.
fn steps(run: &Path) -> Vec<(u64, f64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "step")
        .map(|v| {
            (
                v["global_step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap(),
                v["lr"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn meta(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint.json")).unwrap()).unwrap()
}

/// The worst absolute difference between the two runs' step losses and checkpoint tensors,
/// asserting the same steps, learning rates and checkpoint layout on the way.
fn worst_differences(a: &Path, b: &Path) -> (f64, (f64, String)) {
    let (sa, sb) = (steps(a), steps(b));
    assert_eq!(sa.len(), sb.len(), "same number of optimizer steps");
    let mut worst_loss = 0.0f64;
    for (x, y) in sa.iter().zip(&sb) {
        assert_eq!(x.0, y.0, "same global steps");
        assert_eq!(x.2, y.2, "the same lr at step {} (effective batch 8)", x.0);
        worst_loss = worst_loss.max((x.1 - y.1).abs());
    }
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(
        ta.iter().map(|t| &t.0).collect::<Vec<_>>(),
        tb.iter().map(|t| &t.0).collect::<Vec<_>>(),
        "same checkpoint layout"
    );
    let mut worst = (0.0f64, String::new());
    for ((name, x), (_, y)) in ta.iter().zip(&tb) {
        if !x.is_floating_point() {
            assert!(x.equal(y), "{name} differs");
            continue;
        }
        let d = (x - y).abs().max().double_value(&[]);
        if d > worst.0 {
            worst = (d, name.clone());
        }
    }
    (worst_loss, worst)
}

#[test]
fn two_micro_batches_of_4_are_one_batch_of_8_with_and_without_two_processes() {
    let (tmp, cfg) = tiny_run("log_every = 1");
    let cfg = cfg.to_str().unwrap();
    let dir = |n: &str| tmp.path().join(n);
    let (big, acc, acc2) = (dir("big"), dir("acc"), dir("acc2"));
    run(cfg, &big, false, 8, 1, &[]);
    run(cfg, &acc, false, 4, 2, &[]);
    run(cfg, &acc2, true, 2, 2, &[]);

    let s = steps(&big);
    assert_eq!(s.len(), 18, "48 images / 8 = 6 optimizer steps x 3 epochs");
    assert!((s[0].1 - s[17].1).abs() > 1e-3, "the loss moved");
    for (name, run) in [("1 process, 4 x 2", &acc), ("2 processes, 2 x 2", &acc2)] {
        let (loss, (d, worst)) = worst_differences(&big, run);
        eprintln!("{name}: worst loss |Δ| {loss:e}; worst tensor |Δ| {d:e} ({worst})");
        assert!(loss < 5e-5, "{name}: loss curves differ by {loss:e}");
        assert!(d < 5e-5, "{name}: {worst} differs by {d:e}");
    }
    let center = tensors(&acc)
        .into_iter()
        .find(|(n, _)| n.contains("center"))
        .expect("a center in the checkpoint")
        .1;
    assert!(
        center.abs().max().double_value(&[]) > 0.0,
        "the center moved"
    );
    let m = meta(&acc2);
    assert_eq!(
        (m["world_size"].as_u64(), m["epoch"].as_u64()),
        (Some(2), Some(3))
    );
}

#[test]
fn checkpoints_sit_at_optimizer_steps_and_resume_there() {
    let (tmp, cfg) = tiny_run("log_every = 1");
    let cfg = cfg.to_str().unwrap();
    let (full, part) = (tmp.path().join("full"), tmp.path().join("part"));
    run(cfg, &full, false, 4, 2, &[]);
    // --max-steps counts optimizer steps: 3 of them are 6 micro-batches, 24 images of epoch 0.
    run(cfg, &part, false, 4, 2, &["--max-steps", "3"]);
    let m = meta(&part);
    assert_eq!(
        (
            m["epoch"].as_u64(),
            m["step_in_epoch"].as_u64(),
            m["global_iter"].as_u64(),
            m["data_position"].as_u64()
        ),
        (Some(0), Some(3), Some(3), Some(24))
    );
    assert_eq!(steps(&part).len(), 3);
    ok(
        dino(&["train", "--no-progress", "--resume", part.to_str().unwrap()]),
        "resuming after 3 optimizer steps",
    );
    // The resumed run continues at micro-batch 6 with the saved center and moments: the same
    // steps and the same end as the uninterrupted run.
    let (loss, (d, worst)) = worst_differences(&full, &part);
    eprintln!("resumed: worst loss |Δ| {loss:e}; worst tensor |Δ| {d:e} ({worst})");
    assert_eq!(
        loss, 0.0,
        "the resumed run logs the uninterrupted run's losses"
    );
    assert_eq!(d, 0.0, "{worst} differs after the resume by {d:e}");
}

#[test]
fn an_epoch_remainder_that_fills_no_window_is_skipped() {
    // 48 images in micro-batches of 4 = 12 a epoch; windows of 5 give 2 steps a epoch, and the
    // last 2 micro-batches of every epoch are not used.
    let (tmp, cfg) = tiny_run("log_every = 1");
    let out = tmp.path().join("run");
    run(cfg.to_str().unwrap(), &out, false, 4, 5, &[]);
    let s = steps(&out);
    assert_eq!(
        s.iter().map(|x| x.0).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>(),
        "2 optimizer steps x 3 epochs"
    );
    assert_eq!(meta(&out)["epoch"].as_u64(), Some(3));
}

#[test]
fn accum_steps_zero_is_refused_before_any_work() {
    let (tmp, cfg) = tiny_run("");
    let out = tmp.path().join("never");
    let o = dino(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--set",
        "optim.accum_steps=0",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("optim.accum_steps"), "{err}");
    assert!(err.contains("at least 1"), "{err}");
    assert!(!out.exists(), "nothing written");
}
