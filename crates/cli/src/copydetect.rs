//! `dino eval copydetect`: the copies of a benchmark folder (`dino data copydetect`) search the
//! originals and distractors, after PCA whitening learned on its whitening photos
//! (`dino_eval::retrieval::copydetect`, official `eval_copy_detection.py`).

use crate::eval::ModelArgs;
use crate::retrieval::{describe, print_scores, Descriptor};
use anyhow::Context;
use dino_config::DataFormat;
use dino_data::copydetect::read_ground_truth;
use dino_data::dataset::open_dataset;
use dino_eval::features::FeatureSet;
use dino_eval::retrieval::copydetect::copy_detection_eval;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct CopyDetectArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A benchmark folder of `dino data copydetect` (originals/, distractors/, whitening/,
    /// queries/, ground_truth.csv).
    #[arg(long)]
    bench: PathBuf,
    /// The descriptor (official: CLS + GeM of the patch tokens).
    #[arg(long, value_enum, default_value = "cls-gem")]
    descriptor: Descriptor,
    /// The official multi-scale descriptor: CLS averaged over the image at scales 1, 1/√2, 1/2.
    #[arg(long)]
    multiscale: bool,
    /// Rank without the PCA whitening.
    #[arg(long)]
    no_whitening: bool,
    /// Recall cut-offs.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10")]
    recall_at: Vec<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The file name of each row, the key of the ground truth.
fn names(set: &FeatureSet) -> Vec<String> {
    set.paths
        .iter()
        .map(|p| {
            Path::new(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect()
}

pub fn run(a: CopyDetectArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !a.recall_at.is_empty() && !a.recall_at.contains(&0),
        "--recall-at needs cut-offs >= 1"
    );
    // The ground truth and every folder are checked before the model is loaded.
    let pairs = read_ground_truth(&a.bench)
        .with_context(|| format!("reading the benchmark {}", a.bench.display()))?;
    let emb = a.model.embedder()?;
    let kind = crate::retrieval::feature_kind(a.multiscale, emb.source())?;
    let open = |sub: &str| {
        let path = a.bench.join(sub);
        open_dataset(&path, DataFormat::Flat, "test", &emb.cfg.data)
            .with_context(|| format!("opening {}", path.display()))
    };
    let (originals, distractors, queries) =
        (open("originals")?, open("distractors")?, open("queries")?);
    let whitening = match a.no_whitening {
        true => None,
        false => Some(open("whitening").context("(or pass --no-whitening)")?),
    };
    let opts = emb.options(kind, a.descriptor == Descriptor::ClsGem)?;
    let stated = crate::stated::Stated::of(&opts, false);
    let embed = |ds: &dyn dino_data::dataset::Dataset, what: &str| -> anyhow::Result<_> {
        let set = emb.embed(ds, &opts)?;
        let d = describe(&set, a.descriptor, what)?;
        Ok((names(&set), d))
    };
    let (orig_names, orig) = embed(originals.as_ref(), "originals")?;
    let (_, distr) = embed(distractors.as_ref(), "distractors")?;
    let (query_names, q) = embed(queries.as_ref(), "queries")?;
    let white = match &whitening {
        Some(ds) => Some(embed(ds.as_ref(), "whitening")?.1),
        None => None,
    };
    // Originals first in the database, so a query's original is its row there.
    let row: HashMap<&str, usize> = orig_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let truth: HashMap<&str, &str> = pairs
        .iter()
        .map(|p| (p.query.as_str(), p.original.as_str()))
        .collect();
    let mut originals_of = Vec::with_capacity(query_names.len());
    for name in &query_names {
        let original = truth.get(name.as_str()).ok_or_else(|| {
            anyhow::anyhow!(
                "queries/{name} is not in the ground truth of {}",
                a.bench.display()
            )
        })?;
        let r = row.get(original).ok_or_else(|| {
            anyhow::anyhow!("the original {original} of queries/{name} could not be embedded")
        })?;
        originals_of.push(*r);
    }
    let database = tch::Tensor::f_cat(&[&orig, &distr], 0)?;
    let report = copy_detection_eval(&q, &originals_of, &database, white.as_ref(), &a.recall_at)?;
    if a.json {
        let mut v = stated.json(&report)?;
        v["whitening"] = serde_json::json!(white.as_ref().map(|w| w.size()[0]));
        v["descriptor"] = serde_json::json!(format!("{:?}", a.descriptor));
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "copy detection ({:?} descriptor, {} {:?}, {}) on {}: {} copies, database {} ({} originals), {}",
            a.descriptor,
            if a.model.checkpoint.is_some() { "checkpoint" } else { "no checkpoint," },
            a.model.which,
            stated.phrase(),
            a.bench.display(),
            report.n_queries,
            report.n_gallery,
            orig_names.len(),
            match &white {
                Some(w) => format!("whitening learned on {} photos", w.size()[0]),
                None => "no whitening".into(),
            }
        );
        print_scores(&report);
    }
    Ok(())
}
