//! Copy detection (paper §4.2.2 Table 4, official `eval_copy_detection.py`): every edited copy
//! ranks a database of originals and distractors by cosine similarity; the one relevant image is
//! its original. Scored by mAP (with one relevant image, the mean of 1 / rank of the original)
//! and recall@k, through [`crate::retrieval::retrieval_eval`].
//!
//! Before ranking, the descriptors are PCA-whitened as the official code does, with a
//! [`Whitening`] learned on a separate set of distractor images that is never searched.
//!
// Full paths: rustdoc resolves these from the parent module, as `mod` has an outer doc too.
//! [`Whitening`]: crate::retrieval::copydetect::Whitening

use crate::features::check_rows;
use crate::retrieval::{retrieval_eval, RetrievalError, RetrievalReport};
use tch::{Device, Kind, Tensor};

/// Errors of [`copy_detection_eval`] and [`Whitening::fit`], raised before any ranking.
#[derive(Debug, thiserror::Error)]
pub enum CopyDetectError {
    /// Widths disagree.
    #[error("{what} features have width {width} but the database {database}: use one model and descriptor for all")]
    Width {
        /// Which input.
        what: &'static str,
        /// Its width.
        width: i64,
        /// The database's width.
        database: i64,
    },
    /// Not one original per query.
    #[error("{queries} queries but {originals} original indices")]
    Count {
        /// Query rows.
        queries: i64,
        /// Original indices given.
        originals: usize,
    },
    /// A query's original is not in the database.
    #[error(
        "query {query}'s original is database row {index}, but the database has {database} rows"
    )]
    MissingOriginal {
        /// The query row.
        query: usize,
        /// The index given.
        index: usize,
        /// Database rows.
        database: i64,
    },
    /// The whitening features are all zero: no direction to learn a whitening from (its
    /// eigenvalues are all 0, and their inverse square roots infinite).
    #[error(
        "the {0} whitening feature rows are all zero: no whitening can be learned from them \
         (pass --no-whitening, or give other whitening images)"
    )]
    ZeroWhitening(i64),
    /// A ranking error.
    #[error(transparent)]
    Retrieval(#[from] RetrievalError),
    /// libtorch failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Checks `[N, D]` float features with the shared [`check_rows`] and returns them as f64 on the
/// CPU.
fn check(what: &'static str, x: &Tensor) -> Result<Tensor, CopyDetectError> {
    let n = check_rows(x, None, None, &[])
        .map_err(|source| RetrievalError::Features { what, source })?;
    if n == 0 {
        return Err(RetrievalError::Empty(what).into());
    }
    Ok(x.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?)
}

/// PCA whitening as `eval_copy_detection.py` with `utils.PCA(dim = D, whit = 0.5)`:
/// `y = diag(λ^-1/2) Vᵀ (x − μ)`, with μ the mean of the whitening features and (λ, V) the
/// eigen-decomposition of their *uncentred* second-moment matrix `XᵀX / N` (as the official
/// code, which centres the searched features but not the matrix). Eigenvalues below
/// `ε = 1e-5 · λ_max` are raised to ε. Computed in f64.
///
/// With fewer whitening rows than the width (N < D, e.g. raw pixels) the D x D matrix is never
/// formed: the N right singular vectors of X give the non-null eigenpairs, and the remaining
/// (null-space) directions, all at ε, are kept as `ε^-1/2 (a − V_r V_rᵀ a)`. The output then has
/// r + D columns instead of D, with the same inner products (and so the same cosine ranking)
/// as the full whitening.
#[derive(Debug)]
pub struct Whitening {
    /// `[D]` mean of the whitening features.
    pub mean: Tensor,
    /// `[r, D]` projection `diag(λ^-1/2) Vᵀ`, components in decreasing eigenvalue order
    /// (r = D when N ≥ D).
    pub dvt: Tensor,
    /// For N < D: the `[r, D]` eigenvectors `V_rᵀ` above ε and ε, for the null-space part.
    pub null_space: Option<(Tensor, f64)>,
}

impl Whitening {
    /// Learns the whitening on `features` `[N, D]`.
    ///
    /// # Errors
    /// [`RetrievalError::Features`] (the shared check), [`RetrievalError::Empty`],
    /// [`CopyDetectError::ZeroWhitening`] (every row zero: no eigenvalue above 0). Constant or
    /// duplicated rows are fine: the eigenvalues below `ε` are raised to it.
    pub fn fit(features: &Tensor) -> Result<Self, CopyDetectError> {
        let x = check("whitening", features)?;
        let (n, d) = (x.size()[0], x.size()[1]);
        if x.f_abs()?.f_max()?.f_double_value(&[])? == 0.0 {
            return Err(CopyDetectError::ZeroWhitening(n));
        }
        let mean = x.f_mean_dim([0i64].as_slice(), false, Kind::Double)?;
        if n < d {
            // XᵀX / N = V (S² / N) Vᵀ; singular values come sorted in decreasing order.
            let (_, s, v) = x.f_svd(true, true)?;
            let vh = v.f_tr()?;
            let lambda = s.f_square()?.f_div_scalar(n as f64)?;
            let eps = lambda.f_max()?.f_double_value(&[])? * 1e-5;
            let r = Vec::<f64>::try_from(&lambda)?
                .iter()
                .filter(|&&l| l >= eps)
                .count() as i64;
            let (lambda, vr) = (lambda.f_narrow(0, 0, r)?, vh.f_narrow(0, 0, r)?);
            let dvt = vr.f_mul(&lambda.f_pow_tensor_scalar(-0.5)?.f_unsqueeze(1)?)?;
            return Ok(Self {
                mean,
                dvt,
                null_space: Some((vr, eps)),
            });
        }
        let cov = x.f_tr()?.f_matmul(&x)?.f_div_scalar(n as f64)?;
        let (lambda, v) = cov.f_linalg_eigh("L")?;
        let eps = lambda.f_max()?.f_double_value(&[])? * 1e-5;
        let lambda = lambda.f_clamp_min(eps)?;
        // eigh sorts ascending; the official code keeps the largest first.
        let lambda = lambda.f_flip([0i64].as_slice())?;
        let v = v.f_flip([1i64].as_slice())?;
        let dvt = v
            .f_tr()?
            .f_mul(&lambda.f_pow_tensor_scalar(-0.5)?.f_unsqueeze(1)?)?;
        Ok(Self {
            mean,
            dvt,
            null_space: None,
        })
    }

    /// Whitens `x` `[M, D]` → `[M, D]` f64 (`[M, r + D]` when learned on fewer rows than D).
    ///
    /// # Errors
    /// As [`Whitening::fit`] for `x`; [`CopyDetectError::Width`] when its width is not D.
    pub fn apply(&self, what: &'static str, x: &Tensor) -> Result<Tensor, CopyDetectError> {
        let x = check(what, x)?;
        let d = self.mean.size()[0];
        if x.size()[1] != d {
            return Err(CopyDetectError::Width {
                what,
                width: x.size()[1],
                database: d,
            });
        }
        let a = x.f_sub(&self.mean)?;
        let y = a.f_matmul(&self.dvt.f_tr()?)?;
        Ok(match &self.null_space {
            None => y,
            Some((vr, eps)) => {
                let inside = a.f_matmul(&vr.f_tr()?)?.f_matmul(vr)?;
                let rest = a.f_sub(&inside)?.f_mul_scalar(eps.powf(-0.5))?;
                Tensor::f_cat(&[y, rest], 1)?
            }
        })
    }
}

/// Ranks `database` `[M, D]` for every query `[N, D]` by cosine similarity, after whitening
/// both with [`Whitening::fit`] on `whitening` `[W, D]` when given, and scores the rank of each
/// query's original, database row `originals[i]`. Returns mAP (one relevant image per query:
/// the mean reciprocal rank of the original) and recall@`ks`.
///
/// # Errors
/// [`RetrievalError::Empty`] (no query, database or whitening row),
/// [`RetrievalError::Features`] (the shared check), [`CopyDetectError::Width`], [`CopyDetectError::Count`],
/// [`CopyDetectError::MissingOriginal`], and [`RetrievalError::ZeroK`], all before ranking.
pub fn copy_detection_eval(
    queries: &Tensor,
    originals: &[usize],
    database: &Tensor,
    whitening: Option<&Tensor>,
    ks: &[usize],
) -> Result<RetrievalReport, CopyDetectError> {
    let q = check("query", queries)?;
    let db = check("database", database)?;
    let (nq, m, width) = (q.size()[0], db.size()[0], db.size()[1]);
    if q.size()[1] != width {
        return Err(CopyDetectError::Width {
            what: "query",
            width: q.size()[1],
            database: width,
        });
    }
    if let Some(w) = whitening {
        if w.dim() == 2 && w.size()[1] != width {
            return Err(CopyDetectError::Width {
                what: "whitening",
                width: w.size()[1],
                database: width,
            });
        }
    }
    if originals.len() as i64 != nq {
        return Err(CopyDetectError::Count {
            queries: nq,
            originals: originals.len(),
        });
    }
    if let Some((query, &index)) = originals.iter().enumerate().find(|(_, &o)| o as i64 >= m) {
        return Err(CopyDetectError::MissingOriginal {
            query,
            index,
            database: m,
        });
    }
    let (q, db) = match whitening {
        Some(w) => {
            let w = Whitening::fit(w)?;
            (w.apply("query", &q)?, w.apply("database", &db)?)
        }
        None => (q, db),
    };
    // Each database row is its own class; queries take their original's.
    let db_labels = Tensor::f_arange(m, (Kind::Int64, Device::Cpu))?;
    let q_labels = Tensor::from_slice(&originals.iter().map(|&o| o as i64).collect::<Vec<_>>());
    Ok(retrieval_eval(
        &q.f_to_kind(Kind::Float)?,
        &q_labels,
        &db.f_to_kind(Kind::Float)?,
        &db_labels,
        false,
        ks,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitened_training_features_have_identity_second_moment() {
        // Centred whitening features (so the official uncentred matrix is their covariance).
        let x = Tensor::randn([200, 5], (Kind::Double, Device::Cpu));
        let x = &x - x.mean_dim([0i64].as_slice(), true, Kind::Double);
        let w = Whitening::fit(&x).unwrap();
        let y = w.apply("x", &x).unwrap();
        let m = y.tr().matmul(&y) / 200.0;
        let eye = Tensor::eye(5, (Kind::Double, Device::Cpu));
        assert!((m - eye).abs().max().double_value(&[]) < 1e-9);
    }

    #[test]
    fn few_rows_whiten_like_the_full_matrix() {
        // N < D takes the SVD route; its inner products equal those of the D x D eigh route
        // (forced here by stacking the rows twice, which leaves the mean and XᵀX/N as they are).
        let x = Tensor::randn([4, 6], (Kind::Double, Device::Cpu)) + 1.0;
        let few = Whitening::fit(&x).unwrap();
        assert!(few.null_space.is_some());
        let many = Whitening::fit(&Tensor::cat(&[&x, &x], 0)).unwrap();
        assert!(many.null_space.is_none());
        let q = Tensor::randn([3, 6], (Kind::Double, Device::Cpu));
        let (a, b) = (few.apply("q", &q).unwrap(), many.apply("q", &q).unwrap());
        let (ga, gb) = (a.matmul(&a.tr()), b.matmul(&b.tr()));
        let rel = ((&ga - &gb).abs().max() / gb.abs().max()).double_value(&[]);
        assert!(rel < 1e-6, "{rel}");
    }

    #[test]
    fn bad_input() {
        let db = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
        let q = db.narrow(0, 0, 2);
        let empty = Tensor::zeros([0, 3], (Kind::Float, Device::Cpu));
        assert!(matches!(
            copy_detection_eval(&empty, &[], &db, None, &[1]),
            Err(CopyDetectError::Retrieval(RetrievalError::Empty("query")))
        ));
        assert!(matches!(
            copy_detection_eval(&q, &[0, 4], &db, None, &[1]),
            Err(CopyDetectError::MissingOriginal {
                query: 1,
                index: 4,
                database: 4
            })
        ));
        assert!(matches!(
            copy_detection_eval(&q, &[0], &db, None, &[1]),
            Err(CopyDetectError::Count { .. })
        ));
        let wide = Tensor::randn([2, 5], (Kind::Float, Device::Cpu));
        assert!(matches!(
            copy_detection_eval(&wide, &[0, 1], &db, None, &[1]),
            Err(CopyDetectError::Width {
                what: "query",
                width: 5,
                database: 3
            })
        ));
        assert!(matches!(
            copy_detection_eval(&q, &[0, 1], &db, Some(&wide), &[1]),
            Err(CopyDetectError::Width {
                what: "whitening",
                ..
            })
        ));
        assert!(matches!(
            copy_detection_eval(&q, &[0, 1], &db, Some(&empty), &[1]),
            Err(CopyDetectError::Retrieval(RetrievalError::Empty(
                "whitening"
            )))
        ));
        let r = copy_detection_eval(&q, &[0, 1], &db, None, &[1]).unwrap();
        assert_eq!((r.map, r.n_queries, r.n_gallery), (1.0, 2, 4));
    }

    /// Whitening features that are all zero have no direction (their eigenvalues are all 0, and
    /// the inverse square roots infinite): refused. Constant or duplicated rows whiten finitely.
    #[test]
    fn zero_whitening_rows_are_refused_and_constant_ones_whiten_finitely() {
        let zero = Tensor::zeros([5, 3], (Kind::Float, Device::Cpu));
        assert!(matches!(
            Whitening::fit(&zero),
            Err(CopyDetectError::ZeroWhitening(5))
        ));
        let wide = Tensor::zeros([2, 6], (Kind::Float, Device::Cpu));
        assert!(matches!(
            Whitening::fit(&wide),
            Err(CopyDetectError::ZeroWhitening(2))
        ));
        for constant in [
            Tensor::ones([5, 3], (Kind::Float, Device::Cpu)),
            Tensor::ones([2, 6], (Kind::Float, Device::Cpu)),
        ] {
            let w = Whitening::fit(&constant).unwrap();
            let x = Tensor::from_slice(&[0.3f32, -1.0, 2.0, 0.5, 0.1, 0.7])
                .view([2, 3])
                .repeat([1, constant.size()[1] / 3]);
            let y = w.apply("query", &x).unwrap();
            assert_eq!(y.isfinite().all().int64_value(&[]), 1);
        }
    }
}
