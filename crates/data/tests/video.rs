//! Video input and output (`dino_data::video`): frames folders in natural order, video files
//! through ffmpeg, the frame selection options, the patch-grid resize, bad input, and the MP4 /
//! GIF writers. The videos are made here: frames drawn as PNGs, and, when ffmpeg is installed,
//! encoded by it (those tests print a notice and pass without it).

use std::path::{Path, PathBuf};
use std::process::Command;

use dino_data::video::{
    fitted_size, probe, tool_available, FrameSize, FrameSource, VideoError, VideoFormat,
    VideoOptions, VideoWriter,
};
use image::{Rgb, RgbImage};

/// The grey level that marks frame `i` (distinct, far apart for lossy codecs).
fn shade(i: usize) -> u8 {
    (10 + 20 * i) as u8
}

/// A flat frame of frame `i`'s shade.
fn flat(w: u32, h: u32, i: usize) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb([shade(i), shade(i), 255 - shade(i)]))
}

/// `n` frames `frame{i}.png` (no zero padding: a plain string sort puts frame10 before frame2).
fn frames_folder(dir: &Path, n: usize, w: u32, h: u32) -> PathBuf {
    let d = dir.join("frames");
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..n {
        flat(w, h, i).save(d.join(format!("frame{i}.png"))).unwrap();
    }
    // Not a frame: ignored.
    std::fs::write(d.join("notes.txt"), "x").unwrap();
    d
}

/// The frame index a frame's shade says (nearest).
fn which(img: &RgbImage) -> usize {
    let g = img.get_pixel(img.width() / 2, img.height() / 2)[0] as f64;
    ((g - 10.0) / 20.0).round() as usize
}

fn opts(patch: u32) -> VideoOptions {
    VideoOptions {
        patch,
        ..Default::default()
    }
}

fn collect(path: &Path, o: &VideoOptions) -> Vec<dino_data::video::Frame> {
    FrameSource::open(path, o)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn ffmpeg_or_notice() -> bool {
    let ok = tool_available("ffmpeg") && tool_available("ffprobe");
    if !ok {
        eprintln!("notice: ffmpeg/ffprobe not installed; skipping a video-file test");
    }
    ok
}

#[test]
fn sizes_round_to_the_patch_keeping_the_aspect() {
    // 50 × 30, patch 8: 6.25 → 6 and 3.75 → 4 patches.
    assert_eq!(fitted_size(50, 30, FrameSize::Native, 8).unwrap(), (48, 32));
    // Shorter side 16: 16 · 50 / 30 = 26 → 24.
    assert_eq!(
        fitted_size(50, 30, FrameSize::Shorter(16), 8).unwrap(),
        (24, 16)
    );
    // Portrait, and vtest.avi at 240 with patch 8 / 16.
    assert_eq!(
        fitted_size(30, 50, FrameSize::Shorter(16), 8).unwrap(),
        (16, 24)
    );
    assert_eq!(
        fitted_size(768, 576, FrameSize::Shorter(240), 8).unwrap(),
        (320, 240)
    );
    assert_eq!(
        fitted_size(768, 576, FrameSize::Shorter(240), 16).unwrap(),
        (320, 240)
    );
    // Never below one patch.
    assert_eq!(fitted_size(3, 2, FrameSize::Native, 8).unwrap(), (8, 8));
    assert!(matches!(
        fitted_size(50, 30, FrameSize::Shorter(4), 8),
        Err(VideoError::BadOption { name: "size", .. })
    ));
}

#[test]
fn folder_frames_come_in_natural_order_at_the_patch_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = frames_folder(tmp.path(), 12, 50, 30);
    let src = FrameSource::open(&dir, &opts(8)).unwrap();
    let info = src.info().clone();
    assert_eq!(info.source_size, (50, 30));
    assert_eq!(info.size, (48, 32));
    assert_eq!(info.stream_frames, Some(12));
    let frames: Vec<_> = src.collect::<Result<_, _>>().unwrap();
    assert_eq!(frames.len(), 12);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!((f.position, f.index), (i, i));
        assert_eq!(f.image.dimensions(), (48, 32));
        // frame2 comes before frame10: the pixels say which file each is.
        assert_eq!(which(&f.image), i, "{:?}", f.file);
        assert_eq!(
            f.file.as_ref().unwrap().file_name().unwrap(),
            format!("frame{i}.png").as_str()
        );
    }
}

#[test]
fn start_every_and_frames_pick_the_stream_indices() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = frames_folder(tmp.path(), 12, 50, 30);
    let pick = |start, every, frames| {
        let o = VideoOptions {
            start,
            every,
            frames,
            ..opts(8)
        };
        let planned = FrameSource::open(&dir, &o)
            .unwrap()
            .info()
            .planned_frames(&o);
        let got: Vec<usize> = collect(&dir, &o).iter().map(|f| which(&f.image)).collect();
        assert_eq!(planned, Some(got.len()), "start {start} every {every}");
        let idx: Vec<usize> = collect(&dir, &o).iter().map(|f| f.index).collect();
        assert_eq!(got, idx);
        got
    };
    assert_eq!(pick(2, 3, None), [2, 5, 8, 11]);
    assert_eq!(pick(2, 3, Some(3)), [2, 5, 8]);
    assert_eq!(pick(0, 5, None), [0, 5, 10]);
    assert_eq!(pick(11, 1, Some(4)), [11]);
    assert_eq!(pick(12, 1, None), Vec::<usize>::new());
    let o = VideoOptions {
        every: 0,
        ..opts(8)
    };
    assert!(matches!(
        FrameSource::open(&dir, &o),
        Err(VideoError::BadOption { name: "every", .. })
    ));
    // The output rate: a folder's (default 30) over `every`.
    let o = VideoOptions {
        every: 3,
        fps: Some(12.0),
        ..opts(8)
    };
    let src = FrameSource::open(&dir, &o).unwrap();
    assert_eq!(src.info().output_fps(3), Some(4.0));
}

#[test]
fn bad_folders_fail_when_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let err = FrameSource::open(&missing, &opts(8)).unwrap_err();
    assert!(matches!(err, VideoError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(
        FrameSource::open(&empty, &opts(8)),
        Err(VideoError::NoFrames { .. })
    ));

    // One frame of another size, late in the order: found before any frame is decoded.
    let dir = frames_folder(tmp.path(), 12, 50, 30);
    flat(40, 30, 3).save(dir.join("frame11.png")).unwrap();
    let err = FrameSource::open(&dir, &opts(8)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, VideoError::MixedSizes { .. }), "{msg}");
    assert!(
        msg.contains("frame0.png") && msg.contains("frame11.png"),
        "{msg}"
    );
    assert!(msg.contains("50×30") && msg.contains("40×30"), "{msg}");

    // A frame file that is no image: named when opened.
    let dir2 = tmp.path().join("broken");
    std::fs::create_dir(&dir2).unwrap();
    flat(16, 16, 0).save(dir2.join("a1.png")).unwrap();
    std::fs::write(dir2.join("a2.png"), b"not a png").unwrap();
    let err = FrameSource::open(&dir2, &opts(8)).unwrap_err();
    assert!(err.to_string().contains("a2.png"), "{err}");
}

/// Encodes the frames of `frames_folder` (`frame%d.png`) at 10 fps into `name` with ffmpeg.
fn encode(frames: &Path, out: &Path, extra: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-framerate", "10", "-i"])
        .arg(frames.join("frame%d.png"))
        .args(extra)
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn video_files_decode_frame_by_frame() {
    if !ffmpeg_or_notice() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = frames_folder(tmp.path(), 12, 50, 30);
    let mp4 = tmp.path().join("tiny.mp4");
    // Lossless H.264 in full-resolution chroma: colours survive up to the RGB↔YUV rounding.
    encode(
        &dir,
        &mp4,
        &["-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p"],
    );
    let p = probe(&mp4).unwrap();
    assert_eq!(
        (p.width, p.height, p.fps, p.frames),
        (50, 30, Some(10.0), Some(12))
    );

    let src = FrameSource::open(&mp4, &opts(8)).unwrap();
    assert_eq!(src.info().size, (48, 32));
    assert_eq!(src.info().fps, Some(10.0));
    let frames: Vec<_> = src.collect::<Result<_, _>>().unwrap();
    assert_eq!(frames.len(), 12);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.image.dimensions(), (48, 32));
        assert_eq!(which(&f.image), i);
        assert!(f.file.is_none());
    }
    // The same selection as for the folder.
    let o = VideoOptions {
        start: 2,
        every: 3,
        frames: Some(3),
        size: FrameSize::Shorter(16),
        ..opts(8)
    };
    let got: Vec<(usize, usize)> = collect(&mp4, &o)
        .iter()
        .map(|f| {
            assert_eq!(f.image.dimensions(), (24, 16));
            (f.index, which(&f.image))
        })
        .collect();
    assert_eq!(got, [(2, 2), (5, 5), (8, 8)]);
    // --fps 5 of a 10 fps video: every other frame, and the rate is the one asked for.
    let o = VideoOptions {
        fps: Some(5.0),
        ..opts(8)
    };
    let src = FrameSource::open(&mp4, &o).unwrap();
    assert_eq!(src.info().output_fps(1), Some(5.0));
    let n = src.count();
    assert_eq!(n, 6, "12 frames at 10 fps resampled to 5 fps");
}

#[test]
fn unreadable_and_truncated_videos_are_errors() {
    if !ffmpeg_or_notice() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("fake.mp4");
    std::fs::write(&fake, b"this is not a video at all").unwrap();
    let err = FrameSource::open(&fake, &opts(8)).unwrap_err();
    assert!(matches!(err, VideoError::Unreadable { .. }), "{err}");
    assert!(err.to_string().contains("fake.mp4"), "{err}");

    // The first half of an AVI (index at the end, frames first): some frames, then an error or
    // a clean end — never a frame cut in half.
    let dir = frames_folder(tmp.path(), 12, 50, 30);
    let avi = tmp.path().join("whole.avi");
    encode(&dir, &avi, &["-c:v", "mjpeg"]);
    let bytes = std::fs::read(&avi).unwrap();
    let cut = tmp.path().join("cut.avi");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    if let Ok(src) = FrameSource::open(&cut, &opts(8)) {
        let mut n = 0;
        for f in src {
            match f {
                Ok(f) => {
                    assert_eq!(f.image.dimensions(), (48, 32));
                    n += 1;
                }
                Err(e) => {
                    assert!(e.to_string().contains("cut.avi"), "{e}");
                    break;
                }
            }
        }
        assert!(n < 12, "{n} frames from half a file");
    }
}

#[test]
fn writers_stream_frames_into_a_video() {
    let tmp = tempfile::tempdir().unwrap();
    // GIF, no ffmpeg needed.
    let gif = tmp.path().join("a.gif");
    let mut w = VideoWriter::create(&gif, VideoFormat::Gif, 24, 16, 10.0).unwrap();
    for i in 0..3 {
        w.push(&flat(24, 16, i)).unwrap();
    }
    let err = w.push(&flat(8, 8, 0)).unwrap_err();
    assert!(err.to_string().contains("8×8"), "{err}");
    assert_eq!(w.frames(), 3);
    w.finish().unwrap();
    let dec = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(
        std::fs::File::open(&gif).unwrap(),
    ))
    .unwrap();
    let frames = image::AnimationDecoder::into_frames(dec)
        .collect_frames()
        .unwrap();
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0].delay().numer_denom_ms(), (100, 1));

    if !ffmpeg_or_notice() {
        return;
    }
    // MP4 with odd sides: padded to even by one pixel.
    let mp4 = tmp.path().join("a.mp4");
    let mut w = VideoWriter::create(&mp4, VideoFormat::Mp4, 41, 25, 8.0).unwrap();
    for i in 0..5 {
        w.push(&flat(41, 25, i)).unwrap();
    }
    w.finish().unwrap();
    let p = probe(&mp4).unwrap();
    assert_eq!(
        (p.width, p.height, p.frames, p.fps),
        (42, 26, Some(5), Some(8.0))
    );
    // Read back through the frame source: the shades in order.
    let got: Vec<usize> = collect(&mp4, &opts(2))
        .iter()
        .map(|f| which(&f.image))
        .collect();
    assert_eq!(got, [0, 1, 2, 3, 4]);
}
