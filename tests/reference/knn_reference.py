"""Reference weighted k-NN for crates/eval (tests/knn_reference.rs).

Re-implements the algorithm of the official DINO `eval_knn.py` (`knn_classifier`) in PyTorch:
cosine similarity to every train feature, top-k, votes exp(sim / T) accumulated per class through
a one-hot matrix, classes sorted by vote, top-1 and top-5 (first min(5, k) ranks) counted.
Kept from the official code: 1000 classes in the vote matrix and test chunks of N // 100 rows.
Changed, and said so: a chunk has at least one row (the official loop has step 0 below 100
test images) and the class sort is stable (ties to the lower class index; the official sort
leaves ties unspecified). And a class that received no vote is never a hit (the official code
counts it when it lands in the first min(5, k) ranks, e.g. k < 5 or neighbours spanning fewer
than five classes; facebookresearch/dino#89). `top5_official` keeps the official count so the
test can show the two differ.

Usage: python knn_reference.py OUT_DIR
Writes per case <case>_{train_x,train_y,test_x,test_y}.npy (raw, unnormalised features) and
results.json: {case: {"ks": [...], "T": t, "top1": [...], "top5": [...], "pred_k": k,
"predictions": [...]}}.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

NUM_CLASSES = 1000  # official knn_classifier default


def knn_classifier(train_x, train_y, test_x, test_y, k, T):
    bank = train_x.t()
    n_test = test_y.shape[0]
    step = max(1, n_test // 100)
    hits1, hits5, hits5_official, preds = 0, 0, 0, []
    for start in range(0, n_test, step):
        x = test_x[start : start + step]
        y = test_y[start : start + step]
        b = y.shape[0]
        sims, idx = (x @ bank).topk(k, dim=1, largest=True, sorted=True)
        nb_labels = torch.gather(train_y.view(1, -1).expand(b, -1), 1, idx)
        one_hot = torch.zeros(b * k, NUM_CLASSES)
        one_hot.scatter_(1, nb_labels.reshape(-1, 1), 1)
        weights = (sims / T).exp()
        votes = (one_hot.view(b, k, NUM_CLASSES) * weights.view(b, k, 1)).sum(1)
        _, order = votes.sort(dim=1, descending=True, stable=True)
        correct = order.eq(y.view(-1, 1))
        hits5_official += correct[:, : min(5, k)].sum().item()
        voted = votes.gather(1, y.view(-1, 1)) > 0
        correct = correct & voted
        hits1 += correct[:, :1].sum().item()
        hits5 += correct[:, : min(5, k)].sum().item()
        preds += order[:, 0].tolist()
    pct = lambda h: h * 100.0 / n_test
    return pct(hits1), pct(hits5), preds, pct(hits5_official)


def make_case(gen, n_train, n_test, dim, classes, spread):
    centres = torch.randn(classes, dim, generator=gen)
    train_y = torch.randint(0, classes, (n_train,), generator=gen)
    test_y = torch.randint(0, classes, (n_test,), generator=gen)
    train_x = centres[train_y] + spread * torch.randn(n_train, dim, generator=gen)
    test_x = centres[test_y] + spread * torch.randn(n_test, dim, generator=gen)
    return train_x.float(), train_y.long(), test_x.float(), test_y.long()


CASES = {
    # name: (n_train, n_test, dim, classes, spread, ks, T, k for per-sample predictions)
    "main": (500, 300, 7, 10, 1.0, [1, 3, 10, 20, 100, 200], 0.07, 20),
    "tiny": (60, 7, 5, 3, 1.5, [1, 2, 5, 20, 40, 60], 0.07, 40),
    "warm": (400, 250, 16, 10, 2.0, [5, 20, 200], 0.5, 200),
}


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    results = {}
    for name, (n_train, n_test, dim, classes, spread, ks, T, pred_k) in CASES.items():
        train_x, train_y, test_x, test_y = make_case(gen, n_train, n_test, dim, classes, spread)
        for suffix, t in [("train_x", train_x), ("train_y", train_y), ("test_x", test_x), ("test_y", test_y)]:
            np.save(out / f"{name}_{suffix}.npy", t.numpy())
        # eval_knn.py normalises the extracted features before the classifier.
        tr = F.normalize(train_x, dim=1, p=2)
        te = F.normalize(test_x, dim=1, p=2)
        top1, top5, top5_official = [], [], []
        for k in ks:
            a, b, _, c = knn_classifier(tr, train_y, te, test_y, k, T)
            top1.append(a)
            top5.append(b)
            top5_official.append(c)
        _, _, preds, _ = knn_classifier(tr, train_y, te, test_y, pred_k, T)
        results[name] = {"ks": ks, "T": T, "top1": top1, "top5": top5,
                         "top5_official": top5_official, "pred_k": pred_k, "predictions": preds}
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
