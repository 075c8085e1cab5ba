//! A typed client of the daemon's API (HTTP/JSON over its Unix socket),
//! async (`Client`) or blocking (`BlockingClient`, for commands).

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use crate::api::{
    ApiError, ClusterView, Cordon, CredentialsReply, DetachedJob, DrainReport, Event, HostMode, HostView, JobDetail,
    JobNotice, JobView, LogChunk, MigrateRequest, MigrateResult, MoveProgress, NewJob, NewMove, SetMode, SignalRequest,
    StateChange, PREFIX,
};
use crate::config::DEFAULT_API_SOCK;

/// How long one call may take.
const CALL_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the mosvm host daemon at {path}: {err} (is `mosvm host` running? --sock or MOSVM_SOCK name another socket)")]
    Connect { path: PathBuf, err: std::io::Error },
    #[error("talking to the daemon: {0}")]
    Http(#[from] hyper::Error),
    #[error("the daemon did not answer within {0:?}")]
    Timeout(Duration),
    /// The daemon refused the request; `kind` says why.
    #[error("{0}")]
    Api(ApiError),
    #[error("unexpected answer from the daemon (HTTP {status}): {detail}")]
    Protocol { status: u16, detail: String },
    #[error("{0}")]
    Runtime(std::io::Error),
}

/// The socket a command talks to: `flag`, else `MOSVM_SOCK`, else the
/// default.
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("MOSVM_SOCK") {
        Some(p) if !p.is_empty() => p.into(),
        _ => DEFAULT_API_SOCK.into(),
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    sock: PathBuf,
}

fn query_all(all: bool) -> &'static str {
    if all {
        "?all=true"
    } else {
        "?all=false"
    }
}

impl Client {
    pub fn new(sock: impl Into<PathBuf>) -> Client {
        Client { sock: sock.into() }
    }

    pub fn sock(&self) -> &Path {
        &self.sock
    }

    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, ClientError> {
        self.call_within(CALL_LIMIT, method, path, body).await
    }

    async fn call_within<B: Serialize, R: DeserializeOwned>(
        &self,
        limit: Duration,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, ClientError> {
        tokio::time::timeout(limit, self.call_inner(method, path, body))
            .await
            .unwrap_or(Err(ClientError::Timeout(limit)))
    }

    async fn call_inner<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, ClientError> {
        let stream = UnixStream::connect(&self.sock)
            .await
            .map_err(|err| ClientError::Connect { path: self.sock.clone(), err })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let payload = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Protocol { status: 0, detail: e.to_string() })?,
            None => Vec::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("{PREFIX}{path}"))
            .header(HOST, "mosvm")
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| ClientError::Protocol { status: 0, detail: e.to_string() })?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        drop(sender);
        let _ = conn.await;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Protocol { status: status.as_u16(), detail: e.to_string() });
        }
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(e) => Err(ClientError::Api(e)),
            Err(_) => Err(ClientError::Protocol {
                status: status.as_u16(),
                detail: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            }),
        }
    }

    pub async fn hosts(&self) -> Result<Vec<HostView>, ClientError> {
        self.call::<(), _>(Method::GET, "/hosts", None).await
    }

    pub async fn jobs(&self, all: bool) -> Result<Vec<JobView>, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/jobs{}", query_all(all)), None).await
    }

    pub async fn job(&self, id: u64) -> Result<JobDetail, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/jobs/{id}"), None).await
    }

    /// Registers a job whose deputy is the calling process.
    /// Credentials for a job process's links (None: the host is plain).
    pub async fn credentials(&self) -> Result<CredentialsReply, ClientError> {
        self.call::<(), _>(Method::POST, "/credentials", None).await
    }

    pub async fn register(&self, job: &NewJob) -> Result<JobView, ClientError> {
        self.call(Method::POST, "/jobs", Some(job)).await
    }

    pub async fn set_state(&self, id: u64, change: &StateChange) -> Result<JobView, ClientError> {
        self.call(Method::PUT, &format!("/jobs/{id}/state"), Some(change)).await
    }

    /// Tells the daemon something the operator should hear about job `id`.
    pub async fn notice(&self, id: u64, n: &JobNotice) -> Result<JobView, ClientError> {
        self.call(Method::POST, &format!("/jobs/{id}/notice"), Some(n)).await
    }

    pub async fn add_move(&self, id: u64, mv: &NewMove) -> Result<JobView, ClientError> {
        self.call(Method::POST, &format!("/jobs/{id}/moves"), Some(mv)).await
    }

    /// Moves the job's body (waits for the move to end).
    pub async fn migrate(&self, id: u64, req: &MigrateRequest) -> Result<MigrateResult, ClientError> {
        // The daemon gives up on a move after control::MOVE_LIMIT; leave it
        // the time to say so.
        let limit = crate::control::MOVE_LIMIT + Duration::from_secs(30);
        self.call_within(limit, Method::POST, &format!("/jobs/{id}/migrate"), Some(req)).await
    }

    pub async fn signal(&self, id: u64, signal: i32) -> Result<JobView, ClientError> {
        self.call(Method::POST, &format!("/jobs/{id}/signal"), Some(&SignalRequest { signal })).await
    }

    /// The job once it has ended, or as it is after `timeout` (at most
    /// `WAIT_LIMIT`).
    pub async fn wait(&self, id: u64, timeout: Duration) -> Result<JobView, ClientError> {
        let ms = timeout.min(WAIT_LIMIT).as_millis();
        self.call_within(timeout + CALL_LIMIT, Method::GET, &format!("/jobs/{id}/wait?timeout_ms={ms}"), None::<&()>)
            .await
    }

    pub async fn logs(&self, id: u64, out: u64, err: u64) -> Result<LogChunk, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/jobs/{id}/logs?out={out}&err={err}"), None).await
    }

    /// Whether this host takes new bodies (root only).
    pub async fn cordon(&self, cordoned: bool) -> Result<Cordon, ClientError> {
        self.call(Method::PUT, "/cordon", Some(&Cordon { cordoned })).await
    }

    /// Starts a detached job as the caller.
    pub async fn detach(&self, job: &DetachedJob) -> Result<JobView, ClientError> {
        self.call(Method::POST, "/jobs/detached", Some(job)).await
    }

    /// At most `limit` events newer than `after` (1 to `api::EVENTS_MAX`),
    /// oldest first; when there are none yet, the daemon waits up to
    /// `wait` (at most `WAIT_LIMIT`) for one.
    pub async fn events(&self, after: u64, limit: usize, wait: Duration) -> Result<Vec<Event>, ClientError> {
        let wait = wait.min(WAIT_LIMIT);
        let path = format!("/events?after={after}&limit={limit}&wait_ms={}", wait.as_millis());
        self.call_within(wait + CALL_LIMIT, Method::GET, &path, None::<&()>).await
    }

    /// The newest `n` events (at most `api::EVENTS_MAX`), oldest first.
    pub async fn last_events(&self, n: usize) -> Result<Vec<Event>, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/events?last={n}"), None).await
    }

    /// Cordons, drains or reopens `host` (this one or any member; root only).
    pub async fn set_mode(&self, host: &str, mode: HostMode) -> Result<DrainReport, ClientError> {
        self.call(Method::PUT, &format!("/hosts/{}/mode", path_part(host)), Some(&SetMode { mode })).await
    }

    /// Where `host`'s drain stands (or, not draining, what runs there).
    pub async fn drain_report(&self, host: &str) -> Result<DrainReport, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/hosts/{}/drain", path_part(host)), None).await
    }

    /// The whole cluster: hosts, and the jobs and latest moves of every
    /// home that answers.
    pub async fn cluster(&self) -> Result<ClusterView, ClientError> {
        self.call::<(), _>(Method::GET, "/cluster", None).await
    }

    /// The move of job `id` (of this home) in flight, if one is.
    pub async fn progress(&self, id: u64) -> Result<Option<MoveProgress>, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/jobs/{id}/progress"), None).await
    }
}

/// A host name or address as one path segment (names are letters,
/// digits, '-', '_' and '.'; an address's ':' is escaped).
fn path_part(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The longest one `wait` call is held by the daemon.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// `Client` for code without a tokio runtime (must not be used inside one).
pub struct BlockingClient {
    client: Client,
    rt: tokio::runtime::Runtime,
}

impl BlockingClient {
    pub fn new(sock: impl Into<PathBuf>) -> Result<BlockingClient, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ClientError::Runtime)?;
        Ok(BlockingClient { client: Client::new(sock), rt })
    }

    pub fn sock(&self) -> &Path {
        self.client.sock()
    }

    pub fn hosts(&self) -> Result<Vec<HostView>, ClientError> {
        self.rt.block_on(self.client.hosts())
    }

    pub fn jobs(&self, all: bool) -> Result<Vec<JobView>, ClientError> {
        self.rt.block_on(self.client.jobs(all))
    }

    pub fn job(&self, id: u64) -> Result<JobDetail, ClientError> {
        self.rt.block_on(self.client.job(id))
    }

    pub fn credentials(&self) -> Result<CredentialsReply, ClientError> {
        self.rt.block_on(self.client.credentials())
    }

    pub fn register(&self, job: &NewJob) -> Result<JobView, ClientError> {
        self.rt.block_on(self.client.register(job))
    }

    pub fn set_state(&self, id: u64, change: &StateChange) -> Result<JobView, ClientError> {
        self.rt.block_on(self.client.set_state(id, change))
    }

    pub fn notice(&self, id: u64, n: &JobNotice) -> Result<JobView, ClientError> {
        self.rt.block_on(self.client.notice(id, n))
    }

    pub fn add_move(&self, id: u64, mv: &NewMove) -> Result<JobView, ClientError> {
        self.rt.block_on(self.client.add_move(id, mv))
    }

    pub fn migrate(&self, id: u64, req: &MigrateRequest) -> Result<MigrateResult, ClientError> {
        self.rt.block_on(self.client.migrate(id, req))
    }

    pub fn signal(&self, id: u64, signal: i32) -> Result<JobView, ClientError> {
        self.rt.block_on(self.client.signal(id, signal))
    }

    pub fn wait(&self, id: u64, timeout: Duration) -> Result<JobView, ClientError> {
        self.rt.block_on(self.client.wait(id, timeout))
    }

    pub fn logs(&self, id: u64, out: u64, err: u64) -> Result<LogChunk, ClientError> {
        self.rt.block_on(self.client.logs(id, out, err))
    }

    pub fn detach(&self, job: &DetachedJob) -> Result<JobView, ClientError> {
        self.rt.block_on(self.client.detach(job))
    }

    pub fn events(&self, after: u64, limit: usize, wait: Duration) -> Result<Vec<Event>, ClientError> {
        self.rt.block_on(self.client.events(after, limit, wait))
    }

    pub fn last_events(&self, n: usize) -> Result<Vec<Event>, ClientError> {
        self.rt.block_on(self.client.last_events(n))
    }

    pub fn set_mode(&self, host: &str, mode: HostMode) -> Result<DrainReport, ClientError> {
        self.rt.block_on(self.client.set_mode(host, mode))
    }

    pub fn drain_report(&self, host: &str) -> Result<DrainReport, ClientError> {
        self.rt.block_on(self.client.drain_report(host))
    }

    pub fn cluster(&self) -> Result<ClusterView, ClientError> {
        self.rt.block_on(self.client.cluster())
    }

    pub fn progress(&self, id: u64) -> Result<Option<MoveProgress>, ClientError> {
        self.rt.block_on(self.client.progress(id))
    }
}
