//! Real multi-process runs over loopback: each test launches this test binary again, once per
//! rank, running only the `worker` test with `DINO_DIST_TEST_ROLE` naming what it does, and the
//! torchrun variables (`RANK`, `WORLD_SIZE`, ...) set. A worker fails by panicking (non-zero
//! exit); workers that expect an error print it on a `RESULT` line that the parent checks.
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dino_distributed::{DistEnv, ProcessGroup, ReduceOp};
use tch::{Device, Kind, Tensor};

const ROLE: &str = "DINO_DIST_TEST_ROLE";
const TIMEOUT_MS: &str = "DINO_DIST_TEST_TIMEOUT_MS";
/// Collective timeout of the tests that expect success: generous, a slow machine must not fail.
const OK_TIMEOUT: Duration = Duration::from_secs(60);
/// Collective timeout of the tests that expect a dead or missing peer to be reported.
const FAIL_TIMEOUT: Duration = Duration::from_secs(5);
/// The error must arrive well within this, whatever the machine.
const ERROR_DEADLINE: Duration = Duration::from_secs(30);
/// A whole worker process is killed (and the test fails) past this.
const PROCESS_DEADLINE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// The worker side.

/// The test name of [`worker`] in this crate's one test binary (`tests/main.rs`).
const WORKER: &str = "multiprocess::worker";

/// Entry point of the re-executed workers; does nothing in a normal test run.
#[test]
fn worker() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    tch::set_num_threads(1);
    let env = DistEnv::from_env()
        .unwrap()
        .expect("WORLD_SIZE set by the parent");
    let timeout = Duration::from_millis(std::env::var(TIMEOUT_MS).unwrap().parse().unwrap());
    match role.as_str() {
        "all_reduce" => all_reduce_worker(&ProcessGroup::new(&env, timeout).unwrap()),
        "broadcast" => broadcast_worker(&ProcessGroup::new(&env, timeout).unwrap()),
        "barrier" => barrier_worker(&ProcessGroup::new(&env, timeout).unwrap()),
        "peer_exits" | "peer_hangs" => peer_failure_worker(&role, &env, timeout),
        #[cfg(feature = "nccl")]
        "nccl" => nccl_worker(&ProcessGroup::new(&env, timeout).unwrap(), env.local_rank),
        "alone" => {
            let start = Instant::now();
            let err = ProcessGroup::new(&env, timeout).expect_err("joined without its peer");
            report(start, &err);
        }
        other => panic!("unknown role {other}"),
    }
}

fn cpu(values: &[f32]) -> Tensor {
    Tensor::from_slice(values)
}

fn assert_close(t: &Tensor, expected: &Tensor) {
    let t = t.to_kind(Kind::Double);
    let expected = expected.to_kind(Kind::Double);
    assert!(
        t.allclose(&expected, 1e-6, 1e-6, false),
        "got {t:?}, expected {expected:?}"
    );
}

fn all_reduce_worker(group: &ProcessGroup) {
    let (r, w) = (group.rank() as f32, group.world_size() as f32);
    // Sum over ranks of (r + 1) and of 10 (r + 1).
    let sum1 = w * (w + 1.0) / 2.0;

    let mut t = cpu(&[r + 1.0, 10.0 * (r + 1.0)]);
    group.all_reduce(&mut t, ReduceOp::Sum).unwrap();
    assert_close(&t, &cpu(&[sum1, 10.0 * sum1]));

    let mut t = cpu(&[r + 1.0, 10.0 * (r + 1.0)]).to_kind(Kind::Double);
    group.all_reduce(&mut t, ReduceOp::Avg).unwrap();
    assert_close(&t, &cpu(&[sum1 / w, 10.0 * sum1 / w]));

    let mut t = Tensor::from_slice(&[group.rank() as i64 + 1, 7]);
    group.all_reduce(&mut t, ReduceOp::Sum).unwrap();
    assert_eq!(
        Vec::<i64>::try_from(&t).unwrap(),
        [sum1 as i64, 7 * w as i64]
    );

    // Averaging integers is refused before any communication (so both ranks stay in step).
    let err = group.all_reduce(&mut t, ReduceOp::Avg).unwrap_err();
    assert!(format!("{err:#}").contains("floating-point"), "{err:#}");

    // A non-contiguous view: reduced through a copy, written back into the base tensor.
    let base = Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]) * (r as f64 + 1.0);
    let mut view = base.transpose(0, 1);
    assert!(!view.is_contiguous());
    group.all_reduce(&mut view, ReduceOp::Sum).unwrap();
    assert_close(
        &base,
        &(Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]) * sum1 as f64),
    );

    // A leaf that requires grad (a parameter): reduced in place, untracked by autograd.
    let mut p = cpu(&[r, 2.0 * r]).set_requires_grad(true);
    group.all_reduce(&mut p, ReduceOp::Avg).unwrap();
    assert_close(&p.detach(), &cpu(&[(w - 1.0) / 2.0, w - 1.0]));

    // Buckets: 10 f32 tensors of 1..=10 elements (220 bytes) in buckets of at most 32 bytes.
    let mut ts: Vec<Tensor> = (1..=10i64)
        .map(|n| {
            (Tensor::arange(n, (Kind::Float, Device::Cpu)) + 100.0 * n as f64) * (r as f64 + 1.0)
        })
        .collect();
    ts[3] = ts[3].view([2, 2]);
    let buckets = group.all_reduce_many(&mut ts, ReduceOp::Sum, 32).unwrap();
    assert!(buckets >= 5, "only {buckets} buckets");
    for (i, t) in ts.iter().enumerate() {
        let n = i as i64 + 1;
        let expected =
            (Tensor::arange(n, (Kind::Float, Device::Cpu)) + 100.0 * n as f64) * sum1 as f64;
        assert_close(&t.reshape([-1]), &expected);
    }
    assert_eq!(ts[3].size(), [2, 2]);

    let mut ts: Vec<Tensor> = (0..4).map(|_| cpu(&[r, 1.0, 2.0])).collect();
    assert_eq!(
        group
            .all_reduce_many(&mut ts, ReduceOp::Avg, 1 << 20)
            .unwrap(),
        1
    );
    for t in &ts {
        assert_close(t, &cpu(&[(w - 1.0) / 2.0, 1.0, 2.0]));
    }

    let mut mixed = vec![cpu(&[1.0]), Tensor::from_slice(&[1i64])];
    let err = group
        .all_reduce_many(&mut mixed, ReduceOp::Sum, 64)
        .unwrap_err();
    assert!(format!("{err:#}").contains("tensor 1"), "{err:#}");
    group.barrier().unwrap();
}

fn broadcast_worker(group: &ProcessGroup) {
    let r = group.rank() as f32;
    for root in 0..group.world_size() {
        let mut t = Tensor::full([2, 3], r as f64 + 1.0, (Kind::Float, Device::Cpu));
        group.broadcast(&mut t, root).unwrap();
        assert_close(
            &t,
            &Tensor::full([2, 3], root as f64 + 1.0, (Kind::Float, Device::Cpu)),
        );
    }
    let mut t = cpu(&[r]);
    assert!(group.broadcast(&mut t, group.world_size()).is_err());
    group.barrier().unwrap();
}

fn barrier_worker(group: &ProcessGroup) {
    // The last rank arrives a second late; nobody may leave before it arrives.
    let late = Duration::from_millis(1000);
    if group.rank() + 1 == group.world_size() {
        std::thread::sleep(late);
    }
    let start = Instant::now();
    group.barrier().unwrap();
    if group.rank() == 0 {
        assert!(
            start.elapsed() >= late / 2,
            "barrier returned after {:?}",
            start.elapsed()
        );
    }
    group.barrier().unwrap();
}

/// CUDA tensors through NCCL: one GPU per rank.
#[cfg(feature = "nccl")]
fn nccl_worker(group: &ProcessGroup, local_rank: usize) {
    let (r, w) = (group.rank() as f64, group.world_size() as f64);
    let gpu = Device::Cuda(local_rank);
    let mut t = Tensor::from_slice(&[r + 1.0, 2.0]).to_device(gpu);
    group.all_reduce(&mut t, ReduceOp::Avg).unwrap();
    assert_eq!(t.device(), gpu);
    assert_close(
        &t.to_device(Device::Cpu),
        &cpu(&[((w + 1.0) / 2.0) as f32, 2.0]),
    );
    let mut ts: Vec<Tensor> = (1..=5i64)
        .map(|n| Tensor::ones([n], (Kind::Float, gpu)) * (r + 1.0))
        .collect();
    assert!(group.all_reduce_many(&mut ts, ReduceOp::Sum, 16).unwrap() > 1);
    for t in &ts {
        let expected = Tensor::ones(t.size(), (Kind::Float, Device::Cpu)) * (w * (w + 1.0) / 2.0);
        assert_close(&t.to_device(Device::Cpu), &expected);
    }
    // Rank 1's values (rank 0's in a group of one).
    let root = (group.world_size() - 1).min(1);
    let mut t = Tensor::full([3], r, (Kind::Float, gpu));
    group.broadcast(&mut t, root).unwrap();
    let v = root as f32;
    assert_close(&t.to_device(Device::Cpu), &cpu(&[v, v, v]));
    group.barrier().unwrap();
}

/// Rank 1 joins, then exits (`peer_exits`) or sleeps for good (`peer_hangs`) instead of joining
/// the all-reduce; rank 0 must report an error.
fn peer_failure_worker(role: &str, env: &DistEnv, timeout: Duration) {
    let group = ProcessGroup::new(env, timeout).unwrap();
    if group.rank() == 1 {
        if role == "peer_exits" {
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_secs(3600));
    }
    let start = Instant::now();
    let mut t = cpu(&[1.0, 2.0]);
    let err = group
        .all_reduce(&mut t, ReduceOp::Sum)
        .expect_err("all_reduce without its peer");
    report(start, &err);
}

fn report(start: Instant, err: &anyhow::Error) {
    let message = format!("{err:#}").replace('\n', " ");
    println!(
        "\nRESULT elapsed_ms={} error={message}",
        start.elapsed().as_millis()
    );
}

// ---------------------------------------------------------------------------------------------
// The parent side.

/// A port that was free a moment ago and that no other test of this binary has been given.
fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

struct Worker {
    rank: usize,
    child: Child,
    log: std::path::PathBuf,
}

/// Starts one worker per entry of `ranks` (a job of `world_size` ranks) running `role`.
fn spawn(
    dir: &Path,
    role: &str,
    ranks: &[usize],
    world_size: usize,
    timeout: Duration,
) -> Vec<Worker> {
    let exe = std::env::current_exe().unwrap();
    let port = free_port();
    ranks
        .iter()
        .map(|&rank| {
            let log = dir.join(format!("rank{rank}.log"));
            let out = std::fs::File::create(&log).unwrap();
            let child = Command::new(&exe)
                .args(["--exact", WORKER, "--nocapture", "--test-threads=1"])
                .env(ROLE, role)
                .env(TIMEOUT_MS, timeout.as_millis().to_string())
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", world_size.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap();
            Worker { rank, child, log }
        })
        .collect()
}

/// Waits for `worker` (killing it past [`PROCESS_DEADLINE`]); returns its success and its log.
fn finish(mut worker: Worker) -> (bool, String) {
    let start = Instant::now();
    let status = loop {
        if let Some(status) = worker.child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > PROCESS_DEADLINE {
            worker.child.kill().unwrap();
            worker.child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&worker.log).unwrap_or_default();
    let log = format!("--- rank {} ({status:?}) ---\n{log}", worker.rank);
    (status.is_some_and(|s| s.success()), log)
}

/// Runs `role` on every rank of a `world_size` job; every worker must succeed.
fn run_all(role: &str, world_size: usize) {
    let dir = tempfile::tempdir().unwrap();
    let ranks: Vec<usize> = (0..world_size).collect();
    let workers = spawn(dir.path(), role, &ranks, world_size, OK_TIMEOUT);
    let results: Vec<(bool, String)> = workers.into_iter().map(finish).collect();
    if !results.iter().all(|(ok, _)| *ok) {
        let logs: Vec<&str> = results.iter().map(|(_, log)| log.as_str()).collect();
        panic!("{role}: a worker failed\n{}", logs.join("\n"));
    }
}

/// Parses a worker's `RESULT` line: the time the error took and its message.
fn result_line(log: &str) -> (Duration, String) {
    let line = log
        .lines()
        .find_map(|l| l.split_once("RESULT elapsed_ms=").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no RESULT line in\n{log}"));
    let (ms, message) = line.split_once(" error=").unwrap();
    (
        Duration::from_millis(ms.parse().unwrap()),
        message.to_string(),
    )
}

/// Checks that a worker got (and reported) an error, within [`ERROR_DEADLINE`]; returns it.
fn expect_error(ok: bool, log: &str) -> (Duration, String) {
    assert!(ok, "worker failed\n{log}");
    let (elapsed, message) = result_line(log);
    eprintln!("error after {elapsed:?}: {message}");
    assert!(elapsed < ERROR_DEADLINE, "error after {elapsed:?}\n{log}");
    (elapsed, message)
}

#[test]
fn all_reduce_sum_avg_and_buckets_on_two_processes() {
    run_all("all_reduce", 2);
}

#[test]
fn all_reduce_on_three_processes() {
    run_all("all_reduce", 3);
}

#[test]
fn broadcast_from_every_root() {
    run_all("broadcast", 2);
}

#[test]
fn barrier_waits_for_the_last_rank() {
    run_all("barrier", 2);
}

/// A group of one on one GPU: the NCCL process group comes up through the rendezvous and
/// runs every collective on CUDA tensors. Needs a CUDA device; passes vacuously otherwise.
#[cfg(feature = "nccl")]
#[test]
fn nccl_collectives_on_one_gpu() {
    if tch::Cuda::device_count() < 1 {
        eprintln!("skipped: needs a CUDA device");
        return;
    }
    run_all("nccl", 1);
}

/// Needs two CUDA devices (NCCL refuses two ranks on one GPU); passes vacuously otherwise.
#[cfg(feature = "nccl")]
#[test]
fn nccl_collectives_on_two_gpus() {
    if tch::Cuda::device_count() < 2 {
        eprintln!(
            "skipped: needs 2 CUDA devices, found {}",
            tch::Cuda::device_count()
        );
        return;
    }
    run_all("nccl", 2);
}

#[test]
fn a_peer_that_exits_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut workers = spawn(dir.path(), "peer_exits", &[0, 1], 2, FAIL_TIMEOUT).into_iter();
    let (rank0, rank1) = (workers.next().unwrap(), workers.next().unwrap());
    let (ok, log) = finish(rank0);
    let (_, log1) = finish(rank1);
    let (elapsed, message) = expect_error(ok, &format!("{log}\n{log1}"));
    assert!(
        message.contains("rank 0 of 2") && message.contains("all_reduce"),
        "{message}"
    );
    // A closed connection is seen at once; at worst, the timeout ends the wait.
    assert!(
        elapsed < FAIL_TIMEOUT + Duration::from_secs(5),
        "error after {elapsed:?}"
    );
}

#[test]
fn a_peer_that_never_joins_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut workers = spawn(dir.path(), "peer_hangs", &[0, 1], 2, FAIL_TIMEOUT).into_iter();
    let (rank0, mut rank1) = (workers.next().unwrap(), workers.next().unwrap());
    let (ok, log) = finish(rank0);
    rank1.child.kill().unwrap();
    rank1.child.wait().unwrap();
    let (elapsed, message) = expect_error(ok, &log);
    assert!(message.contains("all_reduce"), "{message}");
    assert!(
        elapsed >= FAIL_TIMEOUT / 2,
        "error before the timeout ({elapsed:?}): {message}"
    );
}

/// Rank `rank` of 2 started alone: it must fail to join within the timeout.
fn alone_fails_to_join(rank: usize) {
    let dir = tempfile::tempdir().unwrap();
    let worker = spawn(dir.path(), "alone", &[rank], 2, FAIL_TIMEOUT)
        .pop()
        .unwrap();
    let (ok, log) = finish(worker);
    let (_, message) = expect_error(ok, &log);
    assert!(message.contains("joining the process group"), "{message}");
}

#[test]
fn rank0_alone_fails_to_join_within_the_timeout() {
    alone_fails_to_join(0);
}

#[test]
fn rank1_without_a_store_fails_to_join_within_the_timeout() {
    alone_fails_to_join(1);
}

#[test]
fn malformed_env_names_the_variable() {
    let vars = |bad: (&'static str, &'static str)| {
        move |name: &str| {
            if name == bad.0 {
                return Some(bad.1.to_string());
            }
            match name {
                "WORLD_SIZE" => Some("2".into()),
                "RANK" => Some("0".into()),
                "MASTER_ADDR" => Some("127.0.0.1".into()),
                "MASTER_PORT" => Some("29500".into()),
                _ => None,
            }
        }
    };
    for bad in [
        ("WORLD_SIZE", "2x"),
        ("RANK", "-1"),
        ("LOCAL_RANK", "a"),
        ("MASTER_PORT", "http"),
    ] {
        let err = DistEnv::from_vars(vars(bad)).unwrap_err();
        assert!(format!("{err:#}").contains(bad.0), "{bad:?}: {err:#}");
    }
    assert!(DistEnv::from_vars(|_| None).unwrap().is_none());
}
