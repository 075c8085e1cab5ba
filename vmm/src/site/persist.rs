//! Carrying a job's site to another host: its descriptors as data
//! (`SiteState`) and back.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::local::{dup_cloexec, LocalSite, Origin};

/// How one open file is carried to another host.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FileState {
    /// The receiving process's own stdin, stdout or stderr.
    Stdio(u8),
    /// Reopened by path, at the same offset.
    Path { path: Vec<u8>, flags: i32, offset: i64 },
    /// A pipe the job made, with the bytes it held.
    Pipe { inode: u64, read_end: bool, flags: i32, data: Vec<u8> },
    /// A generated in-memory file.
    Memory { data: Vec<u8>, offset: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FdState {
    pub fd: i32,
    pub cloexec: bool,
    /// Descriptors with the same `desc` share one open file.
    pub desc: u64,
    pub file: FileState,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SiteState {
    pub cwd: Vec<u8>,
    pub umask: u32,
    pub exe: PathBuf,
    pub pid: u32,
    pub next_desc: u64,
    pub fds: Vec<FdState>,
}

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("descriptor {fd} cannot be moved: {what}")]
    Unmovable { fd: i32, what: String },
    #[error("cannot restore descriptor {fd}: {source}")]
    Restore { fd: i32, source: std::io::Error },
    #[error("cannot enter the working directory {path}: {source}")]
    Cwd { path: String, source: std::io::Error },
    #[error("the job has a child process ({0}); a job cannot move away from its children yet")]
    Children(i32),
    #[error("the job's home: {0}")]
    Home(String),
}

fn io_last() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// The bytes buffered in a pipe, read without consuming them (tee into a
/// scratch pipe).
fn peek_pipe(read_end: RawFd) -> std::io::Result<Vec<u8>> {
    let mut p = [0; 2];
    // SAFETY: p has room for two descriptors.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io_last());
    }
    // SAFETY: fresh descriptors.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    // Make the scratch pipe as large as the source so one tee takes all.
    // SAFETY: plain fcntl calls.
    unsafe {
        let size = libc::fcntl(read_end, libc::F_GETPIPE_SZ);
        if size > 0 {
            libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size);
        }
    }
    // SAFETY: both are pipe descriptors.
    let n = unsafe { libc::tee(read_end, w.as_raw_fd(), usize::MAX >> 1, libc::SPLICE_F_NONBLOCK) };
    if n < 0 {
        let e = io_last();
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Ok(Vec::new());
        }
        return Err(e);
    }
    let mut data = vec![0u8; n as usize];
    let mut got = 0;
    while got < data.len() {
        // SAFETY: reading into a live buffer.
        let k = unsafe { libc::read(r.as_raw_fd(), data[got..].as_mut_ptr().cast(), data.len() - got) };
        if k <= 0 {
            return Err(io_last());
        }
        got += k as usize;
    }
    Ok(data)
}

fn read_all_at(fd: RawFd) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        // SAFETY: reading into a live buffer at an explicit offset.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), data.len() as i64) };
        match n {
            0 => return Ok(data),
            n if n > 0 => data.extend_from_slice(&buf[..n as usize]),
            _ => return Err(io_last()),
        }
    }
}

impl LocalSite {
    /// Fails if a descriptor is one the deputy cannot serve to a body away
    /// from home (a socket: its peer would see another host).
    pub fn check_movable(&self) -> Result<(), SiteError> {
        for (fd, entry) in self.fds.iter().enumerate() {
            let Some(e) = entry else { continue };
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat on a descriptor we own into a local.
            unsafe { libc::fstat(e.host.as_raw_fd(), &mut st) };
            let pair = e.origin == Origin::SocketPair;
            if e.origin == Origin::Socket || (st.st_mode & libc::S_IFMT == libc::S_IFSOCK && !pair) {
                return Err(SiteError::Unmovable { fd: fd as i32, what: "it is a socket".into() });
            }
        }
        Ok(())
    }

    /// What a body away from home keeps of the site: the names it answers
    /// without asking (cwd, umask, program, pid); the descriptors stay here.
    pub fn capture_names(&self) -> SiteState {
        SiteState {
            cwd: self.cwd_path.clone(),
            umask: self.umask,
            exe: self.exe.clone(),
            pid: self.pid,
            next_desc: self.next_desc,
            fds: Vec::new(),
        }
    }

    /// The site as data, for a move to another host. Fails, changing
    /// nothing, if a descriptor cannot be carried (a socket, a deleted file).
    pub fn capture(&self) -> Result<SiteState, SiteError> {
        let mut fds = Vec::new();
        for (fd, entry) in self.fds.iter().enumerate() {
            let Some(e) = entry else { continue };
            let fd = fd as i32;
            let h = e.host.as_raw_fd();
            let unmovable = |what: String| SiteError::Unmovable { fd, what };
            // SAFETY: plain fcntl/lseek/fstat on a descriptor we own.
            let flags = unsafe { libc::fcntl(h, libc::F_GETFL) };
            let offset = unsafe { libc::lseek(h, 0, libc::SEEK_CUR) }.max(0);
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            unsafe { libc::fstat(h, &mut st) };
            let file = match e.origin {
                Origin::Stdio(n) => FileState::Stdio(n),
                Origin::Memory => {
                    FileState::Memory { data: read_all_at(h).map_err(|err| unmovable(err.to_string()))?, offset }
                }
                Origin::Pipe => {
                    let read_end = flags & libc::O_ACCMODE == libc::O_RDONLY;
                    let data =
                        if read_end { peek_pipe(h).map_err(|err| unmovable(err.to_string()))? } else { Vec::new() };
                    FileState::Pipe { inode: st.st_ino, read_end, flags, data }
                }
                Origin::Socket | Origin::SocketPair => return Err(unmovable("it is a socket".into())),
                Origin::Epoll | Origin::EventFd | Origin::TimerFd | Origin::SignalFd | Origin::FdDir(_) => {
                    let what = match e.origin {
                        Origin::Epoll => "an epoll instance",
                        Origin::EventFd => "an eventfd",
                        Origin::TimerFd => "a timerfd",
                        Origin::SignalFd => "a signalfd",
                        _ => "a /proc/self/fd listing",
                    };
                    return Err(unmovable(format!(
                        "it is {what}, which only a live move (its home keeps serving it) can take along"
                    )));
                }
                Origin::Opened | Origin::Inherited => {
                    if st.st_mode & libc::S_IFMT == libc::S_IFSOCK {
                        return Err(unmovable("it is a socket".into()));
                    }
                    let path =
                        std::fs::read_link(format!("/proc/self/fd/{h}")).map_err(|err| unmovable(err.to_string()))?;
                    let path = path.as_os_str().as_encoded_bytes().to_vec();
                    if path.ends_with(b" (deleted)") || !path.starts_with(b"/") {
                        return Err(unmovable(format!("{} has no name to reopen", String::from_utf8_lossy(&path))));
                    }
                    FileState::Path { path, flags, offset }
                }
            };
            fds.push(FdState { fd, cloexec: e.cloexec, desc: e.desc, file });
        }
        Ok(SiteState {
            cwd: self.cwd_path.clone(),
            umask: self.umask,
            exe: self.exe.clone(),
            pid: self.pid,
            next_desc: self.next_desc,
            fds,
        })
    }

    /// Rebuilds a site from `state`; `stdio` are this process's descriptors
    /// the job's stdio map to. Sets the process umask to 0, like `new`.
    pub fn restore(state: &SiteState, stdio: [RawFd; 3]) -> Result<LocalSite, SiteError> {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(0) };
        let cwd_c = CString::new(state.cwd.clone()).map_err(|_| SiteError::Cwd {
            path: String::from_utf8_lossy(&state.cwd).into(),
            source: std::io::ErrorKind::InvalidInput.into(),
        })?;
        // SAFETY: valid C string.
        let cwd = unsafe { libc::open(cwd_c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if cwd < 0 {
            return Err(SiteError::Cwd { path: String::from_utf8_lossy(&state.cwd).into(), source: io_last() });
        }
        let mut site = LocalSite {
            fds: Vec::new(),
            next_desc: state.next_desc,
            // SAFETY: fresh descriptor.
            cwd: unsafe { OwnedFd::from_raw_fd(cwd) },
            cwd_path: state.cwd.clone(),
            exe: state.exe.clone(),
            umask: state.umask,
            pid: state.pid,
            fd_limit: super::local::process_fd_limit(),
            pending: Vec::new(),
        };
        let mut opened: std::collections::HashMap<u64, (RawFd, Origin)> = std::collections::HashMap::new();
        // Pipes are recreated once per inode: (read end, write end).
        let mut pipes: std::collections::HashMap<u64, (OwnedFd, Option<OwnedFd>)> = std::collections::HashMap::new();
        for f in &state.fds {
            let fail = |source: std::io::Error| SiteError::Restore { fd: f.fd, source };
            let origin;
            let host = if let Some(&(first, first_origin)) = opened.get(&f.desc) {
                origin = first_origin;
                dup_cloexec(first, 3).map_err(|e| fail(std::io::Error::from_raw_os_error(e.0)))?
            } else {
                let h = match &f.file {
                    FileState::Stdio(n) => {
                        origin = Origin::Stdio(*n);
                        dup_cloexec(stdio[(*n as usize).min(2)], 3)
                            .map_err(|e| fail(std::io::Error::from_raw_os_error(e.0)))?
                    }
                    FileState::Path { path, flags, offset } => {
                        origin = Origin::Opened;
                        let c =
                            CString::new(path.clone()).map_err(|_| fail(std::io::ErrorKind::InvalidInput.into()))?;
                        let fl = (flags & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL)) | libc::O_CLOEXEC;
                        // SAFETY: valid C string.
                        let h = unsafe { libc::open(c.as_ptr(), fl) };
                        if h < 0 {
                            return Err(fail(io_last()));
                        }
                        // SAFETY: fresh descriptor; seeking it is harmless.
                        unsafe { libc::lseek(h, *offset, libc::SEEK_SET) };
                        // SAFETY: fresh descriptor.
                        unsafe { OwnedFd::from_raw_fd(h) }
                    }
                    FileState::Memory { data, offset } => {
                        origin = Origin::Memory;
                        // SAFETY: valid name.
                        let h = unsafe { libc::memfd_create(c"mosvm-proc".as_ptr(), libc::MFD_CLOEXEC) };
                        if h < 0 {
                            return Err(fail(io_last()));
                        }
                        // SAFETY: fresh descriptor.
                        let h = unsafe { OwnedFd::from_raw_fd(h) };
                        std::fs::File::from(h.try_clone().map_err(fail)?).write_all_at(data, 0).map_err(fail)?;
                        // SAFETY: seeking our descriptor.
                        unsafe { libc::lseek(h.as_raw_fd(), *offset, libc::SEEK_SET) };
                        h
                    }
                    FileState::Pipe { inode, read_end, flags, data } => {
                        origin = Origin::Pipe;
                        if !pipes.contains_key(inode) {
                            let mut p = [0; 2];
                            // SAFETY: p has room for two descriptors.
                            if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                                return Err(fail(io_last()));
                            }
                            // SAFETY: fresh descriptors.
                            let (r, w) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
                            pipes.insert(*inode, (r, Some(w)));
                        }
                        let (r, w) = pipes.get_mut(inode).unwrap();
                        if *read_end && !data.is_empty() {
                            let wr = w.as_ref().unwrap().as_raw_fd();
                            // SAFETY: plain fcntl; a large pipe holds what the old one held.
                            unsafe { libc::fcntl(wr, libc::F_SETPIPE_SZ, data.len() as i32) };
                            std::fs::File::from(w.as_ref().unwrap().try_clone().map_err(fail)?)
                                .write_all(data)
                                .map_err(fail)?;
                        }
                        let end = if *read_end { r.as_raw_fd() } else { w.as_ref().unwrap().as_raw_fd() };
                        let h = dup_cloexec(end, 3).map_err(|e| fail(std::io::Error::from_raw_os_error(e.0)))?;
                        // SAFETY: setting the status flags the job had (O_NONBLOCK).
                        unsafe { libc::fcntl(h.as_raw_fd(), libc::F_SETFL, *flags) };
                        h
                    }
                };
                opened.insert(f.desc, (h.as_raw_fd(), origin));
                h
            };
            site.install_at(f.fd as usize, host, f.cloexec, origin, f.desc);
        }
        // The scratch pipe ends are dropped here: a pipe whose writer the job
        // had closed reads its data and then EOF, as it would have.
        drop(pipes);
        Ok(site)
    }
}
