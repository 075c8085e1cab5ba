//! Confining a body that runs away from home. Its files are served by
//! its deputy, so the process holding it needs nothing of this host's:
//! an empty root (its own mount namespace), an unprivileged uid, and a
//! seccomp filter that lets through only what the VMM does from here on
//! (KVM ioctls on descriptors it holds, memory, threads, timers, signals,
//! and TCP for the deputy link and later moves). Opening files, running
//! programs, mounting, tracing or changing identity all fail with EPERM.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The uid and gid a confined body runs as (nobody).
pub const BODY_ID: u32 = 65534;

#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("{what}: {source}")]
    Os { what: &'static str, source: std::io::Error },
    #[error("building the seccomp filter: {0}")]
    Filter(String),
}

fn check(r: libc::c_int, what: &'static str) -> Result<(), ConfineError> {
    if r < 0 {
        Err(ConfineError::Os { what, source: std::io::Error::last_os_error() })
    } else {
        Ok(())
    }
}

/// What the VMM calls once a body is running here (and nothing else).
const ALLOWED: &[i64] = &[
    // memory and descriptors it already holds
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_lseek,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_eventfd2,
    libc::SYS_ioctl,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mincore,
    libc::SYS_brk,
    // waiting
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_futex,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_restart_syscall,
    // clocks and timers
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_timer_create,
    libc::SYS_timer_settime,
    libc::SYS_timer_gettime,
    libc::SYS_timer_delete,
    libc::SYS_getrusage,
    // signals, threads, identity (read only)
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    libc::SYS_tkill,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getppid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_prctl,
    libc::SYS_sched_getaffinity,
    // a move's thread raises its priority, and lowers it back
    libc::SYS_getpriority,
    libc::SYS_setpriority,
    libc::SYS_getrandom,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // the deputy link, the control socket, moves onwards
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
];

fn filter() -> Result<BpfProgram, ConfineError> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = ALLOWED.iter().map(|&n| (n, Vec::new())).collect();
    let f =
        SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, TargetArch::x86_64)
            .map_err(|e| ConfineError::Filter(e.to_string()))?;
    BpfProgram::try_from(f).map_err(|e| ConfineError::Filter(e.to_string()))
}

/// Confines this process for good: call once the body's VM, its deputy
/// link and its control socket exist, before the job runs. Needs root
/// (a new mount namespace, the change of uid).
pub fn confine_body() -> Result<(), ConfineError> {
    // An empty root: a private tmpfs, pivoted into, the old root detached.
    // SAFETY: plain system calls on constant or owned C strings.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS), "unshare(CLONE_NEWNS)")?;
        check(
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            "making mounts private",
        )?;
        // Mounted over /tmp in this namespace only: the host's /tmp is untouched.
        let dir = c"/tmp";
        check(
            libc::mount(
                c"mosvm-body".as_ptr(),
                dir.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"size=16k,mode=0555".as_ptr().cast(),
            ),
            "mounting the empty root",
        )?;
        check(libc::chdir(dir.as_ptr()), "entering the empty root")?;
        check(libc::mkdir(c"old".as_ptr(), 0o700), "preparing pivot_root")?;
        check(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c"old".as_ptr()) as libc::c_int, "pivot_root")?;
        check(libc::chdir(c"/".as_ptr()), "chdir /")?;
        check(libc::umount2(c"/old".as_ptr(), libc::MNT_DETACH), "detaching the host's root")?;
        check(libc::rmdir(c"/old".as_ptr()), "removing the old root")?;
        check(
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_BIND,
                std::ptr::null(),
            ),
            "making the root read-only",
        )?;
        // A move onwards may still raise its own thread's priority
        // (`migration::Boost`: nice -10, a limit of 20 - -10). Where root
        // may not raise limits (no CAP_SYS_RESOURCE) the body goes without.
        let mut nice = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NICE, &mut nice) == 0 && nice.rlim_cur < 30 {
            let want = libc::rlimit { rlim_cur: 30, rlim_max: nice.rlim_max.max(30) };
            if libc::setrlimit(libc::RLIMIT_NICE, &want) != 0 && nice.rlim_max > nice.rlim_cur {
                let some = libc::rlimit { rlim_cur: nice.rlim_max, rlim_max: nice.rlim_max };
                libc::setrlimit(libc::RLIMIT_NICE, &some);
            }
        }
        // Give up root: supplementary groups, then gid, then uid.
        check(libc::setgroups(0, std::ptr::null()), "setgroups")?;
        check(libc::setresgid(BODY_ID, BODY_ID, BODY_ID), "setresgid")?;
        check(libc::setresuid(BODY_ID, BODY_ID, BODY_ID), "setresuid")?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")?;
        check(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0), "PR_SET_DUMPABLE")?;
    }
    // All threads (the control socket's, the deputy link's) get the filter.
    seccompiler::apply_filter_all_threads(&filter()?).map_err(|e| ConfineError::Filter(e.to_string()))
}
