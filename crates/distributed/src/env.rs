//! Where this process sits in the job: the environment variables `torchrun` sets.
use anyhow::{bail, Context};

/// This process's place in a multi-process job, as `torchrun` (and torch.distributed's `env://`
/// init method) describe it with environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    /// `RANK`: this process's index among all processes, `0..world_size`.
    pub rank: usize,
    /// `WORLD_SIZE`: the number of processes, at least 1.
    pub world_size: usize,
    /// `LOCAL_RANK`: the index among processes on this machine (which GPU to use); `RANK` when
    /// unset, which is right on a single machine.
    pub local_rank: usize,
    /// `MASTER_ADDR`: host of rank 0, which serves the rendezvous store.
    pub master_addr: String,
    /// `MASTER_PORT`: TCP port of the rendezvous store on `master_addr`.
    pub master_port: u16,
}

impl DistEnv {
    /// Reads `WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT` from the process
    /// environment.
    ///
    /// Returns `Ok(None)` when `WORLD_SIZE` is unset (not launched by `torchrun`: a single-process
    /// run), unless `RANK` is set to something other than 0 (an error). Errors name the variable when one is missing or malformed (see [`DistEnv::from_vars`]).
    pub fn from_env() -> anyhow::Result<Option<DistEnv>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`DistEnv::from_env`], with `var(name)` standing in for the environment.
    ///
    /// Errors when, with `WORLD_SIZE` set: a number is not a non-negative integer, `WORLD_SIZE`
    /// is 0, `RANK` or `MASTER_ADDR` or `MASTER_PORT` is missing, `RANK` is not below
    /// `WORLD_SIZE`, `MASTER_ADDR` is empty, or `MASTER_PORT` is not in `1..=65535`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<DistEnv>> {
        let Some(world_size) = var("WORLD_SIZE") else {
            // A rank other than 0 without a world size is a half-set-up launch: training alone
            // would write rank 0's files from a process meant to be a follower.
            if let Some(rank) = var("RANK").filter(|r| r.trim() != "0") {
                bail!("RANK={rank} is set but WORLD_SIZE is not: set both (as torchrun does) or neither");
            }
            return Ok(None);
        };
        let world_size = parse_usize("WORLD_SIZE", &world_size)?;
        if world_size == 0 {
            bail!("WORLD_SIZE must be at least 1, got 0");
        }
        let rank = parse_usize("RANK", &required(&var, "RANK")?)?;
        if rank >= world_size {
            bail!("RANK={rank} must be below WORLD_SIZE={world_size}");
        }
        let local_rank = match var("LOCAL_RANK") {
            Some(value) => parse_usize("LOCAL_RANK", &value)?,
            None => rank,
        };
        let master_addr = required(&var, "MASTER_ADDR")?.trim().to_string();
        if master_addr.is_empty() {
            bail!("MASTER_ADDR is empty");
        }
        let port = required(&var, "MASTER_PORT")?;
        let master_port = port
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .with_context(|| format!("MASTER_PORT={port:?} is not a TCP port (1..=65535)"))?;
        Ok(Some(DistEnv {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
        }))
    }
}

fn required(var: &impl Fn(&str) -> Option<String>, name: &str) -> anyhow::Result<String> {
    var(name).with_context(|| format!("{name} is not set (WORLD_SIZE is, so it is required)"))
}

fn parse_usize(name: &str, value: &str) -> anyhow::Result<usize> {
    value
        .trim()
        .parse::<usize>()
        .with_context(|| format!("{name}={value:?} is not a non-negative integer"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> anyhow::Result<Option<DistEnv>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DistEnv::from_vars(|name| map.get(name).cloned())
    }

    const GOOD: [(&str, &str); 5] = [
        ("WORLD_SIZE", "4"),
        ("RANK", "3"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "10.0.0.1"),
        ("MASTER_PORT", "29500"),
    ];

    fn with(name: &str, value: Option<&str>) -> anyhow::Result<Option<DistEnv>> {
        let mut pairs: Vec<(&str, &str)> =
            GOOD.iter().copied().filter(|(k, _)| *k != name).collect();
        if let Some(value) = value {
            pairs.push((name, value));
        }
        env(&pairs)
    }

    #[test]
    fn unset_world_size_is_single_process() {
        assert_eq!(env(&[]).unwrap(), None);
        assert_eq!(env(&[("RANK", "0")]).unwrap(), None);
        let err = env(&[("RANK", "1")]).unwrap_err();
        assert!(format!("{err:#}").contains("WORLD_SIZE"), "{err:#}");
    }

    #[test]
    fn reads_every_variable() {
        let e = env(&GOOD).unwrap().unwrap();
        assert_eq!(
            e,
            DistEnv {
                rank: 3,
                world_size: 4,
                local_rank: 1,
                master_addr: "10.0.0.1".into(),
                master_port: 29500
            }
        );
    }

    #[test]
    fn local_rank_defaults_to_rank() {
        assert_eq!(with("LOCAL_RANK", None).unwrap().unwrap().local_rank, 3);
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: [(&str, Option<&str>); 10] = [
            ("WORLD_SIZE", Some("two")),
            ("WORLD_SIZE", Some("0")),
            ("WORLD_SIZE", Some("-1")),
            ("RANK", None),
            ("RANK", Some("x")),
            ("RANK", Some("4")),
            ("LOCAL_RANK", Some("1.5")),
            ("MASTER_ADDR", None),
            ("MASTER_PORT", Some("70000")),
            ("MASTER_PORT", None),
        ];
        for (name, value) in cases {
            let err = with(name, value).expect_err(&format!("{name}={value:?} accepted"));
            assert!(
                format!("{err:#}").contains(name),
                "{name}={value:?}: {err:#}"
            );
        }
        let err = with("MASTER_PORT", Some("0")).unwrap_err();
        assert!(format!("{err:#}").contains("MASTER_PORT"), "{err:#}");
    }
}
