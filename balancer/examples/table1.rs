//! Reproduce table 1 of "The NOW MOSIX and its Preemptive Process Migration
//! Scheme": N identical CPU-bound jobs started on one host of a cluster of
//! identical hosts; makespan of the ideal policy ("optimal") vs the
//! simulated balancer ("ours").
//!
//!     cargo run --release -p balancer --example table1 -- \
//!         [--hosts H] [--jobs N1,N2,...] [--duration SECONDS] [--seed S]
//!         [--memory-mib M] [--host-memory-gib G] [--dirty-mibs D]
//!         [--bandwidth-gbs B] [--gossip-ms P] [--loss P] [--verbose]
//!
//! Rows are independent simulations (each with its own seed derived from
//! `--seed`), so they run on all available cores and print in order.

#[macro_use]
mod common;

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use balancer::config::{GIB, MIB};
use balancer::sim::scenario::{row_seed, PAPER_TABLE1};
use balancer::sim::{run_burst, Burst, Outcome, SimError};
use common::{args, list, value};

struct Args {
    hosts: usize,
    jobs: Vec<usize>,
    duration: f64,
    seed: u64,
    memory_mib: f64,
    host_memory_gib: Option<f64>,
    dirty_mibs: f64,
    bandwidth_gbs: f64,
    gossip_ms: f64,
    loss: f64,
    verbose: bool,
}

const USAGE: &str = "usage: table1 [--hosts H] [--jobs N1,N2,...] [--duration SECONDS] [--seed S]
              [--memory-mib M] [--host-memory-gib G] [--dirty-mibs D]
              [--bandwidth-gbs B] [--gossip-ms P] [--loss P] [--verbose]
  --hosts H         identical single-core hosts (default 16)
  --jobs LIST       job counts, comma separated (default: the paper's 19 rows)
  --duration S      CPU seconds per job (default 300)
  --seed S          simulation seed (default 1)
  --memory-mib M    job memory (default 64)
  --host-memory-gib G  memory of every host (default: room for every job of
                    the row on one host, at least 16)
  --dirty-mibs D    job dirty rate in MiB/s (default 32)
  --bandwidth-gbs B link bandwidth in GB/s (default 1)
  --gossip-ms P     gossip period in ms (default 250)
  --loss P          probability that any message between hosts is lost (default 0)
  --verbose         print moves, refusals and traffic per row";

fn parse(it: &mut dyn Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        hosts: 16,
        jobs: PAPER_TABLE1.iter().map(|r| r.0).collect(),
        duration: 300.0,
        seed: 1,
        memory_mib: 64.0,
        host_memory_gib: None,
        dirty_mibs: 32.0,
        bandwidth_gbs: 1.0,
        gossip_ms: 250.0,
        loss: 0.0,
        verbose: false,
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--hosts" => a.hosts = value(&flag, it.next())?,
            "--jobs" => a.jobs = list(&flag, it.next())?,
            "--duration" => a.duration = value(&flag, it.next())?,
            "--seed" => a.seed = value(&flag, it.next())?,
            "--memory-mib" => a.memory_mib = value(&flag, it.next())?,
            "--host-memory-gib" => a.host_memory_gib = Some(value(&flag, it.next())?),
            "--dirty-mibs" => a.dirty_mibs = value(&flag, it.next())?,
            "--bandwidth-gbs" => a.bandwidth_gbs = value(&flag, it.next())?,
            "--gossip-ms" => a.gossip_ms = value(&flag, it.next())?,
            "--loss" => a.loss = value(&flag, it.next())?,
            "--verbose" | "-v" => a.verbose = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    // Limits keep the arithmetic sane; the run time grows with hosts times
    // simulated seconds (see the crate's README).
    if !(1..=20_000).contains(&a.hosts) {
        return Err("--hosts must be between 1 and 20000".into());
    }
    if !(a.duration.is_finite() && a.duration > 0.0 && a.duration <= 1e6) {
        return Err("--duration must be a number of seconds in (0, 1000000]".into());
    }
    if a.jobs.iter().any(|&n| n > 100_000) {
        return Err("--jobs: at most 100000 jobs per row".into());
    }
    if !(a.memory_mib.is_finite() && (0.0..=1048576.0).contains(&a.memory_mib)) {
        return Err("--memory-mib must be in [0, 1048576]".into());
    }
    if a.host_memory_gib.is_some_and(|g| !(g.is_finite() && g > 0.0 && g <= 1048576.0)) {
        return Err("--host-memory-gib must be in (0, 1048576]".into());
    }
    if !(a.dirty_mibs.is_finite() && a.dirty_mibs >= 0.0) {
        return Err("--dirty-mibs must be >= 0".into());
    }
    if !(a.bandwidth_gbs.is_finite() && a.bandwidth_gbs >= 1e-3) {
        return Err("--bandwidth-gbs must be at least 0.001".into());
    }
    if !(a.loss.is_finite() && (0.0..1.0).contains(&a.loss)) {
        return Err("--loss must be in [0, 1)".into());
    }
    if !(a.gossip_ms.is_finite() && (1.0..=60_000.0).contains(&a.gossip_ms)) {
        return Err("--gossip-ms must be between 1 and 60000".into());
    }
    Ok(a)
}

fn row(a: &Args, n: usize) -> Result<Outcome, SimError> {
    let host_memory = a.host_memory_gib.map(|g| (g * GIB as f64) as u64);
    let mut b = Burst::identical(a.hosts, n, a.duration, row_seed(a.seed, n))
        .with_job_memory((a.memory_mib * MIB as f64) as u64, host_memory);
    b.dirty_rate = a.dirty_mibs * MIB as f64;
    b.sim.cost.bandwidth = a.bandwidth_gbs * 1e9;
    b.sim.balancer.cost.bandwidth = a.bandwidth_gbs * 1e9;
    b.sim.balancer = b.sim.balancer.with_gossip_period(a.gossip_ms / 1000.0);
    b.sim.msg_loss = a.loss;
    run_burst(&b)
}

/// Runs the rows on all cores; calls `show` for each in the order of
/// `a.jobs`, as soon as it and every row before it are done.
fn run_rows(a: &Args, mut show: impl FnMut(usize, Result<Outcome, SimError>) -> bool) {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(a.jobs.len()).max(1);
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..workers {
            let tx = tx.clone();
            let next = &next;
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= a.jobs.len() || tx.send((i, row(a, a.jobs[i]))).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let mut done: Vec<Option<Result<Outcome, SimError>>> = vec![None; a.jobs.len()];
        let mut shown = 0;
        for (i, r) in rx.iter() {
            done[i] = Some(r);
            while shown < done.len() {
                let Some(r) = done[shown].take() else { break };
                if !show(a.jobs[shown], r) {
                    // Stop handing out rows; the running ones finish.
                    next.store(a.jobs.len(), Ordering::Relaxed);
                    return;
                }
                shown += 1;
            }
        }
    });
}

fn main() -> ExitCode {
    let a = match args("table1", USAGE, parse) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let host_memory = match a.host_memory_gib {
        Some(g) => format!("{g} GiB"),
        None => "room for every job on one host".into(),
    };
    say!(
        "# {} identical single-core hosts ({}); jobs of {} s CPU, {} MiB, dirtying {} MiB/s; link {} GB/s; gossip every {} ms; message loss {}; seed {}",
        a.hosts,
        host_memory,
        a.duration,
        a.memory_mib,
        a.dirty_mibs,
        a.bandwidth_gbs,
        a.gossip_ms,
        a.loss,
        a.seed,
    );
    say!("# optimal: ideal policy (a job moves the moment two hosts differ by more than one job; free, instant, omniscient)");
    say!("# ours: simulated balancer (gossip with delay, residency, pre-copy transfer and freeze)");
    say!("# MOSIX: the paper's measured time against the same optimal (rows of the paper's setup only)");
    say!("{:>5} {:>10} {:>10} {:>10} {:>10}", "N", "optimal", "ours", "slowdown%", "MOSIX%");
    // The paper's MOSIX times, where this run is the paper's setup.
    let paper_setup = a.hosts == 16 && a.duration == 300.0;
    let mosix = |n: usize| PAPER_TABLE1.iter().find(|r| r.0 == n && paper_setup).map(|r| r.2);
    let (mut sum, mut mosix_sum) = (0.0, 0.0);
    let (mut rows, mut mosix_rows) = (0usize, 0usize);
    let mut failed = false;
    run_rows(&a, |n, r| {
        let o = match r {
            Ok(o) => o,
            Err(e) => {
                eprintln!("table1: N={n}: {e}");
                failed = true;
                return false;
            }
        };
        let m = mosix(n).map(|t| 100.0 * (t - o.optimal) / o.optimal);
        let m_text = m.map_or("-".to_string(), |m| format!("{m:.2}%"));
        say!("{:>5} {:>10.2} {:>10.2} {:>9.2}% {:>10}", n, o.optimal, o.ours, o.slowdown(), m_text);
        if let Some(m) = m {
            mosix_sum += m;
            mosix_rows += 1;
        }
        if a.verbose {
            say!(
                "#       moves {} (wasted {}), requests {}, refused {}, {:.1} msgs/host/s, {:.0} B/host/s",
                o.moves,
                o.wasted_moves,
                o.requests,
                o.refusals,
                o.msgs_per_host_s,
                o.bytes_per_host_s
            );
        }
        sum += o.slowdown();
        rows += 1;
        true
    });
    if failed {
        return ExitCode::FAILURE;
    }
    say!("average slowdown: {:.2}%", sum / rows.max(1) as f64);
    if mosix_rows == rows && rows > 0 {
        say!("MOSIX (paper) average: {:.2}%", mosix_sum / mosix_rows as f64);
    }
    ExitCode::SUCCESS
}
