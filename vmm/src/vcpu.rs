//! The job's one vCPU: KVM_RUN, register access through the kvm_run sync
//! area (no GET/SET_REGS ioctls on the system-call path), and kicking the
//! vCPU out of KVM_RUN from a signal handler or another thread.

use std::cell::Cell;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use kvm_bindings::{kvm_cpuid_entry2, kvm_msr_entry, kvm_regs, kvm_run, kvm_sregs, Msrs, KVM_SYNC_X86_REGS};
use kvm_ioctls::{Cap, Kvm, SyncReg, VcpuExit, VcpuFd};
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

ioctl_iow_nr!(KVM_SET_DEVICE_ATTR, kvm_bindings::KVMIO, 0xe1, kvm_bindings::kvm_device_attr);

/// Why KVM_RUN returned, without borrowing the vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    IoOut {
        port: u16,
    },
    IoIn {
        port: u16,
    },
    /// A signal or a kick interrupted the guest.
    Interrupted,
    Halt,
    Shutdown,
    Other(u32),
}

thread_local! {
    /// The kvm_run of the vCPU this thread runs, for the kick handler.
    static RUN: Cell<*mut kvm_run> = const { Cell::new(null_mut()) };
}

/// The thread that last bound a vCPU (0: none), for signals that land on
/// another thread of the process.
static VCPU_THREAD: AtomicU64 = AtomicU64::new(0);

/// Signal used to kick a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN() + 1
}

/// Makes the current thread's KVM_RUN return (or not enter) and report
/// `Exit::Interrupted`. Async-signal-safe.
pub fn interrupt_current_thread() {
    RUN.with(|run| {
        let run = run.get();
        if !run.is_null() {
            // SAFETY: set by `Vcpu::bind` for this thread and cleared before
            // the kvm_run mapping goes away.
            unsafe { std::ptr::write_volatile(&mut (*run).immediate_exit, 1) };
        }
    });
}

/// For a host signal meant for the job: interrupts the vCPU, also when
/// the kernel gave the signal to another thread of the process (which
/// then passes it on as a kick). Async-signal-safe.
pub fn interrupt_vcpu() {
    if RUN.with(|run| !run.get().is_null()) {
        interrupt_current_thread();
        return;
    }
    let t = VCPU_THREAD.load(Ordering::Relaxed);
    if t != 0 {
        // SAFETY: pthread_kill is async-signal-safe; the thread is this process's vCPU thread.
        unsafe { libc::pthread_kill(t as libc::pthread_t, kick_signal()) };
    }
}

/// Makes the calling thread the one host signals for the job interrupt
/// (a deputy serving the job's site while its body runs elsewhere).
pub fn set_interrupt_target() {
    install_kick_handler();
    // SAFETY: pthread_self has no preconditions.
    VCPU_THREAD.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
}

/// In a forked child: the parent's vCPU is not this process's to kick
/// (its kvm_run page may even be shared with the parent).
pub fn unbind_after_fork() {
    RUN.with(|r| r.set(null_mut()));
    VCPU_THREAD.store(0, Ordering::SeqCst);
}

extern "C" fn on_kick(_: libc::c_int) {
    interrupt_current_thread();
}

/// Installs the kick handler once per process.
pub fn install_kick_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: a plain handler that only does an async-signal-safe store;
        // no SA_RESTART so that blocking host calls of the vCPU thread return EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, null_mut());
        }
    });
}

/// A handle other threads use to stop the vCPU.
#[derive(Clone)]
pub struct Kicker {
    thread: libc::pthread_t,
    pub requested: Arc<AtomicBool>,
}

impl Kicker {
    pub fn kick(&self) {
        self.requested.store(true, Ordering::SeqCst);
        // SAFETY: the vCPU thread outlives its Vm, which owns the last Kicker users.
        unsafe { libc::pthread_kill(self.thread, kick_signal()) };
    }
}

pub struct Vcpu {
    fd: VcpuFd,
    sync_regs: bool,
    regs_dirty: bool,
    bound: bool,
    requested: Arc<AtomicBool>,
}

impl Vcpu {
    pub fn new(fd: VcpuFd, kvm: &Kvm) -> Self {
        let sync_regs = kvm.check_extension(Cap::SyncRegs);
        let mut v =
            Vcpu { fd, sync_regs, regs_dirty: false, bound: false, requested: Arc::new(AtomicBool::new(false)) };
        if sync_regs {
            v.fd.set_sync_valid_reg(SyncReg::Register);
        }
        v
    }

    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Ties the vCPU to the calling thread so that kicks reach it. Call from
    /// the thread that runs it.
    pub fn bind(&mut self) -> Kicker {
        install_kick_handler();
        let run: *mut kvm_run = self.fd.get_kvm_run();
        RUN.with(|r| r.set(run));
        // SAFETY: pthread_self has no preconditions.
        VCPU_THREAD.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
        self.bound = true;
        Kicker {
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() },
            requested: self.requested.clone(),
        }
    }

    /// The flag a kick sets, for code that must notice kicks while blocked.
    pub fn kick_flag(&self) -> Arc<AtomicBool> {
        self.requested.clone()
    }

    /// Has a kick been requested (without taking it)?
    #[inline]
    pub fn kick_pending(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// Was a kick requested by another thread (and not yet taken)?
    pub fn take_kick(&self) -> bool {
        self.requested.swap(false, Ordering::SeqCst)
    }

    pub fn run(&mut self) -> Exit {
        let pending = self.regs_dirty.then(|| self.fd.sync_regs().regs);
        if pending.is_some() {
            self.fd.get_kvm_run().kvm_dirty_regs |= KVM_SYNC_X86_REGS as u64;
            self.regs_dirty = false;
        }
        let exit = match self.fd.run() {
            Ok(VcpuExit::IoOut(port, _)) => Exit::IoOut { port },
            Ok(VcpuExit::IoIn(port, _)) => Exit::IoIn { port },
            Ok(VcpuExit::Hlt) => Exit::Halt,
            Ok(VcpuExit::Shutdown) => Exit::Shutdown,
            Ok(VcpuExit::Intr) => Exit::Interrupted,
            Ok(VcpuExit::Unsupported(r)) => Exit::Other(r),
            Ok(other) => Exit::Other(exit_code(&other)),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Exit::Interrupted,
            Err(e) => Exit::Other(0x8000_0000 | e.errno() as u32),
        };
        let run = self.fd.get_kvm_run();
        run.immediate_exit = 0;
        // An entry cut short (a kick before the guest ran) may leave the
        // registers we set unapplied, and KVM then stores its own over them
        // in the sync area: apply them the slow way.
        if let Some(regs) = pending {
            if run.kvm_dirty_regs & KVM_SYNC_X86_REGS as u64 != 0 {
                run.kvm_dirty_regs &= !(KVM_SYNC_X86_REGS as u64);
                let _ = self.fd.set_regs(&regs);
                self.fd.sync_regs_mut().regs = regs;
            }
        }
        exit
    }

    /// General registers as of the last exit.
    pub fn regs(&mut self) -> kvm_regs {
        if self.sync_regs {
            self.fd.sync_regs().regs
        } else {
            self.fd.get_regs().expect("KVM_GET_REGS")
        }
    }

    /// Fresh registers after an interrupted run (the sync area is only
    /// guaranteed after a completed exit).
    pub fn regs_now(&mut self) -> kvm_regs {
        let r = self.fd.get_regs().expect("KVM_GET_REGS");
        if self.sync_regs {
            self.fd.sync_regs_mut().regs = r;
        }
        r
    }

    /// Registers for the next entry.
    pub fn set_regs(&mut self, regs: &kvm_regs) {
        if self.sync_regs {
            self.fd.sync_regs_mut().regs = *regs;
            self.regs_dirty = true;
        } else {
            self.fd.set_regs(regs).expect("KVM_SET_REGS");
        }
    }

    pub fn sregs(&self) -> kvm_sregs {
        self.fd.get_sregs().expect("KVM_GET_SREGS")
    }

    /// The FPU/SSE/AVX state in XSAVE layout (4 KiB).
    pub fn xsave_bytes(&self) -> Vec<u8> {
        match self.fd.get_xsave() {
            Ok(x) => x.region.iter().flat_map(|w| w.to_le_bytes()).collect(),
            Err(_) => vec![0; 4096],
        }
    }

    /// Loads FPU state from XSAVE-layout bytes (at most 4 KiB; the rest of
    /// the current state is kept). Fails if KVM rejects the image.
    pub fn set_xsave_bytes(&self, bytes: &[u8]) -> Result<(), kvm_ioctls::Error> {
        let mut x = self.fd.get_xsave()?;
        for (i, chunk) in bytes.chunks(4).take(x.region.len()).enumerate() {
            let mut w = x.region[i].to_le_bytes();
            w[..chunk.len()].copy_from_slice(chunk);
            x.region[i] = u32::from_le_bytes(w);
        }
        // SAFETY: a kvm_xsave of the legacy 4 KiB size, which KVM_SET_XSAVE accepts.
        unsafe { self.fd.set_xsave(&x) }
    }

    /// Makes the guest's TSC the host's (offset 0), so that the job's
    /// clocks, computed from the TSC in the guest and here, agree. The
    /// guest's TSC then jumps when the job moves, as under nested KVM it
    /// does anyway; the job's clocks do not. False if KVM cannot.
    pub fn use_host_tsc(&self) -> bool {
        let offset: u64 = 0;
        let attr = kvm_bindings::kvm_device_attr {
            flags: 0,
            group: kvm_bindings::KVM_VCPU_TSC_CTRL,
            attr: kvm_bindings::KVM_VCPU_TSC_OFFSET as u64,
            addr: &offset as *const u64 as u64,
        };
        // SAFETY: a vCPU fd and an attribute pointing at a live u64.
        unsafe { ioctl_with_ref(&self.fd, KVM_SET_DEVICE_ATTR(), &attr) == 0 }
    }

    /// The TSC rate for the job's clocks, where they may run on the TSC:
    /// the host keeps time with it and the guest's is the host's.
    /// MOSVM_CLOCK=host keeps them on the host's clock (every read an exit).
    pub fn clock_tsc_khz(&self) -> Option<u32> {
        let forced_host = std::env::var_os("MOSVM_CLOCK").is_some_and(|v| v == "host");
        if forced_host || !crate::clock::host_uses_tsc() || !self.use_host_tsc() {
            return None;
        }
        self.tsc_khz().filter(|&k| k > 0)
    }

    /// The FPU/SSE/AVX state of a fresh program (execve): x87 control
    /// and MXCSR at their reset values, every register zero.
    pub fn reset_fpu(&self) -> Result<(), kvm_ioctls::Error> {
        let mut x = self.fd.get_xsave()?;
        let mxcsr_mask = x.region[7];
        x.region.fill(0);
        x.region[0] = 0x037f; // FCW
        x.region[6] = 0x1f80; // MXCSR
        x.region[7] = mxcsr_mask;
        // XSTATE_BV: x87 and SSE from this image, the rest in init state.
        x.region[128] = 3;
        // SAFETY: a kvm_xsave of the legacy 4 KiB size, which KVM_SET_XSAVE accepts.
        unsafe { self.fd.set_xsave(&x) }
    }

    pub fn get_msr(&self, index: u32) -> u64 {
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry { index, ..Default::default() }]).expect("one MSR");
        match self.fd.get_msrs(&mut msrs) {
            Ok(1) => msrs.as_slice()[0].data,
            _ => 0,
        }
    }

    pub fn set_msr(&self, index: u32, data: u64) -> bool {
        let msrs = Msrs::from_entries(&[kvm_msr_entry { index, data, ..Default::default() }]).expect("one MSR");
        matches!(self.fd.set_msrs(&msrs), Ok(1))
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        if self.bound {
            RUN.with(|r| r.set(null_mut()));
        }
    }
}

/// MSRs that are part of a job's state (the TSC is handled apart).
const SAVED_MSRS: [u32; 10] = [
    crate::cpu::MSR_STAR,
    crate::cpu::MSR_LSTAR,
    crate::cpu::MSR_CSTAR,
    crate::cpu::MSR_SYSCALL_MASK,
    crate::cpu::MSR_FS_BASE,
    crate::cpu::MSR_GS_BASE,
    crate::cpu::MSR_KERNEL_GS_BASE,
    crate::cpu::MSR_IA32_MISC_ENABLE,
    0x277,       // PAT
    0xc000_0103, // TSC_AUX, read by rdtscp
];

/// A failed KVM call while saving or loading vCPU state.
#[derive(Debug, thiserror::Error)]
#[error("KVM {op} failed: {source}")]
pub struct StateError {
    pub op: &'static str,
    pub source: kvm_ioctls::Error,
}

fn op(op: &'static str) -> impl Fn(kvm_ioctls::Error) -> StateError {
    move |source| StateError { op, source }
}

impl Vcpu {
    /// Applies registers set for the next entry, so that KVM holds them.
    pub fn flush_regs(&mut self) {
        if self.regs_dirty {
            let r = self.fd.sync_regs().regs;
            let _ = self.fd.set_regs(&r);
            self.regs_dirty = false;
            self.fd.get_kvm_run().kvm_dirty_regs &= !(KVM_SYNC_X86_REGS as u64);
        }
    }

    /// The vCPU's state; call when it is not running.
    pub fn capture(&mut self, cpuid: &[kvm_cpuid_entry2]) -> Result<crate::state::VcpuState, StateError> {
        self.flush_regs();
        let fd = &self.fd;
        let mut msrs = Msrs::from_entries(
            &SAVED_MSRS
                .iter()
                .chain(&[crate::cpu::MSR_IA32_TSC])
                .map(|&index| kvm_msr_entry { index, ..Default::default() })
                .collect::<Vec<_>>(),
        )
        .expect("fixed MSR list");
        let n = fd.get_msrs(&mut msrs).map_err(op("KVM_GET_MSRS"))?;
        let got: Vec<(u32, u64)> = msrs.as_slice()[..n].iter().map(|e| (e.index, e.data)).collect();
        let tsc = got.iter().find(|e| e.0 == crate::cpu::MSR_IA32_TSC).map_or(0, |e| e.1);
        Ok(crate::state::VcpuState {
            regs: fd.get_regs().map_err(op("KVM_GET_REGS"))?,
            sregs: fd.get_sregs().map_err(op("KVM_GET_SREGS"))?,
            xsave: fd.get_xsave().map_err(op("KVM_GET_XSAVE"))?.region.iter().flat_map(|w| w.to_le_bytes()).collect(),
            xcrs: fd.get_xcrs().map_err(op("KVM_GET_XCRS"))?,
            msrs: got.into_iter().filter(|e| e.0 != crate::cpu::MSR_IA32_TSC).collect(),
            tsc,
            events: fd.get_vcpu_events().map_err(op("KVM_GET_VCPU_EVENTS"))?,
            mp_state: fd.get_mp_state().map_err(op("KVM_GET_MP_STATE"))?,
            cpuid: cpuid.to_vec(),
        })
    }

    /// Loads `state` into this fresh vCPU (its CPUID is already set, see
    /// `Machine::new`), with the guest TSC set to `tsc`.
    pub fn restore(&mut self, state: &crate::state::VcpuState, tsc: u64) -> Result<(), StateError> {
        let fd = &self.fd;
        fd.set_sregs(&state.sregs).map_err(op("KVM_SET_SREGS"))?;
        fd.set_xcrs(&state.xcrs).map_err(op("KVM_SET_XCRS"))?;
        let mut x = fd.get_xsave().map_err(op("KVM_GET_XSAVE"))?;
        for (i, chunk) in state.xsave.chunks_exact(4).take(x.region.len()).enumerate() {
            x.region[i] = u32::from_le_bytes(chunk.try_into().unwrap());
        }
        // SAFETY: a legacy-size kvm_xsave, as KVM_SET_XSAVE takes.
        unsafe { fd.set_xsave(&x) }.map_err(op("KVM_SET_XSAVE"))?;
        let entries: Vec<kvm_msr_entry> = state
            .msrs
            .iter()
            .chain(&[(crate::cpu::MSR_IA32_TSC, tsc)])
            .map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() })
            .collect();
        fd.set_msrs(&Msrs::from_entries(&entries).expect("fixed MSR list")).map_err(op("KVM_SET_MSRS"))?;
        fd.set_vcpu_events(&state.events).map_err(op("KVM_SET_VCPU_EVENTS"))?;
        fd.set_mp_state(state.mp_state).map_err(op("KVM_SET_MP_STATE"))?;
        fd.set_regs(&state.regs).map_err(op("KVM_SET_REGS"))?;
        if self.sync_regs {
            self.fd.sync_regs_mut().regs = state.regs;
        }
        self.regs_dirty = false;
        Ok(())
    }

    /// The host's TSC frequency as KVM gives the guest, in kHz.
    pub fn tsc_khz(&self) -> Option<u32> {
        self.fd.get_tsc_khz().ok()
    }
}

fn exit_code(exit: &VcpuExit) -> u32 {
    match exit {
        VcpuExit::MmioRead(..) | VcpuExit::MmioWrite(..) => kvm_bindings::KVM_EXIT_MMIO,
        VcpuExit::FailEntry(..) => kvm_bindings::KVM_EXIT_FAIL_ENTRY,
        VcpuExit::InternalError => kvm_bindings::KVM_EXIT_INTERNAL_ERROR,
        VcpuExit::Exception => kvm_bindings::KVM_EXIT_EXCEPTION,
        VcpuExit::SystemEvent(..) => kvm_bindings::KVM_EXIT_SYSTEM_EVENT,
        _ => kvm_bindings::KVM_EXIT_UNKNOWN,
    }
}
