//! Multi-process collectives for data-parallel training, on the engine behind torch.distributed:
//! libtorch's c10d, with a TCP rendezvous store and the Gloo backend (CPU tensors).
//!
//! Launch one process per worker with `torchrun` (or set its variables yourself: `RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`); each reads them with
//! [`DistEnv::from_env`] and joins with [`ProcessGroup::new`]. Semantics follow
//! torch.distributed: every rank calls the same collectives in the same order. A dead or missing
//! peer gives an error within the configured timeout, never a hang.
//!
//! The collectives are implemented by libtorch itself; this crate is a small C++ shim
//! (`csrc/dist.cpp`, compiled by `build.rs`) and the safe API below.
//!
//! ```no_run
//! use std::time::Duration;
//! use dino_dist::{DistEnv, ProcessGroup, ReduceOp};
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
//! Not yet: NCCL (CUDA tensors). The `nccl` backend would be a second shim path built on
//! `c10d::ProcessGroupNCCL` behind a cargo feature, against the CUDA and NCCL headers of PyPI's
//! `nvidia-*` wheels; until then CUDA tensors must be copied to the CPU (Gloo may also accept
//! CUDA tensors itself, by staging them through host memory, which is slow).

pub mod env;
mod ffi;
pub mod group;

pub use env::DistEnv;
pub use group::{ProcessGroup, ReduceOp};
