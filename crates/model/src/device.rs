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

// libtorch's C++ `at::autocast::{get,set}_autocast_dtype(DeviceType, ScalarType)`; tch binds
// only `set_enabled`, which uses CUDA's default autocast dtype, fp16. Both enums are int8 in
// c10 (`DeviceType::CUDA = 1`, `ScalarType::Half = 5`, `BFloat16 = 15`); plain functions with
// integer arguments share the C calling convention under the Itanium C++ ABI.
unsafe extern "C" {
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device_type: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device_type: i8) -> i8;
}
const DEVICE_CUDA: i8 = 1;
const SCALAR_HALF: i8 = 5;
const SCALAR_BF16: i8 = 15;

/// The dtype CUDA autocast casts to (thread-local libtorch state): `Kind::BFloat16` or
/// `Kind::Half`.
pub fn cuda_autocast_kind() -> tch::Kind {
    // SAFETY: reads a thread-local enum value; no pointers involved.
    match unsafe { at_get_autocast_dtype(DEVICE_CUDA) } {
        SCALAR_BF16 => tch::Kind::BFloat16,
        SCALAR_HALF => tch::Kind::Half,
        _ => tch::Kind::Float,
    }
}

/// Runs `f` under CUDA autocast in bf16 when `precision` is `Bf16` (matmuls, convolutions and
/// attention in bf16; LayerNorm, softmax and reductions in fp32; no loss scaling needed), and
/// plainly otherwise. On a machine without CUDA this is a no-op (tch's `autocast` is CUDA-only),
/// so CPU runs stay fp32. The previous autocast dtype is restored afterwards. Call
/// `backward()` outside the closure, as PyTorch recommends.
pub fn with_precision<T>(precision: Precision, f: impl FnOnce() -> T) -> T {
    match precision {
        Precision::Fp32 => f(),
        Precision::Bf16 => {
            // SAFETY: sets a thread-local enum value; no pointers involved.
            let prev = unsafe { at_get_autocast_dtype(DEVICE_CUDA) };
            unsafe { at_set_autocast_dtype(DEVICE_CUDA, SCALAR_BF16) };
            let out = tch::autocast(true, f);
            unsafe { at_set_autocast_dtype(DEVICE_CUDA, prev) };
            out
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
    fn autocast_dtype_is_bf16_inside_and_restored_after() {
        // The dtype setting is thread-local state that exists without a GPU, so the FFI is
        // checked on every machine.
        let before = cuda_autocast_kind();
        assert_eq!(before, tch::Kind::Half, "libtorch's CUDA autocast default");
        let inside = with_precision(Precision::Bf16, || {
            // tch::autocast skips its body's setup without CUDA, the dtype is still set.
            cuda_autocast_kind()
        });
        assert_eq!(inside, tch::Kind::BFloat16);
        assert_eq!(cuda_autocast_kind(), before);
        assert_eq!(with_precision(Precision::Fp32, || 7), 7);
    }
}
