//! `dino video attention` end to end with a random-initialisation tiny model: frames folders and
//! (when ffmpeg is installed) video files made here, the frame selection flags, the files
//! written, and bad input that fails before any output is written, or leaves the last good
//! output as it was.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common;
use common::tiny::write_config;
use common::DINO;

/// `n` frames `f{i}.png` (1-based, no zero padding), `w × h`, each a different picture.
fn frames(dir: &Path, n: usize, w: u32, h: u32) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for i in 1..=n as u32 {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            // A bright square moving right over a gradient.
            let inside = x >= 3 * i && x < 3 * i + 10 && (8..18).contains(&y);
            if inside {
                image::Rgb([250, 240, 30])
            } else {
                image::Rgb([(x * 5) as u8, (y * 7) as u8, 90])
            }
        });
        img.save(dir.join(format!("f{i}.png"))).unwrap();
    }
    dir.to_path_buf()
}

/// `dino video attention --which random --config CFG --input IN --out OUT extra...`, with `path`
/// as PATH when given (to hide ffmpeg).
fn run(cfg: &Path, input: &Path, out: &Path, extra: &[&str], path: Option<&str>) -> Output {
    let mut cmd = Command::new(DINO);
    cmd.args(["video", "attention", "--which", "random", "--config"])
        .arg(cfg)
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(["--image-size", "16"])
        .args(extra);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    cmd.output().unwrap()
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn fails(o: Output) -> String {
    assert!(!o.status.success(), "succeeded");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    // The tiny model: patch 4, 2 heads; no data needed for --which random.
    let cfg = write_config(tmp.path(), &tmp.path().join("unused"), "");
    (tmp, cfg)
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn png_count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// No staging folder left behind.
fn no_partial(out: &Path) {
    if let Ok(d) = std::fs::read_dir(out) {
        for e in d {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with(".dino-video-partial"), "{name} left");
        }
    }
}

fn ffmpeg_here() -> bool {
    let ok = Command::new("ffmpeg").arg("-version").output().is_ok();
    if !ok {
        eprintln!("notice: ffmpeg not installed; skipping the video-file part of a test");
    }
    ok
}

#[test]
fn frames_folder_gives_side_by_side_frames_and_a_gif() {
    let (tmp, cfg) = setup();
    let input = frames(&tmp.path().join("clip"), 7, 40, 30);
    let out = tmp.path().join("out");
    ok(run(&cfg, &input, &out, &["--video-format", "gif"], None));
    // 40 × 30 at shorter side 16: 21 → 20 (patch 4); three 20 px panels and two 4 px gaps.
    let frames_dir = out.join("frames");
    assert_eq!(png_count(&frames_dir), 7);
    let first = image::open(frames_dir.join("000000.png")).unwrap();
    assert_eq!((first.width(), first.height()), (3 * 20 + 2 * 4, 16));
    let gif = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(
        std::fs::File::open(out.join("attention.gif")).unwrap(),
    ))
    .unwrap();
    let n = image::AnimationDecoder::into_frames(gif)
        .collect_frames()
        .unwrap()
        .len();
    assert_eq!(n, 7);
    let per_frame = lines(&out.join("frames.jsonl"));
    assert_eq!(per_frame.len(), 7);
    // Natural order: f2 before f10-like names; here f1..f7 in order.
    for (i, l) in per_frame.iter().enumerate() {
        assert_eq!(l["index"], i);
        assert!(l["file"]
            .as_str()
            .unwrap()
            .ends_with(&format!("f{}.png", i + 1)));
        let area = l["mask_area"].as_f64().unwrap();
        assert!(area > 0.0 && area <= 1.0, "{area}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("video.json")).unwrap()).unwrap();
    assert_eq!(summary["frames"], 7);
    assert_eq!(summary["size"], serde_json::json!([20, 16]));
    assert_eq!(summary["patch_grid"], serde_json::json!([4, 5]));
    no_partial(&out);

    // Selection: from index 1 every 2nd, at most 2 → indices 1 and 3; PNG frames only.
    let out2 = tmp.path().join("out2");
    ok(run(
        &cfg,
        &input,
        &out2,
        &[
            "--start",
            "1",
            "--every",
            "2",
            "--frames",
            "2",
            "--video-format",
            "none",
            "--head",
            "1",
            "--smooth",
            "3",
        ],
        None,
    ));
    let idx: Vec<u64> = lines(&out2.join("frames.jsonl"))
        .iter()
        .map(|l| l["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, [1, 3]);
    assert_eq!(png_count(&out2.join("frames")), 2);
    assert!(!out2.join("attention.gif").exists() && !out2.join("attention.mp4").exists());
}

#[test]
fn bad_input_fails_before_writing_and_keeps_the_last_output() {
    let (tmp, cfg) = setup();
    let out = tmp.path().join("out");
    // Missing input.
    let err = fails(run(&cfg, &tmp.path().join("nope.mp4"), &out, &[], None));
    assert!(
        err.contains("nope.mp4") && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(png_count(&out), 0, "nothing written");

    // Mixed sizes: both files named, nothing written.
    let mixed = frames(&tmp.path().join("mixed"), 4, 40, 30);
    image::RgbImage::new(30, 40)
        .save(mixed.join("f10.png"))
        .unwrap();
    let err = fails(run(&cfg, &mixed, &out, &[], None));
    assert!(err.contains("f1.png") && err.contains("f10.png"), "{err}");
    assert!(err.contains("one size"), "{err}");
    assert_eq!(png_count(&out), 0);

    // A head the model lacks, a threshold outside (0, 1), a start past the end.
    let good = frames(&tmp.path().join("good"), 3, 40, 30);
    let err = fails(run(&cfg, &good, &out, &["--head", "2"], None));
    assert!(err.contains("--head 2") && err.contains("2 heads"), "{err}");
    let err = fails(run(&cfg, &good, &out, &["--threshold", "1.5"], None));
    assert!(err.contains("--threshold"), "{err}");
    let err = fails(run(&cfg, &good, &out, &["--start", "3"], None));
    assert!(err.contains("no frames selected"), "{err}");
    assert_eq!(png_count(&out), 0);
    // A ResNet has no attention: refused before the output folder exists.
    let resnet_out = tmp.path().join("resnet_out");
    let err = fails(run(
        &cfg,
        &good,
        &resnet_out,
        &[
            "--set",
            "model.arch=resnet18",
            "--set",
            "model.cifar_stem=true",
        ],
        None,
    ));
    assert!(err.contains("video attention"), "{err}");
    assert!(!resnet_out.exists(), "no output folder for a refused model");

    // A good run, then one that fails at its third frame (a PNG whose header is fine and whose
    // pixels are cut off): the first run's output stays whole, no staging folder is left.
    ok(run(&cfg, &good, &out, &["--video-format", "gif"], None));
    let bad = frames(&tmp.path().join("bad"), 5, 40, 30);
    let bytes = std::fs::read(bad.join("f3.png")).unwrap();
    std::fs::write(bad.join("f3.png"), &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(run(&cfg, &bad, &out, &["--video-format", "gif"], None));
    assert!(err.contains("f3.png"), "{err}");
    assert_eq!(png_count(&out.join("frames")), 3);
    assert_eq!(lines(&out.join("frames.jsonl")).len(), 3);
    no_partial(&out);
}

#[test]
fn video_files_go_through_ffmpeg() {
    let (tmp, cfg) = setup();
    let input = frames(&tmp.path().join("clip"), 9, 40, 30);
    // Without ffmpeg on PATH: a video file is refused naming it, a folder still gives a GIF.
    let fake = tmp.path().join("clip.mp4");
    std::fs::write(&fake, b"not a video").unwrap();
    let out = tmp.path().join("out");
    let err = fails(run(&cfg, &fake, &out, &[], Some("")));
    assert!(err.contains("ffprobe") || err.contains("ffmpeg"), "{err}");
    assert!(err.contains("not found"), "{err}");
    let err = fails(run(
        &cfg,
        &input,
        &out,
        &["--video-format", "mp4"],
        Some(""),
    ));
    assert!(err.contains("ffmpeg"), "{err}");
    ok(run(&cfg, &input, &out, &[], Some("")));
    assert!(out.join("attention.gif").exists());
    assert!(!out.join("attention.mp4").exists());

    if !ffmpeg_here() {
        return;
    }
    // A real MP4 of the frames, 10 fps.
    let mp4 = tmp.path().join("clip_real.mp4");
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-framerate", "10", "-i"])
        .arg(input.join("f%d.png"))
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .arg(&mp4)
        .status()
        .unwrap();
    assert!(st.success());
    // An unreadable file is named.
    let err = fails(run(&cfg, &fake, &out, &[], None));
    assert!(
        err.contains("clip.mp4") && err.contains("cannot read"),
        "{err}"
    );

    let out = tmp.path().join("out_mp4");
    let o = ok(run(&cfg, &mp4, &out, &["--every", "2"], None));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("5 frames"), "{stdout}");
    assert_eq!(png_count(&out.join("frames")), 5);
    // The output video: 5 frames at 10 / 2 fps, 68 × 16.
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args([
            "-show_entries",
            "stream=width,height,nb_read_frames,avg_frame_rate",
        ])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(out.join("attention.mp4"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&probe.stdout);
    for want in [
        "width=68",
        "height=16",
        "nb_read_frames=5",
        "avg_frame_rate=5/1",
    ] {
        assert!(text.contains(want), "{want} in {text}");
    }
}

#[test]
fn segmentation_refuses_a_resnet_before_writing() {
    let (tmp, cfg) = setup();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for (k, c) in [[200u8, 40, 40], [40, 200, 40], [40, 40, 200]]
        .iter()
        .enumerate()
    {
        image::RgbImage::from_fn(96, 80, |x, y| {
            let t = ((x / 8 + y / 8) % 2) as u8 * 30;
            image::Rgb([c[0].saturating_add(t), c[1], c[2].saturating_sub(t)])
        })
        .save(photos.join(format!("p{k}.png")))
        .unwrap();
    }
    let davis = tmp.path().join("davis");
    let status = Command::new(DINO)
        .args([
            "data",
            "video-seq",
            "--frames",
            "3",
            "--width",
            "96",
            "--height",
            "72",
        ])
        .arg("--from")
        .arg(&photos)
        .arg("--out")
        .arg(&davis)
        .status()
        .unwrap();
    assert!(status.success());
    let out = tmp.path().join("seg");
    let o = Command::new(DINO)
        .args(["video", "segment", "--which", "random", "--config"])
        .arg(&cfg)
        .args([
            "--set",
            "model.arch=resnet18",
            "--set",
            "model.cifar_stem=true",
        ])
        .arg("--davis")
        .arg(&davis)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = fails(o);
    assert!(err.contains("video segmentation"), "{err}");
    assert!(!out.exists(), "no output folder for a refused model");
}
