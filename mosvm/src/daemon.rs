//! `mosvm host` (the daemon), and the commands that ask it: `hosts`, `ps`,
//! `kill`, `wait`, `logs`, `events`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use mosvm_host::api::{Event, HostView, JobDetail, JobState, JobView, MoveView, EVENTS_DEFAULT, EVENTS_MAX};
use mosvm_host::config::BalancerSettings;
use mosvm_host::{BlockingClient, Config, LogFormat, Settings};

use crate::text::{ago, host_state, route, size, table, utc_ms};

#[derive(Args, Debug)]
pub struct HostArgs {
    /// This host's name in the cluster (default: the hostname).
    #[arg(long)]
    pub name: Option<String>,
    /// The peer port, TCP and UDP (default 0.0.0.0:7077).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// The address other hosts reach this one at (default: the listen
    /// address, or the one towards the first --join host).
    #[arg(long, value_name = "ADDR:PORT")]
    pub advertise: Option<String>,
    /// The API socket (default /run/mosvm/mosvm.sock).
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Where the job records live (default /var/lib/mosvm).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Hosts to join through (any member of the cluster will do).
    #[arg(long, value_name = "ADDR:PORT,...", value_delimiter = ',')]
    pub join: Vec<String>,
    /// A TOML file with the same keys (name, listen, advertise, api_sock,
    /// state_dir, join, log_format, cpus, speed, cpu_limit, metrics) and a
    /// [balancer] table of tunables (enabled, gossip_period, residency,
    /// settle, hysteresis, cool_down, cost_weight, max_in_flight,
    /// drain_in_flight, tick); flags win. contrib/mosvm.toml has them all.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// human or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// CPUs this host offers its jobs, for the balancer (default:
    /// measured: the cgroup's CPU quota, else the cores it may run on).
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Relative speed of one core (default 1.0).
    #[arg(long, value_name = "X")]
    pub speed: Option<f64>,
    /// Run the daemon and everything it starts, and the jobs registering
    /// with it, in a cgroup of their own with a quota of N CPUs (root;
    /// emulates a smaller host; the cgroup is removed at exit).
    #[arg(long, value_name = "N")]
    pub cpu_limit: Option<f64>,
    /// Do not balance: jobs move only when an operator moves them.
    #[arg(long)]
    pub no_balance: bool,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (port 0 picks
    /// one; the ready line says which).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    /// This host's identity: the directory `mosvm cluster add-host NAME`
    /// wrote. Every connection between hosts is then mutual TLS with the
    /// cluster's CA, and gossip is sealed with the cluster's key.
    #[arg(long, value_name = "DIR", conflicts_with = "insecure")]
    pub tls: Option<PathBuf>,
    /// Run without a cluster identity: plain TCP and UDP, and anyone who
    /// can reach the peer port can run code on this host.
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Args, Debug)]
pub struct HostsArgs {
    /// Print the hosts as a JSON array.
    #[arg(long)]
    pub json: bool,
    /// The daemon's API socket (default: $MOSVM_SOCK, else /run/mosvm/mosvm.sock).
    #[arg(long, value_name = "PATH")]
    pub sock: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show this job (its id at this host, its home) in detail: its record
    /// and every move, with who asked and why.
    #[arg(conflicts_with = "all")]
    pub job: Option<u64>,
    /// Include jobs that have ended.
    #[arg(long)]
    pub all: bool,
    /// Print the jobs as a JSON array (with JOB: the record and its moves
    /// as one JSON object).
    #[arg(long)]
    pub json: bool,
    /// The daemon's API socket (default: $MOSVM_SOCK, else /run/mosvm/mosvm.sock).
    #[arg(long, value_name = "PATH")]
    pub sock: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// The signal, by name (TERM, SIGTERM, int) or number.
    #[arg(short = 's', long, default_value = "TERM", value_parser = parse_signal)]
    pub signal: i32,
    /// The job's id at this host (its home).
    pub job: u64,
    /// The daemon's API socket (default: $MOSVM_SOCK, else /run/mosvm/mosvm.sock).
    #[arg(long, value_name = "PATH")]
    pub sock: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// The job's id at this host (its home).
    pub job: u64,
    /// The daemon's API socket (default: $MOSVM_SOCK, else /run/mosvm/mosvm.sock).
    #[arg(long, value_name = "PATH")]
    pub sock: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Keep printing what the job writes until it ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The job's id at this host (its home); it must have been started
    /// with `run -d`.
    pub job: u64,
    /// The daemon's API socket (default: $MOSVM_SOCK, else /run/mosvm/mosvm.sock).
    #[arg(long, value_name = "PATH")]
    pub sock: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Then keep printing events as they are recorded, until interrupted.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// One JSON object per event, one per line.
    #[arg(long)]
    pub json: bool,
    /// Start with the newest N events recorded.
    #[arg(short = 'n', long = "last", value_name = "N", default_value_t = 20,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=EVENTS_MAX as u64))]
    pub n: usize,
    /// The daemon's API socket (default: $MOSVM_SOCK, else /run/mosvm/mosvm.sock).
    #[arg(long, visible_alias = "api-sock", value_name = "PATH")]
    pub sock: Option<PathBuf>,
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// A signal by number, or by name with or without SIG, any case.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) { Ok(n) } else { Err(format!("{n} is not a signal number (1 to 64)")) };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).ok_or_else(|| format!("unknown signal {s:?}"))
}

pub fn kill(args: KillArgs) -> i32 {
    let c = match client(args.sock) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.signal(args.job, args.signal) {
        Ok(_) => 0,
        Err(e) => fail(e),
    }
}

/// The status of a lost job, as `mosvm run` ends with it.
const EXIT_LOST: i32 = 255;

pub fn wait(args: WaitArgs) -> i32 {
    let c = match client(args.sock) {
        Ok(c) => c,
        Err(code) => return code,
    };
    loop {
        let j = match c.wait(args.job, mosvm_host::client::WAIT_LIMIT) {
            Ok(j) => j,
            Err(e) => return fail(e),
        };
        match j.state {
            JobState::Exited => return j.exit_status.unwrap_or(0),
            JobState::Lost => {
                eprintln!("mosvm: job {} lost: {}", j.id, j.lost_reason.as_deref().unwrap_or("no reason recorded"));
                return EXIT_LOST;
            }
            JobState::Running | JobState::Moving => {}
        }
    }
}

pub fn logs(args: LogsArgs) -> i32 {
    use std::io::Write;
    let c = match client(args.sock) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (mut out_at, mut err_at) = (0u64, 0u64);
    loop {
        let chunk = match c.logs(args.job, out_at, err_at) {
            Ok(ch) => ch,
            Err(e) => return fail(e),
        };
        let empty = chunk.out.is_empty() && chunk.err.is_empty();
        // A reader that went away (`| head`) ends us quietly.
        if std::io::stdout().write_all(&chunk.out).and_then(|_| std::io::stdout().flush()).is_err()
            || std::io::stderr().write_all(&chunk.err).is_err()
        {
            return 0;
        }
        out_at += chunk.out.len() as u64;
        err_at += chunk.err.len() as u64;
        if empty && (!args.follow || chunk.ended) {
            return 0;
        }
        if empty {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

pub fn host(args: HostArgs) -> i32 {
    let flags = Settings {
        name: args.name,
        listen: args.listen,
        advertise: args.advertise,
        api_sock: args.api_sock,
        state_dir: args.state_dir,
        join: (!args.join.is_empty()).then_some(args.join),
        log_format: args.log_format,
        cpus: args.cpus,
        speed: args.speed,
        cpu_limit: args.cpu_limit,
        metrics: args.metrics,
        tls: args.tls,
        insecure: args.insecure.then_some(true),
        balancer: BalancerSettings { enabled: args.no_balance.then_some(false), ..BalancerSettings::default() },
    };
    let config = match Config::resolve(flags, args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mosvm host: {e}");
            return 2;
        }
    };
    match mosvm_host::run(config) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mosvm host: {e}");
            1
        }
    }
}

fn client(sock: Option<PathBuf>) -> Result<BlockingClient, i32> {
    BlockingClient::new(mosvm_host::socket_path(sock.as_deref())).map_err(|e| {
        eprintln!("mosvm: {e}");
        1
    })
}

fn fail(e: mosvm_host::ClientError) -> i32 {
    eprintln!("mosvm: {e}");
    1
}

fn print_json<T: serde::Serialize>(v: &T) -> i32 {
    match serde_json::to_string(v) {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => {
            eprintln!("mosvm: {e}");
            1
        }
    }
}

fn hosts_table(hosts: &[HostView]) -> String {
    let mut rows = vec![["NAME", "ADDRESS", "STATE", "JOBS", "LOAD", "CPUS", "FREE MEM"].map(String::from).to_vec()];
    for h in hosts {
        let name = if h.local { format!("{} *", h.name) } else { h.name.clone() };
        let mem = match (h.mem_available, h.mem_total) {
            (Some(a), Some(t)) => format!("{} of {}", size(a), size(t)),
            _ => "-".into(),
        };
        let (load, cpus) = match &h.load {
            Some(l) => (format!("{:.2}", l.load), format!("{:.2}", l.cpus)),
            None => ("-".into(), "-".into()),
        };
        let state = host_state(h);
        rows.push(vec![name, h.addr.clone(), state, h.jobs.to_string(), load, cpus, mem]);
    }
    table(&rows)
}

pub fn hosts(args: HostsArgs) -> i32 {
    let c = match client(args.sock) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.hosts() {
        Ok(h) if args.json => print_json(&h),
        Ok(h) => {
            print!("{}", hosts_table(&h));
            0
        }
        Err(e) => fail(e),
    }
}

/// How long ago: "42s ago".
fn age(ms_then: u64, ms_now: u64) -> String {
    format!("{} ago", ago(ms_then, ms_now))
}

fn job_state(j: &JobView) -> String {
    match (j.state, &j.moving_to, j.exit_status) {
        (JobState::Moving, Some(to), _) => format!("moving to {to}"),
        (JobState::Exited, _, Some(st)) => format!("exited ({st})"),
        (s, _, _) => s.as_str().into(),
    }
}

/// A duration in milliseconds, shortly: 0.42 ms, 12.3 ms, 1.25 s.
fn millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// Arguments as a shell would take them back.
fn shell_words(argv: &[String]) -> String {
    let word = |a: &String| {
        let plain = !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
        if plain {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    argv.iter().map(word).collect::<Vec<_>>().join(" ")
}

fn ps_table(jobs: &[JobView], now_ms: u64) -> String {
    let mut rows =
        vec![["ID", "PROGRAM", "HOME", "WHERE", "STATE", "STARTED", "CPU", "MEM", "MOVES"].map(String::from).to_vec()];
    for j in jobs {
        let program = j.program.rsplit('/').next().unwrap_or(&j.program).to_string();
        let cpu = j.cpu_ms.map(|ms| format!("{:.2}s", ms as f64 / 1000.0)).unwrap_or_else(|| "-".into());
        rows.push(vec![
            j.id.to_string(),
            program,
            j.home.clone(),
            // Pinned: it stays where it runs.
            if j.stay { format!("{} (stay)", j.host) } else { j.host.clone() },
            job_state(j),
            age(j.started_ms, now_ms),
            cpu,
            size(j.mem_bytes),
            j.moves.to_string(),
        ]);
    }
    table(&rows)
}

fn moves_table(history: &[MoveView]) -> String {
    let mut rows = vec![["WHEN (UTC)", "FROM", "TO", "WHY", "TOTAL", "DOWNTIME", "REASON"].map(String::from).to_vec()];
    for m in history {
        rows.push(vec![
            utc_ms(m.at_ms),
            m.from.clone(),
            m.to.clone(),
            m.why.as_str().into(),
            millis(m.total_ms),
            millis(m.downtime_ms),
            m.reason.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table(&rows)
}

/// `ps JOB`: the record, then its moves, oldest first.
fn job_detail(d: &JobDetail, now_ms: u64) -> String {
    let j = &d.job;
    let what = match &j.argv {
        Some(argv) if !argv.is_empty() => shell_words(argv),
        _ => j.program.clone(),
    };
    let mut rows: Vec<Vec<String>> = vec![
        vec!["program".into(), what],
        vec!["home".into(), j.home.clone()],
        vec!["runs at".into(), j.host.clone()],
        vec!["state".into(), job_state(j)],
    ];
    let mut row = |k: &str, v: String| rows.push(vec![k.into(), v]);
    if let Some(why) = &j.lost_reason {
        row("lost", why.clone());
    }
    if j.stay {
        row("pinned", "yes (run --stay): the balancer never moves it".into());
    }
    row("started", format!("{} UTC ({})", utc_ms(j.started_ms), age(j.started_ms, now_ms)));
    if let Some(end) = j.ended_ms {
        row("ended", format!("{} UTC ({})", utc_ms(end), age(end, now_ms)));
    }
    if let Some(ms) = j.cpu_ms {
        row("cpu", format!("{:.2}s", ms as f64 / 1000.0));
    }
    row("memory", size(j.mem_bytes));
    if let Some(cwd) = &j.cwd {
        row("cwd", cwd.clone());
    }
    if j.detached {
        row("detached", format!("yes: mosvm logs {}", j.id));
    }
    row("moves", j.moves.to_string());
    let mut out = format!("job {}\n", j.id);
    for line in table(&rows).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    if !d.history.is_empty() {
        out.push('\n');
        out.push_str(&moves_table(&d.history));
    }
    out
}

pub fn ps(args: PsArgs) -> i32 {
    let c = match client(args.sock) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(id) = args.job {
        return match c.job(id) {
            Ok(d) if args.json => print_json(&d),
            Ok(d) => {
                print!("{}", job_detail(&d, mosvm_host::server::now_ms()));
                0
            }
            Err(e) => fail(e),
        };
    }
    match c.jobs(args.all) {
        Ok(j) if args.json => print_json(&j),
        Ok(j) => {
            print!("{}", ps_table(&j, mosvm_host::server::now_ms()));
            0
        }
        Err(e) => fail(e),
    }
}

/// The human form of events: columns that widen (never narrow) as
/// longer hosts, jobs and routes come by, so a followed stream stays
/// readable.
struct EventColumns {
    host: usize,
    job: usize,
    route: usize,
}

/// The longest event kind ("move_failed", "host_joined").
const KIND_WIDTH: usize = 11;

impl EventColumns {
    fn new() -> EventColumns {
        EventColumns { host: "HOST".len(), job: "JOB".len(), route: "MOVE".len() }
    }

    fn fit(&mut self, e: &Event) {
        self.host = self.host.max(e.host.chars().count());
        self.job = self.job.max(e.job.as_deref().map_or(1, |j| j.chars().count()));
        self.route = self.route.max(route(e).chars().count());
    }

    fn header(&self) -> String {
        self.row("TIME (UTC)", "HOST", "EVENT", "JOB", "MOVE", "REASON")
    }

    fn row(&self, at: &str, host: &str, kind: &str, job: &str, route: &str, reason: &str) -> String {
        let (hw, jw, rw) = (self.host, self.job, self.route);
        let line = format!("{at:<23}  {host:<hw$}  {kind:<KIND_WIDTH$}  {job:<jw$}  {route:<rw$}  {reason}");
        line.trim_end().to_string()
    }

    fn line(&mut self, e: &Event) -> String {
        self.fit(e);
        self.row(&utc_ms(e.at_ms), &e.host, e.kind.as_str(), e.job.as_deref().unwrap_or("-"), &route(e), &e.reason)
    }
}

/// Prints events; false once stdout has gone (`| head`).
fn print_events(out: &mut impl Write, events: &[Event], json: bool, cols: &mut EventColumns) -> bool {
    for e in events {
        let line = if json { serde_json::to_string(e).unwrap_or_default() } else { cols.line(e) };
        if writeln!(out, "{line}").is_err() {
            return false;
        }
    }
    out.flush().is_ok()
}

pub fn events(args: EventsArgs) -> i32 {
    let c = match client(args.sock) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // The newest one even with -n 0: following starts after it.
    let newest = match c.last_events(args.n.max(1)) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let mut after = newest.last().map_or(0, |e| e.seq);
    let shown = if args.n == 0 { &[][..] } else { &newest[..] };
    let mut cols = EventColumns::new();
    shown.iter().for_each(|e| cols.fit(e));
    let mut out = std::io::stdout().lock();
    if !args.json && (args.follow || !shown.is_empty()) && writeln!(out, "{}", cols.header()).is_err() {
        return 0;
    }
    if !print_events(&mut out, shown, args.json, &mut cols) || !args.follow {
        return 0;
    }
    loop {
        match c.events(after, EVENTS_DEFAULT, mosvm_host::client::WAIT_LIMIT) {
            Ok(v) => {
                after = v.last().map_or(after, |e| e.seq);
                if !print_events(&mut out, &v, args.json, &mut cols) {
                    return 0;
                }
            }
            Err(e) => {
                eprintln!("mosvm: events: the daemon stopped answering: {e}");
                return 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosvm_host::api::{EventKind, MoveWhy};

    #[test]
    fn words_and_durations() {
        assert_eq!(shell_words(&["cat".into(), "a b".into(), "it's".into(), "".into()]), r"cat 'a b' 'it'\''s' ''");
        assert_eq!(millis(0.421), "0.42 ms");
        assert_eq!(millis(123.44), "123.4 ms");
        assert_eq!(millis(1250.0), "1.25 s");
    }

    fn event(seq: u64, host: &str, kind: EventKind, job: Option<&str>, from: Option<&str>, to: Option<&str>) -> Event {
        Event {
            seq,
            at_ms: 1_796_168_412_345,
            host: host.into(),
            kind,
            job: job.map(Into::into),
            from: from.map(Into::into),
            to: to.map(Into::into),
            reason: "because".into(),
        }
    }

    #[test]
    fn event_lines_align() {
        let mut cols = EventColumns::new();
        let a = event(1, "h1", EventKind::Moved, Some("h1-3"), Some("h1"), Some("h2"));
        let b = event(2, "h1", EventKind::HostJoined, None, None, None);
        cols.fit(&a);
        cols.fit(&b);
        let lines = [cols.header(), cols.line(&a), cols.line(&b)];
        assert_eq!(lines[0], "TIME (UTC)               HOST  EVENT        JOB   MOVE      REASON");
        assert_eq!(lines[1], "2026-12-01 23:40:12.345  h1    moved        h1-3  h1 -> h2  because");
        assert_eq!(lines[2], "2026-12-01 23:40:12.345  h1    host_joined  -     -         because");
        // A longer host widens the columns from then on.
        let c = event(3, "far-away", EventKind::Refused, Some("h1-4"), None, Some("far-away"));
        assert_eq!(cols.line(&c), "2026-12-01 23:40:12.345  far-away  refused      h1-4  -> far-away  because");
    }

    #[test]
    fn detail_shows_moves_and_reasons() {
        let job = JobView {
            id: 3,
            owner_uid: 1000,
            program: "/bin/homework".into(),
            home: "h1".into(),
            host: "h2".into(),
            state: JobState::Running,
            moving_to: None,
            exit_status: None,
            lost_reason: None,
            started_ms: 1_796_168_400_000,
            ended_ms: None,
            mem_bytes: 256 << 20,
            moves: 1,
            cpu_ms: None,
            argv: Some(vec!["homework".into(), "in.txt".into()]),
            cwd: Some("/home/u".into()),
            control_sock: None,
            deputy_addr: None,
            deputy_pid: None,
            detached: false,
            stay: true,
        };
        let history = vec![MoveView {
            from: "h1".into(),
            to: "h2".into(),
            at_ms: 1_796_168_412_345,
            total_ms: 120.0,
            downtime_ms: 1.2,
            why: MoveWhy::Load,
            reason: Some("load 3.0 vs 1.0 at h2, gain 41 s > cost 0.2 s".into()),
        }];
        let d = JobDetail { job: job.clone(), history };
        let text = job_detail(&d, 1_796_168_442_000);
        assert!(text.starts_with("job 3\n  program  homework in.txt\n  home     h1\n  runs at  h2\n"), "{text}");
        assert!(text.contains("pinned   yes"), "{text}");
        assert!(text.contains("started  2026-12-01 23:40:00.000 UTC (42s ago)"), "{text}");
        assert!(text.contains("WHEN (UTC)               FROM  TO  WHY   TOTAL     DOWNTIME  REASON\n"), "{text}");
        assert!(
            text.ends_with(
                "2026-12-01 23:40:12.345  h1    h2  load  120.0 ms  1.20 ms   load 3.0 vs 1.0 at h2, gain 41 s > cost 0.2 s\n"
            ),
            "{text}"
        );
        let table = ps_table(&[job], 1_796_168_442_000);
        assert!(table.lines().nth(1).unwrap().contains("h2 (stay)"), "{table}");
    }

    #[test]
    fn ages() {
        assert_eq!(age(0, 5_000), "5s ago");
        assert_eq!(age(0, 7_200_000), "2h ago");
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("sigint"), Ok(libc::SIGINT));
        assert_eq!(parse_signal("9"), Ok(9));
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("65").is_err());
        assert!(parse_signal("NOPE").is_err());
    }
}
