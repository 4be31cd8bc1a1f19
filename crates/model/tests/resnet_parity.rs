//! Parity of the ResNet backbones with torchvision's own models in the project virtualenv
//! (`tests/reference/resnet_reference.py`, run at test time): initialisation bit for bit from the
//! same seed, the state-dict layout (strict load, nothing missing or extra), eval-mode and
//! train-mode outputs and the BatchNorm buffers after a train-mode forward (float32), every
//! parameter's gradient and the input's (float64, see `resnet_reference.py` for why), all to
//! 1e-4; and `dino import` of official DINO ResNet-50 checkpoints made with torchvision.

use crate::common::read;
use dino_config::HeadConfig;
use dino_model::{
    import_official, load_safetensors, load_safetensors_with_prefix, Backbone, BackboneConfig,
    MultiCropWrapper, ResNet, ResNetConfig,
};
use std::path::Path;
use std::sync::Mutex;
use tch::{nn, Device, Kind, Tensor};

/// Runs `tests/reference/resnet_reference.py` with `args` into a fresh folder.
fn reference(args: &[&str]) -> tempfile::TempDir {
    crate::common::reference("resnet_reference.py", args)
}

/// Seeding and building share libtorch's global generator: one build at a time.
static RNG: Mutex<()> = Mutex::new(());

const TOL: f64 = 1e-4;

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

fn build(cfg: &ResNetConfig, seed: i64) -> (nn::VarStore, ResNet) {
    let _g = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let vs = nn::VarStore::new(Device::Cpu);
    tch::manual_seed(seed);
    let net = ResNet::new(&vs.root(), cfg).unwrap();
    (vs, net)
}

/// max|a − b| over max(1, max|b|): an absolute difference for values up to 1, relative to the
/// reference's largest entry beyond (eval-mode ResNet-50 outputs reach thousands with the
/// reference's moved running statistics).
fn scaled_diff(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(1.0);
    max_diff(a, b) / scale
}

/// Everything the reference writes, checked for one network on a batch of 4 images of `size`
/// pixels.
fn parity(arch: &str, cfg: ResNetConfig, size: usize) {
    let size = size.to_string();
    let mut args = vec!["parity", "--arch", arch, "--size", &size, "--batch", "4"];
    if cfg.cifar_stem {
        args.push("--cifar-stem");
    }
    let dir = reference(&args);
    let (mut vs, net) = build(&cfg, 0);
    let label = format!("{arch}{}", if cfg.cifar_stem { "+cifar" } else { "" });

    if !cfg.cifar_stem {
        // torch.manual_seed(0); torchvision.models.resnetNN(): the same weights, bit for bit.
        let init = read(&dir.path().join("init.safetensors"));
        let vars = vs.variables();
        assert_eq!(init.len(), vars.len(), "{label}: state-dict entries");
        for (name, v) in &vars {
            let r = init
                .get(name)
                .unwrap_or_else(|| panic!("{label}: {name} not in torchvision's state dict"));
            assert!(
                v.equal(r),
                "{label}: init of {name} differs by {}",
                max_diff(v, r)
            );
        }
    }

    // torchvision's state dict (fc = Identity) loads strictly: nothing missing, nothing extra.
    let report = load_safetensors(&mut vs, &dir.path().join("weights.safetensors"), true).unwrap();
    assert!(
        report.missing.is_empty() && report.unexpected.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.loaded, vs.variables().len());

    let io = read(&dir.path().join("io.safetensors"));
    let x = &io["input"];
    let eval = tch::no_grad(|| net.forward_t(x, false)).unwrap();
    assert_eq!(eval.size(), [4, cfg.embed_dim()]);
    let d_eval = scaled_diff(&eval, &io["eval"]);

    // Train mode: batch statistics, running statistics updated.
    let train = tch::no_grad(|| net.forward_t(x, true)).unwrap();
    let d_train = scaled_diff(&train, &io["train"]);
    let mut d_buf: f64 = 0.0;
    for (name, v) in vs.variables() {
        if let Some(after) = io.get(&format!("after.{name}")) {
            if name.ends_with("num_batches_tracked") {
                assert!(v.equal(after), "{label}: {name} {v:?} vs {after:?}");
            } else {
                d_buf = d_buf.max(scaled_diff(&v, after));
            }
        }
    }

    // Gradients, in float64: the same weights (reloaded, so the running statistics are the
    // file's again) and input cast up.
    let (mut vs64, net64) = build(&cfg, 0);
    load_safetensors(&mut vs64, &dir.path().join("weights.safetensors"), true).unwrap();
    vs64.double();
    let xg = x.to_kind(Kind::Double).set_requires_grad(true);
    let out = net64.forward_t(&xg, true).unwrap();
    let loss = (&out * io["w"].to_kind(Kind::Double)).sum(Kind::Double) / 4.0;
    loss.backward();
    let mut worst = (
        "input".to_string(),
        scaled_diff(&xg.grad(), &io["grad.input"]),
    );
    let mut n_grads = 0;
    for (name, v) in vs64.variables() {
        if let Some(g) = io.get(&format!("grad.{name}")) {
            let d = scaled_diff(&v.grad(), g);
            if d > worst.1 {
                worst = (name.clone(), d);
            }
            n_grads += 1;
        }
    }
    let d_grad = worst.1;
    eprintln!(
        "{label}: max|Δ| / max(1, max|ref|): eval {d_eval:.2e} train {d_train:.2e} grad \
         {d_grad:.2e} (worst: {}) buffers {d_buf:.2e} ({n_grads} parameters)",
        worst.0
    );
    assert_eq!(n_grads, vs64.trainable_variables().len());
    for (what, d) in [
        ("eval", d_eval),
        ("train", d_train),
        ("grad", d_grad),
        ("buffers", d_buf),
    ] {
        assert!(d <= TOL, "{label}: {what} differs by {d:.3e}");
    }
}

#[test]
fn resnet18_matches_torchvision() {
    alone!();
    parity("resnet18", ResNetConfig::resnet18(), 64);
}

#[test]
fn resnet50_matches_torchvision() {
    alone!();
    parity("resnet50", ResNetConfig::resnet50(), 96);
}

#[test]
fn resnet18_cifar_stem_matches_torchvision_with_that_stem() {
    alone!();
    parity(
        "resnet18",
        ResNetConfig::resnet18().with_cifar_stem(true),
        32,
    );
}

/// resnet34's state dict (basic blocks, 3-4-6-3) has torchvision's keys and init: checked for
/// names, shapes and the same seed's weights without running the network.
#[test]
fn resnet34_init_is_torchvisions() {
    alone!();
    let dir = reference(&[
        "parity", "--arch", "resnet34", "--size", "32", "--batch", "2",
    ]);
    let (vs, _) = build(&ResNetConfig::resnet34(), 0);
    let init = read(&dir.path().join("init.safetensors"));
    let vars = vs.variables();
    assert_eq!(init.len(), vars.len());
    for (name, v) in &vars {
        assert!(v.equal(&init[name]), "resnet34 init of {name}");
    }
}

/// Converts `from` (with `key`) and loads it into `vs` with `prefix`, strictly. The conversion's
/// Python is `dino_model::find_python`'s (the `.venv` above `target/` unless `$DINO_PYTHON`
/// says otherwise): setting the variable here would change it for every test thread.
fn import_into(
    dir: &Path,
    from: &str,
    key: Option<&str>,
    vs: &mut nn::VarStore,
    prefix: &str,
) -> dino_model::ImportReport {
    let out = dir.join(format!("{from}.{}.safetensors", key.unwrap_or("default")));
    let report = import_official(&dir.join(from), &out, key).unwrap();
    let load = load_safetensors_with_prefix(vs, &out, prefix, true).unwrap();
    assert!(
        load.missing.is_empty() && load.unexpected.is_empty(),
        "{from}: {load:?}"
    );
    report
}

/// Official DINO ResNet-50 checkpoints, made in the test with torchvision, import with nothing
/// missing or unexpected and give torchvision's features: the released backbone-only layout,
/// a torchvision classifier's state dict (its `fc` dropped and reported), and a full training
/// checkpoint (teacher by default; the student under `module.`), whose whole teacher —
/// backbone and BatchNorm head — also loads into a [`MultiCropWrapper`].
#[test]
fn official_resnet50_checkpoints_import() {
    let dir = reference(&["checkpoints"]);
    let d = dir.path();
    let io = read(&d.join("io.safetensors"));
    let x = &io["input"];
    let (mut vs, net) = build(&ResNetConfig::resnet50(), 1);
    let features = |net: &ResNet| tch::no_grad(|| net.forward_t(x, false)).unwrap();

    let r = import_into(d, "backbone.pth", None, &mut vs, "backbone.");
    assert_eq!((r.layout.as_str(), r.head_tensors), ("backbone", 0));
    let dd = scaled_diff(&features(&net), &io["feat.backbone"]);
    assert!(dd <= TOL, "backbone.pth features differ by {dd:.2e}");

    let r = import_into(d, "torchvision.pth", None, &mut vs, "backbone.");
    assert!(
        r.skipped.iter().any(|s| s.starts_with("fc.weight")),
        "{:?}",
        r.skipped
    );
    assert!(scaled_diff(&features(&net), &io["feat.backbone"]) <= TOL);

    let r = import_into(d, "full.pth", None, &mut vs, "backbone.");
    assert_eq!(r.key.as_deref(), Some("teacher"));
    assert!(r.head_tensors > 0);
    assert!(scaled_diff(&features(&net), &io["feat.teacher"]) <= TOL);

    let r = import_into(d, "full.pth", Some("student"), &mut vs, "backbone.");
    assert_eq!(r.stripped_prefixes, ["module."]);
    let ds = scaled_diff(&features(&net), &io["feat.student"]);
    assert!(ds <= TOL, "student features differ by {ds:.2e}");

    // The whole teacher, head with BatchNorm included.
    let head = HeadConfig {
        out_dim: 256,
        hidden_dim: 64,
        bottleneck_dim: 32,
        use_bn: true,
        ..HeadConfig::default()
    };
    let _g = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let mut wvs = nn::VarStore::new(Device::Cpu);
    let wrapper = MultiCropWrapper::new(
        &wvs.root(),
        BackboneConfig::ResNet(ResNetConfig::resnet50()),
        &head,
    )
    .unwrap();
    let out = d.join("full.pth.default.safetensors");
    let report = load_safetensors(&mut wvs, &out, true).unwrap();
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    assert!(matches!(wrapper.backbone, Backbone::ResNet(_)));
    assert_eq!(wrapper.backbone.embed_dim(), 2048);
    let logits = tch::no_grad(|| wrapper.forward_t(&[x.shallow_clone()], false)).unwrap();
    let dl = scaled_diff(&logits, &io["logits.teacher"]);
    assert!(dl <= TOL, "teacher logits differ by {dl:.2e}");
}
