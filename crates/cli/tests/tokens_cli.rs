//! `dino embed --tokens cls|patch|all --layers last|N|all [--per-image]`: the token array
//! `[images, layers, tokens, dim]` written by the command equals the model's
//! `intermediate_layers` (computed here through the library on the same images), in every
//! format; bad requests are refused before any output exists.

use std::path::Path;

use crate::common;
use common::tiny::tiny_run;
use common::{dino, ok};
use dino_eval::features::embed::{for_each_batch, EmbedError, FeatureKind};
use dino_eval::features::source::{Embedder, Source};
use dino_eval::features::tokens::{
    embed_tokens, plan_tokens, read_tokens, Layers, MemorySink, TokenKind,
};
use tch::Tensor;

/// The tiny config's evaluation crop: 16 px = a 4 × 4 grid of 4-px patches.
const CROP: &str = "eval.crop_size=16";

fn embed_args<'a>(cfg: &'a str, data: &'a str, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "embed", "--which", "random", "--config", cfg, "--set", CROP, "--data", data, "--out",
    ];
    args.push(out.to_str().unwrap());
    args.extend(extra);
    args
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn tokens_equal_the_models_intermediate_layers_in_every_format() {
    let (tmp, cfg) = tiny_run("");
    let data = tmp.path().join("data");
    let (cfg_s, data_s) = (cfg.to_str().unwrap(), data.to_str().unwrap());

    // The reference: the same random backbone (seeded by runtime.seed), its intermediate layers
    // batch by batch through the library.
    let config = dino_config::Config::from_file(&cfg, &[CROP]).unwrap();
    let emb = Embedder::new(None, Source::Random, &config, &[CROP], tch::Device::Cpu).unwrap();
    let opts = emb.options(FeatureKind::Cls, false).unwrap();
    let vit = emb.backbone().as_vit().unwrap();
    let mut rows = Vec::new();
    for_each_batch(&*open(&data, &config), &opts, tch::Device::Cpu, |b| {
        rows.push(Tensor::stack(&vit.intermediate_layers(&b.x, 2)?, 1));
        Ok::<(), EmbedError>(())
    })
    .unwrap();
    let reference = Tensor::cat(&rows, 0); // [48, 2, 17, 32]
    assert_eq!(reference.size(), [48, 2, 17, 32]);

    // --tokens all --layers all: [N, depth, 1 + P, D], grid recorded.
    let npy = tmp.path().join("t/all.npy");
    ok(&embed_args(
        cfg_s,
        data_s,
        &npy,
        &["--tokens", "all", "--layers", "all"],
    ));
    let set = read_tokens(&npy).unwrap();
    assert_eq!(set.tokens.size(), [48, 2, 17, 32]);
    let l = &set.layout;
    assert_eq!((l.grid_h, l.grid_w, l.patch_size, l.layers), (4, 4, 4, 2));
    assert_eq!(
        (l.token_kind, l.blocks.clone()),
        (TokenKind::All, vec![0, 1])
    );
    assert!(max_diff(&set.tokens, &reference) < 1e-6);
    assert_eq!(set.paths.len(), 48);
    assert!(set.paths[0].ends_with("000.png"), "{:?}", set.paths[0]);
    assert_eq!(
        Vec::<i64>::try_from(&set.labels).unwrap(),
        (0..48).map(|i| i64::from(i >= 24)).collect::<Vec<i64>>(),
        "class folders in order: a (24 images), then b"
    );

    // safetensors: the same array and layout (streamed the same way).
    let st = tmp.path().join("t/all.safetensors");
    ok(&embed_args(
        cfg_s,
        data_s,
        &st,
        &["--tokens", "all", "--layers", "2"],
    ));
    let st_set = read_tokens(&st).unwrap();
    assert_eq!(st_set.layout, set.layout);
    assert!(st_set.tokens.equal(&set.tokens));
    assert!(st_set.labels.equal(&set.labels));
    // A plain safetensors reader agrees (the padded header is standard).
    let plain = Tensor::read_safetensors(&st).unwrap();
    assert_eq!(plain.len(), 2);

    // The streamed file equals the whole array built in memory by the library call.
    let layout = plan_tokens(emb.backbone(), TokenKind::All, Layers::All, 16, 0).unwrap();
    let mut mem = MemorySink::default();
    let report = embed_tokens(
        emb.backbone(),
        &*open(&data, &config),
        &opts,
        &layout,
        tch::Device::Cpu,
        &mut mem,
    )
    .unwrap();
    assert_eq!(report.layout, set.layout);
    assert!(mem.tokens().unwrap().equal(&set.tokens));

    // --tokens patch --layers last: the last block's patches, as the old --patch-tokens.
    let patch = tmp.path().join("t/patch.npy");
    ok(&embed_args(
        cfg_s,
        data_s,
        &patch,
        &["--tokens", "patch", "--layers", "last"],
    ));
    let p = read_tokens(&patch).unwrap().tokens;
    assert_eq!(p.size(), [48, 1, 16, 32]);
    let old = tmp.path().join("t/old.npy");
    ok(&embed_args(
        cfg_s,
        data_s,
        &old,
        &["--patch-tokens", "--raw"],
    ));
    let old_patches = Tensor::read_npy(tmp.path().join("t/old.patch_tokens.npy")).unwrap();
    assert!(max_diff(&p.squeeze_dim(1), &old_patches) < 1e-6);
    // --tokens cls: the CLS features of `--raw` (the default output divides them by their norm).
    let cls = tmp.path().join("t/cls.npy");
    ok(&embed_args(cfg_s, data_s, &cls, &["--tokens", "cls"]));
    let c = read_tokens(&cls).unwrap().tokens;
    let old_cls = Tensor::read_npy(&old).unwrap();
    assert!(max_diff(&c.view([48, 32]), &old_cls) < 1e-6);

    // --per-image: one [L, T, D] file per image, named after it, plus index.json.
    let dir = tmp.path().join("per");
    ok(&embed_args(
        cfg_s,
        data_s,
        &dir,
        &["--per-image", "--tokens", "all", "--layers", "all"],
    ));
    for (i, name) in [(0, "a/000.npy"), (24, "b/001.npy"), (47, "b/047.npy")] {
        let t = Tensor::read_npy(dir.join(name)).unwrap();
        assert!(t.equal(&set.tokens.get(i)), "{name}");
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["images"].as_array().unwrap().len(), 48);
    assert_eq!(index["images"][24]["file"], "b/001.npy");
    assert_eq!(index["images"][24]["label"], 1);
    assert_eq!(index["layout"]["tokens"], 17);
}

fn open(data: &Path, cfg: &dino_config::Config) -> Box<dyn dino_data::dataset::Dataset> {
    dino_data::dataset::open_dataset(data, dino_config::DataFormat::Auto, "train", &cfg.data)
        .unwrap()
}

#[test]
fn bad_token_requests_are_refused_before_any_output() {
    let (tmp, cfg) = tiny_run("");
    let data = tmp.path().join("data");
    let (cfg_s, data_s) = (cfg.to_str().unwrap(), data.to_str().unwrap());
    let out = tmp.path().join("never/t.npy");
    let refused = |extra: &[&str], needle: &str| {
        let o = dino(&embed_args(cfg_s, data_s, &out, extra));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(needle),
            "{extra:?}: {err}"
        );
        assert!(
            !tmp.path().join("never").exists(),
            "{extra:?} created output"
        );
    };
    refused(&["--layers", "0"], "at least 1");
    refused(&["--layers", "99"], "has 2 blocks");
    refused(&["--layers", "some"], "--layers");
    refused(&["--tokens", "bogus"], "bogus");
    refused(
        &["--tokens", "all", "--patch-tokens"],
        "cannot be used with",
    );
    // A ResNet has no tokens: patch tokens and several layers are refused, naming why.
    let rn = [
        "--set",
        "model.arch=resnet18",
        "--set",
        "model.cifar_stem=true",
    ];
    refused(&[&rn[..], &["--tokens", "patch"]].concat(), "no tokens");
    refused(&[&rn[..], &["--layers", "2"]].concat(), "no tokens");
    // ... while its pooled feature is one "cls" token.
    let ok_out = tmp.path().join("rn.npy");
    ok(&embed_args(
        cfg_s,
        data_s,
        &ok_out,
        &[&rn[..], &["--tokens", "cls"]].concat(),
    ));
    assert_eq!(read_tokens(&ok_out).unwrap().tokens.size()[..3], [48, 1, 1]);
}
