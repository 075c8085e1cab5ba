//! A job as the VMM sees it: the guest's memory and everything a kernel
//! would keep about the process (address space, files, signals, clocks).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::clock::Clock;
use crate::cpu::CpuFeatures;
use crate::errno::Errno;
use crate::memory::GuestRam;
use crate::mm::AddressSpace;
use crate::signal::{take_host_signals, SigInfo, Signals, SI_USER};
use crate::site::Site;
use crate::sys::process::RLIM_NLIMITS;
use crate::timers::Timers;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JobExit {
    /// exit(status), status already masked to 8 bits.
    Exited(i32),
    /// Killed by a signal.
    Signaled(u32),
}

impl JobExit {
    /// The status a shell reports: the exit code, or 128 + signal.
    pub fn shell_status(self) -> i32 {
        match self {
            JobExit::Exited(c) => c & 0xff,
            JobExit::Signaled(s) => 128 + s as i32,
        }
    }
}

/// Process identity the job sees.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ids {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: u32,
    pub sid: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    pub groups: Vec<u32>,
}

impl Ids {
    /// The identity of the calling host process.
    pub fn of_this_process() -> Ids {
        // SAFETY: these calls have no preconditions.
        unsafe {
            let n = libc::getgroups(0, std::ptr::null_mut()).max(0) as usize;
            let mut groups = vec![0u32; n];
            let n = libc::getgroups(n as i32, groups.as_mut_ptr()).max(0) as usize;
            groups.truncate(n);
            Ids {
                pid: libc::getpid() as u32,
                ppid: libc::getppid() as u32,
                pgid: libc::getpgrp() as u32,
                sid: libc::getsid(0) as u32,
                uid: libc::getuid(),
                euid: libc::geteuid(),
                gid: libc::getgid(),
                egid: libc::getegid(),
                groups,
            }
        }
    }
}

/// Counters for benchmarks and tools.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct JobStats {
    pub syscalls: u64,
    pub exits: u64,
}

/// Diagnostics sink: one line, without trailing newline.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

fn collect_host_signals(signals: &mut Signals) {
    let mut mask = take_host_signals();
    while mask != 0 {
        let sig = mask.trailing_zeros() + 1;
        mask &= mask - 1;
        if !signals.is_ignored(sig) {
            signals.raise(sig, SigInfo { code: SI_USER, ..Default::default() });
        }
    }
}

/// See `Job::interrupted`; on the fields so callers can hold other borrows.
pub(crate) fn interrupted(signals: &mut Signals, timers: &mut Timers, clock: &Clock, kick: &AtomicBool) -> bool {
    collect_host_signals(signals);
    if timers.due(|| clock.monotonic()) {
        timers.expire(clock.monotonic(), clock.monotonic_offset, signals);
    }
    signals.interrupts() || kick.load(Ordering::SeqCst)
}

pub struct Job {
    pub ram: Arc<GuestRam>,
    pub mm: AddressSpace,
    pub site: Site,
    pub signals: Signals,
    pub timers: Timers,
    pub clock: Clock,
    pub ids: Ids,
    pub features: CpuFeatures,
    pub rlimits: [(u64, u64); RLIM_NLIMITS],
    pub image_end: u64,
    pub tid_address: u64,
    pub robust_list: u64,
    pub comm: [u8; 16],
    /// The program as /proc/self/exe names it.
    pub exe: std::path::PathBuf,
    /// argv and the environment, NUL-separated, for /proc/self/{cmdline,environ}.
    pub cmdline: Vec<u8>,
    pub environ: Vec<u8>,
    pub stats: JobStats,
    pub log: Log,
    /// Log every system call (mosvm run --trace).
    pub trace: bool,
    /// The system call to restart if a signal interrupted it.
    pub restart_nr: Option<u64>,
    /// The deadline of an interrupted sleep, for its restart.
    pub restart_deadline: Option<i64>,
    /// The signal mask to restore when a handler returns (sigsuspend, ppoll).
    pub saved_mask: Option<u64>,
    /// The job's rsp at the current exit (for sigaltstack's "on stack" test).
    pub current_rsp: u64,
    /// Set when another thread asked the vCPU to stop (migration, kill).
    pub kick: Arc<AtomicBool>,
    pub unknown_reported: std::collections::BTreeSet<u64>,
    /// CPU time to continue from once the vCPU thread runs (after a restore).
    pub pending_cputime: Option<i64>,
}

impl Job {
    /// Moves host signals that arrived into the job's pending set.
    pub fn collect_host_signals(&mut self) {
        collect_host_signals(&mut self.signals);
    }

    /// After a host EINTR: must the current call return to the vCPU loop
    /// (a signal the job will see, or a kick)?
    pub fn interrupted(&mut self) -> bool {
        interrupted(&mut self.signals, &mut self.timers, &self.clock, &self.kick)
    }

    /// Sleeps until the job's monotonic clock reaches `deadline` (None:
    /// forever). Err(ERESTARTSYS) if interrupted first.
    pub fn sleep_until(&mut self, deadline: Option<i64>) -> Result<(), Errno> {
        // Block the signals that can interrupt us, check, then wait with
        // them unblocked atomically (ppoll's mask), so none slips in
        // between the check and the wait.
        // SAFETY: sigset manipulation on local values.
        let (mut block, mut old): (libc::sigset_t, libc::sigset_t) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        unsafe {
            libc::sigemptyset(&mut block);
            for sig in crate::signal::FORWARDED {
                libc::sigaddset(&mut block, sig as i32);
            }
            libc::sigaddset(&mut block, crate::vcpu::kick_signal());
            libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
        }
        let result = loop {
            if self.interrupted() {
                break Err(Errno::ERESTARTSYS);
            }
            let ts = match deadline {
                Some(d) => {
                    let left = d - self.clock.monotonic();
                    if left <= 0 {
                        break Ok(());
                    }
                    Some(libc::timespec { tv_sec: left / 1_000_000_000, tv_nsec: left % 1_000_000_000 })
                }
                None => None,
            };
            let tp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: no descriptors; tp is NULL or a valid timespec; old is a valid mask.
            unsafe { libc::ppoll(std::ptr::null_mut(), 0, tp, &old) };
        };
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        result
    }

    /// Bytes of guest RAM the host has backed (touched by the job).
    pub fn touched_bytes(&self) -> u64 {
        crate::memory::resident_bytes(self.ram.host_base(), self.ram.size())
    }
}

// ---- state ----

use crate::clock::realtime_ns;

/// Host resources a restored job is attached to.
pub struct RestoreEnv {
    pub stdio: [std::os::fd::RawFd; 3],
    pub log: Log,
    pub trace: bool,
}

impl Job {
    /// The job's tables as data (fails if an open file cannot be carried).
    pub fn capture(&self) -> Result<crate::state::JobState, crate::site::SiteError> {
        use crate::state::*;
        let s = &self.signals;
        Ok(JobState {
            mm: self.mm.clone(),
            signals: SignalState {
                actions: s.actions.to_vec(),
                blocked: s.blocked,
                pending: s.pending,
                info: s.info.to_vec(),
                altstack: s.altstack,
            },
            timers: TimerState {
                real: self.timers.real,
                virt: self.timers.virt,
                prof: self.timers.prof,
                posix: self.timers.posix.clone(),
            },
            clock: ClockState {
                monotonic: self.clock.monotonic(),
                cputime: self.clock.cputime(),
                realtime: realtime_ns(),
            },
            ids: self.ids.clone(),
            features: self.features,
            rlimits: self.rlimits,
            image_end: self.image_end,
            tid_address: self.tid_address,
            robust_list: self.robust_list,
            comm: self.comm,
            exe: self.exe.clone(),
            cmdline: self.cmdline.clone(),
            environ: self.environ.clone(),
            restart_nr: self.restart_nr,
            restart_deadline: self.restart_deadline,
            saved_mask: self.saved_mask,
            unknown_reported: self.unknown_reported.iter().copied().collect(),
            stats: self.stats,
            site: self.site.capture()?,
        })
    }

    /// Rebuilds a job from `state` over `ram`, which already holds its pages.
    /// Clocks continue from where they stopped, plus the time the move took
    /// (never less).
    pub fn restore(
        state: crate::state::JobState,
        ram: Arc<GuestRam>,
        kick: Arc<AtomicBool>,
        env: RestoreEnv,
    ) -> Result<Job, crate::site::SiteError> {
        let site = Site::restore(&state.site, env.stdio)?;
        let elapsed = (realtime_ns() - state.clock.realtime).max(0);
        let probe = Clock::default();
        let clock = Clock {
            monotonic_offset: state.clock.monotonic + elapsed - probe.monotonic(),
            // Set against the vCPU thread's CPU time when it starts running.
            cputime_offset: 0,
        };
        let mut signals = Signals::default();
        for (i, a) in state.signals.actions.iter().enumerate().take(signals.actions.len()) {
            signals.actions[i] = *a;
        }
        for (i, a) in state.signals.info.iter().enumerate().take(signals.info.len()) {
            signals.info[i] = *a;
        }
        signals.blocked = state.signals.blocked;
        signals.pending = state.signals.pending;
        signals.altstack = state.signals.altstack;
        let mut timers = Timers::default();
        timers.real = state.timers.real;
        timers.virt = state.timers.virt;
        timers.prof = state.timers.prof;
        timers.posix = state.timers.posix;
        Ok(Job {
            ram,
            mm: state.mm,
            site,
            signals,
            timers,
            clock,
            ids: state.ids,
            features: state.features,
            rlimits: state.rlimits,
            image_end: state.image_end,
            tid_address: state.tid_address,
            robust_list: state.robust_list,
            comm: state.comm,
            exe: state.exe,
            cmdline: state.cmdline,
            environ: state.environ,
            stats: state.stats,
            log: env.log,
            trace: env.trace,
            restart_nr: state.restart_nr,
            restart_deadline: state.restart_deadline,
            saved_mask: state.saved_mask,
            current_rsp: 0,
            kick,
            unknown_reported: state.unknown_reported.into_iter().collect(),
            pending_cputime: Some(state.clock.cputime),
        })
    }

    /// Called on the vCPU thread before the first entry: ties the CPU-time
    /// clock to this thread and aims the timer at it.
    pub fn attach_to_vcpu_thread(&mut self) {
        if let Some(cpu) = self.pending_cputime.take() {
            self.clock.cputime_offset = 0;
            self.clock.cputime_offset = cpu - self.clock.cputime();
        }
        self.timers.rearm(self.clock.monotonic_offset);
    }
}
