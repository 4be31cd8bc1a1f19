//! `dino eval knn` / `dino embed` from the command line: the random-initialisation and pixel
//! baselines need only a configuration, and give the same features with or without a run folder.

use std::path::Path;

use crate::common;
use common::tiny::{tiny_run, train_args};
use common::{dino, ok};

fn knn_top1(json: &[u8]) -> f64 {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    v["scores"][0]["top1"].as_f64().unwrap()
}

#[test]
fn baselines_need_no_checkpoint() {
    let (tmp, cfg) = tiny_run("");
    let data = tmp.path().join("data");
    let (cfg, data) = (cfg.to_str().unwrap(), data.to_str().unwrap());
    for which in ["random", "pixels"] {
        // Bank = queries: with k = 1 every image finds itself (similarity 1), so any feature
        // that tells the 48 images apart scores 100 %.
        let out = ok(&[
            "eval", "knn", "--which", which, "--config", cfg, "--train", data, "--val", data,
            "--k", "1", "--json",
        ]);
        assert_eq!(knn_top1(&out.stdout), 100.0, "{which}");
    }
    let out = dino(&[
        "eval", "knn", "--config", cfg, "--train", data, "--val", data,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--checkpoint is required"), "{err}");
}

#[test]
fn knn_on_the_linear_probe_feature() {
    let (tmp, cfg) = tiny_run("");
    let data = tmp.path().join("data");
    let (cfg, data) = (cfg.to_str().unwrap(), data.to_str().unwrap());
    let scores = |extra: &[&str]| {
        let mut args = vec![
            "eval", "knn", "--which", "random", "--config", cfg, "--train", data, "--val", data,
            "--k", "1,5,10", "--json",
        ];
        args.extend(extra);
        let v: serde_json::Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
        v["scores"].clone()
    };
    let cls = scores(&[]);
    // One block without the mean patch token is the CLS feature itself: the last block's
    // normed CLS token, whichever path computes it.
    let one_block = scores(&[
        "--feature",
        "last-blocks",
        "--set",
        "eval.n_last_blocks=1",
        "--set",
        "eval.avgpool_patchtokens=false",
    ]);
    assert_eq!(cls, one_block);
    let two_blocks = scores(&[
        "--feature",
        "last-blocks",
        "--set",
        "eval.n_last_blocks=2",
        "--set",
        "eval.avgpool_patchtokens=true",
    ]);
    assert_eq!(
        two_blocks[0]["top1"].as_f64(),
        Some(100.0),
        "bank = queries at k = 1"
    );
    let out = dino(&[
        "eval",
        "knn",
        "--which",
        "random",
        "--config",
        cfg,
        "--train",
        data,
        "--val",
        data,
        "--feature",
        "last-blocks",
        "--set",
        "eval.n_last_blocks=99",
    ]);
    assert!(!out.status.success(), "more blocks than the ViT has");
}

#[test]
fn random_features_do_not_depend_on_the_run_folder() {
    let (tmp, cfg) = tiny_run("");
    let (data, run) = (tmp.path().join("data"), tmp.path().join("run"));
    let (cfg, data_s, run_s) = (
        cfg.to_str().unwrap(),
        data.to_str().unwrap(),
        run.to_str().unwrap(),
    );
    ok(&train_args(cfg, run_s, "1"));
    let embed = |extra: &[&str], out: &Path| {
        let mut args = vec!["embed", "--which", "random", "--data", data_s];
        args.extend(extra);
        args.extend(["--out", out.to_str().unwrap()]);
        ok(&args);
        std::fs::read(out).unwrap()
    };
    let from_run = embed(&["--checkpoint", run_s], &tmp.path().join("a.npy"));
    let from_cfg = embed(&["--config", cfg], &tmp.path().join("b.npy"));
    assert_eq!(from_run, from_cfg);
    let trained = {
        let out = tmp.path().join("c.npy");
        ok(&[
            "embed",
            "--checkpoint",
            run_s,
            "--data",
            data_s,
            "--out",
            out.to_str().unwrap(),
        ]);
        std::fs::read(out).unwrap()
    };
    assert_ne!(
        from_run, trained,
        "the teacher after one step differs from the random init"
    );
}

#[test]
fn attention_boxes_score_the_written_maps() {
    let (tmp, cfg) = tiny_run("");
    let data = tmp.path().join("data");
    let (boxes, out) = (tmp.path().join("boxes.json"), tmp.path().join("attn"));
    // Boxes on patch borders of the 4 × 4 grid (16 px square, patch 4): 4 and 9 of the 16
    // patches. The images are 24 × 20: --square keeps box fractions on patch borders.
    std::fs::write(
        &boxes,
        r#"{"_about": "a comment", "a/000.png": [[0, 0, 0.5, 0.5]],
            "b/001.png": [[0.25, 0.25, 1, 1], [0.5, 0.5, 1, 1]]}"#,
    )
    .unwrap();
    let (cfg_s, data_s, boxes_s, out_s) = (
        cfg.to_str().unwrap(),
        data.to_str().unwrap(),
        boxes.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let args = [
        "attention",
        "--which",
        "random",
        "--config",
        cfg_s,
        "--data",
        data_s,
        "--boxes",
        boxes_s,
        "--image-size",
        "16",
        "--square",
        "--out",
        out_s,
    ];
    ok(&args);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("scores.json")).unwrap()).unwrap();
    assert_eq!(report["summary"]["images"], 2);
    let area = report["summary"]["box_area"].as_f64().unwrap();
    assert!((area - (4.0 + 9.0) / 32.0).abs() < 1e-12, "{area}");
    // Each head's mass in the box, recomputed from the raw maps the command wrote.
    for (stem, cells) in [
        ("a/000", vec![0, 1, 4, 5]),
        ("b/001", vec![5, 6, 7, 9, 10, 11, 13, 14, 15]),
    ] {
        let raw = tch::Tensor::read_npy(out.join(stem).join("attn.npy")).unwrap();
        assert_eq!(raw.size(), [2, 4, 4]);
        for head in 0..2 {
            let map = Vec::<f32>::try_from(&raw.get(head).reshape([-1])).unwrap();
            let total: f32 = map.iter().sum();
            let inside: f32 = cells.iter().map(|&c| map[c]).sum();
            let scored = report["images"][stem]["heads"][head as usize]["mass_in_box"]
                .as_f64()
                .unwrap();
            assert!(
                (scored - (inside / total) as f64).abs() < 1e-5,
                "{stem} head {head}"
            );
        }
    }
    // A box that is not [x0, y0, x1, y1] inside the image is an error naming the image.
    std::fs::write(&boxes, r#"{"a/000.png": [[0.6, 0, 0.4, 1]]}"#).unwrap();
    let bad = dino(&args);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("a/000") && err.contains("box"), "{err}");
    // So is a missing image.
    std::fs::write(&boxes, r#"{"a/999.png": [[0, 0, 1, 1]]}"#).unwrap();
    let err = String::from_utf8_lossy(&dino(&args).stderr).into_owned();
    assert!(err.contains("999.png"), "{err}");
}

/// Writes a `w × h` PNG with a different colour at every pixel to `path`.
fn gradient_png(path: &Path, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 2) as u8, ((x * y) % 256) as u8])
    })
    .save(path)
    .unwrap();
}

#[test]
fn attention_keeps_the_aspect_ratio_unless_square() {
    let (tmp, cfg) = tiny_run("");
    let (land, port) = (tmp.path().join("land.png"), tmp.path().join("port.png"));
    gradient_png(&land, 120, 90);
    gradient_png(&port, 90, 120);
    let cfg = cfg.to_str().unwrap();
    let run = |flags: &[&str], out: &str| -> std::path::PathBuf {
        let out = tmp.path().join(out);
        let mut args = vec!["attention", "--which", "random", "--config", cfg];
        args.extend(["--image", land.to_str().unwrap()]);
        args.extend(["--image", port.to_str().unwrap()]);
        args.extend(["--image-size", "64", "--out", out.to_str().unwrap()]);
        args.extend(flags);
        ok(&args);
        out
    };
    let size = |path: std::path::PathBuf| image::image_dimensions(path).unwrap();
    // Default: shorter side 64, longer int(64 · 120 / 90) = 85, cropped to 84 (patch 4):
    // 16 × 21 patches for the landscape photo, 21 × 16 for the portrait one (2 heads).
    let keep = run(&[], "keep");
    for (stem, grid, px) in [("land", [16, 21], (84, 64)), ("port", [21, 16], (64, 84))] {
        let raw = tch::Tensor::read_npy(keep.join(stem).join("attn.npy")).unwrap();
        assert_eq!(raw.size(), [2, grid[0], grid[1]], "{stem}");
        for png in [
            "img.png",
            "attn-head1.png",
            "attn-mean.png",
            "mask_th0.6_head0.png",
        ] {
            assert_eq!(size(keep.join(stem).join(png)), px, "{stem}/{png}");
        }
    }
    // --keep-aspect only restates the default.
    let explicit = run(&["--keep-aspect"], "explicit");
    for stem in ["land", "port"] {
        assert_eq!(
            std::fs::read(keep.join(stem).join("attn.npy")).unwrap(),
            std::fs::read(explicit.join(stem).join("attn.npy")).unwrap()
        );
    }
    // --square (alias --no-keep-aspect) is the old behaviour: 64 × 64, a 16 × 16 grid.
    for flag in ["--square", "--no-keep-aspect"] {
        let square = run(&[flag], flag.trim_start_matches('-'));
        for stem in ["land", "port"] {
            let raw = tch::Tensor::read_npy(square.join(stem).join("attn.npy")).unwrap();
            assert_eq!(raw.size(), [2, 16, 16], "{flag} {stem}");
            assert_eq!(size(square.join(stem).join("img.png")), (64, 64));
        }
    }
    // The landscape photo alone, with `flags`: the two bad-input cases below.
    let land_only = |flags: &[&str], out: &str| {
        let out = tmp.path().join(out);
        let mut args = vec!["attention", "--which", "random", "--config", cfg];
        args.extend([
            "--image",
            land.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        args.extend(flags);
        dino(&args)
    };
    let both = land_only(&["--keep-aspect", "--square"], "both");
    assert!(!both.status.success());
    // Shorter side below one patch: an error that says so, naming the image.
    let small = land_only(&["--image-size", "3"], "small");
    let err = String::from_utf8_lossy(&small.stderr);
    assert!(
        !small.status.success() && err.contains("land") && err.contains("patch"),
        "{err}"
    );
}

#[test]
fn attention_boxes_follow_the_crop_of_a_non_square_grid() {
    let (tmp, cfg) = tiny_run("");
    let data = tmp.path().join("photos");
    gradient_png(&data.join("x/land.png"), 120, 90);
    // 120 × 90 at 64 px: resized 85 × 64, cropped to 84 × 64, a 16 × 21 grid. A box to
    // 28/85 of the original width ends at 28/84 = 7/21 of the crop: columns 0..7, and to half
    // the height: rows 0..8. A box wholly in the cropped-off column (x ≥ 84/85) adds nothing.
    let boxes = tmp.path().join("boxes.json");
    std::fs::write(
        &boxes,
        format!(
            r#"{{"x/land.png": [[0, 0, {}, 0.5], [0.995, 0, 1, 1]]}}"#,
            28.0 / 85.0
        ),
    )
    .unwrap();
    let out = tmp.path().join("attn");
    ok(&[
        "attention",
        "--which",
        "random",
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--boxes",
        boxes.to_str().unwrap(),
        "--image-size",
        "64",
        "--out",
        out.to_str().unwrap(),
    ]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("scores.json")).unwrap()).unwrap();
    let area = report["images"]["x/land"]["box_area"].as_f64().unwrap();
    assert!((area - 56.0 / 336.0).abs() < 1e-12, "{area}");
    let raw = tch::Tensor::read_npy(out.join("x/land/attn.npy")).unwrap();
    assert_eq!(raw.size(), [2, 16, 21]);
    for head in 0..2 {
        let map = Vec::<f32>::try_from(&raw.get(head).reshape([-1])).unwrap();
        let total: f32 = map.iter().sum();
        let inside: f32 = (0..8)
            .flat_map(|r| (0..7).map(move |c| r * 21 + c))
            .map(|i| map[i])
            .sum();
        let scored = report["images"]["x/land"]["heads"][head as usize]["mass_in_box"]
            .as_f64()
            .unwrap();
        assert!(
            (scored - (inside / total) as f64).abs() < 1e-5,
            "head {head}: {scored} vs {}",
            inside / total
        );
    }
}

/// A ResNet run (resnet18, CIFAR stem) trains, and its teacher's pooled features go through
/// k-NN and the linear probe; `dino attention` refuses it, naming why, before writing anything.
#[test]
fn resnet_runs_evaluate_and_have_no_attention() {
    let (tmp, cfg) = tiny_run("");
    let data = tmp.path().join("data");
    let run = tmp.path().join("rn");
    let (cfg, data, run_s) = (
        cfg.to_str().unwrap(),
        data.to_str().unwrap(),
        run.to_str().unwrap(),
    );
    let mut args = train_args(cfg, run_s, "2");
    args.extend([
        "--set",
        "model.arch=resnet18",
        "--set",
        "model.cifar_stem=true",
    ]);
    ok(&args);
    // Bank = queries, k = 1: features that tell the images apart score 100 %.
    let out = ok(&[
        "eval",
        "knn",
        "--checkpoint",
        run_s,
        "--train",
        data,
        "--val",
        data,
        "--k",
        "1",
        "--json",
    ]);
    assert_eq!(knn_top1(&out.stdout), 100.0);
    ok(&[
        "eval",
        "linear",
        "--checkpoint",
        run_s,
        "--train",
        data,
        "--val",
        data,
        "--epochs",
        "1",
    ]);
    let attn = tmp.path().join("attn");
    let out = dino(&[
        "attention",
        "--checkpoint",
        run_s,
        "--data",
        data,
        "--out",
        attn.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no attention to show"), "{err}");
    assert!(!attn.exists(), "nothing written");
}
