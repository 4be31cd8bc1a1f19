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
    /// The crop and feature of embedding options (`pixels`: the raw-pixel baseline, whose
    /// feature is the crop itself).
    pub fn of(opts: &EmbedOptions, pixels: bool) -> Self {
        let feature = match opts.kind {
            _ if pixels => "pixels".to_string(),
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

    /// What `<stem>.meta.json` beside a features file of `dino embed` states, when it is
    /// there and readable.
    pub fn beside(features: &std::path::Path) -> Option<Self> {
        let stem = features.file_stem()?.to_str()?;
        let text =
            std::fs::read_to_string(features.with_file_name(format!("{stem}.meta.json"))).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(Self {
            crop_size: u32::try_from(v["crop_size"].as_u64()?).ok()?,
            resize_size: u32::try_from(v["resize_size"].as_u64()?).ok()?,
            feature: v["feature"].as_str()?.to_string(),
        })
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
