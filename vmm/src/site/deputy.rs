//! The job's deputy at home: it keeps the job's site (files, cwd, stdio,
//! pipes) and serves it to the body over the deputy link while the body
//! runs on another host. It also decides which body is the job: every
//! move makes a new generation, the deputy serves only the newest, and a
//! body it has replaced is told to stop. So a lost acknowledgement can
//! never leave two running copies.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use trust::{Link, Transport};

use super::proto::{self, Call, Event, LinkKind, RefusalKind, Reply, Welcome};
use super::{LocalSite, SiteOps};
use crate::errno::Errno;

/// How long a deputy waits for a body that was announced (a move in
/// progress) before it reports the job lost.
const BODY_WAIT: Duration = Duration::from_secs(15);
/// How long a prepared body may take to claim the job (its pre-copy).
const CLAIM_WAIT: Duration = Duration::from_secs(3600);

/// How serving the job ended.
#[derive(Debug)]
pub enum Served {
    /// The job ended on its body's host with this status (as a shell
    /// reports it); `message` is what to print at home (a fault).
    Exited { status: i32, message: String },
    /// The body's host stopped answering; the job is lost.
    Lost(String),
    /// The body came home: the site went back to the VM rebuilt here.
    Home,
}

/// Called with each migration stream that arrives at the deputy's port
/// (the body coming home).
pub type Incoming = Box<dyn Fn(Link) + Send + Sync>;

struct Inner {
    /// The generation that owns the job.
    generation: u64,
    /// Bodies up to this generation may not claim the job: their move
    /// failed and the body before them went on (`reclaim`, `Call::Stay`).
    fence: u64,
    /// The generation of the body at home, while it is here.
    local: Option<u64>,
    /// The newest body's connections, until the server takes them.
    calls: Option<(Link, String)>,
    events: Option<Link>,
    /// Events links of bodies that have not claimed the job yet.
    candidates: Vec<(u64, Link)>,
    /// Clones of the links being served, to cut when a newer body comes.
    live: Vec<Link>,
    /// A body coming home waits for the site here.
    homecoming: bool,
    returned: Option<LocalSite>,
    ended: bool,
}

impl Inner {
    /// The newest generation handed out: the job's, or a fenced move's.
    fn newest(&self) -> u64 {
        self.generation.max(self.fence)
    }

    /// Fences off the body of the move in flight (the newest generation
    /// handed out plus one): its claim, however late, is refused.
    fn fence_move(&mut self) -> u64 {
        let fence = self.newest() + 1;
        self.fence = fence;
        self.candidates.retain(|(g, _)| *g > fence);
        fence
    }
}

pub struct Home {
    token: [u8; 16],
    addr: SocketAddr,
    inner: Mutex<Inner>,
    cond: Condvar,
    incoming: Mutex<Option<Arc<Incoming>>>,
    /// The call being served, for interrupts that name it.
    seq: AtomicU64,
    in_call: AtomicBool,
    /// The last call the body asked to cut short.
    asked: AtomicU64,
    server: AtomicU64,
}

fn random_token() -> [u8; 16] {
    let mut t = [0u8; 16];
    // SAFETY: getrandom into a local buffer of its length.
    let n = unsafe { libc::getrandom(t.as_mut_ptr().cast(), t.len(), 0) };
    assert_eq!(n, 16, "getrandom failed");
    t
}

/// Compares secrets in time independent of where they differ.
fn same_token(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn welcome(conn: &mut Link, w: &Welcome) {
    let _ = proto::write_frame(conn, &mut Vec::new(), w);
    let _ = conn.flush();
}

impl Home {
    /// Listens on `listen` for the job's bodies (their links, or the body
    /// itself coming home). The job starts at home, as generation 0.
    /// Under TLS (`transport`) a connection without a certificate of the
    /// cluster is refused at the handshake, before any byte of the link.
    pub fn start(listen: &str, transport: Transport) -> io::Result<Arc<Home>> {
        Home::start_advertised(listen, None, transport)
    }

    /// The same, with bodies told to reach the deputy at `advertise`
    /// rather than at the address it listens on (a port forwarded to it,
    /// a proxy in front of it).
    pub fn start_advertised(
        listen: &str,
        advertise: Option<SocketAddr>,
        transport: Transport,
    ) -> io::Result<Arc<Home>> {
        let listener = TcpListener::bind(listen)?;
        let home = Arc::new(Home {
            token: random_token(),
            addr: match advertise {
                Some(a) => a,
                None => listener.local_addr()?,
            },
            inner: Mutex::new(Inner {
                generation: 0,
                fence: 0,
                local: Some(0),
                calls: None,
                events: None,
                candidates: Vec::new(),
                live: Vec::new(),
                homecoming: false,
                returned: None,
                ended: false,
            }),
            cond: Condvar::new(),
            incoming: Mutex::new(None),
            seq: AtomicU64::new(0),
            in_call: AtomicBool::new(false),
            asked: AtomicU64::new(0),
            server: AtomicU64::new(0),
        });
        let h = home.clone();
        std::thread::Builder::new().name("deputy-accept".into()).spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (h, transport) = (h.clone(), transport.clone());
                let _ = std::thread::Builder::new().name("deputy-conn".into()).spawn(move || {
                    let from = conn.peer_addr().ok();
                    match transport.server(conn) {
                        Ok(link) => h.accept(link),
                        // The operator's to hear (the job's stderr is the job's).
                        Err(e) => crate::notice::emit(crate::notice::Notice::Refused { from, why: e.to_string() }),
                    }
                });
            }
        })?;
        Ok(home)
    }

    /// Where the deputy listens (the IP may be unspecified: the sender of
    /// a move fills in the address the destination reached it from).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token(&self) -> [u8; 16] {
        self.token
    }

    /// Takes migration streams arriving at the deputy's port.
    pub fn set_incoming(&self, f: Incoming) {
        *self.incoming.lock().unwrap() = Some(Arc::new(f));
    }

    /// The link the next body (of a move starting now) will present.
    pub fn next_link(&self) -> super::HomeLink {
        let g = self.inner.lock().unwrap().newest();
        super::HomeLink { home: self.addr, token: self.token, generation: g + 1 }
    }

    fn accept(&self, mut conn: Link) {
        let _ = conn.socket().set_read_timeout(Some(Duration::from_secs(10)));
        let mut magic = [0u8; 8];
        // The migration receiver reads its own header.
        if conn.peek_exact(&mut magic, Duration::from_secs(10)).is_err() {
            return;
        }
        if magic == crate::migration::wire::MAGIC {
            let f = self.incoming.lock().unwrap().clone();
            match f {
                Some(f) => f(conn),
                None => {
                    let _ = conn.shutdown(Shutdown::Both);
                }
            }
            return;
        }
        if magic != proto::MAGIC {
            return;
        }
        let _ = std::io::Read::read_exact(&mut conn, &mut magic);
        let hello = match proto::read_hello(&mut conn) {
            Ok(h) => h,
            Err(e) => {
                welcome(&mut conn, &Welcome::Refused { kind: RefusalKind::Protocol, why: e.to_string() });
                return;
            }
        };
        let refuse = |conn: &mut Link, kind, why: String| {
            crate::notice::emit(crate::notice::Notice::Refused { from: conn.peer_addr().ok(), why: why.clone() });
            welcome(conn, &Welcome::Refused { kind, why });
        };
        if !(proto::MIN_VERSION..=proto::VERSION).contains(&hello.version) {
            return refuse(
                &mut conn,
                RefusalKind::Protocol,
                format!("link version {} is not one of {}..={}", hello.version, proto::MIN_VERSION, proto::VERSION),
            );
        }
        if !same_token(&hello.token, &self.token) {
            return refuse(&mut conn, RefusalKind::BadToken, "not this job's secret".into());
        }
        let _ = proto::tune(conn.socket());
        let peer = if hello.body.is_empty() {
            conn.peer_addr().map_or_else(|_| "?".to_string(), |a| a.ip().to_string())
        } else {
            hello.body.clone()
        };
        let g = hello.generation;
        let stale = |inner: &Inner| -> Option<(RefusalKind, String)> {
            if inner.ended {
                Some((RefusalKind::Ended, "the job has ended".into()))
            } else if g <= inner.newest() {
                Some((
                    RefusalKind::Stale,
                    format!("body generation {g} is not newer than the job's ({})", inner.newest()),
                ))
            } else {
                None
            }
        };
        match hello.kind {
            LinkKind::Events => {
                let mut inner = self.inner.lock().unwrap();
                if g == inner.generation && inner.calls.is_some() && !inner.ended {
                    inner.events = conn.try_clone().ok();
                } else if let Some((kind, why)) = stale(&inner) {
                    drop(inner);
                    return refuse(&mut conn, kind, why);
                } else if let Ok(c) = conn.try_clone() {
                    inner.candidates.push((g, c));
                }
                drop(inner);
                welcome(&mut conn, &Welcome::Accepted);
                self.cond.notify_all();
            }
            LinkKind::Calls => {
                if let Some((kind, why)) = stale(&self.inner.lock().unwrap()) {
                    return refuse(&mut conn, kind, why);
                }
                // Authenticated; the body claims the job when its move
                // switches over (pre-copy may take a while).
                welcome(&mut conn, &Welcome::Accepted);
                let mut buf = Vec::new();
                let claim = proto::next_frame(&mut conn, &mut buf, Some(CLAIM_WAIT))
                    .and_then(|_| proto::decode::<proto::Claim>(&buf));
                match claim {
                    Ok(c) if c.generation == g => {}
                    _ => return,
                }
                let mut inner = self.inner.lock().unwrap();
                if let Some((kind, why)) = stale(&inner) {
                    drop(inner);
                    return refuse(&mut conn, kind, why);
                }
                // A newer body: it is the job from now on.
                inner.generation = g;
                cut(&mut inner.live, "a newer body took over the job");
                let Ok(c) = conn.try_clone() else { return };
                inner.calls = Some((c, peer));
                let pos = inner.candidates.iter().position(|(cg, _)| *cg == g);
                inner.events = pos.map(|i| inner.candidates.swap_remove(i).1);
                inner.candidates.retain(|(cg, _)| *cg > g);
                drop(inner);
                welcome(&mut conn, &Welcome::Accepted);
                self.cond.notify_all();
            }
        }
    }

    /// After a failed move of the body at home: may it resume here? Not if
    /// a newer body has taken the job and its link is alive.
    pub fn reclaim(&self) -> bool {
        let mut inner = self.inner.lock().unwrap();
        if inner.local != Some(inner.generation) {
            if inner.calls.as_ref().is_some_and(|(c, _)| c.alive()) {
                // The destination runs the job: the acknowledgement was lost.
                inner.local = None;
                return false;
            }
            // The newer body claimed but never got going: revoke it.
            inner.calls = None;
            inner.events = None;
        }
        inner.fence_move();
        inner.local = Some(inner.generation);
        true
    }

    /// The body that moved home as `generation` takes the site back from
    /// the server (which stops serving the body away).
    pub fn come_home(&self, generation: u64) -> Result<LocalSite, String> {
        let mut inner = self.inner.lock().unwrap();
        let newest = inner.newest();
        if generation <= newest {
            return Err(format!("body generation {generation} is not newer than the job's ({newest})"));
        }
        inner.generation = generation;
        inner.homecoming = true;
        cut(&mut inner.live, "the job moved home");
        self.cond.notify_all();
        let deadline = Instant::now() + Duration::from_secs(10);
        while inner.returned.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                inner.homecoming = false;
                return Err("the deputy did not hand the site back".into());
            }
            inner = self.cond.wait_timeout(inner, left).unwrap().0;
        }
        inner.homecoming = false;
        inner.local = Some(generation);
        Ok(inner.returned.take().unwrap())
    }

    /// Serves `site` to the job's bodies away from home until the job ends,
    /// is lost, or comes home. Call on the thread that should see host
    /// signals for the job (they are forwarded to the body).
    pub fn serve(self: &Arc<Self>, mut site: LocalSite) -> Served {
        crate::vcpu::set_interrupt_target();
        // SAFETY: pthread_self has no preconditions.
        self.server.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
        loop {
            let (generation, calls, peer, events) = {
                let mut inner = self.inner.lock().unwrap();
                inner.local = None;
                let deadline = Instant::now() + BODY_WAIT;
                loop {
                    if inner.homecoming {
                        inner.returned = Some(site);
                        self.cond.notify_all();
                        return Served::Home;
                    }
                    if inner.calls.is_some() && inner.events.is_some() {
                        break;
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        inner.ended = true;
                        return Served::Lost(format!(
                            "no body of generation {} reached the deputy in {} s",
                            inner.generation,
                            BODY_WAIT.as_secs()
                        ));
                    }
                    inner = self.cond.wait_timeout(inner, left).unwrap().0;
                }
                let (calls, peer) = inner.calls.take().unwrap();
                let events = inner.events.take().unwrap();
                inner.live = [calls.try_clone(), events.try_clone()].into_iter().flatten().collect();
                (inner.generation, calls, peer, events)
            };
            self.watch_interrupts(events.try_clone().ok());
            let end = self.serve_link(&mut site, generation, calls, events);
            let mut inner = self.inner.lock().unwrap();
            inner.live.clear();
            match end {
                LinkEnd::Exit { status, message } => {
                    inner.ended = true;
                    return Served::Exited { status, message };
                }
                LinkEnd::Broken(why) => {
                    if inner.homecoming || inner.generation > generation {
                        // Moved on (or home): serve the next body.
                        continue;
                    }
                    inner.ended = true;
                    return Served::Lost(format!("its body at {peer} stopped answering ({why})"));
                }
            }
        }
    }

    /// Reads the body's events: an interrupt cuts the named call short.
    fn watch_interrupts(self: &Arc<Self>, events: Option<Link>) {
        let Some(mut events) = events else { return };
        let home = self.clone();
        let _ = std::thread::Builder::new().name("deputy-interrupts".into()).spawn(move || {
            let mut buf = Vec::new();
            while proto::next_frame_uninterrupted(&mut events, &mut buf).is_ok() {
                if let Ok(Event::Interrupt(n)) = proto::decode::<Event>(&buf) {
                    home.asked.store(n, Ordering::SeqCst);
                    if home.in_call.load(Ordering::SeqCst) && home.seq.load(Ordering::SeqCst) == n {
                        let server = home.server.load(Ordering::SeqCst);
                        // SAFETY: the serving thread runs as long as it serves this link.
                        unsafe { libc::pthread_kill(server as libc::pthread_t, crate::vcpu::kick_signal()) };
                    }
                }
            }
        });
    }

    /// Sends the serving thread a kick, as a stray signal would.
    #[cfg(test)]
    pub(super) fn kick_server(&self) {
        let server = self.server.load(Ordering::SeqCst);
        if server != 0 {
            // SAFETY: the serving thread runs while the test's body is linked.
            unsafe { libc::pthread_kill(server as libc::pthread_t, crate::vcpu::kick_signal()) };
        }
    }

    /// `Call::Stay` from the body of `generation`: it goes on as the job
    /// (1, and the fence) unless a newer body has claimed the job (0).
    fn stay(&self, generation: u64) -> (i64, i64) {
        let mut inner = self.inner.lock().unwrap();
        if inner.generation > generation || inner.ended {
            return (0, 0);
        }
        (1, inner.fence_move() as i64)
    }

    fn serve_link(&self, site: &mut LocalSite, generation: u64, mut calls: Link, mut events: Link) -> LinkEnd {
        let (mut rx, mut tx, mut data, mut ev) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut seq = 0u64;
        self.seq.store(0, Ordering::SeqCst);
        self.asked.store(0, Ordering::SeqCst);
        let forward = |events: &mut Link, ev: &mut Vec<u8>| {
            let sig = crate::signal::take_host_signals();
            if sig != 0 {
                let _ = proto::write_frame(events, ev, &Event::Signal(sig));
            }
        };
        // Signals that came while no body was linked.
        forward(&mut events, &mut ev);
        loop {
            match proto::next_frame(&mut calls, &mut rx, None) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    forward(&mut events, &mut ev);
                    continue;
                }
                Err(e) => return LinkEnd::Broken(e.to_string()),
            }
            let call: Call = match proto::decode(&rx) {
                Ok(c) => c,
                Err(e) => return LinkEnd::Broken(e.to_string()),
            };
            seq += 1;
            if let Call::Stay = call {
                let (ret, aux) = self.stay(generation);
                if let Err(e) = proto::write_frame(&mut calls, &mut tx, &Reply { ret, aux, signals: 0, data: &[] }) {
                    return LinkEnd::Broken(e.to_string());
                }
                continue;
            }
            if let Call::Exit { status, message } = call {
                let message = message.to_string();
                let reply = Reply { ret: 0, aux: 0, signals: 0, data: &[] };
                let _ = proto::write_frame(&mut calls, &mut tx, &reply);
                return LinkEnd::Exit { status, message };
            }
            self.seq.store(seq, Ordering::SeqCst);
            self.in_call.store(true, Ordering::SeqCst);
            let started = Instant::now();
            let mut r = execute(site, &call, &mut data);
            // A kick meant for another thread of this process, or a host
            // signal that is not the job's, cut the call short: the job
            // asked for no interrupt and has no signal, so its call goes on
            // (for the time it has left). Each retry needs a new signal.
            while r == Err(Errno::EINTR)
                && self.asked.load(Ordering::SeqCst) != seq
                && !crate::signal::host_signals_pending()
            {
                r = match time_left(&call, started.elapsed()) {
                    Some(left) => execute(site, &left, &mut data),
                    None => execute(site, &call, &mut data),
                };
            }
            let (ret, aux) = match r {
                Ok((r, a)) => (r, a),
                Err(e) => (-(e.0 as i64), 0),
            };
            self.in_call.store(false, Ordering::SeqCst);
            let signals = crate::signal::take_host_signals();
            let reply = Reply { ret, aux, signals, data: &data };
            if let Err(e) = proto::write_frame(&mut calls, &mut tx, &reply) {
                return LinkEnd::Broken(e.to_string());
            }
        }
    }
}

enum LinkEnd {
    Exit { status: i32, message: String },
    Broken(String),
}

/// Tells the body behind `live` to stop, and cuts its link.
fn cut(live: &mut Vec<Link>, why: &str) {
    for s in live.iter_mut() {
        let _ = proto::write_frame(s, &mut Vec::new(), &Event::Revoked(why.into()));
    }
    for s in live.drain(..) {
        let _ = s.shutdown(Shutdown::Both);
    }
}

fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N], Errno> {
    b.try_into().map_err(|_| Errno::EINVAL)
}

/// Serves one call with the local site; what it returns in a buffer goes
/// to `data` (cleared first).
/// A waiting call again with what is left of its timeout after `elapsed`
/// (None: the call has no timeout to shorten).
fn time_left<'a>(call: &Call<'a>, elapsed: Duration) -> Option<Call<'a>> {
    let left =
        |ms: i32| if ms < 0 { ms } else { ms.saturating_sub(elapsed.as_millis().min(i32::MAX as u128) as i32).max(0) };
    match *call {
        Call::Poll { fds, timeout_ms } => Some(Call::Poll { fds, timeout_ms: left(timeout_ms) }),
        Call::EpollWait { epfd, max, timeout_ms } => Some(Call::EpollWait { epfd, max, timeout_ms: left(timeout_ms) }),
        _ => None,
    }
}

fn execute(site: &mut LocalSite, call: &Call, data: &mut Vec<u8>) -> Result<(i64, i64), Errno> {
    data.clear();
    let v = |r: Result<u64, Errno>| r.map(|n| (n as i64, 0));
    match *call {
        Call::Openat { dirfd, path, flags, mode } => v(site.openat(dirfd, path, flags, mode)),
        Call::OpenBytes { content, flags } => v(site.open_bytes(content, flags)),
        Call::Close { fd } => v(site.close(fd)),
        Call::Dup { fd, min, cloexec } => v(site.dup(fd, min, cloexec)),
        Call::Dup3 { old, new, cloexec } => v(site.dup3(old, new, cloexec)),
        Call::Pipe2 { flags } => site.pipe2(flags).map(|(a, b)| (a as i64, b as i64)),
        Call::Fcntl { fd, cmd, arg } => v(site.fcntl(fd, cmd, arg)),
        Call::FcntlLock { fd, cmd, flock } => {
            let mut f: [u8; 32] = fixed(flock)?;
            let r = site.fcntl_lock(fd, cmd, &mut f);
            data.extend_from_slice(&f);
            v(r)
        }
        Call::Read { fd, len, offset } => {
            data.resize((len as usize).min(proto::IO_CHUNK), 0);
            let r = if offset < 0 { site.read(fd, data) } else { site.pread(fd, data, offset) };
            data.truncate(*r.as_ref().unwrap_or(&0) as usize);
            let ahead = offset < 0 && r.is_ok() && site.reads_may_go_ahead(fd);
            r.map(|n| (n as i64, (ahead as i64) | (site.file_id(fd) << 8) as i64))
        }
        Call::Write { fd, data: d, offset } => {
            let n = if offset < 0 { site.write(fd, d) } else { site.pwrite(fd, d, offset) }? as i64;
            Ok((n, (site.writes_may_go_behind(fd) as i64) | (site.file_id(fd) << 8) as i64))
        }
        Call::Lseek { fd, offset, whence } => v(site.lseek(fd, offset, whence)),
        Call::Getdents64 { fd, len } => {
            data.resize((len as usize).min(proto::IO_CHUNK), 0);
            let r = site.getdents64(fd, data);
            data.truncate(*r.as_ref().unwrap_or(&0) as usize);
            v(r)
        }
        Call::Ioctl { fd, request, arg } => {
            data.extend_from_slice(arg);
            v(site.ioctl(fd, request, data))
        }
        Call::IoctlInt { fd, request, arg } => v(site.ioctl_int(fd, request, arg)),
        Call::Fsync { fd, data_only } => v(site.fsync(fd, data_only)),
        Call::Ftruncate { fd, len } => v(site.ftruncate(fd, len)),
        Call::Fallocate { fd, mode, offset, len } => v(site.fallocate(fd, mode, offset, len)),
        Call::Fchmod { fd, mode } => v(site.fchmod(fd, mode)),
        Call::Poll { fds, timeout_ms } => {
            data.extend_from_slice(fds);
            v(site.poll(data, timeout_ms))
        }
        Call::Flock { fd, op } => v(site.flock(fd, op)),
        Call::Sendfile { out_fd, in_fd, offset, count } => {
            let mut off = offset.unwrap_or(0);
            let r = site.sendfile(out_fd, in_fd, offset.map(|_| &mut off), count.min(proto::IO_CHUNK as u64))?;
            Ok((r as i64, off))
        }
        Call::Fstatfs { fd } => {
            let mut out = [0u8; 120];
            let r = site.fstatfs(fd, &mut out);
            data.extend_from_slice(&out);
            v(r)
        }
        Call::Fstatat { dirfd, path, flags } => {
            let mut out = [0u8; 144];
            let r = site.fstatat(dirfd, path, flags, &mut out);
            data.extend_from_slice(&out);
            v(r)
        }
        Call::Statx { dirfd, path, flags, mask } => {
            let mut out = [0u8; 256];
            let r = site.statx(dirfd, path, flags, mask, &mut out);
            data.extend_from_slice(&out);
            v(r)
        }
        Call::Faccessat { dirfd, path, mode, flags } => v(site.faccessat(dirfd, path, mode, flags)),
        Call::Unlinkat { dirfd, path, flags } => v(site.unlinkat(dirfd, path, flags)),
        Call::Mkdirat { dirfd, path, mode } => v(site.mkdirat(dirfd, path, mode)),
        Call::Renameat2 { olddir, old, newdir, new, flags } => v(site.renameat2(olddir, old, newdir, new, flags)),
        Call::Linkat { olddir, old, newdir, new, flags } => v(site.linkat(olddir, old, newdir, new, flags)),
        Call::Symlinkat { target, dirfd, path } => v(site.symlinkat(target, dirfd, path)),
        Call::Readlinkat { dirfd, path, len } => {
            data.resize((len as usize).min(proto::IO_CHUNK), 0);
            let r = site.readlinkat(dirfd, path, data);
            data.truncate(*r.as_ref().unwrap_or(&0) as usize);
            v(r)
        }
        Call::Fchmodat { dirfd, path, mode, flags } => v(site.fchmodat(dirfd, path, mode, flags)),
        Call::Fchownat { dirfd, path, uid, gid, flags } => v(site.fchownat(dirfd, path, uid, gid, flags)),
        Call::Utimensat { dirfd, path, times, flags } => {
            let t: Option<[u8; 32]> = times.map(fixed).transpose()?;
            v(site.utimensat(dirfd, path, t.as_ref(), flags))
        }
        Call::Truncate { path, len } => v(site.truncate(path, len)),
        Call::Umask { mask } => Ok((site.umask(mask) as i64, 0)),
        Call::Statfs { path } => {
            let mut out = [0u8; 120];
            let r = site.statfs(path, &mut out);
            data.extend_from_slice(&out);
            v(r)
        }
        Call::ReadProgram { dirfd, path, flags, max } => {
            let (bytes, p) = site.read_program(dirfd, path, flags, max.min(proto::MAX_FRAME as u64 / 2))?;
            data.extend_from_slice(&bytes);
            data.extend_from_slice(p.as_os_str().as_bytes());
            Ok((bytes.len() as i64, 0))
        }
        Call::Exec { exe } => {
            site.exec(PathBuf::from(std::ffi::OsStr::from_bytes(exe)));
            Ok((0, 0))
        }
        Call::Chdir { path } => {
            let r = site.chdir(path);
            data.extend_from_slice(site.getcwd());
            v(r)
        }
        Call::Fchdir { fd } => {
            let r = site.fchdir(fd);
            data.extend_from_slice(site.getcwd());
            v(r)
        }
        Call::Exit { .. } | Call::Stay => Ok((0, 0)),
        Call::CloseRange { first, last, cloexec } => v(site.close_range(first, last, cloexec)),
        Call::SetFdLimit { limit } => {
            site.set_fd_limit(limit);
            Ok((0, 0))
        }
        Call::EpollCreate { cloexec } => v(site.epoll_create(cloexec)),
        Call::EpollCtl { epfd, op, fd, event } => v(site.epoll_ctl(epfd, op, fd, &fixed(event)?)),
        Call::EpollWait { epfd, max, timeout_ms } => {
            let n = (max as usize).min(proto::IO_CHUNK / super::EPOLL_EVENT_SIZE);
            data.resize(n * super::EPOLL_EVENT_SIZE, 0);
            let r = site.epoll_wait(epfd, data, timeout_ms);
            data.truncate(*r.as_ref().unwrap_or(&0) as usize * super::EPOLL_EVENT_SIZE);
            v(r)
        }
        Call::Eventfd { initval, flags } => v(site.eventfd(initval, flags)),
        Call::TimerfdCreate { clock, flags } => v(site.timerfd_create(clock, flags)),
        Call::TimerfdSettime { fd, flags, new, now } => {
            let mut old = [0u8; 32];
            let r = site.timerfd_settime(fd, flags, &fixed(new)?, now, &mut old);
            data.extend_from_slice(&old);
            v(r)
        }
        Call::TimerfdGettime { fd } => {
            let mut cur = [0u8; 32];
            let r = site.timerfd_gettime(fd, &mut cur);
            data.extend_from_slice(&cur);
            v(r)
        }
        Call::Signalfd { fd, mask, flags } => v(site.signalfd(fd, mask, flags)),
        Call::SignalfdGet { fd } => site.signalfd_get(fd).map(|(mask, nonblock)| (nonblock as i64, mask as i64)),
        Call::SignalsPending { pending } => v(site.signals_pending(pending)),
        Call::Mknodat { dirfd, path, mode, dev } => v(site.mknodat(dirfd, path, mode, dev)),
        Call::Fadvise { fd, offset, len, advice } => v(site.fadvise(fd, offset, len, advice)),
        Call::Readahead { fd, offset, count } => v(site.readahead(fd, offset, count)),
        Call::OpenNowait { dirfd, path, flags, mode } => v(site.open_nowait(dirfd, path, flags, mode)),
        Call::Getxattr { fd, path, follow, name, size } => {
            data.resize((size as usize).min(super::XATTR_SIZE_MAX), 0);
            let r = site.getxattr(fd, path, follow, name, data);
            // A size query (empty buffer) answers a length, not bytes.
            data.truncate(if size == 0 { 0 } else { *r.as_ref().unwrap_or(&0) as usize });
            v(r)
        }
        Call::Listxattr { fd, path, follow, size } => {
            data.resize((size as usize).min(super::XATTR_SIZE_MAX), 0);
            let r = site.listxattr(fd, path, follow, data);
            data.truncate(if size == 0 { 0 } else { *r.as_ref().unwrap_or(&0) as usize });
            v(r)
        }
        Call::Setxattr { fd, path, follow, name, value, flags } => {
            v(site.setxattr(fd, path, follow, name, value, flags))
        }
        Call::Removexattr { fd, path, follow, name } => v(site.removexattr(fd, path, follow, name)),
    }
}
