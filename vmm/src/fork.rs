//! fork: a copy of the job in a new host process with its own micro-VM.
//!
//! The host's fork copies the VMM process, guest memory included (copy on
//! write: only pages either side writes get copied). A KVM VM belongs to
//! the process that made it, so the child makes a new one over its copy
//! of the memory and loads the parent's vCPU state into it; the job's
//! tables come along in the VMM's memory. The job's open files are host
//! descriptors, which the child shares with the parent as Linux shares
//! them. The child runs until its job ends, then ends its process the
//! same way (exit status, or death by the same signal), so the parent's
//! wait sees what it would on Linux.

use std::os::fd::RawFd;

use kvm_bindings::kvm_regs;

use crate::control::Control;
use crate::cpu::MSR_FS_BASE;
use crate::job::JobExit;
use crate::sys::ForkArgs;
use crate::vcpu::Vcpu;
use crate::vm::{create_machine, set_cpuid, Outcome, Vm, VmError};

/// The status a forked child ends with when its VMM fails.
const EXIT_VMM_FAILURE: i32 = 125;

/// Closes every descriptor of this process but `keep` (sorted).
fn close_all_but(keep: &[RawFd]) {
    let mut from = 0u32;
    for &fd in keep {
        let fd = fd as u32;
        if fd > from {
            // SAFETY: closes descriptors nobody in this process uses any more.
            unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0) };
        }
        from = fd + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0) };
}

impl Vm {
    /// fork/vfork/clone of a process, at the system call in `user`.
    /// Returns the registers to continue with: in the parent the call
    /// returns the child's pid (or an error), in the child 0.
    pub(crate) fn fork(&mut self, args: ForkArgs, user: &kvm_regs) -> Result<kvm_regs, VmError> {
        if self.job.site.is_remote() {
            // A child needs a site of its own: a second link to the
            // deputy. Not built yet: fail like a system at its process
            // limit, and say why.
            (self.job.log)("fork: a job away from home cannot make processes yet (EAGAIN)");
            let mut regs = *user;
            regs.rax = (-(libc::EAGAIN as i64)) as u64;
            return Ok(regs);
        }
        if self.job.signals.reaps_children() {
            // Nobody waits for them: do not let them pile up as zombies.
            self.job.children.reap_ended();
        }
        // RLIMIT_NPROC binds all but root, as on Linux; the cap binds all.
        let max = crate::children::MAX_JOB_PROCESSES;
        let limit = if self.job.ids.euid == 0 { max } else { self.job.rlimits[libc::RLIMIT_NPROC as usize].0.min(max) };
        if !crate::children::try_add_process(limit) {
            (self.job.log)(&format!("fork: the job has its limit of {limit} processes (EAGAIN)"));
            let mut regs = *user;
            regs.rax = (-(libc::EAGAIN as i64)) as u64;
            return Ok(regs);
        }
        let state = match self.vcpu.capture(&self.cpuid) {
            Ok(s) => s,
            Err(e) => {
                crate::children::process_ended();
                return Err(e.into());
            }
        };
        // No signal handler may run in the child before it let go of the
        // parent's vCPU.
        // SAFETY: sigset manipulation on local values.
        let (mut all, mut old): (libc::sigset_t, libc::sigset_t) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        // SAFETY: as above.
        unsafe {
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        }
        // SAFETY: the child only continues this thread's work; it touches
        // no lock another thread of the parent might have held.
        let pid = unsafe { libc::fork() };
        let mut regs = *user;
        if pid != 0 {
            // SAFETY: restores the mask saved above.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
            if pid < 0 {
                crate::children::process_ended();
                regs.rax = (-(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EAGAIN) as i64)) as u64;
                return Ok(regs);
            }
            self.job.children.add(pid);
            if args.flags & libc::CLONE_PARENT_SETTID as u64 != 0 {
                let _ = self.job.ram.write_user_u32(args.parent_tid, pid as u32);
            }
            regs.rax = pid as u64;
            return Ok(regs);
        }
        let r = self.become_child(args, &state);
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        r?;
        regs.rax = 0;
        if args.stack != 0 {
            regs.rsp = args.stack;
        }
        Ok(regs)
    }

    /// In the new process: a VM of our own, the job's identity as the
    /// child, and nothing of the parent's that is not the job's.
    fn become_child(&mut self, args: ForkArgs, state: &crate::state::VcpuState) -> Result<(), VmError> {
        crate::vcpu::unbind_after_fork();
        crate::signal::clear_host_signals();
        // The VMM's other descriptors (the parent's VM, its control socket,
        // its connections) are not the child's; the job's open files are.
        let mut keep = self.job.site.here(crate::errno::Errno::EAGAIN).map(|s| s.host_fds()).unwrap_or_default();
        keep.extend([0, 1, 2]);
        keep.sort_unstable();
        keep.dedup();
        close_all_but(&keep);
        // Their owners must not close them again: the numbers get reused.
        self.job.children.forget();
        std::mem::forget(std::mem::take(&mut self.job.timers));

        let (kvm, vm, vcpu_fd) = create_machine(&self.job.ram)?;
        set_cpuid(&vcpu_fd, &self.cpuid)?;
        let mut vcpu = Vcpu::new(vcpu_fd, &kvm);
        vcpu.restore(state, state.tsc)?;
        // The same host TSC: the job's clock (and its vvar page) carry on.
        if self.job.clock.tsc.is_some() && !vcpu.use_host_tsc() {
            return Err(VmError::Machine("cannot set the TSC offset of the new vCPU".into()));
        }
        if args.flags & libc::CLONE_SETTLS as u64 != 0 {
            vcpu.set_msr(MSR_FS_BASE, args.tls);
        }
        std::mem::forget(std::mem::replace(&mut self.vcpu, vcpu));
        std::mem::forget(std::mem::replace(&mut self._kvm, kvm));
        std::mem::forget(std::mem::replace(&mut self.vm_fd, std::sync::Arc::new(vm)));
        let (control, control_rx) = Control::new();
        std::mem::forget(std::mem::replace(&mut self.control, control));
        std::mem::forget(std::mem::replace(&mut self.control_rx, control_rx));
        self.throttle = 0;
        self.forked = true;

        let job = &mut self.job;
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        job.ids.ppid = job.ids.pid;
        job.ids.pid = pid;
        job.tid = pid;
        job.threads.parked.clear();
        job.threads.next_tid = pid + 1;
        if let crate::site::Site::Local { site, home } = &mut job.site {
            site.set_pid(pid);
            // The deputy serves the parent; the child stays at home.
            *home = None;
        }
        // Linux: pending signals are the parent's alone; the child's
        // robust list and clear-tid word come from clone's flags.
        job.signals.pending = 0;
        job.signals.shared = 0;
        job.robust_list = 0;
        job.tid_address = 0;
        if args.flags & libc::CLONE_CHILD_CLEARTID as u64 != 0 {
            job.tid_address = args.child_tid;
        }
        if args.flags & libc::CLONE_CHILD_SETTID as u64 != 0 {
            let _ = job.ram.write_user_u32(args.child_tid, pid);
        }
        job.kick = self.vcpu.kick_flag();
        job.pending_cputime = Some(0);
        self.control.set_kicker(self.vcpu.bind());
        self.job.attach_to_vcpu_thread();
        Ok(())
    }

    /// Ends a forked child's process as its job ended. Never returns.
    pub(crate) fn exit_forked(&self, result: Result<Outcome, VmError>) -> ! {
        crate::children::process_ended();
        let code = match result {
            Ok(Outcome::Exited(JobExit::Exited(code))) => code,
            Ok(Outcome::Exited(JobExit::Signaled(sig))) => die_by(sig),
            Ok(Outcome::Moved(_)) => 0,
            Err(e) => {
                (self.job.log)(&format!("process {}: {e}", self.job.ids.pid));
                EXIT_VMM_FAILURE
            }
        };
        // SAFETY: ends this process without running the parent's cleanup
        // (its buffers and handles are the parent's).
        unsafe { libc::_exit(code) }
    }
}

/// Ends this process by `sig` (no core file); returns the status to exit
/// with if the signal does not end it.
fn die_by(sig: u32) -> i32 {
    // SAFETY: plain process-state calls on this process.
    unsafe {
        let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(sig as i32, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig as i32);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig as i32);
    }
    128 + sig as i32
}
