//! Moving bodies between daemons.
//!
//! The operator asks the job's home (`POST /v1/jobs/{id}/migrate`). If the
//! body runs at home, the home asks the destination for a receiver
//! (`PrepareBody` → `BodyReady { addr }`) and tells the job's control
//! socket to move there. If the body runs on host X, the home sends X a
//! `MoveBody`; X does the same with its body's control socket (asking the
//! destination for a receiver, or sending the body home) and answers with
//! the figures. Only the home writes the job's record: "moving" during
//! the move, then the move and "running at TO", or "running where it
//! was" after a failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::api::{
    ApiError, ErrorKind, EventKind, HostState, MigrateRequest, MigrateResult, MoveFigures, MoveWhy, NewEvent, NewMove,
    StateChange,
};
use crate::control;
use crate::membership::HostId;
use crate::peer::{self, Peer};
use crate::server::{now_ms, owned, Shared};
use crate::store::{JobRecord, Owner};
use crate::wire::{
    Arrival, BalanceMove, JobRef, Kind, MoveBody, MoveOptions, MoveReply, PrepareBody, PrepareReply, Refusal,
    RefusalKind, Target,
};

/// How long a host may take to start a receiver.
const PREPARE_LIMIT: Duration = Duration::from_secs(15);

/// True if `from`, whose connection comes from `peer`, is an active member
/// of this host's cluster at the address it claims.
pub(crate) async fn is_member(s: &Shared, from: &HostId, peer: &Peer) -> bool {
    if peer.addr.ip() != from.addr.ip() || from.name == s.name {
        return false;
    }
    if !peer.may_be(&from.name) {
        warn!(%peer, from = %from.name, "a peer spoke as another host: its certificate is not that host's");
        return false;
    }
    let Ok(hosts) = s.membership.hosts().await else { return false };
    let addr = from.addr.to_string();
    hosts.iter().any(|h| {
        !h.local && h.name == from.name && h.addr == addr && matches!(h.state, HostState::Alive | HostState::Suspect)
    })
}

/// `PrepareBody` from a peer.
pub async fn on_prepare(s: &Arc<Shared>, req: PrepareBody, peer: &Peer) -> PrepareReply {
    if !is_member(s, &req.from, peer).await {
        warn!(%peer, from = ?req.from, "PrepareBody from a host that is not a member refused");
        return PrepareReply::Refused(Refusal::new(RefusalKind::NotMember, format!("{} is not a member here", peer)));
    }
    // A ticket, unless the job's VMM is too old to present one.
    let ticket = req.ticket.then(trust::Ticket::new);
    match s.bodies.prepare(&req.job, req.mem_bytes, req.owner_uid, ticket.as_ref()).await {
        Ok(addr) => {
            s.balance.incoming(req.job, req.from.addr, req.arrival);
            match ticket {
                Some(t) => PrepareReply::Ticketed { addr, ticket: *t.bytes() },
                None => PrepareReply::BodyReady { addr },
            }
        }
        Err(r) => {
            warn!(body = %req.job, "body refused: {r}");
            PrepareReply::Refused(r)
        }
    }
}

/// A receiver ready for a move: where it listens, and the ticket the
/// stream must present (None: an older host, or a job too old for one).
struct Ready {
    addr: String,
    ticket: Option<trust::Ticket>,
}

/// Asks host `name` at `addr` for a receiver of `job`'s body, for this
/// move only if `ticket` (the job's VMM presents tickets).
#[allow(clippy::too_many_arguments)]
async fn prepare_at(
    s: &Shared,
    name: &str,
    addr: SocketAddr,
    job: &JobRef,
    mem_bytes: u64,
    owner_uid: u32,
    arrival: &Arrival,
    ticket: bool,
) -> Result<Ready, Refusal> {
    let msg =
        PrepareBody { from: s.id.clone(), job: job.clone(), mem_bytes, owner_uid, arrival: arrival.clone(), ticket };
    let reply: PrepareReply = peer::request(&s.dialer, addr, Kind::PrepareBody, &msg, Kind::BodyReady, PREPARE_LIMIT)
        .await
        .map_err(|e| Refusal::new(RefusalKind::Unreachable, format!("host {name} ({addr}): {e}")))?;
    match reply {
        PrepareReply::BodyReady { addr } => Ok(Ready { addr, ticket: None }),
        PrepareReply::Ticketed { addr, ticket } => Ok(Ready { addr, ticket: Some(trust::Ticket::from_bytes(ticket)) }),
        PrepareReply::Refused(r) => Err(Refusal::new(r.kind, format!("host {name} refused the body: {}", r.message))),
    }
}

/// `MoveBody` from a job's home: move the body we run.
pub async fn on_move(s: &Arc<Shared>, req: MoveBody, peer: &Peer) -> MoveReply {
    if !is_member(s, &req.from, peer).await || req.from.name != req.job.home {
        warn!(%peer, from = ?req.from, body = %req.job, "MoveBody not from the job's home refused");
        return MoveReply::Refused(Refusal::new(RefusalKind::NotMember, "only the job's home, a member, may move it"));
    }
    match move_here(s, &req).await {
        Ok(f) => MoveReply::Moved(f),
        Err(r) => MoveReply::Refused(r),
    }
}

async fn move_here(s: &Shared, req: &MoveBody) -> Result<MoveFigures, Refusal> {
    let body = s
        .bodies
        .get(&req.job)
        .ok_or_else(|| Refusal::new(RefusalKind::NotFound, format!("no body of job {} runs at {}", req.job, s.name)))?;
    if !body.control_sock.exists() {
        return Err(Refusal::new(RefusalKind::Busy, format!("the body of job {} is still arriving", req.job)));
    }
    let tickets = control::movable(&body.control_sock).await?;
    let dest = match &req.to {
        Target::Home => Ready { addr: "home".to_string(), ticket: None },
        Target::Host { name, .. } if *name == s.name => {
            return Err(Refusal::new(RefusalKind::BadRequest, format!("job {} already runs at {name}", req.job)))
        }
        Target::Host { name, addr } => {
            prepare_at(s, name, *addr, &req.job, body.mem_bytes, body.owner_uid, &req.arrival, tickets).await?
        }
    };
    info!(body = %req.job, to = ?req.to, dest = %dest.addr, "moving a body on");
    let f = control::migrate(&body.control_sock, &dest.addr, &req.opts, dest.ticket.as_ref()).await?;
    s.metrics.moved_out(req.arrival.why.unwrap_or(MoveWhy::Operator));
    Ok(f)
}

pub(crate) fn api_error(r: Refusal) -> ApiError {
    let kind = match r.kind {
        RefusalKind::NotFound => ErrorKind::NotFound,
        RefusalKind::Busy => ErrorKind::Busy,
        RefusalKind::Unreachable => ErrorKind::Unreachable,
        RefusalKind::BadRequest => ErrorKind::BadRequest,
        RefusalKind::NotMember | RefusalKind::Cordoned | RefusalKind::NoMemory | RefusalKind::CannotSpawn => {
            ErrorKind::Refused
        }
        RefusalKind::Refused | RefusalKind::Unmovable | RefusalKind::Pinned => ErrorKind::Refused,
        RefusalKind::Ended => ErrorKind::Conflict,
    };
    ApiError::new(kind, r.message)
}

/// A member named, or at the address, `to`: its name and peer address
/// (None for this host).
pub(crate) async fn resolve(s: &Shared, to: &str) -> Result<Option<(String, SocketAddr)>, ApiError> {
    let hosts = s.membership.hosts().await.map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    let found: Vec<_> = hosts
        .iter()
        .filter(|h| h.name == to || h.addr == to || h.addr.rsplit_once(':').is_some_and(|(ip, _)| ip == to))
        .collect();
    let h = match found.as_slice() {
        [h] => *h,
        [] => return Err(ApiError::new(ErrorKind::NotFound, format!("no host {to:?} in the cluster"))),
        _ => return Err(ApiError::new(ErrorKind::BadRequest, format!("{to:?} names several hosts; use a name"))),
    };
    if h.local {
        return Ok(None);
    }
    if h.state != HostState::Alive {
        return Err(ApiError::new(ErrorKind::Unreachable, format!("host {} is {}", h.name, h.state.as_str())));
    }
    let addr = h.addr.parse().map_err(|_| ApiError::new(ErrorKind::Internal, format!("bad address {}", h.addr)))?;
    Ok(Some((h.name.clone(), addr)))
}

/// `POST /v1/jobs/{id}/migrate` at the job's home: an operator's move.
pub async fn migrate(s: &Arc<Shared>, who: Owner, id: u64, req: MigrateRequest) -> Result<MigrateResult, ApiError> {
    owned(&s.store(), id, &who)?;
    let opts =
        MoveOptions { downtime_ms: req.downtime_ms, max_bandwidth_mbps: req.max_bandwidth_mbps, verify: req.verify };
    let order = Order {
        to: req.to,
        opts,
        why: MoveWhy::Operator,
        reason: None,
        left: Vec::new(),
        balanced: false,
        dirty_rate: 0.0,
        resident_bytes: 0,
    };
    let (rec, from, to, figures) = move_job(s, id, order).await.map_err(api_error)?;
    Ok(MigrateResult { job: s.view(&rec, &who), from, to, figures })
}

/// A move of one of this home's jobs, whoever asked for it.
pub struct Order {
    /// A host's name or address, or "home".
    pub to: String,
    pub opts: MoveOptions,
    pub why: MoveWhy,
    /// Why, in words (the balancer's reason).
    pub reason: Option<String>,
    /// Hosts the job left recently (balancer ids, seconds ago).
    pub left: Vec<(u64, f64)>,
    /// The destination's balancer accepted the job.
    pub balanced: bool,
    /// The job's dirty rate as last measured, bytes per second.
    pub dirty_rate: f64,
    /// Its resident memory now, bytes (0: unknown).
    pub resident_bytes: u64,
}

/// Longest reason a peer may give for a move.
const MAX_REASON: usize = 1024;

/// The balancer's moves leave pinned jobs alone; an operator's and a
/// drain's do not.
fn automatic(why: MoveWhy) -> bool {
    matches!(why, MoveWhy::Balancer | MoveWhy::Load | MoveWhy::Memory)
}

/// `BalanceMove` from the host running one of our jobs' bodies.
pub async fn on_balance_move(s: &Arc<Shared>, req: BalanceMove, peer: &Peer) -> MoveReply {
    let runs_there = s.store().job(req.job.id).ok().flatten().is_some_and(|j| j.host == req.from.name);
    if req.job.home != s.name || !is_member(s, &req.from, peer).await || !runs_there {
        warn!(%peer, from = ?req.from, job = %req.job, "BalanceMove not from the host of the job's body refused");
        return MoveReply::Refused(Refusal::new(
            RefusalKind::NotMember,
            "only the host running the job's body, a member, may ask to move it",
        ));
    }
    if req.why == MoveWhy::Operator {
        return MoveReply::Refused(Refusal::new(RefusalKind::BadRequest, "a balancer move has a balancer's reason"));
    }
    // Words for the records, not a payload.
    let mut reason = req.reason;
    if reason.len() > MAX_REASON {
        let cut = (0..=MAX_REASON).rev().find(|&i| reason.is_char_boundary(i)).unwrap_or(0);
        reason.truncate(cut);
    }
    let order = Order {
        to: req.to,
        opts: MoveOptions::default(),
        why: req.why,
        reason: Some(reason),
        left: req.arrival.left,
        balanced: req.arrival.balanced,
        dirty_rate: req.arrival.dirty_rate,
        resident_bytes: req.arrival.resident_bytes,
    };
    match move_job(s, req.job.id, order).await {
        Ok((_, _, _, figures)) => MoveReply::Moved(figures),
        Err(r) => MoveReply::Refused(r),
    }
}

fn refusal(e: ApiError) -> Refusal {
    let kind = match e.kind {
        ErrorKind::NotFound => RefusalKind::NotFound,
        ErrorKind::Busy => RefusalKind::Busy,
        ErrorKind::Unreachable => RefusalKind::Unreachable,
        ErrorKind::BadRequest => RefusalKind::BadRequest,
        ErrorKind::Conflict => RefusalKind::Ended,
        _ => RefusalKind::Refused,
    };
    Refusal::new(kind, e.message)
}

fn store_refusal(e: crate::store::StoreError) -> Refusal {
    refusal(ApiError::from(e))
}

/// The dirty rate a move measured: what it sent beyond the job's resident
/// memory was dirtied while it copied.
fn dirty_rate(resident: u64, f: &MoveFigures) -> Option<f64> {
    let copying = (f.total_ms - f.downtime_ms) / 1000.0;
    (resident > 0 && copying > 0.0).then(|| f.bytes_sent.saturating_sub(resident) as f64 / copying)
}

/// Moves job `id` (this home's) as `order` says; returns its record after
/// the move, where it came from and where it went, and the figures. Marks
/// it "moving" first, so a second move at the same time is busy.
pub async fn move_job(
    s: &Arc<Shared>,
    id: u64,
    order: Order,
) -> Result<(JobRecord, String, String, MoveFigures), Refusal> {
    let target = if order.to == "home" { None } else { resolve(s, &order.to).await.map_err(refusal)? };
    let to_name = target.as_ref().map_or_else(|| s.name.clone(), |(n, _)| n.clone());

    // Check and mark "moving" at once: a second move of the job is busy.
    let job = {
        let store = &mut *s.store();
        let j = store
            .job(id)
            .map_err(store_refusal)?
            .ok_or_else(|| Refusal::new(RefusalKind::NotFound, format!("no job {id}")))?;
        if j.state.ended() {
            return Err(Refusal::new(RefusalKind::Ended, format!("job {id} has ended ({})", j.state.as_str())));
        }
        if j.state != crate::api::JobState::Running {
            let to = j.moving_to.as_deref().unwrap_or("?");
            return Err(Refusal::new(RefusalKind::Busy, format!("job {id} is already moving to {to}")));
        }
        if j.host == to_name {
            return Err(Refusal::new(RefusalKind::Refused, format!("job {id} already runs at {to_name}")));
        }
        if j.stay && automatic(order.why) {
            return Err(Refusal::new(
                RefusalKind::Pinned,
                format!("job {id} is pinned (run --stay): only an operator may move it"),
            ));
        }
        let j = store.set_state(id, &StateChange::Moving { to: to_name.clone() }, now_ms()).map_err(store_refusal)?;
        s.publish(store);
        j
    };
    let jref = JobRef { home: s.name.clone(), id };
    let arrival = Arrival {
        balanced: order.balanced,
        age_s: now_ms().saturating_sub(job.started_ms) as f64 / 1000.0,
        stay: job.stay,
        left: order.left.clone(),
        dirty_rate: s.dirty_rates().get(&id).copied().unwrap_or(order.dirty_rate),
        resident_bytes: 0,
        why: Some(order.why),
    };
    let opts = order.opts.clone();
    info!(job = id, from = %job.host, to = %to_name, why = order.why.as_str(), "moving");

    let moved: Result<MoveFigures, Refusal> = if job.host == s.name {
        // The body runs here, in its deputy: its own control socket.
        match (&job.control_sock, &target) {
            // A detached job's deputy fills its record in as it starts.
            (None, _) if job.detached && job.deputy_addr.is_none() => {
                Err(Refusal::new(RefusalKind::Busy, format!("job {id} is still starting; try again")))
            }
            (None, _) => Err(Refusal::new(RefusalKind::Refused, format!("job {id} has no control socket"))),
            (_, None) => Err(Refusal::new(RefusalKind::BadRequest, format!("job {id} is at home already"))),
            // The deputy removes the socket as the job ends.
            (Some(sock), Some(_)) if !std::path::Path::new(sock).exists() => {
                Err(Refusal::new(RefusalKind::Ended, format!("job {id} is ending (its control socket is gone)")))
            }
            (Some(sock), Some((name, addr))) => {
                let ready = match control::movable(std::path::Path::new(sock)).await {
                    Ok(tickets) => {
                        prepare_at(s, name, *addr, &jref, job.mem_bytes, job.owner_uid, &arrival, tickets).await
                    }
                    Err(r) => Err(r),
                };
                match ready {
                    Ok(dest) => {
                        let sock = std::path::Path::new(sock);
                        let moved = control::migrate(sock, &dest.addr, &opts, dest.ticket.as_ref()).await;
                        if moved.is_ok() {
                            s.metrics.moved_out(order.why);
                        }
                        moved
                    }
                    Err(r) => Err(r),
                }
            }
        }
    } else {
        // The body runs at another host: that host moves it.
        match resolve(s, &job.host).await {
            Ok(Some((_, at))) => {
                let to = match &target {
                    None => {
                        // Coming home: this host's balancer takes it in.
                        s.balance.incoming(jref.clone(), at, arrival.clone());
                        Target::Home
                    }
                    Some((name, addr)) => Target::Host { name: name.clone(), addr: *addr },
                };
                let msg = MoveBody { from: s.id.clone(), job: jref.clone(), to, opts, arrival };
                match peer::request(&s.dialer, at, Kind::MoveBody, &msg, Kind::Moved, control::MOVE_LIMIT).await {
                    Ok(MoveReply::Moved(f)) => Ok(f),
                    Ok(MoveReply::Refused(r)) => Err(Refusal::new(r.kind, format!("host {}: {}", job.host, r.message))),
                    Err(e) => Err(Refusal::new(RefusalKind::Unreachable, format!("host {} ({at}): {e}", job.host))),
                }
            }
            Ok(None) => Err(Refusal::new(RefusalKind::Refused, "the record names this host oddly".to_string())),
            Err(e) => Err(Refusal::new(RefusalKind::Unreachable, format!("the body's host: {e}"))),
        }
    };

    s.metrics.move_done(order.why, moved.as_ref().ok());
    let reason_words = order.reason.clone().unwrap_or_else(|| format!("{} asked", order.why.as_str()));
    let result = {
        let store = &mut *s.store();
        match moved {
            Ok(figures) => {
                let mv = NewMove {
                    from: job.host.clone(),
                    to: to_name.clone(),
                    at_ms: now_ms(),
                    total_ms: figures.total_ms,
                    downtime_ms: figures.downtime_ms,
                    why: order.why,
                    reason: order.reason.clone(),
                };
                // The job may have ended during the move: then the record
                // says so and keeps saying it.
                let rec = match store.add_move(id, &mv) {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(job = id, "recording the move: {e}");
                        store
                            .job(id)
                            .map_err(store_refusal)?
                            .ok_or_else(|| Refusal::new(RefusalKind::NotFound, format!("no job {id}")))?
                    }
                };
                s.publish(store);
                if let Some(rate) = dirty_rate(order.resident_bytes, &figures) {
                    let mut rates = s.dirty_rates();
                    // One entry per job ever moved: keep it bounded.
                    if rates.len() >= 10_000 {
                        rates.clear();
                    }
                    rates.insert(id, rate);
                }
                info!(job = id, from = %job.host, to = %to_name, total_ms = figures.total_ms, downtime_ms = figures.downtime_ms, "moved");
                Ok((rec, job.host.clone(), to_name.clone(), figures))
            }
            Err(r) => {
                warn!(job = id, from = %job.host, to = %to_name, kind = r.kind.as_str(), "move failed: {}", r.message);
                if let Err(e) = store.set_state(id, &StateChange::Running { host: job.host.clone() }, now_ms()) {
                    warn!(job = id, "restoring the record after a failed move: {e}");
                }
                s.publish(store);
                Err(r)
            }
        }
    };
    match &result {
        Ok((_, from, to, f)) => s.event(NewEvent {
            kind: EventKind::Moved,
            job: Some(jref.to_string()),
            from: Some(from.clone()),
            to: Some(to.clone()),
            reason: format!("{reason_words} (took {:.0} ms, {:.1} ms down)", f.total_ms, f.downtime_ms),
        }),
        Err(r) => s.event(NewEvent {
            kind: EventKind::MoveFailed,
            job: Some(jref.to_string()),
            from: Some(job.host.clone()),
            to: Some(to_name.clone()),
            reason: format!("{} ({}): {}", reason_words, r.kind.as_str(), r.message),
        }),
    }
    result
}
