//! DAVIS's two measures of one predicted object mask against its ground truth
//! (davis2017-evaluation `metrics.py`): region similarity J, the Jaccard index
//! (`db_eval_iou`), and contour accuracy F, the F-measure of boundary pixels matched within a
//! tolerance (`db_eval_boundary` / `f_measure` with `_seg2bmap`, tolerance
//! `ceil(0.008 · image diagonal)` pixels, matching by dilation with a disk), and their means per
//! object, sequence and data set with the toolkit's J&F-mean.
//!
//! Masks are `width × height` flags, row by row.

use serde::Serialize;

/// The toolkit's boundary tolerance as a share of the image diagonal (`bound_th=0.008`).
pub const BOUND_TH: f64 = 0.008;

/// Region similarity J: |gt ∩ pred| / |gt ∪ pred|, 1 when both are empty (`db_eval_iou`).
///
/// # Panics
/// When the masks differ in length.
pub fn jaccard(gt: &[bool], pred: &[bool]) -> f64 {
    assert_eq!(gt.len(), pred.len(), "masks of different sizes");
    let (mut inter, mut union) = (0u64, 0u64);
    for (&g, &p) in gt.iter().zip(pred) {
        inter += u64::from(g && p);
        union += u64::from(g || p);
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// One-pixel-wide boundary map of `seg` (`_seg2bmap` at the mask's own size): a pixel is on the
/// boundary when it differs from its east, south or south-east neighbour; the last row compares
/// with east only, the last column with south only, and the bottom-right pixel is never on it.
pub fn seg2bmap(seg: &[bool], width: usize, height: usize) -> Vec<bool> {
    assert_eq!(seg.len(), width * height, "mask size");
    let at = |x: usize, y: usize| seg[y * width + x];
    let mut b = vec![false; seg.len()];
    for y in 0..height {
        for x in 0..width {
            let s = at(x, y);
            let e = x + 1 < width && at(x + 1, y);
            let so = y + 1 < height && at(x, y + 1);
            let se = x + 1 < width && y + 1 < height && at(x + 1, y + 1);
            b[y * width + x] = if y + 1 == height && x + 1 == width {
                false
            } else if y + 1 == height {
                s ^ e
            } else if x + 1 == width {
                s ^ so
            } else {
                (s ^ e) | (s ^ so) | (s ^ se)
            };
        }
    }
    b
}

/// The tolerance in pixels for a `width × height` image: `ceil(bound_th · diagonal)`
/// (`f_measure`), or `bound_th` itself when it is 1 or more.
pub fn bound_pixels(width: usize, height: usize, bound_th: f64) -> usize {
    if bound_th >= 1.0 {
        return bound_th as usize;
    }
    let diag = ((width * width + height * height) as f64).sqrt();
    (bound_th * diag).ceil() as usize
}

/// Offsets `(dx, dy)` of a disk of radius `r`: `dx² + dy² ≤ r²` (scikit-image
/// `morphology.disk`, the structuring element the toolkit dilates with).
pub fn disk(r: usize) -> Vec<(isize, isize)> {
    let r = r as isize;
    let mut offsets = Vec::new();
    for dy in -r..=r {
        for dx in -r..=r {
            if dx * dx + dy * dy <= r * r {
                offsets.push((dx, dy));
            }
        }
    }
    offsets
}

/// Binary dilation of `mask` by `offsets` (OpenCV `dilate`, pixels outside the image never set
/// anything): every set pixel stamps the structuring element around itself.
pub fn dilate(mask: &[bool], width: usize, height: usize, offsets: &[(isize, isize)]) -> Vec<bool> {
    let mut out = vec![false; mask.len()];
    for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
        let (x, y) = ((i % width) as isize, (i / width) as isize);
        for &(dx, dy) in offsets {
            let (u, v) = (x + dx, y + dy);
            if u >= 0 && v >= 0 && (u as usize) < width && (v as usize) < height {
                out[v as usize * width + u as usize] = true;
            }
        }
    }
    out
}

/// Contour accuracy F of `pred` against `gt` (`f_measure`): boundary precision (share of the
/// prediction's boundary pixels within the tolerance of the truth's boundary) and recall (the
/// converse), combined as 2PR / (P + R). An empty prediction boundary against a non-empty truth
/// scores 0, both empty 1 (the toolkit's conventions).
///
/// # Panics
/// When a mask is not `width × height`.
pub fn boundary_f(gt: &[bool], pred: &[bool], width: usize, height: usize, bound_th: f64) -> f64 {
    let se = disk(bound_pixels(width, height, bound_th));
    let fg = seg2bmap(pred, width, height);
    let gtb = seg2bmap(gt, width, height);
    let fg_dil = dilate(&fg, width, height, &se);
    let gt_dil = dilate(&gtb, width, height, &se);
    let n_fg = fg.iter().filter(|&&b| b).count();
    let n_gt = gtb.iter().filter(|&&b| b).count();
    let (precision, recall) = match (n_fg, n_gt) {
        (0, 0) => (1.0, 1.0),
        (0, _) => (1.0, 0.0),
        (_, 0) => (0.0, 1.0),
        _ => {
            let fg_match = fg.iter().zip(&gt_dil).filter(|(&a, &b)| a && b).count();
            let gt_match = gtb.iter().zip(&fg_dil).filter(|(&a, &b)| a && b).count();
            (fg_match as f64 / n_fg as f64, gt_match as f64 / n_gt as f64)
        }
    };
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

/// J and F of one object in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FrameScore {
    /// Frame index in the sequence.
    pub frame: usize,
    /// Region similarity.
    pub j: f64,
    /// Contour accuracy.
    pub f: f64,
}

/// One object's scores over the scored frames of its sequence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectScore {
    /// `<sequence>_<object id>`, as the toolkit names it.
    pub name: String,
    /// Mean J over the scored frames (the toolkit's `J-Mean` of the object).
    pub j_mean: f64,
    /// Mean F over the scored frames.
    pub f_mean: f64,
    /// Per frame.
    pub frames: Vec<FrameScore>,
}

impl ObjectScore {
    /// An object's scores from its per-frame ones (means are NaN without frames).
    pub fn new(name: String, frames: Vec<FrameScore>) -> Self {
        let n = frames.len() as f64;
        let j_mean = frames.iter().map(|s| s.j).sum::<f64>() / n;
        let f_mean = frames.iter().map(|s| s.f).sum::<f64>() / n;
        Self {
            name,
            j_mean,
            f_mean,
            frames,
        }
    }
}

/// Scores of every object of every sequence, with the toolkit's global means: `J-Mean` and
/// `F-Mean` average the objects' means (every object weighs the same, whatever its sequence),
/// and `J&F-Mean` is their average (`evaluation_method.py`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DavisReport {
    /// Mean of the objects' J means.
    pub j_mean: f64,
    /// Mean of the objects' F means.
    pub f_mean: f64,
    /// (J-Mean + F-Mean) / 2.
    pub jf_mean: f64,
    /// Per object.
    pub objects: Vec<ObjectScore>,
}

impl DavisReport {
    /// The global means of `objects` (NaN when there is none).
    pub fn new(objects: Vec<ObjectScore>) -> Self {
        let n = objects.len() as f64;
        let j_mean = objects.iter().map(|o| o.j_mean).sum::<f64>() / n;
        let f_mean = objects.iter().map(|o| o.f_mean).sum::<f64>() / n;
        Self {
            j_mean,
            f_mean,
            jf_mean: (j_mean + f_mean) / 2.0,
            objects,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(w: usize, h: usize, x0: usize, y0: usize, x1: usize, y1: usize) -> Vec<bool> {
        (0..w * h)
            .map(|i| (x0..x1).contains(&(i % w)) && (y0..y1).contains(&(i / w)))
            .collect()
    }

    #[test]
    fn toolkit_boundary_tolerance_default() {
        // davis2017-evaluation metrics.py: `bound_th=0.008`.
        assert_eq!(BOUND_TH, 0.008);
        // 854x480 (DAVIS 480p): diagonal 979.6 → ceil(7.84) = 8 pixels.
        assert_eq!(bound_pixels(854, 480, BOUND_TH), 8);
        assert_eq!(disk(1).len(), 5);
        assert_eq!(disk(2).len(), 13);
    }

    #[test]
    fn jaccard_by_hand() {
        // 2x2 square against a 2x3 rectangle holding it: 4 / 6.
        let gt = rect(6, 6, 1, 1, 3, 3);
        let pred = rect(6, 6, 1, 1, 3, 4);
        assert_eq!(jaccard(&gt, &pred), 4.0 / 6.0);
        assert_eq!(jaccard(&[false; 4], &[false; 4]), 1.0);
        assert_eq!(jaccard(&gt, &[false; 36]), 0.0);
    }

    #[test]
    fn boundary_by_hand() {
        // A 2x2 square at (1,1) in a 4x4 image: _seg2bmap marks the pixels that differ from an
        // east, south or south-east neighbour: (0,0),(1,0),(2,0) / (0,1),(2,1) / (0,2),(1,2),(2,2).
        let sq = rect(4, 4, 1, 1, 3, 3);
        let b = seg2bmap(&sq, 4, 4);
        let on: Vec<usize> = (0..16).filter(|&i| b[i]).collect();
        assert_eq!(on, [0, 1, 2, 4, 6, 8, 9, 10]);
        // Identical masks: F = 1; a mask against nothing: F = 0; nothing against nothing: 1.
        assert_eq!(boundary_f(&sq, &sq, 4, 4, BOUND_TH), 1.0);
        assert_eq!(boundary_f(&sq, &[false; 16], 4, 4, BOUND_TH), 0.0);
        assert_eq!(boundary_f(&[false; 16], &[false; 16], 4, 4, BOUND_TH), 1.0);
    }

    #[test]
    fn boundary_tolerance_matches_shifts_within_it() {
        // 100x100: tolerance ceil(0.008 · 141.4) = 2 px. A square shifted by 2 px scores 1,
        // shifted by 10 px less.
        let (w, h) = (100, 100);
        assert_eq!(bound_pixels(w, h, BOUND_TH), 2);
        let gt = rect(w, h, 20, 20, 60, 60);
        let near = rect(w, h, 22, 20, 62, 60);
        let far = rect(w, h, 30, 20, 70, 60);
        assert_eq!(boundary_f(&gt, &near, w, h, BOUND_TH), 1.0);
        assert!(boundary_f(&gt, &far, w, h, BOUND_TH) < 0.7);
    }
}
