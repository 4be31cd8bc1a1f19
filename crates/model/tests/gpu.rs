//! CUDA checks, compiled only with `--features gpu-tests` (CI has no GPU):
//! `cargo test -p dino-model --features gpu-tests --test model gpu::`.
#![cfg(feature = "gpu-tests")]

use dino_config::{DeviceRequest, HeadConfig, Precision};
use dino_model::{
    resolve_precision, select_device, with_precision, Bf16Support, ComputePrecision,
    MultiCropWrapper, VitConfig,
};
use tch::{nn, Device, Kind, Tensor};

fn tiny() -> (VitConfig, HeadConfig) {
    let mut vit = VitConfig::vit_tiny(16).with_drop_path(0.0);
    vit.depth = 4;
    (
        vit,
        HeadConfig {
            out_dim: 512,
            ..HeadConfig::default()
        },
    )
}

#[test]
fn auto_device_is_cuda_when_a_gpu_is_present() {
    assert!(
        tch::Cuda::is_available(),
        "build.rs must keep libtorch_cuda linked (--no-as-needed)"
    );
    assert_eq!(select_device(DeviceRequest::Auto).unwrap(), Device::Cuda(0));
    assert_eq!(
        select_device(DeviceRequest::Cuda(0)).unwrap(),
        Device::Cuda(0)
    );
}

/// `auto` reads the GPU's compute capability from the CUDA driver; every GPU libtorch 2.13's
/// CUDA 13 build runs on is 7.5 or later, and Ampere (8.0) and later get bf16.
#[test]
fn auto_precision_reads_the_compute_capability() {
    let support = Bf16Support::detect(Device::Cuda(0));
    let Bf16Support::Cuda(Some((major, minor))) = support else {
        panic!("compute capability not read: {support:?}");
    };
    assert!((7..=20).contains(&major) && minor >= 0, "{major}.{minor}");
    let choice = resolve_precision(Precision::Auto, support);
    let expect = if major >= 8 {
        ComputePrecision::Bf16
    } else {
        ComputePrecision::Fp32
    };
    assert_eq!(choice.resolved, expect, "{choice}");
    eprintln!("{choice}");
}

#[test]
fn cuda_forward_matches_cpu_and_bf16_autocast_runs_in_bf16() {
    let (vit, head) = tiny();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let m = MultiCropWrapper::new(&vs.root(), &vit, &head).unwrap();
    let x = Tensor::randn([4, 3, 224, 224], (Kind::Float, Device::Cpu));
    let cpu = tch::no_grad(|| m.forward_t(&[x.shallow_clone()], false).unwrap());
    vs.set_device(Device::Cuda(0));
    let xg = x.to_device(Device::Cuda(0));
    let gpu = tch::no_grad(|| m.forward_t(&[xg.shallow_clone()], false).unwrap());
    let d = (gpu.to_device(Device::Cpu) - &cpu)
        .abs()
        .max()
        .double_value(&[]);
    assert!(d < 1e-3, "fp32 CUDA vs CPU: {d}");

    let bf = with_precision(ComputePrecision::Bf16, Device::Cuda(0), || {
        m.forward_t(&[xg.shallow_clone()], true).unwrap()
    });
    assert_eq!(
        bf.kind(),
        Kind::BFloat16,
        "the last Linear runs in bf16 under autocast"
    );
    let d = (bf.to_kind(Kind::Float).to_device(Device::Cpu) - &cpu)
        .abs()
        .max()
        .double_value(&[]);
    assert!(d < 5e-2, "bf16 logits close to fp32: {d}");
    bf.to_kind(Kind::Float).square().sum(Kind::Float).backward();
    for (name, v) in vs.variables() {
        if v.requires_grad() {
            assert_eq!(
                v.grad().kind(),
                Kind::Float,
                "{name}: fp32 master weights get fp32 grads"
            );
        }
    }
}
