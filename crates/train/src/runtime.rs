//! Process-wide runtime set-up: the thread pools, and the libtorch version a checkpoint records.

use dino_config::RuntimeConfig;
use dino_distributed::env::local_world_size;
use serde::Serialize;

/// libtorch version this binary was linked against (read from the install at build time).
pub const LIBTORCH_VERSION: &str = env!("DINO_LIBTORCH_VERSION");

/// Thread counts actually in force after [`apply_threads`].
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Threads {
    /// Logical cores seen by the process.
    pub cores: usize,
    /// libtorch intra-op threads.
    pub torch: usize,
    /// Augmentation (rayon) threads the data loader will use.
    pub data: usize,
}

/// Sets libtorch's intra-op pool from `runtime.torch_threads` (0 = all cores) and resolves the
/// augmentation pool size from `runtime.data_threads` (0 = all cores). Call once at start-up:
/// both pools default to the core count and would otherwise oversubscribe small machines.
///
/// Under a launcher that sets `LOCAL_WORLD_SIZE` (`dino launch`, torchrun) "all cores" means
/// this process's share, `cores / LOCAL_WORLD_SIZE` (at least 1): N processes each spinning up
/// a pool of every core slow each other down several times over on a CPU machine.
pub fn apply_threads(rt: &RuntimeConfig) -> Threads {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let share = (cores / local_world_size()).max(1);
    let torch = if rt.torch_threads == 0 {
        share
    } else {
        rt.torch_threads
    };
    tch::set_num_threads(torch as i32);
    let data = if rt.data_threads == 0 {
        share
    } else {
        rt.data_threads
    };
    Threads {
        cores,
        torch: tch::get_num_threads().max(1) as usize,
        data,
    }
}
