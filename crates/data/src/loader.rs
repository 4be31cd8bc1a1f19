//! The parallel, deterministic multi-crop loader.
//!
//! Batches are built as jobs on a dedicated rayon pool of `threads` threads, two in flight so
//! threads that finish their part of one batch start on the next; within a batch the samples
//! are decoded and augmented in parallel, each writing its crops straight into its slots of
//! the batch buffers. A producer thread sends finished batches in order through a bounded
//! crossbeam channel (capacity = `prefetch`; a full channel blocks it: back-pressure). A
//! panicking transform becomes an error message, not a silently ended stream.
//!
//! Determinism: the epoch order is a Fisher-Yates shuffle driven by
//! `rng_for(seed, epoch, 0, Shuffle)` (index order with `shuffle = false`); sample `index` of epoch `e` is augmented with
//! `rng_for(seed, e, index, Augment)`. Nothing depends on which thread runs what, so one
//! thread and N threads give byte-identical batches, and starting at `(epoch, step)` gives the
//! same batches as an uninterrupted run (exact resume).
//!
//! Bad samples: a sample that fails to load is replaced by a uniformly drawn other sample from
//! `rng_for(seed, e, position, Replace)` (whose augmentation draws then come from the same
//! stream, so a replacement never duplicates that image's regular crops). Each failure is
//! counted; each distinct bad file is logged once with `tracing::warn!` and kept with its reason
//! ([`LoaderStats::failures`]). When more than
//! `max_failed_fraction × len` distinct samples have failed the loader sends a
//! [`DataError::TooManyFailures`] and stops. The official code has no such path (torchvision's
//! `ImageFolder` raises on the first bad file and the run dies).
//!
//! Shutdown: dropping the [`Loader`] stops the producer between samples and joins it; a
//! producer blocked on a full channel is woken by a stop channel, so drop never hangs.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, select, Receiver, Sender};
use rand::{RngCore, SeedableRng};
use rayon::prelude::*;

use crate::augmentation::DataAugmentationDino;
use crate::batch::{write_chw, MultiCropBatch};
use crate::dataset::Dataset;
use crate::error::DataError;
use crate::masking::{batch_masks, MaskingOptions};
use crate::rng::{rng_for, ChaCha8Rng, Stream};

/// How many replacement draws one position gets before the batch fails (a dataset that is
/// almost entirely unreadable would otherwise spin).
const MAX_ATTEMPTS: usize = 64;

/// What the loader produces and in which order.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderOptions {
    /// Images per batch (official `--batch_size_per_gpu 64`).
    pub batch_size: usize,
    /// Seed of the shuffles, augmentations and replacements (official `--seed 0`).
    pub seed: u64,
    /// Epochs to produce, e.g. `0..100`, or `e..100` to resume at epoch `e`.
    pub epochs: Range<u64>,
    /// Batches of the first epoch of `epochs` to skip (resume within an epoch).
    pub start_step: u64,
    /// Worker threads of the dedicated pool; 0 = all cores.
    pub threads: usize,
    /// Batches prepared ahead of the consumer (channel capacity).
    pub prefetch: usize,
    /// Drop an epoch's last incomplete batch (official `drop_last=True`).
    pub drop_last: bool,
    /// Visit each epoch in the seeded order of [`epoch_order`] (official `DataLoader` over a
    /// `DistributedSampler(shuffle=True)`); `false` visits the dataset in index order every
    /// epoch (still sharded, still augmented from `seed`), as `shuffle=False` does there.
    pub shuffle: bool,
    /// Distinct failed samples allowed, as a fraction of the dataset, before an error.
    pub max_failed_fraction: f64,
    /// Which part of every epoch this process reads in data-parallel training
    /// ([`Shard::WHOLE`] on one process).
    pub shard: Shard,
    /// iBOT's masks of the global crops ([`crate::masking`]); `None` (iBOT off) draws none.
    pub masking: Option<MaskingOptions>,
}

/// One rank's share of every epoch, as `torch.utils.data.DistributedSampler` deals it: the
/// epoch's shuffled order is cut to a length divisible by `world_size` (dropping the tail with
/// `drop_last`, else padding by repeating its start), and rank `r` takes positions
/// `r, r + world_size, r + 2·world_size, …`.
///
/// Consequence relied on by data-parallel training: step `s` of all ranks together covers the
/// same positions `[s·b·W, (s+1)·b·W)` of the epoch order as step `s` of one process with batch
/// `b·W`, and each image's crops depend only on (seed, epoch, dataset index), so the union of
/// the ranks' batches equals the single-process batch, crop for crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes sharing every epoch (≥ 1).
    pub world_size: usize,
}

impl Shard {
    /// The whole epoch: one process.
    pub const WHOLE: Shard = Shard {
        rank: 0,
        world_size: 1,
    };

    /// Positions of the epoch order this rank reads, for a dataset of `len` samples
    /// (`DistributedSampler.num_samples`): `len / W` with `drop_last`, else `⌈len / W⌉`.
    pub fn len(&self, len: usize, drop_last: bool) -> usize {
        let w = self.world_size.max(1);
        if drop_last {
            len / w
        } else {
            len.div_ceil(w)
        }
    }

    /// Whether this shard reads nothing.
    pub fn is_empty(&self, len: usize, drop_last: bool) -> bool {
        self.len(len, drop_last) == 0
    }

    /// The epoch-order position of this rank's `q`-th sample (padding wraps to the start).
    pub fn position(&self, q: usize, len: usize) -> usize {
        (q * self.world_size.max(1) + self.rank) % len.max(1)
    }
}

impl Default for LoaderOptions {
    /// The official batch size, seed and `drop_last`, one epoch, all cores, the config's
    /// prefetch and failure fraction.
    fn default() -> Self {
        Self::from_config(&dino_config::Config::default())
    }
}

impl LoaderOptions {
    /// Options from a run config: `optim.batch_size`, `runtime.seed`, `0..optim.epochs`,
    /// `runtime.data_threads`, `runtime.prefetch_batches`, `data.drop_last`,
    /// `data.max_failed_fraction`, and iBOT's masks when `ibot.loss_weight > 0`.
    pub fn from_config(cfg: &dino_config::Config) -> Self {
        Self {
            batch_size: cfg.optim.batch_size,
            seed: cfg.runtime.seed,
            epochs: 0..cfg.optim.epochs as u64,
            start_step: 0,
            threads: cfg.runtime.data_threads,
            prefetch: cfg.runtime.prefetch_batches,
            drop_last: cfg.data.drop_last,
            shuffle: true,
            max_failed_fraction: cfg.data.max_failed_fraction,
            shard: Shard::WHOLE,
            masking: MaskingOptions::from_config(cfg),
        }
    }
}

/// Batches per epoch: `len / batch` with `drop_last`, else rounded up.
pub fn batches_per_epoch(len: usize, batch_size: usize, drop_last: bool) -> u64 {
    if batch_size == 0 {
        return 0;
    }
    (if drop_last {
        len / batch_size
    } else {
        len.div_ceil(batch_size)
    }) as u64
}

/// The order in which epoch `epoch` visits the `len` samples (a permutation of `0..len`).
///
/// Fisher-Yates with indices drawn as `(u64 × n) >> 64` from `rng_for(seed, epoch, 0, Shuffle)`;
/// written out here rather than `SliceRandom::shuffle` so the order cannot change with the
/// `rand` version.
pub fn epoch_order(seed: u64, epoch: u64, len: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = rng_for(seed, epoch, 0, Stream::Shuffle);
    for i in (1..len).rev() {
        order.swap(i, below(&mut rng, i + 1));
    }
    order
}

/// A uniform draw in `0..n` (n ≥ 1), bias below 2^-40 for any dataset size.
fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    ((rng.next_u64() as u128 * n as u128) >> 64) as usize
}

/// Checks `opts` and `transform` for a dataset of `len` samples, as [`Loader::spawn`] does
/// before any work, and returns the batches of one epoch of this shard. Lets a caller (the
/// Python wheel) reject bad options when it is configured rather than when it first iterates.
///
/// # Errors
/// [`DataError::BadOption`] naming the option: `batch_size` 0 or larger than the shard of an
/// epoch with `drop_last`, a `max_failed_fraction` outside `[0, 1]`, zero-sized crops, a rank
/// outside the world, a `start_step` past the epoch.
pub fn check_options(
    len: usize,
    transform: &DataAugmentationDino,
    opts: &LoaderOptions,
) -> Result<u64, DataError> {
    let bad = |name, reason: String| Err(DataError::BadOption { name, reason });
    if opts.batch_size == 0 {
        return bad("batch_size", "must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&opts.max_failed_fraction) {
        return bad(
            "data.max_failed_fraction",
            format!("{} not in [0, 1]", opts.max_failed_fraction),
        );
    }
    if transform.global_size() == 0 || (transform.n_local() > 0 && transform.local_size() == 0) {
        return bad("crop size", "crops must be at least 1 pixel".into());
    }
    if opts.shard.world_size == 0 || opts.shard.rank >= opts.shard.world_size {
        return bad(
            "shard",
            format!(
                "rank {} of world size {}: need 0 <= rank < world size",
                opts.shard.rank, opts.shard.world_size
            ),
        );
    }
    let shard_len = opts.shard.len(len, opts.drop_last);
    let per_epoch = batches_per_epoch(shard_len, opts.batch_size, opts.drop_last);
    if per_epoch == 0 {
        return bad(
            "batch_size",
            format!(
                "dataset of {len} samples ({shard_len} per rank of {}) gives no batch of {} \
                 (drop_last = {})",
                opts.shard.world_size, opts.batch_size, opts.drop_last
            ),
        );
    }
    if opts.start_step > per_epoch {
        return bad(
            "start_step",
            format!(
                "{} past the {per_epoch} batches of an epoch",
                opts.start_step
            ),
        );
    }
    Ok(per_epoch)
}

/// Counters shared by the producer, the workers and whoever holds the [`Loader`].
/// Times are summed over threads, in nanoseconds.
#[derive(Debug, Default)]
pub struct LoaderStats {
    failed_samples: AtomicU64,
    /// Distinct failed dataset indices, each with `path: reason` of its first failure.
    failed_indices: Mutex<BTreeMap<usize, String>>,
    batches: AtomicU64,
    samples: AtomicU64,
    load_ns: AtomicU64,
    augment_ns: AtomicU64,
    batch_ns: AtomicU64,
    send_wait_ns: AtomicU64,
}

/// A copy of the [`LoaderStats`] counters.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct StatsSnapshot {
    /// Failed load attempts (a bad file counts once per time it was drawn).
    pub failed_samples: u64,
    /// Distinct dataset indices that failed.
    pub distinct_failed: u64,
    /// Batches produced.
    pub batches: u64,
    /// Images written into batches.
    pub samples: u64,
    /// Seconds spent reading and decoding, summed over worker threads.
    pub load_s: f64,
    /// Seconds spent in the multi-crop transform and CHW packing, summed over worker threads.
    pub augment_s: f64,
    /// Wall seconds of batch jobs, start to finish (two run at once, so this can exceed the
    /// elapsed time).
    pub batch_s: f64,
    /// Wall seconds the producer waited on a full channel (consumer slower than the loader).
    pub send_wait_s: f64,
}

impl LoaderStats {
    /// Current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        let s = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 * 1e-9;
        StatsSnapshot {
            failed_samples: self.failed_samples.load(Ordering::Relaxed),
            distinct_failed: self.distinct_failed() as u64,
            batches: self.batches.load(Ordering::Relaxed),
            samples: self.samples.load(Ordering::Relaxed),
            load_s: s(&self.load_ns),
            augment_s: s(&self.augment_ns),
            batch_s: s(&self.batch_ns),
            send_wait_s: s(&self.send_wait_ns),
        }
    }

    /// Every distinct dataset index that failed to load so far, with `path: reason` of its
    /// first failure, sorted by index (what the Python wheel reports in its warnings).
    pub fn failures(&self) -> Vec<(usize, String)> {
        self.failed_indices.lock().map_or_else(
            |_| Vec::new(),
            |m| m.iter().map(|(i, w)| (*i, w.clone())).collect(),
        )
    }

    fn distinct_failed(&self) -> usize {
        self.failed_indices.lock().map_or(0, |s| s.len())
    }

    fn record_failure(&self, index: usize, what: &str, err: &DataError) {
        self.failed_samples.fetch_add(1, Ordering::Relaxed);
        let new = self
            .failed_indices
            .lock()
            .map(|mut s| match s.entry(index) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    // Decode and I/O errors already name the file.
                    let reason = err.to_string();
                    v.insert(if reason.contains(what) {
                        reason
                    } else {
                        format!("{what}: {reason}")
                    });
                    true
                }
                std::collections::btree_map::Entry::Occupied(_) => false,
            })
            .unwrap_or(false);
        if new {
            tracing::warn!(path = what, reason = %err, "skipping a sample that failed to load");
        }
    }
}

fn add_ns(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// A running loader: receive batches with [`Loader::recv`] or by iterating.
///
/// Each message is `Ok(batch)` or one final `Err` after which the stream ends. The stream also
/// ends after the last batch of the last epoch.
pub struct Loader {
    rx: Receiver<Result<MultiCropBatch, DataError>>,
    stop: Arc<AtomicBool>,
    stop_tx: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
    stats: Arc<LoaderStats>,
    batches_per_epoch: u64,
    total_batches: u64,
}

/// The producer thread's state: the pool, and what batch jobs on the pool share.
struct Producer {
    pool: rayon::ThreadPool,
    shared: Arc<Shared>,
}

struct Shared {
    dataset: Arc<dyn Dataset>,
    transform: DataAugmentationDino,
    opts: LoaderOptions,
    stats: Arc<LoaderStats>,
    stop: Arc<AtomicBool>,
}

/// A finished batch with the dataset indices that failed while building it.
type Built = Result<(MultiCropBatch, Vec<usize>), DataError>;

/// One packed sample: (label, dataset index used, dataset indices that failed before it).
type Packed = (i64, u64, Vec<usize>);

impl Loader {
    /// Validates the options ([`check_options`]), starts the worker pool and the producer thread.
    ///
    /// Errors (before any work): `batch_size` 0, a `start_step` past the epoch, a
    /// `max_failed_fraction` outside `[0, 1]`, an empty dataset or one smaller than a batch with
    /// `drop_last`, zero-sized crops, a rank outside the world, or a pool that cannot start.
    pub fn spawn(
        dataset: Arc<dyn Dataset>,
        transform: DataAugmentationDino,
        opts: LoaderOptions,
    ) -> Result<Self, DataError> {
        let per_epoch = check_options(dataset.len(), &transform, &opts)?;
        let n_epochs = opts.epochs.end.saturating_sub(opts.epochs.start);
        let total_batches = n_epochs
            .saturating_mul(per_epoch)
            .saturating_sub(if n_epochs > 0 { opts.start_step } else { 0 });
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads)
            .thread_name(|i| format!("dino-data-{i}"))
            .build()
            .map_err(|e| DataError::Spawn(e.to_string()))?;
        let (tx, rx) = bounded(opts.prefetch);
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let stats = Arc::new(LoaderStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let producer = Producer {
            pool,
            shared: Arc::new(Shared {
                dataset,
                transform,
                opts,
                stats: stats.clone(),
                stop: stop.clone(),
            }),
        };
        let handle = std::thread::Builder::new()
            .name("dino-data-producer".into())
            .spawn(move || producer.run(&tx, &stop_rx))
            .map_err(|e| DataError::Spawn(e.to_string()))?;
        Ok(Self {
            rx,
            stop,
            stop_tx: Some(stop_tx),
            handle: Some(handle),
            stats,
            batches_per_epoch: per_epoch,
            total_batches,
        })
    }

    /// The next batch; `None` once the stream has ended.
    pub fn recv(&self) -> Option<Result<MultiCropBatch, DataError>> {
        self.rx.recv().ok()
    }

    /// The receiving end, e.g. for `crossbeam_channel::select!`. Receiving through it is the
    /// same as [`Loader::recv`]; the producer still stops when the `Loader` is dropped.
    pub fn receiver(&self) -> &Receiver<Result<MultiCropBatch, DataError>> {
        &self.rx
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<LoaderStats> {
        self.stats.clone()
    }

    /// Batches in one full epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        self.batches_per_epoch
    }

    /// Batches this loader will send in total (fewer if it stops on an error).
    pub fn total_batches(&self) -> u64 {
        self.total_batches
    }
}

impl Iterator for Loader {
    type Item = Result<MultiCropBatch, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.recv()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        drop(self.stop_tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Producer {
    /// Keeps `PIPELINE` batch jobs on the pool, so threads that finish their share of batch k
    /// start on batch k + 1 instead of idling at the end of k; sends results in order.
    fn run(self, tx: &Sender<Result<MultiCropBatch, DataError>>, stop_rx: &Receiver<()>) {
        const PIPELINE: usize = 2;
        let sh = &self.shared;
        let len = sh.dataset.len();
        let shard_len = sh.opts.shard.len(len, sh.opts.drop_last);
        let per_epoch = batches_per_epoch(shard_len, sh.opts.batch_size, sh.opts.drop_last);
        let first = sh.opts.start_step;
        let start = sh.opts.epochs.start;
        let mut plan = sh.opts.epochs.clone().flat_map(move |e| {
            (if e == start { first } else { 0 }..per_epoch).map(move |s| (e, s))
        });
        let mut order: Option<(u64, Arc<Vec<usize>>)> = None;
        let mut in_flight = std::collections::VecDeque::new();
        // Counted here, in batch order, so the batch that trips the limit is deterministic.
        let mut failed = HashSet::new();
        loop {
            while in_flight.len() < PIPELINE {
                let Some((epoch, step)) = plan.next() else {
                    break;
                };
                let ord = match &order {
                    Some((e, o)) if *e == epoch => o.clone(),
                    _ => {
                        let o = Arc::new(if sh.opts.shuffle {
                            epoch_order(sh.opts.seed, epoch, len)
                        } else {
                            (0..len).collect()
                        });
                        order = Some((epoch, o.clone()));
                        o
                    }
                };
                let (btx, brx) = bounded::<Built>(1);
                let job = self.shared.clone();
                self.pool.spawn(move || {
                    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        job.build(epoch, step, &ord)
                    }))
                    .unwrap_or_else(|p| Err(DataError::Spawn(panic_message(&*p))));
                    let _ = btx.send(built);
                });
                in_flight.push_back(brx);
            }
            let Some(brx) = in_flight.pop_front() else {
                return;
            };
            let Ok(built) = brx.recv() else {
                return;
            };
            if sh.stop.load(Ordering::SeqCst) {
                return;
            }
            let msg = built.and_then(|(batch, fails)| {
                failed.extend(fails);
                if failed.len() as f64 > sh.opts.max_failed_fraction * len as f64 {
                    return Err(DataError::TooManyFailures {
                        failed: failed.len(),
                        fraction: sh.opts.max_failed_fraction,
                        len,
                        last: format!("epoch {} step {}", batch.epoch, batch.step),
                    });
                }
                Ok(batch)
            });
            let is_err = msg.is_err();
            if !is_err {
                sh.stats.batches.fetch_add(1, Ordering::Relaxed);
            }
            let t1 = Instant::now();
            select! {
                send(tx, msg) -> r => if r.is_err() { return },
                recv(stop_rx) -> _ => return,
            }
            add_ns(&sh.stats.send_wait_ns, t1);
            if is_err {
                return;
            }
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("a loader worker panicked: {what}")
}

/// The epoch-order positions of this shard's samples `start..end`.
fn positions_of(start: usize, end: usize, shard: Shard, len: usize) -> Vec<usize> {
    (start..end).map(|q| shard.position(q, len)).collect()
}

impl Shared {
    /// Builds batch `step` of `epoch` on the pool (called from a pool thread).
    fn build(&self, epoch: u64, step: u64, order: &[usize]) -> Built {
        let t0 = Instant::now();
        let b = self.opts.batch_size;
        let shard = self.opts.shard;
        let start = step as usize * b;
        let end = (start + b).min(shard.len(order.len(), self.opts.drop_last));
        let positions = positions_of(start, end, shard, order.len());
        let bs = positions.len();
        let t = &self.transform;
        let mut batch = MultiCropBatch::zeroed(
            epoch,
            step,
            bs,
            t.global_size(),
            t.local_size(),
            t.n_local(),
        );
        let (glen, llen) = (batch.global_crop_len(), batch.local_crop_len().max(1));
        // View-major buffers: chunk k of a view block belongs to image k % bs.
        let mut slots: Vec<Vec<&mut [u8]>> =
            (0..bs).map(|_| Vec::with_capacity(t.n_crops())).collect();
        for (k, c) in batch.globals.chunks_exact_mut(glen).enumerate() {
            slots[k % bs].push(c);
        }
        for (k, c) in batch.locals.chunks_exact_mut(llen).enumerate() {
            slots[k % bs].push(c);
        }
        let results: Vec<Result<Packed, DataError>> = slots
            .into_par_iter()
            .zip(positions.clone())
            .map(|(mut dst, pos)| self.sample(epoch, pos, order[pos], &mut dst))
            .collect();
        if let Some(m) = &self.opts.masking {
            self.mask(&mut batch, m, positions.len(), order.len());
        }
        let mut failed = Vec::new();
        for (b, r) in results.into_iter().enumerate() {
            let (label, index, fails) = r?;
            batch.labels[b] = label;
            batch.indices[b] = index;
            failed.extend(fails);
        }
        self.stats.samples.fetch_add(bs as u64, Ordering::Relaxed);
        add_ns(&self.stats.batch_ns, t0);
        Ok((batch, failed))
    }

    /// Draws the iBOT masks of `batch`'s 2·B global crops ([`crate::masking::batch_masks`]);
    /// `bs` images of this rank, an epoch order of `len`. The plan is the global batch's
    /// (every rank's images at this step, in one process's order), so several processes mask
    /// exactly as one process with their global batch.
    fn mask(&self, batch: &mut MultiCropBatch, m: &MaskingOptions, bs: usize, len: usize) {
        let shard = self.opts.shard;
        let w = shard.world_size.max(1);
        let start = batch.step as usize * self.opts.batch_size;
        // Rank r's q-th sample is global position q·W + r: image i of every rank, rank by rank.
        let global: Vec<usize> = (0..bs)
            .flat_map(|i| {
                (0..w).map(move |r| {
                    Shard {
                        rank: r,
                        world_size: w,
                    }
                    .position(start + i, len)
                })
            })
            .collect();
        let mine: Vec<usize> = (0..bs).map(|i| i * w + shard.rank).collect();
        batch.masks = batch_masks(m, self.opts.seed, batch.epoch, batch.step, &global, &mine);
        let (gh, gw) = m.generator.grid();
        batch.mask_grid = [gh, gw];
    }

    /// Loads, augments and packs the sample at `pos` of the epoch (dataset index `index`),
    /// replacing it if it fails; returns (label, index used, indices that failed).
    fn sample(
        &self,
        epoch: u64,
        pos: usize,
        index: usize,
        dst: &mut [&mut [u8]],
    ) -> Result<Packed, DataError> {
        let seed = self.opts.seed;
        let mut index = index;
        let mut rng = rng_for(seed, epoch, index as u64, Stream::Augment);
        let mut replace: Option<ChaCha8Rng> = None;
        let mut last_err = String::new();
        let mut failed = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            if self.stop.load(Ordering::Relaxed) {
                return Err(DataError::Spawn("loader stopped".into()));
            }
            let t0 = Instant::now();
            let loaded = self.dataset.load(index);
            add_ns(&self.stats.load_ns, t0);
            match loaded {
                Ok(sample) => {
                    let t1 = Instant::now();
                    let crops = self.transform.apply(&sample.image, &mut rng);
                    self.pack(&crops, dst)?;
                    add_ns(&self.stats.augment_ns, t1);
                    return Ok((sample.label, index as u64, failed));
                }
                Err(e) => {
                    let what = self.dataset.describe(index);
                    self.stats.record_failure(index, &what, &e);
                    failed.push(index);
                    last_err = format!("{what}: {e}");
                    let r = replace
                        .get_or_insert_with(|| rng_for(seed, epoch, pos as u64, Stream::Replace));
                    index = below(r, self.dataset.len());
                    rng = ChaCha8Rng::from_rng(r);
                }
            }
        }
        Err(DataError::TooManyFailures {
            failed: self.stats.distinct_failed(),
            fraction: self.opts.max_failed_fraction,
            len: self.dataset.len(),
            last: format!(
                "{MAX_ATTEMPTS} draws for one batch position all failed; last {last_err}"
            ),
        })
    }

    fn pack(&self, crops: &[image::RgbImage], dst: &mut [&mut [u8]]) -> Result<(), DataError> {
        let t = &self.transform;
        if crops.len() != dst.len() {
            return Err(DataError::Layout(format!(
                "transform returned {} crops, expected {}",
                crops.len(),
                dst.len()
            )));
        }
        for (v, (crop, out)) in crops.iter().zip(dst.iter_mut()).enumerate() {
            let side = if v < 2 {
                t.global_size()
            } else {
                t.local_size()
            };
            if crop.dimensions() != (side, side) {
                return Err(DataError::Layout(format!(
                    "transform returned a {:?} crop for view {v}, expected {side}x{side}",
                    crop.dimensions()
                )));
            }
            write_chw(crop, out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(0, 3, 100);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(0, 3, 100));
        assert_ne!(a, epoch_order(0, 4, 100));
        assert_ne!(a, epoch_order(1, 3, 100));
        assert_eq!(epoch_order(0, 0, 0), Vec::<usize>::new());
    }

    #[test]
    fn batch_counts() {
        assert_eq!(batches_per_epoch(10, 3, true), 3);
        assert_eq!(batches_per_epoch(10, 3, false), 4);
        assert_eq!(batches_per_epoch(2, 3, true), 0);
    }

    #[test]
    fn defaults_follow_the_official_values() {
        let o = LoaderOptions::default();
        // main_dino.py: --batch_size_per_gpu 64, --seed 0, DataLoader(drop_last=True).
        assert_eq!((o.batch_size, o.seed, o.drop_last), (64, 0, true));
        // main_dino.py: DistributedSampler(dataset, shuffle=True).
        assert!(o.shuffle);
        assert_eq!(o.epochs, 0..100);
    }
}
