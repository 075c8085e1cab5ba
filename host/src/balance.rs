//! The balancer task: this host's `balancer::Balancer`, fed with measured
//! load, talking to the other hosts' balancers over the peer port (UDP,
//! `Kind::Balance` datagrams checked by the membership task), and carrying
//! out the moves it decides with the daemons' live migration.
//!
//! The jobs it balances are the bodies running here: this home's jobs
//! whose record says they run here (their body is in their deputy
//! process) and the bodies of other homes' jobs (`Bodies`). They are found
//! again on every tick from those two sources, so the balancer's table
//! cannot drift from what runs. A move of a job of this home is made here
//! (`moves::move_job`); a move of another home's job is asked of its home
//! (`BalanceMove`), which keeps the record and sends `MoveBody` back.
//!
//! Balancer host ids are derived from the peer address (`host_key`), so
//! every daemon names a host the same way; job ids from the job's home
//! and id (`job_key`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use balancer::rng::SplitMix64;
use balancer::{Action, Balancer, JobInfo, Message, Mode, MoveKind};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::api::{BalancerStats, EventKind, HostMode, HostState, HostView, LoadView, MoveFigures, MoveWhy, NewEvent};
use crate::config::Balance as BalanceConfig;
use crate::load::{self, Capacity, Sampler};
use crate::membership::{Drops, Heard};
use crate::moves::{self, Order};
use crate::peer;
use crate::server::{now_ms, Shared};
use crate::wire::{
    self, Arrival, BalanceEnvelope, BalanceMove, JobRef, Kind, MoveOptions, MoveReply, Refusal, RefusalKind,
};

/// A job that would not move is left alone this long.
const DECLINED_HOLD: f64 = 30.0;
/// Arrival notes for bodies that never came are dropped after this long.
const ARRIVAL_NOTE_LIFE: f64 = 300.0;
/// Per-job figures (busy fraction, memory) go to the balancer this often.
const JOB_UPDATE: f64 = 1.0;
/// The member list is re-read this often (notifications may be missed).
const HOSTS_REFRESH: f64 = 1.0;
/// Time constant of a job's busy fraction, seconds.
const BUSY_TAU: f64 = 2.0;
/// Moves that sent less than this do not measure the link's bandwidth.
const MIN_BANDWIDTH_SAMPLE: u64 = 32 << 20;
/// The same refusal of the same job is recorded once per this long.
const REFUSAL_EVENT_QUIET: f64 = 10.0;

/// The balancer id of the host whose peer port is `addr`: IPv4 address and
/// port packed (below 2^48), or for IPv6 a hash with the top bit set.
pub fn host_key(addr: SocketAddr) -> u64 {
    match addr.ip() {
        IpAddr::V4(ip) => (u64::from(u32::from(ip)) << 16) | u64::from(addr.port()),
        IpAddr::V6(ip) => {
            let mut h = fnv(&ip.octets());
            h = fnv_more(h, &addr.port().to_le_bytes());
            h | (1 << 63)
        }
    }
}

/// The balancer id of a job: the same on every host.
pub fn job_key(j: &JobRef) -> u64 {
    let h = fnv_more(fnv(j.home.as_bytes()), &[0xff]);
    fnv_more(h, &j.id.to_le_bytes())
}

fn fnv(b: &[u8]) -> u64 {
    fnv_more(0xcbf2_9ce4_8422_2325, b)
}

fn fnv_more(mut h: u64, b: &[u8]) -> u64 {
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What the rest of the daemon tells the balancer task.
pub enum Input {
    /// A body of `job` is about to arrive here from the host at `from`.
    Incoming { job: JobRef, from: SocketAddr, arrival: Arrival },
    /// A move the balancer started has ended.
    Done { job: u64, result: Result<MoveFigures, Refusal> },
}

/// What the balancer task publishes once a second, for `GET /v1/hosts`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub stats: BalancerStats,
    /// Its own load first, then what it knows of others, by peer address
    /// key (`host_key`).
    pub loads: Vec<(u64, LoadView)>,
    /// This host's load as exported and as measured locally (raw).
    pub raw: (f64, f64),
}

/// The handle on the balancer task (does nothing when balancing is off).
#[derive(Clone)]
pub struct Handle {
    tx: Option<mpsc::Sender<Input>>,
    snapshot: Option<watch::Receiver<Snapshot>>,
}

impl Handle {
    /// A handle on no task (balancing off).
    pub fn detached() -> Handle {
        Handle { tx: None, snapshot: None }
    }

    /// A handle, and what `spawn` needs: the channel's ends (the task sends
    /// itself the ends of the moves it starts) and where to publish.
    pub fn channel() -> (Handle, Ends) {
        let (tx, rx) = mpsc::channel(256);
        let (stx, srx) = watch::channel(Snapshot::default());
        (Handle { tx: Some(tx.clone()), snapshot: Some(srx) }, Ends { tx, rx, snapshot: stx })
    }

    /// Adds the balancer's loads (and, on the local entry, its counters)
    /// to a host list.
    pub fn fill(&self, hosts: &mut [HostView]) {
        let Some(rx) = &self.snapshot else { return };
        let snap = rx.borrow();
        for h in hosts.iter_mut() {
            let Ok(addr) = h.addr.parse::<SocketAddr>() else { continue };
            let k = host_key(addr);
            h.load = snap.loads.iter().find(|(key, _)| *key == k).map(|(_, l)| l.clone());
            if h.local {
                h.balancer = Some(snap.stats.clone());
            }
        }
    }

    /// Whether this host runs a balancer (a drain needs it).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// This host's load (exported, raw local), if it balances.
    pub fn raw_load(&self) -> Option<(f64, f64)> {
        self.snapshot.as_ref().map(|rx| rx.borrow().raw)
    }

    /// A body of `job` is about to arrive from the host at `from`.
    pub fn incoming(&self, job: JobRef, from: SocketAddr, arrival: Arrival) {
        if let Some(tx) = &self.tx {
            if tx.try_send(Input::Incoming { job, from, arrival }).is_err() {
                warn!("balancer task busy: an arrival note was dropped");
            }
        }
    }
}

/// The ends `spawn` takes.
pub struct Ends {
    tx: mpsc::Sender<Input>,
    rx: mpsc::Receiver<Input>,
    snapshot: watch::Sender<Snapshot>,
}

impl Ends {
    /// Ends for no task (balancing off).
    pub fn unused() -> Ends {
        Handle::channel().1
    }
}

/// A member as the balancer knows it.
#[derive(Debug, Clone)]
struct Peer {
    name: String,
    addr: SocketAddr,
    /// From membership notifications (0 when learnt from the member list).
    incarnation: u64,
}

/// A body running here.
struct Local {
    job: JobRef,
    pid: u32,
    /// Fraction of samples its vCPU was runnable (smoothed).
    busy: f64,
    dirty_rate: f64,
    /// The balancer's move in flight, to this host.
    moving_to: Option<String>,
    /// Pinned by its user (`run --stay`).
    stay: bool,
}

/// What a `PrepareBody` (or a homecoming) told us about a body to come.
struct Note {
    from: u64,
    arrival: Arrival,
    at: f64,
}

/// Starts the balancer task. `heard` brings membership news and checked
/// balancer datagrams; `inputs` the daemon's own news (see `Handle`).
pub fn spawn(
    s: Arc<Shared>,
    cfg: &BalanceConfig,
    capacity: Capacity,
    heard: mpsc::Receiver<Heard>,
    ends: Ends,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut params = cfg.params.clone();
    let total_mem = crate::membership::meminfo().map(|m| m.1).unwrap_or(params.host.memory);
    params.host = balancer::HostSpec { cores: capacity.cores, speed: capacity.speed, memory: total_mem };
    let me = host_key(s.id.addr);
    let sampler = Sampler::new();
    info!(
        id = me,
        cpus = capacity.cpus(),
        cores = capacity.cores,
        speed = capacity.speed,
        capacity = %capacity.source,
        load_scope = %sampler.scope(),
        gossip_period = params.gossip.period,
        "balancer running"
    );
    let task = Task {
        socket: s.membership.socket(),
        boot: s.id.incarnation,
        me,
        b: Balancer::new(me, params),
        rng: SplitMix64::new(seed()),
        t0: Instant::now(),
        sampler,
        seq: 0,
        hosts: HashMap::new(),
        jobs: HashMap::new(),
        notes: HashMap::new(),
        departed: HashMap::new(),
        refusals: HashMap::new(),
        drain_tries: HashMap::new(),
        pids: Vec::new(),
        last_refresh: f64::NEG_INFINITY,
        last_update: 0.0,
        drops: Drops::default(),
        tick: cfg.tick,
        done: ends.tx,
        publish: ends.snapshot,
        last_publish: f64::NEG_INFINITY,
        sent: 0,
        received: 0,
        s,
    };
    tokio::spawn(task.run(heard, ends.rx, stop))
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    let t = now_ms() ^ u64::from(std::process::id()).rotate_left(32);
    if n == 8 {
        u64::from_le_bytes(b) ^ t
    } else {
        t
    }
}

struct Task {
    s: Arc<Shared>,
    socket: Arc<crate::datagram::Datagrams>,
    boot: u64,
    me: u64,
    b: Balancer,
    rng: SplitMix64,
    t0: Instant,
    sampler: Sampler,
    seq: u64,
    hosts: HashMap<u64, Peer>,
    jobs: HashMap<u64, Local>,
    notes: HashMap<JobRef, Note>,
    /// Bodies that moved on, until their process has gone.
    departed: HashMap<(JobRef, u32), f64>,
    /// When a refusal of (job, host) was last recorded as an event.
    refusals: HashMap<(u64, u64), f64>,
    /// How often a draining host's job declined to move.
    drain_tries: HashMap<u64, u32>,
    pids: Vec<u32>,
    last_refresh: f64,
    last_update: f64,
    drops: Drops,
    tick: Duration,
    done: mpsc::Sender<Input>,
    publish: watch::Sender<Snapshot>,
    last_publish: f64,
    /// Balancer messages sent and received.
    sent: u64,
    received: u64,
}

/// A body running here, as found on a tick.
struct Found {
    job: JobRef,
    pid: u32,
    mem_bytes: u64,
    stay: bool,
    age_s: f64,
}

impl Task {
    async fn run(
        mut self,
        mut heard: mpsc::Receiver<Heard>,
        mut inputs: mpsc::Receiver<Input>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.on_tick().await,
                h = heard.recv() => match h {
                    Some(h) => self.on_heard(h).await,
                    None => return,
                },
                i = inputs.recv() => match i {
                    Some(i) => self.on_input(i).await,
                    None => return,
                },
                _ = stop.changed() => return,
            }
        }
    }

    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    async fn on_tick(&mut self) {
        let now = self.now();
        if now - self.last_refresh >= HOSTS_REFRESH {
            self.last_refresh = now;
            self.refresh_hosts().await;
        }
        self.reconcile(now);
        self.sample(now);
        if self.follow_mode() {
            // Every balancer hears at once that this host takes no jobs
            // (or takes them again), not at its next gossip.
            let peers: Vec<u64> = self.hosts.keys().copied().collect();
            for k in peers {
                let actions = self.b.greet(now, k, &mut self.rng);
                self.act(now, actions).await;
            }
        }
        let actions = self.b.tick(now, &mut self.rng);
        self.act(now, actions).await;
        if self.b.mode() == Mode::Draining {
            self.s.drain.note(&self.words(&self.b.note().to_string()));
        }
        if now - self.last_publish >= 1.0 {
            self.last_publish = now;
            self.publish_snapshot(now);
        }
    }

    /// Follows the host's mode. Draining outranks a pin: pinned jobs are
    /// released while the host drains, and held again if it stops.
    /// Returns whether it changed.
    fn follow_mode(&mut self) -> bool {
        let mode = match self.s.drain.mode() {
            HostMode::Normal => Mode::Normal,
            HostMode::Cordoned => Mode::Cordoned,
            HostMode::Draining => Mode::Draining,
        };
        if self.b.mode() == mode {
            return false;
        }
        let draining = mode == Mode::Draining;
        for (&k, l) in &self.jobs {
            if l.stay {
                self.b.hold(k, if draining { f64::NEG_INFINITY } else { f64::INFINITY });
            }
        }
        self.b.set_mode(mode);
        true
    }

    fn publish_snapshot(&self, now: f64) {
        let view = |info: &balancer::LoadInfo, age_s: f64| LoadView {
            load: info.load(),
            runnable: info.runnable,
            cpus: info.capacity(),
            age_s,
            accepting: info.accepting,
        };
        let mut loads = vec![(self.me, view(&self.b.own_info(), 0.0))];
        loads.extend(self.b.known_hosts().iter().map(|e| (e.host, view(&e.info, e.age(now)))));
        let st = self.b.stats();
        let stats = BalancerStats {
            uptime_s: now,
            messages_sent: self.sent,
            messages_received: self.received,
            gossip_sent: st.gossip_sent,
            gossip_received: st.gossip_received,
            requests_sent: st.requests_sent,
            requests_accepted: st.requests_accepted,
            requests_refused: st.requests_refused,
            arrivals_accepted: st.arrivals_accepted,
            arrivals_refused: st.arrivals_refused,
            moves_done: st.moves_done,
            moves_failed: st.moves_failed,
            jobs: self.jobs.len(),
            note: self.words(&self.b.note().to_string()),
        };
        self.publish.send_replace(Snapshot { stats, loads, raw: self.b.raw_load() });
    }

    /// Measures: runnable vCPUs of the bodies here plus the other load
    /// competing for this host's CPUs; free memory; per job, how busy it is.
    fn sample(&mut self, now: f64) {
        self.pids.clear();
        self.pids.extend(self.jobs.values().map(|l| l.pid));
        let sample = self.sampler.sample(&self.pids);
        let dt = self.tick.as_secs_f64();
        let a = 1.0 - (-dt / BUSY_TAU).exp();
        let mut runnable = sample.other;
        for (pid, r) in &sample.jobs {
            // One vCPU per job: other runnable threads of its process (a
            // migration's sender) are not the job's load.
            let r = r.map_or(0.0, |r| f64::from(r.min(1)));
            runnable += r;
            if let Some(l) = self.jobs.values_mut().find(|l| l.pid == *pid) {
                l.busy += (r - l.busy) * a;
            }
        }
        self.b.sample(now, runnable);
        if let Some(free) = load::free_memory() {
            self.b.set_free_memory(free);
        }
        if now - self.last_update >= JOB_UPDATE {
            self.last_update = now;
            for (&k, l) in &self.jobs {
                let mem = load::resident_bytes(l.pid).unwrap_or(0);
                self.b.update_job(k, l.busy.clamp(0.0, 1.0), mem, l.dirty_rate);
            }
        }
    }

    /// The bodies running here now, and whether the records could be read
    /// (if not, this home's jobs are missing from the list).
    fn found(&self) -> (Vec<Found>, bool) {
        let now = now_ms();
        let mut out = Vec::new();
        let mut records_ok = true;
        match self.s.store().jobs(false) {
            Ok(jobs) => {
                out.extend(jobs.into_iter().filter(|j| j.host == self.s.name && !j.state.ended()).filter_map(|j| {
                    Some(Found {
                        job: JobRef { home: self.s.name.clone(), id: j.id },
                        pid: j.deputy_pid?,
                        mem_bytes: j.mem_bytes,
                        stay: j.stay,
                        age_s: now.saturating_sub(j.started_ms) as f64 / 1000.0,
                    })
                }))
            }
            Err(e) => {
                warn!("balancer: reading job records: {e}");
                records_ok = false;
            }
        }
        for b in self.s.bodies.list() {
            // A body that moved on runs no more, though its process may
            // take a while to go.
            if b.control_sock.exists() && !self.departed.contains_key(&(b.job.clone(), b.pid)) {
                let note = self.notes.get(&b.job);
                out.push(Found {
                    job: b.job,
                    pid: b.pid,
                    mem_bytes: b.mem_bytes,
                    stay: note.is_some_and(|n| n.arrival.stay),
                    age_s: note.map_or(0.0, |n| n.arrival.age_s),
                });
            }
        }
        (out, records_ok)
    }

    /// Brings the balancer's job table in line with what runs here.
    fn reconcile(&mut self, now: f64) {
        let (found, records_ok) = self.found();
        for f in &found {
            let k = job_key(&f.job);
            if self.jobs.contains_key(&k) {
                continue;
            }
            let note = self.notes.remove(&f.job);
            let age = match &note {
                Some(n) => n.arrival.age_s + (now - n.at),
                None => f.age_s,
            };
            let info = JobInfo {
                id: k,
                load: 1.0,
                memory: load::resident_bytes(f.pid).unwrap_or(f.mem_bytes),
                dirty_rate: note.as_ref().map_or(0.0, |n| n.arrival.dirty_rate),
                age,
                left: note.as_ref().map(|n| n.arrival.left.clone()).unwrap_or_default(),
            };
            let dirty_rate = info.dirty_rate;
            match &note {
                Some(n) => {
                    self.b.job_arrived(now, info, n.from);
                    if f.job.home != self.s.name {
                        let from = self.hosts.get(&n.from).map(|p| p.name.clone());
                        self.s.event(NewEvent {
                            kind: EventKind::Arrived,
                            job: Some(f.job.to_string()),
                            from,
                            to: Some(self.s.name.clone()),
                            reason: format!("body arrived (age {age:.1} s)"),
                        });
                    }
                }
                None => self.b.job_started(now, info),
            }
            let stay = f.stay || note.as_ref().is_some_and(|n| n.arrival.stay);
            // A drain moves pinned jobs too.
            if stay && self.b.mode() != Mode::Draining {
                self.b.hold(k, f64::INFINITY);
            }
            if let Some(why) = note.as_ref().and_then(|n| n.arrival.why) {
                self.s.metrics.moved_in(why);
            }
            debug!(job = %f.job, pid = f.pid, "balancer: job runs here");
            self.jobs.insert(k, Local { job: f.job.clone(), pid: f.pid, busy: 1.0, dirty_rate, moving_to: None, stay });
        }
        let gone: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, l)| l.moving_to.is_none() && !found.iter().any(|f| f.job == l.job && f.pid == l.pid))
            // Unreadable records say nothing about this home's jobs.
            .filter(|(_, l)| records_ok || l.job.home != self.s.name)
            .map(|(&k, _)| k)
            .collect();
        for k in gone {
            self.jobs.remove(&k);
            self.drain_tries.remove(&k);
            self.b.job_exited(now, k);
        }
        self.notes.retain(|_, n| now - n.at < ARRIVAL_NOTE_LIFE);
        let bodies = self.s.bodies.list();
        self.departed.retain(|(j, pid), at| {
            now - *at < ARRIVAL_NOTE_LIFE && bodies.iter().any(|b| b.job == *j && b.pid == *pid)
        });
        self.refusals.retain(|_, &mut t| now - t < REFUSAL_EVENT_QUIET);
    }

    async fn refresh_hosts(&mut self) {
        let Ok(hosts) = self.s.membership.hosts().await else { return };
        let mut changed = false;
        for h in hosts.iter().filter(|h| !h.local) {
            let Ok(addr) = h.addr.parse::<SocketAddr>() else { continue };
            let k = host_key(addr);
            let active = matches!(h.state, HostState::Alive | HostState::Suspect);
            if active && !self.hosts.contains_key(&k) {
                self.hosts.insert(k, Peer { name: h.name.clone(), addr, incarnation: 0 });
                changed = true;
            } else if !active && self.hosts.get(&k).is_some_and(|p| p.name == h.name) {
                self.hosts.remove(&k);
                self.b.forget(k);
                changed = true;
            }
        }
        if changed {
            self.set_seeds();
        }
    }

    fn set_seeds(&mut self) {
        let keys: Vec<u64> = self.hosts.keys().copied().collect();
        self.b.set_seeds(&keys);
    }

    async fn on_heard(&mut self, h: Heard) {
        let now = self.now();
        match h {
            Heard::Balance { from, msg } => {
                self.received += 1;
                let k = host_key(from.addr);
                self.hosts.entry(k).or_insert_with(|| Peer {
                    name: from.name.clone(),
                    addr: from.addr,
                    incarnation: from.incarnation,
                });
                let msg = match balancer::wire::decode(&msg) {
                    Ok(m) => m,
                    Err(e) => return self.drops.note(from.addr, "balancer message", &e),
                };
                let Some(msg) = self.screen(k, msg) else {
                    return self.drops.note(from.addr, "balancer message", &"it speaks for another host");
                };
                let actions = self.b.on_message(now, k, msg, &mut self.rng);
                self.act(now, actions).await;
            }
            Heard::Up(id) => {
                let k = host_key(id.addr);
                self.hosts.insert(k, Peer { name: id.name.clone(), addr: id.addr, incarnation: id.incarnation });
                self.set_seeds();
                self.s.event(NewEvent {
                    kind: EventKind::HostJoined,
                    job: None,
                    from: None,
                    to: Some(id.name.clone()),
                    reason: format!("{} at {} is alive", id.name, id.addr),
                });
                let actions = self.b.greet(now, k, &mut self.rng);
                self.act(now, actions).await;
            }
            Heard::Down { id, left } => {
                let k = host_key(id.addr);
                // A restarted host may already be up again under a newer
                // identity at the same address.
                if self.hosts.get(&k).is_some_and(|p| p.incarnation > id.incarnation) {
                    return;
                }
                self.hosts.remove(&k);
                self.b.forget(k);
                self.set_seeds();
                let (kind, what) =
                    if left { (EventKind::HostLeft, "left the cluster") } else { (EventKind::HostFailed, "is down") };
                self.s.event(NewEvent {
                    kind,
                    job: None,
                    from: Some(id.name.clone()),
                    to: None,
                    reason: format!("{} at {} {what}; the balancer forgets it", id.name, id.addr),
                });
            }
        }
    }

    /// Drops what a member may not say: entries about hosts that are not
    /// members, and requests or replies that speak for another host.
    fn screen(&self, from: u64, msg: Message) -> Option<Message> {
        let known = |h: u64| h == self.me || self.hosts.contains_key(&h);
        match msg {
            Message::Gossip { mut entries, want_reply } => {
                if entries.first().is_some_and(|e| e.host != from) {
                    return None;
                }
                entries.retain(|e| known(e.host));
                Some(Message::Gossip { entries, want_reply })
            }
            Message::MigrateRequest(r) if r.source.host == from => Some(Message::MigrateRequest(r)),
            Message::MigrateReply(mut r) if r.target.host == from => {
                if r.hint.is_some_and(|h| !known(h.host)) {
                    r.hint = None;
                }
                Some(Message::MigrateReply(r))
            }
            m @ Message::Cancel { .. } => Some(m),
            _ => None,
        }
    }

    async fn on_input(&mut self, i: Input) {
        let now = self.now();
        match i {
            Input::Incoming { job, from, arrival } => {
                let k = job_key(&job);
                if arrival.balanced {
                    self.b.migration_incoming(now, k);
                }
                self.notes.insert(job, Note { from: host_key(from), arrival, at: now });
            }
            Input::Done { job, result } => self.on_done(now, job, result).await,
        }
    }

    async fn act(&mut self, now: f64, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { to, msg } => self.send(to, &msg).await,
                Action::Migrate { job, to, kind, reason, left } => {
                    self.start_move(now, job, to, kind, reason, left).await
                }
                Action::Refused { job, by, reason } => {
                    debug!(job, by, "balancer: move refused: {reason}");
                    let quiet = self.refusals.get(&(job, by)).is_some_and(|&t| now - t < REFUSAL_EVENT_QUIET);
                    if !quiet {
                        self.refusals.insert((job, by), now);
                        let job = self.jobs.get(&job).map(|l| l.job.to_string());
                        let by = self.host_name(by);
                        let reason = self.words(&reason);
                        self.s.event(NewEvent {
                            kind: EventKind::Refused,
                            job,
                            from: Some(self.s.name.clone()),
                            to: Some(by),
                            reason,
                        });
                    }
                }
            }
        }
    }

    async fn send(&mut self, to: u64, msg: &Message) {
        let Some(p) = self.hosts.get(&to) else {
            debug!(to, kind = msg.kind(), "balancer: message for a host that is not a member dropped");
            return;
        };
        self.seq += 1;
        let env = BalanceEnvelope {
            name: self.s.name.clone(),
            boot: self.boot,
            seq: self.seq,
            msg: balancer::wire::encode(msg),
        };
        let frame = wire::encode_msg(Kind::Balance, &env);
        self.sent += 1;
        if let Err(e) = self.socket.send_to(&frame, p.addr).await {
            debug!(addr = %p.addr, "balancer send: {e}");
        }
    }

    fn host_name(&self, k: u64) -> String {
        if k == self.me {
            return self.s.name.clone();
        }
        self.hosts.get(&k).map_or_else(|| format!("host#{k:x}"), |p| p.name.clone())
    }

    /// The balancer's reason in the operator's words: host and job ids
    /// replaced by names.
    fn words(&self, reason: &str) -> String {
        let mut out = String::with_capacity(reason.len());
        let mut rest = reason;
        while let Some(i) = rest.find(|c: char| c.is_ascii_digit()) {
            let (head, tail) = rest.split_at(i);
            let n = tail.find(|c: char| !c.is_ascii_digit()).unwrap_or(tail.len());
            let (digits, after) = tail.split_at(n);
            out.push_str(head);
            let id: Option<u64> = digits.parse().ok();
            let name = match id {
                Some(id) if head.ends_with("host ") => Some(self.host_name(id)),
                Some(id) if head.ends_with("job ") => self.jobs.get(&id).map(|l| l.job.to_string()),
                _ => None,
            };
            out.push_str(name.as_deref().unwrap_or(digits));
            rest = after;
        }
        out.push_str(rest);
        out
    }

    async fn start_move(&mut self, now: f64, job: u64, to: u64, kind: MoveKind, reason: String, left: Vec<(u64, f64)>) {
        let reason = self.words(&reason);
        let (Some(l), Some(peer)) = (self.jobs.get(&job), self.hosts.get(&to)) else {
            let actions = self.b.migration_done(now, job, Err("the job or the target is gone".into()), &mut self.rng);
            self.send(to, &Message::Cancel { job }).await;
            Box::pin(self.act(now, actions)).await;
            return;
        };
        let why = match kind {
            MoveKind::Load => MoveWhy::Load,
            MoveKind::Memory => MoveWhy::Memory,
            MoveKind::Drain => MoveWhy::Drain,
        };
        let (jref, mut to_name, dirty_rate) = (l.job.clone(), peer.name.clone(), l.dirty_rate);
        let resident_bytes = load::resident_bytes(l.pid).unwrap_or(0);
        let mut reason = reason;
        if kind == MoveKind::Drain && l.stay && jref.home != self.s.name && self.home_open(&jref.home).await {
            // A pinned job leaves only for its operator's drain: it goes
            // home, where its user put it, rather than to a stranger.
            self.send(to, &Message::Cancel { job }).await;
            reason = format!("drain: host is being drained; job {jref} is pinned, so it goes home to {}", jref.home);
            to_name = jref.home.clone();
        }
        info!(job = %jref, to = %to_name, "balancer: moving: {reason}");
        self.s.drain.moving(&jref, &to_name);
        if let Some(l) = self.jobs.get_mut(&job) {
            l.moving_to = Some(to_name.clone());
        }
        let (s, done) = (self.s.clone(), self.done.clone());
        tokio::spawn(async move {
            let result = if jref.home == s.name {
                let order = Order {
                    to: to_name,
                    opts: MoveOptions::default(),
                    why,
                    reason: Some(reason),
                    left,
                    balanced: true,
                    dirty_rate,
                    resident_bytes,
                };
                moves::move_job(&s, jref.id, order).await.map(|(_, _, _, f)| f)
            } else {
                let arrival = Arrival {
                    balanced: true,
                    age_s: 0.0,
                    stay: false,
                    left,
                    dirty_rate,
                    resident_bytes,
                    why: Some(why),
                };
                ask_home(&s, &jref, to_name, why, reason, arrival).await
            };
            let _ = done.send(Input::Done { job, result }).await;
        });
    }

    /// How long a draining host waits before asking a job that declined
    /// again: 1 s, doubling up to 16 s.
    fn drain_retry(&mut self, job: u64) -> f64 {
        let n = self.drain_tries.entry(job).or_insert(0);
        *n = (*n + 1).min(5);
        f64::from(1u32 << (*n - 1))
    }

    /// The home `name` is alive and takes jobs.
    async fn home_open(&self, name: &str) -> bool {
        let Ok(hosts) = self.s.membership.hosts().await else { return false };
        hosts.iter().any(|h| h.name == name && h.state == HostState::Alive && h.mode == HostMode::Normal)
    }

    async fn on_done(&mut self, now: f64, job: u64, result: Result<MoveFigures, Refusal>) {
        let Some(l) = self.jobs.get_mut(&job) else { return };
        let to = l.moving_to.take().unwrap_or_default();
        let (jref, pid) = (l.job.clone(), l.pid);
        let foreign = jref.home != self.s.name;
        let to_key = self.hosts.iter().find(|(_, p)| p.name == to).map(|(&k, _)| k);
        let actions = match result {
            Ok(f) => {
                // A small move's rate is its setup time, not the link's.
                if f.bytes_sent >= MIN_BANDWIDTH_SAMPLE && f.bandwidth_mbps.is_finite() && f.bandwidth_mbps > 0.0 {
                    self.b.set_bandwidth(f.bandwidth_mbps * 1e6);
                }
                self.jobs.remove(&job);
                self.drain_tries.remove(&job);
                self.s.drain.moved(&jref, &to, &f);
                if foreign {
                    self.departed.insert((jref.clone(), pid), now);
                    self.s.event(NewEvent {
                        kind: EventKind::Moved,
                        job: Some(jref.to_string()),
                        from: Some(self.s.name.clone()),
                        to: Some(to.clone()),
                        reason: format!(
                            "balancer (took {:.0} ms, {:.1} ms down, {} rounds)",
                            f.total_ms, f.downtime_ms, f.rounds
                        ),
                    });
                }
                self.b.migration_done(now, job, Ok(()), &mut self.rng)
            }
            Err(r) => {
                if let Some(k) = to_key {
                    // The target reserved room for the job: release it.
                    self.send(k, &Message::Cancel { job }).await;
                }
                // A job that ended while its move started is not the
                // target's fault either.
                let ended = !std::path::Path::new(&format!("/proc/{pid}")).exists();
                // The job (or its record) said no: not the target's fault.
                let declined = matches!(
                    r.kind,
                    RefusalKind::Unmovable
                        | RefusalKind::Pinned
                        | RefusalKind::Busy
                        | RefusalKind::Ended
                        | RefusalKind::NotMember
                        | RefusalKind::NotFound
                );
                let draining = self.b.mode() == Mode::Draining;
                // Either way under one lock with the end of the move (a
                // drain report never sees the body gone and its move open).
                if ended {
                    self.s.drain.settled(&jref);
                } else {
                    self.s.drain.waiting(&jref, format!("{} ({}): {}", to, r.kind.as_str(), r.message));
                }
                if ended {
                    debug!(job = %jref, "balancer: the job ended as it was to move");
                    self.b.migration_declined(now, job, now + DECLINED_HOLD, &mut self.rng)
                } else if declined {
                    let hold = match r.kind {
                        RefusalKind::Pinned if !draining => f64::INFINITY,
                        // A drain asks again soon (the job may let go of
                        // its socket), a little later each time.
                        _ if draining => now + self.drain_retry(job),
                        _ => now + DECLINED_HOLD,
                    };
                    info!(job = %jref, kind = r.kind.as_str(), "balancer: job skipped: {}", r.message);
                    self.s.event(NewEvent {
                        kind: EventKind::Skipped,
                        job: Some(jref.to_string()),
                        from: Some(self.s.name.clone()),
                        to: Some(to),
                        reason: format!("{}: {}; another job may go instead", r.kind.as_str(), r.message),
                    });
                    self.b.migration_declined(now, job, hold, &mut self.rng)
                } else {
                    warn!(job = %jref, to = %to, kind = r.kind.as_str(), "balancer: move failed: {}", r.message);
                    if foreign {
                        self.s.event(NewEvent {
                            kind: EventKind::MoveFailed,
                            job: Some(jref.to_string()),
                            from: Some(self.s.name.clone()),
                            to: Some(to),
                            reason: format!("{}: {}", r.kind.as_str(), r.message),
                        });
                    }
                    self.b.migration_done(now, job, Err(r.message), &mut self.rng)
                }
            }
        };
        self.act(now, actions).await;
    }
}

/// Asks the home of `job` (another host) to move its body, which runs
/// here, to `to`.
async fn ask_home(
    s: &Shared,
    job: &JobRef,
    to: String,
    why: MoveWhy,
    reason: String,
    arrival: Arrival,
) -> Result<MoveFigures, Refusal> {
    let unreachable = |m: String| Refusal::new(RefusalKind::Unreachable, m);
    let hosts = s.membership.hosts().await.map_err(|e| unreachable(e.to_string()))?;
    let home = hosts
        .iter()
        .find(|h| h.name == job.home && matches!(h.state, HostState::Alive | HostState::Suspect))
        .ok_or_else(|| unreachable(format!("the job's home {} is not an active member", job.home)))?;
    let addr: SocketAddr = home.addr.parse().map_err(|_| unreachable(format!("bad address {}", home.addr)))?;
    let msg = BalanceMove { from: s.id.clone(), job: job.clone(), to, why, reason, arrival };
    // Longer than the home's own limits (prepare, then the move), so that
    // the home's answer, not our impatience, ends a slow move.
    let limit = crate::control::MOVE_LIMIT + Duration::from_secs(60);
    match peer::request(&s.dialer, addr, Kind::BalanceMove, &msg, Kind::Moved, limit).await {
        Ok(MoveReply::Moved(f)) => Ok(f),
        Ok(MoveReply::Refused(r)) => Err(r),
        Err(e) => Err(unreachable(format!("the job's home {} ({addr}): {e}", job.home))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_distinct() {
        let a: SocketAddr = "127.0.0.2:7077".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:7077".parse().unwrap();
        let c: SocketAddr = "[::1]:7077".parse().unwrap();
        assert_eq!(host_key(a), host_key(a));
        assert_ne!(host_key(a), host_key(b));
        assert!(host_key(a) < 1 << 48);
        assert!(host_key(c) >= 1 << 63);
        let j = |h: &str, id| job_key(&JobRef { home: h.into(), id });
        assert_eq!(j("h1", 1), j("h1", 1));
        assert_ne!(j("h1", 1), j("h1", 2));
        assert_ne!(j("h1", 12), j("h11", 2));
    }
}
