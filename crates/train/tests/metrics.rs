//! Metrics JSONL, epoch means, the PNG plot and the non-finite guard, with what a run stopped
//! by a non-finite loss says about its checkpoint. Collapse warnings: `collapse.rs`.

use dino_train::metrics::{
    check_finite, plot_curves, read_jsonl, EpochAccumulator, History, MetricsWriter, Record,
    StepRecord, PANEL_COLORS,
};
use std::fs;
use std::path::Path;
use std::process::Command;

mod common;
use common::tiny::{tensors, tiny_run, train_args};

fn step(i: usize, loss: f64) -> StepRecord {
    StepRecord {
        epoch: i / 10,
        step: i % 10,
        global_step: i,
        loss,
        lr: 1e-4 * (i as f64 + 1.0),
        wd: 0.04,
        momentum: 0.996,
        teacher_temp: 0.04,
        teacher_entropy: 3.0 - 0.01 * i as f64,
        teacher_mean_entropy: 6.0,
        kl: 1.0 + 0.125 * (i % 4) as f64,
        center_norm: 0.5,
        images_per_s: 100.0 + i as f64,
        data_wait_fraction: 0.1,
    }
}

#[test]
fn non_finite_loss_names_epoch_and_step() {
    assert!(check_finite(4.2, 0, 0).is_ok());
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let err = check_finite(bad, 3, 17).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("epoch 3, step 17"), "{msg}");
        assert_eq!((err.epoch, err.step), (3, 17));
    }
}

#[test]
fn jsonl_round_trip_append_and_truncated_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/metrics.jsonl");
    let mut acc = EpochAccumulator::default();
    {
        let mut w = MetricsWriter::append(&path).unwrap();
        for i in 0..3 {
            let r = step(i, 10.0 - i as f64);
            acc.push(&r);
            w.write_step(&r).unwrap();
        }
    }
    let mut epoch = acc.finish(0, 12.5);
    epoch.extra.insert("knn_top1".into(), 0.42);
    {
        // A resumed run appends to the same file.
        let mut w = MetricsWriter::append(&path).unwrap();
        w.write_epoch(&epoch).unwrap();
    }
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(text.lines().next().unwrap().contains("\"kind\":\"step\""));
    assert!(text.lines().last().unwrap().contains("\"kind\":\"epoch\""));
    let recs = read_jsonl(&path).unwrap();
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[1], Record::Step(step(1, 9.0)));
    assert_eq!(recs[3], Record::Epoch(epoch.clone()));
    // Means over the epoch.
    assert_eq!(epoch.steps, 3);
    assert!((epoch.loss - 9.0).abs() < 1e-12);
    assert!((epoch.lr - 2e-4).abs() < 1e-15);
    assert!((epoch.lr_last - 3e-4).abs() < 1e-15);
    assert!((epoch.images_per_s - 101.0).abs() < 1e-12);
    // A crash mid-line leaves a truncated last line, which is skipped; a bad line elsewhere
    // is an error naming it.
    fs::write(&path, format!("{text}{{\"kind\":\"step\",\"epo")).unwrap();
    assert_eq!(read_jsonl(&path).unwrap().len(), 4);
    fs::write(&path, format!("garbage\n{text}")).unwrap();
    let err = read_jsonl(&path).unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
    assert_eq!(History::from_records(&recs).len(), 3);
}

#[test]
fn plot_is_a_png_of_the_requested_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plots/curves.png");
    let mut h = History::default();
    for i in 0..200 {
        h.push(&step(i, 11.0 - (i as f64 / 50.0)));
    }
    plot_curves(&path, &h, Some(11.09), 640, 480).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (640, 480));
    for c in PANEL_COLORS {
        let n = img.pixels().filter(|p| p.0 == c).count();
        assert!(n > 500, "panel colour {c:?} drawn {n} pixels");
    }
    assert!(!dir.path().join("plots/curves.png.tmp").exists());
    // Empty history and a single point still render; a too small image is an error.
    plot_curves(&path, &History::default(), None, 100, 80).unwrap();
    let mut one = History::default();
    one.push(&step(0, 5.0));
    plot_curves(&path, &one, Some(5.0), 120, 90).unwrap();
    assert_eq!(image::open(&path).unwrap().width(), 120);
    assert!(plot_curves(&path, &h, None, 10, 10).is_err());
}

/// Runs a tiny `dino train` whose loss turns NaN at its second step (no lr warm-up, an lr that
/// overflows the weights at the first update), saving every `every_steps` steps (0: only at
/// epoch ends, which it never reaches). Returns the run folder's parent (kept alive), the run
/// folder and the error output.
fn diverging_run(lr: &str, every_steps: &str) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let (tmp, cfg) = tiny_run("");
    let run = tmp.path().join("run");
    let (cfg_s, run_s) = (cfg.to_str().unwrap(), run.to_str().unwrap());
    let lr = format!("optim.lr={lr}");
    let every = format!("checkpoint.every_steps={every_steps}");
    let mut args = train_args(cfg_s, run_s, "5");
    args.extend([
        "--no-progress",
        "--set",
        "schedule.warmup_epochs=0",
        "--set",
        &lr,
    ]);
    args.extend(["--set", &every]);
    let out = Command::new(env!("CARGO_BIN_EXE_dino"))
        .args(&args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the run did not stop:\n{err}");
    assert!(
        err.contains("loss is NaN") || err.contains("loss is inf"),
        "{err}"
    );
    (tmp, run, err)
}

fn all_finite(run: &Path) -> bool {
    tensors(run)
        .iter()
        .all(|(_, t)| t.isfinite().all().int64_value(&[]) != 0)
}

#[test]
fn non_finite_loss_before_any_checkpoint_says_there_is_none() {
    let (_tmp, run, err) = diverging_run("1e35", "0");
    assert!(!run.join("checkpoint.safetensors").exists());
    assert!(!run.join("checkpoint.json").exists());
    assert!(
        err.contains(&format!(
            "No checkpoint was written yet in {}",
            run.display()
        )) && err.contains("nothing to resume from"),
        "{err}"
    );
    assert!(
        !err.contains("intact") && !err.contains("--resume"),
        "{err}"
    );
}

#[test]
fn non_finite_loss_after_a_checkpoint_names_it_and_its_state() {
    // lr 1e35 leaves huge but finite weights in the checkpoint of step 0; 1e40 overflows them.
    for (lr, finite) in [("1e35", true), ("1e40", false)] {
        let (_tmp, run, err) = diverging_run(lr, "1");
        let files = run.join("checkpoint.safetensors");
        assert!(files.exists());
        assert!(err.contains(&files.display().to_string()), "{err}");
        assert!(
            err.contains(&run.join("checkpoint.json").display().to_string()),
            "{err}"
        );
        let meta: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(run.join("checkpoint.json")).unwrap())
                .unwrap();
        let position = format!(
            "resume position: epoch {}, step {}",
            meta["epoch"], meta["step_in_epoch"]
        );
        assert!(err.contains(&position), "{position} not in {err}");
        assert!(
            !err.contains("intact") && !err.contains("No checkpoint"),
            "{err}"
        );
        // The message says what the file holds.
        assert_eq!(all_finite(&run), finite, "lr {lr}");
        if finite {
            assert!(err.contains("holds finite values"), "{err}");
            assert!(
                err.contains(&format!("dino train --resume {}", run.display())),
                "{err}"
            );
        } else {
            assert!(
                err.contains("already holds NaN or infinite values"),
                "{err}"
            );
        }
    }
}
