//! The cluster's identity and the transports it secures.
//!
//! A cluster has one CA (`mosvm cluster init`); every host gets a
//! certificate from it (`mosvm cluster add-host`) and a copy of the
//! cluster's gossip key. Between hosts, every TCP connection (peer
//! requests, migration streams, deputy links) is mutual TLS 1.3 over the
//! `ring` provider: a peer without a certificate of the cluster's CA
//! gets no byte of service. Gossip and load datagrams (UDP, where TLS
//! does not apply) are sealed with AES-256-GCM under the gossip key, as
//! Serf and Consul do, and stale ones are refused.

mod identity;
mod link;
mod seal;
mod ticket;
mod tls;

pub use identity::{add_host, init_cluster, ClusterCa, Identity, JobCredentials, Role, CLUSTER_NAME};
pub use link::{watch_peer, Link, Transport, PEER_SILENCE};
pub use seal::{Sealer, Unsealed, SEAL_OVERHEAD};
pub use ticket::{BadTicket, Ticket, MOVE_TICKET_ENV, TICKET_LEN};
pub use tls::{client_config, names_host, server_config, server_name};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {err}")]
    File { path: PathBuf, err: std::io::Error },
    #[error("{0} already holds a cluster CA; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("host name {0:?}: use letters, digits, '-' and '.', at most 63 characters")]
    BadName(String),
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS setup: {0}")]
    Verifier(String),
}
