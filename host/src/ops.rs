//! An operator's requests that concern a whole host or the whole cluster:
//! cordon, drain and reopen a host (this one or any member, through its
//! peer port), where a drain stands, the cluster overview that `mosvm top`
//! shows, and the progress of one job's move. The API handlers and the
//! peer port both come here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::api::{
    ApiError, ClusterView, DrainReport, ErrorKind, Event, EventKind, HostMode, HostState, JobState, MoveProgress,
    NewEvent,
};
use crate::moves::{api_error, is_member, resolve};
use crate::peer::{self, Peer};
use crate::server::Shared;
use crate::wire::{
    HostOp, HostOpReply, JobRef, Kind, Operation, Overview, OverviewReply, Progress, ProgressReply, Refusal,
    RefusalKind,
};

/// How long another host may take to answer an operator's question.
const ASK_LIMIT: Duration = Duration::from_secs(5);
/// How long `GET /v1/cluster` waits for the other homes.
const OVERVIEW_LIMIT: Duration = Duration::from_millis(1500);
/// Latest moves per home in the overview.
const OVERVIEW_MOVES: u32 = 20;
/// Jobs one home lists in the overview, at most (a reply must fit a frame).
const OVERVIEW_JOBS: usize = 4000;
/// Moved bodies a report sent over the peer port lists, at most (the newest).
const REPORT_MOVED: usize = 1000;

fn unreachable(m: String) -> ApiError {
    ApiError::new(ErrorKind::Unreachable, m)
}

/// Sets this host's mode: kept in the records, told to the members and
/// the balancer at once. `by` says who asked, for the event.
pub async fn apply_mode(s: &Arc<Shared>, mode: HostMode, by: &str) -> Result<DrainReport, Refusal> {
    if mode == HostMode::Draining && !s.balance.enabled() {
        return Err(Refusal::new(
            RefusalKind::Refused,
            format!(
                "{} does not balance (--no-balance): its balancer picks where a drain sends the jobs; \
                 cordon it and move them with `mosvm migrate JOB --to HOST`",
                s.name
            ),
        ));
    }
    let before = s.drain.mode();
    // Bodies are refused from now on, before anything else changes.
    s.bodies.cordoned.store(mode.closed(), std::sync::atomic::Ordering::SeqCst);
    let since = s.drain.set(mode);
    let stored = s.store().set_mode(mode, since);
    if let Err(e) = stored {
        warn!("keeping the host mode in the records: {e}");
        return Err(Refusal::new(RefusalKind::Refused, format!("the records cannot keep the mode: {e}")));
    }
    if before != mode {
        info!(mode = mode.as_str(), by, "host mode");
        let what = match mode {
            HostMode::Normal => "open again: it takes jobs",
            HostMode::Cordoned => "cordoned: it takes no new jobs",
            HostMode::Draining => "draining: every body here moves away",
        };
        s.event(NewEvent {
            kind: EventKind::Mode,
            job: None,
            from: None,
            to: Some(s.name.clone()),
            reason: format!("{} is {what} (asked {by})", s.name),
        });
    }
    Ok(s.drain.report(s).await)
}

/// `PUT /v1/hosts/{host}/mode`: here, or at the member `host`.
pub async fn set_mode(s: &Arc<Shared>, host: &str, mode: HostMode) -> Result<DrainReport, ApiError> {
    match resolve(s, host).await? {
        None => apply_mode(s, mode, "here").await.map_err(api_error),
        Some((name, addr)) => ask(s, &name, addr, Operation::SetMode(mode)).await,
    }
}

/// `GET /v1/hosts/{host}/drain`.
pub async fn report(s: &Arc<Shared>, host: &str) -> Result<DrainReport, ApiError> {
    match resolve(s, host).await? {
        None => Ok(s.drain.report(s).await),
        Some((name, addr)) => ask(s, &name, addr, Operation::Report).await,
    }
}

async fn ask(s: &Shared, name: &str, addr: SocketAddr, op: Operation) -> Result<DrainReport, ApiError> {
    let msg = HostOp { from: s.id.clone(), op };
    match peer::request(&s.dialer, addr, Kind::HostOp, &msg, Kind::HostReport, ASK_LIMIT).await {
        Ok(HostOpReply::Report(r)) => Ok(r),
        Ok(HostOpReply::Refused(r)) => Err(api_error(Refusal::new(r.kind, format!("host {name}: {}", r.message)))),
        Err(e) => Err(unreachable(format!("host {name} ({addr}): {e}"))),
    }
}

/// `HostOp` from a member.
pub async fn on_host_op(s: &Arc<Shared>, req: HostOp, peer: &Peer) -> HostOpReply {
    if !is_member(s, &req.from, peer).await {
        warn!(%peer, from = ?req.from, "HostOp from a host that is not a member refused");
        return HostOpReply::Refused(Refusal::new(RefusalKind::NotMember, format!("{peer} is not a member here")));
    }
    let report = match req.op {
        Operation::SetMode(mode) => match apply_mode(s, mode, &format!("through {}", req.from.name)).await {
            Ok(r) => r,
            Err(r) => return HostOpReply::Refused(r),
        },
        Operation::Report => s.drain.report(s).await,
    };
    HostOpReply::Report(trimmed(report))
}

/// A report small enough for one frame.
fn trimmed(mut r: DrainReport) -> DrainReport {
    if r.moved.len() > REPORT_MOVED {
        r.moved.drain(..r.moved.len() - REPORT_MOVED);
    }
    r
}

/// This home's running jobs (public fields) and its latest moves.
fn overview_here(s: &Shared, moves: u32) -> OverviewReply {
    let (jobs, events) = {
        let store = s.store();
        let jobs = store.jobs(false).unwrap_or_else(|e| {
            warn!("overview: reading job records: {e}");
            Vec::new()
        });
        let events = store.last_events(500).unwrap_or_default();
        (jobs, events)
    };
    let jobs = jobs
        .iter()
        .filter(|j| matches!(j.state, JobState::Running | JobState::Moving))
        .take(OVERVIEW_JOBS)
        .map(|j| j.view(false, s.cpu_ms(j)))
        .collect();
    let mut moves: Vec<Event> = events
        .into_iter()
        .rev()
        .filter(|e| matches!(e.kind, EventKind::Moved | EventKind::MoveFailed))
        .take(moves as usize)
        .collect();
    for e in &mut moves {
        // Words, not payloads: the frame stays small.
        e.reason.truncate(e.reason.char_indices().nth(300).map_or(e.reason.len(), |(i, _)| i));
    }
    OverviewReply { jobs, moves }
}

/// `Overview` from a member.
pub async fn on_overview(s: &Arc<Shared>, req: Overview, peer: &Peer) -> Option<OverviewReply> {
    if !is_member(s, &req.from, peer).await {
        warn!(%peer, from = ?req.from, "Overview from a host that is not a member refused");
        return None;
    }
    Some(overview_here(s, req.moves.min(100)))
}

/// `GET /v1/cluster`: the hosts, and every answering home's jobs and moves.
pub async fn cluster(s: &Arc<Shared>) -> Result<ClusterView, ApiError> {
    let mut hosts = s.membership.hosts().await.map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    s.balance.fill(&mut hosts);
    let here = overview_here(s, OVERVIEW_MOVES);
    let mut asks = tokio::task::JoinSet::new();
    for h in hosts.iter().filter(|h| !h.local && matches!(h.state, HostState::Alive | HostState::Suspect)) {
        let Ok(addr) = h.addr.parse::<SocketAddr>() else { continue };
        let (name, msg, dialer) =
            (h.name.clone(), Overview { from: s.id.clone(), moves: OVERVIEW_MOVES }, s.dialer.clone());
        asks.spawn(async move {
            let r: Result<OverviewReply, _> =
                peer::request(&dialer, addr, Kind::Overview, &msg, Kind::OverviewReply, OVERVIEW_LIMIT).await;
            (name, r)
        });
    }
    let (mut jobs, mut moves, mut unanswered) = (here.jobs, here.moves, Vec::new());
    while let Some(r) = asks.join_next().await {
        match r {
            Ok((_, Ok(o))) => {
                jobs.extend(o.jobs);
                moves.extend(o.moves);
            }
            Ok((name, Err(e))) => {
                tracing::debug!(host = %name, "overview: {e}");
                unanswered.push(name);
            }
            Err(e) => warn!("overview task: {e}"),
        }
    }
    jobs.sort_by(|a, b| a.home.cmp(&b.home).then(a.id.cmp(&b.id)));
    moves.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then(a.host.cmp(&b.host)));
    moves.truncate(OVERVIEW_MOVES as usize * 2);
    unanswered.sort();
    Ok(ClusterView { hosts, jobs, moves, unanswered })
}

/// The move of a body this host runs, if one is in flight.
async fn progress_here(s: &Shared, job: &JobRef) -> Option<MoveProgress> {
    let sock = if job.home == s.name {
        let j = s.store().job(job.id).ok().flatten()?;
        if j.host != s.name {
            return None;
        }
        std::path::PathBuf::from(j.control_sock?)
    } else {
        s.bodies.get(job)?.control_sock
    };
    crate::control::progress(&sock).await
}

/// `GET /v1/jobs/{id}/progress` at the job's home.
pub async fn progress(s: &Arc<Shared>, id: u64) -> Result<Option<MoveProgress>, ApiError> {
    let j = s.store().job(id)?.ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("no job {id}")))?;
    let job = JobRef { home: s.name.clone(), id };
    if j.host == s.name {
        return Ok(progress_here(s, &job).await);
    }
    let Some((name, addr)) = resolve(s, &j.host).await? else { return Ok(None) };
    let msg = Progress { from: s.id.clone(), job };
    match peer::request(&s.dialer, addr, Kind::Progress, &msg, Kind::ProgressReply, ASK_LIMIT).await {
        Ok(ProgressReply { progress }) => Ok(progress),
        Err(e) => Err(unreachable(format!("host {name} ({addr}): {e}"))),
    }
}

/// `Progress` from a job's home.
pub async fn on_progress(s: &Arc<Shared>, req: Progress, peer: &Peer) -> ProgressReply {
    if !is_member(s, &req.from, peer).await || req.from.name != req.job.home {
        return ProgressReply { progress: None };
    }
    ProgressReply { progress: progress_here(s, &req.job).await }
}
