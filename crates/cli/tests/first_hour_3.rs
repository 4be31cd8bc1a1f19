//! A new user's first hour, third round (issue #33's leftovers): one epoch numbering (1-based)
//! in every line a user reads, a resumed run's summaries covering the run, the images that
//! `drop_last` leaves out, a readable attention panel, and the nearest key for a misspelt one.

use std::path::{Path, PathBuf};

use crate::common;
use common::tiny::{make_images, write_config};
use common::{dino, ok};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The tiny run at batch 10: 48 images give 4 steps an epoch and leave 8 out (drop_last, the
/// default); 3 epochs, a record every step, no periodic checkpoint.
fn batch10_run() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_images(&data);
    let cfg = write_config(tmp.path(), &data, "log_every = 1");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("batch_size = 8\n", "batch_size = 10\n")
        .replace("every_steps = 2\n", "every_steps = 0\n");
    assert!(text.contains("batch_size = 10\n") && text.contains("every_steps = 0\n"));
    std::fs::write(&cfg, text).unwrap();
    (tmp, cfg)
}

fn train(args: &[&str]) -> String {
    let mut all = vec!["train"];
    all.extend_from_slice(args);
    all.push("--no-progress");
    stderr(&ok(&all))
}

/// The records of `kind` ("step" or "epoch") in the run's `metrics.jsonl`.
fn records(run: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .collect()
}

/// Items 1 and 3: progress, epoch ends, the resume line and the closing line count epochs and
/// steps from 1, the same way (`epoch e/E step s/S`); no "epoch 0" anywhere. The first lines
/// say how many images `drop_last` leaves out of each epoch.
#[test]
fn every_line_counts_epochs_from_one() {
    let (tmp, cfg) = batch10_run();
    let run = tmp.path().join("run");
    let err = train(&["--config", s(&cfg), "--output", s(&run), "--max-steps", "6"]);
    for line in [
        "8 of 48 images unused per epoch: batch 10, drop_last as the official loader",
        "epoch 1/3 step 1/4 loss",
        "epoch 1/3 step 4/4 loss",
        "epoch 1/3 done: loss",
        "epoch 2/3 step 2/4 loss",
        "trained 6 steps this session; run 6 of 12 steps (epoch 2/3, step 2/4)",
        "(mean of epoch 2's 2 steps so far)",
    ] {
        assert!(err.contains(line), "{line:?} not in:\n{err}");
    }
    // The first lines: before any step.
    let unused = err.find("8 of 48 images unused").unwrap();
    assert!(unused < err.find("epoch 1/3 step 1/4").unwrap(), "{err}");

    let err = train(&["--resume", s(&run), "--max-steps", "6"]);
    let resumed = format!(
        "resumed {}: continuing at epoch 2/3 step 3/4 (6 of 12 steps done)",
        run.display()
    );
    for line in [
        resumed.as_str(),
        "epoch 2/3 step 3/4 loss",
        "epoch 2/3 done: loss",
        "epoch 3/3 done: loss",
        "trained 6 steps this session; run 12 of 12 steps (epoch 3/3, step 4/4)",
        "(mean of epoch 3)",
    ] {
        assert!(err.contains(line), "{line:?} not in:\n{err}");
    }
    for zero in ["epoch 0", "epoch=", "step 0/", "step=0"] {
        assert!(!err.contains(zero), "{zero:?} in:\n{err}");
    }
    // The files keep 0-based positions (docs/ARCHITECTURE.md says so).
    let epochs = records(&run, "epoch");
    let numbers: Vec<u64> = epochs
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [0, 1, 2]);

    // With every image used, nothing is said.
    let err = train(&[
        "--config",
        s(&cfg),
        "--output",
        s(&tmp.path().join("all")),
        "--max-steps",
        "1",
        "--batch-size",
        "8",
    ]);
    assert!(!err.contains("unused per epoch"), "{err}");
}

/// Item 2: an epoch interrupted and resumed is summarised over all of its steps, with the same
/// bits as the uninterrupted run (the running sums travel in the checkpoint); the closing line
/// of the resumed session gives its own steps and the run's. A checkpoint without the sums
/// (written before them) still resumes, its epoch then summarised over the steps after it.
#[test]
fn a_resumed_epoch_is_summarised_over_all_its_steps() {
    let (tmp, cfg) = batch10_run();
    let whole = tmp.path().join("whole");
    train(&[
        "--config",
        s(&cfg),
        "--output",
        s(&whole),
        "--max-steps",
        "8",
    ]);
    let split = tmp.path().join("split");
    train(&[
        "--config",
        s(&cfg),
        "--output",
        s(&split),
        "--max-steps",
        "2",
    ]);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(split.join("checkpoint.json")).unwrap())
            .unwrap();
    assert_eq!(meta["epoch_sums"]["steps"], 2, "{meta}");
    let err = train(&["--resume", s(&split), "--max-steps", "6"]);
    assert!(
        err.contains("trained 6 steps this session; run 8 of 12 steps (epoch 2/3, step 4/4)"),
        "{err}"
    );
    let (a, b) = (records(&whole, "epoch"), records(&split, "epoch"));
    assert_eq!((a.len(), b.len()), (2, 2));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(y["steps"], 4, "{y}");
        for key in [
            "loss",
            "lr",
            "lr_last",
            "wd",
            "momentum",
            "dino/teacher_entropy",
            "dino/kl",
        ] {
            let (u, v) = (x[key].as_f64().unwrap(), y[key].as_f64().unwrap());
            assert_eq!(u.to_bits(), v.to_bits(), "{key}: {u} vs {v}");
        }
    }
    // The closing loss is the last epoch's mean over the run.
    let mean = b[1]["loss"].as_f64().unwrap();
    assert!(
        err.contains(&format!("→ {mean:.4} (mean of epoch 2)")),
        "{mean:.4}: {err}"
    );

    // An older checkpoint, without the sums: resumes; its epoch has only the steps after.
    let old = tmp.path().join("old");
    train(&["--config", s(&cfg), "--output", s(&old), "--max-steps", "2"]);
    let path = old.join("checkpoint.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    meta.as_object_mut().unwrap().remove("epoch_sums").unwrap();
    std::fs::write(&path, serde_json::to_string_pretty(&meta).unwrap()).unwrap();
    train(&["--resume", s(&old), "--max-steps", "2"]);
    assert_eq!(records(&old, "epoch")[0]["steps"], 2);
}

/// Item 4: the attention panel a person can read at the default size: 16-px images enlarged to
/// 160-px tiles, the tiles named (photo | mean | head k | mask) in `index.json` too, and a
/// legend under the scales saying what the mask keeps.
#[test]
fn the_attention_panel_says_what_it_shows() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_images(&data);
    let cfg = write_config(tmp.path(), &data, "");
    let out_dir = tmp.path().join("attn");
    ok(&[
        "attention",
        "--which",
        "random",
        "--config",
        s(&cfg),
        "--data",
        s(&data),
        "--count",
        "1",
        "--out",
        s(&out_dir),
    ]);
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("index.json")).unwrap())
            .unwrap();
    assert_eq!(
        index["mask"],
        "the fewest patches holding 60 % of the mean map's attention mass"
    );
    assert_eq!(index["grid"], "[rows, columns] of patches");
    let image = &index["images"][0];
    assert_eq!(
        image["panel"]["tiles"],
        serde_json::json!(["photo", "mean", "head 0", "head 1", "mask"])
    );
    assert_eq!(image["panel"]["tile_size"], serde_json::json!([160, 160]));
    let folder = image["folder"].as_str().unwrap();
    let panel = image::open(out_dir.join(folder).join("panel.png"))
        .unwrap()
        .to_rgb8();
    // Tiles, names, scales, values, then the 2-line legend.
    let legend_y = 160 + 4 + 18 + 4 + 10 + 4 + 18 + 4;
    assert_eq!(panel.dimensions(), (5 * 160 + 4 * 4, legend_y + 2 * 18));
    if Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").is_file() {
        for line in 0..2 {
            let y0 = legend_y + line * 18;
            let inked = (0..400)
                .flat_map(|x| (y0..y0 + 18).map(move |y| (x, y)))
                .any(|(x, y)| panel.get_pixel(x, y)[0] < 128);
            assert!(inked, "legend line {line}");
        }
    }
}

/// Item 5: a misspelt key in `--set` or in the file names the nearest valid key.
#[test]
fn a_misspelt_key_gets_the_nearest_valid_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_images(&data);
    let cfg = write_config(tmp.path(), &data, "");
    for (set, near) in [
        ("optim.bach_size=8", "optim.batch_size"),
        ("optim.warmup_epochs=2", "schedule.warmup_epochs"),
    ] {
        let out = dino(&["config", "show", "--config", s(&cfg), "--set", set]);
        assert!(!out.status.success(), "{set}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("did you mean `{near}`?")),
            "{set}: {err}"
        );
    }
}
