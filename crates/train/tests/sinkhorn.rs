//! Sinkhorn-Knopp teacher targets against `tests/reference/sinkhorn_reference.py` (written from
//! reading DINOv2's `sinkhorn_knopp_teacher`) within 1e-6, the two-shard all-reduce emulation,
//! and the DINO loss with `loss.centering = "sinkhorn_knopp"`.

use crate::common;

use common::{assert_close, npy, run_reference, values};
use dino_config::{Centering, LossConfig};
use dino_train::loss::sinkhorn::{sinkhorn_knopp, SINKHORN_ITERATIONS};
use dino_train::loss::stats::{CENTER_NORM, DINO, TEACHER_ENTROPY};
use dino_train::loss::{DinoLoss, LossError};
use tch::{Kind, Tensor};

fn single(t: &Tensor, temp: f64) -> Tensor {
    sinkhorn_knopp::<LossError>(t, temp, SINKHORN_ITERATIONS, 1, &|_| Ok(())).unwrap()
}

#[test]
fn matches_reference_single_process() {
    let dir = run_reference("sinkhorn_reference.py", &["{out}"]);
    let dir = dir.path();
    for case in ["small", "wide", "sharp"] {
        let t = npy(dir, &format!("teacher_{case}"));
        let temp = npy(dir, &format!("temp_{case}")).double_value(&[0]);
        let q = single(&t, temp);
        let want = values(&npy(dir, &format!("q_{case}")));
        assert_close(&format!("SK {case}"), &values(&q), &want, 1e-6, 0.0);
        let rows = values(&q.sum_dim_intlist(1, false, Kind::Double));
        assert!(rows.iter().all(|r| (r - 1.0).abs() < 1e-5), "{rows:?}");
    }
}

/// Two "processes" holding half the rows each, their sums added as the all-reduce adds them
/// (run in lockstep: each collective's first call records, the second completes), give the
/// single process's rows within 1e-6 — and the reference's own two-shard result.
#[test]
fn two_shards_with_summed_collectives_equal_one_process() {
    let dir = run_reference("sinkhorn_reference.py", &["{out}"]);
    let dir = dir.path();
    for case in ["small", "wide", "sharp"] {
        let t = npy(dir, &format!("teacher_{case}"));
        let temp = npy(dir, &format!("temp_{case}")).double_value(&[0]);
        let half = t.size()[0] / 2;
        let shards = [t.narrow(0, 0, half), t.narrow(0, half, half)];
        let q = lockstep(&shards, temp);
        let want = values(&npy(dir, &format!("q_{case}")));
        assert_close(
            &format!("SK 2 shards {case}"),
            &values(&q),
            &want,
            1e-6,
            0.0,
        );
        let want2 = values(&npy(dir, &format!("q2_{case}")));
        assert_close(
            &format!("SK 2 shards {case} vs ref"),
            &values(&q),
            &want2,
            1e-6,
            0.0,
        );
    }
}

/// Runs the two shards in two threads that meet at each collective and add their tensors.
fn lockstep(shards: &[Tensor; 2], temp: f64) -> Tensor {
    use std::sync::{Arc, Barrier, Mutex};
    let barrier = Arc::new(Barrier::new(2));
    let slot: Arc<Mutex<Vec<Vec<f32>>>> = Arc::new(Mutex::new(Vec::new()));
    let data: Vec<(Vec<f32>, Vec<i64>)> = shards
        .iter()
        .map(|s| (Vec::<f32>::try_from(&s.reshape([-1])).unwrap(), s.size()))
        .collect();
    let handles: Vec<_> = data
        .into_iter()
        .map(|(v, size)| {
            let (barrier, slot) = (barrier.clone(), slot.clone());
            std::thread::spawn(move || {
                let t = Tensor::from_slice(&v).reshape(size.as_slice());
                let q = sinkhorn_knopp::<LossError>(&t, temp, SINKHORN_ITERATIONS, 2, &|x| {
                    let shape = x.size();
                    let mine = Vec::<f32>::try_from(&x.reshape([-1])).unwrap();
                    slot.lock().unwrap().push(mine);
                    barrier.wait();
                    let sum: Vec<f32> = {
                        let s = slot.lock().unwrap();
                        s[0].iter().zip(&s[1]).map(|(a, b)| a + b).collect()
                    };
                    barrier.wait();
                    slot.lock().unwrap().clear();
                    barrier.wait();
                    *x = Tensor::from_slice(&sum).reshape(shape.as_slice());
                    Ok(())
                })
                .unwrap();
                (
                    Vec::<f32>::try_from(&q.contiguous().reshape([-1])).unwrap(),
                    q.size(),
                )
            })
        })
        .collect();
    let parts: Vec<Tensor> = handles
        .into_iter()
        .map(|h| {
            let (v, size) = h.join().unwrap();
            Tensor::from_slice(&v).reshape(size.as_slice())
        })
        .collect();
    Tensor::cat(&parts, 0)
}

/// With `centering = "sinkhorn_knopp"` the loss's targets are the SK rows and the center is
/// neither read nor changed by the loss.
#[test]
fn dino_loss_with_sinkhorn_targets() {
    let cfg = LossConfig {
        centering: Centering::SinkhornKnopp,
        ..LossConfig::default()
    };
    let (k, b, n) = (16i64, 4i64, 3usize);
    let mut loss_fn = DinoLoss::new(k as usize, n, &cfg, 1).unwrap();
    loss_fn
        .set_center(&Tensor::full([1, k], 5.0, (Kind::Float, tch::Device::Cpu)))
        .unwrap();
    tch::manual_seed(3);
    let teacher = Tensor::rand([2 * b, k], (Kind::Float, tch::Device::Cpu)) * 2 - 1;
    let student = Tensor::rand([n as i64 * b, k], (Kind::Float, tch::Device::Cpu)) * 2 - 1;
    let out = loss_fn.forward(&student, &teacher, 0).unwrap();
    // Hand-built: SK targets, student log-softmax at 0.1, pairs (j, v != j), mean.
    let q = single(&teacher, 0.04).chunk(2, 0);
    let s = (&student / 0.1)
        .log_softmax(-1, Kind::Float)
        .chunk(n as i64, 0);
    let mut total = 0.0;
    let mut terms = 0.0;
    for (j, qj) in q.iter().enumerate() {
        for (v, sv) in s.iter().enumerate() {
            if v != j {
                total += (-(qj * sv).sum_dim_intlist(-1, false, Kind::Float))
                    .mean(Kind::Float)
                    .double_value(&[]);
                terms += 1.0;
            }
        }
    }
    assert_close(
        "SK DINO loss",
        &[out.stats.loss],
        &[total / terms],
        1e-6,
        0.0,
    );
    assert_eq!(
        out.stats.get(DINO, CENTER_NORM).unwrap(),
        values(&loss_fn.center().norm())[0]
    );
    assert_eq!(values(loss_fn.center())[0], 5.0);
    let h = out.stats.get(DINO, TEACHER_ENTROPY).unwrap();
    assert!(h.is_finite() && h > 0.0 && h < (k as f64).ln());
}
