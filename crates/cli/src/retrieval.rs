//! `dino eval retrieval`: rank a gallery by cosine similarity for every query and score mAP and
//! recall@k (`dino_eval::retrieval`).

use crate::features_in::FeatureInput;
use dino_eval::features::FeatureSet;
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
    let patch = a.descriptor == Descriptor::ClsGem;
    let (query, gallery) = a.input.load_with(a.gallery.as_deref(), patch)?;
    let q = describe(&query, a.descriptor, "query")?;
    let report = match &gallery {
        Some(g) => {
            let gd = describe(g, a.descriptor, "gallery")?;
            retrieval_eval(&q, &query.labels, &gd, &g.labels, false, &a.recall_at)?
        }
        None => retrieval_eval(&q, &query.labels, &q, &query.labels, true, &a.recall_at)?,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "retrieval ({:?} descriptor, {}) on {}: {} queries, gallery {}{}",
            a.descriptor,
            if report.leave_one_out {
                "leave-one-out"
            } else {
                "query/gallery"
            },
            a.input.describe(),
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
