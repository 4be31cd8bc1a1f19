//! What every evaluation report states about its features: the evaluation crop (side and the
//! resize before it) and the feature kind, in the text report and in `--json`, so a number is
//! never read without the size it was measured at.

use dino_eval::embed::{EmbedOptions, FeatureKind};
use serde::Serialize;

/// The evaluation input of a report (`crop_size`, `resize_size`, `feature`).
#[derive(Debug, Clone, Serialize)]
pub struct Stated {
    /// Side of the centre crop in pixels (`eval.crop_size`).
    pub crop_size: u32,
    /// Shorter side the image is resized to before the crop (crop × `eval.resize_ratio`).
    pub resize_size: u32,
    /// The feature: `cls`, `cls_multiscale` or `last_blocks(n[, avgpool])`.
    pub feature: String,
}

impl Stated {
    /// The crop and feature of embedding options.
    pub fn of(opts: &EmbedOptions) -> Self {
        let feature = match opts.kind {
            FeatureKind::Cls => "cls".to_string(),
            FeatureKind::ClsMultiScale => "cls_multiscale".to_string(),
            FeatureKind::LastBlocks { n, avgpool: false } => format!("last_blocks({n})"),
            FeatureKind::LastBlocks { n, avgpool: true } => format!("last_blocks({n}, avgpool)"),
        };
        Self {
            crop_size: opts.transform.crop_size(),
            resize_size: opts.transform.resize_size(),
            feature,
        }
    }

    /// One phrase for a text report: `48-px crops (resize 54), feature cls`.
    pub fn phrase(&self) -> String {
        format!(
            "{}-px crops (resize {}), feature {}",
            self.crop_size, self.resize_size, self.feature
        )
    }

    /// `report` as a JSON object with `crop_size`, `resize_size` and `feature` added.
    ///
    /// # Errors
    /// When `report` does not serialize to a JSON object.
    pub fn json<T: Serialize>(&self, report: &T) -> anyhow::Result<serde_json::Value> {
        let mut v = serde_json::to_value(report)?;
        let obj = v
            .as_object_mut()
            .ok_or_else(|| anyhow::anyhow!("a report is a JSON object"))?;
        obj.insert("crop_size".into(), self.crop_size.into());
        obj.insert("resize_size".into(), self.resize_size.into());
        obj.insert("feature".into(), self.feature.clone().into());
        Ok(v)
    }
}
