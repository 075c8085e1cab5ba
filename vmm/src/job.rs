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
            signals.raise_shared(sig, SigInfo { code: SI_USER, ..Default::default() });
        }
    }
}

/// Runs `f` with the signals that wake a waiting vCPU thread (forwarded
/// host signals, the kick) blocked; `f` gets the mask to wait with, which
/// unblocks them atomically (ppoll), so none slips in between a check and
/// the wait.
fn with_wakeups_blocked<T>(f: impl FnOnce(&libc::sigset_t) -> T) -> T {
    // SAFETY: sigset manipulation on local values.
    let (mut block, mut old): (libc::sigset_t, libc::sigset_t) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    unsafe {
        libc::sigemptyset(&mut block);
        for sig in crate::signal::FORWARDED {
            libc::sigaddset(&mut block, sig as i32);
        }
        libc::sigaddset(&mut block, crate::vcpu::kick_signal());
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
    }
    let r = f(&old);
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    r
}

/// A relative timeout of `ns`, or None if it has passed.
fn timespec_until(ns: i64) -> Option<libc::timespec> {
    (ns > 0).then_some(libc::timespec { tv_sec: ns / 1_000_000_000, tv_nsec: ns % 1_000_000_000 })
}

/// Takes in the host signals that arrived and the job's timers that came due.
fn collect_events(signals: &mut Signals, timers: &mut Timers, clock: &Clock) {
    collect_host_signals(signals);
    if timers.due(|| clock.monotonic()) {
        timers.expire(clock.monotonic(), clock.host_offset(), signals);
    }
}

pub struct Job {
    pub ram: Arc<GuestRam>,
    pub mm: AddressSpace,
    pub site: Site,
    pub signals: Signals,
    pub timers: Timers,
    pub clock: Clock,
    pub ids: Ids,
    /// The running thread's id (the main thread's is the pid).
    pub tid: u32,
    /// What the running thread waits for, with the user context it resumes
    /// at (set by a system call that parks it).
    pub wait: Option<(crate::thread::Wait, u64)>,
    pub wait_ctx: Option<kvm_bindings::kvm_regs>,
    /// The other threads.
    pub threads: crate::thread::Threads,
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
    /// The system call being served (for parking and restarts).
    pub cur_nr: u64,
    /// CPU time to continue from once the vCPU thread runs (after a restore).
    pub pending_cputime: Option<i64>,
    /// Processes the job forked and has not waited for.
    pub children: crate::children::Children,
}

/// The command name (/proc/self/comm) for a program file name: its last
/// component, cut to 15 bytes.
pub fn comm_of(path: &[u8]) -> [u8; 16] {
    let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let mut comm = [0u8; 16];
    let n = base.len().min(15);
    comm[..n].copy_from_slice(&base[..n]);
    comm
}

impl Job {
    /// Moves host signals that arrived and expired timers' signals into
    /// the job's pending set.
    pub fn collect_events(&mut self) {
        collect_events(&mut self.signals, &mut self.timers, &self.clock);
        // signalfds poll readable while a signal in their mask is pending.
        self.sync_signalfds();
    }

    /// After a host EINTR: must the current call return to the vCPU loop
    /// (a signal the job will see, or a kick)?
    pub fn interrupted(&mut self) -> bool {
        self.collect_events();
        self.signals.interrupts() || self.kick.load(Ordering::SeqCst)
    }

    /// Sleeps until the job's monotonic clock reaches `deadline` (None:
    /// forever). Err(ERESTARTSYS) if interrupted first.
    pub fn sleep_until(&mut self, deadline: Option<i64>) -> Result<(), Errno> {
        with_wakeups_blocked(|unblocked| loop {
            if self.interrupted() {
                return Err(Errno::ERESTARTSYS);
            }
            let ts = match deadline {
                Some(d) => match timespec_until(d - self.clock.monotonic()) {
                    Some(ts) => Some(ts),
                    None => return Ok(()),
                },
                None => None,
            };
            let tp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: no descriptors; tp is NULL or a valid timespec; the mask is valid.
            unsafe { libc::ppoll(std::ptr::null_mut(), 0, tp, unblocked) };
        })
    }

    /// Waits until `deadline` (the job's monotonic clock), one of `fds` is
    /// ready, a host signal arrives or the vCPU is kicked, whichever is
    /// first. The caller finds out which.
    pub fn wait_for(&mut self, deadline: Option<i64>, fds: &mut [libc::pollfd]) {
        with_wakeups_blocked(|unblocked| {
            if crate::signal::host_signals_pending() || self.kick.load(Ordering::SeqCst) {
                return;
            }
            let ts = match deadline {
                Some(d) => match timespec_until(d - self.clock.monotonic()) {
                    Some(ts) => Some(ts),
                    None => return,
                },
                None => None,
            };
            let tp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: fds holds fds.len() records; tp is NULL or valid; the mask is valid.
            unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, tp, unblocked) };
        })
    }

    /// Bytes of guest RAM the host has backed (touched by the job).
    pub fn touched_bytes(&self) -> u64 {
        self.ram.resident_bytes()
    }
}

// ---- state ----

use crate::clock::realtime_ns;

/// Host resources a restored job is attached to.
pub struct RestoreEnv {
    pub stdio: [std::os::fd::RawFd; 3],
    pub log: Log,
    pub trace: bool,
    /// The deputy of this process, where a job coming home finds its site.
    pub home: Option<Arc<crate::site::Home>>,
    /// This host's address, as the job's deputy will name it.
    pub here: Option<std::net::SocketAddr>,
    /// Links to the job's deputy opened during the move.
    pub prepared: Option<crate::site::Prepared>,
    /// How this process reaches the job's deputy (mutual TLS with its
    /// job certificate, or plain).
    pub transport: trust::Transport,
}

impl Job {
    /// The job's tables as data (fails if an open file cannot be carried).
    /// What `capture` would refuse for `purpose`, without capturing.
    pub fn check_movable(&self, purpose: crate::site::Purpose) -> Result<(), crate::site::SiteError> {
        if let Some(pid) = self.children.pids().next() {
            return Err(crate::site::SiteError::Children(pid));
        }
        self.site.check_movable(purpose)
    }

    pub fn capture(&self, purpose: crate::site::Purpose) -> Result<crate::state::JobState, crate::site::SiteError> {
        use crate::state::*;
        if let Some(pid) = self.children.pids().next() {
            return Err(crate::site::SiteError::Children(pid));
        }
        let (site, home) = self.site.capture(purpose)?;
        let s = &self.signals;
        Ok(JobState {
            mm: self.mm.clone(),
            signals: SignalState {
                actions: s.actions.to_vec(),
                blocked: s.blocked,
                pending: s.pending,
                info: s.info.to_vec(),
                altstack: s.altstack,
                shared: s.shared,
                shared_info: s.shared_info.to_vec(),
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
            tid: self.tid,
            wait: self.wait,
            wait_ctx: self.wait_ctx,
            threads: self.threads.clone(),
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
            site,
            home,
        })
    }

    /// Rebuilds a job from `state` over `ram`, which already holds its pages.
    /// Clocks continue from where they stopped, plus the time the move took
    /// (never less).
    /// `tsc_khz`: the TSC's rate, where the job's clock may run on it.
    pub fn restore(
        state: crate::state::JobState,
        ram: Arc<GuestRam>,
        kick: Arc<AtomicBool>,
        env: RestoreEnv,
        tsc_khz: Option<u32>,
    ) -> Result<Job, crate::site::SiteError> {
        let site = Site::restore(
            &state.site,
            state.home.as_ref(),
            env.stdio,
            env.home.as_ref(),
            env.here,
            env.prepared,
            &env.transport,
        )?;
        let elapsed = (realtime_ns() - state.clock.realtime).max(0);
        // CPU time is set against the vCPU thread's when it starts running.
        let clock = Clock::starting_at(state.clock.monotonic + elapsed, tsc_khz);
        clock.publish(&ram);
        let mut signals = Signals::default();
        for (i, a) in state.signals.actions.iter().enumerate().take(signals.actions.len()) {
            signals.actions[i] = *a;
        }
        for (i, a) in state.signals.info.iter().enumerate().take(signals.info.len()) {
            signals.info[i] = *a;
        }
        for (i, a) in state.signals.shared_info.iter().enumerate().take(signals.shared_info.len()) {
            signals.shared_info[i] = *a;
        }
        signals.blocked = state.signals.blocked;
        signals.pending = state.signals.pending;
        signals.shared = state.signals.shared;
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
            tid: state.tid,
            wait: state.wait,
            wait_ctx: state.wait_ctx,
            threads: state.threads,
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
            cur_nr: 0,
            pending_cputime: Some(state.clock.cputime),
            children: Default::default(),
        })
    }

    /// Called on the vCPU thread before the first entry: ties the CPU-time
    /// clock to this thread and aims the timer at it.
    pub fn attach_to_vcpu_thread(&mut self) {
        if let Some(cpu) = self.pending_cputime.take() {
            self.clock.cputime_offset = 0;
            self.clock.cputime_offset = cpu - self.clock.cputime();
        }
        self.timers.rearm(self.clock.host_offset());
        // A body back home: the host process takes up the group and
        // session the job made while away (and the site its fd limit).
        self.sync_with_host();
    }
}

// ---- execve ----

impl Job {
    /// The process side of execve, once the new image is in memory (and
    /// its vvar page written): other
    /// threads are gone, handled signals revert to their defaults (ignored
    /// ones stay ignored), POSIX timers and close-on-exec descriptors are
    /// dropped; the pid, mask, pending signals, alarm, limits and other
    /// descriptors stay, as on Linux.
    pub fn exec(&mut self, mm: AddressSpace, image_end: u64, req: &crate::exec::ExecRequest) {
        self.mm = mm;
        self.mm.sync_access(&self.ram);
        self.image_end = image_end;
        self.clock.publish(&self.ram);
        // The new memory's vvar page gets the job's utsname back.
        self.keep_uname();
        self.threads.parked.clear();
        self.threads.yield_now = false;
        self.tid = self.ids.pid;
        self.tid_address = 0;
        self.robust_list = 0;
        self.wait = None;
        self.wait_ctx = None;
        self.restart_nr = None;
        self.restart_deadline = None;
        self.saved_mask = None;
        self.signals.exec();
        self.timers.posix.clear();
        self.timers.rearm(self.clock.host_offset());
        self.site.exec(req.path.clone());
        self.exe = req.path.clone();
        self.comm = comm_of(&req.execfn);
        self.cmdline = req.argv.iter().flat_map(|a| a.iter().copied().chain([0])).collect();
        self.environ = req.env.iter().flat_map(|a| a.iter().copied().chain([0])).collect();
    }
}

// ---- threads ----

impl Job {
    /// Moves the running thread's own state out (to park it).
    pub fn take_thread(&mut self) -> crate::thread::ThreadState {
        use std::mem::take;
        crate::thread::ThreadState {
            tid: self.tid,
            blocked: self.signals.blocked,
            pending: take(&mut self.signals.pending),
            info: std::mem::replace(&mut self.signals.info, [SigInfo::default(); crate::signal::NSIG + 1]).to_vec(),
            altstack: self.signals.altstack,
            clear_child_tid: take(&mut self.tid_address),
            robust_list: take(&mut self.robust_list),
            restart_nr: self.restart_nr.take(),
            restart_deadline: self.restart_deadline.take(),
            saved_mask: self.saved_mask.take(),
            wait: self.wait.take(),
        }
    }

    /// Makes `t` the running thread's own state.
    pub fn put_thread(&mut self, t: crate::thread::ThreadState) {
        self.tid = t.tid;
        self.signals.blocked = t.blocked;
        self.signals.pending = t.pending;
        for (i, info) in t.info.into_iter().enumerate().take(self.signals.info.len()) {
            self.signals.info[i] = info;
        }
        self.signals.altstack = t.altstack;
        self.tid_address = t.clear_child_tid;
        self.robust_list = t.robust_list;
        self.restart_nr = t.restart_nr;
        self.restart_deadline = t.restart_deadline;
        self.saved_mask = t.saved_mask;
        self.wait = t.wait;
    }

    /// Is there another thread to run while this one waits?
    pub fn has_threads(&self) -> bool {
        !self.threads.parked.is_empty()
    }

    /// Parks the running thread in the current system call until `wait`
    /// ends (see `thread::Wait`); returns the marker the system-call layer
    /// passes up.
    pub fn park(&mut self, wait: crate::thread::Wait) -> Errno {
        self.wait = Some((wait, self.cur_nr));
        Errno::PARKED
    }

    /// With other threads to run: parks the running thread if `fd` is not
    /// ready for `events` (a read or write would block).
    pub fn park_unless_ready(&mut self, fd: i32, events: i16) -> Result<(), Errno> {
        if !self.has_threads() {
            return Ok(());
        }
        let mut rec = [0u8; 8];
        rec[..4].copy_from_slice(&fd.to_le_bytes());
        rec[4..6].copy_from_slice(&events.to_le_bytes());
        if self.site.poll(&mut rec, 0)? == 0 {
            // A non-blocking descriptor answers EAGAIN instead.
            let nonblock = self.site.fcntl(fd, libc::F_GETFL, 0).is_ok_and(|f| f & libc::O_NONBLOCK as u64 != 0);
            if !nonblock {
                return Err(self.park(crate::thread::Wait::Fd { fd, events }));
            }
        }
        Ok(())
    }

    /// Wakes threads waiting on futex `addr` (up to `n`, matching `bitset`).
    pub fn futex_wake(&mut self, addr: u64, n: u32, bitset: u32) -> u32 {
        let mut woken = 0;
        for p in self.threads.parked.iter_mut() {
            if woken >= n {
                break;
            }
            if let Some((crate::thread::Wait::Futex { addr: a, bitset: b, .. }, _)) = p.state.wait {
                if a == addr && b & bitset != 0 {
                    p.state.wait = None;
                    p.regs.rax = 0;
                    woken += 1;
                }
            }
        }
        woken
    }

    /// Moves up to `n` futex waiters from `from` to `to`.
    pub fn futex_requeue(&mut self, from: u64, to: u64, n: u32) -> u32 {
        let mut moved = 0;
        for p in self.threads.parked.iter_mut() {
            if moved >= n {
                break;
            }
            if let Some((crate::thread::Wait::Futex { addr, .. }, _)) = &mut p.state.wait {
                if *addr == from {
                    *addr = to;
                    moved += 1;
                }
            }
        }
        moved
    }
}
