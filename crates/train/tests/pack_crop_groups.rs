//! `runtime.pack_crop_groups`: the student's global and local crops through each ViT block
//! together. The training step gives the per-group step's losses, gradients and center to 1e-5
//! (scaled by the tensor's largest element where that exceeds 1), with stochastic depth and
//! KoLeo on, alone and beside `runtime.overlap_teacher`; two packed steps from the same seed are
//! bitwise equal; the key reaches the student (and only it: the teacher sees one group).

use crate::common::{assert_matches_and_repeats, serial, tiny_dino_config, two_dino_steps};
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
    let reference = two_dino_steps(&config(false, false));
    for overlap in [false, true] {
        assert_matches_and_repeats(
            &format!("packed, overlap_teacher {overlap}"),
            &reference,
            &two_dino_steps(&config(true, overlap)),
            &two_dino_steps(&config(true, overlap)),
            TOL,
        );
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
