//! The `mosvm` command.

mod api;
mod cli;
mod client;
mod cluster;
mod daemon;
mod http;
mod ops;
mod packaging;
mod progress;
mod register;
mod run;
mod text;
mod top;

use clap::Parser;

/// Descriptors above 2 this process was started with, taken before it
/// opens any of its own: `mosvm run prog 3<file` hands them to the job.
static INHERITED: std::sync::OnceLock<Vec<(i32, std::os::fd::RawFd)>> = std::sync::OnceLock::new();

fn take_inherited() -> Vec<(i32, std::os::fd::RawFd)> {
    // Only descriptors exec kept reach here (Rust opens its own with
    // O_CLOEXEC, so the directory listing below is not among them).
    let keep = |fd: i32| {
        // SAFETY: F_GETFD on any number is harmless.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        flags >= 0 && flags & libc::FD_CLOEXEC == 0
    };
    let mut fds: Vec<(i32, std::os::fd::RawFd)> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&fd| fd > 2 && keep(fd))
            .map(|fd| (fd, fd))
            .collect(),
        Err(_) => {
            // No /proc: probe up to the descriptor limit.
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: valid out pointer.
            let max =
                if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 { limit.rlim_cur } else { 1024 };
            (3..max.min(1 << 16) as i32).filter(|&fd| keep(fd)).map(|fd| (fd, fd)).collect()
        }
    };
    fds.sort_unstable();
    // The site takes these over; nothing this process starts may inherit them.
    for &(fd, _) in &fds {
        // SAFETY: setting FD_CLOEXEC on a descriptor we hold.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    fds
}

/// The caller's descriptors above 2 (see `INHERITED`).
pub(crate) fn inherited_fds() -> Vec<(i32, std::os::fd::RawFd)> {
    INHERITED.get().cloned().unwrap_or_default()
}

/// How this process's links to other hosts are made (its deputy's port,
/// its migration streams): set once, from the credentials its host gave
/// it; plain without a daemon or with an `--insecure` one.
static TRANSPORT: std::sync::OnceLock<trust::Transport> = std::sync::OnceLock::new();

pub(crate) fn transport() -> trust::Transport {
    TRANSPORT.get().cloned().unwrap_or(trust::Transport::Plain)
}

pub(crate) fn set_transport(t: trust::Transport) {
    let _ = TRANSPORT.set(t);
}

fn main() {
    INHERITED.get_or_init(take_inherited);
    let cli = cli::Cli::parse();
    let code = match cli.command {
        cli::Command::Run(args) => run::run(args),
        cli::Command::Receive(args) => run::receive(args),
        cli::Command::Restore(args) => run::restore(args),
        cli::Command::Migrate(args) => client::migrate(args),
        cli::Command::Snapshot(args) => client::snapshot(args),
        cli::Command::Host(args) => daemon::host(args),
        cli::Command::Cluster(args) => cluster::cluster(args),
        cli::Command::Hosts(args) => daemon::hosts(args),
        cli::Command::Ps(args) => daemon::ps(args),
        cli::Command::Kill(args) => daemon::kill(args),
        cli::Command::Wait(args) => daemon::wait(args),
        cli::Command::Logs(args) => daemon::logs(args),
        cli::Command::Events(args) => daemon::events(args),
        cli::Command::Cordon(args) => ops::cordon(args, true),
        cli::Command::Uncordon(args) => ops::cordon(args, false),
        cli::Command::Drain(args) => ops::drain(args),
        cli::Command::Top(args) => top::top(args),
        cli::Command::Completions(args) => packaging::completions(args),
        cli::Command::Man(args) => packaging::man(args),
    };
    std::process::exit(code);
}
