//! Cluster membership: SWIM (the `foca` crate) over UDP on the peer port,
//! plus two messages of our own on the same socket: a periodic `Status`
//! (free memory, jobs by host) and a `Leave` that tells a clean exit from
//! a failure, which SWIM alone cannot.
//!
//! One task owns foca, the socket, the timers and what others reported;
//! everyone else talks to it through a channel.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use crate::datagram::Datagrams;
use foca::{AccumulatingRuntime, Foca, Identity, Member, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::api::HostMode;
use crate::api::{HostState, HostView};
use crate::wire::{self, BalanceEnvelope, Kind, Leave, Status};

/// What the membership task tells the rest of the daemon (the balancer).
#[derive(Debug)]
pub enum Heard {
    /// A balancer message from an active member, checked against replay.
    Balance { from: HostId, msg: Vec<u8> },
    /// A member is alive (joined, or came back).
    Up(HostId),
    /// A member failed (`left` false) or said goodbye.
    Down { id: HostId, left: bool },
}

/// A member of the cluster: its name, the address of its peer port (UDP
/// and TCP), and when this run of it started, so that a restarted host is
/// a new identity that wins over its previous, dead one.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostId {
    pub name: String,
    pub addr: SocketAddr,
    pub incarnation: u64,
}

impl fmt::Debug for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.name, self.addr, self.incarnation)
    }
}

impl Identity for HostId {
    type Addr = SocketAddr;

    // Declared down by mistake (a pause, a lost burst of packets): come
    // back at once under a newer identity.
    fn renew(&self) -> Option<Self> {
        Some(HostId { incarnation: self.incarnation.wrapping_add(1), ..self.clone() })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.incarnation > adversary.incarnation
    }
}

impl HostId {
    /// Whom to announce to at a join address before knowing its identity:
    /// foca accepts an announce addressed to any identity of its address.
    fn placeholder(addr: SocketAddr) -> HostId {
        HostId { name: String::new(), addr, incarnation: 0 }
    }
}

/// Timing of failure detection, tuned for a LAN.
#[derive(Debug, Clone)]
pub struct Timing {
    pub probe_period: Duration,
    pub probe_rtt: Duration,
    pub suspect_to_down: Duration,
    /// How often each host sends its `Status` and retries its join
    /// addresses while it knows no other host.
    pub status_period: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            probe_period: Duration::from_millis(1000),
            probe_rtt: Duration::from_millis(300),
            suspect_to_down: Duration::from_secs(3),
            status_period: Duration::from_secs(1),
        }
    }
}

fn swim_config(t: &Timing) -> foca::Config {
    let mut c = foca::Config::new_lan(NonZeroU32::new(16).unwrap_or(NonZeroU32::MIN));
    c.probe_period = t.probe_period;
    c.probe_rtt = t.probe_rtt;
    c.suspect_to_down_after = t.suspect_to_down;
    c.max_packet_size = NonZeroUsize::new(wire::MAX_SWIM_PAYLOAD).unwrap_or(NonZeroUsize::MIN);
    // Periodic announces find members faster than the default 30 s, and
    // those to down members heal a partition by themselves.
    c.periodic_announce =
        Some(foca::PeriodicParams { frequency: Duration::from_secs(10), num_members: NonZeroUsize::MIN });
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(10),
        num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
    });
    c
}

/// MemAvailable and MemTotal from /proc/meminfo, in bytes.
pub fn meminfo() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("MemAvailable:")?, field("MemTotal:")?))
}

enum Input {
    Hosts(oneshot::Sender<Vec<HostView>>),
    Leave(oneshot::Sender<()>),
}

/// The handle on the membership task.
#[derive(Clone)]
pub struct Membership {
    tx: mpsc::Sender<Input>,
    socket: Arc<Datagrams>,
}

#[derive(Debug, thiserror::Error)]
#[error("the membership task has stopped")]
pub struct Stopped;

impl Membership {
    /// Starts the task on `socket` (bound to the peer port). `join` are
    /// HOST:PORT strings of hosts to announce to while no other host is
    /// known; `local_jobs` is this host's count of its jobs by the host
    /// their body runs on, kept current by the job side.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        id: HostId,
        socket: Datagrams,
        join: Vec<String>,
        timing: Timing,
        local_jobs: watch::Receiver<Vec<(String, u32)>>,
        mode: watch::Receiver<HostMode>,
        heard: mpsc::Sender<Heard>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> (Membership, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(64);
        let socket = Arc::new(socket);
        let config = swim_config(&timing);
        let rng: StdRng = rand::make_rng();
        let foca = Foca::new(id.clone(), config, rng, PostcardCodec);
        let task = Task {
            id,
            foca,
            runtime: AccumulatingRuntime::new(),
            socket: socket.clone(),
            timers: BinaryHeap::new(),
            join,
            timing,
            local_jobs,
            mode,
            metrics,
            statuses: HashMap::new(),
            left: HashSet::new(),
            seq: 0,
            drops: Drops::default(),
            rx,
            leaving: false,
            heard,
            balance_seen: Freshness::default(),
        };
        (Membership { tx, socket }, tokio::spawn(task.run()))
    }

    /// The peer port's UDP socket, for sending datagrams of other kinds
    /// (receiving stays with the membership task).
    pub fn socket(&self) -> Arc<Datagrams> {
        self.socket.clone()
    }

    /// Every host known, this one first.
    pub async fn hosts(&self) -> Result<Vec<HostView>, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Input::Hosts(tx)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Says goodbye to the cluster; the task ends.
    pub async fn leave(&self) -> Result<(), Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Input::Leave(tx)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }
}

/// Logs refused datagrams without letting a flood of them flood the log:
/// one warning per interval, the rest at debug level.
#[derive(Default)]
pub(crate) struct Drops {
    last_warn: Option<std::time::Instant>,
    suppressed: u64,
}

impl Drops {
    pub(crate) fn note(&mut self, from: SocketAddr, what: &str, err: &dyn fmt::Display) {
        let now = std::time::Instant::now();
        if self.last_warn.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(5)) {
            warn!(%from, suppressed = self.suppressed, "dropped {what}: {err}");
            self.last_warn = Some(now);
            self.suppressed = 0;
        } else {
            debug!(%from, "dropped {what}: {err}");
            self.suppressed += 1;
        }
    }
}

/// The newest (boot, seq) of a message from each address: a replayed or
/// reordered datagram is not newer; a restarted daemon has a later boot.
#[derive(Default)]
struct Freshness {
    newest: HashMap<SocketAddr, (u64, u64)>,
}

impl Freshness {
    /// A member went: whatever comes from its address next starts afresh
    /// (a host restarted with its clock set back has an older boot).
    fn forget(&mut self, from: SocketAddr) {
        self.newest.remove(&from);
    }

    /// True, and remembered, if (boot, seq) is newer than any seen from `from`.
    fn fresh(&mut self, from: SocketAddr, boot: u64, seq: u64) -> bool {
        match self.newest.get(&from) {
            Some(&last) if (boot, seq) <= last => false,
            _ => {
                self.newest.insert(from, (boot, seq));
                true
            }
        }
    }
}

struct Reported {
    status: Status,
}

struct Task {
    id: HostId,
    foca: Foca<HostId, PostcardCodec, StdRng, NoCustomBroadcast>,
    runtime: AccumulatingRuntime<HostId>,
    socket: Arc<Datagrams>,
    timers: BinaryHeap<Reverse<(Instant, Timer<HostId>)>>,
    join: Vec<String>,
    timing: Timing,
    local_jobs: watch::Receiver<Vec<(String, u32)>>,
    /// This host's mode: told to every member at once when it changes.
    mode: watch::Receiver<HostMode>,
    metrics: Arc<crate::metrics::Metrics>,
    /// The latest status of each member, by its address.
    statuses: HashMap<SocketAddr, Reported>,
    /// Identities that said goodbye.
    left: HashSet<HostId>,
    seq: u64,
    drops: Drops,
    rx: mpsc::Receiver<Input>,
    /// Set once we say goodbye: foca then calls us defunct, as it should.
    leaving: bool,
    heard: mpsc::Sender<Heard>,
    balance_seen: Freshness,
}

impl Task {
    async fn run(mut self) {
        // Larger than any valid datagram, so an oversized one is seen
        // whole and refused instead of silently cut.
        let mut buf = vec![0u8; 65536];
        let mut tick = tokio::time::interval(self.timing.status_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = self.timers.peek().map(|Reverse((t, _))| *t);
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => match self.socket.open(&mut buf[..n]) {
                        Ok(message) => self.on_datagram(message, from),
                        // Not of this cluster (or replayed): never read further.
                        Err(e) => self.drops.note(from, "datagram not sealed by this cluster", &e),
                    },
                    Err(e) => debug!("peer UDP socket: {e}"),
                },
                input = self.rx.recv() => match input {
                    Some(Input::Hosts(reply)) => {
                        let _ = reply.send(self.hosts());
                    }
                    Some(Input::Leave(done)) => {
                        self.leave().await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.leave().await;
                        return;
                    }
                },
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    self.fire_timers();
                }
                _ = tick.tick() => {
                    if self.foca.num_members() == 0 {
                        self.announce_to_join().await;
                    }
                    self.send_status().await;
                }
                Ok(()) = self.mode.changed() => self.send_status().await,
            }
            self.drain().await;
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((when, _))) = self.timers.peek() {
            if *when > now {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else { break };
            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                debug!("membership timer: {e}");
            }
        }
    }

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr) {
        let (kind, payload) = match wire::decode_datagram(data) {
            Ok(v) => v,
            Err(e) => return self.drops.note(from, "datagram", &e),
        };
        let payload = &payload[..];
        match kind {
            Kind::Swim => {
                if let Err(e) = self.foca.handle_data(payload, &mut self.runtime) {
                    // Foca also refuses valid packets it has no use for
                    // (from a member it declared down): not worth a warning.
                    debug!(%from, "SWIM packet not used: {e}");
                }
            }
            Kind::Status => match wire::decode_msg::<Status>(kind, payload) {
                Ok(s) => self.on_status(s, from),
                Err(e) => self.drops.note(from, "status", &e),
            },
            Kind::Leave => match wire::decode_msg::<Leave>(kind, payload) {
                Ok(l) => self.on_leave(l, from),
                Err(e) => self.drops.note(from, "leave", &e),
            },
            Kind::Balance => match wire::decode_msg::<BalanceEnvelope>(kind, payload) {
                Ok(b) => self.on_balance(b, from),
                Err(e) => self.drops.note(from, "balancer message", &e),
            },
            other => self.drops.note(from, "datagram", &format!("{other:?} is not a datagram kind")),
        }
    }

    /// The member with exactly this identity, if foca knows it.
    fn member(&self, id: &HostId) -> Option<&Member<HostId>> {
        self.foca.iter_membership_state().find(|m| m.id() == id)
    }

    fn on_status(&mut self, s: Status, from: SocketAddr) {
        // Only from the address it claims, and from a member foca knows
        // as active: a stray or stale datagram cannot invent a host.
        let active = self.member(&s.from).is_some_and(|m| m.state() != foca::State::Down);
        if s.from.addr != from || !active {
            debug!(%from, id = ?s.from, "status from an unknown or inactive member ignored");
            return;
        }
        match self.statuses.get(&from) {
            Some(r) if r.status.from == s.from && r.status.seq >= s.seq => {}
            _ => {
                self.statuses.insert(from, Reported { status: s });
            }
        }
    }

    fn on_balance(&mut self, b: BalanceEnvelope, from: SocketAddr) {
        // From an active member at the address it sends from, under the
        // name it has there.
        let member =
            self.foca.iter_members().find(|m| m.id().addr == from && m.id().name == b.name).map(|m| m.id().clone());
        let Some(id) = member else {
            return self.drops.note(from, "balancer message", &format!("{:?} is not an active member", b.name));
        };
        if !self.balance_seen.fresh(from, b.boot, b.seq) {
            return self.drops.note(from, "balancer message", &format!("replayed or stale (seq {})", b.seq));
        }
        if self.heard.try_send(Heard::Balance { from: id, msg: b.msg }).is_err() {
            debug!(%from, "balancer busy or stopped; message dropped");
        }
    }

    fn on_leave(&mut self, l: Leave, from: SocketAddr) {
        if l.from.addr != from || self.member(&l.from).is_none() {
            debug!(%from, id = ?l.from, "leave from an unknown member ignored");
            return;
        }
        if self.left.insert(l.from.clone()) {
            info!(host = %l.from.name, addr = %l.from.addr, "host left the cluster");
            let _ = self.heard.try_send(Heard::Down { id: l.from.clone(), left: true });
        }
        self.statuses.remove(&from);
        self.balance_seen.forget(from);
        // Tell foca now rather than wait for the gossip to come round.
        if let Err(e) = self.foca.apply_many(std::iter::once(Member::down(l.from)), true, &mut self.runtime) {
            debug!("applying a leave: {e}");
        }
    }

    async fn announce_to_join(&mut self) {
        for target in self.join.clone() {
            let addrs = match tokio::net::lookup_host(target.as_str()).await {
                Ok(a) => a.collect::<Vec<_>>(),
                Err(e) => {
                    debug!(%target, "join address: {e}");
                    continue;
                }
            };
            for addr in addrs.into_iter().filter(|a| *a != self.id.addr) {
                if let Err(e) = self.foca.announce(HostId::placeholder(addr), &mut self.runtime) {
                    debug!(%addr, "announce: {e}");
                }
            }
        }
    }

    fn status(&mut self) -> Status {
        self.seq += 1;
        let (mem_available, mem_total) = meminfo().unwrap_or((0, 0));
        let mut running = self.local_jobs.borrow().clone();
        // Keep the datagram under the limit whatever the number of hosts.
        loop {
            let mode = *self.mode.borrow();
            let s =
                Status { from: self.foca.identity().clone(), seq: self.seq, mem_available, mem_total, running, mode };
            let len = postcard::to_allocvec(&s).map(|v| v.len()).unwrap_or(usize::MAX);
            if len <= wire::MAX_DATAGRAM_PAYLOAD || s.running.is_empty() {
                return s;
            }
            running = s.running;
            running.pop();
        }
    }

    async fn send_status(&mut self) {
        let frame = wire::encode_msg(Kind::Status, &self.status());
        let targets: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        for addr in targets {
            self.send(addr, &frame).await;
        }
    }

    async fn send(&self, addr: SocketAddr, frame: &[u8]) {
        if let Err(e) = self.socket.send_to(frame, addr).await {
            debug!(%addr, "peer UDP send: {e}");
        }
    }

    /// Acts on what foca asked for: packets to send, timers, notifications.
    async fn drain(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            let frame = wire::encode(Kind::Swim, &data);
            self.send(to.addr, &frame).await;
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timers.push(Reverse((now + after, timer)));
        }
        while let Some(n) = self.runtime.to_notify() {
            match n {
                OwnedNotification::MemberUp(id) => {
                    info!(host = %id.name, addr = %id.addr, "host is alive");
                    let _ = self.heard.try_send(Heard::Up(id));
                }
                OwnedNotification::MemberDown(id) => {
                    if self.left.contains(&id) {
                        debug!(host = %id.name, "host that left is down");
                    } else {
                        warn!(host = %id.name, addr = %id.addr, "host is down");
                        self.metrics.host_failed();
                        let _ = self.heard.try_send(Heard::Down { id: id.clone(), left: false });
                    }
                    self.statuses.remove(&id.addr);
                    self.balance_seen.forget(id.addr);
                }
                OwnedNotification::Rename(old, new) => {
                    debug!(old = ?old, new = ?new, "host restarted under a new identity");
                    self.left.remove(&old);
                }
                OwnedNotification::Active => info!("joined the cluster"),
                OwnedNotification::Idle => info!("no other host is known"),
                OwnedNotification::Rejoin(id) => {
                    warn!(id = ?id, "was declared down by the cluster; rejoined")
                }
                OwnedNotification::Defunct if self.leaving => {}
                OwnedNotification::Defunct => warn!("declared down by the cluster"),
            }
        }
    }

    async fn leave(&mut self) {
        self.leaving = true;
        let frame = wire::encode_msg(Kind::Leave, &Leave { from: self.foca.identity().clone() });
        let targets: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        // Twice: UDP may lose one, and a missed goodbye reads as a failure.
        for _ in 0..2 {
            for addr in &targets {
                self.send(*addr, &frame).await;
            }
        }
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            debug!("leaving: {e}");
        }
        self.drain().await;
        info!(hosts = targets.len(), "left the cluster");
    }

    fn jobs_at(&self, name: &str) -> u32 {
        let local = self.local_jobs.borrow();
        let mine: u32 = local.iter().filter(|(h, _)| h == name).map(|(_, n)| n).sum();
        let others: u32 = self
            .statuses
            .values()
            .flat_map(|r| r.status.running.iter())
            .filter(|(h, _)| h == name)
            .map(|(_, n)| *n)
            .sum();
        mine.saturating_add(others)
    }

    fn hosts(&self) -> Vec<HostView> {
        let me = self.foca.identity();
        let mem = meminfo();
        let mut out = vec![HostView {
            name: me.name.clone(),
            addr: me.addr.to_string(),
            state: HostState::Alive,
            local: true,
            jobs: self.jobs_at(&me.name),
            mem_available: mem.map(|m| m.0),
            mem_total: mem.map(|m| m.1),
            load: None,
            balancer: None,
            mode: *self.mode.borrow(),
        }];
        let mut others: Vec<HostView> = self
            .foca
            .iter_membership_state()
            .filter(|m| !m.id().name.is_empty() && m.id().addr != me.addr)
            .map(|m| {
                let id = m.id();
                let state = match m.state() {
                    foca::State::Alive => HostState::Alive,
                    foca::State::Suspect => HostState::Suspect,
                    foca::State::Down if self.left.contains(id) => HostState::Left,
                    foca::State::Down => HostState::Down,
                };
                let reported = matches!(state, HostState::Alive | HostState::Suspect)
                    .then(|| self.statuses.get(&id.addr).filter(|r| r.status.from == *id))
                    .flatten();
                HostView {
                    name: id.name.clone(),
                    addr: id.addr.to_string(),
                    state,
                    local: false,
                    jobs: self.jobs_at(&id.name),
                    mem_available: reported.map(|r| r.status.mem_available),
                    mem_total: reported.map(|r| r.status.mem_total),
                    load: None,
                    balancer: None,
                    mode: reported.map(|r| r.status.mode).unwrap_or_default(),
                }
            })
            .collect();
        others.sort_by(|a, b| a.name.cmp(&b.name).then(a.addr.cmp(&b.addr)));
        out.extend(others);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_rules() {
        let a = HostId { name: "a".into(), addr: "127.0.0.2:7077".parse().unwrap(), incarnation: 5 };
        let b = a.renew().unwrap();
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
        assert_eq!(a.addr(), b.addr());
    }

    #[test]
    fn replayed_and_reordered_messages_are_not_fresh() {
        let mut f = Freshness::default();
        let a: SocketAddr = "127.0.0.2:7077".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:7077".parse().unwrap();
        assert!(f.fresh(a, 10, 1));
        assert!(!f.fresh(a, 10, 1), "replay");
        assert!(f.fresh(a, 10, 5));
        assert!(!f.fresh(a, 10, 4), "reordered");
        assert!(f.fresh(b, 10, 4), "per address");
        assert!(f.fresh(a, 11, 1), "a restarted daemon starts again");
        assert!(!f.fresh(a, 10, 99), "from before the restart");
    }

    #[test]
    fn meminfo_reads() {
        let (avail, total) = meminfo().unwrap();
        assert!(avail > 0 && total >= avail);
    }
}
