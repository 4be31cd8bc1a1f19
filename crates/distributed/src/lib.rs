//! Multi-process collectives for data-parallel training, on the engine behind torch.distributed:
//! libtorch's c10d, with a TCP rendezvous store and the Gloo backend (CPU tensors).
//!
//! Launch one process per worker with `torchrun` or `dino launch` ([`env::launch`]), or set
//! torchrun's variables yourself (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
//! `MASTER_PORT`); each reads them with [`DistEnv::from_env`] and joins with
//! [`ProcessGroup::new`]. Both sides of that environment contract live in [`env`](mod@env).
//! Semantics follow torch.distributed: every rank calls the same collectives in the same order. A
//! dead or missing peer gives an error within the configured timeout, never a hang.
//!
//! The collectives are implemented by libtorch itself; this crate is a small C++ shim
//! (`csrc/dist.cpp`, compiled by `build.rs`) and the safe API below.
//!
//! ```no_run
//! use std::time::Duration;
//! use dino_distributed::{DistEnv, ProcessGroup, ReduceOp};
//!
//! # fn main() -> anyhow::Result<()> {
//! let env = DistEnv::from_env()?.expect("launch with torchrun (WORLD_SIZE is unset)");
//! let group = ProcessGroup::new(&env, Duration::from_secs(300))?;
//! let mut grad = tch::Tensor::ones([3], (tch::Kind::Float, tch::Device::Cpu));
//! group.all_reduce(&mut grad, ReduceOp::Avg)?; // the mean of every rank's tensor
//! let mut weights = tch::Tensor::randn([3], (tch::Kind::Float, tch::Device::Cpu));
//! group.broadcast(&mut weights, 0)?; // rank 0's values everywhere
//! group.barrier()?;
//! # Ok(())
//! # }
//! ```
//!
//! # CUDA tensors
//!
//! With the cargo feature `nccl` (off by default), collectives on CUDA tensors run on NCCL
//! (c10d's `ProcessGroupNCCL`, created by the first such collective and sharing the rendezvous),
//! CPU tensors and barriers stay on Gloo: torch.distributed's `"cpu:gloo,cuda:nccl"` group. Each
//! rank must use its own GPU (`tch::Device::Cuda(env.local_rank)`). Building it needs the CUDA and
//! NCCL headers (see `build.rs`): PyPI's `nvidia-nccl-cu13` and `nvidia-cuda-runtime` wheels
//! (installed with torch) plus `nvidia-cuda-crt` and `nvidia-cuda-cccl` of the same CUDA version
//! (not installed by `scripts/setup.sh`; `DINO_DIST_CUDA_INCLUDE` may name their `include/`).
//! This path builds and links here, but has not yet run on GPUs (its test needs two). Without the
//! feature, CUDA tensors go to Gloo, whose c10d backend copies them through host memory (slow;
//! not tested here, there being no GPU).

/// The torchrun environment contract: read by each worker, written by `dino launch`.
pub mod env;
mod ffi;
pub mod fused;
/// Process groups on c10d and their collectives.
pub mod group;

pub use env::{launch, DistEnv, LaunchOptions};
pub use group::{ProcessGroup, ReduceOp};
