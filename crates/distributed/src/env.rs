//! The torchrun environment contract, both sides: the variables that place a process in a
//! multi-process job (`MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`, `RANK`, `LOCAL_RANK`,
//! `LOCAL_WORLD_SIZE`, `GROUP_RANK`, with torch.distributed's meanings), as each worker reads them
//! ([`DistEnv`](crate::env::DistEnv), [`local_world_size`](crate::env::local_world_size)) and as
//! `dino launch` writes them for the workers it starts ([`worker_env`](crate::env::worker_env),
//! [`launch`](crate::env::launch)). Kept in one file so that the writer and the reader name the
//! same variables; a test reads back what the writer writes.
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The variables.

/// Host of rank 0, which serves the rendezvous store.
pub const MASTER_ADDR: &str = "MASTER_ADDR";
/// TCP port of the rendezvous store on `MASTER_ADDR`.
pub const MASTER_PORT: &str = "MASTER_PORT";
/// Processes in the job.
pub const WORLD_SIZE: &str = "WORLD_SIZE";
/// This process's index among all processes, `0..WORLD_SIZE`.
pub const RANK: &str = "RANK";
/// This process's index among the processes of its machine (which GPU it uses).
pub const LOCAL_RANK: &str = "LOCAL_RANK";
/// Processes of the job on this machine.
pub const LOCAL_WORLD_SIZE: &str = "LOCAL_WORLD_SIZE";
/// Index of this machine in the job (torchrun's name for the node rank).
pub const GROUP_RANK: &str = "GROUP_RANK";

// ---------------------------------------------------------------------------------------------
// The reader: each worker.

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
        let Some(world_size) = var(WORLD_SIZE) else {
            // A rank other than 0 without a world size is a half-set-up launch: training alone
            // would write rank 0's files from a process meant to be a follower.
            if let Some(rank) = var(RANK).filter(|r| r.trim() != "0") {
                bail!("RANK={rank} is set but WORLD_SIZE is not: set both (as torchrun does) or neither");
            }
            return Ok(None);
        };
        let world_size = parse_usize(WORLD_SIZE, &world_size)?;
        if world_size == 0 {
            bail!("WORLD_SIZE must be at least 1, got 0");
        }
        let rank = parse_usize(RANK, &required(&var, RANK)?)?;
        if rank >= world_size {
            bail!("RANK={rank} must be below WORLD_SIZE={world_size}");
        }
        let local_rank = match var(LOCAL_RANK) {
            Some(value) => parse_usize(LOCAL_RANK, &value)?,
            None => rank,
        };
        let master_addr = required(&var, MASTER_ADDR)?.trim().to_string();
        if master_addr.is_empty() {
            bail!("MASTER_ADDR is empty");
        }
        let port = required(&var, MASTER_PORT)?;
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

/// Processes of this job on this machine: `LOCAL_WORLD_SIZE` (set by `dino launch` and
/// torchrun), 1 when unset or malformed. Used to share the cores among the processes.
pub fn local_world_size() -> usize {
    std::env::var(LOCAL_WORLD_SIZE)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
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

// ---------------------------------------------------------------------------------------------
// The writer: `dino launch`, torchrun's role on one machine. It starts each worker as the given
// program with these variables; when a worker fails, the others are stopped (as torchrun's
// elastic agent does) and the error names the rank.

/// What to start.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Worker processes on this machine (one per GPU, or CPU workers).
    pub nproc_per_node: usize,
    /// Machines in the job (each runs its own `dino launch`).
    pub nnodes: usize,
    /// Index of this machine, `0..nnodes`; machine 0 hosts rank 0 and the rendezvous store.
    pub node_rank: usize,
    /// Host of rank 0 (`MASTER_ADDR`).
    pub master_addr: String,
    /// Rendezvous port (`MASTER_PORT`); `None`: a free port of this machine (single machine
    /// only).
    pub master_port: Option<u16>,
    /// The program each worker runs (normally this binary, `std::env::current_exe()`).
    pub program: PathBuf,
    /// Its arguments, e.g. `["train", "--config", "configs/cifar10_cpu.toml"]`.
    pub args: Vec<String>,
    /// How long workers get to exit after a failed peer before they are killed.
    pub grace: Duration,
}

/// The environment of worker `local_rank`: torchrun's variable names and meanings.
pub fn worker_env(o: &LaunchOptions, port: u16, local_rank: usize) -> Vec<(String, String)> {
    let world = o.nnodes * o.nproc_per_node;
    let rank = o.node_rank * o.nproc_per_node + local_rank;
    [
        (MASTER_ADDR, o.master_addr.clone()),
        (MASTER_PORT, port.to_string()),
        (WORLD_SIZE, world.to_string()),
        (RANK, rank.to_string()),
        (LOCAL_RANK, local_rank.to_string()),
        (LOCAL_WORLD_SIZE, o.nproc_per_node.to_string()),
        (GROUP_RANK, o.node_rank.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A TCP port that is free on the loopback interface right now.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Starts the workers, waits for all of them, and stops the rest as soon as one fails.
///
/// # Errors
/// Bad options (0 processes, `node_rank ≥ nnodes`, no port for a multi-machine job), a worker
/// that cannot start, or the first worker to exit unsuccessfully (its rank and status).
pub fn launch(o: &LaunchOptions) -> anyhow::Result<()> {
    if o.nproc_per_node == 0 || o.nnodes == 0 {
        bail!("--nproc-per-node and --nnodes must be at least 1");
    }
    if o.node_rank >= o.nnodes {
        bail!(
            "--node-rank {} must be below --nnodes {}",
            o.node_rank,
            o.nnodes
        );
    }
    if o.args.first().map(String::as_str) == Some("launch") {
        bail!("the workers' command is `launch` again: give the command each worker runs, e.g. `-- train --config ...`");
    }
    let port = match o.master_port {
        Some(p) => p,
        None if o.nnodes == 1 => free_port()?,
        None => bail!("--master-port is required when --nnodes > 1 (all machines must agree)"),
    };
    tracing::info!(
        "starting {} workers (world size {}), rendezvous {}:{port}",
        o.nproc_per_node,
        o.nnodes * o.nproc_per_node,
        o.master_addr
    );
    let mut children: Vec<(usize, Child)> = Vec::new();
    for local in 0..o.nproc_per_node {
        let mut cmd = Command::new(&o.program);
        cmd.args(&o.args).envs(worker_env(o, port, local));
        // Workers get SIGTERM when the launcher dies, however it dies (kill -9, a scheduler's
        // SIGTERM, Ctrl-C): no worker keeps training unsupervised, as with torchrun's agent.
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting worker {local}: {}", o.program.display()));
        match child {
            Ok(c) => children.push((local, c)),
            Err(e) => {
                stop_all(&mut children, o.grace);
                return Err(e);
            }
        }
    }
    let mut failure: Option<(usize, ExitStatus)> = None;
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            match children[i].1.try_wait()? {
                Some(status) => {
                    let (local, _) = children.remove(i);
                    if !status.success() && failure.is_none() {
                        failure = Some((local, status));
                    }
                }
                None => i += 1,
            }
        }
        if failure.is_some() {
            stop_all(&mut children, o.grace);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match failure {
        Some((local, status)) => bail!(
            "worker {local} (rank {}) failed: {status}; the other workers were stopped",
            o.node_rank * o.nproc_per_node + local
        ),
        None => Ok(()),
    }
}

/// SIGTERM to every remaining worker, SIGKILL to those still alive after `grace`.
fn stop_all(children: &mut Vec<(usize, Child)>, grace: Duration) {
    for (_, c) in children.iter() {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        children.retain_mut(|(_, c)| matches!(c.try_wait(), Ok(None)));
        if children.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (_, c) in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    children.clear();
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

    // The writer.

    fn opts(n: usize, nnodes: usize, node_rank: usize) -> LaunchOptions {
        LaunchOptions {
            nproc_per_node: n,
            nnodes,
            node_rank,
            master_addr: "10.0.0.1".into(),
            master_port: Some(29500),
            program: "/bin/true".into(),
            args: vec![],
            grace: Duration::from_secs(1),
        }
    }

    #[test]
    fn worker_variables_are_torchruns() {
        let env: std::collections::HashMap<_, _> =
            worker_env(&opts(4, 2, 1), 29500, 3).into_iter().collect();
        assert_eq!(env["RANK"], "7");
        assert_eq!(env["LOCAL_RANK"], "3");
        assert_eq!(env["WORLD_SIZE"], "8");
        assert_eq!(env["LOCAL_WORLD_SIZE"], "4");
        assert_eq!(env["MASTER_ADDR"], "10.0.0.1");
        assert_eq!(env["MASTER_PORT"], "29500");
    }

    #[test]
    fn a_failing_worker_fails_the_launch_and_stops_the_others() {
        let o = LaunchOptions {
            program: "/bin/sh".into(),
            // Rank 1 fails at once; rank 0 would sleep for a minute.
            args: vec![
                "-c".into(),
                "if [ \"$RANK\" = 1 ]; then exit 3; else sleep 60; fi".into(),
            ],
            ..opts(2, 1, 0)
        };
        let t = Instant::now();
        let e = launch(&o).unwrap_err().to_string();
        assert!(e.contains("rank 1"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }

    #[test]
    fn all_workers_succeeding_is_success() {
        let o = LaunchOptions {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "test -n \"$WORLD_SIZE\"".into()],
            master_port: None,
            ..opts(3, 1, 0)
        };
        launch(&o).unwrap();
    }

    #[test]
    fn bad_options_are_rejected() {
        assert!(launch(&opts(0, 1, 0)).is_err());
        let nested = LaunchOptions {
            args: vec!["launch".into(), "--".into(), "train".into()],
            ..opts(2, 1, 0)
        };
        assert!(launch(&nested).unwrap_err().to_string().contains("launch"));
        assert!(launch(&opts(2, 2, 2)).is_err());
        let o = LaunchOptions {
            master_port: None,
            ..opts(2, 2, 0)
        };
        assert!(launch(&o).unwrap_err().to_string().contains("master-port"));
    }

    #[test]
    fn workers_read_what_the_launcher_writes() {
        // Every rank of a 2-machine × 3-process job, through the reader.
        for node in 0..2 {
            let o = opts(3, 2, node);
            for local in 0..3 {
                let vars: HashMap<String, String> =
                    worker_env(&o, 29500, local).into_iter().collect();
                let e = DistEnv::from_vars(|name| vars.get(name).cloned())
                    .unwrap()
                    .unwrap();
                assert_eq!(e.rank, node * 3 + local);
                assert_eq!(e.local_rank, local);
                assert_eq!(e.world_size, 6);
                assert_eq!((e.master_addr.as_str(), e.master_port), ("10.0.0.1", 29500));
                assert_eq!(vars[LOCAL_WORLD_SIZE], "3");
            }
        }
    }
}
