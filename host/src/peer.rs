//! The TCP side of the peer port: framed, checksummed requests from other
//! hosts (`wire`). Today it answers `Ping`; moves and deputy links will
//! arrive here. A connection that sends anything malformed is closed; the
//! listener never stops for it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::debug;

use crate::membership::{Drops, HostId};
use crate::wire::{self, Kind, Ping, Pong, WireError};

/// Connections served at once; more are closed on arrival.
const MAX_CONNECTIONS: usize = 256;
/// A connection that sends no complete frame for this long is closed.
const IDLE: Duration = Duration::from_secs(30);

/// Serves `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, id: HostId, mut stop: watch::Receiver<bool>) {
    let id = Arc::new(id);
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
                let (id, drops) = (id.clone(), drops.clone());
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, id).await {
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

async fn connection(mut stream: TcpStream, id: Arc<HostId>) -> Result<(), WireError> {
    let _ = stream.set_nodelay(true);
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
                let pong = Pong { id: HostId::clone(&id) };
                wire::write_frame(&mut stream, &wire::encode_msg(Kind::Pong, &pong)).await?;
            }
            got => return Err(WireError::Unexpected { expected: Kind::Ping, got }),
        }
    }
}

/// Asks the host at `addr` who it is.
pub async fn ping(addr: SocketAddr, from: &str, limit: Duration) -> Result<HostId, WireError> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
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
