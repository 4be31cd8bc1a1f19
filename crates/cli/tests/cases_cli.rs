//! The public bug reports of `shared/cases/`, each on data generated here, through the `dino`
//! binary: labels follow class names across folders, links never relabel images, k-NN caps k and
//! never counts a zero-vote class, outputs are prepared before any work, and a PyTorch `.pth`
//! where safetensors is expected says how to convert it.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common;
use common::{dino, ok};

fn preset() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/cifar10_cpu.toml")
        .display()
        .to_string()
}

fn fails(args: &[&str]) -> String {
    failed(dino(args))
}

/// The stderr of a command that must have failed.
fn failed(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "should fail; stderr:\n{err}");
    err
}

/// A command that must have succeeded.
fn succeeded(out: Output) -> Output {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "failed:\n{err}");
    out
}

/// A 32×32 PNG of one colour with a little deterministic noise.
fn png(path: &Path, rgb: [u8; 3], seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(32, 32, |x, y| {
        let n = ((x * 7 + y * 13 + seed * 31) % 11) as u8;
        image::Rgb(rgb.map(|c| c.saturating_sub(n)))
    });
    img.save(path).unwrap();
}

const RED: [u8; 3] = [220, 20, 20];
const GREEN: [u8; 3] = [20, 220, 20];
const BLUE: [u8; 3] = [20, 20, 220];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `dino <cmd> --which pixels --config <the CIFAR-10 preset> <rest>` (the cases' commands).
fn pixel_args<'a>(cmd: &[&'a str], cfg: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = cmd.to_vec();
    args.extend(["--which", "pixels", "--config", cfg]);
    args.extend_from_slice(rest);
    args
}

/// `dino eval knn` on pixels with JSON output; `extra` adds flags.
fn knn(train: &Path, val: &Path, extra: &[&str]) -> Output {
    let cfg = preset();
    let mut rest = vec!["--train", s(train), "--val", s(val), "--json"];
    rest.extend_from_slice(extra);
    ok(&pixel_args(&["eval", "knn"], &cfg, &rest))
}

/// `dino embed` on pixels of `data` into `out`; `extra` adds flags.
fn embed(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let cfg = preset();
    let mut rest = vec!["--data", s(data), "--out", s(out)];
    rest.extend_from_slice(extra);
    dino(&pixel_args(&["embed"], &cfg, &rest))
}

/// shared/cases/knn-val-class-subset: val holds only the bank's second class.
#[test]
fn validation_labels_follow_the_bank_class_names() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, val) = (tmp.path().join("train"), tmp.path().join("val"));
    for i in 0..2 {
        png(&train.join(format!("a_red/{i}.png")), RED, i);
        png(&train.join(format!("b_blue/{i}.png")), BLUE, i);
        png(&val.join(format!("b_blue/{i}.png")), BLUE, i + 5);
    }
    let r = json(&knn(&train, &val, &["--k", "1"]));
    assert_eq!(r["scores"][0]["top1"], 100.0, "{r}");
    let cfg = preset();
    let out = ok(&pixel_args(
        &["eval", "linear"],
        &cfg,
        &[
            "--train",
            s(&train),
            "--val",
            s(&val),
            "--epochs",
            "5",
            "--json",
        ],
    ));
    let r = json(&out);
    assert_eq!(r["final_top1"], 100.0, "{r}");

    // embed --classes-from numbers a folder embedded on its own by the bank's classes.
    let feats = tmp.path().join("f/val.npy");
    succeeded(embed(&val, &feats, &["--classes-from", s(&train)]));
    let labels = tch::Tensor::read_npy(tmp.path().join("f/val.labels.npy")).unwrap();
    assert_eq!(Vec::<i64>::try_from(&labels).unwrap(), [1, 1]);
    let classes = std::fs::read_to_string(tmp.path().join("f/val.classes.json")).unwrap();
    let classes: Vec<String> = serde_json::from_str(&classes).unwrap();
    assert_eq!(classes, ["a_red", "b_blue"]);

    // A class the bank lacks: an error naming it, or skipped and counted.
    png(&val.join("c_green/0.png"), GREEN, 0);
    let err = fails(&pixel_args(
        &["eval", "knn"],
        &cfg,
        &["--train", s(&train), "--val", s(&val), "--k", "1"],
    ));
    assert!(err.contains("\"c_green\""), "{err}");
    let out = knn(&train, &val, &["--k", "1", "--skip-unknown-classes"]);
    let r = json(&out);
    assert_eq!(
        (r["n_test"].as_u64(), r["scores"][0]["top1"].as_f64()),
        (Some(2), Some(100.0))
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 evaluated image(s)") && err.contains("c_green"),
        "{err}"
    );
}

/// shared/cases/imagefolder-symlink-loop-relabel: a link back to the root lists nothing twice.
#[cfg(unix)]
#[test]
fn a_link_back_to_the_root_relabels_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    png(&data.join("ants/0.png"), RED, 0);
    png(&data.join("ants/1.png"), RED, 1);
    png(&data.join("bees/0.png"), BLUE, 0);
    std::os::unix::fs::symlink("..", data.join("bees/loop")).unwrap();
    let feats = tmp.path().join("out/f.npy");
    succeeded(embed(&data, &feats, &[]));
    let labels = tch::Tensor::read_npy(tmp.path().join("out/f.labels.npy")).unwrap();
    assert_eq!(Vec::<i64>::try_from(&labels).unwrap(), [0, 0, 1]);
    let paths = std::fs::read_to_string(tmp.path().join("out/f.paths.json")).unwrap();
    assert!(!paths.contains("loop"), "{paths}");
    let r = json(&knn(&data, &data, &["--k", "1"]));
    assert_eq!(r["scores"][0]["top1"], 100.0, "{r}");
}

/// shared/cases/knn-k-exceeds-bank: 4 train images and the default k list (10, 20, 100, 200).
#[test]
fn k_above_the_bank_is_capped_with_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for i in 0..2 {
        png(&data.join(format!("a/{i}.png")), RED, i);
        png(&data.join(format!("b/{i}.png")), BLUE, i);
    }
    let out = knn(&data, &data, &[]);
    let r = json(&out);
    assert_eq!(r["scores"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["scores"][0]["k"], 4);
    assert_eq!(
        r["scores"][0]["capped_from"],
        serde_json::json!([10, 20, 100, 200])
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("using k = 4"), "{err}");
    // An explicit k is capped the same way.
    let r = json(&knn(&data, &data, &["--k", "20"]));
    assert_eq!(
        (
            r["scores"][0]["k"].as_u64(),
            r["scores"][0]["top1"].as_f64()
        ),
        (Some(4), Some(100.0))
    );
}

/// shared/cases/knn-top5-zero-vote: val/a is blue, so its 2 neighbours are class c and class a
/// gets no vote: not a top-5 hit. Two more training classes far from blue (the case's 3 classes
/// would make top-5 "n/a": it is reported from 5 classes on) leave the neighbours unchanged.
#[test]
fn a_zero_vote_class_is_no_top5_hit() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, val) = (tmp.path().join("train"), tmp.path().join("val"));
    png(&train.join("a/0.png"), RED, 0);
    png(&train.join("b/0.png"), GREEN, 0);
    png(&train.join("c/0.png"), BLUE, 0);
    png(&train.join("c/1.png"), BLUE, 1);
    png(&train.join("d/0.png"), [220, 220, 20], 0);
    png(&train.join("e/0.png"), [220, 20, 220], 0);
    png(&val.join("a/0.png"), BLUE, 2);
    png(&val.join("b/0.png"), GREEN, 2);
    png(&val.join("c/0.png"), BLUE, 3);
    let r = json(&knn(&train, &val, &["--k", "1,2"]));
    assert_eq!(r["num_classes"], 5, "{r}");
    for i in 0..2 {
        let (t1, t5) = (
            r["scores"][i]["top1"].as_f64().unwrap(),
            r["scores"][i]["top5"].as_f64().unwrap(),
        );
        assert!(
            (t1 - 200.0 / 3.0).abs() < 1e-6 && (t5 - 200.0 / 3.0).abs() < 1e-6,
            "{r}"
        );
    }
}

/// shared/cases/embed-out-missing-dir: the output folder is created; a path that cannot be
/// written fails before any image is embedded, naming it (after the input is probed).
#[test]
fn outputs_are_prepared_before_the_work() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    png(&data.join("x/0.png"), RED, 0);
    let deep = tmp.path().join("out/does-not-exist/sub/feats.npy");
    succeeded(embed(&data, &deep, &[]));
    assert!(deep.is_file());
    // A file where a folder must be: the error names the path, before any image is embedded.
    std::fs::write(tmp.path().join("blocker"), b"x").unwrap();
    let blocked: PathBuf = tmp.path().join("blocker/feats.npy");
    let err = failed(embed(&data, &blocked, &[]));
    assert!(err.contains("blocker"), "{err}");
    // The input is probed first (issue #26): missing data is named, and no output folder made.
    let missing = tmp.path().join("no-such-data");
    let never = tmp.path().join("never/feats.npy");
    let err = failed(embed(&missing, &never, &[]));
    assert!(err.contains("no-such-data"), "{err}");
    assert!(!tmp.path().join("never").exists());
    let err = failed(embed(&missing, &tmp.path().join("feats.txt"), &[]));
    assert!(
        err.contains("feats.txt") && err.contains(".npy or .safetensors"),
        "{err}"
    );
    // augment preview creates its folder too.
    let preview = tmp.path().join("p/q/crops.png");
    ok(&[
        "augment",
        "preview",
        "--data",
        s(&data),
        "--out",
        s(&preview),
        "--images",
        "1",
    ]);
    assert!(preview.is_file());
}

/// shared/cases/checkpoint-pth-cryptic-error: a PyTorch checkpoint where safetensors is expected.
#[test]
fn a_pth_checkpoint_says_to_run_dino_import() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    png(&data.join("x/0.png"), RED, 0);
    let cfg = preset();
    let text = tmp.path().join("not_safetensors.pth");
    std::fs::write(&text, "this is not a pickle \n").unwrap();
    let zip = tmp.path().join("weights.bin");
    std::fs::write(&zip, b"PK\x03\x04 a torch.save zip archive").unwrap();
    for (file, what) in [
        (&text, "no safetensors header"),
        (&zip, "PyTorch checkpoint"),
    ] {
        let err = fails(&[
            "embed",
            "--checkpoint",
            s(file),
            "--config",
            &cfg,
            "--data",
            s(&data),
            "--out",
            s(&tmp.path().join("o/f.npy")),
        ]);
        assert!(
            err.contains("not a safetensors file") && err.contains(what),
            "{err}"
        );
        assert!(
            err.contains(&format!("dino import --from {}", s(file))),
            "{err}"
        );
        assert!(!err.contains("HeaderTooLarge"), "{err}");
    }
}

/// The same rule inside training: online k-NN scores a validation folder of some of the bank's
/// classes by class name, and a validation class the bank lacks stops the run before any step.
#[test]
fn online_knn_labels_follow_the_bank_class_names() {
    let (tmp, cfg) = common::tiny::tiny_run("");
    let val = tmp.path().join("val");
    // val holds only class "b" (its own label 0, the bank's 1): copies of bank images, so each
    // one's nearest neighbour is itself and only a wrong label can miss.
    std::fs::create_dir_all(val.join("b")).unwrap();
    for name in ["001.png", "003.png"] {
        std::fs::copy(
            tmp.path().join("data/b").join(name),
            val.join("b").join(name),
        )
        .unwrap();
    }
    let knn = |val: &Path, run: &str| {
        let run = tmp.path().join(run);
        let sets = [
            "--set".to_string(),
            format!("eval.knn_train_path=\"{}\"", s(&tmp.path().join("data"))),
            "--set".to_string(),
            format!("eval.knn_val_path=\"{}\"", s(val)),
            "--set".to_string(),
            "eval.knn_every_epochs=1".to_string(),
            "--set".to_string(),
            "eval.knn_k=[1]".to_string(),
            "--set".to_string(),
            "eval.crop_size=16".to_string(),
        ];
        let mut args = common::tiny::train_args(s(&cfg), s(&run), "12");
        args.extend(sets.iter().map(String::as_str));
        (dino(&args), run)
    };
    let (out, run) = knn(&val, "ok");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let top1: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["extra"]["knn_top1_k1"].as_f64())
        .collect();
    // Epochs 0 and 1 end within the 12 steps (6 per epoch).
    assert_eq!(top1, [100.0, 100.0], "{metrics}");

    png(&val.join("zebra/0.png"), GREEN, 0);
    let (out, run) = knn(&val, "bad");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("\"zebra\""), "{err}");
    assert!(!run.join("checkpoint.safetensors").exists());
}
