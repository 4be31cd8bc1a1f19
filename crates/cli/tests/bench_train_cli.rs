//! `dino bench train` end to end on a tiny config: one JSON line per input with the job's shape
//! and a finite loss; the loader input without data is refused before any work; and
//! benches/train_step_compare.py runs ours and the PyTorch step back to back into one table
//! (eager only: `torch.compile` needs minutes to start on a CPU).

mod common;

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
    }
    assert_eq!(
        r[0]["data_wait_fraction"], 0.0,
        "synthetic crops never wait"
    );
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
            "--no-compile",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = reports(&out.stdout);
    assert_eq!(r.len(), 6, "3 implementations x 2 inputs");
    for rep in &r {
        // Both sides ran the same job from the same resolved config.
        assert_eq!(rep["vit"], r[0]["vit"]);
        assert_eq!(rep["batch_size"], r[0]["batch_size"]);
        assert_eq!(rep["local_crops"], r[0]["local_crops"]);
        assert!(rep["last_loss"].as_f64().unwrap().is_finite(), "{rep}");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("| synthetic") || l.starts_with("| loader"))
        .collect();
    assert_eq!(rows.len(), 6, "{text}");
    assert!(rows.iter().any(|l| l.contains("pytorch-eager (official)")));
}
