//! Migration consideration: which local job to move where, and whether to
//! accept a job another host wants to send. Pure functions over state
//! snapshots; [`crate::Balancer`] owns the state and calls them.
//!
//! A job moves from this host to a target when all of these hold:
//!
//! 1. **Hysteresis.** This host's normalized load exceeds the target's load
//!    *with the job added* by more than `margin`, i.e. the loads differ by
//!    more than one job. Loads are normalized by cores and speed, so a job
//!    is one unit on a reference core.
//! 2. **It runs faster there.** The job's processor-sharing speed on the
//!    target (with it added) beats its speed here.
//! 3. **Residency.** The job has lived at least `min_residency` and has been
//!    on this host at least `settle`, and it does not go back to a host it
//!    left within `cool_down` (no ping-pong, not even round a triangle).
//!    Among the jobs that may move, one that has not moved within the
//!    cool-down goes first.
//! 4. **Gain beats cost.** The job's remaining run time is not known; as in
//!    Harchol-Balter and Downey's analysis of process lifetimes, a job that
//!    has lived `age` seconds is expected to live about `age` more. Moving
//!    saves `(age - transfer) * (1 - rate_here / rate_there) - freeze`
//!    seconds; that must exceed `cost_weight` times the move's own duration
//!    (transfer plus freeze, from the cost model with the job's memory and
//!    dirty rate, plus the queue of moves already leaving this host).
//!
//! Several jobs may be planned in one round when the gap is big; every
//! planned move updates the local view (this host loses the job, the
//! target gains it) before the next one is planned. Memory pressure and
//! draining bypass the hysteresis and the residency rules.
//!
//! The target re-checks each request against its own current state,
//! including arrivals it has already accepted. It refuses when the move no
//! longer pays, which is what stops a herd of hosts from sending to the same
//! idle host on the strength of the same stale entry. It redirects the
//! source when it knows, from fresh information, a host it would only pass
//! the job on to.

use crate::config::ConsiderConfig;
use crate::cost::{CostModel, MigrationCost};
use crate::gossip::{HostId, LoadInfo};
use crate::msg::{MigrateRequest, MoveKind};
use crate::rng::{shuffle, Rng};
use crate::JobId;

/// Operator mode of a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Runs jobs, sends and accepts moves.
    #[default]
    Normal,
    /// Keeps its jobs but accepts none from other hosts.
    Cordoned,
    /// Accepts nothing and moves all its jobs away.
    Draining,
}

/// Where a local job stands with respect to moving.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    /// Runs here; may be considered.
    Running,
    /// A request was sent to `to` at `at`; waiting for the reply.
    /// `basis` is when the information about `to` that the plan relied on
    /// was current, `assumed` the load `to` would have with the job.
    Requested { to: HostId, at: f64, kind: MoveKind, reason: String, basis: f64, assumed: f64 },
    /// Accepted; the daemon is moving it to `to`.
    Migrating { to: HostId, since: f64 },
}

/// What the balancer knows about one local job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    /// Runnable threads it contributes (1.0 = one busy vCPU).
    pub load: f64,
    /// Memory to move, bytes.
    pub memory: u64,
    /// Measured dirty rate, bytes per second.
    pub dirty_rate: f64,
    /// When the job started (on whatever host), this host's clock.
    pub started_at: f64,
    /// When it started running on this host.
    pub arrived_at: f64,
    /// Hosts the job left within the cool-down, and when (this host's
    /// clock), oldest first: the last one is the host it came from.
    pub left: Vec<(HostId, f64)>,
    pub state: JobState,
    /// Load and memory moves leave the job alone until then (pinned by
    /// its user: forever; it refused to move: for a while). A drain still
    /// moves it.
    pub held_until: f64,
}

impl JobRecord {
    pub fn is_moving(&self) -> bool {
        !matches!(self.state, JobState::Running)
    }

    /// Load and memory moves may take it now.
    pub fn available(&self, now: f64) -> bool {
        !self.is_moving() && now >= self.held_until
    }

    /// The host it migrated here from, if any.
    pub fn came_from(&self) -> Option<HostId> {
        self.left.last().map(|&(h, _)| h)
    }

    /// It left `host` less than `cool_down` ago: it must not go back yet.
    pub fn left_recently(&self, host: HostId, now: f64, cool_down: f64) -> bool {
        self.left.iter().any(|&(h, at)| h == host && now - at < cool_down)
    }

    /// It has not moved within `cool_down` (or never moved).
    pub fn settled(&self, now: f64, cool_down: f64) -> bool {
        self.left.last().is_none_or(|&(_, at)| now - at >= cool_down)
    }
}

/// This host as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct SelfView {
    pub host: HostId,
    /// Committed load: jobs already leaving are subtracted, accepted
    /// arrivals added.
    pub info: LoadInfo,
    pub total_mem: u64,
    pub mode: Mode,
    /// Seconds of migrations already queued on this host's link.
    pub nic_backlog: f64,
}

/// A possible target, from the load vector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub host: HostId,
    pub info: LoadInfo,
    /// Age of the information, seconds.
    pub age: f64,
}

/// One planned move.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub job: JobId,
    pub to: HostId,
    pub kind: MoveKind,
    pub reason: String,
    pub job_load: f64,
    pub memory: u64,
    pub source_rate: f64,
    pub source_load: f64,
    pub assumed_target_load: f64,
    /// Age of the information about the target the plan relied on.
    pub info_age: f64,
}

/// Why a consideration planned what it planned. Kept as data and rendered
/// only when someone reads it: a host considers ten or more times a second
/// and is balanced nearly always.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Note {
    /// Nothing considered yet.
    #[default]
    NotYet,
    NoMovableJob,
    Waiting,
    NoInformation,
    DrainingNowhere,
    MemoryShortNowhere,
    /// `load` here; the best known target `host` would be at `with_one`.
    Balanced {
        load: f64,
        host: HostId,
        with_one: f64,
    },
    NoGainYet(usize),
    Young(usize),
    Planned(usize),
    RoundLimit(usize),
    NothingPays,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Note::NotYet => write!(f, "not considered yet"),
            Note::NoMovableJob => write!(f, "no job here that could move"),
            Note::Waiting => write!(f, "waiting: outgoing moves in flight or request rate limit reached"),
            Note::NoInformation => write!(f, "no recent information about any host that accepts jobs"),
            Note::DrainingNowhere => write!(f, "draining, but no known host can take a job now"),
            Note::MemoryShortNowhere => write!(f, "memory is short but no known host has room for a job"),
            Note::Balanced { load, host, with_one } => write!(
                f,
                "balanced: load here {load:.2}, best known target host {host} would be at {with_one:.2} with one more job (a move needs a difference of more than one job)"
            ),
            Note::NoGainYet(n) => write!(
                f,
                "{n} job(s) could go to a less loaded host but the expected gain does not beat the migration cost yet"
            ),
            Note::Young(n) => write!(f, "{n} job(s) still within their residency time"),
            Note::Planned(n) => write!(f, "planned {n} move(s)"),
            Note::RoundLimit(n) => write!(f, "planned {n} moves (round limit)"),
            Note::NothingPays => write!(f, "no move pays off"),
        }
    }
}

/// Result of one consideration: the moves, and why there are no (more).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Consideration {
    pub moves: Vec<Plan>,
    pub note: Note,
    /// This host has jobs it would give away (past their residency) but
    /// knows no host that should take them.
    pub seeking: bool,
}

/// The target's verdict on a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Accept(String),
    Refuse(String),
    /// Refused because this host would only pass the job on: `to` is a
    /// clearly better destination the target knows of.
    Redirect {
        to: HostId,
        reason: String,
    },
}

impl Verdict {
    pub fn accepted(&self) -> bool {
        matches!(self, Verdict::Accept(_))
    }

    pub fn reason(&self) -> &str {
        match self {
            Verdict::Accept(r) | Verdict::Refuse(r) | Verdict::Redirect { reason: r, .. } => r,
        }
    }

    /// The host whose entry the reply should carry.
    pub fn hint(&self) -> Option<HostId> {
        match self {
            Verdict::Redirect { to, .. } => Some(*to),
            _ => None,
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// Expected seconds saved by moving a job of age `age` from rate `here` to
/// rate `there` with migration cost `c`, after waiting `backlog` seconds for
/// the link.
pub fn expected_gain(age: f64, here: f64, there: f64, c: &MigrationCost, backlog: f64) -> f64 {
    if there <= 0.0 {
        return f64::NEG_INFINITY;
    }
    let transfer = backlog + c.precopy;
    (age - transfer).max(0.0) * (1.0 - here / there) - c.freeze
}

/// Targets that fit a job's memory, least loaded (with the job) first; ties
/// keep the (shuffled) input order.
fn best_target(
    now: f64,
    job: &JobRecord,
    targets: &[Candidate],
    cfg: &ConsiderConfig,
    respect_cool_down: bool,
) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, t) in targets.iter().enumerate() {
        if respect_cool_down && job.left_recently(t.host, now, cfg.cool_down) {
            continue;
        }
        if (t.info.free_mem as f64) < job.memory as f64 + cfg.mem_headroom as f64 {
            continue;
        }
        let l = t.info.load_with(job.load);
        // Least loaded; among equally loaded ones the freshest information
        // (least likely to have been taken by someone else meanwhile).
        if best.is_none_or(|(bi, bl)| l < bl - 1e-9 || (l <= bl + 1e-9 && t.age < targets[bi].age)) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i)
}

/// What [`hysteresis_blocks`] found.
struct Blocked {
    /// Jobs past their residency (all blocked by the hysteresis).
    resident: usize,
    /// Jobs still within it.
    young: usize,
    note: Note,
}

/// Exact shortcut: if even the lightest job past its residency cannot pass
/// the hysteresis against the least loaded target, no job can. This keeps
/// the usual, balanced, case O(jobs + targets) and free of allocations.
/// `None` when some job might move (or there is no job past its residency,
/// or no target).
fn hysteresis_blocks<'a>(
    now: f64,
    my_load: f64,
    movable: impl Iterator<Item = &'a JobRecord> + Clone,
    targets: impl Iterator<Item = &'a Candidate>,
    cfg: &ConsiderConfig,
) -> Option<Blocked> {
    let resident = |j: &&JobRecord| now - j.started_at >= cfg.min_residency && now - j.arrived_at >= cfg.settle;
    let lightest = movable.clone().filter(resident).map(|j| j.load).fold(f64::INFINITY, f64::min);
    if !lightest.is_finite() {
        return None;
    }
    let (host, with_one) = targets
        .map(|t| (t.host, t.info.load_with(lightest)))
        .fold(None, |a: Option<(HostId, f64)>, b| if a.is_some_and(|a| a.1 <= b.1) { a } else { Some(b) })?;
    if my_load - with_one > cfg.margin {
        return None;
    }
    let resident_n = movable.clone().filter(resident).count();
    Some(Blocked {
        resident: resident_n,
        young: movable.count() - resident_n,
        note: Note::Balanced { load: my_load, host, with_one },
    })
}

/// The best move found so far in a planning round.
struct Pick {
    /// The job has not moved within the cool-down.
    settled: bool,
    /// Expected gain minus the price of the move, seconds.
    score: f64,
    job: usize,
    target: usize,
    gain: f64,
    cost: MigrationCost,
}

impl Pick {
    /// A job that moved here within the cool-down goes only if no settled
    /// job can: moving it again would waste its last move, and chains of
    /// such moves are how jobs end up circling.
    fn beats(&self, other: &Pick) -> bool {
        (self.settled, self.score) > (other.settled, other.score)
    }
}

/// Working state of one planning round: every committed move updates this
/// host's and the target's view before the next move is planned.
struct Planning {
    out: Consideration,
    my: LoadInfo,
    backlog: f64,
    targets: Vec<Candidate>,
    taken: Vec<JobId>,
}

impl Planning {
    fn commit(&mut self, j: &JobRecord, ti: usize, kind: MoveKind, reason: String, c: &MigrationCost) {
        let t = &mut self.targets[ti];
        self.out.moves.push(Plan {
            job: j.id,
            to: t.host,
            kind,
            reason,
            job_load: j.load,
            memory: j.memory,
            source_rate: self.my.rate_with(0.0),
            source_load: self.my.load(),
            assumed_target_load: t.info.load_with(j.load),
            info_age: t.age,
        });
        self.my.runnable = (self.my.runnable - j.load).max(0.0);
        self.my.free_mem = self.my.free_mem.saturating_add(j.memory);
        t.info.runnable += j.load;
        t.info.free_mem = t.info.free_mem.saturating_sub(j.memory);
        self.backlog += c.total();
        self.taken.push(j.id);
    }

    /// Memory and drain moves: `j` goes to the least loaded target with
    /// room, if there is one (draining ignores the cool-down: the job
    /// cannot stay).
    fn place(
        &mut self,
        now: f64,
        j: &JobRecord,
        cfg: &ConsiderConfig,
        cost: &CostModel,
        kind: MoveKind,
        reason: impl FnOnce(&LoadInfo, &Candidate) -> String,
    ) {
        let Some(ti) = best_target(now, j, &self.targets, cfg, kind != MoveKind::Drain) else {
            return;
        };
        let why = reason(&self.my, &self.targets[ti]);
        self.commit(j, ti, kind, why, &cost.estimate(j.memory, j.dirty_rate));
    }

    fn full(&self, budget: usize) -> bool {
        self.out.moves.len() >= budget
    }
}

/// Plan up to `budget` moves.
#[allow(clippy::too_many_arguments)]
pub fn plan_moves(
    now: f64,
    me: &SelfView,
    jobs: &[JobRecord],
    candidates: &[Candidate],
    cfg: &ConsiderConfig,
    cost: &CostModel,
    budget: usize,
    rng: &mut dyn Rng,
) -> Consideration {
    // Held jobs wait, draining or not: the host sets how long (a drain
    // releases pins and asks a job that declined again soon).
    if jobs.iter().all(|j| !j.available(now)) {
        return Consideration { moves: Vec::new(), note: Note::NoMovableJob, seeking: false };
    }
    if budget == 0 {
        return Consideration { moves: Vec::new(), note: Note::Waiting, seeking: false };
    }
    let usable = |c: &&Candidate| c.host != me.host && c.info.accepting && c.age <= cfg.max_info_age;
    let memory_low = (me.info.free_mem as f64) < cfg.mem_low * me.total_mem as f64;
    // The usual case, decided before copying and shuffling anything.
    if me.mode == Mode::Normal && !memory_low {
        let movable = jobs.iter().filter(|j| j.available(now));
        if let Some(b) = hysteresis_blocks(now, me.info.load(), movable, candidates.iter().filter(usable), cfg) {
            return Consideration { moves: Vec::new(), note: b.note, seeking: true };
        }
    }
    let mut targets: Vec<Candidate> = candidates.iter().filter(usable).copied().collect();
    if targets.is_empty() {
        return Consideration {
            moves: Vec::new(),
            note: Note::NoInformation,
            seeking: jobs.iter().any(|j| j.available(now) && now - j.started_at >= cfg.min_residency),
        };
    }
    // Random order: equal targets are then chosen at random, so hosts
    // looking at the same idle host do not all pick it.
    shuffle(&mut targets, rng);
    let mut st =
        Planning { out: Consideration::default(), my: me.info, backlog: me.nic_backlog, targets, taken: Vec::new() };

    // 1. Draining: everything goes, to the least loaded host that fits.
    if me.mode == Mode::Draining {
        for j in jobs.iter().filter(|j| j.available(now)) {
            if st.full(budget) {
                break;
            }
            st.place(now, j, cfg, cost, MoveKind::Drain, |_, t| {
                format!(
                    "drain: host is being drained; job {} ({:.0} MiB) goes to host {} (load {:.2} with it)",
                    j.id,
                    mib(j.memory),
                    t.host,
                    t.info.load_with(j.load)
                )
            });
        }
        if st.out.moves.is_empty() {
            st.out.note = Note::DrainingNowhere;
        }
        return st.out;
    }

    // 2. Memory pressure: move the biggest jobs until enough is free.
    let low = cfg.mem_low * me.total_mem as f64;
    if memory_low {
        let goal = cfg.mem_target * me.total_mem as f64;
        let mut order: Vec<&JobRecord> = jobs.iter().filter(|j| j.available(now)).collect();
        order.sort_by(|a, b| b.memory.cmp(&a.memory).then(a.id.cmp(&b.id)));
        for j in order {
            if st.full(budget) || (st.my.free_mem as f64) >= goal {
                break;
            }
            st.place(now, j, cfg, cost, MoveKind::Memory, |my, t| {
                format!(
                    "memory: {:.0} MiB free is below the {:.0} MiB watermark; job {} ({:.0} MiB) goes to host {} ({:.0} MiB free, load {:.2} with it)",
                    mib(my.free_mem),
                    low / (1u64 << 20) as f64,
                    j.id,
                    mib(j.memory),
                    t.host,
                    mib(t.info.free_mem),
                    t.info.load_with(j.load)
                )
            });
        }
        if (st.my.free_mem as f64) < low && st.out.moves.is_empty() {
            st.out.note = Note::MemoryShortNowhere;
        }
    }

    // 3. Load.
    let (mut young, mut no_gain, mut blocked) = (0usize, 0usize, 0usize);
    let mut balanced_note = None;
    while !st.full(budget) {
        let my_load = st.my.load();
        let my_rate = st.my.rate_with(0.0);
        let mut best: Option<Pick> = None;
        (young, no_gain, blocked) = (0, 0, 0);
        let movable = jobs.iter().filter(|j| j.available(now) && !st.taken.contains(&j.id));
        if let Some(b) = hysteresis_blocks(now, my_load, movable, st.targets.iter(), cfg) {
            (blocked, young) = (b.resident, b.young);
            balanced_note.get_or_insert(b.note);
            break;
        }
        for (ji, j) in jobs.iter().enumerate() {
            if !j.available(now) || st.taken.contains(&j.id) {
                continue;
            }
            let age = now - j.started_at;
            if age < cfg.min_residency || now - j.arrived_at < cfg.settle {
                young += 1;
                continue;
            }
            let Some(ti) = best_target(now, j, &st.targets, cfg, true) else {
                blocked += 1;
                continue;
            };
            let t = &st.targets[ti];
            let lt = t.info.load_with(j.load);
            let tr = t.info.rate_with(j.load);
            if my_load - lt <= cfg.margin || tr <= my_rate * (1.0 + 1e-9) {
                balanced_note.get_or_insert(Note::Balanced { load: my_load, host: t.host, with_one: lt });
                blocked += 1;
                continue;
            }
            let c = cost.estimate(j.memory, j.dirty_rate);
            let gain = expected_gain(age, my_rate, tr, &c, st.backlog);
            let price = cfg.cost_weight * c.total();
            if gain <= price {
                no_gain += 1;
                continue;
            }
            let pick = Pick {
                settled: j.settled(now, cfg.cool_down),
                score: gain - price,
                job: ji,
                target: ti,
                gain,
                cost: c,
            };
            if best.as_ref().is_none_or(|b| pick.beats(b)) {
                best = Some(pick);
            }
        }
        let Some(Pick { job: ji, target: ti, gain, cost: c, .. }) = best else {
            break;
        };
        let j = &jobs[ji];
        let t = st.targets[ti];
        let reason = format!(
            "load: {:.2} here vs {:.2} on host {} ({:.2} with this job, info {:.2}s old); job {} (age {:.1}s, {:.0} MiB) speeds up from {:.2} to {:.2}; move ~{:.3}s incl. {:.1}ms freeze, expected gain {:.2}s",
            my_load,
            t.info.load(),
            t.host,
            t.info.load_with(j.load),
            t.age,
            j.id,
            now - j.started_at,
            mib(j.memory),
            my_rate,
            t.info.rate_with(j.load),
            c.total(),
            c.freeze * 1e3,
            gain
        );
        st.commit(j, ti, MoveKind::Load, reason, &c);
    }
    st.out.seeking = st.out.moves.is_empty() && blocked > 0 && no_gain == 0;
    if st.out.note == Note::NotYet {
        st.out.note = if st.full(budget) {
            Note::RoundLimit(st.out.moves.len())
        } else if no_gain > 0 {
            Note::NoGainYet(no_gain)
        } else if young > 0 && blocked == 0 {
            Note::Young(young)
        } else if let Some(n) = balanced_note {
            n
        } else if !st.out.moves.is_empty() {
            Note::Planned(st.out.moves.len())
        } else {
            Note::NothingPays
        };
    }
    st.out
}

/// The target's re-check of a request. `me` is this host's committed view
/// (arrivals already accepted count as here); `better` is the least loaded
/// host this target knows of recently (other than itself and the source):
/// if this host would pass the job on to it anyway, it redirects the source
/// there instead of accepting and moving the job twice.
pub fn check_arrival(me: &SelfView, req: &MigrateRequest, cfg: &ConsiderConfig, better: Option<&Candidate>) -> Verdict {
    if me.mode != Mode::Normal || !me.info.accepting {
        return Verdict::Refuse(format!("host {} is not accepting jobs ({:?})", me.host, me.mode));
    }
    let need = req.memory as f64 + cfg.mem_headroom as f64;
    if (me.info.free_mem as f64) < need {
        return Verdict::Refuse(format!(
            "not enough memory: {:.0} MiB free, job needs {:.0} MiB plus {:.0} MiB headroom",
            mib(me.info.free_mem),
            mib(req.memory),
            mib(cfg.mem_headroom)
        ));
    }
    let after = me.info.load_with(req.job_load);
    let rate = me.info.rate_with(req.job_load);
    match req.kind {
        MoveKind::Load => {
            if req.source_load - after <= cfg.margin {
                return Verdict::Refuse(format!(
                    "no longer worth it: load here would be {:.2} with job {}, source is at {:.2}; a move needs a difference of more than one job",
                    after, req.job, req.source_load
                ));
            }
            if rate <= req.source_rate * (1.0 + 1e-9) {
                return Verdict::Refuse(format!(
                    "job {} would run at {:.2} here, not faster than {:.2} at the source",
                    req.job, rate, req.source_rate
                ));
            }
            if let Some(b) = better {
                let lb = b.info.load_with(req.job_load);
                if b.info.accepting && after - lb > cfg.margin && b.info.rate_with(req.job_load) > rate {
                    return Verdict::Redirect {
                        to: b.host,
                        reason: format!(
                            "redirect: load here would be {:.2} with job {}, and host {} is at {:.2} (info {:.2}s old); this host would only pass the job on",
                            after,
                            req.job,
                            b.host,
                            b.info.load(),
                            b.age
                        ),
                    };
                }
            }
            Verdict::Accept(format!(
                "accepted job {}: load here {:.2} with it vs {:.2} at the source; speed {:.2} vs {:.2}",
                req.job, after, req.source_load, rate, req.source_rate
            ))
        }
        MoveKind::Memory | MoveKind::Drain => {
            // No hysteresis, but refuse if the source's picture of this host
            // is badly out of date (others got here first).
            let unit = req.job_load / me.info.capacity();
            if after > req.assumed_target_load + unit + cfg.margin {
                return Verdict::Refuse(format!(
                    "load here would be {:.2} with job {}, the source expected {:.2}: pick another host",
                    after, req.job, req.assumed_target_load
                ));
            }
            Verdict::Accept(format!(
                "accepted job {} ({} move): load here {:.2} with it, {:.0} MiB free",
                req.job,
                req.kind.as_str(),
                after,
                mib(me.info.free_mem)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GIB, MIB};
    use crate::gossip::WireEntry;
    use crate::rng::SplitMix64;

    fn info(runnable: f64) -> LoadInfo {
        LoadInfo { runnable, cores: 1, speed: 1.0, free_mem: 8 * GIB, accepting: true, seeking: false }
    }

    fn me(runnable: f64) -> SelfView {
        SelfView { host: 0, info: info(runnable), total_mem: 16 * GIB, mode: Mode::Normal, nic_backlog: 0.0 }
    }

    fn job(id: JobId, started_at: f64) -> JobRecord {
        JobRecord {
            id,
            load: 1.0,
            memory: 64 * MIB,
            dirty_rate: 0.0,
            started_at,
            arrived_at: started_at,
            left: Vec::new(),
            state: JobState::Running,
            held_until: f64::NEG_INFINITY,
        }
    }

    fn cand(host: HostId, runnable: f64) -> Candidate {
        Candidate { host, info: info(runnable), age: 0.1 }
    }

    fn plan(now: f64, me: &SelfView, jobs: &[JobRecord], c: &[Candidate]) -> Consideration {
        let mut rng = SplitMix64::new(5);
        plan_moves(now, me, jobs, c, &ConsiderConfig::default(), &CostModel::default(), 4, &mut rng)
    }

    #[test]
    fn hysteresis_needs_more_than_one_job_of_difference() {
        let jobs = vec![job(1, 0.0), job(2, 0.0)];
        // 2 here vs 1 there: moving would just swap the roles.
        let c = plan(100.0, &me(2.0), &jobs, &[cand(9, 1.0)]);
        assert!(c.moves.is_empty(), "{c:?}");
        assert!(matches!(c.note, Note::Balanced { host: 9, .. }), "{}", c.note);
        assert!(c.note.to_string().starts_with("balanced: load here 2.00"), "{}", c.note);
        // 2 here vs 0 there: move one.
        let c = plan(100.0, &me(2.0), &jobs, &[cand(9, 0.0)]);
        assert_eq!(c.moves.len(), 1, "{c:?}");
        assert_eq!(c.moves[0].to, 9);
        assert_eq!(c.moves[0].kind, MoveKind::Load);
        assert!(c.moves[0].reason.starts_with("load:"));
        // 3 here vs 1 there: move one, then stop (2 vs 2).
        let jobs3 = vec![job(1, 0.0), job(2, 0.0), job(3, 0.0)];
        let c = plan(100.0, &me(3.0), &jobs3, &[cand(9, 1.0)]);
        assert_eq!(c.moves.len(), 1, "{c:?}");
    }

    #[test]
    fn big_gap_gives_several_moves_spread_over_targets() {
        let jobs: Vec<JobRecord> = (1..=8).map(|i| job(i, 0.0)).collect();
        let c = plan(100.0, &me(8.0), &jobs, &[cand(7, 0.0), cand(9, 0.0)]);
        assert_eq!(c.moves.len(), 4, "{c:?}");
        // 8 -> 4 here, 2 each on the targets: no further move would pass.
        let to7 = c.moves.iter().filter(|m| m.to == 7).count();
        assert_eq!(to7, 2);
        // Each planned move saw the effect of the previous ones.
        assert!(c.moves[1].source_load < c.moves[0].source_load);
    }

    #[test]
    fn residency_protects_young_jobs() {
        let jobs = vec![job(1, 99.8), job(2, 99.8)];
        let c = plan(100.0, &me(2.0), &jobs, &[cand(9, 0.0)]);
        assert!(c.moves.is_empty());
        assert_eq!(c.note, Note::Young(2), "{}", c.note);
        // Old enough: moves.
        let c = plan(100.6, &me(2.0), &jobs, &[cand(9, 0.0)]);
        assert_eq!(c.moves.len(), 1);
        // Old jobs that have only just arrived here settle first.
        let arrived: Vec<JobRecord> =
            [1, 2].map(|id| JobRecord { arrived_at: 99.8, left: vec![(5, 99.8)], ..job(id, 0.0) }).to_vec();
        let c = plan(100.0, &me(2.0), &arrived, &[cand(9, 0.0)]);
        assert_eq!(c.note, Note::Young(2), "{}", c.note);
        let c = plan(100.4, &me(2.0), &arrived, &[cand(9, 0.0)]);
        assert_eq!(c.moves.len(), 1, "{c:?}");
    }

    #[test]
    fn cost_must_be_paid_back() {
        // A 4 GiB job that is 1 s old: the transfer alone takes ~4.3 s.
        let mut big = job(1, 99.0);
        big.memory = 4 * GIB;
        let jobs = vec![big.clone(), {
            let mut b = big.clone();
            b.id = 2;
            b
        }];
        let c = plan(100.0, &me(2.0), &jobs, &[cand(9, 0.0)]);
        assert!(c.moves.is_empty(), "{c:?}");
        assert_eq!(c.note, Note::NoGainYet(2), "{}", c.note);
        // Once it has run for a minute the move pays.
        let c = plan(160.0, &me(2.0), &jobs, &[cand(9, 0.0)]);
        assert_eq!(c.moves.len(), 1);
    }

    #[test]
    fn no_ping_pong_within_cool_down() {
        let mut j = job(1, 0.0);
        j.arrived_at = 95.0;
        j.left = vec![(9, 95.0)];
        let jobs = vec![j.clone(), job(2, 0.0), job(3, 0.0)];
        // Host 9 is now idle, but job 1 just came from there; another job
        // goes instead.
        let c = plan(100.0, &me(3.0), &jobs, &[cand(9, 0.0)]);
        assert_eq!(c.moves.len(), 1);
        assert_ne!(c.moves[0].job, 1);
        // If job 1 is the only candidate, nothing moves to host 9...
        let only = vec![j.clone(), {
            let mut k = j.clone();
            k.id = 4;
            k
        }];
        let c = plan(100.0, &me(2.0), &only, &[cand(9, 0.0)]);
        assert!(c.moves.is_empty(), "{c:?}");
        // ... but a third host is fine, and after the cool-down so is 9.
        let c = plan(100.0, &me(2.0), &only, &[cand(9, 0.0), cand(8, 0.0)]);
        assert_eq!(c.moves.len(), 1);
        assert_eq!(c.moves[0].to, 8);
        let c = plan(116.0, &me(2.0), &only, &[cand(9, 0.0)]);
        assert_eq!(c.moves.len(), 1);
        // Nor round a triangle: it left 7 before it left 9.
        let mut k = j.clone();
        k.left = vec![(7, 92.0), (9, 95.0)];
        let c = plan(
            100.0,
            &me(2.0),
            &[k.clone(), {
                let mut x = k.clone();
                x.id = 4;
                x
            }],
            &[cand(7, 0.0)],
        );
        assert!(c.moves.is_empty(), "{c:?}");
        let c = plan(
            113.0,
            &me(2.0),
            &[k.clone(), {
                let mut x = k;
                x.id = 4;
                x
            }],
            &[cand(7, 0.0)],
        );
        assert_eq!(c.moves.len(), 1, "7 was left 21 s ago: {c:?}");
    }

    #[test]
    fn a_job_that_just_moved_is_the_last_to_move_again() {
        // Job 1 arrived from host 5 a moment ago; job 2 has been here all
        // along. Both could go to host 9 with the same gain: job 2 goes.
        let mut j = job(1, 0.0);
        j.arrived_at = 99.0;
        j.left = vec![(5, 99.0)];
        let c = plan(100.0, &me(2.0), &[j.clone(), job(2, 0.0)], &[cand(9, 0.0)]);
        assert_eq!(c.moves.len(), 1, "{c:?}");
        assert_eq!(c.moves[0].job, 2);
        // If it is the only job that may go, it goes.
        let mut k = j.clone();
        k.id = 3;
        let c = plan(100.0, &me(2.0), &[j, k], &[cand(9, 0.0)]);
        assert_eq!(c.moves.len(), 1, "{c:?}");
    }

    #[test]
    fn memory_trigger_moves_jobs_even_when_balanced() {
        let mut m = me(1.0);
        m.info.free_mem = 200 * MIB; // below 5% of 16 GiB
        let mut j = job(1, 99.9); // young, and loads are equal
        j.memory = 2 * GIB;
        let c = plan(100.0, &m, &[j], &[cand(9, 1.0)]);
        assert_eq!(c.moves.len(), 1, "{c:?}");
        assert_eq!(c.moves[0].kind, MoveKind::Memory);
        assert!(c.moves[0].reason.starts_with("memory:"));
        // A target without room is not used.
        let mut full = cand(9, 0.0);
        full.info.free_mem = GIB;
        let mut j = job(1, 0.0);
        j.memory = 2 * GIB;
        let c = plan(100.0, &m, &[j], &[full]);
        assert!(c.moves.is_empty());
    }

    #[test]
    fn draining_moves_everything() {
        let mut m = me(1.0);
        m.mode = Mode::Draining;
        let jobs = vec![job(1, 99.9)];
        let c = plan(100.0, &m, &jobs, &[cand(9, 3.0)]);
        assert_eq!(c.moves.len(), 1);
        assert_eq!(c.moves[0].kind, MoveKind::Drain);
    }

    #[test]
    fn stale_and_non_accepting_hosts_are_not_targets() {
        let jobs = vec![job(1, 0.0), job(2, 0.0)];
        let mut stale = cand(9, 0.0);
        stale.age = 60.0;
        let mut cordoned = cand(8, 0.0);
        cordoned.info.accepting = false;
        let c = plan(100.0, &me(2.0), &jobs, &[stale, cordoned]);
        assert!(c.moves.is_empty());
    }

    #[test]
    fn heterogeneous_hosts_use_speed_and_cores() {
        // A 4-core host with 2 jobs is a fine target for a 1-core host
        // with 2 jobs (the job gets a whole core there).
        let jobs = vec![job(1, 0.0), job(2, 0.0)];
        let mut quad = cand(9, 2.0);
        quad.info.cores = 4;
        let c = plan(100.0, &me(2.0), &jobs, &[quad]);
        assert_eq!(c.moves.len(), 1);
        // But a 4-core host with 3 jobs moving one to an idle 4-core host
        // gains nothing: every job already has a core.
        let mut m = me(3.0);
        m.info.cores = 4;
        let mut idle = cand(9, 0.0);
        idle.info.cores = 4;
        let jobs3 = vec![job(1, 0.0), job(2, 0.0), job(3, 0.0)];
        let c = plan(100.0, &m, &jobs3, &[idle]);
        assert!(c.moves.is_empty(), "{c:?}");
        // A twice-as-fast idle host is worth it even for a lone job.
        let mut fast = cand(9, 0.0);
        fast.info.speed = 2.5;
        let c = plan(100.0, &me(1.0), &[job(1, 0.0)], &[fast]);
        assert_eq!(c.moves.len(), 1);
    }

    fn request(source_runnable: f64, kind: MoveKind) -> MigrateRequest {
        let src = info(source_runnable);
        MigrateRequest {
            job: 5,
            kind,
            job_load: 1.0,
            memory: 64 * MIB,
            source: WireEntry { host: 3, age: 0.0, info: src },
            source_rate: src.rate_with(0.0),
            source_load: src.load(),
            assumed_target_load: 1.0,
        }
    }

    fn check_arrival_t(me: &SelfView, req: &MigrateRequest, cfg: &ConsiderConfig) -> Verdict {
        check_arrival(me, req, cfg, None)
    }

    #[test]
    fn target_redirects_instead_of_forwarding() {
        let cfg = ConsiderConfig::default();
        // Source at 10, target at 1 (after: 2), the target knows an idle host.
        let idle = cand(7, 0.0);
        let v = check_arrival(&me(1.0), &request(10.0, MoveKind::Load), &cfg, Some(&idle));
        assert!(matches!(v, Verdict::Redirect { to: 7, .. }), "{v:?}");
        assert!(!v.accepted());
        // Known host at 1: the target would not pass the job on; accept.
        let one = cand(7, 1.0);
        let v = check_arrival(&me(1.0), &request(10.0, MoveKind::Load), &cfg, Some(&one));
        assert!(v.accepted(), "{v:?}");
    }

    #[test]
    fn seeking_when_loaded_and_no_taker_known() {
        let jobs = vec![job(1, 0.0), job(2, 0.0), job(3, 0.0)];
        let c = plan(100.0, &me(3.0), &jobs, &[cand(9, 2.0)]);
        assert!(c.moves.is_empty());
        assert!(c.seeking);
        let c = plan(100.0, &me(3.0), &jobs, &[cand(9, 0.0)]);
        assert!(!c.moves.is_empty());
        assert!(!c.seeking);
    }

    #[test]
    fn target_refuses_when_it_no_longer_pays() {
        let cfg = ConsiderConfig::default();
        // Idle target: accept.
        let v = check_arrival_t(&me(0.0), &request(2.0, MoveKind::Load), &cfg);
        assert!(v.accepted(), "{v:?}");
        // Someone else's job got here first (reservation counted): 2 vs 1+1.
        let v = check_arrival_t(&me(1.0), &request(2.0, MoveKind::Load), &cfg);
        assert!(!v.accepted());
        assert!(v.reason().contains("no longer worth it"), "{}", v.reason());
        // Cordoned.
        let mut c = me(0.0);
        c.mode = Mode::Cordoned;
        assert!(!check_arrival_t(&c, &request(5.0, MoveKind::Load), &cfg).accepted());
        // Memory.
        let mut small = me(0.0);
        small.info.free_mem = 100 * MIB;
        let v = check_arrival_t(&small, &request(5.0, MoveKind::Load), &cfg);
        assert!(v.reason().contains("memory"), "{}", v.reason());
    }

    #[test]
    fn target_accepts_memory_moves_without_hysteresis_but_not_herds() {
        let cfg = ConsiderConfig::default();
        // Source at 1, target at 1: a load move would be refused...
        assert!(!check_arrival_t(&me(1.0), &request(1.0, MoveKind::Load), &cfg).accepted());
        // ... a memory move the source planned with this target at 2.0 is fine.
        let mut r = request(1.0, MoveKind::Memory);
        r.assumed_target_load = 2.0;
        assert!(check_arrival_t(&me(1.0), &r, &cfg).accepted());
        // But if the target has since filled up, refuse.
        assert!(!check_arrival_t(&me(4.0), &r, &cfg).accepted());
    }
}
