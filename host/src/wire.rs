//! Framing of everything hosts send each other, on UDP (one frame per
//! datagram) and on TCP (a stream of frames):
//!
//! ```text
//! magic "MV" | version u8 | kind u8 | length u32 LE | crc32c u32 LE | payload
//! ```
//!
//! The checksum covers version, kind, length and payload. Payloads are
//! postcard (SWIM messages are foca's own postcard encoding). A frame that
//! is short, oversized, of another version or kind, or fails its checksum is
//! refused as a whole: nothing of it reaches a decoder.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::membership::HostId;

pub const MAGIC: [u8; 2] = *b"MV";
/// Bumped on any incompatible change of the framing or of a payload.
pub const VERSION: u8 = 4;
/// The oldest version this host still reads: version 3 differs in that
/// `PrepareBody` had no `ticket`; version 2 also in that `Status` had no
/// `mode` and `Arrival` no `why`; version 1 also in that `PrepareBody` and
/// `MoveBody` had no `arrival` (see `upgrade`).
pub const OLDEST_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 12;
/// Largest SWIM payload (foca's `max_packet_size`): fits an Ethernet MTU.
pub const MAX_SWIM_PAYLOAD: usize = 1400;
/// Largest datagram payload of any kind.
pub const MAX_DATAGRAM_PAYLOAD: usize = 1400;
/// Largest frame payload on a TCP connection.
pub const MAX_STREAM_PAYLOAD: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A foca (SWIM) packet, UDP.
    Swim = 1,
    /// A host's `Status`, UDP.
    Status = 2,
    /// A host's `Leave`, UDP.
    Leave = 3,
    /// A `BalanceEnvelope` (a balancer message), UDP.
    Balance = 4,
    /// `Ping` on the TCP port.
    Ping = 16,
    /// `Pong`, the answer to `Ping`.
    Pong = 17,
    /// `PrepareBody`: start a receiver for a job's body here.
    PrepareBody = 18,
    /// `PrepareReply`, the answer to `PrepareBody`.
    BodyReady = 19,
    /// `MoveBody`: move a body this host runs (sent by the job's home).
    MoveBody = 20,
    /// `MoveReply`, the answer to `MoveBody` and `BalanceMove`.
    Moved = 21,
    /// `BalanceMove`: a balancer asks a job's home to move the job's body.
    BalanceMove = 22,
    /// `HostOp`: an operator, through another host, cordons, drains or
    /// reopens this one, or asks where its drain stands.
    HostOp = 23,
    /// `HostOpReply`, the answer to `HostOp`.
    HostReport = 24,
    /// `Overview`: what jobs does this home have, what moved lately?
    Overview = 25,
    /// `OverviewReply`, the answer to `Overview`.
    OverviewReply = 26,
    /// `Progress`: where does the move of this job's body stand?
    Progress = 27,
    /// `ProgressReply`, the answer to `Progress`.
    ProgressReply = 28,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Swim,
            2 => Kind::Status,
            3 => Kind::Leave,
            4 => Kind::Balance,
            16 => Kind::Ping,
            17 => Kind::Pong,
            18 => Kind::PrepareBody,
            19 => Kind::BodyReady,
            20 => Kind::MoveBody,
            21 => Kind::Moved,
            22 => Kind::BalanceMove,
            23 => Kind::HostOp,
            24 => Kind::HostReport,
            25 => Kind::Overview,
            26 => Kind::OverviewReply,
            27 => Kind::Progress,
            28 => Kind::ProgressReply,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("truncated frame: {have} of {need} bytes")]
    Truncated { have: usize, need: usize },
    #[error("not a mosvm frame (bad magic)")]
    BadMagic,
    #[error("frame version {0}, this host reads versions {OLDEST_VERSION} to {VERSION}")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame checksum mismatch")]
    Checksum,
    #[error("{0} bytes after the frame")]
    Trailing(usize),
    #[error("undecodable {kind:?} payload: {err}")]
    Payload { kind: Kind, err: postcard::Error },
    #[error("expected a {expected:?} frame, got {got:?}")]
    Unexpected { expected: Kind, got: Kind },
    #[error("peer connection: {0}")]
    Io(#[from] std::io::Error),
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[2..8]), payload)
}

/// Makes `frame`'s length and checksum match the bytes it holds (for the
/// fuzz harness: mutated payloads then reach the message decoders).
pub fn fix_checksum(frame: &mut [u8]) {
    if frame.len() < HEADER_LEN {
        return;
    }
    let len = (frame.len() - HEADER_LEN) as u32;
    frame[4..8].copy_from_slice(&len.to_le_bytes());
    let crc = checksum(&frame[..HEADER_LEN], &frame[HEADER_LEN..]);
    frame[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// One frame, header and payload.
pub fn encode(kind: Kind, payload: &[u8]) -> Vec<u8> {
    encode_version(VERSION, kind, payload)
}

fn encode_version(version: u8, kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(version);
    out.push(kind as u8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = checksum(&out, payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A frame of `kind` carrying `msg` in postcard.
pub fn encode_msg<T: Serialize>(kind: Kind, msg: &T) -> Vec<u8> {
    // Serializing our own plain structs into a Vec cannot fail.
    let payload = postcard::to_allocvec(msg).unwrap_or_default();
    encode(kind, &payload)
}

/// Checks a header; returns the kind and the payload length.
fn parse_header(h: &[u8; HEADER_LEN], max: usize) -> Result<(Kind, usize), WireError> {
    if h[..2] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if !(OLDEST_VERSION..=VERSION).contains(&h[2]) {
        return Err(WireError::Version(h[2]));
    }
    let kind = Kind::from_u8(h[3]).ok_or(WireError::UnknownKind(h[3]))?;
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    Ok((kind, len))
}

fn verify(h: &[u8; HEADER_LEN], payload: &[u8]) -> Result<(), WireError> {
    let want = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if checksum(h, payload) != want {
        return Err(WireError::Checksum);
    }
    Ok(())
}

/// A datagram holding exactly one frame (its payload upgraded to the
/// current version).
pub fn decode_datagram(buf: &[u8]) -> Result<(Kind, std::borrow::Cow<'_, [u8]>), WireError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Err(WireError::Truncated { have: buf.len(), need: HEADER_LEN });
    };
    let header: &[u8; HEADER_LEN] = header.try_into().map_err(|_| WireError::BadMagic)?;
    let (kind, len) = parse_header(header, MAX_DATAGRAM_PAYLOAD)?;
    let rest = &buf[HEADER_LEN..];
    if rest.len() < len {
        return Err(WireError::Truncated { have: buf.len(), need: HEADER_LEN + len });
    }
    if rest.len() > len {
        return Err(WireError::Trailing(rest.len() - len));
    }
    verify(header, rest)?;
    if header[2] == VERSION {
        return Ok((kind, std::borrow::Cow::Borrowed(rest)));
    }
    let mut owned = rest.to_vec();
    upgrade(header[2], kind, &mut owned);
    Ok((kind, std::borrow::Cow::Owned(owned)))
}

/// Decodes a postcard payload, refusing trailing bytes.
pub fn decode_msg<T: DeserializeOwned>(kind: Kind, payload: &[u8]) -> Result<T, WireError> {
    let (msg, rest) = postcard::take_from_bytes(payload).map_err(|err| WireError::Payload { kind, err })?;
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    Ok(msg)
}

/// Reads one frame from a stream; None on a clean end of stream before a
/// frame starts.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<(Kind, Vec<u8>)>, WireError> {
    let mut header = [0u8; HEADER_LEN];
    let mut have = 0;
    while have < HEADER_LEN {
        match r.read(&mut header[have..]).await? {
            0 if have == 0 => return Ok(None),
            0 => return Err(WireError::Truncated { have, need: HEADER_LEN }),
            n => have += n,
        }
    }
    let (kind, len) = parse_header(&header, MAX_STREAM_PAYLOAD)?;
    // Grown as the bytes come, not as the header claims: 256 connections
    // announcing 1 MiB each and sending nothing cost nothing.
    let mut payload = vec![0u8; len.min(4096)];
    let mut got = 0;
    while got < len {
        if got == payload.len() {
            payload.resize(len.min(got * 2), 0);
        }
        match r.read(&mut payload[got..]).await? {
            0 => return Err(WireError::Truncated { have: HEADER_LEN + got, need: HEADER_LEN + len }),
            n => got += n,
        }
    }
    verify(&header, &payload)?;
    upgrade(header[2], kind, &mut payload);
    Ok(Some((kind, payload)))
}

/// Makes a payload of an older version read as the current one. Postcard
/// lays a struct out as its fields in order, and each change appended a
/// field at the end: a version-1 `PrepareBody` or `MoveBody` followed by
/// an encoded `Arrival::default()` is the same message now; a version-2
/// one (or `BalanceMove`), whose `Arrival` lacks `why`, takes an encoded
/// `None`; an older `Status` takes `HostMode::Normal`; a `PrepareBody`
/// older than version 4 asks for no ticket.
fn upgrade(version: u8, kind: Kind, payload: &mut Vec<u8>) {
    let encoded = |v: &dyn erased::Encode| v.encode();
    match (version, kind) {
        (1, Kind::PrepareBody | Kind::MoveBody) => payload.extend(encoded(&Arrival::default())),
        (2, Kind::PrepareBody | Kind::MoveBody | Kind::BalanceMove) => {
            payload.extend(encoded(&Option::<crate::api::MoveWhy>::None))
        }
        (1 | 2, Kind::Status) => payload.extend(encoded(&crate::api::HostMode::Normal)),
        _ => {}
    }
    if version < 4 && kind == Kind::PrepareBody {
        payload.extend(encoded(&false));
    }
}

mod erased {
    /// Postcard bytes of a value of any type, behind a trait object.
    pub trait Encode {
        fn encode(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> Vec<u8> {
            postcard::to_allocvec(self).unwrap_or_default()
        }
    }
}

pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> Result<(), WireError> {
    w.write_all(frame).await?;
    w.flush().await?;
    Ok(())
}

/// What a host says about itself every status period (UDP, to every active
/// member).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub from: HostId,
    /// Increases with every status; older ones are ignored.
    pub seq: u64,
    pub mem_available: u64,
    pub mem_total: u64,
    /// Jobs this host is home to, counted by the host their body runs on.
    pub running: Vec<(String, u32)>,
    /// Whether it takes new jobs (version 3).
    pub mode: crate::api::HostMode,
}

/// Sent to every active member before leaving the cluster, so they can
/// tell a clean exit from a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave {
    pub from: HostId,
}

/// `Ping` on the TCP port: is this a mosvm host, and which?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub id: HostId,
}

/// A job, cluster-wide: its home's name and its id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobRef {
    pub home: String,
    pub id: u64,
}

impl std::fmt::Display for JobRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.home, self.id)
    }
}

/// Why a host would not do what a peer asked, for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalKind {
    /// The sender is not an active member of this host's cluster.
    NotMember,
    /// This host takes no new bodies.
    Cordoned,
    /// Not enough free memory for the job here.
    NoMemory,
    /// The body process could not be started.
    CannotSpawn,
    /// No such job (or no body of it) here.
    NotFound,
    /// A move of this job is in progress.
    Busy,
    /// The job or its destination refused the move.
    Refused,
    /// A host or the job's control socket could not be reached.
    Unreachable,
    /// The request makes no sense (malformed, or the move goes nowhere).
    BadRequest,
    /// The job holds what cannot move (a socket, a child process).
    Unmovable,
    /// Its user pinned the job (`run --stay`): only an operator moves it.
    Pinned,
    /// The job has ended.
    Ended,
}

impl RefusalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::NotMember => "not_member",
            RefusalKind::Cordoned => "cordoned",
            RefusalKind::NoMemory => "no_memory",
            RefusalKind::CannotSpawn => "cannot_spawn",
            RefusalKind::NotFound => "not_found",
            RefusalKind::Busy => "busy",
            RefusalKind::Refused => "refused",
            RefusalKind::Unmovable => "unmovable",
            RefusalKind::Unreachable => "unreachable",
            RefusalKind::BadRequest => "bad_request",
            RefusalKind::Pinned => "pinned",
            RefusalKind::Ended => "ended",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

impl Refusal {
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Refusal {
        Refusal { kind, message: message.into() }
    }
}

/// What the balancer of a job's next host should know about it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Arrival {
    /// The destination's balancer accepted this move (it reserved room).
    pub balanced: bool,
    /// Seconds the job has lived.
    pub age_s: f64,
    /// Pinned by its user (`run --stay`).
    pub stay: bool,
    /// Hosts (balancer ids) the job left recently, and how many seconds
    /// ago: it does not go back there within the cool-down.
    pub left: Vec<(u64, f64)>,
    /// Its dirty rate as its last move measured it, bytes per second.
    pub dirty_rate: f64,
    /// Its resident memory when the move was decided, bytes (0: unknown);
    /// with the move's figures it gives the dirty rate.
    pub resident_bytes: u64,
    /// What the move is for (version 3; None from older hosts).
    pub why: Option<crate::api::MoveWhy>,
}

/// Asks a host to start a `mosvm receive` for one job's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepareBody {
    pub from: HostId,
    pub job: JobRef,
    /// Guest memory of the job: the receiver refuses a larger one.
    pub mem_bytes: u64,
    pub owner_uid: u32,
    pub arrival: Arrival,
    /// Prepare the body for this move only: the answer carries a ticket
    /// the stream must present (version 4; the job's VMM must know how).
    pub ticket: bool,
}

/// The answer to `PrepareBody`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrepareReply {
    /// The receiver listens at `addr` (IP:PORT) for the migration stream.
    BodyReady {
        addr: String,
    },
    Refused(Refusal),
    /// The receiver listens at `addr` for the stream that presents
    /// `ticket` (asked for with `PrepareBody::ticket`), and no other.
    Ticketed {
        addr: String,
        ticket: [u8; trust::TICKET_LEN],
    },
}

/// Where a body should go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// Back to the job's deputy.
    Home,
    /// To the host with this name and peer address.
    Host { name: String, addr: std::net::SocketAddr },
}

/// Tuning of one move, as `mosvm migrate` takes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MoveOptions {
    pub downtime_ms: Option<f64>,
    pub max_bandwidth_mbps: Option<f64>,
    pub verify: bool,
}

/// Sent by a job's home to the host running its body: move it on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveBody {
    pub from: HostId,
    pub job: JobRef,
    pub to: Target,
    pub opts: MoveOptions,
    pub arrival: Arrival,
}

/// Sent by the host running a job's body, whose balancer wants it moved,
/// to the job's home: move it to `to` (the home keeps the record and
/// refuses a pinned job). Answered with a `MoveReply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalanceMove {
    pub from: HostId,
    pub job: JobRef,
    /// The destination host's name (its balancer accepted the job).
    pub to: String,
    pub why: crate::api::MoveWhy,
    pub reason: String,
    pub arrival: Arrival,
}

/// A balancer message (`balancer::wire` bytes) with who sent it: a member's
/// name, the start time of its daemon and a sequence number, so that a
/// replayed or reordered datagram is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceEnvelope {
    pub name: String,
    pub boot: u64,
    pub seq: u64,
    pub msg: Vec<u8>,
}

/// What an operator asks of a host through another (`HostOp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    SetMode(crate::api::HostMode),
    Report,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostOp {
    pub from: HostId,
    pub op: Operation,
}

/// The answer to `HostOp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HostOpReply {
    Report(crate::api::DrainReport),
    Refused(Refusal),
}

/// Asks a home for its running jobs and latest moves (`Overview`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overview {
    pub from: HostId,
    /// How many of the latest moves to include.
    pub moves: u32,
}

/// The answer to `Overview`: public fields only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverviewReply {
    pub jobs: Vec<crate::api::JobView>,
    pub moves: Vec<crate::api::Event>,
}

/// Asks the host running a job's body how its move goes (`Progress`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub from: HostId,
    pub job: JobRef,
}

/// The answer to `Progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressReply {
    pub progress: Option<crate::api::MoveProgress>,
}

/// The answer to `MoveBody`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MoveReply {
    Moved(crate::api::MoveFigures),
    Refused(Refusal),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let f = encode(Kind::Status, b"hello");
        let (k, p) = decode_datagram(&f).unwrap();
        assert_eq!((k, &*p), (Kind::Status, &b"hello"[..]));
        assert!(matches!(decode_datagram(&f[..f.len() - 1]), Err(WireError::Truncated { .. })));
        assert!(matches!(decode_datagram(&f[..5]), Err(WireError::Truncated { .. })));
        assert!(matches!(decode_datagram(b""), Err(WireError::Truncated { .. })));
        let mut extra = f.clone();
        extra.push(0);
        assert!(matches!(decode_datagram(&extra), Err(WireError::Trailing(1))));
        for i in 0..f.len() {
            let mut bad = f.clone();
            bad[i] ^= 0x04;
            assert!(decode_datagram(&bad).is_err(), "a flipped bit at {i} went through");
        }
        let mut v = f.clone();
        v[2] = 9;
        assert!(matches!(decode_datagram(&v), Err(WireError::Version(9))));
        let mut k = f.clone();
        k[3] = 99;
        assert!(matches!(decode_datagram(&k), Err(WireError::UnknownKind(99))));
        let big = encode(Kind::Swim, &vec![0u8; MAX_DATAGRAM_PAYLOAD + 1]);
        assert!(matches!(decode_datagram(&big), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn garbage_never_decodes() {
        // A cheap deterministic generator: any byte string must be refused
        // without a panic.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for n in 0..2000usize {
            let mut buf = Vec::with_capacity(n % 200);
            for _ in 0..n % 200 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            if n % 3 == 0 && buf.len() >= 2 {
                buf[..2].copy_from_slice(&MAGIC);
            }
            assert!(decode_datagram(&buf).is_err());
            let _ = decode_msg::<Status>(Kind::Status, &buf);
        }
    }

    #[test]
    fn body_messages_round_trip() {
        let from = HostId { name: "a".into(), addr: "127.0.0.2:7077".parse().unwrap(), incarnation: 1 };
        let p = PrepareBody {
            from: from.clone(),
            job: JobRef { home: "a".into(), id: 7 },
            mem_bytes: 1 << 28,
            owner_uid: 0,
            arrival: Arrival {
                balanced: true,
                age_s: 3.5,
                stay: false,
                left: vec![(42, 1.5)],
                dirty_rate: 1e6,
                resident_bytes: 1 << 20,
                why: Some(crate::api::MoveWhy::Drain),
            },
            ticket: true,
        };
        let f = encode_msg(Kind::PrepareBody, &p);
        let (k, payload) = decode_datagram(&f).unwrap();
        assert_eq!(decode_msg::<PrepareBody>(k, &payload).unwrap(), p);
        for r in [
            PrepareReply::Refused(Refusal::new(RefusalKind::NoMemory, "no")),
            PrepareReply::Ticketed { addr: "127.0.0.3:4000".into(), ticket: *trust::Ticket::new().bytes() },
        ] {
            let f = encode_msg(Kind::BodyReady, &r);
            let (k, payload) = decode_datagram(&f).unwrap();
            assert_eq!(decode_msg::<PrepareReply>(k, &payload).unwrap(), r);
        }
        let m = MoveBody {
            from,
            job: JobRef { home: "a".into(), id: 7 },
            to: Target::Host { name: "c".into(), addr: "127.0.0.4:7077".parse().unwrap() },
            opts: MoveOptions { downtime_ms: Some(5.0), max_bandwidth_mbps: None, verify: true },
            arrival: Arrival::default(),
        };
        let payload = postcard::to_allocvec(&m).unwrap();
        assert_eq!(decode_msg::<MoveBody>(Kind::MoveBody, &payload).unwrap(), m);
        // Every truncation of a valid payload is refused, never a panic.
        for n in 0..payload.len() {
            assert!(decode_msg::<MoveBody>(Kind::MoveBody, &payload[..n]).is_err());
        }
    }

    #[tokio::test]
    async fn version_1_frames_are_read() {
        // The version-1 shapes, as a previous release sends them.
        #[derive(Serialize)]
        struct PrepareBodyV1 {
            from: HostId,
            job: JobRef,
            mem_bytes: u64,
            owner_uid: u32,
        }
        #[derive(Serialize)]
        struct MoveBodyV1 {
            from: HostId,
            job: JobRef,
            to: Target,
            opts: MoveOptions,
        }
        let from = HostId { name: "a".into(), addr: "127.0.0.2:7077".parse().unwrap(), incarnation: 1 };
        let job = JobRef { home: "a".into(), id: 7 };
        let v1 = |kind, payload: Vec<u8>| encode_version(1, kind, &payload);
        let prep = PrepareBodyV1 { from: from.clone(), job: job.clone(), mem_bytes: 1 << 28, owner_uid: 5 };
        let mut stream = v1(Kind::PrepareBody, postcard::to_allocvec(&prep).unwrap());
        let opts = MoveOptions { downtime_ms: Some(5.0), max_bandwidth_mbps: None, verify: false };
        let mv = MoveBodyV1 { from: from.clone(), job: job.clone(), to: Target::Home, opts: opts.clone() };
        stream.extend(v1(Kind::MoveBody, postcard::to_allocvec(&mv).unwrap()));
        let mut r = &stream[..];
        let (k, p) = read_frame(&mut r).await.unwrap().unwrap();
        let prep: PrepareBody = decode_msg(k, &p).unwrap();
        assert_eq!(
            (prep.mem_bytes, prep.owner_uid, prep.arrival, prep.ticket),
            (1 << 28, 5, Arrival::default(), false)
        );
        let (k, p) = read_frame(&mut r).await.unwrap().unwrap();
        let mv: MoveBody = decode_msg(k, &p).unwrap();
        assert_eq!((mv.to, mv.opts, mv.arrival), (Target::Home, opts, Arrival::default()));
        // Version 2: an arrival without its why.
        #[derive(Serialize)]
        struct ArrivalV2 {
            balanced: bool,
            age_s: f64,
            stay: bool,
            left: Vec<(u64, f64)>,
            dirty_rate: f64,
            resident_bytes: u64,
        }
        #[derive(Serialize)]
        struct BalanceMoveV2 {
            from: HostId,
            job: JobRef,
            to: String,
            why: crate::api::MoveWhy,
            reason: String,
            arrival: ArrivalV2,
        }
        let a2 = ArrivalV2 {
            balanced: true,
            age_s: 2.0,
            stay: true,
            left: vec![(9, 1.0)],
            dirty_rate: 5.0,
            resident_bytes: 7,
        };
        let bm = BalanceMoveV2 {
            from: from.clone(),
            job: job.clone(),
            to: "c".into(),
            why: crate::api::MoveWhy::Load,
            reason: "r".into(),
            arrival: a2,
        };
        let f = encode_version(2, Kind::BalanceMove, &postcard::to_allocvec(&bm).unwrap());
        let (k, p) = read_frame(&mut &f[..]).await.unwrap().unwrap();
        let bm: BalanceMove = decode_msg(k, &p).unwrap();
        let want = Arrival {
            balanced: true,
            age_s: 2.0,
            stay: true,
            left: vec![(9, 1.0)],
            dirty_rate: 5.0,
            resident_bytes: 7,
            why: None,
        };
        assert_eq!((bm.to.as_str(), bm.arrival), ("c", want));
        // Older status datagrams read with the mode they had: normal.
        #[derive(Serialize)]
        struct StatusV2 {
            from: HostId,
            seq: u64,
            mem_available: u64,
            mem_total: u64,
            running: Vec<(String, u32)>,
        }
        let old =
            StatusV2 { from: from.clone(), seq: 3, mem_available: 1, mem_total: 2, running: vec![("a".into(), 1)] };
        let st = Status {
            from,
            seq: 3,
            mem_available: 1,
            mem_total: 2,
            running: vec![("a".into(), 1)],
            mode: crate::api::HostMode::Normal,
        };
        for v in [1, 2] {
            let d = encode_version(v, Kind::Status, &postcard::to_allocvec(&old).unwrap());
            let (k, p) = decode_datagram(&d).unwrap();
            assert_eq!(decode_msg::<Status>(k, &p).unwrap(), st, "a version-{v} status");
        }
        // Version 3: a PrepareBody that asks for no ticket.
        #[derive(Serialize)]
        struct PrepareBodyV3 {
            from: HostId,
            job: JobRef,
            mem_bytes: u64,
            owner_uid: u32,
            arrival: Arrival,
        }
        let arrival = Arrival { balanced: true, why: Some(crate::api::MoveWhy::Drain), ..Arrival::default() };
        let v3 =
            PrepareBodyV3 { from: st.from.clone(), job, mem_bytes: 1 << 30, owner_uid: 9, arrival: arrival.clone() };
        let f = encode_version(3, Kind::PrepareBody, &postcard::to_allocvec(&v3).unwrap());
        let (k, p) = read_frame(&mut &f[..]).await.unwrap().unwrap();
        let prep: PrepareBody = decode_msg(k, &p).unwrap();
        assert_eq!((prep.mem_bytes, prep.owner_uid, prep.arrival, prep.ticket), (1 << 30, 9, arrival, false));
        // Versions this host does not know are refused.
        for v in [0, VERSION + 1] {
            let d = encode_version(v, Kind::Status, &postcard::to_allocvec(&st).unwrap());
            assert!(matches!(decode_datagram(&d), Err(WireError::Version(x)) if x == v));
        }
    }

    #[test]
    fn balance_messages_round_trip() {
        let e = BalanceEnvelope { name: "b".into(), boot: 9, seq: 3, msg: vec![b'B', 1, 4, 0, 0] };
        let f = encode_msg(Kind::Balance, &e);
        assert!(f.len() < MAX_DATAGRAM_PAYLOAD);
        let (k, payload) = decode_datagram(&f).unwrap();
        assert_eq!((k, decode_msg::<BalanceEnvelope>(k, &payload).unwrap()), (Kind::Balance, e));
        let m = BalanceMove {
            from: HostId { name: "b".into(), addr: "127.0.0.3:7077".parse().unwrap(), incarnation: 1 },
            job: JobRef { home: "a".into(), id: 2 },
            to: "c".into(),
            why: crate::api::MoveWhy::Balancer,
            reason: "load".into(),
            arrival: Arrival { balanced: true, age_s: 1.0, ..Arrival::default() },
        };
        let payload = postcard::to_allocvec(&m).unwrap();
        assert_eq!(decode_msg::<BalanceMove>(Kind::BalanceMove, &payload).unwrap(), m);
        for n in 0..payload.len() {
            assert!(decode_msg::<BalanceMove>(Kind::BalanceMove, &payload[..n]).is_err());
        }
    }

    #[tokio::test]
    async fn stream_frames() {
        let mut data = encode_msg(Kind::Ping, &Ping { from: "a".into() });
        data.extend(encode(Kind::Ping, b""));
        let mut r = &data[..];
        let (k, p) = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!(k, Kind::Ping);
        assert_eq!(decode_msg::<Ping>(k, &p).unwrap().from, "a");
        assert_eq!(read_frame(&mut r).await.unwrap().unwrap().1.len(), 0);
        assert!(read_frame(&mut r).await.unwrap().is_none());
        let mut short = &data[..7];
        assert!(matches!(read_frame(&mut short).await, Err(WireError::Truncated { .. })));
        let mut huge = encode(Kind::Ping, b"");
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read_frame(&mut &huge[..]).await, Err(WireError::TooLarge { .. })));
    }
}
