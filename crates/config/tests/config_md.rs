//! `docs/CONFIG.md`, the configuration keys for users, is generated from the doc comments of
//! `src/sections.rs` (each key's meaning and official source, where they are declared) and the
//! defaults of `Config::default()`; this test regenerates it and fails when the file differs.
//! `DINO_WRITE_CONFIG_MD=1 cargo test --workspace --test config config_md::` rewrites it.

use std::collections::BTreeMap;
use std::path::Path;

/// The doc comment lines above each item, joined into one paragraph, with intra-doc links
/// (`` [`X`] ``) as plain code.
fn paragraph(lines: &[String]) -> String {
    lines
        .join(" ")
        .replace("[`", "`")
        .replace("`]", "`")
        .replace('|', "\\|")
}

/// `ImageFolder` → `image_folder` (serde's `rename_all = "snake_case"`).
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A struct's fields or an enum's variants, each with its doc paragraph, in source order.
struct Item {
    is_enum: bool,
    members: Vec<(String, String, String)>, // (name, type, doc)
}

/// Reads every `pub struct` and `pub enum` of `source` with the doc comments of its members.
fn items(source: &str) -> BTreeMap<String, Item> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Item)> = None;
    let mut doc: Vec<String> = Vec::new();
    for line in source.lines() {
        let t = line.trim();
        if let Some(rest) = t
            .strip_prefix("pub struct ")
            .or_else(|| t.strip_prefix("pub enum "))
        {
            let name = rest.split([' ', '{', '(']).next().unwrap().to_string();
            let item = Item {
                is_enum: t.starts_with("pub enum"),
                members: Vec::new(),
            };
            current = Some((name, item));
            doc.clear();
            continue;
        }
        if line.starts_with('}') {
            if let Some((name, item)) = current.take() {
                out.insert(name, item);
            }
            doc.clear();
            continue;
        }
        if let Some(d) = t.strip_prefix("///") {
            doc.push(d.trim().to_string());
            continue;
        }
        if t.starts_with("#[") {
            continue;
        }
        if let Some((_, item)) = current.as_mut() {
            if item.is_enum {
                let name = t.split(['(', ',', ' ', '{']).next().unwrap_or("");
                if !name.is_empty() && name.chars().next().unwrap().is_uppercase() {
                    item.members
                        .push((snake(name), String::new(), paragraph(&doc)));
                }
            } else if let Some(field) = t.strip_prefix("pub ") {
                if let Some((name, ty)) = field.split_once(':') {
                    let ty = ty.trim().trim_end_matches(',').to_string();
                    item.members.push((name.to_string(), ty, paragraph(&doc)));
                }
            }
        }
        doc.clear();
    }
    out
}

/// The Markdown of `docs/CONFIG.md`.
fn generate(source: &str) -> String {
    let items = items(source);
    let defaults: toml::Table =
        toml::from_str(&dino_config::Config::default().to_toml_string()).unwrap();
    let sections = [
        ("data", "DataConfig"),
        ("augmentation", "AugmentationConfig"),
        ("model", "ModelConfig"),
        ("head", "HeadConfig"),
        ("loss", "LossConfig"),
        ("optim", "OptimConfig"),
        ("schedule", "ScheduleConfig"),
        ("checkpoint", "CheckpointConfig"),
        ("eval", "EvalConfig"),
        ("runtime", "RuntimeConfig"),
        ("method", "MethodConfig"),
        ("ibot", "IbotConfig"),
    ];
    let mut md = String::from(
        "# Configuration keys\n\n\
         Generated from the doc comments of `crates/config/src/sections.rs` and the defaults of \
         `Config::default()` by `crates/config/tests/config_md.rs` (which fails when this file \
         is out of date; `DINO_WRITE_CONFIG_MD=1 cargo test --workspace --test config config_md::` \
         rewrites it). Every default is the official DINO value (`facebookresearch/dino`) unless \
         its text says otherwise. A preset file lists only what differs; `--set \
         section.key=value` overrides any key; `dino config show --config PRESET` prints the \
         values a run would use.\n",
    );
    for (section, ty) in sections {
        let item = &items[ty];
        md.push_str(&format!(
            "\n## `[{section}]`\n\n| key | default | meaning |\n|---|---|---|\n"
        ));
        let table = defaults[section].as_table().unwrap();
        for (name, field_ty, doc) in &item.members {
            let default = table
                .get(name)
                .map_or_else(|| "(unset)".to_string(), |v| format!("`{v}`"));
            let mut meaning = doc.clone();
            if let Some(e) = items.get(field_ty.as_str()).filter(|e| e.is_enum) {
                let values: Vec<String> = e
                    .members
                    .iter()
                    .map(|(v, _, d)| format!("`\"{v}\"`: {d}"))
                    .collect();
                meaning.push_str(&format!(" Values: {}", values.join("; ")));
            }
            md.push_str(&format!("| `{section}.{name}` | {default} | {meaning} |\n"));
        }
        assert_eq!(
            item.members.len(),
            table.len(),
            "[{section}]: fields in {ty} against keys of the default config"
        );
    }
    md
}

#[test]
fn config_md_lists_every_key_and_is_up_to_date() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(crate_dir.join("src/sections.rs")).unwrap();
    let md = generate(&source);
    // Every key of the resolved config is in it, with its doc.
    let defaults: toml::Table =
        toml::from_str(&dino_config::Config::default().to_toml_string()).unwrap();
    for (section, table) in &defaults {
        for key in table.as_table().unwrap().keys() {
            let row = md
                .lines()
                .find(|l| l.starts_with(&format!("| `{section}.{key}` |")))
                .unwrap_or_else(|| panic!("{section}.{key} missing"));
            let meaning = row.split(" | ").nth(2).unwrap_or("").trim_end_matches('|');
            assert!(
                meaning.trim().len() > 10,
                "{section}.{key} has no doc: {row}"
            );
        }
    }
    let path = crate_dir.join("../../docs/CONFIG.md");
    if std::env::var_os("DINO_WRITE_CONFIG_MD").is_some() {
        std::fs::write(&path, &md).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == md,
        "docs/CONFIG.md is out of date: DINO_WRITE_CONFIG_MD=1 cargo test --workspace --test \
         config_md"
    );
}
