//! Signals: the job's dispositions, mask and pending set, default actions,
//! forwarding of the host's terminal signals, and the x86-64 rt_sigframe
//! the VMM builds on the job's stack to run a handler.

use std::sync::atomic::{AtomicU64, Ordering};

use kvm_bindings::kvm_regs;

pub const NSIG: usize = 64;

pub const SIGHUP: u32 = 1;
pub const SIGINT: u32 = 2;
pub const SIGQUIT: u32 = 3;
pub const SIGILL: u32 = 4;
pub const SIGTRAP: u32 = 5;
pub const SIGABRT: u32 = 6;
pub const SIGBUS: u32 = 7;
pub const SIGFPE: u32 = 8;
pub const SIGKILL: u32 = 9;
pub const SIGUSR1: u32 = 10;
pub const SIGSEGV: u32 = 11;
pub const SIGUSR2: u32 = 12;
pub const SIGPIPE: u32 = 13;
pub const SIGALRM: u32 = 14;
pub const SIGTERM: u32 = 15;
pub const SIGCHLD: u32 = 17;
pub const SIGCONT: u32 = 18;
pub const SIGSTOP: u32 = 19;
pub const SIGTSTP: u32 = 20;
pub const SIGTTIN: u32 = 21;
pub const SIGTTOU: u32 = 22;
pub const SIGURG: u32 = 23;
pub const SIGXCPU: u32 = 24;
pub const SIGXFSZ: u32 = 25;
pub const SIGWINCH: u32 = 28;
pub const SIGSYS: u32 = 31;

pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;

pub const SA_NOCLDWAIT: u64 = 0x2;
pub const SA_SIGINFO: u64 = 0x4;
pub const SA_RESTORER: u64 = 0x0400_0000;
pub const SA_ONSTACK: u64 = 0x0800_0000;
pub const SA_RESTART: u64 = 0x1000_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;
pub const SA_RESETHAND: u64 = 0x8000_0000;

pub const SS_ONSTACK: i32 = 1;
pub const SS_DISABLE: i32 = 2;
pub const SS_AUTODISARM: i32 = 1 << 31;
pub const MINSIGSTKSZ: u64 = 2048;

/// si_code values.
pub const SI_USER: i32 = 0;
pub const SI_TKILL: i32 = -6;
pub const SI_KERNEL: i32 = 0x80;
pub const SEGV_MAPERR: i32 = 1;
pub const SEGV_ACCERR: i32 = 2;
pub const ILL_ILLOPN: i32 = 2;
pub const FPE_INTDIV: i32 = 1;
pub const FPE_FLTINV: i32 = 7;
pub const BUS_ADRALN: i32 = 1;
pub const TRAP_BRKPT: i32 = 1;

#[inline]
pub const fn bit(sig: u32) -> u64 {
    1u64 << (sig - 1)
}

/// Signals that can be neither caught, blocked nor ignored.
pub const UNBLOCKABLE: u64 = bit(SIGKILL) | bit(SIGSTOP);

pub fn name(sig: u32) -> &'static str {
    const NAMES: [&str; 32] = [
        "0",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    NAMES.get(sig as usize).copied().unwrap_or("SIGRT")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultAction {
    Terminate,
    Core,
    Ignore,
    Stop,
}

pub fn default_action(sig: u32) -> DefaultAction {
    match sig {
        SIGCHLD | SIGURG | SIGWINCH | SIGCONT => DefaultAction::Ignore,
        SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU => DefaultAction::Stop,
        SIGQUIT | SIGILL | SIGTRAP | SIGABRT | SIGBUS | SIGFPE | SIGSEGV | SIGXCPU | SIGXFSZ | SIGSYS => {
            DefaultAction::Core
        }
        _ => DefaultAction::Terminate,
    }
}

/// struct k_sigaction as rt_sigaction passes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

impl SigAction {
    pub fn from_bytes(b: &[u8]) -> SigAction {
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        SigAction { handler: w(0), flags: w(1), restorer: w(2), mask: w(3) }
    }

    pub fn to_bytes(self) -> [u8; 32] {
        let mut b = [0; 32];
        for (i, w) in [self.handler, self.flags, self.restorer, self.mask].iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        b
    }
}

/// What accompanies a pending signal (the interesting part of siginfo).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SigInfo {
    pub code: i32,
    /// si_addr for faults; si_pid for kill.
    pub addr: u64,
    /// For faults: the vector and error code, reported in the sigcontext.
    pub trapno: u64,
    pub err: u64,
    /// si_value for timer and queued signals.
    pub value: u64,
}

impl SigInfo {
    /// This signal as a signalfd read returns it (struct signalfd_siginfo).
    pub fn to_signalfd(self, sig: u32, pid: u32, uid: u32) -> [u8; 128] {
        let mut b = [0; 128];
        fn put32(b: &mut [u8], at: usize, v: u32) {
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        put32(&mut b, 0, sig);
        put32(&mut b, 8, self.code as u32);
        if self.code == crate::timers::SI_TIMER {
            // ssi_tid (the timer), ssi_overrun, ssi_int / ssi_ptr
            put32(&mut b, 24, self.addr as u32);
            put32(&mut b, 44, self.value as u32);
            b[48..56].copy_from_slice(&self.value.to_le_bytes());
        } else if self.code <= 0 {
            put32(&mut b, 12, pid);
            put32(&mut b, 16, uid);
            put32(&mut b, 44, self.value as u32);
            b[48..56].copy_from_slice(&self.value.to_le_bytes());
        } else if self.code != SI_KERNEL {
            b[72..80].copy_from_slice(&self.addr.to_le_bytes());
            put32(&mut b, 36, self.trapno as u32);
        }
        b
    }

    pub fn to_bytes(self, sig: u32, pid: u32, uid: u32) -> [u8; 128] {
        let mut b = [0; 128];
        b[0..4].copy_from_slice(&(sig as i32).to_le_bytes());
        b[8..12].copy_from_slice(&self.code.to_le_bytes());
        if self.code == crate::timers::SI_TIMER {
            // si_tid, si_overrun, si_value
            b[16..20].copy_from_slice(&(self.addr as i32).to_le_bytes());
            b[24..32].copy_from_slice(&self.value.to_le_bytes());
        } else if self.code <= 0 {
            b[16..20].copy_from_slice(&pid.to_le_bytes());
            b[20..24].copy_from_slice(&uid.to_le_bytes());
        } else {
            b[16..24].copy_from_slice(&self.addr.to_le_bytes());
        }
        b
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AltStack {
    pub sp: u64,
    pub flags: i32,
    pub size: u64,
}

#[derive(Clone, Debug)]
pub struct Signals {
    /// Dispositions: shared by all threads.
    pub actions: [SigAction; NSIG + 1],
    /// The running thread's mask, pending set and alternate stack (the
    /// others' are in their `ThreadState`).
    pub blocked: u64,
    pub pending: u64,
    pub info: [SigInfo; NSIG + 1],
    pub altstack: AltStack,
    /// Signals sent to the process (kill, the terminal, timers): taken by
    /// whichever thread does not block them.
    pub shared: u64,
    pub shared_info: [SigInfo; NSIG + 1],
    /// The site may hold signalfds (true until it says it has none: a
    /// restored job asks once).
    pub signalfds: bool,
    /// The pending set the site's signalfds were last told of.
    pub signalfd_sent: Option<u64>,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            actions: [SigAction::default(); NSIG + 1],
            blocked: 0,
            pending: 0,
            info: [SigInfo::default(); NSIG + 1],
            altstack: AltStack { flags: SS_DISABLE, ..Default::default() },
            shared: 0,
            shared_info: [SigInfo::default(); NSIG + 1],
            signalfds: true,
            signalfd_sent: None,
        }
    }
}

/// The lowest of `ready` (synchronous signals first, as Linux).
fn pick(ready: u64) -> Option<u32> {
    if ready == 0 {
        return None;
    }
    const SYNC: u64 = bit(SIGSEGV) | bit(SIGBUS) | bit(SIGILL) | bit(SIGTRAP) | bit(SIGFPE) | bit(SIGSYS);
    let pick = if ready & SYNC != 0 { ready & SYNC } else { ready };
    Some(pick.trailing_zeros() + 1)
}

impl Signals {
    /// Marks `sig` pending for the running thread (a second instance of a
    /// standard signal merges).
    pub fn raise(&mut self, sig: u32, info: SigInfo) {
        if self.pending & bit(sig) == 0 {
            self.info[sig as usize] = info;
        }
        self.pending |= bit(sig);
    }

    /// Marks `sig` pending for the process.
    pub fn raise_shared(&mut self, sig: u32, info: SigInfo) {
        if self.shared & bit(sig) == 0 {
            self.shared_info[sig as usize] = info;
        }
        self.shared |= bit(sig);
    }

    /// Is the signal discarded right away (ignored, explicitly or by default)?
    pub fn is_ignored(&self, sig: u32) -> bool {
        match self.actions[sig as usize].handler {
            SIG_IGN => sig != SIGKILL && sig != SIGSTOP,
            SIG_DFL => default_action(sig) == DefaultAction::Ignore,
            _ => false,
        }
    }

    /// Signals a thread with this mask and pending set could take now.
    pub fn ready_for(&self, blocked: u64, pending: u64) -> u64 {
        (pending | self.shared) & !(blocked & !UNBLOCKABLE)
    }

    /// The next signal for the running thread: its own first, then the process's.
    pub fn next_deliverable(&self) -> Option<u32> {
        let unblocked = !(self.blocked & !UNBLOCKABLE);
        pick(self.pending & unblocked).or_else(|| pick(self.shared & unblocked))
    }

    pub fn take(&mut self, sig: u32) -> SigInfo {
        if self.pending & bit(sig) != 0 {
            self.pending &= !bit(sig);
            std::mem::take(&mut self.info[sig as usize])
        } else {
            self.shared &= !bit(sig);
            std::mem::take(&mut self.shared_info[sig as usize])
        }
    }

    /// Takes the next pending signal in `mask` (the running thread's own
    /// first, then the process's), as a signalfd read does.
    pub fn take_in(&mut self, mask: u64) -> Option<(u32, SigInfo)> {
        let sig = pick(self.pending & mask).or_else(|| pick(self.shared & mask))?;
        Some((sig, self.take(sig)))
    }

    /// Would a signal cut short a wait of a thread with this mask and
    /// pending set?
    pub fn interrupts_thread(&self, blocked: u64, pending: u64) -> bool {
        let mut ready = self.ready_for(blocked, pending);
        while ready != 0 {
            let sig = ready.trailing_zeros() + 1;
            if !self.is_ignored(sig) {
                return true;
            }
            ready &= ready - 1;
        }
        false
    }

    /// Would a pending signal interrupt a blocking call of the running thread?
    pub fn interrupts(&self) -> bool {
        self.interrupts_thread(self.blocked, self.pending)
    }

    /// At execve: handlers are gone with the old program, so handled
    /// signals take their default action; ignored ones stay ignored. The
    /// alternate stack is gone too.
    pub fn exec(&mut self) {
        for a in self.actions.iter_mut() {
            if a.handler != SIG_IGN {
                *a = SigAction::default();
            }
        }
        self.altstack = AltStack { flags: SS_DISABLE, ..Default::default() };
    }

    /// Does the job leave its children to be reaped (SIGCHLD ignored, or
    /// SA_NOCLDWAIT)? Then its waits only wait for them all to end.
    pub fn reaps_children(&self) -> bool {
        let a = self.actions[SIGCHLD as usize];
        a.handler == SIG_IGN || a.flags & SA_NOCLDWAIT != 0
    }

    /// Drops pending signals that are ignored (Linux discards them on arrival).
    pub fn discard_ignored(&mut self) {
        for set in [self.pending, self.shared] {
            let mut p = set;
            while p != 0 {
                let sig = p.trailing_zeros() + 1;
                if self.is_ignored(sig) {
                    self.pending &= !bit(sig);
                    self.shared &= !bit(sig);
                }
                p &= p - 1;
            }
        }
    }
}

// ---- host signals forwarded to the job ----

static HOST_PENDING: AtomicU64 = AtomicU64::new(0);

/// Host signals a job receives as if sent to it: those a terminal, an
/// operator or the job's own processes (a child ending, a parent's kill)
/// send to the `mosvm` process.
pub const FORWARDED: [u32; 13] = [
    SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGTERM, SIGCHLD, SIGCONT, SIGTSTP, SIGTTIN, SIGTTOU, SIGWINCH,
];

extern "C" fn on_host_signal(sig: libc::c_int) {
    HOST_PENDING.fetch_or(bit(sig as u32), Ordering::SeqCst);
    crate::vcpu::interrupt_vcpu();
}

/// Routes the forwarded host signals to the running job. Call once, from
/// the process that runs a single job in the foreground (`mosvm run`).
pub fn forward_host_signals() {
    for sig in FORWARDED {
        // SAFETY: the handler only does async-signal-safe atomic stores. No
        // SA_RESTART: a blocking host call returns EINTR so the job sees it.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_host_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig as i32, &sa, std::ptr::null_mut());
        }
    }
}

/// Signals sent to the job from elsewhere (its home, over the deputy
/// link) arrive as if sent to this process: `mask` has a bit per signal.
pub fn post_host_signals(mask: u64) {
    if mask != 0 {
        HOST_PENDING.fetch_or(mask, Ordering::SeqCst);
        crate::vcpu::interrupt_vcpu();
    }
}

/// In a forked child: signals that arrived for the parent are not its own.
pub fn clear_host_signals() {
    HOST_PENDING.store(0, Ordering::SeqCst);
}

/// Have host signals arrived since the last `take_host_signals`?
pub fn host_signals_pending() -> bool {
    HOST_PENDING.load(Ordering::SeqCst) != 0
}

/// Takes the host signals that arrived since the last call.
pub fn take_host_signals() -> u64 {
    if HOST_PENDING.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    HOST_PENDING.swap(0, Ordering::SeqCst)
}

// ---- the signal frame ----

/// Offsets in struct rt_sigframe (x86-64): pretcode, then ucontext, then siginfo.
pub mod frame {
    pub const UC: u64 = 8;
    pub const UC_FLAGS: u64 = UC;
    pub const UC_STACK: u64 = UC + 16;
    pub const MCONTEXT: u64 = UC + 40;
    pub const UC_SIGMASK: u64 = UC + 296;
    pub const INFO: u64 = UC + 304;
    pub const SIZE: u64 = INFO + 128;

    /// Offsets inside struct sigcontext.
    pub const R8: u64 = 0;
    pub const RDI: u64 = 64;
    pub const RSI: u64 = 72;
    pub const RBP: u64 = 80;
    pub const RBX: u64 = 88;
    pub const RDX: u64 = 96;
    pub const RAX: u64 = 104;
    pub const RCX: u64 = 112;
    pub const RSP: u64 = 120;
    pub const RIP: u64 = 128;
    pub const EFLAGS: u64 = 136;
    pub const CSGSFS: u64 = 144;
    pub const ERR: u64 = 152;
    pub const TRAPNO: u64 = 160;
    pub const OLDMASK: u64 = 168;
    pub const CR2: u64 = 176;
    pub const FPSTATE: u64 = 184;
    pub const SIGCONTEXT_SIZE: u64 = 256;

    pub const UC_FP_XSTATE: u64 = 1;
    pub const UC_SIGCONTEXT_SS: u64 = 2;
    pub const UC_STRICT_RESTORE_SS: u64 = 4;

    pub const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
    pub const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
}

/// rflags bits a job may change through sigreturn.
pub const FIX_EFLAGS: u64 = 0x5_0dd5;

/// Writes the general registers into a struct sigcontext image.
pub fn save_regs(regs: &kvm_regs, sc: &mut [u8]) {
    let vals = [
        regs.r8,
        regs.r9,
        regs.r10,
        regs.r11,
        regs.r12,
        regs.r13,
        regs.r14,
        regs.r15,
        regs.rdi,
        regs.rsi,
        regs.rbp,
        regs.rbx,
        regs.rdx,
        regs.rax,
        regs.rcx,
        regs.rsp,
        regs.rip,
        regs.rflags,
    ];
    for (i, v) in vals.iter().enumerate() {
        sc[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
}

/// Reads the general registers back from a struct sigcontext image; rflags
/// only keeps the bits a job may set.
pub fn restore_regs(regs: &mut kvm_regs, sc: &[u8]) {
    let w = |i: usize| u64::from_le_bytes(sc[i * 8..i * 8 + 8].try_into().unwrap());
    regs.r8 = w(0);
    regs.r9 = w(1);
    regs.r10 = w(2);
    regs.r11 = w(3);
    regs.r12 = w(4);
    regs.r13 = w(5);
    regs.r14 = w(6);
    regs.r15 = w(7);
    regs.rdi = w(8);
    regs.rsi = w(9);
    regs.rbp = w(10);
    regs.rbx = w(11);
    regs.rdx = w(12);
    regs.rax = w(13);
    regs.rcx = w(14);
    regs.rsp = w(15);
    regs.rip = w(16);
    regs.rflags = (regs.rflags & !FIX_EFLAGS) | (w(17) & FIX_EFLAGS) | 0x202;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout_matches_linux() {
        assert_eq!(frame::SIZE, 440);
        assert_eq!(frame::MCONTEXT + frame::SIGCONTEXT_SIZE, frame::UC_SIGMASK);
        assert_eq!(frame::RIP, 16 * 8);
    }

    #[test]
    fn regs_round_trip_and_flags_are_sanitised() {
        let regs = kvm_regs { rax: 1, rip: 0x401000, rsp: 0x7fff0, r15: 15, rflags: 0x246, ..Default::default() };
        let mut sc = [0u8; 256];
        save_regs(&regs, &mut sc);
        // a job tries to set IOPL=3 through its frame
        sc[frame::EFLAGS as usize..frame::EFLAGS as usize + 8].copy_from_slice(&(0x3246u64).to_le_bytes());
        let mut back = kvm_regs { rflags: 0x202, ..Default::default() };
        restore_regs(&mut back, &sc);
        assert_eq!(back.rip, 0x401000);
        assert_eq!(back.r15, 15);
        assert_eq!(back.rflags & 0x3000, 0, "IOPL must not be settable");
        assert_eq!(back.rflags & 0x40, 0x40);
    }

    #[test]
    fn delivery_order_and_masks() {
        let mut s = Signals::default();
        s.raise(SIGUSR1, SigInfo::default());
        s.raise(SIGSEGV, SigInfo::default());
        assert_eq!(s.next_deliverable(), Some(SIGSEGV));
        s.blocked = bit(SIGSEGV) | bit(SIGUSR1);
        assert_eq!(s.next_deliverable(), None);
        s.raise(SIGKILL, SigInfo::default());
        s.blocked |= bit(SIGKILL);
        assert_eq!(s.next_deliverable(), Some(SIGKILL));
        let mut t = Signals::default();
        t.raise(SIGCHLD, SigInfo::default());
        assert!(!t.interrupts());
        t.discard_ignored();
        assert_eq!(t.pending, 0);
        assert_eq!(default_action(SIGABRT), DefaultAction::Core);
        // Process-wide signals go to a thread that does not block them,
        // after that thread's own.
        let mut p = Signals::default();
        p.raise_shared(SIGTERM, SigInfo::default());
        p.raise(SIGUSR2, SigInfo::default());
        assert_eq!(p.next_deliverable(), Some(SIGUSR2));
        p.take(SIGUSR2);
        p.blocked = bit(SIGTERM);
        assert_eq!(p.next_deliverable(), None);
        assert!(p.interrupts_thread(0, 0), "another thread could take it");
        p.blocked = 0;
        assert_eq!(p.next_deliverable(), Some(SIGTERM));
        p.take(SIGTERM);
        assert_eq!(p.shared, 0);
        assert_eq!(name(SIGSEGV), "SIGSEGV");
    }
}
