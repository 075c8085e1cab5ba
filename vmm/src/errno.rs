//! Linux error numbers as system-call results.

use crate::memory::Efault;

/// A Linux errno, returned to the job as `-errno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const ESRCH: Errno = Errno(libc::ESRCH);
    pub const EINTR: Errno = Errno(libc::EINTR);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);
    pub const EFAULT: Errno = Errno(libc::EFAULT);
    pub const EACCES: Errno = Errno(libc::EACCES);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EMFILE: Errno = Errno(libc::EMFILE);
    pub const ENOTTY: Errno = Errno(libc::ENOTTY);
    pub const ESPIPE: Errno = Errno(libc::ESPIPE);
    pub const ERANGE: Errno = Errno(libc::ERANGE);
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    pub const ENOSYS: Errno = Errno(libc::ENOSYS);
    pub const ENODEV: Errno = Errno(libc::ENODEV);
    pub const ETIMEDOUT: Errno = Errno(libc::ETIMEDOUT);
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    pub const ECHILD: Errno = Errno(libc::ECHILD);
    pub const ENOBUFS: Errno = Errno(libc::ENOBUFS);
    pub const E2BIG: Errno = Errno(libc::E2BIG);
    pub const ENOEXEC: Errno = Errno(libc::ENOEXEC);
    pub const ELOOP: Errno = Errno(libc::ELOOP);
    /// Kernel-internal: the call was interrupted and is restarted if the
    /// signal's handler has SA_RESTART (or if no handler runs at all).
    pub const ERESTARTSYS: Errno = Errno(512);
    /// Kernel-internal: restarted only if no handler runs; with a handler
    /// the job sees EINTR (sleeps, pause, sigsuspend).
    pub const ERESTARTNOHAND: Errno = Errno(514);
    /// Internal: the running thread was parked (`Job::park`); the vCPU
    /// loop runs another thread and sets this one's result when it wakes.
    pub const PARKED: Errno = Errno(100_000);

    /// The calling thread's errno after a failed libc call.
    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<Efault> for Errno {
    fn from(_: Efault) -> Errno {
        Errno::EFAULT
    }
}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

pub type SysResult = Result<u64, Errno>;

/// Converts a raw host system-call return value.
#[inline]
pub fn host(ret: i64) -> SysResult {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as u64)
    }
}
