//! Agreement of retrieval mAP and recall@k with scikit-learn's `average_precision_score`
//! (`tests/reference/retrieval_reference.py`) on a hand case and fixed random features.

use crate::common;
use common::run_reference;

use dino_eval::retrieval::retrieval_eval;
use tch::Tensor;

#[test]
fn map_and_recall_agree_with_scikit_learn() {
    let (dir, results) = run_reference("retrieval_reference.py");
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
