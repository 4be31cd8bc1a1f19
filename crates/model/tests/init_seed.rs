//! Seeded trunc-normal init (official `trunc_normal_(std=.02)`, truncated at ±2 absolute).
//! In a process of its own (`alone!`): libtorch's generator is process-global, and tests that
//! run in parallel threads would draw from it between the seed and the draw.

use dino_model::init::{trunc_normal_, TRUNC_NORMAL_STD};
use tch::{Kind, Tensor};

#[test]
fn trunc_normal_has_official_statistics_and_is_seeded() {
    alone!();
    tch::manual_seed(3);
    let mut a = Tensor::zeros([200_000], (Kind::Float, tch::Device::Cpu));
    trunc_normal_(&mut a, TRUNC_NORMAL_STD).unwrap();
    let std = a.std(true).double_value(&[]);
    let mean = a.mean(Kind::Float).double_value(&[]);
    let max = a.abs().max().double_value(&[]);
    assert!((std - 0.02).abs() < 2e-4, "std {std}");
    assert!(mean.abs() < 2e-4, "mean {mean}");
    assert!(max <= 2.0 && max > 0.06, "max {max}");
    tch::manual_seed(3);
    let mut b = Tensor::zeros([200_000], (Kind::Float, tch::Device::Cpu));
    trunc_normal_(&mut b, TRUNC_NORMAL_STD).unwrap();
    assert!(a.equal(&b));
    assert!(trunc_normal_(&mut b, 1.0).is_err());
}
