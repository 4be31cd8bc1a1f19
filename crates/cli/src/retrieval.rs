//! `dino eval retrieval`: rank a gallery by cosine similarity for every query and score mAP and
//! recall@k (`dino_eval::retrieval`).

use crate::features_in::FeatureInput;
use crate::stated::Stated;
use anyhow::Context;
use dino_eval::features::embed::FeatureKind;
use dino_eval::features::source::Source;
use dino_eval::features::FeatureSet;
use dino_eval::retrieval::revisited::{find_gnd, revisited_eval, RevisitedReport};
use dino_eval::retrieval::{cls_gem, retrieval_eval};
use std::path::PathBuf;

/// The retrieval descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Descriptor {
    /// The CLS token (eval_image_retrieval.py).
    Cls,
    /// CLS concatenated with GeM (p = 4) of the last block's patch tokens
    /// (eval_copy_detection.py); a features file needs `dino embed --patch-tokens`.
    ClsGem,
}

#[derive(clap::Args, Debug)]
pub struct RetrievalArgs {
    #[command(flatten)]
    input: FeatureInput,
    /// Gallery searched by the queries of --data (a folder) or --features (a features file).
    /// Without it: leave-one-out, every image a query against all the others.
    #[arg(long)]
    gallery: Option<PathBuf>,
    /// The descriptor.
    #[arg(long, value_enum, default_value = "cls")]
    descriptor: Descriptor,
    /// The official multi-scale descriptor: CLS averaged over the image at scales 1, 1/√2, 1/2
    /// (a model and images are needed; not with --features).
    #[arg(long)]
    multiscale: bool,
    /// A revisited Oxford / Paris folder (`<dir>/gnd_roxford5k.pkl` and `<dir>/jpg/`): embed its
    /// database and queries with the model and score the Easy / Medium / Hard protocols (mAP and
    /// mP@k at --recall-at) instead of label retrieval. --data is ignored.
    #[arg(long, conflicts_with_all = ["gallery", "features"])]
    revisited: Option<PathBuf>,
    /// Recall cut-offs.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10")]
    recall_at: Vec<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The descriptor of a set: its CLS features, or CLS + GeM of its patch tokens.
pub(crate) fn describe(set: &FeatureSet, d: Descriptor, what: &str) -> anyhow::Result<tch::Tensor> {
    Ok(match d {
        Descriptor::Cls => set.features.shallow_clone(),
        Descriptor::ClsGem => {
            let tokens = set.patch_tokens.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "--descriptor cls-gem needs patch tokens, and the {what} features have none \
                     (embed them with `dino embed --patch-tokens`)"
                )
            })?;
            cls_gem(&set.features, tokens)?
        }
    })
}

pub fn run(a: RetrievalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !a.recall_at.is_empty() && !a.recall_at.contains(&0),
        "--recall-at needs cut-offs >= 1"
    );
    if let Some(dir) = &a.revisited {
        return run_revisited(&a, dir);
    }
    a.input.require()?;
    anyhow::ensure!(
        !(a.multiscale && a.input.features.is_some()),
        "--multiscale embeds the images at three scales: it needs a model and --data, not --features"
    );
    let patch = a.descriptor == Descriptor::ClsGem;
    let kind = match a.input.features {
        Some(_) => FeatureKind::Cls,
        None => feature_kind(a.multiscale, a.input.model.which)?,
    };
    let opened = a.input.open(a.gallery.as_deref(), kind, patch)?;
    let stated = opened
        .stated()
        .or_else(|| a.input.features.as_deref().and_then(Stated::beside));
    let (query, gallery) = opened.features()?;
    let q = describe(&query, a.descriptor, "query")?;
    let report = match &gallery {
        Some(g) => {
            let gd = describe(g, a.descriptor, "gallery")?;
            retrieval_eval(&q, &query.labels, &gd, &g.labels, false, &a.recall_at)?
        }
        None => retrieval_eval(&q, &query.labels, &q, &query.labels, true, &a.recall_at)?,
    };
    if a.json {
        let v = match &stated {
            Some(s) => s.json(&report)?,
            None => serde_json::to_value(&report)?,
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "retrieval ({:?} descriptor, {}) on {}{}: {} queries, gallery {}{}",
            a.descriptor,
            if report.leave_one_out {
                "leave-one-out"
            } else {
                "query/gallery"
            },
            a.input.describe(),
            stated
                .as_ref()
                .map(|s| format!(" ({})", s.phrase()))
                .unwrap_or_default(),
            report.n_queries,
            report.n_gallery,
            match report.n_queries_without_positive {
                0 => String::new(),
                n => format!(" ({n} queries without an image of their class left out)"),
            }
        );
        print_scores(&report);
    }
    Ok(())
}

/// The mAP / recall@k line shared by `dino eval retrieval` and `dino eval copydetect`.
pub fn print_scores(report: &dino_eval::retrieval::RetrievalReport) {
    let recall: Vec<String> = report
        .recall
        .iter()
        .map(|r| format!("R@{} {:.2}%", r.k, 100.0 * r.recall))
        .collect();
    println!("  mAP {:.2}%  {}", 100.0 * report.map, recall.join("  "));
}

/// The CLS feature, or the multi-scale one (`--multiscale`), which raw pixels do not have.
pub(crate) fn feature_kind(multiscale: bool, source: Source) -> anyhow::Result<FeatureKind> {
    anyhow::ensure!(
        !(multiscale && source == Source::Pixels),
        "--multiscale averages a model's CLS token over scales: raw pixels have none"
    );
    Ok(match multiscale {
        true => FeatureKind::ClsMultiScale,
        false => FeatureKind::Cls,
    })
}

/// `--revisited DIR`: the official `eval_image_retrieval.py` protocol on revisited Oxford/Paris.
fn run_revisited(a: &RetrievalArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    // The ground truth and every image path are checked before the model is loaded.
    let (gnd_path, gnd) = find_gnd(dir)?;
    let jpg = dir.join("jpg");
    let files = |names: &[String]| -> anyhow::Result<Vec<PathBuf>> {
        names
            .iter()
            .map(|n| {
                let p = jpg.join(format!("{n}.jpg"));
                anyhow::ensure!(
                    p.is_file(),
                    "{} lists {n}, but {} is missing",
                    gnd_path.display(),
                    p.display()
                );
                Ok(p)
            })
            .collect()
    };
    let (db_files, q_files) = (files(&gnd.imlist)?, files(&gnd.qimlist)?);
    let emb = a.input.model.embedder()?;
    let kind = feature_kind(a.multiscale, emb.source())?;
    let opts = emb.options(kind, a.descriptor == Descriptor::ClsGem)?;
    let max_pixels = emb.cfg.data.max_image_pixels;
    let embed = |files: Vec<PathBuf>, what: &str| -> anyhow::Result<tch::Tensor> {
        let n = files.len();
        let ds = dino_data::dataset::ImageFiles::from_files(files, max_pixels);
        let set = emb.embed(&ds, &opts)?;
        anyhow::ensure!(
            set.len() == n,
            "{} of the {n} {what} images failed to decode: the protocol needs every image",
            n - set.len()
        );
        describe(&set, a.descriptor, what)
    };
    let db = embed(db_files, "database")?;
    let q = embed(q_files, "query")?;
    let report = revisited_eval(&db, &q, &gnd, &a.recall_at)
        .with_context(|| format!("scoring {}", gnd_path.display()))?;
    print_revisited(&report, &gnd_path, a.json)
}

fn print_revisited(r: &RevisitedReport, gnd: &std::path::Path, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!(
        "revisited retrieval on {} ({} database images)",
        gnd.display(),
        r.n_database
    );
    for (name, p) in [("Easy", &r.easy), ("Medium", &r.medium), ("Hard", &r.hard)] {
        let mp: Vec<String> = p
            .precision
            .iter()
            .map(|x| format!("mP@{} {:.2}", x.k, 100.0 * x.precision))
            .collect();
        println!(
            "  {name:>6}: mAP {:.2}  {}  ({} queries)",
            100.0 * p.map,
            mp.join("  "),
            p.n_queries
        );
    }
    Ok(())
}
