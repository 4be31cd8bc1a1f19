//! KoLeo against `tests/reference/koleo_reference.py` (written from reading DINOv2's
//! `koleo_loss.py` and `ssl_meta_arch.py`), value and gradient within 1e-6, and its edge cases.

use crate::common;

use common::{assert_close, npy, run_reference, values};
use dino_train::loss::koleo::{koleo, koleo_term};
use tch::{Kind, Tensor};

#[test]
fn matches_reference_value_and_gradient() {
    let dir = run_reference("koleo_reference.py", &["{out}", "0.1"]);
    let dir = dir.path();
    for case in ["random", "two", "wide", "dups"] {
        let x = npy(dir, &format!("x_{case}")).set_requires_grad(true);
        let term = koleo_term(&x, 0.1).unwrap();
        term.backward();
        assert_close(
            &format!("KoLeo term, case {case}"),
            &values(&term),
            &values(&npy(dir, &format!("loss_{case}"))),
            1e-6,
            0.0,
        );
        assert_close(
            &format!("KoLeo gradient, case {case}"),
            &values(&x.grad()),
            &values(&npy(dir, &format!("grad_{case}"))),
            1e-6,
            0.0,
        );
    }
}

/// Batch 1 has no neighbour: the term is 0 with no gradient (the official code returns a
/// constant with a zero gradient, dinov2 #314).
#[test]
fn batch_of_one_is_zero_and_finite() {
    let x = Tensor::randn([2, 16], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let term = koleo_term(&x, 0.1).unwrap();
    assert_eq!(term.double_value(&[]), 0.0);
    assert!(!term.requires_grad());
    assert_eq!(koleo(&x.narrow(0, 0, 1)).unwrap().double_value(&[]), 0.0);
}

/// Identical rows: finite value (−log of the eps-floored distance) and finite gradient, which
/// cancels between the two duplicates; unequal rows do not see it.
#[test]
fn duplicates_are_finite() {
    let base = Tensor::randn([4, 16], (Kind::Float, tch::Device::Cpu));
    let x = Tensor::cat(&[&base, &base.narrow(0, 0, 1)], 0).set_requires_grad(true);
    let loss = koleo(&x).unwrap();
    loss.backward();
    let v = loss.double_value(&[]);
    assert!(v.is_finite() && v > 3.0, "{v}");
    let g = values(&x.grad());
    assert!(g.iter().all(|v| v.is_finite()));
    let all_same = Tensor::ones([3, 8], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let loss = koleo(&all_same).unwrap();
    loss.backward();
    assert!(loss.double_value(&[]).is_finite());
    assert!(values(&all_same.grad()).iter().all(|v| v.is_finite()));
}

#[test]
fn odd_rows_are_refused() {
    let x = Tensor::randn([3, 4], (Kind::Float, tch::Device::Cpu));
    assert!(koleo_term(&x, 0.1).is_err());
}
