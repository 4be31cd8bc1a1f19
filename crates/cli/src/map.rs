//! `dino map`: a 2-D map of the feature space (t-SNE or PCA, `dino_eval::space::map`) drawn as a PNG
//! coloured by class (`dino_eval::space::map_plot`), with the coordinates as `.npy` and CSV.

use crate::features_in::FeatureInput;
use anyhow::Context;
use dino_eval::features::embed::FeatureKind;
use dino_eval::space::map::{map_2d, MapMethod, TsneConfig};
use dino_eval::space::map_output::{write_coords_csv, write_coords_npy};
use dino_eval::space::map_plot::{draw_map_with_thumbnails, Thumbnail};
use std::path::PathBuf;

/// The 2-D embedding (clap's names for `dino_eval::space::map::MapMethod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Barnes-Hut t-SNE on exact cosine neighbours (the paper's figure; minutes for 10k images).
    Tsne,
    /// The first two principal components (seconds).
    Pca,
}

#[derive(clap::Args, Debug)]
pub struct MapArgs {
    #[command(flatten)]
    input: FeatureInput,
    /// The embedding.
    #[arg(long, value_enum, default_value = "tsne")]
    method: Method,
    /// t-SNE perplexity (3 x perplexity neighbours per image; needs more images than that).
    #[arg(long, default_value_t = 30.0)]
    perplexity: f64,
    /// t-SNE iterations (the first 250 with early exaggeration).
    #[arg(long, default_value_t = 1000)]
    iterations: usize,
    /// Barnes-Hut accuracy (larger: faster, coarser).
    #[arg(long, default_value_t = 0.5)]
    theta: f64,
    /// Title of the plot (default: method, source and image count).
    #[arg(long)]
    title: Option<String>,
    /// Width of the PNG in pixels.
    #[arg(long, default_value_t = 1400)]
    width: u32,
    /// Height of the PNG in pixels.
    #[arg(long, default_value_t = 1000)]
    height: u32,
    /// Draw this many sample images as small thumbnails at their points (spread over the
    /// dataset in index order; needs images: --data, or a features file whose paths exist).
    #[arg(long, default_value_t = 0)]
    thumbnails: usize,
    /// Side of a thumbnail in pixels.
    #[arg(long, default_value_t = 40)]
    thumbnail_size: u32,
    /// Output folder: map.png, coords.npy ([N, 2] f32), coords.csv (x, y, label, class, path)
    /// and map.json (settings and time).
    #[arg(long, short = 'o')]
    out: PathBuf,
}

pub fn run(a: MapArgs) -> anyhow::Result<()> {
    a.input.require()?;
    let tsne = TsneConfig {
        perplexity: a.perplexity,
        iterations: a.iterations,
        theta: a.theta,
    };
    let method = match a.method {
        Method::Tsne => MapMethod::Tsne,
        Method::Pca => MapMethod::Pca,
    };
    // Everything that can be checked is checked before any image is embedded.
    if method == MapMethod::Tsne {
        tsne.check()?;
    }
    anyhow::ensure!(
        a.width >= 200 && a.height >= 150,
        "--width/--height {}x{} is too small (at least 200x150)",
        a.width,
        a.height
    );
    // The input is probed (a features file read and checked, or the model loaded and the
    // folder opened) before the output folder is made; a map that cannot be drawn (e.g. all
    // rows identical) fails before anything is written into it.
    let input = a.input.open(None, FeatureKind::Cls, false)?;
    let _out = crate::output::prepare_dir(&a.out)?;
    let (set, _) = input.features()?;
    let start = std::time::Instant::now();
    let points = map_2d(&set.features, method, &tsne)?;
    let seconds = start.elapsed().as_secs_f64();
    let labels: Vec<i64> = Vec::try_from(&set.labels)?;
    let method_name = match method {
        MapMethod::Tsne => "t-SNE",
        MapMethod::Pca => "PCA",
    };
    let title = a.title.clone().unwrap_or_else(|| {
        format!(
            "{method_name} of {} ({} images)",
            a.input.describe(),
            set.len()
        )
    });
    let png = a.out.join("map.png");
    let text = dino_train::curves::text_available();
    let thumbs = thumbnails(&set.paths, a.thumbnails, a.thumbnail_size)?;
    draw_map_with_thumbnails(
        &png,
        &points,
        &labels,
        &set.classes,
        &title,
        (a.width, a.height),
        text,
        &thumbs,
    )?;
    let npy = a.out.join("coords.npy");
    write_coords_npy(&npy, &points)?;
    let csv = a.out.join("coords.csv");
    write_coords_csv(&csv, &points, &labels, &set.classes, &set.paths)?;
    let info = serde_json::json!({
        "method": method,
        "tsne": (method == MapMethod::Tsne).then_some(&tsne),
        "source": a.input.describe(),
        "n_images": set.len(),
        "seconds": seconds,
    });
    let json = a.out.join("map.json");
    std::fs::write(&json, serde_json::to_string_pretty(&info)?)
        .with_context(|| format!("writing {}", json.display()))?;
    eprintln!(
        "{method_name} of {} images in {seconds:.1} s; wrote {}, {}, {}, {}",
        set.len(),
        png.display(),
        npy.display(),
        csv.display(),
        json.display()
    );
    Ok(())
}

/// `n` thumbnails of side `side` from images spread evenly over `paths` (index order), each
/// decoded with the project's decoder and resized to fit, aspect kept.
fn thumbnails(paths: &[String], n: usize, side: u32) -> anyhow::Result<Vec<Thumbnail>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    anyhow::ensure!(
        (8..=256).contains(&side),
        "--thumbnail-size {side}: use 8 to 256 pixels"
    );
    anyhow::ensure!(
        !paths.is_empty(),
        "--thumbnails needs the images' paths, and these features have none"
    );
    let n = n.min(paths.len());
    (0..n)
        .map(|k| {
            let point = k * paths.len() / n;
            let path = std::path::Path::new(&paths[point]);
            let img = dino_data::decode::decode_file(path, u64::MAX)
                .with_context(|| format!("--thumbnails: reading {}", path.display()))?;
            Ok(Thumbnail::of(point, &img, side))
        })
        .collect()
}
