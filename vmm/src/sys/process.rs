//! Identity, limits, arch_prctl, futex and the other process calls a
//! single-threaded job makes.

use crate::cpu::{MSR_FS_BASE, MSR_GS_BASE};
use crate::errno::{host, Errno, SysResult};
use crate::job::Job;
use crate::vcpu::Vcpu;
use agent::vdso::{vvar, VVAR_ADDR};

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
const RLIMIT_STACK: u32 = 3;
const RLIMIT_NOFILE: u32 = 7;
pub const RLIM_NLIMITS: usize = 16;
const RLIM_INFINITY: u64 = u64::MAX;

type Limits = [(u64, u64); RLIM_NLIMITS];

fn host_limits() -> Limits {
    let mut limits = [(RLIM_INFINITY, RLIM_INFINITY); RLIM_NLIMITS];
    for (i, l) in limits.iter_mut().enumerate() {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: valid resource number and out pointer.
        if unsafe { libc::getrlimit(i as _, &mut r) } == 0 {
            *l = (r.rlim_cur, r.rlim_max);
        }
    }
    limits
}

/// This process's limits as exec gave them: the caller's. Taken before
/// main, because the VMM raises its own RLIMIT_NOFILE soft limit to the
/// hard one later (its descriptors must not eat into the job's).
static CALLER_LIMITS: std::sync::OnceLock<Limits> = std::sync::OnceLock::new();

extern "C" fn at_process_start() {
    CALLER_LIMITS.get_or_init(host_limits);
    // /proc/cpuinfo too, while this process still has /proc (a confined
    // body has none).
    crate::procfs::take_host_cpuinfo();
}

#[used]
#[link_section = ".init_array"]
static AT_PROCESS_START: extern "C" fn() = at_process_start;

/// The resource limits a job starts with: the caller's. Only the stack's
/// soft limit is the VM's if that is lower (the stack region is fixed when
/// the job starts); memory limits stay the caller's, as the guest's RAM is
/// the machine's size, which sysinfo and /proc/meminfo report.
pub fn initial_rlimits(_mem: u64, stack: u64) -> Limits {
    // Keeps the constructor's section in the link.
    std::hint::black_box(&AT_PROCESS_START);
    let mut limits = *CALLER_LIMITS.get_or_init(host_limits);
    let s = &mut limits[RLIMIT_STACK as usize];
    s.0 = s.0.min(stack);
    // Descriptors: as many as the site numbers (the caller's soft limit,
    // within Linux's nr_open).
    let nofile = &mut limits[RLIMIT_NOFILE as usize];
    nofile.0 = nofile.0.min(crate::site::NR_OPEN);
    limits
}

const UTSNAME_LEN: usize = agent::vdso::vvar::UTSNAME_LEN;

/// This process's job's utsname (one job per VMM process), to write back
/// into a vvar page that execve cleared.
static JOB_UTSNAME: std::sync::OnceLock<[u8; UTSNAME_LEN]> = std::sync::OnceLock::new();

fn host_uname() -> [u8; UTSNAME_LEN] {
    let mut u = [0u8; UTSNAME_LEN];
    // SAFETY: u is a struct utsname-sized buffer.
    if unsafe { libc::uname(u.as_mut_ptr().cast()) } != 0 {
        u[..5].copy_from_slice(b"Linux");
    }
    u
}

/// User and system time of this process's waited-for children (ns).
fn host_children_times() -> (i64, i64) {
    // SAFETY: a zeroed rusage is a valid out buffer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return (0, 0);
    }
    let ns = |t: libc::timeval| t.tv_sec * 1_000_000_000 + t.tv_usec * 1000;
    (ns(ru.ru_utime), ns(ru.ru_stime))
}

/// How a session or group change ended at the host (errno on failure).
fn host_call(r: libc::c_int) -> Result<u64, Errno> {
    host(r as i64)
}

impl Job {
    /// Is the job's process this host process (the job at home, or a
    /// process it forked there)? Then its process group and session are
    /// the host process's own, so that the host's job control, kill of a
    /// group and waits for a group see what the job set. Away from home
    /// they are the job's alone (it has no other processes there).
    fn process_is_here(&self) -> bool {
        // SAFETY: getpid has no preconditions.
        self.ids.pid == unsafe { libc::getpid() } as u32
    }

    /// A process of the job this one may ask the host about: itself, a
    /// child, or (at home) its parent.
    fn known_process(&self, pid: i32) -> bool {
        pid == self.ids.pid as i32 || pid == self.ids.ppid as i32 || self.children.pids().any(|c| c == pid)
    }

    /// setpgid(2). Linux's rules: the target is the caller or a child, not
    /// a session leader, in the caller's session, and the group joined is
    /// new (pgid = pid) or exists in that session.
    pub(super) fn sys_setpgid(&mut self, pid: i32, pgid: i32) -> SysResult {
        let me = self.ids.pid as i32;
        let pid = if pid == 0 { me } else { pid };
        let pgid = if pgid == 0 { pid } else { pgid };
        if pgid < 0 {
            return Err(Errno::EINVAL);
        }
        if pid != me && (pid < 0 || !self.children.pids().any(|c| c == pid)) {
            return Err(Errno::ESRCH);
        }
        if self.process_is_here() {
            // SAFETY: plain integer arguments; the host applies the rules.
            host_call(unsafe { libc::setpgid(pid, pgid) })?;
            if pid == me {
                self.ids.pgid = pgid as u32;
            }
            return Ok(0);
        }
        // Away: the only process of the job here is this one.
        if self.ids.sid == self.ids.pid {
            return Err(Errno::EPERM);
        }
        if pgid != me && pgid as u32 != self.ids.pgid {
            return Err(Errno::EPERM);
        }
        self.ids.pgid = pgid as u32;
        Ok(0)
    }

    /// setsid(2): a new session and group led by the caller, unless it
    /// leads a group already (EPERM).
    pub(super) fn sys_setsid(&mut self) -> SysResult {
        if self.process_is_here() {
            // SAFETY: no arguments.
            host_call(unsafe { libc::setsid() })?;
        } else if self.ids.pgid == self.ids.pid {
            return Err(Errno::EPERM);
        }
        self.ids.sid = self.ids.pid;
        self.ids.pgid = self.ids.pid;
        Ok(self.ids.pid as u64)
    }

    /// getpgid(2) and getsid(2). At home the host knows the current
    /// answer (a parent may have moved a child to another group); the
    /// job's own record follows it.
    pub(super) fn sys_getpgid(&mut self, nr: u64, pid: i32) -> SysResult {
        let sid = nr as i64 == libc::SYS_getsid;
        let pid = if pid == 0 { self.ids.pid as i32 } else { pid };
        if pid < 0 || !self.known_process(pid) {
            return Err(Errno::ESRCH);
        }
        if !self.process_is_here() {
            if pid != self.ids.pid as i32 {
                return Err(Errno::ESRCH);
            }
            return Ok(if sid { self.ids.sid } else { self.ids.pgid } as u64);
        }
        // SAFETY: plain integer argument.
        let v = host_call(unsafe {
            if sid {
                libc::getsid(pid)
            } else {
                libc::getpgid(pid)
            }
        })?;
        if pid == self.ids.pid as i32 {
            if sid {
                self.ids.sid = v as u32;
            } else {
                self.ids.pgid = v as u32;
            }
        }
        Ok(v)
    }

    /// Before the job runs here (started, forked, restored, or back
    /// home): its utsname is in its memory (see `keep_uname`), a site served in this process numbers descriptors below the
    /// job's RLIMIT_NOFILE (a restored site starts with this process's),
    /// and the host process takes up the group and session the job made
    /// for itself while away.
    pub fn sync_with_host(&mut self) {
        self.keep_uname();
        let nofile = self.rlimits[RLIMIT_NOFILE as usize].0;
        if let crate::site::Site::Local { site, .. } = &mut self.site {
            if site.fd_limit() != nofile {
                crate::site::SiteOps::set_fd_limit(site, nofile);
            }
        }
        if !self.process_is_here() {
            return;
        }
        // SAFETY: plain process-state calls on this process.
        unsafe {
            if self.ids.sid == self.ids.pid && libc::getsid(0) as u32 != self.ids.pid {
                libc::setsid();
            } else if self.ids.pgid == self.ids.pid && libc::getpgrp() as u32 != self.ids.pid {
                libc::setpgid(0, 0);
            }
            self.ids.sid = libc::getsid(0) as u32;
            self.ids.pgid = libc::getpgrp() as u32;
        }
    }

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

    /// uname(2): the system the job started on, wherever its body runs
    /// now (a job keeps its home's host name, as /proc/sys/kernel/hostname,
    /// served by the home, also says).
    pub(super) fn sys_uname(&mut self, buf: u64) -> SysResult {
        self.ram.check_user(buf, UTSNAME_LEN as u64)?;
        let u = self.keep_uname();
        self.ram.write_user(buf, &u)?;
        Ok(0)
    }

    /// The job's utsname, from the vvar page where it travels with the
    /// job; written there (from this process's copy, or the host's) when
    /// the page has none: at start, after an execve (fresh memory), or
    /// for a job moved from a VMM that did not keep it.
    pub fn keep_uname(&self) -> [u8; UTSNAME_LEN] {
        let slot = VVAR_ADDR + vvar::UTSNAME as u64;
        let mut u = [0u8; UTSNAME_LEN];
        if let Ok(b) = self.ram.slice(slot, UTSNAME_LEN as u64) {
            u.copy_from_slice(b);
        }
        if u[0] != 0 {
            JOB_UTSNAME.get_or_init(|| u);
            return u;
        }
        let u = *JOB_UTSNAME.get_or_init(host_uname);
        let _ = self.ram.write(slot, &u);
        u
    }

    /// sysinfo(2): the job's machine, as /proc/meminfo, /proc/uptime and
    /// /proc/loadavg describe it (`Job::machine`).
    pub(super) fn sys_sysinfo(&mut self, buf: u64) -> SysResult {
        self.ram.check_user(buf, 112)?;
        let m = self.machine();
        // SAFETY: all-zero is a valid sysinfo.
        let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
        info.uptime = m.uptime / 1_000_000_000;
        info.loads = m.loads;
        info.totalram = m.total;
        info.freeram = m.free;
        info.procs = m.procs;
        info.mem_unit = 1;
        // SAFETY: plain old data of the size checked above.
        let bytes = unsafe { std::slice::from_raw_parts((&info as *const libc::sysinfo).cast::<u8>(), 112) };
        self.ram.write_user(buf, bytes)?;
        Ok(0)
    }

    /// getrlimit, setrlimit and prlimit64 of the job itself. As on Linux,
    /// only a privileged caller raises a hard limit; RLIMIT_NOFILE is also
    /// the site's: new descriptors are numbered below it.
    pub(super) fn sys_prlimit(&mut self, pid: i32, resource: u32, new: u64, old: u64) -> SysResult {
        if !self.is_own_task(pid) {
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
            if cur > max {
                return Err(Errno::EINVAL);
            }
            if max > current.1 && self.ids.euid != 0 {
                return Err(Errno::EPERM);
            }
            if resource == RLIMIT_NOFILE && max > crate::site::NR_OPEN {
                return Err(Errno::EPERM);
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
            if resource == RLIMIT_NOFILE {
                self.site.set_fd_limit(l.0);
            }
        }
        Ok(0)
    }

    /// getrusage(2). The job's own CPU time is its vCPU's; its children
    /// are host processes, whose times the host keeps.
    pub(super) fn sys_getrusage(&mut self, who: i32, buf: u64) -> SysResult {
        if !matches!(who, libc::RUSAGE_SELF | libc::RUSAGE_CHILDREN | libc::RUSAGE_THREAD) {
            return Err(Errno::EINVAL);
        }
        self.ram.check_user(buf, 144)?;
        let mut b = [0u8; 144];
        let timeval = |b: &mut [u8], ns: i64| {
            b[0..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
            b[8..16].copy_from_slice(&((ns % 1_000_000_000) / 1000).to_le_bytes());
        };
        if who == libc::RUSAGE_CHILDREN {
            let (user, system) = host_children_times();
            timeval(&mut b[0..16], user);
            timeval(&mut b[16..32], system);
        } else {
            timeval(&mut b[0..16], self.clock.cputime());
            // ru_maxrss in KiB: the job's resident memory as the host sees it.
            let rss = self.touched_bytes() / 1024;
            b[32..40].copy_from_slice(&rss.to_le_bytes());
        }
        self.ram.write_user(buf, &b)?;
        Ok(0)
    }

    /// times(2): clock ticks (100 Hz) since the machine started.
    pub(super) fn sys_times(&mut self, buf: u64) -> SysResult {
        let ticks = |ns: i64| (ns / 10_000_000) as u64;
        if buf != 0 {
            let (cuser, csystem) = host_children_times();
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&ticks(self.clock.cputime()).to_le_bytes());
            b[16..24].copy_from_slice(&ticks(cuser).to_le_bytes());
            b[24..32].copy_from_slice(&ticks(csystem).to_le_bytes());
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

    /// The job itself or one of its threads (sched_* and prlimit take either).
    fn is_own_task(&self, pid: i32) -> bool {
        self.is_self(pid) || pid == self.tid as i32 || self.threads.parked.iter().any(|p| p.state.tid as i32 == pid)
    }

    /// The host thread getpriority/setpriority act on for `which`/`who`:
    /// the vCPU thread (0) for the job itself (every thread of the job
    /// runs on it), a child's process at home; None if `who` is no
    /// process the job has.
    fn priority_target(&self, which: i32, who: i32) -> Result<i32, Errno> {
        match which as u32 {
            libc::PRIO_PROCESS => {
                if who == 0 || self.is_own_task(who) {
                    Ok(0)
                } else if who > 0 && self.children.pids().any(|c| c == who) {
                    Ok(who)
                } else {
                    Err(Errno::ESRCH)
                }
            }
            // The job's own group or user: the job is the one here.
            libc::PRIO_PGRP | libc::PRIO_USER => {
                let own = who == 0
                    || (which as u32 == libc::PRIO_PGRP && who as u32 == self.ids.pgid)
                    || (which as u32 == libc::PRIO_USER && who as u32 == self.ids.uid);
                if own {
                    Ok(0)
                } else {
                    Err(Errno::ESRCH)
                }
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// getpriority(2): the nice value the job runs at (the caller's, as
    /// the vCPU thread inherited it), as the kernel returns it (20 - nice).
    pub(super) fn sys_getpriority(&mut self, which: i32, who: i32) -> SysResult {
        let target = self.priority_target(which, who)?;
        // SAFETY: plain integer arguments; -1 is a valid nice value, so
        // errno tells failure.
        let nice = unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, target as libc::id_t)
        };
        // SAFETY: reading this thread's errno.
        let err = unsafe { *libc::__errno_location() };
        if nice == -1 && err != 0 {
            return Err(Errno(err));
        }
        Ok((20 - nice) as u64)
    }

    /// setpriority(2): the vCPU thread's nice value, which is the job's
    /// (the host refuses a raise without privilege, as Linux does).
    pub(super) fn sys_setpriority(&mut self, which: i32, who: i32, prio: i32) -> SysResult {
        let target = self.priority_target(which, who)?;
        let prio = prio.clamp(-20, 19);
        // SAFETY: plain integer arguments.
        host(unsafe { libc::setpriority(libc::PRIO_PROCESS, target as libc::id_t, prio) } as i64)
    }

    /// sched_getaffinity: the one vCPU, CPU 0, in a mask of Linux's size
    /// for a machine of up to 64 CPUs.
    pub(super) fn sys_sched_getaffinity(&mut self, pid: i32, len: u64, mask: u64) -> SysResult {
        if !self.is_own_task(pid) {
            return Err(Errno::ESRCH);
        }
        if len < 8 || !len.is_multiple_of(8) {
            return Err(Errno::EINVAL);
        }
        self.ram.write_user_u64(mask, 1)?;
        Ok(8)
    }

    /// sched_setaffinity: any mask holding CPU 0 (the only one) is fine.
    pub(super) fn sys_sched_setaffinity(&mut self, pid: i32, len: u64, mask: u64) -> SysResult {
        // As Linux: the mask is read first, then the task found.
        let first = if len == 0 { 0 } else { self.ram.user(mask, len.min(8))?[0] };
        if !self.is_own_task(pid) {
            return Err(Errno::ESRCH);
        }
        if first & 1 == 0 {
            return Err(Errno::EINVAL);
        }
        Ok(0)
    }

    /// sched_getscheduler, sched_getparam: every thread runs SCHED_OTHER
    /// at priority 0.
    pub(super) fn sys_sched_getparam(&mut self, pid: i32, param: u64) -> SysResult {
        if pid < 0 {
            return Err(Errno::EINVAL);
        }
        if !self.is_own_task(pid) {
            return Err(Errno::ESRCH);
        }
        if param != 0 {
            self.ram.write_user_u32(param, 0)?;
        }
        Ok(0)
    }

    /// sched_setscheduler and sched_setparam: SCHED_OTHER, SCHED_BATCH and
    /// SCHED_IDLE at priority 0 are accepted (one vCPU runs the job
    /// whatever the policy); real-time policies need privilege here as
    /// unprivileged on Linux.
    pub(super) fn sys_sched_setscheduler(&mut self, pid: i32, policy: Option<i32>, param: u64) -> SysResult {
        if pid < 0 || param == 0 {
            return Err(Errno::EINVAL);
        }
        let prio = self.ram.read_user_u32(param)? as i32;
        if !self.is_own_task(pid) {
            return Err(Errno::ESRCH);
        }
        let policy = policy.map(|p| p & !libc::SCHED_RESET_ON_FORK);
        match policy {
            None | Some(libc::SCHED_OTHER) | Some(libc::SCHED_BATCH) | Some(libc::SCHED_IDLE) if prio == 0 => Ok(0),
            None | Some(libc::SCHED_OTHER) | Some(libc::SCHED_BATCH) | Some(libc::SCHED_IDLE) => Err(Errno::EINVAL),
            Some(libc::SCHED_FIFO) | Some(libc::SCHED_RR) if (1..=99).contains(&prio) => Err(Errno::EPERM),
            _ => Err(Errno::EINVAL),
        }
    }

    /// sched_get_priority_max/min of `policy`.
    pub(super) fn sys_sched_priority(&mut self, policy: i32, max: bool) -> SysResult {
        match policy {
            libc::SCHED_FIFO | libc::SCHED_RR => Ok(if max { 99 } else { 1 }),
            libc::SCHED_OTHER | libc::SCHED_BATCH | libc::SCHED_IDLE => Ok(0),
            _ => Err(Errno::EINVAL),
        }
    }

    /// sched_rr_get_interval: Linux's SCHED_OTHER answer on one CPU
    /// (the scheduler's slice; glibc's and musl's tests only check it is set).
    pub(super) fn sys_sched_rr_get_interval(&mut self, pid: i32, tp: u64) -> SysResult {
        if pid < 0 {
            return Err(Errno::EINVAL);
        }
        if !self.is_own_task(pid) {
            return Err(Errno::ESRCH);
        }
        let slice = crate::clock::Timespec::from_nanos(4_000_000);
        self.ram.write_user(tp, &slice.to_bytes())?;
        Ok(0)
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
            libc::PR_GET_NO_NEW_PRIVS | libc::PR_GET_SECCOMP | libc::PR_GET_THP_DISABLE => Ok(0),
            // The value goes to an int the caller points at.
            libc::PR_GET_PDEATHSIG | libc::PR_GET_CHILD_SUBREAPER => {
                self.ram.write_user_u32(arg2, 0)?;
                Ok(0)
            }
            libc::PR_SET_CHILD_SUBREAPER | libc::PR_SET_TIMERSLACK | libc::PR_SET_THP_DISABLE => Ok(0),
            // Linux's default slack, 50 us.
            libc::PR_GET_TIMERSLACK => Ok(50_000),
            // Every capability is in the bounding set, as for a process
            // nobody restricted.
            // (CAP_LAST_CAP is 40, CAP_CHECKPOINT_RESTORE.)
            libc::PR_CAPBSET_READ if arg2 <= 40 => Ok(1),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_taken_before_main() {
        // Set by the constructor: nothing in this test binary asked yet
        // (initial_rlimits would also fill it, but reads it first).
        let caller = *CALLER_LIMITS.get().expect("the limits were taken before main");
        let l = initial_rlimits(256 << 20, 1 << 20);
        for i in 0..RLIM_NLIMITS {
            match i as u32 {
                RLIMIT_STACK => assert_eq!(l[i], (caller[i].0.min(1 << 20), caller[i].1)),
                RLIMIT_NOFILE => assert_eq!(l[i], (caller[i].0.min(crate::site::NR_OPEN), caller[i].1)),
                _ => assert_eq!(l[i], caller[i], "limit {i}"),
            }
        }
    }
}
