//! `dino embed --tokens` streams batches instead of building a `FeatureSet`, so it applies the
//! shared feature-value check (`features::non_finite_rows`) per batch: a network whose tokens
//! are NaN stops the stream at the first batch, naming the first image.

use dino_data::dataset::ImageFiles;
use dino_data::transforms::eval::EvalTransform;
use dino_eval::features::embed::{EmbedOptions, FeatureKind};
use dino_eval::features::tokens::{
    embed_tokens, plan_tokens, Layers, TokenKind, TokenLayout, TokenSink, TokensError,
};
use dino_model::{Backbone, VitConfig};
use std::path::PathBuf;
use tch::{nn, Device, Tensor};

/// Counts the rows it is given.
#[derive(Default)]
struct Count(usize);

impl TokenSink for Count {
    fn write(
        &mut self,
        _: &TokenLayout,
        _: &Tensor,
        indices: &[usize],
        _: &[i64],
        _: &[String],
    ) -> Result<(), TokensError> {
        self.0 += indices.len();
        Ok(())
    }

    fn finish(&mut self, _: &TokenLayout, _: &[String]) -> Result<Vec<PathBuf>, TokensError> {
        Ok(Vec::new())
    }
}

#[test]
fn nan_tokens_stop_the_stream_naming_the_first_image() {
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..3u32)
        .map(|i| {
            let p = tmp.path().join(format!("{i}.png"));
            image::RgbImage::from_fn(16, 16, |x, y| {
                image::Rgb([(x * 9) as u8, (y * 7) as u8, 40])
            })
            .save(&p)
            .unwrap();
            p
        })
        .collect();
    let ds = ImageFiles::from_files(files, u64::MAX);
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut cfg = VitConfig::vit_tiny(4);
    (cfg.depth, cfg.img_size) = (1, 16);
    let backbone = Backbone::new(&vs.root(), &cfg.into()).unwrap();
    let opts = EmbedOptions {
        batch_size: 2,
        transform: EvalTransform::new(16, 1.0).unwrap(),
        mean: [0.5; 3],
        std: [0.25; 3],
        kind: FeatureKind::Cls,
        patch_tokens: false,
        limit: None,
    };
    let layout = plan_tokens(&backbone, TokenKind::All, Layers::Last(1), 16, 3).unwrap();
    let mut sink = Count::default();
    embed_tokens(&backbone, &ds, &opts, &layout, Device::Cpu, &mut sink).unwrap();
    assert_eq!(sink.0, 3);
    // The final norm's weight NaN: every token of every image is NaN.
    tch::no_grad(|| {
        let _ = vs.variables()["norm.weight"]
            .shallow_clone()
            .fill_(f64::NAN);
    });
    let mut sink = Count::default();
    let err = embed_tokens(&backbone, &ds, &opts, &layout, Device::Cpu, &mut sink).unwrap_err();
    assert!(
        matches!(&err, TokensError::NonFinite { count: 2, first } if first.ends_with("0.png")),
        "{err}"
    );
    assert_eq!(sink.0, 0, "nothing of the bad batch was written");
}
