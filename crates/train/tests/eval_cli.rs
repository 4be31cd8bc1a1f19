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
