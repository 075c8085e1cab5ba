//! Signal system calls, and delivery: default actions, and handlers run on
//! an rt_sigframe built on the job's stack as Linux builds it.

use kvm_bindings::kvm_regs;

use crate::errno::{host, Errno, SysResult};
use crate::job::{Job, JobExit};
use crate::layout::{USER_CS, USER_DS};
use crate::signal::*;
use crate::vcpu::Vcpu;

pub const SIGRETURN_NR: u64 = libc::SYS_rt_sigreturn as u64;
const SIG_BLOCK: i32 = 0;
const SIG_UNBLOCK: i32 = 1;
const SIG_SETMASK: i32 = 2;
/// The red zone below a job's rsp that a signal frame must not touch.
const RED_ZONE: u64 = 128;

impl Job {
    fn check_sig(sig: u32) -> Result<(), Errno> {
        if sig == 0 || sig as usize > NSIG {
            Err(Errno::EINVAL)
        } else {
            Ok(())
        }
    }

    pub(super) fn sys_rt_sigaction(&mut self, sig: u32, act: u64, oact: u64, size: u64) -> SysResult {
        if size != 8 {
            return Err(Errno::EINVAL);
        }
        Self::check_sig(sig)?;
        let new = if act != 0 {
            if sig == SIGKILL || sig == SIGSTOP {
                return Err(Errno::EINVAL);
            }
            Some(SigAction::from_bytes(self.ram.user(act, 32)?))
        } else {
            None
        };
        if oact != 0 {
            self.ram.write_user(oact, &self.signals.actions[sig as usize].to_bytes())?;
        }
        if let Some(mut a) = new {
            a.mask &= !UNBLOCKABLE;
            self.signals.actions[sig as usize] = a;
            // Setting a signal to be ignored discards it if pending.
            self.signals.discard_ignored();
        }
        Ok(0)
    }

    pub(super) fn sys_rt_sigprocmask(&mut self, how: i32, set: u64, oset: u64, size: u64) -> SysResult {
        if size != 8 {
            return Err(Errno::EINVAL);
        }
        let new = if set != 0 { Some(self.ram.read_user_u64(set)?) } else { None };
        if oset != 0 {
            self.ram.write_user_u64(oset, self.signals.blocked)?;
        }
        if let Some(s) = new {
            let b = &mut self.signals.blocked;
            *b = match how {
                SIG_BLOCK => *b | s,
                SIG_UNBLOCK => *b & !s,
                SIG_SETMASK => s,
                _ => return Err(Errno::EINVAL),
            } & !UNBLOCKABLE;
        }
        Ok(0)
    }

    pub(super) fn sys_rt_sigpending(&mut self, set: u64, size: u64) -> SysResult {
        if size > 8 {
            return Err(Errno::EINVAL);
        }
        self.collect_events();
        let pending = (self.signals.pending | self.signals.shared) & self.signals.blocked;
        self.ram.write_user(set, &pending.to_le_bytes()[..size as usize])?;
        Ok(0)
    }

    pub(super) fn sys_rt_sigsuspend(&mut self, mask: u64, size: u64) -> SysResult {
        if size != 8 {
            return Err(Errno::EINVAL);
        }
        let m = self.ram.read_user_u64(mask)?;
        let saved = self.signals.blocked;
        self.signals.blocked = m & !UNBLOCKABLE;
        if self.has_threads() {
            // The handler that ends the wait runs with this mask; the old
            // one returns with it.
            self.saved_mask = Some(saved);
            return Err(self.park(crate::thread::Wait::Sleep { deadline: None, rem: 0 }));
        }
        let _ = self.sleep_until(None);
        if self.signals.interrupts() {
            // The handler runs with the temporary mask; the old one comes
            // back when it returns.
            self.saved_mask = Some(saved);
        } else {
            self.signals.blocked = saved;
        }
        Err(Errno::ERESTARTNOHAND)
    }

    pub(super) fn sys_pause(&mut self) -> SysResult {
        if self.has_threads() {
            return Err(self.park(crate::thread::Wait::Sleep { deadline: None, rem: 0 }));
        }
        let _ = self.sleep_until(None);
        Err(Errno::ERESTARTNOHAND)
    }

    pub(super) fn sys_sigaltstack(&mut self, ss: u64, old: u64) -> SysResult {
        let new = if ss != 0 {
            let b = self.ram.user(ss, 24)?;
            let st = AltStack {
                sp: u64::from_le_bytes(b[0..8].try_into().unwrap()),
                flags: i32::from_le_bytes(b[8..12].try_into().unwrap()),
                size: u64::from_le_bytes(b[16..24].try_into().unwrap()),
            };
            Some(st)
        } else {
            None
        };
        let cur = self.signals.altstack;
        let on = self.on_altstack(self.current_rsp);
        if old != 0 {
            let mut b = [0u8; 24];
            b[0..8].copy_from_slice(&cur.sp.to_le_bytes());
            let flags = if on { SS_ONSTACK } else { cur.flags };
            b[8..12].copy_from_slice(&flags.to_le_bytes());
            b[16..24].copy_from_slice(&cur.size.to_le_bytes());
            self.ram.write_user(old, &b)?;
        }
        if let Some(mut st) = new {
            if on {
                return Err(Errno::EPERM);
            }
            let mode = st.flags & !SS_AUTODISARM;
            if mode != 0 && mode != SS_DISABLE && mode != SS_ONSTACK {
                return Err(Errno::EINVAL);
            }
            if mode == SS_DISABLE {
                st = AltStack { flags: SS_DISABLE, ..Default::default() };
            } else if st.size < MINSIGSTKSZ {
                return Err(Errno::ENOMEM);
            } else {
                st.flags &= SS_AUTODISARM;
            }
            self.signals.altstack = st;
        }
        Ok(0)
    }

    fn on_altstack(&self, sp: u64) -> bool {
        let a = self.signals.altstack;
        a.flags & SS_DISABLE == 0 && sp > a.sp && sp - a.sp <= a.size
    }

    /// kill: the job itself is signalled here; other processes through
    /// the host, as long as the job runs at home, where their pids mean
    /// what the job thinks (its children, its parent, anyone the user may
    /// signal). The job's group is the job and its children.
    pub(super) fn sys_kill(&mut self, pid: i32, sig: u32) -> SysResult {
        if sig != 0 {
            Self::check_sig(sig)?;
        }
        let me = self.ids.pid as i32;
        if pid == me {
            return self.send_self(sig, SI_USER);
        }
        // SAFETY: getpid and getppid have no preconditions.
        let (host_pid, host_ppid) = unsafe { (libc::getpid(), libc::getppid()) };
        if pid > 0 {
            // Away from home (moved, or forked by a job that moved) pids
            // the job knows from home mean other processes here.
            let parent_here = pid != self.ids.ppid as i32 || pid == host_ppid;
            if me != host_pid || !parent_here {
                return Err(Errno::ESRCH);
            }
            // SAFETY: kill with plain integer arguments.
            return host(unsafe { libc::kill(pid, sig as i32) } as i64);
        }
        if pid == 0 || pid < -1 {
            // A process group (see `signal_group`).
            let (member, others) = self.signal_group((pid != 0).then(|| pid.unsigned_abs()), sig);
            return if member { self.send_self(sig, SI_USER) } else { others };
        }
        if pid == -1 {
            for child in self.children.pids() {
                // SAFETY: as above; a child that is already gone is fine.
                unsafe { libc::kill(child, sig as i32) };
            }
            return self.send_self(sig, SI_USER);
        }
        Err(Errno::ESRCH)
    }

    /// tgkill, and tkill with `tgid` -1.
    pub(super) fn sys_tgkill(&mut self, tgid: i32, tid: i32, sig: u32) -> SysResult {
        if tid <= 0 || tgid == 0 || tgid < -1 {
            return Err(Errno::EINVAL);
        }
        if tgid != -1 && tgid != self.ids.pid as i32 {
            return Err(Errno::ESRCH);
        }
        if sig != 0 {
            Self::check_sig(sig)?;
        }
        let info = SigInfo { code: SI_TKILL, addr: self.ids.pid as u64, ..Default::default() };
        let ignored = sig == 0 || self.signals.is_ignored(sig);
        if tid as u32 == self.tid {
            if !ignored {
                self.signals.raise(sig, info);
            }
            return Ok(0);
        }
        let p = self.threads.find(tid as u32).ok_or(Errno::ESRCH)?;
        if !ignored {
            if p.state.pending & bit(sig) == 0 {
                p.state.info[sig as usize] = info;
            }
            p.state.pending |= bit(sig);
        }
        Ok(0)
    }

    /// kill(2) of the job: a process-wide signal.
    fn send_self(&mut self, sig: u32, code: i32) -> SysResult {
        if sig == 0 {
            return Ok(0);
        }
        Self::check_sig(sig)?;
        if !self.signals.is_ignored(sig) {
            self.signals.raise_shared(sig, SigInfo { code, addr: self.ids.pid as u64, ..Default::default() });
        }
        Ok(0)
    }

    pub(super) fn sys_rt_sigreturn(&mut self, vcpu: &mut Vcpu, user: &mut kvm_regs) -> SysResult {
        // The handler's `ret` popped pretcode: the frame starts 8 below rsp.
        let frame = user.rsp.wrapping_sub(8);
        match self.restore_frame(vcpu, frame, user) {
            Ok(()) => Ok(user.rax),
            Err(_) => {
                self.force_signal(SIGSEGV, SigInfo { code: SI_KERNEL, ..Default::default() });
                Ok(user.rax)
            }
        }
    }

    fn restore_frame(&mut self, vcpu: &mut Vcpu, frame: u64, user: &mut kvm_regs) -> Result<(), Errno> {
        let uc = self.ram.user(frame, frame::SIZE)?;
        let sc_at = frame::MCONTEXT as usize;
        let sc = &uc[sc_at..sc_at + frame::SIGCONTEXT_SIZE as usize];
        let fpstate = u64::from_le_bytes(sc[frame::FPSTATE as usize..][..8].try_into().unwrap());
        let mask = u64::from_le_bytes(uc[frame::UC_SIGMASK as usize..][..8].try_into().unwrap());
        let mut restored = *user;
        restore_regs(&mut restored, sc);
        if fpstate != 0 {
            let size = self.features.xsave_size as u64;
            let bytes = self.ram.user(fpstate, size)?;
            vcpu.set_xsave_bytes(bytes).map_err(|_| Errno::EFAULT)?;
        }
        // sigaltstack as saved (only its enable state matters here).
        let st = &uc[frame::UC_STACK as usize..][..24];
        let flags = i32::from_le_bytes(st[8..12].try_into().unwrap());
        if self.signals.altstack.flags & SS_AUTODISARM != 0 || flags & SS_AUTODISARM != 0 {
            self.signals.altstack = AltStack {
                sp: u64::from_le_bytes(st[0..8].try_into().unwrap()),
                flags: flags & !SS_ONSTACK,
                size: u64::from_le_bytes(st[16..24].try_into().unwrap()),
            };
        }
        self.signals.blocked = mask & !UNBLOCKABLE;
        *user = restored;
        Ok(())
    }

    /// A signal caused by the job's own instruction: it cannot be blocked or
    /// ignored (Linux resets it to the default action then).
    pub fn force_signal(&mut self, sig: u32, info: SigInfo) {
        let blocked = self.signals.blocked & bit(sig) != 0;
        let ignored = self.signals.actions[sig as usize].handler == SIG_IGN;
        if blocked || ignored {
            self.signals.actions[sig as usize].handler = SIG_DFL;
            self.signals.blocked &= !bit(sig);
        }
        self.signals.raise(sig, info);
    }

    /// Delivers every deliverable pending signal before the job resumes at
    /// `user`: runs default actions, or builds handler frames.
    pub fn deliver_signals(&mut self, vcpu: &mut Vcpu, user: &mut kvm_regs) -> Result<(), JobExit> {
        self.collect_events();
        let restart = self.restart_nr.take();
        let mut handled = false;
        while let Some(sig) = self.signals.next_deliverable() {
            let info = self.signals.take(sig);
            let action = self.signals.actions[sig as usize];
            match action.handler {
                SIG_IGN if sig != SIGKILL => continue,
                SIG_DFL | SIG_IGN => match default_action(sig) {
                    DefaultAction::Ignore => continue,
                    DefaultAction::Stop => {
                        // Stop the whole VMM, as a stopped process; SIGCONT resumes it.
                        // SAFETY: raise has no memory preconditions.
                        unsafe { libc::raise(libc::SIGSTOP) };
                        continue;
                    }
                    DefaultAction::Terminate | DefaultAction::Core => {
                        return Err(JobExit::Signaled(sig));
                    }
                },
                _ => {
                    if let (Some(_), false) = (restart, handled) {
                        // The interrupted call fails with EINTR, or restarts
                        // after the handler if it asked for SA_RESTART.
                        let code = -(user.rax as i64);
                        if code == Errno::ERESTARTSYS.0 as i64 && action.flags & SA_RESTART != 0 {
                            user.rip -= 2;
                            user.rax = restart.unwrap();
                        } else {
                            user.rax = (-(libc::EINTR as i64)) as u64;
                        }
                    }
                    handled = true;
                    if let Err(e) = self.setup_frame(vcpu, user, sig, info, action) {
                        // No room for the frame: the job dies of SIGSEGV, as on Linux.
                        let _ = e;
                        return Err(JobExit::Signaled(SIGSEGV));
                    }
                }
            }
        }
        match restart {
            Some(nr) if !handled => {
                // No handler ran: restart the call transparently (a sleep
                // keeps its deadline).
                user.rip -= 2;
                user.rax = nr;
            }
            _ => self.restart_deadline = None,
        }
        Ok(())
    }

    fn setup_frame(
        &mut self,
        vcpu: &mut Vcpu,
        user: &mut kvm_regs,
        sig: u32,
        info: SigInfo,
        action: SigAction,
    ) -> Result<(), Errno> {
        if action.flags & SA_RESTORER == 0 {
            return Err(Errno::EFAULT);
        }
        let mut sp = user.rsp;
        let alt = self.signals.altstack;
        let use_alt = action.flags & SA_ONSTACK != 0 && alt.flags & SS_DISABLE == 0 && !self.on_altstack(sp);
        if use_alt {
            sp = alt.sp + alt.size;
        } else {
            sp = sp.wrapping_sub(RED_ZONE);
        }
        let xsize = self.features.xsave_size as u64;
        let fp = (sp.wrapping_sub(xsize + 4)) & !63;
        let frame = ((fp.wrapping_sub(frame::SIZE)) & !15).wrapping_sub(8);
        self.ram.check_user(frame, fp + xsize + 4 - frame)?;

        // FPU/SSE/AVX state, in the XSAVE layout Linux uses for signal frames.
        let mut xsave = vcpu.xsave_bytes();
        xsave.truncate(xsize as usize);
        {
            let sw = &mut xsave[464..512];
            sw[0..4].copy_from_slice(&frame::FP_XSTATE_MAGIC1.to_le_bytes());
            sw[4..8].copy_from_slice(&((xsize + 4) as u32).to_le_bytes());
            sw[8..16].copy_from_slice(&self.features.xcr0.to_le_bytes());
            sw[16..20].copy_from_slice(&(xsize as u32).to_le_bytes());
        }
        self.ram.write_user(fp, &xsave)?;
        self.ram.write_user_u32(fp + xsize, frame::FP_XSTATE_MAGIC2)?;

        let old_mask = self.saved_mask.take().unwrap_or(self.signals.blocked);
        let mut f = vec![0u8; frame::SIZE as usize];
        f[0..8].copy_from_slice(&action.restorer.to_le_bytes());
        let uc_flags = frame::UC_FP_XSTATE | frame::UC_SIGCONTEXT_SS | frame::UC_STRICT_RESTORE_SS;
        f[frame::UC_FLAGS as usize..][..8].copy_from_slice(&uc_flags.to_le_bytes());
        let st = &mut f[frame::UC_STACK as usize..][..24];
        st[0..8].copy_from_slice(&alt.sp.to_le_bytes());
        let st_flags = if self.on_altstack(user.rsp) { SS_ONSTACK } else { alt.flags };
        st[8..12].copy_from_slice(&st_flags.to_le_bytes());
        st[16..24].copy_from_slice(&alt.size.to_le_bytes());
        {
            let sc = &mut f[frame::MCONTEXT as usize..][..frame::SIGCONTEXT_SIZE as usize];
            save_regs(user, sc);
            let segs: u64 = USER_CS as u64 | ((USER_DS as u64) << 48);
            sc[frame::CSGSFS as usize..][..8].copy_from_slice(&segs.to_le_bytes());
            sc[frame::ERR as usize..][..8].copy_from_slice(&info.err.to_le_bytes());
            sc[frame::TRAPNO as usize..][..8].copy_from_slice(&info.trapno.to_le_bytes());
            sc[frame::OLDMASK as usize..][..8].copy_from_slice(&old_mask.to_le_bytes());
            let cr2 = if info.code > 0 { info.addr } else { 0 };
            sc[frame::CR2 as usize..][..8].copy_from_slice(&cr2.to_le_bytes());
            sc[frame::FPSTATE as usize..][..8].copy_from_slice(&fp.to_le_bytes());
        }
        f[frame::UC_SIGMASK as usize..][..8].copy_from_slice(&old_mask.to_le_bytes());
        f[frame::INFO as usize..][..128].copy_from_slice(&info.to_bytes(sig, self.ids.pid, self.ids.uid));
        self.ram.write_user(frame, &f)?;

        if alt.flags & SS_AUTODISARM != 0 && use_alt {
            self.signals.altstack = AltStack { flags: SS_DISABLE, ..Default::default() };
        }
        let mut mask = self.signals.blocked | action.mask;
        if action.flags & SA_NODEFER == 0 {
            mask |= bit(sig);
        }
        self.signals.blocked = mask & !UNBLOCKABLE;
        if action.flags & SA_RESETHAND != 0 {
            self.signals.actions[sig as usize].handler = SIG_DFL;
        }

        user.rdi = sig as u64;
        user.rsi = frame + frame::INFO;
        user.rdx = frame + frame::UC;
        user.rax = 0;
        user.rsp = frame;
        user.rip = action.handler;
        // Handlers start with DF, TF and RF clear.
        user.rflags &= !(0x400 | 0x100 | 0x1_0000);
        Ok(())
    }
}
