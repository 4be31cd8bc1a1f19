//! The DAVIS layout end to end on small generated sequences: a tiny random ViT segments a
//! generated video (predictions in the layout, palette kept, scores in range, exact when the
//! truth is the prediction), and bad input is refused before anything is written (a missing
//! annotation, an RGB annotation, an object id the first frame does not have, a single-frame
//! video) or documented (a video shorter than n_last_frames).

use std::path::Path;

use dino_eval::video::davis::{
    open_sequence, pascal_palette, read_index_png, write_index_png, DavisError, IndexMask,
};
use dino_eval::video::davis_segment::{
    prepare_sequence, segment_sequence, FrameOptions, SegmentError,
};
use dino_eval::video::segmentation::SegmentConfig;
use dino_eval::video::synth::{generate, SynthSpec};
use dino_model::{VisionTransformer, VitConfig};
use image::{Rgb, RgbImage};
use tch::{nn, Device};

/// Three photos of flat colour with a little texture, for the generator.
fn photos(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (k, c) in [[200u8, 40, 40], [40, 200, 40], [40, 40, 200]]
        .iter()
        .enumerate()
    {
        let img = RgbImage::from_fn(96, 80, |x, y| {
            let t = ((x / 8 + y / 8) % 2) as u8 * 30;
            Rgb([c[0].saturating_add(t), c[1], c[2].saturating_sub(t)])
        });
        img.save(dir.join(format!("p{k}.png"))).unwrap();
    }
}

fn synth(root: &Path, frames: usize) {
    let spec = SynthSpec {
        frames,
        width: 96,
        height: 72,
        ..SynthSpec::default()
    };
    photos(&root.join("photos"));
    generate(&root.join("photos"), &root.join("davis"), &spec).unwrap();
}

fn tiny_vit() -> (nn::VarStore, VisionTransformer) {
    tch::manual_seed(0);
    let mut cfg = VitConfig::vit_tiny(8);
    cfg.embed_dim = 24;
    cfg.depth = 2;
    cfg.num_heads = 2;
    cfg.img_size = 32;
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = VisionTransformer::new(&vs.root(), &cfg).unwrap();
    (vs, vit)
}

fn opts() -> FrameOptions {
    FrameOptions {
        short_side: 64,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        max_pixels: 1 << 30,
    }
}

#[test]
fn generated_sequence_is_segmented_into_the_layout() {
    let tmp = tempfile::tempdir().unwrap();
    // 4 frames: fewer than the official n_last_frames 7, which is documented to work (the
    // context is every previous frame).
    synth(tmp.path(), 4);
    let seq = open_sequence(&tmp.path().join("davis"), "480p", "synth").unwrap();
    assert_eq!(seq.frames.len(), 4);
    assert_eq!(seq.annotations.len(), 4);
    let prep = prepare_sequence(seq).unwrap();
    assert_eq!(prep.n_objects, 2);
    // Scored: frames 1 and 2 (not the first, not the last).
    assert_eq!(prep.truth.keys().copied().collect::<Vec<_>>(), [1, 2]);
    let (_vs, vit) = tiny_vit();
    let out = tmp.path().join("pred/synth");
    let scores = segment_sequence(
        &prep,
        &vit,
        SegmentConfig::default(),
        &opts(),
        Device::Cpu,
        &out,
    )
    .unwrap();
    assert_eq!(scores.len(), 2);
    for o in &scores {
        assert_eq!(o.frames.len(), 2);
        assert!((0.0..=1.0).contains(&o.j_mean) && (0.0..=1.0).contains(&o.f_mean));
    }
    for i in 0..4 {
        let (pred, palette) = read_index_png(&out.join(format!("{i:05}.png"))).unwrap();
        assert_eq!((pred.width, pred.height), (96, 72));
        assert!(pred.max_object() <= 2);
        assert_eq!(palette.unwrap()[..3], pascal_palette()[..3]);
    }
    // Frame 0 is the annotation itself.
    let (first, _) = read_index_png(&out.join("00000.png")).unwrap();
    assert_eq!(first, prep.first);
    // No partial folder is left, and a second run into the same folder is refused.
    assert!(!tmp.path().join("pred/.synth.partial").exists());
    let again = segment_sequence(
        &prep,
        &vit,
        SegmentConfig::default(),
        &opts(),
        Device::Cpu,
        &out,
    );
    assert!(matches!(again, Err(SegmentError::Io { .. })));
    // A network whose patch features are NaN is refused at the first frame, naming it, and
    // leaves no output.
    let (vs, vit) = tiny_vit();
    tch::no_grad(|| {
        let _ = vs.variables()["norm.bias"].shallow_clone().fill_(f64::NAN);
    });
    let nan_out = tmp.path().join("nan/synth");
    let err = segment_sequence(
        &prep,
        &vit,
        SegmentConfig::default(),
        &opts(),
        Device::Cpu,
        &nan_out,
    )
    .unwrap_err();
    assert!(
        matches!(&err, SegmentError::NonFinite { frame, count: 80, patches: 80 }
            if frame.ends_with("00000.jpg")),
        "{err}"
    );
    assert!(!nan_out.exists());
}

#[test]
fn generator_is_seeded_and_masks_are_exact() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    synth(a.path(), 3);
    synth(b.path(), 3);
    for sub in [
        "JPEGImages/480p/synth/00002.jpg",
        "Annotations/480p/synth/00002.png",
    ] {
        let x = std::fs::read(a.path().join("davis").join(sub)).unwrap();
        let y = std::fs::read(b.path().join("davis").join(sub)).unwrap();
        assert!(x == y, "{sub} differs between two runs with one seed");
    }
    let (m, _) = read_index_png(&a.path().join("davis/Annotations/480p/synth/00001.png")).unwrap();
    // Both objects are in the frame, and the background too.
    for id in 0..=2u8 {
        assert!(m.data.contains(&id), "object {id} missing");
    }
}

#[test]
fn bad_layouts_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    synth(tmp.path(), 3);
    let root = tmp.path().join("davis");
    let ann = root.join("Annotations/480p/synth");

    // An annotation of a frame that does not exist.
    std::fs::copy(ann.join("00001.png"), ann.join("00009.png")).unwrap();
    let e = open_sequence(&root, "480p", "synth").unwrap_err();
    assert!(matches!(e, DavisError::OrphanAnnotation(_)), "{e}");
    std::fs::remove_file(ann.join("00009.png")).unwrap();

    // A later annotation with an object id the first frame does not have.
    let (mut m, _) = read_index_png(&ann.join("00001.png")).unwrap();
    m.data[0] = 5;
    write_index_png(&ann.join("00001.png"), &m, &pascal_palette()).unwrap();
    let seq = open_sequence(&root, "480p", "synth").unwrap();
    let e = prepare_sequence(seq).err().unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("00001.png") && msg.contains("value 5"),
        "{msg}"
    );

    // An RGB PNG where a palette PNG belongs.
    RgbImage::new(96, 72).save(ann.join("00001.png")).unwrap();
    let seq = open_sequence(&root, "480p", "synth").unwrap();
    let e = prepare_sequence(seq).err().unwrap();
    assert!(e.to_string().contains("palette"), "{e}");

    // A palette PNG whose pixels index past its palette.
    let mask = IndexMask {
        width: 96,
        height: 72,
        data: vec![3; 96 * 72],
    };
    write_index_png(&ann.join("00001.png"), &mask, &vec![[0, 0, 0]; 2]).unwrap();
    // (write_index_png pads the palette to the largest id; cut it back by hand.)
    let bytes = palette_png(96, 72, 3, 2);
    std::fs::write(ann.join("00001.png"), bytes).unwrap();
    let e = read_index_png(&ann.join("00001.png")).unwrap_err();
    assert!(e.to_string().contains("no entry"), "{e}");

    // The first frame's annotation missing.
    std::fs::remove_file(ann.join("00000.png")).unwrap();
    let e = open_sequence(&root, "480p", "synth").unwrap_err();
    assert!(matches!(e, DavisError::MissingAnnotation(_)), "{e}");
    assert!(e.to_string().contains("00000.png"), "{e}");
}

#[test]
fn a_single_frame_has_nothing_to_propagate_to() {
    let tmp = tempfile::tempdir().unwrap();
    synth(tmp.path(), 2);
    let root = tmp.path().join("davis");
    std::fs::remove_file(root.join("JPEGImages/480p/synth/00001.jpg")).unwrap();
    std::fs::remove_file(root.join("Annotations/480p/synth/00001.png")).unwrap();
    let seq = open_sequence(&root, "480p", "synth").unwrap();
    let e = prepare_sequence(seq).err().unwrap();
    assert!(e.to_string().contains("single frame"), "{e}");
}

/// An 8-bit palette PNG of `w × h` pixels all `value`, with a palette of `entries` colours.
fn palette_png(w: u32, h: u32, value: u8, entries: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(vec![0u8; 3 * entries]);
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(&vec![value; (w * h) as usize]).unwrap();
    }
    out
}
