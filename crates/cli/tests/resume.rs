//! Exact resume: a run killed with SIGKILL mid-training and resumed with `--resume` ends with
//! bitwise-identical student, teacher, optimizer state and center to an uninterrupted run
//! (CPU, fixed seed; issue "trainer": checkpoints and resume), for AdamW in fp32, SGD under fp16
//! loss scaling (whose scaler state is in the checkpoint), LARS, and the supervised objective.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
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

/// Trains the tiny run (its `[runtime]` plus `runtime_extra`, then `sets` as `--set`) once
/// uninterrupted and once killed with SIGKILL after its first mid-epoch checkpoint and resumed;
/// asserts both end bitwise equal and returns the folder (runs `full` and `killed`) and the
/// final tensors.
pub(crate) fn kill_and_resume(
    runtime_extra: &str,
    sets: &[&str],
) -> (tempfile::TempDir, Vec<(String, tch::Tensor)>) {
    let (tmp, cfg) = tiny_run(runtime_extra);
    let (full, killed) = (tmp.path().join("full"), tmp.path().join("killed"));
    let sets: Vec<&str> = sets.iter().flat_map(|s| ["--set", s]).collect();

    let mut args = vec![
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        full.to_str().unwrap(),
    ];
    args.extend(&sets);
    train(&args);
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
        .args(&sets)
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
    (tmp, b)
}

#[test]
fn killed_and_resumed_run_matches_uninterrupted_run_bitwise() {
    let (_tmp, t) = kill_and_resume("", &[]);
    assert!(t.iter().any(|(n, _)| n.starts_with("optim.exp_avg_sq.")));
    assert!(!t.iter().any(|(n, _)| n.starts_with("scaler.")));
}

#[test]
fn fp16_sgd_run_resumes_bitwise_with_its_loss_scaler() {
    let (tmp, t) = kill_and_resume(
        "precision = \"fp16\"\nlog_every = 1",
        &["optim.optimizer=sgd"],
    );
    assert!(t
        .iter()
        .any(|(n, _)| n.starts_with("optim.momentum_buffer.")));
    let scale = t
        .iter()
        .find(|(n, _)| n == "scaler.scale")
        .expect("the fp16 checkpoint holds the scaler's scale");
    assert_eq!(scale.1.kind(), tch::Kind::Float);
    assert!(t.iter().any(|(n, _)| n == "scaler.growth_tracker"));
    // Every step line of metrics.jsonl carries the scale its backward used.
    let metrics = std::fs::read_to_string(tmp.path().join("full/metrics.jsonl")).unwrap();
    let steps: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "step")
        .collect();
    assert_eq!(steps.len(), 18, "3 epochs of 6 steps, each logged");
    assert_eq!(
        steps[0]["loss_scale"].as_f64(),
        Some(65536.0),
        "2^16 at the start"
    );
    for pair in steps.windows(2) {
        let scale = pair[0]["loss_scale"].as_f64().expect("loss_scale logged");
        let skipped = pair[0]["skipped_step"]
            .as_bool()
            .expect("skipped_step logged");
        let next = pair[1]["loss_scale"].as_f64().unwrap();
        // Halved after a skipped step, else kept (growth needs 2,000 finite steps).
        assert_eq!(
            next,
            if skipped { scale / 2.0 } else { scale },
            "{}",
            pair[0]
        );
    }
}

/// DINOv2's KoLeo term (issue #29): it adds no state, the run resumes bitwise.
#[test]
fn koleo_run_resumes_bitwise() {
    let (tmp, _t) = kill_and_resume("log_every = 1", &["loss.koleo_weight=0.1"]);
    let metrics = std::fs::read_to_string(tmp.path().join("full/metrics.jsonl")).unwrap();
    let koleo = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "step")
        .map(|v| {
            v["koleo/loss"]
                .as_f64()
                .expect("koleo logged on every step")
        })
        .collect::<Vec<_>>();
    assert!(
        koleo.iter().all(|k| k.is_finite() && *k != 0.0),
        "{koleo:?}"
    );
}

/// Sinkhorn-Knopp centering (issue #29): the center is not updated, so the checkpoint's center
/// stays at its initial zeros, and the run resumes bitwise.
#[test]
fn sinkhorn_knopp_run_resumes_bitwise() {
    let (_tmp, t) = kill_and_resume("", &["loss.centering=sinkhorn_knopp"]);
    let center = t
        .iter()
        .find(|(n, _)| n == "center")
        .expect("the center is still saved");
    assert_eq!(center.1.abs().max().double_value(&[]), 0.0);
}

/// The CPU presets' speed keys (`model.attention = "explicit"`, `runtime.overlap_teacher` on
/// two libtorch threads, where the overlap applies): killed after a mid-epoch checkpoint and
/// resumed, the run ends bitwise equal to the uninterrupted one (the overlapped forward draws
/// nothing off the calling thread).
#[test]
fn explicit_attention_and_overlapped_teacher_run_resumes_bitwise() {
    let (tmp, _t) = kill_and_resume(
        "",
        &[
            "model.attention=explicit",
            "runtime.overlap_teacher=true",
            "runtime.torch_threads=2",
        ],
    );
    let config = std::fs::read_to_string(tmp.path().join("full/config.toml")).unwrap();
    for key in [
        "attention = \"explicit\"",
        "overlap_teacher = true",
        "torch_threads = 2",
    ] {
        assert!(config.contains(key), "the run's config lacks {key}");
    }
}

/// `runtime.pack_crop_groups` (the tiny run has 2 local crops, so the student sees two
/// resolutions and packs them; stochastic depth at the official 0.1 draws every step): killed
/// after a mid-epoch checkpoint and resumed, the run ends bitwise equal to the uninterrupted one.
#[test]
fn packed_crop_groups_run_resumes_bitwise() {
    let (tmp, _t) = kill_and_resume("", &["runtime.pack_crop_groups=true"]);
    let config = std::fs::read_to_string(tmp.path().join("full/config.toml")).unwrap();
    assert!(config.contains("pack_crop_groups = true"), "{config}");
}

/// DINOv2's backbone options all on (issue #29): registers, LayerScale, SwiGLU and the
/// antialiased position resize; their variables are trained, kept by the EMA teacher and the
/// optimizer, saved, and the run resumes bitwise.
#[test]
fn dinov2_backbone_options_run_resumes_bitwise() {
    let (_tmp, t) = kill_and_resume(
        "",
        &[
            "model.num_register_tokens=2",
            "model.layerscale_init=1e-5",
            "model.ffn=swiglu",
            "model.pos_interpolation=antialias",
        ],
    );
    for name in [
        "register_tokens",
        "blocks.0.ls1.gamma",
        "blocks.0.ls2.gamma",
        "mlp.w12.weight",
    ] {
        for side in ["student.backbone.", "teacher.backbone."] {
            assert!(
                t.iter()
                    .any(|(n, _)| n.starts_with(side) && n.ends_with(name)),
                "{side}…{name} not saved"
            );
        }
        assert!(
            t.iter()
                .any(|(n, _)| n.starts_with("optim.") && n.ends_with(name)),
            "no optimizer state for {name}"
        );
    }
}

#[test]
fn lars_run_resumes_bitwise() {
    let (_tmp, t) = kill_and_resume("", &["optim.optimizer=lars", "optim.lr=0.3"]);
    assert!(t.iter().any(|(n, _)| n.starts_with("optim.mu.")));
}

#[test]
fn supervised_run_resumes_bitwise() {
    let (_tmp, t) = kill_and_resume("", &["method.objective=supervised", "optim.lr=0.05"]);
    assert!(t.iter().any(|(n, _)| n == "teacher.classifier.weight"));
    assert!(!t.iter().any(|(n, _)| n == "center"));
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
