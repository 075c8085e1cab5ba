//! Threads of a job, run one at a time on its single vCPU.
//!
//! A job's threads share its memory, files and signal handlers; each has
//! its own registers, FPU state, TLS base, signal mask and pending signals.
//! The running thread's own state lives in `Job` (and its CPU context on
//! the vCPU); the others are parked here with theirs. The VMM switches
//! threads when the running one waits (futex, sleep, a descriptor that is
//! not ready), exits or yields, and every `SLICE` when several can run.
//! Concurrency without parallelism: the job stays one VM with one vCPU,
//! and its whole state stays in the VMM's tables.

use std::collections::VecDeque;

use kvm_bindings::kvm_regs;
use serde::{Deserialize, Serialize};

use crate::signal::{AltStack, SigInfo, NSIG};

/// How long a thread runs before another runnable one gets the vCPU.
pub const SLICE_NS: i64 = 10_000_000;

/// What a thread is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wait {
    /// FUTEX_WAIT: woken with 0 by FUTEX_WAKE, -ETIMEDOUT at the deadline.
    Futex { addr: u64, bitset: u32, deadline: Option<i64> },
    /// A sleep: 0 at the deadline (None: until a signal; pause, sigsuspend).
    /// A handler cutting a relative sleep short gets the time left at `rem`.
    Sleep { deadline: Option<i64>, rem: u64 },
    /// A job descriptor that was not ready: the call is made again once it is.
    Fd { fd: i32, events: i16 },
    /// poll/select with nothing ready: the call is made again at `at` (or
    /// on a signal); its own deadline is kept in `restart_deadline`.
    Retry { at: i64 },
    /// wait4/waitid for the children `pid` selects (as wait4's argument):
    /// the call is made again once one of them ended.
    Child { pid: i32 },
}

/// How often a thread in poll/select looks again while others run.
pub const POLL_RECHECK_NS: i64 = 5_000_000;

/// One thread's own state (not its CPU context).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThreadState {
    pub tid: u32,
    pub blocked: u64,
    /// Signals sent to this thread (tgkill, faults, SIGPIPE).
    pub pending: u64,
    pub info: Vec<SigInfo>,
    pub altstack: AltStack,
    /// CLONE_CHILD_CLEARTID / set_tid_address: zeroed and woken at exit.
    pub clear_child_tid: u64,
    pub robust_list: u64,
    pub restart_nr: Option<u64>,
    pub restart_deadline: Option<i64>,
    pub saved_mask: Option<u64>,
    /// What it waits for, and the system call that waits.
    pub wait: Option<(Wait, u64)>,
}

impl ThreadState {
    pub fn new(tid: u32, blocked: u64) -> ThreadState {
        ThreadState {
            tid,
            blocked,
            pending: 0,
            info: vec![SigInfo::default(); NSIG + 1],
            altstack: AltStack { flags: crate::signal::SS_DISABLE, ..Default::default() },
            clear_child_tid: 0,
            robust_list: 0,
            restart_nr: None,
            restart_deadline: None,
            saved_mask: None,
            wait: None,
        }
    }
}

/// A thread that is not on the vCPU: its state and CPU context.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Parked {
    pub state: ThreadState,
    /// The user-mode registers it resumes with.
    pub regs: kvm_regs,
    pub fs_base: u64,
    pub gs_base: u64,
    /// XSAVE image of its FPU/SSE/AVX registers.
    pub fpu: Vec<u8>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Threads {
    /// In round-robin order.
    pub parked: VecDeque<Parked>,
    pub next_tid: u32,
    /// When the running thread got the vCPU.
    pub slice_start: i64,
    /// The running thread asked to give way (sched_yield).
    #[serde(skip)]
    pub yield_now: bool,
}

impl Threads {
    pub fn runnable(&self) -> usize {
        self.parked.iter().filter(|p| p.state.wait.is_none()).count()
    }

    /// The earliest time a parked thread's wait ends by itself (a futex
    /// or sleep deadline; not a poll's next look, which is no deadline of
    /// the thread's and comes often). A running thread that makes
    /// no system call (a spin loop) is interrupted then, or the waiter
    /// would never run: Go's sysmon, which preempts such a goroutine, is
    /// one.
    pub fn next_deadline(&self) -> Option<i64> {
        self.parked
            .iter()
            .filter_map(|p| match p.state.wait {
                Some((Wait::Futex { deadline, .. } | Wait::Sleep { deadline, .. }, _)) => deadline,
                _ => None,
            })
            .min()
    }

    pub fn find(&mut self, tid: u32) -> Option<&mut Parked> {
        self.parked.iter_mut().find(|p| p.state.tid == tid)
    }
}
