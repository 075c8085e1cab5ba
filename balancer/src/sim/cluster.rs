//! The deterministic cluster simulator: hosts running [`Balancer`]s, jobs
//! sharing CPUs, messages with delay, migrations with a cost model.
//!
//! Honesty rules: every host only learns what messages tell it (messages
//! travel as the bytes of [`wire::encode`], take `msg_delay` plus random
//! jitter, and may be lost); samples are the true runnable count at each
//! tick; a job's dirty rate reaches the balancer as a measurement with an
//! error (`dirty_rate_error`), and its length never does; a migration first
//! spends the setup
//! time (connect, create the VM on the target), then copies memory over the
//! source's and the target's links (one copy at a time per link direction)
//! while the job keeps running on the source, then freezes the job for the
//! stop-and-copy time, then resumes it on the target. Only observers
//! ([`Sim::job_counts`] and friends) see the global state.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::balancer::{Action, Balancer, JobInfo};
use crate::config::{Config, HostSpec, MIB};
use crate::cost::{CostModel, MigrationCost};
use crate::msg::Message;
use crate::rng::{Rng, SplitMix64};
use crate::wire;

/// Background load: other processes that come and go on every host
/// (Poisson arrivals, exponential lifetimes). They take CPU like a job and
/// show up in the samples, but cannot be migrated.
#[derive(Clone, Debug, PartialEq)]
pub struct Noise {
    /// Arrivals per host per second.
    pub rate: f64,
    /// Mean lifetime, seconds.
    pub mean_duration: f64,
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Balancer configuration for every host (its `host` field is replaced
    /// by each host's own spec).
    pub balancer: Config,
    /// The *true* migration cost model.
    pub cost: CostModel,
    /// Sampling and balancer tick interval, seconds.
    pub tick: f64,
    /// One-way message delay, seconds...
    pub msg_delay: f64,
    /// ... plus uniform random jitter up to this.
    pub msg_jitter: f64,
    /// Probability that a message is lost.
    pub msg_loss: f64,
    pub seed: u64,
    /// The daemon measures a job's dirty rate; the balancer gets the true
    /// rate times a factor drawn log-uniformly from `[1/(1+e), 1+e]`, a new
    /// draw at every report (job start, arrival after a move).
    pub dirty_rate_error: f64,
    /// A move counts as wasted if the job moved less than this long ago.
    pub wasted_window: f64,
    pub noise: Option<Noise>,
}

impl Default for SimConfig {
    fn default() -> Self {
        let balancer = Config::default();
        SimConfig {
            wasted_window: balancer.consider.cool_down,
            balancer,
            cost: CostModel::default(),
            tick: 0.1,
            msg_delay: 0.0005,
            msg_jitter: 0.0005,
            msg_loss: 0.0,
            seed: 1,
            dirty_rate_error: 0.5,
            noise: None,
        }
    }
}

/// A job to run.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    /// CPU seconds on one reference core.
    pub work: f64,
    pub memory: u64,
    /// Bytes per second the job dirties.
    pub dirty_rate: f64,
    /// Host it is started on.
    pub host: usize,
    pub submit_at: f64,
}

impl JobSpec {
    /// A CPU-bound job of `work` seconds with default memory (64 MiB) and
    /// dirty rate (32 MiB/s), started on `host` at `submit_at`.
    pub fn cpu(work: f64, host: usize, submit_at: f64) -> Self {
        JobSpec { work, memory: 64 * MIB, dirty_rate: 32.0 * MIB as f64, host, submit_at }
    }
}

/// Global counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimStats {
    /// Completed migrations.
    pub moves: u64,
    /// Migrations of a job that had moved less than `wasted_window` before.
    pub wasted_moves: u64,
    /// Migrations of a job back to a host it left less than `wasted_window`
    /// before (ping-pong).
    pub ping_pongs: u64,
    /// Migration requests sent.
    pub requests: u64,
    /// Requests refused by the target.
    pub refusals: u64,
    /// Migrations abandoned because the job ended during the transfer.
    pub aborted_moves: u64,
    pub messages: u64,
    pub bytes: u64,
    pub dropped_messages: u64,
    /// Messages the receiver could not decode (always a bug).
    pub undecodable: u64,
    /// Seconds jobs spent frozen, summed.
    pub frozen_time: f64,
}

/// Per-host message counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub sent: u64,
    pub received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error("{left} job(s) still unfinished at the time limit t={limit}s")]
    Unfinished { left: usize, limit: f64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Pending,
    Running,
    Frozen,
    Done,
}

#[derive(Clone, Debug)]
struct Mig {
    id: u64,
    to: usize,
    cost: MigrationCost,
    /// What the source's balancer sends along (hosts left, seconds ago).
    left: Vec<(u64, f64)>,
}

#[derive(Clone, Debug)]
struct SimJob {
    spec: JobSpec,
    done: f64,
    host: usize,
    phase: Phase,
    mig: Option<Mig>,
    last_arrival: Option<f64>,
    /// Hosts the job left, and when.
    left: Vec<(usize, f64)>,
    moves: u32,
    started_at: f64,
    finished_at: Option<f64>,
}

#[derive(Clone, Debug)]
struct SimHost {
    spec: HostSpec,
    bal: Option<Balancer>,
    rng: SplitMix64,
    alive: bool,
    running: Vec<usize>,
    last_update: f64,
    version: u64,
    tx_free: f64,
    rx_free: f64,
    used_mem: u64,
    background: f64,
    first_arrival: Option<f64>,
    traffic: Traffic,
}

#[derive(Clone, Debug)]
enum Ev {
    Join(usize),
    Leave(usize),
    Tick(usize),
    Deliver { to: usize, from: usize, bytes: Vec<u8> },
    Complete { host: usize, version: u64 },
    Submit(usize),
    PrecopyDone { job: usize, mig: u64 },
    Arrive { job: usize, mig: u64 },
    NoiseStart(usize),
    NoiseEnd(usize),
}

#[derive(Debug)]
struct Scheduled {
    at: f64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    // Reversed: BinaryHeap is a max-heap, we want the earliest event.
    fn cmp(&self, o: &Self) -> Ordering {
        o.at.total_cmp(&self.at).then(o.seq.cmp(&self.seq))
    }
}

/// One logged decision: a move started or a refusal, with its reason.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    pub time: f64,
    pub host: usize,
    pub text: String,
}

/// The simulator.
pub struct Sim {
    log: Option<Vec<LogLine>>,
    cfg: SimConfig,
    now: f64,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    hosts: Vec<SimHost>,
    jobs: Vec<SimJob>,
    rng: SplitMix64,
    stats: SimStats,
    next_mig: u64,
    unfinished: usize,
    last_finish: f64,
}

fn exp_sample(rng: &mut dyn Rng, mean: f64) -> f64 {
    -(1.0 - rng.unit()).ln() * mean
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        let rng = SplitMix64::derive(cfg.seed, u64::MAX);
        Sim {
            log: None,
            cfg,
            now: 0.0,
            queue: BinaryHeap::new(),
            seq: 0,
            hosts: Vec::new(),
            jobs: Vec::new(),
            rng,
            stats: SimStats::default(),
            next_mig: 0,
            unfinished: 0,
            last_finish: 0.0,
        }
    }

    fn schedule(&mut self, at: f64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled { at: at.max(self.now), seq: self.seq, ev });
    }

    /// Add a host that joins (contacts a random host that already joined)
    /// at `join_at`.
    pub fn add_host(&mut self, spec: HostSpec, join_at: f64) -> usize {
        let h = self.hosts.len();
        self.hosts.push(SimHost {
            spec,
            bal: None,
            rng: SplitMix64::derive(self.cfg.seed, h as u64),
            alive: true,
            running: Vec::new(),
            last_update: join_at,
            version: 0,
            tx_free: 0.0,
            rx_free: 0.0,
            used_mem: 0,
            background: 0.0,
            first_arrival: None,
            traffic: Traffic::default(),
        });
        self.schedule(join_at, Ev::Join(h));
        h
    }

    /// The host stops at `at`: it sends nothing more and messages to it are
    /// lost. Only meant for hosts without jobs.
    pub fn remove_host_at(&mut self, h: usize, at: f64) {
        self.schedule(at, Ev::Leave(h));
    }

    /// Add a job.
    pub fn add_job(&mut self, spec: JobSpec) -> usize {
        let j = self.jobs.len();
        let at = spec.submit_at;
        self.jobs.push(SimJob {
            host: spec.host,
            spec,
            done: 0.0,
            phase: Phase::Pending,
            mig: None,
            last_arrival: None,
            left: Vec::new(),
            moves: 0,
            started_at: at,
            finished_at: None,
        });
        self.unfinished += 1;
        self.schedule(at, Ev::Submit(j));
        j
    }

    pub fn now(&self) -> f64 {
        self.now
    }

    /// Keep a log of every decision (moves and refusals with reasons).
    pub fn enable_log(&mut self) {
        self.log.get_or_insert_with(Vec::new);
    }

    /// The decision log (empty unless [`Sim::enable_log`] was called).
    pub fn log(&self) -> &[LogLine] {
        self.log.as_deref().unwrap_or(&[])
    }

    fn note(&mut self, host: usize, text: impl FnOnce() -> String) {
        let time = self.now;
        if let Some(log) = self.log.as_mut() {
            log.push(LogLine { time, host, text: text() });
        }
    }

    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    pub fn traffic(&self, h: usize) -> Traffic {
        self.hosts[h].traffic
    }

    /// When the first job arrived at host `h` by migration.
    pub fn first_arrival(&self, h: usize) -> Option<f64> {
        self.hosts[h].first_arrival
    }

    pub fn balancer(&self, h: usize) -> Option<&Balancer> {
        self.hosts[h].bal.as_ref()
    }

    pub fn job_finished_at(&self, j: usize) -> Option<f64> {
        self.jobs[j].finished_at
    }

    pub fn job_moves(&self, j: usize) -> u32 {
        self.jobs[j].moves
    }

    /// The host job `j` runs on (or is being moved from).
    pub fn job_host(&self, j: usize) -> usize {
        self.jobs[j].host
    }

    pub fn unfinished(&self) -> usize {
        self.unfinished
    }

    /// True number of live jobs per host (a job in transit counts at its
    /// source until it resumes on the target).
    pub fn job_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.hosts.len()];
        for j in &self.jobs {
            if matches!(j.phase, Phase::Running | Phase::Frozen) {
                c[j.host] += 1;
            }
        }
        c
    }

    /// Run events up to and including time `t`.
    pub fn run_until(&mut self, t: f64) {
        while let Some(top) = self.queue.peek() {
            if top.at > t {
                break;
            }
            let s = self.queue.pop().expect("peeked");
            self.now = s.at;
            self.handle(s.ev);
        }
        self.now = self.now.max(t);
    }

    /// Run until every job has finished; returns the time of the last
    /// completion.
    pub fn run_to_completion(&mut self, limit: f64) -> Result<f64, SimError> {
        while self.unfinished > 0 {
            let Some(s) = self.queue.pop() else { break };
            if s.at > limit {
                self.now = limit;
                return Err(SimError::Unfinished { left: self.unfinished, limit });
            }
            self.now = s.at;
            self.handle(s.ev);
        }
        if self.unfinished > 0 {
            return Err(SimError::Unfinished { left: self.unfinished, limit });
        }
        Ok(self.last_finish)
    }

    /// Check the bookkeeping: every live job is in exactly the right place,
    /// memory adds up, finished jobs did all their work.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = vec![0u32; self.jobs.len()];
        for (h, host) in self.hosts.iter().enumerate() {
            let mut mem = 0;
            for &j in &host.running {
                seen[j] += 1;
                if self.jobs[j].host != h || self.jobs[j].phase != Phase::Running {
                    return Err(format!("job {j} listed on host {h} but is not running there"));
                }
            }
            for j in &self.jobs {
                if j.host == h && matches!(j.phase, Phase::Running | Phase::Frozen) {
                    mem += j.spec.memory;
                }
            }
            if mem != host.used_mem {
                return Err(format!("host {h}: used memory {} != jobs' memory {mem}", host.used_mem));
            }
        }
        for (i, j) in self.jobs.iter().enumerate() {
            let expect = u32::from(j.phase == Phase::Running);
            if seen[i] != expect {
                return Err(format!("job {i} ({:?}) listed {} times", j.phase, seen[i]));
            }
            if j.phase == Phase::Done && j.done < j.spec.work * (1.0 - 1e-9) - 1e-9 {
                return Err(format!("job {i} finished with {} of {}", j.done, j.spec.work));
            }
            if j.done > j.spec.work * (1.0 + 1e-9) + 1e-6 {
                return Err(format!("job {i} did {} of {}", j.done, j.spec.work));
            }
        }
        let done = self.jobs.iter().filter(|j| j.phase == Phase::Done).count();
        if self.stats.undecodable > 0 {
            return Err(format!("{} message(s) did not decode", self.stats.undecodable));
        }
        let pending = self.jobs.iter().filter(|j| j.phase != Phase::Done).count();
        if pending != self.unfinished || done + pending != self.jobs.len() {
            return Err("unfinished count is off".into());
        }
        Ok(())
    }

    fn rate(&self, h: usize) -> f64 {
        let host = &self.hosts[h];
        let k = host.running.len() as f64 + host.background;
        let c = host.spec.cores.max(1) as f64;
        host.spec.speed * if k <= c { 1.0 } else { c / k }
    }

    fn update_host(&mut self, h: usize) {
        let dt = self.now - self.hosts[h].last_update;
        if dt > 0.0 && !self.hosts[h].running.is_empty() {
            let r = self.rate(h);
            for i in 0..self.hosts[h].running.len() {
                let j = self.hosts[h].running[i];
                self.jobs[j].done += r * dt;
            }
        }
        self.hosts[h].last_update = self.now;
    }

    fn reschedule(&mut self, h: usize) {
        self.hosts[h].version += 1;
        if self.hosts[h].running.is_empty() {
            return;
        }
        let r = self.rate(h);
        let mut next = f64::INFINITY;
        for &j in &self.hosts[h].running {
            let left = (self.jobs[j].spec.work - self.jobs[j].done).max(0.0);
            next = next.min(left / r);
        }
        let version = self.hosts[h].version;
        self.schedule(self.now + next, Ev::Complete { host: h, version });
    }

    fn free_mem(&self, h: usize) -> u64 {
        self.hosts[h].spec.memory.saturating_sub(self.hosts[h].used_mem)
    }

    fn with_bal<T>(&mut self, h: usize, f: impl FnOnce(&mut Balancer, &mut SplitMix64, f64) -> T) -> Option<T> {
        let now = self.now;
        let host = &mut self.hosts[h];
        if !host.alive {
            return None;
        }
        let host_rng = &mut host.rng;
        host.bal.as_mut().map(|b| f(b, host_rng, now))
    }

    /// What the daemon tells the balancer about job `j`: its vCPU, memory
    /// and age exactly, its dirty rate as a measurement with an error, and
    /// `left` as the source's balancer sent it along.
    fn job_info(&mut self, j: usize, left: Vec<(u64, f64)>) -> JobInfo {
        let e = self.cfg.dirty_rate_error.max(0.0);
        let error = (1.0 + e).powf(2.0 * self.rng.unit() - 1.0);
        let job = &self.jobs[j];
        JobInfo {
            id: j as u64,
            load: 1.0,
            memory: job.spec.memory,
            dirty_rate: job.spec.dirty_rate * error,
            age: self.now - job.started_at,
            left,
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Join(h) => self.on_join(h),
            Ev::Leave(h) => {
                self.hosts[h].alive = false;
            }
            Ev::Tick(h) => {
                if !self.hosts[h].alive {
                    return;
                }
                let runnable = self.hosts[h].running.len() as f64 + self.hosts[h].background;
                let free = self.free_mem(h);
                let acts = self
                    .with_bal(h, |b, rng, now| {
                        b.sample(now, runnable);
                        b.set_free_memory(free);
                        b.tick(now, rng)
                    })
                    .unwrap_or_default();
                self.apply(h, acts);
                let next = self.now + self.cfg.tick;
                self.schedule(next, Ev::Tick(h));
            }
            Ev::Deliver { to, from, bytes } => {
                if !self.hosts[to].alive || self.hosts[to].bal.is_none() {
                    self.stats.dropped_messages += 1;
                    return;
                }
                self.hosts[to].traffic.received += 1;
                self.hosts[to].traffic.bytes_received += bytes.len() as u64;
                let Ok(msg) = wire::decode(&bytes) else {
                    self.stats.undecodable += 1;
                    return;
                };
                let acts =
                    self.with_bal(to, |b, rng, now| b.on_message(now, from as u64, msg, rng)).unwrap_or_default();
                self.apply(to, acts);
            }
            Ev::Complete { host, version } => {
                if self.hosts[host].version != version {
                    return;
                }
                self.update_host(host);
                let finished: Vec<usize> = self.hosts[host]
                    .running
                    .iter()
                    .copied()
                    .filter(|&j| {
                        let w = self.jobs[j].spec.work;
                        w - self.jobs[j].done <= 1e-9 * w.max(1.0)
                    })
                    .collect();
                for j in finished {
                    self.finish_job(j);
                }
                self.reschedule(host);
            }
            Ev::Submit(j) => {
                let h = self.jobs[j].spec.host;
                if self.hosts[h].bal.is_none() {
                    // Not joined yet: start when it has.
                    let retry = self.now + self.cfg.tick;
                    self.schedule(retry, Ev::Submit(j));
                    return;
                }
                self.update_host(h);
                let job = &mut self.jobs[j];
                job.phase = Phase::Running;
                job.host = h;
                job.started_at = self.now;
                self.hosts[h].running.push(j);
                self.hosts[h].used_mem += self.jobs[j].spec.memory;
                let info = self.job_info(j, Vec::new());
                let free = self.free_mem(h);
                self.with_bal(h, |b, _, now| {
                    b.job_started(now, info);
                    b.set_free_memory(free);
                });
                self.reschedule(h);
            }
            Ev::PrecopyDone { job, mig } => {
                let ok =
                    self.jobs[job].mig.as_ref().is_some_and(|m| m.id == mig) && self.jobs[job].phase == Phase::Running;
                if !ok {
                    return;
                }
                let src = self.jobs[job].host;
                self.update_host(src);
                self.hosts[src].running.retain(|&x| x != job);
                self.jobs[job].phase = Phase::Frozen;
                self.reschedule(src);
                let freeze = self.jobs[job].mig.as_ref().expect("checked").cost.freeze;
                self.stats.frozen_time += freeze;
                self.schedule(self.now + freeze, Ev::Arrive { job, mig });
            }
            Ev::Arrive { job, mig } => {
                let Some(m) = self.jobs[job].mig.clone().filter(|m| m.id == mig) else {
                    return;
                };
                let src = self.jobs[job].host;
                let dst = m.to;
                let mem = self.jobs[job].spec.memory;
                self.hosts[src].used_mem -= mem;
                self.update_host(dst);
                self.hosts[dst].used_mem += mem;
                self.hosts[dst].running.push(job);
                {
                    let jb = &mut self.jobs[job];
                    jb.host = dst;
                    jb.phase = Phase::Running;
                    jb.mig = None;
                    jb.last_arrival = Some(self.now);
                    jb.left.push((src, self.now));
                    jb.moves += 1;
                }
                self.stats.moves += 1;
                let now = self.now;
                self.hosts[dst].first_arrival.get_or_insert(now);
                self.reschedule(dst);
                let info = self.job_info(job, m.left);
                let free_dst = self.free_mem(dst);
                let free_src = self.free_mem(src);
                self.with_bal(dst, |b, _, now| {
                    b.job_arrived(now, info, src as u64);
                    b.set_free_memory(free_dst);
                });
                let acts = self
                    .with_bal(src, |b, rng, now| {
                        b.set_free_memory(free_src);
                        b.migration_done(now, job as u64, Ok(()), rng)
                    })
                    .unwrap_or_default();
                self.apply(src, acts);
            }
            Ev::NoiseStart(h) => {
                let Some(noise) = self.cfg.noise.clone() else {
                    return;
                };
                self.update_host(h);
                self.hosts[h].background += 1.0;
                self.reschedule(h);
                let life = exp_sample(&mut self.rng, noise.mean_duration);
                self.schedule(self.now + life, Ev::NoiseEnd(h));
                let gap = exp_sample(&mut self.rng, 1.0 / noise.rate.max(1e-9));
                self.schedule(self.now + gap, Ev::NoiseStart(h));
            }
            Ev::NoiseEnd(h) => {
                self.update_host(h);
                self.hosts[h].background = (self.hosts[h].background - 1.0).max(0.0);
                self.reschedule(h);
            }
        }
    }

    fn on_join(&mut self, h: usize) {
        let joined: Vec<usize> =
            (0..self.hosts.len()).filter(|&i| i != h && self.hosts[i].alive && self.hosts[i].bal.is_some()).collect();
        let mut cfg = self.cfg.balancer.clone();
        cfg.host = self.hosts[h].spec.clone();
        let mut bal = Balancer::new(h as u64, cfg);
        let seeds: Vec<u64> =
            if joined.is_empty() { Vec::new() } else { vec![joined[self.rng.below(joined.len())] as u64] };
        let now = self.now;
        let acts = bal.join(now, &seeds, &mut self.hosts[h].rng);
        self.hosts[h].bal = Some(bal);
        self.hosts[h].last_update = now;
        self.apply(h, acts);
        let first_tick = now + self.cfg.tick * self.hosts[h].rng.unit();
        self.schedule(first_tick, Ev::Tick(h));
        if let Some(noise) = &self.cfg.noise {
            let gap = exp_sample(&mut self.rng, 1.0 / noise.rate.max(1e-9));
            self.schedule(now + gap, Ev::NoiseStart(h));
        }
    }

    fn apply(&mut self, h: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { to, msg } => self.send(h, to as usize, msg),
                Action::Migrate { job, to, kind, reason, left } => {
                    self.note(h, || format!("move job {job} to host {to} ({}): {reason}", kind.as_str()));
                    self.start_migration(h, job as usize, to as usize, left)
                }
                Action::Refused { job, by, reason } => {
                    self.stats.refusals += 1;
                    self.note(h, || format!("host {by} refused job {job}: {reason}"));
                }
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: Message) {
        let bytes = wire::encode(&msg);
        let len = bytes.len() as u64;
        self.stats.messages += 1;
        self.stats.bytes += len;
        if matches!(msg, Message::MigrateRequest(_)) {
            self.stats.requests += 1;
        }
        self.hosts[from].traffic.sent += 1;
        self.hosts[from].traffic.bytes_sent += len;
        if to >= self.hosts.len() || (self.cfg.msg_loss > 0.0 && self.rng.chance(self.cfg.msg_loss)) {
            self.stats.dropped_messages += 1;
            return;
        }
        let delay = self.cfg.msg_delay + self.cfg.msg_jitter * self.rng.unit();
        self.schedule(self.now + delay, Ev::Deliver { to, from, bytes });
    }

    fn start_migration(&mut self, src: usize, j: usize, dst: usize, left: Vec<(u64, f64)>) {
        let ok = j < self.jobs.len()
            && dst < self.hosts.len()
            && dst != src
            && self.jobs[j].host == src
            && self.jobs[j].phase == Phase::Running
            && self.jobs[j].mig.is_none()
            && self.hosts[dst].alive
            && self.hosts[dst].bal.is_some();
        if !ok {
            let acts = self
                .with_bal(src, |b, rng, now| b.migration_done(now, j as u64, Err("cannot start the move".into()), rng))
                .unwrap_or_default();
            if dst < self.hosts.len() {
                self.with_bal(dst, |b, _, now| b.migration_aborted(now, j as u64));
            }
            self.apply(src, acts);
            return;
        }
        if let Some(t) = self.jobs[j].last_arrival {
            if self.now - t < self.cfg.wasted_window {
                self.stats.wasted_moves += 1;
            }
        }
        let window = self.cfg.wasted_window;
        if self.jobs[j].left.iter().any(|&(h, t)| h == dst && self.now - t < window) {
            self.stats.ping_pongs += 1;
        }
        let cost = self.cfg.cost.estimate(self.jobs[j].spec.memory, self.jobs[j].spec.dirty_rate);
        // Setup (connect, create the VM on the target) does not use the
        // links and may overlap another transfer; copying needs both the
        // source's and the target's link.
        let setup = self.cfg.cost.setup.clamp(0.0, cost.precopy);
        let start = (self.now + setup).max(self.hosts[src].tx_free).max(self.hosts[dst].rx_free);
        let end = start + (cost.precopy - setup);
        self.hosts[src].tx_free = end + cost.freeze;
        self.hosts[dst].rx_free = end + cost.freeze;
        self.next_mig += 1;
        let id = self.next_mig;
        self.jobs[j].mig = Some(Mig { id, to: dst, cost, left });
        self.with_bal(dst, |b, _, now| b.migration_incoming(now, j as u64));
        self.schedule(end, Ev::PrecopyDone { job: j, mig: id });
    }

    fn finish_job(&mut self, j: usize) {
        let h = self.jobs[j].host;
        self.hosts[h].running.retain(|&x| x != j);
        self.hosts[h].used_mem -= self.jobs[j].spec.memory;
        let now = self.now;
        {
            let job = &mut self.jobs[j];
            job.phase = Phase::Done;
            job.done = job.done.max(job.spec.work);
            job.finished_at = Some(now);
        }
        self.unfinished -= 1;
        self.last_finish = self.last_finish.max(now);
        let free = self.free_mem(h);
        self.with_bal(h, |b, _, now| {
            b.job_exited(now, j as u64);
            b.set_free_memory(free);
        });
        if let Some(m) = self.jobs[j].mig.take() {
            self.stats.aborted_moves += 1;
            self.with_bal(m.to, |b, _, now| b.migration_aborted(now, j as u64));
        }
    }
}
