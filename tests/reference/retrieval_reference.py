"""Reference retrieval scores for crates/eval (tests/retrieval_reference.rs), from scikit-learn.

Per query: cosine similarity to every gallery image (the query itself left out in
leave-one-out), relevance = same label, `sklearn.metrics.average_precision_score` (random
float features, so no ties) and recall@k (a relevant image in the first k). Queries with no
relevant image are left out. mAP and recall are means over the scored queries.

Cases: a hand case written out below, leave-one-out on 60 random features of 4 classes, and a
query/gallery split with a query class absent from the gallery.

Usage: python retrieval_reference.py OUT_DIR
Writes <case>_{qx,qy,gx,gy}.npy and results.json: {case: {"loo", "ks", "map", "recall",
"n_queries", "skipped"}}.
"""

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score

KS = [1, 5, 10]


def score(qx, qy, gx, gy, loo):
    qn = qx / np.linalg.norm(qx, axis=1, keepdims=True)
    gn = gx / np.linalg.norm(gx, axis=1, keepdims=True)
    sims = qn.astype(np.float64) @ gn.astype(np.float64).T
    aps, recall, skipped = [], np.zeros(len(KS)), 0
    for i in range(len(qx)):
        keep = np.ones(len(gx), bool)
        if loo:
            keep[i] = False
        s, rel = sims[i][keep], gy[keep] == qy[i]
        if not rel.any():
            skipped += 1
            continue
        aps.append(average_precision_score(rel, s))
        first = np.nonzero(rel[np.argsort(-s, kind="stable")])[0][0]
        recall += [first < k for k in KS]
    return {
        "loo": loo,
        "ks": KS,
        "map": float(np.mean(aps)),
        "recall": (recall / len(aps)).tolist(),
        "n_queries": len(aps),
        "skipped": skipped,
    }


def main(out):
    out = Path(out)
    rng = np.random.default_rng(19)
    results = {}

    def case(name, qx, qy, gx, gy, loo):
        for part, arr in (("qx", qx), ("qy", qy), ("gx", gx), ("gy", gy)):
            np.save(out / f"{name}_{part}.npy", arr)
        results[name] = score(qx, qy, gx, gy, loo)

    # Hand case: query along x; gallery at angles 10, 20, 50, 80 degrees with labels 0, 1, 0, 1.
    # Ranking: 0 (rel), 1, 2 (rel), 3: AP = (1/1 + 2/3) / 2 = 0.8333...
    angles = np.deg2rad([10.0, 20.0, 50.0, 80.0])
    gx = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    hand = score(np.array([[1.0, 0.0]], np.float32), np.array([0]), gx, np.array([0, 1, 0, 1]), False)
    assert abs(hand["map"] - (1 + 2 / 3) / 2) < 1e-12, hand
    case("hand", np.array([[1.0, 0.0]], np.float32), np.array([0], np.int64), gx,
         np.array([0, 1, 0, 1], np.int64), False)
    # Leave-one-out: 60 features of 4 classes around random centres.
    centres = rng.normal(size=(4, 16))
    y = rng.integers(0, 4, 60).astype(np.int64)
    x = (centres[y] + 1.2 * rng.normal(size=(60, 16))).astype(np.float32)
    case("loo", x, y, x, y, True)
    # Query / gallery: class 5 of the queries has no gallery image.
    gy = rng.integers(0, 4, 80).astype(np.int64)
    gx = (centres[gy] + 1.2 * rng.normal(size=(80, 16))).astype(np.float32)
    qy = np.concatenate([rng.integers(0, 4, 25), [5, 5]]).astype(np.int64)
    qx = (np.concatenate([centres, rng.normal(size=(2, 16))])[np.minimum(qy, 4)]
          + 1.2 * rng.normal(size=(27, 16))).astype(np.float32)
    case("split", qx, qy, gx, gy, False)
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
