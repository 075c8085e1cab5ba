//! Site-dependent system calls: everything that touches the job's home
//! environment (files, working directory, terminal, stdio, pipes).
//!
//! This is the job's system context, the part MOSIX kept at home in the
//! deputy. `SiteOps` is the boundary: plain byte buffers and job
//! descriptors, never guest addresses and never host descriptors, so the
//! body side (`sys::files`) cannot tell where the site is served:
//! - `LocalSite` serves it from this process (the body runs at home);
//! - `RemoteSite` sends every call over the deputy link to the job's home
//!   (`deputy::Home`), which serves it there with its `LocalSite`.

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;

use crate::errno::{Errno, SysResult};

pub mod deputy;
mod events;
mod local;
pub mod net;
mod persist;
pub mod proto;
mod remote;
pub mod resolve;
pub mod stats;
#[cfg(test)]
mod tests;

pub use deputy::{Home, Served};
pub use local::{LocalSite, SiteConfig, MAX_FDS, NR_OPEN};

/// Internal (never seen by a job): `read` of a signalfd. The signals are
/// the body's, so the body serves the read itself (`SiteOps::signalfd_get`
/// says what the descriptor takes).
pub const SIGNALFD_READ: Errno = Errno(4090);

/// Internal (never seen by a job): `open_nowait` of a FIFO goes on at the
/// site; the body asks again later with the same arguments.
pub const OPEN_PENDING: Errno = Errno(4091);

/// struct epoll_event (x86-64: packed, 12 bytes).
pub const EPOLL_EVENT_SIZE: usize = 12;
pub use persist::{FdState, FileState, SiteError, SiteState};
pub use remote::{Prepared, RemoteSite};
pub use stats::CallStats;

/// The largest extended attribute value or name list (Linux's
/// XATTR_SIZE_MAX): larger buffers are used only this far.
pub const XATTR_SIZE_MAX: usize = 65536;

/// The site-dependent calls. Results are Linux's: a value, or an errno
/// (EINTR when a signal or a kick cut a blocking call short).
pub trait SiteOps: Send {
    // ---- descriptors ----
    fn openat(&mut self, dirfd: i32, path: &[u8], flags: i32, mode: u32) -> SysResult;
    /// openat for a job with other threads to run: an open that would
    /// wait (a FIFO without its other end) goes on at the site and
    /// answers `OPEN_PENDING` until it is done, when the same call gets
    /// its result.
    fn open_nowait(&mut self, dirfd: i32, path: &[u8], flags: i32, mode: u32) -> SysResult;
    /// Opens an in-memory file holding `content` (generated /proc files).
    fn open_bytes(&mut self, content: &[u8], flags: i32) -> SysResult;
    fn current_umask(&self) -> u32;
    fn close(&mut self, fd: i32) -> SysResult;
    fn dup(&mut self, fd: i32, min: i32, cloexec: bool) -> SysResult;
    fn dup3(&mut self, old: i32, new: i32, cloexec: bool) -> SysResult;
    fn pipe2(&mut self, flags: i32) -> Result<(u64, u64), Errno>;
    fn fcntl(&mut self, fd: i32, cmd: i32, arg: u64) -> SysResult;
    /// F_GETLK/F_SETLK/F_SETLKW and the OFD variants; `flock` is a struct flock.
    fn fcntl_lock(&mut self, fd: i32, cmd: i32, flock: &mut [u8; 32]) -> SysResult;
    /// Ok if `fd` is open.
    fn check_fd(&mut self, fd: i32) -> Result<(), Errno> {
        self.fcntl(fd, libc::F_GETFD, 0).map(|_| ())
    }
    /// close_range(2) over the open descriptors in `first..=last` (or
    /// marks them close-on-exec).
    fn close_range(&mut self, first: u32, last: u32, cloexec: bool) -> SysResult;
    /// RLIMIT_NOFILE: new descriptors are numbered below `limit` (EMFILE;
    /// F_DUPFD at or above it EINVAL, dup2 EBADF); open ones stay.
    fn set_fd_limit(&mut self, limit: u64);

    // ---- event descriptors ----
    fn epoll_create(&mut self, cloexec: bool) -> SysResult;
    /// `event` is a struct epoll_event (ignored for EPOLL_CTL_DEL); its
    /// data comes back from `epoll_wait` as the job gave it.
    fn epoll_ctl(&mut self, epfd: i32, op: i32, fd: i32, event: &[u8; EPOLL_EVENT_SIZE]) -> SysResult;
    /// Fills `events` with up to `events.len() / 12` ready events (timeout
    /// in ms, -1: none); returns how many.
    fn epoll_wait(&mut self, epfd: i32, events: &mut [u8], timeout_ms: i32) -> SysResult;
    fn eventfd(&mut self, initval: u32, flags: i32) -> SysResult;
    fn timerfd_create(&mut self, clock: i32, flags: i32) -> SysResult;
    /// `new` and `old` are struct itimerspec. An absolute time on a
    /// monotonic clock is the job's: `now` is the job's monotonic time, as
    /// the site's host's clock is another.
    fn timerfd_settime(&mut self, fd: i32, flags: i32, new: &[u8; 32], now: i64, old: &mut [u8; 32]) -> SysResult;
    fn timerfd_gettime(&mut self, fd: i32, cur: &mut [u8; 32]) -> SysResult;
    /// A new signalfd (`fd` -1) or a new mask for one.
    fn signalfd(&mut self, fd: i32, mask: u64, flags: i32) -> SysResult;
    /// A signalfd's mask, and whether it is non-blocking (EINVAL if `fd`
    /// is not a signalfd).
    fn signalfd_get(&mut self, fd: i32) -> Result<(u64, bool), Errno>;
    /// The signals pending for the job are now `pending`: signalfds whose
    /// mask meets it poll readable. Returns how many signalfds there are.
    fn signals_pending(&mut self, pending: u64) -> SysResult;

    // ---- data ----
    fn read(&mut self, fd: i32, buf: &mut [u8]) -> SysResult;
    fn write(&mut self, fd: i32, buf: &[u8]) -> SysResult;
    fn pread(&mut self, fd: i32, buf: &mut [u8], offset: i64) -> SysResult;
    fn pwrite(&mut self, fd: i32, buf: &[u8], offset: i64) -> SysResult;
    /// readv/preadv (offset -1: at the file position).
    fn readv(&mut self, fd: i32, bufs: &mut [IoSliceMut<'_>], offset: i64) -> SysResult;
    fn writev(&mut self, fd: i32, bufs: &[IoSlice<'_>], offset: i64) -> SysResult;
    fn lseek(&mut self, fd: i32, offset: i64, whence: i32) -> SysResult;
    fn getdents64(&mut self, fd: i32, buf: &mut [u8]) -> SysResult;
    fn ioctl(&mut self, fd: i32, request: u64, arg: &mut [u8]) -> SysResult;
    fn ioctl_int(&mut self, fd: i32, request: u64, arg: u64) -> SysResult;
    fn fsync(&mut self, fd: i32, data_only: bool) -> SysResult;
    fn ftruncate(&mut self, fd: i32, len: i64) -> SysResult;
    fn fallocate(&mut self, fd: i32, mode: i32, offset: i64, len: i64) -> SysResult;
    fn fchmod(&mut self, fd: i32, mode: u32) -> SysResult;
    /// poll(2) on job descriptors: `fds` holds struct pollfd records whose
    /// fd fields are job descriptors; revents are filled in.
    fn poll(&mut self, fds: &mut [u8], timeout_ms: i32) -> SysResult;
    fn flock(&mut self, fd: i32, op: i32) -> SysResult;
    fn sendfile(&mut self, out_fd: i32, in_fd: i32, offset: Option<&mut i64>, count: u64) -> SysResult;
    fn fstatfs(&mut self, fd: i32, out: &mut [u8; 120]) -> SysResult;

    // ---- names ----
    fn fstatat(&mut self, dirfd: i32, path: &[u8], flags: i32, out: &mut [u8; 144]) -> SysResult;
    fn statx(&mut self, dirfd: i32, path: &[u8], flags: i32, mask: u32, out: &mut [u8; 256]) -> SysResult;
    fn faccessat(&mut self, dirfd: i32, path: &[u8], mode: i32, flags: i32) -> SysResult;
    fn unlinkat(&mut self, dirfd: i32, path: &[u8], flags: i32) -> SysResult;
    fn mkdirat(&mut self, dirfd: i32, path: &[u8], mode: u32) -> SysResult;
    fn renameat2(&mut self, olddir: i32, old: &[u8], newdir: i32, new: &[u8], flags: u32) -> SysResult;
    fn linkat(&mut self, olddir: i32, old: &[u8], newdir: i32, new: &[u8], flags: i32) -> SysResult;
    fn symlinkat(&mut self, target: &[u8], dirfd: i32, path: &[u8]) -> SysResult;
    fn readlinkat(&mut self, dirfd: i32, path: &[u8], buf: &mut [u8]) -> SysResult;
    fn fchmodat(&mut self, dirfd: i32, path: &[u8], mode: u32, flags: i32) -> SysResult;
    fn fchownat(&mut self, dirfd: i32, path: &[u8], uid: u32, gid: u32, flags: i32) -> SysResult;
    /// utimensat; `times` is two struct timespec or None for "now".
    fn utimensat(&mut self, dirfd: i32, path: Option<&[u8]>, times: Option<&[u8; 32]>, flags: i32) -> SysResult;
    fn truncate(&mut self, path: &[u8], len: i64) -> SysResult;
    fn umask(&mut self, mask: u32) -> u32;
    fn statfs(&mut self, path: &[u8], out: &mut [u8; 120]) -> SysResult;
    /// mknodat: FIFOs, regular files and sockets; devices EPERM (the job
    /// is an unprivileged user).
    fn mknodat(&mut self, dirfd: i32, path: &[u8], mode: u32, dev: u64) -> SysResult;
    /// posix_fadvise (the errno, where Linux's fadvise64 gives one).
    fn fadvise(&mut self, fd: i32, offset: i64, len: i64, advice: i32) -> SysResult;
    fn readahead(&mut self, fd: i32, offset: i64, count: u64) -> SysResult;

    // ---- extended attributes ----
    // The file is `path` (relative to the working directory; `follow`:
    // through a final symlink) or, with an empty path, descriptor `fd`.
    /// getxattr: the value into `out`; an empty `out` asks for its size.
    fn getxattr(&mut self, fd: i32, path: &[u8], follow: bool, name: &[u8], out: &mut [u8]) -> SysResult;
    /// listxattr: the NUL-separated names into `out` (empty: the size).
    fn listxattr(&mut self, fd: i32, path: &[u8], follow: bool, out: &mut [u8]) -> SysResult;
    fn setxattr(&mut self, fd: i32, path: &[u8], follow: bool, name: &[u8], value: &[u8], flags: i32) -> SysResult;
    fn removexattr(&mut self, fd: i32, path: &[u8], follow: bool, name: &[u8]) -> SysResult;

    // ---- execve ----
    /// The program execve names: `path` under `dirfd` (with AT_EMPTY_PATH
    /// and an empty path, the open descriptor itself). It must be a
    /// regular file the job may execute. Returns its bytes (at most `max`)
    /// and its path at home.
    fn read_program(&mut self, dirfd: i32, path: &[u8], flags: i32, max: u64) -> Result<(Vec<u8>, PathBuf), Errno>;
    /// execve's part here: close-on-exec descriptors close, and
    /// /proc/self/exe names the new program.
    fn exec(&mut self, exe: PathBuf);

    // ---- working directory ----
    fn getcwd(&self) -> &[u8];
    fn chdir(&mut self, path: &[u8]) -> SysResult;
    fn fchdir(&mut self, fd: i32) -> SysResult;
}

/// Where the body finds its home deputy after a move, and which body it
/// is: each move makes a new generation, and the deputy serves only the
/// newest one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HomeLink {
    pub home: SocketAddr,
    /// The job's own secret: only a body holding it is served.
    pub token: [u8; 16],
    pub generation: u64,
}

/// The job's site, served here or at its home.
pub enum Site {
    /// The body runs at home. `home` is set when the job may move away:
    /// its deputy, which serves this site to the body wherever it goes.
    Local { site: LocalSite, home: Option<Arc<Home>> },
    /// The body runs away from home: every call goes to the deputy.
    Remote(Box<RemoteSite>),
}

impl Deref for Site {
    type Target = dyn SiteOps;
    #[inline]
    fn deref(&self) -> &Self::Target {
        match self {
            Site::Local { site, .. } => site,
            Site::Remote(r) => &**r,
        }
    }
}

impl DerefMut for Site {
    #[inline]
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Site::Local { site, .. } => site,
            Site::Remote(r) => &mut **r,
        }
    }
}

/// What a move or a snapshot carries of the site.
pub enum Purpose {
    /// A live move: a job with a deputy keeps its site at home.
    Move,
    /// A snapshot (or a move without a deputy): the descriptors as data,
    /// reopened by path where the copy starts.
    Copy,
}

impl Site {
    pub fn local(site: LocalSite) -> Site {
        Site::Local { site, home: None }
    }

    /// The local site, for what only the home serves (sockets, fork);
    /// `away` is the error for a body away from home.
    pub fn here(&mut self, away: Errno) -> Result<&mut LocalSite, Errno> {
        match self {
            Site::Local { site, .. } => Ok(site),
            Site::Remote(_) => Err(away),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Site::Remote(_))
    }

    /// The statistics of the calls sent to the deputy (a body away).
    pub fn call_stats(&self) -> Option<Arc<CallStats>> {
        match self {
            Site::Local { .. } => None,
            Site::Remote(r) => Some(r.call_stats()),
        }
    }

    /// The host descriptor behind job descriptor `fd`, where the site is
    /// served in this process.
    pub fn host_fd(&self, fd: i32) -> Option<RawFd> {
        match self {
            Site::Local { site, .. } => site.host_fd(fd).ok(),
            Site::Remote(_) => None,
        }
    }

    /// The deputy's address, for `migrate --to home` and status.
    pub fn home_addr(&self) -> Option<SocketAddr> {
        match self {
            Site::Local { home, .. } => home.as_ref().map(|h| h.addr()),
            Site::Remote(r) => Some(r.link().home),
        }
    }

    /// The link the body of the next move will present, if the job has a deputy.
    pub fn next_link(&self) -> Option<HomeLink> {
        match self {
            Site::Local { home, .. } => home.as_ref().map(|h| h.next_link()),
            Site::Remote(r) => {
                let mut l = r.link().clone();
                l.generation += 1;
                Some(l)
            }
        }
    }

    /// What `capture` would refuse for `purpose` (it has no effects).
    pub fn check_movable(&self, purpose: Purpose) -> Result<(), SiteError> {
        match (self, purpose) {
            (Site::Local { site, home: Some(_) }, Purpose::Move) => site.check_movable(),
            (Site::Local { .. }, _) | (Site::Remote(_), Purpose::Move) => Ok(()),
            (Site::Remote(_), Purpose::Copy) => Err(SiteError::Unmovable {
                fd: -1,
                what: "a job away from home cannot be copied (its files are served by its home)".into(),
            }),
        }
    }

    /// The site as data for `purpose`. For a move of a job with a deputy,
    /// the descriptors stay at home and the state names the deputy and
    /// the next generation.
    pub fn capture(&self, purpose: Purpose) -> Result<(SiteState, Option<HomeLink>), SiteError> {
        match (self, purpose) {
            (Site::Local { site, home: Some(home) }, Purpose::Move) => {
                // Only what the deputy can serve may leave: sockets stay.
                site.check_movable()?;
                Ok((site.capture_names(), Some(home.next_link())))
            }
            (Site::Local { site, .. }, _) => Ok((site.capture()?, None)),
            (Site::Remote(r), Purpose::Move) => {
                let mut link = r.link().clone();
                link.generation += 1;
                Ok((r.capture_names(), Some(link)))
            }
            (Site::Remote(_), Purpose::Copy) => Err(SiteError::Unmovable {
                fd: -1,
                what: "a job away from home cannot be copied (its files are served by its home)".into(),
            }),
        }
    }

    /// Rebuilds the site on this host: with a `link`, by joining the job's
    /// deputy (or, when `home` is that deputy, taking the site back from
    /// it); otherwise from the descriptors as data.
    pub fn restore(
        state: &SiteState,
        link: Option<&HomeLink>,
        stdio: [RawFd; 3],
        home: Option<&Arc<Home>>,
        here: Option<SocketAddr>,
        prepared: Option<Prepared>,
        transport: &trust::Transport,
    ) -> Result<Site, SiteError> {
        match link {
            None => Ok(Site::local(LocalSite::restore(state, stdio)?)),
            Some(link) => match home {
                Some(h) if h.token() == link.token => {
                    let site = h.come_home(link.generation).map_err(SiteError::Home)?;
                    Ok(Site::Local { site, home: Some(h.clone()) })
                }
                // A deputy takes back its own job, and no other.
                Some(_) => Err(SiteError::Home("this deputy's port takes back only its own job".into())),
                None => {
                    let home_err = |e: std::io::Error| SiteError::Home(e.to_string());
                    // Links opened while the pages came, if they are for this body.
                    let p = match prepared.filter(|p| p.link() == link) {
                        Some(p) => p,
                        None => RemoteSite::prepare(link.clone(), here, transport).map_err(home_err)?,
                    };
                    Ok(Site::Remote(Box::new(RemoteSite::claim(p, state).map_err(home_err)?)))
                }
            },
        }
    }

    /// After a failed move, may the body resume here? Not if its deputy
    /// already took a newer body (a lost acknowledgement): exactly one
    /// body runs.
    pub fn may_resume(&mut self) -> bool {
        match self {
            Site::Local { home: Some(h), .. } => h.reclaim(),
            Site::Local { home: None, .. } => true,
            Site::Remote(r) => r.stay(),
        }
    }

    /// Does a deputy decide which body is the job? Then a body that has
    /// claimed it is the job, whatever became of the acknowledgement.
    pub fn has_deputy(&self) -> bool {
        matches!(self, Site::Local { home: Some(_), .. } | Site::Remote(_))
    }

    /// Answers outstanding writes (a body away sends some behind): before
    /// the job's state is taken for a move.
    pub fn flush(&mut self) {
        if let Site::Remote(r) = self {
            r.flush();
        }
    }

    /// The job ended here: tell its deputy, if it has one away.
    pub fn report_exit(&mut self, status: i32, message: &str) {
        if let Site::Remote(r) = self {
            r.report_exit(status, message);
        }
    }
}
