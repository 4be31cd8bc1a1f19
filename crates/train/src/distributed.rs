//! Data-parallel DINO across processes (official `init_distributed_mode` + DDP), on c10d through
//! `dino-distributed`: what the training loop needs from the process group, and nothing when the
//! run is a single process.
//!
//! What each rank does differently from a single process, and why the result is the same as one
//! process with the global batch:
//! - it reads a disjoint shard of every epoch ([`dino_data::loader::Shard`]), whose union over
//!   the ranks at step `s` is exactly the single-process batch `s`;
//! - it starts from rank 0's weights (broadcast);
//! - gradients are averaged across ranks (bucketed all-reduce) before clipping and the
//!   optimizer step: the average of per-rank batch means is the global batch mean;
//! - the center update uses the average of the per-rank mean teacher logits, i.e. the official
//!   `sum over all ranks / (2 · global batch)`;
//! - with iBOT, the masks are drawn for the global batch and each rank takes its images' masks
//!   (`dino_data::masking::batch_masks`), the iBOT loss divides by the global crop count through
//!   the gradient average, and the iBOT center moves to the mean over every rank's masked
//!   patches (sums and counts all-reduced);
//! - only rank 0 writes checkpoints, metrics and progress.

use anyhow::Context;
use dino_distributed::{DistEnv, ProcessGroup, ReduceOp};
use std::time::Duration;
use tch::{nn::VarStore, Tensor};

/// Gradient bucket size, as DistributedDataParallel's default `bucket_cap_mb = 25`.
pub const BUCKET_BYTES: usize = 25 << 20;

/// This process's place in the job and its process group (`None` for a single process).
pub struct Dist {
    /// Rank of this process, `0..world_size`.
    pub rank: usize,
    /// Number of processes.
    pub world_size: usize,
    /// Index among the processes of this machine (selects the GPU).
    pub local_rank: usize,
    group: Option<ProcessGroup>,
}

impl Dist {
    /// A single process: every collective is the identity.
    pub fn single() -> Self {
        Self {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            group: None,
        }
    }

    /// Joins the job described by `torchrun`'s variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
    /// `MASTER_ADDR`, `MASTER_PORT`), or [`Dist::single`] when `WORLD_SIZE` is unset or 1.
    ///
    /// # Errors
    /// Malformed variables (named), or a rendezvous that does not complete within `timeout`.
    pub fn from_env(timeout: Duration) -> anyhow::Result<Self> {
        let Some(env) = DistEnv::from_env()? else {
            return Ok(Self::single());
        };
        if env.world_size == 1 {
            return Ok(Self::single());
        }
        // The error already names the address, the rank and the timeout.
        let group = ProcessGroup::new(&env, timeout)?;
        Ok(Self {
            rank: env.rank,
            world_size: env.world_size,
            local_rank: env.local_rank,
            group: Some(group),
        })
    }

    /// Rank 0 (or the only process): the one that writes files and logs progress.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// The data shard of this rank.
    pub fn shard(&self) -> dino_data::loader::Shard {
        dino_data::loader::Shard {
            rank: self.rank,
            world_size: self.world_size,
        }
    }

    /// Replaces every variable of `vs` by rank 0's (official: DDP broadcasts the module's
    /// parameters and buffers at construction).
    pub fn broadcast_from_main(&self, vs: &VarStore) -> anyhow::Result<()> {
        let Some(g) = &self.group else { return Ok(()) };
        let _guard = tch::no_grad_guard();
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mut t) in vars {
            g.broadcast(&mut t, 0)
                .with_context(|| format!("broadcasting {name} from rank 0"))?;
        }
        Ok(())
    }

    /// Averages `grads` across ranks in place, in [`BUCKET_BYTES`] buckets (DDP's gradient
    /// all-reduce). Returns the number of collectives (0 for a single process).
    pub fn average_grads(&self, grads: &mut [Tensor]) -> anyhow::Result<usize> {
        let Some(g) = &self.group else { return Ok(0) };
        g.all_reduce_many(grads, ReduceOp::Avg, BUCKET_BYTES)
            .context("averaging gradients across ranks")
    }

    /// Averages `t` across ranks in place (the identity for a single process).
    pub fn average(&self, t: &mut Tensor) -> anyhow::Result<()> {
        let Some(g) = &self.group else { return Ok(()) };
        g.all_reduce(t, ReduceOp::Avg)
            .context("averaging across ranks")
    }

    /// Sums `t` across ranks in place (the identity for a single process): the all-reduce of
    /// the official `sinkhorn_knopp_teacher`.
    pub fn sum(&self, t: &mut Tensor) -> anyhow::Result<()> {
        let Some(g) = &self.group else { return Ok(()) };
        g.all_reduce(t, ReduceOp::Sum)
            .context("summing across ranks")
    }

    /// The mean of `v` over the ranks (one small all-reduce; `v` for a single process).
    pub fn mean_scalar(&self, v: f64) -> anyhow::Result<f64> {
        if self.group.is_none() {
            return Ok(v);
        }
        let mut t = Tensor::from_slice(&[v]);
        self.average(&mut t)?;
        Ok(t.double_value(&[0]))
    }

    /// Waits for every rank (a no-op for a single process).
    pub fn barrier(&self) -> anyhow::Result<()> {
        let Some(g) = &self.group else { return Ok(()) };
        g.barrier().context("waiting for the other ranks")
    }
}
