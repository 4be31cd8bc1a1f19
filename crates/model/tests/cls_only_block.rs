//! The CLS-only last block (`model.cls_only_last_block`, [`TokenScope::ClsOnly`]) against the
//! full path it replaces in training: the same features, loss and gradients to 1e-5, the same
//! stochastic-depth draws, the same variables; and the full path left bit for bit as it was.

use dino_config::HeadConfig;
use dino_model::{
    Backbone, BackboneConfig, MultiCropWrapper, ResNetConfig, TokenScope, VisionTransformer,
    VitConfig,
};
use std::collections::BTreeMap;
use std::sync::Mutex;
use tch::{nn, Device, Kind, Tensor};

/// The tolerance of issue #27 item 2: loss and every gradient within 1e-5 of the full path,
/// relative to the tensor's scale where that exceeds 1 (`|Δ| ≤ 1e-5 · max(1, max |full|)`):
/// float32 sums of a few thousand terms of size ~1 round at a few 1e-6 whichever path computes
/// them, so an absolute 1e-5 on a gradient of size 7 would test the summation order, not the
/// math. Measured on the AMD EPYC Zen 4 (fp32): absolute |Δ| ≤ 9.3e-6, scaled ≤ 4.3e-6.
const TOL: f64 = 1e-5;

/// `|a − b|` over `max(1, max |a|)`, the largest over the elements.
fn scaled_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_diff(a, b) / a.abs().max().double_value(&[]).max(1.0)
}

/// libtorch's generator is process-global: the seeded tests run one at a time.
static RNG: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// A tiny ViT: width 48, 3 heads, patch 8, table for 32 px.
fn tiny(depth: i64, drop_path: f64) -> VitConfig {
    let mut c = VitConfig::vit_tiny(8).with_drop_path(drop_path);
    (c.embed_dim, c.depth, c.num_heads, c.img_size) = (48, depth, 3, 32);
    c
}

/// A 64-way head on a 32-wide MLP with a 16-wide bottleneck (`use_bn`: BatchNorm in the MLP).
fn small_head(use_bn: bool) -> HeadConfig {
    HeadConfig {
        out_dim: 64,
        hidden_dim: 32,
        bottleneck_dim: 16,
        use_bn,
        ..HeadConfig::default()
    }
}

/// Two global crops of 4 images at 32 px, eight local crops at 16 px (5 tokens each), seeded.
fn crops() -> Vec<Tensor> {
    tch::manual_seed(123);
    vec![
        Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu)),
        Tensor::randn([32, 3, 16, 16], (Kind::Float, Device::Cpu)),
    ]
}

/// A DINO-shaped loss on the logits: cross-entropy of the student's softmax at temperature 0.1
/// against fixed sharp targets (a teacher softmax at 0.04), mean over the crops.
fn dino_like_loss(logits: &Tensor, targets: &Tensor) -> Tensor {
    let log_p = (logits / 0.1).log_softmax(-1, Kind::Float);
    -(targets * log_p)
        .sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float)
}

/// Loss and every trainable variable's gradient after one forward (`scope`) and backward from
/// generator state `seed`.
fn loss_and_grads(
    vs: &nn::VarStore,
    m: &MultiCropWrapper,
    crops: &[Tensor],
    targets: &Tensor,
    scope: TokenScope,
    seed: i64,
) -> (f64, BTreeMap<String, Tensor>) {
    for v in vs.trainable_variables() {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    tch::manual_seed(seed);
    let logits = m.forward_modes(crops, true, true, scope).unwrap();
    let loss = dino_like_loss(&logits, targets);
    loss.backward();
    let grads = vs
        .variables()
        .into_iter()
        .filter(|(_, v)| v.requires_grad())
        .map(|(name, v)| (name, v.grad().copy()))
        .collect();
    (loss.double_value(&[]), grads)
}

fn largest_grad_diff(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) -> (f64, String) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same variables get gradients"
    );
    a.iter()
        .map(|(name, g)| (scaled_diff(g, &b[name]), name.clone()))
        .max_by(|x, y| x.0.total_cmp(&y.0))
        .expect("variables")
}

/// The training forward through the multi-crop wrapper (2 resolution groups, a BatchNorm head in
/// training mode), without and with stochastic depth: the loss and the gradient of every
/// variable agree with the full path to 1e-5.
///
/// With drop path on, both paths start from the same generator state and draw the same
/// `[B, 1, 1]` masks at the same points (every block, attention then MLP residual), so the
/// same samples are dropped in the last block; the test shows the draws matter there (another
/// seed moves the gradients far beyond the tolerance) and that they match (same seed: within
/// it). Depth 2 at rate 0.5 gives the first block rate 0, so only the last block draws.
#[test]
fn loss_and_every_gradient_match_the_full_path() {
    alone!();
    let _serial = serial();
    let head = small_head(true);
    for (depth, rate) in [(3, 0.0), (2, 0.5), (4, 0.3)] {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = MultiCropWrapper::new(&vs.root(), tiny(depth, rate), &head).unwrap();
        let crops = crops();
        let targets =
            (Tensor::randn([40, 64], (Kind::Float, Device::Cpu)) / 0.04).softmax(-1, Kind::Float);
        let (full_loss, full) = loss_and_grads(&vs, &m, &crops, &targets, TokenScope::AllTokens, 7);
        let (cls_loss, cls) = loss_and_grads(&vs, &m, &crops, &targets, TokenScope::ClsOnly, 7);
        let what = format!("depth {depth}, drop_path {rate}");
        assert!(
            (full_loss - cls_loss).abs() <= TOL * full_loss.abs().max(1.0),
            "{what}: loss {full_loss} vs {cls_loss}"
        );
        let (d, name) = largest_grad_diff(&full, &cls);
        eprintln!(
            "{what}: loss {full_loss:.6}, |Δloss| {:.1e}, largest scaled |Δgrad| {d:.1e} ({name}: \
             |Δ| {:.1e}, max |grad| {:.2e})",
            (full_loss - cls_loss).abs(),
            max_diff(&full[&name], &cls[&name]),
            full[&name].abs().max().double_value(&[])
        );
        assert!(
            d <= TOL,
            "{what}: gradient of {name} differs by {d} (scaled)"
        );
        // Every weight learns on both paths, the last block's query rows of the fused qkv
        // weight (reached through the CLS query only) and its MLP included.
        let last = depth - 1;
        for name in [
            format!("backbone.blocks.{last}.attn.qkv.weight"),
            format!("backbone.blocks.{last}.mlp.fc2.weight"),
            "backbone.patch_embed.proj.weight".to_string(),
            "backbone.cls_token".to_string(),
        ] {
            let g = &cls[&name];
            assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0, "{name}");
        }
        let q_rows = cls[&format!("backbone.blocks.{last}.attn.qkv.weight")].narrow(0, 0, 48);
        assert!(q_rows.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        if rate > 0.0 {
            let (other_loss, other) =
                loss_and_grads(&vs, &m, &crops, &targets, TokenScope::ClsOnly, 8);
            let (d_other, _) = largest_grad_diff(&full, &other);
            assert!(
                d_other > 1e3 * TOL && (other_loss - full_loss).abs() > 10.0 * TOL,
                "{what}: other masks must move the result (gradients by {d_other})"
            );
        }
    }
}

/// `runtime.pack_crop_groups` (`MultiCropWrapper::pack_groups`, `VisionTransformer::forward_groups`):
/// the two crop groups through each block together give the per-group path's loss and every
/// gradient to 1e-5, under the CLS-only last block and the full one, without and with
/// stochastic depth (the same masks: another seed moves the result far beyond the tolerance),
/// with register tokens and LayerScale too; the features agree to 1e-5 (in practice bit for bit
/// on the forward, where only the row count of each product differs).
#[test]
fn packed_crop_groups_match_the_per_group_path() {
    alone!();
    let _serial = serial();
    let head = small_head(false);
    for (depth, rate, registers) in [(3, 0.0, 0), (4, 0.3, 0), (3, 0.2, 2)] {
        let mut vit = tiny(depth, rate);
        if registers > 0 {
            vit.num_register_tokens = registers;
            vit.layerscale_init = 0.1;
        }
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut m = MultiCropWrapper::new(&vs.root(), vit, &head).unwrap();
        let crops = crops();
        let targets =
            (Tensor::randn([40, 64], (Kind::Float, Device::Cpu)) / 0.04).softmax(-1, Kind::Float);
        for scope in [TokenScope::ClsOnly, TokenScope::AllTokens] {
            let what = format!("depth {depth}, drop_path {rate}, {registers} registers, {scope:?}");
            m.pack_groups = false;
            let (loss, per_group) = loss_and_grads(&vs, &m, &crops, &targets, scope, 7);
            tch::manual_seed(7);
            let f_group = m.backbone_features(&crops, true, scope).unwrap().detach();
            m.pack_groups = true;
            let (packed_loss, packed) = loss_and_grads(&vs, &m, &crops, &targets, scope, 7);
            tch::manual_seed(7);
            let f_packed = m.backbone_features(&crops, true, scope).unwrap().detach();
            assert_eq!(
                f_packed.size(),
                [40, 48],
                "{what}: CLS of every crop, in order"
            );
            let df = scaled_diff(&f_group, &f_packed);
            assert!(df <= TOL, "{what}: features differ by {df}");
            assert!(
                (loss - packed_loss).abs() <= TOL * loss.abs().max(1.0),
                "{what}: loss {loss} vs {packed_loss}"
            );
            let (d, name) = largest_grad_diff(&per_group, &packed);
            eprintln!("{what}: |Δfeatures| {df:.1e}, largest scaled |Δgrad| {d:.1e} ({name})");
            assert!(
                d <= TOL,
                "{what}: gradient of {name} differs by {d} (scaled)"
            );
            if rate > 0.0 {
                let (other_loss, other) = loss_and_grads(&vs, &m, &crops, &targets, scope, 8);
                let (d_other, _) = largest_grad_diff(&per_group, &other);
                assert!(
                    d_other > 1e3 * TOL && (other_loss - loss).abs() > 10.0 * TOL,
                    "{what}: other masks must move the result (gradients by {d_other})"
                );
            }
        }
    }
}

/// Inference features: the CLS-only path gives the full path's CLS token to 1e-5 on square,
/// non-square and resized-table inputs, and one block is enough.
#[test]
fn cls_feature_matches_the_full_path() {
    let _serial = serial();
    for depth in [1, 3] {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let vit = VisionTransformer::new(&vs.root(), &tiny(depth, 0.1)).unwrap();
        for (h, w) in [(32, 32), (16, 16), (48, 24)] {
            let x = Tensor::randn([3, 3, h, w], (Kind::Float, Device::Cpu));
            let full = tch::no_grad(|| vit.forward_t(&x, false).unwrap());
            let cls = tch::no_grad(|| vit.forward_cls(&x, false).unwrap());
            assert_eq!(cls.size(), [3, 48]);
            let d = scaled_diff(&full, &cls);
            eprintln!("depth {depth}, {h}x{w}: scaled |ΔCLS| {d:.1e}");
            assert!(d <= TOL, "depth {depth}, {h}x{w}: {d}");
        }
    }
}

/// `TokenScope::AllTokens` is the official forward bit for bit (the path of
/// `model.cls_only_last_block = false`), and the switch maps to the scopes.
#[test]
fn all_tokens_scope_is_the_full_path_bit_for_bit() {
    alone!();
    let _serial = serial();
    tch::manual_seed(2);
    let vs = nn::VarStore::new(Device::Cpu);
    let head = HeadConfig {
        out_dim: 32,
        hidden_dim: 16,
        bottleneck_dim: 8,
        ..HeadConfig::default()
    };
    let m = MultiCropWrapper::new(&vs.root(), tiny(2, 0.2), &head).unwrap();
    let crops = crops();
    tch::manual_seed(5);
    let a = m.forward_t(&crops, true).unwrap();
    tch::manual_seed(5);
    let b = m
        .forward_modes(&crops, true, true, TokenScope::AllTokens)
        .unwrap();
    assert!(a.equal(&b));
    assert_eq!(TokenScope::for_cls_loss(true), TokenScope::ClsOnly);
    assert_eq!(TokenScope::for_cls_loss(false), TokenScope::AllTokens);
}

/// A ResNet has no tokens: the scope changes nothing.
#[test]
fn a_resnet_ignores_the_scope() {
    let _serial = serial();
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = BackboneConfig::ResNet(ResNetConfig::resnet18().with_cifar_stem(true));
    let net = Backbone::new(&vs.root(), &cfg).unwrap();
    let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
    let full = tch::no_grad(|| net.forward_t(&x, false).unwrap());
    let scoped = tch::no_grad(|| net.forward_scoped(&x, false, TokenScope::ClsOnly).unwrap());
    assert!(full.equal(&scoped));
}
