//! Site-dependent system calls: everything that touches the job's home
//! environment (files, working directory, terminal, stdio).
//!
//! This is the job's system context, the part MOSIX kept at home in the
//! deputy. Its interface takes plain byte buffers, never guest addresses:
//! the body side (`sys::files`) translates the job's pointers, so this
//! module can serve a job whose body runs elsewhere.

use std::ffi::CString;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::resolve::{resolve, resolve_nofollow, Resolved};
use super::SiteOps;
use crate::errno::{host, Errno, SysResult};

/// The RLIMIT_NOFILE a job gets where the serving process's own cannot be
/// read (the table itself grows as needed, up to `NR_OPEN`).
pub const MAX_FDS: usize = 1024;
/// The highest descriptor limit a site takes (Linux's default fs.nr_open).
pub const NR_OPEN: u64 = 1 << 20;

/// Where a descriptor's open file came from; decides how it is carried
/// to another host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// The job's stdin, stdout or stderr: the host process's own.
    Stdio(u8),
    /// Opened by path.
    Opened,
    /// One end of a pipe the job made.
    Pipe,
    /// A generated in-memory file (/proc/self/...).
    Memory,
    /// A socket the job made.
    Socket,
    /// One end of a Unix socket pair the job made (runtimes' self-pipes):
    /// its home serves it to a body away (read, write, poll, epoll), so it
    /// does not keep the job from moving. Socket calls on it (sendmsg,
    /// recvmsg, shutdown...) are served only at home.
    SocketPair,
    /// A descriptor above 2 the caller passed: like `Opened`, but its
    /// open file is shared with the caller, so it is never read ahead.
    Inherited,
    /// An epoll instance (a host epoll whose interest list holds the host
    /// descriptors behind job descriptors).
    Epoll,
    /// An eventfd (a host one).
    EventFd,
    /// A timerfd (a host one); `FdEntry::aux` is its clock.
    TimerFd,
    /// A signalfd: a host eventfd, readable while a signal in its mask
    /// (`FdEntry::aux`) is pending for the job. The signals live in the
    /// body, which reads them itself (see `SIGNALFD_READ`).
    SignalFd,
    /// The job's /proc/self/fd (or fdinfo with `true`) directory: a host
    /// descriptor of this process's own, for fstat; its listing is the
    /// job's descriptor table (`FdEntry::aux` is the position).
    FdDir(bool),
}

pub(super) struct FdEntry {
    pub(super) host: OwnedFd,
    pub(super) cloexec: bool,
    pub(super) origin: Origin,
    /// Identity of the open file description: dups share it (and offsets).
    pub(super) desc: u64,
    /// Per kind (see `Origin`): a signalfd's mask, a timerfd's clock, a
    /// directory listing's position.
    pub(super) aux: u64,
}

pub struct LocalSite {
    pub(super) fds: Vec<Option<FdEntry>>,
    pub(super) next_desc: u64,
    pub(super) cwd: OwnedFd,
    pub(super) cwd_path: Vec<u8>,
    pub(super) exe: PathBuf,
    pub(super) umask: u32,
    pub(super) pid: u32,
    /// RLIMIT_NOFILE: descriptors are numbered below it.
    pub(super) fd_limit: u64,
    /// FIFO opens going on in helper threads (`open_nowait`).
    pub(super) pending: Vec<super::events::PendingOpen>,
}

/// The serving process's soft RLIMIT_NOFILE (the caller's, for a job's
/// deputy), which a new site gives its job. The process's own soft limit
/// is raised to its hard one, so that the VMM's descriptors (and the
/// host's duplicates of the job's) do not eat into the job's.
pub(super) fn process_fd_limit() -> u64 {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return MAX_FDS as u64;
    }
    let soft = l.rlim_cur;
    if l.rlim_cur < l.rlim_max {
        let raised = libc::rlimit { rlim_cur: l.rlim_max, rlim_max: l.rlim_max };
        // SAFETY: valid pointer; failing leaves the limit as it was.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
    }
    soft.min(NR_OPEN)
}

/// Options for `LocalSite::new`.
pub struct SiteConfig {
    /// Host descriptors for the job's stdin, stdout and stderr.
    pub stdio: [RawFd; 3],
    /// Descriptors above 2 the caller passed: job fd and host descriptor.
    /// The site takes them over: it keeps a duplicate apart from the VMM's
    /// own descriptors and closes these, so that the job closing one
    /// closes it (a pipe's reader sees the end).
    pub inherited: Vec<(i32, RawFd)>,
    /// Working directory (absolute).
    pub cwd: PathBuf,
    /// The program, as /proc/self/exe shows it.
    pub exe: PathBuf,
    /// The job's file creation mask. The site applies it itself, so the
    /// host process must run with umask 0 (see `Site::new`). None: the
    /// process's mask at creation.
    pub umask: Option<u32>,
    /// The job's pid, for /proc/<pid> paths.
    pub pid: u32,
}

fn cstring(bytes: &[u8]) -> Result<CString, Errno> {
    CString::new(bytes).map_err(|_| Errno::EINVAL)
}

pub(super) fn dup_cloexec(fd: RawFd, min: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC on any fd is safe; the result is a new fd we own.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if r < 0 {
        Err(Errno::last())
    } else {
        // SAFETY: r is a fresh descriptor owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(r) })
    }
}

impl LocalSite {
    /// Sets the process umask to 0: each job's mask is applied per call.
    pub fn new(config: SiteConfig) -> std::io::Result<LocalSite> {
        // SAFETY: umask cannot fail.
        let process_mask = unsafe { libc::umask(0) };
        let cpath = CString::new(config.cwd.as_os_str().as_encoded_bytes())?;
        // SAFETY: valid C string; the result is checked.
        let cwd = unsafe { libc::open(cpath.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if cwd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        let cwd = unsafe { OwnedFd::from_raw_fd(cwd) };
        let mut site = LocalSite {
            fds: Vec::new(),
            next_desc: 1,
            cwd,
            cwd_path: config.cwd.as_os_str().as_encoded_bytes().to_vec(),
            exe: config.exe,
            umask: config.umask.unwrap_or(process_mask as u32),
            pid: config.pid,
            fd_limit: process_fd_limit(),
            pending: Vec::new(),
        };
        for (i, fd) in config.stdio.iter().enumerate() {
            // Keep the job's descriptors apart from the VMM's own: the job
            // closing its stderr must not silence the VMM's.
            if let Ok(host) = dup_cloexec(*fd, 3) {
                let desc = site.new_desc();
                site.install_at(i, host, false, Origin::Stdio(i as u8), desc);
            }
        }
        // Several job descriptors for one host descriptor share its open file.
        let mut descs: Vec<(RawFd, u64)> = Vec::new();
        for &(job_fd, fd) in &config.inherited {
            let Ok(slot) = usize::try_from(job_fd) else { continue };
            if slot < 3 || slot as u64 >= NR_OPEN || site.entry(job_fd).is_ok() {
                continue;
            }
            let desc = match descs.iter().find(|(h, _)| *h == fd) {
                Some(&(_, d)) => d,
                None => {
                    let d = site.new_desc();
                    descs.push((fd, d));
                    d
                }
            };
            if let Ok(host) = dup_cloexec(fd, 3) {
                site.install_at(slot, host, false, Origin::Inherited, desc);
            }
        }
        for (fd, _) in descs {
            if fd > 2 {
                // SAFETY: the caller handed this descriptor over to the site.
                unsafe { libc::close(fd) };
            }
        }
        Ok(site)
    }

    pub(super) fn new_desc(&mut self) -> u64 {
        self.next_desc += 1;
        self.next_desc - 1
    }

    pub(super) fn install_at(&mut self, fd: usize, host: OwnedFd, cloexec: bool, origin: Origin, desc: u64) {
        if self.fds.len() <= fd {
            self.fds.resize_with(fd + 1, || None);
        }
        self.fds[fd] = Some(FdEntry { host, cloexec, origin, desc, aux: 0 });
    }

    /// The lowest free descriptor >= `min` under the limit (EMFILE).
    fn free_slot(&self, min: usize) -> Result<usize, Errno> {
        let free = self.fds.iter().enumerate().skip(min).find(|(_, e)| e.is_none()).map(|(i, _)| i);
        let slot = free.unwrap_or(self.fds.len().max(min));
        if slot as u64 >= self.fd_limit {
            return Err(Errno::EMFILE);
        }
        Ok(slot)
    }

    /// Installs a newly opened file at the lowest free descriptor >= `min`.
    pub(super) fn install(&mut self, host: OwnedFd, cloexec: bool, min: usize, origin: Origin) -> SysResult {
        let slot = self.free_slot(min)?;
        let desc = self.new_desc();
        self.install_at(slot, host, cloexec, origin, desc);
        Ok(slot as u64)
    }

    pub(super) fn entry(&self, fd: i32) -> Result<&FdEntry, Errno> {
        usize::try_from(fd).ok().and_then(|i| self.fds.get(i)).and_then(|e| e.as_ref()).ok_or(Errno::EBADF)
    }

    pub(super) fn entry_mut(&mut self, fd: i32) -> Result<&mut FdEntry, Errno> {
        usize::try_from(fd).ok().and_then(|i| self.fds.get_mut(i)).and_then(|e| e.as_mut()).ok_or(Errno::EBADF)
    }

    /// The job's RLIMIT_NOFILE as the site applies it.
    pub fn fd_limit(&self) -> u64 {
        self.fd_limit
    }

    /// The host descriptor behind job descriptor `fd`.
    #[inline]
    pub fn host_fd(&self, fd: i32) -> Result<RawFd, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.fds.get(i))
            .and_then(|e| e.as_ref())
            .map(|e| e.host.as_raw_fd())
            .ok_or(Errno::EBADF)
    }

    /// May a body away from home send writes to `fd` without waiting for
    /// their answers? Where a write neither blocks for good nor fails in
    /// ways a program must see at once: regular files, and pipes and
    /// terminals in blocking mode.
    pub fn writes_may_go_behind(&self, fd: i32) -> bool {
        let Ok(e) = self.entry(fd) else { return false };
        // An eventfd's or timerfd's writes are wake-ups and settings: they
        // must take effect (and fail) in order with the job's other calls.
        if !matches!(e.origin, Origin::Opened | Origin::Inherited | Origin::Pipe | Origin::Stdio(_)) {
            return false;
        }
        let h = e.host.as_raw_fd();
        // SAFETY: fcntl/fstat on a descriptor we own, into a local.
        // SAFETY: a zeroed stat is a valid out buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fcntl/fstat on a descriptor we own, into a local.
        let (fl, r) = unsafe { (libc::fcntl(h, libc::F_GETFL), libc::fstat(h, &mut st)) };
        if r != 0 {
            return false;
        }
        let kind = st.st_mode & libc::S_IFMT;
        fl >= 0
            && fl & libc::O_NONBLOCK == 0
            && (kind == libc::S_IFREG || kind == libc::S_IFIFO || kind == libc::S_IFCHR)
    }

    /// Names the file behind `fd` (device and inode folded into 55 bits,
    /// never 0), so a body can tell two descriptors of one file apart.
    pub fn file_id(&self, fd: i32) -> u64 {
        let Ok(h) = self.host_fd(fd) else { return 0 };
        // SAFETY: a zeroed stat is a valid out buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on a descriptor we own, into a local.
        if unsafe { libc::fstat(h, &mut st) } != 0 {
            return 0;
        }
        (((st.st_dev << 32) ^ st.st_ino) & ((1 << 55) - 1)) | 1
    }

    /// May a body away from home read `fd` ahead of the job (and give back
    /// what it did not take with an lseek)? Only where nothing else sees
    /// the offset or the bytes: a regular file opened read-only by path,
    /// whose open file description no other descriptor shares.
    pub fn reads_may_go_ahead(&self, fd: i32) -> bool {
        let Ok(e) = self.entry(fd) else { return false };
        if e.origin != Origin::Opened || self.fds.iter().flatten().filter(|o| o.desc == e.desc).count() != 1 {
            return false;
        }
        let h = e.host.as_raw_fd();
        // SAFETY: a zeroed stat is a valid out buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fcntl/fstat on a descriptor we own, into a local.
        let (fl, r) = unsafe { (libc::fcntl(h, libc::F_GETFL), libc::fstat(h, &mut st)) };
        r == 0 && fl >= 0 && fl & libc::O_ACCMODE == libc::O_RDONLY && st.st_mode & libc::S_IFMT == libc::S_IFREG
    }

    /// The host descriptor behind `fd` for a write: a signalfd takes none.
    #[inline]
    fn writable_fd(&self, fd: i32) -> Result<RawFd, Errno> {
        let e = self.entry(fd)?;
        if e.origin == Origin::SignalFd {
            return Err(Errno::EINVAL);
        }
        Ok(e.host.as_raw_fd())
    }

    /// A directory descriptor for *at calls (AT_FDCWD is the job's cwd).
    pub(super) fn dir_fd(&self, dirfd: i32) -> Result<RawFd, Errno> {
        if dirfd == libc::AT_FDCWD {
            Ok(self.cwd.as_raw_fd())
        } else {
            self.host_fd(dirfd)
        }
    }

    /// The absolute path of the directory a relative path under `dirfd`
    /// starts from, read from the descriptor (a renamed directory moves).
    fn dir_path(&self, dirfd: i32) -> Result<Vec<u8>, Errno> {
        if let Some(Origin::FdDir(info)) = self.entry(dirfd).ok().map(|e| e.origin) {
            // The job's listing, whatever this process's pid is.
            return Ok(format!("/proc/{}/{}", self.pid, if info { "fdinfo" } else { "fd" }).into_bytes());
        }
        let link = format!("/proc/self/fd/{}", self.dir_fd(dirfd)?);
        std::fs::read_link(link).map(|p| p.into_os_string().into_encoded_bytes()).map_err(|_| Errno::ENOENT)
    }

    /// The host path for a job path under `dirfd`, resolved as the kernel
    /// would (`follow`: a final symlink is followed). Whatever the
    /// spelling, a path into the VMM's own /proc entry never reaches it:
    /// the job's program, descriptors and a few harmless entries are
    /// translated, the rest refused.
    pub(super) fn hpath(&self, dirfd: i32, path: &[u8], follow: bool) -> Result<CString, Errno> {
        if path.is_empty() {
            return cstring(path);
        }
        let r = self.resolve_at(dirfd, path, follow)?;
        self.host_path(path, r)
    }

    /// What a job path under `dirfd` names (see `resolve`).
    fn resolve_at(&self, dirfd: i32, path: &[u8], follow: bool) -> Result<Resolved, Errno> {
        if path.is_empty() {
            return Ok(Resolved::Host);
        }
        let base = if path.starts_with(b"/") { Vec::new() } else { self.dir_path(dirfd)? };
        Ok(if follow { resolve(path, &base, self.pid) } else { resolve_nofollow(path, &base, self.pid) })
    }

    /// The host path for `path`, resolved as `r`.
    fn host_path(&self, path: &[u8], r: Resolved) -> Result<CString, Errno> {
        match r {
            Resolved::Host => cstring(path),
            Resolved::Denied(e) => Err(Errno(e)),
            Resolved::ProcSelf(rest) => self.proc_self_host(&rest),
        }
    }

    /// A name under the job's /proc/<pid> (see `hpath`) as a host path.
    fn proc_self_host(&self, rest: &[u8]) -> Result<CString, Errno> {
        if rest == b"exe" {
            // The job's program, not the VMM's.
            return cstring(self.exe.as_os_str().as_encoded_bytes());
        }
        if rest == b"fd" || rest == b"fdinfo" {
            // The directories themselves (stat, access, chdir); opening
            // one lists the job's table instead (`open_fd_dir`).
            return cstring(if rest == b"fd" { b"/proc/self/fd" } else { b"/proc/self/fdinfo" });
        }
        for dir in [&b"fd/"[..], b"fdinfo/"] {
            if let Some(n) = rest.strip_prefix(dir) {
                let fd = std::str::from_utf8(n).ok().and_then(|s| s.parse::<i32>().ok());
                let host = fd.ok_or(Errno::ENOENT).and_then(|fd| self.host_fd(fd).map_err(|_| Errno::ENOENT))?;
                return cstring(format!("/proc/self/{}{host}", String::from_utf8_lossy(dir)).as_bytes());
            }
        }
        // Entries that describe the machine, not the VMM process.
        const HARMLESS: [&[u8]; 6] = [b"mounts", b"mountinfo", b"mountstats", b"cgroup", b"limits", b"net"];
        let first = rest.split(|&b| b == b'/').next().unwrap_or(b"");
        if HARMLESS.contains(&first) {
            let mut p = b"/proc/self/".to_vec();
            p.extend_from_slice(rest);
            return cstring(&p);
        }
        // The generated files (maps, status...) are the job's own, served
        // at their usual names; anything else would show the VMM.
        Err(Errno::EACCES)
    }

    /// After an open: a descriptor that still ended up in the VMM's /proc
    /// entry (a symlink swapped in meanwhile) is refused.
    pub(super) fn opened_outside_vmm(fd: RawFd) -> bool {
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default();
        // SAFETY: getpid has no preconditions.
        let own = format!("/proc/{}", unsafe { libc::getpid() });
        let b = link.as_os_str().as_encoded_bytes();
        !(b == own.as_bytes() || b.starts_with(format!("{own}/").as_bytes()))
    }

    /// The host descriptors the site holds: a forked child keeps these
    /// (its copies of the parent's open files) and closes the rest.
    pub fn host_fds(&self) -> Vec<RawFd> {
        let mut v: Vec<RawFd> = self.fds.iter().flatten().map(|e| e.host.as_raw_fd()).collect();
        v.push(self.cwd.as_raw_fd());
        v
    }

    /// The pid /proc/<pid> paths name (a forked child has its own).
    pub fn set_pid(&mut self, pid: u32) {
        self.pid = pid;
    }

    fn set_cwd(&mut self, dir: OwnedFd) -> SysResult {
        let link = format!("/proc/self/fd/{}", dir.as_raw_fd());
        let path = std::fs::read_link(Path::new(&link))?;
        self.cwd_path = path.as_os_str().as_encoded_bytes().to_vec();
        self.cwd = dir;
        Ok(0)
    }
}

impl SiteOps for LocalSite {
    // ---- descriptors ----

    fn openat(&mut self, dirfd: i32, path: &[u8], flags: i32, mode: u32) -> SysResult {
        if let Some(i) = self.pending_open(dirfd, path, flags, mode) {
            return self.wait_pending(i, flags);
        }
        let dir = self.dir_fd(dirfd)?;
        let nofollow =
            flags & libc::O_NOFOLLOW != 0 || flags & (libc::O_CREAT | libc::O_EXCL) == libc::O_CREAT | libc::O_EXCL;
        let r = self.resolve_at(dirfd, path, !nofollow)?;
        if let Resolved::ProcSelf(rest) = &r {
            if rest == b"fd" || rest == b"fdinfo" {
                return self.open_fd_dir(rest == b"fdinfo", flags);
            }
        }
        let p = if path.is_empty() { cstring(path)? } else { self.host_path(path, r)? };
        let creates = flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
        let mode = if creates { mode & !self.umask & 0o7777 } else { 0 };
        // SAFETY: valid descriptor and C string.
        let r = unsafe { libc::openat(dir, p.as_ptr(), flags | libc::O_CLOEXEC, mode) };
        let r = host(r as i64)?;
        // SAFETY: fresh descriptor.
        let owned = unsafe { OwnedFd::from_raw_fd(r as RawFd) };
        if !Self::opened_outside_vmm(owned.as_raw_fd()) {
            return Err(Errno::EACCES);
        }
        self.install(owned, flags & libc::O_CLOEXEC != 0, 0, Origin::Opened)
    }

    fn open_nowait(&mut self, dirfd: i32, path: &[u8], flags: i32, mode: u32) -> SysResult {
        self.open_nowait_here(dirfd, path, flags, mode)
    }

    /// Opens an in-memory file holding `content` (generated /proc files).
    fn open_bytes(&mut self, content: &[u8], flags: i32) -> SysResult {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(Errno::EACCES);
        }
        // SAFETY: a valid name; the result is checked.
        let fd = host(unsafe { libc::memfd_create(c"mosvm-proc".as_ptr(), libc::MFD_CLOEXEC) } as i64)?;
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let mut off = 0;
        while off < content.len() {
            // SAFETY: writing from a live slice.
            let n = host(unsafe {
                libc::pwrite(fd.as_raw_fd(), content[off..].as_ptr().cast(), content.len() - off, off as i64)
            } as i64)?;
            off += n as usize;
        }
        self.install(fd, flags & libc::O_CLOEXEC != 0, 0, Origin::Memory)
    }

    fn current_umask(&self) -> u32 {
        self.umask
    }

    fn close(&mut self, fd: i32) -> SysResult {
        let slot = usize::try_from(fd).ok().and_then(|i| self.fds.get_mut(i)).ok_or(Errno::EBADF)?;
        slot.take().ok_or(Errno::EBADF)?;
        Ok(0)
    }

    fn close_range(&mut self, first: u32, last: u32, cloexec: bool) -> SysResult {
        let end = (last as usize).min(self.fds.len().saturating_sub(1));
        for slot in self.fds.iter_mut().take(end + 1).skip(first as usize) {
            if cloexec {
                if let Some(e) = slot {
                    e.cloexec = true;
                }
            } else {
                *slot = None;
            }
        }
        Ok(0)
    }

    fn set_fd_limit(&mut self, limit: u64) {
        self.fd_limit = limit.min(NR_OPEN);
    }

    fn dup(&mut self, fd: i32, min: i32, cloexec: bool) -> SysResult {
        if min < 0 || min as u64 >= self.fd_limit {
            return Err(Errno::EINVAL);
        }
        let e = self.entry(fd)?;
        let (origin, desc, aux) = (e.origin, e.desc, e.aux);
        let host = dup_cloexec(e.host.as_raw_fd(), 3)?;
        let slot = self.free_slot(min as usize)?;
        self.install_at(slot, host, cloexec, origin, desc);
        self.fds[slot].as_mut().unwrap().aux = aux;
        Ok(slot as u64)
    }

    fn dup3(&mut self, old: i32, new: i32, cloexec: bool) -> SysResult {
        let host_old = self.host_fd(old)?;
        if new < 0 || new as u64 >= self.fd_limit {
            return Err(Errno::EBADF);
        }
        if old == new {
            return Ok(new as u64);
        }
        let e = self.entry(old)?;
        let (origin, desc, aux) = (e.origin, e.desc, e.aux);
        let host = dup_cloexec(host_old, 3)?;
        self.install_at(new as usize, host, cloexec, origin, desc);
        self.fds[new as usize].as_mut().unwrap().aux = aux;
        Ok(new as u64)
    }

    fn pipe2(&mut self, flags: i32) -> Result<(u64, u64), Errno> {
        let mut p = [0; 2];
        // SAFETY: p has room for two descriptors.
        host(unsafe { libc::pipe2(p.as_mut_ptr(), (flags & !libc::O_CLOEXEC) | libc::O_CLOEXEC) } as i64)?;
        // SAFETY: fresh descriptors.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
        let cloexec = flags & libc::O_CLOEXEC != 0;
        let a = self.install(r, cloexec, 0, Origin::Pipe)?;
        match self.install(w, cloexec, 0, Origin::Pipe) {
            Ok(b) => Ok((a, b)),
            Err(e) => {
                self.close(a as i32)?;
                Err(e)
            }
        }
    }

    fn fcntl(&mut self, fd: i32, cmd: i32, arg: u64) -> SysResult {
        let h = self.host_fd(fd)?;
        match cmd {
            libc::F_GETFD => Ok(self.fds[fd as usize].as_ref().unwrap().cloexec as u64),
            libc::F_SETFD => {
                self.fds[fd as usize].as_mut().unwrap().cloexec = arg & libc::FD_CLOEXEC as u64 != 0;
                Ok(0)
            }
            libc::F_DUPFD => self.dup(fd, arg as i32, false),
            libc::F_DUPFD_CLOEXEC => self.dup(fd, arg as i32, true),
            libc::F_GETFL | libc::F_SETFL | libc::F_GETPIPE_SZ | libc::F_SETPIPE_SZ | libc::F_GETOWN => {
                // SAFETY: integer-argument commands.
                host(unsafe { libc::fcntl(h, cmd, arg as libc::c_long) } as i64)
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// F_GETLK/F_SETLK/F_SETLKW and the OFD variants; `flock` is a struct flock.
    fn fcntl_lock(&mut self, fd: i32, cmd: i32, flock: &mut [u8; 32]) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: flock is a struct flock-sized buffer.
        host(unsafe { libc::fcntl(h, cmd, flock.as_mut_ptr()) } as i64)
    }

    // ---- data ----

    fn read(&mut self, fd: i32, buf: &mut [u8]) -> SysResult {
        let e = self.entry(fd)?;
        if e.origin == Origin::SignalFd {
            return Err(super::SIGNALFD_READ);
        }
        let h = e.host.as_raw_fd();
        // SAFETY: buf is valid for its length.
        host(unsafe { libc::read(h, buf.as_mut_ptr().cast(), buf.len()) } as i64)
    }

    fn write(&mut self, fd: i32, buf: &[u8]) -> SysResult {
        let h = self.writable_fd(fd)?;
        // SAFETY: buf is valid for its length.
        host(unsafe { libc::write(h, buf.as_ptr().cast(), buf.len()) } as i64)
    }

    fn pread(&mut self, fd: i32, buf: &mut [u8], offset: i64) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: buf is valid for its length.
        host(unsafe { libc::pread(h, buf.as_mut_ptr().cast(), buf.len(), offset) } as i64)
    }

    fn pwrite(&mut self, fd: i32, buf: &[u8], offset: i64) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: buf is valid for its length.
        host(unsafe { libc::pwrite(h, buf.as_ptr().cast(), buf.len(), offset) } as i64)
    }

    /// readv/preadv (offset -1: at the file position).
    fn readv(&mut self, fd: i32, bufs: &mut [IoSliceMut<'_>], offset: i64) -> SysResult {
        let e = self.entry(fd)?;
        if e.origin == Origin::SignalFd && offset < 0 {
            return Err(super::SIGNALFD_READ);
        }
        let h = e.host.as_raw_fd();
        let n = bufs.len().min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: IoSliceMut is ABI-compatible with struct iovec.
        host(unsafe {
            if offset < 0 {
                libc::readv(h, bufs.as_ptr().cast(), n)
            } else {
                libc::preadv(h, bufs.as_ptr().cast(), n, offset)
            }
        } as i64)
    }

    fn writev(&mut self, fd: i32, bufs: &[IoSlice<'_>], offset: i64) -> SysResult {
        let h = self.writable_fd(fd)?;
        let n = bufs.len().min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: IoSlice is ABI-compatible with struct iovec.
        host(unsafe {
            if offset < 0 {
                libc::writev(h, bufs.as_ptr().cast(), n)
            } else {
                libc::pwritev(h, bufs.as_ptr().cast(), n, offset)
            }
        } as i64)
    }

    fn lseek(&mut self, fd: i32, offset: i64, whence: i32) -> SysResult {
        let (h, origin) = self.entry(fd).map(|e| (e.host.as_raw_fd(), e.origin))?;
        if let Origin::FdDir(_) = origin {
            return self.fd_dir_seek(fd, offset, whence);
        }
        // SAFETY: plain integer arguments.
        host(unsafe { libc::lseek(h, offset, whence) })
    }

    fn getdents64(&mut self, fd: i32, buf: &mut [u8]) -> SysResult {
        let (h, origin) = self.entry(fd).map(|e| (e.host.as_raw_fd(), e.origin))?;
        if let Origin::FdDir(info) = origin {
            return self.fd_dir_entries(fd, info, buf);
        }
        // SAFETY: buf is valid for its length; the record format is the same
        // for the job and the host.
        host(unsafe { libc::syscall(libc::SYS_getdents64, h, buf.as_mut_ptr(), buf.len()) })
    }

    fn ioctl(&mut self, fd: i32, request: u64, arg: &mut [u8]) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: arg is a buffer of the size the request reads or writes.
        host(unsafe { libc::ioctl(h, request as _, arg.as_mut_ptr()) } as i64)
    }

    fn ioctl_int(&mut self, fd: i32, request: u64, arg: u64) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: integer-argument request.
        host(unsafe { libc::ioctl(h, request as _, arg) } as i64)
    }

    fn fsync(&mut self, fd: i32, data_only: bool) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: plain descriptor.
        host(unsafe {
            if data_only {
                libc::fdatasync(h)
            } else {
                libc::fsync(h)
            }
        } as i64)
    }

    fn ftruncate(&mut self, fd: i32, len: i64) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: plain arguments.
        host(unsafe { libc::ftruncate(h, len) } as i64)
    }

    fn fallocate(&mut self, fd: i32, mode: i32, offset: i64, len: i64) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: plain arguments.
        host(unsafe { libc::fallocate(h, mode, offset, len) } as i64)
    }

    fn fchmod(&mut self, fd: i32, mode: u32) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: plain arguments.
        host(unsafe { libc::fchmod(h, mode) } as i64)
    }

    /// poll(2) on job descriptors: `fds` holds struct pollfd records whose
    /// fd fields are job descriptors; revents are filled in.
    fn poll(&mut self, fds: &mut [u8], timeout_ms: i32) -> SysResult {
        let n = fds.len() / 8;
        let mut host_fds: Vec<libc::pollfd> = Vec::with_capacity(n);
        for rec in fds.chunks_exact(8) {
            let fd = i32::from_le_bytes(rec[0..4].try_into().unwrap());
            let events = i16::from_le_bytes(rec[4..6].try_into().unwrap());
            let h = if fd < 0 { -1 } else { self.host_fd(fd).unwrap_or(-2) };
            host_fds.push(libc::pollfd { fd: if h == -2 { -1 } else { h }, events, revents: 0 });
        }
        // SAFETY: host_fds holds n records.
        let r = host(unsafe { libc::poll(host_fds.as_mut_ptr(), n as libc::nfds_t, timeout_ms) } as i64)?;
        let mut ready = r;
        for (i, rec) in fds.chunks_exact_mut(8).enumerate() {
            let fd = i32::from_le_bytes(rec[0..4].try_into().unwrap());
            let mut revents = host_fds[i].revents;
            if fd >= 0 && self.host_fd(fd).is_err() {
                revents = libc::POLLNVAL;
                ready += 1;
            }
            rec[6..8].copy_from_slice(&revents.to_le_bytes());
        }
        Ok(ready)
    }

    // ---- event descriptors ----

    fn epoll_create(&mut self, cloexec: bool) -> SysResult {
        self.epoll_create_here(cloexec)
    }

    fn epoll_ctl(&mut self, epfd: i32, op: i32, fd: i32, event: &[u8; super::EPOLL_EVENT_SIZE]) -> SysResult {
        self.epoll_ctl_here(epfd, op, fd, event)
    }

    fn epoll_wait(&mut self, epfd: i32, events: &mut [u8], timeout_ms: i32) -> SysResult {
        self.epoll_wait_here(epfd, events, timeout_ms)
    }

    fn eventfd(&mut self, initval: u32, flags: i32) -> SysResult {
        self.eventfd_here(initval, flags)
    }

    fn timerfd_create(&mut self, clock: i32, flags: i32) -> SysResult {
        self.timerfd_create_here(clock, flags)
    }

    fn timerfd_settime(&mut self, fd: i32, flags: i32, new: &[u8; 32], now: i64, old: &mut [u8; 32]) -> SysResult {
        self.timerfd_settime_here(fd, flags, new, now, old)
    }

    fn timerfd_gettime(&mut self, fd: i32, cur: &mut [u8; 32]) -> SysResult {
        self.timerfd_gettime_here(fd, cur)
    }

    fn signalfd(&mut self, fd: i32, mask: u64, flags: i32) -> SysResult {
        self.signalfd_here(fd, mask, flags)
    }

    fn signalfd_get(&mut self, fd: i32) -> Result<(u64, bool), Errno> {
        self.signalfd_get_here(fd)
    }

    fn signals_pending(&mut self, pending: u64) -> SysResult {
        self.signals_pending_here(pending)
    }

    // ---- names ----

    fn mknodat(&mut self, dirfd: i32, path: &[u8], mode: u32, dev: u64) -> SysResult {
        self.mknodat_here(dirfd, path, mode, dev)
    }

    fn fadvise(&mut self, fd: i32, offset: i64, len: i64, advice: i32) -> SysResult {
        self.fadvise_here(fd, offset, len, advice)
    }

    fn readahead(&mut self, fd: i32, offset: i64, count: u64) -> SysResult {
        self.readahead_here(fd, offset, count)
    }

    fn getxattr(&mut self, fd: i32, path: &[u8], follow: bool, name: &[u8], out: &mut [u8]) -> SysResult {
        let name = cstring(name)?;
        let (buf, len) = xattr_buf(out);
        // SAFETY: valid C strings; buf is valid for len bytes (or null with 0).
        host(match self.xattr_target(fd, path, follow)? {
            XattrTarget::Fd(h) => unsafe { libc::fgetxattr(h, name.as_ptr(), buf, len) },
            XattrTarget::Path(p) if follow => unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), buf, len) },
            XattrTarget::Path(p) => unsafe { libc::lgetxattr(p.as_ptr(), name.as_ptr(), buf, len) },
        } as i64)
    }

    fn listxattr(&mut self, fd: i32, path: &[u8], follow: bool, out: &mut [u8]) -> SysResult {
        let (buf, len) = xattr_buf(out);
        let buf = buf.cast::<libc::c_char>();
        // SAFETY: valid C strings; buf is valid for len bytes (or null with 0).
        host(match self.xattr_target(fd, path, follow)? {
            XattrTarget::Fd(h) => unsafe { libc::flistxattr(h, buf, len) },
            XattrTarget::Path(p) if follow => unsafe { libc::listxattr(p.as_ptr(), buf, len) },
            XattrTarget::Path(p) => unsafe { libc::llistxattr(p.as_ptr(), buf, len) },
        } as i64)
    }

    fn setxattr(&mut self, fd: i32, path: &[u8], follow: bool, name: &[u8], value: &[u8], flags: i32) -> SysResult {
        let name = cstring(name)?;
        let (v, n) = (value.as_ptr().cast(), value.len());
        // SAFETY: valid C strings; value is valid for its length.
        host(match self.xattr_target(fd, path, follow)? {
            XattrTarget::Fd(h) => unsafe { libc::fsetxattr(h, name.as_ptr(), v, n, flags) },
            XattrTarget::Path(p) if follow => unsafe { libc::setxattr(p.as_ptr(), name.as_ptr(), v, n, flags) },
            XattrTarget::Path(p) => unsafe { libc::lsetxattr(p.as_ptr(), name.as_ptr(), v, n, flags) },
        } as i64)
    }

    fn removexattr(&mut self, fd: i32, path: &[u8], follow: bool, name: &[u8]) -> SysResult {
        let name = cstring(name)?;
        // SAFETY: valid C strings.
        host(match self.xattr_target(fd, path, follow)? {
            XattrTarget::Fd(h) => unsafe { libc::fremovexattr(h, name.as_ptr()) },
            XattrTarget::Path(p) if follow => unsafe { libc::removexattr(p.as_ptr(), name.as_ptr()) },
            XattrTarget::Path(p) => unsafe { libc::lremovexattr(p.as_ptr(), name.as_ptr()) },
        } as i64)
    }

    fn fstatat(&mut self, dirfd: i32, path: &[u8], flags: i32, out: &mut [u8; 144]) -> SysResult {
        let p = self.hpath(dirfd, path, flags & libc::AT_SYMLINK_NOFOLLOW == 0)?;
        let dir = if path.is_empty() && flags & libc::AT_EMPTY_PATH != 0 && dirfd != libc::AT_FDCWD {
            self.host_fd(dirfd)?
        } else {
            self.dir_fd(dirfd)?
        };
        // SAFETY: out is a struct stat-sized buffer; the layout is the same for job and host.
        host(unsafe { libc::syscall(libc::SYS_newfstatat, dir, p.as_ptr(), out.as_mut_ptr(), flags) })
    }

    fn statx(&mut self, dirfd: i32, path: &[u8], flags: i32, mask: u32, out: &mut [u8; 256]) -> SysResult {
        let p = self.hpath(dirfd, path, flags & libc::AT_SYMLINK_NOFOLLOW == 0)?;
        let dir = self.dir_fd(dirfd)?;
        // SAFETY: out is a struct statx-sized buffer.
        host(unsafe { libc::syscall(libc::SYS_statx, dir, p.as_ptr(), flags, mask, out.as_mut_ptr()) })
    }

    fn faccessat(&mut self, dirfd: i32, path: &[u8], mode: i32, flags: i32) -> SysResult {
        let p = self.hpath(dirfd, path, flags & libc::AT_SYMLINK_NOFOLLOW == 0)?;
        let dir = self.dir_fd(dirfd)?;
        // SAFETY: valid descriptor and C string.
        host(unsafe { libc::syscall(libc::SYS_faccessat2, dir, p.as_ptr(), mode, flags) }).or_else(|e| {
            if e == Errno::ENOSYS && flags == 0 {
                // SAFETY: as above.
                host(unsafe { libc::faccessat(dir, p.as_ptr(), mode, 0) } as i64)
            } else {
                Err(e)
            }
        })
    }

    fn unlinkat(&mut self, dirfd: i32, path: &[u8], flags: i32) -> SysResult {
        let p = self.hpath(dirfd, path, false)?;
        let dir = self.dir_fd(dirfd)?;
        // SAFETY: valid descriptor and C string.
        host(unsafe { libc::unlinkat(dir, p.as_ptr(), flags) } as i64)
    }

    fn mkdirat(&mut self, dirfd: i32, path: &[u8], mode: u32) -> SysResult {
        let p = self.hpath(dirfd, path, false)?;
        let dir = self.dir_fd(dirfd)?;
        // SAFETY: valid descriptor and C string.
        host(unsafe { libc::mkdirat(dir, p.as_ptr(), mode & !self.umask & 0o7777) } as i64)
    }

    fn renameat2(&mut self, olddir: i32, old: &[u8], newdir: i32, new: &[u8], flags: u32) -> SysResult {
        let (o, n) = (self.hpath(olddir, old, false)?, self.hpath(newdir, new, false)?);
        let (od, nd) = (self.dir_fd(olddir)?, self.dir_fd(newdir)?);
        // SAFETY: valid descriptors and C strings.
        host(unsafe { libc::syscall(libc::SYS_renameat2, od, o.as_ptr(), nd, n.as_ptr(), flags) })
    }

    fn linkat(&mut self, olddir: i32, old: &[u8], newdir: i32, new: &[u8], flags: i32) -> SysResult {
        let o = self.hpath(olddir, old, flags & libc::AT_SYMLINK_FOLLOW != 0)?;
        let n = self.hpath(newdir, new, false)?;
        let (od, nd) = (self.dir_fd(olddir)?, self.dir_fd(newdir)?);
        // SAFETY: valid descriptors and C strings.
        host(unsafe { libc::linkat(od, o.as_ptr(), nd, n.as_ptr(), flags) } as i64)
    }

    fn symlinkat(&mut self, target: &[u8], dirfd: i32, path: &[u8]) -> SysResult {
        let (t, p) = (cstring(target)?, self.hpath(dirfd, path, false)?);
        let dir = self.dir_fd(dirfd)?;
        // SAFETY: valid descriptor and C strings.
        host(unsafe { libc::symlinkat(t.as_ptr(), dir, p.as_ptr()) } as i64)
    }

    fn readlinkat(&mut self, dirfd: i32, path: &[u8], buf: &mut [u8]) -> SysResult {
        let base = if path.starts_with(b"/") { Vec::new() } else { self.dir_path(dirfd)? };
        let r = resolve_nofollow(path, &base, self.pid);
        let text = match &r {
            Resolved::ProcSelf(rest) if rest == b"exe" => Some(self.exe.as_os_str().as_encoded_bytes()),
            Resolved::ProcSelf(rest) => rest
                .strip_prefix(b"fd/")
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<i32>().ok())
                .and_then(|fd| self.fd_link_text(fd)),
            _ => None,
        };
        if let Some(text) = text {
            let n = text.len().min(buf.len());
            buf[..n].copy_from_slice(&text[..n]);
            return Ok(n as u64);
        }
        let p = self.hpath(dirfd, path, false)?;
        let dir = self.dir_fd(dirfd)?;
        // SAFETY: buf is valid for its length.
        host(unsafe { libc::readlinkat(dir, p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) } as i64)
    }

    fn fchmodat(&mut self, dirfd: i32, path: &[u8], mode: u32, flags: i32) -> SysResult {
        let p = self.hpath(dirfd, path, flags & libc::AT_SYMLINK_NOFOLLOW == 0)?;
        let dir = self.dir_fd(dirfd)?;
        // SAFETY: valid descriptor and C string.
        host(unsafe { libc::fchmodat(dir, p.as_ptr(), mode, flags) } as i64)
    }

    fn fchownat(&mut self, dirfd: i32, path: &[u8], uid: u32, gid: u32, flags: i32) -> SysResult {
        let p = self.hpath(dirfd, path, flags & libc::AT_SYMLINK_NOFOLLOW == 0)?;
        let dir = if path.is_empty() && flags & libc::AT_EMPTY_PATH != 0 && dirfd != libc::AT_FDCWD {
            self.host_fd(dirfd)?
        } else {
            self.dir_fd(dirfd)?
        };
        // SAFETY: valid descriptor and C string.
        host(unsafe { libc::fchownat(dir, p.as_ptr(), uid, gid, flags) } as i64)
    }

    /// utimensat; `times` is two struct timespec or None for "now".
    fn utimensat(&mut self, dirfd: i32, path: Option<&[u8]>, times: Option<&[u8; 32]>, flags: i32) -> SysResult {
        let p = path.map(|p| self.hpath(dirfd, p, flags & libc::AT_SYMLINK_NOFOLLOW == 0)).transpose()?;
        let dir = if p.is_none() { self.host_fd(dirfd)? } else { self.dir_fd(dirfd)? };
        let pp = p.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        let tp = times.map_or(std::ptr::null(), |t| t.as_ptr());
        // SAFETY: valid pointers or NULL as utimensat allows.
        host(unsafe { libc::syscall(libc::SYS_utimensat, dir, pp, tp, flags) })
    }

    fn truncate(&mut self, path: &[u8], len: i64) -> SysResult {
        // Resolve relative to the job's cwd: open, then ftruncate.
        let p = self.hpath(libc::AT_FDCWD, path, true)?;
        // SAFETY: valid descriptor and C string.
        let fd =
            host(unsafe { libc::openat(self.cwd.as_raw_fd(), p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) } as i64)?;
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        // SAFETY: plain arguments.
        host(unsafe { libc::ftruncate(fd.as_raw_fd(), len) } as i64)
    }

    fn umask(&mut self, mask: u32) -> u32 {
        std::mem::replace(&mut self.umask, mask & 0o777)
    }

    fn flock(&mut self, fd: i32, op: i32) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: plain arguments.
        host(unsafe { libc::flock(h, op) } as i64)
    }

    fn sendfile(&mut self, out_fd: i32, in_fd: i32, offset: Option<&mut i64>, count: u64) -> SysResult {
        let (o, i) = (self.host_fd(out_fd)?, self.host_fd(in_fd)?);
        let off = offset.map_or(std::ptr::null_mut(), |p| p as *mut i64);
        // SAFETY: off is NULL or points to a live i64.
        host(unsafe { libc::sendfile(o, i, off, count as usize) } as i64)
    }

    fn fstatfs(&mut self, fd: i32, out: &mut [u8; 120]) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: out is a struct statfs-sized buffer.
        host(unsafe { libc::syscall(libc::SYS_fstatfs, h, out.as_mut_ptr()) })
    }

    fn statfs(&mut self, path: &[u8], out: &mut [u8; 120]) -> SysResult {
        let p = self.hpath(libc::AT_FDCWD, path, true)?;
        // Resolve relative paths against the job's cwd.
        // SAFETY: valid descriptor and C string.
        let fd =
            host(unsafe { libc::openat(self.cwd.as_raw_fd(), p.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) } as i64)?;
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        // SAFETY: out is a struct statfs-sized buffer.
        host(unsafe { libc::syscall(libc::SYS_fstatfs, fd.as_raw_fd(), out.as_mut_ptr()) })
    }

    // ---- execve and fork ----

    /// The program execve names: `path` under `dirfd` (with AT_EMPTY_PATH
    /// and an empty path, the open descriptor itself). It must be a
    /// regular file the job may execute. Returns its bytes (at most `max`)
    /// and its host path.
    fn read_program(&mut self, dirfd: i32, path: &[u8], flags: i32, max: u64) -> Result<(Vec<u8>, PathBuf), Errno> {
        let file = if path.is_empty() {
            if flags & libc::AT_EMPTY_PATH == 0 {
                return Err(Errno::ENOENT);
            }
            dup_cloexec(self.host_fd(dirfd)?, 3)?
        } else {
            let dir = self.dir_fd(dirfd)?;
            let p = self.hpath(dirfd, path, flags & libc::AT_SYMLINK_NOFOLLOW == 0)?;
            let nofollow = if flags & libc::AT_SYMLINK_NOFOLLOW != 0 { libc::O_NOFOLLOW } else { 0 };
            // SAFETY: valid descriptor and C string.
            let fd =
                host(unsafe { libc::openat(dir, p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC | nofollow) } as i64)?;
            // SAFETY: fresh descriptor.
            unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
        };
        // SAFETY: a zeroed stat is a valid out buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor and out pointer.
        host(unsafe { libc::fstat(file.as_raw_fd(), &mut st) } as i64)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Errno::EACCES);
        }
        let link = format!("/proc/self/fd/{}", file.as_raw_fd());
        let c = cstring(link.as_bytes())?;
        // SAFETY: valid C string; X_OK checked with the effective ids, as execve does.
        host(unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) } as i64)?;
        if st.st_size as u64 > max {
            return Err(Errno::ENOMEM);
        }
        let mut bytes = vec![0u8; st.st_size as usize];
        let mut off = 0;
        while off < bytes.len() {
            // SAFETY: reading into the live rest of `bytes`.
            let n = unsafe {
                libc::pread(file.as_raw_fd(), bytes[off..].as_mut_ptr().cast(), bytes.len() - off, off as i64)
            };
            match n {
                n if n > 0 => off += n as usize,
                0 => break,
                _ if Errno::last() == Errno::EINTR => {}
                _ => return Err(Errno::last()),
            }
        }
        bytes.truncate(off);
        let path = std::fs::read_link(&link).map_err(|_| Errno::ENOENT)?;
        Ok((bytes, path))
    }

    /// execve's part here: close-on-exec descriptors close, and
    /// /proc/self/exe names the new program.
    fn exec(&mut self, exe: PathBuf) {
        for slot in self.fds.iter_mut() {
            if slot.as_ref().is_some_and(|e| e.cloexec) {
                *slot = None;
            }
        }
        self.exe = exe;
    }

    // ---- working directory ----

    fn getcwd(&self) -> &[u8] {
        &self.cwd_path
    }

    fn chdir(&mut self, path: &[u8]) -> SysResult {
        let p = self.hpath(libc::AT_FDCWD, path, true)?;
        // SAFETY: valid descriptor and C string.
        let fd = host(unsafe {
            libc::openat(self.cwd.as_raw_fd(), p.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        } as i64)?;
        // SAFETY: fresh descriptor.
        self.set_cwd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    fn fchdir(&mut self, fd: i32) -> SysResult {
        let h = self.host_fd(fd)?;
        let dot = c".";
        // SAFETY: valid descriptor and C string.
        let fd =
            host(unsafe { libc::openat(h, dot.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) } as i64)?;
        // SAFETY: fresh descriptor.
        self.set_cwd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}

/// The file an extended-attribute call is about, as the host calls take it.
enum XattrTarget {
    Fd(RawFd),
    Path(CString),
}

/// `out` as the host's xattr calls take it: an empty buffer asks for the
/// size (a null pointer and 0), never more than XATTR_SIZE_MAX.
fn xattr_buf(out: &mut [u8]) -> (*mut libc::c_void, usize) {
    if out.is_empty() {
        (std::ptr::null_mut(), 0)
    } else {
        (out.as_mut_ptr().cast(), out.len().min(super::XATTR_SIZE_MAX))
    }
}

impl LocalSite {
    /// The host's *xattr calls have no *at form: a relative path is
    /// reached through the working directory's descriptor.
    fn xattr_target(&self, fd: i32, path: &[u8], follow: bool) -> Result<XattrTarget, Errno> {
        if path.is_empty() {
            return if fd == libc::AT_FDCWD {
                Err(Errno(libc::ENOENT))
            } else {
                Ok(XattrTarget::Fd(self.host_fd(fd)?))
            };
        }
        let p = self.hpath(libc::AT_FDCWD, path, follow)?;
        if p.as_bytes().first() == Some(&b'/') {
            return Ok(XattrTarget::Path(p));
        }
        let mut full = format!("/proc/self/fd/{}/", self.dir_fd(libc::AT_FDCWD)?).into_bytes();
        full.extend_from_slice(p.as_bytes());
        Ok(XattrTarget::Path(cstring(&full)?))
    }
}
