//! Blocking links between hosts: a TCP socket, plain or under mutual TLS.
//!
//! The VMM's links (deputy calls and events, migration streams) are
//! blocking sockets that one thread reads while another writes, that a
//! third may shut down, and whose reads a signal must be able to cut
//! short (EINTR). `Link` keeps all of that under TLS: a session is shared
//! by the clones of a link, readers and writers take separate locks, and
//! no lock is held across a blocking read. Lock order: `outbox` before
//! `conn`; `inbox` (readers only) before either.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use crate::identity::Identity;
use crate::seal::Sealer;
use crate::Error;

/// How a host's links are made: plain TCP (`--insecure`), or mutual TLS
/// with the host's identity. Cheap to clone.
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls(Arc<Tls>),
}

/// A host's TLS configurations, built once.
pub struct Tls {
    pub identity: Identity,
    pub client: Arc<ClientConfig>,
    pub server: Arc<ServerConfig>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Plain => f.write_str("Transport::Plain"),
            Transport::Tls(t) => write!(f, "Transport::Tls({})", t.identity.name),
        }
    }
}

/// How long sent bytes may go unacknowledged before a link counts as
/// broken (TCP_USER_TIMEOUT), and how soon an idle link is probed.
pub const PEER_SILENCE: Duration = Duration::from_secs(4);

/// Makes a vanished peer (its host died, a cable was cut, an interface
/// went down: packets vanish without a reset) an error on `sock` within
/// seconds, instead of TCP's quarter of an hour of retransmits. Writes
/// fail once their bytes go unacknowledged for `PEER_SILENCE`; an idle
/// socket is probed every second and fails after three unanswered probes.
/// Also turns Nagle off: links carry calls and their answers.
pub fn watch_peer(sock: &TcpStream) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let fd = sock.as_raw_fd();
    let set = |level: i32, name: i32, v: i32| -> io::Result<()> {
        // SAFETY: an int option on a socket we own, with its size.
        let r = unsafe { libc::setsockopt(fd, level, name, (&v as *const i32).cast(), 4) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 1)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 1)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3)?;
    set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, PEER_SILENCE.as_millis() as i32)
}

/// Bytes of ciphertext read from the socket at once.
const INBOX: usize = 64 * 1024;
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

impl Transport {
    /// Mutual TLS with the host directory `dir` (see `add_host`).
    pub fn from_dir(dir: &std::path::Path) -> Result<Transport, Error> {
        Self::tls(Identity::load(dir)?)
    }

    pub fn tls(identity: Identity) -> Result<Transport, Error> {
        let client = crate::tls::client_config(&identity)?;
        let server = crate::tls::server_config(&identity)?;
        Ok(Transport::Tls(Arc::new(Tls { identity, client, server })))
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// The sealer for gossip datagrams (None when plain, or for a job).
    pub fn sealer(&self) -> Option<Sealer> {
        match self {
            Transport::Plain => None,
            Transport::Tls(t) => t.identity.gossip.as_ref().map(Sealer::new),
        }
    }

    /// Connects to `addr` within `limit` and, under TLS, shakes hands as
    /// the client.
    pub fn connect(&self, addr: &SocketAddr, limit: Duration) -> io::Result<Link> {
        let sock = TcpStream::connect_timeout(addr, limit)?;
        let _ = sock.set_nodelay(true);
        self.client(sock)
    }

    /// The client side of a connected socket.
    pub fn client(&self, sock: TcpStream) -> io::Result<Link> {
        match self {
            Transport::Plain => Ok(Link { sock, tls: None }),
            Transport::Tls(t) => {
                let c = ClientConnection::new(t.client.clone(), crate::tls::server_name()).map_err(io::Error::other)?;
                handshake(sock, c.into())
            }
        }
    }

    /// The server side of an accepted socket: under TLS, a peer without
    /// a certificate of the cluster CA is refused here
    /// (`ErrorKind::PermissionDenied`, with rustls' reason).
    pub fn server(&self, sock: TcpStream) -> io::Result<Link> {
        match self {
            Transport::Plain => Ok(Link { sock, tls: None }),
            Transport::Tls(t) => {
                let c = ServerConnection::new(t.server.clone()).map_err(io::Error::other)?;
                handshake(sock, c.into())
            }
        }
    }
}

fn handshake(mut sock: TcpStream, mut conn: Connection) -> io::Result<Link> {
    // A peer that stalls mid-handshake must not hold a thread forever.
    let (rt, wt) = (sock.read_timeout()?, sock.write_timeout()?);
    sock.set_read_timeout(Some(HANDSHAKE_LIMIT))?;
    sock.set_write_timeout(Some(HANDSHAKE_LIMIT))?;
    while conn.is_handshaking() {
        match conn.complete_io(&mut sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let kind = match e.kind() {
                    io::ErrorKind::InvalidData => io::ErrorKind::PermissionDenied,
                    k => k,
                };
                // The alert that says why, if rustls has one to send.
                let _ = conn.write_tls(&mut sock);
                return Err(io::Error::new(kind, format!("TLS handshake: {e}")));
            }
        }
    }
    // Anything the handshake left to send (the client's Finished).
    while conn.wants_write() {
        match conn.write_tls(&mut sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    sock.set_read_timeout(rt)?;
    sock.set_write_timeout(wt)?;
    let suite = conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default();
    let session = Session {
        suite,
        conn: Mutex::new(conn),
        inbox: Mutex::new(Inbox { buf: vec![0; INBOX].into_boxed_slice(), start: 0, end: 0, peeked: Vec::new() }),
        outbox: Mutex::new(Outbox { plain: Vec::new(), cipher: Vec::new() }),
    };
    Ok(Link { sock, tls: Some(Arc::new(session)) })
}

struct Inbox {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Plaintext a peek took out of rustls, handed out first.
    peeked: Vec<u8>,
}

struct Outbox {
    /// The caller's slices gathered, so that they go out as full records.
    plain: Vec<u8>,
    /// Ciphertext on its way to the socket.
    cipher: Vec<u8>,
}

struct Session {
    /// The cipher suite the handshake settled on.
    suite: String,
    conn: Mutex<Connection>,
    /// Ciphertext read from the socket that rustls has not taken yet.
    inbox: Mutex<Inbox>,
    /// Its lock orders the writers.
    outbox: Mutex<Outbox>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere leaves the data usable (bytes and a session that
    // then fails with an error of its own).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Session {
    fn read(&self, sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut inbox = lock(&self.inbox);
        if !inbox.peeked.is_empty() {
            let n = buf.len().min(inbox.peeked.len());
            buf[..n].copy_from_slice(&inbox.peeked[..n]);
            inbox.peeked.drain(..n);
            return Ok(n);
        }
        self.read_locked(&mut inbox, sock, buf)
    }

    /// Fills `buf` without consuming it (reads go on returning it).
    fn peek_exact(&self, sock: &TcpStream, buf: &mut [u8]) -> io::Result<()> {
        let mut inbox = lock(&self.inbox);
        let mut tmp = [0u8; 512];
        while inbox.peeked.len() < buf.len() {
            let want = (buf.len() - inbox.peeked.len()).min(tmp.len());
            let n = self.read_locked(&mut inbox, sock, &mut tmp[..want])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            inbox.peeked.extend_from_slice(&tmp[..n]);
        }
        buf.copy_from_slice(&inbox.peeked[..buf.len()]);
        Ok(())
    }

    fn read_locked(&self, inbox: &mut Inbox, sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut flush = false;
            {
                let mut c = lock(&self.conn);
                loop {
                    match c.reader().read(buf) {
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                    if inbox.start == inbox.end {
                        break;
                    }
                    let n = c.read_tls(&mut &inbox.buf[inbox.start..inbox.end])?;
                    if n == 0 {
                        return Err(io::Error::other("TLS input stalled"));
                    }
                    inbox.start += n;
                    let processed = c.process_new_packets();
                    flush |= c.wants_write();
                    if let Err(e) = processed {
                        drop(c);
                        let _ = self.flush(sock);
                        return Err(tls_error(e));
                    }
                }
            }
            if flush {
                self.flush(sock)?;
            }
            // Nothing buffered: wait for the socket, holding no session lock.
            inbox.start = 0;
            inbox.end = 0;
            let n = (&*sock).read(&mut inbox.buf)?;
            if n == 0 {
                let mut c = lock(&self.conn);
                c.read_tls(&mut &[][..])?;
                c.process_new_packets().map_err(tls_error)?;
                // Ok(0) after the peer's close_notify, UnexpectedEof otherwise.
                return c.reader().read(buf);
            }
            inbox.end = n;
        }
    }

    /// Sends `bufs` as one stretch of records.
    fn write(&self, sock: &TcpStream, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut out = lock(&self.outbox);
        let Outbox { plain, cipher } = &mut *out;
        plain.clear();
        for b in bufs {
            plain.extend_from_slice(b);
        }
        let mut rest = &plain[..];
        while !rest.is_empty() {
            cipher.clear();
            {
                let mut c = lock(&self.conn);
                // rustls takes what fits its send buffer (64 KiB by default).
                let n = c.writer().write(rest)?;
                rest = &rest[n..];
                while c.wants_write() {
                    c.write_tls(cipher)?;
                }
            }
            write_all_retrying(sock, cipher)?;
        }
        Ok(plain.len())
    }

    /// Sends what rustls has queued (alerts, key updates).
    fn flush(&self, sock: &TcpStream) -> io::Result<()> {
        let mut out = lock(&self.outbox);
        out.cipher.clear();
        {
            let mut c = lock(&self.conn);
            while c.wants_write() {
                c.write_tls(&mut out.cipher)?;
            }
        }
        write_all_retrying(sock, &out.cipher)
    }
}

/// Writes all of `buf`: a signal during a write must not tear a record.
fn write_all_retrying(mut sock: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match sock.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A connected link: plain TCP or a TLS session over it. Clones share
/// the session (one may read while another writes).
pub struct Link {
    sock: TcpStream,
    tls: Option<Arc<Session>>,
}

impl Link {
    pub fn try_clone(&self) -> io::Result<Link> {
        Ok(Link { sock: self.sock.try_clone()?, tls: self.tls.clone() })
    }

    /// The TCP socket under the link, for timeouts, peeks and shutdown
    /// (never for bytes: under TLS they are records).
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Shuts the socket down; when writing ends, under TLS, after a
    /// close_notify (so the peer reads a clean end, not a truncation),
    /// unless a writer is stuck on the socket: then the socket goes at once.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if let (Some(s), true) = (&self.tls, how != Shutdown::Read) {
            if let Ok(mut out) = s.outbox.try_lock() {
                let out = &mut out.cipher;
                let mut c = lock(&s.conn);
                c.send_close_notify();
                out.clear();
                while c.wants_write() {
                    if c.write_tls(out).is_err() {
                        break;
                    }
                }
                drop(c);
                // Without waiting (and without making the socket, shared
                // with readers, non-blocking): a full socket loses it.
                // SAFETY: a buffer we own, on our socket.
                unsafe {
                    libc::send(
                        self.sock.as_raw_fd(),
                        out.as_ptr().cast(),
                        out.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
            }
        }
        self.sock.shutdown(how)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.peer_addr()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The TLS cipher suite in use (None: plain).
    pub fn cipher_suite(&self) -> Option<&str> {
        self.tls.as_deref().map(|s| s.suite.as_str())
    }

    /// Reads `buf.len()` bytes without consuming them, within `limit`.
    pub fn peek_exact(&self, buf: &mut [u8], limit: Duration) -> io::Result<()> {
        if let Some(s) = &self.tls {
            let old = self.sock.read_timeout()?;
            self.sock.set_read_timeout(Some(limit))?;
            let r = s.peek_exact(&self.sock, buf);
            self.sock.set_read_timeout(old)?;
            return r;
        }
        let deadline = std::time::Instant::now() + limit;
        loop {
            let n = self.sock.peek(buf)?;
            if n == buf.len() {
                return Ok(());
            }
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if std::time::Instant::now() > deadline {
                return Err(io::ErrorKind::TimedOut.into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Is the peer still there (no EOF or error waiting on the socket)?
    pub fn alive(&self) -> bool {
        let mut b = 0u8;
        // Without making the socket, shared with readers, non-blocking.
        // SAFETY: a one-byte peek into a local, on our socket.
        let n = unsafe {
            libc::recv(self.sock.as_raw_fd(), (&mut b as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
        };
        match n {
            0 => false,
            n if n > 0 => true,
            _ => {
                let e = io::Error::last_os_error();
                matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
            }
        }
    }
}

impl AsRawFd for Link {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl Read for &Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.tls {
            None => (&self.sock).read(buf),
            Some(s) => s.read(&self.sock, buf),
        }
    }
}

impl Write for &Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.tls {
            None => (&self.sock).write(buf),
            Some(s) => s.write(&self.sock, &[io::IoSlice::new(buf)]),
        }
    }

    /// Under TLS all of `bufs` goes, as few records as they fit in.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match &self.tls {
            None => (&self.sock).write_vectored(bufs),
            Some(s) => s.write(&self.sock, bufs),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &self.tls {
            None => (&self.sock).write_all(buf),
            Some(s) => s.write(&self.sock, &[io::IoSlice::new(buf)]).map(drop),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        (&*self).write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
