//! Exact resume: a run killed with SIGKILL mid-training and resumed with `--resume` ends with
//! bitwise-identical student, teacher, optimizer state and center to an uninterrupted run
//! (CPU, fixed seed; issue "trainer": checkpoints and resume).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::tiny::{tensors, tiny_run, train_args};

const DINO: &str = env!("CARGO_BIN_EXE_dino");

fn position(run: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(run.join("checkpoint.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((v["epoch"].as_u64()?, v["step_in_epoch"].as_u64()?))
}

fn train(args: &[&str]) {
    let out = Command::new(DINO)
        .args(args)
        .arg("--no-progress")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dino {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn killed_and_resumed_run_matches_uninterrupted_run_bitwise() {
    let (tmp, cfg) = tiny_run("");
    let (full, killed) = (tmp.path().join("full"), tmp.path().join("killed"));

    train(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        full.to_str().unwrap(),
    ]);
    assert_eq!(
        position(&full),
        Some((3, 0)),
        "the uninterrupted run ends after 3 epochs"
    );

    let mut child = Command::new(DINO)
        .args([
            "train",
            "--no-progress",
            "--config",
            cfg.to_str().unwrap(),
            "--output",
        ])
        .arg(&killed)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while position(&killed).is_none_or(|p| p == (0, 0)) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = position(&killed).unwrap();
    assert!(
        at_kill < (3, 0),
        "the run finished before it could be killed: {at_kill:?}"
    );

    train(&["train", "--resume", killed.to_str().unwrap()]);
    assert_eq!(position(&killed), Some((3, 0)));

    let (a, b) = (tensors(&full), tensors(&killed));
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter().any(|(n, _)| n.starts_with("teacher."))
            && a.iter().any(|(n, _)| n.starts_with("optim."))
    );
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(
            ta.equal(tb),
            "{na} differs after kill -9 at {at_kill:?} and resume"
        );
    }
}

#[test]
fn a_second_run_into_a_used_folder_is_refused() {
    let (tmp, cfg) = tiny_run("");
    let run = tmp.path().join("run");
    train(&train_args(
        cfg.to_str().unwrap(),
        run.to_str().unwrap(),
        "2",
    ));
    let out = Command::new(DINO)
        .args([
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--output",
            run.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
}

#[test]
fn a_stop_at_an_unsaved_epoch_end_still_leaves_its_position() {
    // 48 images / batch 8 = 6 steps an epoch; with latest_every_epochs = 2 the end of epoch 0
    // writes nothing, so stopping there must write the checkpoint itself.
    let (tmp, cfg) = tiny_run("");
    let run = tmp.path().join("run");
    let (cfg, run_s) = (cfg.to_str().unwrap(), run.to_str().unwrap());
    let sets = [
        "--set",
        "checkpoint.every_steps=0",
        "--set",
        "checkpoint.latest_every_epochs=2",
    ];
    let mut args = train_args(cfg, run_s, "6");
    args.extend(sets);
    train(&args);
    assert_eq!(position(&run), Some((1, 0)));
    train(&["train", "--resume", run_s]);
    assert_eq!(position(&run), Some((3, 0)), "the resumed run finishes");
}
