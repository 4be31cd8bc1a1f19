//! `dino data copydetect` and `dino eval copydetect` from the command line: a benchmark made
//! from a small folder is scored, and bad input (a copy whose original is missing, an empty
//! query set, an output folder in use) is refused with an error naming it.

use crate::common;
use common::tiny::tiny_run;
use common::{dino, ok};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn generate_score_and_refuse_bad_benchmarks() {
    let (tmp, cfg) = tiny_run("");
    let (data, bench) = (tmp.path().join("data"), tmp.path().join("bench"));
    let (cfg, data, bench_s) = (
        cfg.to_str().unwrap(),
        data.to_str().unwrap(),
        bench.to_str().unwrap(),
    );
    let gen = [
        "data",
        "copydetect",
        "--from",
        data,
        "--out",
        bench_s,
        "--seed",
        "3",
        "--originals",
        "4",
        "--copies",
        "2",
        "--distractors",
        "10",
        "--whitening",
        "10",
    ];
    ok(&gen);
    // A second run into the same folder is refused.
    let again = dino(&gen);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("not an empty folder"),
        "{}",
        stderr(&again)
    );
    for which in ["pixels", "random"] {
        let out = ok(&[
            "eval",
            "copydetect",
            "--which",
            which,
            "--config",
            cfg,
            "--bench",
            bench_s,
            "--descriptor",
            "cls",
            "--json",
        ]);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["n_queries"], 8, "{which}");
        assert_eq!(r["n_gallery"], 14, "{which}");
        assert_eq!(r["whitening"], 10, "{which}");
        let map = r["map"].as_f64().unwrap();
        assert!(map > 0.0 && map <= 1.0, "{which}: mAP {map}");
    }
    let eval = |b: &str| {
        dino(&[
            "eval",
            "copydetect",
            "--which",
            "pixels",
            "--config",
            cfg,
            "--bench",
            b,
            "--descriptor",
            "cls",
        ])
    };
    // A copy whose original is missing.
    std::fs::remove_file(bench.join("originals/o0001.png")).unwrap();
    let out = eval(bench_s);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("originals/o0001.png does not exist"),
        "{}",
        stderr(&out)
    );
    // An empty query set.
    std::fs::write(bench.join("ground_truth.csv"), "query,original,edits\n").unwrap();
    let out = eval(bench_s);
    assert!(
        stderr(&out).contains("query set is empty"),
        "{}",
        stderr(&out)
    );
}
