//! Messages between the balancers of different hosts. The daemon carries
//! them (see [`crate::wire`] for a byte encoding); the balancer only produces
//! and consumes them.

use crate::gossip::WireEntry;
use crate::JobId;

/// Why a job is being moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveKind {
    /// This host is more loaded than the target by more than one job.
    Load,
    /// This host's free memory runs short.
    Memory,
    /// This host is being drained by the operator.
    Drain,
}

impl MoveKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            MoveKind::Load => "load",
            MoveKind::Memory => "memory",
            MoveKind::Drain => "drain",
        }
    }
}

/// "May I send you this job?" — the target re-checks before accepting.
#[derive(Clone, Debug, PartialEq)]
pub struct MigrateRequest {
    pub job: JobId,
    pub kind: MoveKind,
    /// Runnable threads the job adds (1.0 for one busy vCPU).
    pub job_load: f64,
    /// Memory the job needs on the target, bytes.
    pub memory: u64,
    /// The source's own entry (its load with the job still there).
    pub source: WireEntry,
    /// Speed the job gets at the source now.
    pub source_rate: f64,
    /// Normalized load of the source with the job still there.
    pub source_load: f64,
    /// What the source believed the target's normalized load would be
    /// after the arrival.
    pub assumed_target_load: f64,
}

/// The target's answer, with its current entry so the source learns the
/// truth either way.
#[derive(Clone, Debug, PartialEq)]
pub struct MigrateReply {
    pub job: JobId,
    pub accepted: bool,
    pub reason: String,
    pub target: WireEntry,
    /// On a refusal: a host the target knows to be a better destination
    /// (the target would only have forwarded the job there).
    pub hint: Option<WireEntry>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A window of the sender's load vector, its own entry first. When
    /// `want_reply` is set the receiver answers with its own window.
    Gossip {
        entries: Vec<WireEntry>,
        want_reply: bool,
    },
    MigrateRequest(MigrateRequest),
    MigrateReply(MigrateReply),
    /// The source will not send the job after all (it gave up waiting for
    /// the reply): release the reservation.
    Cancel {
        job: JobId,
    },
}

impl Message {
    /// Short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Gossip { .. } => "gossip",
            Message::MigrateRequest(_) => "migrate-request",
            Message::MigrateReply(_) => "migrate-reply",
            Message::Cancel { .. } => "cancel",
        }
    }

    /// The sender's own entry, if the message carries one.
    pub fn sender_entry(&self) -> Option<&WireEntry> {
        match self {
            Message::Gossip { entries, .. } => entries.first(),
            Message::MigrateRequest(r) => Some(&r.source),
            Message::MigrateReply(r) => Some(&r.target),
            Message::Cancel { .. } => None,
        }
    }
}
