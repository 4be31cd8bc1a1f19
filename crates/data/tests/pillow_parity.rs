//! Parity of every augmentation op with torchvision 0.28 + Pillow (the official DINO
//! backend): `tests/reference/pillow_ops.py` applies each op with fixed parameters to real
//! photos (hymenoptera, CIFAR-10 samples) and we require max |Δ| <= 2 levels per op, exact for
//! flip and solarize. The measured max / mean |Δ| per op are printed (`--nocapture`);
//! `PARITY_DUMP=<dir>` also writes each case's ours/Pillow raw RGB there for inspection.

use dino_data::transforms::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, gaussian_blur, hflip,
    resized_crop, solarize, to_grayscale, CropBox, EvalTransform,
};
use image::RgbImage;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    let p = repo().join(".venv/bin/python");
    assert!(p.exists(), "{} missing: run scripts/setup.sh", p.display());
    p
}

fn read_rgb(dir: &Path, name: &str, w: u32, h: u32) -> RgbImage {
    let bytes = std::fs::read(dir.join(name)).expect("fixture file");
    RgbImage::from_raw(w, h, bytes).expect("fixture size")
}

#[derive(Default)]
struct Stat {
    max: u8,
    sum: u64,
    n: u64,
    worst: String,
}

#[test]
fn ops_match_pillow_within_two_levels() {
    let data = repo().join("../shared/data");
    if !data.join("hymenoptera").exists() {
        eprintln!("notice: {} missing, parity test skipped", data.display());
        return;
    }
    let py = python();
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new(&py)
        .arg(repo().join("tests/reference/pillow_ops.py"))
        .arg(&data)
        .arg(dir.path())
        .status()
        .expect("run python");
    assert!(
        status.success(),
        "pillow_ops.py failed (run scripts/setup.sh?)"
    );
    let cases = std::fs::read_to_string(dir.path().join("cases.txt")).expect("cases.txt");

    let mut inputs: HashMap<String, RgbImage> = HashMap::new();
    let mut stats: BTreeMap<String, Stat> = BTreeMap::new();
    for line in cases.lines().filter(|l| !l.trim().is_empty()) {
        let kv: HashMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|t| t.split_once('='))
            .collect();
        let num = |k: &str| -> f64 { kv[k].parse().unwrap_or_else(|_| panic!("{k} in {line}")) };
        let int = |k: &str| num(k) as u32;
        let (op, name) = (kv["op"], kv["case"]);
        let input = inputs
            .entry(kv["in"].to_string())
            .or_insert_with(|| read_rgb(dir.path(), kv["in"], int("iw"), int("ih")))
            .clone();
        let want = read_rgb(dir.path(), kv["out"], int("ow"), int("oh"));
        let (w, h) = input.dimensions();
        let mut img = input.clone();
        let got = match op {
            "resize" => {
                let crop = CropBox {
                    left: int("left"),
                    top: int("top"),
                    width: int("cw"),
                    height: int("ch"),
                };
                resized_crop(&input, crop, int("ow"), int("oh")).expect("valid crop")
            }
            "brightness" => {
                adjust_brightness(&mut img, num("f"));
                img
            }
            "contrast" => {
                adjust_contrast(&mut img, num("f"));
                img
            }
            "saturation" => {
                adjust_saturation(&mut img, num("f"));
                img
            }
            "hue" => {
                adjust_hue(&mut img, num("f"));
                img
            }
            "grayscale" => {
                to_grayscale(&mut img);
                img
            }
            "blur" => {
                gaussian_blur(&mut img, w, h, num("sigma"));
                img
            }
            "solarize" => {
                solarize(&mut img, 128);
                img
            }
            "flip" => {
                hflip(&mut img, w);
                img
            }
            "eval" => EvalTransform::new(int("crop"), num("ratio"))
                .expect("eval params")
                .apply(&input),
            other => panic!("unknown op {other}"),
        };
        assert_eq!(got.dimensions(), want.dimensions(), "{name}: size");
        if let Ok(d) = std::env::var("PARITY_DUMP") {
            std::fs::create_dir_all(&d).ok();
            std::fs::write(Path::new(&d).join(format!("{name}.got")), got.as_raw()).ok();
            std::fs::write(Path::new(&d).join(format!("{name}.want")), want.as_raw()).ok();
        }
        let key = if op == "resize" {
            if name.contains("_up_") {
                "resize_up"
            } else {
                "resize_down"
            }
            .to_string()
        } else {
            op.to_string()
        };
        let s = stats.entry(key).or_default();
        let mut case_max = 0u8;
        for (a, b) in got.as_raw().iter().zip(want.as_raw()) {
            let d = a.abs_diff(*b);
            case_max = case_max.max(d);
            s.sum += u64::from(d);
        }
        s.n += got.as_raw().len() as u64;
        if case_max >= s.max {
            s.max = case_max;
            s.worst = name.to_string();
        }
    }
    let mut failures = Vec::new();
    println!("{:<12} {:>6} {:>10}  worst case", "op", "max", "mean");
    for (op, s) in &stats {
        let mean = s.sum as f64 / s.n as f64;
        println!("{op:<12} {:>6} {:>10.5}  {}", s.max, mean, s.worst);
        let tol = if op == "flip" || op == "solarize" {
            0
        } else {
            2
        };
        if s.max > tol {
            failures.push(format!("{op}: max |Δ| {} > {tol} ({})", s.max, s.worst));
        }
    }
    assert!(
        stats.len() == 11,
        "expected every op to be exercised: {:?}",
        stats.keys()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
