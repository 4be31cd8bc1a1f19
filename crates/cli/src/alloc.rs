//! The process's allocator settings: a choice for the whole `dino` process, so it is made here
//! in the binary rather than by a library on its users' behalf.

/// Keeps freed tensor memory in the process instead of handing it back to the kernel.
///
/// libtorch's CPU allocator takes every tensor from glibc `malloc`. A DINO step allocates and
/// frees the same few-MB activation buffers thousands of times; with glibc's defaults, blocks
/// that size are `mmap`ed, unmapped on free and page-faulted in (zeroed) again on the next step,
/// which cost 5-10 % of a CPU step (perf: page faults, `clear_page`, heap trimming). This sets
/// the mmap threshold to its maximum (32 MiB, so activation buffers come from the heap), stops
/// trimming the heap below 1 GiB of free space, and turns `mmap`ed blocks off altogether
/// (`M_MMAP_MAX = 0`): glibc caps the threshold at 32 MiB, and the blocks above it — ViT-S/16's
/// 65536-way last layer alone allocates about four 64 MiB tensors a step (its normalized weight for
/// student and teacher, the weight's gradient and `weight_v`'s) — were still mapped and faulted
/// in page by page every step: 59,000 page faults per ViT-S/16 small-crop step, about 10 % of
/// it on a 2-core AMD EPYC Zen 3 (docs/BENCHMARKS.md, "The allocator, a one-pass EMA and packed
/// crop groups"); none now. Freed blocks of any size go back
/// to the heap and are reused. Call once at start-up, before the first tensor. Returns whether
/// glibc accepted the three settings (always false on other C libraries).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    let accepted = {
        // SAFETY: mallopt only changes allocator parameters; it is called before the other
        // threads exist.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
                && libc::mallopt(libc::M_MMAP_MAX, 0) == 1
        }
    };
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let accepted = false;
    ACCEPTED.store(accepted, std::sync::atomic::Ordering::Relaxed);
    accepted
}

static ACCEPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The allocator settings in force, in the words `benches/dino_step_torch.py` prints for the
/// PyTorch side (`dino bench train` reports them, so a comparison shows both).
pub fn describe() -> &'static str {
    if ACCEPTED.load(std::sync::atomic::Ordering::Relaxed) {
        "glibc mmap_threshold=32MiB trim_threshold=1GiB mmap_max=0"
    } else {
        "glibc defaults (mallopt refused)"
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
