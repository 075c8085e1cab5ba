//! The running balancer of one host: owns the load calculation, the load
//! vector, the table of local jobs and the accepted arrivals, and turns
//! inputs (time, samples, job events, messages, random numbers) into
//! [`Action`]s. It does no I/O and reads no clock.
//!
//! How the daemon drives it:
//!
//! ```text
//! let mut b = Balancer::new(my_id, config);        // times: f64 seconds, monotonic
//! act(b.join(now, &seed_hosts, &mut rng));          // contact any known host
//! every tick (e.g. 100 ms):
//!     b.sample(now, runnable_threads);
//!     b.set_free_memory(free_bytes);
//!     act(b.tick(now, &mut rng));                   // gossip, expiry, consideration
//! on a message from a peer:  act(b.on_message(now, peer, msg, &mut rng));
//! on job events:             b.job_started / job_arrived / job_exited /
//!                            act(b.migration_done(...)) / b.migration_aborted
//! where act() sends Action::Send messages, starts Action::Migrate moves and
//! logs every reason.
//! ```

use crate::config::Config;
use crate::consider::{check_arrival, plan_moves, Candidate, JobRecord, JobState, Mode, Note, SelfView, Verdict};
use crate::gossip::{Entry, HostId, LoadInfo, LoadVector, WireEntry};
use crate::load::LoadCalc;
use crate::msg::{Message, MigrateReply, MigrateRequest, MoveKind};
use crate::rng::Rng;
use crate::JobId;

/// What the daemon must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send `msg` to host `to`.
    Send { to: HostId, msg: Message },
    /// Start moving `job` to `to` (the target has accepted). Report the end
    /// with [`Balancer::migration_done`]. `left` goes with the job and into
    /// [`JobInfo::left`] on the target: it keeps the job from going back to
    /// any of these hosts within the cool-down.
    Migrate { job: JobId, to: HostId, kind: MoveKind, reason: String, left: Vec<(HostId, f64)> },
    /// Host `by` refused to take `job`; nothing to do but log it.
    Refused { job: JobId, by: HostId, reason: String },
}

/// A job as the daemon describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobInfo {
    pub id: JobId,
    /// Runnable threads it contributes: its vCPU count for a CPU-bound job,
    /// less if it is often idle (the daemon may refine this over time with
    /// [`Balancer::update_job`]).
    pub load: f64,
    /// Memory that would have to move, bytes.
    pub memory: u64,
    /// Measured dirty rate, bytes per second.
    pub dirty_rate: f64,
    /// Seconds the job has already lived (0 for a new job; the age carried
    /// over for a job arriving by migration).
    pub age: f64,
    /// For a job arriving by migration: the `left` of the source's
    /// [`Action::Migrate`], hosts it left recently and how many seconds ago.
    pub left: Vec<(HostId, f64)>,
}

#[derive(Clone, Debug, PartialEq)]
struct Reservation {
    job: JobId,
    from: HostId,
    load: f64,
    memory: u64,
    until: f64,
}

/// Counters, for `mosvm top` and the simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub gossip_sent: u64,
    pub gossip_received: u64,
    pub requests_sent: u64,
    pub requests_accepted: u64,
    pub requests_refused: u64,
    pub requests_timed_out: u64,
    pub arrivals_accepted: u64,
    pub arrivals_refused: u64,
    pub moves_done: u64,
    pub moves_failed: u64,
}

/// The balancer of one host.
#[derive(Clone, Debug)]
pub struct Balancer {
    id: HostId,
    cfg: Config,
    load: LoadCalc,
    vector: LoadVector,
    jobs: Vec<JobRecord>,
    reservations: Vec<Reservation>,
    free_mem: u64,
    mode: Mode,
    seeds: Vec<HostId>,
    next_gossip: Option<f64>,
    backoff: Vec<(HostId, f64)>,
    note: Note,
    seeking: bool,
    recent_requests: Vec<f64>,
    stats: Stats,
    scratch: Vec<Candidate>,
    /// Entries current before this time proved stale (see the refusal
    /// handling in `on_message`); planning ignores them.
    distrust_before: f64,
}

impl Balancer {
    /// A balancer for host `id`. Free memory starts at the configured total.
    pub fn new(id: HostId, cfg: Config) -> Self {
        Balancer {
            id,
            load: LoadCalc::new(cfg.load.clone()),
            vector: LoadVector::new(id, cfg.gossip.vector_size),
            jobs: Vec::new(),
            reservations: Vec::new(),
            free_mem: cfg.host.memory,
            mode: Mode::Normal,
            seeds: Vec::new(),
            next_gossip: None,
            backoff: Vec::new(),
            note: Note::default(),
            seeking: false,
            recent_requests: Vec::new(),
            stats: Stats::default(),
            scratch: Vec::new(),
            distrust_before: f64::NEG_INFINITY,
            cfg,
        }
    }

    pub fn id(&self) -> HostId {
        self.id
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Why the last consideration did (not) move anything.
    pub fn note(&self) -> &Note {
        &self.note
    }

    /// The local jobs and their state.
    pub fn jobs(&self) -> &[JobRecord] {
        &self.jobs
    }

    /// What this host knows about others.
    pub fn known_hosts(&self) -> &[Entry] {
        self.vector.entries()
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// (exported, local) smoothed runnable threads, before commitments.
    pub fn raw_load(&self) -> (f64, f64) {
        (self.load.exported(), self.load.local())
    }

    /// The link bandwidth estimate moved (the daemon measured a migration).
    pub fn set_bandwidth(&mut self, bytes_per_sec: f64) {
        if bytes_per_sec.is_finite() && bytes_per_sec > 0.0 {
            self.cfg.cost.bandwidth = bytes_per_sec;
        }
    }

    /// Operator mode: normal, cordoned (no arrivals) or draining (no
    /// arrivals, move everything out).
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// Current free memory for jobs, bytes.
    pub fn set_free_memory(&mut self, bytes: u64) {
        self.free_mem = bytes;
    }

    /// One tick's sample of runnable threads (job vCPUs plus other load).
    pub fn sample(&mut self, now: f64, runnable: f64) {
        self.load.sample(now, runnable);
    }

    fn outgoing(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.iter().filter(|j| j.is_moving())
    }

    /// `base` with accepted arrivals added and leaving jobs removed. For this
    /// host's own planning a job counts as gone as soon as it was requested
    /// (so it is not offered twice); for what others see and for accepting
    /// arrivals only once the target accepted it (a request may be refused).
    fn committed(&self, base: f64, requested_gone: bool) -> f64 {
        let out: f64 = self
            .jobs
            .iter()
            .filter(|j| match j.state {
                JobState::Running => false,
                JobState::Requested { .. } => requested_gone,
                JobState::Migrating { .. } => true,
            })
            .map(|j| j.load)
            .sum();
        let inc: f64 = self.reservations.iter().map(|r| r.load).sum();
        (base - out + inc).max(0.0)
    }

    fn committed_free_mem(&self, count_outgoing: bool) -> u64 {
        let reserved: u64 = self.reservations.iter().map(|r| r.memory).sum();
        let leaving: u64 = if count_outgoing { self.outgoing().map(|j| j.memory).sum() } else { 0 };
        self.free_mem.saturating_sub(reserved).saturating_add(leaving)
    }

    fn info(&self, runnable: f64, free_mem: u64) -> LoadInfo {
        LoadInfo {
            runnable,
            cores: self.cfg.host.cores,
            speed: self.cfg.host.speed,
            free_mem,
            accepting: self.mode == Mode::Normal,
            seeking: self.seeking,
        }
    }

    /// What this host tells others: the exported load, with moves it has
    /// committed to already applied.
    pub fn own_info(&self) -> LoadInfo {
        self.info(self.committed(self.load.exported(), false), self.committed_free_mem(false))
    }

    /// Own entry as sent on the wire (age 0).
    pub fn own_entry(&self) -> WireEntry {
        WireEntry { host: self.id, age: 0.0, info: self.own_info() }
    }

    fn self_view(&self, exported: bool) -> SelfView {
        let base = if exported { self.load.exported() } else { self.load.local() };
        let backlog = self.outgoing().map(|j| self.cfg.cost.estimate(j.memory, j.dirty_rate).total()).sum();
        SelfView {
            host: self.id,
            info: self.info(self.committed(base, !exported), self.committed_free_mem(!exported)),
            total_mem: self.cfg.host.memory,
            mode: self.mode,
            nic_backlog: backlog,
        }
    }

    fn gossip_msg(&self, now: f64, want_reply: bool, rng: &mut dyn Rng) -> Message {
        Message::Gossip {
            entries: self.vector.window(
                now,
                self.own_entry(),
                self.cfg.gossip.window,
                self.cfg.gossip.fresh_age,
                self.cfg.consider.margin,
                rng,
            ),
            want_reply,
        }
    }

    /// Join the cluster by contacting any of `seeds` (known hosts). Seeds
    /// are remembered and contacted again whenever the vector runs empty.
    pub fn join(&mut self, now: f64, seeds: &[HostId], rng: &mut dyn Rng) -> Vec<Action> {
        self.seeds = seeds.iter().copied().filter(|&s| s != self.id).collect();
        self.seeds.sort_unstable();
        self.seeds.dedup();
        if self.seeds.is_empty() {
            return Vec::new();
        }
        let to = self.seeds[rng.below(self.seeds.len())];
        self.stats.gossip_sent += 1;
        vec![Action::Send { to, msg: self.gossip_msg(now, true, rng) }]
    }

    /// Replace the seed hosts (e.g. with the current members, as the
    /// membership layer sees them) without sending anything.
    pub fn set_seeds(&mut self, seeds: &[HostId]) {
        self.seeds = seeds.iter().copied().filter(|&s| s != self.id).collect();
        self.seeds.sort_unstable();
        self.seeds.dedup();
    }

    /// A host just joined: send it our window at once (it answers with its
    /// own), so both know each other without waiting for gossip to come
    /// round.
    pub fn greet(&mut self, now: f64, host: HostId, rng: &mut dyn Rng) -> Vec<Action> {
        if host == self.id {
            return Vec::new();
        }
        self.stats.gossip_sent += 1;
        vec![Action::Send { to: host, msg: self.gossip_msg(now, true, rng) }]
    }

    /// Forget a host (it failed or left): its entry, and as a seed.
    pub fn forget(&mut self, host: HostId) {
        self.vector.remove(host);
        self.seeds.retain(|&s| s != host);
    }

    fn record(&self, now: f64, info: &JobInfo, from: Option<HostId>) -> JobRecord {
        let cool_down = self.cfg.consider.cool_down;
        let mut left: Vec<(HostId, f64)> = info
            .left
            .iter()
            .filter(|&&(h, ago)| h != self.id && ago.is_finite() && ago >= 0.0 && ago < cool_down)
            .map(|&(h, ago)| (h, now - ago))
            .collect();
        left.sort_by(|a, b| a.1.total_cmp(&b.1));
        left.extend(from.map(|h| (h, now)));
        JobRecord {
            id: info.id,
            load: info.load.max(0.0),
            memory: info.memory,
            dirty_rate: info.dirty_rate,
            started_at: now - info.age.max(0.0),
            arrived_at: now,
            left,
            state: JobState::Running,
            held_until: f64::NEG_INFINITY,
        }
    }

    /// A new job started here.
    pub fn job_started(&mut self, now: f64, job: JobInfo) {
        if self.jobs.iter().any(|j| j.id == job.id) {
            return;
        }
        self.load.adjust(job.load.max(0.0));
        let record = self.record(now, &job, None);
        self.jobs.push(record);
    }

    /// A job arrived here by migration from `from` and runs now.
    pub fn job_arrived(&mut self, now: f64, job: JobInfo, from: HostId) {
        self.reservations.retain(|r| r.job != job.id);
        if self.jobs.iter().any(|j| j.id == job.id) {
            return;
        }
        self.load.adjust(job.load.max(0.0));
        let record = self.record(now, &job, Some(from));
        self.jobs.push(record);
    }

    /// A local job ended (whatever its state).
    pub fn job_exited(&mut self, _now: f64, job: JobId) {
        if let Some(i) = self.jobs.iter().position(|j| j.id == job) {
            let j = self.jobs.remove(i);
            self.load.adjust(-j.load);
        }
    }

    /// New measurements of a local job.
    pub fn update_job(&mut self, job: JobId, load: f64, memory: u64, dirty_rate: f64) {
        if let Some(j) = self.jobs.iter_mut().find(|j| j.id == job) {
            let delta = load.max(0.0) - j.load;
            j.load = load.max(0.0);
            j.memory = memory;
            j.dirty_rate = dirty_rate;
            self.load.adjust(delta);
        }
    }

    /// Load and memory moves leave `job` alone until `until` (infinity: a
    /// job its user pinned); a drain still moves it.
    pub fn hold(&mut self, job: JobId, until: f64) {
        if let Some(j) = self.jobs.iter_mut().find(|j| j.id == job) {
            j.held_until = until;
        }
    }

    /// The transfer of an accepted incoming move has started: keep the
    /// reservation until the job arrives (or `reservation_timeout`).
    pub fn migration_incoming(&mut self, now: f64, job: JobId) {
        let until = now + self.cfg.consider.reservation_timeout;
        for r in self.reservations.iter_mut().filter(|r| r.job == job) {
            r.until = r.until.max(until);
        }
    }

    /// An incoming move this host accepted will not come (the source gave
    /// up, or the job ended during the transfer).
    pub fn migration_aborted(&mut self, _now: f64, job: JobId) {
        self.reservations.retain(|r| r.job != job);
    }

    /// The daemon finished (or failed) moving `job` away.
    pub fn migration_done(
        &mut self,
        now: f64,
        job: JobId,
        result: Result<(), String>,
        rng: &mut dyn Rng,
    ) -> Vec<Action> {
        let Some(i) = self.jobs.iter().position(|j| j.id == job) else {
            return Vec::new();
        };
        match result {
            Ok(()) => {
                let j = self.jobs.remove(i);
                self.load.adjust(-j.load);
                self.stats.moves_done += 1;
            }
            Err(_) => {
                if let JobState::Migrating { to, .. } = self.jobs[i].state {
                    self.backoff.push((to, now + self.cfg.consider.failure_backoff));
                }
                self.jobs[i].state = JobState::Running;
                self.stats.moves_failed += 1;
            }
        }
        self.consider(now, rng)
    }

    /// The job itself would not move (it holds a socket, its user pinned
    /// it, ...): it stays, load moves leave it alone until `hold_until`,
    /// and the target is not blamed. Another job may go instead.
    pub fn migration_declined(&mut self, now: f64, job: JobId, hold_until: f64, rng: &mut dyn Rng) -> Vec<Action> {
        let Some(j) = self.jobs.iter_mut().find(|j| j.id == job) else {
            return Vec::new();
        };
        j.state = JobState::Running;
        j.held_until = hold_until;
        self.stats.moves_failed += 1;
        self.consider(now, rng)
    }

    fn housekeeping(&mut self, now: f64, out: &mut Vec<Action>) {
        self.vector.expire(now, self.cfg.gossip.max_age);
        self.reservations.retain(|r| r.until > now);
        self.backoff.retain(|&(_, until)| until > now);
        let timeout = self.cfg.consider.request_timeout;
        for j in &mut self.jobs {
            if let JobState::Requested { to, at, .. } = j.state {
                if now - at > timeout {
                    j.state = JobState::Running;
                    self.stats.requests_timed_out += 1;
                    self.backoff.push((to, now + self.cfg.consider.timeout_backoff));
                    out.push(Action::Send { to, msg: Message::Cancel { job: j.id } });
                }
            }
        }
    }

    /// Periodic work: expiry, gossip when due, consideration.
    pub fn tick(&mut self, now: f64, rng: &mut dyn Rng) -> Vec<Action> {
        let mut out = Vec::new();
        self.housekeeping(now, &mut out);
        let period = self.cfg.gossip.period.max(1e-3);
        let due = *self.next_gossip.get_or_insert_with(|| now + period * rng.unit());
        if now >= due {
            let stretch = 1.0 + self.cfg.gossip.jitter * (2.0 * rng.unit() - 1.0);
            let mut next = due + period * stretch;
            if next <= now {
                next = now + period * stretch;
            }
            self.next_gossip = Some(next);
            let me = self.own_info();
            let use_seed = !self.seeds.is_empty() && rng.chance(self.cfg.gossip.seed_fraction);
            let target = if use_seed { Some(self.seeds[rng.below(self.seeds.len())]) } else { None };
            let target = target
                .or_else(|| {
                    self.vector.gossip_target(
                        now,
                        &me,
                        self.cfg.consider.margin,
                        self.cfg.gossip.targeted,
                        self.cfg.gossip.fresh_age,
                        rng,
                    )
                })
                .or_else(|| (!self.seeds.is_empty()).then(|| self.seeds[rng.below(self.seeds.len())]));
            if let Some(to) = target {
                self.stats.gossip_sent += 1;
                let msg = self.gossip_msg(now, true, rng);
                out.push(Action::Send { to, msg });
            }
        }
        out.extend(self.consider(now, rng));
        out
    }

    /// Consider moving local jobs; returns migration requests to send.
    pub fn consider(&mut self, now: f64, rng: &mut dyn Rng) -> Vec<Action> {
        let in_flight = self.outgoing().count();
        let period = self.cfg.gossip.period.max(1e-3);
        self.recent_requests.retain(|&t| now - t < period);
        let rate_left = self.cfg.consider.max_requests_per_period.saturating_sub(self.recent_requests.len());
        let c = &self.cfg.consider;
        let in_flight_max =
            if self.mode == Mode::Draining { c.drain_in_flight.max(c.max_in_flight) } else { c.max_in_flight };
        let budget = c.max_moves_per_round.min(in_flight_max.saturating_sub(in_flight)).min(rate_left);
        let me = self.self_view(false);
        // Reused between calls: this runs on every tick and most messages.
        let mut cands = std::mem::take(&mut self.scratch);
        cands.clear();
        cands.extend(
            self.vector
                .entries()
                .iter()
                .filter(|e| e.stamp > self.distrust_before && !self.backoff.iter().any(|&(h, _)| h == e.host))
                .map(|e| Candidate { host: e.host, info: e.info, age: e.age(now) }),
        );
        let c = plan_moves(now, &me, &self.jobs, &cands, &self.cfg.consider, &self.cfg.cost, budget, rng);
        self.scratch = cands;
        self.note = c.note;
        self.seeking = c.seeking;
        let mut out = Vec::new();
        // What the target merges and passes on as this host's entry: the
        // exported view, which counts a job as gone only once accepted
        // (`me` already discounts the requests in flight).
        let source = self.own_entry();
        for p in c.moves {
            let Some(j) = self.jobs.iter_mut().find(|j| j.id == p.job) else {
                continue;
            };
            j.state = JobState::Requested {
                to: p.to,
                at: now,
                kind: p.kind,
                reason: p.reason,
                basis: now - p.info_age,
                assumed: p.assumed_target_load,
            };
            self.stats.requests_sent += 1;
            self.recent_requests.push(now);
            out.push(Action::Send {
                to: p.to,
                msg: Message::MigrateRequest(MigrateRequest {
                    job: p.job,
                    kind: p.kind,
                    job_load: p.job_load,
                    memory: p.memory,
                    source,
                    source_rate: p.source_rate,
                    source_load: p.source_load,
                    assumed_target_load: p.assumed_target_load,
                }),
            });
        }
        out
    }

    /// The target-side re-check of a migration request. On acceptance the
    /// job's load and memory are reserved here until it arrives.
    pub fn on_arrival_request(&mut self, now: f64, from: HostId, req: &MigrateRequest) -> Verdict {
        if self.reservations.iter().any(|r| r.job == req.job) {
            return Verdict::Accept(format!("job {} already accepted", req.job));
        }
        let me = self.self_view(true);
        let better = self.best_known_target(now, req.source.host, req.job_load, req.memory);
        let v = check_arrival(&me, req, &self.cfg.consider, better.as_ref());
        if v.accepted() {
            self.stats.arrivals_accepted += 1;
            self.reservations.push(Reservation {
                job: req.job,
                from,
                load: req.job_load.max(0.0),
                memory: req.memory,
                until: now + 2.0 * self.cfg.consider.request_timeout,
            });
        } else {
            self.stats.arrivals_refused += 1;
        }
        v
    }

    /// The least loaded host with fresh information that could take a job
    /// of `load` and `memory`, other than `except`.
    /// Only entries younger than `redirect_age` count: a redirect to a host
    /// that has filled up since is worse than accepting.
    fn best_known_target(&self, now: f64, except: HostId, load: f64, memory: u64) -> Option<Candidate> {
        let fresh = self.cfg.consider.redirect_age;
        let need = memory.saturating_add(self.cfg.consider.mem_headroom);
        self.vector
            .entries()
            .iter()
            .filter(|e| e.host != except && e.info.accepting && e.age(now) <= fresh && e.info.free_mem >= need)
            .filter(|e| !self.backoff.iter().any(|&(h, _)| h == e.host))
            .min_by(|a, b| a.info.load_with(load).total_cmp(&b.info.load_with(load)))
            .map(|e| Candidate { host: e.host, info: e.info, age: e.age(now) })
    }

    /// Hosts that have been accepted to send a job here and not yet did.
    pub fn expected_arrivals(&self) -> Vec<(JobId, HostId)> {
        self.reservations.iter().map(|r| (r.job, r.from)).collect()
    }

    /// A message from host `from`.
    pub fn on_message(&mut self, now: f64, from: HostId, msg: Message, rng: &mut dyn Rng) -> Vec<Action> {
        let hop = self.cfg.gossip.hop_delay;
        match msg {
            Message::Gossip { entries, want_reply } => {
                self.stats.gossip_received += 1;
                let kept = self.vector.merge(now, &entries, hop);
                let mut out = Vec::new();
                if want_reply {
                    out.push(Action::Send { to: from, msg: self.gossip_msg(now, false, rng) });
                }
                if kept > 0 {
                    out.extend(self.consider(now, rng));
                }
                out
            }
            Message::MigrateRequest(req) => {
                self.vector.merge(now, &[req.source], hop);
                let v = self.on_arrival_request(now, from, &req);
                let hint = v.hint().and_then(|h| self.vector.get(h)).map(|e| e.to_wire(now));
                vec![Action::Send {
                    to: from,
                    msg: Message::MigrateReply(MigrateReply {
                        job: req.job,
                        accepted: v.accepted(),
                        reason: v.reason().to_string(),
                        target: self.own_entry(),
                        hint,
                    }),
                }]
            }
            Message::MigrateReply(rep) => {
                self.vector.merge(now, &[rep.target], hop);
                if let Some(h) = rep.hint {
                    self.vector.merge(now, &[h], hop);
                }
                let Some(j) = self.jobs.iter_mut().find(|j| j.id == rep.job) else {
                    // The job ended meanwhile.
                    return if rep.accepted {
                        vec![Action::Send { to: from, msg: Message::Cancel { job: rep.job } }]
                    } else {
                        Vec::new()
                    };
                };
                let pending = match &j.state {
                    JobState::Requested { to, kind, reason, basis, assumed, .. } if *to == from => {
                        Some((*kind, reason.clone(), *basis, *assumed))
                    }
                    _ => None,
                };
                let Some((kind, reason, basis, assumed)) = pending else {
                    // Stale reply (we gave up on it): release the target.
                    return if rep.accepted {
                        vec![Action::Send { to: from, msg: Message::Cancel { job: rep.job } }]
                    } else {
                        Vec::new()
                    };
                };
                if rep.accepted {
                    j.state = JobState::Migrating { to: from, since: now };
                    self.stats.requests_accepted += 1;
                    let cool_down = self.cfg.consider.cool_down;
                    let mut left: Vec<(HostId, f64)> =
                        j.left.iter().map(|&(h, at)| (h, now - at)).filter(|&(_, ago)| ago < cool_down).collect();
                    left.push((self.id, 0.0));
                    vec![Action::Migrate { job: rep.job, to: from, kind, reason, left }]
                } else {
                    j.state = JobState::Running;
                    self.stats.requests_refused += 1;
                    // Losing the race for an idle host to one other sender
                    // is normal. A target more than one job busier than the
                    // entry we relied on said means that entries as old as
                    // that one are probably just as wrong (after a burst on
                    // every host, every host looks idle to every other):
                    // plan only with newer ones until gossip brings them.
                    if rep.target.info.load() > assumed + self.cfg.consider.margin {
                        self.distrust_before = self.distrust_before.max(basis);
                    }
                    // After a redirect the hinted host is in the vector;
                    // either way, leave this target alone for a moment.
                    self.backoff.push((from, now + self.cfg.consider.refusal_backoff));
                    let mut out = vec![Action::Refused { job: rep.job, by: from, reason: rep.reason }];
                    out.extend(self.consider(now, rng));
                    out
                }
            }
            Message::Cancel { job } => {
                self.reservations.retain(|r| !(r.job == job && r.from == from));
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GIB, MIB};
    use crate::rng::SplitMix64;

    fn job(id: JobId, age: f64) -> JobInfo {
        JobInfo { id, load: 1.0, memory: 64 * MIB, dirty_rate: 0.0, age, left: Vec::new() }
    }

    /// A balancer for host `id` with CPU-bound `jobs` started at time 0.
    fn host(id: HostId, jobs: impl IntoIterator<Item = JobId>) -> Balancer {
        let mut b = Balancer::new(id, Config::default());
        for j in jobs {
            b.job_started(0.0, job(j, 0.0));
        }
        b
    }

    fn entry(host: HostId, runnable: f64) -> WireEntry {
        WireEntry {
            host,
            age: 0.0,
            info: LoadInfo { runnable, cores: 1, speed: 1.0, free_mem: 8 * GIB, accepting: true, seeking: false },
        }
    }

    fn gossip(from: HostId, runnable: f64) -> Message {
        Message::Gossip { entries: vec![entry(from, runnable)], want_reply: false }
    }

    fn sends(actions: &[Action]) -> Vec<(HostId, &Message)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { to, msg } => Some((*to, msg)),
                _ => None,
            })
            .collect()
    }

    fn requested_jobs(acts: &[Action]) -> Vec<JobId> {
        sends(acts)
            .into_iter()
            .filter_map(|(_, m)| match m {
                Message::MigrateRequest(r) => Some(r.job),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn held_jobs_stay_and_another_goes() {
        let mut rng = SplitMix64::new(7);
        let mut a = host(1, 0..2);
        a.sample(0.0, 2.0);
        // Job 0 is pinned by its user: only job 1 may be offered.
        a.hold(0, f64::INFINITY);
        let acts = a.on_message(10.0, 2, gossip(2, 0.0), &mut rng);
        assert_eq!(requested_jobs(&acts), vec![1], "{acts:?}");

        // A job that declines to move is held for a while, the target is
        // not blamed, and nothing else is left to offer.
        let mut b = host(1, 0..3);
        b.sample(0.0, 3.0);
        let acts = b.on_message(10.0, 2, gossip(2, 0.0), &mut rng);
        let first = requested_jobs(&acts);
        assert_eq!(first.len(), 1, "{acts:?}");
        let accept = Message::MigrateReply(MigrateReply {
            job: first[0],
            accepted: true,
            reason: String::new(),
            target: entry(2, 1.0),
            hint: None,
        });
        let acts = b.on_message(10.01, 2, accept, &mut rng);
        assert!(acts.iter().any(|x| matches!(x, Action::Migrate { .. })), "{acts:?}");
        let acts = b.migration_declined(10.1, first[0], 40.0, &mut rng);
        assert!(!requested_jobs(&acts).contains(&first[0]), "{acts:?}");
        assert!(b.backoff.is_empty(), "the target is not blamed");
        let held = b.jobs().iter().find(|j| j.id == first[0]).unwrap();
        assert!(!held.is_moving() && !held.available(10.2) && held.available(40.0));
    }

    #[test]
    fn request_accept_migrate_done() {
        let mut rng = SplitMix64::new(1);
        let mut a = host(1, 0..3);
        let mut b = host(2, []);
        a.sample(0.0, 3.0);
        let acts = a.on_message(10.0, 2, gossip(2, 0.0), &mut rng);
        let reqs = sends(&acts);
        assert_eq!(reqs.len(), 1, "{acts:?}");
        let (to, msg) = reqs[0];
        assert_eq!(to, 2);
        // B accepts and reserves the load.
        let reply = b.on_message(10.001, 1, msg.clone(), &mut rng);
        assert_eq!(b.expected_arrivals().len(), 1);
        assert!((b.own_info().runnable - 1.0).abs() < 1e-9);
        let (_, rmsg) = sends(&reply)[0];
        let acts = a.on_message(10.002, 2, rmsg.clone(), &mut rng);
        let mig: Vec<_> = acts.iter().filter(|x| matches!(x, Action::Migrate { .. })).collect();
        assert_eq!(mig.len(), 1, "{acts:?}");
        // While moving, A already exports the committed load.
        assert!((a.own_info().runnable - 2.0).abs() < 1e-9);
        let Action::Migrate { job: moved, .. } = mig[0] else { unreachable!() };
        let moved = *moved;
        a.migration_done(10.1, moved, Ok(()), &mut rng);
        b.job_arrived(10.1, job(moved, 10.1), 1);
        assert_eq!(a.jobs().len(), 2);
        assert!((a.own_info().runnable - 2.0).abs() < 1e-9);
        assert!((b.own_info().runnable - 1.0).abs() < 1e-9);
        assert!(b.expected_arrivals().is_empty());
        assert_eq!(b.jobs()[0].came_from(), Some(1));
    }

    #[test]
    fn refusal_is_reported_and_backs_off() {
        let mut rng = SplitMix64::new(1);
        let mut a = host(1, 0..2);
        // B looked idle in the gossip but has since got a job.
        let mut b = host(2, [100]);
        let acts = a.on_message(10.0, 2, gossip(2, 0.0), &mut rng);
        let (_, req) = sends(&acts)[0];
        let reply = b.on_message(10.001, 1, req.clone(), &mut rng);
        let (_, rmsg) = sends(&reply)[0];
        match rmsg {
            Message::MigrateReply(r) => {
                assert!(!r.accepted);
                assert!(!r.reason.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let acts = a.on_message(10.002, 2, rmsg.clone(), &mut rng);
        assert!(acts.iter().any(|x| matches!(x, Action::Refused { by: 2, .. })));
        // It learned B's real load from the reply: no new request to B.
        assert!(sends(&acts).is_empty(), "{acts:?}");
        assert!(a.jobs().iter().all(|j| !j.is_moving()));
    }

    #[test]
    fn redirect_sends_the_source_to_the_better_host() {
        let mut rng = SplitMix64::new(3);
        let mut a = host(1, 0..5);
        // B has one job already but A's information says it is idle.
        let mut b = host(2, [100]);
        // B has just heard from C, which really is idle.
        b.on_message(9.9, 3, gossip(3, 0.0), &mut rng);
        let acts = a.on_message(10.0, 2, gossip(2, 0.0), &mut rng);
        let reqs = sends(&acts);
        assert_eq!(reqs.len(), 2, "5 vs 0: two moves planned, {acts:?}");
        // B would be at 2 with the job while C is idle: it would only pass
        // the job on, so it redirects A to C.
        let reply = b.on_message(10.001, 1, reqs[0].1.clone(), &mut rng);
        let (_, rmsg) = sends(&reply)[0];
        let Message::MigrateReply(r) = rmsg else { panic!("{rmsg:?}") };
        assert!(!r.accepted);
        assert_eq!(r.hint.map(|h| h.host), Some(3), "{r:?}");
        assert!(r.reason.starts_with("redirect"), "{}", r.reason);
        assert!(b.expected_arrivals().is_empty(), "a redirect reserves nothing");
        let acts = a.on_message(10.003, 2, rmsg.clone(), &mut rng);
        assert!(acts.iter().any(|x| matches!(x, Action::Refused { by: 2, .. })));
        let again = sends(&acts);
        assert!(!again.is_empty(), "{acts:?}");
        assert!(again.iter().all(|(to, _)| *to == 3), "the source asks the hinted host next: {acts:?}");
    }

    #[test]
    fn a_target_far_busier_than_believed_dates_every_entry_as_old() {
        let mut rng = SplitMix64::new(2);
        let mut a = host(1, 0..4);
        // One gossip, from before a burst: hosts 2, 3 and 4 are idle.
        let stale = Message::Gossip { entries: vec![entry(2, 0.0), entry(3, 0.0), entry(4, 0.0)], want_reply: false };
        let acts = a.on_message(10.0, 2, stale, &mut rng);
        let asked: Vec<HostId> = sends(&acts).iter().map(|(to, _)| *to).collect();
        assert_eq!(asked.len(), 2, "{acts:?}");
        let Some((_, Message::MigrateRequest(r))) = sends(&acts).first().copied() else { panic!("{acts:?}") };
        // The first target got two jobs meanwhile (not just one more than
        // A thought, which would be a lost race).
        let refusal = Message::MigrateReply(MigrateReply {
            job: r.job,
            accepted: false,
            reason: "no longer worth it".into(),
            target: entry(asked[0], 2.0),
            hint: None,
        });
        let acts = a.on_message(10.002, asked[0], refusal, &mut rng);
        assert!(sends(&acts).is_empty(), "the third entry is as old as the refuted one: {acts:?}");
        // Fresh news about the third host is believed again.
        let third = [2, 3, 4].into_iter().find(|h| !asked.contains(h)).unwrap();
        let acts = a.on_message(10.2, third, gossip(third, 0.0), &mut rng);
        assert_eq!(sends(&acts).iter().map(|(to, _)| *to).collect::<Vec<_>>(), vec![third], "{acts:?}");
    }

    #[test]
    fn own_pending_requests_do_not_make_a_host_look_empty() {
        let mut rng = SplitMix64::new(5);
        let mut a = host(1, 0..5);
        let mut b = host(2, 10..15);
        // B believes a third host is idle (stale) and asks it for two moves.
        let acts_b = b.on_message(10.0, 3, gossip(3, 0.0), &mut rng);
        assert_eq!(sends(&acts_b).len(), 2, "{acts_b:?}");
        // B's jobs are only requested, not accepted: it still has 5.
        assert!((b.own_info().runnable - 5.0).abs() < 1e-9);
        // A, also at 5, asks B (from an old entry saying B is idle); B
        // would be at 6 with the job, not at 4.
        let acts_a = a.on_message(10.0, 2, gossip(2, 0.0), &mut rng);
        let (_, req) = sends(&acts_a).into_iter().find(|(to, _)| *to == 2).expect("a request to B");
        let Message::MigrateRequest(r) = req else { panic!() };
        let v = b.on_arrival_request(10.001, 1, r);
        assert!(!v.accepted(), "B must not count its unanswered requests as gone: {v:?}");
    }

    #[test]
    fn two_sources_one_idle_target_no_herd() {
        let mut rng = SplitMix64::new(9);
        let mut t = host(9, []);
        let mut reqs = Vec::new();
        for src in [1u64, 2u64] {
            let mut s = host(src, [src * 10, src * 10 + 1]);
            let acts = s.on_message(10.0, 9, gossip(9, 0.0), &mut rng);
            let (to, m) = sends(&acts)[0];
            assert_eq!(to, 9);
            reqs.push((src, m.clone()));
        }
        let mut accepted = 0;
        for (src, m) in reqs {
            let r = t.on_message(10.001, src, m, &mut rng);
            if let Message::MigrateReply(rep) = sends(&r)[0].1 {
                accepted += rep.accepted as usize;
            }
        }
        assert_eq!(accepted, 1);
    }

    #[test]
    fn request_timeout_cancels() {
        let mut rng = SplitMix64::new(1);
        let mut a = host(1, [1, 2]);
        let acts = a.on_message(10.0, 2, gossip(2, 0.0), &mut rng);
        assert_eq!(sends(&acts).len(), 1);
        let acts = a.tick(13.0, &mut rng);
        assert!(acts.iter().any(|x| matches!(x, Action::Send { to: 2, msg: Message::Cancel { .. } })));
        assert!(a.jobs().iter().all(|j| !j.is_moving()));
        assert_eq!(a.stats().requests_timed_out, 1);
    }

    #[test]
    fn gossip_every_period_and_join_via_seed() {
        let mut rng = SplitMix64::new(4);
        let mut a = host(1, []);
        let j = a.join(0.0, &[5], &mut rng);
        assert_eq!(sends(&j)[0].0, 5);
        let mut sent = 0;
        let mut t = 0.0;
        while t < 10.0 {
            sent += sends(&a.tick(t, &mut rng)).iter().filter(|(_, m)| matches!(m, Message::Gossip { .. })).count();
            t += 0.01;
        }
        // 0.25 s period: about 40 messages in 10 s, all to the only seed.
        assert!((36..=44).contains(&sent), "{sent}");
    }

    #[test]
    fn gossip_reply_carries_own_entry_first_and_bounded_window() {
        let mut rng = SplitMix64::new(4);
        let mut a = host(1, []);
        for h in 10..60 {
            a.on_message(1.0, h, gossip(h, 1.0), &mut rng);
        }
        assert_eq!(a.known_hosts().len(), 32);
        let acts = a.on_message(2.0, 7, Message::Gossip { entries: vec![entry(7, 0.0)], want_reply: true }, &mut rng);
        let (to, m) = sends(&acts)[0];
        assert_eq!(to, 7);
        let Message::Gossip { entries, .. } = m else { panic!() };
        assert_eq!(entries[0].host, 1);
        assert_eq!(entries.len(), 8);
    }

    #[test]
    fn cordoned_host_refuses_and_says_so() {
        let mut rng = SplitMix64::new(1);
        let mut a = host(1, [1, 2]);
        let acts = a.on_message(10.0, 2, gossip(2, 0.0), &mut rng);
        let (_, req) = sends(&acts)[0];
        let mut b = host(2, []);
        b.set_mode(Mode::Cordoned);
        assert!(!b.own_info().accepting);
        let Message::MigrateRequest(r) = req else { panic!() };
        let v = b.on_arrival_request(10.0, 1, r);
        assert!(!v.accepted());
        assert!(v.reason().contains("not accepting"));
    }

    #[test]
    fn memory_pressure_triggers_a_move() {
        let mut rng = SplitMix64::new(1);
        let mut cfg = Config::default();
        cfg.host.memory = 4 * GIB;
        let mut a = Balancer::new(1, cfg);
        let mut big = job(1, 0.0);
        big.memory = 3 * GIB;
        a.job_started(0.0, big);
        a.set_free_memory(100 * MIB);
        // Equal loads: only memory can justify the move.
        let acts = a.on_message(0.1, 2, gossip(2, 1.0), &mut rng);
        let Some((_, Message::MigrateRequest(r))) = sends(&acts).first().copied() else { panic!("{acts:?}") };
        assert_eq!(r.kind, MoveKind::Memory);
    }
}
