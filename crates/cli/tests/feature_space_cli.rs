//! `dino eval cluster` and `dino map` from the command line: features from a model and a
//! folder or from a features file give the same answer, and bad input is refused with a clear
//! error before anything is written.

use std::path::Path;

use crate::common;
use common::tiny::tiny_run;
use common::{dino, ok};
use tch::Tensor;

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes `features` and `labels` as a `dino embed` `.npy` features file.
fn write_npy(path: &Path, features: &Tensor, labels: &Tensor) {
    features.write_npy(path).unwrap();
    let stem = path.file_stem().unwrap().to_str().unwrap();
    labels
        .write_npy(path.with_file_name(format!("{stem}.labels.npy")))
        .unwrap();
}

#[test]
fn cluster_reads_a_model_or_a_features_file() {
    let (tmp, cfg) = tiny_run("");
    let data = tmp.path().join("data");
    let feats = tmp.path().join("f/pixels.npy");
    let (cfg, data, feats_s) = (
        cfg.to_str().unwrap(),
        data.to_str().unwrap(),
        feats.to_str().unwrap(),
    );
    let from_model = ok(&[
        "eval", "cluster", "--which", "pixels", "--config", cfg, "--data", data, "--json",
    ]);
    let report = json(&from_model);
    assert_eq!(report["n_images"], 48);
    assert_eq!(report["n_classes"], 2);
    assert_eq!(report["k"], 2);
    for score in ["nmi", "purity", "hungarian_accuracy"] {
        let v = report[score].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{score} = {v}");
    }
    // --raw: the rows the model gives, so k-means sees bit for bit the same input.
    ok(&[
        "embed", "--which", "pixels", "--config", cfg, "--data", data, "--out", feats_s, "--raw",
    ]);
    let from_file = ok(&["eval", "cluster", "--features", feats_s, "--json"]);
    assert_eq!(json(&from_file), report);
    // --k and --seed reach the clustering.
    let four = json(&ok(&[
        "eval",
        "cluster",
        "--features",
        feats_s,
        "--k",
        "4",
        "--json",
    ]));
    assert_eq!(four["k"], 4);
    // A features file and a model are two sources: clap refuses both.
    let both = dino(&["eval", "cluster", "--features", feats_s, "--data", data]);
    assert!(!both.status.success());
}

#[test]
fn cluster_refuses_bad_features() {
    let tmp = tempfile::tempdir().unwrap();
    let labels = Tensor::from_slice(&[0i64, 0, 1, 1]);
    let good = Tensor::from_slice(&[1.0f32, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9]).view([4, 2]);
    let run = |name: &str, features: &Tensor, labels: &Tensor, extra: &[&str]| {
        let path = tmp.path().join(format!("{name}.npy"));
        write_npy(&path, features, labels);
        let mut args = vec!["eval", "cluster", "--features", path.to_str().unwrap()];
        args.extend(extra);
        let out = dino(&args);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(out.stdout.is_empty(), "{name} printed a report");
        stderr(&out)
    };
    let mut nan = Vec::<f32>::try_from(&good.view([-1])).unwrap();
    nan[5] = f32::NAN;
    let nan = Tensor::from_slice(&nan).view([4, 2]);
    let err = run("nan", &nan, &labels, &[]);
    assert!(err.contains("row 2") && err.contains("NaN"), "{err}");
    let one = Tensor::from_slice(&[3i64, 3, 3, 3]);
    let err = run("one_class", &good, &one, &[]);
    assert!(err.contains("1 class"), "{err}");
    let err = run("big_k", &good, &labels, &["--k", "5"]);
    assert!(err.contains("k = 5") && err.contains("4 image"), "{err}");
    let err = run("zero_k", &good, &labels, &["--k", "0"]);
    assert!(err.contains("--k must be at least 1"), "{err}");
    let err = run("short_labels", &good, &labels.narrow(0, 0, 3), &[]);
    assert!(err.contains("labels"), "{err}");
}

#[test]
fn map_writes_png_npy_and_csv() {
    let (tmp, cfg) = tiny_run("");
    let data = tmp.path().join("data");
    let out = tmp.path().join("map");
    let (cfg, data, out_s) = (
        cfg.to_str().unwrap(),
        data.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let args = [
        "map",
        "--which",
        "pixels",
        "--config",
        cfg,
        "--data",
        data,
        "--perplexity",
        "5",
        "--iterations",
        "300",
        "--out",
        out_s,
    ];
    ok(&args);
    let coords = Tensor::read_npy(out.join("coords.npy")).unwrap();
    assert_eq!(coords.size(), [48, 2]);
    let csv = std::fs::read_to_string(out.join("coords.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "x,y,label,class,path");
    assert_eq!(lines.len(), 49);
    // Row 0 is the first image of class a (label 0); its coordinates are the .npy's.
    let first: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(&first[2..4], ["0", "a"]);
    assert!(first[4].ends_with("000.png"), "{}", lines[1]);
    let x0 = f64::try_from(coords.get(0).get(0)).unwrap();
    assert!((first[0].parse::<f64>().unwrap() - x0).abs() < 1e-5);
    let (w, h) = image::image_dimensions(out.join("map.png")).unwrap();
    assert_eq!((w, h), (1400, 1000));
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("map.json")).unwrap()).unwrap();
    assert_eq!(info["method"], "tsne");
    assert_eq!(info["n_images"], 48);
    // The same command again gives the same map: seeded by nothing but the data.
    let again = tmp.path().join("again");
    let mut args2 = args.to_vec();
    let last = args2.len() - 1;
    args2[last] = again.to_str().unwrap();
    ok(&args2);
    assert_eq!(
        std::fs::read(out.join("coords.npy")).unwrap(),
        std::fs::read(again.join("coords.npy")).unwrap()
    );
    // PCA is the fast option.
    let pca = tmp.path().join("pca");
    ok(&[
        "map",
        "--which",
        "pixels",
        "--config",
        cfg,
        "--data",
        data,
        "--method",
        "pca",
        "--thumbnails",
        "6",
        "--out",
        pca.to_str().unwrap(),
    ]);
    assert_eq!(
        Tensor::read_npy(pca.join("coords.npy")).unwrap().size(),
        [48, 2]
    );
    // Thumbnails change the picture, not the coordinates.
    let plain = tmp.path().join("plain");
    ok(&[
        "map",
        "--which",
        "pixels",
        "--config",
        cfg,
        "--data",
        data,
        "--method",
        "pca",
        "--out",
        plain.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(pca.join("coords.npy")).unwrap(),
        std::fs::read(plain.join("coords.npy")).unwrap()
    );
    assert_ne!(
        image::open(pca.join("map.png")).unwrap().to_rgb8(),
        image::open(plain.join("map.png")).unwrap().to_rgb8()
    );
}

#[test]
fn map_refuses_bad_input_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let feats = tmp.path().join("f.npy");
    let labels = Tensor::from_slice(&[0i64, 1, 0, 1]);
    let x = Tensor::from_slice(&[1.0f32, 0.0, f32::INFINITY, 1.0, 0.5, 0.5, 0.2, 0.9]).view([4, 2]);
    write_npy(&feats, &x, &labels);
    let out = tmp.path().join("out");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "map",
            "--features",
            feats.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        let o = dino(&args);
        assert!(!o.status.success(), "{extra:?} was accepted");
        stderr(&o)
    };
    let err = run(&["--method", "pca"]);
    assert!(
        err.contains("row 1") && err.contains("NaN or infinite"),
        "{err}"
    );
    assert!(!out.join("map.png").exists() && !out.join("coords.npy").exists());
    let err = run(&["--perplexity", "0.5"]);
    assert!(err.contains("perplexity must be at least 1"), "{err}");
    // Too few images for the perplexity: the hint says what to use.
    let good = x.abs().clamp(0.0, 1.0);
    write_npy(&feats, &good, &labels);
    let err = run(&[]);
    assert!(
        err.contains("at least 91 images") && err.contains("at most 1"),
        "{err}"
    );
    // Refused input leaves no output folder behind (issue #26).
    assert!(!out.exists());
}

#[test]
fn retrieval_leave_one_out_and_bad_input() {
    let (tmp, cfg) = tiny_run("");
    let data = tmp.path().join("data");
    let (cfg, data) = (cfg.to_str().unwrap(), data.to_str().unwrap());
    let mut reports = Vec::new();
    for descriptor in ["cls", "cls-gem"] {
        let r = json(&ok(&[
            "eval",
            "retrieval",
            "--which",
            "random",
            "--config",
            cfg,
            "--data",
            data,
            "--descriptor",
            descriptor,
            "--json",
        ]));
        assert_eq!(r["n_queries"], 48, "{descriptor}");
        assert_eq!(r["n_gallery"], 48);
        assert_eq!(r["leave_one_out"], true);
        assert_eq!(r["recall"][2]["k"], 10);
        let map = r["map"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&map), "{map}");
        reports.push(r);
    }
    // The two colour groups of the tiny set are easy: both descriptors retrieve them.
    assert_eq!(reports[0]["n_queries"], reports[1]["n_queries"]);
    // A folder as its own gallery: every query finds itself first.
    let own = json(&ok(&[
        "eval",
        "retrieval",
        "--which",
        "random",
        "--config",
        cfg,
        "--data",
        data,
        "--gallery",
        data,
        "--json",
    ]));
    assert_eq!(own["leave_one_out"], false);
    assert_eq!(own["recall"][0]["recall"], 1.0);

    // Features files: mismatched widths, an empty query set, no patch tokens for GeM.
    let labels = Tensor::from_slice(&[0i64, 0, 1, 1]);
    let q = tmp.path().join("q.npy");
    write_npy(
        &q,
        &Tensor::ones([4, 3], (tch::Kind::Float, tch::Device::Cpu)),
        &labels,
    );
    let g = tmp.path().join("g.npy");
    write_npy(
        &g,
        &Tensor::ones([4, 5], (tch::Kind::Float, tch::Device::Cpu)),
        &labels,
    );
    let empty = tmp.path().join("empty.npy");
    write_npy(
        &empty,
        &Tensor::zeros([0, 5], (tch::Kind::Float, tch::Device::Cpu)),
        &Tensor::zeros([0], (tch::Kind::Int64, tch::Device::Cpu)),
    );
    let fails = |args: &[&str]| {
        let mut all = vec!["eval", "retrieval"];
        all.extend(args);
        let out = dino(&all);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(out.stdout.is_empty());
        stderr(&out)
    };
    let (q, g, empty) = (
        q.to_str().unwrap(),
        g.to_str().unwrap(),
        empty.to_str().unwrap(),
    );
    let err = fails(&["--features", q, "--gallery", g]);
    assert!(
        err.contains("width 3") && err.contains("gallery features 5"),
        "{err}"
    );
    let err = fails(&["--features", empty, "--gallery", g]);
    assert!(err.contains("query set is empty"), "{err}");
    let err = fails(&["--features", q, "--descriptor", "cls-gem"]);
    assert!(err.contains("--patch-tokens"), "{err}");
    let err = fails(&["--features", q, "--recall-at", "0"]);
    assert!(err.contains("--recall-at"), "{err}");
}

/// A revisited Oxford/Paris folder: `jpg/` with the tiny images renamed, and a `gnd_toy.pkl`
/// (written with Python's pickle, revisitop's layout) whose queries are database images'
/// copies, each listing its original as easy and one other as hard.
fn revisited_folder(tmp: &std::path::Path, data: &std::path::Path) -> Option<std::path::PathBuf> {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if !python.exists() {
        eprintln!("skipped: no {} (run scripts/setup.sh)", python.display());
        return None;
    }
    let dir = tmp.join("roxtoy");
    std::fs::create_dir_all(dir.join("jpg")).unwrap();
    let mut names = Vec::new();
    for class in ["a", "b"] {
        let mut files: Vec<_> = std::fs::read_dir(data.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.iter().take(6) {
            let name = format!("{class}_{}", f.file_stem().unwrap().to_string_lossy());
            image::open(f)
                .unwrap()
                .save(dir.join("jpg").join(format!("{name}.jpg")))
                .unwrap();
            names.push(name);
        }
    }
    // Queries: the first image of each class, under another name.
    for (q, src) in [("qa", &names[0]), ("qb", &names[6])] {
        std::fs::copy(
            dir.join(format!("jpg/{src}.jpg")),
            dir.join(format!("jpg/{q}.jpg")),
        )
        .unwrap();
    }
    let code = format!(
        "import pickle,sys; pickle.dump({{'imlist': {names:?}, 'qimlist': ['qa', 'qb'], 'gnd': [\
         {{'easy': [0, 1], 'hard': [2], 'junk': [3], 'bbx': [0, 0, 5, 5]}}, \
         {{'easy': [6], 'hard': [7, 8], 'junk': [], 'bbx': [0, 0, 5, 5]}}]}}, open(sys.argv[1], 'wb'))"
    );
    let status = std::process::Command::new(&python)
        .args(["-c", &code])
        .arg(dir.join("gnd_roxtoy.pkl"))
        .status()
        .unwrap();
    assert!(status.success());
    Some(dir)
}

#[test]
fn retrieval_on_a_revisited_folder_scores_three_protocols() {
    let (tmp, cfg) = tiny_run("");
    let data = tmp.path().join("data");
    let Some(dir) = revisited_folder(tmp.path(), &data) else {
        return;
    };
    let (cfg, dir_s) = (cfg.to_str().unwrap(), dir.to_str().unwrap());
    for extra in [&[][..], &["--multiscale"][..]] {
        let mut args = vec![
            "eval",
            "retrieval",
            "--which",
            "random",
            "--config",
            cfg,
            "--revisited",
            dir_s,
            "--json",
        ];
        args.extend(extra);
        let r = json(&ok(&args));
        assert_eq!(r["n_database"], 12, "{extra:?}");
        for p in ["easy", "medium", "hard"] {
            assert_eq!(r[p]["n_queries"], 2, "{p}");
            let map = r[p]["map"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&map), "{p} {map}");
        }
        // Query qa is a copy of database image 0, an easy positive: ranked first.
        assert!(r["easy"]["precision"][0]["precision"].as_f64().unwrap() >= 0.5);
    }
    // A listed image that is missing: named, before any model is built.
    std::fs::remove_file(dir.join("jpg/qb.jpg")).unwrap();
    let out = dino(&[
        "eval",
        "retrieval",
        "--which",
        "random",
        "--config",
        cfg,
        "--revisited",
        dir_s,
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("qb") && err.contains("missing"), "{err}");
    // Neither --data nor --features: refused before the output folder exists.
    let nothing = tmp.path().join("nothing");
    let out = dino(&[
        "map",
        "--which",
        "random",
        "--config",
        cfg,
        "--out",
        nothing.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--data"), "{}", stderr(&out));
    assert!(!nothing.exists());
    // Pixels have no CLS token to average over scales.
    let out = dino(&[
        "eval",
        "retrieval",
        "--which",
        "pixels",
        "--config",
        cfg,
        "--data",
        data.to_str().unwrap(),
        "--multiscale",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--multiscale"));
}
