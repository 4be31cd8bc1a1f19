//! Agreement of the weighted k-NN with a PyTorch re-implementation of the official
//! `eval_knn.py` classifier (`tests/reference/knn_reference.py`) on fixed random features.

use crate::common;
use common::run_reference;

use std::path::Path;

use dino_eval::features::FeatureSet;
use dino_eval::knn::{knn_eval, knn_predict, KnnConfig};
use tch::Tensor;

/// The tensors as the [`FeatureSet`] k-NN and the probe take.
fn fs(x: &Tensor, y: &Tensor) -> FeatureSet {
    FeatureSet::labelled(x.shallow_clone(), y.shallow_clone()).unwrap()
}

/// Queries without labels (-1: k-NN prediction does not read them).
fn queries(x: &Tensor) -> FeatureSet {
    let unknown = Tensor::full([x.size()[0]], -1, (tch::Kind::Int64, tch::Device::Cpu));
    FeatureSet::labelled(x.shallow_clone(), unknown).unwrap()
}

fn load(dir: &Path, case: &str, what: &str) -> Tensor {
    Tensor::read_npy(dir.join(format!("{case}_{what}.npy"))).unwrap()
}

#[test]
fn agrees_with_pytorch_reference() {
    let (dir, results) = run_reference("knn_reference.py");
    let cases = results.as_object().unwrap();
    assert_eq!(cases.len(), 3);
    // The official count (zero-vote classes may fill top-5 ranks) differs somewhere in these
    // cases, so agreeing with `top5` is agreeing with the fix, not with the official flaw.
    let differs = cases.values().any(|c| c["top5"] != c["top5_official"]);
    assert!(differs, "no case exercises a zero-vote top-5 rank");
    for (case, expected) in cases {
        let train_x = load(dir.path(), case, "train_x");
        let train_y = load(dir.path(), case, "train_y");
        let test_x = load(dir.path(), case, "test_x");
        let test_y = load(dir.path(), case, "test_y");
        let ks: Vec<usize> = serde_json::from_value(expected["ks"].clone()).unwrap();
        let top1: Vec<f64> = serde_json::from_value(expected["top1"].clone()).unwrap();
        let top5: Vec<f64> = serde_json::from_value(expected["top5"].clone()).unwrap();
        let temperature = expected["T"].as_f64().unwrap();
        // Chunking must not change anything: one row, an odd size, and all rows at once.
        for chunk_size in [1, 37, 100_000] {
            let cfg = KnnConfig {
                ks: ks.clone(),
                temperature,
                chunk_size,
            };
            let report = knn_eval(&fs(&train_x, &train_y), &fs(&test_x, &test_y), &cfg).unwrap();
            for (i, score) in report.scores.iter().enumerate() {
                assert_eq!(score.k, ks[i]);
                assert!(
                    (score.top1 - top1[i]).abs() < 1e-9 && (score.top5 - top5[i]).abs() < 1e-9,
                    "{case} k={}: ours {:.4}/{:.4}, reference {:.4}/{:.4}",
                    score.k,
                    score.top1,
                    score.top5,
                    top1[i],
                    top5[i]
                );
            }
            eprintln!(
                "{case} chunk {chunk_size}: {}",
                serde_json::to_string(&report).unwrap()
            );
        }
        let pred_k = expected["pred_k"].as_u64().unwrap() as usize;
        let want: Vec<i64> = serde_json::from_value(expected["predictions"].clone()).unwrap();
        let got = knn_predict(
            &fs(&train_x, &train_y),
            &queries(&test_x),
            pred_k,
            temperature,
        )
        .unwrap();
        assert_eq!(got, want, "{case}: predictions at k = {pred_k}");
    }
}
