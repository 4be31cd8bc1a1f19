//! Issue #29's acceptance "`dino import` of a DINOv2 hub file then `dino embed` with the preset
//! gives the official features (mean cosine >= 0.999 on real photos)", with no `--set`: the
//! imported file carries the model keys `dino import` recognised (its safetensors metadata),
//! and the command that loads it reads them over the preset's `[model]` (a hub file's 518-px
//! table, registers, SwiGLU, the antialiased interpolation, none of which the ViT-S/14 preset
//! says). An explicit `--set model.*` still wins, with one warning line.
//!
//! In CI the hub file comes from our own DINOv2 reference (`tests/reference/dinov2_ref.py`,
//! float64, hub key names, LayerScale gains about 1 as the hub builders' `init_values=1.0`,
//! weights at the official init's scale);
//! by hand (ignored test) from the OFFICIAL `dinov2.hub.backbones` of a facebookresearch/dinov2
//! clone. Real photos: the first 16 of `../shared/data/hymenoptera/val` (skipped with a notice
//! when shared/ is absent), through each side's own evaluation transform (Pillow there, ours
//! here: resize 256 bicubic, center crop 224), so the features agree to the resize's rounding,
//! not bitwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;
use tch::{Kind, Tensor};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `shared/data/hymenoptera/val` beside the repository, or `None` with a notice.
fn photos() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/hymenoptera/val");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "notice: {} is missing; real-photo test skipped",
            p.display()
        );
        None
    }
}

fn python() -> PathBuf {
    let p = repo().join(".venv/bin/python");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}

/// A folder of the first `n` ants photos of `val` (symlinks), the order both sides read.
fn photo_folder(val: &Path, into: &Path, n: usize) -> PathBuf {
    let dir = into.join("photos");
    std::fs::create_dir_all(dir.join("ants")).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(val.join("ants"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().to_lowercase().ends_with(".jpg"))
        .collect();
    names.sort();
    for name in names.into_iter().take(n) {
        std::os::unix::fs::symlink(val.join("ants").join(&name), dir.join("ants").join(&name))
            .unwrap();
    }
    dir
}

/// Runs a Python script with `args`; its printed JSON line.
fn run_python(script: &str, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/reference").join(script))
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

/// `dino import --from hub.pth --out hub.safetensors` in `dir`; the imported file.
fn import(dir: &Path) -> PathBuf {
    let file = dir.join("hub.safetensors");
    let out = Command::new(common::DINO)
        .args(["import", "--from"])
        .arg(dir.join("hub.pth"))
        .arg("--out")
        .arg(&file)
        .env("DINO_PYTHON", python())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    file
}

/// `dino embed --checkpoint FILE --config configs/dinov2_vits14.toml --data DATA --raw` plus
/// `extra`: (the raw CLS rows [N, D], the image paths in order, stderr).
fn embed(file: &Path, data: &Path, out: &Path, extra: &[&str]) -> (Tensor, Vec<String>, String) {
    let feats = out.join("feats.npy");
    let preset = repo().join("configs/dinov2_vits14.toml");
    let mut args: Vec<&str> = vec![
        "embed",
        "--checkpoint",
        file.to_str().unwrap(),
        "--config",
        preset.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        feats.to_str().unwrap(),
        "--raw",
    ];
    args.extend(extra);
    let done = common::dino(&args);
    let log = String::from_utf8_lossy(&done.stderr).to_string();
    assert!(done.status.success(), "dino {args:?}:\n{log}");
    let rows = Tensor::read_npy(&feats).unwrap();
    let paths: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(out.join("feats.paths.json")).unwrap())
            .unwrap();
    (rows, paths, log)
}

/// The file names of `paths` (both sides name the same photos through different folders).
fn names(paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .map(|p| {
            Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .collect()
}

/// (mean cosine of matching rows, max |Δ|, mean cosine between different photos of `a`).
fn agreement(a: &Tensor, b: &Tensor) -> (f64, f64, f64) {
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    let cos = Tensor::cosine_similarity(&a, &b, 1, 1e-8)
        .mean(Kind::Double)
        .double_value(&[]);
    let diff = (&a - &b).abs().max().double_value(&[]);
    let n = a.size()[0];
    let u = &a / a.norm_scalaropt_dim(2, [1], true);
    let gram = u.matmul(&u.tr());
    let off = (gram.sum(Kind::Double) - gram.trace()).double_value(&[]) / (n * (n - 1)) as f64;
    (cos, diff, off)
}

#[test]
fn an_imported_hub_file_embeds_with_the_preset_alone() {
    let Some(val) = photos() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = photo_folder(&val, tmp.path(), 16);
    // A DINOv2 register model's layout at ViT-S/14's patch and table (width 192, 2 blocks):
    // 4 registers, LayerScale, SwiGLU, antialiased resize with offset 0 (`dinov2_vits14_reg`).
    let reference = run_python(
        "dinov2_ref.py",
        &[
            "--dim",
            "192",
            "--heads",
            "3",
            "--registers",
            "4",
            "--layerscale",
            "1.0",
            "--ffn",
            "swiglu",
            "--offset",
            "0",
            "--antialias",
            "--hub-init",
            "--sizes",
            "28x28",
            "--images",
            data.to_str().unwrap(),
            "--out",
            tmp.path().to_str().unwrap(),
        ],
        &[],
    );
    let file = import(tmp.path());
    let (ours, paths, log) = embed(&file, &data, tmp.path(), &[]);
    // The keys came from the file, said in one line; nothing contradicted them.
    assert!(
        log.contains("carries the model it was imported with")
            && log.contains("model.num_register_tokens=4")
            && log.contains("model.ffn=\"swiglu\""),
        "{log}"
    );
    assert!(!log.contains("--set overrides"), "{log}");
    let want: Vec<String> = reference["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names(&paths),
        names(&want),
        "the same photos in the same order"
    );
    let official = Tensor::read_safetensors(tmp.path().join("photos.safetensors"))
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "cls")
        .unwrap()
        .1;
    let (cos, diff, between) = agreement(&ours, &official);
    eprintln!(
        "reference register model, 16 photos: mean CLS cosine {cos:.7}, max |Δ| {diff:.2e}; \
         mean cosine between different photos {between:.4}"
    );
    assert!(cos >= 0.999, "mean cosine {cos}");
    // The features tell the photos apart, so the agreement is not that of a constant.
    // (measured 0.63; the official random ViT-S/14: 0.28.)
    assert!(between < 0.9, "{between}");

    // Without the stored keys the preset alone does not fit the file: the keys did the work.
    let bare = tmp.path().join("bare.safetensors");
    let tensors = Tensor::read_safetensors(&file).unwrap();
    Tensor::write_safetensors(&tensors, &bare).unwrap();
    let preset = repo().join("configs/dinov2_vits14.toml");
    let out = common::dino(&[
        "embed",
        "--checkpoint",
        bare.to_str().unwrap(),
        "--config",
        preset.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        tmp.path().join("bare.npy").to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "a file without its keys loaded into the preset's ViT-S/14"
    );
}

/// An explicit `--set model.*` that contradicts the file wins, with one warning line naming the
/// key, the file's value and the one used; one that agrees says nothing.
#[test]
fn an_explicit_set_wins_over_the_file_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    run_python(
        "dinov2_ref.py",
        &[
            "--dim",
            "64",
            "--heads",
            "1",
            "--registers",
            "2",
            "--layerscale",
            "1.0",
            "--offset",
            "0",
            "--antialias",
            "--sizes",
            "28x28",
            "--out",
            tmp.path().to_str().unwrap(),
        ],
        &[],
    );
    let file = import(tmp.path());
    let data = tmp.path().join("data");
    common::tiny::make_images(&data);
    let crop = ["--set", "eval.crop_size=28"];
    let (plain, _, log) = embed(&file, &data, tmp.path(), &crop);
    assert!(!log.contains("--set overrides"), "{log}");
    let mut agree = crop.to_vec();
    agree.extend(["--set", "model.num_register_tokens=2"]);
    let (_, _, log) = embed(&file, &data, tmp.path(), &agree);
    assert!(!log.contains("--set overrides"), "{log}");

    let mut other = crop.to_vec();
    other.extend(["--set", "model.pos_interpolation=\"exact_size\""]);
    let (changed, _, log) = embed(&file, &data, tmp.path(), &other);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("--set overrides the model stored in"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains(
            "model.pos_interpolation: the file says \"antialias\", --set gives \"exact_size\""
        ),
        "{}",
        lines[0]
    );
    // The --set was used: at 28 px the 37 x 37 table is resized another way.
    assert!(
        (&plain - &changed).abs().max().double_value(&[]) > 1e-4,
        "the --set value was not used"
    );
}

/// By hand: the OFFICIAL `dinov2_vits14` and `dinov2_vits14_reg` (random weights, built from a
/// facebookresearch/dinov2 clone at $DINOV2_REF, e.g. /work/ref/dinov2), saved as hub files,
/// imported, and embedded by `dino embed` with the preset alone on the first 16 photos of
/// $DINOV2_IMAGES (e.g. /work/shared/data/hymenoptera/val). Recorded in docs/RESULTS.md
/// ("DINOv2 hub files in").
#[test]
#[ignore = "needs a clone of facebookresearch/dinov2 ($DINOV2_REF) and photos ($DINOV2_IMAGES)"]
fn official_hub_file_embeds_with_the_preset_alone_by_hand() {
    let (Ok(code), Ok(images)) = (std::env::var("DINOV2_REF"), std::env::var("DINOV2_IMAGES"))
    else {
        panic!("set DINOV2_REF and DINOV2_IMAGES");
    };
    for reg in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let data = photo_folder(Path::new(&images), tmp.path(), 16);
        let mut args = vec![
            "--images",
            data.to_str().unwrap(),
            "--out",
            tmp.path().to_str().unwrap(),
        ];
        if reg {
            args.push("--reg");
        }
        let official = run_python("dinov2_official.py", &args, &[("PYTHONPATH", &code)]);
        let file = import(tmp.path());
        let (ours, paths, log) = embed(&file, &data, tmp.path(), &[]);
        let want: Vec<String> = official["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        assert_eq!(names(&paths), names(&want));
        let cls = Tensor::read_safetensors(tmp.path().join("tokens.safetensors"))
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == "cls0")
            .unwrap()
            .1;
        let (cos, diff, between) = agreement(&ours, &cls);
        eprintln!(
            "official dinov2_vits14{}: dino embed with the preset alone, 16 photos 224 x 224: \
             mean CLS cosine {cos:.7}, max |Δ| {diff:.2e}; mean cosine between photos \
             {between:.4}\n{}",
            if reg { "_reg" } else { "" },
            log.lines()
                .find(|l| l.contains("carries the model"))
                .unwrap_or("")
        );
        assert!(cos >= 0.999, "{cos}");
        assert!(!log.contains("--set overrides"), "{log}");
    }
}
