//! Checkpoint round trip (bitwise), atomic layout and recovery, numbered copies.

use dino_config::{Config, OptimConfig};
use dino_train::checkpoint::{
    load_latest, load_named, numbered_name, save_checkpoint, CheckpointError, CheckpointMeta,
    CheckpointTensors,
};
use dino_train::optim::Optimizer;
use std::collections::HashSet;
use std::fs;
use tch::{nn::VarStore, Device, Kind, Tensor};

fn store() -> VarStore {
    let vs = VarStore::new(Device::Cpu);
    let root = vs.root();
    let b = &root / "backbone";
    let _ = b.randn("cls_token", &[1, 1, 4], 0.0, 1.0);
    let _ = (&b / "norm").randn("weight", &[4], 0.0, 1.0);
    let _ = (&root / "head" / "last_layer").ones_no_train("weight_g", &[3, 1]);
    let _ = (&root / "head" / "last_layer").randn("weight_v", &[3, 4], 0.0, 1.0);
    vs
}

struct Run {
    student: VarStore,
    teacher: VarStore,
    opt: Optimizer,
    center: Tensor,
}

fn run(seed: i64, steps: usize) -> Run {
    tch::manual_seed(seed);
    let student = store();
    let teacher = store();
    let mut opt = Optimizer::from_var_store(&student, &OptimConfig::default()).unwrap();
    for _ in 0..steps {
        opt.zero_grad();
        let mut loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
        for t in student.trainable_variables() {
            loss += (&t * &t).sum(Kind::Float);
        }
        opt.backward(&loss).unwrap();
        opt.step(1e-2, 0.04, &HashSet::new()).unwrap();
    }
    let center = Tensor::randn([1, 5], (Kind::Float, Device::Cpu));
    Run {
        student,
        teacher,
        opt,
        center,
    }
}

fn save(dir: &std::path::Path, r: &Run, epoch: usize, numbered: Option<&str>) -> CheckpointMeta {
    let mut cfg = Config::default();
    cfg.runtime.seed = 7;
    cfg.optim.lr = 1.0 / 3.0; // exact float round trip through the saved TOML
    let mut meta = CheckpointMeta::new(&cfg, epoch, 3, epoch * 10 + 3);
    assert_eq!(meta.seed, 7);
    meta.data_position = 96;
    meta.versions.insert("dino".into(), "0.1.0".into());
    meta.metrics = serde_json::json!({"loss": 4.5});
    let parts = CheckpointTensors {
        student: &r.student,
        teacher: &r.teacher,
        optim: r.opt.state_tensors().unwrap(),
        scaler: Vec::new(),
        centers: vec![("center", &r.center)],
    };
    save_checkpoint(dir, &parts, &meta, numbered).unwrap()
}

#[test]
fn round_trip_is_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    let a = run(0, 3);
    let written = save(dir.path(), &a, 4, None);
    assert_ne!(written.save_id, 0);
    let loaded = load_latest(dir.path()).unwrap();
    assert_eq!(loaded.meta, written);
    assert_eq!(
        (
            loaded.meta.epoch,
            loaded.meta.step_in_epoch,
            loaded.meta.global_iter
        ),
        (4, 3, 43)
    );
    let cfg = loaded.meta.config().unwrap();
    assert_eq!(cfg.optim.lr, 1.0 / 3.0);
    assert_eq!(cfg.runtime.seed, 7);
    assert_eq!(cfg.head, Config::default().head);

    let mut b = run(99, 0);
    loaded.restore_student(&b.student).unwrap();
    loaded.restore_teacher(&b.teacher).unwrap();
    b.opt.load_state(&loaded.optim_state()).unwrap();
    for (n, t) in a.student.variables() {
        assert!(t.equal(&b.student.variables()[&n]), "student {n}");
    }
    for (n, t) in a.teacher.variables() {
        assert!(t.equal(&b.teacher.variables()[&n]), "teacher {n}");
    }
    for ((na, ta), (nb, tb)) in a
        .opt
        .state_tensors()
        .unwrap()
        .iter()
        .zip(b.opt.state_tensors().unwrap().iter())
    {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "optim {na}");
    }
    assert!(loaded.center().unwrap().equal(&a.center));
    // No stray files: exactly the pair.
    let mut files: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["checkpoint.json", "checkpoint.safetensors"]);
}

#[test]
fn restore_rejects_another_model() {
    let dir = tempfile::tempdir().unwrap();
    save(dir.path(), &run(0, 1), 1, None);
    let loaded = load_latest(dir.path()).unwrap();
    let other = VarStore::new(Device::Cpu);
    let _ = other.root().randn("different", &[2], 0.0, 1.0);
    let err = loaded.restore_student(&other).unwrap_err();
    assert!(matches!(err, CheckpointError::Mismatch(_)), "{err}");
    assert!(err.to_string().contains("different"), "{err}");
}

#[test]
fn leftover_temp_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let a = run(0, 2);
    let written = save(dir.path(), &a, 2, None);
    // A crash while writing the next checkpoint leaves partial temporaries.
    fs::write(
        dir.path().join("checkpoint.safetensors.tmp"),
        b"\x10\x00\x00partial",
    )
    .unwrap();
    fs::write(
        dir.path().join("checkpoint.json.tmp"),
        b"{\"format_version\": 1, \"sa",
    )
    .unwrap();
    let loaded = load_latest(dir.path()).unwrap();
    assert_eq!(loaded.meta, written);
    // A later successful save replaces the temporaries.
    let w2 = save(dir.path(), &a, 3, None);
    assert_eq!(load_latest(dir.path()).unwrap().meta, w2);
    assert!(!dir.path().join("checkpoint.json.tmp").exists());
}

#[test]
fn crash_between_renames_is_detected_and_recovered() {
    let old = tempfile::tempdir().unwrap();
    let new = tempfile::tempdir().unwrap();
    let r = run(0, 1);
    let w_old = save(old.path(), &r, 1, None);
    let w_new = save(new.path(), &r, 2, None);
    // State after renaming the new tensors but before renaming the new JSON.
    fs::copy(
        new.path().join("checkpoint.safetensors"),
        old.path().join("checkpoint.safetensors"),
    )
    .unwrap();
    fs::copy(
        new.path().join("checkpoint.json"),
        old.path().join("checkpoint.json.tmp"),
    )
    .unwrap();
    let loaded = load_latest(old.path()).unwrap();
    assert_eq!(loaded.meta, w_new, "the interrupted save is completed");
    assert_ne!(loaded.meta, w_old);
    assert!(!old.path().join("checkpoint.json.tmp").exists());
    // Without the finished JSON the mismatch is an error, never a silent mix.
    fs::write(
        old.path().join("checkpoint.json"),
        serde_json::to_vec(&w_old).unwrap(),
    )
    .unwrap();
    let err = load_latest(old.path()).unwrap_err();
    assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("different saves"), "{err}");
}

#[test]
fn missing_and_corrupt_checkpoints_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_latest(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(err, CheckpointError::NotFound { .. }), "{err}");
    let err = load_latest(dir.path()).unwrap_err();
    assert!(err.to_string().contains("no checkpoint"), "{err}");

    save(dir.path(), &run(0, 1), 1, None);
    let st = dir.path().join("checkpoint.safetensors");
    let bytes = fs::read(&st).unwrap();
    fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_latest(dir.path()).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Corrupt { path, .. } if path == &st),
        "{err}"
    );

    save(dir.path(), &run(0, 1), 1, None);
    fs::write(dir.path().join("checkpoint.json"), b"not json").unwrap();
    let err = load_latest(dir.path()).unwrap_err();
    assert!(err.to_string().contains("checkpoint.json"), "{err}");
}

#[test]
fn keeps_a_numbered_copy_every_k_epochs() {
    // Official: `checkpoint{epoch:04}.pth` when epoch % saveckp_freq == 0 (0-based epoch just
    // finished, so epoch 0 too).
    assert_eq!(numbered_name(20, 20).as_deref(), Some("checkpoint0020"));
    assert_eq!(numbered_name(0, 20).as_deref(), Some("checkpoint0000"));
    assert_eq!(numbered_name(19, 20), None);
    assert_eq!(numbered_name(20, 0), None);
    let dir = tempfile::tempdir().unwrap();
    let r = run(0, 1);
    let mut kept = Vec::new();
    for epoch in 0..5 {
        let name = numbered_name(epoch, 2);
        let w = save(dir.path(), &r, epoch + 1, name.as_deref());
        if let Some(n) = name {
            kept.push((n, w));
        }
    }
    let mut files: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "checkpoint.json",
            "checkpoint.safetensors",
            "checkpoint0000.json",
            "checkpoint0000.safetensors",
            "checkpoint0002.json",
            "checkpoint0002.safetensors",
            "checkpoint0004.json",
            "checkpoint0004.safetensors"
        ]
    );
    for (name, w) in kept {
        assert_eq!(
            load_named(dir.path(), &name).unwrap().meta,
            w,
            "{name} kept its own save"
        );
    }
    assert_eq!(load_latest(dir.path()).unwrap().meta.epoch, 5);
}
