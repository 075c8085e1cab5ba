//! Site-dependent calls, body side: turn the job's pointers into byte
//! buffers and hand the call to the job's `Site`.

use std::io::{IoSlice, IoSliceMut};

use libc::{AT_EMPTY_PATH, AT_FDCWD};

use crate::errno::{Errno, SysResult};

use crate::job::Job;
use crate::memory::GuestRam;
use crate::signal::{SigInfo, SIGPIPE, SI_USER};

const PATH_MAX: usize = 4096;
const IOV_MAX: u64 = 1024;
/// Linux caps a single read or write at this many bytes.
const MAX_RW_COUNT: u64 = 0x7fff_f000;

/// Request codes and the size of the structure they read or write.
const TCGETS: u64 = 0x5401;
const TCSETS: u64 = 0x5402;
const TCSETSW: u64 = 0x5403;
const TCSETSF: u64 = 0x5404;
const TCSBRK: u64 = 0x5409;
const TCXONC: u64 = 0x540a;
const TCFLSH: u64 = 0x540b;
const TIOCGPGRP: u64 = 0x540f;
const TIOCGWINSZ: u64 = 0x5413;
const TIOCSWINSZ: u64 = 0x5414;
const FIONREAD: u64 = 0x541b;
const FIONBIO: u64 = 0x5421;
const TIOCGSID: u64 = 0x5429;
const FIONCLEX: u64 = 0x5450;
const FIOCLEX: u64 = 0x5451;
const KERNEL_TERMIOS_SIZE: u64 = 36;

/// A path argument: NUL-terminated, at most PATH_MAX bytes.
fn user_path(ram: &GuestRam, addr: u64) -> Result<&[u8], Errno> {
    ram.user_cstr(addr, PATH_MAX - 1)?.ok_or(Errno::ENAMETOOLONG)
}

impl Job {
    /// Turns a host EINTR into a retry (None) or an interruption the job
    /// must see (a signal it handles, or a kick from the VMM).
    pub(super) fn retry<T>(&mut self, r: Result<T, Errno>) -> Option<Result<T, Errno>> {
        if !matches!(r, Err(Errno::EINTR)) {
            return Some(r);
        }
        self.interrupted().then_some(Err(Errno::ERESTARTSYS))
    }

    pub(super) fn wrote(&mut self, r: SysResult) -> SysResult {
        if r == Err(Errno(libc::EPIPE)) {
            self.signals.raise(SIGPIPE, SigInfo { code: SI_USER, addr: self.ids.pid as u64, ..Default::default() });
        }
        r
    }

    pub(super) fn sys_read(&mut self, fd: i32, addr: u64, len: u64, offset: i64) -> SysResult {
        let len = len.min(MAX_RW_COUNT);
        self.park_unless_ready(fd, libc::POLLIN)?;
        loop {
            let mut buf = self.ram.user_mut(addr, len)?;
            let r = if offset < 0 { self.site.read(fd, &mut buf) } else { self.site.pread(fd, &mut buf, offset) };
            buf.commit(*r.as_ref().unwrap_or(&0) as usize);
            if r == Err(crate::site::SIGNALFD_READ) {
                return self.read_signalfd(fd, addr, len);
            }
            if let Some(r) = self.retry(r) {
                return r;
            }
        }
    }

    pub(super) fn sys_write(&mut self, fd: i32, addr: u64, len: u64, offset: i64) -> SysResult {
        let len = len.min(MAX_RW_COUNT);
        self.park_unless_ready(fd, libc::POLLOUT)?;
        loop {
            let buf = self.ram.user(addr, len)?;
            let r = if offset < 0 { self.site.write(fd, buf) } else { self.site.pwrite(fd, buf, offset) };
            if let Some(r) = self.retry(r) {
                return self.wrote(r);
            }
        }
    }

    /// The (base, len) pairs of an iovec array, checked.
    pub(super) fn iovecs(&self, iov: u64, count: u64) -> Result<Vec<(u64, u64)>, Errno> {
        if count > IOV_MAX {
            return Err(Errno::EINVAL);
        }
        let raw = self.ram.user(iov, count * 16)?;
        let mut total = 0u64;
        let mut v = Vec::with_capacity(count as usize);
        for rec in raw.chunks_exact(16) {
            let base = u64::from_le_bytes(rec[..8].try_into().unwrap());
            let len = u64::from_le_bytes(rec[8..].try_into().unwrap());
            if len > i64::MAX as u64 {
                return Err(Errno::EINVAL);
            }
            let len = len.min(MAX_RW_COUNT - total);
            total += len;
            self.ram.check_user(base, len)?;
            v.push((base, len));
        }
        Ok(v)
    }

    pub(super) fn sys_readv(&mut self, fd: i32, iov: u64, count: u64, offset: i64) -> SysResult {
        let vecs = self.iovecs(iov, count)?;
        self.park_unless_ready(fd, libc::POLLIN)?;
        loop {
            let mut guards = vecs.iter().map(|&(b, l)| self.ram.user_mut(b, l)).collect::<Result<Vec<_>, _>>()?;
            let mut slices: Vec<IoSliceMut> = guards.iter_mut().map(|g| IoSliceMut::new(g)).collect();
            let r = self.site.readv(fd, &mut slices, offset);
            drop(slices);
            if r == Err(crate::site::SIGNALFD_READ) {
                drop(guards);
                // Into the first buffer (the job's records never straddle two).
                let (base, len) = vecs.iter().copied().find(|v| v.1 > 0).unwrap_or((0, 0));
                return self.read_signalfd(fd, base, len);
            }
            // Mark only what was filled.
            let mut left = *r.as_ref().unwrap_or(&0) as usize;
            for g in guards {
                let n = left.min(g.len());
                left -= n;
                g.commit(n);
            }
            if let Some(r) = self.retry(r) {
                return r;
            }
        }
    }

    pub(super) fn sys_writev(&mut self, fd: i32, iov: u64, count: u64, offset: i64) -> SysResult {
        let vecs = self.iovecs(iov, count)?;
        self.park_unless_ready(fd, libc::POLLOUT)?;
        loop {
            let slices =
                vecs.iter().map(|&(b, l)| self.ram.user(b, l).map(IoSlice::new)).collect::<Result<Vec<_>, _>>()?;
            let r = self.site.writev(fd, &slices, offset);
            if let Some(r) = self.retry(r) {
                return self.wrote(r);
            }
        }
    }

    pub(super) fn sys_openat(&mut self, dirfd: i32, path: u64, flags: i32, mode: u32) -> SysResult {
        // Its own handle on memory: the path stays borrowed across retries.
        let ram = self.ram.clone();
        let p = user_path(&ram, path)?;
        if let Some(content) = crate::procfs::self_path(p, self.ids.pid).and_then(|name| self.proc_self_file(name)) {
            return self.site.open_bytes(&content, flags);
        }
        if let Some(content) = self.system_file(p) {
            return self.site.open_bytes(&content, flags);
        }
        if self.has_threads() {
            // A FIFO waiting for its other end must not hold up the others.
            return match self.site.open_nowait(dirfd, p, flags, mode) {
                Err(crate::site::OPEN_PENDING) => {
                    let at = self.clock.monotonic() + crate::thread::POLL_RECHECK_NS;
                    Err(self.park(crate::thread::Wait::Retry { at }))
                }
                r => r,
            };
        }
        loop {
            let r = self.site.openat(dirfd, p, flags, mode);
            if let Some(r) = self.retry(r) {
                return r;
            }
        }
    }

    pub(super) fn sys_close_range(&mut self, first: u32, last: u32, flags: u32) -> SysResult {
        if first > last || flags & !(libc::CLOSE_RANGE_CLOEXEC | libc::CLOSE_RANGE_UNSHARE) != 0 {
            return Err(Errno::EINVAL);
        }
        // One call for the whole range: the site knows which are open.
        self.site.close_range(first, last, flags & libc::CLOSE_RANGE_CLOEXEC != 0)
    }

    pub(super) fn sys_fstatat(&mut self, dirfd: i32, path: u64, out: u64, flags: i32) -> SysResult {
        let p: &[u8] = if flags & AT_EMPTY_PATH != 0 && path == 0 { b"" } else { user_path(&self.ram, path)? };
        self.ram.check_user(out, 144)?;
        let mut st = [0u8; 144];
        self.site.fstatat(dirfd, p, flags, &mut st)?;
        self.ram.write_user(out, &st)?;
        Ok(0)
    }

    pub(super) fn sys_statx(&mut self, dirfd: i32, path: u64, flags: i32, mask: u32, out: u64) -> SysResult {
        let p = user_path(&self.ram, path)?;
        self.ram.check_user(out, 256)?;
        let mut st = [0u8; 256];
        self.site.statx(dirfd, p, flags, mask, &mut st)?;
        self.ram.write_user(out, &st)?;
        Ok(0)
    }

    pub(super) fn sys_statfs(&mut self, fd: Option<i32>, path: u64, out: u64) -> SysResult {
        self.ram.check_user(out, 120)?;
        let mut st = [0u8; 120];
        match fd {
            Some(fd) => self.site.fstatfs(fd, &mut st)?,
            None => {
                let p = user_path(&self.ram, path)?;
                self.site.statfs(p, &mut st)?
            }
        };
        self.ram.write_user(out, &st)?;
        Ok(0)
    }

    pub(super) fn sys_getdents64(&mut self, fd: i32, addr: u64, len: u64) -> SysResult {
        let mut buf = self.ram.user_mut(addr, len.min(MAX_RW_COUNT))?;
        let r = self.site.getdents64(fd, &mut buf);
        buf.commit(*r.as_ref().unwrap_or(&0) as usize);
        r
    }

    pub(super) fn sys_faccessat(&mut self, dirfd: i32, path: u64, mode: i32, flags: i32) -> SysResult {
        let p = user_path(&self.ram, path)?;
        self.site.faccessat(dirfd, p, mode, flags)
    }

    pub(super) fn sys_unlinkat(&mut self, dirfd: i32, path: u64, flags: i32) -> SysResult {
        let p = user_path(&self.ram, path)?;
        self.site.unlinkat(dirfd, p, flags)
    }

    pub(super) fn sys_mkdirat(&mut self, dirfd: i32, path: u64, mode: u32) -> SysResult {
        let p = user_path(&self.ram, path)?;
        self.site.mkdirat(dirfd, p, mode)
    }

    pub(super) fn sys_renameat2(&mut self, olddir: i32, old: u64, newdir: i32, new: u64, flags: u32) -> SysResult {
        let (o, n) = (user_path(&self.ram, old)?, user_path(&self.ram, new)?);
        self.site.renameat2(olddir, o, newdir, n, flags)
    }

    pub(super) fn sys_linkat(&mut self, olddir: i32, old: u64, newdir: i32, new: u64, flags: i32) -> SysResult {
        let (o, n) = (user_path(&self.ram, old)?, user_path(&self.ram, new)?);
        self.site.linkat(olddir, o, newdir, n, flags)
    }

    pub(super) fn sys_symlinkat(&mut self, target: u64, dirfd: i32, path: u64) -> SysResult {
        let (t, p) = (user_path(&self.ram, target)?, user_path(&self.ram, path)?);
        self.site.symlinkat(t, dirfd, p)
    }

    pub(super) fn sys_readlinkat(&mut self, dirfd: i32, path: u64, buf: u64, len: u64) -> SysResult {
        if (len as i64) <= 0 {
            return Err(Errno::EINVAL);
        }
        let p = user_path(&self.ram, path)?;
        let mut out = self.ram.user_mut(buf, len.min(PATH_MAX as u64 * 4))?;
        let r = self.site.readlinkat(dirfd, p, &mut out);
        out.commit(*r.as_ref().unwrap_or(&0) as usize);
        r
    }

    pub(super) fn sys_fchmodat(&mut self, dirfd: i32, path: u64, mode: u32) -> SysResult {
        let p = user_path(&self.ram, path)?;
        self.site.fchmodat(dirfd, p, mode, 0)
    }

    pub(super) fn sys_fchownat(&mut self, dirfd: i32, path: u64, uid: u32, gid: u32, flags: i32) -> SysResult {
        let p: &[u8] = if flags & AT_EMPTY_PATH != 0 && path == 0 { b"" } else { user_path(&self.ram, path)? };
        self.site.fchownat(dirfd, p, uid, gid, flags)
    }

    pub(super) fn sys_utimensat(&mut self, dirfd: i32, path: u64, times: u64, flags: i32) -> SysResult {
        let p = if path == 0 { None } else { Some(user_path(&self.ram, path)?) };
        let t: Option<[u8; 32]> = if times == 0 { None } else { Some(self.ram.user(times, 32)?.try_into().unwrap()) };
        if p.is_none() && dirfd == AT_FDCWD {
            return Err(Errno::EFAULT);
        }
        self.site.utimensat(dirfd, p, t.as_ref(), flags)
    }

    pub(super) fn sys_truncate(&mut self, path: u64, len: i64) -> SysResult {
        let p = user_path(&self.ram, path)?;
        self.site.truncate(p, len)
    }

    pub(super) fn sys_getcwd(&mut self, buf: u64, size: u64) -> SysResult {
        let cwd = self.site.getcwd();
        let n = cwd.len() as u64 + 1;
        if size < n {
            return Err(Errno::ERANGE);
        }
        let mut out = self.ram.user_mut(buf, n)?;
        out[..cwd.len()].copy_from_slice(cwd);
        out[cwd.len()] = 0;
        Ok(n)
    }

    pub(super) fn sys_chdir(&mut self, path: u64) -> SysResult {
        let p = user_path(&self.ram, path)?;
        self.site.chdir(p)
    }

    pub(super) fn sys_ioctl(&mut self, fd: i32, request: u64, arg: u64) -> SysResult {
        self.site.check_fd(fd)?;
        let request = request & 0xffff_ffff;
        // (size, copies in, copies out)
        let (size, input, output) = match request {
            TCGETS => (KERNEL_TERMIOS_SIZE, false, true),
            TCSETS | TCSETSW | TCSETSF => (KERNEL_TERMIOS_SIZE, true, false),
            TIOCGWINSZ => (8, false, true),
            TIOCSWINSZ => (8, true, false),
            TIOCGPGRP | TIOCGSID | FIONREAD => (4, false, true),
            FIONBIO => (4, true, false),
            TCSBRK | TCXONC | TCFLSH => return self.site.ioctl_int(fd, request, arg),
            FIOCLEX => return self.site.fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC as u64),
            FIONCLEX => return self.site.fcntl(fd, libc::F_SETFD, 0),
            _ => return Err(Errno::ENOTTY),
        };
        let mut buf = [0u8; 64];
        let buf = &mut buf[..size as usize];
        if input {
            buf.copy_from_slice(self.ram.user(arg, size)?);
        } else {
            self.ram.check_user(arg, size)?;
        }
        let r = self.site.ioctl(fd, request, buf)?;
        if output {
            self.ram.write_user(arg, buf)?;
        }
        Ok(r)
    }

    pub(super) fn sys_fcntl(&mut self, fd: i32, cmd: i32, arg: u64) -> SysResult {
        match cmd {
            libc::F_GETLK
            | libc::F_SETLK
            | libc::F_SETLKW
            | libc::F_OFD_GETLK
            | libc::F_OFD_SETLK
            | libc::F_OFD_SETLKW => {
                let mut flock: [u8; 32] = self.ram.user(arg, 32)?.try_into().unwrap();
                loop {
                    let r = self.site.fcntl_lock(fd, cmd, &mut flock);
                    if let Some(r) = self.retry(r) {
                        r?;
                        break;
                    }
                }
                if cmd == libc::F_GETLK || cmd == libc::F_OFD_GETLK {
                    self.ram.write_user(arg, &flock)?;
                }
                Ok(0)
            }
            _ => self.site.fcntl(fd, cmd, arg),
        }
    }

    pub(super) fn sys_flock(&mut self, fd: i32, op: i32) -> SysResult {
        loop {
            let r = self.site.flock(fd, op);
            if let Some(r) = self.retry(r) {
                return r;
            }
        }
    }

    pub(super) fn sys_dup2(&mut self, old: i32, new: i32) -> SysResult {
        if old == new {
            self.site.check_fd(old)?;
            return Ok(new as u64);
        }
        self.site.dup3(old, new, false)
    }

    pub(super) fn sys_dup3(&mut self, old: i32, new: i32, flags: i32) -> SysResult {
        if old == new || flags & !libc::O_CLOEXEC != 0 {
            return Err(Errno::EINVAL);
        }
        self.site.dup3(old, new, flags & libc::O_CLOEXEC != 0)
    }

    pub(super) fn sys_pipe2(&mut self, fds: u64, flags: i32) -> SysResult {
        if flags & !(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_DIRECT) != 0 {
            return Err(Errno::EINVAL);
        }
        self.ram.check_user(fds, 8)?;
        let (r, w) = self.site.pipe2(flags)?;
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&(r as i32).to_le_bytes());
        b[4..].copy_from_slice(&(w as i32).to_le_bytes());
        self.ram.write_user(fds, &b)?;
        Ok(0)
    }

    /// poll over job descriptors with a timeout in ms (-1: none), waking
    /// for signals the job will see.
    fn poll_fds(&mut self, fds: u64, nfds: u64, timeout_ms: i64) -> SysResult {
        if nfds > self.rlimits[libc::RLIMIT_NOFILE as usize].0.max(crate::site::MAX_FDS as u64) {
            return Err(Errno::EINVAL);
        }
        let mut recs = self.ram.user(fds, nfds * 8)?.to_vec();
        let deadline = self.poll_deadline_and_park(timeout_ms, &mut recs)?;
        loop {
            let left = match deadline {
                None => -1,
                Some(d) => ((d - self.clock.monotonic()).max(0) + 999_999) / 1_000_000,
            };
            let r = self.site.poll(&mut recs, left.min(i32::MAX as i64) as i32);
            if let Some(r) = self.retry(r) {
                let n = r?;
                self.ram.write_user(fds, &recs)?;
                return Ok(n);
            }
        }
    }

    /// The deadline of a poll or select with a timeout of `ms` (-1: none),
    /// kept across restarts. With other threads to run, a call that would
    /// wait instead parks the thread and looks again shortly (see
    /// `thread::Wait::Retry`): `Err(PARKED)`, unless something is ready
    /// now (a zero-timeout check of `recs` first) or time is up.
    fn poll_deadline_and_park(&mut self, ms: i64, recs: &mut [u8]) -> Result<Option<i64>, Errno> {
        let now = self.clock.monotonic();
        let deadline = self.restart_deadline.take().or((ms >= 0).then(|| now + ms * 1_000_000));
        if !self.has_threads() || deadline.is_some_and(|d| d <= now) || self.site.poll(recs, 0)? > 0 {
            return Ok(deadline);
        }
        self.restart_deadline = deadline;
        let at = now + crate::thread::POLL_RECHECK_NS.min(deadline.map_or(i64::MAX, |d| d - now));
        Err(self.park(crate::thread::Wait::Retry { at }))
    }

    pub(super) fn sys_poll(&mut self, fds: u64, nfds: u64, timeout_ms: i64) -> SysResult {
        self.poll_fds(fds, nfds, timeout_ms.max(-1))
    }

    pub(super) fn sys_ppoll(&mut self, fds: u64, nfds: u64, timeout: u64, sigmask: u64) -> SysResult {
        let ms = if timeout == 0 {
            -1
        } else {
            let t = crate::clock::Timespec::from_bytes(self.ram.user(timeout, 16)?)?;
            (t.as_nanos() + 999_999) / 1_000_000
        };
        let saved = self.signals.blocked;
        if sigmask != 0 {
            self.signals.blocked = self.ram.read_user_u64(sigmask)? & !crate::signal::UNBLOCKABLE;
        }
        let r = self.poll_fds(fds, nfds, ms);
        if r != Err(Errno::ERESTARTSYS) {
            self.signals.blocked = saved;
        } else {
            self.saved_mask = Some(saved);
        }
        r
    }

    /// select and pselect6, done with poll.
    pub(super) fn sys_select(&mut self, nfds: i32, sets: [u64; 3], timeout: u64, pselect: bool) -> SysResult {
        if !(0..=crate::site::MAX_FDS as i32).contains(&nfds) {
            return Err(Errno::EINVAL);
        }
        let bytes = (nfds as u64).div_ceil(64) * 8;
        let mut bits = [[0u8; 128]; 3];
        for (i, &s) in sets.iter().enumerate() {
            if s != 0 {
                bits[i][..bytes as usize].copy_from_slice(self.ram.user(s, bytes)?);
            }
        }
        let ms = if timeout == 0 {
            -1
        } else if pselect {
            let t = crate::clock::Timespec::from_bytes(self.ram.user(timeout, 16)?)?;
            (t.as_nanos() + 999_999) / 1_000_000
        } else {
            let b = self.ram.user(timeout, 16)?;
            let sec = i64::from_le_bytes(b[..8].try_into().unwrap());
            let usec = i64::from_le_bytes(b[8..].try_into().unwrap());
            if sec < 0 || !(0..1_000_000).contains(&usec) {
                return Err(Errno::EINVAL);
            }
            sec * 1000 + (usec + 999) / 1000
        };
        let is_set = |set: &[u8; 128], fd: usize| set[fd / 8] & (1 << (fd % 8)) != 0;
        let mut recs = Vec::new();
        let mut which = Vec::new();
        for fd in 0..nfds as usize {
            let mut events = 0i16;
            if is_set(&bits[0], fd) {
                events |= libc::POLLIN;
            }
            if is_set(&bits[1], fd) {
                events |= libc::POLLOUT;
            }
            if is_set(&bits[2], fd) {
                events |= libc::POLLPRI;
            }
            if events != 0 {
                self.site.check_fd(fd as i32)?;
                recs.extend_from_slice(&(fd as i32).to_le_bytes());
                recs.extend_from_slice(&events.to_le_bytes());
                recs.extend_from_slice(&0i16.to_le_bytes());
                which.push(fd);
            }
        }
        let deadline = self.poll_deadline_and_park(ms, &mut recs)?;
        loop {
            let left = deadline.map_or(-1, |d| ((d - self.clock.monotonic()).max(0) + 999_999) / 1_000_000);
            let r = self.site.poll(&mut recs, left.min(i32::MAX as i64) as i32);
            if let Some(r) = self.retry(r) {
                r?;
                break;
            }
        }
        let mut out = [[0u8; 128]; 3];
        let mut count = 0;
        for (i, &fd) in which.iter().enumerate() {
            let revents = i16::from_le_bytes([recs[i * 8 + 6], recs[i * 8 + 7]]);
            let hits = [
                is_set(&bits[0], fd) && revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0,
                is_set(&bits[1], fd) && revents & (libc::POLLOUT | libc::POLLERR) != 0,
                is_set(&bits[2], fd) && revents & libc::POLLPRI != 0,
            ];
            for (k, hit) in hits.iter().enumerate() {
                if *hit {
                    out[k][fd / 8] |= 1 << (fd % 8);
                    count += 1;
                }
            }
        }
        for (i, &s) in sets.iter().enumerate() {
            if s != 0 {
                self.ram.write_user(s, &out[i][..bytes as usize])?;
            }
        }
        Ok(count)
    }

    pub(super) fn sys_sendfile(&mut self, out_fd: i32, in_fd: i32, offset: u64, count: u64) -> SysResult {
        let mut off = if offset == 0 { None } else { Some(self.ram.read_user_u64(offset)? as i64) };
        let r = loop {
            let r = self.site.sendfile(out_fd, in_fd, off.as_mut(), count.min(MAX_RW_COUNT));
            if let Some(r) = self.retry(r) {
                break r;
            }
        };
        if let Some(o) = off {
            self.ram.write_user_u64(offset, o as u64)?;
        }
        self.wrote(r)
    }
}
