//! The API on the Unix socket (see `api` for the endpoints). Who calls is
//! the socket's peer credentials; only a job's owner or root may see its
//! private details or change it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::api::{
    ApiError, ClusterView, Cordon, CredentialsReply, DetachedJob, DrainReport, ErrorKind, Event, EventKind, HostMode,
    HostView, JobDetail, JobNotice, JobState, JobView, LogChunk, MigrateRequest, MigrateResult, MoveProgress, NewEvent,
    NewJob, NewMove, SetMode, SignalRequest, StateChange, EVENTS_DEFAULT, EVENTS_MAX, PREFIX,
};
use crate::bodies::Bodies;
use crate::client::WAIT_LIMIT;
use crate::membership::{HostId, Membership};
use crate::procfs;
use crate::store::{JobRecord, Owner, Store, StoreError};

/// The calling process, from SO_PEERCRED; None if the kernel would not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller(pub Option<Owner>);

impl axum::extract::connect_info::Connected<IncomingStream<'_, UnixListener>> for Caller {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Caller {
        Caller(stream.io().peer_cred().ok().map(|c| Owner {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid().and_then(|p| u32::try_from(p).ok()),
        }))
    }
}

/// Whether `caller` may see the private details of, or change, a job
/// owned by `owner`.
pub fn may_act_on(caller: u32, owner: u32) -> bool {
    caller == 0 || caller == owner
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(_) => ApiError::new(ErrorKind::NotFound, e.to_string()),
            StoreError::Ended { .. } => ApiError::new(ErrorKind::Conflict, e.to_string()),
            other => {
                error!("{other}");
                ApiError::new(ErrorKind::Internal, other.to_string())
            }
        }
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, msg)
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// What the handlers share.
pub struct Shared {
    /// This host's name: the home of the jobs it registers.
    pub name: String,
    /// How this host reaches its peers (plain, or mutual TLS).
    pub dialer: crate::peer::Dialer,
    /// This host's identity, which issues its jobs' (plain: none).
    pub transport: trust::Transport,
    /// Who this host is to its peers (name and advertised peer address).
    pub id: HostId,
    /// The bodies this host runs for other homes.
    pub bodies: Arc<Bodies>,
    pub state_dir: PathBuf,
    pub api_sock: PathBuf,
    /// The mosvm binary, for bodies and detached deputies.
    pub exe: PathBuf,
    /// Deputies this daemon started and reaps itself (the reaper leaves
    /// their records to it).
    pub children: Mutex<HashSet<u32>>,
    pub store: Mutex<Store>,
    pub membership: Membership,
    /// This home's jobs counted by where they run, for the membership's
    /// status messages; republished after every change.
    pub local_jobs: watch::Sender<Vec<(String, u32)>>,
    /// The sequence number of the newest event record; bumped by
    /// `Shared::event`, watched by `GET /v1/events` followers.
    pub events: watch::Sender<u64>,
    /// This host's balancer task.
    pub balance: crate::balance::Handle,
    /// Dirty rates of this home's jobs as their last moves measured them,
    /// bytes per second: they go with the job to its next host's balancer.
    pub dirty_rates: Mutex<std::collections::HashMap<u64, f64>>,
    /// The daemon's CPU budget, which the jobs registering here join.
    pub cpu_limit: Option<Arc<crate::cgroup::CpuLimit>>,
    /// Counters and histograms for `--metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Cordoned or draining, and the drain's progress.
    pub drain: crate::drain::Drain,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Shared {
    // The records are small and SQLite answers in microseconds, so they
    // are used under a plain mutex from the async handlers.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn dirty_rates(&self) -> MutexGuard<'_, std::collections::HashMap<u64, f64>> {
        self.dirty_rates.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn children(&self) -> MutexGuard<'_, HashSet<u32>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn publish(&self, store: &Store) {
        match store.running_by_host() {
            Ok(v) => {
                self.local_jobs.send_replace(v);
            }
            Err(e) => error!("counting jobs: {e}"),
        }
    }

    /// Marks lost every running job whose deputy process is gone; returns
    /// how many.
    pub fn reap(&self, when: &str) -> usize {
        let mut lost = Vec::new();
        let n = self.reap_records(when, &mut lost);
        for (job, host, reason) in lost {
            self.event(lost_event(&self.name, job, host, reason));
        }
        n
    }

    fn reap_records(&self, when: &str, lost: &mut Vec<(u64, String, String)>) -> usize {
        let store = &mut *self.store();
        let jobs = match store.jobs(false) {
            Ok(j) => j,
            Err(e) => {
                error!("reading job records: {e}");
                return 0;
            }
        };
        let mut n = 0;
        let ours = self.children().clone();
        for j in jobs {
            let Some(pid) = j.deputy_pid else { continue };
            if ours.contains(&pid) || procfs::alive(pid, j.deputy_start) {
                continue;
            }
            let reason = format!("its deputy process {pid} is gone ({when})");
            match store.set_state(j.id, &StateChange::Lost { reason: reason.clone() }, now_ms()) {
                Ok(_) => {
                    warn!(job = j.id, program = %j.program, "job lost: {reason}");
                    lost.push((j.id, j.host.clone(), reason));
                    n += 1;
                }
                Err(e) => error!(job = j.id, "marking job lost: {e}"),
            }
        }
        self.publish(store);
        n
    }

    /// CPU time while it can be measured: the body has always run in its
    /// deputy process, at home.
    pub(crate) fn cpu_ms(&self, j: &JobRecord) -> Option<u64> {
        let pid = j.deputy_pid?;
        let measurable = j.state == JobState::Running && j.moves == 0 && j.host == j.home;
        (measurable && procfs::alive(pid, j.deputy_start)).then(|| procfs::cpu_ms(pid)).flatten()
    }

    pub(crate) fn view(&self, j: &JobRecord, caller: &Owner) -> JobView {
        j.view(may_act_on(caller.uid, j.owner_uid), self.cpu_ms(j))
    }

    /// Records an event (logged, stored, and announced to the followers
    /// of `GET /v1/events`). Never fails: a record that cannot be written
    /// is logged. It takes the records' lock briefly, so it must not be
    /// called while holding `store()`; from sync code or async tasks alike.
    pub fn event(&self, e: NewEvent) {
        info!(
            kind = e.kind.as_str(),
            job = e.job.as_deref().unwrap_or("-"),
            from = e.from.as_deref().unwrap_or("-"),
            to = e.to.as_deref().unwrap_or("-"),
            "event: {}",
            e.reason
        );
        let stored = self.store().add_event(&self.name, &e, now_ms());
        match stored {
            Ok(ev) => {
                self.events.send_replace(ev.seq);
            }
            Err(err) => error!(kind = e.kind.as_str(), "recording an event: {err}"),
        }
    }
}

type AppState = Arc<Shared>;

fn caller(c: Caller) -> Result<Owner, ApiError> {
    c.0.ok_or_else(|| ApiError::new(ErrorKind::PermissionDenied, "cannot tell who is calling (no peer credentials)"))
}

fn job_id(p: Result<Path<u64>, PathRejection>) -> Result<u64, ApiError> {
    p.map(|Path(id)| id).map_err(|e| bad(format!("job id: {}", e.body_text())))
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v).map_err(|e| bad(e.body_text()))
}

/// The job `id` if `who` may act on it.
pub(crate) fn owned(store: &Store, id: u64, who: &Owner) -> Result<JobRecord, ApiError> {
    let j = store.job(id)?.ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("no job {id}")))?;
    if !may_act_on(who.uid, j.owner_uid) {
        return Err(ApiError::new(
            ErrorKind::PermissionDenied,
            format!("job {id} belongs to uid {}; uid {} may not touch it", j.owner_uid, who.uid),
        ));
    }
    Ok(j)
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(&format!("{PREFIX}/hosts"), get(hosts))
        .route(&format!("{PREFIX}/jobs"), get(list_jobs).post(register))
        .route(&format!("{PREFIX}/jobs/{{id}}"), get(job_detail))
        .route(&format!("{PREFIX}/jobs/{{id}}/state"), put(set_state))
        .route(&format!("{PREFIX}/jobs/{{id}}/moves"), post(add_move))
        .route(&format!("{PREFIX}/jobs/{{id}}/notice"), post(notice))
        .route(&format!("{PREFIX}/jobs/{{id}}/migrate"), post(migrate))
        .route(&format!("{PREFIX}/jobs/{{id}}/signal"), post(signal))
        .route(&format!("{PREFIX}/jobs/{{id}}/wait"), get(wait))
        .route(&format!("{PREFIX}/jobs/{{id}}/logs"), get(logs))
        .route(&format!("{PREFIX}/jobs/detached"), post(detached))
        .route(&format!("{PREFIX}/credentials"), post(credentials))
        .route(&format!("{PREFIX}/cordon"), put(cordon))
        .route(&format!("{PREFIX}/hosts/{{name}}/mode"), put(set_mode))
        .route(&format!("{PREFIX}/hosts/{{name}}/drain"), get(drain_report))
        .route(&format!("{PREFIX}/cluster"), get(cluster))
        .route(&format!("{PREFIX}/jobs/{{id}}/progress"), get(progress))
        .route(&format!("{PREFIX}/events"), get(events))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorKind::NotFound, format!("no such endpoint: {method} {uri}"))
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    let e = bad(format!("{method} is not allowed on {uri}"));
    (StatusCode::METHOD_NOT_ALLOWED, Json(e)).into_response()
}

async fn hosts(State(s): State<AppState>) -> ApiResult<Vec<HostView>> {
    let mut hosts = s.membership.hosts().await.map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    s.balance.fill(&mut hosts);
    Ok(Json(hosts))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

async fn list_jobs(
    State(s): State<AppState>,
    ConnectInfo(c): ConnectInfo<Caller>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Vec<JobView>> {
    let who = caller(c)?;
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let jobs = s.store().jobs(q.all)?;
    Ok(Json(jobs.iter().map(|j| s.view(j, &who)).collect()))
}

async fn job_detail(
    State(s): State<AppState>,
    ConnectInfo(c): ConnectInfo<Caller>,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult<JobDetail> {
    let (who, id) = (caller(c)?, job_id(id)?);
    let store = s.store();
    let j = owned(&store, id, &who)?;
    let history = store.moves(id)?;
    drop(store);
    Ok(Json(JobDetail { job: s.view(&j, &who), history }))
}

fn check_host(what: &str, h: &str) -> Result<(), ApiError> {
    if h.is_empty() || h.len() > 253 || h.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad(format!("{what} {h:?} is not a host name")));
    }
    Ok(())
}

fn check_new_job(j: &NewJob) -> Result<(), ApiError> {
    if j.program.is_empty() {
        return Err(bad("program is empty"));
    }
    if !j.cwd.starts_with('/') {
        return Err(bad(format!("cwd {:?} is not an absolute path", j.cwd)));
    }
    if j.control_sock.as_deref().is_some_and(|p| !p.starts_with('/')) {
        return Err(bad("control_sock is not an absolute path"));
    }
    if let Some(a) = &j.deputy_addr {
        match a.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
            _ => return Err(bad(format!("deputy_addr {a:?} is not HOST:PORT"))),
        }
    }
    if j.mem_bytes == 0 {
        return Err(bad("mem_bytes is 0"));
    }
    Ok(())
}

/// A job process's certificate, for its links to other hosts (its
/// deputy's port, its migration streams): any local caller may run jobs,
/// so any may have one; it opens no peer port.
async fn credentials(State(s): State<AppState>, ConnectInfo(c): ConnectInfo<Caller>) -> ApiResult<CredentialsReply> {
    let who = caller(c)?;
    let trust::Transport::Tls(tls) = &s.transport else { return Ok(Json(CredentialsReply { credentials: None })) };
    let name = format!("uid {} at {}", who.uid, s.name);
    let creds = tls.identity.issue_job(&name).map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    Ok(Json(CredentialsReply { credentials: creds.map(Into::into) }))
}

async fn register(
    State(s): State<AppState>,
    ConnectInfo(c): ConnectInfo<Caller>,
    b: Result<Json<NewJob>, JsonRejection>,
) -> ApiResult<JobView> {
    let who = caller(c)?;
    let job = body(b)?;
    check_new_job(&job)?;
    let start = who.pid.and_then(procfs::start_time);
    let store = &mut *s.store();
    // The deputy of a job this daemon started (`run -d`) fills in its record.
    let adopt = match who.pid {
        Some(pid) => store.adoptable(who.uid, pid)?,
        None => None,
    };
    let rec = match adopt {
        Some(id) => store.adopt(id, &job)?,
        None => store.insert_job(who, &job, &s.name, start, now_ms())?,
    };
    s.publish(store);
    // A job started here uses this host's CPU budget, wherever it was
    // started from.
    if let (Some(l), Some(pid)) = (&s.cpu_limit, who.pid) {
        if let Err(e) = l.adopt(pid) {
            warn!(job = rec.id, pid, "moving the job into this host's CPU limit: {e}");
        }
    }
    info!(job = rec.id, uid = who.uid, program = %rec.program, "job registered");
    Ok(Json(s.view(&rec, &who)))
}

async fn set_state(
    State(s): State<AppState>,
    ConnectInfo(c): ConnectInfo<Caller>,
    id: Result<Path<u64>, PathRejection>,
    b: Result<Json<StateChange>, JsonRejection>,
) -> ApiResult<JobView> {
    let (who, id, change) = (caller(c)?, job_id(id)?, body(b)?);
    match &change {
        StateChange::Running { host } => check_host("host", host)?,
        StateChange::Moving { to } => check_host("to", to)?,
        StateChange::Exited { .. } => {}
        StateChange::Lost { reason } if reason.is_empty() => return Err(bad("a lost job needs a reason")),
        StateChange::Lost { .. } => {}
    }
    let rec = {
        let store = &mut *s.store();
        owned(store, id, &who)?;
        let rec = store.set_state(id, &change, now_ms())?;
        s.publish(store);
        rec
    };
    info!(job = id, state = rec.state.as_str(), host = %rec.host, "job state");
    if let StateChange::Lost { reason } = change {
        s.event(lost_event(&s.name, id, rec.host.clone(), reason));
    }
    Ok(Json(s.view(&rec, &who)))
}

fn lost_event(home: &str, id: u64, host: String, reason: String) -> NewEvent {
    NewEvent {
        kind: EventKind::Lost,
        job: Some(crate::wire::JobRef { home: home.to_string(), id }.to_string()),
        from: Some(host),
        to: None,
        reason,
    }
}

/// A deputy's notice about its job: logged and kept as an event.
async fn notice(
    State(s): State<AppState>,
    ConnectInfo(c): ConnectInfo<Caller>,
    id: Result<Path<u64>, PathRejection>,
    b: Result<Json<JobNotice>, JsonRejection>,
) -> ApiResult<JobView> {
    let (who, id, n) = (caller(c)?, job_id(id)?, body(b)?);
    if let JobNotice::UnsupportedSyscall { name: Some(name), .. } = &n {
        if name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(bad("a system call name is a C identifier"));
        }
    }
    if let JobNotice::Refused { from, why } = &n {
        if why.len() > 512 || from.as_ref().is_some_and(|f| f.len() > 64) {
            return Err(bad("a refusal's reason is at most 512 bytes"));
        }
    }
    let rec = owned(&s.store(), id, &who)?;
    warn!(job = id, "{n}");
    s.event(NewEvent {
        kind: EventKind::Notice,
        job: Some(crate::wire::JobRef { home: s.name.clone(), id }.to_string()),
        from: Some(rec.host.clone()),
        to: None,
        reason: n.to_string(),
    });
    Ok(Json(s.view(&rec, &who)))
}

async fn add_move(
    State(s): State<AppState>,
    ConnectInfo(c): ConnectInfo<Caller>,
    id: Result<Path<u64>, PathRejection>,
    b: Result<Json<NewMove>, JsonRejection>,
) -> ApiResult<JobView> {
    let (who, id, mv) = (caller(c)?, job_id(id)?, body(b)?);
    check_host("from", &mv.from)?;
    check_host("to", &mv.to)?;
    for (what, v) in [("total_ms", mv.total_ms), ("downtime_ms", mv.downtime_ms)] {
        if !v.is_finite() || v < 0.0 {
            return Err(bad(format!("{what} {v} is not a duration")));
        }
    }
    let store = &mut *s.store();
    owned(store, id, &who)?;
    let rec = store.add_move(id, &mv)?;
    s.publish(store);
    info!(job = id, from = %mv.from, to = %mv.to, why = mv.why.as_str(), "job moved");
    Ok(Json(s.view(&rec, &who)))
}

async fn migrate(
    State(s): State<AppState>,
    ConnectInfo(c): ConnectInfo<Caller>,
    id: Result<Path<u64>, PathRejection>,
    b: Result<Json<MigrateRequest>, JsonRejection>,
) -> ApiResult<MigrateResult> {
    let (who, id, req) = (caller(c)?, job_id(id)?, body(b)?);
    if req.to.is_empty() {
        return Err(bad("to is empty"));
    }
    for v in [req.downtime_ms, req.max_bandwidth_mbps].into_iter().flatten() {
        if !v.is_finite() || v <= 0.0 {
            return Err(bad(format!("{v} is not a positive number")));
        }
    }
    Ok(Json(crate::moves::migrate(&s, who, id, req).await?))
}

/// Signal numbers `kill` may send (SIGRTMAX on Linux is 64).
const MAX_SIGNAL: i32 = 64;

async fn signal(
    State(s): State<AppState>,
    ConnectInfo(c): ConnectInfo<Caller>,
    id: Result<Path<u64>, PathRejection>,
    b: Result<Json<SignalRequest>, JsonRejection>,
) -> ApiResult<JobView> {
    let (who, id, req) = (caller(c)?, job_id(id)?, body(b)?);
    if !(1..=MAX_SIGNAL).contains(&req.signal) {
        return Err(bad(format!("{} is not a signal number", req.signal)));
    }
    let store = s.store();
    let j = owned(&store, id, &who)?;
    if j.state.ended() {
        return Err(ApiError::new(ErrorKind::Conflict, format!("job {id} has ended ({})", j.state.as_str())));
    }
    // The deputy forwards it to the body wherever it runs.
    let pid = j.deputy_pid.filter(|&p| procfs::alive(p, j.deputy_start));
    let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) else {
        return Err(ApiError::new(ErrorKind::Conflict, format!("job {id} has no live deputy process")));
    };
    // SAFETY: kill(2) of the process the record names, checked alive above.
    if unsafe { libc::kill(pid, req.signal) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(ApiError::new(ErrorKind::Internal, format!("signalling the deputy {pid}: {e}")));
    }
    info!(job = id, uid = who.uid, signal = req.signal, pid, "job signalled");
    Ok(Json(s.view(&j, &who)))
}

#[derive(Deserialize)]
struct WaitQuery {
    #[serde(default)]
    timeout_ms: u64,
}

async fn wait(
    State(s): State<AppState>,
    ConnectInfo(c): ConnectInfo<Caller>,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> ApiResult<JobView> {
    let (who, id) = (caller(c)?, job_id(id)?);
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.timeout_ms).min(WAIT_LIMIT);
    // Every change of a record is published; look after each.
    let mut changes = s.local_jobs.subscribe();
    loop {
        let j = owned(&s.store(), id, &who)?;
        if j.state.ended() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(s.view(&j, &who)));
        }
        if tokio::time::timeout_at(deadline, changes.changed()).await.is_ok_and(|r| r.is_err()) {
            return Err(ApiError::new(ErrorKind::Internal, "the daemon is stopping"));
        }
    }
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default)]
    out: u64,
    #[serde(default)]
    err: u64,
}

async fn logs(
    State(s): State<AppState>,
    ConnectInfo(c): ConnectInfo<Caller>,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult<LogChunk> {
    let (who, id) = (caller(c)?, job_id(id)?);
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let j = owned(&s.store(), id, &who)?;
    let dir = s.state_dir.clone();
    let chunk = tokio::task::spawn_blocking(move || crate::detach::logs(&dir, &j, q.out, q.err))
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))??;
    Ok(Json(chunk))
}

async fn detached(
    State(s): State<AppState>,
    ConnectInfo(c): ConnectInfo<Caller>,
    b: Result<Json<DetachedJob>, JsonRejection>,
) -> ApiResult<JobView> {
    let (who, req) = (caller(c)?, body(b)?);
    let rec = crate::detach::start(&s, who, req)?;
    Ok(Json(s.view(&rec, &who)))
}

/// The older form of `PUT /v1/hosts/{name}/mode` for this host.
async fn cordon(
    State(s): State<AppState>,
    ConnectInfo(c): ConnectInfo<Caller>,
    b: Result<Json<Cordon>, JsonRejection>,
) -> ApiResult<Cordon> {
    let (who, req) = (caller(c)?, body(b)?);
    if who.uid != 0 {
        return Err(ApiError::new(ErrorKind::PermissionDenied, "only root may cordon a host"));
    }
    let mode = if req.cordoned { HostMode::Cordoned } else { HostMode::Normal };
    crate::ops::apply_mode(&s, mode, "here").await.map_err(crate::moves::api_error)?;
    Ok(Json(req))
}

fn host_name(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let name = p.map(|Path(n)| n).map_err(|e| bad(format!("host: {}", e.body_text())))?;
    check_host("host", &name)?;
    Ok(name)
}

async fn set_mode(
    State(s): State<AppState>,
    ConnectInfo(c): ConnectInfo<Caller>,
    name: Result<Path<String>, PathRejection>,
    b: Result<Json<SetMode>, JsonRejection>,
) -> ApiResult<DrainReport> {
    let (who, name, req) = (caller(c)?, host_name(name)?, body(b)?);
    if who.uid != 0 {
        let what = match req.mode {
            HostMode::Normal => "reopen",
            HostMode::Cordoned => "cordon",
            HostMode::Draining => "drain",
        };
        return Err(ApiError::new(ErrorKind::PermissionDenied, format!("only root may {what} a host")));
    }
    Ok(Json(crate::ops::set_mode(&s, &name, req.mode).await?))
}

/// Anyone may ask (a report names jobs, never their argv or env).
async fn drain_report(State(s): State<AppState>, name: Result<Path<String>, PathRejection>) -> ApiResult<DrainReport> {
    let name = host_name(name)?;
    Ok(Json(crate::ops::report(&s, &name).await?))
}

async fn cluster(State(s): State<AppState>) -> ApiResult<ClusterView> {
    Ok(Json(crate::ops::cluster(&s).await?))
}

async fn progress(State(s): State<AppState>, id: Result<Path<u64>, PathRejection>) -> ApiResult<Option<MoveProgress>> {
    Ok(Json(crate::ops::progress(&s, job_id(id)?).await?))
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    wait_ms: u64,
    #[serde(default)]
    last: Option<usize>,
}

/// `GET /v1/events`: anyone may read them (they hold no argv or env).
async fn events(State(s): State<AppState>, q: Result<Query<EventsQuery>, QueryRejection>) -> ApiResult<Vec<Event>> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    if let Some(n) = q.last {
        if q.after != 0 || q.limit.is_some() || q.wait_ms != 0 {
            return Err(bad("last=N goes alone (not with after, limit or wait_ms)"));
        }
        if n > EVENTS_MAX {
            return Err(bad(format!("last={n}: at most {EVENTS_MAX}")));
        }
        return Ok(Json(s.store().last_events(n)?));
    }
    let limit = q.limit.unwrap_or(EVENTS_DEFAULT);
    if !(1..=EVENTS_MAX).contains(&limit) {
        return Err(bad(format!("limit={limit}: from 1 to {EVENTS_MAX}")));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms).min(WAIT_LIMIT);
    // Subscribed before reading: an event recorded in between wakes us.
    let mut newer = s.events.subscribe();
    loop {
        let found = s.store().events(q.after, limit)?;
        if !found.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(found));
        }
        if tokio::time::timeout_at(deadline, newer.changed()).await.is_ok_and(|r| r.is_err()) {
            return Err(ApiError::new(ErrorKind::Internal, "the daemon is stopping"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_rule() {
        assert!(may_act_on(0, 1000));
        assert!(may_act_on(1000, 1000));
        assert!(!may_act_on(65534, 1000));
        assert!(!may_act_on(1000, 0));
    }
}
