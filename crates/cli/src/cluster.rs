//! `dino eval cluster`: k-means on frozen features scored against the labels
//! (`dino_eval::space::cluster`).

use crate::features_in::FeatureInput;
use crate::stated::Stated;
use dino_eval::features::embed::FeatureKind;
use dino_eval::space::cluster::{cluster_eval, ClusterConfig, ClusterReport};

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
    let opened = a.input.open(None, FeatureKind::Cls, false)?;
    let stated = opened
        .stated()
        .or_else(|| a.input.features.as_deref().and_then(Stated::beside));
    let set = opened.features()?.0;
    let cfg = ClusterConfig {
        k: a.k,
        restarts: a.restarts,
        seed: a.seed,
        ..ClusterConfig::default()
    };
    let report = cluster_eval(&set.features, &set.labels, &cfg)?;
    if a.json {
        let v = match &stated {
            Some(s) => s.json(&report)?,
            None => serde_json::to_value(&report)?,
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let source = match &stated {
            Some(s) => format!("{} ({})", a.input.describe(), s.phrase()),
            None => a.input.describe(),
        };
        print!("{}", report_text(&report, &source));
    }
    Ok(())
}

/// The text report: settings, scores, and a note when k-means left clusters empty (the JSON
/// report's `nonempty_clusters`).
fn report_text(report: &ClusterReport, source: &str) -> String {
    let mut text = format!(
        "k-means (k = {}, {} restarts, seed {}) on {source}, {} images of {} classes:\n",
        report.k, report.restarts, report.seed, report.n_images, report.n_classes
    );
    text.push_str(&format!(
        "  NMI {:.4}  ARI {:.4}  purity {:.2}%  Hungarian accuracy {:.2}%\n",
        report.nmi,
        report.ari,
        100.0 * report.purity,
        100.0 * report.hungarian_accuracy
    ));
    if report.nonempty_clusters < report.k {
        text.push_str(&format!(
            "  note: only {} of the {} clusters received an image (k-means left the others \
             empty); the scores are those of {} clusters\n",
            report.nonempty_clusters, report.k, report.nonempty_clusters
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_says_when_clusters_stayed_empty() {
        let mut r = ClusterReport {
            n_images: 12,
            n_classes: 3,
            k: 3,
            nonempty_clusters: 3,
            restarts: 10,
            seed: 0,
            inertia: 0.1,
            nmi: 1.0,
            ari: 1.0,
            purity: 1.0,
            hungarian_accuracy: 1.0,
        };
        assert!(!report_text(&r, "f.npy").contains("note"));
        r.nonempty_clusters = 2;
        let text = report_text(&r, "f.npy");
        assert!(
            text.contains("note: only 2 of the 3 clusters received an image"),
            "{text}"
        );
    }
}
