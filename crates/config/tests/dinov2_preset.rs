//! `configs/dinov2_vits14.toml` (issue #29 item 6): each value equals DINOv2's, with the key of
//! facebookresearch/dinov2 `dinov2/configs/ssl_default_config.yaml` (or the file) it comes from.

use dino_config::{Arch, Centering, Config, Ffn, OptimizerKind, PosInterpolation};

fn preset() -> Config {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/dinov2_vits14.toml"
    );
    Config::from_file(path, &[]).unwrap()
}

#[test]
fn the_dinov2_preset_holds_the_official_values() {
    let c = preset();
    let (a, m, h, l, o, s) = (
        &c.augmentation,
        &c.model,
        &c.head,
        &c.loss,
        &c.optim,
        &c.schedule,
    );
    // crops.*
    assert_eq!(a.global_crops_size, 224); // crops.global_crops_size
    assert_eq!(a.global_crops_scale, [0.32, 1.0]); // crops.global_crops_scale
    assert_eq!(a.local_crops_number, 8); // crops.local_crops_number
    assert_eq!(a.local_crops_size, 98); // configs/train/vitl14.yaml crops.local_crops_size
    assert_eq!(a.local_crops_scale, [0.05, 0.32]); // crops.local_crops_scale
                                                   // student.* and hub/backbones.py dinov2_vits14
    assert_eq!(m.arch, Arch::VitSmall); // arch_name="vit_small"
    assert_eq!(m.dims(), (384, 12, 6)); // models/vision_transformer.py vit_small
    assert_eq!(m.patch_size, 14); // patch_size=14
    assert_eq!(m.img_size, 224); // models/__init__.py img_size=crops.global_crops_size
    assert_eq!(m.drop_path_rate, 0.3); // student.drop_path_rate
    assert!(m.qkv_bias); // student.qkv_bias
    assert_eq!(m.layerscale_init, 1e-5); // student.layerscale
    assert_eq!(m.ffn, Ffn::Mlp); // student.ffn_layer
    assert_eq!(m.num_register_tokens, 0); // student.num_register_tokens
                                          // student.interpolate_offset 0.1, interpolate_antialias false
    assert_eq!(m.pos_interpolation, PosInterpolation::ScaleFactor);
    assert_eq!(m.layer_norm_eps, 1e-6); // models/vision_transformer.py norm_layer eps=1e-6
    assert_eq!(m.mlp_ratio, 4.0); // vit_small mlp_ratio=4
                                  // dino.*
    assert_eq!(h.out_dim, 65536); // dino.head_n_prototypes
    assert_eq!(h.hidden_dim, 2048); // dino.head_hidden_dim
    assert_eq!(h.bottleneck_dim, 256); // dino.head_bottleneck_dim
    assert_eq!(h.nlayers, 3); // dino.head_nlayers
    assert!(!h.use_bn); // layers/dino_head.py use_bn=False
    assert!(!h.norm_last_layer); // layers/dino_head.py: weight_g trained
    assert_eq!(l.koleo_weight, 0.1); // dino.koleo_loss_weight
    let i = &c.ibot; // ibot.* (issue #31)
    assert_eq!(i.loss_weight, 1.0); // ibot.loss_weight
    assert_eq!(i.mask_sample_probability, 0.5); // ibot.mask_sample_probability
    assert_eq!(i.mask_ratio_min_max, [0.1, 0.5]); // ibot.mask_ratio_min_max
    assert!(!i.separate_head); // ibot.separate_head: the DINO head is shared
                               // teacher.*
    assert_eq!(l.warmup_teacher_temp, 0.04); // teacher.warmup_teacher_temp
    assert_eq!(l.teacher_temp, 0.07); // teacher.teacher_temp
    assert_eq!(l.warmup_teacher_temp_epochs, 30); // teacher.warmup_teacher_temp_epochs
    assert_eq!(s.momentum_teacher, 0.992); // teacher.momentum_teacher
    assert_eq!(s.momentum_teacher_end, 1.0); // teacher.final_momentum_teacher
                                             // loss/dino_clstoken_loss.py DINOLoss(student_temp=0.1, center_momentum=0.9)
    assert_eq!((l.student_temp, l.center_momentum), (0.1, 0.9));
    assert_eq!(l.centering, Centering::Center); // train.centering: "centering"
                                                // optim.*
    assert_eq!(o.optimizer, OptimizerKind::Adamw);
    assert_eq!(o.batch_size, 64); // train.batch_size_per_gpu
    assert_eq!(o.epochs, 100); // optim.epochs
                               // optim.base_lr 0.004 for a batch of 1024 (sqrt_wrt_1024): the linear rule here gives
                               // 0.004 at 1024 images.
    assert_eq!(o.lr * 1024.0 / 256.0, 0.004);
    assert_eq!(o.min_lr, 1e-6); // optim.min_lr
    assert_eq!(o.weight_decay, 0.04); // optim.weight_decay
    assert_eq!(o.weight_decay_end, 0.4); // optim.weight_decay_end
    assert_eq!(o.clip_grad, 3.0); // optim.clip_grad
    assert_eq!(o.betas, [0.9, 0.999]); // optim.adamw_beta1, optim.adamw_beta2
    assert_eq!(s.warmup_epochs, 10); // optim.warmup_epochs
    assert_eq!(s.freeze_last_layer, 1); // optim.freeze_last_layer_epochs
    assert_eq!(c.runtime.seed, 0); // train.seed
}

/// DINOv2's augmentations are DINO v1's (dinov2 `data/augmentations.py`
/// DataAugmentationDINO: the same flip, jitter, grayscale, blur and solarize): the preset keeps
/// the defaults there.
#[test]
fn the_dinov2_preset_keeps_v1_photometric_augmentations() {
    let c = preset();
    let d = Config::default().augmentation;
    let a = &c.augmentation;
    assert_eq!(
        (a.flip_p, a.color_jitter_p, a.grayscale_p, a.solarize_p),
        (d.flip_p, d.color_jitter_p, d.grayscale_p, d.solarize_p)
    );
    assert_eq!(
        (a.brightness, a.contrast, a.saturation, a.hue),
        (0.4, 0.4, 0.2, 0.1)
    );
}
