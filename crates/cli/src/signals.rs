//! SIGINT / SIGTERM during `dino train`: the first one asks the loop to stop after the step
//! under way (it then writes the checkpoint and says how to resume); a second one ends the
//! process at once, as the default action would.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Set by the first SIGINT or SIGTERM.
pub static STOP: AtomicBool = AtomicBool::new(false);
/// The signal that set [`STOP`].
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    if STOP.swap(true, Ordering::SeqCst) {
        // The second signal: the default action (async-signal-safe calls only).
        // SAFETY: signal and raise are async-signal-safe (POSIX.1 signal-safety(7)).
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        return;
    }
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// Installs the handler for SIGINT and SIGTERM.
///
/// # Errors
/// When `sigaction` fails.
pub fn install() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler that only touches atomics and calls
        // async-signal-safe functions; SA_RESTART keeps the loader's blocking reads going.
        let rc = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            act.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The signal received, as (name, number), once [`STOP`] is set.
pub fn received() -> Option<(&'static str, i32)> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s if s == libc::SIGTERM => Some(("SIGTERM", s)),
        s => Some(("SIGINT", s)),
    }
}
