//! An unknown config key gets the nearest valid one (issue #33 leftovers, item 5): a misspelt
//! name in its section, the right name in the wrong section, a misspelt section; nothing when
//! no key is close. Through the file and through `--set` alike.

use dino_config::{Config, ConfigError};

fn reason(text: &str, sets: &[&str]) -> (String, String) {
    match Config::from_toml_str(text, sets) {
        Err(ConfigError::Invalid { key, reason }) => (key, reason),
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

#[test]
fn an_unknown_key_names_the_nearest_valid_one() {
    let cases: [(&str, &[&str], &str, &str); 7] = [
        (
            "[optim]\nbach_size = 8\n",
            &[],
            "optim.bach_size",
            "optim.batch_size",
        ),
        (
            "[optim]\nbatchsize = 8\n",
            &[],
            "optim.batchsize",
            "optim.batch_size",
        ),
        (
            "",
            &["optim.batch-size=8"],
            "optim.batch-size",
            "optim.batch_size",
        ),
        ("", &["head.out_dimm=10"], "head.out_dimm", "head.out_dim"),
        // The right name in another section.
        (
            "[optim]\nwarmup_epochs = 2\n",
            &[],
            "optim.warmup_epochs",
            "schedule.warmup_epochs",
        ),
        (
            "",
            &["model.global_crops_size=32"],
            "model.global_crops_size",
            "augmentation.global_crops_size",
        ),
        // A misspelt section.
        ("[optimizer]\nlr = 0.1\n", &[], "optimizer", "optim"),
    ];
    for (text, sets, key, near) in cases {
        let (got_key, why) = reason(text, sets);
        assert_eq!(got_key, key, "{why}");
        assert!(
            why.starts_with(&format!("did you mean `{near}`?")),
            "{key}: {why}"
        );
        // The valid names of the section stay in the message.
        assert!(why.contains("unknown field"), "{why}");
    }
    let shown = Config::from_toml_str("[optim]\nbach_size = 8\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        shown.starts_with("config key `optim.bach_size`: did you mean `optim.batch_size`?"),
        "{shown}"
    );
}

#[test]
fn a_key_near_nothing_gets_no_guess() {
    let (key, why) = reason("[optim]\nzzzzqqqq = 1\n", &[]);
    assert_eq!(key, "optim.zzzzqqqq");
    assert!(!why.contains("did you mean"), "{why}");
    assert!(why.contains("unknown field"), "{why}");
}
