//! `dino attention`: the last block's CLS attention of each head over an image
//! (official visualize_attention.py). The image keeps its aspect ratio unless `--square`
//! (dino_eval::attention::AttentionImage).

use crate::eval::{ModelArgs, Source};
use anyhow::Context;
use dino_eval::attention::score::{boxes_in_crop, read_boxes, score_image, ScoreReport};
use dino_eval::attention::{attention_of, write_maps, AttentionResize};
use std::path::PathBuf;

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
    /// Resize target in pixels: the shorter side, the aspect ratio kept, then each side cropped
    /// (top-left) down to a multiple of the patch size (official `--image_size 480`, one
    /// number). With --square: both sides, rounded down to a multiple of the patch size.
    /// Default: the run's evaluation size (eval.crop_size), the size its position table was
    /// trained and evaluated at (official visualize_attention.py: 480, for ImageNet models).
    #[arg(long)]
    image_size: Option<u32>,
    /// Keep the image's aspect ratio (the default; this flag only says so): the patch grid
    /// follows the image, e.g. 30 × 40 patches for a 4:3 photo at --image-size 480 and patch 16,
    /// as the official visualize_attention.py does with one --image_size number. Attention maps
    /// only: embed, k-NN and the linear probe keep the official square centre crop.
    #[arg(long, conflicts_with = "square")]
    keep_aspect: bool,
    /// Resize to a square --image-size × --image-size whatever the aspect ratio (the official
    /// default --image_size 480 480, and this command's behaviour before --keep-aspect).
    #[arg(long, alias = "no-keep-aspect")]
    square: bool,
    /// Share of the attention mass kept by the masks (paper 0.6).
    #[arg(long, default_value_t = dino_eval::attention::DEFAULT_THRESHOLD)]
    threshold: f64,
    /// Output folder: one sub-folder per image, named after it (`ants_0013035` for
    /// `--data`'s `ants/0013035.jpg`), with `panel.png` (photo | mean | heads | mask, the
    /// colour scale under the maps) beside the single maps, and `index.json` listing image,
    /// folder and patch grid.
    #[arg(long)]
    out: PathBuf,
    /// Boxes drawn around the objects, to score the maps: JSON `{"ants/x.jpg": [[x0, y0, x1,
    /// y1], ...], ...}` (fractions of the original image's width and height, origin top-left,
    /// mapped through the crop; paths relative to `--data`; keys starting with `_` are
    /// comments). The images are then those of the file, and
    /// `scores.json` in `--out` gives, per image and head, the share of the attention inside the
    /// boxes and the Jaccard index of the mask with them (dino_eval::attention::score).
    #[arg(long, requires = "data", conflicts_with = "image")]
    boxes: Option<PathBuf>,
}

pub fn run(a: AttentionArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.model.which != Source::Pixels,
        "--which pixels has no attention"
    );
    let emb = a.model.embedder()?;
    // Refused before the output folder is made: a ResNet has no attention to show.
    let vit = emb.backbone().vit("attention to show (dino attention)")?;
    let cfg = &emb.cfg;
    let decode = |path: &std::path::Path| {
        dino_data::decode::decode_file(path, cfg.data.max_image_pixels)
            .context("reading an image for the attention maps")
    };
    // (output name, image): the box file's images, or --image files, or the first --count of
    // --data.
    let mut images = Vec::new();
    let mut boxed = Vec::new();
    if let (Some(file), Some(root)) = (&a.boxes, &a.data) {
        boxed = read_boxes(file)?;
        for b in &boxed {
            images.push((b.name.clone(), decode(&root.join(&b.path))?));
        }
    }
    for path in &a.image {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        images.push((stem, decode(path)?));
    }
    if let (Some(dir), None) = (&a.data, &a.boxes) {
        let ds = dino_data::dataset::open_dataset(
            dir,
            dino_config::DataFormat::Auto,
            "test",
            &cfg.data,
        )?;
        for i in 0..a.count.min(ds.len()) {
            images.push((folder_name(&ds.describe(i), dir), ds.load(i)?.image));
        }
    }
    // Two images of one name (photo.jpg in two folders) get -2, -3, ... after the first.
    let mut seen_names = std::collections::HashMap::new();
    for (name, _) in images.iter_mut() {
        let n = seen_names.entry(name.clone()).or_insert(0usize);
        *n += 1;
        if *n > 1 {
            *name = format!("{name}-{n}");
        }
    }
    let image_size = a.image_size.unwrap_or_else(|| {
        tracing::info!(
            "--image-size {} (the run's evaluation size, eval.crop_size)",
            cfg.eval.crop_size
        );
        cfg.eval.crop_size
    });
    // Every image is read before the output folder is made.
    let _out = crate::output::prepare_dir(&a.out)?;
    // clap rejects both flags together; --keep-aspect only restates the default.
    let fit = if a.square && !a.keep_aspect {
        AttentionResize::Square(image_size)
    } else {
        AttentionResize::KeepAspect(image_size)
    };
    let patch = cfg.model.patch_size as u32;
    let (mean, std) = (cfg.augmentation.mean, cfg.augmentation.std);
    let mut scores = std::collections::BTreeMap::new();
    let mut index = Vec::new();
    for (stem, img) in images {
        let (seen, maps) = attention_of(vit, &img, fit, mean, std, emb.device())
            .with_context(|| format!("attention maps of {stem}"))?;
        let dir = a.out.join(&stem);
        let mut files = write_maps(&dir, &seen.image, &maps, patch, a.threshold)?;
        files.push(crate::attention_panel::write_panel(
            &dir,
            &maps,
            patch,
            a.threshold,
        )?);
        eprintln!(
            "{stem}: {} rows × {} columns of patches, {} files in {}",
            seen.h,
            seen.w,
            files.len(),
            dir.display()
        );
        let tile = crate::attention_panel::tile_scale(seen.w as u32 * patch);
        let mut tiles = vec!["photo".to_string(), "mean".to_string()];
        tiles.extend((0..maps.heads.len()).map(|i| format!("head {i}")));
        tiles.push("mask".to_string());
        index.push(serde_json::json!({
            "folder": stem,
            "grid": [seen.h, seen.w],
            "panel": {
                "file": "panel.png",
                "tiles": tiles,
                "tile_size": [seen.w as u32 * patch * tile, seen.h as u32 * patch * tile],
            },
            "files": files
                .iter()
                .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>(),
        }));
        if let Some(b) = boxed.iter().find(|b| b.name == stem) {
            let s = boxes_in_crop(&b.boxes, seen.kept_fraction())
                .and_then(|list| score_image(&maps, &list, a.threshold))
                .with_context(|| format!("scoring {stem} against its boxes"))?;
            scores.insert(stem, s);
        }
    }
    let index_path = a.out.join("index.json");
    let index = serde_json::json!({
        "image_size": image_size,
        "square": a.square,
        "threshold": a.threshold,
        "grid": "[rows, columns] of patches",
        "mask": format!(
            "the fewest patches holding {:.0} % of the mean map's attention mass",
            a.threshold * 100.0
        ),
        "images": index,
    });
    std::fs::write(&index_path, serde_json::to_string_pretty(&index)?)
        .with_context(|| format!("writing {}", index_path.display()))?;
    eprintln!("index: {}", index_path.display());
    if !scores.is_empty() {
        let report = ScoreReport::new(a.threshold, scores);
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
        let line = |b: &dino_eval::attention::score::MapSummary| {
            format!(
                "attention in boxes {:5.1} %, lift {:.2} (above 1 on {:2} of {}), Jaccard of the \
                 {} mask {:.3}",
                100.0 * b.mass_in_box,
                b.lift,
                b.lift_above_1,
                s.images,
                a.threshold,
                b.jaccard
            )
        };
        for (name, b) in rows.chain([("mean map".to_string(), &s.mean_map)]) {
            println!("{name:>9}: {}", line(b));
        }
        // The head picked on each image by its boxes flatters the model (an upper bound): say
        // so, and name the best single head across the images, one choice for all of them.
        println!(
            "best head per image, chosen with the boxes: optimistic; {}",
            line(&s.best_head)
        );
        if let Some((i, _)) = s
            .heads
            .iter()
            .enumerate()
            .max_by(|x, y| x.1.mass_in_box.total_cmp(&y.1.mass_in_box))
        {
            println!("best single head across the images: head {i} (also chosen with the boxes)");
        }
        let path = a.out.join("scores.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("scores: {}", path.display());
    }
    Ok(())
}

/// A folder name for the image `described` (a path) under `root`: its path below `root`
/// without the extension, `/` as `_` (`ants/0013035.jpg` → `ants_0013035`).
fn folder_name(described: &str, root: &std::path::Path) -> String {
    // A record of a batch file (CIFAR-10, IDX): `file#record` → `<file stem>_<record>`.
    if let Some((file, record)) = described.rsplit_once('#') {
        return format!("{}_{record}", folder_name(file, root));
    }
    let path = std::path::Path::new(described);
    let rel = path.strip_prefix(root).unwrap_or(path);
    let rel = rel.with_extension("");
    let name = rel
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("_");
    let name = dino_config::file_safe_name(&name);
    if name.is_empty() {
        "image".into()
    } else {
        name
    }
}
