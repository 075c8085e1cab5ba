//! Command-line interface.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "mosvm", version, about = "Run jobs in KVM micro-VMs and move them between hosts")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a static x86-64 Linux program in a fresh micro-VM.
    Run(RunArgs),
    /// Wait for a job moved here, then run it like `run` does.
    Receive(ReceiveArgs),
    /// Move a running job to another host, live.
    Migrate(MigrateArgs),
    /// Save a running job to a file; it keeps running.
    Snapshot(SnapshotArgs),
    /// Start a job from a snapshot file.
    Restore(RestoreArgs),
    /// Run this host's daemon: membership, job records, the API socket.
    Host(crate::daemon::HostArgs),
    /// The cluster's identity: a CA (`init`) and host certificates
    /// (`add-host`) for `mosvm host --tls`.
    Cluster(crate::cluster::ClusterArgs),
    /// List the hosts of the cluster as this host's daemon sees them.
    Hosts(crate::daemon::HostsArgs),
    /// List the jobs this host is home to.
    Ps(crate::daemon::PsArgs),
    /// Send a signal to a job, wherever its body runs.
    Kill(crate::daemon::KillArgs),
    /// Wait for a job to end; exit with its status (255 if it was lost).
    Wait(crate::daemon::WaitArgs),
    /// Print what a detached job (`run -d`) wrote to stdout and stderr.
    Logs(crate::daemon::LogsArgs),
    /// Print what this host's daemon decided and saw: moves and their
    /// reasons, refusals, hosts joining and failing.
    Events(crate::daemon::EventsArgs),
    /// Take no new jobs on HOST (any host of the cluster): no arriving
    /// bodies, no new detached jobs; what runs there stays.
    Cordon(crate::ops::CordonArgs),
    /// Open HOST again (ends a cordon or a drain).
    Uncordon(crate::ops::CordonArgs),
    /// Empty HOST for maintenance: cordon it and move every body running
    /// there to other hosts, live; return once none is left.
    Drain(crate::ops::DrainArgs),
    /// A live view of the whole cluster: hosts, jobs, latest moves.
    Top(crate::top::TopArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(crate::packaging::CompletionsArgs),
    /// Write man pages for mosvm and its commands into a directory.
    #[command(hide = true)]
    Man(crate::packaging::ManArgs),
}

#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// Address to accept the job on, HOST:PORT (port 0 picks one and prints it).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: String,
    /// Serve the control socket for the received job here.
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Refuse jobs holding more memory than this (like 512M).
    #[arg(long, value_parser = parse_size)]
    pub mem_limit: Option<u64>,
    /// Give up after the first failed attempt instead of waiting for another.
    #[arg(long)]
    pub once: bool,
    /// Give up (exit 125) if no job has arrived within this many seconds.
    #[arg(long, value_name = "SECS")]
    pub wait: Option<u64>,
    /// Print one JSON line on stdout once listening:
    /// {"event":"listening","addr":"HOST:PORT","pid":N} (for a daemon that
    /// starts a receiver per arriving job).
    #[arg(long)]
    pub announce: bool,
    /// Read the body's TLS credentials from stdin (one JSON object, as
    /// the daemon that starts the receiver writes it) before listening.
    #[arg(long, hide = true, conflicts_with = "tls")]
    pub credentials_stdin: bool,
    /// Take the job only over mutual TLS with the identity in DIR
    /// (`mosvm cluster add-host`), as `mosvm run --tls` sends it.
    #[arg(long, value_name = "DIR")]
    pub tls: Option<PathBuf>,
    /// Print every system call the job makes on stderr.
    #[arg(long)]
    pub trace: bool,
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The job's id at this host's daemon (its home): the daemons move it.
    #[arg(required_unless_present = "api_sock", conflicts_with = "api_sock")]
    pub job: Option<u64>,
    /// Or the job's control socket (`mosvm run --api-sock`), to move it
    /// to a `mosvm receive` directly.
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// With JOB: a host's name or address, or `home`. With --api-sock:
    /// where a `mosvm receive` waits, HOST:PORT, or `home`.
    #[arg(long, value_name = "HOST")]
    pub to: String,
    /// The daemon's API socket (default: $MOSVM_SOCK, else /run/mosvm/mosvm.sock).
    #[arg(long, value_name = "PATH", conflicts_with = "api_sock")]
    pub sock: Option<PathBuf>,
    /// Downtime target in milliseconds.
    #[arg(long, default_value_t = 5.0)]
    pub downtime_ms: f64,
    /// Cap the transfer at this many MB/s (default: as fast as the link goes).
    #[arg(long, value_name = "MB/s")]
    pub max_bandwidth: Option<f64>,
    /// Check every page at the destination before it takes the job
    /// (longer downtime; for testing).
    #[arg(long)]
    pub verify: bool,
    /// With --api-sock: the move's ticket (32 hex digits), for a receiver
    /// started with one (`MOSVM_MOVE_TICKET`); daemons pass their own.
    #[arg(long, value_name = "HEX", requires = "api_sock", value_parser = clap::value_parser!(trust::Ticket))]
    pub ticket: Option<trust::Ticket>,

    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// The control socket of the job (`mosvm run --api-sock`).
    #[arg(long, value_name = "PATH")]
    pub api_sock: PathBuf,
    /// The snapshot file to write.
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A file written by `mosvm snapshot`.
    pub file: PathBuf,
    /// Serve the control socket for the restored job here.
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Print every system call the job makes on stderr.
    #[arg(long)]
    pub trace: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Guest memory, like 512M or 2G (a plain number means MiB).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub mem: u64,
    /// Set an environment variable for the job (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(OsString, OsString)>,
    /// Print every system call the job makes on stderr.
    #[arg(long)]
    pub trace: bool,
    /// Serve a control socket here (for `mosvm migrate` and `mosvm snapshot`).
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Detached: the host daemon starts the job (as you, in this directory,
    /// with this environment, stdin from /dev/null, its output kept for
    /// `mosvm logs`); prints the job's id.
    #[arg(short = 'd', long, conflicts_with = "api_sock")]
    pub detach: bool,
    /// Keep the job on this host: the balancer never moves it (an
    /// operator's migrate still can).
    #[arg(long)]
    pub stay: bool,
    /// Where this job's deputy accepts its body's link once it runs on
    /// another host, and the body itself when it comes home (HOST:PORT;
    /// port 0 picks one). Only with --api-sock.
    #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:0")]
    pub home_listen: String,
    /// Where bodies reach this job's deputy, when that is not where it
    /// listens (a forwarded port, a proxy in front of it).
    #[arg(long, value_name = "HOST:PORT")]
    pub home_advertise: Option<std::net::SocketAddr>,
    /// Make the job's links (its deputy's port, its moves) mutual TLS
    /// with the identity in DIR (`mosvm cluster add-host`), without a
    /// daemon; with one, the daemon gives the job a certificate itself.
    #[arg(long, value_name = "DIR")]
    pub tls: Option<PathBuf>,
    /// The program (a static x86-64 ELF).
    #[arg(required = true)]
    pub program: OsString,
    /// Arguments for the program.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

/// Parses a memory size: a number with an optional K, M, G or T suffix
/// (optionally followed by "iB" or "B"); no suffix means MiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a size (examples: 512M, 2G, 1024)"))?;
    let shift = match unit.to_ascii_lowercase().trim_end_matches("ib").trim_end_matches('b') {
        "" | "m" => 20,
        "k" => 10,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("'{s}' has an unknown unit '{unit}' (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift).filter(|&b| b > 0).ok_or_else(|| format!("'{s}' is out of range"))
}

fn parse_env(s: &str) -> Result<(OsString, OsString), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.into(), v.into())),
        _ => Err(format!("'{s}' is not K=V")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1024"), Ok(1024 << 20));
        assert_eq!(parse_size("4096k"), Ok(4 << 20));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn commands_parse() {
        let run = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Run(r)) => r,
            other => panic!("{other:?}"),
        };
        let r = run(&["mosvm", "run", "--stay", "--", "prog", "--stay"]);
        assert!(r.stay && !r.detach);
        assert_eq!((r.program.to_str(), r.args.len()), (Some("prog"), 1), "--stay after the program is its own");
        let r = run(&["mosvm", "run", "-d", "--stay", "prog"]);
        assert!(r.stay && r.detach);
        assert!(!run(&["mosvm", "run", "prog"]).stay);

        let events = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Events(e)) => e,
            other => panic!("{other:?}"),
        };
        let e = events(&["mosvm", "events"]);
        assert!(!e.follow && !e.json && e.sock.is_none());
        assert_eq!(e.n, 20);
        let e = events(&["mosvm", "events", "-f", "--json", "-n", "5", "--sock", "/tmp/x.sock"]);
        assert!(e.follow && e.json);
        assert_eq!((e.n, e.sock.as_deref()), (5, Some(std::path::Path::new("/tmp/x.sock"))));
        let e = events(&["mosvm", "events", "--follow", "--api-sock", "/tmp/y.sock"]);
        assert_eq!(e.sock.as_deref(), Some(std::path::Path::new("/tmp/y.sock")));
        assert!(Cli::try_parse_from(["mosvm", "events", "-n", "lots"]).is_err());
        assert!(Cli::try_parse_from(["mosvm", "events", "-n", "10001"]).is_err());

        match Cli::try_parse_from(["mosvm", "ps", "7", "--json"]).map(|c| c.command) {
            Ok(Command::Ps(p)) => assert_eq!((p.job, p.json), (Some(7), true)),
            other => panic!("{other:?}"),
        }
        match Cli::try_parse_from(["mosvm", "ps"]).map(|c| c.command) {
            Ok(Command::Ps(p)) => assert_eq!(p.job, None),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["mosvm", "ps", "7", "--all"]).is_err());
    }

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("novalue").is_err());
        assert!(parse_env("=x").is_err());
    }
}
