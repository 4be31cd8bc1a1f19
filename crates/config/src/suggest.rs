//! The nearest valid key for an unknown one (`optim.bach_size` → "did you mean
//! `optim.batch_size`?"), from the keys of the default configuration: the same name in another
//! section first (`optim.warmup_epochs` → `schedule.warmup_epochs`), then the closest spelling
//! by normalized Damerau–Levenshtein similarity (the `strsim` crate), of the whole dotted key or
//! of the name within its own section (a name that is the other cut short counts as close).

use crate::Config;

/// Below this similarity (0–1) nothing is suggested: a guess that far off misleads.
const MIN_SIMILARITY: f64 = 0.6;

/// Every dotted key of the resolved default configuration (`data.path`, `optim.lr`, …), and the
/// section names.
fn valid_keys() -> Vec<String> {
    let value = toml::Value::try_from(Config::default()).expect("the defaults serialize");
    let mut keys = Vec::new();
    flatten("", &value, &mut keys);
    keys
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
    if let toml::Value::Table(t) = value {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push(key.clone());
            flatten(&key, v, out);
        }
    }
}

/// The valid key nearest to the unknown dotted key `key`, or `None` when none is close.
pub fn nearest_key(key: &str) -> Option<String> {
    let keys = valid_keys();
    let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
    let depth = key.matches('.').count();
    let same_depth = || keys.iter().filter(move |k| k.matches('.').count() == depth);
    // The right name in the wrong section.
    if let Some(k) = same_depth().find(|k| k.rsplit_once('.').is_some_and(|(_, n)| n == name)) {
        return Some(k.clone());
    }
    same_depth()
        .map(|k| {
            let whole = strsim::normalized_damerau_levenshtein(key, k);
            let (k_section, k_name) = k.rsplit_once('.').unwrap_or(("", k));
            let within = if k_section != section {
                0.0
            } else if k_name.len() >= 3 && (name.starts_with(k_name) || k_name.starts_with(name)) {
                // `optimizer` for `optim`, `epoch` for `epochs`: one is the other cut short.
                0.9
            } else {
                strsim::normalized_damerau_levenshtein(name, k_name)
            };
            (whole.max(within), k)
        })
        .filter(|(score, _)| *score >= MIN_SIMILARITY)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.clone())
}
