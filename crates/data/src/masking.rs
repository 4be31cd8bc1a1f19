//! iBOT's block-wise patch masks for the student's global crops (DINOv2: `data/masking.py`
//! `MaskingGenerator`, `data/collate.py` `collate_data_and_cast`, set up in `train/train.py`).
//!
//! Per batch of B images, of the 2·B global crops (view-major, as the batch stores them)
//! `n = int(2·B · mask_sample_probability)` are masked: the ratio range `[min, max]` is cut into
//! n equal sub-intervals (`linspace(min, max, n + 1)`), masked crop i draws its patch count as
//! `int(N · uniform(r_i, r_{i+1}))` of the grid's N patches, and the masks are shuffled over
//! the 2·B crops, the other crops getting no masked patch. Each mask is then grown from
//! rectangles of random area and aspect ratio until it holds that many patches.
//!
//! Randomness (the Python code uses the process-wide `random` module): which crop gets which
//! sub-interval comes from one stream per global batch, `rng_for(seed, epoch, step, MaskPlan)`,
//! drawn over all processes' crops of the step (the official collate draws it per process);
//! each crop's patch count and rectangles from one stream per crop, `rng_for(seed, epoch, 2 ·
//! position + view, Mask)` with `position` the image's place in the epoch order. Nothing depends
//! on thread count, on which worker builds what, or on how many processes share the batch.

use rand::{Rng, RngCore};
use rayon::prelude::*;

use crate::rng::{rng_for, ChaCha8Rng, Stream};

/// Smallest rectangle area tried (official `min_num_patches=4`).
const MIN_NUM_PATCHES: f64 = 4.0;
/// Smallest aspect ratio of a rectangle; the largest is its inverse (official `min_aspect=0.3`,
/// `max_aspect = 1 / min_aspect`).
const MIN_ASPECT: f64 = 0.3;
/// Rectangles tried per growth step before giving up on it (official `range(10)`).
const TRIES: usize = 10;

/// The block-mask generator of one patch grid (official `MaskingGenerator`).
#[derive(Debug, Clone, PartialEq)]
pub struct MaskingGenerator {
    height: usize,
    width: usize,
    max_num_patches: f64,
    log_aspect: (f64, f64),
}

impl MaskingGenerator {
    /// A generator for a `height × width` patch grid whose single rectangles cover at most
    /// `max_num_patches` patches.
    pub fn new(height: usize, width: usize, max_num_patches: f64) -> Self {
        Self {
            height,
            width,
            max_num_patches,
            log_aspect: (MIN_ASPECT.ln(), (1.0 / MIN_ASPECT).ln()),
        }
    }

    /// The generator DINOv2 trains with for global crops of `global_size` pixels and patches of
    /// `patch_size` (`train/train.py`): the grid `g = global_size // patch_size` on each side
    /// and `max_num_patches=0.5 * img_size // patch_size * img_size // patch_size`, evaluated
    /// as Python does (left to right, floor divisions on floats): half the grid for sizes that
    /// patch_size divides.
    pub fn for_crops(global_size: usize, patch_size: usize) -> Self {
        let g = global_size / patch_size;
        let (s, p) = (global_size as f64, patch_size as f64);
        let max = ((0.5 * s / p).floor() * s / p).floor();
        Self::new(g, g, max)
    }

    /// Patches in the grid (`N`).
    pub fn num_patches(&self) -> usize {
        self.height * self.width
    }

    /// `(height, width)` of the patch grid.
    pub fn grid(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// A row-major `[height · width]` mask with (about) `num_masking_patches` patches set
    /// (official `__call__`): rectangles are added until the count is reached or a growth step
    /// finds no rectangle that adds a patch within the remaining budget, so it can hold fewer.
    pub fn generate(&self, num_masking_patches: usize, rng: &mut ChaCha8Rng) -> Vec<bool> {
        let mut mask = vec![false; self.num_patches()];
        let mut count = 0usize;
        while count < num_masking_patches {
            let budget = ((num_masking_patches - count) as f64).min(self.max_num_patches);
            let delta = self.grow(&mut mask, budget, rng);
            if delta == 0 {
                break;
            }
            count += delta;
        }
        mask
    }

    /// One growth step (official `_mask`): up to 10 rectangles of area `uniform(4, budget)` and
    /// log-uniform aspect ratio, placed uniformly; the first that fits the grid and adds
    /// between 1 and `budget` new patches is set. Returns the patches added.
    fn grow(&self, mask: &mut [bool], budget: f64, rng: &mut ChaCha8Rng) -> usize {
        let mut delta = 0;
        for _ in 0..TRIES {
            let area = uniform(rng, MIN_NUM_PATCHES, budget);
            let aspect = uniform(rng, self.log_aspect.0, self.log_aspect.1).exp();
            // Python's round: halves to even.
            let h = (area * aspect).sqrt().round_ties_even() as usize;
            let w = (area / aspect).sqrt().round_ties_even() as usize;
            if w < self.width && h < self.height {
                let top = below(rng, self.height - h + 1);
                let left = below(rng, self.width - w + 1);
                let rows = top..top + h;
                let already: usize = rows
                    .clone()
                    .map(|i| mask[i * self.width + left..i * self.width + left + w].iter())
                    .map(|r| r.filter(|&&m| m).count())
                    .sum();
                let new = h * w - already;
                if new > 0 && new as f64 <= budget {
                    for i in rows {
                        for m in &mut mask[i * self.width + left..i * self.width + left + w] {
                            if !*m {
                                *m = true;
                                delta += 1;
                            }
                        }
                    }
                }
                if delta > 0 {
                    break;
                }
            }
        }
        delta
    }
}

/// What the loader needs to mask a batch's global crops (`[ibot]` with the patch grid).
#[derive(Debug, Clone, PartialEq)]
pub struct MaskingOptions {
    /// The block-mask generator of the global crops' patch grid.
    pub generator: MaskingGenerator,
    /// Fraction of the global crops masked (`ibot.mask_sample_probability`).
    pub probability: f64,
    /// Range of the masked fraction (`ibot.mask_ratio_min_max`).
    pub ratio_min_max: [f64; 2],
}

impl MaskingOptions {
    /// The options of a config with iBOT on (`ibot.loss_weight > 0`, a ViT), `None` otherwise.
    pub fn from_config(cfg: &dino_config::Config) -> Option<Self> {
        if !cfg.ibot.enabled() || cfg.model.arch.is_resnet() {
            return None;
        }
        Some(Self {
            generator: MaskingGenerator::for_crops(
                cfg.augmentation.global_crops_size as usize,
                cfg.model.patch_size,
            ),
            probability: cfg.ibot.mask_sample_probability,
            ratio_min_max: cfg.ibot.mask_ratio_min_max,
        })
    }

    /// The patch count each of `n_crops` crops (view-major) is to be masked with (official
    /// `collate_data_and_cast`): `int(n_crops · probability)` crops get sub-interval i of
    /// `linspace(min, max, n + 1)`, assigned to crops by a uniform permutation drawn from
    /// `plan`; each masked crop's count `int(N · uniform(r_i, r_{i+1}))` is drawn from its own
    /// stream, `crop_rng(k)`. 0 for an unmasked crop.
    pub fn patch_counts(
        &self,
        n_crops: usize,
        plan: &mut ChaCha8Rng,
        mut crop_rng: impl FnMut(usize) -> ChaCha8Rng,
    ) -> Vec<usize> {
        let n_masked = (n_crops as f64 * self.probability) as usize;
        let [lo, hi] = self.ratio_min_max;
        // torch.linspace in float32, as the official `probs` (ATen's CPU kernel: from the
        // start up to the middle, from the end after it).
        let steps = n_masked + 1;
        let (lo32, hi32) = (lo as f32, hi as f32);
        let ratio = |i: usize| -> f32 {
            let step = (hi32 - lo32) / n_masked.max(1) as f32;
            if i < steps / 2 {
                lo32 + step * i as f32
            } else {
                hi32 - step * (steps - i - 1) as f32
            }
        };
        let slots = permutation(n_crops, plan);
        let n = self.generator.num_patches() as f32;
        (0..n_crops)
            .map(|k| {
                let i = slots[k];
                if i < n_masked {
                    // float32 as the official tensors: `N * uniform(probs[i], probs[i + 1])`.
                    let (a, b) = (ratio(i), ratio(i + 1));
                    let u = crop_rng(k).random::<f64>() as f32;
                    (n * (a + (b - a) * u)) as usize
                } else {
                    0
                }
            })
            .collect()
    }
}

/// The `[2, B, N]` masks (view-major, row-major grids) of one process's 2·B global crops,
/// drawn in parallel on the current rayon pool.
///
/// `global` lists the epoch-order positions of step `step`'s images over all processes, in the
/// order one process with the whole global batch holds them (G of them); `mine[i]` is the index
/// in `global` of this process's image i (B of them). The plan over the 2·G global crops comes
/// from `rng_for(seed, epoch, step, MaskPlan)`, crop k's count and rectangles from `rng_for(seed,
/// epoch, 2 · position + view, Mask)`, so the masks depend on these values only, never on
/// threads, and the processes' masks together are one process's masks of the global batch (the
/// official collate draws its plan per process: the same distribution, but not this identity).
/// One process: `global` = its positions and `mine` = `0..B`.
pub fn batch_masks(
    m: &MaskingOptions,
    seed: u64,
    epoch: u64,
    step: u64,
    global: &[usize],
    mine: &[usize],
) -> Vec<bool> {
    let (g, bs) = (global.len(), mine.len());
    let crop_stream = |k: usize| {
        let index = 2 * global[k % g] as u64 + (k / g) as u64;
        rng_for(seed, epoch, index, Stream::Mask)
    };
    let mut plan = rng_for(seed, epoch, step, Stream::MaskPlan);
    let counts = m.patch_counts(2 * g, &mut plan, crop_stream);
    // This process's crop k (view k / B, image k % B) is global crop view · G + mine[k % B].
    let global_crop = |k: usize| (k / bs.max(1)) * g + mine[k % bs.max(1)];
    let n = m.generator.num_patches();
    let mut masks = vec![false; 2 * bs * n];
    masks
        .par_chunks_mut(n.max(1))
        .enumerate()
        .for_each(|(k, dst)| {
            let kg = global_crop(k);
            // A masked crop's count was the first draw of its stream; the rectangles follow.
            let mut rng = crop_stream(kg);
            let _ = rng.random::<f64>();
            dst.copy_from_slice(&m.generator.generate(counts[kg], &mut rng));
        });
    masks
}

/// A uniform permutation of `0..n` (Fisher-Yates, as [`crate::loader::epoch_order`]).
fn permutation(n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, below(rng, i + 1));
    }
    p
}

/// Python's `random.uniform(a, b)`: `a + (b − a) · U[0, 1)` (either order of a and b).
fn uniform(rng: &mut ChaCha8Rng, a: f64, b: f64) -> f64 {
    a + (b - a) * rng.random::<f64>()
}

/// A uniform draw in `0..n` (n ≥ 1).
fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    ((rng.next_u64() as u128 * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{rng_for, Stream};

    #[test]
    fn dinov2_generator_sizes() {
        // train/train.py at 224 px: patch 14 → 16×16 grid, max 128; patch 16 → 14×14, max 98.
        let g = MaskingGenerator::for_crops(224, 14);
        assert_eq!((g.grid(), g.max_num_patches), ((16, 16), 128.0));
        let g = MaskingGenerator::for_crops(224, 16);
        assert_eq!((g.grid(), g.max_num_patches), ((14, 14), 98.0));
    }

    #[test]
    fn masks_reach_their_count_within_the_grid() {
        let g = MaskingGenerator::for_crops(224, 16);
        let mut rng = rng_for(0, 0, 0, Stream::Mask);
        assert!(g.generate(0, &mut rng).iter().all(|m| !m));
        for target in [10, 40, 98] {
            let m = g.generate(target, &mut rng);
            let c = m.iter().filter(|&&b| b).count();
            assert!(c <= target && c > 0, "{c} for {target}");
        }
    }
}
