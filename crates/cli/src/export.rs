//! `dino export`: a backbone as TorchScript or ONNX (dino_model::export does the work).

use crate::eval::ModelArgs;
use crate::eval::Source;
use dino_model::ExportFormat;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// onnx (opset 17, dynamic batch, height and width) or torchscript.
    #[arg(long, value_parser = ["onnx", "torchscript"])]
    format: String,
    /// The file to write (e.g. vits16.onnx, vits16.pt).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    // Checked before the model loads: a typo costs nothing.
    let format: ExportFormat = a.format.parse().map_err(anyhow::Error::msg)?;
    if a.model.which == Source::Pixels {
        anyhow::bail!("--which pixels has no network to export");
    }
    let emb = a.model.embedder()?;
    // A ResNet would need another exporter (torchvision's); refused before anything is written.
    let vit = emb.backbone().vit("exportable ViT graph")?.config().clone();
    let _out = crate::output::prepare_file(&a.out)?;
    let r = dino_model::export_backbone(emb.variables(), &vit, format, &a.out)?;
    eprintln!(
        "wrote {} ({:?}, {} parameters): images [B, 3, H, W] normalised, H and W multiples of \
         {} -> CLS [B, {}]",
        r.out.display(),
        r.format,
        r.parameters,
        vit.patch_size,
        vit.embed_dim
    );
    Ok(())
}
