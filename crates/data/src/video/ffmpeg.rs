//! The `ffmpeg` and `ffprobe` programs (Debian's `ffmpeg` package) as child processes: a probe
//! of a video file's first video stream, a decoder that pipes raw RGB frames over its stdout
//! (one frame in memory at a time), and an encoder that takes raw RGB frames on its stdin.
//!
//! Each child's stderr is read on a thread into a short tail, so a chatty child never blocks on
//! a full pipe and its last words go into our error message.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

use super::VideoError;

/// How much of a child's stderr is kept for error messages (its end).
const STDERR_TAIL: usize = 2000;

/// The program names; the first on `PATH` is used.
pub(crate) const FFMPEG: &str = "ffmpeg";
pub(crate) const FFPROBE: &str = "ffprobe";

/// Whether `program` can be started (`program -version` runs and exits 0).
pub fn available(program: &str) -> bool {
    Command::new(program)
        .arg("-version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `program` with `args`, mapping "not found" to [`VideoError::ToolMissing`].
fn spawn(program: &'static str, cmd: &mut Command) -> Result<Child, VideoError> {
    cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            VideoError::ToolMissing { tool: program }
        } else {
            VideoError::Tool {
                tool: program,
                message: format!("cannot start: {e}"),
            }
        }
    })
}

/// Reads a child's stderr to its end on a thread; returns the last [`STDERR_TAIL`] bytes.
fn drain_stderr(child: &mut Child) -> Option<JoinHandle<String>> {
    let mut err = child.stderr.take()?;
    Some(std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if all.len() > 2 * STDERR_TAIL {
                all.drain(..all.len() - STDERR_TAIL);
            }
        }
        let start = all.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&all[start..]).trim().to_string()
    }))
}

fn join_tail(handle: Option<JoinHandle<String>>) -> String {
    handle.and_then(|h| h.join().ok()).unwrap_or_default()
}

/// What `ffprobe` says of a file's first video stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Frame width in pixels, as decoded (after the stream's rotation is applied).
    pub width: u32,
    /// Frame height in pixels, as decoded.
    pub height: u32,
    /// Frames per second (the stream's average rate, else its base rate when below 1000 fps:
    /// above that it is a container's time base), when the container gives one; `None` for a
    /// still picture stored as a video stream (an MP3's or M4A's cover art: `attached_pic`,
    /// whose only "rate" is the 90 kHz time base).
    pub fps: Option<f64>,
    /// Number of frames, when the container records it (AVI and MP4 do; some streams do not).
    pub frames: Option<usize>,
}

/// Base rates (`r_frame_rate`) from here on are a container's time base (MPEG's 90 kHz,
/// Matroska's 1 kHz), not a frame rate.
pub const MAX_STREAM_FPS: f64 = 1000.0;

/// Probes `path` with `ffprobe`.
///
/// # Errors
/// [`VideoError::ToolMissing`] when `ffprobe` is not installed; [`VideoError::Unreadable`] when
/// it cannot read the file or finds no video stream in it.
pub fn probe(path: &Path) -> Result<Probe, VideoError> {
    let mut child = spawn(
        FFPROBE,
        Command::new(FFPROBE)
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
            .arg(
                "stream=width,height,avg_frame_rate,r_frame_rate,nb_frames\
                 :stream_side_data=rotation:stream_disposition=attached_pic",
            )
            .args(["-of", "default=noprint_wrappers=1"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?;
    let err = drain_stderr(&mut child);
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut text).ok();
    }
    let status = child.wait().map_err(|e| VideoError::Tool {
        tool: FFPROBE,
        message: e.to_string(),
    })?;
    let err = join_tail(err);
    let unreadable = |reason: String| VideoError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    if !status.success() {
        return Err(unreadable(format!("ffprobe failed ({status}): {err}")));
    }
    parse_probe(&text).ok_or_else(|| unreadable(format!("no video stream found ({})", text.trim())))
}

/// Parses ffprobe's `key=value` lines; `None` without a positive width and height.
fn parse_probe(text: &str) -> Option<Probe> {
    let mut kv = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.trim().split_once('=') {
            // The first value of a key is the stream's (side data comes after).
            kv.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
    }
    let num = |k: &str| kv.get(k).and_then(|v| v.parse::<u32>().ok());
    let (mut width, mut height) = (num("width")?, num("height")?);
    if width == 0 || height == 0 {
        return None;
    }
    // ffmpeg rotates frames by the display matrix while decoding; a quarter turn swaps the sides.
    let rotation = kv
        .get("rotation")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    if (rotation.abs() - 90.0).abs() < 1.0 || (rotation.abs() - 270.0).abs() < 1.0 {
        std::mem::swap(&mut width, &mut height);
    }
    let rate = |k: &str| {
        let v = kv.get(k)?;
        let (n, d) = v.split_once('/').unwrap_or((v, "1"));
        let (n, d) = (n.parse::<f64>().ok()?, d.parse::<f64>().ok()?);
        (n > 0.0 && d > 0.0 && n / d < MAX_STREAM_FPS).then_some(n / d)
    };
    let still = kv.get("DISPOSITION:attached_pic").is_some_and(|v| v == "1");
    Some(Probe {
        width,
        height,
        fps: if still {
            None
        } else {
            rate("avg_frame_rate").or_else(|| rate("r_frame_rate"))
        },
        frames: kv.get("nb_frames").and_then(|v| v.parse().ok()),
    })
}

/// An `ffmpeg` child decoding a video to raw RGB24 frames on its stdout.
pub(crate) struct Decoder {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: Option<JoinHandle<String>>,
    path: PathBuf,
    frame_bytes: usize,
}

impl Decoder {
    /// Starts decoding `path`, whose decoded frames are `width × height`; `fps` resamples the
    /// stream to that rate (ffmpeg's `fps` filter: frames dropped or repeated).
    pub(crate) fn start(
        path: &Path,
        width: u32,
        height: u32,
        fps: Option<f64>,
    ) -> Result<Self, VideoError> {
        let mut cmd = Command::new(FFMPEG);
        cmd.args(["-v", "error", "-nostdin", "-i"]).arg(path);
        if let Some(fps) = fps {
            cmd.args(["-vf", &format!("fps={fps}")]);
        }
        // Every decoded frame, no duplicates or drops by the muxer (rawvideo has no timing).
        cmd.args(["-map", "0:v:0", "-fps_mode", "passthrough"])
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn(FFMPEG, &mut cmd)?;
        let stderr = drain_stderr(&mut child);
        let stdout =
            BufReader::with_capacity(1 << 20, child.stdout.take().expect("stdout was piped"));
        Ok(Self {
            child,
            stdout,
            stderr,
            path: path.to_path_buf(),
            frame_bytes: width as usize * height as usize * 3,
        })
    }

    /// The next frame into `buf` (resized to one frame); `Ok(false)` at the end of the stream.
    ///
    /// # Errors
    /// [`VideoError::Stream`] when the stream ends inside a frame or ffmpeg exits with an error.
    pub(crate) fn next_into(&mut self, buf: &mut Vec<u8>) -> Result<bool, VideoError> {
        buf.resize(self.frame_bytes, 0);
        let mut filled = 0;
        while filled < buf.len() {
            match self.stdout.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.stream_error(format!("reading ffmpeg's output: {e}"))),
            }
        }
        if filled == buf.len() {
            return Ok(true);
        }
        // The end: ffmpeg must have exited cleanly, at a frame boundary.
        let status = self
            .child
            .wait()
            .map_err(|e| self.stream_error(e.to_string()))?;
        let tail = join_tail(self.stderr.take());
        if !status.success() {
            return Err(self.stream_error(format!("ffmpeg failed ({status}): {tail}")));
        }
        if filled != 0 {
            return Err(self.stream_error(format!(
                "the stream ended inside a frame ({filled} of {} bytes)",
                buf.len()
            )));
        }
        Ok(false)
    }

    fn stream_error(&self, message: String) -> VideoError {
        VideoError::Stream {
            path: self.path.clone(),
            message,
        }
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // Stopped early (--frames, an error downstream): nothing more is read.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// An `ffmpeg` child encoding raw RGB24 frames from its stdin into an H.264 MP4.
pub(crate) struct Encoder {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Option<JoinHandle<String>>,
    path: PathBuf,
}

impl Encoder {
    /// Starts encoding `width × height` frames at `fps` into `path` (overwritten). Odd sides are
    /// padded by one black pixel (yuv420p needs even sides).
    pub(crate) fn start(
        path: &Path,
        width: u32,
        height: u32,
        fps: f64,
    ) -> Result<Self, VideoError> {
        let mut cmd = Command::new(FFMPEG);
        cmd.args(["-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24"])
            .args(["-s", &format!("{width}x{height}"), "-r", &format!("{fps}")])
            .args(["-i", "-", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"])
            .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "20"])
            .args(["-movflags", "+faststart", "-f", "mp4"])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn(FFMPEG, &mut cmd)?;
        let stderr = drain_stderr(&mut child);
        let stdin = child.stdin.take();
        Ok(Self {
            child,
            stdin,
            stderr,
            path: path.to_path_buf(),
        })
    }

    /// Sends one frame (`width · height · 3` bytes, RGB24 row-major).
    pub(crate) fn push(&mut self, rgb: &[u8]) -> Result<(), VideoError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(self.fail("the encoder's input is closed".into()));
        };
        if let Err(e) = stdin.write_all(rgb) {
            // A broken pipe means ffmpeg died: its stderr says why.
            self.stdin = None;
            let _ = self.child.wait();
            let tail = join_tail(self.stderr.take());
            return Err(self.fail(format!("{e}: {tail}")));
        }
        Ok(())
    }

    /// Closes the input and waits for the file to be written.
    pub(crate) fn finish(mut self) -> Result<(), VideoError> {
        drop(self.stdin.take());
        let status = self.child.wait().map_err(|e| self.fail(e.to_string()))?;
        let tail = join_tail(self.stderr.take());
        if !status.success() {
            return Err(self.fail(format!("ffmpeg failed ({status}): {tail}")));
        }
        Ok(())
    }

    fn fail(&self, message: String) -> VideoError {
        VideoError::Encode {
            path: self.path.clone(),
            message,
        }
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_lines_parse() {
        let p = parse_probe(
            "width=768\nheight=576\nr_frame_rate=10/1\navg_frame_rate=10/1\nnb_frames=795\n",
        )
        .unwrap();
        assert_eq!(
            p,
            Probe {
                width: 768,
                height: 576,
                fps: Some(10.0),
                frames: Some(795)
            }
        );
        // A phone video stored sideways; unknown count and rate.
        let p = parse_probe("width=1920\nheight=1080\navg_frame_rate=0/0\nr_frame_rate=30000/1001\nnb_frames=N/A\nrotation=-90\n")
            .unwrap();
        assert_eq!((p.width, p.height, p.frames), (1080, 1920, None));
        assert!((p.fps.unwrap() - 29.97).abs() < 1e-2);
        // Cover art (an MP3's attached picture): the 90 kHz time base is no frame rate.
        let cover = "width=32\nheight=32\nr_frame_rate=90000/1\navg_frame_rate=0/0\n\
                     nb_frames=N/A\nDISPOSITION:attached_pic=1\n";
        assert_eq!(parse_probe(cover).unwrap().fps, None);
        let base = "width=32\nheight=32\nr_frame_rate=90000/1\navg_frame_rate=0/0\n";
        assert_eq!(parse_probe(base).unwrap().fps, None);
        assert!(parse_probe("").is_none());
        assert!(parse_probe("width=0\nheight=4\n").is_none());
    }
}
