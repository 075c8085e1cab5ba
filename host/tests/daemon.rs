//! Daemons started in this process (one runtime, loopback addresses of
//! their own), driven through the API client.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mosvm_host::api::{ErrorKind, HostState, JobState, MoveWhy, NewJob, NewMove, StateChange};
use mosvm_host::{Client, ClientError, Config, Daemon, Settings};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mosvm-host-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(base: &std::path::Path, name: &str, ip: &str, join: Vec<String>) -> Config {
    Config::from_settings(Settings {
        name: Some(name.into()),
        listen: Some(format!("{ip}:0")),
        api_sock: Some(base.join(format!("{name}.sock"))),
        state_dir: Some(base.join(name)),
        join: Some(join),
        insecure: Some(true),
        ..Settings::default()
    })
    .unwrap()
}

/// A daemon with the identity in `tls` (a host directory).
fn tls_config(base: &std::path::Path, name: &str, ip: &str, join: Vec<String>, tls: PathBuf) -> Config {
    Config::from_settings(Settings {
        name: Some(name.into()),
        listen: Some(format!("{ip}:0")),
        api_sock: Some(base.join(format!("{name}.sock"))),
        state_dir: Some(base.join(name)),
        join: Some(join),
        tls: Some(tls),
        ..Settings::default()
    })
    .unwrap()
}

async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, limit: Duration, mut f: impl FnMut() -> F) {
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn states(c: &Client) -> Vec<(String, HostState)> {
    c.hosts().await.unwrap().into_iter().map(|h| (h.name, h.state)).collect()
}

fn job() -> NewJob {
    NewJob {
        program: "/bin/sleep".into(),
        argv: vec!["sleep".into(), "100".into()],
        cwd: "/".into(),
        control_sock: None,
        deputy_addr: Some("127.0.0.2:4000".into()),
        mem_bytes: 64 << 20,
        stay: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_in_process() {
    let base = dir("cluster");
    let a = Daemon::start(config(&base, "a", "127.0.0.2", vec![])).await.unwrap();
    let a_addr = a.ready().listen.clone();
    let b = Daemon::start(config(&base, "b", "127.0.0.3", vec![a_addr.clone()])).await.unwrap();
    let c = Daemon::start(config(&base, "c", "127.0.0.4", vec![a_addr])).await.unwrap();
    let (ca, cb) = (Client::new(&a.ready().api_sock), Client::new(&b.ready().api_sock));

    let all_alive = |c: Client| async move {
        let s = states(&c).await;
        s.len() == 3 && s.iter().all(|(_, st)| *st == HostState::Alive)
    };
    wait_for("three alive hosts at b", Duration::from_secs(10), || all_alive(cb.clone())).await;
    wait_for("three alive hosts at a", Duration::from_secs(10), || all_alive(ca.clone())).await;

    // A job registered at a, running at b once moved, is counted at b.
    let j = ca.register(&job()).await.unwrap();
    assert_eq!((j.state, j.home.as_str(), j.host.as_str()), (JobState::Running, "a", "a"));
    assert_eq!(j.owner_uid, unsafe { libc::getuid() });
    assert_eq!(j.deputy_pid, Some(std::process::id()));
    let mv = NewMove {
        from: "a".into(),
        to: "b".into(),
        at_ms: 1,
        total_ms: 3.0,
        downtime_ms: 0.4,
        why: MoveWhy::Operator,
        reason: None,
    };
    let j = ca.add_move(j.id, &mv).await.unwrap();
    assert_eq!((j.host.as_str(), j.moves), ("b", 1));
    let jobs_at_b = |c: Client| async move {
        c.hosts().await.unwrap().iter().any(|h| h.name == "b" && h.jobs == 1 && h.mem_available.is_some())
    };
    wait_for("b counted with the job, seen from c", Duration::from_secs(5), || {
        jobs_at_b(Client::new(&c.ready().api_sock))
    })
    .await;
    let d = ca.job(j.id).await.unwrap();
    assert_eq!(d.history.len(), 1);
    assert_eq!(d.history[0].to, "b");

    // Typed errors.
    match ca.job(999).await {
        Err(ClientError::Api(e)) => assert_eq!(e.kind, ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
    match ca.set_state(j.id, &StateChange::Running { host: "".into() }).await {
        Err(ClientError::Api(e)) => assert_eq!(e.kind, ErrorKind::BadRequest),
        other => panic!("{other:?}"),
    }
    let j2 = ca.set_state(j.id, &StateChange::Exited { status: 7 }).await.unwrap();
    assert_eq!((j2.state, j2.exit_status), (JobState::Exited, Some(7)));
    match ca.set_state(j.id, &StateChange::Running { host: "a".into() }).await {
        Err(ClientError::Api(e)) => assert_eq!(e.kind, ErrorKind::Conflict),
        other => panic!("{other:?}"),
    }
    assert!(ca.jobs(false).await.unwrap().is_empty());
    assert_eq!(ca.jobs(true).await.unwrap().len(), 1);

    // A clean exit reads as "left", not "down".
    let c_sock = c.ready().api_sock.clone();
    c.shutdown().await;
    assert!(!std::path::Path::new(&c_sock).exists());
    let c_left = |cl: Client| async move { states(&cl).await.iter().any(|(n, s)| n == "c" && *s == HostState::Left) };
    wait_for("c left, seen from a", Duration::from_secs(5), || c_left(ca.clone())).await;
    wait_for("c left, seen from b", Duration::from_secs(5), || c_left(cb.clone())).await;

    b.shutdown().await;
    a.shutdown().await;
    let _ = std::fs::remove_dir_all(&base);
}

#[tokio::test]
async fn one_daemon_per_state_dir_and_socket() {
    let base = dir("exclusive");
    let a = Daemon::start(config(&base, "a", "127.0.0.5", vec![])).await.unwrap();
    let again = Daemon::start(config(&base, "a", "127.0.0.5", vec![])).await;
    assert!(matches!(again, Err(mosvm_host::Error::Locked(_))), "{:?}", again.err());
    let mut other = config(&base, "x", "127.0.0.5", vec![]);
    other.api_sock = base.join("a.sock");
    let busy = Daemon::start(other).await;
    assert!(matches!(busy, Err(mosvm_host::Error::ApiSockBusy(_))), "{:?}", busy.err());
    a.shutdown().await;
    let _ = std::fs::remove_dir_all(&base);
}

/// `PrepareBody` on the peer port: only from a member, and typed refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_prepared_only_for_members() {
    use mosvm_host::peer;
    use mosvm_host::wire::{JobRef, Kind, PrepareBody, PrepareReply, RefusalKind};
    let base = dir("bodies");
    let a = Daemon::start(config(&base, "a", "127.0.0.6", vec![])).await.unwrap();
    let mut bc = config(&base, "b", "127.0.0.7", vec![a.ready().listen.clone()]);
    // Not a mosvm binary: it exits without announcing itself.
    bc.exe = "/bin/true".into();
    let b = Daemon::start(bc).await.unwrap();
    let cb = Client::new(&b.ready().api_sock);
    wait_for("a alive at b", Duration::from_secs(10), || {
        let cb = cb.clone();
        async move { states(&cb).await.iter().any(|(n, s)| n == "a" && *s == HostState::Alive) }
    })
    .await;
    let b_addr: std::net::SocketAddr = b.ready().listen.parse().unwrap();
    let job = JobRef { home: "a".into(), id: 1 };
    let ask = |from: mosvm_host::membership::HostId, src: &str, mem_bytes: u64| {
        let msg =
            PrepareBody { from, job: job.clone(), mem_bytes, owner_uid: 0, arrival: Default::default(), ticket: true };
        let src = peer::Dialer::new(src.parse().unwrap(), &trust::Transport::Plain);
        async move {
            peer::request::<_, PrepareReply>(
                &src,
                b_addr,
                Kind::PrepareBody,
                &msg,
                Kind::BodyReady,
                Duration::from_secs(10),
            )
            .await
            .unwrap()
        }
    };
    let refused = |r: PrepareReply| match r {
        PrepareReply::Refused(r) => r.kind,
        other => panic!("not refused: {other:?}"),
    };
    let a_id = a.shared().id.clone();
    // A stranger, and a member's identity claimed from another address.
    let stranger =
        mosvm_host::membership::HostId { name: "x".into(), addr: "127.0.0.9:1".parse().unwrap(), incarnation: 1 };
    assert_eq!(refused(ask(stranger, "127.0.0.9", 1 << 20).await), RefusalKind::NotMember);
    assert_eq!(refused(ask(a_id.clone(), "127.0.0.9", 1 << 20).await), RefusalKind::NotMember);
    // A member: too much memory, a cordoned host, a body that cannot start.
    assert_eq!(refused(ask(a_id.clone(), "127.0.0.6", u64::MAX / 2).await), RefusalKind::NoMemory);
    cb.cordon(true).await.unwrap();
    assert_eq!(refused(ask(a_id.clone(), "127.0.0.6", 1 << 20).await), RefusalKind::Cordoned);
    cb.cordon(false).await.unwrap();
    assert_eq!(refused(ask(a_id, "127.0.0.6", 1 << 20).await), RefusalKind::CannotSpawn);
    assert!(b.shared().bodies.list().is_empty(), "no body is kept for a refusal");
    b.shutdown().await;
    a.shutdown().await;
    let _ = std::fs::remove_dir_all(&base);
}

/// Hosts of one cluster find each other over TLS and sealed gossip; a
/// host of another cluster, a host without TLS and a job's certificate
/// get nothing from them: no membership, no answer on the peer port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_hosts_of_the_cluster_are_heard() {
    use mosvm_host::peer;
    use mosvm_host::wire::{Kind, Overview, OverviewReply};
    let base = dir("tls");
    let ca = base.join("ca");
    trust::init_cluster(&ca).unwrap();
    let a =
        Daemon::start(tls_config(&base, "a", "127.0.0.1", vec![], trust::add_host(&ca, "a").unwrap())).await.unwrap();
    assert!(a.ready().tls);
    let a_addr = a.ready().listen.clone();
    let b =
        Daemon::start(tls_config(&base, "b", "127.0.0.2", vec![a_addr.clone()], trust::add_host(&ca, "b").unwrap()))
            .await
            .unwrap();
    let ca_ = Client::new(&a.ready().api_sock);
    wait_for("a and b alive", Duration::from_secs(10), || {
        let c = ca_.clone();
        async move { states(&c).await.iter().filter(|(_, s)| *s == HostState::Alive).count() == 2 }
    })
    .await;

    // A stranger: a host of another cluster, then a host without TLS.
    let other = base.join("other");
    trust::init_cluster(&other).unwrap();
    let x =
        Daemon::start(tls_config(&base, "x", "127.0.0.3", vec![a_addr.clone()], trust::add_host(&other, "x").unwrap()))
            .await
            .unwrap();
    let y = Daemon::start(config(&base, "y", "127.0.0.4", vec![a_addr.clone()])).await.unwrap();
    let (cx, cy) = (Client::new(&x.ready().api_sock), Client::new(&y.ready().api_sock));
    // Several gossip rounds: neither is let in, and neither hears of a.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let names = |v: Vec<(String, HostState)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(states(&ca_).await), ["a", "b"]);
    assert_eq!(names(states(&cx).await), ["x"]);
    assert_eq!(names(states(&cy).await), ["y"]);

    // Their requests on a's peer port get no answer, even claiming to be
    // b (a member): the handshake refuses them before any message.
    let a_sock: std::net::SocketAddr = a_addr.parse().unwrap();
    let as_b = Overview { from: b.shared().id.clone(), moves: 1 };
    let ask = |d: peer::Dialer| {
        let msg = as_b.clone();
        async move {
            peer::request::<_, OverviewReply>(
                &d,
                a_sock,
                Kind::Overview,
                &msg,
                Kind::OverviewReply,
                Duration::from_secs(5),
            )
            .await
        }
    };
    // b itself is answered.
    let r = ask(b.shared().dialer.clone()).await;
    assert!(r.is_ok(), "{r:?}");
    assert!(ask(x.shared().dialer.clone()).await.is_err(), "another cluster's host was answered");
    assert!(ask(y.shared().dialer.clone()).await.is_err(), "a plain host was answered");
    // A job's certificate from a host of the cluster opens no peer port.
    let trust::Transport::Tls(t) = &b.shared().transport else { panic!("b is plain") };
    let creds = t.identity.issue_job("1@b").unwrap().unwrap();
    let job = trust::Transport::tls(trust::Identity::from_job(&creds, "1@b").unwrap()).unwrap();
    let job_dialer = peer::Dialer::new("127.0.0.2".parse().unwrap(), &job);
    assert!(ask(job_dialer).await.is_err(), "a job's certificate was answered");
    for d in [y, x, b, a] {
        d.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&base);
}
