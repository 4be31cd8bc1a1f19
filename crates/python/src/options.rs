//! Keyword arguments → the `[augmentation]` and `[data]` config sections of `dino-config`, and
//! config values → Python objects.
//!
//! The sections are the Rust trainer's own structs, so a keyword argument means exactly what
//! the TOML key of the same name means, with the same defaults (the official ones) and the same
//! rules ([`dino_config::check_augmentation`]). Values go through serde, so a wrong type or a
//! scale range of the wrong length is a `ValueError` naming the argument, and an unknown keyword
//! is rejected with the list of known ones.

use dino_config::{check_augmentation, AugmentationConfig, DataConfig, DataFormat};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PyString};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::errors::{arg_config_error, bad_arg};

/// The `[augmentation]` section: its defaults (official `DataAugmentationDINO`), overridden by
/// the `explicit` arguments (the official constructor's, always given, as JSON values) and then
/// by `extra` keyword arguments, each of which must be an `[augmentation]` key.
///
/// # Errors
/// `ValueError` naming the argument: unknown key, wrong type or length, or a value that breaks a
/// rule of [`check_augmentation`].
pub fn augmentation(
    explicit: Vec<(&str, Value)>,
    extra: Option<&Bound<'_, PyDict>>,
) -> PyResult<AugmentationConfig> {
    let mut map = section_map(&AugmentationConfig::default());
    for (key, value) in explicit {
        map.insert(key.to_string(), value);
    }
    if let Some(extra) = extra {
        for (key, value) in extra.iter() {
            let key: String = key.extract()?;
            if !map.contains_key(&key) {
                let known: Vec<&str> = map.keys().map(String::as_str).collect();
                return Err(bad_arg(
                    &key,
                    format!(
                        "not a loader argument nor an [augmentation] key (those are: {})",
                        known.join(", ")
                    ),
                ));
            }
            let v = to_json(&key, &value)?;
            map.insert(key, v);
        }
    }
    let cfg: AugmentationConfig = from_map(map)?;
    check_augmentation(&cfg).map_err(arg_config_error)?;
    Ok(cfg)
}

/// The `[data]` arguments of the loader, checked as `Config::validate` checks the section.
pub struct DataArgs<'a> {
    /// `format`: `auto`, `image_folder`, `flat`, `cifar10_bin` or `idx`.
    pub format: &'a str,
    /// `split`: `train` or `test` (CIFAR-10 binary batches and IDX files).
    pub split: &'a str,
    /// `max_failed_fraction` in `[0, 1]`.
    pub max_failed_fraction: f64,
    /// `max_image_pixels` ≥ 1.
    pub max_image_pixels: i64,
    /// `drop_last`.
    pub drop_last: bool,
}

/// The `[data]` section of `root` from the loader's arguments.
///
/// # Errors
/// `ValueError` naming the argument that is out of range or unknown.
pub fn data(root: &str, a: &DataArgs<'_>) -> PyResult<DataConfig> {
    let format: DataFormat = serde_json::from_value(Value::String(a.format.to_string()))
        .map_err(|e| bad_arg("format", e))?;
    if !matches!(a.split, "train" | "test") {
        return Err(bad_arg(
            "split",
            format!("must be \"train\" or \"test\", got {:?}", a.split),
        ));
    }
    if !(0.0..=1.0).contains(&a.max_failed_fraction) {
        return Err(bad_arg(
            "max_failed_fraction",
            format!("must be in [0, 1], got {}", a.max_failed_fraction),
        ));
    }
    if a.max_image_pixels < 1 {
        return Err(bad_arg(
            "max_image_pixels",
            format!("must be at least 1, got {}", a.max_image_pixels),
        ));
    }
    Ok(DataConfig {
        path: root.to_string(),
        format,
        split: a.split.to_string(),
        max_failed_fraction: a.max_failed_fraction,
        max_image_pixels: a.max_image_pixels as u64,
        drop_last: a.drop_last,
    })
}

/// `value` as a non-negative integer of argument `name`, at least `min`.
pub fn count(name: &str, value: i64, min: i64) -> PyResult<u64> {
    if value < min {
        return Err(bad_arg(
            name,
            format!("must be at least {min}, got {value}"),
        ));
    }
    Ok(value as u64)
}

fn section_map<T: serde::Serialize>(section: &T) -> Map<String, Value> {
    match serde_json::to_value(section) {
        Ok(Value::Object(m)) => m,
        _ => unreachable!("a config section serializes to a JSON object"),
    }
}

fn from_map<T: DeserializeOwned>(map: Map<String, Value>) -> PyResult<T> {
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let key = e.path().to_string();
        bad_arg(
            crate::errors::argument_name(&key),
            e.into_inner().to_string(),
        )
    })
}

/// A Python value as JSON for serde: bool, int, float, str, and (nested) sequences such as
/// tuples, lists and NumPy arrays. Anything else is a `ValueError` naming `name`.
fn to_json(name: &str, v: &Bound<'_, PyAny>) -> PyResult<Value> {
    if v.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(v.extract()?));
    }
    if v.is_instance_of::<PyFloat>() {
        let f: f64 = v.extract()?;
        return serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| bad_arg(name, format!("{f} is not a finite number")));
    }
    if let Ok(i) = v.extract::<i64>() {
        return Ok(Value::from(i));
    }
    if let Ok(u) = v.extract::<u64>() {
        return Ok(Value::from(u));
    }
    if let Ok(f) = v.extract::<f64>() {
        // NumPy floating scalars and other objects with `__float__`.
        return serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| bad_arg(name, format!("{f} is not a finite number")));
    }
    if v.is_instance_of::<PyString>() {
        return Ok(Value::String(v.extract()?));
    }
    if let Ok(items) = v.try_iter() {
        let mut out = Vec::new();
        for item in items {
            out.push(to_json(name, &item?)?);
        }
        return Ok(Value::Array(out));
    }
    Err(bad_arg(
        name,
        format!("cannot use a {} here", v.get_type().name()?),
    ))
}

/// The five arguments of the official constructor (and the crop sizes it hard-codes) as the
/// `explicit` values of [`augmentation`].
pub fn official(
    global_crops_scale: Vec<f64>,
    local_crops_scale: Vec<f64>,
    local_crops_number: i64,
    global_crops_size: i64,
    local_crops_size: i64,
) -> Vec<(&'static str, Value)> {
    vec![
        ("global_crops_scale", Value::from(global_crops_scale)),
        ("local_crops_scale", Value::from(local_crops_scale)),
        ("local_crops_number", Value::from(local_crops_number)),
        ("global_crops_size", Value::from(global_crops_size)),
        ("local_crops_size", Value::from(local_crops_size)),
    ]
}

/// A serde value (a config section) as plain Python objects: dict, list, int, float, str, bool.
pub fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// A config section as a Python dict of its keys.
pub fn section_dict<'py, T: serde::Serialize>(
    py: Python<'py>,
    section: &T,
) -> PyResult<Bound<'py, PyAny>> {
    to_py(py, &Value::Object(section_map(section)))
}
