//! The daemon's API on its Unix socket: HTTP/JSON, one typed request and
//! response per endpoint, shared by the daemon and its clients.
//!
//! | method and path              | request          | response        |
//! |------------------------------|------------------|-----------------|
//! | GET  /v1/hosts               |                  | `Vec<HostView>` |
//! | GET  /v1/jobs?all=BOOL       |                  | `Vec<JobView>`  |
//! | GET  /v1/jobs/{id}           |                  | `JobDetail`     |
//! | POST /v1/jobs                | `NewJob`         | `JobView`       |
//! | PUT  /v1/jobs/{id}/state     | `StateChange`    | `JobView`       |
//! | POST /v1/jobs/{id}/moves     | `NewMove`        | `JobView`       |
//! | POST /v1/jobs/{id}/migrate   | `MigrateRequest` | `MigrateResult` |
//! | POST /v1/jobs/{id}/signal    | `SignalRequest`  | `JobView`       |
//! | GET  /v1/jobs/{id}/wait?timeout_ms=N |          | `JobView`       |
//! | GET  /v1/jobs/{id}/logs?out=N&err=M  |          | `LogChunk`      |
//! | POST /v1/jobs/detached       | `DetachedJob`    | `JobView`       |
//! | PUT  /v1/cordon              | `Cordon`         | `Cordon`        |
//! | GET  /v1/events?after=SEQ&limit=N&wait_ms=MS |  | `Vec<Event>`    |
//! | GET  /v1/events?last=N       |                  | `Vec<Event>`    |
//!
//! Every failure is an `ApiError` (`{"kind":"not_found","message":"..."}`)
//! with the matching HTTP status. Who calls is taken from the socket's peer
//! credentials, never from a request body.

use serde::{Deserialize, Serialize};

/// Version prefix of every path.
pub const PREFIX: &str = "/v1";

/// How a host is seen by the one answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    Alive,
    /// Missed its probes; declared down unless it answers soon.
    Suspect,
    /// Stopped answering.
    Down,
    /// Said goodbye (a clean shutdown).
    Left,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Alive => "alive",
            HostState::Suspect => "suspect",
            HostState::Down => "down",
            HostState::Left => "left",
        }
    }
}

/// A host's load as the answering host's balancer knows it (its own,
/// measured; the others', from gossip).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadView {
    /// Runnable threads per CPU of capacity: 1.0 is one CPU-bound job per
    /// reference core.
    pub load: f64,
    /// Runnable threads (smoothed, with committed moves applied).
    pub runnable: f64,
    /// Capacity: cores × speed.
    pub cpus: f64,
    /// Seconds since the information was current.
    pub age_s: f64,
    /// It takes jobs from other hosts (false when cordoned or draining).
    pub accepting: bool,
}

/// The answering host's balancer, counted since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BalancerStats {
    pub uptime_s: f64,
    /// Balancer messages sent and received (gossip, requests, replies,
    /// cancels).
    pub messages_sent: u64,
    pub messages_received: u64,
    pub gossip_sent: u64,
    pub gossip_received: u64,
    pub requests_sent: u64,
    pub requests_accepted: u64,
    pub requests_refused: u64,
    pub arrivals_accepted: u64,
    pub arrivals_refused: u64,
    pub moves_done: u64,
    pub moves_failed: u64,
    /// Jobs running here that it balances.
    pub jobs: usize,
    /// Why its last consideration did (not) move anything.
    pub note: String,
}

/// One host of the cluster (`GET /v1/hosts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub name: String,
    /// Its peer address (TCP and UDP), HOST:PORT.
    pub addr: String,
    pub state: HostState,
    /// True for the host that answered.
    pub local: bool,
    /// Jobs whose body runs there, from the records of every home that
    /// reported (this host's own records and the others' status messages).
    pub jobs: u32,
    /// MemAvailable there, in bytes; None until it reported, or when it is
    /// down or gone.
    pub mem_available: Option<u64>,
    /// MemTotal there, in bytes (same rules).
    pub mem_total: Option<u64>,
    /// Its load, if the balancer knows it (None with balancing off).
    #[serde(default)]
    pub load: Option<LoadView>,
    /// The answering host's balancer (only on its own entry).
    #[serde(default)]
    pub balancer: Option<BalancerStats>,
}

/// What a job's record says it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Moving,
    Exited,
    Lost,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Moving => "moving",
            JobState::Exited => "exited",
            JobState::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "running" => JobState::Running,
            "moving" => JobState::Moving,
            "exited" => JobState::Exited,
            "lost" => JobState::Lost,
            _ => return None,
        })
    }

    /// Exited and lost jobs never change again.
    pub fn ended(self) -> bool {
        matches!(self, JobState::Exited | JobState::Lost)
    }
}

/// A job record as shown to a caller. The private fields (`argv`, `cwd`,
/// `control_sock`, `deputy_addr`, `deputy_pid`) are None unless the caller
/// owns the job or is root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: u64,
    pub owner_uid: u32,
    pub program: String,
    /// Home host: where the job was started and its deputy lives.
    pub home: String,
    /// Where its body runs now (or ran last).
    pub host: String,
    pub state: JobState,
    /// With state moving: where to.
    pub moving_to: Option<String>,
    /// With state exited: the status as a shell reports it.
    pub exit_status: Option<i32>,
    /// With state lost: why.
    pub lost_reason: Option<String>,
    /// Unix epoch milliseconds.
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    /// Guest memory, bytes.
    pub mem_bytes: u64,
    pub moves: u32,
    /// CPU time of the job in milliseconds, when it can be measured: the
    /// deputy process while the body has always run at home in it.
    pub cpu_ms: Option<u64>,
    pub argv: Option<Vec<String>>,
    pub cwd: Option<String>,
    pub control_sock: Option<String>,
    pub deputy_addr: Option<String>,
    pub deputy_pid: Option<u32>,
    /// Started by the daemon (`run -d`): `mosvm logs` has its output.
    #[serde(default)]
    pub detached: bool,
    /// Pinned by its user (`run --stay`): the balancer never moves it (an
    /// operator's migrate still can).
    #[serde(default)]
    pub stay: bool,
}

/// `GET /v1/jobs/{id}`: the record and its moves, oldest first. Only for
/// the owner or root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    pub job: JobView,
    pub history: Vec<MoveView>,
}

/// `POST /v1/jobs`: register a job whose deputy is the calling process.
/// Owner uid/gid and deputy pid come from the socket's peer credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    pub program: String,
    pub argv: Vec<String>,
    /// Absolute path.
    pub cwd: String,
    /// The job's control socket (`mosvm run --api-sock`), if it serves one.
    #[serde(default)]
    pub control_sock: Option<String>,
    /// Where its deputy accepts the body's link when the body is away.
    #[serde(default)]
    pub deputy_addr: Option<String>,
    /// Guest memory, bytes.
    pub mem_bytes: u64,
    /// Pinned (`run --stay`): the balancer never moves it.
    #[serde(default)]
    pub stay: bool,
}

/// `PUT /v1/jobs/{id}/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum StateChange {
    /// The body runs at `host` (after a move, or a failed one).
    Running { host: String },
    /// A move has started.
    Moving { to: String },
    /// The job ended with this status (as a shell reports it).
    Exited { status: i32 },
    /// The job cannot be reached any more.
    Lost { reason: String },
}

/// Who decided a move, and for what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveWhy {
    /// Someone asked (`mosvm migrate`).
    Operator,
    /// The balancer, before it said why (records of older releases).
    Balancer,
    /// The balancer, to even out the load.
    Load,
    /// The balancer, because memory ran short where the job was.
    Memory,
    /// The balancer, emptying a host that takes no more jobs.
    Drain,
}

impl MoveWhy {
    pub fn as_str(self) -> &'static str {
        match self {
            MoveWhy::Operator => "operator",
            MoveWhy::Balancer => "balancer",
            MoveWhy::Load => "load",
            MoveWhy::Memory => "memory",
            MoveWhy::Drain => "drain",
        }
    }

    pub fn parse(s: &str) -> Option<MoveWhy> {
        match s {
            "operator" => Some(MoveWhy::Operator),
            "balancer" => Some(MoveWhy::Balancer),
            "load" => Some(MoveWhy::Load),
            "memory" => Some(MoveWhy::Memory),
            "drain" => Some(MoveWhy::Drain),
            _ => None,
        }
    }
}

/// `POST /v1/jobs/{id}/moves`: a completed move. Recording it also says
/// the body now runs at `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMove {
    pub from: String,
    pub to: String,
    /// When the move completed, Unix epoch milliseconds.
    pub at_ms: u64,
    pub total_ms: f64,
    pub downtime_ms: f64,
    pub why: MoveWhy,
    /// Why, in words, e.g. "load 3.0 vs 1.0 at h2, gain 41 s > cost 0.2 s".
    #[serde(default)]
    pub reason: Option<String>,
}

/// A recorded move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveView {
    pub from: String,
    pub to: String,
    pub at_ms: u64,
    pub total_ms: f64,
    pub downtime_ms: f64,
    pub why: MoveWhy,
    /// Why, in words (None for an operator's move and older records).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/jobs/{id}/migrate`: move the job's body, live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// A host's name or peer address (IP:PORT or IP), or "home".
    pub to: String,
    #[serde(default)]
    pub downtime_ms: Option<f64>,
    #[serde(default)]
    pub max_bandwidth_mbps: Option<f64>,
    #[serde(default)]
    pub verify: bool,
}

/// A move's figures, field for field as the job's control socket reports
/// them (and `mosvm migrate --json` prints them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveFigures {
    pub result: String,
    /// The address the body went to.
    pub to: String,
    pub total_ms: f64,
    pub downtime_ms: f64,
    pub rounds: u32,
    pub pages_sent: u64,
    pub bytes_sent: u64,
    pub zero_pages_skipped: u64,
    pub bandwidth_mbps: f64,
    pub path: String,
    pub max_throttle_percent: u8,
    pub final_pages: u64,
    pub stop_to_state_sent_ms: f64,
    pub receiver_restore_ms: f64,
}

/// The answer to a completed move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrateResult {
    /// The record after the move.
    pub job: JobView,
    /// Host names.
    pub from: String,
    pub to: String,
    pub figures: MoveFigures,
}

/// `POST /v1/jobs/{id}/signal`: deliver a signal to the job wherever its
/// body runs (through its deputy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    pub signal: i32,
}

/// `POST /v1/jobs/detached`: start a job whose deputy the daemon starts,
/// as the caller (uid, gid and groups from the socket's peer credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachedJob {
    /// As the caller typed it (a name without '/' is looked up in the
    /// request's PATH).
    pub program: String,
    /// The program's arguments (without argv[0]).
    pub args: Vec<String>,
    /// The job's whole environment, K=V.
    pub env: Vec<String>,
    /// Absolute path.
    pub cwd: String,
    /// Guest memory, bytes.
    pub mem_bytes: u64,
    #[serde(default)]
    pub trace: bool,
    /// Pinned (`run --stay`): the balancer never moves it.
    #[serde(default)]
    pub stay: bool,
}

/// `GET /v1/jobs/{id}/logs?out=N&err=M`: what a detached job wrote to its
/// stdout and stderr from those offsets on (at most `LOG_CHUNK` each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub out: Vec<u8>,
    pub err: Vec<u8>,
    /// True once the job has ended (its logs then grow no more).
    pub ended: bool,
}

/// The most bytes of each stream one `LogChunk` carries.
pub const LOG_CHUNK: usize = 256 << 10;

/// `PUT /v1/cordon` (root only): whether this host takes new bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cordon {
    pub cordoned: bool,
}

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A job's body moved (recorded by the host that decided or carried it out).
    Moved,
    /// A move was tried and failed (the job runs where it was).
    MoveFailed,
    /// A host refused to take a job (balancer arrival check or body refusal).
    Refused,
    /// The balancer passed over a job it wanted to move (pinned, unmovable: holds a socket, has children).
    Skipped,
    /// A job's body arrived here.
    Arrived,
    HostJoined,
    HostFailed,
    HostLeft,
    /// The job was lost.
    Lost,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::Moved,
        EventKind::MoveFailed,
        EventKind::Refused,
        EventKind::Skipped,
        EventKind::Arrived,
        EventKind::HostJoined,
        EventKind::HostFailed,
        EventKind::HostLeft,
        EventKind::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Moved => "moved",
            EventKind::MoveFailed => "move_failed",
            EventKind::Refused => "refused",
            EventKind::Skipped => "skipped",
            EventKind::Arrived => "arrived",
            EventKind::HostJoined => "host_joined",
            EventKind::HostFailed => "host_failed",
            EventKind::HostLeft => "host_left",
            EventKind::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An event to record (`Shared::event`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub kind: EventKind,
    /// The job as "HOME-ID" (JobRef's Display), if the event is about one.
    #[serde(default)]
    pub job: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    /// Human-readable why, e.g. "load 3.0 vs 1.0 at h2, gain 41 s > cost 0.2 s".
    pub reason: String,
}

/// A recorded event (`GET /v1/events`): anyone may read them, so they
/// carry no argv or environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Ascending at the host that recorded it.
    pub seq: u64,
    /// Unix epoch milliseconds.
    pub at_ms: u64,
    /// The host that recorded it.
    pub host: String,
    pub kind: EventKind,
    #[serde(default)]
    pub job: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    pub reason: String,
}

/// The most events one `GET /v1/events` returns.
pub const EVENTS_MAX: usize = 10_000;
/// How many it returns without a `limit`.
pub const EVENTS_DEFAULT: usize = 1000;

/// What went wrong, for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    PermissionDenied,
    BadRequest,
    /// The request is valid but the record does not allow it (a job that
    /// has ended cannot change state).
    Conflict,
    /// A move was refused (by the job, e.g. it holds a socket, or by the
    /// destination, e.g. not enough memory there); the job runs on where
    /// it was.
    Refused,
    /// The job is already moving.
    Busy,
    /// A host, or the job's control socket, cannot be reached.
    Unreachable,
    Internal,
}

impl ErrorKind {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::BadRequest => 400,
            ErrorKind::Conflict | ErrorKind::Busy => 409,
            ErrorKind::Refused => 422,
            ErrorKind::Unreachable => 502,
            ErrorKind::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Refused => "refused",
            ErrorKind::Busy => "busy",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Internal => "internal",
        }
    }
}

/// The body of every failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError { kind, message: message.into() }
    }
}

/// The one line a starting daemon prints on stdout once it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// Always "ready".
    pub event: String,
    pub name: String,
    /// The peer port (TCP and UDP), as bound.
    pub listen: String,
    /// The address other hosts reach this one at.
    pub advertise: String,
    pub api_sock: String,
    pub pid: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_change_json() {
        let s: StateChange = serde_json::from_str(r#"{"state":"running","host":"b"}"#).unwrap();
        assert_eq!(s, StateChange::Running { host: "b".into() });
        let s: StateChange = serde_json::from_str(r#"{"state":"exited","status":3}"#).unwrap();
        assert_eq!(s, StateChange::Exited { status: 3 });
        assert!(serde_json::from_str::<StateChange>(r#"{"state":"exited"}"#).is_err());
        assert!(serde_json::from_str::<StateChange>(r#"{"state":"flying"}"#).is_err());
        let e = serde_json::to_string(&ApiError::new(ErrorKind::PermissionDenied, "no")).unwrap();
        assert_eq!(e, r#"{"kind":"permission_denied","message":"no"}"#);
    }

    #[test]
    fn names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.as_str()));
        }
        assert_eq!(EventKind::parse("exploded"), None);
        for w in [MoveWhy::Operator, MoveWhy::Balancer, MoveWhy::Load, MoveWhy::Memory, MoveWhy::Drain] {
            assert_eq!(MoveWhy::parse(w.as_str()), Some(w));
            assert_eq!(serde_json::to_string(&w).unwrap(), format!("\"{}\"", w.as_str()));
        }
    }

    #[test]
    fn older_json_still_parses() {
        // A move and a job as an older daemon or client wrote them.
        let mv: NewMove = serde_json::from_str(
            r#"{"from":"a","to":"b","at_ms":1,"total_ms":1.0,"downtime_ms":0.1,"why":"balancer"}"#,
        )
        .unwrap();
        assert_eq!((mv.why, mv.reason), (MoveWhy::Balancer, None));
        let j: NewJob = serde_json::from_str(r#"{"program":"p","argv":[],"cwd":"/","mem_bytes":1}"#).unwrap();
        assert!(!j.stay);
        let e: Event =
            serde_json::from_str(r#"{"seq":1,"at_ms":2,"host":"h","kind":"host_joined","reason":"r"}"#).unwrap();
        assert_eq!((e.kind, e.job, e.from), (EventKind::HostJoined, None, None));
    }
}
