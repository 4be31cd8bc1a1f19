//! Clusters without labels: k-means on L2-normalised features, scored against the classes
//! (the structure behind the paper's t-SNE figure; DINO's features group images by what they
//! show though no label was used). k-means is `linfa-clustering`'s (k-means++ seeding, the
//! best of several restarts by inertia), seeded so a run is repeated exactly; the scores are in
//! [`crate::space::cluster_metrics`].

use linfa::prelude::*;
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::Array2;
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256Plus;
use tch::{Kind, Tensor};

use crate::features::{check_rows, FeaturesError};
use crate::space::cluster_metrics::Contingency;

/// Settings of [`cluster_eval`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Number of clusters; `None`: the number of classes in the labels.
    pub k: Option<usize>,
    /// k-means restarts, each from its own k-means++ seeding; the lowest inertia wins
    /// (scikit-learn's `n_init`, linfa's `n_runs`).
    pub restarts: usize,
    /// Iterations per restart at most.
    pub max_iterations: u64,
    /// A restart stops when the centroids move less than this (L2 over all centroids).
    pub tolerance: f64,
    /// Seed of the k-means++ draws.
    pub seed: u64,
}

impl Default for ClusterConfig {
    /// k = classes, 10 restarts, 300 iterations, tolerance 1e-4 (scikit-learn's and linfa's
    /// defaults), seed 0.
    fn default() -> Self {
        Self {
            k: None,
            restarts: 10,
            max_iterations: 300,
            tolerance: 1e-4,
            seed: 0,
        }
    }
}

/// Errors of [`kmeans`] and [`cluster_eval`], raised before any clustering work.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Features or labels refused by the shared check ([`check_rows`]): not a float `[N, D]`
    /// tensor, labels not `[N]` integers, or rows holding NaN or infinities (non-finite features
    /// cannot be clustered).
    #[error(transparent)]
    Features(#[from] FeaturesError),
    /// A feature row is all zeros: it has no direction to normalise.
    #[error("feature row {row} is all zeros (it has no direction after L2 normalisation)")]
    ZeroRow {
        /// The first zero row.
        row: usize,
    },
    /// The labels hold fewer than two classes: nothing to separate.
    #[error("the labels hold {0} class(es): scoring clusters against classes needs at least 2")]
    OneClass(usize),
    /// k is 0 or larger than the number of images.
    #[error("k = {k} clusters for {n} image(s): k must be between 1 and the number of images")]
    K {
        /// Requested clusters.
        k: usize,
        /// Images.
        n: usize,
    },
    /// Fewer distinct feature rows than clusters: k-means cannot place k centroids on distinct
    /// points (duplicated images, a still video's frames, a constant feature).
    #[error(
        "k = {k} clusters, but the {n} feature rows hold only {distinct} distinct direction(s) \
         (identical after L2 normalisation): k-means cannot make more clusters than there are \
         distinct points; lower --k to at most {distinct}{}",
        if *distinct == 1 { " (all rows are the same: nothing to cluster)" } else { "" }
    )]
    TooFewDistinct {
        /// Requested clusters.
        k: usize,
        /// Distinct rows.
        distinct: usize,
        /// Rows.
        n: usize,
    },
    /// A setting is out of range.
    #[error("{0}")]
    Setting(String),
    /// libtorch failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// k-means failed.
    #[error("k-means: {0}")]
    KMeans(String),
    /// The class and cluster labellings to score differ in length.
    #[error("{classes} class labels for {clusters} cluster labels")]
    Length {
        /// Number of class labels.
        classes: usize,
        /// Number of cluster labels.
        clusters: usize,
    },
    /// No labels to score.
    #[error("no labels to score")]
    NoLabels,
}

/// A k-means result.
#[derive(Debug, Clone)]
pub struct KMeansFit {
    /// The cluster of every row, in `0..k`.
    pub assignments: Vec<usize>,
    /// Mean squared L2 distance of a row to its centroid (on the normalised features).
    pub inertia: f64,
}

/// Scores of a clustering against the classes, with the settings that produced it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterReport {
    /// Images clustered.
    pub n_images: usize,
    /// Distinct classes among the labels.
    pub n_classes: usize,
    /// Clusters asked for.
    pub k: usize,
    /// Clusters that received at least one image.
    pub nonempty_clusters: usize,
    /// k-means restarts.
    pub restarts: usize,
    /// k-means seed.
    pub seed: u64,
    /// Mean squared distance of an image to its centroid (L2-normalised features).
    pub inertia: f64,
    /// Normalised mutual information, arithmetic mean (scikit-learn's default), in [0, 1].
    pub nmi: f64,
    /// Adjusted Rand index, in [-0.5, 1].
    pub ari: f64,
    /// Purity (each cluster labelled by its majority class), in [0, 1].
    pub purity: f64,
    /// Accuracy under the best one-to-one map of clusters to classes (Hungarian), in [0, 1].
    pub hungarian_accuracy: f64,
}

/// `[N, D]` float features as L2-normalised f64 rows (as `torch.nn.functional.normalize`),
/// checked for NaN, infinities and zero rows.
///
/// # Errors
/// [`ClusterError::Features`] (the shared check), [`ClusterError::ZeroRow`].
pub fn normalised_rows(features: &Tensor) -> Result<Array2<f64>, ClusterError> {
    let n = check_rows(features, None, None, &[])? as usize;
    let d = features.size()[1] as usize;
    let flat: Vec<f64> = Vec::try_from(
        &features
            .f_to_device(tch::Device::Cpu)?
            .f_to_kind(Kind::Double)?
            .f_contiguous()?
            .f_view([-1])?,
    )?;
    let mut rows = Array2::from_shape_vec((n, d), flat).expect("n * d values");
    for (i, mut row) in rows.rows_mut().into_iter().enumerate() {
        let norm = row.dot(&row).sqrt();
        if norm == 0.0 {
            return Err(ClusterError::ZeroRow { row: i });
        }
        row /= norm;
    }
    Ok(rows)
}

/// The number of distinct rows of `rows` (exact equality of the values, as after
/// [`normalised_rows`]): how many different points a clustering or a map has to work with.
pub fn distinct_rows(rows: &Array2<f64>) -> usize {
    let mut keys: Vec<Vec<u64>> = rows
        .rows()
        .into_iter()
        // +0.0 for -0.0, so equal values are equal keys.
        .map(|r| r.iter().map(|v| (v + 0.0).to_bits()).collect())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.len()
}

/// k-means of `features` `[N, D]` (any float kind; L2-normalised here) into `k` clusters with
/// `cfg`'s restarts, iterations, tolerance and seed (`cfg.k` is ignored). Deterministic for a
/// seed, whatever the thread count (linfa parallelises only the per-row assignment).
///
/// # Errors
/// As [`normalised_rows`]; [`ClusterError::K`] for `k` of 0 or above N;
/// [`ClusterError::TooFewDistinct`] for `k` above the number of distinct rows;
/// [`ClusterError::Setting`] for zero restarts or iterations or a bad tolerance.
pub fn kmeans(features: &Tensor, k: usize, cfg: &ClusterConfig) -> Result<KMeansFit, ClusterError> {
    check_settings(cfg)?;
    let rows = normalised_rows(features)?;
    check_k(&rows, k)?;
    kmeans_rows(rows, k, cfg)
}

/// `k` between 1 and the number of distinct rows of `rows`.
fn check_k(rows: &Array2<f64>, k: usize) -> Result<(), ClusterError> {
    let n = rows.nrows();
    if k == 0 || k > n {
        return Err(ClusterError::K { k, n });
    }
    let distinct = distinct_rows(rows);
    if k > distinct {
        return Err(ClusterError::TooFewDistinct { k, distinct, n });
    }
    Ok(())
}

fn check_settings(cfg: &ClusterConfig) -> Result<(), ClusterError> {
    if cfg.restarts == 0 {
        return Err(ClusterError::Setting(
            "k-means restarts must be at least 1".into(),
        ));
    }
    if cfg.max_iterations == 0 {
        return Err(ClusterError::Setting(
            "k-means iterations must be at least 1".into(),
        ));
    }
    if !(cfg.tolerance.is_finite() && cfg.tolerance >= 0.0) {
        return Err(ClusterError::Setting(format!(
            "k-means tolerance must be finite and >= 0, got {}",
            cfg.tolerance
        )));
    }
    Ok(())
}

fn kmeans_rows(
    rows: Array2<f64>,
    k: usize,
    cfg: &ClusterConfig,
) -> Result<KMeansFit, ClusterError> {
    let data = DatasetBase::from(rows);
    let model = KMeans::params_with_rng(k, Xoshiro256Plus::seed_from_u64(cfg.seed))
        .n_runs(cfg.restarts)
        .max_n_iterations(cfg.max_iterations)
        .tolerance(cfg.tolerance)
        .init_method(KMeansInit::KMeansPlusPlus)
        .fit(&data)
        .map_err(|e| ClusterError::KMeans(e.to_string()))?;
    // linfa keeps the best restart's centroids; assign every row to them again.
    let assignments = model.predict(data.records()).to_vec();
    Ok(KMeansFit {
        assignments,
        inertia: model.inertia(),
    })
}

/// k-means of `features` `[N, D]` (L2-normalised here) with `k = cfg.k` or the number of
/// classes in `labels` `[N]` (any integer kind), scored against `labels`.
///
/// # Errors
/// Every check runs before clustering: [`ClusterError::Features`] (the shared check of
/// features and labels), [`ClusterError::ZeroRow`],
/// [`ClusterError::OneClass`] (fewer than two classes), [`ClusterError::K`] (k of 0 or above
/// N), [`ClusterError::TooFewDistinct`] (k above the distinct rows), [`ClusterError::Setting`].
pub fn cluster_eval(
    features: &Tensor,
    labels: &Tensor,
    cfg: &ClusterConfig,
) -> Result<ClusterReport, ClusterError> {
    check_settings(cfg)?;
    check_rows(features, Some(labels), None, &[])?;
    let rows = normalised_rows(features)?;
    let n = rows.nrows();
    let classes: Vec<i64> = Vec::try_from(&labels.f_to_kind(Kind::Int64)?.f_contiguous()?)?;
    let mut distinct = classes.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 2 {
        return Err(ClusterError::OneClass(distinct.len()));
    }
    let k = cfg.k.unwrap_or(distinct.len());
    check_k(&rows, k)?;
    let fit = kmeans_rows(rows, k, cfg)?;
    let clusters: Vec<i64> = fit.assignments.iter().map(|&c| c as i64).collect();
    let table = Contingency::new(&classes, &clusters)?;
    Ok(ClusterReport {
        n_images: n,
        n_classes: distinct.len(),
        k,
        nonempty_clusters: table.n_clusters(),
        restarts: cfg.restarts,
        seed: cfg.seed,
        inertia: fit.inertia,
        nmi: table.nmi(),
        ari: table.ari(),
        purity: table.purity(),
        hungarian_accuracy: table.hungarian_accuracy(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three tight groups of directions in 3-D, 4 rows each, with labels.
    fn blobs() -> (Tensor, Tensor) {
        let centres = [[1.0f32, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for (c, centre) in centres.iter().enumerate() {
            for j in 0..4 {
                let wobble = 0.02 * j as f32;
                rows.extend(centre.iter().map(|v| v * (1.0 + j as f32) + wobble));
                labels.push(c as i64);
            }
        }
        (
            Tensor::from_slice(&rows).view([12, 3]),
            Tensor::from_slice(&labels),
        )
    }

    #[test]
    fn separable_groups_are_recovered_exactly() {
        let (x, y) = blobs();
        let r = cluster_eval(&x, &y, &ClusterConfig::default()).unwrap();
        assert_eq!((r.k, r.n_classes, r.n_images), (3, 3, 12));
        assert!((r.nmi - 1.0).abs() < 1e-12, "{r:?}");
        assert_eq!((r.ari, r.purity, r.hungarian_accuracy), (1.0, 1.0, 1.0));
        // The same seed gives the same result.
        let again = kmeans(&x, 3, &ClusterConfig::default()).unwrap();
        let once = kmeans(&x, 3, &ClusterConfig::default()).unwrap();
        assert_eq!(again.assignments, once.assignments);
    }

    #[test]
    fn bad_input_is_refused_before_clustering() {
        let (x, y) = blobs();
        let cfg = ClusterConfig::default();
        let mut nan = Vec::<f32>::try_from(&x.view([-1])).unwrap();
        nan[7] = f32::NAN;
        let nan = Tensor::from_slice(&nan).view([12, 3]);
        assert!(matches!(
            cluster_eval(&nan, &y, &cfg),
            Err(ClusterError::Features(FeaturesError::NonFinite {
                first: 2,
                ..
            }))
        ));
        let one = Tensor::zeros([12], (Kind::Int64, tch::Device::Cpu));
        assert!(matches!(
            cluster_eval(&x, &one, &cfg),
            Err(ClusterError::OneClass(1))
        ));
        let big = ClusterConfig {
            k: Some(13),
            ..cfg.clone()
        };
        let err = cluster_eval(&x, &y, &big).unwrap_err();
        assert!(matches!(err, ClusterError::K { k: 13, n: 12 }), "{err}");
        assert!(err.to_string().contains("k = 13"), "{err}");
        let zero = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
        assert!(matches!(
            kmeans(&zero, 1, &cfg),
            Err(ClusterError::ZeroRow { row: 0 })
        ));
        assert!(matches!(
            cluster_eval(&x, &y.narrow(0, 0, 5), &cfg),
            Err(ClusterError::Features(FeaturesError::Shape(_)))
        ));
        let no_restarts = ClusterConfig {
            restarts: 0,
            ..cfg.clone()
        };
        assert!(matches!(
            cluster_eval(&x, &y, &no_restarts),
            Err(ClusterError::Setting(_))
        ));
        let flat = Tensor::from_slice(&[1.0f32, 2.0]);
        assert!(matches!(
            cluster_eval(&flat, &y, &cfg),
            Err(ClusterError::Features(FeaturesError::Shape(_)))
        ));
    }

    /// Identical rows (shared/cases/map-tsne-identical-rows-nan's sibling): k-means cannot
    /// make more clusters than there are distinct points, so k above them is refused before
    /// clustering; k up to them works on duplicated rows.
    #[test]
    fn more_clusters_than_distinct_rows_are_refused() {
        let same = Tensor::ones([40, 16], (Kind::Float, tch::Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1]).repeat([20]);
        let err = cluster_eval(&same, &y, &ClusterConfig::default()).unwrap_err();
        assert!(
            matches!(
                err,
                ClusterError::TooFewDistinct {
                    k: 2,
                    distinct: 1,
                    n: 40
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("nothing to cluster"), "{err}");
        // Two directions, twenty copies each (one of them at another length): 2 clusters fit.
        let a = Tensor::from_slice(&[1.0f32, 0.0])
            .view([1, 2])
            .repeat([20, 1]);
        let b = Tensor::from_slice(&[0.0f32, 2.0])
            .view([1, 2])
            .repeat([20, 1]);
        let two = Tensor::cat(&[a, b.shallow_clone() * 3.0], 0);
        assert_eq!(distinct_rows(&normalised_rows(&two).unwrap()), 2);
        let labels = Tensor::cat(
            &[
                y.zeros_like().narrow(0, 0, 20),
                y.ones_like().narrow(0, 0, 20),
            ],
            0,
        );
        let r = cluster_eval(&two, &labels, &ClusterConfig::default()).unwrap();
        assert_eq!((r.k, r.nonempty_clusters, r.purity), (2, 2, 1.0));
        assert!(matches!(
            kmeans(&two, 3, &ClusterConfig::default()),
            Err(ClusterError::TooFewDistinct {
                k: 3,
                distinct: 2,
                ..
            })
        ));
    }
}
