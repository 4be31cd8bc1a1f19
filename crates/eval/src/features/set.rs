//! Feature files: frozen features with their labels and image paths, for k-NN, linear probes and
//! outside tools (NumPy, `safetensors` in Python). The official code keeps features in memory
//! (or `torch.save`s them with `--dump_features`); a standard format lets a run be evaluated
//! again without recomputing the backbone.
//!
//! The format follows the extension of the path:
//! - `<stem>.npy`: features `[N, D]` f32, plus `<stem>.labels.npy` (`[N]` i64),
//!   `<stem>.patch_tokens.npy` (`[N, P, D]` f32, when present) and `<stem>.paths.json`;
//! - `<stem>.safetensors`: tensors `features`, `labels` and optionally `patch_tokens`, plus
//!   `<stem>.paths.json`.
//!
//! `<stem>.paths.json` is a JSON array of the image paths, one per row (may be empty when
//! unknown). `<stem>.classes.json`, written when the set has class names, is a JSON array of
//! them: label `i` is class `i`, so feature files embedded separately can be checked to share
//! one numbering.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, TchError, Tensor};

/// Bad feature data or a failure reading or writing a features file.
#[derive(Debug, thiserror::Error)]
pub enum FeaturesError {
    /// The path ends neither in `.npy` nor in `.safetensors`.
    #[error("{0}: features files end in .npy or .safetensors")]
    Extension(PathBuf),
    /// Tensors or paths disagree in shape, kind or count.
    #[error("features: {0}")]
    Shape(String),
    /// Block tokens given to [`crate::features::probe::concat_last_blocks`] are inconsistent.
    #[error("block tokens: {0}")]
    Tokens(String),
    /// A tensor is missing from a safetensors file.
    #[error("{path}: no tensor named {name:?}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: &'static str,
    },
    /// The paths sidecar could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The paths sidecar is not a JSON array of strings.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// libtorch failed to write a tensor file.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: TchError,
    },
    /// A set that k-NN or a probe needs rows of has none.
    #[error("the {0} set is empty")]
    Empty(&'static str),
    /// A set that k-NN or a probe learns from or scores against has a negative (unknown) label.
    #[error("{what} labels must be >= 0, found {label}")]
    NegativeLabel {
        /// Which set ("train", "test" or "val").
        what: &'static str,
        /// The smallest label found.
        label: i64,
    },
    /// The train and evaluation features differ in width.
    #[error("train features have {train} dimensions but {what} features have {eval}")]
    DimMismatch {
        /// Which evaluation set ("test" or "val").
        what: &'static str,
        /// Train feature width.
        train: i64,
        /// Evaluation feature width.
        eval: i64,
    },
    /// Feature rows (or their patch tokens) hold NaN or infinite values: every evaluation
    /// refuses them rather than score them (a NaN row is nobody's neighbour, so k-NN would
    /// report 0 % and exit normally).
    #[error(
        "{count} of {rows} feature rows hold NaN or infinite values (the first: row {first}{}); \
         the network that made them is broken (e.g. a checkpoint whose BatchNorm running \
         variance is NaN), so they cannot be evaluated",
        first_path.as_deref().map(|p| format!(", {p}")).unwrap_or_default()
    )]
    NonFinite {
        /// Rows with a non-finite value.
        count: usize,
        /// Rows in all.
        rows: usize,
        /// The first such row.
        first: usize,
        /// Its image's path, when the set has paths.
        first_path: Option<String>,
    },
    /// A `.safetensors` path holds something else (e.g. a PyTorch `.pth`).
    #[error(transparent)]
    NotSafetensors(#[from] dino_model::WeightsError),
    /// libtorch failed to read a tensor file.
    #[error(transparent)]
    Torch(#[from] TchError),
}

/// Features of a data set, one row per image.
#[derive(Debug)]
pub struct FeatureSet {
    /// `[N, D]` f32 (e.g. the CLS token after the final norm).
    pub features: Tensor,
    /// `[N]` i64 class indices (-1 where unknown is a convention of the caller).
    pub labels: Tensor,
    /// Optional `[N, P, D']` f32 patch tokens.
    pub patch_tokens: Option<Tensor>,
    /// Image paths, one per row, or empty when unknown.
    pub paths: Vec<String>,
    /// Class names: label `i` is `classes[i]` (empty when unlabelled or unknown).
    pub classes: Vec<String>,
}

impl FeatureSet {
    /// Checks the shapes and values and converts to the stored kinds (f32, i64) on the CPU. This
    /// is the one place feature and label tensors are checked: every command that reads features
    /// gets them as a `FeatureSet` (embedded by [`crate::features::source::Embedder`], or read by
    /// [`read_features`]), so `dino embed`, `eval knn|linear|cluster|retrieval|copydetect` and
    /// `dino map` all refuse the same bad rows; [`check_train_eval`] adds only what relates two
    /// sets.
    ///
    /// # Errors
    /// [`FeaturesError::Shape`] when features are not a float `[N, D]` tensor, labels not an
    /// integer `[N]` tensor, patch tokens not a float `[N, P, D']` tensor, or the number of paths
    /// is neither 0 nor N; [`FeaturesError::NonFinite`] when a row's feature or patch tokens hold
    /// NaN or an infinity (with the count and the first row's path).
    pub fn new(
        features: Tensor,
        labels: Tensor,
        patch_tokens: Option<Tensor>,
        paths: Vec<String>,
    ) -> Result<Self, FeaturesError> {
        let cpu = |t: Tensor, kind: Kind| -> Result<Tensor, TchError> {
            t.f_to_device(Device::Cpu)?.f_to_kind(kind)?.f_contiguous()
        };
        // Floats are stored as f32 before the finiteness check: an f64 beyond f32's range is
        // refused, not turned into an infinity later.
        let float = |t: Tensor| match t.is_floating_point() {
            true => cpu(t, Kind::Float),
            false => Ok(t),
        };
        let features = float(features)?;
        let patch_tokens = patch_tokens.map(float).transpose()?;
        check_rows(&features, Some(&labels), patch_tokens.as_ref(), &paths)?;
        Ok(Self {
            features,
            labels: cpu(labels, Kind::Int64)?,
            patch_tokens,
            paths,
            classes: Vec::new(),
        })
    }

    /// Features `[N, D]` and labels `[N]` alone (no patch tokens, no paths): what k-NN and the
    /// linear probe read.
    ///
    /// # Errors
    /// As [`FeatureSet::new`].
    pub fn labelled(features: Tensor, labels: Tensor) -> Result<Self, FeaturesError> {
        Self::new(features, labels, None, Vec::new())
    }

    /// Feature width D.
    pub fn dim(&self) -> i64 {
        self.features.size()[1]
    }

    /// The same set with class names (label `i` is `classes[i]`).
    pub fn with_classes(mut self, classes: Vec<String>) -> Self {
        self.classes = classes;
        self
    }

    /// Number of rows N.
    pub fn len(&self) -> usize {
        self.features.size()[0] as usize
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The one check of feature input, shared by [`FeatureSet::new`] and every evaluation that takes
/// a bare tensor (retrieval, copy detection, clusters, maps): `features` is a float `[N, D]`
/// tensor (any device); `labels`, when given, an integer `[N]` tensor; `patch_tokens`, when
/// given, a float `[N, P, D']` tensor; `paths` empty or one per row; and no row of the features
/// or of its patch tokens holds NaN or an infinity. Returns N.
///
/// # Errors
/// [`FeaturesError::Shape`] for a wrong kind, shape or count, [`FeaturesError::NonFinite`] (with
/// the count, the first row and its path) for NaN or infinite rows.
pub fn check_rows(
    features: &Tensor,
    labels: Option<&Tensor>,
    patch_tokens: Option<&Tensor>,
    paths: &[String],
) -> Result<i64, FeaturesError> {
    let n = match features.size()[..] {
        [n, _] if features.is_floating_point() => n,
        _ => {
            return Err(FeaturesError::Shape(format!(
                "features must be a float [N, D] tensor, got {:?} {:?}",
                features.kind(),
                features.size()
            )))
        }
    };
    if let Some(labels) = labels {
        let integer = matches!(
            labels.kind(),
            Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
        );
        if labels.size() != [n] || !integer {
            return Err(FeaturesError::Shape(format!(
                "labels must be an integer [{n}] tensor, got {:?} {:?}",
                labels.kind(),
                labels.size()
            )));
        }
    }
    if let Some(p) = patch_tokens {
        if p.dim() != 3 || p.size()[0] != n || !p.is_floating_point() {
            return Err(FeaturesError::Shape(format!(
                "patch tokens must be a float [{n}, P, D] tensor, got {:?} {:?}",
                p.kind(),
                p.size()
            )));
        }
    }
    if !paths.is_empty() && paths.len() as i64 != n {
        return Err(FeaturesError::Shape(format!(
            "{} paths for {n} feature rows",
            paths.len()
        )));
    }
    let mut bad = non_finite_rows(features)?;
    if let Some(p) = patch_tokens {
        bad = bad.f_logical_or(&non_finite_rows(&p.f_flatten(1, -1)?)?)?;
    }
    if let Some((count, first)) = count_and_first(&bad)? {
        return Err(FeaturesError::NonFinite {
            count,
            rows: n as usize,
            first,
            first_path: paths.get(first).cloned(),
        });
    }
    Ok(n)
}

/// `[N]` bool: which rows of `x` `[N, D]` (any float kind, any device) hold a NaN or an
/// infinity. The one test of feature values: [`FeatureSet::new`] and the evaluations that take
/// bare tensors (clusters, maps, retrieval, copy detection) all use it.
///
/// # Errors
/// libtorch errors (e.g. `x` not 2-D).
pub fn non_finite_rows(x: &Tensor) -> Result<Tensor, TchError> {
    x.f_isfinite()?
        .f_logical_not()?
        .f_any_dim(1, false)?
        .f_to_device(Device::Cpu)
}

/// How many rows `bad` `[N]` (from [`non_finite_rows`]) marks, and the first one; `None` when
/// none is.
///
/// # Errors
/// libtorch errors.
pub fn count_and_first(bad: &Tensor) -> Result<Option<(usize, usize)>, TchError> {
    let count = bad.f_sum(Kind::Int64)?.f_int64_value(&[])? as usize;
    if count == 0 {
        return Ok(None);
    }
    let first = bad.f_nonzero()?.f_int64_value(&[0, 0])? as usize;
    Ok(Some((count, first)))
}

/// What a train set and an evaluation set must satisfy together for k-NN or a linear probe
/// (each set's own shapes were checked by [`FeatureSet::new`]): both non-empty, the train labels
/// (and the evaluation labels when `eval_labelled`) at least 0, and equal feature widths.
/// `what` names the evaluation set in errors ("test" or "val").
///
/// # Errors
/// [`FeaturesError::Empty`], [`FeaturesError::NegativeLabel`], [`FeaturesError::DimMismatch`].
pub fn check_train_eval(
    train: &FeatureSet,
    eval: &FeatureSet,
    what: &'static str,
    eval_labelled: bool,
) -> Result<(), FeaturesError> {
    for (name, set, labelled) in [("train", train, true), (what, eval, eval_labelled)] {
        if set.is_empty() {
            return Err(FeaturesError::Empty(name));
        }
        if labelled {
            let label = set.labels.f_min()?.f_int64_value(&[])?;
            if label < 0 {
                return Err(FeaturesError::NegativeLabel { what: name, label });
            }
        }
    }
    if train.dim() != eval.dim() {
        return Err(FeaturesError::DimMismatch {
            what,
            train: train.dim(),
            eval: eval.dim(),
        });
    }
    Ok(())
}

/// Checks that `path` names a features file ([`write_features`] would take it), before any
/// features are computed.
///
/// # Errors
/// [`FeaturesError::Extension`] when it ends neither in `.npy` nor in `.safetensors`.
pub fn check_path(path: &Path) -> Result<(), FeaturesError> {
    Format::of(path).map(|_| ())
}

/// Writes `set` to `path` (format by extension, see the module doc) and returns every file
/// written.
///
/// # Errors
/// [`FeaturesError`] for an unknown extension, inconsistent shapes, or an I/O failure.
pub fn write_features(path: &Path, set: &FeatureSet) -> Result<Vec<PathBuf>, FeaturesError> {
    let format = Format::of(path)?;
    let set = FeatureSet::new(
        set.features.shallow_clone(),
        set.labels.shallow_clone(),
        set.patch_tokens.as_ref().map(Tensor::shallow_clone),
        set.paths.clone(),
    )?
    .with_classes(set.classes.clone());
    let mut written = vec![path.to_path_buf()];
    // The first thing written is the folder: a missing one is created, and a path that cannot
    // be written fails here, naming it.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| FeaturesError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    match format {
        Format::Npy => {
            set.features.write_npy(path).map_err(named(path))?;
            let labels = sidecar(path, "labels.npy");
            set.labels.write_npy(&labels).map_err(named(&labels))?;
            written.push(labels);
            if let Some(p) = &set.patch_tokens {
                let tokens = sidecar(path, "patch_tokens.npy");
                p.write_npy(&tokens).map_err(named(&tokens))?;
                written.push(tokens);
            }
        }
        Format::Safetensors => {
            let mut named = vec![("features", &set.features), ("labels", &set.labels)];
            if let Some(p) = &set.patch_tokens {
                named.push(("patch_tokens", p));
            }
            Tensor::write_safetensors(&named, path).map_err(self::named(path))?;
        }
    }
    let paths_file = sidecar(path, "paths.json");
    write_json(&paths_file, &set.paths)?;
    written.push(paths_file);
    if !set.classes.is_empty() {
        let classes_file = sidecar(path, "classes.json");
        write_json(&classes_file, &set.classes)?;
        written.push(classes_file);
    }
    Ok(written)
}

/// Names the file in a libtorch write error (its own message may not).
fn named(path: &Path) -> impl Fn(TchError) -> FeaturesError + '_ {
    move |source| FeaturesError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn write_json(path: &Path, value: &[String]) -> Result<(), FeaturesError> {
    let json = serde_json::to_string_pretty(value).map_err(|source| FeaturesError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, json).map_err(|source| FeaturesError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_json(path: &Path) -> Result<Vec<String>, FeaturesError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|source| FeaturesError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| FeaturesError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a features file written by [`write_features`] (or by NumPy / `safetensors` with the
/// same names). A missing `<stem>.paths.json` gives empty paths; a missing patch-token file gives
/// `None`.
///
/// # Errors
/// [`FeaturesError`] for an unknown extension, a missing file or tensor, or inconsistent shapes.
pub fn read_features(path: &Path) -> Result<FeatureSet, FeaturesError> {
    let (features, labels, patch_tokens) = match Format::of(path)? {
        Format::Npy => {
            let tokens = sidecar(path, "patch_tokens.npy");
            (
                Tensor::read_npy(path)?,
                Tensor::read_npy(sidecar(path, "labels.npy"))?,
                tokens
                    .exists()
                    .then(|| Tensor::read_npy(&tokens))
                    .transpose()?,
            )
        }
        Format::Safetensors => {
            dino_model::check_safetensors(path)?;
            let mut named = Tensor::read_safetensors(path)?;
            let mut take = |name: &'static str| {
                named
                    .iter()
                    .position(|(n, _)| n == name)
                    .map(|i| named.swap_remove(i).1)
            };
            let features = take("features");
            let labels = take("labels");
            let tokens = take("patch_tokens");
            let missing = |name| FeaturesError::Missing {
                path: path.to_path_buf(),
                name,
            };
            (
                features.ok_or_else(|| missing("features"))?,
                labels.ok_or_else(|| missing("labels"))?,
                tokens,
            )
        }
    };
    let paths = read_json(&sidecar(path, "paths.json"))?;
    let classes = read_json(&sidecar(path, "classes.json"))?;
    Ok(FeatureSet::new(features, labels, patch_tokens, paths)?.with_classes(classes))
}

#[derive(Clone, Copy)]
enum Format {
    Npy,
    Safetensors,
}

impl Format {
    fn of(path: &Path) -> Result<Self, FeaturesError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("npy") => Ok(Self::Npy),
            Some("safetensors") => Ok(Self::Safetensors),
            _ => Err(FeaturesError::Extension(path.to_path_buf())),
        }
    }
}

/// `<dir>/<stem>.<suffix>` for `<dir>/<stem>.<ext>` (also the token files' sidecars).
pub(crate) fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}.{suffix}"))
}
