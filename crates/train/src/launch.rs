//! `dino launch`: starts the worker processes of a data-parallel job on this machine, the way
//! `torchrun --nproc-per-node N` does: each worker is this same binary with the given arguments
//! and torch.distributed's variables (`MASTER_ADDR`, `MASTER_PORT`, `RANK`, `LOCAL_RANK`,
//! `WORLD_SIZE`, `LOCAL_WORLD_SIZE`). When a worker fails, the others are stopped (as torchrun's
//! elastic agent does) and the error names the rank.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

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
        ("MASTER_ADDR", o.master_addr.clone()),
        ("MASTER_PORT", port.to_string()),
        ("WORLD_SIZE", world.to_string()),
        ("RANK", rank.to_string()),
        ("LOCAL_RANK", local_rank.to_string()),
        ("LOCAL_WORLD_SIZE", o.nproc_per_node.to_string()),
        ("GROUP_RANK", o.node_rank.to_string()),
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
}
