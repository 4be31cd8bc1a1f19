"""Reference clustering scores for crates/eval (tests/cluster_reference.rs), from scikit-learn.

Cases of fixed (seeded) class and cluster labellings: balanced, imbalanced, more clusters than
classes, fewer clusters than classes, a near-chance one and an identical-up-to-renaming one.
For each: `normalized_mutual_info_score` (arithmetic mean), `adjusted_rand_score`, purity from
`contingency_matrix` (each cluster's majority class) and the Hungarian-matched accuracy from
`scipy.optimize.linear_sum_assignment` on the contingency table (maximised).

One k-means case: overlapping Gaussian blobs, L2-normalised as dino does, clustered by
`sklearn.cluster.KMeans(init="k-means++", n_init=10)`; its inertia per sample is the bar the
Rust k-means (linfa) must reach, and its scores against the blob labels the bar for ours.

Usage: python cluster_reference.py OUT_DIR
Writes <case>_classes.npy, <case>_clusters.npy (int64), kmeans_x.npy (float32),
kmeans_y.npy and results.json: {"cases": {case: {"nmi", "ari", "purity", "hungarian"}},
"kmeans": {"k", "inertia", "nmi", "ari"}}.
"""

import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix


def scores(classes, clusters):
    table = contingency_matrix(classes, clusters)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {
        "nmi": float(normalized_mutual_info_score(classes, clusters)),
        "ari": float(adjusted_rand_score(classes, clusters)),
        "purity": float(table.max(axis=0).sum() / table.sum()),
        "hungarian": float(table[rows, cols].sum() / table.sum()),
    }


def main(out):
    out = Path(out)
    rng = np.random.default_rng(19)
    cases = {}

    def case(name, classes, clusters):
        classes = np.asarray(classes, dtype=np.int64)
        clusters = np.asarray(clusters, dtype=np.int64)
        np.save(out / f"{name}_classes.npy", classes)
        np.save(out / f"{name}_clusters.npy", clusters)
        cases[name] = scores(classes, clusters)

    # Balanced: 10 classes x 100, clusters = class with 30 % of labels scrambled.
    classes = np.repeat(np.arange(10), 100)
    clusters = classes.copy()
    flip = rng.random(classes.size) < 0.3
    clusters[flip] = rng.integers(0, 10, flip.sum())
    case("balanced", classes, rng.permutation(10)[clusters])
    # Imbalanced classes (sizes 500, 50, 5, ...), noisy clusters.
    sizes = [500, 50, 5, 120, 33]
    classes = np.concatenate([np.full(s, c) for c, s in enumerate(sizes)])
    clusters = np.where(rng.random(classes.size) < 0.6, classes, rng.integers(0, 5, classes.size))
    case("imbalanced", classes, clusters)
    # More clusters (12) than classes (4), sparse cluster ids.
    classes = rng.integers(0, 4, 700)
    clusters = (classes * 3 + rng.integers(0, 3, 700)) * 7 + 2
    clusters[rng.random(700) < 0.2] = 5
    case("more_clusters", classes, clusters)
    # Fewer clusters (3) than classes (8).
    classes = rng.integers(0, 8, 900)
    clusters = np.minimum(classes // 3, 2)
    clusters[rng.random(900) < 0.25] = rng.integers(0, 3, 1)[0]
    case("fewer_clusters", classes, clusters)
    # Chance: independent labels.
    case("chance", rng.integers(0, 6, 2000), rng.integers(0, 6, 2000))
    # Identical up to renaming.
    classes = rng.integers(0, 7, 300)
    case("renamed", classes, (classes + 3) % 7 + 10)

    # k-means: 5 overlapping blobs in 16-D.
    k, per, dim = 5, 80, 16
    centres = rng.normal(size=(k, dim))
    x = np.concatenate([c + 0.8 * rng.normal(size=(per, dim)) for c in centres]).astype(np.float32)
    y = np.repeat(np.arange(k), per).astype(np.int64)
    np.save(out / "kmeans_x.npy", x)
    np.save(out / "kmeans_y.npy", y)
    xn = x.astype(np.float64)
    xn /= np.linalg.norm(xn, axis=1, keepdims=True)
    km = KMeans(n_clusters=k, init="k-means++", n_init=10, random_state=0).fit(xn)
    kmeans = {
        "k": k,
        "inertia": float(km.inertia_ / len(xn)),
        "nmi": float(normalized_mutual_info_score(y, km.labels_)),
        "ari": float(adjusted_rand_score(y, km.labels_)),
    }
    (out / "results.json").write_text(json.dumps({"cases": cases, "kmeans": kmeans}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
