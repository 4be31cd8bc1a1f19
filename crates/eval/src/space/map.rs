//! A 2-D map of a feature space (the paper's and blog's t-SNE figure of ImageNet classes):
//! t-SNE by default, PCA as the fast option. Both work on L2-normalised features, the geometry
//! every DINO evaluation uses (cosine similarity).
//!
//! t-SNE is `bhtsne`'s Barnes–Hut t-SNE (van der Maaten 2014) given exact neighbours: the
//! `3 · perplexity` nearest rows by cosine similarity, found here by chunked matrix products,
//! with distance `‖a − b‖ = sqrt(2 − 2 cos)` between unit vectors. It starts from the PCA
//! layout scaled to a standard deviation of 1e-4 (scikit-learn's `init="pca"`), so no random
//! draw is involved, and runs on a one-thread pool: `bhtsne` sums in parallel, and a parallel
//! float sum depends on how the work was split. The map is thus the same on every machine
//! and thread count.

use ndarray::Array2;
use tch::{Device, Kind, Tensor};

use crate::space::cluster::{distinct_rows, normalised_rows, ClusterError};

/// Which 2-D embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MapMethod {
    /// Barnes–Hut t-SNE (the figure's method).
    #[default]
    Tsne,
    /// The first two principal components (seconds, but classes overlap more).
    Pca,
}

/// t-SNE settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TsneConfig {
    /// Perplexity (effective number of neighbours); `3 · perplexity` neighbours are used.
    pub perplexity: f64,
    /// Gradient-descent iterations (the first 250 with early exaggeration 12).
    pub iterations: usize,
    /// Barnes–Hut accuracy: larger is faster and coarser (0.5 as bhtsne and scikit-learn).
    pub theta: f64,
}

impl Default for TsneConfig {
    /// perplexity 30, 1000 iterations, θ = 0.5 (scikit-learn's defaults).
    fn default() -> Self {
        Self {
            perplexity: 30.0,
            iterations: 1000,
            theta: 0.5,
        }
    }
}

impl TsneConfig {
    /// Checks the settings (before any features are computed).
    ///
    /// # Errors
    /// [`MapError::Setting`] for a perplexity below 1, a theta that is not > 0, or no
    /// iterations.
    pub fn check(&self) -> Result<(), MapError> {
        let cfg = self;
        if !(cfg.perplexity.is_finite() && cfg.perplexity >= 1.0) {
            return Err(MapError::Setting(format!(
                "t-SNE perplexity must be at least 1, got {}",
                cfg.perplexity
            )));
        }
        if !(cfg.theta.is_finite() && cfg.theta > 0.0) {
            return Err(MapError::Setting(format!(
                "t-SNE theta must be > 0, got {}",
                cfg.theta
            )));
        }
        if cfg.iterations == 0 {
            return Err(MapError::Setting("t-SNE needs at least 1 iteration".into()));
        }
        Ok(())
    }
}

/// Errors of the maps, raised before any work.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// Bad features (shape, NaN, zero rows).
    #[error(transparent)]
    Features(#[from] ClusterError),
    /// Too few rows for the method.
    #[error("{method} needs at least {need} images, got {got}{hint}")]
    TooFew {
        /// The method.
        method: &'static str,
        /// Rows needed.
        need: usize,
        /// Rows given.
        got: usize,
        /// What to change.
        hint: String,
    },
    /// Every row is the same after L2 normalisation: there is one point, no structure to map
    /// (bhtsne then returns NaN coordinates: its PCA start puts every image on one spot).
    #[error(
        "all {n} feature rows are identical after L2 normalisation: nothing to map (every image \
         is the same point; duplicated images or the frames of a still video?)"
    )]
    Identical {
        /// Rows.
        n: usize,
    },
    /// The map came out with NaN or infinite coordinates (never written).
    #[error(
        "{method} produced {count} non-finite coordinate(s) out of {n} points: no map written"
    )]
    NonFinite {
        /// The method.
        method: &'static str,
        /// Non-finite points.
        count: usize,
        /// Points.
        n: usize,
    },
    /// A setting is out of range.
    #[error("{0}")]
    Setting(String),
    /// libtorch failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// The single-thread pool could not be started.
    #[error("starting the t-SNE thread: {0}")]
    Pool(String),
}

/// PCA of L2-normalised `features` `[N, D]`: row `i` of the result is image `i`'s coordinates
/// on the first two principal axes `[N][2]`. Axis signs are fixed as scikit-learn's `svd_flip`
/// does (the largest-magnitude loading of each axis is positive), so the map does not mirror
/// between runs.
///
/// # Errors
/// [`MapError::Features`] for bad features; [`MapError::TooFew`] below 2 rows;
/// [`MapError::Identical`] when every row is the same direction.
pub fn pca_2d(features: &Tensor) -> Result<Vec<[f64; 2]>, MapError> {
    let rows = normalised_rows(features)?;
    if rows.nrows() < 2 {
        return Err(MapError::TooFew {
            method: "PCA",
            need: 2,
            got: rows.nrows(),
            hint: String::new(),
        });
    }
    check_not_identical(&rows)?;
    finite("PCA", pca_rows(&rows, 2)?)
}

/// Refuses rows that are all one point, before any map is computed.
fn check_not_identical(rows: &Array2<f64>) -> Result<(), MapError> {
    if distinct_rows(rows) < 2 {
        return Err(MapError::Identical { n: rows.nrows() });
    }
    Ok(())
}

/// The points, when every coordinate is finite: no NaN map leaves this module.
fn finite(method: &'static str, points: Vec<[f64; 2]>) -> Result<Vec<[f64; 2]>, MapError> {
    let count = points
        .iter()
        .filter(|p| !(p[0].is_finite() && p[1].is_finite()))
        .count();
    if count > 0 {
        return Err(MapError::NonFinite {
            method,
            count,
            n: points.len(),
        });
    }
    Ok(points)
}

/// The first `dims` principal coordinates of `rows` `[N, D]` (f64 throughout), padded with
/// zeros when D < dims.
fn pca_rows(rows: &Array2<f64>, dims: usize) -> Result<Vec<[f64; 2]>, tch::TchError> {
    let (n, d) = rows.dim();
    let x = Tensor::f_from_slice(rows.as_slice().expect("standard layout"))?
        .f_view([n as i64, d as i64])?;
    let centred = x.f_sub(&x.f_mean_dim([0i64].as_slice(), true, Kind::Double)?)?;
    let take = dims.min(d).min(n);
    // The principal axes from the smaller of the two products: the D × D covariance, or for
    // wide features (raw pixels: D = 150 528 at 224 px) the N × N Gram matrix, whose
    // eigenvectors u give the axes Xᵀu / ‖Xᵀu‖. eigh returns ascending eigenvalues: the last
    // columns are the principal ones.
    let axes = if d <= n {
        let (_, vectors) = centred.f_tr()?.f_matmul(&centred)?.f_linalg_eigh("L")?;
        vectors
            .f_narrow(1, (d - take) as i64, take as i64)?
            .f_flip([1i64])?
    } else {
        let (_, vectors) = centred.f_matmul(&centred.f_tr()?)?.f_linalg_eigh("L")?;
        let u = vectors
            .f_narrow(1, (n - take) as i64, take as i64)?
            .f_flip([1i64])?;
        let axes = centred.f_tr()?.f_matmul(&u)?;
        let norm = axes
            .f_norm_scalaropt_dim(2, [0i64].as_slice(), true)?
            .f_clamp_min(1e-300)?;
        axes.f_div(&norm)?
    };
    // svd_flip: the loading of largest magnitude of each axis is made positive.
    let biggest = axes.f_abs()?.f_argmax(0, true)?;
    let signs = axes.f_gather(0, &biggest, false)?.f_sign()?;
    let coords = centred.f_matmul(&axes.f_mul(&signs)?)?;
    let flat: Vec<f64> = Vec::try_from(&coords.f_contiguous()?.f_view([-1])?)?;
    Ok((0..n)
        .map(|i| {
            let mut p = [0.0; 2];
            for (j, v) in p.iter_mut().enumerate().take(take) {
                *v = flat[i * take + j];
            }
            p
        })
        .collect())
}

/// The `k` nearest other rows of every row of unit vectors `rows` by cosine similarity, most
/// similar first, with the Euclidean distance `sqrt(max(0, 2 − 2 cos))` (ties to the lower
/// index). Chunked so memory stays at `chunk × N` floats.
fn neighbours(
    rows: &Array2<f64>,
    k: usize,
) -> Result<Vec<Vec<bhtsne::Neighbor<f64>>>, tch::TchError> {
    let (n, d) = rows.dim();
    let x = Tensor::f_from_slice(rows.as_slice().expect("standard layout"))?
        .f_view([n as i64, d as i64])?
        .f_to_kind(Kind::Float)?;
    let xt = x.f_tr()?;
    let chunk = 1024i64;
    let mut out = Vec::with_capacity(n);
    let mut start = 0i64;
    while start < n as i64 {
        let len = chunk.min(n as i64 - start);
        let mut sims = x.f_narrow(0, start, len)?.f_matmul(&xt)?;
        // A row is not its own neighbour.
        let own = Tensor::f_arange_start(start, start + len, (Kind::Int64, Device::Cpu))?;
        sims = sims.f_index_put_(
            &[
                Some(Tensor::f_arange(len, (Kind::Int64, Device::Cpu))?),
                Some(own),
            ],
            &Tensor::from(f32::NEG_INFINITY),
            false,
        )?;
        let (top, idx) = sims.f_topk(k as i64, 1, true, true)?;
        let top: Vec<f32> = Vec::try_from(&top.f_contiguous()?.f_view([-1])?)?;
        let idx: Vec<i64> = Vec::try_from(&idx.f_contiguous()?.f_view([-1])?)?;
        for r in 0..len as usize {
            out.push(
                (0..k)
                    .map(|j| bhtsne::Neighbor {
                        index: idx[r * k + j] as usize,
                        distance: (2.0 - 2.0 * top[r * k + j] as f64).max(0.0).sqrt(),
                    })
                    .collect(),
            );
        }
        start += len;
    }
    Ok(out)
}

/// Barnes–Hut t-SNE of L2-normalised `features` `[N, D]` to `[N][2]` (see the module doc):
/// deterministic, whatever the thread count.
///
/// # Errors
/// [`MapError::Features`] for bad features; [`MapError::Setting`] for a perplexity, theta or
/// iteration count out of range; [`MapError::TooFew`] when N ≤ 3 · perplexity (each row needs
/// that many neighbours); [`MapError::Identical`] when every row is the same direction;
/// [`MapError::NonFinite`] should the optimisation still produce a non-finite coordinate.
pub fn tsne_2d(features: &Tensor, cfg: &TsneConfig) -> Result<Vec<[f64; 2]>, MapError> {
    cfg.check()?;
    let rows = normalised_rows(features)?;
    let n = rows.nrows();
    let k = (3.0 * cfg.perplexity) as usize;
    if n <= k {
        return Err(MapError::TooFew {
            method: "t-SNE",
            need: k + 1,
            got: n,
            hint: format!(
                " at perplexity {} (3 × perplexity neighbours each): lower the perplexity to \
                 at most {}",
                cfg.perplexity,
                (n.saturating_sub(1) / 3).max(1)
            ),
        });
    }
    check_not_identical(&rows)?;
    let neighbours = neighbours(&rows, k)?;
    // scikit-learn's PCA initialisation: the PCA layout scaled to std 1e-4 on its first axis.
    let init = pca_rows(&rows, 2)?;
    let mean0 = init.iter().map(|p| p[0]).sum::<f64>() / n as f64;
    let std0 = (init.iter().map(|p| (p[0] - mean0).powi(2)).sum::<f64>() / n as f64).sqrt();
    let scale = if std0 > 0.0 { 1e-4 / std0 } else { 1.0 };
    let init: Vec<f64> = init
        .iter()
        .flat_map(|p| [p[0] * scale, p[1] * scale])
        .collect();
    let ids: Vec<usize> = (0..n).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| MapError::Pool(e.to_string()))?;
    let flat = pool.install(|| {
        let mut tsne: bhtsne::tSNE<f64, usize, 2> = bhtsne::tSNE::new(&ids);
        tsne.perplexity(cfg.perplexity)
            .epochs(cfg.iterations)
            .initial_embedding(init)
            .barnes_hut_with_neighbors(cfg.theta, &neighbours);
        tsne.embedding()
    });
    finite(
        "t-SNE",
        flat.chunks_exact(2).map(|p| [p[0], p[1]]).collect(),
    )
}

/// The 2-D map of `features` by `method` (t-SNE settings from `tsne`).
///
/// # Errors
/// As [`tsne_2d`] and [`pca_2d`].
pub fn map_2d(
    features: &Tensor,
    method: MapMethod,
    tsne: &TsneConfig,
) -> Result<Vec<[f64; 2]>, MapError> {
    match method {
        MapMethod::Tsne => tsne_2d(features, tsne),
        MapMethod::Pca => pca_2d(features),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tight groups of 40 directions each, around e1 and e2 in 8-D.
    fn two_groups() -> Tensor {
        let mut v = Vec::new();
        for g in 0..2 {
            for i in 0..40 {
                for d in 0..8 {
                    let base = if d == g { 1.0 } else { 0.0 };
                    v.push(base + 0.05 * (((i * 7 + d * 3) % 11) as f32 / 11.0));
                }
            }
        }
        Tensor::from_slice(&v).view([80, 8])
    }

    /// Mean distance within groups over mean distance across them.
    fn separation(p: &[[f64; 2]]) -> f64 {
        let dist =
            |a: [f64; 2], b: [f64; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        let (mut within, mut across, mut nw, mut na) = (0.0, 0.0, 0, 0);
        for i in 0..p.len() {
            for j in i + 1..p.len() {
                if (i < 40) == (j < 40) {
                    within += dist(p[i], p[j]);
                    nw += 1;
                } else {
                    across += dist(p[i], p[j]);
                    na += 1;
                }
            }
        }
        (within / nw as f64) / (across / na as f64)
    }

    #[test]
    fn both_maps_separate_two_groups() {
        let x = two_groups();
        let pca = pca_2d(&x).unwrap();
        assert_eq!(pca.len(), 80);
        assert!(separation(&pca) < 0.2, "PCA {}", separation(&pca));
        let cfg = TsneConfig {
            perplexity: 10.0,
            iterations: 300,
            ..TsneConfig::default()
        };
        let tsne = tsne_2d(&x, &cfg).unwrap();
        assert!(tsne.iter().flatten().all(|v| v.is_finite()));
        assert!(separation(&tsne) < 0.5, "t-SNE {}", separation(&tsne));
        // Deterministic: the same map twice, bit for bit.
        assert_eq!(tsne, tsne_2d(&x, &cfg).unwrap());
    }

    #[test]
    fn pca_axes_match_the_covariance() {
        // Points on a line along (3, 4)/5 after normalisation spread on the first axis only.
        let x = Tensor::from_slice(&[1.0f32, 0.0, 0.8, 0.6, 0.6, 0.8, 0.0, 1.0]).view([4, 2]);
        let p = pca_2d(&x).unwrap();
        // The first axis carries the larger variance.
        let var = |j: usize| p.iter().map(|q| q[j] * q[j]).sum::<f64>();
        assert!(var(0) > var(1));
        // Centred: the coordinates sum to zero.
        assert!(p.iter().map(|q| q[0]).sum::<f64>().abs() < 1e-12);
    }

    #[test]
    fn wide_features_take_the_gram_path_to_the_same_axes() {
        // 6 rows in 3-D, and the same rows padded with zeros to 40-D (D > N: Gram matrix).
        let narrow = Tensor::from_slice(&[
            1.0f32, 0.2, 0.1, 0.9, 0.4, 0.0, 0.2, 1.0, 0.3, 0.1, 0.8, 0.6, 0.0, 0.3, 1.0, 0.5, 0.5,
            0.5,
        ])
        .view([6, 3]);
        let wide = Tensor::cat(
            &[&narrow, &Tensor::zeros([6, 37], (Kind::Float, Device::Cpu))],
            1,
        );
        let (a, b) = (pca_2d(&narrow).unwrap(), pca_2d(&wide).unwrap());
        for (p, q) in a.iter().zip(&b) {
            assert!(
                (p[0] - q[0]).abs() < 1e-9 && (p[1] - q[1]).abs() < 1e-9,
                "{p:?} vs {q:?}"
            );
        }
    }

    #[test]
    fn bad_settings_and_too_few_rows() {
        let x = two_groups();
        let big = TsneConfig {
            perplexity: 30.0,
            ..TsneConfig::default()
        };
        let err = tsne_2d(&x, &big).unwrap_err();
        assert!(
            matches!(
                err,
                MapError::TooFew {
                    need: 91,
                    got: 80,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("at most 26"), "{err}");
        let zero = TsneConfig {
            theta: 0.0,
            ..TsneConfig::default()
        };
        assert!(matches!(tsne_2d(&x, &zero), Err(MapError::Setting(_))));
        let one = Tensor::ones([1, 3], (Kind::Float, Device::Cpu));
        assert!(matches!(pca_2d(&one), Err(MapError::TooFew { .. })));
        let nan = Tensor::from_slice(&[f32::NAN, 1.0, 0.0, 1.0]).view([2, 2]);
        assert!(matches!(
            pca_2d(&nan),
            Err(MapError::Features(ClusterError::Features(
                crate::features::FeaturesError::NonFinite { first: 0, .. }
            )))
        ));
    }

    /// shared/cases/map-tsne-identical-rows-nan: 100 identical rows made NaN t-SNE coordinates
    /// (exit 0). Both maps refuse one point before any work; duplicates among distinct rows map
    /// to finite coordinates.
    #[test]
    fn identical_rows_are_refused_and_duplicates_map_finitely() {
        let cfg = TsneConfig {
            perplexity: 10.0,
            iterations: 300,
            ..TsneConfig::default()
        };
        let same = Tensor::ones([100, 16], (Kind::Float, Device::Cpu)) * 0.25;
        for err in [
            tsne_2d(&same, &cfg).unwrap_err(),
            pca_2d(&same).unwrap_err(),
        ] {
            assert!(matches!(err, MapError::Identical { n: 100 }), "{err}");
            assert!(
                err.to_string()
                    .contains("all 100 feature rows are identical"),
                "{err}"
            );
        }
        // 40 copies of one row among 60 distinct ones, and two rows 50 times each.
        let x = two_groups();
        let copies = x.narrow(0, 0, 1).repeat([40, 1]);
        let mixed = Tensor::cat(&[copies, x.narrow(0, 20, 60)], 0);
        let pair = Tensor::cat(
            &[
                x.narrow(0, 0, 1).repeat([50, 1]),
                x.narrow(0, 79, 1).repeat([50, 1]),
            ],
            0,
        );
        for input in [&mixed, &pair] {
            for points in [tsne_2d(input, &cfg).unwrap(), pca_2d(input).unwrap()] {
                assert_eq!(points.len(), 100);
                assert!(points.iter().flatten().all(|v| v.is_finite()));
            }
        }
    }
}
