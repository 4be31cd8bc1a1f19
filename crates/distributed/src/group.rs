//! The process group: rendezvous, then collectives on Gloo, through the C++ shim.
use std::ffi::{c_void, CString};
use std::ops::Range;
use std::time::Duration;

use anyhow::{bail, Context};
use tch::Tensor;

use crate::env::DistEnv;
use crate::ffi;

/// How [`ProcessGroup::all_reduce`] combines the ranks' tensors (torch.distributed's `ReduceOp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum over ranks.
    Sum,
    /// Element-wise mean over ranks: the sum divided by the world size. Gloo has no native
    /// average (torch.distributed rejects `ReduceOp.AVG` on Gloo), so the shim sums and then
    /// divides; floating-point tensors only.
    Avg,
}

/// One process's membership of a group of `world_size` processes that run collectives together:
/// torch.distributed's default process group with the Gloo backend (CPU tensors).
///
/// Every rank must call the same collectives, in the same order, with tensors of the same shape
/// and dtype, exactly as with torch.distributed. A collective that fails (a peer died, or did not
/// join within the timeout) leaves the group unusable: drop it and stop the job.
///
/// `Send` (it may move to another thread) but not `Sync`: collectives are issued from one thread
/// at a time, which is also what keeps their order the same on every rank. Dropping it destroys
/// the group and, on rank 0, the rendezvous store; call [`ProcessGroup::barrier`] first if other
/// ranks may still be rendezvousing.
#[derive(Debug)]
pub struct ProcessGroup {
    raw: *mut ffi::Group,
    rank: usize,
    world_size: usize,
    timeout: Duration,
}

// SAFETY: the c10d objects behind `raw` may be used from any thread, one at a time; the raw
// pointer keeps `ProcessGroup` !Sync.
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Joins the group described by `env`: connects to the TCP rendezvous store at
    /// `master_addr:master_port` (served by rank 0, which waits for every rank to connect), then
    /// sets up Gloo's connections between every pair of ranks (as
    /// `torch.distributed.init_process_group("gloo", init_method="env://", timeout=timeout)`).
    ///
    /// `timeout` bounds the rendezvous and, later, every collective: a rank that never arrives
    /// makes this (or the collective) fail after `timeout` instead of hanging. When the
    /// `GLOO_SOCKET_IFNAME` variable is set, Gloo binds that interface; otherwise loopback when
    /// `master_addr` is a loopback address, else this machine's hostname.
    ///
    /// Errors: the store cannot be bound or reached, a rank is missing after `timeout`, or the
    /// arguments are invalid (`rank >= world_size`, zero timeout, NUL in `master_addr`).
    pub fn new(env: &DistEnv, timeout: Duration) -> anyhow::Result<ProcessGroup> {
        let world_size = i32::try_from(env.world_size).context("world size too large")?;
        let rank = i32::try_from(env.rank).context("rank too large")?;
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        if timeout_ms == 0 {
            bail!("the process group timeout must be at least 1 ms");
        }
        let addr = CString::new(env.master_addr.as_str()).context("MASTER_ADDR contains NUL")?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `addr` outlives the call; `raw` is written only on success.
        let err = unsafe {
            ffi::dino_dist_init(
                addr.as_ptr(),
                env.master_port,
                rank,
                world_size,
                timeout_ms,
                &mut raw,
            )
        };
        ffi::take_error(err).with_context(|| {
            format!(
                "rank {} of {}: joining the process group at {}:{} (timeout {:?})",
                env.rank, env.world_size, env.master_addr, env.master_port, timeout
            )
        })?;
        Ok(ProcessGroup {
            raw,
            rank: env.rank,
            world_size: env.world_size,
            timeout,
        })
    }

    /// This process's rank, `0..world_size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes in the group.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// Replaces `t`, on every rank, by the element-wise reduction of all ranks' `t`
    /// (`torch.distributed.all_reduce(t, op)`). Any shape; dtype and shape must match across
    /// ranks; a non-contiguous `t` is reduced through a contiguous copy. Autograd does not record
    /// it (as in torch.distributed), so gradients of leaves can be reduced in place.
    ///
    /// Errors: a peer died or did not join within the timeout, [`ReduceOp::Avg`] on an integer
    /// tensor, or a tensor Gloo cannot reduce.
    pub fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> anyhow::Result<()> {
        let op = match op {
            ReduceOp::Sum => ffi::SUM,
            ReduceOp::Avg => ffi::AVG,
        };
        // SAFETY: `raw` is alive while `self` is; the tensor pointer is an `at::Tensor*` that
        // `t` keeps alive for the call.
        let err = unsafe { ffi::dino_dist_all_reduce(self.raw, t.as_mut_ptr() as *mut c_void, op) };
        ffi::take_error(err).with_context(|| self.who())
    }

    /// [`ProcessGroup::all_reduce`] of every tensor of `ts`, in buckets: consecutive tensors are
    /// flattened into one buffer of at most `bucket_bytes` bytes, reduced with one collective and
    /// copied back (the idea of DistributedDataParallel's gradient buckets). A tensor larger than
    /// `bucket_bytes` is reduced alone, in place. Returns the number of collectives issued.
    ///
    /// All tensors must share one dtype and device (error otherwise, naming the first that
    /// differs); every rank must pass the same shapes in the same order.
    pub fn all_reduce_many(
        &self,
        ts: &mut [Tensor],
        op: ReduceOp,
        bucket_bytes: usize,
    ) -> anyhow::Result<usize> {
        let Some(first) = ts.first() else {
            return Ok(0);
        };
        let (kind, device) = (first.f_kind()?, first.device());
        for (i, t) in ts.iter().enumerate() {
            let (k, d) = (t.f_kind()?, t.device());
            if (k, d) != (kind, device) {
                bail!("all_reduce_many: tensor {i} is {k:?} on {d:?}, tensor 0 is {kind:?} on {device:?}");
            }
        }
        let sizes: Vec<usize> = ts
            .iter()
            .map(|t| t.numel() * kind.elt_size_in_bytes())
            .collect();
        let buckets = plan_buckets(&sizes, bucket_bytes);
        for range in &buckets {
            let bucket = &mut ts[range.clone()];
            if let [t] = bucket {
                self.all_reduce(t, op)?;
                continue;
            }
            let mut flat = tch::no_grad(|| {
                let parts: Vec<Tensor> = bucket.iter().map(|t| t.reshape([-1])).collect();
                Tensor::f_cat(&parts, 0)
            })?;
            self.all_reduce(&mut flat, op)?;
            tch::no_grad(|| -> anyhow::Result<()> {
                let mut offset = 0i64;
                for t in bucket.iter_mut() {
                    let n = t.numel() as i64;
                    t.f_copy_(&flat.f_narrow(0, offset, n)?.f_view_as(t)?)?;
                    offset += n;
                }
                Ok(())
            })?;
        }
        Ok(buckets.len())
    }

    /// Replaces `t` on every rank by rank `root`'s `t` (`torch.distributed.broadcast(t, src=root)`),
    /// e.g. to start every rank from rank 0's weights. Shape and dtype must match across ranks.
    ///
    /// Errors: `root >= world_size()`, a peer died or did not join within the timeout.
    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> anyhow::Result<()> {
        if root >= self.world_size {
            bail!(
                "broadcast: root rank {root} is not below the world size {}",
                self.world_size
            );
        }
        // SAFETY: as in `all_reduce`; `root` fits i32 because world_size does.
        let err = unsafe {
            ffi::dino_dist_broadcast(self.raw, t.as_mut_ptr() as *mut c_void, root as i32)
        };
        ffi::take_error(err).with_context(|| self.who())
    }

    /// Returns once every rank has called `barrier` (`torch.distributed.barrier()`).
    ///
    /// Errors: a peer died or did not arrive within the timeout.
    pub fn barrier(&self) -> anyhow::Result<()> {
        // SAFETY: `raw` is alive while `self` is.
        let err = unsafe { ffi::dino_dist_barrier(self.raw) };
        ffi::take_error(err).with_context(|| self.who())
    }

    fn who(&self) -> String {
        format!(
            "rank {} of {} (timeout {:?})",
            self.rank, self.world_size, self.timeout
        )
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `dino_dist_init` and is destroyed exactly once.
        unsafe { ffi::dino_dist_destroy(self.raw) };
    }
}

/// Splits tensors of byte sizes `sizes` into consecutive runs whose total stays within
/// `bucket_bytes`; a tensor larger than that forms a run of its own. Empty tensors join the
/// current run.
fn plan_buckets(sizes: &[usize], bucket_bytes: usize) -> Vec<Range<usize>> {
    let mut buckets = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && bytes + size > bucket_bytes {
            buckets.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        buckets.push(start..sizes.len());
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::plan_buckets;

    #[test]
    fn buckets_are_consecutive_and_bounded() {
        assert_eq!(plan_buckets(&[], 10), vec![]);
        assert_eq!(plan_buckets(&[4, 4, 4], 8), vec![0..2, 2..3]);
        assert_eq!(plan_buckets(&[4, 20, 4], 8), vec![0..1, 1..2, 2..3]);
        assert_eq!(plan_buckets(&[20], 8), vec![0..1]);
        assert_eq!(plan_buckets(&[3, 3, 3], 0), vec![0..1, 1..2, 2..3]);
        assert_eq!(plan_buckets(&[3, 3, 3], 100), vec![0..3]);
    }
}
