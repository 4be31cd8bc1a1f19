//! Device selection and bf16 mixed precision.

use crate::error::ModelError;
use dino_config::Precision;
use tch::{Cuda, Device};

/// Resolves a device request as produced by `dino_config::RuntimeConfig::device_request()`:
/// `None` = auto (CUDA device 0 when libtorch sees one, else CPU), `Some(None)` = CPU,
/// `Some(Some(i))` = CUDA device i.
///
/// # Errors
/// [`ModelError::Device`] when CUDA is requested but unavailable or the index is out of range.
pub fn select_device(req: Option<Option<usize>>) -> Result<Device, ModelError> {
    match req {
        None => Ok(Device::cuda_if_available()),
        Some(None) => Ok(Device::Cpu),
        Some(Some(i)) => {
            if !Cuda::is_available() {
                return Err(ModelError::Device(format!(
                    "cuda:{i} requested but libtorch sees no CUDA device (driver missing, or a \
                     CPU-only libtorch)"
                )));
            }
            let n = Cuda::device_count();
            if i as i64 >= n {
                return Err(ModelError::Device(format!(
                    "cuda:{i} requested, {n} device(s) present"
                )));
            }
            Ok(Device::Cuda(i))
        }
    }
}

// libtorch's C++ autocast state (`at::autocast::*`, all thread-local). tch binds only the
// CUDA-only `set_enabled`, which also uses CUDA's default autocast dtype, fp16. `DeviceType` and
// `ScalarType` are int8 enums in c10 (`CPU = 0`, `CUDA = 1`; `Half = 5`, `BFloat16 = 15`); plain
// functions with integer and bool arguments share the C calling convention under the Itanium C++
// ABI.
unsafe extern "C" {
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device_type: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device_type: i8) -> i8;
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn at_set_autocast_enabled(device_type: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn at_is_autocast_enabled(device_type: i8) -> bool;
    #[link_name = "_ZN2at8autocast17increment_nestingEv"]
    fn at_increment_nesting() -> i32;
    #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
    fn at_decrement_nesting() -> i32;
    #[link_name = "_ZN2at8autocast11clear_cacheEv"]
    fn at_clear_cache();
}
const DEVICE_CPU: i8 = 0;
const DEVICE_CUDA: i8 = 1;
const SCALAR_HALF: i8 = 5;
const SCALAR_BF16: i8 = 15;

fn device_type(device: Device) -> i8 {
    if device.is_cuda() {
        DEVICE_CUDA
    } else {
        DEVICE_CPU
    }
}

/// The dtype autocast casts to on `device`'s type (thread-local libtorch state):
/// `Kind::BFloat16`, `Kind::Half`, or `Kind::Float` for anything else.
pub fn autocast_kind(device: Device) -> tch::Kind {
    // SAFETY: reads a thread-local enum value; no pointers involved.
    match unsafe { at_get_autocast_dtype(device_type(device)) } {
        SCALAR_BF16 => tch::Kind::BFloat16,
        SCALAR_HALF => tch::Kind::Half,
        _ => tch::Kind::Float,
    }
}

/// Whether autocast is on for `device`'s type on this thread.
pub fn autocast_enabled(device: Device) -> bool {
    // SAFETY: reads a thread-local flag.
    unsafe { at_is_autocast_enabled(device_type(device)) }
}

/// Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16), which is what makes
/// CPU bf16 autocast faster than fp32; without it libtorch emulates bf16 and autocast is slower.
pub fn cpu_has_native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
            || std::fs::read_to_string("/proc/cpuinfo")
                .map(|c| c.contains(" amx_bf16"))
                .unwrap_or(false)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs `f` under bf16 autocast for `device` when `precision` is `Bf16`, plainly otherwise.
///
/// Autocast runs matmuls, linear layers, convolutions and attention in bf16 and keeps
/// LayerNorm, softmax and reductions in fp32 (PyTorch's per-op lists); bf16 has fp32's range, so
/// no loss scaling is needed. On CUDA this is `torch.autocast("cuda", torch.bfloat16)`; on CPU it
/// is `torch.autocast("cpu", torch.bfloat16)`, which pays off on CPUs with native bf16 dot
/// products (AVX512-BF16 or AMX: about 1.4x per DINO step for a small ViT, docs/BENCHMARKS.md)
/// and is slower elsewhere. Outputs of autocast ops are bf16: cast to fp32 before a loss. The
/// previous autocast state is restored afterwards, and the cast-weight cache is cleared when the
/// outermost region ends. Call `backward()` outside the closure, as PyTorch recommends.
pub fn with_precision<T>(precision: Precision, device: Device, f: impl FnOnce() -> T) -> T {
    match precision {
        Precision::Fp32 => f(),
        Precision::Bf16 => {
            let _region = AutocastRegion::enter(device_type(device));
            f()
        }
    }
}

/// The autocast state of one device type, set to bf16 for as long as the value lives and put
/// back on drop, so a panic inside the region does not leave autocast on for the thread.
struct AutocastRegion {
    device_type: i8,
    prev_enabled: bool,
    prev_dtype: i8,
}

impl AutocastRegion {
    fn enter(device_type: i8) -> Self {
        // SAFETY: thread-local flags and enum values; no pointers involved.
        unsafe {
            let region = Self {
                device_type,
                prev_enabled: at_is_autocast_enabled(device_type),
                prev_dtype: at_get_autocast_dtype(device_type),
            };
            at_set_autocast_dtype(device_type, SCALAR_BF16);
            at_set_autocast_enabled(device_type, true);
            at_increment_nesting();
            region
        }
    }
}

impl Drop for AutocastRegion {
    fn drop(&mut self) {
        // SAFETY: as in `enter`.
        unsafe {
            if at_decrement_nesting() == 0 {
                at_clear_cache();
            }
            at_set_autocast_enabled(self.device_type, self.prev_enabled);
            at_set_autocast_dtype(self.device_type, self.prev_dtype);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_resolve_without_a_gpu() {
        assert_eq!(select_device(Some(None)).unwrap(), Device::Cpu);
        let auto = select_device(None).unwrap();
        assert_eq!(auto.is_cuda(), Cuda::is_available());
        if !Cuda::is_available() {
            let e = select_device(Some(Some(0))).unwrap_err();
            assert!(e.to_string().contains("cuda:0"), "{e}");
        }
        let e = select_device(Some(Some(4096)));
        assert!(e.is_err());
    }

    #[test]
    fn autocast_state_is_bf16_inside_and_restored_after() {
        // The autocast state is thread-local and exists without a GPU, so the FFI is checked on
        // every machine, for both device types.
        let cuda = Device::Cuda(0);
        assert_eq!(
            autocast_kind(cuda),
            tch::Kind::Half,
            "libtorch's CUDA autocast default"
        );
        assert!(!autocast_enabled(cuda));
        let inside = with_precision(Precision::Bf16, cuda, || {
            (autocast_kind(cuda), autocast_enabled(cuda))
        });
        assert_eq!(inside, (tch::Kind::BFloat16, true));
        assert_eq!(
            (autocast_kind(cuda), autocast_enabled(cuda)),
            (tch::Kind::Half, false)
        );

        let cpu = Device::Cpu;
        assert!(!autocast_enabled(cpu));
        let before = autocast_kind(cpu);
        let inside = with_precision(Precision::Bf16, cpu, || {
            (autocast_kind(cpu), autocast_enabled(cpu))
        });
        assert_eq!(inside, (tch::Kind::BFloat16, true));
        assert_eq!((autocast_kind(cpu), autocast_enabled(cpu)), (before, false));
        assert_eq!(with_precision(Precision::Fp32, cpu, || 7), 7);
    }

    #[test]
    fn cpu_autocast_runs_linear_layers_in_bf16_and_stays_close_to_fp32() {
        let x = tch::Tensor::randn([64, 96], (tch::Kind::Float, Device::Cpu));
        let w = tch::Tensor::randn([32, 96], (tch::Kind::Float, Device::Cpu));
        let fp32 = x.linear::<tch::Tensor>(&w, None);
        let bf = with_precision(Precision::Bf16, Device::Cpu, || {
            x.linear::<tch::Tensor>(&w, None)
        });
        assert_eq!(fp32.kind(), tch::Kind::Float);
        assert_eq!(
            bf.kind(),
            tch::Kind::BFloat16,
            "autocast did not reach the CPU linear"
        );
        // bf16 keeps 8 significant bits: relative error of a 96-term dot product is ~1 %.
        let rel = (bf.to_kind(tch::Kind::Float) - &fp32)
            .norm()
            .double_value(&[])
            / fp32.norm().double_value(&[]);
        assert!(rel < 0.02, "relative error {rel}");
        // Outside the region the same op is fp32 again.
        assert_eq!(x.linear::<tch::Tensor>(&w, None).kind(), tch::Kind::Float);
    }

    #[test]
    fn a_panic_inside_the_region_leaves_autocast_off() {
        let r = std::panic::catch_unwind(|| {
            with_precision(Precision::Bf16, Device::Cpu, || panic!("inside"))
        });
        assert!(r.is_err());
        assert!(!autocast_enabled(Device::Cpu));
    }
}
