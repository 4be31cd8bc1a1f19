//! `dino video ...`: models run over a video, frame by frame. The input (a video file decoded by
//! ffmpeg, or a folder of frames) and the frame selection are shared by every subcommand
//! ([`InputArgs`], `dino_data::video`); `attention` draws the CLS attention and its mask over
//! each frame (official video_generation.py, `dino_eval::video::attention`); `segment` propagates
//! a DAVIS sequence's first mask (crate::video_segment).

use crate::eval::{ModelArgs, Source};
use anyhow::Context;
use dino_data::video::{
    FrameSize, FrameSource, VideoFormat, VideoInfo, VideoOptions, DEFAULT_FOLDER_FPS,
};
use dino_eval::video::attention::ShownMap;
use dino_eval::video::render::{render_attention, RenderError, RenderOptions, RenderSummary};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub enum VideoCmd {
    /// Per frame: the last block's CLS attention (mean over heads, or one head) and its threshold
    /// mask, as PNG frames `original | attention | mask` and a video of them (official
    /// video_generation.py).
    Attention(AttentionArgs),
    /// Video object segmentation on a DAVIS-2017 folder: the first frame's annotation propagated
    /// with the last block's patch features (official eval_video_segmentation.py); predictions
    /// as palette PNGs (`OUT/<sequence>/<frame>.png`) and J, F, J&F-mean on the annotated frames.
    Segment(crate::video_segment::SegmentArgs),
}

pub fn run(c: VideoCmd) -> anyhow::Result<()> {
    match c {
        VideoCmd::Attention(a) => attention(a),
        VideoCmd::Segment(a) => crate::video_segment::segment(a),
    }
}

/// The video and the frames taken from it, for every `dino video` subcommand.
#[derive(clap::Args, Debug)]
pub struct InputArgs {
    /// A video file (mp4, avi, webm, mov, ...: anything ffmpeg reads; needs Debian's ffmpeg) or a
    /// folder of frame images (taken in natural order: frame2 before frame10; one size).
    #[arg(long)]
    pub input: PathBuf,
    /// Video files: resample the video to this many frames per second first. Frame folders: the
    /// rate they were taken at (30 when not given).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Keep every N-th frame (after --fps).
    #[arg(long, default_value_t = 1)]
    pub every: usize,
    /// First frame kept, 0-based (after --fps).
    #[arg(long, default_value_t = 0)]
    pub start: usize,
    /// At most this many frames (default: to the end).
    #[arg(long)]
    pub frames: Option<usize>,
    /// Shorter side of the frames in pixels, the aspect ratio kept, each side then rounded to
    /// the nearest multiple of the patch size (nothing cropped).
    #[arg(long, default_value_t = 480, conflicts_with = "native_size")]
    pub image_size: u32,
    /// Keep the video's own size (rounded to multiples of the patch size), as the official
    /// video_generation.py does without --resize.
    #[arg(long)]
    pub native_size: bool,
}

impl InputArgs {
    /// The frame-source options for a backbone with `patch`-pixel patches.
    pub fn options(&self, patch: u32, max_pixels: u64) -> VideoOptions {
        VideoOptions {
            fps: self.fps,
            every: self.every,
            start: self.start,
            frames: self.frames,
            size: if self.native_size {
                FrameSize::Native
            } else {
                FrameSize::Shorter(self.image_size)
            },
            patch,
            max_pixels,
        }
    }

    /// Opens the input, checked as far as it can be before any frame is decoded.
    pub fn open(&self, patch: u32, max_pixels: u64) -> anyhow::Result<FrameSource> {
        let opts = self.options(patch, max_pixels);
        let src = FrameSource::open(&self.input, &opts)?;
        if src.info().planned_frames(&opts) == Some(0) {
            anyhow::bail!(
                "no frames selected: {} has {} frames, --start {} is past the end",
                self.input.display(),
                src.info().stream_frames.unwrap_or(0),
                self.start
            );
        }
        Ok(src)
    }
}

/// Container of the output video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutFormat {
    /// MP4 when ffmpeg is installed, an animated GIF otherwise.
    Auto,
    /// H.264 MP4 through ffmpeg.
    Mp4,
    /// Animated GIF (no ffmpeg needed; large and slow for long videos).
    Gif,
    /// PNG frames only.
    None,
}

#[derive(clap::Args, Debug)]
pub struct AttentionArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    input: InputArgs,
    /// Output folder: frames/NNNNNN.png (original | attention | mask), attention.mp4 (or .gif),
    /// frames.jsonl (per frame: its index and the mask's share of the patches) and video.json.
    /// Written only when every frame has been done.
    #[arg(long)]
    out: PathBuf,
    /// Share of the attention mass the mask keeps (official 0.6).
    #[arg(long, default_value_t = dino_eval::attention::DEFAULT_THRESHOLD)]
    threshold: f64,
    /// Show this head (0-based) instead of the mean over heads.
    #[arg(long)]
    head: Option<usize>,
    /// Temporal smoothing: each map is the mean of the maps of this many frames, the current
    /// one and those before it (1: off).
    #[arg(long, default_value_t = 1)]
    smooth: usize,
    /// Output video format.
    #[arg(long, value_enum, default_value = "auto")]
    video_format: OutFormat,
}

/// Files of a finished run in the output folder (replaced as a whole by the next run).
const OUTPUTS: [&str; 5] = [
    "frames",
    "attention.mp4",
    "attention.gif",
    "frames.jsonl",
    "video.json",
];

fn attention(a: AttentionArgs) -> anyhow::Result<()> {
    // Everything that can be checked before the model is loaded and any frame decoded.
    anyhow::ensure!(
        a.model.which != Source::Pixels,
        "--which pixels has no attention"
    );
    anyhow::ensure!(
        a.threshold > 0.0 && a.threshold < 1.0,
        "--threshold must lie in (0, 1), got {}",
        a.threshold
    );
    anyhow::ensure!(
        a.smooth >= 1,
        "--smooth must be at least 1 (1: no smoothing)"
    );
    let format = match a.video_format {
        OutFormat::Auto => Some(VideoFormat::best_available()),
        OutFormat::Mp4 => {
            anyhow::ensure!(
                dino_data::video::tool_available("ffmpeg"),
                "--video-format mp4 needs `ffmpeg` (Debian's ffmpeg package, installed by \
                 scripts/setup.sh); --video-format gif works without it"
            );
            Some(VideoFormat::Mp4)
        }
        OutFormat::Gif => Some(VideoFormat::Gif),
        OutFormat::None => None,
    };
    let emb = a.model.embedder()?;
    // A ResNet has no attention: refused before the output folder or a frame is touched.
    emb.backbone().vit("video attention")?;
    let cfg = &emb.cfg;
    let patch = cfg.model.patch_size as u32;
    if let Some(k) = a.head {
        let heads = cfg.model.dims().2;
        anyhow::ensure!(
            k < heads,
            "--head {k}: the model has {heads} heads (0 to {})",
            heads.saturating_sub(1)
        );
    }
    let source = a
        .input
        .open(patch, cfg.data.max_image_pixels)
        .with_context(|| format!("opening the video {}", a.input.input.display()))?;
    // The video is probed (and the model loaded) before the output folder is made.
    let _out = crate::output::prepare_dir(&a.out)?;
    let info = source.info().clone();
    let (fps, fps_from) = match info.output_fps(a.input.every) {
        Some(fps) if a.input.fps.is_some() => (fps, "--fps"),
        Some(fps) if matches!(info.kind, dino_data::video::SourceKind::Folder { .. }) => {
            (fps, "the frames folder's default")
        }
        Some(fps) => (fps, "the video's own rate"),
        None => {
            let fps = DEFAULT_FOLDER_FPS / a.input.every as f64;
            eprintln!(
                "note: {} gives no usable frame rate (a still image or cover art?): the output \
                 is written at {fps} frames/s; pass --fps to choose",
                info.path.display()
            );
            (fps, "default: the video gives no frame rate")
        }
    };

    // Work in a staging folder; its outputs replace the old ones only once all is done.
    let stage = a
        .out
        .join(format!(".dino-video-partial-{}", std::process::id()));
    let result = render(&a, &emb, source, &info, (fps, fps_from), format, &stage);
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(e);
        }
    };
    for name in OUTPUTS {
        let old = a.out.join(name);
        if old.is_dir() {
            std::fs::remove_dir_all(&old)
        } else if old.exists() {
            std::fs::remove_file(&old)
        } else {
            Ok(())
        }
        .with_context(|| format!("replacing {}", old.display()))?;
        let new = stage.join(name);
        if new.exists() {
            std::fs::rename(&new, &old)
                .with_context(|| format!("moving {} into place", old.display()))?;
        }
    }
    std::fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    println!(
        "{} frames of {}×{} px ({}×{} patches) in {:.1} s ({:.2} frames/s); mean mask area {:.1} % \
         of the frame",
        summary.frames,
        info.size.0,
        info.size.1,
        info.size.1 / patch,
        info.size.0 / patch,
        summary.seconds,
        summary.frames as f64 / summary.seconds.max(1e-9),
        100.0 * summary.mean_mask_area
    );
    if let Some(mib) = peak_rss_mib() {
        println!("peak memory of this process: {mib:.0} MiB");
    }
    println!("frames: {}", a.out.join("frames").display());
    if let Some(f) = format {
        println!(
            "video: {} ({fps:.3} frames/s)",
            a.out.join(format!("attention.{}", f.extension())).display()
        );
    }
    Ok(())
}

/// This process's peak resident memory in MiB (`VmHWM` of /proc/self/status; Linux only), for
/// checking that memory stays flat with the video's length. The ffmpeg children are not in it.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs every frame into `stage` ([`render_attention`]: frames/, the video, frames.jsonl), then
/// writes video.json.
fn render(
    a: &AttentionArgs,
    emb: &dino_eval::features::source::Embedder,
    source: FrameSource,
    info: &VideoInfo,
    (fps, fps_from): (f64, &str),
    format: Option<VideoFormat>,
    stage: &Path,
) -> anyhow::Result<RenderSummary> {
    let cfg = &emb.cfg;
    let patch = cfg.model.patch_size as u32;
    let opts = RenderOptions {
        threshold: a.threshold,
        map: a.head.map_or(ShownMap::Mean, ShownMap::Head),
        smooth: a.smooth,
        mean: cfg.augmentation.mean,
        std: cfg.augmentation.std,
        format,
        fps,
    };
    let planned = info.planned_frames(&a.input.options(patch, cfg.data.max_image_pixels));
    let progress = |n: usize, secs: f64| {
        if n % 50 == 0 {
            let of = planned.map_or(String::new(), |p| format!(" of {p}"));
            eprintln!("frame {n}{of} ({:.2} frames/s)", n as f64 / secs);
        }
    };
    let vit = emb.backbone().vit("video attention")?;
    let summary =
        match render_attention(vit, emb.device(), source, info.size, &opts, stage, progress) {
            Err(RenderError::NoFrames) => anyhow::bail!(
                "no frames selected from {} (--start {} is past its end)",
                info.path.display(),
                a.input.start
            ),
            other => other?,
        };
    let json = serde_json::json!({
        "input": info.path.display().to_string(),
        "source_size": [info.source_size.0, info.source_size.1],
        "size": [info.size.0, info.size.1],
        "patch_grid": [info.size.1 / patch, info.size.0 / patch],
        "frames": summary.frames,
        "start": a.input.start,
        "every": a.input.every,
        "fps": fps,
        "fps_from": fps_from,
        "map": a.head.map_or("mean".to_string(), |k| format!("head {k}")),
        "threshold": a.threshold,
        "smooth": a.smooth,
        "checkpoint": a.model.checkpoint.as_ref().map(|p| p.display().to_string()),
        "which": format!("{:?}", a.model.which).to_lowercase(),
        "video": summary.video.as_ref().and_then(|p| p.file_name()).map(|f| f.to_string_lossy().into_owned()),
        "mean_mask_area": summary.mean_mask_area,
        "seconds": summary.seconds,
        "peak_rss_mib": peak_rss_mib(),
    });
    let json_path = stage.join("video.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    Ok(summary)
}
