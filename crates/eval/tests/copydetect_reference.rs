//! Agreement of the copy-detection whitening, similarities, mAP and recall with a numpy /
//! scikit-learn reference (`tests/reference/copydetect_reference.py`) on fixed features:
//! whitening on more rows than the width, on fewer (rank-deficient), and none.

use crate::common;
use common::run_reference;

use dino_eval::retrieval::copydetect::{copy_detection_eval, Whitening};
use tch::{Kind, Tensor};

fn l2(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [1i64].as_slice(), true)
}

#[test]
fn whitening_and_map_agree_with_numpy() {
    let (dir, results) = run_reference("copydetect_reference.py");
    let cases = results.as_object().unwrap();
    assert_eq!(cases.len(), 3);
    for (case, want) in cases {
        let load =
            |part: &str| Tensor::read_npy(dir.path().join(format!("{case}_{part}.npy"))).unwrap();
        let (q, db) = (load("q"), load("db"));
        let orig: Vec<i64> = Vec::try_from(&load("orig")).unwrap();
        let orig: Vec<usize> = orig.iter().map(|&o| o as usize).collect();
        let w = want["whiten"].as_bool().unwrap().then(|| load("w"));
        // The similarities after whitening, to 1e-6.
        let (qw, dbw) = match &w {
            Some(w) => {
                let wh = Whitening::fit(w).unwrap();
                (wh.apply("q", &q).unwrap(), wh.apply("db", &db).unwrap())
            }
            None => (q.to_kind(Kind::Double), db.to_kind(Kind::Double)),
        };
        let sims = l2(&qw).matmul(&l2(&dbw).tr());
        let diff = (sims - load("sims")).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{case}: similarities differ by {diff}");
        let ks: Vec<usize> = serde_json::from_value(want["ks"].clone()).unwrap();
        let r = copy_detection_eval(&q, &orig, &db, w.as_ref(), &ks).unwrap();
        let map = want["map"].as_f64().unwrap();
        assert!((r.map - map).abs() < 1e-6, "{case}: mAP {} vs {map}", r.map);
        let recall: Vec<f64> = serde_json::from_value(want["recall"].clone()).unwrap();
        for (got, want) in r.recall.iter().zip(recall) {
            assert!((got.recall - want).abs() < 1e-9, "{case} recall@{}", got.k);
        }
        assert_eq!((r.n_queries, r.n_gallery), (orig.len(), 40));
    }
}
