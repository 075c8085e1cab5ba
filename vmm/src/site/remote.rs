//! The body's side of the deputy link: a `SiteOps` that sends every call
//! to the job's home and waits for the answer.

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::proto::{self, Call, Event, Hello, LinkKind, Reply, Welcome, IO_CHUNK};
use super::{CallStats, HomeLink, SiteOps, SiteState};
use crate::errno::{Errno, SysResult};
use trust::{Link, Transport};

/// One connection's framing buffers, reused call after call.
struct Calls {
    stream: Link,
    tx: Vec<u8>,
    rx: Vec<u8>,
    /// Numbers the calls, so an interrupt names the one it means.
    seq: u64,
    /// The events connection, for asking the deputy to cut a call short.
    events: Link,
    lost: Arc<Fate>,
    /// Writes sent behind (their replies not read yet): descriptor and
    /// when it was sent.
    behind: std::collections::VecDeque<(i32, Instant)>,
    /// A write sent behind that failed: its error is the answer to the
    /// next write, fsync or close of that descriptor.
    deferred: Option<(i32, Errno)>,
    /// Calls by kind and how long their answers took.
    stats: Arc<CallStats>,
    /// How long an answer may take (None: as long as the call blocks).
    wait: Option<Duration>,
}

/// `Call::Write`'s kind, for the writes sent behind.
const WRITE_KIND: usize = Call::Write { fd: 0, data: &[], offset: 0 }.kind();

/// How many writes may be in flight unanswered (write-behind).
const MAX_BEHIND: usize = 64;

pub struct RemoteSite {
    calls: Calls,
    link: HomeLink,
    /// Answered here without asking: they change only through this site.
    cwd: Vec<u8>,
    umask: u32,
    exe: PathBuf,
    pid: u32,
    /// Gathers writev's buffers into one frame.
    scratch: Vec<u8>,
    /// What the deputy said of each descriptor, by number: `BEHIND`, its
    /// writes may be sent behind (regular files, blocking pipes and
    /// terminals); `AHEAD`, it may be read ahead (a regular file opened
    /// read-only whose offset nothing else shares).
    known: Vec<u8>,
    /// Which file each descriptor names (from the deputy), by number: a
    /// write to the file read ahead gives those bytes back first.
    files: Vec<u64>,
    /// Bytes read ahead of the job on one descriptor.
    ahead: Ahead,
}

const BEHIND: u8 = 1;
const AHEAD: u8 = 2;
/// How much one read ahead asks for.
const AHEAD_LEN: usize = 2 << 20;

#[derive(Default)]
struct Ahead {
    fd: i32,
    data: Vec<u8>,
    pos: usize,
}

impl Ahead {
    fn left(&self) -> usize {
        self.data.len() - self.pos
    }
}

fn welcomed(stream: &Link) -> std::io::Result<()> {
    let mut buf = Vec::new();
    proto::read_frame(&mut &*stream, &mut buf)?;
    match proto::decode::<Welcome>(&buf)? {
        Welcome::Accepted => Ok(()),
        Welcome::Refused { kind, why } => {
            Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, format!("refused ({kind:?}): {why}")))
        }
    }
}

/// A body's links to its deputy, opened (and the secret checked) before
/// the body is the job: `RemoteSite::claim` makes it so.
pub struct Prepared {
    link: HomeLink,
    calls: Link,
    events: Link,
}

impl Prepared {
    pub fn link(&self) -> &HomeLink {
        &self.link
    }
}

/// Opens one connection of the link and has the deputy accept it.
fn open(link: &HomeLink, kind: LinkKind, body: &str, transport: &Transport) -> std::io::Result<Link> {
    let stream = transport.connect(&link.home, Duration::from_secs(5))?;
    proto::tune(stream.socket())?;
    let mut w = stream.try_clone()?;
    let hello =
        Hello { version: proto::VERSION, token: link.token, generation: link.generation, kind, body: body.into() };
    proto::write_hello(&mut w, &hello)?;
    // The welcome comes within `PATIENCE` (the read timeout `tune` set).
    welcomed(&stream)?;
    Ok(stream)
}

/// Whether the body has lost its home, shared with the events watcher.
#[derive(Default)]
struct Fate {
    lost: AtomicBool,
    /// The job has ended and says so to its home, which then closes the
    /// links: that is no loss to report.
    ending: AtomicBool,
}

impl Fate {
    fn load(&self, o: Ordering) -> bool {
        self.lost.load(o)
    }
}

/// The body has lost its home (or been replaced): it must stop. Raising
/// SIGKILL ends the job the next time the VMM looks at signals.
fn stop_body(fate: &Fate, why: &str) {
    if !fate.lost.swap(true, Ordering::SeqCst) && !fate.ending.load(Ordering::SeqCst) {
        eprintln!("mosvm: stopping this body: {why}");
        crate::signal::post_host_signals(1 << (crate::signal::SIGKILL - 1));
    }
}

/// Reads the deputy's events for the life of the link.
fn watch(mut events: Link, lost: Arc<Fate>, home: std::net::SocketAddr) {
    let mut buf = Vec::new();
    loop {
        if let Err(e) = proto::next_frame_uninterrupted(&mut events, &mut buf) {
            stop_body(&lost, &format!("its home {home} is gone ({e})"));
            return;
        }
        match proto::decode::<Event>(&buf) {
            Ok(Event::Signal(mask)) => crate::signal::post_host_signals(mask),
            Ok(Event::Revoked(why)) => {
                stop_body(&lost, &why);
                return;
            }
            Ok(Event::Interrupt(_)) => {}
            Err(e) => {
                stop_body(&lost, &format!("its home {home} sent a malformed event ({e})"));
                return;
            }
        }
    }
}

impl Calls {
    /// Makes one call; the reply's value, second value and data. A link
    /// that fails stops the body (EIO to the call meanwhile).
    fn call(&mut self, c: &Call) -> Result<(i64, i64, &[u8]), Errno> {
        let t = Instant::now();
        self.send(c)?;
        // The answers to the writes sent behind come first.
        self.flush();
        self.reply(c.kind(), t)
    }

    fn send(&mut self, c: &Call) -> Result<(), Errno> {
        if self.lost.load(Ordering::Relaxed) {
            return Err(Errno(libc::EIO));
        }
        self.seq += 1;
        if let Err(e) = proto::write_frame(&mut self.stream, &mut self.tx, c) {
            stop_body(&self.lost, &format!("the link to its home failed ({e})"));
            return Err(Errno(libc::EIO));
        }
        Ok(())
    }

    /// Sends a write without waiting for its answer (see `deferred`).
    fn send_behind(&mut self, fd: i32, c: &Call) -> Result<(), Errno> {
        let t = Instant::now();
        self.send(c)?;
        self.behind.push_back((fd, t));
        if self.behind.len() >= MAX_BEHIND {
            self.flush();
        }
        Ok(())
    }

    /// Reads the answers to every write sent behind.
    fn flush(&mut self) {
        while let Some((fd, t)) = self.behind.pop_front() {
            if let Err(e) = self.reply(WRITE_KIND, t) {
                self.deferred.get_or_insert((fd, e));
            }
        }
    }

    /// The error a write sent behind on `fd` left, if any (taken).
    fn take_deferred(&mut self, fd: i32) -> Result<(), Errno> {
        match self.deferred {
            Some((f, e)) if f == fd => {
                self.deferred = None;
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// Reads the next answer, to a call of `kind` sent at `sent`.
    fn reply(&mut self, kind: usize, sent: Instant) -> Result<(i64, i64, &[u8]), Errno> {
        // A failed link may hold half a frame: nothing more on it is an answer.
        if self.lost.load(Ordering::Relaxed) {
            return Err(Errno(libc::EIO));
        }
        let mut asked = false;
        loop {
            match proto::next_frame(&mut self.stream, &mut self.rx, self.wait) {
                Ok(()) => {
                    self.stats.record(kind, sent.elapsed());
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    // A kick or a signal here: the deputy cuts the call short
                    // if it blocks, and the answer (maybe EINTR) still comes.
                    if !asked {
                        asked = true;
                        let _ = proto::write_frame(&mut self.events, &mut Vec::new(), &Event::Interrupt(self.seq));
                    }
                }
                Err(e) => {
                    stop_body(&self.lost, &format!("the link to its home failed ({e})"));
                    return Err(Errno(libc::EIO));
                }
            }
        }
        let r: Reply = match proto::decode(&self.rx) {
            Ok(r) => r,
            Err(e) => {
                stop_body(&self.lost, &format!("its home sent a malformed reply ({e})"));
                return Err(Errno(libc::EIO));
            }
        };
        crate::signal::post_host_signals(r.signals);
        if r.ret < 0 {
            let e = (-r.ret).min(4095) as i32;
            return Err(Errno(e));
        }
        Ok((r.ret, r.aux, r.data))
    }

    fn value(&mut self, c: &Call) -> SysResult {
        self.call(c).map(|(r, _, _)| r as u64)
    }

    /// A call that returns a fixed-size structure into `out`.
    fn copy_out(&mut self, c: &Call, out: &mut [u8]) -> SysResult {
        let (r, _, data) = self.call(c)?;
        let n = data.len().min(out.len());
        out[..n].copy_from_slice(&data[..n]);
        Ok(r as u64)
    }
}

impl RemoteSite {
    /// Joins the job's deputy as body generation `link.generation`.
    /// Opens the links to the job's deputy; `here` is this host's
    /// address, for the deputy's messages; `transport` how this body's
    /// process reaches hosts (mutual TLS with its job certificate).
    pub fn prepare(link: HomeLink, here: Option<SocketAddr>, transport: &Transport) -> std::io::Result<Prepared> {
        let body = here.map(|a| a.ip().to_string()).unwrap_or_default();
        let calls = open(&link, LinkKind::Calls, &body, transport)?;
        let events = open(&link, LinkKind::Events, &body, transport)?;
        Ok(Prepared { link, calls, events })
    }

    /// Becomes the job's body: the deputy serves this body from now on
    /// and stops any older one.
    pub fn claim(prepared: Prepared, names: &SiteState) -> std::io::Result<RemoteSite> {
        let Prepared { link, calls: stream, events } = prepared;
        proto::write_frame(&mut &stream, &mut Vec::new(), &proto::Claim { generation: link.generation })?;
        welcomed(&stream)?;
        let lost = Arc::new(Fate::default());
        let (watch_events, watch_lost, home) = (events.try_clone()?, lost.clone(), link.home);
        std::thread::Builder::new()
            .name("deputy-events".into())
            .spawn(move || watch(watch_events, watch_lost, home))?;
        Ok(RemoteSite {
            calls: Calls {
                stream,
                tx: Vec::with_capacity(4096),
                rx: Vec::with_capacity(4096),
                seq: 0,
                events,
                lost,
                behind: Default::default(),
                deferred: None,
                stats: Default::default(),
                wait: None,
            },
            known: Vec::new(),
            files: Vec::new(),
            ahead: Ahead { fd: -1, ..Default::default() },
            link,
            cwd: names.cwd.clone(),
            umask: names.umask,
            exe: names.exe.clone(),
            pid: names.pid,
            scratch: Vec::new(),
        })
    }

    pub fn link(&self) -> &HomeLink {
        &self.link
    }

    pub fn call_stats(&self) -> Arc<CallStats> {
        self.calls.stats.clone()
    }

    pub fn is_lost(&self) -> bool {
        self.calls.lost.load(Ordering::SeqCst)
    }

    /// After a move whose acknowledgement never came: may this body go on
    /// as the job? The deputy decides. When it says yes, the new body can
    /// no longer claim the job, and this body's next move starts after
    /// the generation the deputy fenced off.
    pub fn stay(&mut self) -> bool {
        if self.is_lost() {
            return false;
        }
        // The job is paused meanwhile: a deputy that does not answer in
        // time is one this body cannot count on.
        self.calls.wait = Some(Duration::from_secs(10));
        let answer = self.calls.call(&Call::Stay).map(|(ret, aux, _)| (ret, aux));
        self.calls.wait = None;
        match answer {
            Ok((1, fence)) => {
                self.link.generation = self.link.generation.max(fence as u64);
                true
            }
            _ => {
                self.calls.lost.lost.store(true, Ordering::SeqCst);
                false
            }
        }
    }

    pub fn capture_names(&self) -> SiteState {
        SiteState {
            cwd: self.cwd.clone(),
            umask: self.umask,
            exe: self.exe.clone(),
            pid: self.pid,
            next_desc: 0,
            fds: Vec::new(),
        }
    }

    /// Tells the deputy how the job ended, and waits for it to hear it.
    pub fn report_exit(&mut self, status: i32, message: &str) {
        self.calls.lost.ending.store(true, Ordering::SeqCst);
        self.calls.wait = Some(Duration::from_secs(5));
        if self.calls.call(&Call::Exit { status, message }).is_err() {
            eprintln!("mosvm: could not report the job's end (status {status}) to its home {}", self.link.home);
        }
    }

    fn read_chunks(&mut self, fd: i32, buf: &mut [u8], offset: i64) -> SysResult {
        let mut done = 0usize;
        loop {
            let want = (buf.len() - done).min(IO_CHUNK);
            let off = if offset < 0 { -1 } else { offset + done as i64 };
            let r = self.calls.call(&Call::Read { fd, len: want as u32, offset: off });
            let (_, aux, data) = match r {
                Ok(x) => x,
                Err(e) if done == 0 => return Err(e),
                Err(_) => return Ok(done as u64),
            };
            let n = data.len().min(want);
            buf[done..done + n].copy_from_slice(&data[..n]);
            if offset < 0 {
                self.learn(fd, AHEAD, aux);
            }
            done += n;
            // Only a full chunk can have more behind it; anything shorter
            // is what the file (or pipe) had.
            if n < IO_CHUNK || done == buf.len() {
                return Ok(done as u64);
            }
        }
    }

    /// Forgets what it knew of `fd` (closed, replaced, its flags changed).
    fn forget(&mut self, fd: i64) {
        if let Ok(i) = usize::try_from(fd) {
            if i < self.known.len() {
                self.known[i] = 0;
                self.files[i] = 0;
            }
        }
        if fd == self.ahead.fd as i64 {
            self.ahead.fd = -1;
        }
    }

    fn knows(&self, fd: i32, bit: u8) -> bool {
        usize::try_from(fd).ok().and_then(|i| self.known.get(i)).is_some_and(|k| k & bit != 0)
    }

    /// Takes in what a reply's `aux` says of `fd`: whether `bit` holds
    /// (its lowest bit) and which file it names (the rest).
    fn learn(&mut self, fd: i32, bit: u8, aux: i64) {
        let Ok(i) = usize::try_from(fd) else { return };
        if i as u64 >= super::NR_OPEN {
            return;
        }
        if self.known.len() <= i {
            self.known.resize(i + 1, 0);
            self.files.resize(i + 1, 0);
        }
        if aux & 1 != 0 {
            self.known[i] |= bit;
        } else {
            self.known[i] &= !bit;
        }
        self.files[i] = (aux as u64) >> 8;
    }

    /// Before a write through `fd`: if it names the file read ahead on
    /// another descriptor, those bytes may change; give them back.
    fn writing(&mut self, fd: i32) {
        let file = |s: &Self, fd: i32| usize::try_from(fd).ok().and_then(|i| s.files.get(i)).copied().unwrap_or(0);
        let a = self.ahead.fd;
        if a >= 0 && (a == fd || file(self, fd) == 0 || file(self, fd) == file(self, a)) {
            self.give_back(a);
        }
    }

    /// Before anything else touches `fd` (or its offset): the bytes read
    /// ahead and not taken go back (the deputy's offset steps back).
    fn give_back(&mut self, fd: i32) {
        if self.ahead.fd != fd || fd < 0 {
            return;
        }
        let left = self.ahead.left() as i64;
        self.ahead.fd = -1;
        if left > 0 {
            let _ = self.calls.value(&Call::Lseek { fd, offset: -left, whence: libc::SEEK_CUR });
        }
    }

    /// read(2) of a descriptor that may be read ahead: served from what
    /// came before where it can, else one larger read.
    fn read_ahead(&mut self, fd: i32, buf: &mut [u8]) -> SysResult {
        let mut done = 0;
        if self.ahead.fd == fd {
            let a = &mut self.ahead;
            done = buf.len().min(a.left());
            buf[..done].copy_from_slice(&a.data[a.pos..a.pos + done]);
            a.pos += done;
            if done == buf.len() {
                return Ok(done as u64);
            }
            self.ahead.fd = -1;
        }
        let want = (buf.len() - done).clamp(AHEAD_LEN, IO_CHUNK);
        let (_, aux, data) = match self.calls.call(&Call::Read { fd, len: want as u32, offset: -1 }) {
            Ok(x) => x,
            Err(_) if done > 0 => return Ok(done as u64),
            Err(e) => return Err(e),
        };
        let n = (buf.len() - done).min(data.len());
        buf[done..done + n].copy_from_slice(&data[..n]);
        if data.len() > n {
            self.ahead.data.clear();
            self.ahead.data.extend_from_slice(&data[n..]);
            self.ahead.pos = 0;
            self.ahead.fd = fd;
        }
        self.learn(fd, AHEAD, aux);
        Ok((done + n) as u64)
    }

    /// Reads the answers to the writes sent behind (before a move, so
    /// that none is in flight when another body takes over).
    pub fn flush(&mut self) {
        let fd = self.ahead.fd;
        self.give_back(fd);
        self.calls.flush();
    }

    /// write/pwrite: sent behind where the deputy allows it, the result
    /// taken to be the whole buffer (a failure answers the next write,
    /// fsync or close of the descriptor, as NFS does); otherwise waited for.
    fn write_at(&mut self, fd: i32, buf: &[u8], offset: i64) -> SysResult {
        self.writing(fd);
        self.calls.take_deferred(fd)?;
        let ok = self.knows(fd, BEHIND);
        if ok && buf.len() <= IO_CHUNK {
            self.calls.send_behind(fd, &Call::Write { fd, data: buf, offset })?;
            return Ok(buf.len() as u64);
        }
        if buf.len() <= IO_CHUNK {
            let (n, safe, _) = self.calls.call(&Call::Write { fd, data: buf, offset })?;
            self.learn(fd, BEHIND, safe);
            return Ok(n as u64);
        }
        Self::write_chunks(&mut self.calls, fd, buf, offset)
    }

    fn write_chunks(calls: &mut Calls, fd: i32, buf: &[u8], offset: i64) -> SysResult {
        let mut done = 0usize;
        loop {
            let n = (buf.len() - done).min(IO_CHUNK);
            let off = if offset < 0 { -1 } else { offset + done as i64 };
            let w = match calls.value(&Call::Write { fd, data: &buf[done..done + n], offset: off }) {
                Ok(w) => w as usize,
                Err(e) if done == 0 => return Err(e),
                Err(_) => return Ok(done as u64),
            };
            done += w.min(n);
            if w < n || done == buf.len() {
                return Ok(done as u64);
            }
        }
    }
}

fn path_buf(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

impl SiteOps for RemoteSite {
    fn openat(&mut self, dirfd: i32, path: &[u8], flags: i32, mode: u32) -> SysResult {
        let fd = self.calls.value(&Call::Openat { dirfd, path, flags, mode })?;
        self.forget(fd as i64);
        Ok(fd)
    }

    fn open_nowait(&mut self, dirfd: i32, path: &[u8], flags: i32, mode: u32) -> SysResult {
        let fd = self.calls.value(&Call::OpenNowait { dirfd, path, flags, mode })?;
        self.forget(fd as i64);
        Ok(fd)
    }

    fn open_bytes(&mut self, content: &[u8], flags: i32) -> SysResult {
        let fd = self.calls.value(&Call::OpenBytes { content, flags })?;
        self.forget(fd as i64);
        Ok(fd)
    }

    fn current_umask(&self) -> u32 {
        self.umask
    }

    fn close_range(&mut self, first: u32, last: u32, cloexec: bool) -> SysResult {
        let fd = self.ahead.fd;
        if fd >= 0 && (first..=last).contains(&(fd as u32)) {
            self.give_back(fd);
        }
        if !cloexec {
            let end = (last as usize).min(self.known.len().saturating_sub(1));
            for i in first as usize..=end {
                self.forget(i as i64);
            }
        }
        self.calls.value(&Call::CloseRange { first, last, cloexec })
    }

    fn set_fd_limit(&mut self, limit: u64) {
        let _ = self.calls.value(&Call::SetFdLimit { limit });
    }

    fn epoll_create(&mut self, cloexec: bool) -> SysResult {
        let fd = self.calls.value(&Call::EpollCreate { cloexec })?;
        self.forget(fd as i64);
        Ok(fd)
    }

    fn epoll_ctl(&mut self, epfd: i32, op: i32, fd: i32, event: &[u8; super::EPOLL_EVENT_SIZE]) -> SysResult {
        self.calls.value(&Call::EpollCtl { epfd, op, fd, event: &event[..] })
    }

    fn epoll_wait(&mut self, epfd: i32, events: &mut [u8], timeout_ms: i32) -> SysResult {
        let max = (events.len() / super::EPOLL_EVENT_SIZE).min(IO_CHUNK / super::EPOLL_EVENT_SIZE) as u32;
        self.calls.copy_out(&Call::EpollWait { epfd, max, timeout_ms }, events)
    }

    fn eventfd(&mut self, initval: u32, flags: i32) -> SysResult {
        let fd = self.calls.value(&Call::Eventfd { initval, flags })?;
        self.forget(fd as i64);
        Ok(fd)
    }

    fn timerfd_create(&mut self, clock: i32, flags: i32) -> SysResult {
        let fd = self.calls.value(&Call::TimerfdCreate { clock, flags })?;
        self.forget(fd as i64);
        Ok(fd)
    }

    fn timerfd_settime(&mut self, fd: i32, flags: i32, new: &[u8; 32], now: i64, old: &mut [u8; 32]) -> SysResult {
        self.calls.copy_out(&Call::TimerfdSettime { fd, flags, new: &new[..], now }, old)
    }

    fn timerfd_gettime(&mut self, fd: i32, cur: &mut [u8; 32]) -> SysResult {
        self.calls.copy_out(&Call::TimerfdGettime { fd }, cur)
    }

    fn signalfd(&mut self, fd: i32, mask: u64, flags: i32) -> SysResult {
        let n = self.calls.value(&Call::Signalfd { fd, mask, flags })?;
        if fd == -1 {
            self.forget(n as i64);
        }
        Ok(n)
    }

    fn signalfd_get(&mut self, fd: i32) -> Result<(u64, bool), Errno> {
        let (nonblock, mask, _) = self.calls.call(&Call::SignalfdGet { fd })?;
        Ok((mask as u64, nonblock != 0))
    }

    fn signals_pending(&mut self, pending: u64) -> SysResult {
        self.calls.value(&Call::SignalsPending { pending })
    }

    fn mknodat(&mut self, dirfd: i32, path: &[u8], mode: u32, dev: u64) -> SysResult {
        self.calls.value(&Call::Mknodat { dirfd, path, mode, dev })
    }

    fn fadvise(&mut self, fd: i32, offset: i64, len: i64, advice: i32) -> SysResult {
        self.calls.value(&Call::Fadvise { fd, offset, len, advice })
    }

    fn readahead(&mut self, fd: i32, offset: i64, count: u64) -> SysResult {
        self.calls.value(&Call::Readahead { fd, offset, count })
    }

    fn getxattr(&mut self, fd: i32, path: &[u8], follow: bool, name: &[u8], out: &mut [u8]) -> SysResult {
        let size = out.len().min(super::XATTR_SIZE_MAX) as u32;
        self.calls.copy_out(&Call::Getxattr { fd, path, follow, name, size }, out)
    }

    fn listxattr(&mut self, fd: i32, path: &[u8], follow: bool, out: &mut [u8]) -> SysResult {
        let size = out.len().min(super::XATTR_SIZE_MAX) as u32;
        self.calls.copy_out(&Call::Listxattr { fd, path, follow, size }, out)
    }

    fn setxattr(&mut self, fd: i32, path: &[u8], follow: bool, name: &[u8], value: &[u8], flags: i32) -> SysResult {
        self.calls.value(&Call::Setxattr { fd, path, follow, name, value, flags })
    }

    fn removexattr(&mut self, fd: i32, path: &[u8], follow: bool, name: &[u8]) -> SysResult {
        self.calls.value(&Call::Removexattr { fd, path, follow, name })
    }

    fn close(&mut self, fd: i32) -> SysResult {
        // What was read ahead is dropped with the descriptor.
        self.forget(fd as i64);
        let r = self.calls.value(&Call::Close { fd });
        // A write sent behind that failed answers the close (as NFS does).
        self.calls.take_deferred(fd)?;
        r
    }

    fn dup(&mut self, fd: i32, min: i32, cloexec: bool) -> SysResult {
        // From now on two descriptors share the offset.
        self.give_back(fd);
        self.forget(fd as i64);
        let n = self.calls.value(&Call::Dup { fd, min, cloexec })?;
        self.forget(n as i64);
        Ok(n)
    }

    fn dup3(&mut self, old: i32, new: i32, cloexec: bool) -> SysResult {
        self.give_back(old);
        self.forget(old as i64);
        self.forget(new as i64);
        self.calls.value(&Call::Dup3 { old, new, cloexec })
    }

    fn pipe2(&mut self, flags: i32) -> Result<(u64, u64), Errno> {
        let (a, b) = self.calls.call(&Call::Pipe2 { flags }).map(|(a, b, _)| (a as u64, b as u64))?;
        self.forget(a as i64);
        self.forget(b as i64);
        Ok((a, b))
    }

    fn fcntl(&mut self, fd: i32, cmd: i32, arg: u64) -> SysResult {
        if matches!(cmd, libc::F_SETFL | libc::F_DUPFD | libc::F_DUPFD_CLOEXEC) {
            self.give_back(fd);
            self.forget(fd as i64);
        }
        let n = self.calls.value(&Call::Fcntl { fd, cmd, arg })?;
        if matches!(cmd, libc::F_DUPFD | libc::F_DUPFD_CLOEXEC) {
            self.forget(n as i64);
        }
        Ok(n)
    }

    fn fcntl_lock(&mut self, fd: i32, cmd: i32, flock: &mut [u8; 32]) -> SysResult {
        let (r, _, data) = self.calls.call(&Call::FcntlLock { fd, cmd, flock: &flock[..] })?;
        let n = data.len().min(32);
        flock[..n].copy_from_slice(&data[..n]);
        Ok(r as u64)
    }

    fn read(&mut self, fd: i32, buf: &mut [u8]) -> SysResult {
        if self.ahead.fd == fd || (self.knows(fd, AHEAD) && buf.len() < AHEAD_LEN) {
            return self.read_ahead(fd, buf);
        }
        self.read_chunks(fd, buf, -1)
    }

    fn write(&mut self, fd: i32, buf: &[u8]) -> SysResult {
        self.write_at(fd, buf, -1)
    }

    fn pread(&mut self, fd: i32, buf: &mut [u8], offset: i64) -> SysResult {
        self.read_chunks(fd, buf, offset.max(0))
    }

    fn pwrite(&mut self, fd: i32, buf: &[u8], offset: i64) -> SysResult {
        self.write_at(fd, buf, offset.max(0))
    }

    fn readv(&mut self, fd: i32, bufs: &mut [IoSliceMut<'_>], offset: i64) -> SysResult {
        self.give_back(fd);
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let want = total.min(IO_CHUNK);
        let (_, _, data) = self.calls.call(&Call::Read { fd, len: want as u32, offset })?;
        let mut at = 0;
        for b in bufs.iter_mut() {
            if at >= data.len() {
                break;
            }
            let n = b.len().min(data.len() - at);
            b[..n].copy_from_slice(&data[at..at + n]);
            at += n;
        }
        Ok(at as u64)
    }

    fn writev(&mut self, fd: i32, bufs: &[IoSlice<'_>], offset: i64) -> SysResult {
        self.scratch.clear();
        for b in bufs {
            self.scratch.extend_from_slice(b);
        }
        let data = std::mem::take(&mut self.scratch);
        let r = self.write_at(fd, &data, offset);
        self.scratch = data;
        r
    }

    fn lseek(&mut self, fd: i32, offset: i64, whence: i32) -> SysResult {
        self.give_back(fd);
        self.calls.value(&Call::Lseek { fd, offset, whence })
    }

    fn getdents64(&mut self, fd: i32, buf: &mut [u8]) -> SysResult {
        let len = buf.len().min(IO_CHUNK) as u32;
        self.calls.copy_out(&Call::Getdents64 { fd, len }, buf)
    }

    fn ioctl(&mut self, fd: i32, request: u64, arg: &mut [u8]) -> SysResult {
        self.give_back(fd);
        let (r, _, data) = self.calls.call(&Call::Ioctl { fd, request, arg: &arg[..] })?;
        let n = data.len().min(arg.len());
        arg[..n].copy_from_slice(&data[..n]);
        Ok(r as u64)
    }

    fn ioctl_int(&mut self, fd: i32, request: u64, arg: u64) -> SysResult {
        self.give_back(fd);
        self.forget(fd as i64);
        self.calls.value(&Call::IoctlInt { fd, request, arg })
    }

    fn fsync(&mut self, fd: i32, data_only: bool) -> SysResult {
        let r = self.calls.value(&Call::Fsync { fd, data_only });
        self.calls.take_deferred(fd)?;
        r
    }

    fn ftruncate(&mut self, fd: i32, len: i64) -> SysResult {
        self.writing(fd);
        self.calls.value(&Call::Ftruncate { fd, len })
    }

    fn fallocate(&mut self, fd: i32, mode: i32, offset: i64, len: i64) -> SysResult {
        self.writing(fd);
        self.calls.value(&Call::Fallocate { fd, mode, offset, len })
    }

    fn fchmod(&mut self, fd: i32, mode: u32) -> SysResult {
        self.calls.value(&Call::Fchmod { fd, mode })
    }

    fn poll(&mut self, fds: &mut [u8], timeout_ms: i32) -> SysResult {
        let (r, _, data) = self.calls.call(&Call::Poll { fds: &fds[..], timeout_ms })?;
        let n = data.len().min(fds.len());
        fds[..n].copy_from_slice(&data[..n]);
        Ok(r as u64)
    }

    fn flock(&mut self, fd: i32, op: i32) -> SysResult {
        self.calls.value(&Call::Flock { fd, op })
    }

    fn sendfile(&mut self, out_fd: i32, in_fd: i32, offset: Option<&mut i64>, count: u64) -> SysResult {
        self.give_back(in_fd);
        self.writing(out_fd);
        let at = offset.as_ref().map(|o| **o);
        let (r, aux, _) = self.calls.call(&Call::Sendfile { out_fd, in_fd, offset: at, count })?;
        if let Some(o) = offset {
            *o = aux;
        }
        Ok(r as u64)
    }

    fn fstatfs(&mut self, fd: i32, out: &mut [u8; 120]) -> SysResult {
        self.calls.copy_out(&Call::Fstatfs { fd }, out)
    }

    fn fstatat(&mut self, dirfd: i32, path: &[u8], flags: i32, out: &mut [u8; 144]) -> SysResult {
        self.calls.copy_out(&Call::Fstatat { dirfd, path, flags }, out)
    }

    fn statx(&mut self, dirfd: i32, path: &[u8], flags: i32, mask: u32, out: &mut [u8; 256]) -> SysResult {
        self.calls.copy_out(&Call::Statx { dirfd, path, flags, mask }, out)
    }

    fn faccessat(&mut self, dirfd: i32, path: &[u8], mode: i32, flags: i32) -> SysResult {
        self.calls.value(&Call::Faccessat { dirfd, path, mode, flags })
    }

    fn unlinkat(&mut self, dirfd: i32, path: &[u8], flags: i32) -> SysResult {
        self.calls.value(&Call::Unlinkat { dirfd, path, flags })
    }

    fn mkdirat(&mut self, dirfd: i32, path: &[u8], mode: u32) -> SysResult {
        self.calls.value(&Call::Mkdirat { dirfd, path, mode })
    }

    fn renameat2(&mut self, olddir: i32, old: &[u8], newdir: i32, new: &[u8], flags: u32) -> SysResult {
        self.calls.value(&Call::Renameat2 { olddir, old, newdir, new, flags })
    }

    fn linkat(&mut self, olddir: i32, old: &[u8], newdir: i32, new: &[u8], flags: i32) -> SysResult {
        self.calls.value(&Call::Linkat { olddir, old, newdir, new, flags })
    }

    fn symlinkat(&mut self, target: &[u8], dirfd: i32, path: &[u8]) -> SysResult {
        self.calls.value(&Call::Symlinkat { target, dirfd, path })
    }

    fn readlinkat(&mut self, dirfd: i32, path: &[u8], buf: &mut [u8]) -> SysResult {
        let len = buf.len().min(IO_CHUNK) as u32;
        self.calls.copy_out(&Call::Readlinkat { dirfd, path, len }, buf)
    }

    fn fchmodat(&mut self, dirfd: i32, path: &[u8], mode: u32, flags: i32) -> SysResult {
        self.calls.value(&Call::Fchmodat { dirfd, path, mode, flags })
    }

    fn fchownat(&mut self, dirfd: i32, path: &[u8], uid: u32, gid: u32, flags: i32) -> SysResult {
        self.calls.value(&Call::Fchownat { dirfd, path, uid, gid, flags })
    }

    fn utimensat(&mut self, dirfd: i32, path: Option<&[u8]>, times: Option<&[u8; 32]>, flags: i32) -> SysResult {
        self.calls.value(&Call::Utimensat { dirfd, path, times: times.map(|t| &t[..]), flags })
    }

    fn truncate(&mut self, path: &[u8], len: i64) -> SysResult {
        let fd = self.ahead.fd;
        self.give_back(fd);
        self.calls.value(&Call::Truncate { path, len })
    }

    fn umask(&mut self, mask: u32) -> u32 {
        // The deputy applies the mask to what it creates: keep both in step.
        let old = std::mem::replace(&mut self.umask, mask & 0o777);
        let _ = self.calls.value(&Call::Umask { mask });
        old
    }

    fn statfs(&mut self, path: &[u8], out: &mut [u8; 120]) -> SysResult {
        self.calls.copy_out(&Call::Statfs { path }, out)
    }

    fn read_program(&mut self, dirfd: i32, path: &[u8], flags: i32, max: u64) -> Result<(Vec<u8>, PathBuf), Errno> {
        let (r, _, data) = self.calls.call(&Call::ReadProgram { dirfd, path, flags, max })?;
        // The program's bytes, then its path.
        let n = (r as usize).min(data.len());
        Ok((data[..n].to_vec(), path_buf(&data[n..])))
    }

    fn exec(&mut self, exe: PathBuf) {
        let fd = self.ahead.fd;
        self.give_back(fd);
        self.known.clear();
        let _ = self.calls.value(&Call::Exec { exe: exe.as_os_str().as_encoded_bytes() });
        self.exe = exe;
    }

    fn getcwd(&self) -> &[u8] {
        &self.cwd
    }

    fn chdir(&mut self, path: &[u8]) -> SysResult {
        let (r, _, data) = self.calls.call(&Call::Chdir { path })?;
        self.cwd = data.to_vec();
        Ok(r as u64)
    }

    fn fchdir(&mut self, fd: i32) -> SysResult {
        let (r, _, data) = self.calls.call(&Call::Fchdir { fd })?;
        self.cwd = data.to_vec();
        Ok(r as u64)
    }
}
