"""Reference statistics for crates/data/src/masking.rs (iBOT's block masks of DINOv2).

Written from reading `dinov2/data/masking.py` (MaskingGenerator), `dinov2/data/collate.py`
(collate_data_and_cast) and `dinov2/train/train.py` (how the generator is built), not copied:

- The generator of a g x g patch grid grows a boolean mask by rectangles until it holds the
  requested number of patches: each growth step tries up to 10 rectangles of area
  uniform(4, budget) (budget = min(remaining, max_num_patches)) and aspect exp(uniform(log 0.3,
  log 1/0.3)), sides h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect)); a rectangle
  strictly smaller than the grid on both sides is placed at a uniform top-left corner, and is
  set when it adds between 1 and budget new patches; the step stops at the first one that adds
  any. A step that adds nothing ends the mask. max_num_patches = 0.5 * size // patch * size //
  patch (Python precedence).
- The batch: of the n = 2B global crops, int(n * p) are masked; the ratio range is cut by
  torch.linspace(min, max, n_masked + 1) (float32); masked crop i asks for int(N * uniform(r_i,
  r_{i+1})) patches; the list (masked crops first, then empty masks) is shuffled.

The randomness is Python's `random` (the project's Rust uses its own ChaCha streams), so the
two sides agree in distribution: this script prints summary statistics over many draws, which
the Rust test compares within a few standard errors.

Usage: python ibot_masking_reference.py OUT_JSON SIZE PATCH BATCH N_BATCHES P MIN MAX TARGET N_TARGET
"""
import json
import math
import random
import sys

import numpy as np
import torch


class BlockMasks:
    def __init__(self, grid, max_num_patches, min_num_patches=4, min_aspect=0.3):
        self.g = grid
        self.max_num = max_num_patches
        self.min_num = min_num_patches
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def _step(self, mask, budget):
        added = 0
        for _ in range(10):
            area = random.uniform(self.min_num, budget)
            aspect = math.exp(random.uniform(*self.log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if h < self.g and w < self.g:
                top = random.randint(0, self.g - h)
                left = random.randint(0, self.g - w)
                window = mask[top:top + h, left:left + w]
                new = h * w - int(window.sum())
                if 0 < new <= budget:
                    added += int((~window).sum())
                    window[:] = True
                if added > 0:
                    break
        return added

    def __call__(self, count):
        mask = np.zeros((self.g, self.g), dtype=bool)
        done = 0
        while done < count:
            added = self._step(mask, min(count - done, self.max_num))
            if added == 0:
                break
            done += added
        return mask


def batch_masks(gen, n_crops, p, lo, hi):
    n_masked = int(n_crops * p)
    ratios = torch.linspace(lo, hi, n_masked + 1)
    n = gen.g * gen.g
    masks = []
    for i in range(n_masked):
        masks.append(gen(int(n * random.uniform(ratios[i], ratios[i + 1]))))
    masks += [gen(0) for _ in range(n_masked, n_crops)]
    random.shuffle(masks)
    return masks


def components(mask):
    """4-connected components of a boolean grid."""
    seen = np.zeros_like(mask)
    count = 0
    g = mask.shape[0]
    for i in range(g):
        for j in range(g):
            if mask[i, j] and not seen[i, j]:
                count += 1
                stack = [(i, j)]
                seen[i, j] = True
                while stack:
                    a, b = stack.pop()
                    for da, db in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                        x, y = a + da, b + db
                        if 0 <= x < g and 0 <= y < g and mask[x, y] and not seen[x, y]:
                            seen[x, y] = True
                            stack.append((x, y))
    return count


def shape_stats(mask):
    rows = np.nonzero(mask.any(1))[0]
    cols = np.nonzero(mask.any(0))[0]
    h = rows[-1] - rows[0] + 1
    w = cols[-1] - cols[0] + 1
    return {
        "log_aspect": math.log(h / w),
        "abs_log_aspect": abs(math.log(h / w)),
        "fill": mask.sum() / (h * w),
        "components": components(mask),
    }


def summary(values):
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def main():
    out = sys.argv[1]
    size, patch, batch, n_batches = (int(a) for a in sys.argv[2:6])
    p, lo, hi = (float(a) for a in sys.argv[6:9])
    target, n_target = int(sys.argv[9]), int(sys.argv[10])
    random.seed(0)
    grid = size // patch
    gen = BlockMasks(grid, 0.5 * size // patch * size // patch)
    n = grid * grid
    n_crops = 2 * batch
    masked_flags, view0_flags, ratios = [], [], []
    ranked = [[] for _ in range(int(n_crops * p))]
    shapes = {"log_aspect": [], "abs_log_aspect": [], "fill": [], "components": []}
    for _ in range(n_batches):
        masks = batch_masks(gen, n_crops, p, lo, hi)
        counts = []
        for k, m in enumerate(masks):
            c = int(m.sum())
            masked_flags.append(float(c > 0))
            if c > 0:
                view0_flags.append(float(k < batch))
                ratios.append(c / n)
                counts.append(c)
                for key, val in shape_stats(m).items():
                    shapes[key].append(val)
        counts.sort()
        for j, c in enumerate(counts[: len(ranked)]):
            ranked[j].append(c / n)
    alone = [gen(target) for _ in range(n_target)]
    report = {
        "masked_fraction": summary(masked_flags),
        "masked_in_view0": summary(view0_flags),
        "ratio": summary(ratios),
        "ranked_ratio": [summary(r) for r in ranked],
        "shape": {k: summary(v) for k, v in shapes.items()},
        "alone_count": summary([m.sum() for m in alone]),
        "alone_components": summary([components(m) for m in alone]),
        "max_num_patches": gen.max_num,
    }
    with open(out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
