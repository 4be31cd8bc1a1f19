//! Device selection and mixed precision (bf16, and fp16 whose loss scaling lives in the trainer).

use crate::error::ModelError;
use dino_config::{DeviceRequest, Precision};
use tch::{Cuda, Device};

/// The libtorch device for `runtime.device`: [`DeviceRequest::Auto`] is CUDA device 0 when
/// libtorch sees one, else the CPU.
///
/// # Errors
/// [`ModelError::Device`] when CUDA is requested but unavailable or the index is out of range.
pub fn select_device(req: DeviceRequest) -> Result<Device, ModelError> {
    match req {
        DeviceRequest::Auto => Ok(Device::cuda_if_available()),
        DeviceRequest::Cpu => Ok(Device::Cpu),
        DeviceRequest::Cuda(i) => {
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

/// The CPU feature flags that give native bf16 dot products, which is what makes CPU bf16
/// autocast faster than fp32 (oneDNN's bf16 kernels); without them libtorch emulates bf16 and a
/// step is slower (12.8x for `configs/cifar10_cpu.toml` on an AVX2-only AMD EPYC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuBf16Flags {
    /// `avx512_bf16` (AVX512-BF16: Cooper Lake, Sapphire Rapids and later Xeons, AMD Zen 4 on).
    pub avx512_bf16: bool,
    /// `amx_bf16` (AMX tiles with bf16: Sapphire Rapids and later Xeons).
    pub amx_bf16: bool,
}

impl CpuBf16Flags {
    /// The flags of the CPU this process runs on: the running CPU's feature bits
    /// (`is_x86_feature_detected!`) or, as the kernel reports them, `/proc/cpuinfo`. All false
    /// on other architectures (libtorch's bf16 CPU kernels are oneDNN's x86 ones).
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")
                .map(|c| Self::from_cpuinfo(&c))
                .unwrap_or_default();
            Self {
                avx512_bf16: std::arch::is_x86_feature_detected!("avx512bf16")
                    || cpuinfo.avx512_bf16,
                // AMX needs the kernel's consent to use its tile state, so the kernel's own
                // flag list is the one to trust.
                amx_bf16: cpuinfo.amx_bf16,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Self::default()
        }
    }

    /// Reads the flags from the text of `/proc/cpuinfo` (the `flags` line of the first CPU;
    /// whole words only, so `avx512_bf16` is not found in, say, `avx512_bf16x`).
    pub fn from_cpuinfo(text: &str) -> Self {
        let flags = text
            .lines()
            .find_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == "flags").then_some(value)
            })
            .unwrap_or("");
        let has = |f: &str| flags.split_whitespace().any(|w| w == f);
        Self {
            avx512_bf16: has("avx512_bf16"),
            amx_bf16: has("amx_bf16"),
        }
    }

    /// Whether bf16 is native on this CPU (either flag).
    pub fn native(self) -> bool {
        self.avx512_bf16 || self.amx_bf16
    }

    /// The flags present, by their `/proc/cpuinfo` names.
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.avx512_bf16 {
            v.push("avx512_bf16");
        }
        if self.amx_bf16 {
            v.push("amx_bf16");
        }
        v
    }
}

/// Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16), which is what makes
/// CPU bf16 autocast faster than fp32; without it libtorch emulates bf16 and autocast is slower.
pub fn cpu_has_native_bf16() -> bool {
    CpuBf16Flags::detect().native()
}

/// A precision the forward pass actually runs in: [`Precision`] with `auto` resolved by
/// [`resolve_precision`], so [`with_precision`] never has to guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputePrecision {
    /// Plain fp32.
    Fp32,
    /// bf16 autocast (see [`with_precision`]).
    Bf16,
    /// fp16 autocast (see [`with_precision`]); the trainer scales the loss (`GradScaler`).
    Fp16,
}

impl ComputePrecision {
    /// `fp32`, `bf16` or `fp16`, the spelling of `runtime.precision`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
            Self::Fp16 => "fp16",
        }
    }

    /// Whether gradients need dynamic loss scaling (fp16 only: its range ends at 65,504).
    pub fn needs_loss_scaling(self) -> bool {
        self == Self::Fp16
    }
}

impl std::fmt::Display for ComputePrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What decides `runtime.precision = "auto"`: the kind of device and its bf16 capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Support {
    /// A CPU with these flags.
    Cpu(CpuBf16Flags),
    /// A CUDA device of this compute capability (major, minor); `None` when it could not be read.
    Cuda(Option<(i32, i32)>),
    /// Another libtorch device (MPS, Vulkan): no bf16 autocast path here.
    Other,
}

impl Bf16Support {
    /// Looks at `device` on this machine: the CPU's flags, or the CUDA device's compute
    /// capability (from the CUDA driver).
    pub fn detect(device: Device) -> Self {
        match device {
            Device::Cpu => Self::Cpu(CpuBf16Flags::detect()),
            Device::Cuda(i) => Self::Cuda(cuda_compute_capability(i)),
            _ => Self::Other,
        }
    }
}

/// The outcome of [`resolve_precision`]: what was asked, what runs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrecisionChoice {
    /// `runtime.precision` as configured.
    pub requested: Precision,
    /// The precision the forward passes run in.
    pub resolved: ComputePrecision,
    /// Why, in a few words (for `auto`: the device property that decided it).
    pub reason: String,
    /// Whether the device multiplies bf16 natively.
    pub native_bf16: bool,
    /// Whether the device is a CPU.
    pub on_cpu: bool,
}

impl PrecisionChoice {
    /// A warning when bf16 was pinned on a device that only emulates it (an explicit `bf16`;
    /// `auto` never chooses that), or fp16 on a CPU.
    pub fn warning(&self) -> Option<String> {
        if self.resolved == ComputePrecision::Fp16 && self.on_cpu {
            return Some(String::from(
                "runtime.precision = \"fp16\" on a CPU: libtorch runs fp16 autocast there far \
                 slower than fp32 (about 50x for configs/cifar10_cpu.toml on an AVX2-only AMD \
                 EPYC); fp16 is meant for GPUs without bf16; set runtime.precision = \"auto\" \
                 or \"fp32\"",
            ));
        }
        (self.resolved == ComputePrecision::Bf16 && !self.native_bf16).then(|| {
            String::from(
                "runtime.precision = \"bf16\" on a device without native bf16: libtorch \
                 emulates bf16 here and a step is slower than in fp32; set runtime.precision = \
                 \"auto\" or \"fp32\"",
            )
        })
    }
}

impl std::fmt::Display for PrecisionChoice {
    /// `precision auto → fp32 (CPU has no native bf16: …)` or `precision bf16 (set by …)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.requested {
            Precision::Auto => write!(f, "precision auto → {} ({})", self.resolved, self.reason),
            _ => write!(f, "precision {} ({})", self.resolved, self.reason),
        }
    }
}

/// Resolves `runtime.precision` for a device with `support`, once, before training. Explicit
/// `fp32`, `bf16` and `fp16` are kept as they are (fp16 autocast runs on CUDA and, in
/// libtorch 2.13, on CPU); `auto` becomes `bf16` where bf16 is native (a CUDA
/// device of compute capability 8.0 or later, PyTorch's `torch.cuda.is_bf16_supported()` test;
/// a CPU with AVX512-BF16 or AMX-BF16) and `fp32` elsewhere, including when the capability could
/// not be read (fp32 is correct everywhere, emulated bf16 is not fast anywhere). Pure: the
/// machine is looked at by [`Bf16Support::detect`].
pub fn resolve_precision(requested: Precision, support: Bf16Support) -> PrecisionChoice {
    let (native_bf16, why) = match support {
        Bf16Support::Cpu(flags) if flags.native() => (
            true,
            format!("CPU has native bf16: {}", flags.names().join(", ")),
        ),
        Bf16Support::Cpu(_) => (
            false,
            "CPU has no native bf16: no avx512_bf16/amx_bf16 flag".to_string(),
        ),
        Bf16Support::Cuda(Some((major, minor))) if major >= 8 => (
            true,
            format!("CUDA device of compute capability {major}.{minor} has native bf16"),
        ),
        Bf16Support::Cuda(Some((major, minor))) => (
            false,
            format!(
                "CUDA device of compute capability {major}.{minor} has no native bf16 (8.0 or \
                 later has)"
            ),
        ),
        Bf16Support::Cuda(None) => (
            false,
            "the CUDA device's compute capability could not be read".to_string(),
        ),
        Bf16Support::Other => (false, "no bf16 autocast on this device".to_string()),
    };
    let (resolved, reason) = match requested {
        Precision::Fp32 => (
            ComputePrecision::Fp32,
            "set by runtime.precision".to_string(),
        ),
        Precision::Bf16 if native_bf16 => (
            ComputePrecision::Bf16,
            "set by runtime.precision".to_string(),
        ),
        Precision::Bf16 => (
            ComputePrecision::Bf16,
            format!("set by runtime.precision; {why}"),
        ),
        Precision::Fp16 => (
            ComputePrecision::Fp16,
            "set by runtime.precision; dynamic loss scaling".to_string(),
        ),
        Precision::Auto if native_bf16 => (ComputePrecision::Bf16, why),
        Precision::Auto => (ComputePrecision::Fp32, why),
    };
    PrecisionChoice {
        requested,
        resolved,
        reason,
        native_bf16,
        on_cpu: matches!(support, Bf16Support::Cpu(_)),
    }
}

/// Compute capability of CUDA device `ordinal`, asked of the CUDA driver (`libcuda.so.1`, which
/// every working CUDA set-up has and which libtorch has already initialized); `None` when the
/// driver cannot be loaded or answers with an error. tch has no binding for it.
fn cuda_compute_capability(ordinal: usize) -> Option<(i32, i32)> {
    // CUDA driver API (cuda.h): CUresult is an int enum (0 = CUDA_SUCCESS), CUdevice an int;
    // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76.
    type CuInit = unsafe extern "C" fn(u32) -> i32;
    type CuDeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type CuDeviceGetAttribute = unsafe extern "C" fn(*mut i32, i32, i32) -> i32;
    const MAJOR: i32 = 75;
    const MINOR: i32 = 76;
    let ordinal = i32::try_from(ordinal).ok()?;
    // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to its documented C
    // signature (cuda.h) before it is called, and the out-pointers point to live locals. The
    // handle is never closed: the library is the driver libtorch itself uses.
    unsafe {
        let lib = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if lib.is_null() {
            return None;
        }
        let sym = |name: &std::ffi::CStr| {
            let p = libc::dlsym(lib, name.as_ptr());
            (!p.is_null()).then_some(p)
        };
        let init: CuInit = std::mem::transmute(sym(c"cuInit")?);
        let get: CuDeviceGet = std::mem::transmute(sym(c"cuDeviceGet")?);
        let attr: CuDeviceGetAttribute = std::mem::transmute(sym(c"cuDeviceGetAttribute")?);
        let mut dev = 0i32;
        let (mut major, mut minor) = (0i32, 0i32);
        (init(0) == 0
            && get(&mut dev, ordinal) == 0
            && attr(&mut major, MAJOR, dev) == 0
            && attr(&mut minor, MINOR, dev) == 0)
            .then_some((major, minor))
    }
}

/// Runs `f` under bf16 autocast for `device` when `precision` is `Bf16`, under fp16 autocast
/// when it is `Fp16`, plainly otherwise.
///
/// fp16 autocast (`torch.autocast(device, torch.float16)`, the official `--use_fp16`) casts the
/// same ops to fp16, whose range ends at 65,504: gradients can overflow or underflow, so the
/// trainer scales the loss (`dino_train::grad_scaler`).
///
/// Autocast runs matmuls, linear layers, convolutions and attention in bf16 and keeps
/// LayerNorm, softmax and reductions in fp32 (PyTorch's per-op lists); bf16 has fp32's range, so
/// no loss scaling is needed. On CUDA this is `torch.autocast("cuda", torch.bfloat16)`; on CPU it
/// is `torch.autocast("cpu", torch.bfloat16)`, which pays off on CPUs with native bf16 dot
/// products (AVX512-BF16 or AMX: about 1.4x per DINO step for a small ViT, docs/BENCHMARKS.md)
/// and is slower elsewhere. Outputs of autocast ops are bf16: cast to fp32 before a loss. The
/// previous autocast state is restored afterwards, and the cast-weight cache is cleared when the
/// outermost region ends. Call `backward()` outside the closure, as PyTorch recommends.
/// `runtime.precision = "auto"` cannot reach here: resolve it first ([`resolve_precision`]).
pub fn with_precision<T>(precision: ComputePrecision, device: Device, f: impl FnOnce() -> T) -> T {
    match precision {
        ComputePrecision::Fp32 => f(),
        ComputePrecision::Bf16 => {
            let _region = AutocastRegion::enter(device_type(device), SCALAR_BF16);
            f()
        }
        ComputePrecision::Fp16 => {
            let _region = AutocastRegion::enter(device_type(device), SCALAR_HALF);
            f()
        }
    }
}

/// The autocast state of one device type, set to a dtype (bf16 or fp16) for as long as the
/// value lives and put back on drop, so a panic inside the region does not leave autocast on for the thread.
struct AutocastRegion {
    device_type: i8,
    prev_enabled: bool,
    prev_dtype: i8,
}

impl AutocastRegion {
    fn enter(device_type: i8, dtype: i8) -> Self {
        // SAFETY: thread-local flags and enum values; no pointers involved.
        unsafe {
            let region = Self {
                device_type,
                prev_enabled: at_is_autocast_enabled(device_type),
                prev_dtype: at_get_autocast_dtype(device_type),
            };
            at_set_autocast_dtype(device_type, dtype);
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
        assert_eq!(select_device(DeviceRequest::Cpu).unwrap(), Device::Cpu);
        let auto = select_device(DeviceRequest::Auto).unwrap();
        assert_eq!(auto.is_cuda(), Cuda::is_available());
        if !Cuda::is_available() {
            let e = select_device(DeviceRequest::Cuda(0)).unwrap_err();
            assert!(e.to_string().contains("cuda:0"), "{e}");
        }
        let e = select_device(DeviceRequest::Cuda(4096));
        assert!(e.is_err());
    }

    /// This machine's `flags` line (an AMD EPYC with AVX2 and no bf16 instructions), trimmed.
    const AVX2_ONLY: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse sse2 \
        avx f16c fma bmi1 avx2 bmi2 sha_ni vaes vpclmulqdq rdpid fsrm\nbugs\t\t: sysret_ss_attrs\n";
    /// A Sapphire Rapids Xeon's flags, trimmed: both AVX512-BF16 and AMX-BF16.
    const SAPPHIRE_RAPIDS: &str = "flags\t\t: fpu avx2 avx512f avx512bw avx512_bf16 avx512_fp16 \
        amx_bf16 amx_tile amx_int8\n";

    fn cpu(avx512_bf16: bool, amx_bf16: bool) -> Bf16Support {
        Bf16Support::Cpu(CpuBf16Flags {
            avx512_bf16,
            amx_bf16,
        })
    }

    #[test]
    fn cpuinfo_flags_are_read_as_whole_words() {
        assert_eq!(
            CpuBf16Flags::from_cpuinfo(AVX2_ONLY),
            CpuBf16Flags::default()
        );
        assert_eq!(
            CpuBf16Flags::from_cpuinfo(SAPPHIRE_RAPIDS),
            CpuBf16Flags {
                avx512_bf16: true,
                amx_bf16: true
            }
        );
        let amx_only = CpuBf16Flags::from_cpuinfo("flags : avx2 amx_tile amx_bf16\n");
        assert!(amx_only.amx_bf16 && !amx_only.avx512_bf16 && amx_only.native());
        assert_eq!(amx_only.names(), ["amx_bf16"]);
        // Prefixes and other keys do not count.
        let near = CpuBf16Flags::from_cpuinfo("model name : avx512_bf16\nflags : avx512_bf16x\n");
        assert!(!near.native(), "{near:?}");
        assert!(!CpuBf16Flags::from_cpuinfo("").native());
    }

    #[test]
    fn this_cpu_is_detected_as_its_kernel_reports_it() {
        let kernel = std::fs::read_to_string("/proc/cpuinfo")
            .map(|c| CpuBf16Flags::from_cpuinfo(&c))
            .unwrap_or_default();
        let detected = CpuBf16Flags::detect();
        if cfg!(target_arch = "x86_64") {
            assert_eq!(detected.amx_bf16, kernel.amx_bf16);
            assert!(detected.avx512_bf16 || !kernel.avx512_bf16);
        }
        assert_eq!(cpu_has_native_bf16(), detected.native());
        assert_eq!(Bf16Support::detect(Device::Cpu), Bf16Support::Cpu(detected));
    }

    #[test]
    fn auto_is_bf16_only_where_bf16_is_native() {
        let auto = |s| resolve_precision(Precision::Auto, s);
        let c = auto(cpu(true, false));
        assert_eq!(c.resolved, ComputePrecision::Bf16, "AVX512-BF16 → bf16");
        assert_eq!(c.reason, "CPU has native bf16: avx512_bf16");
        let c = auto(cpu(false, false));
        assert_eq!(c.resolved, ComputePrecision::Fp32, "AVX2 only → fp32");
        assert_eq!(
            c.to_string(),
            "precision auto → fp32 (CPU has no native bf16: no avx512_bf16/amx_bf16 flag)"
        );
        assert_eq!(
            auto(cpu(false, true)).resolved,
            ComputePrecision::Bf16,
            "AMX → bf16"
        );
        assert_eq!(
            auto(Bf16Support::Cpu(CpuBf16Flags::from_cpuinfo(AVX2_ONLY))).resolved,
            ComputePrecision::Fp32
        );
        assert_eq!(
            auto(Bf16Support::Cpu(CpuBf16Flags::from_cpuinfo(
                SAPPHIRE_RAPIDS
            )))
            .reason,
            "CPU has native bf16: avx512_bf16, amx_bf16"
        );
        let c = auto(Bf16Support::Cuda(Some((9, 0))));
        assert_eq!(c.resolved, ComputePrecision::Bf16, "CUDA (Hopper) → bf16");
        assert_eq!(
            c.to_string(),
            "precision auto → bf16 (CUDA device of compute capability 9.0 has native bf16)"
        );
        assert_eq!(
            auto(Bf16Support::Cuda(Some((8, 0)))).resolved,
            ComputePrecision::Bf16,
            "Ampere is the first with bf16 tensor cores"
        );
        assert_eq!(
            auto(Bf16Support::Cuda(Some((7, 5)))).resolved,
            ComputePrecision::Fp32,
            "Turing emulates bf16"
        );
        assert_eq!(
            auto(Bf16Support::Cuda(None)).resolved,
            ComputePrecision::Fp32
        );
        assert_eq!(auto(Bf16Support::Other).resolved, ComputePrecision::Fp32);
    }

    #[test]
    fn pinned_precisions_are_kept_and_emulated_bf16_warns() {
        for support in [
            cpu(false, false),
            cpu(true, true),
            Bf16Support::Cuda(Some((9, 0))),
            Bf16Support::Cuda(Some((7, 0))),
            Bf16Support::Other,
        ] {
            let fp32 = resolve_precision(Precision::Fp32, support);
            assert_eq!(fp32.resolved, ComputePrecision::Fp32, "{support:?}");
            assert_eq!(fp32.warning(), None);
            let fp16 = resolve_precision(Precision::Fp16, support);
            assert_eq!(fp16.resolved, ComputePrecision::Fp16, "{support:?}");
            assert!(fp16.resolved.needs_loss_scaling());
            assert_eq!(
                fp16.warning().is_some(),
                matches!(support, Bf16Support::Cpu(_)),
                "fp16 warns on CPUs only: {support:?}"
            );
            let bf16 = resolve_precision(Precision::Bf16, support);
            assert_eq!(bf16.resolved, ComputePrecision::Bf16, "{support:?}");
            assert_eq!(bf16.warning().is_some(), !bf16.native_bf16, "{support:?}");
            assert_eq!(resolve_precision(Precision::Auto, support).warning(), None);
        }
        let c = resolve_precision(Precision::Bf16, cpu(false, false));
        assert_eq!(
            c.to_string(),
            "precision bf16 (set by runtime.precision; CPU has no native bf16: no \
             avx512_bf16/amx_bf16 flag)"
        );
        assert!(c.warning().unwrap().contains("slower than in fp32"));
        assert_eq!(
            resolve_precision(Precision::Fp32, cpu(true, false)).to_string(),
            "precision fp32 (set by runtime.precision)"
        );
    }

    #[test]
    fn compute_capability_is_none_without_a_gpu() {
        if !Cuda::is_available() {
            // No driver (libcuda.so.1 absent) or no device: either way no capability.
            assert_eq!(
                Bf16Support::detect(Device::Cuda(0)),
                Bf16Support::Cuda(None)
            );
        }
        assert_eq!(cuda_compute_capability(usize::MAX), None);
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
        let inside = with_precision(ComputePrecision::Bf16, cuda, || {
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
        let inside = with_precision(ComputePrecision::Bf16, cpu, || {
            (autocast_kind(cpu), autocast_enabled(cpu))
        });
        assert_eq!(inside, (tch::Kind::BFloat16, true));
        assert_eq!((autocast_kind(cpu), autocast_enabled(cpu)), (before, false));
        assert_eq!(with_precision(ComputePrecision::Fp32, cpu, || 7), 7);
    }

    #[test]
    fn cpu_autocast_runs_linear_layers_in_bf16_and_stays_close_to_fp32() {
        let x = tch::Tensor::randn([64, 96], (tch::Kind::Float, Device::Cpu));
        let w = tch::Tensor::randn([32, 96], (tch::Kind::Float, Device::Cpu));
        let fp32 = x.linear::<tch::Tensor>(&w, None);
        let bf = with_precision(ComputePrecision::Bf16, Device::Cpu, || {
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
    fn cpu_fp16_autocast_runs_linear_layers_in_half_and_restores_the_state() {
        let cpu = Device::Cpu;
        let before = autocast_kind(cpu);
        let x = tch::Tensor::randn([16, 32], (tch::Kind::Float, cpu));
        let w = tch::Tensor::randn([8, 32], (tch::Kind::Float, cpu));
        let (kind, inside) = with_precision(ComputePrecision::Fp16, cpu, || {
            (x.linear::<tch::Tensor>(&w, None).kind(), autocast_kind(cpu))
        });
        assert_eq!(inside, tch::Kind::Half);
        assert_eq!(
            kind,
            tch::Kind::Half,
            "libtorch's CPU autocast has no fp16 linear"
        );
        assert_eq!((autocast_kind(cpu), autocast_enabled(cpu)), (before, false));
        assert!(!ComputePrecision::Bf16.needs_loss_scaling());
        assert_eq!(ComputePrecision::Fp16.to_string(), "fp16");
    }

    #[test]
    fn a_panic_inside_the_region_leaves_autocast_off() {
        let r = std::panic::catch_unwind(|| {
            with_precision(ComputePrecision::Bf16, Device::Cpu, || panic!("inside"))
        });
        assert!(r.is_err());
        assert!(!autocast_enabled(Device::Cpu));
    }
}
