//! A job's child processes. fork makes a copy of the job in a new host
//! process (a child of this one) with its own micro-VM; the job waits for
//! and signals its children through the host. Each child has a pidfd,
//! which becomes readable when it ends, so a waiting job sleeps in the
//! same poll as its other waits.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub struct Child {
    pub pid: i32,
    /// None where pidfd_open is missing (the host's SIGCHLD still wakes the job).
    pidfd: Option<OwnedFd>,
}

#[derive(Default)]
pub struct Children {
    list: Vec<Child>,
}

impl Children {
    pub fn add(&mut self, pid: i32) {
        // SAFETY: pidfd_open takes a pid and flags; the result is checked.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        // SAFETY: a fresh descriptor we own.
        let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) });
        self.list.push(Child { pid, pidfd });
    }

    pub fn remove(&mut self, pid: i32) {
        self.list.retain(|c| c.pid != pid);
    }

    pub fn pids(&self) -> impl Iterator<Item = i32> + '_ {
        self.list.iter().map(|c| c.pid)
    }

    /// Is there a child a wait for `spec` (wait4's pid argument) is about?
    pub fn any(&self, spec: i32) -> bool {
        self.matching(spec).next().is_some()
    }

    /// The children a wait for `spec` (wait4's pid argument) is about.
    fn matching(&self, spec: i32) -> impl Iterator<Item = &Child> {
        self.list.iter().filter(move |c| spec <= 0 || c.pid == spec)
    }

    /// Adds the pidfds of the children a wait for `spec` is about to `fds`.
    pub fn poll_fds(&self, spec: i32, fds: &mut Vec<libc::pollfd>) {
        for c in self.matching(spec) {
            if let Some(fd) = &c.pidfd {
                fds.push(libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            }
        }
    }

    /// Has a child a wait for `spec` is about ended (without reaping it)?
    pub fn ready(&self, spec: i32) -> bool {
        let (idtype, id) = match spec {
            -1 => (libc::P_ALL, 0),
            s if s > 0 => (libc::P_PID, s as u32),
            0 => (libc::P_PGID, 0),
            s => (libc::P_PGID, s.unsigned_abs()),
        };
        // SAFETY: a zeroed siginfo is a valid out buffer.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: valid arguments and out pointer.
        let r = unsafe { libc::waitid(idtype, id, &mut info, flags) };
        // SAFETY: si_pid is valid for the SIGCHLD info waitid fills in.
        r != 0 || unsafe { info.si_pid() } != 0
    }

    /// Reaps children that ended, for a job that does not wait for them
    /// (SIGCHLD ignored: Linux reaps them itself).
    pub fn reap_ended(&mut self) {
        self.list.retain(|c| {
            let mut st = 0;
            // SAFETY: waitpid on our own child with a valid out pointer.
            unsafe { libc::waitpid(c.pid, &mut st, libc::WNOHANG) == 0 }
        });
    }

    /// In a forked child: the parent's children are not ours. Their pidfds
    /// were already closed with the parent's other descriptors.
    pub fn forget(&mut self) {
        for c in self.list.drain(..) {
            if let Some(fd) = c.pidfd {
                std::mem::forget(fd);
            }
        }
    }
}

/// The most processes a job may have at once, whatever its RLIMIT_NPROC
/// says (which stays the caller's, as the job sees it): each is a host
/// process with a micro-VM of its own. Like a system-wide limit on
/// Linux, it makes fork fail with EAGAIN.
pub const MAX_JOB_PROCESSES: u64 = 512;

/// The job's processes, counted across the host processes holding them (a
/// shared page that every fork inherits; one job per VMM process), so
/// that a fork bomb meets the job's limit, as on Linux, and not the
/// host's.
fn job_processes() -> Option<&'static std::sync::atomic::AtomicU64> {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let addr = *COUNT.get_or_init(|| {
        // SAFETY: a fresh shared anonymous page; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return 0;
        }
        // SAFETY: the page is ours, zeroed, aligned; the job's first
        // process is this one.
        unsafe { (*(p as *const std::sync::atomic::AtomicU64)).store(1, std::sync::atomic::Ordering::SeqCst) };
        p as usize
    });
    // SAFETY: mapped for the life of the process (never unmapped).
    (addr != 0).then(|| unsafe { &*(addr as *const std::sync::atomic::AtomicU64) })
}

/// Counts one more process of the job, unless it has `limit` already.
pub fn try_add_process(limit: u64) -> bool {
    use std::sync::atomic::Ordering;
    let Some(n) = job_processes() else { return true };
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| (c < limit).then_some(c + 1)).is_ok()
}

/// One process of the job has ended (or was never made).
pub fn process_ended() {
    use std::sync::atomic::Ordering;
    if let Some(n) = job_processes() {
        let _ = n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| Some(c.saturating_sub(1)));
    }
}
