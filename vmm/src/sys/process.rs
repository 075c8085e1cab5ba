//! Identity, limits, arch_prctl, futex and the other process calls a
//! single-threaded job makes.

use crate::cpu::{MSR_FS_BASE, MSR_GS_BASE};
use crate::errno::{host, Errno, SysResult};
use crate::job::Job;
use crate::vcpu::Vcpu;

const ARCH_SET_GS: i32 = 0x1001;
const ARCH_SET_FS: i32 = 0x1002;
const ARCH_GET_FS: i32 = 0x1003;
const ARCH_GET_GS: i32 = 0x1004;
const ARCH_GET_CPUID: i32 = 0x1011;

const FUTEX_WAIT: i32 = 0;
const FUTEX_WAKE: i32 = 1;
const FUTEX_REQUEUE: i32 = 3;
const FUTEX_CMP_REQUEUE: i32 = 4;
const FUTEX_WAKE_OP: i32 = 5;
const FUTEX_WAIT_BITSET: i32 = 9;
const FUTEX_WAKE_BITSET: i32 = 10;
const FUTEX_CLOCK_REALTIME: i32 = 256;

/// Threads a job may have (Linux's default per-user limit is far higher;
/// one vCPU runs them all).
const MAX_THREADS: usize = 4096;
const RLIMIT_DATA: u32 = 2;
const RLIMIT_STACK: u32 = 3;
const RLIMIT_NOFILE: u32 = 7;
const RLIMIT_AS: u32 = 9;
pub const RLIM_NLIMITS: usize = 16;
const RLIM_INFINITY: u64 = u64::MAX;

/// The resource limits a job starts with: the host's, with memory, stack
/// and descriptors as the VM actually provides them.
pub fn initial_rlimits(mem: u64, stack: u64) -> [(u64, u64); RLIM_NLIMITS] {
    let mut limits = [(RLIM_INFINITY, RLIM_INFINITY); RLIM_NLIMITS];
    for (i, l) in limits.iter_mut().enumerate() {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: valid resource number and out pointer.
        if unsafe { libc::getrlimit(i as _, &mut r) } == 0 {
            *l = (r.rlim_cur, r.rlim_max);
        }
    }
    limits[RLIMIT_STACK as usize] = (stack, stack);
    limits[RLIMIT_NOFILE as usize] = (crate::site::MAX_FDS as u64, crate::site::MAX_FDS as u64);
    limits[RLIMIT_AS as usize] = (mem, mem);
    limits[RLIMIT_DATA as usize] = (mem, mem);
    limits
}

impl Job {
    fn is_self(&self, pid: i32) -> bool {
        pid == 0 || pid == self.ids.pid as i32
    }

    pub(super) fn sys_getres(&mut self, a: [u64; 6], ids: [u32; 3]) -> SysResult {
        for (i, id) in ids.iter().enumerate() {
            self.ram.write_user_u32(a[i], *id)?;
        }
        Ok(0)
    }

    pub(super) fn sys_getgroups(&mut self, size: i32, list: u64) -> SysResult {
        let n = self.ids.groups.len();
        if size == 0 {
            return Ok(n as u64);
        }
        if (size as usize) < n || size < 0 {
            return Err(Errno::EINVAL);
        }
        let bytes: Vec<u8> = self.ids.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
        self.ram.write_user(list, &bytes)?;
        Ok(n as u64)
    }

    /// set*id: allowed only as a no-op (to the current ids).
    pub(super) fn sys_setid(&mut self, nr: u64, a: [u64; 6]) -> SysResult {
        let uids = [self.ids.uid, self.ids.euid, u32::MAX];
        let gids = [self.ids.gid, self.ids.egid, u32::MAX];
        let ok = |ids: &[u32], args: &[u64]| args.iter().all(|&x| ids.contains(&(x as u32)));
        let fine = match nr as i64 {
            libc::SYS_setuid | libc::SYS_setfsuid => ok(&uids, &a[..1]),
            libc::SYS_setreuid => ok(&uids, &a[..2]),
            libc::SYS_setresuid => ok(&uids, &a[..3]),
            libc::SYS_setgid | libc::SYS_setfsgid => ok(&gids, &a[..1]),
            libc::SYS_setregid => ok(&gids, &a[..2]),
            libc::SYS_setresgid => ok(&gids, &a[..3]),
            _ => false,
        };
        if fine {
            Ok(0)
        } else {
            Err(Errno::EPERM)
        }
    }

    pub(super) fn sys_getpgid(&mut self, nr: u64, pid: i32) -> SysResult {
        if !self.is_self(pid) {
            return Err(Errno::ESRCH);
        }
        Ok(if nr as i64 == libc::SYS_getsid { self.ids.sid } else { self.ids.pgid } as u64)
    }

    pub(super) fn sys_uname(&mut self, buf: u64) -> SysResult {
        self.ram.check_user(buf, 390)?;
        let mut u = [0u8; 390];
        // SAFETY: u is a struct utsname-sized buffer.
        host(unsafe { libc::uname(u.as_mut_ptr().cast()) } as i64)?;
        self.ram.write_user(buf, &u)?;
        Ok(0)
    }

    pub(super) fn sys_sysinfo(&mut self, buf: u64) -> SysResult {
        self.ram.check_user(buf, 112)?;
        let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
        // SAFETY: valid out pointer.
        host(unsafe { libc::sysinfo(&mut info) } as i64)?;
        // Memory as the job's VM has it.
        let used = self.mm.vmas().map(|(s, v)| v.end - s).sum::<u64>() + (self.mm.brk() - self.image_end);
        info.totalram = self.ram.size();
        info.freeram = self.ram.size().saturating_sub(used);
        info.sharedram = 0;
        info.bufferram = 0;
        info.totalswap = 0;
        info.freeswap = 0;
        info.mem_unit = 1;
        info.uptime = self.clock.monotonic() / 1_000_000_000;
        // SAFETY: plain old data of the size checked above.
        let bytes = unsafe { std::slice::from_raw_parts((&info as *const libc::sysinfo).cast::<u8>(), 112) };
        self.ram.write_user(buf, bytes)?;
        Ok(0)
    }

    pub(super) fn sys_prlimit(&mut self, pid: i32, resource: u32, new: u64, old: u64) -> SysResult {
        if !self.is_self(pid) {
            return Err(Errno::ESRCH);
        }
        let r = resource as usize;
        if r >= RLIM_NLIMITS {
            return Err(Errno::EINVAL);
        }
        let current = self.rlimits[r];
        let update = if new != 0 {
            let cur = self.ram.read_user_u64(new)?;
            let max = self.ram.read_user_u64(new + 8)?;
            if cur > max || max > current.1 {
                return Err(if cur > max { Errno::EINVAL } else { Errno::EPERM });
            }
            Some((cur, max))
        } else {
            None
        };
        if old != 0 {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&current.0.to_le_bytes());
            b[8..].copy_from_slice(&current.1.to_le_bytes());
            self.ram.write_user(old, &b)?;
        }
        if let Some(l) = update {
            self.rlimits[r] = l;
        }
        Ok(0)
    }

    pub(super) fn sys_getrusage(&mut self, who: i32, buf: u64) -> SysResult {
        if !matches!(who, libc::RUSAGE_SELF | libc::RUSAGE_CHILDREN | libc::RUSAGE_THREAD) {
            return Err(Errno::EINVAL);
        }
        self.ram.check_user(buf, 144)?;
        let mut b = [0u8; 144];
        if who != libc::RUSAGE_CHILDREN {
            let cpu = self.clock.cputime();
            b[0..8].copy_from_slice(&(cpu / 1_000_000_000).to_le_bytes());
            b[8..16].copy_from_slice(&((cpu % 1_000_000_000) / 1000).to_le_bytes());
            // ru_maxrss in KiB: the job's resident memory as the host sees it.
            let rss = self.touched_bytes() / 1024;
            b[32..40].copy_from_slice(&rss.to_le_bytes());
        }
        self.ram.write_user(buf, &b)?;
        Ok(0)
    }

    pub(super) fn sys_times(&mut self, buf: u64) -> SysResult {
        let ticks = |ns: i64| (ns / 10_000_000) as u64;
        if buf != 0 {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&ticks(self.clock.cputime()).to_le_bytes());
            self.ram.write_user(buf, &b)?;
        }
        Ok(ticks(self.clock.monotonic()))
    }

    pub(super) fn sys_arch_prctl(&mut self, vcpu: &mut Vcpu, code: i32, addr: u64) -> SysResult {
        let canonical = addr < 0x0000_8000_0000_0000;
        match code {
            ARCH_SET_FS | ARCH_SET_GS => {
                if !canonical {
                    return Err(Errno::EPERM);
                }
                let msr = if code == ARCH_SET_FS { MSR_FS_BASE } else { MSR_GS_BASE };
                if vcpu.set_msr(msr, addr) {
                    Ok(0)
                } else {
                    Err(Errno::EINVAL)
                }
            }
            ARCH_GET_FS | ARCH_GET_GS => {
                let msr = if code == ARCH_GET_FS { MSR_FS_BASE } else { MSR_GS_BASE };
                let value = vcpu.get_msr(msr);
                self.ram.write_user_u64(addr, value)?;
                Ok(0)
            }
            ARCH_GET_CPUID => Ok(1),
            _ => Err(Errno::EINVAL),
        }
    }

    pub(super) fn sys_get_robust_list(&mut self, pid: i32, head: u64, len: u64) -> SysResult {
        if !self.is_self(pid) {
            return Err(Errno::ESRCH);
        }
        self.ram.write_user_u64(head, self.robust_list)?;
        self.ram.write_user_u64(len, 24)?;
        Ok(0)
    }

    /// futex. Waiters are parked threads; with no other thread to run, a
    /// wait whose value matches sleeps until its timeout or a signal.
    pub(super) fn sys_futex(
        &mut self,
        uaddr: u64,
        op: i32,
        val: u32,
        timeout: u64,
        uaddr2: u64,
        val3: u32,
    ) -> SysResult {
        if !uaddr.is_multiple_of(4) {
            return Err(Errno::EINVAL);
        }
        let cmd = op & 127;
        // For the requeue and wake-op commands the timeout slot is a count.
        let val2 = timeout as u32;
        match cmd {
            FUTEX_WAIT | FUTEX_WAIT_BITSET => {
                let bitset = if cmd == FUTEX_WAIT { u32::MAX } else { val3 };
                if bitset == 0 {
                    return Err(Errno::EINVAL);
                }
                if self.ram.read_user_u32(uaddr)? != val {
                    return Err(Errno::EAGAIN);
                }
                let deadline = if timeout == 0 {
                    None
                } else {
                    let t = crate::clock::Timespec::from_bytes(self.ram.user(timeout, 16)?)?;
                    Some(if cmd == FUTEX_WAIT {
                        self.clock.monotonic() + t.as_nanos()
                    } else if op & FUTEX_CLOCK_REALTIME != 0 {
                        let now_real = self.clock.now(libc::CLOCK_REALTIME)?.as_nanos();
                        self.clock.monotonic() + (t.as_nanos() - now_real)
                    } else {
                        t.as_nanos()
                    })
                };
                if self.has_threads() {
                    let wait = crate::thread::Wait::Futex { addr: uaddr, bitset, deadline };
                    return Err(self.park(wait));
                }
                match self.sleep_until(deadline) {
                    Ok(()) => Err(Errno::ETIMEDOUT),
                    Err(e) => Err(if e == Errno::ERESTARTSYS && deadline.is_some() { Errno::EINTR } else { e }),
                }
            }
            FUTEX_WAKE => Ok(self.futex_wake(uaddr, val, u32::MAX) as u64),
            FUTEX_WAKE_BITSET => {
                if val3 == 0 {
                    return Err(Errno::EINVAL);
                }
                Ok(self.futex_wake(uaddr, val, val3) as u64)
            }
            FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
                if cmd == FUTEX_CMP_REQUEUE && self.ram.read_user_u32(uaddr)? != val3 {
                    return Err(Errno::EAGAIN);
                }
                let woken = self.futex_wake(uaddr, val, u32::MAX);
                let moved = self.futex_requeue(uaddr, uaddr2, val2);
                Ok((woken + moved) as u64)
            }
            FUTEX_WAKE_OP => {
                let old = self.ram.read_user_u32(uaddr2)?;
                let oparg_raw = (val3 >> 12) & 0xfff;
                let oparg = if (val3 >> 28) & 8 != 0 { 1u32 << oparg_raw.min(31) } else { oparg_raw };
                let new = match (val3 >> 28) & 7 {
                    0 => oparg,
                    1 => old.wrapping_add(oparg),
                    2 => old | oparg,
                    3 => old & !oparg,
                    4 => old ^ oparg,
                    _ => return Err(Errno::ENOSYS),
                };
                self.ram.write_user_u32(uaddr2, new)?;
                let cmparg = val3 & 0xfff;
                let hit = match (val3 >> 24) & 0xf {
                    0 => old == cmparg,
                    1 => old != cmparg,
                    2 => old < cmparg,
                    3 => old <= cmparg,
                    4 => old > cmparg,
                    5 => old >= cmparg,
                    _ => return Err(Errno::ENOSYS),
                };
                let mut woken = self.futex_wake(uaddr, val, u32::MAX);
                if hit {
                    woken += self.futex_wake(uaddr2, val2, u32::MAX);
                }
                Ok(woken as u64)
            }
            _ => Err(Errno::ENOSYS),
        }
    }

    /// clone(2) for threads: a new thread of this job, sharing everything
    /// but its registers, stack, TLS and signal state. Other kinds (fork,
    /// vfork) are not supported.
    pub(super) fn sys_clone(&mut self, vcpu: &mut Vcpu, user: &kvm_bindings::kvm_regs, a: [u64; 6]) -> SysResult {
        let (flags, stack, parent_tid, child_tid, tls) = (a[0], a[1], a[2], a[3], a[4]);
        let need = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        if flags & need != need {
            self.unsupported(libc::SYS_clone as u64);
            return Err(Errno::ENOSYS);
        }
        if self.threads.parked.len() + 1 >= MAX_THREADS {
            return Err(Errno::EAGAIN);
        }
        let tid = self.threads.next_tid;
        self.threads.next_tid += 1;
        if flags & libc::CLONE_PARENT_SETTID as u64 != 0 {
            self.ram.write_user_u32(parent_tid, tid)?;
        }
        if flags & libc::CLONE_CHILD_SETTID as u64 != 0 {
            self.ram.write_user_u32(child_tid, tid)?;
        }
        let mut state = crate::thread::ThreadState::new(tid, self.signals.blocked);
        if flags & libc::CLONE_CHILD_CLEARTID as u64 != 0 {
            state.clear_child_tid = child_tid;
        }
        // The child returns from the same call with 0, on its own stack.
        let mut regs = *user;
        regs.rax = 0;
        if stack != 0 {
            regs.rsp = stack;
        }
        let fs_base = if flags & libc::CLONE_SETTLS as u64 != 0 { tls } else { vcpu.get_msr(MSR_FS_BASE) };
        self.threads.parked.push_back(crate::thread::Parked {
            state,
            regs,
            fs_base,
            gs_base: vcpu.get_msr(MSR_GS_BASE),
            fpu: vcpu.xsave_bytes(),
        });
        Ok(tid as u64)
    }

    pub(super) fn sys_sched_getaffinity(&mut self, pid: i32, len: u64, mask: u64) -> SysResult {
        if !self.is_self(pid) {
            return Err(Errno::ESRCH);
        }
        if len < 8 || !len.is_multiple_of(8) {
            return Err(Errno::EINVAL);
        }
        self.ram.write_user_u64(mask, 1)?;
        Ok(8)
    }

    pub(super) fn sys_getcpu(&mut self, cpu: u64, node: u64) -> SysResult {
        if cpu != 0 {
            self.ram.write_user_u32(cpu, 0)?;
        }
        if node != 0 {
            self.ram.write_user_u32(node, 0)?;
        }
        Ok(0)
    }

    pub(super) fn sys_prctl(&mut self, option: i32, arg2: u64, _arg3: u64) -> SysResult {
        match option {
            libc::PR_SET_NAME => {
                let name = self.ram.user_cstr(arg2, 15)?;
                let name = name.unwrap_or_else(|| self.ram.user(arg2, 15).unwrap_or(&[]));
                self.comm = [0; 16];
                self.comm[..name.len()].copy_from_slice(name);
                Ok(0)
            }
            libc::PR_GET_NAME => {
                self.ram.write_user(arg2, &self.comm)?;
                Ok(0)
            }
            libc::PR_GET_DUMPABLE => Ok(1),
            libc::PR_SET_DUMPABLE | libc::PR_SET_PDEATHSIG | libc::PR_SET_NO_NEW_PRIVS => Ok(0),
            libc::PR_GET_NO_NEW_PRIVS | libc::PR_GET_PDEATHSIG => Ok(0),
            _ => Err(Errno::EINVAL),
        }
    }

    pub(super) fn sys_getrandom(&mut self, buf: u64, len: u64, flags: u32) -> SysResult {
        if flags & !(libc::GRND_NONBLOCK | libc::GRND_RANDOM | libc::GRND_INSECURE) != 0 {
            return Err(Errno::EINVAL);
        }
        let len = len.min(33_554_431);
        let mut out = self.ram.user_mut(buf, len)?;
        // SAFETY: out is valid for its length.
        let r = host(unsafe { libc::getrandom(out.as_mut_ptr().cast(), out.len(), flags) } as i64);
        out.commit(*r.as_ref().unwrap_or(&0) as usize);
        r
    }
}
