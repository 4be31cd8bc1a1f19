//! The running sums of an epoch's summary ([`EpochSums`]): what [`EpochRecord`] is computed
//! from, kept step by step so that it can travel in a checkpoint. A run interrupted inside an
//! epoch and resumed then summarises the whole epoch, the steps before the stop included, with
//! the same bits as an uninterrupted run: every mean is a sum from 0 in step order divided by
//! the count, and continuing a saved sum adds the same numbers in the same order.
//!
//! In the checkpoint's JSON sidecar (`epoch_sums`, optional: older checkpoints have none) every
//! float is written as Rust's shortest round-trip text in a string, because `serde_json`
//! without `float_roundtrip` may read a JSON number back one ulp off.

use crate::loss::stats::LAST_VALUE_STATS;
use crate::loss::{LossStats, TermStats};
use crate::metrics::{EpochRecord, StepRecord, TRAIN_TOP1};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// An `f64` stored as its exact decimal text (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExactF64(pub f64);

impl Serialize for ExactF64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // `{:?}` is the shortest text that parses back to the same bits (NaN and inf included).
        s.serialize_str(&format!("{:?}", self.0))
    }
}

impl<'de> Deserialize<'de> for ExactF64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<f64>()
            .map(ExactF64)
            .map_err(|e| serde::de::Error::custom(format!("not a number {text:?}: {e}")))
    }
}

/// One statistic of a term: its sum and count over the steps that have it, and its last value
/// (reported instead of the mean for [`LAST_VALUE_STATS`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatSum {
    /// The statistic's name (`loss`, `teacher_entropy`, …).
    pub name: String,
    /// Sum over the steps that have it, from 0 in step order.
    pub sum: ExactF64,
    /// Steps that have it.
    pub count: usize,
    /// Its value at the last step that has it.
    pub last: ExactF64,
}

/// One term's sums, in the order its statistics first appeared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TermSums {
    /// The term's name.
    pub name: String,
    /// The weight of the term at its first appearance.
    pub weight: ExactF64,
    /// Its statistics.
    pub stats: Vec<StatSum>,
}

/// The running sums of one epoch's steps (see the module doc); [`EpochSums::record`] gives the
/// epoch's [`EpochRecord`], equal bit for bit to [`EpochRecord::from_steps`] over the same steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochSums {
    /// The epoch (0-based).
    pub epoch: usize,
    /// Steps added so far.
    pub steps: usize,
    /// Wall time of the epoch spent by earlier invocations (seconds; 0 in an uninterrupted
    /// epoch).
    pub elapsed_s: ExactF64,
    /// Sum of the total loss.
    pub loss: ExactF64,
    /// Sum of the learning rate.
    pub lr: ExactF64,
    /// The last step's learning rate.
    pub lr_last: ExactF64,
    /// Sum of the weight decay.
    pub wd: ExactF64,
    /// Sum of the teacher momentum.
    pub momentum: ExactF64,
    /// Sum of the images per second.
    pub images_per_s: ExactF64,
    /// Sum of the data-wait fraction.
    pub data_wait_fraction: ExactF64,
    /// Sum and count of the supervised train top-1 (percent), over the steps that have one.
    pub train_top1: Option<(ExactF64, usize)>,
    /// Each term's statistics, in order of first appearance.
    pub terms: Vec<TermSums>,
}

impl EpochSums {
    /// No step of `epoch` yet.
    pub fn new(epoch: usize) -> Self {
        Self {
            epoch,
            ..Self::default()
        }
    }

    /// Adds one step's record.
    pub fn add(&mut self, r: &StepRecord) {
        let add = |s: &mut ExactF64, v: f64| s.0 += v;
        self.steps += 1;
        add(&mut self.loss, r.stats.loss);
        add(&mut self.lr, r.lr);
        self.lr_last = ExactF64(r.lr);
        add(&mut self.wd, r.wd);
        add(&mut self.momentum, r.momentum);
        add(&mut self.images_per_s, r.images_per_s);
        add(&mut self.data_wait_fraction, r.data_wait_fraction);
        if let Some(a) = r.train_top1 {
            let (sum, n) = self.train_top1.get_or_insert((ExactF64(0.0), 0));
            sum.0 += a;
            *n += 1;
        }
        for t in &r.stats.terms {
            let i = match self.terms.iter().position(|k| k.name == t.name) {
                Some(i) => i,
                None => {
                    self.terms.push(TermSums {
                        name: t.name.clone(),
                        weight: ExactF64(t.weight),
                        stats: Vec::new(),
                    });
                    self.terms.len() - 1
                }
            };
            let term = &mut self.terms[i];
            for (name, v) in &t.values {
                match term.stats.iter_mut().find(|s| &s.name == name) {
                    Some(s) => {
                        s.sum.0 += v;
                        s.count += 1;
                        s.last = ExactF64(*v);
                    }
                    None => term.stats.push(StatSum {
                        name: name.clone(),
                        sum: ExactF64(0.0 + v),
                        count: 1,
                        last: ExactF64(*v),
                    }),
                }
            }
        }
    }

    /// The epoch's summary, its wall time being the earlier invocations' plus `elapsed_s`:
    /// means of the per-step values, the last step's learning rate and the last value of each
    /// statistic of [`LAST_VALUE_STATS`] (see [`EpochRecord::from_steps`]).
    pub fn record(&self, elapsed_s: f64) -> EpochRecord {
        let n = self.steps.max(1) as f64;
        let terms = self
            .terms
            .iter()
            .map(|t| TermStats {
                name: t.name.clone(),
                weight: t.weight.0,
                values: t
                    .stats
                    .iter()
                    .map(|s| {
                        let v = if LAST_VALUE_STATS.contains(&s.name.as_str()) {
                            s.last.0
                        } else {
                            s.sum.0 / s.count.max(1) as f64
                        };
                        (s.name.clone(), v)
                    })
                    .collect(),
            })
            .collect();
        EpochRecord {
            epoch: self.epoch,
            steps: self.steps,
            lr_last: self.lr_last.0,
            lr: self.lr.0 / n,
            wd: self.wd.0 / n,
            momentum: self.momentum.0 / n,
            stats: LossStats {
                loss: self.loss.0 / n,
                terms,
            },
            images_per_s: self.images_per_s.0 / n,
            data_wait_fraction: self.data_wait_fraction.0 / n,
            elapsed_s: self.elapsed_s.0 + elapsed_s,
            extra: self
                .train_top1
                .map(|(sum, count)| {
                    BTreeMap::from([(TRAIN_TOP1.to_string(), sum.0 / count as f64)])
                })
                .unwrap_or_default(),
        }
    }
}
