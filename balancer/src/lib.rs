//! MOSIX-style decentralized load balancing for mosvm.
//!
//! Every host runs one [`Balancer`]. It has three parts, as in MOSIX:
//!
//! - [`load`]: load calculation from per-tick samples of runnable threads,
//!   smoothed (exported: rises fast, decays slowly; local: the opposite) and
//!   normalized by cores and speed so that one CPU-bound job on a reference
//!   core is one unit;
//! - [`gossip`]: information dissemination with a bounded load vector; every
//!   period a window of it goes to one host; constant message size and rate
//!   per host whatever the cluster size;
//! - [`consider`]: migration consideration with hysteresis (more than one
//!   job of difference), residency, a gain-versus-cost test, target-side
//!   re-check (no herds), memory pressure and no ping-pong.
//!
//! The crate has no I/O, no clock and no randomness of its own: time,
//! random numbers ([`rng::Rng`]) and messages are inputs; [`Action`]s
//! (messages to send, migrations to start, refusals to log, each with a
//! human-readable reason) are outputs. [`wire`] encodes messages to bytes.
//! [`sim`] runs the same code in a deterministic cluster simulator and
//! computes the paper's "optimal" for comparison.

pub mod balancer;
pub mod config;
pub mod consider;
pub mod cost;
pub mod gossip;
pub mod load;
pub mod msg;
pub mod rng;
pub mod sim;
pub mod wire;

/// Identifies a job (unique cluster-wide; the daemon assigns it).
pub type JobId = u64;

pub use balancer::{Action, Balancer, JobInfo, Stats};
pub use config::{Config, ConsiderConfig, GossipConfig, HostSpec, LoadConfig};
pub use consider::{Mode, Note, Verdict};
pub use cost::{CostModel, MigrationCost};
pub use gossip::{HostId, LoadInfo, WireEntry};
pub use msg::{Message, MigrateReply, MigrateRequest, MoveKind};
