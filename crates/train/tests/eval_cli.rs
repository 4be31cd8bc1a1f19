//! `dino eval knn` / `dino embed` from the command line: the random-initialisation and pixel
//! baselines need only a configuration, and give the same features with or without a run folder.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::tiny::{tiny_run, train_args};

const DINO: &str = env!("CARGO_BIN_EXE_dino");

fn dino(args: &[&str]) -> Output {
    Command::new(DINO).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> Output {
    let out = dino(args);
    assert!(
        out.status.success(),
        "dino {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn knn_top1(json: &[u8]) -> f64 {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    v["scores"][0]["top1"].as_f64().unwrap()
}

#[test]
fn baselines_need_no_checkpoint() {
    let (tmp, cfg) = tiny_run("");
    let data = tmp.path().join("data");
    let (cfg, data) = (cfg.to_str().unwrap(), data.to_str().unwrap());
    for which in ["random", "pixels"] {
        // Bank = queries: with k = 1 every image finds itself (similarity 1), so any feature
        // that tells the 48 images apart scores 100 %.
        let out = ok(&[
            "eval", "knn", "--which", which, "--config", cfg, "--train", data, "--val", data,
            "--k", "1", "--json",
        ]);
        assert_eq!(knn_top1(&out.stdout), 100.0, "{which}");
    }
    let out = dino(&[
        "eval", "knn", "--config", cfg, "--train", data, "--val", data,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--checkpoint is required"), "{err}");
}

#[test]
fn random_features_do_not_depend_on_the_run_folder() {
    let (tmp, cfg) = tiny_run("");
    let (data, run) = (tmp.path().join("data"), tmp.path().join("run"));
    let (cfg, data_s, run_s) = (
        cfg.to_str().unwrap(),
        data.to_str().unwrap(),
        run.to_str().unwrap(),
    );
    ok(&train_args(cfg, run_s, "1"));
    let embed = |extra: &[&str], out: &Path| {
        let mut args = vec!["embed", "--which", "random", "--data", data_s];
        args.extend(extra);
        args.extend(["--out", out.to_str().unwrap()]);
        ok(&args);
        std::fs::read(out).unwrap()
    };
    let from_run = embed(&["--checkpoint", run_s], &tmp.path().join("a.npy"));
    let from_cfg = embed(&["--config", cfg], &tmp.path().join("b.npy"));
    assert_eq!(from_run, from_cfg);
    let trained = {
        let out = tmp.path().join("c.npy");
        ok(&[
            "embed",
            "--checkpoint",
            run_s,
            "--data",
            data_s,
            "--out",
            out.to_str().unwrap(),
        ]);
        std::fs::read(out).unwrap()
    };
    assert_ne!(
        from_run, trained,
        "the teacher after one step differs from the random init"
    );
}

#[test]
fn attention_boxes_score_the_written_maps() {
    let (tmp, cfg) = tiny_run("");
    let data = tmp.path().join("data");
    let (boxes, out) = (tmp.path().join("boxes.json"), tmp.path().join("attn"));
    // Boxes on patch borders of the 4 × 4 grid (16 px, patch 4): 4 and 9 of the 16 patches.
    std::fs::write(
        &boxes,
        r#"{"_about": "a comment", "a/000.png": [[0, 0, 0.5, 0.5]],
            "b/001.png": [[0.25, 0.25, 1, 1], [0.5, 0.5, 1, 1]]}"#,
    )
    .unwrap();
    let (cfg_s, data_s, boxes_s, out_s) = (
        cfg.to_str().unwrap(),
        data.to_str().unwrap(),
        boxes.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let args = [
        "attention",
        "--which",
        "random",
        "--config",
        cfg_s,
        "--data",
        data_s,
        "--boxes",
        boxes_s,
        "--image-size",
        "16",
        "--out",
        out_s,
    ];
    ok(&args);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("scores.json")).unwrap()).unwrap();
    assert_eq!(report["summary"]["images"], 2);
    let area = report["summary"]["box_area"].as_f64().unwrap();
    assert!((area - (4.0 + 9.0) / 32.0).abs() < 1e-12, "{area}");
    // Each head's mass in the box, recomputed from the raw maps the command wrote.
    for (stem, cells) in [
        ("a/000", vec![0, 1, 4, 5]),
        ("b/001", vec![5, 6, 7, 9, 10, 11, 13, 14, 15]),
    ] {
        let raw = tch::Tensor::read_npy(out.join(stem).join("attn.npy")).unwrap();
        assert_eq!(raw.size(), [2, 4, 4]);
        for head in 0..2 {
            let map = Vec::<f32>::try_from(&raw.get(head).reshape([-1])).unwrap();
            let total: f32 = map.iter().sum();
            let inside: f32 = cells.iter().map(|&c| map[c]).sum();
            let scored = report["images"][stem]["heads"][head as usize]["mass_in_box"]
                .as_f64()
                .unwrap();
            assert!(
                (scored - (inside / total) as f64).abs() < 1e-5,
                "{stem} head {head}"
            );
        }
    }
    // A box that is not [x0, y0, x1, y1] inside the image is an error naming the image.
    std::fs::write(&boxes, r#"{"a/000.png": [[0.6, 0, 0.4, 1]]}"#).unwrap();
    let bad = dino(&args);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("a/000") && err.contains("box"), "{err}");
    // So is a missing image.
    std::fs::write(&boxes, r#"{"a/999.png": [[0, 0, 1, 1]]}"#).unwrap();
    let err = String::from_utf8_lossy(&dino(&args).stderr).into_owned();
    assert!(err.contains("999.png"), "{err}");
}
