//! `dino launch`: start N worker processes of a data-parallel job (torchrun's role).

use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct LaunchArgs {
    /// Worker processes on this machine: one per GPU, or N CPU workers (each gets cores / N
    /// threads).
    #[arg(long, default_value_t = 1)]
    nproc_per_node: usize,
    /// Machines in the job; run `dino launch` on each with its --node-rank.
    #[arg(long, default_value_t = 1)]
    nnodes: usize,
    /// This machine's index, 0..nnodes (machine 0 hosts rank 0).
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// Address of machine 0, reachable from every machine.
    #[arg(long, default_value = "127.0.0.1")]
    master_addr: String,
    /// Rendezvous port on machine 0 (default: a free port; required with --nnodes > 1).
    #[arg(long)]
    master_port: Option<u16>,
    /// The dino command each worker runs, after `--`: e.g. `-- train --config configs/cifar10_cpu.toml`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(a: LaunchArgs) -> anyhow::Result<()> {
    let opts = dino_distributed::LaunchOptions {
        nproc_per_node: a.nproc_per_node,
        nnodes: a.nnodes,
        node_rank: a.node_rank,
        master_addr: a.master_addr,
        master_port: a.master_port,
        program: std::env::current_exe()?,
        args: a.command,
        grace: Duration::from_secs(10),
    };
    dino_distributed::launch(&opts)
}
