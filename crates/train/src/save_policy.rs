//! When checkpoints are written ([`SavePolicy`], pure decisions) and writing them
//! ([`Checkpointer`], rank 0 only). The files themselves are [`crate::checkpoint`]'s.
//!
//! The rule, from the `[checkpoint]` section:
//! - the latest checkpoint (`checkpoint.*`) at the end of every `latest_every_epochs` epochs
//!   (official: every epoch), at the end of the last epoch, and at every epoch end that keeps a
//!   numbered copy;
//! - a numbered copy (`checkpoint{epoch:04}.*`) at the end of every epoch `e` with
//!   `e % saveckp_freq == 0` (official `--saveckp_freq`; 0: never);
//! - the latest checkpoint after every `every_steps` steps within an epoch (0: never);
//! - a run that stops where nothing was written (`--max-steps`, or after an epoch end skipped by
//!   `latest_every_epochs`) writes the latest checkpoint at its stop, so `--resume` continues
//!   from exactly there.

use crate::checkpoint::{self, CheckpointMeta};
use crate::epoch_sums::EpochSums;
use crate::objective::TrainMethod;
use dino_config::Config;
use std::path::{Path, PathBuf};

/// The position training resumes at after step `step` (0-based) of `epoch`, with `niter` steps
/// an epoch: the next step, or step 0 of the next epoch.
pub fn next_position(epoch: usize, step: usize, niter: usize) -> (usize, usize) {
    if step + 1 == niter {
        (epoch + 1, 0)
    } else {
        (epoch, step + 1)
    }
}

/// What a save writes besides the latest checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Save {
    /// Base name of the numbered copy kept too (`checkpoint0020`), if any.
    pub numbered: Option<String>,
}

/// The checkpoint schedule of a run (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavePolicy {
    /// Training epochs (`optim.epochs`): the last epoch's end is always saved.
    pub epochs: usize,
    /// Steps per epoch.
    pub niter: usize,
    /// `checkpoint.saveckp_freq`.
    pub saveckp_freq: usize,
    /// `checkpoint.every_steps`.
    pub every_steps: usize,
    /// `checkpoint.latest_every_epochs` (0 counts as 1).
    pub latest_every_epochs: usize,
}

impl SavePolicy {
    /// The policy of `cfg` for epochs of `niter` steps.
    pub fn new(cfg: &Config, niter: usize) -> Self {
        Self {
            epochs: cfg.optim.epochs,
            niter,
            saveckp_freq: cfg.checkpoint.saveckp_freq,
            every_steps: cfg.checkpoint.every_steps,
            latest_every_epochs: cfg.checkpoint.latest_every_epochs,
        }
    }

    /// What to write once step `step` (0-based) of `epoch` is done; `None`: nothing.
    pub fn after_step(&self, epoch: usize, step: usize) -> Option<Save> {
        let epoch_end = step + 1 == self.niter;
        let numbered = epoch_end
            .then(|| checkpoint::numbered_name(epoch, self.saveckp_freq))
            .flatten();
        let epoch_save = epoch_end
            && ((epoch + 1) % self.latest_every_epochs.max(1) == 0
                || epoch + 1 == self.epochs
                || numbered.is_some());
        let step_save = self.every_steps > 0 && (step + 1) % self.every_steps == 0;
        (epoch_save || step_save).then_some(Save { numbered })
    }
}

/// Writes the checkpoints [`SavePolicy`] asks for, and the one a stop needs; only on the
/// process that owns the files (rank 0), a no-op elsewhere.
pub struct Checkpointer<'a> {
    cfg: &'a Config,
    dir: PathBuf,
    policy: SavePolicy,
    world_size: usize,
    enabled: bool,
    stepped: bool,
    saved_at: Option<(usize, usize)>,
}

impl<'a> Checkpointer<'a> {
    /// Saves of the run configured by `cfg` into `dir`, with `niter` steps an epoch and
    /// `world_size` processes; writes only when `enabled` (rank 0).
    pub fn new(
        cfg: &'a Config,
        dir: &Path,
        niter: usize,
        world_size: usize,
        enabled: bool,
    ) -> Self {
        Self {
            cfg,
            dir: dir.to_path_buf(),
            policy: SavePolicy::new(cfg, niter),
            world_size,
            enabled,
            stepped: false,
            saved_at: None,
        }
    }

    /// After step `step` of `epoch`: writes what the policy asks for. `sums` holds the running
    /// epoch's summary sums up to this step (kept in a checkpoint written inside the epoch).
    ///
    /// # Errors
    /// The checkpoint cannot be written.
    pub fn after_step(
        &mut self,
        method: &TrainMethod,
        epoch: usize,
        step: usize,
        sums: &EpochSums,
    ) -> anyhow::Result<()> {
        if let Some(((e, s), numbered)) = self.due_after_step(epoch, step) {
            self.write(method, e, s, numbered.as_deref(), sums)?;
        }
        Ok(())
    }

    /// When the run stops at resume position (`epoch`, `step`): writes the latest checkpoint
    /// unless this invocation did no step or already wrote that position; `sums` as for
    /// [`Checkpointer::after_step`].
    ///
    /// # Errors
    /// The checkpoint cannot be written.
    pub fn at_stop(
        &mut self,
        method: &TrainMethod,
        epoch: usize,
        step: usize,
        sums: &EpochSums,
    ) -> anyhow::Result<()> {
        if self.due_at_stop(epoch, step) {
            self.write(method, epoch, step, None, sums)?;
        }
        Ok(())
    }

    /// The save due after step `step` of `epoch`, as (resume position, numbered copy), noted
    /// as written.
    fn due_after_step(
        &mut self,
        epoch: usize,
        step: usize,
    ) -> Option<((usize, usize), Option<String>)> {
        self.stepped = true;
        let save = self.policy.after_step(epoch, step)?;
        let position = next_position(epoch, step, self.policy.niter);
        self.saved_at = Some(position);
        Some((position, save.numbered))
    }

    /// Whether a stop at resume position (`epoch`, `step`) must write the latest checkpoint.
    fn due_at_stop(&self, epoch: usize, step: usize) -> bool {
        self.stepped && self.saved_at != Some((epoch, step))
    }

    /// Writes the latest checkpoint (and the `numbered` copy) for resume position
    /// (`epoch`, `step`), with `sums` when they are that position's epoch so far.
    fn write(
        &mut self,
        method: &TrainMethod,
        epoch: usize,
        step: usize,
        numbered: Option<&str>,
        sums: &EpochSums,
    ) -> anyhow::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let cfg = self.cfg;
        let mut meta = CheckpointMeta::new(cfg, epoch, step, epoch * self.policy.niter + step);
        meta.precision = method.precision().to_string();
        // Optimizer steps are whole accumulation windows: checkpoints sit at their boundaries.
        meta.data_position = (step * cfg.optim.step_batch_size() * self.world_size) as u64;
        meta.world_size = self.world_size;
        meta.seed = cfg.runtime.seed;
        meta.epoch_sums =
            (step > 0 && sums.epoch == epoch && sums.steps == step).then(|| sums.clone());
        meta.versions
            .insert("dino".into(), env!("CARGO_PKG_VERSION").into());
        meta.versions
            .insert("libtorch".into(), crate::runtime::LIBTORCH_VERSION.into());
        checkpoint::save_checkpoint(&self.dir, &method.checkpoint_tensors()?, &meta, numbered)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (epoch, step, numbered copy) of every step after which something is written.
    type Saves = Vec<(usize, usize, Option<String>)>;

    /// The saves of a whole run under `policy`.
    fn saves(policy: &SavePolicy) -> Saves {
        let mut out = Vec::new();
        for epoch in 0..policy.epochs {
            for step in 0..policy.niter {
                if let Some(s) = policy.after_step(epoch, step) {
                    out.push((epoch, step, s.numbered));
                }
            }
        }
        out
    }

    fn policy(epochs: usize, niter: usize, freq: usize, every: usize, latest: usize) -> SavePolicy {
        SavePolicy {
            epochs,
            niter,
            saveckp_freq: freq,
            every_steps: every,
            latest_every_epochs: latest,
        }
    }

    #[test]
    fn save_decisions_over_a_table_of_settings() {
        let n = |e: usize| Some(format!("checkpoint{e:04}"));
        let ends = |epochs: &[usize]| -> Saves { epochs.iter().map(|&e| (e, 2, None)).collect() };
        // (policy: epochs, niter, saveckp_freq, every_steps, latest_every_epochs) → saves.
        let table: Vec<(SavePolicy, Saves)> = vec![
            // Official: latest after every epoch, nothing numbered.
            (policy(4, 3, 0, 0, 1), ends(&[0, 1, 2, 3])),
            // Numbered every 2 epochs, from epoch 0 (official rule).
            (
                policy(4, 3, 2, 0, 1),
                vec![(0, 2, n(0)), (1, 2, None), (2, 2, n(2)), (3, 2, None)],
            ),
            // latest_every_epochs = 3: epoch 3 (1-based) and the last one only.
            (policy(5, 3, 0, 0, 3), ends(&[2, 4])),
            // ... but an epoch that keeps a numbered copy is always written.
            (
                policy(5, 3, 2, 0, 3),
                vec![(0, 2, n(0)), (2, 2, n(2)), (4, 2, n(4))],
            ),
            // every_steps = 2 within 3-step epochs: steps 1 (2nd) and the epoch ends.
            (
                policy(2, 3, 0, 2, 1),
                vec![(0, 1, None), (0, 2, None), (1, 1, None), (1, 2, None)],
            ),
            // every_steps alone still writes at a skipped epoch end when it falls there.
            (
                policy(2, 4, 0, 2, 5),
                vec![(0, 1, None), (0, 3, None), (1, 1, None), (1, 3, None)],
            ),
            // latest_every_epochs = 0 behaves as 1.
            (policy(2, 3, 0, 0, 0), ends(&[0, 1])),
        ];
        for (p, want) in table {
            assert_eq!(saves(&p), want, "{p:?}");
        }
    }

    #[test]
    fn a_stop_writes_unless_its_position_was_just_saved() {
        let mut cfg = Config::default();
        cfg.optim.epochs = 3;
        cfg.checkpoint.saveckp_freq = 0;
        cfg.checkpoint.every_steps = 0;
        cfg.checkpoint.latest_every_epochs = 2;
        let dir = Path::new("unused");
        // No step done: nothing to write.
        let c = Checkpointer::new(&cfg, dir, 6, 1, true);
        assert!(!c.due_at_stop(0, 0));
        // A stop at the end of epoch 0, which latest_every_epochs = 2 skipped: written.
        let mut c = Checkpointer::new(&cfg, dir, 6, 1, true);
        for step in 0..6 {
            assert_eq!(c.due_after_step(0, step), None);
        }
        assert!(c.due_at_stop(1, 0));
        // A stop right after a saved epoch end: already on disk.
        for step in 0..6 {
            c.due_after_step(1, step);
        }
        assert!(!c.due_at_stop(2, 0));
        // A stop inside an epoch: written.
        c.due_after_step(2, 0);
        assert!(c.due_at_stop(2, 1));
    }

    #[test]
    fn positions_roll_over_at_epoch_ends() {
        assert_eq!(next_position(0, 0, 3), (0, 1));
        assert_eq!(next_position(0, 2, 3), (1, 0));
        assert_eq!(next_position(4, 0, 1), (5, 0));
    }
}
