//! `runtime.overlap_teacher`: the teacher's forward in a second thread beside the student's
//! forward. The step gives the serial step's loss, gradients and center to 1e-5 (scaled by the
//! tensor's largest element where that exceeds 1), with stochastic depth, local crops and
//! KoLeo on; two overlapped steps from the same seed are bitwise equal (every random draw stays
//! on the calling thread); and libtorch's thread count is put back after the step.

use crate::common::{compare, serial, tiny_dino_config, two_dino_steps};
use dino_config::Config;
use tch::Tensor;

const TOL: f64 = 1e-5;

fn config(overlap: bool) -> Config {
    tiny_dino_config(&[
        "loss.koleo_weight=0.1",
        &format!("runtime.overlap_teacher={overlap}"),
    ])
}

/// Two forward/backward passes on two libtorch threads ([`two_dino_steps`]): the losses, the
/// student's gradients and the center; libtorch's thread count is checked after them.
fn dino_step(overlap: bool) -> (Vec<f64>, Vec<(String, Tensor)>, Tensor) {
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
    let (loss_serial, g_serial, c_serial) = dino_step(false);
    let (loss_a, g_a, c_a) = dino_step(true);
    let (loss_b, g_b, c_b) = dino_step(true);
    let (worst, name, _) = compare(&g_serial, &g_a);
    let center = (&c_serial - &c_a).abs().max().double_value(&[]);
    eprintln!(
        "losses serial {loss_serial:?} overlapped {loss_a:?}; worst scaled gradient difference \
         {worst:e} ({name}), center {center:e}"
    );
    for (s, o) in loss_serial.iter().zip(&loss_a) {
        assert!((s - o).abs() <= TOL * s.abs().max(1.0), "loss {s} vs {o}");
    }
    assert!(
        worst <= TOL,
        "{name}: gradients differ by {worst:e} (scaled)"
    );
    assert!(center <= TOL, "center differs by {center:e}");
    // Reproducible: stochastic depth draws on the calling thread only, in the serial order.
    assert_eq!(loss_a, loss_b);
    let (_, name, differs) = compare(&g_a, &g_b);
    assert!(
        !differs,
        "{name}: two overlapped steps from one seed differ"
    );
    assert!(
        c_a.equal(&c_b),
        "the centers of two overlapped steps differ"
    );
}
