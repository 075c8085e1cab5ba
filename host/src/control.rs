//! Requests to a job's control socket (the HTTP/JSON socket `mosvm run
//! --api-sock` and `mosvm receive --api-sock` serve), from the daemon.

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::UnixStream;

use crate::api::{MoveFigures, MoveProgress, SiteStats};
use crate::wire::{MoveOptions, Refusal, RefusalKind};

/// How long a move may take, start to acknowledgement.
pub const MOVE_LIMIT: Duration = Duration::from_secs(300);

/// The control socket's error body.
#[derive(Deserialize)]
struct ControlError {
    error: String,
    /// The job's own word for why (see vmm's `SendError::kind`).
    #[serde(default)]
    kind: Option<String>,
}

async fn request(sock: &Path, method: Method, path: &str, body: String) -> Result<(u16, Bytes), String> {
    let stream = UnixStream::connect(sock).await.map_err(|e| format!("{}: {e}", sock.display()))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, "mosvm")
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    drop(sender);
    let _ = conn.await;
    Ok((status, bytes))
}

/// Asks the job behind `sock` to move to `to` (a receiver's IP:PORT, or
/// "home"); the figures once the destination acknowledged.
/// Moves the job to `to`, presenting `ticket` if the destination gave one.
pub async fn migrate(
    sock: &Path,
    to: &str,
    opts: &MoveOptions,
    ticket: Option<&trust::Ticket>,
) -> Result<MoveFigures, Refusal> {
    let body = serde_json::json!({
        "to": to,
        "downtime_ms": opts.downtime_ms,
        "max_bandwidth_mbps": opts.max_bandwidth_mbps,
        "verify": opts.verify,
        "ticket": ticket.map(|t| t.to_hex()),
    })
    .to_string();
    let (status, bytes) = tokio::time::timeout(MOVE_LIMIT, request(sock, Method::PUT, "/migrate", body))
        .await
        .map_err(|_| Refusal::new(RefusalKind::Unreachable, format!("the move took longer than {MOVE_LIMIT:?}")))?
        .map_err(|e| Refusal::new(RefusalKind::Unreachable, format!("cannot reach the job's control socket {e}")))?;
    if status == 200 {
        return serde_json::from_slice(&bytes).map_err(|e| {
            Refusal::new(RefusalKind::Refused, format!("the job moved but its figures are unreadable: {e}"))
        });
    }
    let (message, said) = serde_json::from_slice::<ControlError>(&bytes)
        .map(|e| (e.error, e.kind))
        .unwrap_or_else(|_| (String::from_utf8_lossy(&bytes).chars().take(200).collect(), None));
    // The job says why; an older job only gives its HTTP status: 409
    // another move or snapshot is in progress (or the job is at home
    // already), 400 a malformed request, anything else the move failed
    // and the job runs on where it was.
    let kind = match (said.as_deref(), status) {
        (Some("busy"), _) | (None, 409) => RefusalKind::Busy,
        (Some("unmovable"), _) => RefusalKind::Unmovable,
        (Some("unreachable"), _) => RefusalKind::Unreachable,
        (None, 400) => RefusalKind::BadRequest,
        _ => RefusalKind::Refused,
    };
    Err(Refusal::new(kind, message))
}

/// How long a status question to a job's control socket may take.
const QUERY_LIMIT: Duration = Duration::from_secs(2);

async fn query<T: serde::de::DeserializeOwned>(sock: &Path, path: &str) -> Option<T> {
    let (status, bytes) =
        tokio::time::timeout(QUERY_LIMIT, request(sock, Method::GET, path, String::new())).await.ok()?.ok()?;
    if status != 200 {
        return None;
    }
    serde_json::from_slice(&bytes).ok()
}

/// The job's move in flight (`GET /progress`), if one is; None too when
/// the socket does not answer (the body is gone, or predates progress).
pub async fn progress(sock: &Path) -> Option<MoveProgress> {
    query::<Option<MoveProgress>>(sock, "/progress").await.flatten()
}

/// The remote site calls the body made (`GET /stats`).
pub async fn site_stats(sock: &Path) -> Option<SiteStats> {
    query(sock, "/stats").await
}

#[derive(Deserialize)]
struct Movable {
    movable: bool,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    why: Option<String>,
    /// The job's VMM presents a move's ticket (older ones do not say).
    #[serde(default)]
    tickets: bool,
}

/// Asks the job whether it could move now (`GET /movable`), so that a move
/// it would refuse at the stop starts no receiver and copies nothing. A
/// job that cannot say (an older body) is let try. Ok(whether the job's
/// VMM presents move tickets).
pub async fn movable(sock: &Path) -> Result<bool, Refusal> {
    match query::<Movable>(sock, "/movable").await {
        Some(m) if !m.movable && m.kind.as_deref() == Some("unmovable") => {
            Err(Refusal::new(RefusalKind::Unmovable, m.why.unwrap_or_else(|| "the job cannot move now".into())))
        }
        Some(m) if !m.movable => Err(Refusal::new(RefusalKind::Refused, m.why.unwrap_or_default())),
        Some(m) => Ok(m.tickets),
        None => Ok(false),
    }
}
