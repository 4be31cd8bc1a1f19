//! How much of the CLS attention lies on the object, given boxes drawn around it.
//!
//! The paper measures its attention masks against PASCAL VOC segmentations with the Jaccard
//! index (DINO §4.2.1, Table 5). Photos without segmentations get boxes instead; two numbers
//! per map then say whether it "shows the object":
//! - **mass in box**: the share of the map's attention that falls inside the boxes. A map that
//!   ignores the object scores about the boxes' area fraction (uniform attention scores exactly
//!   that), one on the object scores more. Divided by that area it is the **lift**: 1 for
//!   uniform attention, above 1 on the object, below 1 on the background.
//! - **Jaccard**: intersection over union of the map's threshold mask
//!   ([`threshold_mask`](crate::attention::threshold_mask)) with the boxes, in pixels of the
//!   image the model saw.
//!
//! Boxes are fractions of the original image's width and height, `[x0, y0, x1, y1]`, origin
//! top-left. A resize keeps fractions, square or not (the official `Resize((480, 480))` as
//! well as `Resize(480)`); the crop to a multiple of the patch size that follows the
//! aspect-keeping resize cuts up to a patch off the right and bottom edges, and
//! [`boxes_in_crop`](crate::attention::score::boxes_in_crop) maps the boxes into the cropped
//! image the maps cover. Several boxes count as their union.
//!
//! Box files ([`read_boxes`](crate::attention::score::read_boxes)) are JSON objects from an image
//! path, relative to a data folder, to its boxes: `{"ants/x.jpg": [[x0, y0, x1, y1], ...], ...}`;
//! keys starting with `_` are comments. `docs/hymenoptera_val_boxes.json` is one.

use std::collections::BTreeMap;
use std::path::Path;

use crate::attention::{threshold_mask, AttentionError, AttentionMaps};

/// One box, `[x0, y0, x1, y1]` as fractions of the image width (x) and height (y), origin
/// top-left.
pub type FracBox = [f64; 4];

/// Samples per patch side used to measure the box cover of a patch (error at most about
/// `1/SUB` of a patch side per box edge).
const SUB: usize = 16;

/// Scores of one attention map against the boxes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BoxScore {
    /// Share of the attention mass inside the boxes, in [0, 1].
    pub mass_in_box: f64,
    /// `mass_in_box` over the boxes' area fraction: how much denser the attention is on the
    /// object than on the whole image. Uniform attention scores 1; a map on the background
    /// less than 1.
    pub lift: f64,
    /// Jaccard index (IoU) of the threshold mask with the boxes, in [0, 1].
    pub jaccard: f64,
}

/// Scores of every head and of the mean over heads for one image.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ImageBoxScores {
    /// Share of the image the boxes cover: what uniform attention scores as mass in box.
    pub box_area: f64,
    /// One score per head, in head order.
    pub heads: Vec<BoxScore>,
    /// Score of the mean map over heads.
    pub mean: BoxScore,
}

/// Checks that `b` is `[x0, y0, x1, y1]` with `0 ≤ x0 < x1 ≤ 1` and `0 ≤ y0 < y1 ≤ 1`.
///
/// # Errors
/// [`AttentionError::Shape`] naming the box otherwise.
pub fn check_box(b: &FracBox) -> Result<(), AttentionError> {
    let unit = |v: f64| (0.0..=1.0).contains(&v);
    if b.iter().all(|&v| unit(v)) && b[0] < b[2] && b[1] < b[3] {
        Ok(())
    } else {
        Err(AttentionError::Shape(format!(
            "box {b:?} is not [x0, y0, x1, y1] with 0 ≤ x0 < x1 ≤ 1 and 0 ≤ y0 < y1 ≤ 1"
        )))
    }
}

/// `boxes` (fractions of the original image) as fractions of the top-left crop that keeps
/// `kept = (x, y)` of the resized image's width and height
/// ([`AttentionImage::kept_fraction`](crate::attention::AttentionImage::kept_fraction); `(1, 1)`
/// when nothing was cropped): coordinates are divided by `kept` and clipped to the crop; a box
/// wholly in the cut-off strip is dropped.
///
/// # Errors
/// As [`check_box`] for each box; [`AttentionError::Shape`] when `kept` is not in (0, 1] or no
/// box reaches into the crop.
pub fn boxes_in_crop(boxes: &[FracBox], kept: (f64, f64)) -> Result<Vec<FracBox>, AttentionError> {
    boxes.iter().try_for_each(check_box)?;
    let unit = |v: f64| v > 0.0 && v <= 1.0;
    if !(unit(kept.0) && unit(kept.1)) {
        return Err(AttentionError::Shape(format!(
            "kept share {kept:?} of the resized image is not in (0, 1]"
        )));
    }
    let out: Vec<FracBox> = boxes
        .iter()
        .map(|b| {
            [
                b[0] / kept.0,
                b[1] / kept.1,
                (b[2] / kept.0).min(1.0),
                (b[3] / kept.1).min(1.0),
            ]
        })
        .filter(|b| b[0] < b[2] && b[1] < b[3])
        .collect();
    if out.is_empty() {
        return Err(AttentionError::Shape(format!(
            "the boxes {boxes:?} lie in the strip cropped off to fit the patch grid"
        )));
    }
    Ok(out)
}

/// The boxes of one image of a box file.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBoxes {
    /// The image's path relative to the data folder (the file's key), e.g. `ants/x.jpg`.
    pub path: String,
    /// The name of its outputs: the path without its extension, e.g. `ants/x`.
    pub name: String,
    /// Its boxes, each checked by [`check_box`]; at least one.
    pub boxes: Vec<FracBox>,
}

/// Reads a box file (see the module documentation), in key order, comments left out.
///
/// # Errors
/// [`AttentionError::BoxFile`] naming the file, and the key at fault: the file cannot be read
/// or is not a JSON object, an entry is not a list of `[x0, y0, x1, y1]`, has no box, or has a
/// box that [`check_box`] rejects, two keys have the same output name, or there is no entry.
pub fn read_boxes(file: &Path) -> Result<Vec<ImageBoxes>, AttentionError> {
    let bad = |message: String| AttentionError::BoxFile {
        path: file.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| bad(format!("reading the boxes: {e}")))?;
    let all: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| bad(format!("parsing the boxes: {e}")))?;
    let mut images: Vec<ImageBoxes> = Vec::new();
    for (key, value) in all.into_iter().filter(|(k, _)| !k.starts_with('_')) {
        let boxes: Vec<FracBox> = serde_json::from_value(value)
            .map_err(|e| bad(format!("\"{key}\" is not a list of [x0, y0, x1, y1]: {e}")))?;
        if boxes.is_empty() {
            return Err(bad(format!("\"{key}\" has no box")));
        }
        for b in &boxes {
            check_box(b).map_err(|e| bad(format!("\"{key}\": {e}")))?;
        }
        let name = Path::new(&key)
            .with_extension("")
            .to_string_lossy()
            .into_owned();
        // The name is an output folder and the key of the image's scores: one per image.
        if let Some(other) = images.iter().find(|i| i.name == name) {
            return Err(bad(format!(
                "\"{key}\" and \"{}\" would share the output {name}",
                other.path
            )));
        }
        images.push(ImageBoxes {
            path: key,
            name,
            boxes,
        });
    }
    if images.is_empty() {
        return Err(bad("no boxes".into()));
    }
    Ok(images)
}

/// The share of each patch of an `h × w` grid covered by the union of `boxes`, row-major.
///
/// # Errors
/// As [`check_box`] for each box.
pub fn box_cover(h: usize, w: usize, boxes: &[FracBox]) -> Result<Vec<f64>, AttentionError> {
    boxes.iter().try_for_each(check_box)?;
    // Sample points at sub-patch centres: a union of boxes has no closed-form area per patch
    // worth the code.
    let mut cover = vec![0.0; h * w];
    for (row, col) in (0..h).flat_map(|r| (0..w).map(move |c| (r, c))) {
        let mut hits = 0usize;
        for sy in 0..SUB {
            let y = (row as f64 + (sy as f64 + 0.5) / SUB as f64) / h as f64;
            for sx in 0..SUB {
                let x = (col as f64 + (sx as f64 + 0.5) / SUB as f64) / w as f64;
                if boxes
                    .iter()
                    .any(|b| x >= b[0] && x < b[2] && y >= b[1] && y < b[3])
                {
                    hits += 1;
                }
            }
        }
        cover[row * w + col] = hits as f64 / (SUB * SUB) as f64;
    }
    Ok(cover)
}

/// Scores of one map (`h · w` non-negative weights, any scale) against the patch cover of the
/// boxes ([`box_cover`]) with the mask keeping `threshold` of the mass.
///
/// # Errors
/// [`AttentionError::Shape`] when the lengths differ, the map has no mass or the boxes cover
/// nothing;
/// [`AttentionError::Threshold`] unless `0 < threshold < 1`.
pub fn score_map(map: &[f32], cover: &[f64], threshold: f64) -> Result<BoxScore, AttentionError> {
    if map.len() != cover.len() {
        return Err(AttentionError::Shape(format!(
            "map of {} patches against a box cover of {}",
            map.len(),
            cover.len()
        )));
    }
    let total: f64 = map.iter().map(|&v| v as f64).sum();
    if total.is_nan() || total <= 0.0 {
        return Err(AttentionError::Shape("attention map without mass".into()));
    }
    let box_area = cover.iter().sum::<f64>();
    if box_area <= 0.0 {
        return Err(AttentionError::Shape(
            "the boxes cover no sample point of the patch grid".into(),
        ));
    }
    let mass_in_box = map
        .iter()
        .zip(cover)
        .map(|(&v, &c)| v as f64 * c)
        .sum::<f64>()
        / total;
    let mask = threshold_mask(map, threshold)?;
    // In patch-area units: the mask covers whole patches, the boxes `cover` of each.
    let (mut inter, mut mask_area) = (0.0, 0.0);
    for (&m, &c) in mask.iter().zip(cover) {
        if m {
            inter += c;
            mask_area += 1.0;
        }
    }
    let union = mask_area + box_area - inter;
    Ok(BoxScore {
        mass_in_box,
        lift: mass_in_box / (box_area / cover.len() as f64),
        jaccard: if union > 0.0 { inter / union } else { 0.0 },
    })
}

/// Scores of every head and of their mean for one image's maps against `boxes`.
///
/// # Errors
/// As [`box_cover`] and [`score_map`]; [`AttentionError::Shape`] when `boxes` is empty.
pub fn score_image(
    maps: &AttentionMaps,
    boxes: &[FracBox],
    threshold: f64,
) -> Result<ImageBoxScores, AttentionError> {
    if boxes.is_empty() {
        return Err(AttentionError::Shape("no box to score against".into()));
    }
    let cover = box_cover(maps.h, maps.w, boxes)?;
    let heads = maps
        .heads
        .iter()
        .map(|m| score_map(m, &cover, threshold))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ImageBoxScores {
        box_area: cover.iter().sum::<f64>() / cover.len() as f64,
        heads,
        mean: score_map(&maps.mean(), &cover, threshold)?,
    })
}

/// One map (a head, or the mean over heads) scored on many images: each [`BoxScore`] field
/// averaged over the images, and on how many the map is denser in the boxes than on the whole
/// image (lift above 1).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MapSummary {
    /// Mean share of the attention inside the boxes.
    pub mass_in_box: f64,
    /// Mean lift.
    pub lift: f64,
    /// Mean Jaccard index of the threshold mask with the boxes.
    pub jaccard: f64,
    /// Images with a lift above 1.
    pub lift_above_1: usize,
}

/// Box scores averaged over images.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScoreSummary {
    /// Images scored.
    pub images: usize,
    /// Mean box area fraction: the share uniform attention puts in the boxes.
    pub box_area: f64,
    /// Each head, in head order.
    pub heads: Vec<MapSummary>,
    /// The mean map over heads.
    pub mean_map: MapSummary,
    /// On each image, the head with the most attention in the boxes: an upper bound, since the
    /// head is chosen knowing the boxes.
    pub best_head: MapSummary,
}

/// `scores.json` of `dino attention --boxes`: the box scores of every image and their averages
/// over the images.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScoreReport {
    /// Share of the attention mass the masks keep.
    pub threshold: f64,
    /// The averages over images ([`summarise`]).
    pub summary: ScoreSummary,
    /// Each image's scores, by output name.
    pub images: BTreeMap<String, ImageBoxScores>,
}

impl ScoreReport {
    /// The report of `images` scored with masks keeping `threshold` of the mass.
    pub fn new(threshold: f64, images: BTreeMap<String, ImageBoxScores>) -> Self {
        Self {
            threshold,
            summary: summarise(images.values()),
            images,
        }
    }
}

/// Averages the scores of many images (all from one model, so with the same number of heads).
pub fn summarise<'a>(images: impl IntoIterator<Item = &'a ImageBoxScores>) -> ScoreSummary {
    let images: Vec<&ImageBoxScores> = images.into_iter().collect();
    let n = images.len().max(1) as f64;
    let map_summary = |pick: &dyn Fn(&ImageBoxScores) -> BoxScore| MapSummary {
        mass_in_box: images.iter().map(|s| pick(s).mass_in_box).sum::<f64>() / n,
        lift: images.iter().map(|s| pick(s).lift).sum::<f64>() / n,
        jaccard: images.iter().map(|s| pick(s).jaccard).sum::<f64>() / n,
        lift_above_1: images.iter().filter(|s| pick(s).lift > 1.0).count(),
    };
    let heads = images.first().map_or(0, |s| s.heads.len());
    ScoreSummary {
        images: images.len(),
        box_area: images.iter().map(|s| s.box_area).sum::<f64>() / n,
        heads: (0..heads).map(|h| map_summary(&|s| s.heads[h])).collect(),
        mean_map: map_summary(&|s| s.mean),
        best_head: map_summary(&|s| {
            *s.heads
                .iter()
                .max_by(|a, b| a.mass_in_box.total_cmp(&b.mass_in_box))
                .expect("a model has at least one head")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cover_of_a_box_on_patch_borders_is_exact() {
        // The left half of a 2 × 4 grid: columns 0 and 1 fully, 2 and 3 not at all.
        let c = box_cover(2, 4, &[[0.0, 0.0, 0.5, 1.0]]).unwrap();
        assert_eq!(c, [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        // A quarter of one patch, and two overlapping boxes count once.
        let c = box_cover(1, 1, &[[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5]]).unwrap();
        assert_eq!(c, [0.25]);
        assert!(box_cover(2, 2, &[[0.5, 0.0, 0.4, 1.0]]).is_err());
        assert!(box_cover(2, 2, &[[0.0, 0.0, 1.2, 1.0]]).is_err());
    }

    #[test]
    fn boxes_follow_the_crop() {
        // The crop keeps 84 of 85 columns and every row: x scales by 85/84, y is unchanged.
        let kept = (84.0 / 85.0, 1.0);
        let b = boxes_in_crop(&[[0.0, 0.25, 28.0 / 85.0, 0.5]], kept).unwrap();
        assert_eq!(b.len(), 1);
        assert!((b[0][2] - 1.0 / 3.0).abs() < 1e-12 && b[0][1] == 0.25 && b[0][3] == 0.5);
        // A box over the cut edge is clipped to it; one wholly in the cut strip is dropped.
        let b = boxes_in_crop(&[[0.5, 0.0, 1.0, 1.0], [0.995, 0.0, 1.0, 1.0]], kept).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0][2], 1.0);
        assert!((b[0][0] - 0.5 * 85.0 / 84.0).abs() < 1e-12);
        assert!(boxes_in_crop(&[[0.995, 0.0, 1.0, 1.0]], kept).is_err());
        // Nothing cropped: the boxes are unchanged.
        let same = [[0.1, 0.2, 0.3, 0.4]];
        assert_eq!(boxes_in_crop(&same, (1.0, 1.0)).unwrap(), same);
        assert!(boxes_in_crop(&same, (0.0, 1.0)).is_err());
        assert!(boxes_in_crop(&[[0.3, 0.2, 0.1, 0.4]], (1.0, 1.0)).is_err());
    }

    #[test]
    fn uniform_attention_scores_the_box_area() {
        let cover = box_cover(4, 4, &[[0.0, 0.0, 0.5, 0.75]]).unwrap();
        let s = score_map(&[0.01; 16], &cover, 0.6).unwrap();
        assert!((s.mass_in_box - 0.375).abs() < 1e-12);
        assert!((s.lift - 1.0).abs() < 1e-12);
    }

    #[test]
    fn attention_on_the_box_scores_high_and_off_it_low() {
        // 2 × 2 grid, box = top-left patch. Hand-computed: 0.7 of the mass on it.
        let cover = box_cover(2, 2, &[[0.0, 0.0, 0.5, 0.5]]).unwrap();
        let on = score_map(&[0.7, 0.1, 0.1, 0.1], &cover, 0.6).unwrap();
        assert!((on.mass_in_box - 0.7).abs() < 1e-6);
        // The box is a quarter of the image: 0.7 / 0.25.
        assert!((on.lift - 2.8).abs() < 1e-5);
        // The 0.6 mask is the top-left patch alone: the box exactly.
        assert_eq!(on.jaccard, 1.0);
        let off = score_map(&[0.1, 0.7, 0.1, 0.1], &cover, 0.6).unwrap();
        assert!((off.mass_in_box - 0.1).abs() < 1e-6);
        assert!(off.lift < 1.0);
        assert_eq!(off.jaccard, 0.0);
        // Mask of two patches (0.4 + 0.4 ≥ 0.6), one in the box: IoU 1 / 2.
        let half = score_map(&[0.4, 0.4, 0.1, 0.1], &cover, 0.6).unwrap();
        assert!((half.jaccard - 0.5).abs() < 1e-12);
        assert!(score_map(&[0.0; 4], &cover, 0.6).is_err());
        assert!(score_map(&[0.1; 4], &[0.0; 4], 0.6).is_err());
        assert!(score_map(&[0.1; 3], &cover, 0.6).is_err());
    }

    #[test]
    fn image_scores_have_one_entry_per_head_and_the_mean() {
        let maps = AttentionMaps {
            h: 2,
            w: 2,
            heads: vec![vec![0.7, 0.1, 0.1, 0.1], vec![0.1, 0.7, 0.1, 0.1]],
        };
        let s = score_image(&maps, &[[0.0, 0.0, 0.5, 0.5]], 0.6).unwrap();
        assert_eq!(s.heads.len(), 2);
        assert!((s.box_area - 0.25).abs() < 1e-12);
        // Mean map 0.4, 0.4, 0.1, 0.1: mass 0.4 in the box.
        assert!((s.mean.mass_in_box - 0.4).abs() < 1e-6);
        assert!(score_image(&maps, &[], 0.6).is_err());
    }

    #[test]
    fn summary_averages_images_and_picks_the_best_head_per_image() {
        let score = |m: f64, l: f64| BoxScore {
            mass_in_box: m,
            lift: l,
            jaccard: m / 2.0,
        };
        let a = ImageBoxScores {
            box_area: 0.2,
            heads: vec![score(0.4, 2.0), score(0.1, 0.5)],
            mean: score(0.25, 1.25),
        };
        let b = ImageBoxScores {
            box_area: 0.4,
            heads: vec![score(0.2, 0.5), score(0.8, 2.0)],
            mean: score(0.5, 1.25),
        };
        let s = summarise([&a, &b]);
        assert_eq!(s.images, 2);
        assert!((s.box_area - 0.3).abs() < 1e-12);
        assert!((s.heads[0].mass_in_box - 0.3).abs() < 1e-12);
        assert!((s.heads[1].jaccard - 0.225).abs() < 1e-12);
        assert_eq!(s.heads[0].lift_above_1, 1);
        assert_eq!(s.mean_map.lift_above_1, 2);
        // Best head: head 0 on a (0.4), head 1 on b (0.8).
        assert!((s.best_head.mass_in_box - 0.6).abs() < 1e-12);
        assert!((s.best_head.lift - 2.0).abs() < 1e-12);
    }

    #[test]
    fn box_files_are_read_in_key_order_and_errors_name_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("boxes.json");
        let read = |text: &str| {
            std::fs::write(&file, text).unwrap();
            read_boxes(&file)
        };
        let images = read(
            r#"{"_note": "a comment", "b/y.png": [[0, 0, 0.5, 1]],
                "a/x.jpg": [[0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]]}"#,
        )
        .unwrap();
        let names: Vec<(&str, &str, usize)> = images
            .iter()
            .map(|i| (i.path.as_str(), i.name.as_str(), i.boxes.len()))
            .collect();
        assert_eq!(names, [("a/x.jpg", "a/x", 2), ("b/y.png", "b/y", 1)]);
        for (text, key) in [
            (r#"{"a/x.jpg": [[0.6, 0, 0.4, 1]]}"#, "a/x.jpg"),
            (r#"{"a/x.jpg": []}"#, "a/x.jpg"),
            (r#"{"a/x.jpg": [[0, 0, 1]]}"#, "a/x.jpg"),
            (
                r#"{"a/x.jpg": [[0, 0, 1, 1]], "a/x.png": [[0, 0, 1, 1]]}"#,
                "a/x.png",
            ),
            (r#"{"_only": "comments"}"#, "no boxes"),
            ("[1, 2]", "parsing"),
        ] {
            let err = read(text).expect_err(text).to_string();
            assert!(
                err.contains(key) && err.contains("boxes.json"),
                "{text}: {err}"
            );
        }
    }
}
