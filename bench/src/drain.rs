//! Draining a host: 8 jobs of 64 MiB (half of them rewriting 32 MiB all
//! the time, half asleep) run pinned at one of three emulated hosts; `mosvm drain`,
//! asked at another host, moves them all away live. Measured: the time to
//! "drained", the sum and the longest of the jobs' downtimes, jobs lost;
//! beside it, in the same run, the time the link needs to carry their
//! memory (loopback TCP, into a reused buffer and into fresh memory) and what a
//! kill-and-restart drain would have cost (the CPU time the jobs had done,
//! all lost).

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mosvm_host::api::{DrainReport, JobState, JobView};
use mosvm_tests::emulated::{Cluster, Host, Options};
use mosvm_tests::{image, mosvm_bin};

const JOBS: usize = 8;
const MIB: u64 = 64;
/// How long each job runs: past the drain, so every one moves running.
const JOB_SECS: &str = "25";

fn at(h: &Host, args: &[&str]) -> Result<String> {
    let out = Command::new(mosvm_bin()).args(args).arg("--sock").arg(&h.sock).output()?;
    if !out.status.success() {
        bail!("mosvm {args:?} at {}: {}", h.name, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn jobs(h: &Host) -> Result<Vec<JobView>> {
    Ok(serde_json::from_str(&at(h, &["ps", "--all", "--json"])?)?)
}

pub fn report(md: &mut String) -> Result<()> {
    // The link, in the same run: loopback TCP into a reused buffer (the
    // ceiling) and into fresh memory (what a receiver does with every page).
    let (rate, fresh_rate) = crate::migration::loopback()?;
    // No CPU budgets: the drain is about memory and the link.
    let toml = std::env::var("MOSVM_BENCH_DRAIN_TOML").unwrap_or_default();
    let c = Cluster::start_with("bench-drain", 3, &Options { toml, ..Options::default() });
    c.wait_all_alive(Duration::from_secs(10));
    let (a, b) = (&c.hosts[0], &c.hosts[1]);
    let mut ids = Vec::new();
    for i in 0..JOBS {
        // Pinned, so the balancer leaves them at B until the drain.
        // Half rewrite 32 MiB all the time, half sleep on their memory.
        let (prog, args) = if i % 2 == 0 {
            ("mem", vec![MIB.to_string(), "32".into(), "--seconds".into(), JOB_SECS.into()])
        } else {
            ("bench/idle", vec![MIB.to_string(), JOB_SECS.into()])
        };
        let out = Command::new(mosvm_bin())
            .args(["run", "-d", "--stay", "--mem", "96M", "--"])
            .arg(image(prog))
            .args(&args)
            .env("MOSVM_SOCK", &b.sock)
            .current_dir("/")
            .output()?;
        if !out.status.success() {
            bail!("run -d: {}", String::from_utf8_lossy(&out.stderr));
        }
        ids.push(String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().context("job id")?);
    }
    // Every job has filled its memory.
    std::thread::sleep(Duration::from_secs(4));
    let before = jobs(b)?;
    let cpu_done_ms: u64 = before.iter().filter(|j| ids.contains(&j.id)).filter_map(|j| j.cpu_ms).sum();

    eprintln!("bench: drain of {JOBS} jobs of {MIB} MiB...");
    let t = Instant::now();
    let out = Command::new(mosvm_bin())
        .args(["drain", &b.name, "--json", "--timeout", "120s", "--sock"])
        .arg(&a.sock)
        .output()?;
    let took = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("drain: {}", String::from_utf8_lossy(&out.stderr));
    }
    let r: DrainReport = serde_json::from_slice(&out.stdout).context("drain --json")?;
    let downs: Vec<f64> = r.moved.iter().map(|m| m.downtime_ms).collect();
    let sum_down: f64 = downs.iter().sum();
    let max_down = downs.iter().copied().fold(0.0, f64::max);
    let bytes = ((JOBS as u64 * MIB) << 20) as f64;
    let (link_s, fresh_s) = (bytes / (rate * 1e6), bytes / (fresh_rate * 1e6));

    // They all finish, none lost.
    let deadline = Instant::now() + Duration::from_secs(120);
    let finished = loop {
        let all = jobs(b)?;
        let mine: Vec<&JobView> = all.iter().filter(|j| ids.contains(&j.id)).collect();
        if mine.iter().all(|j| j.state.ended()) {
            break mine.into_iter().cloned().collect::<Vec<_>>();
        }
        if Instant::now() > deadline {
            bail!("the jobs did not finish after the drain");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let lost = finished.iter().filter(|j| j.state == JobState::Lost).count();
    let failed = finished.iter().filter(|j| j.state == JobState::Exited && j.exit_status != Some(0)).count();
    let _ = at(a, &["uncordon", &b.name]);
    drop(c);

    let date = Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC").output()?;
    writeln!(md, "\n## Draining a host: {JOBS} jobs of {MIB} MiB, half of them rewriting 32 MiB all the time\n")?;
    writeln!(
        md,
        "Machine: {}, {}. `make bench` (`bench --drain-only` for this section alone). Three emulated hosts on loopback, no CPU budgets; the jobs (4 × `mem {MIB} 32 --seconds {JOB_SECS}`, CPU-bound, and 4 × `idle {MIB} {JOB_SECS}`, asleep on their memory; `--mem 96M`, pinned with `--stay` so that only the drain moves them) run 4 s at B, then `mosvm drain B --json` is asked at A.\n",
        crate::machine(),
        String::from_utf8_lossy(&date.stdout).trim()
    )?;
    writeln!(md, "| what | measured | goal | |")?;
    writeln!(md, "|---|---|---|---|")?;
    let v = |ok: bool| if ok { "met" } else { "MISSED" };
    writeln!(
        md,
        "| time to \"drained\" (the command's wall time) | {:.2} s; loopback TCP carries their {} MiB in {:.2} s ({:.0} MB/s into a reused buffer): {:.2}x; into fresh memory, as a receiver must, in {:.2} s ({:.0} MB/s): {:.2}x | ≤ 2x | {} |",
        took,
        JOBS as u64 * MIB,
        link_s,
        rate,
        took / link_s,
        fresh_s,
        fresh_rate,
        took / fresh_s,
        v(took <= 2.0 * link_s)
    )?;
    writeln!(md, "| downtime, sum over the {} moves | {:.1} ms | | |", downs.len(), sum_down)?;
    writeln!(md, "| longest single downtime | {:.2} ms | ≤ 10 ms | {} |", max_down, v(max_down <= 10.0))?;
    writeln!(
        md,
        "| jobs lost / failed | {lost} / {failed} of {JOBS} (every one ran to its end) | 0 | {} |",
        v(lost == 0 && failed == 0 && r.moved.len() == JOBS)
    )?;
    writeln!(
        md,
        "| a kill-and-restart drain instead | {:.1} s of CPU time the jobs had done would be lost (and each restarts from zero) | | |",
        cpu_done_ms as f64 / 1000.0
    )?;
    let mut per: Vec<String> = r
        .moved
        .iter()
        .map(|m| format!("{} -> {}: {:.0} ms, {:.2} ms down", m.job, m.to, m.total_ms, m.downtime_ms))
        .collect();
    per.sort();
    writeln!(md, "\nEach move: {}.", per.join("; "))?;
    Ok(())
}
