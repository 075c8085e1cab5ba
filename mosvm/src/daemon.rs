//! `mosvm host` (the daemon), and the commands that ask it: `hosts`, `ps`,
//! `kill`, `wait`, `logs`.

use std::path::PathBuf;

use clap::Args;
use mosvm_host::api::{HostView, JobState, JobView};
use mosvm_host::{BlockingClient, Config, LogFormat, Settings};

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
    /// state_dir, join, log_format); flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// human or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
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
    /// Include jobs that have ended.
    #[arg(long)]
    pub all: bool,
    /// Print the jobs as a JSON array.
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

/// Bytes as a short size: 512M, 1.5G.
fn size(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)];
    for (u, n) in UNITS {
        if b >= n {
            let v = b as f64 / n as f64;
            return if v >= 10.0 || b & (n - 1) == 0 { format!("{v:.0}{u}") } else { format!("{v:.1}{u}") };
        }
    }
    format!("{b}B")
}

/// Rows as columns, each as wide as its widest cell.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(i, s)| format!("{s:<w$}", w = widths[i])).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
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
    let mut rows = vec![["NAME", "ADDRESS", "STATE", "JOBS", "FREE MEM"].map(String::from).to_vec()];
    for h in hosts {
        let name = if h.local { format!("{} *", h.name) } else { h.name.clone() };
        let mem = match (h.mem_available, h.mem_total) {
            (Some(a), Some(t)) => format!("{} of {}", size(a), size(t)),
            _ => "-".into(),
        };
        rows.push(vec![name, h.addr.clone(), h.state.as_str().into(), h.jobs.to_string(), mem]);
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

/// How long ago, shortly: 42s, 5m, 3h, 2d.
fn age(ms_then: u64, ms_now: u64) -> String {
    let s = ms_now.saturating_sub(ms_then) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn job_state(j: &JobView) -> String {
    match (j.state, &j.moving_to, j.exit_status) {
        (JobState::Moving, Some(to), _) => format!("moving to {to}"),
        (JobState::Exited, _, Some(st)) => format!("exited ({st})"),
        (s, _, _) => s.as_str().into(),
    }
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
            j.host.clone(),
            job_state(j),
            age(j.started_ms, now_ms),
            cpu,
            size(j.mem_bytes),
            j.moves.to_string(),
        ]);
    }
    table(&rows)
}

pub fn ps(args: PsArgs) -> i32 {
    let c = match client(args.sock) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.jobs(args.all) {
        Ok(j) if args.json => print_json(&j),
        Ok(j) => {
            print!("{}", ps_table(&j, mosvm_host::server::now_ms()));
            0
        }
        Err(e) => fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages() {
        assert_eq!(size(256 << 20), "256M");
        assert_eq!(size(3 << 29), "1.5G");
        assert_eq!(size(512), "512B");
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

    #[test]
    fn table_aligns() {
        let t = table(&[vec!["A".into(), "BB".into()], vec!["CCC".into(), "D".into()]]);
        assert_eq!(t, "A    BB\nCCC  D\n");
    }
}
