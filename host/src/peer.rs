//! The TCP side of the peer port: framed, checksummed requests from other
//! hosts (`wire`): `Ping`; the bodies' `PrepareBody`, `MoveBody` and
//! `BalanceMove` (see `moves`); an operator's `HostOp`, `Overview` and
//! `Progress` (see `ops`). A connection that sends anything malformed is closed;
//! the listener never stops for it. With a cluster identity every
//! connection is mutual TLS: a peer without a certificate of the cluster
//! CA is refused at the handshake, logged, and gets no answer.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::debug;

use crate::membership::{Drops, HostId};
use crate::moves;
use crate::ops;
use crate::server::Shared;
use crate::wire::{self, BalanceMove, HostOp, Kind, MoveBody, Overview, Ping, Pong, PrepareBody, Progress, WireError};

/// Connections served at once; more are closed on arrival.
const MAX_CONNECTIONS: usize = 256;
/// A connection that sends no complete frame for this long is closed.
const IDLE: Duration = Duration::from_secs(30);
/// A peer must finish its TLS handshake within this.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// How this host reaches its peers: from its advertised address, plain
/// or under mutual TLS. Cheap to clone.
#[derive(Clone)]
pub struct Dialer {
    pub from: IpAddr,
    tls: Option<TlsConnector>,
}

impl Dialer {
    pub fn new(from: IpAddr, transport: &trust::Transport) -> Dialer {
        let tls = match transport {
            trust::Transport::Plain => None,
            trust::Transport::Tls(t) => Some(TlsConnector::from(t.client.clone())),
        };
        Dialer { from, tls }
    }
}

/// The answering side of the peer port.
pub fn acceptor(transport: &trust::Transport) -> Option<TlsAcceptor> {
    match transport {
        trust::Transport::Plain => None,
        trust::Transport::Tls(t) => Some(TlsAcceptor::from(t.server.clone())),
    }
}

/// A peer connection, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Serves `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let drops = Arc::new(Mutex::new(Drops::default()));
    loop {
        tokio::select! {
            r = listener.accept() => {
                let (stream, from) = match r {
                    Ok(v) => v,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        debug!("peer accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    debug!(%from, "too many peer connections; closing one");
                    continue;
                };
                let (shared, drops, tls) = (shared.clone(), drops.clone(), tls.clone());
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let served = match tls {
                        None => connection(stream, Peer { addr: from, cert: None }, shared).await,
                        Some(tls) => match tokio::time::timeout(HANDSHAKE, tls.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
                                connection(stream, Peer { addr: from, cert: cert.map(|c| c.into_owned()) }, shared)
                                    .await
                            }
                            Ok(Err(e)) => Err(refused(from, &e)),
                            Err(_) => Err(refused(from, &"no TLS handshake in 10 s")),
                        },
                    };
                    if let Err(e) = served {
                        if let Ok(mut d) = drops.lock() {
                            d.note(from, "peer connection", &e);
                        }
                    }
                    drop(permit);
                });
            }
            _ = stop.changed() => return,
        }
    }
}

/// A peer that failed the TLS handshake (no certificate of this cluster,
/// or no TLS at all): always logged, whatever the rate.
fn refused(from: SocketAddr, why: &dyn std::fmt::Display) -> WireError {
    tracing::warn!(%from, "refused a peer connection: {why}");
    WireError::Io(std::io::Error::new(std::io::ErrorKind::PermissionDenied, format!("TLS: {why}")))
}

/// Who is at the other end of a peer connection: its address and, under
/// TLS, the host certificate it presented (verified by the handshake).
pub struct Peer {
    pub addr: SocketAddr,
    pub cert: Option<tokio_rustls::rustls::pki_types::CertificateDer<'static>>,
}

impl Peer {
    /// May this peer speak as host `name`? Under TLS only with `name`'s
    /// own certificate: a host of the cluster cannot speak for another.
    pub fn may_be(&self, name: &str) -> bool {
        self.cert.as_ref().is_none_or(|c| trust::names_host(c, name))
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: Peer,
    shared: Arc<Shared>,
) -> Result<(), WireError> {
    loop {
        let frame = match tokio::time::timeout(IDLE, wire::read_frame(&mut stream)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        let Some((kind, payload)) = frame else { return Ok(()) };
        match kind {
            Kind::Ping => {
                let ping: Ping = wire::decode_msg(kind, &payload)?;
                debug!(from = %ping.from, "ping");
                let pong = Pong { id: shared.id.clone() };
                wire::write_frame(&mut stream, &wire::encode_msg(Kind::Pong, &pong)).await?;
            }
            Kind::PrepareBody => {
                let req: PrepareBody = wire::decode_msg(kind, &payload)?;
                let reply = moves::on_prepare(&shared, req, &peer).await;
                wire::write_frame(&mut stream, &wire::encode_msg(Kind::BodyReady, &reply)).await?;
            }
            Kind::MoveBody => {
                let req: MoveBody = wire::decode_msg(kind, &payload)?;
                let reply = moves::on_move(&shared, req, &peer).await;
                wire::write_frame(&mut stream, &wire::encode_msg(Kind::Moved, &reply)).await?;
            }
            Kind::BalanceMove => {
                let req: BalanceMove = wire::decode_msg(kind, &payload)?;
                let reply = moves::on_balance_move(&shared, req, &peer).await;
                wire::write_frame(&mut stream, &wire::encode_msg(Kind::Moved, &reply)).await?;
            }
            Kind::HostOp => {
                let req: HostOp = wire::decode_msg(kind, &payload)?;
                let reply = ops::on_host_op(&shared, req, &peer).await;
                wire::write_frame(&mut stream, &wire::encode_msg(Kind::HostReport, &reply)).await?;
            }
            Kind::Overview => {
                let req: Overview = wire::decode_msg(kind, &payload)?;
                // A stranger gets the connection closed, not an answer.
                let Some(reply) = ops::on_overview(&shared, req, &peer).await else { return Ok(()) };
                wire::write_frame(&mut stream, &wire::encode_msg(Kind::OverviewReply, &reply)).await?;
            }
            Kind::Progress => {
                let req: Progress = wire::decode_msg(kind, &payload)?;
                let reply = ops::on_progress(&shared, req, &peer).await;
                wire::write_frame(&mut stream, &wire::encode_msg(Kind::ProgressReply, &reply)).await?;
            }
            got => return Err(WireError::Unexpected { expected: Kind::Ping, got }),
        }
    }
}

/// Connects to `to` (from `d.from` where the families agree), under TLS
/// when the dialer has it.
async fn dial(d: &Dialer, to: SocketAddr) -> Result<Box<dyn Stream>, WireError> {
    let sock = if to.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if d.from.is_ipv4() == to.is_ipv4() && !d.from.is_unspecified() {
        sock.bind(SocketAddr::new(d.from, 0))?;
    }
    let s: TcpStream = sock.connect(to).await?;
    let _ = s.set_nodelay(true);
    match &d.tls {
        None => Ok(Box::new(s)),
        Some(tls) => {
            let s = tls
                .connect(trust::server_name(), s)
                .await
                .map_err(|e| WireError::Io(std::io::Error::new(e.kind(), format!("TLS with {to}: {e}"))))?;
            Ok(Box::new(s))
        }
    }
}

/// Asks the host at `addr` who it is.
pub async fn ping(d: &Dialer, addr: SocketAddr, from: &str, limit: Duration) -> Result<HostId, WireError> {
    let exchange = async {
        let mut s = dial(d, addr).await?;
        wire::write_frame(&mut s, &wire::encode_msg(Kind::Ping, &Ping { from: from.to_string() })).await?;
        match wire::read_frame(&mut s).await? {
            Some((Kind::Pong, p)) => Ok(wire::decode_msg::<Pong>(Kind::Pong, &p)?.id),
            Some((got, _)) => Err(WireError::Unexpected { expected: Kind::Pong, got }),
            None => Err(WireError::Truncated { have: 0, need: wire::HEADER_LEN }),
        }
    };
    tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or_else(|_| Err(WireError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))))
}

/// One request to the host at `to`, from this host's address `d.from`
/// (so the receiver sees the address the member list has for us), and
/// its answer of kind `answer`.
pub async fn request<Q: Serialize, A: DeserializeOwned>(
    d: &Dialer,
    to: SocketAddr,
    kind: Kind,
    msg: &Q,
    answer: Kind,
    limit: Duration,
) -> Result<A, WireError> {
    let exchange = async {
        let mut s = dial(d, to).await?;
        wire::write_frame(&mut s, &wire::encode_msg(kind, msg)).await?;
        match wire::read_frame(&mut s).await? {
            Some((k, p)) if k == answer => wire::decode_msg::<A>(k, &p),
            Some((got, _)) => Err(WireError::Unexpected { expected: answer, got }),
            None => Err(WireError::Truncated { have: 0, need: wire::HEADER_LEN }),
        }
    };
    tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or_else(|_| Err(WireError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))))
}
