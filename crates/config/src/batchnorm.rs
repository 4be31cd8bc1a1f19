//! The one home of the rule "BatchNorm in training mode sees more than one value per channel":
//! which images pass through BatchNorm together in a training step, how small a torchvision
//! ResNet's feature maps get for a crop size, and the refusal, before any work, of a step in
//! which some BatchNorm would get one value per channel (its batch variance is undefined and the
//! unbiased running variance divides by n − 1 = 0: NaN for good, with a finite loss). PyTorch's
//! `F.batch_norm` refuses that input ("Expected more than 1 value per channel when training");
//! libtorch's op does not, so the model crate checks it again at run time
//! (`dino_model::ModelError::OneValuePerChannel`).

use crate::{Config, ConfigError, Objective};

/// Side in pixels of a square `side`-px crop's feature map at each stage of a torchvision ResNet:
/// `conv1` (where `bn1` runs), then `layer1` … `layer4` (their smallest map: a stage's first
/// block halves the side, except in `layer1`). torchvision's stem (7×7 stride-2 conv, 3×3
/// stride-2 max-pool) divides the side by 4, the CIFAR stem (`model.cifar_stem`) by 1; each of
/// `layer2` … `layer4` halves it; every step rounds up (`⌊(s − 1) / 2⌋ + 1`, the output side of
/// those strided convolutions and the max-pool with their paddings). `crates/model`'s
/// `tests/model.rs` pins these against the network's own feature maps.
pub fn resnet_map_sides(cifar_stem: bool, side: usize) -> [(&'static str, usize); 5] {
    let half = |s: usize| s.div_ceil(2);
    let conv1 = if cifar_stem { side } else { half(side) };
    let layer1 = if cifar_stem { conv1 } else { half(conv1) };
    let layer2 = half(layer1);
    let layer3 = half(layer2);
    let layer4 = half(layer3);
    [
        ("conv1", conv1),
        ("layer1", layer1),
        ("layer2", layer2),
        ("layer3", layer3),
        ("layer4", layer4),
    ]
}

/// The smallest crop side whose `layer4` map is larger than 1 × 1: 33 px with torchvision's
/// stem (overall stride 32), 9 px with the CIFAR stem (stride 8).
pub fn resnet_min_side_above_one(cifar_stem: bool) -> usize {
    if cifar_stem {
        9
    } else {
        33
    }
}

/// One backbone or head forward of a training step whose images share BatchNorm statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchNormPass {
    /// What passes, for messages ("the local crops go through the backbone together: 1 per
    /// image x 1 image(s) per pass").
    pub what: String,
    /// Images (or feature rows) in the pass.
    pub images: usize,
    /// Crop side in pixels; `None` for the head, whose BatchNorm sees `[N, C]` rows.
    pub side: Option<usize>,
    /// The keys other than the batch size that change this pass, for the message.
    pub cure: String,
}

/// The BatchNorm passes of one training step of `c` on a micro-batch of `batch` images, with
/// every BatchNorm in training mode: for a ResNet backbone, the 2 global crops of every image
/// together (teacher and student) and the local crops together (student; official
/// `MultiCropWrapper`, one backbone pass per resolution), or with
/// `optim.backward_per_crop_group` one view of `batch` crops at a time; with `head.use_bn`, the
/// head's rows (the teacher's 2 global ones per image; the student's all crops, more). The
/// supervised objective passes the global crops only. A ViT without a BatchNorm head has none.
pub fn batchnorm_passes(c: &Config, batch: usize) -> Vec<BatchNormPass> {
    let a = &c.augmentation;
    let (g, l, n) = (
        a.global_crops_size as usize,
        a.local_crops_size as usize,
        a.local_crops_number,
    );
    let dino = c.method.objective == Objective::Dino;
    let mut passes = Vec::new();
    if c.model.arch.is_resnet() {
        let min = resnet_min_side_above_one(c.model.cifar_stem);
        let size = |key: &str| format!("model.cifar_stem = true, {key} of at least {min}");
        passes.push(BatchNormPass {
            what: format!(
                "the 2 global crops of each image go through the backbone together: 2 x {batch} \
                 image(s) per pass"
            ),
            images: 2 * batch,
            side: Some(g),
            cure: size("augmentation.global_crops_size"),
        });
        if dino && c.optim.backward_per_crop_group {
            for (view, side, key) in [
                ("global", g, "augmentation.global_crops_size"),
                ("local", l, "augmentation.local_crops_size"),
            ] {
                if view == "local" && n == 0 {
                    continue;
                }
                passes.push(BatchNormPass {
                    what: format!(
                        "optim.backward_per_crop_group sends one {view} view at a time through \
                         the backbone: {batch} image(s) per pass"
                    ),
                    images: batch,
                    side: Some(side),
                    cure: format!("{}, optim.backward_per_crop_group = false", size(key)),
                });
            }
        } else if dino && n > 0 {
            passes.push(BatchNormPass {
                what: format!(
                    "the local crops go through the backbone together: {n} per image x {batch} \
                     image(s) per pass"
                ),
                images: n * batch,
                side: Some(l),
                cure: format!(
                    "{}, augmentation.local_crops_number of at least 2",
                    size("augmentation.local_crops_size")
                ),
            });
        }
    }
    if dino && c.head.use_bn {
        passes.push(BatchNormPass {
            what: format!(
                "the teacher's head normalises the rows of the 2 global crops: 2 x {batch} per \
                 pass"
            ),
            images: 2 * batch,
            side: None,
            cure: "head.use_bn = false".into(),
        });
    }
    passes
}

/// Where a pass gets one value per channel: the first ResNet stage whose map is 1 × 1 for a pass
/// of one image (with its side there), or the head for one row; `None` when every BatchNorm of
/// the pass sees at least 2 values per channel.
fn one_value_at(p: &BatchNormPass, cifar_stem: bool) -> Option<String> {
    match p.side {
        None => (p.images < 2).then(|| "the head's BatchNorm1d sees one row".to_string()),
        Some(side) => {
            let sides = resnet_map_sides(cifar_stem, side);
            let smallest = sides[4].1;
            if p.images * smallest * smallest >= 2 {
                return None;
            }
            let (stage, _) = sides.iter().find(|(_, s)| *s == 1)?;
            let stem = if cifar_stem {
                "the CIFAR stem"
            } else {
                "torchvision's stem"
            };
            Some(format!(
                "a {side}-px crop is 1 x 1 from ResNet {stage} on ({stem})"
            ))
        }
    }
}

/// Refuses, before any work, a training configuration in which some BatchNorm in training mode
/// would see one value per channel ([`batchnorm_passes`] at `optim.batch_size`), and, when each
/// epoch ends with a smaller batch (`data.drop_last = false`), at that batch of `last_batch`
/// images (known once the dataset is opened: the trainer passes it; `samples` is the number of
/// images per process, for the message). Not part of [`Config::validate`], which also gates
/// evaluation of runs whose training settings no longer matter.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `optim.batch_size` (or `data.drop_last` for the last batch),
/// the pass, the stage where the map is 1 × 1, and the keys that cure it.
pub fn check_batchnorm(c: &Config, last_batch: Option<(usize, usize)>) -> Result<(), ConfigError> {
    const WHY: &str = "its batch variance is then undefined, and its running variance would \
                       become NaN for good";
    let b = c.optim.batch_size;
    for p in batchnorm_passes(c, b) {
        if let Some(at) = one_value_at(&p, c.model.cifar_stem) {
            return Err(ConfigError::invalid(
                "optim.batch_size",
                format!(
                    "{b} leaves a BatchNorm one value per channel: {}, and {at}; {WHY}. Use {}, \
                     or optim.batch_size of at least 2",
                    p.what, p.cure
                ),
            ));
        }
    }
    if let Some((last, samples)) = last_batch.filter(|&(last, _)| last > 0 && last < b) {
        for p in batchnorm_passes(c, last) {
            if let Some(at) = one_value_at(&p, c.model.cifar_stem) {
                return Err(ConfigError::invalid(
                    "data.drop_last",
                    format!(
                        "false keeps each epoch's last batch of {last} image(s) ({samples} images \
                         per process, optim.batch_size = {b}), which leaves a BatchNorm one value \
                         per channel: {}, and {at}; {WHY}. Set data.drop_last = true (official), \
                         or use {}, or an optim.batch_size that leaves no last batch of {last}",
                        p.what, p.cure
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resnet(sets: &[&str]) -> Config {
        let mut all = vec!["model.arch=resnet18"];
        all.extend_from_slice(sets);
        Config::with_overrides(&all).unwrap()
    }

    #[test]
    fn map_sides_follow_the_strides() {
        // torchvision's stem: /2 (conv1), /2 (max-pool), then layer2-4 /2 each, rounding up.
        let sides = |stem, s| resnet_map_sides(stem, s).map(|(_, v)| v);
        assert_eq!(sides(false, 224), [112, 56, 28, 14, 7]);
        assert_eq!(sides(false, 32), [16, 8, 4, 2, 1]);
        assert_eq!(sides(false, 16), [8, 4, 2, 1, 1]);
        assert_eq!(sides(false, 33), [17, 9, 5, 3, 2]);
        assert_eq!(sides(true, 32), [32, 32, 16, 8, 4]);
        assert_eq!(sides(true, 8), [8, 8, 4, 2, 1]);
        assert_eq!(sides(true, 9), [9, 9, 5, 3, 2]);
        for stem in [false, true] {
            let min = resnet_min_side_above_one(stem);
            assert!(sides(stem, min)[4] > 1 && sides(stem, min - 1)[4] == 1);
        }
    }

    #[test]
    fn one_image_per_pass_at_a_one_by_one_map_is_refused_naming_the_cure() {
        // shared/cases/resnet-bn-one-value-nan (b): batch 1, one view at a time, 32-px crops.
        let c = resnet(&[
            "augmentation.global_crops_size=32",
            "augmentation.local_crops_size=16",
            "optim.batch_size=1",
            "optim.backward_per_crop_group=true",
        ]);
        let err = check_batchnorm(&c, None).unwrap_err();
        assert_eq!(err.key(), "optim.batch_size");
        let msg = err.to_string();
        for part in [
            "32-px crop is 1 x 1 from ResNet layer4",
            "one global view at a time",
            "1 image(s) per pass",
            "model.cifar_stem = true",
            "at least 33",
            "optim.backward_per_crop_group = false",
        ] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
        // The same with the CIFAR stem (4 x 4 at layer4) or two images per view is fine.
        let mut ok = c.clone();
        ok.model.cifar_stem = true;
        check_batchnorm(&ok, None).unwrap();
        let mut ok = c.clone();
        ok.optim.batch_size = 2;
        check_batchnorm(&ok, None).unwrap();
        // Joint: one local crop of one image is alone in its pass (1 x 1 from layer3 at 16 px).
        let mut joint = c.clone();
        joint.optim.backward_per_crop_group = false;
        joint.augmentation.local_crops_number = 1;
        let msg = check_batchnorm(&joint, None).unwrap_err().to_string();
        assert!(
            msg.contains("16-px crop is 1 x 1 from ResNet layer3"),
            "{msg}"
        );
        assert!(
            msg.contains("augmentation.local_crops_number of at least 2"),
            "{msg}"
        );
        // Two local crops share the pass; the globals always come two per image.
        joint.augmentation.local_crops_number = 2;
        check_batchnorm(&joint, None).unwrap();
    }

    #[test]
    fn a_last_batch_of_one_image_is_refused_under_drop_last_false() {
        // shared/cases/resnet-bn-one-value-nan (a): 9 images at batch 8 leave a last batch of 1.
        let c = resnet(&[
            "augmentation.global_crops_size=32",
            "augmentation.local_crops_size=16",
            "augmentation.local_crops_number=1",
            "optim.batch_size=8",
            "data.drop_last=false",
        ]);
        check_batchnorm(&c, None).unwrap();
        let err = check_batchnorm(&c, Some((1, 9))).unwrap_err();
        assert_eq!(err.key(), "data.drop_last");
        let msg = err.to_string();
        assert!(
            msg.contains("last batch of 1 image(s) (9 images per process"),
            "{msg}"
        );
        assert!(msg.contains("data.drop_last = true"), "{msg}");
        // A last batch of 2 is fine.
        check_batchnorm(&c, Some((2, 10))).unwrap();
    }

    #[test]
    fn a_vit_and_the_official_resnet_crops_have_nothing_to_refuse() {
        let vit = Config::with_overrides(&["optim.batch_size=1"]).unwrap();
        assert!(batchnorm_passes(&vit, 1).is_empty());
        check_batchnorm(&vit, Some((1, 5))).unwrap();
        // ResNet-50 at the official 224 / 96 px crops: 7 x 7 and 3 x 3 at layer4.
        let r50 = Config::with_overrides(&["model.arch=resnet50", "optim.batch_size=1"]).unwrap();
        check_batchnorm(&r50, None).unwrap();
        // A BatchNorm head sees at least the 2 global rows of an image.
        let bn = Config::with_overrides(&["head.use_bn=true", "optim.batch_size=1"]).unwrap();
        assert_eq!(batchnorm_passes(&bn, 1)[0].images, 2);
        check_batchnorm(&bn, None).unwrap();
    }
}
