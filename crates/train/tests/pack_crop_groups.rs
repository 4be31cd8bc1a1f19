//! `runtime.pack_crop_groups`: the student's global and local crops through each ViT block
//! together. The training step gives the per-group step's losses, gradients and center to 1e-5
//! (scaled by the tensor's largest element where that exceeds 1), with stochastic depth and
//! KoLeo on, alone and beside `runtime.overlap_teacher`; two packed steps from the same seed are
//! bitwise equal; the key reaches the student (and only it: the teacher sees one group).

use crate::common::{compare, serial, tiny_dino_config, two_dino_steps};
use dino_config::Config;
use dino_model::ComputePrecision;
use dino_train::distributed::Dist;
use dino_train::method::DinoMethod;
use tch::Device;

const TOL: f64 = 1e-5;

fn config(pack: bool, overlap: bool) -> Config {
    tiny_dino_config(&[
        "loss.koleo_weight=0.1",
        &format!("runtime.pack_crop_groups={pack}"),
        &format!("runtime.overlap_teacher={overlap}"),
    ])
}

#[test]
fn packed_crop_groups_match_the_per_group_step_and_repeat_bitwise() {
    alone!();
    let _serial = serial();
    tch::set_num_threads(2);
    let (loss_ref, g_ref, c_ref) = two_dino_steps(&config(false, false));
    for overlap in [false, true] {
        let (loss_a, g_a, c_a) = two_dino_steps(&config(true, overlap));
        let (loss_b, g_b, c_b) = two_dino_steps(&config(true, overlap));
        let (worst, name, _) = compare(&g_ref, &g_a);
        let center = (&c_ref - &c_a).abs().max().double_value(&[]);
        eprintln!(
            "overlap {overlap}: losses per group {loss_ref:?} packed {loss_a:?}; worst scaled \
             gradient difference {worst:e} ({name}), center {center:e}"
        );
        for (s, p) in loss_ref.iter().zip(&loss_a) {
            assert!((s - p).abs() <= TOL * s.abs().max(1.0), "loss {s} vs {p}");
        }
        assert!(
            worst <= TOL,
            "{name}: gradients differ by {worst:e} (scaled)"
        );
        assert!(center <= TOL, "center differs by {center:e}");
        assert_eq!(loss_a, loss_b, "two packed runs from one seed");
        let (_, name, differs) = compare(&g_a, &g_b);
        assert!(!differs, "{name}: two packed steps from one seed differ");
        assert!(c_a.equal(&c_b), "the centers of two packed steps differ");
    }
}

#[test]
fn the_key_reaches_the_student_only() {
    let dist = Dist::single();
    for pack in [false, true] {
        let m = DinoMethod::new(
            &config(pack, false),
            4,
            Device::Cpu,
            ComputePrecision::Fp32,
            &dist,
        )
        .unwrap();
        assert_eq!(m.student.pack_groups, pack);
        assert!(
            !m.teacher.pack_groups,
            "the teacher sees the global crops only"
        );
    }
}
