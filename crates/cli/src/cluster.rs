//! `dino eval cluster`: k-means on frozen features scored against the labels
//! (`dino_eval::cluster`).

use crate::features_in::FeatureInput;
use dino_eval::cluster::{cluster_eval, ClusterConfig};

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    input: FeatureInput,
    /// Number of clusters (default: the number of classes in the labels).
    #[arg(long)]
    k: Option<usize>,
    /// k-means restarts from k-means++ seedings; the lowest inertia wins.
    #[arg(long, default_value_t = 10)]
    restarts: usize,
    /// Seed of the k-means++ draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ClusterArgs) -> anyhow::Result<()> {
    // Settings are checked before any image is embedded.
    a.input.require()?;
    anyhow::ensure!(a.k != Some(0), "--k must be at least 1");
    anyhow::ensure!(a.restarts > 0, "--restarts must be at least 1");
    let set = a.input.load()?;
    let cfg = ClusterConfig {
        k: a.k,
        restarts: a.restarts,
        seed: a.seed,
        ..ClusterConfig::default()
    };
    let report = cluster_eval(&set.features, &set.labels, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "k-means (k = {}, {} restarts, seed {}) on {}, {} images of {} classes:",
            report.k,
            report.restarts,
            report.seed,
            a.input.describe(),
            report.n_images,
            report.n_classes
        );
        println!(
            "  NMI {:.4}  ARI {:.4}  purity {:.2}%  Hungarian accuracy {:.2}%",
            report.nmi,
            report.ari,
            100.0 * report.purity,
            100.0 * report.hungarian_accuracy
        );
    }
    Ok(())
}
