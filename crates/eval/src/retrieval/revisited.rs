//! The revisited Oxford / Paris retrieval protocol (Radenović et al., CVPR 2018; used by the
//! paper §4.2.2 and the official `eval_image_retrieval.py`): the ground truth of
//! `gnd_<dataset>.pkl` and the Easy / Medium / Hard mean average precision and mean
//! precision@k.
//!
//! Per query the ground truth lists database indices as `easy`, `hard` and `junk`. The three
//! protocols (revisitop's `example_evaluate.py`):
//! - Easy: positives = easy; ignored = junk ∪ hard;
//! - Medium: positives = easy ∪ hard; ignored = junk;
//! - Hard: positives = hard; ignored = junk ∪ easy.
//!
//! Ignored images are removed from the ranking before scoring. Average precision is revisitop's
//! `compute_ap`, the trapezoid rule over the precision–recall steps (it differs from the plain
//! AP of [`crate::retrieval::average_precision`]); a query without positives under a protocol
//! is left out of that protocol's mean, as there.

use crate::features::check_rows;
use crate::retrieval::RetrievalError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Positives and ignored images of one query under one protocol.
type Pick = dyn Fn(&QueryGnd) -> (Vec<usize>, Vec<usize>);

/// One query's ground truth: database indices (0-based, into `imlist`). The query's box
/// (`bbx`) is not read: the official DINO evaluation embeds whole query images.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QueryGnd {
    /// Clearly visible landmark.
    pub easy: Vec<usize>,
    /// Landmark hard to see (occluded, distorted, …).
    pub hard: Vec<usize>,
    /// Images not to be counted either way (ambiguous, or the query's own image).
    pub junk: Vec<usize>,
}

/// The contents of `gnd_<dataset>.pkl`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RevisitedGnd {
    /// Database image names (without `.jpg`), in index order.
    pub imlist: Vec<String>,
    /// Query image names (without `.jpg`).
    pub qimlist: Vec<String>,
    /// Ground truth per query, in `qimlist` order.
    pub gnd: Vec<QueryGnd>,
}

/// Errors reading a revisited dataset folder.
#[derive(Debug, thiserror::Error)]
pub enum RevisitedError {
    /// No `gnd_*.pkl` in the folder, or several.
    #[error("{dir}: expected one gnd_<dataset>.pkl (the revisited Oxford/Paris layout: <dir>/gnd_roxford5k.pkl and <dir>/jpg/), found {found}")]
    NoGnd {
        /// The folder.
        dir: PathBuf,
        /// What was found.
        found: String,
    },
    /// The pickle could not be read or does not have the revisitop layout.
    #[error("{path}: not a revisitop ground truth (a dict with imlist, qimlist and gnd lists of {{easy, hard, junk}} integer lists): {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A ground truth index past the database, or a query count that differs from `qimlist`.
    #[error("{path}: {reason}")]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Finds `dir/gnd_*.pkl` (exactly one) and reads it.
///
/// # Errors
/// [`RevisitedError::NoGnd`], and those of [`read_gnd`].
pub fn find_gnd(dir: &Path) -> Result<(PathBuf, RevisitedGnd), RevisitedError> {
    let no = |found: String| RevisitedError::NoGnd {
        dir: dir.into(),
        found,
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| no(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("gnd_") && n.ends_with(".pkl"))
        })
        .collect();
    found.sort();
    match found.len() {
        1 => {
            let path = found.remove(0);
            let gnd = read_gnd(&path)?;
            Ok((path, gnd))
        }
        0 => Err(no("none".into())),
        _ => Err(no(format!("{found:?}"))),
    }
}

/// Reads a revisitop ground-truth pickle and checks it: one entry per query, every index inside
/// the database.
///
/// # Errors
/// [`RevisitedError::Format`] for an unreadable file or another layout (e.g. numpy arrays
/// instead of lists), [`RevisitedError::Inconsistent`] for bad counts or indices.
pub fn read_gnd(path: &Path) -> Result<RevisitedGnd, RevisitedError> {
    let format = |reason: String| RevisitedError::Format {
        path: path.into(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| format(e.to_string()))?;
    let gnd: RevisitedGnd =
        serde_pickle::from_reader(std::io::BufReader::new(file), Default::default())
            .map_err(|e| format(e.to_string()))?;
    let bad = |reason: String| RevisitedError::Inconsistent {
        path: path.into(),
        reason,
    };
    if gnd.gnd.len() != gnd.qimlist.len() {
        return Err(bad(format!(
            "{} queries in qimlist but {} ground-truth entries",
            gnd.qimlist.len(),
            gnd.gnd.len()
        )));
    }
    let n = gnd.imlist.len();
    for (q, g) in gnd.gnd.iter().enumerate() {
        if let Some(&i) = g
            .easy
            .iter()
            .chain(&g.hard)
            .chain(&g.junk)
            .find(|&&i| i >= n)
        {
            return Err(bad(format!(
                "query {q} lists database index {i}, but imlist has {n} images"
            )));
        }
    }
    Ok(gnd)
}

/// revisitop's `compute_ap`: `positions` are the 0-based ranks of the positives (ignored images
/// already removed, ascending), `n_positives` the number of positives of the query. The area
/// under the precision–recall steps by the trapezoid rule; a positive at rank 0 starts at
/// precision 1.
pub fn compute_ap(positions: &[usize], n_positives: usize) -> f64 {
    if n_positives == 0 {
        return 0.0;
    }
    let step = 1.0 / n_positives as f64;
    positions
        .iter()
        .enumerate()
        .map(|(j, &rank)| {
            let p0 = if rank == 0 {
                1.0
            } else {
                j as f64 / rank as f64
            };
            let p1 = (j + 1) as f64 / (rank + 1) as f64;
            (p0 + p1) * step / 2.0
        })
        .sum()
}

/// Mean precision at one cut-off.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PrecisionAt {
    /// The cut-off.
    pub k: usize,
    /// revisitop's mP@k: per query the share of positives among the first `min(k, last
    /// positive's rank)` (1-based, ignored images removed), averaged, in [0, 1].
    pub precision: f64,
}

/// One protocol's scores.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProtocolScore {
    /// Mean average precision over the scored queries, in [0, 1].
    pub map: f64,
    /// Mean precision at each cut-off.
    pub precision: Vec<PrecisionAt>,
    /// Queries with at least one positive under this protocol.
    pub n_queries: usize,
}

/// Easy / Medium / Hard scores (the official DINO script prints Medium and Hard).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RevisitedReport {
    /// Easy protocol.
    pub easy: ProtocolScore,
    /// Medium protocol.
    pub medium: ProtocolScore,
    /// Hard protocol.
    pub hard: ProtocolScore,
    /// Database size.
    pub n_database: usize,
}

/// Ranks the database `[N, D]` for every query `[Q, D]` by cosine similarity (stable: ties to
/// the lower index) and scores the three protocols with `ks` cut-offs.
///
/// # Errors
/// Shapes that disagree with the ground truth (rows ≠ imlist / qimlist sizes, different
/// widths), rows the shared feature check refuses ([`RetrievalError::Features`]: NaN or
/// infinities), a zero cut-off, libtorch errors.
pub fn revisited_eval(
    database: &Tensor,
    queries: &Tensor,
    gnd: &RevisitedGnd,
    ks: &[usize],
) -> Result<RevisitedReport, RetrievalError> {
    if ks.contains(&0) {
        return Err(RetrievalError::ZeroK);
    }
    let shape = |what: &'static str, t: &Tensor, rows: usize| -> Result<(), RetrievalError> {
        let s = t.size();
        if s.len() != 2 || s[0] != rows as i64 || !t.is_floating_point() {
            return Err(RetrievalError::Shape {
                what,
                want: if what == "database" {
                    "[imlist, D]"
                } else {
                    "[qimlist, D]"
                },
                kind: t.kind(),
                shape: s,
            });
        }
        // The shared feature check: NaN or infinite rows would rank anywhere.
        check_rows(t, None, None, &[])
            .map_err(|source| RetrievalError::Features { what, source })?;
        Ok(())
    };
    shape("database", database, gnd.imlist.len())?;
    shape("query", queries, gnd.qimlist.len())?;
    let (dd, qd) = (database.size()[1], queries.size()[1]);
    if dd != qd {
        return Err(RetrievalError::Width {
            query: qd,
            gallery: dd,
        });
    }
    let norm = |t: &Tensor| -> Result<Tensor, tch::TchError> {
        let t = t.f_to_kind(Kind::Double)?;
        let n = t
            .f_norm_scalaropt_dim(2.0, [1i64].as_slice(), true)?
            .f_clamp_min(1e-12)?;
        t.f_div(&n)
    };
    // [Q, N] similarities, ranked per query.
    let sims = norm(queries)?.f_matmul(&norm(database)?.f_tr()?)?;
    let sims = Vec::<Vec<f64>>::try_from(&sims)?;
    let ranks: Vec<Vec<usize>> = sims
        .iter()
        .map(|row| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            order
        })
        .collect();
    let protocol = |pick: &Pick| score_protocol(&ranks, gnd, pick, ks);
    fn cat(a: &[usize], b: &[usize]) -> Vec<usize> {
        [a, b].concat()
    }
    Ok(RevisitedReport {
        easy: protocol(&|g| (g.easy.clone(), cat(&g.junk, &g.hard))),
        medium: protocol(&|g| (cat(&g.easy, &g.hard), g.junk.clone())),
        hard: protocol(&|g| (g.hard.clone(), cat(&g.junk, &g.easy))),
        n_database: gnd.imlist.len(),
    })
}

/// revisitop's `compute_map` for one protocol: `pick` gives (positives, ignored) per query.
fn score_protocol(
    ranks: &[Vec<usize>],
    gnd: &RevisitedGnd,
    pick: &Pick,
    ks: &[usize],
) -> ProtocolScore {
    let (mut map, mut pr, mut scored) = (0.0, vec![0.0; ks.len()], 0usize);
    for (order, g) in ranks.iter().zip(&gnd.gnd) {
        let (ok, junk) = pick(g);
        if ok.is_empty() {
            continue;
        }
        scored += 1;
        let (ok, junk): (std::collections::HashSet<_>, std::collections::HashSet<_>) =
            (ok.into_iter().collect(), junk.into_iter().collect());
        // Positions of the positives once the ignored images are taken out of the ranking.
        let mut positions = Vec::with_capacity(ok.len());
        let mut kept = 0usize;
        for idx in order {
            if ok.contains(idx) {
                positions.push(kept);
            }
            if !junk.contains(idx) {
                kept += 1;
            }
        }
        map += compute_ap(&positions, ok.len());
        let last = positions.last().map_or(0, |&p| p + 1);
        for (acc, &k) in pr.iter_mut().zip(ks) {
            let kq = k.min(last);
            *acc += positions.iter().filter(|&&p| p < kq).count() as f64 / kq as f64;
        }
    }
    let n = scored.max(1) as f64;
    ProtocolScore {
        map: map / n,
        precision: ks
            .iter()
            .zip(pr)
            .map(|(&k, p)| PrecisionAt {
                k,
                precision: p / n,
            })
            .collect(),
        n_queries: scored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ap_of_a_perfect_ranking_is_one() {
        assert!((compute_ap(&[0, 1, 2], 3) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn ap_is_the_trapezoid_not_the_plain_mean() {
        // One positive at rank 1 (0-based): trapezoid (0/1 + 1/2) / 2 = 0.25; plain AP = 0.5.
        assert!((compute_ap(&[1], 1) - 0.25).abs() < 1e-15);
    }
}
