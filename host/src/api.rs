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
//! | PUT  /v1/hosts/{name}/mode   | `SetMode`        | `DrainReport`   |
//! | GET  /v1/hosts/{name}/drain  |                  | `DrainReport`   |
//! | GET  /v1/cluster             |                  | `ClusterView`   |
//! | GET  /v1/jobs/{id}/progress  |                  | `Option<MoveProgress>` |
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
    /// Whether it takes new jobs (as it last said; normal until then).
    #[serde(default)]
    pub mode: HostMode,
}

/// What a host takes: anything, no new jobs (cordoned, an operator's
/// word), or it is emptying itself of bodies (draining: cordoned, and its
/// balancer moves every body away). Kept in the host's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostMode {
    #[default]
    Normal,
    Cordoned,
    Draining,
}

impl HostMode {
    pub fn as_str(self) -> &'static str {
        match self {
            HostMode::Normal => "normal",
            HostMode::Cordoned => "cordoned",
            HostMode::Draining => "draining",
        }
    }

    pub fn parse(s: &str) -> Option<HostMode> {
        [HostMode::Normal, HostMode::Cordoned, HostMode::Draining].into_iter().find(|m| m.as_str() == s)
    }

    /// It takes no new bodies and starts no new detached jobs.
    pub fn closed(self) -> bool {
        self != HostMode::Normal
    }
}

/// `PUT /v1/hosts/{name}/mode` (root only): cordon, drain or reopen a host,
/// this one or any member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetMode {
    pub mode: HostMode,
}

/// Where a move in flight stands, as the body's VMM reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovePhase {
    /// Connecting to the destination, waiting for it to accept.
    #[default]
    Connecting,
    /// Copying memory while the job runs (pre-copy rounds).
    Copying,
    /// The job is stopped: the last pages and its state are going.
    Stopped,
}

/// A move in flight (`GET /v1/jobs/{id}/progress`, and drain reports).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MoveProgress {
    /// Where the body goes: the receiver's address.
    pub to: String,
    pub phase: MovePhase,
    /// The pre-copy round under way, from 1.
    pub round: u32,
    /// Pages to send in this round (the first: all resident memory).
    pub round_pages: u64,
    /// Of which sent so far.
    pub round_sent: u64,
    /// Pages and bytes sent since the move began.
    pub pages_sent: u64,
    pub bytes_sent: u64,
    /// Resident pages when the move began: what the first round carries.
    pub resident_pages: u64,
    pub elapsed_ms: f64,
    /// Bytes per second over the move so far, in MB/s.
    pub rate_mbps: f64,
}

/// The remote site calls a body made since it arrived, by kind (a body's
/// control socket, `GET /stats`; the daemon adds them up for `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteStats {
    pub calls: Vec<SiteCallStats>,
}

/// One kind of site call (a message name, e.g. "read", "openat").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteCallStats {
    pub kind: String,
    pub count: u64,
    /// Total time waiting for the deputy's answers, seconds.
    pub seconds: f64,
    /// Cumulative counts: calls answered within each bound, seconds
    /// (Prometheus `le` buckets, ascending, without +Inf).
    pub buckets: Vec<(f64, u64)>,
}

/// A body still on a host being drained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BodyStatus {
    /// "HOME-ID".
    pub job: String,
    pub program: String,
    pub mem_bytes: u64,
    /// Pinned by its user: a drain moves it anyway (home if it can).
    pub stay: bool,
    /// Its move in flight, if one is.
    pub moving: Option<MoveProgress>,
    /// The destination of that move, if known (a host name).
    pub moving_to: Option<String>,
    /// Why it has not left yet: the last refusal or failure, or what the
    /// balancer is waiting for.
    pub waiting: Option<String>,
}

/// A body a drain moved away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainedBody {
    pub job: String,
    pub to: String,
    pub at_ms: u64,
    pub total_ms: f64,
    pub downtime_ms: f64,
}

/// A job whose home is the drained host: its deputy stays there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HomedJob {
    pub job: String,
    pub program: String,
    /// Where its body runs.
    pub host: String,
}

/// Where a host's drain stands (`GET /v1/hosts/{name}/drain`, and the
/// answer to a mode change). `drained` is true only once no body runs on
/// the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainReport {
    pub host: String,
    pub mode: HostMode,
    /// When the drain began (Unix epoch milliseconds), while draining.
    pub started_ms: Option<u64>,
    /// No body runs on the host.
    pub drained: bool,
    /// The bodies still there.
    pub bodies: Vec<BodyStatus>,
    /// The bodies the drain moved away, oldest first.
    pub moved: Vec<DrainedBody>,
    /// Running jobs whose home is the host (their deputies serve them
    /// there until they end).
    pub homed: Vec<HomedJob>,
    /// The balancer's last word on the drain.
    pub note: String,
}

/// `GET /v1/cluster`: the cluster as this host sees it now, with the
/// jobs of every home that answered (public fields only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub hosts: Vec<HostView>,
    /// Running and moving jobs of every home that answered.
    pub jobs: Vec<JobView>,
    /// The latest moves and failed moves those homes recorded, newest first.
    pub moves: Vec<Event>,
    /// Alive hosts that did not answer in time.
    pub unanswered: Vec<String>,
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
    /// False when the destination's acknowledgement was lost after it
    /// had claimed the job: the move happened all the same.
    #[serde(default = "yes")]
    pub acknowledged: bool,
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

fn yes() -> bool {
    true
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
    /// The caller's resource limits (resource, soft, hard), which the job
    /// gets as an attached one would; never above the daemon's own.
    #[serde(default)]
    pub limits: Vec<(u32, u64, u64)>,
}

/// Resource numbers a job takes from its caller (RLIMIT_CPU ..
/// RLIMIT_RTTIME).
pub const RLIMITS: u32 = 16;

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
    /// This host was cordoned, drained or reopened.
    Mode,
    /// Something the operator should hear about a job (`JobNotice`).
    Notice,
}

/// What a job's deputy tells its daemon about the job, for the operator
/// (`POST /v1/jobs/{id}/notice`); recorded as a `notice` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobNotice {
    /// The job made a system call mosvm does not provide (it got ENOSYS).
    UnsupportedSyscall {
        nr: u64,
        #[serde(default)]
        name: Option<String>,
    },
    /// The job's deputy refused a connection: a stranger or a stale body.
    Refused {
        #[serde(default)]
        from: Option<String>,
        why: String,
    },
}

impl std::fmt::Display for JobNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobNotice::UnsupportedSyscall { nr, name: Some(name) } => {
                write!(f, "unsupported system call {name} ({nr}): the job got ENOSYS")
            }
            JobNotice::UnsupportedSyscall { nr, name: None } => {
                write!(f, "unknown system call {nr}: the job got ENOSYS")
            }
            JobNotice::Refused { from: Some(a), why } => write!(f, "its deputy refused a connection from {a}: {why}"),
            JobNotice::Refused { from: None, why } => write!(f, "its deputy refused a connection: {why}"),
        }
    }
}

impl EventKind {
    pub const ALL: [EventKind; 11] = [
        EventKind::Moved,
        EventKind::MoveFailed,
        EventKind::Refused,
        EventKind::Skipped,
        EventKind::Arrived,
        EventKind::HostJoined,
        EventKind::HostFailed,
        EventKind::HostLeft,
        EventKind::Lost,
        EventKind::Mode,
        EventKind::Notice,
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
            EventKind::Mode => "mode",
            EventKind::Notice => "notice",
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

/// A job process's TLS credentials, issued by its host (`POST
/// /v1/credentials`, and on a body's stdin): its certificate, by the
/// host's job issuer, and key, and the cluster's CA.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub ca_pem: String,
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { .. }")
    }
}

impl From<trust::JobCredentials> for Credentials {
    fn from(c: trust::JobCredentials) -> Credentials {
        Credentials { ca_pem: c.ca_pem, chain_pem: c.chain_pem, key_pem: c.key_pem }
    }
}

impl From<Credentials> for trust::JobCredentials {
    fn from(c: Credentials) -> trust::JobCredentials {
        trust::JobCredentials { ca_pem: c.ca_pem, chain_pem: c.chain_pem, key_pem: c.key_pem }
    }
}

/// The answer to `POST /v1/credentials`: none from a host that runs
/// `--insecure` (its jobs' links are plain too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsReply {
    pub credentials: Option<Credentials>,
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
    /// Where Prometheus metrics are served (as bound), if they are.
    #[serde(default)]
    pub metrics: Option<String>,
    /// Whether peer connections are mutual TLS (false: `--insecure`).
    #[serde(default)]
    pub tls: bool,
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

    /// A job of the previous version reports no `acknowledged`: its moves
    /// were all acknowledged.
    #[test]
    fn figures_of_the_previous_version_still_parse() {
        let old = r#"{"result":"ok","to":"127.0.0.3:1","total_ms":9.0,"downtime_ms":1.5,"rounds":1,
            "pages_sent":29,"bytes_sent":131239,"zero_pages_skipped":262119,"bandwidth_mbps":214.0,
            "path":"precopy","max_throttle_percent":0,"final_pages":4,"stop_to_state_sent_ms":0.4,
            "receiver_restore_ms":0.4}"#;
        let f: MoveFigures = serde_json::from_str(old).unwrap();
        assert!(f.acknowledged);
        let lost: MoveFigures = serde_json::from_str(&old.replacen('{', r#"{"acknowledged":false,"#, 1)).unwrap();
        assert!(!lost.acknowledged);
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
