//! Issue #29: "resume bitwise with each new option on". `resume.rs` runs KoLeo, Sinkhorn-Knopp
//! and the four backbone options together (`dinov2_backbone_options_run_resumes_bitwise`);
//! here each backbone option alone, so a state that only one of them keeps (the register
//! tokens without LayerScale's gains, SwiGLU's fused weight without registers) is checked on
//! its own: a run killed with SIGKILL after its first mid-epoch checkpoint and resumed ends
//! bitwise equal to the uninterrupted run.

use crate::resume::kill_and_resume;

/// Each option alone; `names` are variables it adds, saved for student, teacher and optimizer.
fn alone(set: &str, names: &[&str]) {
    let (_tmp, t) = kill_and_resume("", &[set]);
    for name in names {
        for side in ["student.backbone.", "teacher.backbone."] {
            assert!(
                t.iter()
                    .any(|(n, _)| n.starts_with(side) && n.ends_with(name)),
                "{set}: {side}…{name} not saved"
            );
        }
        assert!(
            t.iter()
                .any(|(n, _)| n.starts_with("optim.") && n.ends_with(name)),
            "{set}: no optimizer state for {name}"
        );
    }
}

#[test]
fn registers_alone_resume_bitwise() {
    alone("model.num_register_tokens=2", &["register_tokens"]);
}

#[test]
fn layerscale_alone_resumes_bitwise() {
    alone(
        "model.layerscale_init=1e-5",
        &["blocks.0.ls1.gamma", "blocks.1.ls2.gamma"],
    );
}

#[test]
fn swiglu_alone_resumes_bitwise() {
    alone("model.ffn=swiglu", &["mlp.w12.weight", "mlp.w3.weight"]);
}

#[test]
fn antialiased_position_resize_alone_resumes_bitwise() {
    // No variable of its own: the resized table differs, the run must still resume exactly.
    alone("model.pos_interpolation=antialias", &[]);
}
