//! fork, vfork and clone of a new process; wait4 and waitid. A child is
//! a copy of the job in its own micro-VM and host process (`Vm::fork`);
//! waiting goes to the host, which knows the children's fates. A wait
//! that would block parks the thread on the children's pidfds, so other
//! threads, signals and a migration request are served meanwhile.

use crate::errno::{host, Errno, SysResult};
use crate::job::Job;

/// What a new process starts with (clone's arguments that matter here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForkArgs {
    pub flags: u64,
    /// The child's stack pointer (0: the parent's).
    pub stack: u64,
    pub parent_tid: u64,
    pub child_tid: u64,
    pub tls: u64,
}

const WAIT_OPTIONS: i32 =
    libc::WNOHANG | libc::WUNTRACED | libc::WCONTINUED | libc::__WALL | libc::__WCLONE | libc::__WNOTHREAD;
const WAITID_OPTIONS: i32 = WAIT_OPTIONS | libc::WEXITED | libc::WSTOPPED | libc::WNOWAIT;

impl Job {
    /// clone without CLONE_THREAD: a new process. Shared memory between
    /// the two (CLONE_VM) cannot be given, as the child is another VM:
    /// it gets a copy, which is what vfork callers (posix_spawn, shells)
    /// need as long as the child only execs or exits.
    pub(super) fn fork_args(&mut self, a: [u64; 6]) -> Result<ForkArgs, Errno> {
        let flags = a[0];
        let shares = (libc::CLONE_THREAD | libc::CLONE_SIGHAND | libc::CLONE_FILES | libc::CLONE_FS) as u64;
        if flags & shares != 0 {
            // Sharing files or handlers between processes is not supported.
            self.unsupported(libc::SYS_clone as u64);
            return Err(Errno::EINVAL);
        }
        Ok(ForkArgs { flags, stack: a[1], parent_tid: a[2], child_tid: a[3], tls: a[4] })
    }

    /// A wait of a job that does not keep its children's statuses: it
    /// ends with ECHILD once no child is left.
    fn wait_for_all(&mut self, pid: i32, options: i32) -> SysResult {
        self.children.reap_ended();
        if !self.children.any(pid) {
            return Err(Errno::ECHILD);
        }
        if options & libc::WNOHANG != 0 {
            return Ok(0);
        }
        Err(self.park(crate::thread::Wait::Child { pid }))
    }

    /// wait4. As on Linux, a child is reaped even if its status cannot be
    /// stored (EFAULT then).
    pub(super) fn sys_wait4(&mut self, pid: i32, status: u64, options: i32, rusage: u64) -> SysResult {
        if options & !WAIT_OPTIONS != 0 || pid == i32::MIN {
            return Err(Errno::EINVAL);
        }
        if self.signals.reaps_children() {
            return self.wait_for_all(pid, options);
        }
        if !self.children.any(pid) {
            return Err(Errno::ECHILD);
        }
        let mut st = 0i32;
        let mut ru = [0u8; 144];
        // SAFETY: valid out pointers; WNOHANG keeps the vCPU thread from blocking.
        let r = host(unsafe {
            libc::syscall(libc::SYS_wait4, pid, &mut st as *mut i32, options | libc::WNOHANG, ru.as_mut_ptr())
        })?;
        if r == 0 {
            if options & libc::WNOHANG != 0 {
                return Ok(0);
            }
            return Err(self.park(crate::thread::Wait::Child { pid }));
        }
        if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
            self.children.remove(r as i32);
        }
        if status != 0 {
            self.ram.write_user_u32(status, st as u32)?;
        }
        if rusage != 0 {
            self.ram.write_user(rusage, &ru)?;
        }
        Ok(r as u64)
    }

    /// waitid. As on Linux, the siginfo is written whatever the outcome
    /// (zeros when no child was ready or there is none).
    pub(super) fn sys_waitid(&mut self, idtype: u32, id: u32, infop: u64, options: i32, rusage: u64) -> SysResult {
        let mut info = [0u8; 128];
        let mut ru = [0u8; 144];
        let result = self.waitid(idtype, id, options, &mut info, &mut ru);
        if matches!(result, Err(Errno::PARKED)) {
            return result;
        }
        let pid = i32::from_le_bytes(info[16..20].try_into().unwrap());
        if pid != 0 && rusage != 0 {
            self.ram.write_user(rusage, &ru)?;
        }
        if infop != 0 {
            // si_signo, si_errno, si_code, si_pid, si_uid, si_status: what Linux stores.
            self.ram.write_user(infop, &info[..28])?;
        }
        result
    }

    fn waitid(&mut self, idtype: u32, id: u32, options: i32, info: &mut [u8; 128], ru: &mut [u8; 144]) -> SysResult {
        if options & !WAITID_OPTIONS != 0 || options & (libc::WEXITED | libc::WSTOPPED | libc::WCONTINUED) == 0 {
            return Err(Errno::EINVAL);
        }
        // The same children as a wait4 pid argument.
        let spec = match idtype {
            libc::P_ALL => -1,
            libc::P_PID if id > 0 && id <= i32::MAX as u32 => id as i32,
            libc::P_PGID if id <= i32::MAX as u32 => -(id as i32),
            _ => return Err(Errno::EINVAL),
        };
        if self.signals.reaps_children() {
            return self.wait_for_all(spec, options);
        }
        if !self.children.any(spec) {
            return Err(Errno::ECHILD);
        }
        // SAFETY: valid out pointers; WNOHANG keeps the vCPU thread from blocking.
        host(unsafe {
            libc::syscall(libc::SYS_waitid, idtype, id, info.as_mut_ptr(), options | libc::WNOHANG, ru.as_mut_ptr())
        })?;
        // si_pid (at 16) is 0 when no child was ready.
        let pid = i32::from_le_bytes(info[16..20].try_into().unwrap());
        if pid == 0 && options & libc::WNOHANG == 0 {
            return Err(self.park(crate::thread::Wait::Child { pid: spec }));
        }
        // si_code (at 8): CLD_EXITED 1, CLD_KILLED 2, CLD_DUMPED 3 end the child.
        let code = i32::from_le_bytes(info[8..12].try_into().unwrap());
        if pid != 0 && options & libc::WNOWAIT == 0 && (1..=3).contains(&code) {
            self.children.remove(pid);
        }
        Ok(0)
    }
}

/// The process group of host process `pid`, from /proc/PID/stat (field 5,
/// after the command name in parentheses, which may hold anything).
fn host_pgrp(pid: &str) -> Option<u32> {
    let mut buf = [0u8; 512];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
        f.read(&mut buf).ok()?
    };
    let stat = &buf[..n];
    let after = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    // " S ppid pgrp ..."
    let field = after.split(|&b| b == b' ').filter(|f| !f.is_empty()).nth(2)?;
    std::str::from_utf8(field).ok()?.parse().ok()
}

impl Job {
    /// kill(0, sig) and kill(-pgid, sig): signals the other processes of
    /// process group `pgid` (None: the caller's own) and says whether this process is in it (the
    /// caller signals itself the job's way). At home the group is the
    /// host's (`sys_setpgid` keeps the two the same), so it reaches every
    /// process in it the caller may signal, the job's children and
    /// grandchildren included, as on Linux. Away from home the job has no
    /// other processes. The result is ESRCH if nobody is in the group,
    /// EPERM if nobody in it could be signalled.
    pub(super) fn signal_group(&mut self, pgid: Option<u32>, sig: u32) -> (bool, SysResult) {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        if self.ids.pid != me as u32 {
            return (pgid.is_none_or(|g| g == self.ids.pgid), Err(Errno::ESRCH));
        }
        // SAFETY: no arguments.
        self.ids.pgid = unsafe { libc::getpgrp() } as u32;
        let pgid = pgid.unwrap_or(self.ids.pgid);
        let member = self.ids.pgid == pgid;
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return (member, Err(Errno::ESRCH));
        };
        let mut result = Err(Errno::ESRCH);
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(pid) = name.parse::<i32>() else { continue };
            if pid == me || host_pgrp(name) != Some(pgid) {
                continue;
            }
            // SAFETY: kill with plain integer arguments.
            match host(unsafe { libc::kill(pid, sig as i32) } as i64) {
                Ok(_) => result = Ok(0),
                // Gone meanwhile: as if it had not been there.
                Err(Errno::ESRCH) => {}
                Err(e) => {
                    if result.is_err() {
                        result = Err(e);
                    }
                }
            }
        }
        (member, result)
    }
}
