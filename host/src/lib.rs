//! The mosvm host daemon as a library: cluster membership (SWIM over UDP
//! on the peer port), the peer port's TCP side, the job records (SQLite)
//! and the API on a Unix socket, with a typed client for it.
//!
//! `mosvm host` is `config::Config::resolve` then `daemon::run`; a test
//! can instead `Daemon::start` one on its own runtime.

pub mod api;
pub mod balance;
pub mod bodies;
pub mod cgroup;
pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datagram;
pub mod detach;
pub mod drain;
pub mod fuzz;
pub mod load;
pub mod membership;
pub mod metrics;
pub mod moves;
pub mod ops;
pub mod peer;
pub mod procfs;
pub mod server;
pub mod store;
pub mod wire;

pub use client::{socket_path, BlockingClient, Client, ClientError};
pub use config::{Config, ConfigError, LogFormat, Settings};
pub use daemon::{run, Daemon, Error};
