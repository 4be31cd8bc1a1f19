//! Room `space`: the shape of the feature space without a classifier: clusters scored against
//! the classes, and a 2-D map (t-SNE or PCA) written as coordinates and drawn as a picture.

/// Clusters without labels: seeded k-means on L2-normalised features, scored against the
/// classes (NMI, ARI, purity, Hungarian accuracy).
pub mod cluster;
/// Scores of a clustering against the classes, from one contingency table.
pub mod cluster_metrics;
/// A 2-D map of the feature space: deterministic Barnes–Hut t-SNE or PCA.
pub mod map;
/// The 2-D map's coordinates as `.npy` and CSV.
pub mod map_output;
/// The 2-D map drawn as a PNG scatter plot coloured by class, with a legend.
pub mod map_plot;
