//! The statistics of one loss evaluation as a list of named terms: the total loss that is
//! back-propagated, and each term ([`TermStats`]: `dino`, `koleo` when `loss.koleo_weight > 0`)
//! with its weight and its own statistics by name. Readers (the log line, `metrics.jsonl`, the
//! curves, the epoch summary, the collapse monitor) ask for a term's statistic by name
//! ([`LossStats::get`]`(`[`DINO`]`, `[`KL`]`)`), so a new term changes none of them.
//!
//! In `metrics.jsonl` the statistics are flat keys `"<term>/<statistic>"` beside the total
//! `"loss"` (`"dino/loss"`, `"dino/teacher_entropy"`, `"dino/kl"`, …, `"koleo/loss"`), and
//! `"<term>/weight"` when the weight is not 1. Lines written before the terms had names
//! (`teacher_entropy`, `kl`, `teacher_mean_entropy`, `center_norm`, `teacher_temp` and `koleo`
//! at the top level) are read as the `dino` and `koleo` terms they were.

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Name of the DINO term (`DINOLoss`, paper Sec. 3.1).
pub const DINO: &str = "dino";
/// Name of DINOv2's KoLeo term (`loss.koleo_weight`, [`crate::loss::koleo`]).
pub const KOLEO: &str = "koleo";
/// DINOv2's iBOT masked-patch term (`ibot.loss_weight > 0`; its weighted value).
pub const IBOT: &str = "ibot";
/// Name of the supervised objective's one term, the cross-entropy against the labels.
pub const CROSS_ENTROPY: &str = "cross_entropy";

/// Statistic every term has: the weighted value (nats) the term adds to the total loss.
pub const LOSS: &str = "loss";
/// DINO statistic: mean over the 2B teacher rows of the entropy H(t) of the teacher
/// distribution (nats). Near ln K: teacher uniform; small values are normal for a sharp teacher.
pub const TEACHER_ENTROPY: &str = "teacher_entropy";
/// DINO statistic: mean over the loss pairs of KL(t_j ‖ s_v) (nats) = the DINO term's loss −
/// its teacher entropy, because CE(t, s) = H(t) + KL(t‖s) and each teacher view enters the same
/// number of pairs. Near 0 together with an extreme entropy means collapse (paper Fig. 7).
pub const KL: &str = "kl";
/// DINO statistic: entropy of the batch-mean teacher distribution (nats), prototype usage. Near
/// 0 means every sample picks the same prototype (one-hot collapse).
pub const TEACHER_MEAN_ENTROPY: &str = "teacher_mean_entropy";
/// DINO statistic: L2 norm of the center used by this evaluation (before its update).
pub const CENTER_NORM: &str = "center_norm";
/// DINO statistic: the teacher temperature used.
pub const TEACHER_TEMP: &str = "teacher_temp";

/// Statistics that are a state of the loss at the step (a schedule value, a buffer's norm)
/// rather than a measurement of the batch: an epoch summary reports their last value, not
/// their mean ([`LossStats::epoch_summary`]).
pub const LAST_VALUE_STATS: [&str; 2] = [TEACHER_TEMP, CENTER_NORM];

/// One named term of the loss: its weight and its statistics, in logging order, [`LOSS`]
/// first.
#[derive(Debug, Clone, PartialEq)]
pub struct TermStats {
    /// The term's name ([`DINO`], [`KOLEO`], …): the prefix of its keys in `metrics.jsonl`.
    pub name: String,
    /// The weight the term enters the total with (1 for DINO; `loss.koleo_weight` for KoLeo).
    /// [`LOSS`] is already weighted.
    pub weight: f64,
    /// The statistics by name.
    pub values: Vec<(String, f64)>,
}

impl TermStats {
    /// A term named `name` with weight `weight` whose weighted value is `loss` (nats).
    pub fn new(name: &str, weight: f64, loss: f64) -> Self {
        Self {
            name: name.to_string(),
            weight,
            values: vec![(LOSS.to_string(), loss)],
        }
    }

    /// This term with the statistic `stat` set to `value` (replaced when it exists, appended
    /// otherwise).
    pub fn with(mut self, stat: &str, value: f64) -> Self {
        self.set(stat, value);
        self
    }

    /// Sets the statistic `stat` to `value` (replaced when it exists, appended otherwise).
    pub fn set(&mut self, stat: &str, value: f64) {
        match self.values.iter_mut().find(|(n, _)| n == stat) {
            Some((_, v)) => *v = value,
            None => self.values.push((stat.to_string(), value)),
        }
    }

    /// The statistic `stat`, if the term has it.
    pub fn get(&self, stat: &str) -> Option<f64> {
        self.values.iter().find(|(n, _)| n == stat).map(|(_, v)| *v)
    }

    /// The weighted value the term adds to the total loss (nats; 0 when not recorded).
    pub fn loss(&self) -> f64 {
        self.get(LOSS).unwrap_or(0.0)
    }
}

/// The DINO term's statistics from its loss value and teacher diagnostics (nats): [`KL`] is
/// the loss minus the teacher entropy (see [`KL`]).
pub fn dino_term(
    loss: f64,
    teacher_entropy: f64,
    teacher_mean_entropy: f64,
    center_norm: f64,
    teacher_temp: f64,
) -> TermStats {
    TermStats::new(DINO, 1.0, loss)
        .with(TEACHER_ENTROPY, teacher_entropy)
        .with(KL, loss - teacher_entropy)
        .with(TEACHER_MEAN_ENTROPY, teacher_mean_entropy)
        .with(CENTER_NORM, center_norm)
        .with(TEACHER_TEMP, teacher_temp)
}

/// Scalar diagnostics of one loss evaluation (see the module doc): the total loss and the
/// named terms it is the sum of.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LossStats {
    /// The loss value (nats) that is back-propagated: the sum of the terms' weighted values.
    pub loss: f64,
    /// The terms, in the order they are summed.
    pub terms: Vec<TermStats>,
}

impl LossStats {
    /// Stats of `terms`, the total their weighted values summed in order (a single term's
    /// value comes back unchanged).
    pub fn from_terms(terms: Vec<TermStats>) -> Self {
        let loss = terms
            .iter()
            .map(TermStats::loss)
            .reduce(|a, b| a + b)
            .unwrap_or(0.0);
        Self { loss, terms }
    }

    /// The term `name`, if the loss has it.
    pub fn term(&self, name: &str) -> Option<&TermStats> {
        self.terms.iter().find(|t| t.name == name)
    }

    /// The term `name`, for changing it in place.
    pub fn term_mut(&mut self, name: &str) -> Option<&mut TermStats> {
        self.terms.iter_mut().find(|t| t.name == name)
    }

    /// The statistic `stat` of the term `term` (e.g. `get(DINO, KL)`), if both exist.
    pub fn get(&self, term: &str, stat: &str) -> Option<f64> {
        self.term(term).and_then(|t| t.get(stat))
    }

    /// The `metrics.jsonl` key of the statistic `stat` of the term `term`: `"term/stat"`.
    pub fn key(term: &str, stat: &str) -> String {
        format!("{term}/{stat}")
    }

    /// Every statistic as `("term/stat", value)`, the total first as `"loss"`, in logging
    /// order (the keys of a `metrics.jsonl` line; weights left out).
    pub fn flat(&self) -> Vec<(String, f64)> {
        let mut out = vec![(LOSS.to_string(), self.loss)];
        for t in &self.terms {
            out.extend(t.values.iter().map(|(s, v)| (Self::key(&t.name, s), *v)));
        }
        out
    }

    /// The mean of each value over `all` (the total, and each term's statistic over the
    /// records that have it), summed from 0 in order and divided by the count, as
    /// `crate::accumulation::mean` (one record comes back unchanged). With `last_values`, the
    /// statistics of [`LAST_VALUE_STATS`] take the last record's value instead (an epoch
    /// summary). Terms and statistics keep the order of their first appearance.
    pub fn summarize<'a>(all: impl IntoIterator<Item = &'a LossStats>, last_values: bool) -> Self {
        let all: Vec<&LossStats> = all.into_iter().collect();
        let mean = |values: &mut dyn Iterator<Item = f64>| {
            let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
            sum / n.max(1) as f64
        };
        let mut terms: Vec<TermStats> = Vec::new();
        for s in &all {
            for t in &s.terms {
                let known = terms.iter_mut().find(|k| k.name == t.name);
                match known {
                    None => terms.push(TermStats {
                        name: t.name.clone(),
                        weight: t.weight,
                        values: t.values.clone(),
                    }),
                    Some(k) => {
                        for (stat, _) in &t.values {
                            if k.get(stat).is_none() {
                                k.values.push((stat.clone(), 0.0));
                            }
                        }
                    }
                }
            }
        }
        for term in &mut terms {
            let name = term.name.clone();
            for (stat, value) in term.values.iter_mut() {
                let mut of_records = all.iter().filter_map(|s| s.get(&name, stat));
                *value = if last_values && LAST_VALUE_STATS.contains(&stat.as_str()) {
                    of_records.next_back().unwrap_or(0.0)
                } else {
                    mean(&mut of_records)
                };
            }
        }
        Self {
            loss: mean(&mut all.iter().map(|s| s.loss)),
            terms,
        }
    }

    /// The summary of an epoch's step statistics: means, and the last value of each statistic
    /// of [`LAST_VALUE_STATS`] (see [`LossStats::summarize`]).
    pub fn epoch_summary<'a>(steps: impl IntoIterator<Item = &'a LossStats>) -> Self {
        Self::summarize(steps, true)
    }
}

impl Serialize for LossStats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry(LOSS, &self.loss)?;
        for t in &self.terms {
            for (stat, v) in &t.values {
                map.serialize_entry(&Self::key(&t.name, stat), v)?;
            }
            // Lines of the old format do not record KoLeo's weight (NaN when read back).
            if t.weight != 1.0 && t.weight.is_finite() {
                map.serialize_entry(&Self::key(&t.name, "weight"), &t.weight)?;
            }
        }
        map.end()
    }
}

/// The top-level keys of lines written before the terms had names, and the DINO statistic each
/// one was.
const OLD_DINO_KEYS: [&str; 5] = [
    TEACHER_ENTROPY,
    KL,
    TEACHER_MEAN_ENTROPY,
    CENTER_NORM,
    TEACHER_TEMP,
];

impl<'de> Deserialize<'de> for LossStats {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LossStats;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a loss value and \"term/statistic\" numbers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LossStats, A::Error> {
                let mut stats = LossStats::default();
                let mut old_dino: Vec<(&str, f64)> = Vec::new();
                let mut old_koleo = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == LOSS {
                        stats.loss = map.next_value()?;
                    } else if let Some((term, stat)) = key.split_once('/') {
                        let value: f64 = map.next_value()?;
                        let t = match stats.terms.iter().position(|t| t.name == term) {
                            Some(i) => &mut stats.terms[i],
                            None => {
                                stats.terms.push(TermStats {
                                    name: term.to_string(),
                                    weight: 1.0,
                                    values: Vec::new(),
                                });
                                stats.terms.last_mut().expect("just pushed")
                            }
                        };
                        if stat == "weight" {
                            t.weight = value;
                        } else {
                            t.set(stat, value);
                        }
                    } else if let Some(old) = OLD_DINO_KEYS.iter().find(|k| **k == key) {
                        old_dino.push((old, map.next_value()?));
                    } else if key == KOLEO {
                        old_koleo = Some(map.next_value::<f64>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                if stats.terms.is_empty() && !old_dino.is_empty() {
                    // The format before named terms: the loss was DINO's plus the KoLeo term.
                    let koleo = old_koleo.unwrap_or(0.0);
                    let mut dino = TermStats::new(DINO, 1.0, stats.loss - koleo);
                    for (stat, value) in old_dino {
                        dino.set(stat, value);
                    }
                    stats.terms.push(dino);
                    if let Some(k) = old_koleo {
                        stats.terms.push(TermStats::new(KOLEO, f64::NAN, k));
                    }
                }
                Ok(stats)
            }
        }
        deserializer.deserialize_map(V)
    }
}
