//! A video written one frame at a time: an H.264 MP4 through an `ffmpeg` child, or an animated
//! GIF through the `image` crate when ffmpeg is missing. Neither keeps past frames in memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, RgbImage};

use super::{ffmpeg, VideoError};

/// The container of an output video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoFormat {
    /// H.264 in MP4 (yuv420p, CRF 20), encoded by `ffmpeg`.
    Mp4,
    /// Animated GIF (each frame quantised to 256 colours by the `image` crate, looping); frame
    /// delays are whole hundredths of a second, so the rate is rounded to one of those.
    Gif,
}

impl VideoFormat {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Mp4 => "mp4",
            Self::Gif => "gif",
        }
    }

    /// MP4 when `ffmpeg` can be run, GIF otherwise.
    pub fn best_available() -> Self {
        if ffmpeg::available(ffmpeg::FFMPEG) {
            Self::Mp4
        } else {
            Self::Gif
        }
    }
}

enum Sink {
    Mp4(ffmpeg::Encoder),
    Gif(Box<GifEncoder<Tracked>>, Delay, Failure),
}

/// The first write error of a [`Tracked`] writer.
type Failure = Arc<Mutex<Option<String>>>;

/// A buffered file that records its first write or flush error, including the ones of its final
/// flush when dropped: the GIF encoder writes its trailer on drop and offers no way to take the
/// writer back, so an error there would otherwise be lost.
struct Tracked {
    inner: BufWriter<File>,
    failure: Failure,
}

impl Tracked {
    fn record<T>(&self, r: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &r {
            if let Ok(mut f) = self.failure.lock() {
                f.get_or_insert_with(|| e.to_string());
            }
        }
        r
    }
}

impl Write for Tracked {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        self.record(r)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        self.record(r)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let r = self.inner.flush();
        let _ = self.record(r);
    }
}

/// Writes frames of one size into a video file (see the module doc).
pub struct VideoWriter {
    sink: Sink,
    path: PathBuf,
    size: (u32, u32),
    frames: usize,
}

impl std::fmt::Debug for VideoWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoWriter")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl VideoWriter {
    /// Creates `path` (overwritten) for `width × height` frames at `fps` frames per second.
    ///
    /// # Errors
    /// [`VideoError::BadOption`] for a non-positive rate or an empty size;
    /// [`VideoError::ToolMissing`] for MP4 without `ffmpeg`; [`VideoError::Encode`] when the
    /// file cannot be created.
    pub fn create(
        path: &Path,
        format: VideoFormat,
        width: u32,
        height: u32,
        fps: f64,
    ) -> Result<Self, VideoError> {
        if !(fps.is_finite() && fps > 0.0) {
            return Err(VideoError::BadOption {
                name: "fps",
                reason: format!("the output rate must be positive, got {fps}"),
            });
        }
        if width == 0 || height == 0 {
            return Err(VideoError::BadOption {
                name: "size",
                reason: format!("an empty {width}×{height} frame"),
            });
        }
        let sink = match format {
            VideoFormat::Mp4 => Sink::Mp4(ffmpeg::Encoder::start(path, width, height, fps)?),
            VideoFormat::Gif => {
                let file = File::create(path).map_err(|e| VideoError::Encode {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
                let failure = Failure::default();
                let out = Tracked {
                    inner: BufWriter::new(file),
                    failure: failure.clone(),
                };
                let mut enc = GifEncoder::new_with_speed(out, 10);
                enc.set_repeat(Repeat::Infinite)
                    .map_err(|e| encode_error(path, e))?;
                let centis = (100.0 / fps).round().max(1.0) as u32;
                let delay = Delay::from_numer_denom_ms(centis * 10, 1);
                Sink::Gif(Box::new(enc), delay, failure)
            }
        };
        Ok(Self {
            sink,
            path: path.to_path_buf(),
            size: (width, height),
            frames: 0,
        })
    }

    /// Appends one frame.
    ///
    /// # Errors
    /// [`VideoError::Encode`] when its size is not the video's or the encoder fails.
    pub fn push(&mut self, frame: &RgbImage) -> Result<(), VideoError> {
        if frame.dimensions() != self.size {
            return Err(VideoError::Encode {
                path: self.path.clone(),
                message: format!(
                    "frame {} is {}×{}, the video is {}×{}",
                    self.frames,
                    frame.width(),
                    frame.height(),
                    self.size.0,
                    self.size.1
                ),
            });
        }
        match &mut self.sink {
            Sink::Mp4(enc) => enc.push(frame.as_raw())?,
            Sink::Gif(enc, delay, _) => {
                let rgba = image::DynamicImage::ImageRgb8(frame.clone()).into_rgba8();
                enc.encode_frame(image::Frame::from_parts(rgba, 0, 0, *delay))
                    .map_err(|e| encode_error(&self.path, e))?;
            }
        }
        self.frames += 1;
        Ok(())
    }

    /// Frames pushed so far.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Finishes the file (for MP4, waits for `ffmpeg` to write it).
    ///
    /// # Errors
    /// [`VideoError::Encode`] when the encoder fails.
    pub fn finish(self) -> Result<(), VideoError> {
        match self.sink {
            Sink::Mp4(enc) => enc.finish(),
            // The GIF trailer is written when the encoder is dropped.
            Sink::Gif(enc, _, failure) => {
                drop(enc);
                match failure.lock().map(|mut f| f.take()) {
                    Ok(None) => Ok(()),
                    Ok(Some(message)) => Err(VideoError::Encode {
                        path: self.path.clone(),
                        message,
                    }),
                    Err(_) => Err(VideoError::Encode {
                        path: self.path.clone(),
                        message: "the GIF writer panicked".into(),
                    }),
                }
            }
        }
    }
}

fn encode_error(path: &Path, e: image::ImageError) -> VideoError {
    VideoError::Encode {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}
