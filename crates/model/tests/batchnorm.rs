//! BatchNorm in training mode never makes NaN statistics (shared/cases/resnet-bn-one-value-nan):
//! one value per channel is refused naming the layer before any statistic changes, as PyTorch
//! refuses it; the feature-map sides the config's up-front check computes are the network's own;
//! and a backbone run in evaluation mode under a training head leaves its statistics alone
//! (shared/cases/freeze-backbone-resnet-bn-stats).

use dino_config::{resnet_map_sides, HeadConfig};
use dino_model::{DinoHead, ModelError, MultiCropWrapper, ResNet, ResNetConfig, TokenScope};
use std::collections::HashMap;
use tch::{nn, Device, Kind, Tensor};

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

fn snapshot(vs: &nn::VarStore) -> HashMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect()
}

/// Names of the variables that differ (bitwise) from `before`.
fn changed(vs: &nn::VarStore, before: &HashMap<String, Tensor>) -> Vec<String> {
    let mut names: Vec<String> = vs
        .variables()
        .into_iter()
        .filter(|(k, v)| !v.equal(&before[k]))
        .map(|(k, _)| k)
        .collect();
    names.sort();
    names
}

#[test]
fn one_value_per_channel_is_refused_naming_the_layer_with_statistics_untouched() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = ResNet::new(&(vs.root() / "backbone"), &ResNetConfig::resnet18()).unwrap();
    // One 32-px image with torchvision's stem is 1 x 1 at layer4: its first BatchNorm there
    // (after the strided conv1 of layer4.0) would see one value per channel.
    let before = snapshot(&vs);
    let err = net.forward_t(&randn(&[1, 3, 32, 32]), true).unwrap_err();
    match &err {
        ModelError::OneValuePerChannel { layer, shape } => {
            assert_eq!(layer, "backbone.layer4.0.bn1");
            assert_eq!(shape, &[1, 512, 1, 1]);
        }
        e => panic!("{e}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("backbone.layer4.0.bn1") && msg.contains("one value per channel"));
    // The stages before it ran and updated their statistics; layer4 was not touched at all.
    let moved = changed(&vs, &before);
    assert!(
        moved.iter().any(|n| n.starts_with("backbone.layer3.")),
        "{moved:?}"
    );
    assert!(
        !moved.iter().any(|n| n.starts_with("backbone.layer4.")),
        "{moved:?}"
    );
    for t in vs.variables().values() {
        assert_eq!(t.isfinite().all().int64_value(&[]), 1);
    }
    // Two images (2 values per channel), or one image in evaluation mode, are fine.
    let two = net.forward_t(&randn(&[2, 3, 32, 32]), true).unwrap();
    assert_eq!(two.isfinite().all().int64_value(&[]), 1);
    let _ = net.forward_t(&randn(&[1, 3, 32, 32]), false).unwrap();
    for t in vs.variables().values() {
        assert_eq!(t.isfinite().all().int64_value(&[]), 1, "finite statistics");
    }
}

#[test]
fn the_bn_head_refuses_a_single_row_in_training() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = HeadConfig {
        out_dim: 16,
        hidden_dim: 8,
        bottleneck_dim: 4,
        use_bn: true,
        ..HeadConfig::default()
    };
    let head = DinoHead::new(&(vs.root() / "head"), 6, &cfg).unwrap();
    let err = head.forward_t(&randn(&[1, 6]), true).unwrap_err();
    assert!(
        matches!(&err, ModelError::OneValuePerChannel { layer, .. } if layer == "head.mlp.1"),
        "{err}"
    );
    let _ = head.forward_t(&randn(&[2, 6]), true).unwrap();
    let _ = head.forward_t(&randn(&[1, 6]), false).unwrap();
}

#[test]
fn the_config_s_map_sides_are_the_network_s() {
    tch::manual_seed(0);
    for cifar in [false, true] {
        let vs = nn::VarStore::new(Device::Cpu);
        let net =
            ResNet::new(&vs.root(), &ResNetConfig::resnet18().with_cifar_stem(cifar)).unwrap();
        // Odd and even sides around each stride's boundaries (a CIFAR-stem pass is 16x dearer).
        let sides: &[usize] = if cifar {
            &[7, 8, 9, 16, 17, 33]
        } else {
            &[7, 16, 31, 32, 33, 63, 64, 65, 96]
        };
        for &side in sides {
            let map = net
                .forward_map(&randn(&[1, 3, side as i64, side as i64]), false)
                .unwrap();
            let layer4 = resnet_map_sides(cifar, side)[4].1 as i64;
            assert_eq!(
                map.size()[2..],
                [layer4, layer4],
                "side {side}, cifar {cifar}"
            );
        }
    }
}

#[test]
fn a_backbone_in_evaluation_mode_under_a_training_head_keeps_its_statistics() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let head = HeadConfig {
        out_dim: 16,
        hidden_dim: 8,
        bottleneck_dim: 4,
        use_bn: true,
        ..HeadConfig::default()
    };
    let cfg = ResNetConfig::resnet18().with_cifar_stem(true);
    let net = MultiCropWrapper::new(&vs.root(), &cfg, &head).unwrap();
    let before = snapshot(&vs);
    let crops = [randn(&[4, 3, 16, 16]), randn(&[4, 3, 8, 8])];
    let out = net
        .forward_modes(&crops, false, true, TokenScope::AllTokens)
        .unwrap();
    // Only the head's BatchNorm statistics moved; the backbone's features are its eval ones.
    let moved = changed(&vs, &before);
    assert!(
        !moved.is_empty() && moved.iter().all(|n| n.starts_with("head.")),
        "{moved:?}"
    );
    let eval = net.backbone.forward_t(&crops[0], false).unwrap();
    let feats = net
        .backbone_features(&crops, false, TokenScope::AllTokens)
        .unwrap();
    assert!(feats.narrow(0, 0, 4).equal(&eval));
    assert_eq!(out.size(), [8, 16]);
    // The training mode of both moves the backbone's statistics too.
    let _ = net.forward_t(&crops, true).unwrap();
    assert!(changed(&vs, &before)
        .iter()
        .any(|n| n.starts_with("backbone.") && n.ends_with("running_var")));
}
