//! Image retrieval with frozen features (paper §4.2.2, official `eval_image_retrieval.py`):
//! every query ranks the gallery by cosine similarity; a gallery image is relevant when it has
//! the query's label. Scored by mean average precision and recall@k.
//!
//! Descriptors as the official code: the CLS token, or the CLS token concatenated with the
//! generalised-mean (GeM, p = 4) pooling of the last block's patch tokens (the descriptor of
//! `eval_copy_detection.py`). Average precision is the plain, non-interpolated one (the mean of
//! the precision at each relevant image's rank, scikit-learn's `average_precision_score` without
//! ties), not the revisited Oxford/Paris trapezoid.

use crate::features::{check_rows, FeaturesError};
use tch::{Device, Kind, Tensor};

/// Errors of [`retrieval_eval`] and the descriptors, raised before ranking.
#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    /// A features tensor is not float `[N, D]` (or patch tokens not `[N, P, D]`).
    #[error("{what} must be a float {want} tensor, got {kind:?} {shape:?}")]
    Shape {
        /// Which input.
        what: &'static str,
        /// The shape expected.
        want: &'static str,
        /// The kind found.
        kind: Kind,
        /// The shape found.
        shape: Vec<i64>,
    },
    /// Features or labels refused by the shared check ([`check_rows`]): wrong kind or shape,
    /// or rows holding NaN or infinities.
    #[error("{what} features: {source}")]
    Features {
        /// Which input.
        what: &'static str,
        /// What the check found.
        source: FeaturesError,
    },
    /// Nothing to query, or nothing to search.
    #[error("the {0} set is empty")]
    Empty(&'static str),
    /// Query and gallery descriptors differ in width.
    #[error("query features have width {query} but gallery features {gallery}: embed both with the same model and descriptor")]
    Width {
        /// Query width.
        query: i64,
        /// Gallery width.
        gallery: i64,
    },
    /// Every gallery descriptor is the same direction: all similarities of a query tie, so its
    /// ranking would be the gallery's index order and the scores would measure that order.
    #[error(
        "all {0} gallery descriptors are identical after L2 normalisation: every query would rank \
         the gallery in index order, so mAP and recall would measure that order, not the \
         features (duplicated images, or a network that maps every image to one point?)"
    )]
    IdenticalGallery(usize),
    /// No query has a relevant image in the gallery.
    #[error("no query has an image of its class in the gallery: nothing to retrieve")]
    NoPositives,
    /// A recall cut-off of 0.
    #[error("recall@k needs k >= 1")]
    ZeroK,
    /// libtorch failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Recall at one cut-off.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RecallAt {
    /// The cut-off.
    pub k: usize,
    /// Share of queries (with at least one relevant image) with a relevant image in the first
    /// k, in [0, 1].
    pub recall: f64,
}

/// Scores of a retrieval run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RetrievalReport {
    /// Queries scored (those with at least one relevant gallery image).
    pub n_queries: usize,
    /// Queries left out because the gallery holds nothing of their class.
    pub n_queries_without_positive: usize,
    /// Gallery size (for leave-one-out, each query searches the other N − 1).
    pub n_gallery: usize,
    /// Whether each query was left out of its own gallery.
    pub leave_one_out: bool,
    /// Mean average precision over the scored queries, in [0, 1].
    pub map: f64,
    /// Recall at each cut-off.
    pub recall: Vec<RecallAt>,
}

/// GeM pooling of patch tokens `[N, P, D]` → `[N, D]`: `(mean_p clamp(x, 1e-6)^p)^(1/p)`, as
/// `eval_copy_detection.py` (which uses p = 4).
///
/// # Errors
/// [`RetrievalError::Shape`] when `patches` is not a float 3-D tensor.
pub fn gem(patches: &Tensor, p: f64) -> Result<Tensor, RetrievalError> {
    if patches.dim() != 3 || !patches.is_floating_point() {
        return Err(RetrievalError::Shape {
            what: "patch tokens",
            want: "[N, P, D]",
            kind: patches.kind(),
            shape: patches.size(),
        });
    }
    Ok(patches
        .f_to_kind(Kind::Float)?
        .f_clamp_min(1e-6)?
        .f_pow_tensor_scalar(p)?
        .f_mean_dim([1i64].as_slice(), false, Kind::Float)?
        .f_pow_tensor_scalar(1.0 / p)?)
}

/// The official copy-detection descriptor: CLS `[N, D]` concatenated with GeM(p = 4) of the
/// patch tokens `[N, P, D]` → `[N, 2D]`.
///
/// # Errors
/// As [`gem`]; [`RetrievalError::Shape`] when the row counts differ.
pub fn cls_gem(cls: &Tensor, patches: &Tensor) -> Result<Tensor, RetrievalError> {
    let pooled = gem(patches, 4.0)?;
    if cls.dim() != 2 || cls.size()[0] != pooled.size()[0] {
        return Err(RetrievalError::Shape {
            what: "CLS features",
            want: "[N, D] with one row per patch-token row",
            kind: cls.kind(),
            shape: cls.size(),
        });
    }
    Ok(Tensor::f_cat(&[cls.f_to_kind(Kind::Float)?, pooled], 1)?)
}

/// Checks `[N, D]` float features and `[N]` integer labels with the shared [`check_rows`];
/// returns them as f32 and i64.
fn check(
    what: &'static str,
    features: &Tensor,
    labels: &Tensor,
) -> Result<(Tensor, Vec<i64>), RetrievalError> {
    let n = check_rows(features, Some(labels), None, &[])
        .map_err(|source| RetrievalError::Features { what, source })?;
    if n == 0 {
        return Err(RetrievalError::Empty(what));
    }
    let x = features.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?;
    let norm = x
        .f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?
        .f_clamp_min(1e-12)?;
    let labels = Vec::try_from(&labels.f_to_kind(Kind::Int64)?.f_contiguous()?)?;
    Ok((x.f_div(&norm)?, labels))
}

/// Average precision of one ranking: `relevant[r]` says whether the image at rank r (0 first)
/// is relevant; `n_relevant` is the number of relevant images in the whole gallery. The mean,
/// over the relevant images, of the precision at their rank.
pub fn average_precision(relevant: impl IntoIterator<Item = bool>, n_relevant: usize) -> f64 {
    if n_relevant == 0 {
        return 0.0;
    }
    let (mut hits, mut sum) = (0usize, 0.0);
    for (rank, rel) in relevant.into_iter().enumerate() {
        if rel {
            hits += 1;
            sum += hits as f64 / (rank + 1) as f64;
        }
    }
    sum / n_relevant as f64
}

/// Ranks `gallery` `[M, D]` for every query `[N, D]` by cosine similarity (ties to the lower
/// gallery index) and scores it: a gallery image is relevant when its label equals the query's.
/// With `leave_one_out`, query and gallery are one set (N = M) and query i does not retrieve
/// gallery image i. Queries without a relevant image are counted and left out.
///
/// # Errors
/// [`RetrievalError::Features`] (the shared feature check), [`RetrievalError::Empty`],
/// [`RetrievalError::Width`], [`RetrievalError::ZeroK`],
/// [`RetrievalError::IdenticalGallery`] (a gallery of two or more rows, all one direction), and
/// [`RetrievalError::NoPositives`] when no query can be scored.
pub fn retrieval_eval(
    query: &Tensor,
    query_labels: &Tensor,
    gallery: &Tensor,
    gallery_labels: &Tensor,
    leave_one_out: bool,
    ks: &[usize],
) -> Result<RetrievalReport, RetrievalError> {
    if ks.contains(&0) {
        return Err(RetrievalError::ZeroK);
    }
    let (q, q_labels) = check("query", query, query_labels)?;
    let (g, g_labels) = check("gallery", gallery, gallery_labels)?;
    let (qd, gd) = (q.size()[1], g.size()[1]);
    if qd != gd {
        return Err(RetrievalError::Width {
            query: qd,
            gallery: gd,
        });
    }
    let (n, m) = (q_labels.len(), g_labels.len());
    assert!(!leave_one_out || n == m, "leave-one-out needs one set");
    let spread = g.f_sub(&g.f_narrow(0, 0, 1)?)?.f_abs()?.f_max()?;
    if m >= 2 && spread.f_double_value(&[])? == 0.0 {
        return Err(RetrievalError::IdenticalGallery(m));
    }
    let gt = g.f_tr()?;
    let mut class_count = std::collections::HashMap::<i64, usize>::new();
    for &l in &g_labels {
        *class_count.entry(l).or_default() += 1;
    }
    let (mut ap_sum, mut scored, mut skipped) = (0.0, 0usize, 0usize);
    let mut hits_at = vec![0usize; ks.len()];
    let chunk = 256i64;
    let mut start = 0i64;
    while start < n as i64 {
        let len = chunk.min(n as i64 - start);
        let mut sims = q.f_narrow(0, start, len)?.f_matmul(&gt)?;
        if leave_one_out {
            let rows = Tensor::f_arange(len, (Kind::Int64, Device::Cpu))?;
            let own = Tensor::f_arange_start(start, start + len, (Kind::Int64, Device::Cpu))?;
            sims = sims.f_index_put_(
                &[Some(rows), Some(own)],
                &Tensor::from(f32::NEG_INFINITY),
                false,
            )?;
        }
        let (_, order) = sims.f_sort_stable(true, 1, true)?;
        let order: Vec<i64> = Vec::try_from(&order.f_contiguous()?.f_view([-1])?)?;
        for r in 0..len as usize {
            let qi = start as usize + r;
            let label = q_labels[qi];
            let total = class_count.get(&label).copied().unwrap_or(0) - usize::from(leave_one_out);
            if total == 0 {
                skipped += 1;
                continue;
            }
            let ranked = order[r * m..(r + 1) * m]
                .iter()
                .filter(|&&gi| !(leave_one_out && gi as usize == qi))
                .map(|&gi| g_labels[gi as usize] == label);
            let relevant: Vec<bool> = ranked.collect();
            ap_sum += average_precision(relevant.iter().copied(), total);
            let first = relevant.iter().position(|&x| x).unwrap_or(usize::MAX);
            for (slot, &k) in ks.iter().enumerate() {
                if first < k {
                    hits_at[slot] += 1;
                }
            }
            scored += 1;
        }
        start += len;
    }
    if scored == 0 {
        return Err(RetrievalError::NoPositives);
    }
    Ok(RetrievalReport {
        n_queries: scored,
        n_queries_without_positive: skipped,
        n_gallery: m,
        leave_one_out,
        map: ap_sum / scored as f64,
        recall: ks
            .iter()
            .zip(hits_at)
            .map(|(&k, h)| RecallAt {
                k,
                recall: h as f64 / scored as f64,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_precision_by_hand() {
        // Relevant at ranks 1 and 3 of 3 relevant: (1/1 + 2/3) / 3.
        let ap = average_precision([true, false, true, false], 3);
        assert!((ap - (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(average_precision([false, false], 0), 0.0);
    }

    #[test]
    fn leave_one_out_ranks_the_others() {
        // Two classes on two axes; the query itself is never retrieved.
        let x =
            Tensor::from_slice(&[1.0f32, 0.0, 0.9, 0.1, 0.1, 0.9, 0.0, 1.0, 0.6, 0.4]).view([5, 2]);
        let y = Tensor::from_slice(&[0i64, 0, 1, 1, 2]);
        let r = retrieval_eval(&x, &y, &x, &y, true, &[1, 2]).unwrap();
        // Class 2 has one image: nothing to retrieve for it.
        assert_eq!((r.n_queries, r.n_queries_without_positive), (4, 1));
        assert_eq!(r.map, 1.0);
        assert_eq!(r.recall[0], RecallAt { k: 1, recall: 1.0 });
    }

    #[test]
    fn gem_of_constant_tokens_is_the_constant() {
        let p = Tensor::full([2, 3, 4], 0.5, (Kind::Float, Device::Cpu));
        let g = gem(&p, 4.0).unwrap();
        assert!((g - 0.5).abs().max().double_value(&[]) < 1e-6);
        let cls = Tensor::zeros([2, 4], (Kind::Float, Device::Cpu));
        assert_eq!(cls_gem(&cls, &p).unwrap().size(), [2, 8]);
    }

    #[test]
    fn bad_input() {
        let x = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        let y = Tensor::from_slice(&[0i64, 0]);
        let wide = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        assert!(matches!(
            retrieval_eval(&x, &y, &wide, &y, false, &[1]),
            Err(RetrievalError::Width {
                query: 2,
                gallery: 3
            })
        ));
        let empty = Tensor::zeros([0, 2], (Kind::Float, Device::Cpu));
        let none = Tensor::zeros([0], (Kind::Int64, Device::Cpu));
        assert!(matches!(
            retrieval_eval(&empty, &none, &x, &y, false, &[1]),
            Err(RetrievalError::Empty("query"))
        ));
        let nan = Tensor::from_slice(&[1.0f32, f32::NAN, 0.0, 1.0]).view([2, 2]);
        assert!(matches!(
            retrieval_eval(&nan, &y, &x, &y, false, &[1]),
            Err(RetrievalError::Features {
                what: "query",
                source: FeaturesError::NonFinite { first: 0, .. }
            })
        ));
        let other = Tensor::from_slice(&[1i64, 1]);
        assert!(matches!(
            retrieval_eval(&x, &y, &x, &other, false, &[1]),
            Err(RetrievalError::NoPositives)
        ));
        assert!(matches!(
            retrieval_eval(&x, &y, &x, &y, false, &[0]),
            Err(RetrievalError::ZeroK)
        ));
    }

    /// Constant or duplicated descriptors (shared/cases/map-tsne-identical-rows-nan's
    /// siblings): a gallery that is one point is refused (every ranking would be index order);
    /// duplicates among distinct rows rank normally.
    #[test]
    fn an_all_identical_gallery_is_refused_and_duplicates_are_fine() {
        let same = Tensor::ones([6, 4], (Kind::Float, Device::Cpu)) * 0.3;
        let y = Tensor::from_slice(&[0i64, 0, 0, 1, 1, 1]);
        let err = retrieval_eval(&same, &y, &same, &y, true, &[1]).unwrap_err();
        assert!(matches!(err, RetrievalError::IdenticalGallery(6)), "{err}");
        assert!(err.to_string().contains("index order"), "{err}");
        // The same direction at another length is the same point after normalisation.
        let scaled = Tensor::cat(&[same.narrow(0, 0, 3), same.narrow(0, 3, 3) * 5.0], 0);
        assert!(matches!(
            retrieval_eval(&scaled, &y, &scaled, &y, true, &[1]),
            Err(RetrievalError::IdenticalGallery(6))
        ));
        // Two points, three copies each: every query finds its class first.
        let two = Tensor::cat(
            &[
                Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.0])
                    .view([1, 4])
                    .repeat([3, 1]),
                Tensor::from_slice(&[0.0f32, 1.0, 0.0, 0.0])
                    .view([1, 4])
                    .repeat([3, 1]),
            ],
            0,
        );
        let r = retrieval_eval(&two, &y, &two, &y, true, &[1]).unwrap();
        assert_eq!(r.map, 1.0);
        // A gallery of one row is no ranking question.
        let one = same.narrow(0, 0, 1);
        let y1 = Tensor::from_slice(&[0i64]);
        retrieval_eval(&same, &y.zeros_like(), &one, &y1, false, &[1]).unwrap();
    }
}
