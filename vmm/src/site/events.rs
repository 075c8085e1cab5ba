//! Event descriptors at the serving side (epoll, eventfd, timerfd,
//! signalfd), the job's /proc/self/fd listing, and the small file calls
//! that go with them (mknodat, fadvise). Each event descriptor is a real
//! host object behind a job descriptor, so readiness is the host's: an
//! epoll's interest list holds the host descriptors behind the job's, an
//! epoll descriptor is itself pollable, and closing the last descriptor of
//! an open file takes it out of every interest list, as on Linux.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use super::local::{dup_cloexec, LocalSite, Origin};
use super::{SiteOps, EPOLL_EVENT_SIZE, OPEN_PENDING};
use crate::errno::{host, Errno, SysResult};

/// The most events one epoll_wait returns (Linux: INT_MAX / 12).
pub const EP_MAX_EVENTS: usize = i32::MAX as usize / EPOLL_EVENT_SIZE;

const DT_DIR: u8 = 4;
const DT_REG: u8 = 8;
const DT_LNK: u8 = 10;

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: a fresh descriptor the host just returned.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// Is the host eventfd `h` readable?
fn readable(h: RawFd) -> bool {
    let mut p = libc::pollfd { fd: h, events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd record, no wait.
    unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLIN != 0 }
}

/// Makes the host eventfd behind a signalfd readable or not (its count is
/// 0 or 1, so a read that finds it readable does not block).
fn set_readable(h: RawFd, want: bool) {
    let is = readable(h);
    let mut v: u64 = 1;
    // SAFETY: an 8-byte read or write of a local on an eventfd we own.
    unsafe {
        if want && !is {
            libc::write(h, (&v as *const u64).cast(), 8);
        } else if !want && is {
            libc::read(h, (&mut v as *mut u64).cast(), 8);
        }
    }
}

fn timespec_ns(b: &[u8]) -> i64 {
    let sec = i64::from_le_bytes(b[..8].try_into().unwrap());
    let nsec = i64::from_le_bytes(b[8..16].try_into().unwrap());
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

fn put_timespec(b: &mut [u8], ns: i64) {
    b[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
    b[8..16].copy_from_slice(&(ns % 1_000_000_000).to_le_bytes());
}

/// Appends one struct linux_dirent64 to `out` if it fits.
fn dirent(out: &mut [u8], at: &mut usize, ino: u64, off: i64, kind: u8, name: &[u8]) -> bool {
    let len = (19 + name.len() + 1).div_ceil(8) * 8;
    if *at + len > out.len() {
        return false;
    }
    let r = &mut out[*at..*at + len];
    r.fill(0);
    r[..8].copy_from_slice(&ino.to_le_bytes());
    r[8..16].copy_from_slice(&off.to_le_bytes());
    r[16..18].copy_from_slice(&(len as u16).to_le_bytes());
    r[18] = kind;
    r[19..19 + name.len()].copy_from_slice(name);
    *at += len;
    true
}

/// A FIFO open going on in a helper thread: the call it answers, and its
/// result once there.
pub(crate) struct PendingOpen {
    key: (i32, Vec<u8>, i32, u32),
    result: Arc<Mutex<Option<Result<OwnedFd, Errno>>>>,
}

type Done = Arc<Mutex<Option<Result<OwnedFd, Errno>>>>;

impl LocalSite {
    /// See `SiteOps::open_nowait`.
    pub(super) fn open_nowait_here(&mut self, dirfd: i32, path: &[u8], flags: i32, mode: u32) -> SysResult {
        if let Some(i) = self.pending_open(dirfd, path, flags, mode) {
            return self.take_pending(i, flags).unwrap_or(Err(OPEN_PENDING));
        }
        let may_wait = flags & (libc::O_NONBLOCK | libc::O_PATH) == 0 && flags & libc::O_ACCMODE != libc::O_RDWR;
        if !may_wait || path.is_empty() {
            return self.openat(dirfd, path, flags, mode);
        }
        let follow = flags & libc::O_NOFOLLOW == 0;
        let (Ok(p), Ok(dir)) = (self.hpath(dirfd, path, follow), self.dir_fd(dirfd)) else {
            return self.openat(dirfd, path, flags, mode);
        };
        // SAFETY: a zeroed stat is a valid out buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let at = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
        // SAFETY: valid descriptor, C string and out pointer.
        let fifo =
            unsafe { libc::fstatat(dir, p.as_ptr(), &mut st, at) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO;
        if !fifo {
            return self.openat(dirfd, path, flags, mode);
        }
        if flags & libc::O_ACCMODE == libc::O_WRONLY {
            // A reader is there already: done without waiting.
            match self.openat(dirfd, path, flags | libc::O_NONBLOCK, mode) {
                Ok(fd) => {
                    let h = self.host_fd(fd as i32)?;
                    // SAFETY: plain fcntl calls on our descriptor.
                    unsafe { libc::fcntl(h, libc::F_SETFL, libc::fcntl(h, libc::F_GETFL) & !libc::O_NONBLOCK) };
                    return Ok(fd);
                }
                Err(e) if e.0 != libc::ENXIO => return Err(e),
                Err(_) => {}
            }
        }
        // Wait for the other end in a thread of this process.
        let dir = dup_cloexec(dir, 3)?;
        let result: Done = Arc::new(Mutex::new(None));
        let done = result.clone();
        std::thread::Builder::new()
            .name("fifo-open".into())
            .spawn(move || {
                let r = loop {
                    // SAFETY: a descriptor and C string this thread owns.
                    let fd = unsafe { libc::openat(dir.as_raw_fd(), p.as_ptr(), flags | libc::O_CLOEXEC, mode) };
                    if fd >= 0 {
                        let fd = owned(fd as i64);
                        break if LocalSite::opened_outside_vmm(fd.as_raw_fd()) { Ok(fd) } else { Err(Errno::EACCES) };
                    }
                    if Errno::last() != Errno::EINTR {
                        break Err(Errno::last());
                    }
                };
                if let Ok(mut d) = done.lock() {
                    *d = Some(r);
                }
            })
            .map_err(|_| Errno::EAGAIN)?;
        self.pending.push(PendingOpen { key: (dirfd, path.to_vec(), flags, mode), result: result.clone() });
        // The other end is often there already: a short wait saves a round.
        for _ in 0..20 {
            std::thread::sleep(std::time::Duration::from_micros(100));
            if result.lock().is_ok_and(|r| r.is_some()) {
                return self.open_nowait_here(dirfd, path, flags, mode);
            }
        }
        Err(OPEN_PENDING)
    }

    /// The FIFO open going on for this call, if any.
    pub(super) fn pending_open(&self, dirfd: i32, path: &[u8], flags: i32, mode: u32) -> Option<usize> {
        if self.pending.is_empty() {
            return None;
        }
        self.pending.iter().position(|p| p.key.0 == dirfd && p.key.1 == path && (p.key.2, p.key.3) == (flags, mode))
    }

    /// The result of pending open `i`, installed, if it is done.
    fn take_pending(&mut self, i: usize, flags: i32) -> Option<SysResult> {
        let done = self.pending[i].result.lock().map(|mut r| r.take()).unwrap_or(Some(Err(Errno(libc::EIO))))?;
        self.pending.swap_remove(i);
        Some(done.and_then(|fd| self.install(fd, flags & libc::O_CLOEXEC != 0, 0, Origin::Opened)))
    }

    /// A plain openat of a call whose open goes on in a helper (the job's
    /// other threads ended meanwhile): waits for it, EINTR on a signal.
    pub(super) fn wait_pending(&mut self, i: usize, flags: i32) -> SysResult {
        loop {
            if let Some(r) = self.take_pending(i, flags) {
                return r;
            }
            let ts = libc::timespec { tv_sec: 0, tv_nsec: 1_000_000 };
            // SAFETY: a valid timespec; no remainder wanted.
            if unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) } != 0 {
                return Err(Errno::EINTR);
            }
        }
    }

    fn origin_of(&self, fd: i32) -> Result<(Origin, RawFd), Errno> {
        let e = self.entry(fd)?;
        Ok((e.origin, e.host.as_raw_fd()))
    }

    pub(super) fn epoll_create_here(&mut self, cloexec: bool) -> SysResult {
        // SAFETY: plain flags.
        let h = host(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } as i64)?;
        self.install(owned(h as i64), cloexec, 0, Origin::Epoll)
    }

    pub(super) fn epoll_ctl_here(&mut self, epfd: i32, op: i32, fd: i32, event: &[u8; EPOLL_EVENT_SIZE]) -> SysResult {
        let ep = self.host_fd(epfd)?;
        let target = self.host_fd(fd)?;
        if epfd == fd {
            return Err(Errno::EINVAL);
        }
        // The job's data goes to the host as it is: it comes back unchanged.
        let mut ev = libc::epoll_event {
            events: u32::from_le_bytes(event[..4].try_into().unwrap()),
            u64: u64::from_le_bytes(event[4..].try_into().unwrap()),
        };
        // SAFETY: host descriptors we own and a local event.
        host(unsafe { libc::epoll_ctl(ep, op, target, &mut ev) } as i64)
    }

    pub(super) fn epoll_wait_here(&mut self, epfd: i32, events: &mut [u8], timeout_ms: i32) -> SysResult {
        let (origin, h) = self.origin_of(epfd)?;
        if origin != Origin::Epoll {
            return Err(Errno::EINVAL);
        }
        let max = (events.len() / EPOLL_EVENT_SIZE).min(EP_MAX_EVENTS);
        if max == 0 {
            return Err(Errno::EINVAL);
        }
        // SAFETY: `events` holds `max` packed struct epoll_event records
        // (the host's layout is the job's).
        host(unsafe { libc::epoll_wait(h, events.as_mut_ptr().cast(), max as i32, timeout_ms) } as i64)
    }

    pub(super) fn eventfd_here(&mut self, initval: u32, flags: i32) -> SysResult {
        if flags & !(libc::EFD_SEMAPHORE | libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) != 0 {
            return Err(Errno::EINVAL);
        }
        let fl = (flags & (libc::EFD_SEMAPHORE | libc::EFD_NONBLOCK)) | libc::EFD_CLOEXEC;
        // SAFETY: plain arguments.
        let h = host(unsafe { libc::eventfd(initval, fl) } as i64)?;
        self.install(owned(h as i64), flags & libc::EFD_CLOEXEC != 0, 0, Origin::EventFd)
    }

    pub(super) fn timerfd_create_here(&mut self, clock: i32, flags: i32) -> SysResult {
        if flags & !(libc::TFD_CLOEXEC | libc::TFD_NONBLOCK) != 0 {
            return Err(Errno::EINVAL);
        }
        let clocks = [
            libc::CLOCK_REALTIME,
            libc::CLOCK_MONOTONIC,
            libc::CLOCK_BOOTTIME,
            libc::CLOCK_REALTIME_ALARM,
            libc::CLOCK_BOOTTIME_ALARM,
        ];
        if !clocks.contains(&clock) {
            return Err(Errno::EINVAL);
        }
        let fl = (flags & libc::TFD_NONBLOCK) | libc::TFD_CLOEXEC;
        // SAFETY: plain arguments.
        let h = host(unsafe { libc::timerfd_create(clock, fl) } as i64)?;
        let fd = self.install(owned(h as i64), flags & libc::TFD_CLOEXEC != 0, 0, Origin::TimerFd)?;
        self.entry_mut(fd as i32)?.aux = clock as u64;
        Ok(fd)
    }

    pub(super) fn timerfd_settime_here(
        &mut self,
        fd: i32,
        flags: i32,
        new: &[u8; 32],
        now: i64,
        old: &mut [u8; 32],
    ) -> SysResult {
        let e = self.entry(fd)?;
        if e.origin != Origin::TimerFd {
            return Err(Errno::EINVAL);
        }
        let (h, clock) = (e.host.as_raw_fd(), e.aux as i32);
        let mut spec = *new;
        let mut fl = flags;
        let value = timespec_ns(&spec[16..]);
        if flags & libc::TFD_TIMER_ABSTIME != 0 && clock != libc::CLOCK_REALTIME && clock != libc::CLOCK_REALTIME_ALARM
        {
            // The job's monotonic clock is not this host's: arm it for the
            // time left (an expiry already past fires at once).
            fl &= !libc::TFD_TIMER_ABSTIME;
            if value != 0 {
                put_timespec(&mut spec[16..], value.saturating_sub(now).max(1));
            }
        }
        // SAFETY: struct itimerspec-sized buffers; the layout is the host's.
        host(unsafe { libc::syscall(libc::SYS_timerfd_settime, h, fl, spec.as_ptr(), old.as_mut_ptr()) })
    }

    pub(super) fn timerfd_gettime_here(&mut self, fd: i32, cur: &mut [u8; 32]) -> SysResult {
        let (origin, h) = self.origin_of(fd)?;
        if origin != Origin::TimerFd {
            return Err(Errno::EINVAL);
        }
        // SAFETY: a struct itimerspec-sized buffer.
        host(unsafe { libc::syscall(libc::SYS_timerfd_gettime, h, cur.as_mut_ptr()) })
    }

    pub(super) fn signalfd_here(&mut self, fd: i32, mask: u64, flags: i32) -> SysResult {
        if flags & !(libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) != 0 {
            return Err(Errno::EINVAL);
        }
        // SIGKILL and SIGSTOP are never taken through a signalfd.
        let mask = mask & !((1 << (libc::SIGKILL - 1)) | (1 << (libc::SIGSTOP - 1)));
        if fd == -1 {
            let fl = (flags & libc::SFD_NONBLOCK) | libc::EFD_CLOEXEC;
            // SAFETY: plain arguments.
            let h = host(unsafe { libc::eventfd(0, fl) } as i64)?;
            let fd = self.install(owned(h as i64), flags & libc::SFD_CLOEXEC != 0, 0, Origin::SignalFd)?;
            self.entry_mut(fd as i32)?.aux = mask;
            return Ok(fd);
        }
        let e = self.entry(fd)?;
        if e.origin != Origin::SignalFd {
            return Err(Errno::EINVAL);
        }
        // The mask belongs to the open file: every dup sees the new one.
        let desc = e.desc;
        for e in self.fds.iter_mut().flatten().filter(|e| e.desc == desc) {
            e.aux = mask;
        }
        Ok(fd as u64)
    }

    pub(super) fn signalfd_get_here(&mut self, fd: i32) -> Result<(u64, bool), Errno> {
        let e = self.entry(fd)?;
        if e.origin != Origin::SignalFd {
            return Err(Errno::EINVAL);
        }
        // SAFETY: F_GETFL on a descriptor we own.
        let fl = unsafe { libc::fcntl(e.host.as_raw_fd(), libc::F_GETFL) };
        Ok((e.aux, fl >= 0 && fl & libc::O_NONBLOCK != 0))
    }

    pub(super) fn signals_pending_here(&mut self, pending: u64) -> SysResult {
        let mut n = 0;
        for e in self.fds.iter().flatten().filter(|e| e.origin == Origin::SignalFd) {
            set_readable(e.host.as_raw_fd(), pending & e.aux != 0);
            n += 1;
        }
        Ok(n)
    }

    pub(super) fn mknodat_here(&mut self, dirfd: i32, path: &[u8], mode: u32, _dev: u64) -> SysResult {
        let kind = mode & libc::S_IFMT;
        let kind = match kind {
            0 => libc::S_IFREG,
            libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK => kind,
            libc::S_IFDIR => return Err(Errno::EPERM),
            _ => return Err(Errno::EINVAL),
        };
        let p = self.hpath(dirfd, path, false)?;
        let dir = self.dir_fd(dirfd)?;
        if kind == libc::S_IFCHR || kind == libc::S_IFBLK {
            // As for an unprivileged user: an existing name is EEXIST, a
            // missing directory ENOENT, the rest EPERM.
            // SAFETY: a zeroed stat is a valid out buffer.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: valid descriptor, C string and out pointer.
            if unsafe { libc::fstatat(dir, p.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } == 0 {
                return Err(Errno::EEXIST);
            }
            return Err(if Errno::last() == Errno::ENOENT && self.parent_missing(dirfd, path) {
                Errno::ENOENT
            } else {
                Errno::EPERM
            });
        }
        let mode = kind | (mode & !self.umask & 0o7777);
        // SAFETY: valid descriptor and C string.
        host(unsafe { libc::mknodat(dir, p.as_ptr(), mode, 0) } as i64)
    }

    /// Is the directory `path` would be created in missing?
    fn parent_missing(&self, dirfd: i32, path: &[u8]) -> bool {
        let trimmed = path.strip_suffix(b"/").unwrap_or(path);
        let parent = match trimmed.iter().rposition(|&b| b == b'/') {
            Some(0) => &b"/"[..],
            Some(i) => &trimmed[..i],
            None => return false,
        };
        let (Ok(p), Ok(dir)) = (self.hpath(dirfd, parent, true), self.dir_fd(dirfd)) else { return true };
        // SAFETY: a zeroed stat is a valid out buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, C string and out pointer.
        unsafe { libc::fstatat(dir, p.as_ptr(), &mut st, 0) != 0 }
    }

    pub(super) fn fadvise_here(&mut self, fd: i32, offset: i64, len: i64, advice: i32) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: plain arguments; posix_fadvise returns the errno itself.
        match unsafe { libc::posix_fadvise(h, offset, len, advice) } {
            0 => Ok(0),
            e => Err(Errno(e)),
        }
    }

    pub(super) fn readahead_here(&mut self, fd: i32, offset: i64, count: u64) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: plain arguments.
        host(unsafe { libc::readahead(h, offset, count as usize) } as i64)
    }

    /// Opens the job's /proc/self/fd (or fdinfo) directory.
    pub(super) fn open_fd_dir(&mut self, info: bool, flags: i32) -> SysResult {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_CREAT != 0 {
            return Err(Errno(libc::EISDIR));
        }
        let path = if info { c"/proc/self/fdinfo" } else { c"/proc/self/fd" };
        // This process's own directory, for fstat only: its listing (the
        // VMM's descriptors) is never read (see `fd_dir_entries`).
        // SAFETY: a valid C string.
        let h =
            host(unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) } as i64)?;
        self.install(owned(h as i64), flags & libc::O_CLOEXEC != 0, 0, Origin::FdDir(info))
    }

    /// getdents64 of a /proc/self/fd directory: the job's descriptors, at
    /// positions fd + 2 after "." and ".." (as procfs numbers them).
    pub(super) fn fd_dir_entries(&mut self, fd: i32, info: bool, buf: &mut [u8]) -> SysResult {
        let mut pos = self.entry(fd)?.aux;
        let mut at = 0;
        let kind = if info { DT_REG } else { DT_LNK };
        let mut name = [0u8; 12];
        loop {
            let (ok, next) = match pos {
                0 => (dirent(buf, &mut at, 1, 1, DT_DIR, b"."), 1),
                1 => (dirent(buf, &mut at, 2, 2, DT_DIR, b".."), 2),
                _ => {
                    let Some(n) =
                        self.fds.iter().enumerate().skip(pos as usize - 2).find(|(_, e)| e.is_some()).map(|(i, _)| i)
                    else {
                        break;
                    };
                    let digits = {
                        use std::io::Write;
                        let mut c = std::io::Cursor::new(&mut name[..]);
                        let _ = write!(c, "{n}");
                        c.position() as usize
                    };
                    let off = n as i64 + 3;
                    (dirent(buf, &mut at, 0x1000 + n as u64, off, kind, &name[..digits]), off as u64)
                }
            };
            if !ok {
                if at == 0 {
                    return Err(Errno::EINVAL);
                }
                break;
            }
            pos = next;
        }
        self.entry_mut(fd)?.aux = pos;
        Ok(at as u64)
    }

    /// lseek of a /proc/self/fd directory: its position.
    pub(super) fn fd_dir_seek(&mut self, fd: i32, offset: i64, whence: i32) -> SysResult {
        let e = self.entry_mut(fd)?;
        let new = match whence {
            libc::SEEK_SET => offset,
            libc::SEEK_CUR => (e.aux as i64).checked_add(offset).ok_or(Errno::EINVAL)?,
            _ => return Err(Errno::EINVAL),
        };
        if new < 0 {
            return Err(Errno::EINVAL);
        }
        e.aux = new as u64;
        Ok(new as u64)
    }

    /// What readlink of /proc/self/fd/N shows where the host's link would
    /// name the wrong thing (a signalfd is an eventfd here).
    pub(super) fn fd_link_text(&self, fd: i32) -> Option<&'static [u8]> {
        match self.entry(fd).ok()?.origin {
            Origin::SignalFd => Some(b"anon_inode:[signalfd]"),
            _ => None,
        }
    }
}
