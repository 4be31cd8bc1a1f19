//! Video input: the frames of a video file or of a folder of images, one at a time, fitted to a
//! ViT's patch grid; and a video output (MP4 through `ffmpeg`, or an animated GIF without it).
//!
//! A [`FrameSource`] is an iterator of [`Frame`]s. It reads
//! - a **folder of frames** (the files with an image extension, [`IMAGE_EXTENSIONS`], in
//!   natural order: `frame2.png` before `frame10.png`, [`natural_cmp`]), each decoded by
//!   [`decode_file`] (the crate's one decoder: format by content, pixel limit, EXIF). All frames
//!   must have one size: the headers are checked when the folder is opened, before any work;
//! - or a **video file** (anything `ffmpeg` reads: mp4, avi, webm, mov, ...), probed by `ffprobe`
//!   when opened and decoded by an `ffmpeg` child that pipes raw RGB frames over its stdout, so a
//!   long video never sits in memory whole (one raw frame at a time; the child is stopped when
//!   the iterator is dropped).
//!
//! The frames kept ([`VideoOptions`]): the stream is first resampled to `fps` frames per second
//! (video files only, ffmpeg's `fps` filter), then frames `start, start + every,
//! start + 2·every, ...` (0-based indices into that stream) are taken, at most `frames` of them.
//! Each is resized ([`fitted_size`]) so that both sides are multiples of the patch size with the
//! aspect ratio kept (to within half a patch per side), by the crate's Pillow-bicubic
//! [`resize`](crate::transforms::resize()). The official `video_generation.py` crops each side
//! down to a multiple of the patch instead; a video's right and bottom edges are kept here.

mod ffmpeg;
mod natural;
mod writer;

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::dataset::IMAGE_EXTENSIONS;
use crate::decode::decode_file;
use crate::error::DataError;
use crate::transforms::TransformError;

pub use ffmpeg::{available as tool_available, probe, Probe};
pub use natural::natural_cmp;
pub use writer::{VideoFormat, VideoWriter};

/// Frame rate given to a folder of frames when none is asked for (the official
/// `video_generation.py` default `--fps 30`), and the output rate `dino video attention` uses
/// (and says it uses) for a file whose stream has none (a still picture, cover art).
pub const DEFAULT_FOLDER_FPS: f64 = 30.0;

/// Bad video input or output; every message names the file or option at fault.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// The input path does not exist.
    #[error("video input {path:?} does not exist")]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// A folder without image files.
    #[error("frames folder {path:?} holds no image files ({})", IMAGE_EXTENSIONS.join(", "))]
    NoFrames {
        /// The folder.
        path: PathBuf,
    },
    /// Two frames of a folder differ in size.
    #[error(
        "frames of one video must have one size: {first:?} is {}×{} but {other:?} is {}×{}",
        first_size.0, first_size.1, other_size.0, other_size.1
    )]
    MixedSizes {
        /// The first frame.
        first: PathBuf,
        /// Its `(width, height)`.
        first_size: (u32, u32),
        /// A frame of another size.
        other: PathBuf,
        /// Its `(width, height)`.
        other_size: (u32, u32),
    },
    /// `ffmpeg` or `ffprobe` is not installed.
    #[error(
        "`{tool}` was not found on PATH: video files are read and MP4s written through Debian's \
         `ffmpeg` package (scripts/setup.sh installs it); a folder of frames and GIF output work \
         without it"
    )]
    ToolMissing {
        /// The program.
        tool: &'static str,
    },
    /// `ffmpeg` or `ffprobe` could not be run.
    #[error("`{tool}`: {message}")]
    Tool {
        /// The program.
        tool: &'static str,
        /// What happened.
        message: String,
    },
    /// A file that is not a readable video.
    #[error("cannot read the video {path:?}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why (ffprobe's words).
        reason: String,
    },
    /// Decoding failed part way through a video.
    #[error("decoding the video {path:?}: {message}")]
    Stream {
        /// The file.
        path: PathBuf,
        /// What happened.
        message: String,
    },
    /// A frame file that cannot be read or decoded.
    #[error(transparent)]
    Frame(#[from] DataError),
    /// An option out of range.
    #[error("video option `{name}`: {reason}")]
    BadOption {
        /// The option.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// The resampler failed.
    #[error(transparent)]
    Resize(#[from] TransformError),
    /// The output video could not be written.
    #[error("writing the video {path:?}: {message}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// What happened.
        message: String,
    },
}

/// The size frames are brought to before the patch rounding of [`fitted_size`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSize {
    /// The source size.
    Native,
    /// The shorter side to `n` pixels, the longer to `⌊n · long / short⌋` (torchvision
    /// `Resize(n)`, the official `--resize n`).
    Shorter(u32),
}

/// Which frames a [`FrameSource`] yields and at what size.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoOptions {
    /// Video files: resample the stream to this many frames per second first (ffmpeg's `fps`
    /// filter). Frame folders: the rate the frames were taken at (for the output video), default
    /// [`DEFAULT_FOLDER_FPS`]. Must be positive.
    pub fps: Option<f64>,
    /// Keep every `every`-th frame (1: all). At least 1.
    pub every: usize,
    /// Index of the first frame kept (0-based, after the `fps` resampling).
    pub start: usize,
    /// At most this many frames (`None`: to the end).
    pub frames: Option<usize>,
    /// The size before rounding to the patch grid.
    pub size: FrameSize,
    /// The ViT's patch side in pixels; both sides of every frame become multiples of it.
    pub patch: u32,
    /// Frame files whose header declares more pixels are rejected (`data.max_image_pixels`).
    pub max_pixels: u64,
}

impl Default for VideoOptions {
    fn default() -> Self {
        Self {
            fps: None,
            every: 1,
            start: 0,
            frames: None,
            size: FrameSize::Native,
            patch: 16,
            max_pixels: 178_956_970,
        }
    }
}

impl VideoOptions {
    /// Checks the ranges of the options.
    ///
    /// # Errors
    /// [`VideoError::BadOption`] naming the option.
    pub fn validate(&self) -> Result<(), VideoError> {
        let bad = |name, reason: &str| {
            Err(VideoError::BadOption {
                name,
                reason: reason.to_string(),
            })
        };
        if let Some(fps) = self.fps {
            if !(fps.is_finite() && fps > 0.0) {
                return bad("fps", &format!("must be a positive number, got {fps}"));
            }
        }
        if self.every == 0 {
            return bad("every", "must be at least 1");
        }
        if self.frames == Some(0) {
            return bad("frames", "must be at least 1");
        }
        if self.patch == 0 {
            return bad("patch", "must be at least 1");
        }
        if let FrameSize::Shorter(n) = self.size {
            if n < self.patch {
                return bad(
                    "size",
                    &format!("{n} px cannot hold one {}-px patch", self.patch),
                );
            }
        }
        Ok(())
    }
}

/// The size a `width × height` frame is resized to: [`FrameSize`] first, then each side to the
/// nearest multiple of `patch` (half a patch rounds up; one patch at least). Returns
/// `(width, height)`.
///
/// # Errors
/// [`VideoError::BadOption`] for a zero patch or a [`FrameSize::Shorter`] below one patch.
pub fn fitted_size(
    width: u32,
    height: u32,
    size: FrameSize,
    patch: u32,
) -> Result<(u32, u32), VideoError> {
    VideoOptions {
        size,
        patch,
        ..Default::default()
    }
    .validate()?;
    let (w, h) = match size {
        FrameSize::Native => (width, height),
        FrameSize::Shorter(n) => {
            let long = |a: u32, b: u32| {
                u32::try_from(u64::from(n) * u64::from(a) / u64::from(b.max(1))).unwrap_or(u32::MAX)
            };
            if width <= height {
                (n, long(height, width))
            } else {
                (long(width, height), n)
            }
        }
    };
    let round =
        |x: u32| ((u64::from(x) + u64::from(patch / 2)) / u64::from(patch)).max(1) as u32 * patch;
    Ok((round(w), round(h)))
}

/// Where the frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// A folder of image files, in natural order.
    Folder {
        /// The frame files, sorted.
        files: Vec<PathBuf>,
    },
    /// A video file decoded by `ffmpeg`.
    File,
}

/// What is known of a source when it is opened.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// The path given.
    pub path: PathBuf,
    /// Folder or file.
    pub kind: SourceKind,
    /// `(width, height)` of the source frames.
    pub source_size: (u32, u32),
    /// `(width, height)` of the frames yielded (multiples of the patch).
    pub size: (u32, u32),
    /// Frames per second of the stream indexed by `start` and `every`: the `fps` option, else the
    /// file's own rate, else [`DEFAULT_FOLDER_FPS`] for a folder. `None` for a file whose
    /// container gives no rate (a still picture such as cover art, whose base rate of 90,000/s is
    /// a time base, not a frame rate).
    pub fps: Option<f64>,
    /// Frames in the stream indexed by `start` and `every`, when known (a folder: its files; a
    /// file without resampling: the container's count, if it has one).
    pub stream_frames: Option<usize>,
}

impl VideoInfo {
    /// The rate of the frames yielded: the stream's rate over `every`.
    pub fn output_fps(&self, every: usize) -> Option<f64> {
        self.fps.map(|f| f / every.max(1) as f64)
    }

    /// How many frames will be yielded, when the stream's length is known.
    pub fn planned_frames(&self, opts: &VideoOptions) -> Option<usize> {
        let n = self.stream_frames?;
        let kept = n.saturating_sub(opts.start).div_ceil(opts.every.max(1));
        Some(opts.frames.map_or(kept, |f| kept.min(f)))
    }
}

/// One frame, fitted to the patch grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// 0-based position among the frames yielded.
    pub position: usize,
    /// 0-based index in the stream (`start + position · every`).
    pub index: usize,
    /// The frame's file for a folder; `None` for a video file.
    pub file: Option<PathBuf>,
    /// The pixels, `VideoInfo::size` (RGB8).
    pub image: RgbImage,
}

/// A frame as read: its file (folders), and its pixels unless it was skipped.
type RawFrame = (Option<PathBuf>, Option<RgbImage>);

enum Reader {
    Folder(std::vec::IntoIter<PathBuf>),
    File(ffmpeg::Decoder, Vec<u8>),
}

/// The frames of a folder or a video file, one at a time (see the module doc). An iterator of
/// `Result<Frame, VideoError>`; after an error it yields nothing more.
pub struct FrameSource {
    info: VideoInfo,
    opts: VideoOptions,
    reader: Reader,
    /// Stream index of the next frame the reader gives.
    next_index: usize,
    yielded: usize,
    done: bool,
}

impl std::fmt::Debug for FrameSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameSource")
            .field("info", &self.info)
            .field("opts", &self.opts)
            .field("yielded", &self.yielded)
            .finish_non_exhaustive()
    }
}

impl FrameSource {
    /// Opens `path`: a folder of frames or a video file. Everything that can be checked before
    /// decoding is: the options, that the path exists, a folder's file list and that its frames
    /// share one stored size (headers) and the first frame (decoded for its upright size), a
    /// file's video stream (`ffprobe`).
    ///
    /// # Errors
    /// [`VideoError::BadOption`], [`VideoError::NotFound`], [`VideoError::NoFrames`],
    /// [`VideoError::MixedSizes`], [`VideoError::Frame`] (a frame header that cannot be read),
    /// [`VideoError::ToolMissing`] (a video file without `ffmpeg`/`ffprobe` installed),
    /// [`VideoError::Unreadable`] (not a video).
    pub fn open(path: &Path, opts: &VideoOptions) -> Result<Self, VideoError> {
        opts.validate()?;
        if !path.exists() {
            return Err(VideoError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let (info, reader) = if path.is_dir() {
            let files = frame_files(path)?;
            common_size(&files, opts.max_pixels)?;
            // The upright size: EXIF orientation (applied by the decoder) can turn the stored
            // size, so the first frame is decoded; every frame must decode to this size.
            let source_size = decode_file(&files[0], opts.max_pixels)?.dimensions();
            let info = VideoInfo {
                path: path.to_path_buf(),
                kind: SourceKind::Folder {
                    files: files.clone(),
                },
                source_size,
                size: fitted_size(source_size.0, source_size.1, opts.size, opts.patch)?,
                fps: Some(opts.fps.unwrap_or(DEFAULT_FOLDER_FPS)),
                stream_frames: Some(files.len()),
            };
            (info, Reader::Folder(files.into_iter()))
        } else {
            let p = probe(path)?;
            // ffmpeg is needed too; say so now rather than at the first frame.
            if !tool_available(ffmpeg::FFMPEG) {
                return Err(VideoError::ToolMissing {
                    tool: ffmpeg::FFMPEG,
                });
            }
            let decoder = ffmpeg::Decoder::start(path, p.width, p.height, opts.fps)?;
            let info = VideoInfo {
                path: path.to_path_buf(),
                kind: SourceKind::File,
                source_size: (p.width, p.height),
                size: fitted_size(p.width, p.height, opts.size, opts.patch)?,
                fps: opts.fps.or(p.fps),
                stream_frames: if opts.fps.is_some() { None } else { p.frames },
            };
            (info, Reader::File(decoder, Vec::new()))
        };
        Ok(Self {
            info,
            opts: opts.clone(),
            reader,
            next_index: 0,
            yielded: 0,
            done: false,
        })
    }

    /// What is known of the source.
    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// Whether stream frame `index` is one to keep.
    fn wanted(&self, index: usize) -> bool {
        index >= self.opts.start && (index - self.opts.start) % self.opts.every == 0
    }

    /// The next frame of the stream, decoded (when `keep`) but not fitted; `None` at the end.
    fn read_raw(&mut self, keep: bool) -> Result<Option<RawFrame>, VideoError> {
        let (w, h) = self.info.source_size;
        match &mut self.reader {
            Reader::Folder(files) => {
                let Some(file) = files.next() else {
                    return Ok(None);
                };
                if !keep {
                    return Ok(Some((Some(file), None)));
                }
                let img = decode_file(&file, self.opts.max_pixels)?;
                if img.dimensions() != (w, h) {
                    // The stored sizes agree (checked when opened), but EXIF orientation can
                    // turn one frame and not the first.
                    let first = match &self.info.kind {
                        SourceKind::Folder { files } => files[0].clone(),
                        SourceKind::File => self.info.path.clone(),
                    };
                    return Err(VideoError::MixedSizes {
                        first,
                        first_size: (w, h),
                        other: file,
                        other_size: img.dimensions(),
                    });
                }
                Ok(Some((Some(file), Some(img))))
            }
            Reader::File(decoder, buf) => {
                if !decoder.next_into(buf)? {
                    return Ok(None);
                }
                if !keep {
                    return Ok(Some((None, None)));
                }
                let img = RgbImage::from_raw(w, h, std::mem::take(buf))
                    .expect("ffmpeg frames are width · height · 3 bytes");
                Ok(Some((None, Some(img))))
            }
        }
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, VideoError> {
        if self.opts.frames.is_some_and(|n| self.yielded >= n) {
            return Ok(None);
        }
        loop {
            let index = self.next_index;
            let keep = self.wanted(index);
            let Some((file, img)) = self.read_raw(keep)? else {
                return Ok(None);
            };
            self.next_index += 1;
            let Some(img) = img else { continue };
            let (fw, fh) = self.info.size;
            let image = if img.dimensions() == (fw, fh) {
                img
            } else {
                crate::transforms::resize(&img, fw, fh)?
            };
            let frame = Frame {
                position: self.yielded,
                index,
                file,
                image,
            };
            self.yielded += 1;
            return Ok(Some(frame));
        }
    }
}

impl Iterator for FrameSource {
    type Item = Result<Frame, VideoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let out = self.next_frame().transpose();
        if !matches!(out, Some(Ok(_))) {
            self.done = true;
        }
        out
    }
}

/// The image files of a folder (not recursive), in natural order of their names.
fn frame_files(dir: &Path) -> Result<Vec<PathBuf>, VideoError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)));
        if is_image && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(VideoError::NoFrames {
            path: dir.to_path_buf(),
        });
    }
    let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned());
    files.sort_by(|a, b| natural_cmp(&name(a).unwrap_or_default(), &name(b).unwrap_or_default()));
    Ok(files)
}

/// The one stored size of all frames, from their headers (no pixels decoded).
fn common_size(files: &[PathBuf], max_pixels: u64) -> Result<(u32, u32), VideoError> {
    // Format from the content, as decode_file does (a PNG named .jpg is a PNG).
    let header = |p: &PathBuf| {
        image::ImageReader::open(p)
            .map_err(image::ImageError::IoError)
            .and_then(|r| r.with_guessed_format().map_err(image::ImageError::IoError))
            .and_then(|r| r.into_dimensions())
            .map_err(|e| {
                VideoError::Frame(DataError::Decode {
                    what: p.display().to_string(),
                    cause: crate::decode::DecodeError::Decoder {
                        format: "image",
                        source: e,
                    },
                })
            })
    };
    let first = header(&files[0])?;
    if u64::from(first.0) * u64::from(first.1) > max_pixels {
        // decode_file says it with the limit when the frame is read; say it before any work.
        decode_file(&files[0], max_pixels)?;
    }
    for f in &files[1..] {
        let size = header(f)?;
        if size != first {
            return Err(VideoError::MixedSizes {
                first: files[0].clone(),
                first_size: first,
                other: f.clone(),
                other_size: size,
            });
        }
    }
    Ok(first)
}
