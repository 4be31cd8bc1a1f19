//! How libtorch's OpenMP threads wait between parallel regions: a choice for the whole `dino`
//! process, made here in the binary (as the allocator's, `alloc.rs`).
//!
//! libtorch's CPU kernels run on GNU OpenMP (libgomp), whose threads by default spin for about
//! 300,000 iterations at every barrier before they sleep. A training step is thousands of short
//! parallel regions, and on a machine where anything else wants the cores — the data loader's
//! own threads beside the step, other processes — a spinning thread holds a core that the
//! thread it waits for needs: measured on the 2-core AMD EPYC Zen 4 beside other jobs (load
//! average 8-9), the CIFAR-10 preset's model-bound step ran at 10.8 images/s with the default,
//! 89 with `OMP_WAIT_POLICY=PASSIVE` and 44 with one thread (docs/bench/train_step.md). libgomp
//! reads its settings once, when it is loaded, before `main` runs; so when neither
//! `OMP_WAIT_POLICY` nor `GOMP_SPINCOUNT` is set, the binary starts itself again with
//! `OMP_WAIT_POLICY=PASSIVE` (one `exec`, before any thread or tensor exists). Set either
//! variable to choose otherwise (`OMP_WAIT_POLICY=ACTIVE` restores libgomp's default spin).

/// The variable that marks a process already started again, so it never loops.
const RESTARTED: &str = "DINO_OMP_WAIT_SET";

/// Starts this binary again with `OMP_WAIT_POLICY=PASSIVE` unless the user chose a policy or
/// this is that second start. Returns only when no restart happened (or it failed: the process
/// then goes on with libgomp's default). Call first thing in `main`.
pub fn wait_passively() {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let chosen = ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT", RESTARTED]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if chosen {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
        // `exec` only returns on failure; the process then simply continues as it is.
        let _ = std::process::Command::new(&exe)
            .arg0(arg0)
            .args(args)
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .env(RESTARTED, "1")
            .exec();
    }
}

/// The waiting policy in force, for reports (`dino env`, `dino bench train`).
pub fn describe() -> String {
    match (
        std::env::var("OMP_WAIT_POLICY"),
        std::env::var("GOMP_SPINCOUNT"),
    ) {
        (Ok(p), Ok(s)) => format!("OMP_WAIT_POLICY={p} GOMP_SPINCOUNT={s}"),
        (Ok(p), Err(_)) => format!("OMP_WAIT_POLICY={p}"),
        (Err(_), Ok(s)) => format!("GOMP_SPINCOUNT={s}"),
        (Err(_), Err(_)) => "libgomp default (spin, then sleep)".into(),
    }
}
