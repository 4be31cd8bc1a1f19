//! Agreement of a clustering with the true classes: normalised mutual information, adjusted
//! Rand index, purity and Hungarian-matched accuracy. Each follows scikit-learn's definition
//! (`sklearn.metrics.normalized_mutual_info_score` with the arithmetic mean,
//! `adjusted_rand_score`), checked against it by `tests/reference/cluster_reference.py`; the
//! Hungarian accuracy is the usual one of deep-clustering papers (the best one-to-one map from
//! clusters to classes, solved by Kuhn–Munkres).
//!
//! All work on a [`Contingency`] table built once from the two labellings.
//!
// Full paths: rustdoc resolves these from the parent module, as `mod` has an outer doc too.
//! [`Contingency`]: crate::space::cluster_metrics::Contingency

use crate::space::cluster::ClusterError;
use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

/// Counts `n[c][k]` of items of class `c` put in cluster `k`, over the classes and clusters
/// that occur (labels are mapped to dense indices in sorted order, as scikit-learn's
/// `contingency_matrix` does; absent ids take no row or column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contingency {
    /// `[classes][clusters]` counts.
    pub counts: Vec<Vec<u64>>,
    /// Total number of items.
    pub n: u64,
}

impl Contingency {
    /// The table of `classes` (true labels) against `clusters` (predicted labels), one pair per
    /// item.
    ///
    /// # Errors
    /// [`ClusterError::Length`] when the lengths differ, [`ClusterError::NoLabels`] when both are
    /// empty.
    pub fn new(classes: &[i64], clusters: &[i64]) -> Result<Self, ClusterError> {
        if classes.len() != clusters.len() {
            return Err(ClusterError::Length {
                classes: classes.len(),
                clusters: clusters.len(),
            });
        }
        if classes.is_empty() {
            return Err(ClusterError::NoLabels);
        }
        let dense = |labels: &[i64]| {
            let mut ids = labels.to_vec();
            ids.sort_unstable();
            ids.dedup();
            let index: Vec<usize> = labels
                .iter()
                .map(|l| ids.binary_search(l).expect("label is in its own id list"))
                .collect();
            (ids.len(), index)
        };
        let (n_classes, class_index) = dense(classes);
        let (n_clusters, cluster_index) = dense(clusters);
        let mut counts = vec![vec![0u64; n_clusters]; n_classes];
        for (&c, &k) in class_index.iter().zip(&cluster_index) {
            counts[c][k] += 1;
        }
        Ok(Self {
            counts,
            n: classes.len() as u64,
        })
    }

    /// Number of distinct classes (rows).
    pub fn n_classes(&self) -> usize {
        self.counts.len()
    }

    /// Number of distinct clusters (columns).
    pub fn n_clusters(&self) -> usize {
        self.counts.first().map_or(0, Vec::len)
    }

    fn row_sums(&self) -> Vec<u64> {
        self.counts.iter().map(|r| r.iter().sum()).collect()
    }

    fn column_sums(&self) -> Vec<u64> {
        (0..self.n_clusters())
            .map(|k| self.counts.iter().map(|r| r[k]).sum())
            .collect()
    }

    /// Normalised mutual information `MI / mean(H(classes), H(clusters))` with the arithmetic
    /// mean, in [0, 1] (scikit-learn's default `average_method="arithmetic"`). As scikit-learn:
    /// 1 when both labellings have a single label, 0 when only one of them does.
    pub fn nmi(&self) -> f64 {
        let (rows, cols) = (self.n_classes(), self.n_clusters());
        if rows == cols && rows <= 1 {
            return 1.0;
        }
        let n = self.n as f64;
        let mi = self.mutual_information();
        if mi == 0.0 {
            return 0.0;
        }
        let h_classes = entropy(&self.row_sums(), n);
        let h_clusters = entropy(&self.column_sums(), n);
        let normaliser = 0.5 * (h_classes + h_clusters);
        mi / normaliser
    }

    /// Mutual information in nats, clipped at 0 as scikit-learn does.
    pub fn mutual_information(&self) -> f64 {
        let n = self.n as f64;
        let (a, b) = (self.row_sums(), self.column_sums());
        let mut mi = 0.0;
        for (c, row) in self.counts.iter().enumerate() {
            for (k, &count) in row.iter().enumerate() {
                if count == 0 {
                    continue;
                }
                let p = count as f64 / n;
                mi += p * (count as f64 * n / (a[c] as f64 * b[k] as f64)).ln();
            }
        }
        mi.max(0.0)
    }

    /// Adjusted Rand index in [-0.5, 1] (1: identical partitions, about 0: chance), from the
    /// pair confusion matrix in exact integer arithmetic, as `sklearn.metrics.adjusted_rand_score`.
    pub fn ari(&self) -> f64 {
        let n = self.n as i128;
        let sum_squares: i128 = self
            .counts
            .iter()
            .flatten()
            .map(|&c| (c as i128) * (c as i128))
            .sum();
        let squares = |sums: Vec<u64>| -> i128 { sums.iter().map(|&s| (s as i128).pow(2)).sum() };
        let (rows, cols) = (squares(self.row_sums()), squares(self.column_sums()));
        // Ordered pairs (scikit-learn's `pair_confusion_matrix`): same class and cluster,
        // same cluster only, same class only, neither.
        let tp = sum_squares - n;
        let fp = cols - sum_squares;
        let fn_ = rows - sum_squares;
        let tn = n * n - fp - fn_ - sum_squares;
        if fn_ == 0 && fp == 0 {
            return 1.0;
        }
        let num = 2 * (tp * tn - fn_ * fp);
        let den = (tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn);
        num as f64 / den as f64
    }

    /// Purity in [0, 1]: the fraction of items whose cluster's majority class is their class
    /// (each cluster votes for its most frequent class; several clusters may pick one class).
    pub fn purity(&self) -> f64 {
        let hits: u64 = (0..self.n_clusters())
            .map(|k| self.counts.iter().map(|r| r[k]).max().unwrap_or(0))
            .sum();
        hits as f64 / self.n as f64
    }

    /// Hungarian-matched accuracy in [0, 1]: the fraction of items whose cluster is mapped to
    /// their class by the best one-to-one map from clusters to classes (Kuhn–Munkres on the
    /// counts; with more clusters than classes the extra clusters match nothing, and the other
    /// way round).
    pub fn hungarian_accuracy(&self) -> f64 {
        self.hungarian_matching().1 as f64 / self.n as f64
    }

    /// The best one-to-one map: for every class row, the matched cluster column (`None` when
    /// there are more classes than clusters and the class is left out), and the number of
    /// items on the matched pairs.
    pub fn hungarian_matching(&self) -> (Vec<Option<usize>>, u64) {
        let (rows, cols) = (self.n_classes(), self.n_clusters());
        let weight = |c: usize, k: usize| self.counts[c][k] as i64;
        // kuhn_munkres needs no more rows than columns.
        if rows <= cols {
            let m = Matrix::from_fn(rows, cols, |(c, k)| weight(c, k));
            let (total, assign) = kuhn_munkres(&m);
            (assign.into_iter().map(Some).collect(), total as u64)
        } else {
            let m = Matrix::from_fn(cols, rows, |(k, c)| weight(c, k));
            let (total, assign) = kuhn_munkres(&m);
            let mut by_class = vec![None; rows];
            for (k, c) in assign.into_iter().enumerate() {
                by_class[c] = Some(k);
            }
            (by_class, total as u64)
        }
    }
}

/// Entropy in nats of a labelling given its label counts.
fn entropy(counts: &[u64], n: f64) -> f64 {
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relabelled_partition_scores_one() {
        let classes = [0, 0, 1, 1, 2, 2];
        let clusters = [5, 5, 3, 3, 9, 9];
        let t = Contingency::new(&classes, &clusters).unwrap();
        assert!((t.nmi() - 1.0).abs() < 1e-12);
        assert_eq!(t.ari(), 1.0);
        assert_eq!(t.purity(), 1.0);
        assert_eq!(t.hungarian_accuracy(), 1.0);
    }

    #[test]
    fn hand_case() {
        // Classes 0,0,0,1,1,1 in clusters 0,0,1,1,1,1: the best map 0->0, 1->1 gets 5 of 6;
        // purity: cluster 0 votes class 0 (2), cluster 1 votes class 1 (3) = 5/6.
        let t = Contingency::new(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 1, 1]).unwrap();
        assert_eq!(t.counts, vec![vec![2, 1], vec![0, 3]]);
        assert!((t.hungarian_accuracy() - 5.0 / 6.0).abs() < 1e-12);
        assert!((t.purity() - 5.0 / 6.0).abs() < 1e-12);
        // Pairs: ARI of this table by the textbook formula (sum C(n_ij,2) = 1 + 3 = 4,
        // rows 3 + 3 = 6, columns 1 + 6 = 7, C(6,2) = 15): (4 - 42/15) / (6.5 - 42/15).
        let want = (4.0 - 42.0 / 15.0) / (6.5 - 42.0 / 15.0);
        assert!((t.ari() - want).abs() < 1e-12, "{} vs {want}", t.ari());
    }

    #[test]
    fn more_classes_than_clusters_and_back() {
        let classes = [0, 1, 2, 2, 2, 1];
        let clusters = [0, 0, 1, 1, 1, 0];
        let t = Contingency::new(&classes, &clusters).unwrap();
        let (map, hits) = t.hungarian_matching();
        assert_eq!(hits, 5);
        assert_eq!(map, vec![None, Some(0), Some(1)]);
        let swapped = Contingency::new(&clusters, &classes).unwrap();
        assert_eq!(swapped.hungarian_matching().1, 5);
    }

    #[test]
    fn single_labels_follow_scikit_learn() {
        let one = Contingency::new(&[1, 1, 1], &[0, 0, 0]).unwrap();
        assert_eq!(one.nmi(), 1.0);
        assert_eq!(one.ari(), 1.0);
        let split = Contingency::new(&[1, 1, 1, 1], &[0, 0, 1, 1]).unwrap();
        assert_eq!(split.nmi(), 0.0);
    }

    #[test]
    fn bad_input() {
        assert!(matches!(
            Contingency::new(&[0, 1], &[0]),
            Err(ClusterError::Length {
                classes: 2,
                clusters: 1
            })
        ));
        assert!(matches!(
            Contingency::new(&[], &[]),
            Err(ClusterError::NoLabels)
        ));
    }
}
