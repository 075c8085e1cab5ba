//! Scaling: a large cluster, a burst of jobs on a few hosts, then a new idle
//! host joining.
//!
//!     cargo run --release -p balancer --example scale -- \
//!         [--hosts H[,H2,...]] [--burst-hosts B] [--jobs-per-host J]
//!         [--duration SECONDS] [--memory-mib M] [--host-memory-gib G] [--seed S]
//!
//! Reports, per cluster size: messages and bytes per host per second (idle
//! and while balancing), the most any single host received, the time until
//! every host is within one job of the average (with the lower bound set by
//! the burst hosts' links), the time until a newly joined idle host receives
//! its first job, and wasted moves (a job moved again within the cool-down).

#[macro_use]
mod common;

use std::process::ExitCode;

use common::{args, list, value};

use balancer::config::{HostSpec, GIB, MIB};
use balancer::sim::{JobSpec, Sim, SimConfig};

struct Args {
    hosts: Vec<usize>,
    burst_hosts: usize,
    jobs_per_host: f64,
    duration: f64,
    memory_mib: f64,
    host_memory_gib: f64,
    seed: u64,
}

const USAGE: &str = "usage: scale [--hosts H[,H2,...]] [--burst-hosts B] [--jobs-per-host J]
             [--duration SECONDS] [--memory-mib M] [--host-memory-gib G] [--seed S]
  --hosts LIST        cluster sizes to run (default 1024)
  --burst-hosts B     hosts that receive the whole burst (default 8)
  --jobs-per-host J   burst size as jobs per host of the cluster (default 2)
  --duration S        CPU seconds per job (default 600)
  --memory-mib M      job memory (default 64)
  --host-memory-gib G memory of every host (default 64)
  --seed S            simulation seed (default 1)";

fn parse(it: &mut dyn Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        hosts: vec![1024],
        burst_hosts: 8,
        jobs_per_host: 2.0,
        duration: 600.0,
        memory_mib: 64.0,
        host_memory_gib: 64.0,
        seed: 1,
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--hosts" => a.hosts = list(&flag, it.next())?,
            "--burst-hosts" => a.burst_hosts = value(&flag, it.next())?,
            "--jobs-per-host" => a.jobs_per_host = value(&flag, it.next())?,
            "--duration" => a.duration = value(&flag, it.next())?,
            "--memory-mib" => a.memory_mib = value(&flag, it.next())?,
            "--host-memory-gib" => a.host_memory_gib = value(&flag, it.next())?,
            "--seed" => a.seed = value(&flag, it.next())?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.hosts.is_empty() || a.hosts.iter().any(|&h| !(2..=20_000).contains(&h)) {
        return Err("--hosts: sizes must be between 2 and 20000".into());
    }
    if a.burst_hosts == 0 || a.hosts.iter().any(|&h| a.burst_hosts >= h) {
        return Err("--burst-hosts must be at least 1 and less than every cluster size".into());
    }
    if !(a.jobs_per_host.is_finite() && a.jobs_per_host > 0.0 && a.jobs_per_host <= 64.0) {
        return Err("--jobs-per-host must be in (0, 64]".into());
    }
    if !(a.duration.is_finite() && (10.0..=1e6).contains(&a.duration)) {
        return Err("--duration must be between 10 and 1000000 seconds".into());
    }
    if !(a.memory_mib.is_finite() && (0.0..=1048576.0).contains(&a.memory_mib)) {
        return Err("--memory-mib must be in [0, 1048576]".into());
    }
    if !(a.host_memory_gib.is_finite() && a.host_memory_gib > 0.0 && a.host_memory_gib <= 1048576.0) {
        return Err("--host-memory-gib must be in (0, 1048576]".into());
    }
    for &h in &a.hosts {
        let s = Shape::of(&a, h);
        if s.per_burst_host as f64 * a.memory_mib > a.host_memory_gib * 1024.0 {
            return Err(format!(
                "with {h} hosts each burst host starts {} jobs of {} MiB: more than its {} GiB",
                s.per_burst_host, a.memory_mib, a.host_memory_gib
            ));
        }
        // The counts are watched while the jobs run (until half their
        // duration); shorter jobs would end before balancing could.
        if a.duration < 2.0 * s.bound {
            return Err(format!(
                "--duration {} is too short for {h} hosts: jobs must outlast twice the balancing bound ({:.1} s)",
                a.duration, s.bound
            ));
        }
    }
    Ok(a)
}

/// The burst for one cluster size.
struct Shape {
    jobs: usize,
    per_burst_host: usize,
    /// Seconds until every host can be within one job of the average, at
    /// best: the residency plus the time the burst hosts' links need.
    bound: f64,
}

impl Shape {
    fn of(a: &Args, hosts: usize) -> Shape {
        let jobs = (a.jobs_per_host * hosts as f64).round() as usize;
        let per_burst_host = jobs.div_ceil(a.burst_hosts);
        // A burst host is within one job of the average once it is down to
        // floor(avg + 1) jobs; every job it sheds occupies its link for the
        // copy and the freeze (the setup overlaps the previous copy).
        let keep = (jobs as f64 / hosts as f64 + 1.0).floor() as usize;
        let d = SimConfig::default();
        let c = d.cost.estimate(job_memory(a), DIRTY_RATE);
        let link_time = c.total() - d.cost.setup.min(c.precopy);
        let bound = d.balancer.consider.min_residency + per_burst_host.saturating_sub(keep) as f64 * link_time;
        Shape { jobs, per_burst_host, bound }
    }
}

/// Every job dirties this many bytes per second.
const DIRTY_RATE: f64 = 32.0 * MIB as f64;

fn job_memory(a: &Args) -> u64 {
    (a.memory_mib * MIB as f64) as u64
}

/// Largest distance of any host's job count from the average.
fn spread(counts: &[usize]) -> f64 {
    let avg = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    counts.iter().map(|&c| (c as f64 - avg).abs()).fold(0.0, f64::max)
}

struct Row {
    hosts: usize,
    idle_msgs: f64,
    busy_msgs: f64,
    busy_bytes: f64,
    max_recv: f64,
    balanced: Option<f64>,
    bound: f64,
    new_host_work: Option<f64>,
    new_host_level: Option<f64>,
    work_expected: bool,
    moves: u64,
    wasted: u64,
    ping_pongs: u64,
    refusals: u64,
}

fn host_spec(a: &Args) -> HostSpec {
    HostSpec { memory: (a.host_memory_gib * GIB as f64) as u64, ..HostSpec::default() }
}

fn run(a: &Args, hosts: usize) -> Row {
    let shape = Shape::of(a, hosts);
    let mut sim = Sim::new(SimConfig { seed: a.seed, ..SimConfig::default() });
    let boot = 2.0;
    for i in 0..hosts {
        sim.add_host(host_spec(a), boot * i as f64 / hosts as f64);
    }
    let t0 = 15.0; // the burst
    for k in 0..shape.jobs {
        sim.add_job(JobSpec {
            work: a.duration,
            memory: job_memory(a),
            dirty_rate: DIRTY_RATE,
            host: k % a.burst_hosts,
            submit_at: t0,
        });
    }
    // Idle traffic over [5, t0).
    sim.run_until(5.0);
    let snap = |sim: &Sim| -> (u64, u64) {
        let s = sim.stats();
        (s.messages, s.bytes)
    };
    let (m5, _) = snap(&sim);
    sim.run_until(t0);
    let (m15, b15) = snap(&sim);
    let idle_msgs = (m15 - m5) as f64 / hosts as f64 / (t0 - 5.0);
    let recv_before: Vec<u64> = (0..hosts).map(|h| sim.traffic(h).received).collect();

    // Balance: step in small increments and watch the true counts.
    let bound = shape.bound;
    let horizon = (t0 + 10.0 * bound + 60.0).min(t0 + a.duration * 0.5);
    let step = 0.05;
    let mut t = t0;
    let mut balanced = None;
    while t < horizon {
        t += step;
        sim.run_until(t);
        if spread(&sim.job_counts()) <= 1.0 + 1e-9 {
            balanced = Some(t - t0);
            break;
        }
    }
    let t_bal = sim.now();
    let (m_bal, b_bal) = snap(&sim);
    let span = (t_bal - t0).max(1e-9);
    let busy_msgs = (m_bal - m15) as f64 / hosts as f64 / span;
    let busy_bytes = (b_bal - b15) as f64 / hosts as f64 / span;
    let max_recv = (0..hosts).map(|h| (sim.traffic(h).received - recv_before[h]) as f64 / span).fold(0.0, f64::max);

    // A new idle host joins 10 s after the cluster balanced.
    let join_at = t_bal + 10.0;
    sim.run_until(join_at);
    // Work can only come if some host has a job to spare (two or more).
    let work_expected = sim.job_counts().iter().any(|&c| c >= 2);
    let newh = sim.add_host(host_spec(a), join_at);
    let mut new_host_work = None;
    let mut new_host_level = None;
    let mut t = join_at;
    let stop = join_at + 60.0;
    while t < stop && work_expected && (new_host_work.is_none() || new_host_level.is_none()) {
        t += 0.01;
        sim.run_until(t);
        if new_host_work.is_none() {
            if let Some(at) = sim.first_arrival(newh) {
                new_host_work = Some(at - join_at);
            }
        }
        if new_host_level.is_none() {
            let c = sim.job_counts();
            let avg = c.iter().sum::<usize>() as f64 / c.len() as f64;
            if (c[newh] as f64 - avg).abs() <= 1.0 {
                new_host_level = Some(t - join_at);
            }
        }
    }
    let st = sim.stats();
    Row {
        hosts,
        idle_msgs,
        busy_msgs,
        busy_bytes,
        max_recv,
        balanced,
        bound,
        new_host_work,
        new_host_level,
        work_expected,
        moves: st.moves,
        wasted: st.wasted_moves,
        ping_pongs: st.ping_pongs,
        refusals: st.refusals,
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "never".into())
}

fn main() -> ExitCode {
    let a = match args("scale", USAGE, parse) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let d = SimConfig::default();
    say!(
        "# burst of {} jobs/host ({} s CPU, {} MiB) on {} hosts ({} GiB each), 15 s after boot; gossip every {} ms, window {} entries, vector {}; seed {}",
        a.jobs_per_host,
        a.duration,
        a.memory_mib,
        a.burst_hosts,
        a.host_memory_gib,
        d.balancer.gossip.period * 1e3,
        d.balancer.gossip.window,
        d.balancer.gossip.vector_size,
        a.seed
    );
    say!("# msgs/host/s: messages sent per host per second, idle (before the burst) and while balancing; max recv/s: busiest receiver while balancing");
    say!("# balanced: seconds until every host is within one job of the average (bound: residency plus the time the burst hosts' links need)");
    say!("# new host: seconds from a new idle host joining until its first job arrives / until it is within one job of the average (n/a: no host has a job to spare)");
    say!("# wasted: moves of a job that had moved less than the cool-down ({} s) before; ping-pong: moves back to the host a job left within it", d.wasted_window);
    say!(
        "{:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>7} {:>7} {:>9} {:>7}",
        "hosts",
        "idle m/s",
        "busy m/s",
        "busy B/s",
        "max rx/s",
        "balanced",
        "bound",
        "new:work",
        "new:level",
        "moves",
        "wasted",
        "ping-pong",
        "refused"
    );
    let mut failed = false;
    for &h in &a.hosts {
        let r = run(&a, h);
        failed |= r.balanced.is_none() || (r.work_expected && r.new_host_work.is_none());
        let na = |v: Option<f64>| if r.work_expected { opt(v) } else { "n/a".into() };
        say!(
            "{:>6} {:>9.2} {:>9.2} {:>9.0} {:>9.1} {:>9} {:>7.2} {:>9} {:>9} {:>7} {:>7} {:>9} {:>7}",
            r.hosts,
            r.idle_msgs,
            r.busy_msgs,
            r.busy_bytes,
            r.max_recv,
            opt(r.balanced),
            r.bound,
            na(r.new_host_work),
            na(r.new_host_level),
            r.moves,
            r.wasted,
            r.ping_pongs,
            r.refusals
        );
    }
    if failed {
        eprintln!("scale: some run did not balance or the new host got no work within the horizon");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
