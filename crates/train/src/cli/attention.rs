//! `dino attention`: the last block's CLS attention of each head over an image
//! (official visualize_attention.py).

use super::eval::{ModelArgs, Source};
use anyhow::Context;
use dino_eval::attention::write_attention_maps;
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
    for path in &a.image {
        let img = dino_data::decode::decode_file(path, emb.cfg.data.max_image_pixels)
            .context("reading an image for the attention maps")?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        images.push((stem, img));
    }
    if let Some(dir) = &a.data {
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
        let dir = a.out.join(&stem);
        let files = write_attention_maps(
            &dir,
            &resized,
            &attn.f_to_device(tch::Device::Cpu)?.f_squeeze_dim(0)?,
            patch,
            a.threshold,
        )?;
        eprintln!("{stem}: {} files in {}", files.len(), dir.display());
    }
    Ok(())
}
