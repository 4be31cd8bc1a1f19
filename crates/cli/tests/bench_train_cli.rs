//! `dino bench train` end to end on a tiny config: one JSON line per input with the job's shape
//! and a finite loss; the loader input without data is refused before any work; and
//! benches/train_step_compare.py runs ours and the PyTorch step back to back into one table
//! (eager only: `torch.compile` needs minutes to start on a CPU).

use crate::common;

use common::{ok, tiny, DINO};
use std::path::PathBuf;
use std::process::Command;

fn reports(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn bench_train_times_synthetic_and_loader_inputs() {
    let (_tmp, cfg) = tiny::tiny_run("");
    let cfg = cfg.to_str().unwrap();
    let out = ok(&[
        "bench", "train", "--config", cfg, "--input", "both", "--json", "--warmup", "1", "--steps",
        "2",
    ]);
    let r = reports(&out.stdout);
    assert_eq!(r.len(), 2, "{}", String::from_utf8_lossy(&out.stdout));
    for (rep, input) in r.iter().zip(["synthetic", "loader"]) {
        assert_eq!(rep["implementation"], "dino");
        assert_eq!(rep["input"], input);
        assert_eq!(rep["vit"], serde_json::json!([32, 2, 2]));
        assert_eq!(rep["global_crops"], serde_json::json!([2, 16]));
        assert_eq!(rep["local_crops"], serde_json::json!([2, 8]));
        assert_eq!(rep["batch_size"], 8);
        assert_eq!(rep["steps"], 2);
        let ips = rep["images_per_s"].as_f64().unwrap();
        assert!(ips.is_finite() && ips > 0.0, "{rep}");
        assert!(rep["last_loss"].as_f64().unwrap().is_finite(), "{rep}");
        let wait = rep["data_wait_fraction"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&wait), "{rep}");
        // The time split of a step: its parts add up, and fit in the step.
        let p = &rep["phase_ms"];
        let ms = |k: &str| p[k].as_f64().unwrap();
        assert_eq!(p["steps"], 2, "{rep}");
        assert!(
            ms("forward") > 0.0 && ms("backward") > 0.0 && ms("optimizer") > 0.0,
            "{rep}"
        );
        assert!(
            ms("forward_backward") + ms("bookkeeping")
                <= rep["step_ms"]["median"].as_f64().unwrap() * 2.0,
            "{rep}"
        );
        assert!(
            rep["allocator"].as_str().unwrap().starts_with("glibc"),
            "{rep}"
        );
    }
    assert_eq!(
        r[0]["data_wait_fraction"], 0.0,
        "synthetic crops never wait"
    );
}

/// Issue #31 item 3: the step with iBOT on is timed from both inputs (synthetic crops carry
/// masks drawn as the loader draws them); the iBOT term is in the loss (it differs from the
/// same bench with iBOT off, on the same crops).
#[test]
fn bench_train_times_the_ibot_step() {
    let (_tmp, cfg) = tiny::tiny_run("");
    let cfg = cfg.to_str().unwrap();
    let bench = |extra: &[&str]| {
        let mut args = vec![
            "bench", "train", "--config", cfg, "--input", "both", "--json", "--warmup", "0",
            "--steps", "1",
        ];
        args.extend(extra);
        reports(&ok(&args).stdout)
    };
    let on = bench(&["--set", "ibot.loss_weight=1.0"]);
    let off = bench(&[]);
    assert_eq!(on.len(), 2);
    for (a, b) in on.iter().zip(&off) {
        let (la, lb) = (
            a["last_loss"].as_f64().unwrap(),
            b["last_loss"].as_f64().unwrap(),
        );
        assert!(
            la.is_finite() && a["images_per_s"].as_f64().unwrap() > 0.0,
            "{a}"
        );
        assert!((la - lb).abs() > 1e-6, "iBOT on {la} vs off {lb}: {a}");
    }
}

#[test]
fn bench_train_loader_without_data_is_refused() {
    let out = Command::new(DINO)
        .args(["bench", "train", "--input", "loader", "--steps", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--data"), "{err}");
    let out = Command::new(DINO)
        .args(["bench", "train", "--steps", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--steps"));
}

#[test]
fn compare_script_puts_ours_and_pytorch_in_one_table() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = repo.join(".venv/bin/python");
    if !python.exists() {
        eprintln!("skipped: no {} (run scripts/setup.sh)", python.display());
        return;
    }
    let (tmp, cfg) = tiny::tiny_run("");
    let data = tmp.path().join("data");
    let out = Command::new(&python)
        .arg(repo.join("benches/train_step_compare.py"))
        .args(["--dino", DINO, "--config"])
        .arg(&cfg)
        .args(["--inputs", "synthetic,loader", "--data"])
        .arg(&data)
        .args([
            "--workers",
            "0",
            "--warmup",
            "1",
            "--steps",
            "1",
            "--rounds",
            "2",
            "--sides",
            "official",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = reports(&out.stdout);
    assert_eq!(r.len(), 8, "2 rounds x 2 implementations x 2 inputs");
    for rep in &r {
        // Both sides ran the same job from the same resolved config, with the same libtorch
        // threads and allocator settings.
        assert_eq!(rep["vit"], r[0]["vit"]);
        assert_eq!(rep["batch_size"], r[0]["batch_size"]);
        assert_eq!(rep["local_crops"], r[0]["local_crops"]);
        assert_eq!(rep["precision"], r[0]["precision"]);
        assert_eq!(rep["torch_threads"], r[0]["torch_threads"], "{rep}");
        assert_eq!(rep["allocator"], r[0]["allocator"], "{rep}");
        assert_eq!(rep["omp_wait"], r[0]["omp_wait"], "{rep}");
        assert!(rep["last_loss"].as_f64().unwrap().is_finite(), "{rep}");
        for phase in ["data_wait", "forward_backward", "bookkeeping"] {
            assert!(rep["phase_ms"][phase].as_f64().unwrap() >= 0.0, "{rep}");
        }
    }
    // The order alternates: ours first in round 0, last in round 1 (per input).
    let order: Vec<(&str, i64)> = r
        .iter()
        .filter(|rep| rep["input"] == "synthetic")
        .map(|rep| {
            (
                rep["implementation"].as_str().unwrap(),
                rep["round"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("dino", 0),
            ("pytorch-eager (official)", 0),
            ("pytorch-eager (official)", 1),
            ("dino", 1)
        ]
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("| synthetic") || l.starts_with("| loader"))
        .collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert!(rows.iter().any(|l| l.contains("pytorch-eager (official)")));
    assert!(text.contains("median of rounds"), "{text}");
}

#[test]
fn libgomp_waits_passively_unless_told_otherwise() {
    let omp_wait = |set: &[(&str, &str)]| -> String {
        let mut cmd = Command::new(DINO);
        cmd.args(["env", "--json"]);
        for v in ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "DINO_OMP_WAIT_SET"] {
            cmd.env_remove(v);
        }
        for (k, v) in set {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        r["omp_wait"].as_str().unwrap().to_string()
    };
    // Unset: the binary starts itself again with the passive policy (crates/cli/src/omp.rs).
    assert_eq!(omp_wait(&[]), "OMP_WAIT_POLICY=PASSIVE");
    // A policy the user chose is kept.
    assert_eq!(
        omp_wait(&[("OMP_WAIT_POLICY", "ACTIVE")]),
        "OMP_WAIT_POLICY=ACTIVE"
    );
    assert_eq!(
        omp_wait(&[("GOMP_SPINCOUNT", "1000")]),
        "GOMP_SPINCOUNT=1000"
    );
}
