//! `runtime.overlap_teacher`: the teacher's forward in a second thread beside the student's
//! forward. The step gives the serial step's loss, gradients and center to 1e-5 (scaled by the
//! tensor's largest element where that exceeds 1), with stochastic depth, local crops and
//! KoLeo on; two overlapped steps from the same seed are bitwise equal (every random draw stays
//! on the calling thread); and libtorch's thread count is put back after the step.

use crate::common::{
    assert_matches_and_repeats, serial, tiny_dino_config, two_dino_steps, TwoSteps,
};
use dino_config::Config;

const TOL: f64 = 1e-5;

fn config(overlap: bool) -> Config {
    tiny_dino_config(&[
        "loss.koleo_weight=0.1",
        &format!("runtime.overlap_teacher={overlap}"),
    ])
}

/// Two forward/backward passes on two libtorch threads ([`two_dino_steps`]): the losses, the
/// student's gradients and the center; libtorch's thread count is checked after them.
fn dino_step(overlap: bool) -> TwoSteps {
    tch::set_num_threads(2);
    let out = two_dino_steps(&config(overlap));
    assert_eq!(
        tch::get_num_threads(),
        2,
        "the thread count was not put back"
    );
    out
}

#[test]
fn overlapped_teacher_matches_the_serial_step_and_repeats_bitwise() {
    alone!();
    let _serial = serial();
    // Reproducible: stochastic depth draws on the calling thread only, in the serial order.
    assert_matches_and_repeats(
        "overlapped teacher",
        &dino_step(false),
        &dino_step(true),
        &dino_step(true),
        TOL,
    );
}
