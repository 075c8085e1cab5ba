//! The UDP side of the peer port: gossip, status and load datagrams,
//! sealed under the cluster's gossip key when the host runs with an
//! identity (TLS cannot cover datagrams; see the trust crate).

use std::net::SocketAddr;

use tokio::net::UdpSocket;
use trust::{Sealer, Unsealed};

pub struct Datagrams {
    socket: UdpSocket,
    sealer: Option<Sealer>,
}

impl Datagrams {
    pub fn new(socket: UdpSocket, sealer: Option<Sealer>) -> Datagrams {
        Datagrams { socket, sealer }
    }

    pub async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }

    /// The datagram's message: opened if sealed; refused if it should be
    /// sealed and is not (or not with this cluster's key, or stale).
    pub fn open<'a>(&self, datagram: &'a mut [u8]) -> Result<&'a [u8], Unsealed> {
        match &self.sealer {
            None => Ok(datagram),
            Some(s) => s.open(datagram),
        }
    }

    pub async fn send_to(&self, frame: &[u8], to: SocketAddr) -> std::io::Result<usize> {
        match &self.sealer {
            None => self.socket.send_to(frame, to).await,
            Some(s) => {
                // Gossip is a few datagrams a second: a buffer each is fine.
                let mut sealed = Vec::with_capacity(frame.len() + trust::SEAL_OVERHEAD);
                s.seal(frame, &mut sealed);
                self.socket.send_to(&sealed, to).await
            }
        }
    }
}
