//! Agreement of retrieval mAP and recall@k with scikit-learn's `average_precision_score`
//! (`tests/reference/retrieval_reference.py`) on a hand case and fixed random features.

use std::path::{Path, PathBuf};
use std::process::Command;

use dino_eval::retrieval::retrieval_eval;
use serde_json::Value;
use tch::Tensor;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn map_and_recall_agree_with_scikit_learn() {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(&python)
        .arg(repo_root().join("tests/reference/retrieval_reference.py"))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "retrieval_reference.py failed (run scripts/setup.sh)"
    );
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap())
            .unwrap();
    let cases = results.as_object().unwrap();
    assert_eq!(cases.len(), 3);
    for (case, want) in cases {
        let load =
            |part: &str| Tensor::read_npy(dir.path().join(format!("{case}_{part}.npy"))).unwrap();
        let ks: Vec<usize> = serde_json::from_value(want["ks"].clone()).unwrap();
        let loo = want["loo"].as_bool().unwrap();
        let r =
            retrieval_eval(&load("qx"), &load("qy"), &load("gx"), &load("gy"), loo, &ks).unwrap();
        let map = want["map"].as_f64().unwrap();
        assert!((r.map - map).abs() < 1e-6, "{case}: mAP {} vs {map}", r.map);
        assert_eq!(
            r.n_queries as u64,
            want["n_queries"].as_u64().unwrap(),
            "{case}"
        );
        assert_eq!(
            r.n_queries_without_positive as u64,
            want["skipped"].as_u64().unwrap(),
            "{case}"
        );
        let recall: Vec<f64> = serde_json::from_value(want["recall"].clone()).unwrap();
        for (got, want) in r.recall.iter().zip(recall) {
            assert!((got.recall - want).abs() < 1e-9, "{case} recall@{}", got.k);
        }
    }
}
