//! Agreement of the label propagation (affinities within 1e-4, soft labels, label maps) and of
//! DAVIS's J and F (exactly) with a PyTorch/numpy re-implementation written from the official
//! description (`tests/reference/video_seg_reference.py`), on fixed random features and
//! hand-made masks.

use crate::common;
use common::run_reference;

use std::path::Path;

use dino_eval::video::davis::IndexMask;
use dino_eval::video::davis_metrics::{boundary_f, jaccard, BOUND_TH};
use dino_eval::video::segmentation::{
    affinity, one_hot, resize_nearest, soft_to_labels, Propagator, SegmentConfig,
};
use tch::{Device, Kind, Tensor};

fn npy(dir: &Path, name: &str) -> Tensor {
    Tensor::read_npy(dir.join(format!("{name}.npy"))).unwrap()
}

fn mask_of(t: &Tensor) -> IndexMask {
    let (h, w) = t.size2().unwrap();
    IndexMask {
        width: w as u32,
        height: h as u32,
        data: Vec::<u8>::try_from(t.to_kind(Kind::Uint8).flatten(0, -1)).unwrap(),
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn propagation_agrees_with_reference() {
    let (dir, results) = run_reference("video_seg_reference.py");
    let dir = dir.path();
    let cases = results["propagation"].as_object().unwrap();
    assert_eq!(cases.len(), 3);
    for (name, c) in cases {
        let get = |k: &str| c[k].as_f64().unwrap();
        let cfg = SegmentConfig {
            n_last_frames: get("n_last") as usize,
            size_mask_neighborhood: get("r") as usize,
            topk: get("k") as usize,
            temperature: get("T"),
        };
        let (h, w, patch) = (get("h") as i64, get("w") as i64, get("patch") as i64);
        let (width, height) = (get("W") as u32, get("H") as u32);
        let feats = npy(dir, &format!("prop_{name}_feats"));
        let first = mask_of(&npy(dir, &format!("prop_{name}_first")));
        // The first frame's labels shrunk to the patch grid as Pillow NEAREST does.
        let small = resize_nearest(&first, w as u32, h as u32);
        assert_eq!(
            small,
            mask_of(&npy(dir, &format!("prop_{name}_small"))),
            "{name}"
        );
        let classes = i64::from(first.max_object()) + 1;
        let labels = one_hot(&small, classes, Device::Cpu).unwrap();
        let mut prop = Propagator::new(cfg, &feats.get(0), &labels).unwrap();
        let steps = get("steps") as i64;
        // The predicted frames in the context (their features), as the propagator keeps them.
        let mut queue: Vec<Tensor> = Vec::new();
        for t in 1..=steps {
            let target = feats.get(t);
            let sources: Vec<Tensor> = std::iter::once(feats.get(0))
                .chain(queue.iter().map(Tensor::shallow_clone))
                .collect();
            let mask = (cfg.size_mask_neighborhood > 0).then(|| {
                dino_eval::video::segmentation::neighborhood_mask(
                    h,
                    w,
                    cfg.size_mask_neighborhood as i64,
                    Device::Cpu,
                )
                .unwrap()
            });
            let aff = affinity(
                &target,
                &Tensor::stack(&sources, 0),
                mask.as_ref(),
                cfg.topk,
                cfg.temperature,
            )
            .unwrap();
            let want_aff = npy(dir, &format!("prop_{name}_aff{t}"));
            let d = max_abs_diff(&aff, &want_aff);
            assert!(d <= 1e-4, "{name} step {t}: affinity differs by {d}");

            let soft = prop.step(&target).unwrap();
            let want_soft = npy(dir, &format!("prop_{name}_soft{t}"));
            let d = max_abs_diff(&soft, &want_soft);
            assert!(d <= 1e-4, "{name} step {t}: soft labels differ by {d}");
            // The label step (upsampling, per-channel min-max, arg-max, nearest resize) on the
            // reference's own soft labels gives its label map exactly.
            let want = mask_of(&npy(dir, &format!("prop_{name}_labels{t}")));
            let exact = soft_to_labels(&want_soft, patch, width, height).unwrap();
            assert!(
                exact == want,
                "{name} step {t}: label map of the reference's soft labels"
            );
            // From our own soft labels (within 1e-4 of the reference's), a pixel whose two best
            // channels are that close may flip: allow 1 % of the pixels.
            let ours = soft_to_labels(&soft, patch, width, height).unwrap();
            let differ = ours
                .data
                .iter()
                .zip(&want.data)
                .filter(|(a, b)| a != b)
                .count();
            assert!(
                differ * 100 <= want.data.len(),
                "{name} step {t}: {differ} of {} labels differ",
                want.data.len()
            );
            if queue.len() == cfg.n_last_frames {
                let _oldest = queue.remove(0);
            }
            queue.push(target);
        }
    }
}

#[test]
fn j_and_f_agree_exactly_with_reference() {
    let (dir, results) = run_reference("video_seg_reference.py");
    let cases = results["jf"].as_array().unwrap();
    assert!(cases.len() >= 10);
    let values = npy(dir.path(), "jf_values");
    assert_eq!(values.size(), [cases.len() as i64, 2]);
    let mut partial = 0;
    for (i, c) in cases.iter().enumerate() {
        let (w, h) = (
            c["width"].as_u64().unwrap() as usize,
            c["height"].as_u64().unwrap() as usize,
        );
        let flags = |what: &str| -> Vec<bool> {
            let t = npy(dir.path(), &format!("jf_{i}_{what}"));
            assert_eq!(t.size(), [h as i64, w as i64]);
            Vec::<u8>::try_from(t.flatten(0, -1))
                .unwrap()
                .into_iter()
                .map(|v| v != 0)
                .collect()
        };
        let (gt, pred) = (flags("gt"), flags("pred"));
        let (j, f) = (
            values.double_value(&[i as i64, 0]),
            values.double_value(&[i as i64, 1]),
        );
        assert_eq!(jaccard(&gt, &pred), j, "case {i}: J");
        assert_eq!(boundary_f(&gt, &pred, w, h, BOUND_TH), f, "case {i}: F");
        partial += usize::from(f > 0.0 && f < 1.0);
    }
    // The cases are not all trivial (0 or 1).
    assert!(partial >= 5);
}
