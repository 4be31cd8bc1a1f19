//! Room `video`: evaluations over frames: attention frame by frame, and video object
//! segmentation by label propagation, read from and written to the DAVIS-2017 layout and scored
//! with J and F.

/// Attention over a video, frame by frame (`video_generation.py`): maps, smoothing over frames,
/// threshold masks and the side-by-side `original | attention | mask` picture.
pub mod attention;
/// The DAVIS-2017 folder layout and its palette-PNG annotations (read, checked, written).
pub mod davis;
/// DAVIS's region similarity J and contour accuracy F, and the J&F-mean.
pub mod davis_metrics;
/// A DAVIS sequence segmented end to end (frames → patch features → propagation → palette
/// PNGs) and scored on its annotated frames.
pub mod davis_segment;
/// The per-frame pipeline of `dino video attention`: frames → attention → pictures, JSON lines
/// and a video.
pub mod render;
/// Video object segmentation by label propagation of the first frame's mask
/// (`eval_video_segmentation.py`).
pub mod segmentation;
/// A generated DAVIS sequence with exact masks: photo cut-outs moving over another photo.
pub mod synth;
