//! Starting and stopping a host daemon: the state dir and its records, the
//! peer port (TCP and UDP on one address), membership, and the API socket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::api::Ready;
use crate::balance;
use crate::bodies::Bodies;
use crate::cgroup::CpuLimit;
use crate::config::{Config, LogFormat};
use crate::membership::{HostId, Membership};
use crate::server::{self, Caller, Shared};
use crate::store::{Store, StoreError};
use crate::{peer, ConfigError};

/// How often running jobs' deputies are checked.
const REAP_PERIOD: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("state dir {path}: {err}")]
    StateDir { path: PathBuf, err: std::io::Error },
    #[error("state dir {0} is in use by another mosvm host")]
    Locked(PathBuf),
    #[error("peer port {addr}: {err}")]
    Bind { addr: SocketAddr, err: std::io::Error },
    #[error("API socket {path}: {err}")]
    ApiSock { path: PathBuf, err: std::io::Error },
    #[error("API socket {0} is served by a running daemon")]
    ApiSockBusy(PathBuf),
    #[error("{0}")]
    Runtime(std::io::Error),
    #[error("CPU limit: {0}")]
    Cgroup(#[from] crate::cgroup::CgroupError),
}

/// A running daemon. Dropping it without `shutdown` stops nothing cleanly;
/// tests should call `shutdown` (or kill the process that runs it).
pub struct Daemon {
    ready: Ready,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    membership_task: JoinHandle<()>,
    api_sock: PathBuf,
    /// The CPU budget the daemon put itself into (`cpu_limit`).
    cpu_limit: Option<Arc<CpuLimit>>,
    _lock: std::fs::File,
}

fn lock_state_dir(dir: &Path) -> Result<std::fs::File, Error> {
    let sd = |err| Error::StateDir { path: dir.into(), err };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(sd)?;
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("lock")).map_err(sd)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(Error::Locked(dir.into()));
    }
    Ok(f)
}

/// TCP and UDP on the same address and port; port 0 picks one free for
/// both.
async fn bind_peer_port(addr: SocketAddr) -> Result<(TcpListener, UdpSocket), Error> {
    let bind_err = |err| Error::Bind { addr, err };
    if addr.port() != 0 {
        let tcp = TcpListener::bind(addr).await.map_err(bind_err)?;
        let udp = UdpSocket::bind(addr).await.map_err(bind_err)?;
        return Ok((tcp, udp));
    }
    let mut last = None;
    for _ in 0..32 {
        let tcp = TcpListener::bind(addr).await.map_err(bind_err)?;
        let port = tcp.local_addr().map_err(bind_err)?.port();
        match UdpSocket::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(udp) => return Ok((tcp, udp)),
            Err(e) => last = Some(e),
        }
    }
    Err(bind_err(last.unwrap_or_else(|| std::io::Error::other("no free port"))))
}

/// The address others reach us at when we listen on all addresses: the
/// one the routing table picks towards the first join address (a UDP
/// connect sends nothing).
async fn detect_advertise(listen: SocketAddr, join: &[String]) -> IpAddr {
    let mut targets: Vec<SocketAddr> = Vec::new();
    if let Some(j) = join.first() {
        if let Ok(a) = tokio::net::lookup_host(j.as_str()).await {
            targets.extend(a);
        }
    }
    // No join address: any routable one names the interface of the default
    // route.
    targets.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 9));
    for t in targets {
        let any = if t.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        if let Ok(s) = StdUdpSocket::bind(any) {
            if s.connect(t).is_ok() {
                if let Ok(local) = s.local_addr() {
                    if !local.ip().is_unspecified() {
                        return local.ip();
                    }
                }
            }
        }
    }
    if listen.is_ipv4() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
    }
}

fn bind_api_sock(path: &Path) -> Result<UnixListener, Error> {
    let err = |err| Error::ApiSock { path: path.into(), err };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::ApiSockBusy(path.into()));
        }
        // Left by a daemon that died.
        std::fs::remove_file(path).map_err(err)?;
    }
    let l = UnixListener::bind(path).map_err(err)?;
    // Anyone may connect: each request is judged by its caller's uid.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(l)
}

impl Daemon {
    /// Starts a daemon on the current tokio runtime; returns once every
    /// port and socket is bound and it serves.
    pub async fn start(config: Config) -> Result<Daemon, Error> {
        let lock = lock_state_dir(&config.state_dir)?;
        // First, so that every thread and child of the daemon is inside.
        let cpu_limit = match config.cpu_limit {
            Some(cpus) => {
                // Named by host and port: emulated hosts on one machine may
                // share a name across clusters, never a port.
                let tag = match config.listen.port() {
                    0 => format!("{}-pid{}", config.name, std::process::id()),
                    p => format!("{}-{p}", config.name),
                };
                let l = CpuLimit::create(&tag, cpus)?;
                info!(cpus, cgroup = %l.path().display(), "CPU limit");
                Some(Arc::new(l))
            }
            None => None,
        };
        let store = Store::open(&config.state_dir.join("jobs.db"))?;
        let (mode, drain_since) = store.mode()?;
        if mode != crate::api::HostMode::Normal {
            info!(mode = mode.as_str(), "this host is {} (kept in its records)", mode.as_str());
        }
        let drain = crate::drain::Drain::new(mode, drain_since);
        if !config.transport.is_tls() {
            warn!(
                "INSECURE: no cluster identity (--insecure): peer connections are plain TCP and gossip is \
                 unsealed; anyone who can reach {} can run code on this host and read its jobs",
                config.listen
            );
        }
        let (tcp, udp) = bind_peer_port(config.listen).await?;
        let bound = tcp.local_addr().map_err(|err| Error::Bind { addr: config.listen, err })?;
        let advertise = match config.advertise {
            Some(a) => a,
            None if bound.ip().is_unspecified() => {
                SocketAddr::new(detect_advertise(bound, &config.join).await, bound.port())
            }
            None => bound,
        };
        let id = HostId { name: config.name.clone(), addr: advertise, incarnation: server::now_ms() };

        let metrics = Arc::new(crate::metrics::Metrics::new());
        let (local_jobs, local_jobs_rx) = watch::channel(store.running_by_host()?);
        let (heard_tx, heard_rx) = tokio::sync::mpsc::channel(1024);
        let (membership, membership_task) = Membership::start(
            id.clone(),
            crate::datagram::Datagrams::new(udp, config.transport.sealer()),
            config.join.clone(),
            config.timing.clone(),
            local_jobs_rx,
            drain.watch(),
            heard_tx,
            metrics.clone(),
        );
        let (balance, balance_inputs) = if config.balance.enabled {
            balance::Handle::channel()
        } else {
            (balance::Handle::detached(), balance::Ends::unused())
        };
        let bodies = Bodies::new(&config.state_dir, config.exe.clone(), advertise.ip(), config.transport.clone())
            .map_err(|err| Error::StateDir { path: config.state_dir.join("bodies"), err })?;
        bodies.cordoned.store(mode.closed(), std::sync::atomic::Ordering::SeqCst);
        let bodies = Arc::new(bodies);
        bodies.watch_recovered();
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            id: id.clone(),
            bodies: bodies.clone(),
            state_dir: config.state_dir.clone(),
            api_sock: config.api_sock.clone(),
            exe: config.exe.clone(),
            children: Mutex::new(Default::default()),
            store: Mutex::new(store),
            membership,
            local_jobs,
            events: watch::channel(0).0,
            balance,
            cpu_limit: cpu_limit.clone(),
            dirty_rates: Mutex::new(Default::default()),
            metrics,
            drain,
            dialer: peer::Dialer::new(advertise.ip(), &config.transport),
            transport: config.transport.clone(),
        });
        let lost = shared.reap("found at daemon start");
        let known = shared.store().jobs(false).map(|j| j.len()).unwrap_or(0);
        info!(running = known, lost, "job records read");

        let api = bind_api_sock(&config.api_sock)?;
        let metrics_listener = match config.metrics {
            Some(addr) => {
                let l = TcpListener::bind(addr).await.map_err(|err| Error::Bind { addr, err })?;
                let bound = l.local_addr().map_err(|err| Error::Bind { addr, err })?;
                Some((l, bound))
            }
            None => None,
        };
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();

        let app = server::router(shared.clone()).into_make_service_with_connect_info::<Caller>();
        let mut api_stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = api_stop.changed().await;
            };
            if let Err(e) = axum::serve(api, app).with_graceful_shutdown(shutdown).await {
                warn!("API server: {e}");
            }
        }));
        tasks.push(tokio::spawn(peer::serve(tcp, peer::acceptor(&config.transport), shared.clone(), stop_rx.clone())));
        let metrics_addr = metrics_listener.as_ref().map(|(_, a)| a.to_string());
        if let Some((l, _)) = metrics_listener {
            tasks.push(tokio::spawn(crate::metrics::serve(l, shared.clone(), stop_rx.clone())));
        }
        if config.balance.enabled {
            let capacity = crate::load::detect_capacity(config.cpus, config.speed);
            tasks.push(balance::spawn(
                shared.clone(),
                &config.balance,
                capacity,
                heard_rx,
                balance_inputs,
                stop_rx.clone(),
            ));
        } else {
            info!("balancing is off: jobs move only when an operator moves them");
        }
        let (reaper, mut reap_stop) = (shared.clone(), stop_rx);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_PERIOD);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let r = reaper.clone();
                        let _ = tokio::task::spawn_blocking(move || r.reap("noticed while running")).await;
                    }
                    _ = reap_stop.changed() => return,
                }
            }
        }));

        let ready = Ready {
            event: "ready".into(),
            name: config.name.clone(),
            listen: bound.to_string(),
            advertise: advertise.to_string(),
            api_sock: config.api_sock.display().to_string(),
            pid: std::process::id(),
            metrics: metrics_addr,
            tls: config.transport.is_tls(),
        };
        info!(name = %ready.name, listen = %ready.listen, advertise = %ready.advertise, api_sock = %ready.api_sock, "serving");
        Ok(Daemon { ready, shared, stop, tasks, membership_task, api_sock: config.api_sock, cpu_limit, _lock: lock })
    }

    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    /// The daemon's shared state (records and membership), for tests and
    /// for the parts of the daemon still to come.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Leaves the cluster, stops serving and removes the API socket.
    pub async fn shutdown(self) {
        if tokio::time::timeout(Duration::from_secs(2), self.shared.membership.leave()).await.is_err() {
            warn!("leaving the cluster timed out");
        }
        let _ = self.stop.send(true);
        for t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(3), t).await.is_err() {
                warn!("a daemon task did not stop in time");
            }
        }
        self.membership_task.abort();
        if let Err(e) = std::fs::remove_file(&self.api_sock) {
            warn!("removing {}: {e}", self.api_sock.display());
        }
        if let Some(l) = &self.cpu_limit {
            if let Err(e) = l.remove() {
                warn!("removing the CPU limit's cgroup: {e}");
            }
        }
        info!("stopped");
    }
}

/// Sends the daemon's logs to stderr, human-readable or as JSON lines;
/// `MOSVM_LOG` (an env-filter, e.g. `debug` or `mosvm_host=trace`) sets
/// the levels, `info` by default.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MOSVM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let r = match format {
        LogFormat::Human => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
    // Already set (a test, or an embedding program): keep theirs.
    let _ = r;
}

/// Runs a daemon until SIGTERM or SIGINT: prints the readiness line (one
/// JSON object) on stdout once it serves, leaves the cluster and removes
/// its socket at the end.
pub fn run(config: Config) -> Result<(), Error> {
    use std::io::Write;
    use tokio::signal::unix::{signal, SignalKind};
    init_logging(config.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mosvm-host")
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(async move {
        let mut term = signal(SignalKind::terminate()).map_err(Error::Runtime)?;
        let mut int = signal(SignalKind::interrupt()).map_err(Error::Runtime)?;
        let daemon = Daemon::start(config).await?;
        let line = serde_json::to_string(daemon.ready()).unwrap_or_default();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|_| out.flush());
        drop(out);
        let sig = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!("{sig}: shutting down");
        daemon.shutdown().await;
        Ok(())
    })
}
