//! The deputy link's messages, the way gVisor's lisafs defines its own:
//! one typed request per site call, one reply shape for all of them.
//!
//! Two TCP connections make one link. On the *calls* connection the body
//! sends a `Call` and waits for its `Reply`, strictly in turn. On the
//! *events* connection either side sends `Event`s at any time: the deputy
//! forwards signals from home (Ctrl-C, `kill`), the body asks the deputy
//! to cut a blocking call short (it must pause for a move).
//!
//! Frames: u32 length, u32 CRC32C of the payload, postcard payload. Every
//! connection starts with `Hello` (magic, version, the job's secret and
//! the body's generation), answered by a `Welcome` once the deputy has
//! checked the secret. A destination opens its links while the pages are
//! still being copied; at the switch it sends `Claim` on the calls link
//! and the deputy answers a second `Welcome`: one round trip of downtime.

use std::io::{self, Read, Write};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use trust::Link;

/// First bytes of a deputy link connection (a migration stream starts
/// with its own magic, so one port can take both).
pub const MAGIC: [u8; 8] = *b"MOSVDEP\0";
/// 2 added the calls from `CloseRange` on (event descriptors, mknodat,
/// fadvise, the descriptor limit, extended attributes); a deputy still
/// takes version 1 bodies, whose calls are all version 2 calls (new calls
/// only ever go at the end). 3 added `Call::Stay`: a deputy refuses
/// bodies of a version it does not know, so a body that is served knows
/// every call it has.
pub const VERSION: u32 = 3;
/// The oldest body version a deputy serves.
pub const MIN_VERSION: u32 = 1;
/// The largest frame either side accepts (a program read for execve).
pub const MAX_FRAME: usize = 256 << 20;
/// The most bytes one read or write call carries; larger ones are split.
pub const IO_CHUNK: usize = 4 << 20;
/// How long a link may go without a byte in the middle of a frame (and
/// how long a handshake's answer may take). A quiet link between frames
/// is a healthy one (keepalive watches it); a frame that stops halfway,
/// or whose length was corrupted on the way, must not hang both ends.
pub const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkKind {
    Calls,
    Events,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub token: [u8; 16],
    pub generation: u64,
    pub kind: LinkKind,
    /// The body's host, as the deputy names it in messages.
    pub body: String,
}

/// Why a deputy refuses a link: machine-readable, with words for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalKind {
    /// Not this job's secret.
    BadToken,
    /// A newer body already took over; this one must stop.
    Stale,
    /// Malformed or of an unknown version.
    Protocol,
    /// The job has ended.
    Ended,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Welcome {
    Accepted,
    Refused { kind: RefusalKind, why: String },
}

/// The body of a move asks to be the job (sent on a welcomed calls link).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub generation: u64,
}

/// One site call. Byte strings borrow from the frame they came in.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call<'a> {
    Openat {
        dirfd: i32,
        path: &'a [u8],
        flags: i32,
        mode: u32,
    },
    OpenBytes {
        content: &'a [u8],
        flags: i32,
    },
    Close {
        fd: i32,
    },
    Dup {
        fd: i32,
        min: i32,
        cloexec: bool,
    },
    Dup3 {
        old: i32,
        new: i32,
        cloexec: bool,
    },
    Pipe2 {
        flags: i32,
    },
    Fcntl {
        fd: i32,
        cmd: i32,
        arg: u64,
    },
    FcntlLock {
        fd: i32,
        cmd: i32,
        flock: &'a [u8],
    },
    /// read (offset < 0) or pread.
    Read {
        fd: i32,
        len: u32,
        offset: i64,
    },
    /// write (offset < 0) or pwrite.
    Write {
        fd: i32,
        data: &'a [u8],
        offset: i64,
    },
    Lseek {
        fd: i32,
        offset: i64,
        whence: i32,
    },
    Getdents64 {
        fd: i32,
        len: u32,
    },
    Ioctl {
        fd: i32,
        request: u64,
        arg: &'a [u8],
    },
    IoctlInt {
        fd: i32,
        request: u64,
        arg: u64,
    },
    Fsync {
        fd: i32,
        data_only: bool,
    },
    Ftruncate {
        fd: i32,
        len: i64,
    },
    Fallocate {
        fd: i32,
        mode: i32,
        offset: i64,
        len: i64,
    },
    Fchmod {
        fd: i32,
        mode: u32,
    },
    Poll {
        fds: &'a [u8],
        timeout_ms: i32,
    },
    Flock {
        fd: i32,
        op: i32,
    },
    Sendfile {
        out_fd: i32,
        in_fd: i32,
        offset: Option<i64>,
        count: u64,
    },
    Fstatfs {
        fd: i32,
    },
    Fstatat {
        dirfd: i32,
        path: &'a [u8],
        flags: i32,
    },
    Statx {
        dirfd: i32,
        path: &'a [u8],
        flags: i32,
        mask: u32,
    },
    Faccessat {
        dirfd: i32,
        path: &'a [u8],
        mode: i32,
        flags: i32,
    },
    Unlinkat {
        dirfd: i32,
        path: &'a [u8],
        flags: i32,
    },
    Mkdirat {
        dirfd: i32,
        path: &'a [u8],
        mode: u32,
    },
    Renameat2 {
        olddir: i32,
        old: &'a [u8],
        newdir: i32,
        new: &'a [u8],
        flags: u32,
    },
    Linkat {
        olddir: i32,
        old: &'a [u8],
        newdir: i32,
        new: &'a [u8],
        flags: i32,
    },
    Symlinkat {
        target: &'a [u8],
        dirfd: i32,
        path: &'a [u8],
    },
    Readlinkat {
        dirfd: i32,
        path: &'a [u8],
        len: u32,
    },
    Fchmodat {
        dirfd: i32,
        path: &'a [u8],
        mode: u32,
        flags: i32,
    },
    Fchownat {
        dirfd: i32,
        path: &'a [u8],
        uid: u32,
        gid: u32,
        flags: i32,
    },
    Utimensat {
        dirfd: i32,
        path: Option<&'a [u8]>,
        times: Option<&'a [u8]>,
        flags: i32,
    },
    Truncate {
        path: &'a [u8],
        len: i64,
    },
    Umask {
        mask: u32,
    },
    Statfs {
        path: &'a [u8],
    },
    ReadProgram {
        dirfd: i32,
        path: &'a [u8],
        flags: i32,
        max: u64,
    },
    Exec {
        exe: &'a [u8],
    },
    Chdir {
        path: &'a [u8],
    },
    Fchdir {
        fd: i32,
    },
    /// The job ended on the body's host: its status (as a shell reports
    /// it) and the line to print at home, if any. The last call.
    Exit {
        status: i32,
        message: &'a str,
    },
    // ---- version 2 ----
    CloseRange {
        first: u32,
        last: u32,
        cloexec: bool,
    },
    SetFdLimit {
        limit: u64,
    },
    EpollCreate {
        cloexec: bool,
    },
    EpollCtl {
        epfd: i32,
        op: i32,
        fd: i32,
        event: &'a [u8],
    },
    EpollWait {
        epfd: i32,
        max: u32,
        timeout_ms: i32,
    },
    Eventfd {
        initval: u32,
        flags: i32,
    },
    TimerfdCreate {
        clock: i32,
        flags: i32,
    },
    TimerfdSettime {
        fd: i32,
        flags: i32,
        new: &'a [u8],
        now: i64,
    },
    TimerfdGettime {
        fd: i32,
    },
    Signalfd {
        fd: i32,
        mask: u64,
        flags: i32,
    },
    SignalfdGet {
        fd: i32,
    },
    SignalsPending {
        pending: u64,
    },
    Mknodat {
        dirfd: i32,
        path: &'a [u8],
        mode: u32,
        dev: u64,
    },
    Fadvise {
        fd: i32,
        offset: i64,
        len: i64,
        advice: i32,
    },
    Readahead {
        fd: i32,
        offset: i64,
        count: u64,
    },
    OpenNowait {
        dirfd: i32,
        path: &'a [u8],
        flags: i32,
        mode: u32,
    },
    Getxattr {
        fd: i32,
        path: &'a [u8],
        follow: bool,
        name: &'a [u8],
        size: u32,
    },
    Listxattr {
        fd: i32,
        path: &'a [u8],
        follow: bool,
        size: u32,
    },
    Setxattr {
        fd: i32,
        path: &'a [u8],
        follow: bool,
        name: &'a [u8],
        value: &'a [u8],
        flags: i32,
    },
    Removexattr {
        fd: i32,
        path: &'a [u8],
        follow: bool,
        name: &'a [u8],
    },
    // ---- version 3 ----
    /// After a move whose acknowledgement never came: the body asks to
    /// go on as the job. The deputy answers 1 (and fences off the new
    /// body: `aux` is the generation the body's next move starts after)
    /// unless a newer body has already claimed the job.
    Stay,
}

/// The names of the kinds of `Call`, indexed by `Call::kind` (for
/// statistics: a fixed table, nothing allocated per call).
pub const CALL_KINDS: [&str; 63] = [
    "openat",
    "open_bytes",
    "close",
    "dup",
    "dup3",
    "pipe2",
    "fcntl",
    "fcntl_lock",
    "read",
    "write",
    "lseek",
    "getdents64",
    "ioctl",
    "ioctl_int",
    "fsync",
    "ftruncate",
    "fallocate",
    "fchmod",
    "poll",
    "flock",
    "sendfile",
    "fstatfs",
    "fstatat",
    "statx",
    "faccessat",
    "unlinkat",
    "mkdirat",
    "renameat2",
    "linkat",
    "symlinkat",
    "readlinkat",
    "fchmodat",
    "fchownat",
    "utimensat",
    "truncate",
    "umask",
    "statfs",
    "read_program",
    "exec",
    "chdir",
    "fchdir",
    "exit",
    "close_range",
    "set_fd_limit",
    "epoll_create",
    "epoll_ctl",
    "epoll_wait",
    "eventfd",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "signalfd",
    "signalfd_get",
    "signals_pending",
    "mknodat",
    "fadvise",
    "readahead",
    "open_nowait",
    "getxattr",
    "listxattr",
    "setxattr",
    "removexattr",
    "stay",
];

impl Call<'_> {
    /// This call's index in `CALL_KINDS`.
    pub const fn kind(&self) -> usize {
        match self {
            Call::Openat { .. } => 0,
            Call::OpenBytes { .. } => 1,
            Call::Close { .. } => 2,
            Call::Dup { .. } => 3,
            Call::Dup3 { .. } => 4,
            Call::Pipe2 { .. } => 5,
            Call::Fcntl { .. } => 6,
            Call::FcntlLock { .. } => 7,
            Call::Read { .. } => 8,
            Call::Write { .. } => 9,
            Call::Lseek { .. } => 10,
            Call::Getdents64 { .. } => 11,
            Call::Ioctl { .. } => 12,
            Call::IoctlInt { .. } => 13,
            Call::Fsync { .. } => 14,
            Call::Ftruncate { .. } => 15,
            Call::Fallocate { .. } => 16,
            Call::Fchmod { .. } => 17,
            Call::Poll { .. } => 18,
            Call::Flock { .. } => 19,
            Call::Sendfile { .. } => 20,
            Call::Fstatfs { .. } => 21,
            Call::Fstatat { .. } => 22,
            Call::Statx { .. } => 23,
            Call::Faccessat { .. } => 24,
            Call::Unlinkat { .. } => 25,
            Call::Mkdirat { .. } => 26,
            Call::Renameat2 { .. } => 27,
            Call::Linkat { .. } => 28,
            Call::Symlinkat { .. } => 29,
            Call::Readlinkat { .. } => 30,
            Call::Fchmodat { .. } => 31,
            Call::Fchownat { .. } => 32,
            Call::Utimensat { .. } => 33,
            Call::Truncate { .. } => 34,
            Call::Umask { .. } => 35,
            Call::Statfs { .. } => 36,
            Call::ReadProgram { .. } => 37,
            Call::Exec { .. } => 38,
            Call::Chdir { .. } => 39,
            Call::Fchdir { .. } => 40,
            Call::Exit { .. } => 41,
            Call::CloseRange { .. } => 42,
            Call::SetFdLimit { .. } => 43,
            Call::EpollCreate { .. } => 44,
            Call::EpollCtl { .. } => 45,
            Call::EpollWait { .. } => 46,
            Call::Eventfd { .. } => 47,
            Call::TimerfdCreate { .. } => 48,
            Call::TimerfdSettime { .. } => 49,
            Call::TimerfdGettime { .. } => 50,
            Call::Signalfd { .. } => 51,
            Call::SignalfdGet { .. } => 52,
            Call::SignalsPending { .. } => 53,
            Call::Mknodat { .. } => 54,
            Call::Fadvise { .. } => 55,
            Call::Readahead { .. } => 56,
            Call::OpenNowait { .. } => 57,
            Call::Getxattr { .. } => 58,
            Call::Listxattr { .. } => 59,
            Call::Setxattr { .. } => 60,
            Call::Removexattr { .. } => 61,
            Call::Stay => 62,
        }
    }
}

/// The answer to any call: `ret` is the call's value or -errno; `aux` a
/// second value (the other end of a pipe, sendfile's new offset);
/// `data` what the call returns in a buffer (read bytes, struct stat, the
/// new cwd); `signals` host signals that reached the deputy meanwhile,
/// for the body to raise before it looks at an EINTR.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply<'a> {
    pub ret: i64,
    pub aux: i64,
    pub signals: u64,
    pub data: &'a [u8],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Deputy to body: these signals (a bit per signal, 1 << (sig - 1))
    /// were sent to the job at home.
    Signal(u64),
    /// Body to deputy: cut call number `seq` short with EINTR if it still
    /// blocks (the body must pause).
    Interrupt(u64),
    /// Deputy to body: a newer body took over, or the job was ended at
    /// home; this body must stop.
    Revoked(String),
}

/// Writes `msg` as one frame, encoding into `buf` (kept for reuse, so
/// the steady state allocates nothing).
pub fn write_frame<T: Serialize>(w: &mut impl Write, buf: &mut Vec<u8>, msg: &T) -> io::Result<()> {
    buf.clear();
    buf.extend_from_slice(&[0u8; 8]);
    let mut v = postcard::to_extend(msg, std::mem::take(buf)).map_err(|e| io::Error::other(e.to_string()))?;
    let len = (v.len() - 8) as u32;
    let crc = crc32c::crc32c(&v[8..]);
    v[..4].copy_from_slice(&len.to_le_bytes());
    v[4..8].copy_from_slice(&crc.to_le_bytes());
    let r = w.write_all(&v);
    *buf = v;
    r
}

/// Reads one frame's payload into `buf` (resized as needed) and checks it.
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut h = [0u8; 8];
    r.read_exact(&mut h)?;
    let len = u32::from_le_bytes(h[..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(h[4..].try_into().unwrap());
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a {len}-byte frame is too large")));
    }
    // The buffer grows as the bytes come (doubling), not as the header
    // claims: a peer that announces a huge frame and stops costs nothing.
    buf.clear();
    while buf.len() < len {
        let at = buf.len();
        let n = (len - at).min(at.max(64 << 10));
        buf.resize(at + n, 0);
        r.read_exact(&mut buf[at..])?;
    }
    if crc32c::crc32c(buf) != crc {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "a frame's checksum does not match"));
    }
    Ok(())
}

/// Reads a link's next frame. Waiting for its first byte takes as long
/// as the link is quiet, or at most `idle`, and returns EINTR (a kick, a
/// signal) to the caller, before any byte of the frame came, so that a
/// frame is never torn. From the first byte on, every read may wait at
/// most `PATIENCE` (the socket's read timeout, set by `tune`).
pub fn next_frame(s: &mut Link, buf: &mut Vec<u8>, idle: Option<Duration>) -> io::Result<()> {
    if let Some(d) = idle {
        s.socket().set_read_timeout(Some(d.max(Duration::from_millis(1))))?;
    }
    let first = first_byte(s, idle.is_some());
    if idle.is_some() {
        s.socket().set_read_timeout(Some(PATIENCE))?;
    }
    let mut rest = Resumed { inner: s, first: Some(first?) };
    read_frame(&mut rest, buf).map_err(|e| {
        if timed_out(&e) {
            io::Error::new(io::ErrorKind::TimedOut, format!("a frame stopped halfway for {} s", PATIENCE.as_secs()))
        } else {
            e
        }
    })
}

/// `next_frame`, going on through EINTR.
pub fn next_frame_uninterrupted(s: &mut Link, buf: &mut Vec<u8>) -> io::Result<()> {
    loop {
        match next_frame(s, buf, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// A frame's first byte; the socket's read timeout ends the wait only if
/// it is `bounded`.
fn first_byte(s: &mut Link, bounded: bool) -> io::Result<u8> {
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => return Ok(b[0]),
            Err(e) if timed_out(&e) && !bounded => continue,
            Err(e) if timed_out(&e) => return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time")),
            Err(e) => return Err(e),
        }
    }
}

/// A reader that hands out one byte already read, then retries EINTR.
struct Resumed<'a> {
    inner: &'a mut Link,
    first: Option<u8>,
}

impl Read for Resumed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(b) = self.first.take() {
            buf[0] = b;
            return Ok(1);
        }
        loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

/// Decodes a frame's payload.
pub fn decode<'a, T: Deserialize<'a>>(buf: &'a [u8]) -> io::Result<T> {
    postcard::from_bytes(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("malformed message: {e}")))
}

/// Link sockets: a peer that vanishes is noticed in seconds
/// (`trust::watch_peer`), and a frame that stops halfway in `PATIENCE`.
pub fn tune(s: &std::net::TcpStream) -> io::Result<()> {
    trust::watch_peer(s)?;
    s.set_read_timeout(Some(PATIENCE))
}

/// Sends the link's opening (magic, then a framed `Hello`).
pub fn write_hello(w: &mut impl Write, hello: &Hello) -> io::Result<()> {
    w.write_all(&MAGIC)?;
    write_frame(w, &mut Vec::new(), hello)
}

/// Reads a `Hello` after the magic (which the caller has checked).
pub fn read_hello(r: &mut impl Read) -> io::Result<Hello> {
    let mut buf = Vec::new();
    read_frame(r, &mut buf)?;
    let h: Hello = decode(&buf)?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_reject_damage() {
        let call = Call::Write { fd: 1, data: b"hello", offset: -1 };
        let mut wire = Vec::new();
        let mut buf = Vec::new();
        write_frame(&mut wire, &mut buf, &call).unwrap();
        let mut rx = Vec::new();
        read_frame(&mut &wire[..], &mut rx).unwrap();
        assert_eq!(decode::<Call>(&rx).unwrap(), call);
        // A flipped byte fails the checksum; a cut frame fails to read.
        let mut bad = wire.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(read_frame(&mut &bad[..], &mut rx).is_err());
        assert!(read_frame(&mut &wire[..wire.len() - 2], &mut rx).is_err());
        // An absurd length is refused before anything is allocated.
        let mut huge = wire.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_frame(&mut &huge[..], &mut rx).is_err());
    }

    #[test]
    fn a_frame_that_stops_halfway_ends_the_read_but_a_quiet_link_does_not() {
        use std::net::{TcpListener, TcpStream};
        use std::time::Duration;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut link = trust::Transport::Plain.server(l.accept().unwrap().0).unwrap();
        tune(link.socket()).unwrap();
        assert_eq!(link.socket().read_timeout().unwrap(), Some(PATIENCE));
        // The test's patience, so that it does not wait 10 s.
        let short = Duration::from_millis(100);
        link.socket().set_read_timeout(Some(short)).unwrap();
        let (go, gone) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            // Quiet for several read timeouts, then a whole frame.
            std::thread::sleep(Duration::from_millis(500));
            write_frame(&mut peer, &mut Vec::new(), &Event::Signal(2)).unwrap();
            gone.recv().unwrap();
            // A header whose length grew on the way: 8 bytes more than sent.
            let mut wire = Vec::new();
            write_frame(&mut wire, &mut Vec::new(), &Event::Signal(9)).unwrap();
            let len = u32::from_le_bytes(wire[..4].try_into().unwrap()) + 8;
            wire[..4].copy_from_slice(&len.to_le_bytes());
            peer.write_all(&wire).unwrap();
            gone.recv().unwrap_or(());
        });
        let mut buf = Vec::new();
        next_frame(&mut link, &mut buf, None).unwrap();
        assert_eq!(decode::<Event>(&buf).unwrap(), Event::Signal(2));
        // A bounded wait for an answer that does not come ends.
        let e = next_frame(&mut link, &mut buf, Some(short)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(link.socket().read_timeout().unwrap(), Some(PATIENCE));
        link.socket().set_read_timeout(Some(short)).unwrap();
        go.send(()).unwrap();
        let e = next_frame(&mut link, &mut buf, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        drop(go);
        writer.join().unwrap();
    }

    #[test]
    fn call_kinds_name_their_calls() {
        assert_eq!(CALL_KINDS[Call::Write { fd: 1, data: b"", offset: -1 }.kind()], "write");
        assert_eq!(CALL_KINDS[Call::Exit { status: 0, message: "" }.kind()], "exit");
        assert_eq!(CALL_KINDS[Call::Fstatat { dirfd: 0, path: b"", flags: 0 }.kind()], "fstatat");
    }

    #[test]
    fn version_1_calls_decode_the_same() {
        // Version 1's last call, as a version 1 body encodes it (variant
        // 41, then its fields): new variants only come after it.
        let mut v1 = vec![41u8, 14];
        v1.extend_from_slice(b"\x03bye");
        assert_eq!(decode::<Call>(&v1).unwrap(), Call::Exit { status: 7, message: "bye" });
        let w = postcard::to_allocvec(&Call::Write { fd: 1, data: b"x", offset: -1 }).unwrap();
        assert_eq!(w, [9, 2, 1, b'x', 1]);
        assert_eq!(CALL_KINDS[Call::Readahead { fd: 0, offset: 0, count: 0 }.kind()], "readahead");
        assert_eq!(CALL_KINDS[Call::CloseRange { first: 0, last: 0, cloexec: false }.kind()], "close_range");
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        for n in 0..2000 {
            let mut b = vec![0u8; n % 64];
            for x in b.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *x = seed as u8;
            }
            let _ = decode::<Call>(&b);
            let _ = decode::<Reply>(&b);
            let _ = decode::<Event>(&b);
            let _ = decode::<Hello>(&b);
        }
    }
}
