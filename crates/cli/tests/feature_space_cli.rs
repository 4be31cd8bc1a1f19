//! `dino eval cluster` and `dino map` from the command line: features from a model and a
//! folder or from a features file give the same answer, and bad input is refused with a clear
//! error before anything is written.

use std::path::Path;

mod common;
use common::tiny::tiny_run;
use common::{dino, ok};
use tch::Tensor;

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes `features` and `labels` as a `dino embed` `.npy` features file.
fn write_npy(path: &Path, features: &Tensor, labels: &Tensor) {
    features.write_npy(path).unwrap();
    let stem = path.file_stem().unwrap().to_str().unwrap();
    labels
        .write_npy(path.with_file_name(format!("{stem}.labels.npy")))
        .unwrap();
}

#[test]
fn cluster_reads_a_model_or_a_features_file() {
    let (tmp, cfg) = tiny_run("");
    let data = tmp.path().join("data");
    let feats = tmp.path().join("f/pixels.npy");
    let (cfg, data, feats_s) = (
        cfg.to_str().unwrap(),
        data.to_str().unwrap(),
        feats.to_str().unwrap(),
    );
    let from_model = ok(&[
        "eval", "cluster", "--which", "pixels", "--config", cfg, "--data", data, "--json",
    ]);
    let report = json(&from_model);
    assert_eq!(report["n_images"], 48);
    assert_eq!(report["n_classes"], 2);
    assert_eq!(report["k"], 2);
    for score in ["nmi", "purity", "hungarian_accuracy"] {
        let v = report[score].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{score} = {v}");
    }
    ok(&[
        "embed", "--which", "pixels", "--config", cfg, "--data", data, "--out", feats_s,
    ]);
    let from_file = ok(&["eval", "cluster", "--features", feats_s, "--json"]);
    assert_eq!(json(&from_file), report);
    // --k and --seed reach the clustering.
    let four = json(&ok(&[
        "eval",
        "cluster",
        "--features",
        feats_s,
        "--k",
        "4",
        "--json",
    ]));
    assert_eq!(four["k"], 4);
    // A features file and a model are two sources: clap refuses both.
    let both = dino(&["eval", "cluster", "--features", feats_s, "--data", data]);
    assert!(!both.status.success());
}

#[test]
fn cluster_refuses_bad_features() {
    let tmp = tempfile::tempdir().unwrap();
    let labels = Tensor::from_slice(&[0i64, 0, 1, 1]);
    let good = Tensor::from_slice(&[1.0f32, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9]).view([4, 2]);
    let run = |name: &str, features: &Tensor, labels: &Tensor, extra: &[&str]| {
        let path = tmp.path().join(format!("{name}.npy"));
        write_npy(&path, features, labels);
        let mut args = vec!["eval", "cluster", "--features", path.to_str().unwrap()];
        args.extend(extra);
        let out = dino(&args);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(out.stdout.is_empty(), "{name} printed a report");
        stderr(&out)
    };
    let mut nan = Vec::<f32>::try_from(&good.view([-1])).unwrap();
    nan[5] = f32::NAN;
    let nan = Tensor::from_slice(&nan).view([4, 2]);
    let err = run("nan", &nan, &labels, &[]);
    assert!(err.contains("row 2") && err.contains("NaN"), "{err}");
    let one = Tensor::from_slice(&[3i64, 3, 3, 3]);
    let err = run("one_class", &good, &one, &[]);
    assert!(err.contains("1 class"), "{err}");
    let err = run("big_k", &good, &labels, &["--k", "5"]);
    assert!(err.contains("k = 5") && err.contains("4 image"), "{err}");
    let err = run("zero_k", &good, &labels, &["--k", "0"]);
    assert!(err.contains("--k must be at least 1"), "{err}");
    let err = run("short_labels", &good, &labels.narrow(0, 0, 3), &[]);
    assert!(err.contains("labels"), "{err}");
}
