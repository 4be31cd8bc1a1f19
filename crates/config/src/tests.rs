use super::*;

/// Every default pinned against its source: `facebookresearch/dino` @ 7c446df `main_dino.py`
/// argparse (MD), `DataAugmentationDINO` (AUG), `vision_transformer.py` (VT), `eval_knn.py` (KNN),
/// `eval_linear.py` (LIN); see `../shared/reference/DINO_REFERENCE.md`.
#[test]
fn defaults_equal_the_official_dino_values() {
    let c = Config::default();
    let a = &c.augmentation;
    // AUG: RandomResizedCrop(224, scale=global_crops_scale) / (96, local_crops_scale)
    assert_eq!(a.global_crops_size, 224);
    assert_eq!(a.global_crops_scale, [0.4, 1.0]); // MD --global_crops_scale (0.4, 1.)
    assert_eq!(a.local_crops_number, 8); // MD --local_crops_number 8
    assert_eq!(a.local_crops_size, 96);
    assert_eq!(a.local_crops_scale, [0.05, 0.4]); // MD --local_crops_scale (0.05, 0.4)
    assert_eq!(a.crop_ratio, [3.0 / 4.0, 4.0 / 3.0]); // torchvision RandomResizedCrop default
    assert_eq!(a.flip_p, 0.5); // AUG RandomHorizontalFlip(p=0.5)
    assert_eq!(a.color_jitter_p, 0.8); // AUG RandomApply([ColorJitter(...)], p=0.8)
    assert_eq!(
        (a.brightness, a.contrast, a.saturation, a.hue),
        (0.4, 0.4, 0.2, 0.1)
    ); // AUG ColorJitter
    assert_eq!(a.grayscale_p, 0.2); // AUG RandomGrayscale(p=0.2)
    assert_eq!(
        (a.blur_global1_p, a.blur_global2_p, a.blur_local_p),
        (1.0, 0.1, 0.5)
    ); // AUG GaussianBlur
    assert_eq!(a.blur_sigma, [0.1, 2.0]); // utils.GaussianBlur radius_min/radius_max
    assert_eq!(a.solarize_p, 0.2); // AUG Solarization(0.2), global 2 only
    assert_eq!(a.solarize_threshold, 128); // PIL ImageOps.solarize default
    assert_eq!(a.mean, [0.485, 0.456, 0.406]); // AUG Normalize
    assert_eq!(a.std, [0.229, 0.224, 0.225]);

    let m = &c.model;
    assert_eq!(m.arch, Arch::VitSmall); // MD --arch vit_small
    assert_eq!(m.dims(), (384, 12, 6)); // VT vit_small
    assert_eq!(Arch::VitTiny.dims(), Some((192, 12, 3))); // VT vit_tiny
    assert_eq!(Arch::VitBase.dims(), Some((768, 12, 12))); // VT vit_base
    assert_eq!(m.patch_size, 16); // MD --patch_size 16
    assert_eq!(m.mlp_ratio, 4.0); // VT mlp_ratio=4
    assert!(m.qkv_bias); // VT qkv_bias=True
    assert_eq!(m.drop_path_rate, 0.1); // MD --drop_path_rate 0.1
    assert_eq!(m.img_size, 224); // VT img_size=[224]
    assert_eq!(m.layer_norm_eps, 1e-6); // VT partial(nn.LayerNorm, eps=1e-6)
                                        // Not official (an implementation choice): the last block for the CLS token only, the same
                                        // math as VT's full block, whose other tokens the official DINO loss never reads.
    assert!(m.cls_only_last_block);
    // Not official either: VT's explicit attention is `"explicit"`; the default is libtorch's
    // fused kernel, the same math, the arithmetic of the binaries before the key.
    assert_eq!(m.attention, AttentionKernel::Sdpa);

    let h = &c.head;
    assert_eq!(h.out_dim, 65536); // MD --out_dim 65536
    assert_eq!((h.hidden_dim, h.bottleneck_dim, h.nlayers), (2048, 256, 3)); // VT DINOHead
    assert!(!h.use_bn); // MD --use_bn_in_head False
    assert!(h.norm_last_layer); // MD --norm_last_layer True

    let l = &c.loss;
    assert_eq!(l.student_temp, 0.1); // MD DINOLoss student_temp=0.1
    assert_eq!(l.teacher_temp, 0.04); // MD --teacher_temp 0.04
    assert_eq!(l.warmup_teacher_temp, 0.04); // MD --warmup_teacher_temp 0.04
    assert_eq!(l.warmup_teacher_temp_epochs, 0); // MD --warmup_teacher_temp_epochs default 0
    assert_eq!(l.center_momentum, 0.9); // MD DINOLoss center_momentum=0.9

    // DINOv2 options, off by default (DINO v1). Their DINOv2 values: `dino.koleo_loss_weight:
    // 0.1` (dinov2/configs/ssl_default_config.yaml) and `train.centering: sinkhorn_knopp`
    // (dinov2/configs/train/vitl14.yaml, vitg14.yaml; the default config says "centering").
    assert_eq!(l.koleo_weight, 0.0); // DINO v1 has no KoLeo term
    assert_eq!(l.centering, Centering::Center); // MD DINOLoss: EMA center

    let o = &c.optim;
    assert_eq!(o.batch_size, 64); // MD --batch_size_per_gpu 64
    assert_eq!(o.accum_steps, 1); // MD: no accumulation, one step per batch
    assert_eq!(o.step_batch_size(), 64);
    assert!(!o.backward_per_crop_group); // MD: one joint loss.backward()
    assert_eq!(o.epochs, 100); // MD --epochs 100
    assert_eq!(o.lr, 0.0005); // MD --lr 0.0005 (at batch 256)
    assert_eq!(o.scaled_lr(), 0.0005 * 64.0 / 256.0); // MD lr * batch_size / 256
    assert_eq!(o.min_lr, 1e-6); // MD --min_lr 1e-6
    assert_eq!((o.weight_decay, o.weight_decay_end), (0.04, 0.4)); // MD --weight_decay(_end)
    assert_eq!(o.clip_grad, 3.0); // MD --clip_grad 3.0
    assert_eq!(o.betas, [0.9, 0.999]); // torch.optim.AdamW defaults
    assert_eq!(o.eps, 1e-8);
    // Not official (MD's torch.optim.AdamW(params_groups) runs the single-tensor ops): libtorch's
    // fused kernel, the same update up to rounding (train tests/optim_flat.rs), for speed
    // (docs/bench/train_step.md); optim.fused = false is the official arithmetic bit for bit.
    assert!(o.fused);
    assert_eq!(o.optimizer, OptimizerKind::Adamw); // MD --optimizer adamw
    assert_eq!(o.momentum, 0.9); // MD torch.optim.SGD(params_groups, lr=0, momentum=0.9); utils.LARS momentum=0.9
    assert_eq!(o.lars_eta, 0.001); // utils.LARS eta=0.001

    let s = &c.schedule;
    assert_eq!(s.warmup_epochs, 10); // MD --warmup_epochs 10
    assert_eq!(s.freeze_last_layer, 1); // MD --freeze_last_layer 1
    assert_eq!(s.freeze_backbone_epochs, 0); // not official: nothing frozen
    assert_eq!((s.momentum_teacher, s.momentum_teacher_end), (0.996, 1.0)); // MD cosine_scheduler(m, 1, ...)

    assert_eq!(c.checkpoint.saveckp_freq, 20); // MD --saveckp_freq 20
    assert_eq!(c.checkpoint.latest_every_epochs, 1); // MD saves checkpoint.pth every epoch

    let e = &c.eval;
    assert_eq!(e.knn_k, vec![10, 20, 100, 200]); // KNN --nb_knn
    assert_eq!(e.knn_temperature, 0.07); // KNN --temperature 0.07
    assert_eq!(e.resize_ratio * 224.0, 256.0); // KNN Resize(256) + CenterCrop(224)
    assert_eq!(e.crop_size, 224);
    assert_eq!(e.n_last_blocks, 4); // LIN --n_last_blocks 4
    assert!(!e.avgpool_patchtokens); // LIN --avgpool_patchtokens False
    assert_eq!(e.linear_epochs, 100); // LIN --epochs 100
    assert_eq!(e.linear_lr, 0.001); // LIN --lr 0.001
    assert_eq!(e.linear_batch_size, 128); // LIN --batch_size_per_gpu 128

    assert_eq!(c.runtime.seed, 0); // MD --seed 0
    assert!(!c.runtime.overlap_teacher); // MD: teacher(images[:2]) then student(images), in turn
    assert!(!c.runtime.pack_crop_groups); // MD MultiCropWrapper: the backbone once per resolution
                                          // torch.distributed.constants.default_pg_timeout = timedelta(minutes=30)
    assert_eq!(c.runtime.dist_timeout_s, 1800);
    assert!(c.data.drop_last); // MD DataLoader(drop_last=True)
    c.validate().expect("defaults are valid");
}

#[test]
fn resolved_config_round_trips_through_toml() {
    let c = Config::with_overrides(&[
        "model.arch=vit_tiny",
        "augmentation.global_crops_scale=[0.3, 1.0]",
    ])
    .unwrap();
    let text = c.to_toml_string();
    assert!(
        text.contains("[augmentation]") && text.contains("out_dim = 65536"),
        "{text}"
    );
    let back = Config::from_toml_str(&text, &[]).unwrap();
    assert_eq!(back, c);
    assert_eq!(back.model.arch, Arch::VitTiny);
}

/// `runtime.precision = "auto"` parses from a file and from `--set`, is kept as `auto` (not
/// resolved) by the config, and survives the TOML round trip of a run's stored `config.toml`.
#[test]
fn precision_auto_parses_and_round_trips() {
    assert_eq!(RuntimeConfig::default().precision, Precision::Fp32);
    for (text, ov) in [
        ("[runtime]\nprecision = \"auto\"\n", &[][..]),
        ("", &["runtime.precision=auto"][..]),
        (
            "[runtime]\nprecision = \"bf16\"\n",
            &["runtime.precision=\"auto\""][..],
        ),
    ] {
        let c = Config::from_toml_str(text, ov).unwrap();
        assert_eq!(c.runtime.precision, Precision::Auto, "{text:?} {ov:?}");
        let stored = c.to_toml_string();
        assert!(stored.contains("precision = \"auto\""), "{stored}");
        assert_eq!(Config::from_toml_str(&stored, &[]).unwrap(), c);
    }
    for p in [
        Precision::Fp32,
        Precision::Bf16,
        Precision::Fp16,
        Precision::Auto,
    ] {
        let c = Config::with_overrides(&[&format!("runtime.precision={p}")]).unwrap();
        assert_eq!(c.runtime.precision, p, "Display spelling {p} parses back");
    }
    for k in [
        OptimizerKind::Adamw,
        OptimizerKind::Sgd,
        OptimizerKind::Lars,
    ] {
        let c = Config::with_overrides(&[&format!("optim.optimizer={k}")]).unwrap();
        assert_eq!(c.optim.optimizer, k, "Display spelling {k} parses back");
        assert_eq!(Config::from_toml_str(&c.to_toml_string(), &[]).unwrap(), c);
    }
}

#[test]
fn preset_lists_only_differences_and_overrides_win() {
    let c = Config::from_toml_str(
        "[optim]\nbatch_size = 128\nepochs = 5\n[schedule]\nwarmup_epochs = 1\n",
        &["optim.batch_size=32", "runtime.device=cpu"],
    )
    .unwrap();
    assert_eq!(c.optim.batch_size, 32);
    assert_eq!(c.optim.epochs, 5);
    assert_eq!(c.runtime.device, DeviceRequest::Cpu);
    assert_eq!(c.loss.teacher_temp, 0.04); // untouched default
}

fn err(text: &str, overrides: &[&str]) -> ConfigError {
    Config::from_toml_str(text, overrides).expect_err("must be rejected")
}

/// Malformed configs: each gives one error naming the key, none panics.
#[test]
fn malformed_configs_name_the_key() {
    let cases: &[(&str, &[&str], &str, &str)] = &[
        ("[optim]\nlrr = 0.1\n", &[], "optim.lrr", "unknown field"),
        ("[optimizer]\nlr = 0.1\n", &[], "optimizer", "unknown field"),
        ("[optim]\nlr = \"fast\"\n", &[], "optim.lr", "invalid type"),
        ("[optim]\nbatch_size = -3\n", &[], "optim.batch_size", ""),
        ("[optim]\nlr = -0.001\n", &[], "optim.lr", "> 0"),
        (
            "[augmentation]\nglobal_crops_scale = [0.9, 0.4]\n",
            &[],
            "augmentation.global_crops_scale",
            "min <= max",
        ),
        (
            "[augmentation]\nlocal_crops_scale = [0.0, 0.4]\n",
            &[],
            "augmentation.local_crops_scale",
            "(0",
        ),
        (
            "[augmentation]\nglobal_crops_size = 100\n",
            &[],
            "augmentation.global_crops_size",
            "multiple of model.patch_size",
        ),
        (
            "[augmentation]\nflip_p = 1.5\n",
            &[],
            "augmentation.flip_p",
            "probability",
        ),
        (
            "[model]\narch = \"vit_huge\"\n",
            &[],
            "model.arch",
            "unknown variant",
        ),
        (
            "[model]\narch = \"custom\"\nembed_dim = 100\nnum_heads = 3\n",
            &[],
            "model.num_heads",
            "divide",
        ),
        (
            "[model]\narch = \"vit_tiny\"\ncifar_stem = true\n",
            &[],
            "model.cifar_stem",
            "ResNet",
        ),
        (
            "[loss]\nteacher_temp = 0\n",
            &[],
            "loss.teacher_temp",
            "> 0",
        ),
        (
            "[loss]\nkoleo_weight = -0.1\n",
            &[],
            "loss.koleo_weight",
            ">= 0",
        ),
        (
            "[loss]\ncentering = \"sinkhorn\"\n",
            &[],
            "loss.centering",
            "unknown variant",
        ),
        (
            "[loss]\nkoleo_weight = 0.1\n[optim]\naccum_steps = 2\n",
            &[],
            "optim.accum_steps",
            "KoLeo",
        ),
        (
            "[loss]\ncentering = \"sinkhorn_knopp\"\n[optim]\naccum_steps = 2\n",
            &[],
            "optim.accum_steps",
            "row and column sums",
        ),
        (
            "[method]\nobjective = \"supervised\"\n[data]\nformat = \"image_folder\"\n[loss]\ncentering = \"sinkhorn_knopp\"\n",
            &[],
            "loss.centering",
            "DINO loss option",
        ),
        (
            "",
            &["schedule.warmup_epochs=200"],
            "schedule.warmup_epochs",
            "optim.epochs",
        ),
        (
            "[eval]\nknn_k = [20, 0]\n",
            &[],
            "eval.knn_k[1]",
            "at least 1",
        ),
        (
            "[runtime]\ndevice = \"gpu\"\n",
            &[],
            "runtime.device",
            "cuda:N",
        ),
        ("", &["head.out_dimm=10"], "head.out_dimm", "unknown field"),
        (
            "[eval]\nknn_every_epochs = 1\n",
            &[],
            "eval.knn_train_path",
            "labeled dataset",
        ),
        ("", &["optim.clip_grad=-1"], "optim.clip_grad", ">= 0"),
        (
            "",
            &["optim.accum_steps=0"],
            "optim.accum_steps",
            "at least 1",
        ),
        (
            "",
            &["optim.backward_per_crop_group=true", "head.use_bn=true"],
            "optim.backward_per_crop_group",
            "head.use_bn",
        ),
        (
            "[method]\nobjective = \"supervised\"\n",
            &["optim.accum_steps=2"],
            "optim.accum_steps",
            "dino",
        ),
        (
            "[method]\nobjective = \"supervised\"\n",
            &["optim.backward_per_crop_group=true"],
            "optim.backward_per_crop_group",
            "dino",
        ),
        (
            "",
            &["optim.batch_size=many"],
            "optim.batch_size",
            "invalid type",
        ),
        (
            "[runtime]\nprecision = \"fp8\"\n",
            &[],
            "runtime.precision",
            "unknown variant",
        ),
        (
            "[optim]\noptimizer = \"adam\"\n",
            &[],
            "optim.optimizer",
            "unknown variant",
        ),
        (
            "[method]\nobjective = \"simclr\"\n",
            &[],
            "method.objective",
            "unknown variant",
        ),
        (
            "[method]\nobjective = \"supervised\"\n",
            &["data.format=flat"],
            "method.objective",
            "no labels",
        ),
        ("", &["optim.momentum=1.0"], "optim.momentum", "[0, 1)"),
        ("", &["optim.lars_eta=0"], "optim.lars_eta", "> 0"),
        (
            "",
            &["runtime.precision=Auto"],
            "runtime.precision",
            "`auto`",
        ),
    ];
    for (text, ov, key, reason) in cases {
        let e = err(text, ov);
        assert_eq!(e.key(), *key, "for {text:?} {ov:?}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(key) && msg.contains(reason),
            "for {text:?}: message {msg:?} lacks {key:?}/{reason:?}"
        );
    }
}

#[test]
fn syntax_and_override_errors_are_clear() {
    assert!(matches!(
        err("[optim\nlr = 1", &[]),
        ConfigError::Syntax { .. }
    ));
    let e = err("", &["optim.lr"]);
    assert!(
        matches!(e, ConfigError::Override { .. }) && e.to_string().contains("section.key=value"),
        "{e}"
    );
    let e = err("", &["optim..lr=1"]);
    assert!(matches!(e, ConfigError::Override { .. }), "{e}");
    let e = err("", &["optim.lr.x=1"]);
    assert_eq!(e.key(), "optim.lr");
    let e = Config::from_file("/definitely/not/here.toml", &[]).unwrap_err();
    assert!(
        matches!(e, ConfigError::Io { .. }) && e.to_string().contains("/definitely/not/here.toml")
    );
}

#[test]
fn device_spellings() {
    assert_eq!(RuntimeConfig::default().device, DeviceRequest::Auto);
    let parse = |s: &str| DeviceRequest::try_from(s.to_string());
    assert_eq!(parse("auto"), Ok(DeviceRequest::Auto));
    assert_eq!(parse("cpu"), Ok(DeviceRequest::Cpu));
    assert_eq!(parse("cuda"), Ok(DeviceRequest::Cuda(0)));
    assert_eq!(parse("cuda:1"), Ok(DeviceRequest::Cuda(1)));
    assert!(parse("cuda:x").is_err() && parse("gpu").is_err());
    // Written back as it is spelled in TOML, so a stored config reads again.
    for d in [
        DeviceRequest::Auto,
        DeviceRequest::Cpu,
        DeviceRequest::Cuda(3),
    ] {
        let c = Config::with_overrides(&[&format!("runtime.device=\"{d}\"")]).unwrap();
        assert_eq!(c.runtime.device, d);
        let again = Config::from_toml_str(&c.to_toml_string(), &[]).unwrap();
        assert_eq!(again.runtime.device, d);
    }
}

/// Every preset shipped in configs/ parses and validates.
#[test]
fn shipped_presets_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::from_file(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 3, "expected the shipped presets in {dir}");
}

/// The official ViT-S/16 preset changes no default: it only names the data.
#[test]
fn official_preset_is_all_defaults() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/vit_small16_imagenet.toml"
    );
    let mut c = Config::from_file(path, &[]).unwrap();
    // The run folder is named after the data folder (derived), which the preset gives.
    assert_eq!(c.checkpoint.output_dir, "runs/imagenet");
    c.data = DataConfig::default();
    c.checkpoint.output_dir = CheckpointConfig::default().output_dir;
    assert_eq!(c, Config::default());
}

/// The shape rules have one home: a shape passes `check_vit_shape` exactly when a config with
/// it passes validation (up to the config's own stricter limits), and each break names its key.
#[test]
fn vit_shape_rules_name_their_key() {
    let ok = ModelConfig::default().vit_shape();
    assert_eq!(check_vit_shape(&ok), Ok(()));
    type Break = fn(&mut VitShape);
    let cases: [(&str, Break); 7] = [
        ("model.num_heads", |s| s.num_heads = 5),
        ("model.depth", |s| s.depth = 0),
        ("model.mlp_ratio", |s| s.mlp_ratio = 0.001),
        ("model.drop_path_rate", |s| s.drop_path_rate = 1.0),
        ("model.img_size", |s| s.img_size = 8),
        ("model.layer_norm_eps", |s| s.layer_norm_eps = f64::NAN),
        ("model.patch_size", |s| s.patch_size = 0),
    ];
    for (key, break_it) in cases {
        let mut s = ok;
        break_it(&mut s);
        assert_eq!(check_vit_shape(&s).unwrap_err().key(), key);
    }
}

/// The multi-crop rules have one home: `check_augmentation` and `Config::validate` reject the
/// same section with the same key.
#[test]
fn augmentation_rules_are_shared_with_validation() {
    let mut c = Config::default();
    c.augmentation.local_crops_scale = [0.4, 0.05];
    let direct = check_augmentation(&c.augmentation).unwrap_err();
    assert_eq!(direct.key(), "augmentation.local_crops_scale");
    assert_eq!(c.validate().unwrap_err(), direct);
    c.augmentation = AugmentationConfig::default();
    c.augmentation.global_crops_scale = [0.4, 1.5];
    assert_eq!(
        check_augmentation(&c.augmentation).unwrap_err().key(),
        "augmentation.global_crops_scale"
    );
}

#[test]
fn objective_defaults_to_dino_and_round_trips() {
    let c = Config::default();
    assert_eq!(c.method.objective, Objective::Dino);
    // A config stored before the key existed (no [method]) still reads as DINO.
    let old = Config::from_toml_str("[optim]\nepochs = 30\n", &[]).unwrap();
    assert_eq!(old.method.objective, Objective::Dino);
    for o in [Objective::Dino, Objective::Supervised] {
        let c = Config::with_overrides(&[&format!("method.objective={o}")]).unwrap();
        assert_eq!(c.method.objective, o, "Display spelling {o} parses back");
        let again = Config::from_toml_str(&c.to_toml_string(), &[]).unwrap();
        assert_eq!(again, c);
    }
}

/// A ResNet ignores the ViT keys: crops of any size pass (no patch multiple), a ViT-only
/// `n_last_blocks` beyond its depth is not checked, and the CIFAR stem is accepted.
#[test]
fn resnet_archs_skip_the_vit_rules() {
    let c = Config::with_overrides(&[
        "model.arch=resnet18",
        "model.cifar_stem=true",
        "model.patch_size=0",
        "augmentation.global_crops_size=33",
        "augmentation.local_crops_size=15",
        "eval.crop_size=33",
        "eval.n_last_blocks=40",
    ])
    .unwrap();
    assert!(c.model.arch.is_resnet());
    assert_eq!(c.model.arch.name(), "resnet18");
    for (name, arch) in [
        ("resnet18", Arch::Resnet18),
        ("resnet34", Arch::Resnet34),
        ("resnet50", Arch::Resnet50),
    ] {
        let c = Config::with_overrides(&[&format!("model.arch={name}")]).unwrap();
        assert_eq!(c.model.arch, arch);
        assert_eq!(arch.dims(), None);
        assert!(!c.model.cifar_stem); // not in the official code: off by default
    }
    // The same sizes break a ViT.
    let err = Config::with_overrides(&["augmentation.global_crops_size=33"]).unwrap_err();
    assert_eq!(err.key(), "augmentation.global_crops_size");
}

/// `configs/resnet50_official.toml` is the official ResNet-50 command of the README
/// (facebookresearch/dino @ 7c446df, README.md line 207, "ResNet-50 and other convnets
/// trainings": `main_dino.py --arch resnet50 --optimizer sgd --lr 0.03 --weight_decay 1e-4
/// --weight_decay_end 1e-4 --global_crops_scale 0.14 1 --local_crops_scale 0.05 0.14`, on 8 GPUs
/// at the default `--batch_size_per_gpu 64` for the default 100 epochs) and every other key at
/// the official default. In particular the head has no BatchNorm: the command does not set
/// `--use_bn_in_head`, whose default is False (main_dino.py line 64).
#[test]
fn resnet50_preset_is_the_official_readme_recipe() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/resnet50_official.toml"
    );
    let c = Config::from_file(path, &[]).unwrap();
    assert_eq!(c.model.arch, Arch::Resnet50);
    assert!(!c.model.cifar_stem);
    assert_eq!(c.optim.optimizer, OptimizerKind::Sgd);
    assert_eq!(c.optim.lr, 0.03);
    assert_eq!(c.optim.weight_decay, 1e-4);
    assert_eq!(c.optim.weight_decay_end, 1e-4);
    assert_eq!(c.optim.momentum, 0.9); // main_dino.py: torch.optim.SGD(..., momentum=0.9)
    assert_eq!(c.augmentation.global_crops_scale, [0.14, 1.0]);
    assert_eq!(c.augmentation.local_crops_scale, [0.05, 0.14]);
    assert!(!c.head.use_bn);
    // Nothing else differs from the defaults.
    let mut d = Config::default();
    d.model.arch = Arch::Resnet50;
    d.optim.optimizer = OptimizerKind::Sgd;
    (d.optim.lr, d.optim.weight_decay, d.optim.weight_decay_end) = (0.03, 1e-4, 1e-4);
    d.augmentation.global_crops_scale = [0.14, 1.0];
    d.augmentation.local_crops_scale = [0.05, 0.14];
    let mut c = c;
    c.data = DataConfig::default();
    c.checkpoint.output_dir = CheckpointConfig::default().output_dir;
    assert_eq!(c, d);
}
