//! Notices for the operator about a job: what it asked for that the VMM
//! does not provide. They never reach the job's own output (a program that
//! handles ENOSYS must print exactly what it prints natively); the binary
//! decides where they go (its daemon's records, the body's log).
//!
//! One VMM process runs one job, so the sink is the process's, like a
//! logger: installed once by the binary, read by the vCPU loop.

use std::sync::{Arc, OnceLock};

/// Something an operator should hear about a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The job made a system call the VMM does not implement; it got
    /// ENOSYS. Reported once per number.
    Unsupported { nr: u64, name: Option<&'static str> },
    /// The job's deputy refused a connection (no certificate of the
    /// cluster, not the job's secret, an old body).
    Refused { from: Option<std::net::SocketAddr>, why: String },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Unsupported { nr, name: Some(name) } => {
                write!(f, "unsupported system call {name} ({nr}), returned ENOSYS")
            }
            Notice::Unsupported { nr, name: None } => write!(f, "unknown system call {nr}, returned ENOSYS"),
            Notice::Refused { from: Some(a), why } => write!(f, "its deputy refused a connection from {a}: {why}"),
            Notice::Refused { from: None, why } => write!(f, "its deputy refused a connection: {why}"),
        }
    }
}

pub type Sink = Arc<dyn Fn(&Notice) + Send + Sync>;

static SINK: OnceLock<Sink> = OnceLock::new();

/// Where this process's notices go; the first call wins. Without one
/// they are dropped (`--trace` still shows them).
pub fn set_sink(sink: Sink) {
    let _ = SINK.set(sink);
}

pub fn emit(notice: Notice) {
    if let Some(sink) = SINK.get() {
        sink(&notice);
    }
}
