"""Reference copy-detection scores for crates/eval (tests/copydetect_reference.rs), in numpy.

The whitening of the official `eval_copy_detection.py` written out from its description:
mean of the whitening features; eigen-decomposition of their uncentred second-moment matrix
X^T X / N; eigenvalues below 1e-5 of the largest raised to it; components in decreasing order;
y = diag(lambda^-1/2) V^T (x - mean). Then L2-normalise, cosine similarity, and the rank of each
query's original (its one relevant database row): AP = 1 / rank, cross-checked against
scikit-learn's `average_precision_score`; recall@k = original within the first k.

Cases: whitening on 60 rows wider than D = 8 ("full"), on 5 rows (rank-deficient, "few"), and
none ("none").

Usage: python copydetect_reference.py OUT_DIR
Writes <case>_{q,db,w,orig}.npy, <case>_sims.npy and results.json: {case: {"map", "recall",
"ks", "whiten"}}.
"""

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score

KS = [1, 5]


def whiten_fit(w):
    mean = w.mean(0)
    cov = w.T @ w / w.shape[0]
    d, v = np.linalg.eigh(cov)
    d = np.maximum(d, d.max() * 1e-5)
    idx = np.argsort(d)[::-1]
    d, v = d[idx], v[:, idx]
    return mean, np.diag(d ** -0.5) @ v.T


def score(q, db, orig, w):
    q, db = q.astype(np.float64), db.astype(np.float64)
    if w is not None:
        mean, dvt = whiten_fit(w.astype(np.float64))
        q, db = (q - mean) @ dvt.T, (db - mean) @ dvt.T
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    sims = q @ db.T
    aps, recall = [], np.zeros(len(KS))
    for i, o in enumerate(orig):
        rank = int((sims[i] > sims[i, o]).sum()) + 1
        rel = np.arange(len(db)) == o
        ap = average_precision_score(rel, sims[i])
        assert abs(ap - 1.0 / rank) < 1e-12, (ap, rank)
        aps.append(ap)
        recall += [rank <= k for k in KS]
    return sims, {"map": float(np.mean(aps)), "recall": (recall / len(orig)).tolist(), "ks": KS}


def main(out):
    out = Path(out)
    rng = np.random.default_rng(4)
    db = rng.normal(size=(40, 8)) + np.linspace(0, 3, 8)  # an offset the mean must remove
    orig = rng.integers(0, 40, 15).astype(np.int64)
    # Copies: the original plus strong noise along a few shared directions, which the
    # whitening learns from distractors showing the same nuisance.
    nuisance = rng.normal(size=(3, 8)) * 3
    q = db[orig] + rng.normal(size=(15, 3)) @ nuisance + 0.8 * rng.normal(size=(15, 8))
    w_full = rng.normal(size=(60, 8)) + np.linspace(0, 3, 8) + rng.normal(size=(60, 3)) @ nuisance
    results = {}
    for name, w in (("full", w_full), ("few", w_full[:5]), ("none", None)):
        arrays = {"q": q.astype(np.float32), "db": db.astype(np.float32), "orig": orig}
        if w is not None:
            arrays["w"] = w.astype(np.float32)
        for part, arr in arrays.items():
            np.save(out / f"{name}_{part}.npy", arr)
        # Scores from the float32 inputs the Rust side reads.
        sims, res = score(arrays["q"], arrays["db"], orig, arrays.get("w"))
        np.save(out / f"{name}_sims.npy", sims)
        res["whiten"] = w is not None
        results[name] = res
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
