//! `mosvm cordon`, `uncordon` and `drain`: an operator's hand on a host,
//! from any host of the cluster (the local daemon passes the request on).
//!
//! A drain is the host's own work: `drain` asks for it, then watches the
//! host's report until no body runs there, drawing a bar per move in
//! flight and a line per job that left or waits. Stopping the watch
//! (Ctrl-C, or the timeout) does not stop the drain.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{MultiProgress, ProgressDrawTarget};
use mosvm_host::api::{DrainReport, HostMode};
use mosvm_host::{BlockingClient, ClientError};

use crate::progress::{self, MoveBar};

/// Exit status of a drain that did not finish: timed out, or ended by an
/// `uncordon`.
pub const EXIT_NOT_DRAINED: i32 = 3;
/// Exit status after Ctrl-C (the drain goes on).
pub const EXIT_INTERRUPTED: i32 = 130;

/// How often a drain's report is read.
const POLL: Duration = Duration::from_millis(250);

#[derive(Args, Debug)]
pub struct CordonArgs {
    /// The host: its name or peer address (any member of the cluster).
    pub host: String,
    /// Print the host's report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// The daemon's API socket (default: $MOSVM_SOCK, else /run/mosvm/mosvm.sock).
    #[arg(long, value_name = "PATH")]
    pub sock: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DrainArgs {
    /// The host: its name or peer address (any member of the cluster).
    pub host: String,
    /// Stop watching after this long (like 90s, 5m, 1h30m; a plain number
    /// is seconds) and exit 3 listing what stayed and why. The drain goes on.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Also wait until the jobs whose home is HOST have ended.
    #[arg(long)]
    pub wait_home: bool,
    /// Only show where the drain stands; change nothing.
    #[arg(long)]
    pub status: bool,
    /// Print the final report as one JSON object (no bars or lines).
    #[arg(long)]
    pub json: bool,
    /// The daemon's API socket (default: $MOSVM_SOCK, else /run/mosvm/mosvm.sock).
    #[arg(long, value_name = "PATH")]
    pub sock: Option<PathBuf>,
}

/// A duration: a number with a unit (ms, s, m, h, d), several in a row
/// (1h30m), or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return (secs.is_finite() && secs > 0.0 && secs < 1e9)
            .then(|| Duration::from_secs_f64(secs))
            .ok_or_else(|| format!("{s:?} is not a positive duration"));
    }
    let mut total = 0.0;
    let mut rest = t;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(n);
        let u = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, after) = tail.split_at(u);
        let v: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (examples: 90s, 5m, 1h30m)"))?;
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)")),
        };
        total += v * scale;
        rest = after;
    }
    if !(total.is_finite() && total > 0.0 && total < 1e9) {
        return Err(format!("{s:?} is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(total))
}

fn client(sock: &Option<PathBuf>) -> Result<BlockingClient, i32> {
    BlockingClient::new(mosvm_host::socket_path(sock.as_deref())).map_err(|e| {
        eprintln!("mosvm: {e}");
        1
    })
}

fn json_line<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn cordon(args: CordonArgs, on: bool) -> i32 {
    let c = match client(&args.sock) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mode = if on { HostMode::Cordoned } else { HostMode::Normal };
    match c.set_mode(&args.host, mode) {
        Ok(r) if args.json => {
            json_line(&r);
            0
        }
        Ok(r) if on => {
            println!(
                "{} cordoned: it takes no new jobs; {} there (`mosvm drain {}` moves them away)",
                r.host,
                plural(r.bodies.len(), "body runs", "bodies run"),
                r.host
            );
            0
        }
        Ok(r) => {
            println!("{} open: it takes jobs again", r.host);
            0
        }
        Err(e) => {
            eprintln!("mosvm: {} {}: {e}", if on { "cordon" } else { "uncordon" }, args.host);
            1
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C ends the watch, not the drain.
fn catch_interrupt() {
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_interrupt as *const () as libc::sighandler_t) };
}

/// Lines and bars, on a terminal or not.
struct Screen {
    multi: Option<MultiProgress>,
    bars: HashMap<String, MoveBar>,
}

impl Screen {
    fn new(quiet: bool) -> Screen {
        let multi =
            (!quiet && progress::terminal()).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Screen { multi, bars: HashMap::new() }
    }

    /// A line on stdout, above the bars.
    fn say(&self, line: &str) {
        match &self.multi {
            Some(m) => m.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    fn clear(&mut self) {
        for (_, b) in self.bars.drain() {
            b.finish();
        }
    }
}

/// What the watch has told so far.
#[derive(Default)]
struct Told {
    moved: usize,
    waiting: HashMap<String, String>,
    note: String,
    homed: bool,
}

fn report_lines(r: &DrainReport) -> Vec<String> {
    let mut out =
        vec![format!("{}: {}{}", r.host, r.mode.as_str(), if r.drained { ", no body runs there" } else { "" })];
    for b in &r.bodies {
        let what = match (&b.moving, &b.waiting) {
            (Some(p), _) => format!("moving to {}: {}", b.moving_to.as_deref().unwrap_or("?"), progress::describe(p)),
            (None, Some(w)) => format!("waits: {w}"),
            (None, None) => "waits for the balancer".to_string(),
        };
        let pin = if b.stay { " (pinned)" } else { "" };
        out.push(format!("  {}{pin} {:.0} MiB: {what}", b.job, b.mem_bytes as f64 / (1 << 20) as f64));
    }
    if !r.bodies.is_empty() && !r.note.is_empty() {
        out.push(format!("  balancer: {}", r.note));
    }
    for m in &r.moved {
        out.push(format!("  {} went to {} ({:.0} ms, {:.2} ms down)", m.job, m.to, m.total_ms, m.downtime_ms));
    }
    if !r.homed.is_empty() {
        out.push(format!("  {}", homed_words(r)));
        for h in &r.homed {
            out.push(format!(
                "    {} ({}) runs at {}",
                h.job,
                h.program.rsplit('/').next().unwrap_or(&h.program),
                h.host
            ));
        }
    }
    out
}

fn homed_words(r: &DrainReport) -> String {
    let n = r.homed.len();
    format!(
        "{} homed here: {} them until {} (`--wait-home` waits for that)",
        plural(n, "job is", "jobs are"),
        if n == 1 { "its deputy serves" } else { "their deputies serve" },
        if n == 1 { "it ends" } else { "they end" }
    )
}

pub fn drain(args: DrainArgs) -> i32 {
    let c = match client(&args.sock) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if args.status {
        return match c.drain_report(&args.host) {
            Ok(r) if args.json => {
                json_line(&r);
                0
            }
            Ok(r) => {
                report_lines(&r).iter().for_each(|l| println!("{l}"));
                0
            }
            Err(e) => {
                eprintln!("mosvm: drain {}: {e}", args.host);
                1
            }
        };
    }
    let first = match c.set_mode(&args.host, HostMode::Draining) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mosvm: drain {}: {e}", args.host);
            return 1;
        }
    };
    catch_interrupt();
    let mut screen = Screen::new(args.json);
    let quiet = args.json;
    let host = first.host.clone();
    if !quiet {
        screen.say(&format!("draining {host}: cordoned; {} to move", plural(first.bodies.len(), "body", "bodies")));
    }
    let start = Instant::now();
    let mut told = Told { moved: first.moved.len(), ..Told::default() };
    let mut last = first;
    let mut failing: Option<(Instant, String)> = None;
    loop {
        let done = last.drained && (!args.wait_home || last.homed.is_empty());
        if done {
            screen.clear();
            if quiet {
                json_line(&last);
            } else {
                if !last.homed.is_empty() {
                    screen.say(&homed_words(&last));
                }
                screen.say(&format!("{host} drained"));
            }
            return 0;
        }
        if last.mode != HostMode::Draining {
            screen.clear();
            if quiet {
                json_line(&last);
            }
            eprintln!(
                "mosvm: the drain of {host} was ended (it is {} now) with bodies still there:",
                last.mode.as_str()
            );
            report_lines(&last).iter().skip(1).for_each(|l| eprintln!("{l}"));
            return EXIT_NOT_DRAINED;
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            screen.clear();
            eprintln!(
                "mosvm: stopped watching; the drain of {host} goes on (`mosvm drain {host} --status` shows it, `mosvm uncordon {host}` ends it)"
            );
            return EXIT_INTERRUPTED;
        }
        if args.timeout.is_some_and(|t| start.elapsed() >= t) {
            screen.clear();
            if quiet {
                json_line(&last);
            }
            let left = if last.drained { "the jobs homed there still run" } else { "not every body has left" };
            eprintln!(
                "mosvm: {host} not drained after {:.0} s: {left} (the drain goes on; `mosvm uncordon {host}` ends it):",
                start.elapsed().as_secs_f64()
            );
            report_lines(&last).iter().skip(1).for_each(|l| eprintln!("{l}"));
            return EXIT_NOT_DRAINED;
        }
        std::thread::sleep(POLL);
        match c.drain_report(&host) {
            Ok(r) => {
                if let Some((_, e)) = failing.take() {
                    if !quiet {
                        screen.say(&format!("{host} answers again (after: {e})"));
                    }
                }
                if !quiet {
                    show(&mut screen, &mut told, &r);
                }
                last = r;
            }
            Err(e) => {
                // A host busy moving may answer late: keep watching, say so once.
                let msg = e.to_string();
                if failing.is_none() && !quiet {
                    screen.say(&format!("mosvm: no report from {host} yet: {msg}"));
                }
                if matches!(e, ClientError::Connect { .. }) {
                    eprintln!("mosvm: {e}");
                    return 1;
                }
                failing.get_or_insert((Instant::now(), msg));
            }
        }
    }
}

/// Brings the screen up to date with a report.
fn show(screen: &mut Screen, told: &mut Told, r: &DrainReport) {
    // Jobs that left since the last report.
    for m in r.moved.iter().skip(told.moved) {
        if let Some(b) = screen.bars.remove(&m.job) {
            b.finish();
        }
        screen.say(&format!("{} -> {}: moved in {:.0} ms, {:.2} ms down", m.job, m.to, m.total_ms, m.downtime_ms));
        told.waiting.remove(&m.job);
    }
    told.moved = r.moved.len();
    let here: HashSet<&str> = r.bodies.iter().map(|b| b.job.as_str()).collect();
    // Bars of moves that ended without going (the job waits again).
    let ended: Vec<String> = screen
        .bars
        .keys()
        .filter(|j| !r.bodies.iter().any(|b| &b.job == *j && b.moving.is_some()) || !here.contains(j.as_str()))
        .cloned()
        .collect();
    for j in ended {
        if let Some(b) = screen.bars.remove(&j) {
            b.finish();
        }
    }
    for b in &r.bodies {
        match &b.moving {
            Some(p) => {
                let draw = screen.multi.is_some();
                let label = format!("{} -> {}", b.job, b.moving_to.as_deref().unwrap_or("?"));
                let bar = screen
                    .bars
                    .entry(b.job.clone())
                    .or_insert_with(|| MoveBar::new(screen.multi.as_ref(), &label, draw));
                bar.update(p);
            }
            None => {
                if let Some(w) = &b.waiting {
                    if told.waiting.get(&b.job) != Some(w) {
                        told.waiting.insert(b.job.clone(), w.clone());
                        screen.say(&format!("{} waits: {w}", b.job));
                    }
                }
            }
        }
    }
    if !r.bodies.is_empty() && r.bodies.iter().all(|b| b.moving.is_none()) && r.note != told.note {
        told.note = r.note.clone();
        if !r.note.is_empty() {
            screen.say(&format!("balancer at {}: {}", r.host, r.note));
        }
    }
    if r.drained && !r.homed.is_empty() && !told.homed {
        told.homed = true;
        screen.say(&format!("no body runs at {} any more; {}", r.host, homed_words(r)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "0", "-3", "5x", "m", "1e99", "soon"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn homed_sentence() {
        let mut r = DrainReport {
            host: "b".into(),
            mode: HostMode::Draining,
            started_ms: Some(1),
            drained: true,
            bodies: vec![],
            moved: vec![],
            homed: vec![],
            note: String::new(),
        };
        let h = |j: &str| mosvm_host::api::HomedJob { job: j.into(), program: "/bin/x".into(), host: "c".into() };
        r.homed = vec![h("b-1"), h("b-2"), h("b-3")];
        assert_eq!(
            homed_words(&r),
            "3 jobs are homed here: their deputies serve them until they end (`--wait-home` waits for that)"
        );
        let lines = report_lines(&r);
        assert_eq!(lines[0], "b: draining, no body runs there");
        assert!(lines.iter().any(|l| l == "    b-2 (x) runs at c"), "{lines:?}");
    }
}
