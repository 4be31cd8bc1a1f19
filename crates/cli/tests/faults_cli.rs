//! The three reproducers of issue #26 (`shared/cases/resnet-bn-one-value-nan`,
//! `freeze-backbone-resnet-bn-stats`, `map-tsne-identical-rows-nan`) on data made here, through
//! the `dino` binary, and the nits seen on the way: a video without a frame rate, commands that
//! made their output folder before probing their input.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common;
use common::tiny::{make_images, tensors, write_config};
use common::{dino, ok};
use tch::Tensor;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn failed(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "should fail; stderr:\n{err}");
    err
}

/// `n` CIFAR-size PNGs in 3 class folders, each a different picture.
fn cifar_like(root: &Path, n: u32) -> PathBuf {
    for i in 0..n {
        let dir = root.join(["a", "b", "c"][(i % 3) as usize]);
        std::fs::create_dir_all(&dir).unwrap();
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            image::Rgb([
                ((x * 7 + i * 40) % 256) as u8,
                ((y * 5 + i * 23) % 256) as u8,
                ((x * y + i * 11) % 256) as u8,
            ])
        });
        img.save(dir.join(format!("{i}.png"))).unwrap();
    }
    root.to_path_buf()
}

/// The case's `rn_tiny.toml`: ResNet-18 with torchvision's stem on 32-px global and 16-px local
/// crops (a 32-px crop is 1 x 1 at layer4, a 16-px one from layer3 on), batch 8, 1 thread.
fn rn_tiny(dir: &Path) -> PathBuf {
    let path = dir.join("rn_tiny.toml");
    std::fs::write(
        &path,
        r#"
[augmentation]
global_crops_size = 32
local_crops_size = 16
local_crops_number = 2
[model]
arch = "resnet18"
[head]
out_dim = 64
hidden_dim = 32
bottleneck_dim = 16
[optim]
batch_size = 8
epochs = 1
[schedule]
warmup_epochs = 0
[checkpoint]
saveckp_freq = 0
[runtime]
seed = 0
torch_threads = 1
data_threads = 1
"#,
    )
    .unwrap();
    path
}

fn all_finite(run: &Path) -> bool {
    tensors(run)
        .iter()
        .all(|(_, t)| t.isfinite().all().int64_value(&[]) != 0)
}

/// shared/cases/resnet-bn-one-value-nan: both trainings of the case (a last batch of one image
/// under `data.drop_last = false`; batch 1 one crop group at a time) are refused before any work,
/// naming the key and the cure; with the cure the same run trains and every statistic is finite.
/// A checkpoint whose student holds NaN statistics is refused by every command that reads
/// features of it, naming the tensors, before any output is made.
#[test]
fn resnet_batchnorm_never_sees_one_value_per_channel() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar_like(&tmp.path().join("data"), 9);
    let cfg = rn_tiny(tmp.path());
    let train = |run: &Path, sets: &[&str]| {
        let mut args = vec![
            "train",
            "--config",
            s(&cfg),
            "--data",
            s(&data),
            "--output",
            s(run),
            "--no-progress",
        ];
        for set in sets {
            args.extend(["--set", set]);
        }
        dino(&args)
    };
    // (a) 9 images at batch 8, one local crop, the last batch kept: 1 image alone.
    let run_a = tmp.path().join("rn_case1");
    let err = failed(train(
        &run_a,
        &["data.drop_last=false", "augmentation.local_crops_number=1"],
    ));
    for part in [
        "data.drop_last",
        "last batch of 1 image(s) (9 images per process",
        "16-px crop is 1 x 1 from ResNet layer3",
        "data.drop_last = true",
        "model.cifar_stem = true",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
    assert!(!run_a.exists(), "refused before the run folder is made");
    // (b) batch 1, one view at a time: a 32-px view is 1 x 1 at layer4.
    let run_b = tmp.path().join("rn_case2");
    let err = failed(train(
        &run_b,
        &[
            "optim.batch_size=1",
            "head.use_bn=false",
            "optim.backward_per_crop_group=true",
        ],
    ));
    for part in [
        "optim.batch_size",
        "32-px crop is 1 x 1 from ResNet layer4",
        "optim.backward_per_crop_group = false",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
    assert!(!run_b.exists());

    // The cure of (a): the official drop_last. One step of 8, every tensor finite.
    let good = tmp.path().join("good");
    let out = train(&good, &["augmentation.local_crops_number=1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all_finite(&good));

    // A student whose statistics went NaN (what (a) saved before): every feature command
    // refuses it, naming the tensor, and makes no output; the teacher still evaluates.
    let ck = good.join("checkpoint.safetensors");
    let poisoned: Vec<(String, Tensor)> = Tensor::read_safetensors(&ck)
        .unwrap()
        .into_iter()
        .map(|(n, t)| {
            if n == "student.backbone.layer4.1.bn2.running_var" {
                (n, t.full_like(f64::NAN))
            } else {
                (n, t)
            }
        })
        .collect();
    Tensor::write_safetensors(&poisoned, &ck).unwrap();
    let (good_s, data_s) = (s(&good), s(&data));
    let knn = |which: &str| {
        dino(&[
            "eval",
            "knn",
            "--checkpoint",
            good_s,
            "--which",
            which,
            "--train",
            data_s,
            "--val",
            data_s,
            "--k",
            "1",
        ])
    };
    let err = failed(knn("student"));
    assert!(
        err.contains("NaN or infinite values in 1 tensor(s): layer4.1.bn2.running_var"),
        "{err}"
    );
    let out = knn("teacher");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let feats = tmp.path().join("feats/student.npy");
    let err = failed(dino(&[
        "embed",
        "--checkpoint",
        good_s,
        "--which",
        "student",
        "--data",
        data_s,
        "--out",
        s(&feats),
    ]));
    assert!(err.contains("layer4.1.bn2.running_var"), "{err}");
    assert!(!tmp.path().join("feats").exists(), "no output folder");
    let map = tmp.path().join("map");
    let err = failed(dino(&[
        "map",
        "--checkpoint",
        good_s,
        "--which",
        "student",
        "--data",
        data_s,
        "--method",
        "pca",
        "--out",
        s(&map),
    ]));
    assert!(err.contains("layer4.1.bn2.running_var"), "{err}");
    assert!(!map.exists(), "no output folder");
}

/// A ResNet-18 (CIFAR stem) config on the tiny images: 16-px global, 8-px local crops.
fn frozen_config(dir: &Path, data: &Path) -> PathBuf {
    let cfg = write_config(dir, data, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "arch = \"custom\"",
        "arch = \"resnet18\"\ncifar_stem = true",
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// The `backbone.` tensors of `which` in a run's checkpoint, by name under the backbone.
fn backbone(run: &Path, which: &str) -> Vec<(String, Tensor)> {
    let prefix = format!("{which}.backbone.");
    tensors(run)
        .into_iter()
        .filter_map(|(n, t)| n.strip_prefix(&prefix).map(|k| (k.to_string(), t)))
        .collect()
}

/// Names of the tensors of `a` that are not bitwise those of `b` (same names, in order).
fn differing(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> Vec<String> {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .filter(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            !ta.equal(tb)
        })
        .map(|((n, _), _)| n.clone())
        .collect()
}

/// shared/cases/freeze-backbone-resnet-bn-stats: a run initialised from another's teacher with
/// `schedule.freeze_backbone_epochs = 1` keeps the student's and the teacher's backbone bitwise
/// the source's (weights, BatchNorm running statistics, `num_batches_tracked`: 120 tensors for
/// ResNet-18), also across a resume inside the frozen epoch, while the head trains; the same run
/// without the freeze re-estimates the statistics.
#[test]
fn a_frozen_resnet_backbone_is_bitwise_the_loaded_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_images(&data);
    let cfg = frozen_config(tmp.path(), &data);
    let train = |run: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--config",
            s(&cfg),
            "--output",
            s(run),
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        ok(&args)
    };
    let src = tmp.path().join("src");
    train(&src, &["--max-steps", "1"]);
    let source = backbone(&src, "teacher");
    assert_eq!(source.len(), 120);

    let ft = tmp.path().join("ft");
    let init = [
        "--init-from",
        s(&src),
        "--set",
        "schedule.freeze_backbone_epochs=1",
    ];
    let mut first = init.to_vec();
    first.extend(["--max-steps", "1"]);
    train(&ft, &first);
    let head = |run: &Path| {
        tensors(run)
            .into_iter()
            .filter(|(n, _)| n.starts_with("student.head."))
            .collect::<Vec<_>>()
    };
    let head_at_step_0 = head(&ft);
    // Resumed inside the frozen epoch (48 images / batch 8: step 1 of 6, the first at a
    // learning rate above 0), with the configuration stored in the run folder.
    ok(&[
        "train",
        "--resume",
        s(&ft),
        "--max-steps",
        "1",
        "--no-progress",
    ]);
    for which in ["student", "teacher"] {
        let now = backbone(&ft, which);
        assert_eq!(differing(&now, &source), Vec::<String>::new(), "{which}");
    }
    assert!(
        !differing(&head(&ft), &head_at_step_0).is_empty(),
        "the head trains while the backbone is frozen"
    );

    // Without the freeze, the same steps re-estimate the BatchNorm statistics.
    let free = tmp.path().join("free");
    train(&free, &["--init-from", s(&src), "--max-steps", "1"]);
    let changed = differing(&backbone(&free, "student"), &source);
    assert!(
        changed.iter().any(|n| n.ends_with("running_var"))
            && changed.iter().any(|n| n.ends_with("num_batches_tracked")),
        "{changed:?}"
    );
}

fn write_features(path: &Path, rows: &Tensor, labels: &Tensor) {
    rows.write_npy(path).unwrap();
    labels
        .write_npy(path.with_file_name(format!(
            "{}.labels.npy",
            path.file_stem().unwrap().to_string_lossy()
        )))
        .unwrap();
}

/// shared/cases/map-tsne-identical-rows-nan: 100 identical feature rows made an all-NaN t-SNE
/// map with exit status 0. Now both maps refuse them before anything is written, as do
/// k-means and retrieval (the siblings); 40 copies of one image among others map fine. From
/// images: 40 copies of one photo (pixels) are refused the same way.
#[test]
fn identical_rows_are_refused_by_maps_clusters_and_retrieval() {
    let tmp = tempfile::tempdir().unwrap();
    let same = tmp.path().join("same.npy");
    let labels = Tensor::from_slice(&[0i64, 1]).repeat([50]);
    write_features(
        &same,
        &(Tensor::ones([100, 16], (tch::Kind::Float, tch::Device::Cpu)) * 0.3),
        &labels,
    );
    for method in ["tsne", "pca"] {
        let out = tmp.path().join(format!("map_{method}"));
        let err = failed(dino(&[
            "map",
            "--features",
            s(&same),
            "--perplexity",
            "10",
            "--method",
            method,
            "--out",
            s(&out),
        ]));
        assert!(err.contains("all 100 feature rows are identical"), "{err}");
        assert!(!out.exists(), "nothing written for {method}");
    }
    let err = failed(dino(&["eval", "cluster", "--features", s(&same)]));
    assert!(
        err.contains("only 1 distinct direction") && err.contains("nothing to cluster"),
        "{err}"
    );
    let err = failed(dino(&["eval", "retrieval", "--features", s(&same)]));
    assert!(
        err.contains("all 100 gallery descriptors are identical"),
        "{err}"
    );

    // 40 copies of one row among 60 others: a finite map.
    let mixed = tmp.path().join("mixed.npy");
    let others = Tensor::randn([60, 16], (tch::Kind::Float, tch::Device::Cpu));
    let rows = Tensor::cat(&[others.narrow(0, 0, 1).repeat([40, 1]), others], 0);
    write_features(&mixed, &rows, &labels);
    let out = tmp.path().join("map_mixed");
    ok(&[
        "map",
        "--features",
        s(&mixed),
        "--perplexity",
        "10",
        "--iterations",
        "250",
        "--out",
        s(&out),
    ]);
    let coords = Tensor::read_npy(out.join("coords.npy")).unwrap();
    assert_eq!(coords.size(), [100, 2]);
    assert_eq!(coords.isfinite().all().int64_value(&[]), 1);

    // The case's images: one photo copied 20 times into a/ and 20 times into b/.
    let data = tmp.path().join("data");
    for class in ["a", "b"] {
        std::fs::create_dir_all(data.join(class)).unwrap();
    }
    let photo = image::RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 8) as u8, ((x + y) * 4) as u8])
    });
    for i in 1..=20 {
        for class in ["a", "b"] {
            photo
                .save(data.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let preset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/cifar10_cpu.toml");
    let out = tmp.path().join("map_same");
    let err = failed(dino(&[
        "map",
        "--which",
        "pixels",
        "--config",
        s(&preset),
        "--data",
        s(&data),
        "--perplexity",
        "10",
        "--out",
        s(&out),
    ]));
    assert!(err.contains("all 40 feature rows are identical"), "{err}");
    assert!(!out.exists(), "nothing written");
}

/// Every command that makes an output folder probes its input first: a missing input fails
/// naming it, and no output folder is left behind.
#[test]
fn no_command_makes_its_output_folder_before_its_input_is_probed() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), &tmp.path().join("unused"), "");
    let (cfg, missing) = (s(&cfg), tmp.path().join("missing"));
    let missing = s(&missing);
    let out = tmp.path().join("out");
    let out_s = s(&out);
    let file = out.join("x.npy");
    let png = out.join("x.png");
    let model = ["--which", "random", "--config", cfg];
    let cases: Vec<Vec<&str>> = vec![
        [
            &["embed"][..],
            &model,
            &["--data", missing, "--out", s(&file)],
        ]
        .concat(),
        [&["map"][..], &model, &["--data", missing, "--out", out_s]].concat(),
        vec!["map", "--features", missing, "--out", out_s],
        [
            &["attention"][..],
            &model,
            &["--image", missing, "--out", out_s],
        ]
        .concat(),
        [
            &["video", "attention"][..],
            &model,
            &["--input", missing, "--out", out_s],
        ]
        .concat(),
        [
            &["video", "segment"][..],
            &model,
            &["--davis", missing, "--out", out_s],
        ]
        .concat(),
        vec!["augment", "preview", "--data", missing, "--out", s(&png)],
        vec!["data", "cifar10", "--from", missing, "--out", out_s],
        vec!["data", "video-seq", "--from", missing, "--out", out_s],
        vec!["data", "copydetect", "--from", missing, "--out", out_s],
        vec!["import", "--from", missing, "--out", s(&file)],
        vec![
            "export",
            "--checkpoint",
            missing,
            "--config",
            cfg,
            "--format",
            "onnx",
            "--out",
            s(&file),
        ],
        vec![
            "train", "--config", cfg, "--data", missing, "--output", out_s,
        ],
    ];
    for args in cases {
        let err = failed(dino(&args));
        assert!(err.contains("missing"), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} left {}", out.display());
    }
}

/// A video stream without a frame rate (an MP3's cover art: ffprobe says 90000/1, the time base)
/// is written at the default 30 frames/s, and the output says so.
#[test]
fn cover_art_without_a_frame_rate_gets_a_sane_one_and_says_so() {
    let have = |tool: &str| {
        std::process::Command::new(tool)
            .arg("-version")
            .output()
            .is_ok()
    };
    if !(have("ffmpeg") && have("ffprobe")) {
        eprintln!("notice: ffmpeg not installed; skipping");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), &tmp.path().join("unused"), "");
    let photo = tmp.path().join("photo.png");
    image::RgbImage::from_fn(32, 24, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 9) as u8, 70])
    })
    .save(&photo)
    .unwrap();
    let mp3 = tmp.path().join("cover.mp3");
    let st = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=1",
            "-i",
        ])
        .arg(&photo)
        .args([
            "-map",
            "0",
            "-map",
            "1",
            "-c:a",
            "libmp3lame",
            "-c:v",
            "mjpeg",
        ])
        .args(["-disposition:v", "attached_pic"])
        .arg(&mp3)
        .status()
        .unwrap();
    if !st.success() {
        eprintln!("notice: this ffmpeg cannot write an MP3 with cover art; skipping");
        return;
    }
    let out = tmp.path().join("out");
    let o = ok(&[
        "video",
        "attention",
        "--which",
        "random",
        "--config",
        s(&cfg),
        "--input",
        s(&mp3),
        "--out",
        s(&out),
        "--image-size",
        "16",
        "--video-format",
        "gif",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("gives no usable frame rate") && err.contains("30 frames/s"),
        "{err}"
    );
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("video.json")).unwrap()).unwrap();
    assert_eq!(info["fps"], 30.0);
    assert_eq!(info["fps_from"], "default: the video gives no frame rate");
}
