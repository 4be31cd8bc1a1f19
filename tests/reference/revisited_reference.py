"""Reference scores of the revisited Oxford/Paris protocol for crates/eval/src/revisited.rs.

Written from the protocol's description (Radenovic et al., CVPR 2018, and the revisitop
evaluation's documented rules), in numpy: per query the database is ranked by cosine similarity
(stable order for ties); under each protocol (Easy: positives easy, ignored junk+hard; Medium:
positives easy+hard, ignored junk; Hard: positives hard, ignored junk+easy) the ignored images
are dropped from the ranking; AP is the trapezoid area under the precision/recall steps with
precision 1 before the first image; mP@k uses k' = min(k, 1-based rank of the last positive);
queries without positives are left out.

Cases: a hand case (2 queries, 6 database images, every index kind) and a random one (5
queries, 40 images, 8-D features). Each writes <case>_gnd.pkl (the revisitop pickle layout:
dict of imlist, qimlist, gnd = [{easy, hard, junk, bbx}]), <case>_db.npy, <case>_q.npy.

Usage: python revisited_reference.py OUT_DIR  -> results.json {case: {E|M|H: {map, mp}}}
"""
import json
import pickle
import sys
from pathlib import Path

import numpy as np

KS = [1, 5, 10]


def trapezoid_ap(pos, n_pos):
    area, prev_recall, prev_prec = 0.0, 0.0, 1.0
    for hits, rank in enumerate(pos, start=1):
        # left edge: precision just before this positive; right edge: precision at it
        left = 1.0 if rank == 0 else (hits - 1) / rank
        right = hits / (rank + 1)
        area += (left + right) / 2 / n_pos
    return area


def protocol(order, ok, junk):
    # an index both positive and ignored counts as a positive at the position the ignored
    # images before it leave (never happens in the real ground truth)
    pos, shift = [], 0
    for p, i in enumerate(order):
        if i in ok:
            pos.append(p - shift)
        if i in junk:
            shift += 1
    return pos


def score(db, q, gnd):
    dbn = db / np.linalg.norm(db, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = qn.astype(np.float64) @ dbn.astype(np.float64).T
    out = {}
    rules = {"E": lambda g: (set(g["easy"]), set(g["junk"]) | set(g["hard"])),
             "M": lambda g: (set(g["easy"]) | set(g["hard"]), set(g["junk"])),
             "H": lambda g: (set(g["hard"]), set(g["junk"]) | set(g["easy"]))}
    for name, rule in rules.items():
        aps, mps = [], []
        for row, g in zip(sims, gnd):
            ok, junk = rule(g)
            if not ok:
                continue
            order = np.argsort(-row, kind="stable")
            pos = protocol(order, ok, junk)
            aps.append(trapezoid_ap(pos, len(ok)))
            last = pos[-1] + 1
            mps.append([sum(p < min(k, last) for p in pos) / min(k, last) for k in KS])
        out[name] = {"map": float(np.mean(aps)), "mp": np.mean(mps, axis=0).tolist(),
                     "n": len(aps)}
    return out


def write(out, case, db, q, gnd):
    np.save(out / f"{case}_db.npy", db.astype(np.float32))
    np.save(out / f"{case}_q.npy", q.astype(np.float32))
    with open(out / f"{case}_gnd.pkl", "wb") as f:
        pickle.dump({"imlist": [f"db{i}" for i in range(len(db))],
                     "qimlist": [f"q{i}" for i in range(len(q))], "gnd": gnd}, f)
    return score(db.astype(np.float32), q.astype(np.float32), gnd)


def main(out):
    out = Path(out)
    results = {}
    # Hand case: database along known directions so the ranking is fixed.
    angles = np.array([0.0, 0.2, 0.5, 0.9, 1.4, 2.0])
    db = np.stack([np.cos(angles), np.sin(angles), np.zeros(6)], axis=1)
    q = np.array([[1.0, 0.0, 0.0], [np.cos(1.3), np.sin(1.3), 0.0]])
    gnd = [{"easy": [1, 3], "hard": [4], "junk": [0], "bbx": [0.0, 0.0, 10.0, 10.0]},
           {"easy": [], "hard": [5, 2], "junk": [4], "bbx": [1.0, 2.0, 3.0, 4.0]}]
    results["hand"] = write(out, "hand", db, q, gnd)
    rng = np.random.default_rng(3)
    db, q = rng.normal(size=(40, 8)), rng.normal(size=(5, 8))
    gnd = []
    for _ in range(5):
        idx = rng.permutation(40)
        gnd.append({"easy": idx[:4].tolist(), "hard": idx[4:7].tolist(),
                    "junk": idx[7:9].tolist(), "bbx": [0.0, 0.0, 1.0, 1.0]})
    gnd[4]["hard"] = []  # a query with no hard positive: left out of the Hard protocol
    results["random"] = write(out, "random", db, q, gnd)
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
