//! Process-wide runtime set-up: thread pools, the allocator, and the data of the environment
//! report that `dino env` prints.

use dino_config::RuntimeConfig;
use dino_distributed::env::local_world_size;
use serde::Serialize;

/// libtorch version this binary was linked against (read from the install at build time).
pub const LIBTORCH_VERSION: &str = env!("DINO_LIBTORCH_VERSION");
/// CUDA version of that libtorch build (`unknown`/`None` for a CPU-only build).
pub const LIBTORCH_CUDA: &str = env!("DINO_LIBTORCH_CUDA");
/// The libtorch `lib/` folder baked into the binary's rpath.
pub const LIBTORCH_LIB: &str = env!("DINO_LIBTORCH_LIB");

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

/// Keeps freed tensor memory in the process instead of handing it back to the kernel.
///
/// libtorch's CPU allocator takes every tensor from glibc `malloc`. A DINO step allocates and
/// frees the same few-MB activation buffers thousands of times; with glibc's defaults, blocks
/// that size are `mmap`ed, unmapped on free and page-faulted in (zeroed) again on the next step,
/// which cost 5-10 % of a CPU step (perf: page faults, `clear_page`, heap trimming). This sets
/// the mmap threshold to its maximum (32 MiB, so activation buffers come from the heap) and
/// stops trimming the heap below 1 GiB of free space. Call once at start-up, before the first
/// tensor. Returns whether glibc accepted both settings (always false on other C libraries).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is called before the other
        // threads exist.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Whether `libtorch_cuda.so` is mapped into this process: false on a CUDA build of libtorch
/// means the linker dropped it (see the build script), and CUDA would silently be unavailable.
pub fn libtorch_cuda_loaded() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.contains("libtorch_cuda.so"))
        .unwrap_or(false)
}

/// What `dino env` reports: the libtorch build, CUDA, the device, threads and precision.
#[derive(Debug, Clone, Serialize)]
pub struct EnvReport {
    /// Version of the dino crates.
    pub dino_version: String,
    /// libtorch version (e.g. `2.13.0+cu130`).
    pub libtorch_version: String,
    /// CUDA version libtorch was built with, if any.
    pub libtorch_cuda: String,
    /// libtorch library folder (rpath).
    pub libtorch_lib: String,
    /// `libtorch_cuda.so` mapped into the process (CUDA support linked in).
    pub cuda_linked: bool,
    /// CUDA runtime usable (a driver and at least one device).
    pub cuda_available: bool,
    /// Number of CUDA devices.
    pub cuda_devices: i64,
    /// cuDNN usable.
    pub cudnn_available: bool,
    /// The device the config's `runtime.device` resolves to.
    pub device: String,
    /// Thread counts.
    pub threads: Threads,
    /// This CPU's native-bf16 flags present (`avx512_bf16`, `amx_bf16`); empty when bf16 is
    /// emulated on this CPU.
    pub cpu_bf16_flags: Vec<String>,
    /// What `runtime.precision = "auto"` resolves to on `device` here (`fp32` or `bf16`).
    pub auto_precision: String,
    /// Why `auto` resolves so.
    pub auto_precision_reason: String,
    /// The config's own `runtime.precision` (`fp32`, `bf16` or `auto`).
    pub config_precision: String,
    /// What the config's `runtime.precision` resolves to on `device` here.
    pub precision: String,
}

impl EnvReport {
    /// Gathers the report, applying the thread settings of `rt` first.
    ///
    /// # Errors
    /// When `runtime.device` asks for a CUDA device that does not exist.
    pub fn collect(rt: &RuntimeConfig) -> anyhow::Result<Self> {
        let threads = apply_threads(rt);
        let device = dino_model::select_device(rt.device)?;
        let support = dino_model::Bf16Support::detect(device);
        let auto = dino_model::resolve_precision(dino_config::Precision::Auto, support);
        Ok(Self {
            dino_version: env!("CARGO_PKG_VERSION").into(),
            libtorch_version: LIBTORCH_VERSION.into(),
            libtorch_cuda: LIBTORCH_CUDA.into(),
            libtorch_lib: LIBTORCH_LIB.into(),
            cuda_linked: libtorch_cuda_loaded(),
            cuda_available: tch::Cuda::is_available(),
            cuda_devices: tch::Cuda::device_count(),
            cudnn_available: tch::Cuda::cudnn_is_available(),
            device: format!("{device:?}"),
            threads,
            cpu_bf16_flags: dino_model::CpuBf16Flags::detect()
                .names()
                .into_iter()
                .map(String::from)
                .collect(),
            auto_precision: auto.resolved.to_string(),
            auto_precision_reason: auto.reason,
            config_precision: rt.precision.to_string(),
            precision: dino_model::resolve_precision(rt.precision, support)
                .resolved
                .to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_allocator_settings() {
        assert!(super::keep_freed_memory());
    }
}
