//! The revisited Oxford/Paris protocol against `tests/reference/revisited_reference.py`: the
//! ground-truth pickle it writes (revisitop's layout) reads back, and Easy / Medium / Hard mAP
//! and mP@{1,5,10} agree on a hand case and on random features.

use crate::common;
use common::run_reference;

use dino_eval::retrieval::revisited::{read_gnd, revisited_eval};
use tch::Tensor;

#[test]
fn protocols_agree_with_the_reference() {
    let (dir, results) = run_reference("revisited_reference.py");
    let cases = results.as_object().unwrap();
    assert_eq!(cases.len(), 2);
    for (case, want) in cases {
        let path = |part: &str| dir.path().join(format!("{case}_{part}"));
        let gnd = read_gnd(&path("gnd.pkl")).unwrap();
        let db = Tensor::read_npy(path("db.npy")).unwrap();
        let q = Tensor::read_npy(path("q.npy")).unwrap();
        let r = revisited_eval(&db, &q, &gnd, &[1, 5, 10]).unwrap();
        for (name, got) in [("E", &r.easy), ("M", &r.medium), ("H", &r.hard)] {
            let w = &want[name];
            let map = w["map"].as_f64().unwrap();
            assert!(
                (got.map - map).abs() < 1e-12,
                "{case} {name}: mAP {} vs {map}",
                got.map
            );
            assert_eq!(
                got.n_queries as u64,
                w["n"].as_u64().unwrap(),
                "{case} {name}"
            );
            let mp: Vec<f64> = serde_json::from_value(w["mp"].clone()).unwrap();
            for (p, m) in got.precision.iter().zip(mp) {
                assert!((p.precision - m).abs() < 1e-12, "{case} {name} mP@{}", p.k);
            }
        }
    }
}

#[test]
fn bad_ground_truth_is_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let python = common::repo_root().join(".venv/bin/python");
    let write = |name: &str, obj: &str| {
        let path = dir.path().join(name);
        let code = format!("import pickle,sys; pickle.dump({obj}, open(sys.argv[1], 'wb'))");
        let ok = std::process::Command::new(&python)
            .args(["-c", &code])
            .arg(&path)
            .status()
            .unwrap();
        assert!(ok.success());
        path
    };
    let past = write(
        "past.pkl",
        "{'imlist': ['a'], 'qimlist': ['q'], 'gnd': [{'easy': [3], 'hard': [], 'junk': []}]}",
    );
    let e = read_gnd(&past).unwrap_err().to_string();
    assert!(e.contains("past.pkl") && e.contains("index 3"), "{e}");
    let count = write(
        "count.pkl",
        "{'imlist': ['a'], 'qimlist': ['q', 'r'], 'gnd': [{'easy': [0], 'hard': [], 'junk': []}]}",
    );
    let e = read_gnd(&count).unwrap_err().to_string();
    assert!(e.contains("2 queries"), "{e}");
    let other = write("other.pkl", "[1, 2, 3]");
    let e = read_gnd(&other).unwrap_err().to_string();
    assert!(e.contains("other.pkl") && e.contains("revisitop"), "{e}");
}
