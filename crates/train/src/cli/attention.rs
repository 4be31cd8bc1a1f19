//! `dino attention`: the last block's CLS attention of each head over an image
//! (official visualize_attention.py).

use super::eval::{ModelArgs, Source};
use anyhow::Context;
use dino_eval::attention::{write_maps, AttentionMaps};
use dino_eval::attention_score::{
    check_box, score_image, summarise, FracBox, ImageBoxScores, ScoreSummary,
};
use std::path::PathBuf;
use tch::{Kind, Tensor};

#[derive(clap::Args, Debug)]
pub struct AttentionArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Image files (repeatable).
    #[arg(long, required_unless_present = "data")]
    image: Vec<PathBuf>,
    /// Or the first `--count` images of a dataset folder (test split for CIFAR-10 / IDX).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Images taken from `--data`.
    #[arg(long, default_value_t = 4)]
    count: usize,
    /// Side the image is resized to before cropping to a multiple of the patch size
    /// (official --image_size 480).
    #[arg(long, default_value_t = 480)]
    image_size: u32,
    /// Share of the attention mass kept by the masks (paper 0.6).
    #[arg(long, default_value_t = dino_eval::attention::DEFAULT_THRESHOLD)]
    threshold: f64,
    /// Output folder (one sub-folder per image).
    #[arg(long)]
    out: PathBuf,
    /// Boxes drawn around the objects, to score the maps: JSON `{"ants/x.jpg": [[x0, y0, x1,
    /// y1], ...], ...}` (fractions of width and height, origin top-left; paths relative to
    /// `--data`; keys starting with `_` are comments). The images are then those of the file, and
    /// `scores.json` in `--out` gives, per image and head, the share of the attention inside the
    /// boxes and the Jaccard index of the mask with them (dino_eval::attention_score).
    #[arg(long, requires = "data", conflicts_with = "image")]
    boxes: Option<PathBuf>,
}

/// `scores.json`: box scores of every image and their averages over images.
#[derive(serde::Serialize)]
struct ScoreReport {
    threshold: f64,
    summary: ScoreSummary,
    images: std::collections::BTreeMap<String, ImageBoxScores>,
}

pub fn run(a: AttentionArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.model.which != Source::Pixels,
        "--which pixels has no attention"
    );
    let emb = super::eval::Embedder::new(&a.model)?;
    let backbone = emb.backbone();
    let patch = emb.cfg.model.patch_size as u32;
    let (mean, std) = (emb.cfg.augmentation.mean, emb.cfg.augmentation.std);
    let mut images = Vec::new();
    let mut boxes: std::collections::BTreeMap<String, Vec<FracBox>> = Default::default();
    if let (Some(file), Some(root)) = (&a.boxes, &a.data) {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the boxes {}", file.display()))?;
        let all: std::collections::BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&text)
                .with_context(|| format!("parsing the boxes {}", file.display()))?;
        for (key, value) in all.into_iter().filter(|(k, _)| !k.starts_with('_')) {
            let list: Vec<FracBox> = serde_json::from_value(value).with_context(|| {
                format!(
                    "{}: \"{key}\" is not a list of [x0, y0, x1, y1]",
                    file.display()
                )
            })?;
            anyhow::ensure!(!list.is_empty(), "{}: \"{key}\" has no box", file.display());
            for b in &list {
                check_box(b).with_context(|| format!("{}: \"{key}\"", file.display()))?;
            }
            let path = root.join(&key);
            let img = dino_data::decode::decode_file(&path, emb.cfg.data.max_image_pixels)
                .context("reading an image for the attention maps")?;
            let stem = std::path::Path::new(&key).with_extension("");
            let stem = stem.to_string_lossy().into_owned();
            boxes.insert(stem.clone(), list);
            images.push((stem, img));
        }
        anyhow::ensure!(!boxes.is_empty(), "{}: no boxes", file.display());
    }
    for path in &a.image {
        let img = dino_data::decode::decode_file(path, emb.cfg.data.max_image_pixels)
            .context("reading an image for the attention maps")?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        images.push((stem, img));
    }
    if let (Some(dir), None) = (&a.data, &a.boxes) {
        let ds = dino_data::dataset::open_dataset(
            dir,
            dino_config::DataFormat::Auto,
            "test",
            &emb.cfg.data,
        )?;
        for i in 0..a.count.min(ds.len()) {
            images.push((format!("{i:04}"), ds.load(i)?.image));
        }
    }
    let mut scores = std::collections::BTreeMap::new();
    for (stem, img) in images {
        // Official: Resize((image_size, image_size)), then crop to a multiple of the patch size.
        let side = a.image_size.max(patch) / patch * patch;
        let resized = dino_data::transforms::resize(&img, side, side)?; // Pillow bicubic
        let mut chw = vec![0f32; (3 * side * side) as usize];
        dino_data::transforms::normalize_chw_into(&resized, mean, std, &mut chw);
        let x = Tensor::f_from_slice(&chw)?
            .f_view([1, 3, side as i64, side as i64])?
            .f_to_kind(Kind::Float)?;
        let x = x.f_to_device(emb.device())?;
        let attn = tch::no_grad(|| backbone.last_selfattention(&x))?;
        let grid = (side / patch) as usize;
        let maps =
            AttentionMaps::from_last_block(&attn.f_to_device(tch::Device::Cpu)?, grid, grid)?;
        let dir = a.out.join(&stem);
        let files = write_maps(&dir, &resized, &maps, patch, a.threshold)?;
        eprintln!("{stem}: {} files in {}", files.len(), dir.display());
        if let Some(list) = boxes.get(&stem) {
            let s = score_image(&maps, list, a.threshold)
                .with_context(|| format!("scoring {stem} against its boxes"))?;
            scores.insert(stem, s);
        }
    }
    if !scores.is_empty() {
        let report = ScoreReport {
            threshold: a.threshold,
            summary: summarise(scores.values()),
            images: scores,
        };
        let s = &report.summary;
        println!(
            "{} images, boxes cover {:.1} % of each on average (uniform attention: that much in the \
             boxes, lift 1)",
            s.images,
            100.0 * s.box_area
        );
        let rows = s
            .heads
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("head {i}"), b));
        let rows = rows.chain([
            ("mean map".to_string(), &s.mean_map),
            ("best head".to_string(), &s.best_head),
        ]);
        for (name, b) in rows {
            println!(
                "{name:>9}: attention in boxes {:5.1} %, lift {:.2} (above 1 on {:2} of {}), \
                 Jaccard of the {} mask {:.3}",
                100.0 * b.mass_in_box,
                b.lift,
                b.lift_above_1,
                s.images,
                a.threshold,
                b.jaccard
            );
        }
        let path = a.out.join("scores.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("scores: {}", path.display());
    }
    Ok(())
}
