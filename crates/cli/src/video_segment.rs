//! `dino video segment` (see [`crate::video::VideoCmd`]): video object segmentation on the DAVIS-2017 layout by propagating the
//! first frame's mask with patch features (official eval_video_segmentation.py), predictions
//! written as palette PNGs in the layout the DAVIS toolkit reads, and scored here with J and F
//! on the annotated frames (dino_eval::video::davis_segment).

use crate::eval::{ModelArgs, Source};
use anyhow::Context;
use dino_eval::video::davis::{list_sequences, open_sequence};
use dino_eval::video::davis_metrics::{DavisReport, ObjectScore, BOUND_TH};
use dino_eval::video::davis_segment::{prepare_sequence, segment_sequence, FrameOptions};
use dino_eval::video::segmentation::SegmentConfig;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct SegmentArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// DAVIS root: `JPEGImages/<resolution>/<sequence>/*.jpg` and
    /// `Annotations/<resolution>/<sequence>/*.png` (palette PNGs; the first frame's is required,
    /// later ones are ground truth, scored except on the last frame as the toolkit does).
    #[arg(long)]
    davis: PathBuf,
    /// Sequences (repeatable; default: every folder of `JPEGImages/<resolution>`).
    #[arg(long)]
    sequence: Vec<String>,
    /// Resolution folder name.
    #[arg(long, default_value = "480p")]
    resolution: String,
    /// Shorter side of the model input in pixels (official 480), rounded down to a multiple of
    /// the patch size; the longer side follows the aspect ratio, rounded down likewise.
    #[arg(long, default_value_t = 480)]
    size: u32,
    /// Predicted frames kept as context besides the first (official 7). A video with fewer
    /// previous frames uses all of them.
    #[arg(long, default_value_t = SegmentConfig::default().n_last_frames)]
    n_last_frames: usize,
    /// Sources restricted to this many patches around each query; 0 = no window (official 12).
    #[arg(long, default_value_t = SegmentConfig::default().size_mask_neighborhood)]
    size_mask_neighborhood: usize,
    /// Neighbours whose labels are accumulated per patch (official 5).
    #[arg(long, default_value_t = SegmentConfig::default().topk)]
    topk: usize,
    /// Softmax temperature of the cosine affinities (official 0.1, a constant in the code).
    #[arg(long, default_value_t = SegmentConfig::default().temperature)]
    temperature: f64,
    /// Output folder: `OUT/<sequence>/` per sequence (each must not exist yet) and
    /// `OUT/scores.json`.
    #[arg(long)]
    out: PathBuf,
}

pub fn segment(a: SegmentArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.model.which != Source::Pixels,
        "--which pixels has no patch features to propagate with"
    );
    let cfg = SegmentConfig {
        n_last_frames: a.n_last_frames,
        size_mask_neighborhood: a.size_mask_neighborhood,
        topk: a.topk,
        temperature: a.temperature,
    };
    cfg.validate()?;
    // Every check that needs no model, for every sequence, before any work.
    let names = if a.sequence.is_empty() {
        list_sequences(&a.davis, &a.resolution)?
    } else {
        a.sequence.clone()
    };
    anyhow::ensure!(!names.is_empty(), "{} holds no sequence", a.davis.display());
    let mut prepared = Vec::new();
    for name in &names {
        let seq = open_sequence(&a.davis, &a.resolution, name)?;
        let dest = a.out.join(name);
        anyhow::ensure!(
            !dest.exists(),
            "{} exists already; give a new --out",
            dest.display()
        );
        prepared.push(prepare_sequence(seq)?);
    }
    let emb = a.model.embedder()?;
    // Propagation needs patch features: a ResNet is refused before any output is written.
    let vit = emb.backbone().vit("video segmentation (patch features)")?;
    let _out = crate::output::prepare_dir(&a.out)?;
    let opts = FrameOptions {
        short_side: a.size,
        mean: emb.cfg.augmentation.mean,
        std: emb.cfg.augmentation.std,
        max_pixels: emb.cfg.data.max_image_pixels,
    };
    let mut objects: Vec<ObjectScore> = Vec::new();
    let mut scored_frames = 0;
    for prep in &prepared {
        let name = &prep.seq.name;
        let scores = segment_sequence(prep, vit, cfg, &opts, emb.device(), &a.out.join(name))
            .with_context(|| format!("segmenting {name}"))?;
        let n = prep.truth.len();
        scored_frames += n;
        if n == 0 {
            eprintln!(
                "{name}: {} frames predicted, no ground truth past the first frame (not scored)",
                prep.seq.frames.len()
            );
            continue;
        }
        for o in &scores {
            eprintln!(
                "{}: J {:.3}  F {:.3}  ({} frames scored of {})",
                o.name,
                o.j_mean,
                o.f_mean,
                o.frames.len(),
                prep.seq.frames.len()
            );
        }
        objects.extend(scores);
    }
    let report = DavisReport::new(objects);
    let path = a.out.join("scores.json");
    let json = serde_json::json!({
        "which": format!("{:?}", a.model.which).to_lowercase(),
        "checkpoint": a.model.checkpoint,
        "propagation": cfg,
        "frames": opts,
        "patch_size": emb.cfg.model.patch_size,
        "bound_th": BOUND_TH,
        "scored_frames": scored_frames,
        "report": report,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", path.display()))?;
    if report.objects.is_empty() {
        println!(
            "no annotated frame to score; predictions in {}",
            a.out.display()
        );
    } else {
        println!(
            "J&F-mean {:.3}  J-mean {:.3}  F-mean {:.3}  ({} objects, {} scored frames)",
            report.jf_mean,
            report.j_mean,
            report.f_mean,
            report.objects.len(),
            scored_frames
        );
    }
    println!("predictions and scores.json in {}", a.out.display());
    Ok(())
}
