//! The multi-scale descriptor (official `utils.multi_scale`) on a ResNet: the pooled feature
//! averaged over scales 1, 1/√2 and 1/2 (bilinear `interpolate(scale_factor=s)`), then
//! L2-normalized — not the scale-1 feature alone.

use dino_eval::features::embed::{multi_scale_cls, MULTI_SCALES};
use dino_model::{Backbone, BackboneConfig, ResNetConfig};
use tch::{nn, Device, Kind, Tensor};

#[test]
fn resnet_multi_scale_averages_three_scales() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = BackboneConfig::ResNet(ResNetConfig::resnet18().with_cifar_stem(true));
    let net = Backbone::new(&vs.root(), &cfg).unwrap();
    let x = Tensor::randn([2, 3, 29, 23], (Kind::Float, Device::Cpu));
    let got = tch::no_grad(|| multi_scale_cls(&net, &x)).unwrap();

    // The description, step by step: resize by s (PyTorch's sampling for scale_factor=s),
    // forward in eval mode, average, normalize.
    let mut sum = Tensor::zeros([2, 512], (Kind::Float, Device::Cpu));
    for s in MULTI_SCALES {
        let input = if s == 1.0 {
            x.shallow_clone()
        } else {
            let out = [(29.0 * s).floor() as i64, (23.0 * s).floor() as i64];
            x.upsample_bilinear2d(out, false, s, s)
        };
        sum += tch::no_grad(|| net.forward_t(&input, false)).unwrap();
    }
    let mean = sum / MULTI_SCALES.len() as f64;
    let want = &mean / mean.norm_scalaropt_dim(2.0, [1i64].as_slice(), true);
    let diff = f64::try_from((&got - &want).abs().max()).unwrap();
    assert!(diff < 1e-6, "max |got - want| = {diff}");

    let one = tch::no_grad(|| net.forward_t(&x, false)).unwrap();
    let one = &one / one.norm_scalaropt_dim(2.0, [1i64].as_slice(), true);
    let moved = f64::try_from((&got - &one).abs().max()).unwrap();
    assert!(
        moved > 1e-4,
        "the descriptor must not be the scale-1 feature alone: {moved}"
    );
}
