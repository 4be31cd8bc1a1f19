//! `dino export`: a backbone as TorchScript or ONNX (dino_model::export does the work).

use crate::eval::ModelArgs;
use crate::eval::Source;
use dino_model::ExportFormat;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// onnx (opset 17, dynamic batch, height and width) or torchscript. Default: from the
    /// extension of --out (`.onnx`; `.pt`, `.torchscript`).
    #[arg(long, value_parser = ["onnx", "torchscript"])]
    format: Option<String>,
    /// The file to write (e.g. vits16.onnx, vits16.pt).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    // Checked before the model loads: a typo costs nothing.
    let name = match &a.format {
        Some(f) => f.clone(),
        None => match a.out.extension().and_then(|e| e.to_str()) {
            Some("onnx") => "onnx".to_string(),
            Some("pt" | "torchscript") => "torchscript".to_string(),
            _ => anyhow::bail!(
                "cannot tell the format from {}: pass --format onnx|torchscript, or name the \
                 file .onnx / .pt",
                a.out.display()
            ),
        },
    };
    let format: ExportFormat = name.parse().map_err(anyhow::Error::msg)?;
    if a.model.which == Source::Pixels {
        anyhow::bail!("--which pixels has no network to export");
    }
    let emb = a.model.embedder()?;
    // A ResNet would need another exporter (torchvision's); refused before anything is written.
    let vit = emb.backbone().vit("exportable ViT graph")?.config().clone();
    let (e, aug) = (&emb.cfg.eval, &emb.cfg.augmentation);
    let t = dino_data::transforms::eval::EvalTransform::new(e.crop_size, e.resize_ratio)?;
    let metadata: Vec<(String, String)> = [
        ("resize_shorter_side", t.resize_size().to_string()),
        ("resize_interpolation", "bicubic".to_string()),
        ("center_crop", t.crop_size().to_string()),
        ("scale", "1/255".to_string()),
        ("mean", format!("{:?}", aug.mean)),
        ("std", format!("{:?}", aug.std)),
        (
            "input",
            "RGB [B, 3, H, W] f32, (x / 255 - mean) / std".to_string(),
        ),
        (
            "output",
            format!("CLS [B, {}] after the final LayerNorm", vit.embed_dim),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let _out = crate::output::prepare_file(&a.out)?;
    let r = dino_model::export_backbone_with(emb.variables(), &vit, format, &a.out, &metadata)?;
    eprintln!(
        "wrote {} ({:?}, {} parameters): images [B, 3, H, W] normalised, H and W multiples of \
         {} -> CLS [B, {}] after the final LayerNorm, not L2-normalized (divide each row by its \
         norm for the rows `dino embed` writes)\npreprocess as the model was evaluated: RGB, shorter side resized \
         to {} (bicubic), centre crop {} x {}, values / 255, then (x - mean) / std with mean \
         {:?}, std {:?} (also in the file's metadata)",
        r.out.display(),
        r.format,
        r.parameters,
        vit.patch_size,
        vit.embed_dim,
        t.resize_size(),
        t.crop_size(),
        t.crop_size(),
        aug.mean,
        aug.std
    );
    Ok(())
}
