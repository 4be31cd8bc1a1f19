//! The per-frame pipeline of `dino video attention` (official `video_generation.py`): every frame
//! through the backbone's last-block CLS attention ([`frame_attention`]), smoothed over the
//! previous frames ([`MapSmoother`]), the shown map and its threshold mask ([`shown`]), and the
//! side-by-side picture ([`side_by_side`]) written as `frames/NNNNNN.png` (NNNNNN the frame's
//! position), pushed to the output video, and described by one line of `frames.jsonl`.
//!
//! One frame is in memory at a time (plus the smoothing window of maps), so memory does not grow
//! with the video's length. The caller picks the folder (the CLI renders into a staging folder
//! and moves the outputs into place only when every frame is done).
//!
// Full paths: rustdoc resolves these from the parent module, as `mod` has an outer doc too.
//! [`frame_attention`]: crate::video::attention::frame_attention
//! [`MapSmoother`]: crate::video::attention::MapSmoother
//! [`shown`]: crate::video::attention::shown
//! [`side_by_side`]: crate::video::attention::side_by_side

use std::io::Write;
use std::path::{Path, PathBuf};

use dino_data::video::{Frame, VideoError, VideoFormat, VideoWriter};
use dino_model::VisionTransformer;
use tch::Device;

use crate::attention::AttentionError;
use crate::video::attention::{
    frame_attention, shown, side_by_side, side_by_side_size, MapSmoother, ShownMap,
};

/// What [`render_attention`] draws and writes.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Share of the attention mass the mask keeps, in (0, 1) (official 0.6).
    pub threshold: f64,
    /// The mean over heads or one head.
    pub map: ShownMap,
    /// Frames averaged by the temporal smoothing, the current one included (1: off).
    pub smooth: usize,
    /// Normalisation of the frames (torchvision `Normalize`), per RGB channel.
    pub mean: [f64; 3],
    /// See `mean`.
    pub std: [f64; 3],
    /// The output video's container, or `None` for PNG frames only.
    pub format: Option<VideoFormat>,
    /// The output video's rate, frames per second.
    pub fps: f64,
}

/// What a finished [`render_attention`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderSummary {
    /// Frames rendered.
    pub frames: usize,
    /// Wall-clock seconds from the first frame to the closed video.
    pub seconds: f64,
    /// The mean over frames of the mask's share of the patches, in [0, 1].
    pub mean_mask_area: f64,
    /// The video written (`<dir>/attention.mp4` or `.gif`), if any.
    pub video: Option<PathBuf>,
}

/// Failures of [`render_attention`].
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A file or folder could not be created or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// "creating" or "writing".
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A frame's PNG could not be written.
    #[error("writing {}: {source}", path.display())]
    Png {
        /// The PNG.
        path: PathBuf,
        /// The cause.
        source: image::ImageError,
    },
    /// The attention of one frame failed (e.g. its sides are not multiples of the patch).
    #[error("attention of frame {index}: {source}")]
    Frame {
        /// The frame's index in the stream.
        index: usize,
        /// The cause.
        source: AttentionError,
    },
    /// Smoothing, the shown map or the picture failed.
    #[error(transparent)]
    Attention(#[from] AttentionError),
    /// Decoding a frame or encoding the video failed.
    #[error(transparent)]
    Video(#[from] VideoError),
    /// The frame source yielded nothing (nothing is left to finish the video with).
    #[error("no frames to render")]
    NoFrames,
}

/// Renders every frame of `frames` (all of one size, sides multiples of the backbone's patch)
/// into `dir`: `frames/NNNNNN.png` (`original | attention | mask`, see [`side_by_side`]),
/// `frames.jsonl` (per frame: `position`, `index`, `file`, `mask_area`) and, with a format, the
/// video `attention.<ext>` at `opts.fps`. `progress(n, seconds)` is called after every frame.
///
/// # Errors
/// [`RenderError::NoFrames`] when `frames` is empty; [`RenderError::Frame`] naming the frame
/// whose attention failed; decoding, encoding and file errors as they come.
pub fn render_attention(
    backbone: &VisionTransformer,
    device: Device,
    frames: impl IntoIterator<Item = Result<Frame, VideoError>>,
    size: (u32, u32),
    opts: &RenderOptions,
    dir: &Path,
    mut progress: impl FnMut(usize, f64),
) -> Result<RenderSummary, RenderError> {
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| RenderError::Io {
            action,
            path,
            source,
        }
    };
    let patch = u32::try_from(backbone.config().patch_size).unwrap_or(0);
    let frames_dir = dir.join("frames");
    std::fs::create_dir_all(&frames_dir).map_err(io("creating", &frames_dir))?;
    let (sw, sh) = side_by_side_size(size.0, size.1);
    let video = opts
        .format
        .map(|f| dir.join(format!("attention.{}", f.extension())));
    let mut writer = match (opts.format, &video) {
        (Some(f), Some(p)) => Some(VideoWriter::create(p, f, sw, sh, opts.fps)?),
        _ => None,
    };
    let jsonl_path = dir.join("frames.jsonl");
    let mut jsonl = std::io::BufWriter::new(
        std::fs::File::create(&jsonl_path).map_err(io("creating", &jsonl_path))?,
    );
    let mut smoother = MapSmoother::new(opts.smooth)?;
    let started = std::time::Instant::now();
    let (mut n, mut area_sum) = (0usize, 0.0f64);
    for frame in frames {
        let frame = frame?;
        let maps = frame_attention(backbone, &frame.image, opts.mean, opts.std, device).map_err(
            |source| RenderError::Frame {
                index: frame.index,
                source,
            },
        )?;
        let result = shown(&smoother.push(maps)?, opts.map, opts.threshold)?;
        let picture = side_by_side(&frame.image, &result, patch)?;
        let png = frames_dir.join(format!("{:06}.png", frame.position));
        picture.save(&png).map_err(|source| RenderError::Png {
            path: png.clone(),
            source,
        })?;
        if let Some(w) = writer.as_mut() {
            w.push(&picture)?;
        }
        let line = serde_json::json!({
            "position": frame.position,
            "index": frame.index,
            "file": frame.file.as_ref().map(|f| f.display().to_string()),
            "mask_area": result.mask_area,
        });
        writeln!(jsonl, "{line}").map_err(io("writing", &jsonl_path))?;
        n += 1;
        area_sum += result.mask_area;
        progress(n, started.elapsed().as_secs_f64());
    }
    if n == 0 {
        return Err(RenderError::NoFrames);
    }
    jsonl.flush().map_err(io("writing", &jsonl_path))?;
    if let Some(w) = writer {
        w.finish()?;
    }
    Ok(RenderSummary {
        frames: n,
        seconds: started.elapsed().as_secs_f64(),
        mean_mask_area: area_sum / n as f64,
        video,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dino_model::VitConfig;
    use image::{Rgb, RgbImage};
    use tch::nn;

    fn tiny_vit() -> (nn::VarStore, VisionTransformer) {
        tch::manual_seed(0);
        let mut cfg = VitConfig::vit_tiny(8);
        cfg.embed_dim = 24;
        cfg.depth = 1;
        cfg.num_heads = 2;
        cfg.img_size = 32;
        let vs = nn::VarStore::new(Device::Cpu);
        let vit = VisionTransformer::new(&vs.root(), &cfg).unwrap();
        (vs, vit)
    }

    fn frame(position: usize, width: u32) -> Result<Frame, VideoError> {
        Ok(Frame {
            position,
            index: 2 * position + 1,
            file: None,
            image: RgbImage::from_fn(width, 16, |x, y| {
                Rgb([(x * 7 + position as u32 * 40) as u8, (y * 13) as u8, 90])
            }),
        })
    }

    fn opts() -> RenderOptions {
        RenderOptions {
            threshold: 0.6,
            map: ShownMap::Mean,
            smooth: 2,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            format: Some(VideoFormat::Gif),
            fps: 5.0,
        }
    }

    /// Three frames of 24 × 16 pixels (3 × 2 patches of 8): one PNG each, three JSON lines in
    /// order with the frames' indices, a GIF, and per-frame mask areas averaged in the summary.
    #[test]
    fn renders_every_frame_and_the_video() {
        let (_vs, vit) = tiny_vit();
        let dir = tempfile::tempdir().unwrap();
        let mut calls = Vec::new();
        let frames = (0..3).map(|p| frame(p, 24));
        let summary = render_attention(
            &vit,
            Device::Cpu,
            frames,
            (24, 16),
            &opts(),
            dir.path(),
            |n, _| calls.push(n),
        )
        .unwrap();
        assert_eq!(summary.frames, 3);
        assert_eq!(calls, [1, 2, 3]);
        for p in 0..3 {
            let png = image::open(dir.path().join(format!("frames/{p:06}.png"))).unwrap();
            assert_eq!(
                (png.width(), png.height()),
                side_by_side_size(24, 16),
                "frame {p}"
            );
        }
        let lines: Vec<serde_json::Value> =
            std::fs::read_to_string(dir.path().join("frames.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        assert_eq!(lines.len(), 3);
        let indices: Vec<u64> = lines.iter().map(|l| l["index"].as_u64().unwrap()).collect();
        assert_eq!(indices, [1, 3, 5]);
        let areas: Vec<f64> = lines
            .iter()
            .map(|l| l["mask_area"].as_f64().unwrap())
            .collect();
        // A mask keeps at least one of the 6 patches and never all of them at 0.6.
        assert!(areas.iter().all(|&a| a > 0.0 && a <= 1.0), "{areas:?}");
        let mean = areas.iter().sum::<f64>() / 3.0;
        assert!((summary.mean_mask_area - mean).abs() < 1e-12);
        let video = summary.video.unwrap();
        assert_eq!(video, dir.path().join("attention.gif"));
        assert!(std::fs::metadata(&video).unwrap().len() > 0);
    }

    /// Nothing to render and a frame off the patch grid are refused, naming the frame.
    #[test]
    fn refuses_no_frames_and_names_a_bad_frame() {
        let (_vs, vit) = tiny_vit();
        let dir = tempfile::tempdir().unwrap();
        let none = render_attention(
            &vit,
            Device::Cpu,
            std::iter::empty(),
            (24, 16),
            &RenderOptions {
                format: None,
                ..opts()
            },
            dir.path(),
            |_, _| {},
        );
        assert!(matches!(none, Err(RenderError::NoFrames)), "{none:?}");
        let bad = render_attention(
            &vit,
            Device::Cpu,
            [frame(0, 20)],
            (20, 16),
            &RenderOptions {
                format: None,
                ..opts()
            },
            dir.path(),
            |_, _| {},
        )
        .unwrap_err();
        assert!(matches!(bad, RenderError::Frame { index: 1, .. }), "{bad}");
        assert!(
            bad.to_string().starts_with("attention of frame 1:"),
            "{bad}"
        );
    }
}
