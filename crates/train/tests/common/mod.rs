//! Helpers shared by the integration tests: run a reference script of `tests/reference/` with
//! the project virtualenv's Python and read its `.npy` outputs (parity tests); a tiny DINO
//! config and the student's gradients, compared at a scaled tolerance (the step-variant tests:
//! CLS-only block, overlapped teacher). The tiny training runs of the `dino` binary's tests are
//! in crates/cli/tests/common.
#![allow(dead_code)]

use dino_config::Config;
use dino_model::ComputePrecision;
use dino_train::accumulation::Window;
use dino_train::distributed::Dist;
use dino_train::method::DinoMethod;
use dino_train::optim::Optimizer;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use tch::{nn, Device, Kind, Tensor};

/// libtorch's generator is process-global: the seeded step tests run one at a time.
static RNG: Mutex<()> = Mutex::new(());

/// The lock every seeded step test holds while it runs.
pub fn serial() -> MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// A tiny ViT DINO config (width 32, depth 3, patch 4, 16-px globals and two 8-px locals,
/// batch 5, stochastic depth 0.3) with `extra` overrides applied after it.
pub fn tiny_dino_config(extra: &[&str]) -> Config {
    let mut sets = vec![
        "model.arch=\"custom\"",
        "model.embed_dim=32",
        "model.depth=3",
        "eval.n_last_blocks=1",
        "model.num_heads=2",
        "model.patch_size=4",
        "model.img_size=16",
        "model.drop_path_rate=0.3",
        "head.out_dim=64",
        "head.hidden_dim=48",
        "head.bottleneck_dim=16",
        "augmentation.global_crops_size=16",
        "augmentation.local_crops_size=8",
        "augmentation.local_crops_number=2",
        "optim.batch_size=5",
        "optim.epochs=2",
        "schedule.warmup_epochs=0",
        "schedule.freeze_last_layer=0",
    ];
    sets.extend(extra);
    Config::with_overrides(&sets).unwrap()
}

/// The trainable variables' gradients, sorted by name: read from the optimizer, which has
/// backward write them into its flat group buffers (a variable's `.grad` stays undefined).
pub fn grads(vs: &nn::VarStore, optimizer: &Optimizer) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, v)| v.requires_grad())
        .map(|(n, _)| {
            let g = optimizer
                .grad(&n)
                .unwrap()
                .expect("every parameter gets a gradient");
            (n, g.copy())
        })
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Largest `|a − b| / max(1, max |a|)` over the pairs, the name where it is, and whether any
/// pair differs at all (bitwise).
pub fn compare(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> (f64, String, bool) {
    assert_eq!(a.len(), b.len());
    let (mut worst, mut name, mut any) = (0.0f64, String::new(), false);
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert!(ta.defined() && tb.defined(), "{na}: no gradient");
        any |= !ta.equal(tb);
        let scale = ta.abs().max().double_value(&[]).max(1.0);
        let d = (ta - tb).abs().max().double_value(&[]) / scale;
        if d > worst {
            (worst, name) = (d, na.clone());
        }
    }
    (worst, name, any)
}

/// The project virtualenv's Python; fails (never skips) when it is missing.
pub fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        p.exists(),
        "the Python reference environment {} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}

/// Runs `tests/reference/<script>` with `args`, where `{out}` is replaced by a fresh temporary
/// folder, which is returned (deleted on drop).
pub fn run_reference(script: &str, args: &[&str]) -> tempfile::TempDir {
    let out = tempfile::tempdir().expect("temp dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/reference")
        .join(script);
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{out}", &out.path().to_string_lossy()))
        .collect();
    let res = Command::new(python())
        .arg(&script)
        .args(&args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("failed to start the reference Python (run scripts/setup.sh)");
    assert!(
        res.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    out
}

/// Reads `<dir>/<name>.npy`.
pub fn npy(dir: &Path, name: &str) -> Tensor {
    Tensor::read_npy(dir.join(format!("{name}.npy")))
        .unwrap_or_else(|e| panic!("reading {name}.npy: {e}"))
}

/// The values of a tensor as f64.
pub fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(
        &t.to_kind(tch::Kind::Double)
            .to_device(tch::Device::Cpu)
            .reshape([-1]),
    )
    .unwrap()
}

/// Asserts |a − b| <= atol + rtol·|b| elementwise.
pub fn assert_close(what: &str, a: &[f64], b: &[f64], atol: f64, rtol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= atol + rtol * y.abs(),
            "{what}[{i}]: got {x}, expected {y} (diff {:e})",
            (x - y).abs()
        );
    }
}

/// Two DINO forward/backward passes of a fresh method built from `cfg` (the second centres with
/// the first's teacher mean) on seeded crops `[10, 3, 16, 16]` and `[10, 3, 8, 8]` (batch 5 of
/// [`tiny_dino_config`]): both losses, the student's gradients after the second and the center.
pub fn two_dino_steps(cfg: &Config) -> (Vec<f64>, Vec<(String, Tensor)>, Tensor) {
    let dist = Dist::single();
    let mut m = DinoMethod::new(cfg, 4, Device::Cpu, ComputePrecision::Fp32, &dist).unwrap();
    tch::manual_seed(99);
    let opts = (Kind::Float, Device::Cpu);
    let crops = [
        Tensor::randn([10, 3, 16, 16], opts),
        Tensor::randn([10, 3, 8, 8], opts),
    ];
    let losses = (0..2)
        .map(|it| {
            m.forward_backward_crops(&crops, (0, it), it, Window::SINGLE, &dist)
                .unwrap()
                .loss
        })
        .collect();
    (
        losses,
        grads(&m.student_vs, &m.optimizer),
        m.loss.center().copy(),
    )
}

/// What [`two_dino_steps`] returns: both losses, the student's gradients, the center.
pub type TwoSteps = (Vec<f64>, Vec<(String, Tensor)>, Tensor);

/// Asserts that `a`, a variant of the step (`what` in messages), gives `reference`'s losses
/// (within `tol` · max(1, |loss|)), gradients (within `tol`, scaled as [`compare`] scales them)
/// and center (within `tol`), and that `b`, the same variant run again from the same seed,
/// equals `a` bit for bit.
pub fn assert_matches_and_repeats(
    what: &str,
    reference: &TwoSteps,
    a: &TwoSteps,
    b: &TwoSteps,
    tol: f64,
) {
    let (worst, name, _) = compare(&reference.1, &a.1);
    let center = (&reference.2 - &a.2).abs().max().double_value(&[]);
    eprintln!(
        "{what}: losses {:?} vs {:?}; worst scaled gradient difference {worst:e} ({name}), \
         center {center:e}",
        reference.0, a.0
    );
    for (r, x) in reference.0.iter().zip(&a.0) {
        assert!(
            (r - x).abs() <= tol * r.abs().max(1.0),
            "{what}: loss {r} vs {x}"
        );
    }
    assert!(
        worst <= tol,
        "{what}: {name}: gradients differ by {worst:e} (scaled)"
    );
    assert!(center <= tol, "{what}: center differs by {center:e}");
    assert_eq!(a.0, b.0, "{what}: two runs from one seed");
    let (_, name, differs) = compare(&a.1, &b.1);
    assert!(!differs, "{what}: {name}: two steps from one seed differ");
    assert!(
        a.2.equal(&b.2),
        "{what}: the centers of two steps from one seed differ"
    );
}
