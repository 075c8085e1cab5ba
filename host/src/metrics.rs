//! Prometheus metrics (`mosvm host --metrics ADDR:PORT`, `GET /metrics`,
//! OpenMetrics text).
//!
//! Two kinds: what the daemon's parts count as it happens (moves, host
//! failures: the hooks of `Metrics`), and what is read off its state at
//! scrape time (load, hosts, jobs, the balancer's counters, and the site
//! calls of the bodies running here, asked from each body's control
//! socket). Every part of a scrape is on its own: one that fails or does
//! not answer in time is left out, the rest is served.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::api::{BalancerStats, HostMode, HostState, HostView, JobState, LoadView, MoveFigures, MoveWhy, SiteStats};
use crate::server::Shared;

const WHYS: [MoveWhy; 5] = [MoveWhy::Operator, MoveWhy::Balancer, MoveWhy::Load, MoveWhy::Memory, MoveWhy::Drain];
const HOST_STATES: [HostState; 4] = [HostState::Alive, HostState::Suspect, HostState::Down, HostState::Left];
const MODES: [HostMode; 3] = [HostMode::Normal, HostMode::Cordoned, HostMode::Draining];
const JOB_STATES: [JobState; 4] = [JobState::Running, JobState::Moving, JobState::Exited, JobState::Lost];

/// Move duration buckets, seconds: from a small idle job to a large busy one.
const DURATION_BOUNDS: [f64; 13] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Downtime buckets, seconds: the target is milliseconds.
const DOWNTIME_BOUNDS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
/// Site call latency buckets, seconds: the bodies' own (vmm's
/// `site::stats::LATENCY_BOUNDS`); a body reporting others is mapped onto
/// these (each bucket counts at most what it should).
const SITE_BOUNDS: [f64; 11] = [50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3, 1.0];

/// How long the membership may take to list the hosts for a scrape.
const HOSTS_LIMIT: Duration = Duration::from_secs(1);
/// How long all the bodies together may take to give their figures (each
/// one's question is bounded by `control`'s own limit, shorter).
const BODIES_LIMIT: Duration = Duration::from_secs(3);
/// Kinds of site calls kept (the vmm has about 40); a body reporting
/// more, or odd names, is not believed beyond that.
const MAX_KINDS: usize = 64;
const MAX_KIND_LEN: usize = 32;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhyLabel {
    why: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HomeMoveLabels {
    why: &'static str,
    result: &'static str,
}

/// The daemon's counters and histograms (what cannot be read off its
/// state at scrape time).
pub struct Metrics {
    moves_out: Family<WhyLabel, Counter>,
    moves_in: Family<WhyLabel, Counter>,
    home_moves: Family<HomeMoveLabels, Counter>,
    move_duration: Histogram,
    move_downtime: Histogram,
    move_pages: Counter,
    move_bytes: Counter,
    host_failures: Counter,
    site: Mutex<SiteTotals>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            moves_out: Family::default(),
            moves_in: Family::default(),
            home_moves: Family::default(),
            move_duration: Histogram::new(DURATION_BOUNDS),
            move_downtime: Histogram::new(DOWNTIME_BOUNDS),
            move_pages: Counter::default(),
            move_bytes: Counter::default(),
            host_failures: Counter::default(),
            site: Mutex::new(SiteTotals::default()),
        };
        // Every label value shows from the start, at 0: a rate over a
        // series that appears only with its first event misses that event.
        for why in WHYS {
            let why = why.as_str();
            let _ = m.moves_out.get_or_create(&WhyLabel { why });
            let _ = m.moves_in.get_or_create(&WhyLabel { why });
            for result in ["done", "failed"] {
                let _ = m.home_moves.get_or_create(&HomeMoveLabels { why, result });
            }
        }
        m
    }

    /// A body left this host (it was the move's source), moved for `why`.
    pub fn moved_out(&self, why: MoveWhy) {
        self.moves_out.get_or_create(&WhyLabel { why: why.as_str() }).inc();
    }

    /// A body arrived at this host (it was the move's destination).
    pub fn moved_in(&self, why: MoveWhy) {
        self.moves_in.get_or_create(&WhyLabel { why: why.as_str() }).inc();
    }

    /// A move of one of this home's jobs ended: its figures if it went.
    pub fn move_done(&self, why: MoveWhy, figures: Option<&MoveFigures>) {
        let result = if figures.is_some() { "done" } else { "failed" };
        self.home_moves.get_or_create(&HomeMoveLabels { why: why.as_str(), result }).inc();
        if let Some(f) = figures {
            let secs = |ms: f64| if ms.is_finite() && ms >= 0.0 { Some(ms / 1e3) } else { None };
            if let Some(s) = secs(f.total_ms) {
                self.move_duration.observe(s);
            }
            if let Some(s) = secs(f.downtime_ms) {
                self.move_downtime.observe(s);
            }
            self.move_pages.inc_by(f.pages_sent);
            self.move_bytes.inc_by(f.bytes_sent);
        }
    }

    /// Membership declared a host down (not a clean leave).
    pub fn host_failed(&self) {
        self.host_failures.inc();
    }

    fn site(&self) -> MutexGuard<'_, SiteTotals> {
        self.site.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counted metrics, into a scrape's registry (the families share
    /// their values with `self`).
    fn register(&self, r: &mut Registry) {
        r.register("moves_out", "Bodies that left this host, by why they moved", self.moves_out.clone());
        r.register("moves_in", "Bodies that arrived at this host, by why they moved", self.moves_in.clone());
        r.register(
            "home_moves",
            "Moves of this home's jobs that ended, by why and result (done or failed)",
            self.home_moves.clone(),
        );
        r.register_with_unit(
            "move_duration",
            "Moves of this home's jobs, start to acknowledgement",
            Unit::Seconds,
            self.move_duration.clone(),
        );
        r.register_with_unit(
            "move_downtime",
            "Moves of this home's jobs, from the job stopping to it running again",
            Unit::Seconds,
            self.move_downtime.clone(),
        );
        r.register("move_pages_sent", "Memory pages sent by the moves of this home's jobs", self.move_pages.clone());
        r.register_with_unit(
            "move_sent",
            "Bytes sent by the moves of this home's jobs (pages and state)",
            Unit::Bytes,
            self.move_bytes.clone(),
        );
        r.register("host_failures", "Hosts membership declared down (not a clean leave)", self.host_failures.clone());
    }
}

/// One kind of site call, added up (cumulative buckets on `SITE_BOUNDS`).
#[derive(Debug, Clone, Default, PartialEq)]
struct KindTotal {
    count: u64,
    seconds: f64,
    buckets: [u64; SITE_BOUNDS.len()],
}

impl KindTotal {
    /// A body's figures for one kind, believed only as far as they make
    /// sense: buckets mapped onto ours, cumulative and at most the count.
    fn from_body(count: u64, seconds: f64, buckets: &[(f64, u64)]) -> KindTotal {
        let seconds = if seconds.is_finite() && seconds >= 0.0 { seconds } else { 0.0 };
        let mut out = KindTotal { count, seconds, buckets: [0; SITE_BOUNDS.len()] };
        for (i, &le) in SITE_BOUNDS.iter().enumerate() {
            let within = buckets
                .iter()
                .filter(|(b, _)| b.is_finite() && *b <= le * (1.0 + 1e-9))
                .map(|&(_, n)| n)
                .max()
                .unwrap_or(0);
            let floor = if i > 0 { out.buckets[i - 1] } else { 0 };
            out.buckets[i] = within.clamp(floor, count);
        }
        out
    }

    /// What `self` holds beyond `before` (the same body's earlier figures);
    /// all of it when the body's counts went back (a new process).
    fn since(&self, before: &KindTotal) -> KindTotal {
        if self.count < before.count || self.buckets.iter().zip(&before.buckets).any(|(a, b)| a < b) {
            return self.clone();
        }
        KindTotal {
            count: self.count - before.count,
            seconds: (self.seconds - before.seconds).max(0.0),
            buckets: std::array::from_fn(|i| self.buckets[i] - before.buckets[i]),
        }
    }

    fn add(&mut self, d: &KindTotal) {
        self.count = self.count.saturating_add(d.count);
        self.seconds += d.seconds;
        for (a, b) in self.buckets.iter_mut().zip(&d.buckets) {
            *a = a.saturating_add(*b);
        }
    }
}

fn plausible_kind(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_KIND_LEN
        && k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The site calls of every body seen here, added up so that the counters
/// never go down while bodies come and go: the last figures of each body
/// (by control socket) and the totals they made.
#[derive(Debug, Default)]
struct SiteTotals {
    last: HashMap<PathBuf, BTreeMap<String, KindTotal>>,
    totals: BTreeMap<String, KindTotal>,
}

impl SiteTotals {
    /// Takes in what the body at `sock` reports now.
    fn update(&mut self, sock: &PathBuf, stats: &SiteStats) {
        let mut now = BTreeMap::new();
        for c in stats.calls.iter().filter(|c| plausible_kind(&c.kind)).take(MAX_KINDS) {
            now.insert(c.kind.clone(), KindTotal::from_body(c.count, c.seconds, &c.buckets));
        }
        let before = self.last.get(sock);
        for (kind, t) in &now {
            let d = match before.and_then(|b| b.get(kind)) {
                Some(b) => t.since(b),
                None => t.clone(),
            };
            if d.count == 0 {
                continue;
            }
            if !self.totals.contains_key(kind) && self.totals.len() >= MAX_KINDS {
                continue;
            }
            self.totals.entry(kind.clone()).or_default().add(&d);
        }
        self.last.insert(sock.clone(), now);
    }

    /// Forgets the bodies that are no longer here (what they made stays
    /// in the totals).
    fn keep_only(&mut self, present: &HashSet<PathBuf>) {
        self.last.retain(|k, _| present.contains(k));
    }
}

/// What a scrape read off the daemon's state (each part None if it
/// could not be read).
#[derive(Debug, Default)]
struct Scrape {
    load: Option<LoadView>,
    /// Exported and raw local load.
    raw: Option<(f64, f64)>,
    balancer: Option<BalancerStats>,
    hosts: Option<[u64; HOST_STATES.len()]>,
    mode: Option<HostMode>,
    jobs: Option<[u64; JOB_STATES.len()]>,
    bodies: u64,
    site: BTreeMap<String, KindTotal>,
    unanswered: u64,
}

fn gauge<T: prometheus_client::encoding::EncodeGaugeValue + Copy + std::fmt::Debug + Send + Sync + 'static>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: T,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, unit, g.metric_type())?)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

/// A family of `kind` values under one label.
fn labelled<T: Copy>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    label: &'static str,
    values: impl IntoIterator<Item = (&'static str, T)>,
    mut each: impl FnMut(prometheus_client::encoding::MetricEncoder, T) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, ty)?;
    for (v, x) in values {
        each(m.encode_family(&[(label, v)])?, x)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(l) = &self.load {
            gauge(
                &mut e,
                "load_exported",
                "This host's load as it tells other hosts: runnable threads per CPU of capacity, moves it committed to applied",
                None,
                l.load,
            )?;
            gauge(&mut e, "runnable_threads", "Runnable threads on this host (smoothed)", None, l.runnable)?;
            if let Some((_, raw)) = self.raw {
                gauge(
                    &mut e,
                    "load_raw",
                    "This host's load as measured here, before the moves it committed to are applied",
                    None,
                    raw,
                )?;
            }
            gauge(
                &mut e,
                "capacity",
                "This host's capacity: cores times speed",
                Some(&Unit::Other("cpus".into())),
                l.cpus,
            )?;
        }
        if let Some(hosts) = &self.hosts {
            let values = HOST_STATES.iter().zip(hosts).map(|(s, n)| (s.as_str(), *n));
            labelled(
                &mut e,
                "hosts",
                "Cluster members by state, as this host sees them",
                MetricType::Gauge,
                "state",
                values,
                |m, n| ConstGauge::new(n as i64).encode(m),
            )?;
        }
        if let Some(mode) = self.mode {
            let values = MODES.iter().map(|m| (m.as_str(), (*m == mode) as i64));
            labelled(
                &mut e,
                "host_mode",
                "This host's mode: 1 for the one it is in",
                MetricType::Gauge,
                "mode",
                values,
                |m, v| ConstGauge::new(v).encode(m),
            )?;
        }
        if let Some(jobs) = &self.jobs {
            let values = JOB_STATES.iter().zip(jobs).map(|(s, n)| (s.as_str(), *n));
            labelled(
                &mut e,
                "jobs",
                "This home's jobs by the state of their records",
                MetricType::Gauge,
                "state",
                values,
                |m, n| ConstGauge::new(n as i64).encode(m),
            )?;
        }
        gauge(&mut e, "bodies", "Bodies of other homes' jobs running on this host", None, self.bodies as i64)?;
        if let Some(b) = &self.balancer {
            counter(
                &mut e,
                "balancer_messages_sent",
                "Balancer messages sent (gossip, requests, replies, cancels)",
                b.messages_sent,
            )?;
            counter(&mut e, "balancer_messages_received", "Balancer messages received", b.messages_received)?;
            counter(&mut e, "balancer_gossip_sent", "Load gossip messages sent", b.gossip_sent)?;
            counter(&mut e, "balancer_gossip_received", "Load gossip messages received", b.gossip_received)?;
            counter(&mut e, "balancer_requests_sent", "Migration requests this host sent", b.requests_sent)?;
            let answers = [("accepted", b.requests_accepted), ("refused", b.requests_refused)];
            labelled(
                &mut e,
                "balancer_request_answers",
                "Answers to this host's migration requests, by result",
                MetricType::Counter,
                "result",
                answers,
                |m, n| ConstCounter::new(n).encode(m),
            )?;
            let arrivals = [("accepted", b.arrivals_accepted), ("refused", b.arrivals_refused)];
            labelled(
                &mut e,
                "balancer_arrivals",
                "Migration requests from other hosts, by how this host answered",
                MetricType::Counter,
                "result",
                arrivals,
                |m, n| ConstCounter::new(n).encode(m),
            )?;
            let moves = [("done", b.moves_done), ("failed", b.moves_failed)];
            labelled(
                &mut e,
                "balancer_moves",
                "Moves the balancer started, by result",
                MetricType::Counter,
                "result",
                moves,
                |m, n| ConstCounter::new(n).encode(m),
            )?;
            gauge(&mut e, "balancer_jobs", "Jobs running here that the balancer balances", None, b.jobs as i64)?;
        }
        // Leaked names would be a cost per scrape; the kinds are few and
        // bounded (MAX_KINDS), so each scrape borrows them.
        let kinds: Vec<(&str, &KindTotal)> = self.site.iter().map(|(k, t)| (k.as_str(), t)).collect();
        {
            let mut m = e.encode_descriptor(
                "site_calls",
                "Site calls bodies running here sent to their homes' deputies, by kind",
                None,
                MetricType::Counter,
            )?;
            for (kind, t) in &kinds {
                ConstCounter::new(t.count).encode(m.encode_family(&[("kind", *kind)])?)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "site_call_duration",
                "Time site calls of bodies running here waited for their homes' answers, by kind",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (kind, t) in &kinds {
                // The encoder wants per-bucket counts, +Inf last.
                let mut b = [(0.0, 0u64); SITE_BOUNDS.len() + 1];
                let mut prev = 0;
                for (i, le) in SITE_BOUNDS.iter().enumerate() {
                    b[i] = (*le, t.buckets[i] - prev);
                    prev = t.buckets[i];
                }
                b[SITE_BOUNDS.len()] = (f64::MAX, t.count - prev);
                m.encode_family(&[("kind", *kind)])?.encode_histogram::<NoLabelSet>(t.seconds, t.count, &b, None)?;
            }
        }
        gauge(
            &mut e,
            "scrape_bodies_unanswered",
            "Bodies running here that did not give their site call figures to this scrape",
            None,
            self.unanswered as i64,
        )
    }
}

/// Reads everything a scrape shows; never fails as a whole.
async fn scrape(s: &Arc<Shared>) -> Scrape {
    let mut out = Scrape { mode: Some(s.drain.mode()), ..Scrape::default() };

    let hosts = match tokio::time::timeout(HOSTS_LIMIT, s.membership.hosts()).await {
        Ok(Ok(h)) => Some(h),
        Ok(Err(e)) => {
            warn!("metrics: no host list: {e}");
            None
        }
        Err(_) => {
            warn!("metrics: the membership did not list the hosts in {HOSTS_LIMIT:?}");
            None
        }
    };
    if let Some(h) = &hosts {
        let mut n = [0u64; HOST_STATES.len()];
        for v in h {
            if let Some(i) = HOST_STATES.iter().position(|s| *s == v.state) {
                n[i] += 1;
            }
        }
        out.hosts = Some(n);
    }
    // The balancer's view of this host, even without a host list.
    let mut local: Vec<HostView> = hosts.unwrap_or_default().into_iter().filter(|h| h.local).collect();
    if local.is_empty() {
        local.push(HostView {
            name: s.name.clone(),
            addr: s.id.addr.to_string(),
            state: HostState::Alive,
            local: true,
            jobs: 0,
            mem_available: None,
            mem_total: None,
            load: None,
            balancer: None,
            mode: HostMode::Normal,
        });
    }
    s.balance.fill(&mut local);
    let me = local.swap_remove(0);
    out.load = me.load;
    out.raw = s.balance.raw_load();
    out.balancer = me.balancer;

    // The store's lock is held for the query only, never across an await.
    let mut socks: Vec<PathBuf> = Vec::new();
    let records = s.store().jobs(true);
    match records {
        Ok(jobs) => {
            let mut n = [0u64; JOB_STATES.len()];
            for j in &jobs {
                if let Some(i) = JOB_STATES.iter().position(|st| *st == j.state) {
                    n[i] += 1;
                }
                // This home's jobs whose body runs here, in their deputy.
                if !j.state.ended() && j.host == s.name {
                    socks.extend(j.control_sock.as_ref().map(PathBuf::from));
                }
            }
            out.jobs = Some(n);
        }
        Err(e) => warn!("metrics: cannot read the job records: {e}"),
    }
    let bodies = s.bodies.list();
    out.bodies = bodies.len() as u64;
    socks.extend(bodies.into_iter().map(|b| b.control_sock));
    socks.sort();
    socks.dedup();

    // A receiver still waiting for its body has no socket yet: nothing to ask.
    let asked: Vec<PathBuf> = socks.iter().filter(|p| p.exists()).cloned().collect();
    let mut asks = tokio::task::JoinSet::new();
    for sock in asked.iter().cloned() {
        asks.spawn(async move {
            let st = crate::control::site_stats(&sock).await;
            (sock, st)
        });
    }
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + BODIES_LIMIT;
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline, asks.join_next()).await {
        if let Ok(a) = r {
            answers.push(a);
        }
    }
    asks.abort_all();
    let mut answered = 0;
    let mut site = s.metrics.site();
    for (sock, st) in &answers {
        if let Some(st) = st {
            site.update(sock, st);
            answered += 1;
        }
    }
    site.keep_only(&socks.iter().cloned().collect());
    out.site = site.totals.clone();
    drop(site);
    out.unanswered = (asked.len() - answered) as u64;
    out
}

/// The whole exposition.
async fn render(s: &Arc<Shared>) -> String {
    let scraped = scrape(s).await;
    let mut r = Registry::with_prefix("mosvm");
    s.metrics.register(&mut r);
    r.register_collector(Box::new(scraped));
    let mut text = String::with_capacity(16 << 10);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &r) {
        // Writing into a String does not fail; say so if it ever does.
        warn!("metrics: encoding: {e}");
    }
    text
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let body = render(&s).await;
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "not found: metrics are at GET /metrics\n")
}

/// Serves `GET /metrics` on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let app = Router::new().route("/metrics", get(metrics)).fallback(not_found).with_state(shared);
    info!(%addr, "serving metrics");
    let shutdown = async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        warn!("metrics server: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SiteCallStats;

    fn stats(kind: &str, count: u64, seconds: f64, cum: &[u64]) -> SiteStats {
        let buckets = SITE_BOUNDS.iter().zip(cum).map(|(le, n)| (*le, *n)).collect();
        SiteStats { calls: vec![SiteCallStats { kind: kind.into(), count, seconds, buckets }] }
    }

    #[test]
    fn site_totals_add_deltas_and_never_go_down() {
        let mut t = SiteTotals::default();
        let (a, b) = (PathBuf::from("/a.sock"), PathBuf::from("/b.sock"));
        t.update(&a, &stats("read", 10, 0.01, &[5, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10]));
        t.update(&a, &stats("read", 12, 0.02, &[6, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12]));
        assert_eq!(t.totals["read"].count, 12);
        assert!((t.totals["read"].seconds - 0.02).abs() < 1e-12);
        t.update(&b, &stats("read", 3, 0.5, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]));
        assert_eq!(t.totals["read"].count, 15);
        assert_eq!(t.totals["read"].buckets[0], 6);
        assert_eq!(t.totals["read"].buckets[10], 14);
        // Body a goes; its calls stay counted. A new process at the same
        // socket (its counts went back) adds all it reports.
        t.keep_only(&[b.clone()].into_iter().collect());
        t.update(&b, &stats("read", 1, 0.1, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
        assert_eq!(t.totals["read"].count, 16);
        assert_eq!(t.last.len(), 1);
    }

    #[test]
    fn nonsense_from_a_body_is_not_believed() {
        let mut t = SiteTotals::default();
        let s = PathBuf::from("/x.sock");
        let mut bad = stats("read", 5, f64::NAN, &[9, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0]);
        bad.calls.push(SiteCallStats { kind: "Not A Kind!".into(), count: 1, seconds: 0.0, buckets: vec![] });
        bad.calls.push(SiteCallStats {
            kind: "write".into(),
            count: u64::MAX,
            seconds: f64::INFINITY,
            buckets: vec![(f64::NAN, 3), (-1.0, u64::MAX)],
        });
        t.update(&s, &bad);
        t.update(&PathBuf::from("/y.sock"), &bad);
        let r = &t.totals["read"];
        // Cumulative, at most the count; NaN seconds dropped.
        assert_eq!((r.count, r.seconds), (10, 0.0));
        assert!(r.buckets.windows(2).all(|w| w[0] <= w[1]) && r.buckets[10] <= r.count, "{r:?}");
        assert_eq!(t.totals["write"].count, u64::MAX);
        assert!(!t.totals.contains_key("Not A Kind!"));
        for i in 0..200 {
            t.update(&s, &stats(&format!("k{i}"), 1, 0.0, &[1; 11]));
        }
        assert!(t.totals.len() <= MAX_KINDS);
    }

    #[test]
    fn hooks_show_in_the_exposition() {
        let m = Metrics::new();
        m.moved_out(MoveWhy::Load);
        m.moved_in(MoveWhy::Drain);
        m.host_failed();
        let figures = MoveFigures {
            result: "ok".into(),
            to: "127.0.0.3:1".into(),
            acknowledged: true,
            total_ms: 120.0,
            downtime_ms: 3.0,
            rounds: 2,
            pages_sent: 100,
            bytes_sent: 409_600,
            zero_pages_skipped: 0,
            bandwidth_mbps: 1000.0,
            path: "precopy".into(),
            max_throttle_percent: 0,
            final_pages: 3,
            stop_to_state_sent_ms: 1.0,
            receiver_restore_ms: 1.0,
        };
        m.move_done(MoveWhy::Operator, Some(&figures));
        m.move_done(MoveWhy::Operator, None);
        let mut r = Registry::with_prefix("mosvm");
        m.register(&mut r);
        r.register_collector(Box::new(Scrape {
            site: [(
                "read".to_string(),
                KindTotal { count: 2, seconds: 0.001, buckets: [1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2] },
            )]
            .into(),
            ..Scrape::default()
        }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for line in [
            "mosvm_moves_out_total{why=\"load\"} 1",
            "mosvm_moves_in_total{why=\"drain\"} 1",
            "mosvm_home_moves_total{why=\"operator\",result=\"done\"} 1",
            "mosvm_home_moves_total{why=\"operator\",result=\"failed\"} 1",
            "mosvm_move_duration_seconds_count 1",
            "mosvm_move_downtime_seconds_bucket{le=\"0.005\"} 1",
            "mosvm_move_pages_sent_total 100",
            "mosvm_move_sent_bytes_total 409600",
            "mosvm_host_failures_total 1",
            "mosvm_site_calls_total{kind=\"read\"} 2",
            "mosvm_site_call_duration_seconds_count{kind=\"read\"} 2",
            "mosvm_site_call_duration_seconds_bucket{le=\"0.00005\",kind=\"read\"} 1",
            "mosvm_site_call_duration_seconds_bucket{le=\"+Inf\",kind=\"read\"} 2",
            "mosvm_bodies 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
