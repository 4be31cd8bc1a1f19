//! EMA teacher on a small VarStore: parameters averaged, buffers left alone, frozen teacher.

use dino_train::teacher::{
    ema_update, ema_update_skipping, init_teacher_from_student, parameter_names, TeacherError,
};
use tch::{nn::VarStore, Device, Kind, Tensor};

fn store(extra: bool) -> VarStore {
    let vs = VarStore::new(Device::Cpu);
    let root = vs.root();
    let lin = &root / "head" / "mlp" / "0";
    let _ = lin.randn("weight", &[3, 4], 0.0, 1.0);
    let _ = lin.randn("bias", &[3], 0.0, 1.0);
    let last = &root / "head" / "last_layer";
    let _ = last.randn("weight_v", &[2, 3], 0.0, 1.0);
    let _ = (&root / "bn").zeros_no_train("running_mean", &[3]);
    if extra {
        let _ = root.randn("extra", &[2], 0.0, 1.0);
    }
    vs
}

fn get(vs: &VarStore, n: &str) -> Tensor {
    vs.variables()[n].shallow_clone()
}

#[test]
fn init_copies_everything_and_freezes() {
    tch::manual_seed(0);
    let student = store(false);
    let mut teacher = store(false);
    let _ = tch::no_grad(|| get(&student, "bn.running_mean").fill_(2.5));
    init_teacher_from_student(&mut teacher, &student).unwrap();
    for (n, t) in teacher.variables() {
        assert!(t.equal(&get(&student, &n)), "{n} not copied");
        assert!(!t.requires_grad(), "{n} still requires grad");
    }
    assert!(
        get(&student, "head.mlp.0.weight").requires_grad(),
        "student untouched"
    );
    let mut mismatched = store(true);
    assert!(matches!(
        init_teacher_from_student(&mut mismatched, &student),
        Err(TeacherError::Missing(n)) if n == "extra"
    ));
}

#[test]
fn ema_averages_parameters_only() {
    tch::manual_seed(1);
    let student = store(false);
    let mut teacher = store(false);
    init_teacher_from_student(&mut teacher, &student).unwrap();
    // The student moves on (an optimizer step) and its buffer changes (a forward pass).
    tch::no_grad(|| {
        for (_, t) in student.variables() {
            let _ = t
                .shallow_clone()
                .g_add_(&Tensor::randn(t.size(), (Kind::Float, Device::Cpu)));
        }
    });
    let before: Vec<(String, Tensor)> = teacher
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    let m = 0.996;
    ema_update(&teacher, &student, m).unwrap();
    for (n, old) in before {
        let now = get(&teacher, &n);
        if n == "bn.running_mean" {
            assert!(now.equal(&old), "buffers are not averaged");
            continue;
        }
        let want = old.shallow_clone() * m + get(&student, &n) * (1.0 - m);
        let diff = f64::try_from((&now - &want).abs().max()).unwrap();
        assert!(diff < 1e-6, "{n}: {diff}");
        assert!(!now.equal(&old), "{n} did not move");
        assert!(!now.requires_grad(), "teacher stays frozen");
    }
    // m = 1 keeps the teacher, m = 0 copies the student parameters.
    let snap = get(&teacher, "head.mlp.0.weight").copy();
    ema_update(&teacher, &student, 1.0).unwrap();
    assert!(get(&teacher, "head.mlp.0.weight").equal(&snap));
    ema_update(&teacher, &student, 0.0).unwrap();
    assert!(get(&teacher, "head.mlp.0.weight").equal(&get(&student, "head.mlp.0.weight")));
    assert!(matches!(
        ema_update(&teacher, &student, 1.5),
        Err(TeacherError::Momentum(_))
    ));
}

#[test]
fn parameters_are_trainable_variables_even_when_frozen() {
    let vs = store(false);
    let _ = get(&vs, "head.last_layer.weight_v").set_requires_grad(false);
    let mut names: Vec<String> = parameter_names(&vs).into_iter().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "head.last_layer.weight_v",
            "head.mlp.0.bias",
            "head.mlp.0.weight"
        ]
    );
}

#[test]
fn ema_reports_missing_teacher_variables() {
    let student = store(true);
    let teacher = store(false);
    assert!(
        matches!(ema_update(&teacher, &student, 0.9), Err(TeacherError::Missing(n)) if n == "extra")
    );
}

/// The EMA of an unchanged tensor is not bitwise the tensor (`m·t + (1 − m)·t` rounds), so a
/// frozen part is skipped by name and keeps its teacher values exactly.
#[test]
fn skipped_parameters_keep_their_teacher_values_bitwise() {
    tch::manual_seed(2);
    let student = store(false);
    let mut teacher = store(false);
    init_teacher_from_student(&mut teacher, &student).unwrap();
    // A plain EMA of equal tensors changes some of their values by rounding.
    let wide = |vs: &VarStore| {
        let _ = vs.root().randn("w", &[4096], 0.0, 1.0);
    };
    let (probe, mut probe_t) = (VarStore::new(Device::Cpu), VarStore::new(Device::Cpu));
    wide(&probe);
    wide(&probe_t);
    init_teacher_from_student(&mut probe_t, &probe).unwrap();
    ema_update(&probe_t, &probe, 0.996).unwrap();
    let rounded = get(&probe_t, "w")
        .ne_tensor(&get(&probe, "w"))
        .sum(Kind::Int64);
    assert!(
        rounded.int64_value(&[]) > 0,
        "rounding moves an EMA of equal tensors"
    );
    tch::no_grad(|| {
        let _ = get(&student, "head.last_layer.weight_v").g_add_scalar_(1.0);
    });
    let mlp = get(&teacher, "head.mlp.0.weight").copy();
    ema_update_skipping(&teacher, &student, 0.996, |n| n.starts_with("head.mlp.")).unwrap();
    assert!(get(&teacher, "head.mlp.0.weight").equal(&mlp));
    assert!(!get(&teacher, "head.last_layer.weight_v")
        .equal(&get(&student, "head.last_layer.weight_v")));
}
