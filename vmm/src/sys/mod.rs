//! The Linux system-call interface of a job.
//!
//! `Job::syscall` decodes the registers saved at the syscall exit, runs the
//! call and leaves the result in rax. Calls split the MOSIX way: the
//! site-independent ones (memory, time, process, signals) are served right
//! here from the VMM's own state; the site-dependent ones (files, cwd,
//! terminal) go through `files` to the job's `Site`.
//!
//! Every pointer a job passes is checked (EFAULT); an unknown call returns
//! ENOSYS and is reported once per number; nothing a job does can panic the VMM.

mod children;
mod events;
mod exec;
mod files;
mod memory;
pub mod names;
mod net;
pub(crate) mod process;
mod signal;
mod time;
mod xattr;

use kvm_bindings::kvm_regs;
use libc::*;

use crate::errno::{Errno, SysResult};
use crate::job::{Job, JobExit};
use crate::vcpu::Vcpu;

pub use children::ForkArgs;
pub use signal::SIGRETURN_NR;

/// What the vCPU loop does after a system call.
#[derive(Debug)]
pub enum Flow {
    Continue,
    /// The whole job ends.
    Exit(JobExit),
    /// The running thread ends (exit(2)); the job goes on if others remain.
    ThreadExit(i32),
    /// execve passed its checks: the VM replaces the program.
    Exec(Box<crate::exec::ExecRequest>),
    /// fork, vfork or clone of a process: the VM makes the child.
    Fork(ForkArgs),
}

impl Job {
    /// Runs the system call in `user` (the job's registers at the `syscall`
    /// instruction, with rip and rflags taken from rcx and r11).
    #[allow(non_upper_case_globals)]
    pub fn syscall(&mut self, vcpu: &mut Vcpu, user: &mut kvm_regs) -> Flow {
        let nr = user.rax;
        self.cur_nr = nr;
        let a = [user.rdi, user.rsi, user.rdx, user.r10, user.r8, user.r9];
        self.stats.syscalls += 1;
        self.mm.sync_access(&self.ram);
        let result = match nr as i64 {
            SYS_exit_group => return Flow::Exit(JobExit::Exited((a[0] & 0xff) as i32)),
            SYS_exit => return Flow::ThreadExit((a[0] & 0xff) as i32),
            SYS_rt_sigreturn => self.sys_rt_sigreturn(vcpu, user),
            SYS_clone if a[0] & CLONE_THREAD as u64 != 0 => self.sys_clone(vcpu, user, a),
            SYS_clone => match self.fork_args(a) {
                Ok(args) => return self.traced(nr, Flow::Fork(args)),
                Err(e) => Err(e),
            },
            SYS_fork => {
                let args = ForkArgs { flags: SIGCHLD as u64, stack: 0, parent_tid: 0, child_tid: 0, tls: 0 };
                return self.traced(nr, Flow::Fork(args));
            }
            SYS_vfork => {
                let flags = (CLONE_VM | CLONE_VFORK | SIGCHLD) as u64;
                return self.traced(nr, Flow::Fork(ForkArgs { flags, stack: 0, parent_tid: 0, child_tid: 0, tls: 0 }));
            }
            SYS_execve | SYS_execveat => {
                let r = if nr as i64 == SYS_execve {
                    self.sys_execve(AT_FDCWD, a[0], a[1], a[2], 0)
                } else {
                    self.sys_execve(a[0] as i32, a[1], a[2], a[3], a[4] as i32)
                };
                match r {
                    Ok(req) => return self.traced(nr, Flow::Exec(req)),
                    Err(e) => Err(e),
                }
            }
            _ => self.dispatch(vcpu, nr, a),
        };
        // A signal frame written before the next call sees this call's maps.
        self.mm.sync_access(&self.ram);
        if self.trace {
            (self.log)(&format!(
                "syscall {}({:#x}, {:#x}, {:#x}, {:#x}, {:#x}, {:#x}) = {}",
                names::name(nr).map_or_else(|| nr.to_string(), str::to_string),
                a[0],
                a[1],
                a[2],
                a[3],
                a[4],
                a[5],
                match result {
                    Ok(v) => format!("{v:#x}"),
                    Err(e) => format!("-{}", e.0),
                }
            ));
        }
        user.rax = match result {
            Ok(v) => v,
            // Parked: the result comes when it wakes.
            Err(Errno::PARKED) => {
                self.wait_ctx = Some(*user);
                return Flow::Continue;
            }
            Err(e) => {
                if e == Errno::ERESTARTSYS || e == Errno::ERESTARTNOHAND {
                    self.restart_nr = Some(nr);
                }
                (-(e.0 as i64)) as u64
            }
        };
        Flow::Continue
    }

    /// With --trace: logs a call the VM carries out itself (fork, exec).
    fn traced(&self, nr: u64, flow: Flow) -> Flow {
        if self.trace {
            match &flow {
                Flow::Fork(args) => (self.log)(&format!(
                    "syscall {}: new process (clone flags {:#x})",
                    names::name(nr).unwrap_or("clone"),
                    args.flags
                )),
                Flow::Exec(req) => (self.log)(&format!(
                    "syscall {}: execve {}",
                    names::name(nr).unwrap_or("execve"),
                    req.path.display()
                )),
                _ => {}
            }
        }
        flow
    }

    #[allow(non_upper_case_globals)]
    fn dispatch(&mut self, vcpu: &mut Vcpu, nr: u64, a: [u64; 6]) -> SysResult {
        use xattr::At::{Fd, Path};
        let fd = a[0] as i32;
        match nr as i64 {
            // ---- files: site-dependent ----
            SYS_read => self.sys_read(fd, a[1], a[2], -1),
            SYS_write => self.sys_write(fd, a[1], a[2], -1),
            SYS_pread64 => self.sys_read(fd, a[1], a[2], a[3] as i64),
            SYS_pwrite64 => self.sys_write(fd, a[1], a[2], a[3] as i64),
            SYS_readv => self.sys_readv(fd, a[1], a[2], -1),
            SYS_writev => self.sys_writev(fd, a[1], a[2], -1),
            SYS_preadv | SYS_preadv2 => self.sys_readv(fd, a[1], a[2], a[3] as i64),
            SYS_pwritev | SYS_pwritev2 => self.sys_writev(fd, a[1], a[2], a[3] as i64),
            SYS_open => self.sys_openat(AT_FDCWD, a[0], a[1] as i32, a[2] as u32),
            SYS_creat => self.sys_openat(AT_FDCWD, a[0], O_CREAT | O_WRONLY | O_TRUNC, a[1] as u32),
            SYS_openat => self.sys_openat(fd, a[1], a[2] as i32, a[3] as u32),
            SYS_close => self.site.close(fd),
            SYS_close_range => self.sys_close_range(a[0] as u32, a[1] as u32, a[2] as u32),
            SYS_lseek => self.site.lseek(fd, a[1] as i64, a[2] as i32),
            SYS_fstat => self.sys_fstatat(fd, 0, a[1], AT_EMPTY_PATH),
            SYS_stat => self.sys_fstatat(AT_FDCWD, a[0], a[1], 0),
            SYS_lstat => self.sys_fstatat(AT_FDCWD, a[0], a[1], AT_SYMLINK_NOFOLLOW),
            SYS_newfstatat => self.sys_fstatat(fd, a[1], a[2], a[3] as i32),
            SYS_statx => self.sys_statx(fd, a[1], a[2] as i32, a[3] as u32, a[4]),
            SYS_statfs => self.sys_statfs(None, a[0], a[1]),
            SYS_fstatfs => self.sys_statfs(Some(fd), 0, a[1]),
            SYS_getdents64 => self.sys_getdents64(fd, a[1], a[2]),
            SYS_access => self.sys_faccessat(AT_FDCWD, a[0], a[1] as i32, 0),
            SYS_faccessat => self.sys_faccessat(fd, a[1], a[2] as i32, 0),
            SYS_faccessat2 => self.sys_faccessat(fd, a[1], a[2] as i32, a[3] as i32),
            SYS_unlink => self.sys_unlinkat(AT_FDCWD, a[0], 0),
            SYS_rmdir => self.sys_unlinkat(AT_FDCWD, a[0], AT_REMOVEDIR),
            SYS_unlinkat => self.sys_unlinkat(fd, a[1], a[2] as i32),
            SYS_mkdir => self.sys_mkdirat(AT_FDCWD, a[0], a[1] as u32),
            SYS_mkdirat => self.sys_mkdirat(fd, a[1], a[2] as u32),
            SYS_rename => self.sys_renameat2(AT_FDCWD, a[0], AT_FDCWD, a[1], 0),
            SYS_renameat => self.sys_renameat2(fd, a[1], a[2] as i32, a[3], 0),
            SYS_renameat2 => self.sys_renameat2(fd, a[1], a[2] as i32, a[3], a[4] as u32),
            SYS_link => self.sys_linkat(AT_FDCWD, a[0], AT_FDCWD, a[1], 0),
            SYS_linkat => self.sys_linkat(fd, a[1], a[2] as i32, a[3], a[4] as i32),
            SYS_symlink => self.sys_symlinkat(a[0], AT_FDCWD, a[1]),
            SYS_symlinkat => self.sys_symlinkat(a[0], a[1] as i32, a[2]),
            SYS_readlink => self.sys_readlinkat(AT_FDCWD, a[0], a[1], a[2]),
            SYS_readlinkat => self.sys_readlinkat(fd, a[1], a[2], a[3]),
            SYS_chmod => self.sys_fchmodat(AT_FDCWD, a[0], a[1] as u32),
            SYS_fchmodat => self.sys_fchmodat(fd, a[1], a[2] as u32),
            SYS_fchmod => self.site.fchmod(fd, a[1] as u32),
            SYS_chown => self.sys_fchownat(AT_FDCWD, a[0], a[1] as u32, a[2] as u32, 0),
            SYS_lchown => self.sys_fchownat(AT_FDCWD, a[0], a[1] as u32, a[2] as u32, AT_SYMLINK_NOFOLLOW),
            SYS_fchown => self.sys_fchownat(fd, 0, a[1] as u32, a[2] as u32, AT_EMPTY_PATH),
            SYS_fchownat => self.sys_fchownat(fd, a[1], a[2] as u32, a[3] as u32, a[4] as i32),
            SYS_utimensat => self.sys_utimensat(fd, a[1], a[2], a[3] as i32),
            SYS_truncate => self.sys_truncate(a[0], a[1] as i64),
            SYS_ftruncate => self.site.ftruncate(fd, a[1] as i64),
            SYS_fsync => self.site.fsync(fd, false),
            SYS_fdatasync => self.site.fsync(fd, true),
            SYS_fallocate => self.site.fallocate(fd, a[1] as i32, a[2] as i64, a[3] as i64),
            SYS_sync | SYS_syncfs => Ok(0),
            SYS_getcwd => self.sys_getcwd(a[0], a[1]),
            SYS_chdir => self.sys_chdir(a[0]),
            SYS_fchdir => self.site.fchdir(fd),
            SYS_ioctl => self.sys_ioctl(fd, a[1], a[2]),
            SYS_fcntl => self.sys_fcntl(fd, a[1] as i32, a[2]),
            SYS_flock => self.sys_flock(fd, a[1] as i32),
            SYS_dup => self.site.dup(fd, 0, false),
            SYS_dup2 => self.sys_dup2(fd, a[1] as i32),
            SYS_dup3 => self.sys_dup3(fd, a[1] as i32, a[2] as i32),
            SYS_pipe => self.sys_pipe2(a[0], 0),
            SYS_pipe2 => self.sys_pipe2(a[0], a[1] as i32),
            SYS_poll => self.sys_poll(a[0], a[1], a[2] as i32 as i64),
            SYS_ppoll => self.sys_ppoll(a[0], a[1], a[2], a[3]),
            SYS_select => self.sys_select(a[0] as i32, [a[1], a[2], a[3]], a[4], false),
            SYS_pselect6 => self.sys_select(a[0] as i32, [a[1], a[2], a[3]], a[4], true),
            SYS_mknod => self.sys_mknodat(AT_FDCWD, a[0], a[1] as u32, a[2]),
            SYS_mknodat => self.sys_mknodat(fd, a[1], a[2] as u32, a[3]),
            SYS_fadvise64 => self.sys_fadvise(fd, a[1] as i64, a[2] as i64, a[3] as i32),
            SYS_readahead => self.sys_readahead(fd, a[1] as i64, a[2]),

            // ---- extended attributes ----
            SYS_getxattr => self.sys_getxattr(Path { path: a[0], follow: true }, a[1], a[2], a[3]),
            SYS_lgetxattr => self.sys_getxattr(Path { path: a[0], follow: false }, a[1], a[2], a[3]),
            SYS_fgetxattr => self.sys_getxattr(Fd(fd), a[1], a[2], a[3]),
            SYS_listxattr => self.sys_listxattr(Path { path: a[0], follow: true }, a[1], a[2]),
            SYS_llistxattr => self.sys_listxattr(Path { path: a[0], follow: false }, a[1], a[2]),
            SYS_flistxattr => self.sys_listxattr(Fd(fd), a[1], a[2]),
            SYS_setxattr => self.sys_setxattr(Path { path: a[0], follow: true }, a[1], a[2], a[3], a[4] as i32),
            SYS_lsetxattr => self.sys_setxattr(Path { path: a[0], follow: false }, a[1], a[2], a[3], a[4] as i32),
            SYS_fsetxattr => self.sys_setxattr(Fd(fd), a[1], a[2], a[3], a[4] as i32),
            SYS_removexattr => self.sys_removexattr(Path { path: a[0], follow: true }, a[1]),
            SYS_lremovexattr => self.sys_removexattr(Path { path: a[0], follow: false }, a[1]),
            SYS_fremovexattr => self.sys_removexattr(Fd(fd), a[1]),

            // ---- readiness and event descriptors ----
            SYS_epoll_create => self.sys_epoll_create(a[0] as i32, true),
            SYS_epoll_create1 => self.sys_epoll_create(a[0] as i32, false),
            SYS_epoll_ctl => self.sys_epoll_ctl(fd, a[1] as i32, a[2] as i32, a[3]),
            SYS_epoll_wait => self.sys_epoll_wait(fd, a[1], a[2] as i32, a[3] as i32 as i64, 0, 0),
            SYS_epoll_pwait => self.sys_epoll_wait(fd, a[1], a[2] as i32, a[3] as i32 as i64, a[4], a[5]),
            SYS_epoll_pwait2 => self.sys_epoll_pwait2(fd, a[1], a[2] as i32, a[3], a[4], a[5]),
            SYS_eventfd => self.sys_eventfd(a[0] as u32, 0),
            SYS_eventfd2 => self.sys_eventfd(a[0] as u32, a[1] as i32),
            SYS_timerfd_create => self.sys_timerfd_create(a[0] as i32, a[1] as i32),
            SYS_timerfd_settime => self.sys_timerfd_settime(fd, a[1] as i32, a[2], a[3]),
            SYS_timerfd_gettime => self.sys_timerfd_gettime(fd, a[1]),
            SYS_signalfd => self.sys_signalfd(fd, a[1], a[2], 0),
            SYS_signalfd4 => self.sys_signalfd(fd, a[1], a[2], a[3] as i32),
            SYS_sendfile => self.sys_sendfile(fd, a[1] as i32, a[2], a[3]),
            SYS_umask => Ok(self.site.umask(a[0] as u32) as u64),
            SYS_socket => self.sys_socket(fd, a[1] as i32, a[2] as i32),
            SYS_socketpair => self.sys_socketpair(fd, a[1] as i32, a[2] as i32, a[3]),
            SYS_bind => self.sys_bind(fd, a[1], a[2]),
            SYS_connect => self.sys_connect(fd, a[1], a[2]),
            SYS_listen => self.site.here(Errno(libc::ENOTSOCK))?.listen(fd, a[1] as i32),
            SYS_accept => self.sys_accept(fd, a[1], a[2], 0),
            SYS_accept4 => self.sys_accept(fd, a[1], a[2], a[3] as i32),
            SYS_getsockname => self.sys_sockname(fd, a[1], a[2], false),
            SYS_getpeername => self.sys_sockname(fd, a[1], a[2], true),
            SYS_setsockopt => self.sys_setsockopt(fd, a[1] as i32, a[2] as i32, a[3], a[4]),
            SYS_getsockopt => self.sys_getsockopt(fd, a[1] as i32, a[2] as i32, a[3], a[4]),
            SYS_sendto => self.sys_sendto(fd, a[1], a[2], a[3] as i32, a[4], a[5]),
            SYS_recvfrom => self.sys_recvfrom(fd, a[1], a[2], a[3] as i32, a[4], a[5]),
            SYS_sendmsg => self.sys_sendmsg(fd, a[1], a[2] as i32),
            SYS_recvmsg => self.sys_recvmsg(fd, a[1], a[2] as i32),
            SYS_shutdown => self.sys_shutdown(fd, a[1] as i32),

            // ---- memory ----
            SYS_brk => Ok(self.mm.set_brk(&self.ram, a[0])),
            SYS_mmap => self.sys_mmap(a[0], a[1], a[2] as i32, a[3] as i32, a[4] as i32, a[5]),
            SYS_munmap => self.sys_munmap(a[0], a[1]),
            SYS_mremap => self.sys_mremap(a[0], a[1], a[2], a[3] as i32, a[4]),
            SYS_mprotect => self.sys_mprotect(a[0], a[1], a[2] as i32),
            SYS_madvise => self.sys_madvise(a[0], a[1], a[2] as i32),
            SYS_mincore => self.sys_mincore(a[0], a[1], a[2]),
            SYS_msync | SYS_mlock | SYS_munlock | SYS_mlock2 | SYS_mlockall | SYS_munlockall => Ok(0),

            // ---- process ----
            SYS_getpid => Ok(self.ids.pid as u64),
            SYS_gettid => Ok(self.tid as u64),
            SYS_getppid => Ok(self.ids.ppid as u64),
            SYS_getuid => Ok(self.ids.uid as u64),
            SYS_geteuid => Ok(self.ids.euid as u64),
            SYS_getgid => Ok(self.ids.gid as u64),
            SYS_getegid => Ok(self.ids.egid as u64),
            SYS_getresuid => self.sys_getres(a, [self.ids.uid, self.ids.euid, self.ids.uid]),
            SYS_getresgid => self.sys_getres(a, [self.ids.gid, self.ids.egid, self.ids.gid]),
            SYS_getgroups => self.sys_getgroups(a[0] as i32, a[1]),
            SYS_setuid | SYS_setgid | SYS_setreuid | SYS_setregid | SYS_setresuid | SYS_setresgid | SYS_setgroups
            | SYS_setfsuid | SYS_setfsgid => self.sys_setid(nr, a),
            SYS_getpgrp => self.sys_getpgid(SYS_getpgid as u64, 0),
            SYS_getpgid | SYS_getsid => self.sys_getpgid(nr, a[0] as i32),
            SYS_setpgid => self.sys_setpgid(a[0] as i32, a[1] as i32),
            SYS_setsid => self.sys_setsid(),
            SYS_uname => self.sys_uname(a[0]),
            SYS_sysinfo => self.sys_sysinfo(a[0]),
            SYS_getrlimit => self.sys_prlimit(0, a[0] as u32, 0, a[1]),
            SYS_setrlimit => self.sys_prlimit(0, a[0] as u32, a[1], 0),
            SYS_prlimit64 => self.sys_prlimit(a[0] as i32, a[1] as u32, a[2], a[3]),
            SYS_getrusage => self.sys_getrusage(a[0] as i32, a[1]),
            SYS_times => self.sys_times(a[0]),
            SYS_arch_prctl => self.sys_arch_prctl(vcpu, a[0] as i32, a[1]),
            SYS_set_tid_address => {
                self.tid_address = a[0];
                Ok(self.tid as u64)
            }
            SYS_set_robust_list => {
                if a[1] != 24 {
                    return Err(Errno::EINVAL);
                }
                self.robust_list = a[0];
                Ok(0)
            }
            SYS_get_robust_list => self.sys_get_robust_list(a[0] as i32, a[1], a[2]),
            SYS_futex => self.sys_futex(a[0], a[1] as i32, a[2] as u32, a[3], a[4], a[5] as u32),
            SYS_sched_yield => {
                self.threads.yield_now = true;
                Ok(0)
            }
            SYS_sched_getaffinity => self.sys_sched_getaffinity(a[0] as i32, a[1], a[2]),
            SYS_sched_setaffinity => self.sys_sched_setaffinity(a[0] as i32, a[1], a[2]),
            SYS_sched_getscheduler => self.sys_sched_getparam(a[0] as i32, 0),
            SYS_sched_getparam => self.sys_sched_getparam(a[0] as i32, a[1]),
            SYS_sched_setscheduler => self.sys_sched_setscheduler(a[0] as i32, Some(a[1] as i32), a[2]),
            SYS_sched_setparam => self.sys_sched_setscheduler(a[0] as i32, None, a[1]),
            SYS_sched_get_priority_max => self.sys_sched_priority(a[0] as i32, true),
            SYS_sched_get_priority_min => self.sys_sched_priority(a[0] as i32, false),
            SYS_sched_rr_get_interval => self.sys_sched_rr_get_interval(a[0] as i32, a[1]),
            SYS_getcpu => self.sys_getcpu(a[0], a[1]),
            SYS_getpriority => self.sys_getpriority(a[0] as i32, a[1] as i32),
            SYS_setpriority => self.sys_setpriority(a[0] as i32, a[1] as i32, a[2] as i32),
            SYS_prctl => self.sys_prctl(a[0] as i32, a[1], a[2]),
            SYS_getrandom => self.sys_getrandom(a[0], a[1], a[2] as u32),
            SYS_personality => Ok(0),
            SYS_wait4 => self.sys_wait4(a[0] as i32, a[1], a[2] as i32, a[3]),
            SYS_waitid => self.sys_waitid(a[0] as u32, a[1] as u32, a[2], a[3] as i32, a[4]),
            // clone3 callers (glibc) fall back to clone.
            SYS_clone3 => Err(Errno::ENOSYS),

            // ---- time ----
            SYS_clock_gettime => self.sys_clock_gettime(a[0] as i32, a[1]),
            SYS_clock_getres => self.sys_clock_getres(a[0] as i32, a[1]),
            SYS_gettimeofday => self.sys_gettimeofday(a[0], a[1]),
            SYS_time => self.sys_time(a[0]),
            SYS_nanosleep => self.sys_clock_nanosleep(CLOCK_MONOTONIC, 0, a[0], a[1]),
            SYS_clock_nanosleep => self.sys_clock_nanosleep(a[0] as i32, a[1] as i32, a[2], a[3]),
            SYS_alarm => self.sys_alarm(a[0]),
            SYS_getitimer => self.sys_getitimer(a[0] as i32, a[1]),
            SYS_setitimer => self.sys_setitimer(a[0] as i32, a[1], a[2]),
            SYS_timer_create => self.sys_timer_create(a[0] as i32, a[1], a[2]),
            SYS_timer_settime => self.sys_timer_settime(a[0], a[1] as i32, a[2], a[3]),
            SYS_timer_gettime => self.sys_timer_gettime(a[0], a[1]),
            SYS_timer_getoverrun => Ok(self.timers.get(a[0])?.overrun),
            SYS_timer_delete => {
                self.timers.delete(a[0])?;
                self.timers.rearm(self.clock.host_offset());
                Ok(0)
            }

            // ---- signals ----
            SYS_rt_sigaction => self.sys_rt_sigaction(a[0] as u32, a[1], a[2], a[3]),
            SYS_rt_sigprocmask => self.sys_rt_sigprocmask(a[0] as i32, a[1], a[2], a[3]),
            SYS_rt_sigpending => self.sys_rt_sigpending(a[0], a[1]),
            SYS_rt_sigsuspend => self.sys_rt_sigsuspend(a[0], a[1]),
            SYS_pause => self.sys_pause(),
            SYS_sigaltstack => self.sys_sigaltstack(a[0], a[1]),
            SYS_kill => self.sys_kill(a[0] as i32, a[1] as u32),
            SYS_tkill => self.sys_tgkill(-1, a[0] as i32, a[1] as u32),
            SYS_tgkill => self.sys_tgkill(a[0] as i32, a[1] as i32, a[2] as u32),

            // ---- quietly unsupported: callers have fallbacks ----
            SYS_rseq | SYS_membarrier | SYS_io_uring_setup | SYS_userfaultfd | SYS_perf_event_open => {
                Err(Errno::ENOSYS)
            }
            _ => {
                self.unsupported(nr);
                Err(Errno::ENOSYS)
            }
        }
    }

    /// Reports an unsupported system call, once per number, to the
    /// operator (never on the job's own stderr; `--trace` shows it too).
    fn unsupported(&mut self, nr: u64) {
        if !self.unknown_reported.insert(nr) {
            return;
        }
        let notice = crate::notice::Notice::Unsupported { nr, name: names::name(nr) };
        if self.trace {
            (self.log)(&notice.to_string());
        }
        crate::notice::emit(notice);
    }
}
