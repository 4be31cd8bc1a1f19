//! Runtime CPU dispatch for the pixel loops. The crate is built for generic x86-64 (SSE2), where
//! 32-bit integer multiplies and 8-lane float ops do not exist; the loops are written so that the
//! compiler vectorises them, and [`avx2_dispatch!`] compiles them a second time with AVX2
//! enabled, picked at run time. Results are identical either way (integer arithmetic, and IEEE
//! float ops without FMA contraction), so the output does not depend on the machine.

/// `avx2_dispatch!(fn name(a: A, ..) = imp;)` defines `fn name` that calls `imp` (which must be
/// `#[inline(always)]`, as must everything it calls, to be compiled for AVX2 too) through a
/// copy compiled with AVX2 enabled when the CPU has it, and directly otherwise.
macro_rules! avx2_dispatch {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) = $imp:path;) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    $imp($($arg),*)
                }
                // SAFETY: the CPU supports AVX2 (checked just above), `avx2`'s only requirement.
                return unsafe { avx2($($arg),*) };
            }
            $imp($($arg),*)
        }
    };
}
pub(crate) use avx2_dispatch;
