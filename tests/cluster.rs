//! Several hosts on this machine: one `mosvm host` per loopback address,
//! seen through `mosvm hosts --json` and `mosvm ps --json`.

use std::io::{BufRead, Read};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use mosvm_host::api::{ErrorKind, HostState, JobState, MoveWhy, NewJob, NewMove, StateChange};
use mosvm_host::wire::{self, Kind};
use mosvm_host::{BlockingClient, ClientError};
use mosvm_tests::emulated::{helper_exe, send_all, wait_until, Cluster, Options};
use mosvm_tests::{run_command, Opts, Proc};

fn new_job(program: &str) -> NewJob {
    NewJob {
        program: program.into(),
        argv: vec![program.into(), "--flag".into()],
        cwd: "/".into(),
        control_sock: None,
        deputy_addr: Some("127.0.0.2:4100".into()),
        mem_bytes: 128 << 20,
        stay: false,
    }
}

fn uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

use mosvm_tests::{as_nobody, NOBODY};

/// Not a test of its own: the code that `helper_command` runs in a child
/// process (a copy of this executable), as another process or another uid.
#[test]
fn helper() {
    let Ok(what) = std::env::var("MOSVM_CLUSTER_HELPER") else { return };
    let sock = std::env::var("MOSVM_SOCK").unwrap();
    let c = BlockingClient::new(&sock).unwrap();
    let out = match what.as_str() {
        // Register a job with this process as its deputy, then live until
        // stdin closes.
        "register" => {
            let j = c.register(&new_job("/bin/helper-job")).unwrap();
            serde_json::json!({ "id": j.id, "owner_uid": j.owner_uid, "deputy_pid": j.deputy_pid })
        }
        // Try to touch someone else's job, then one's own.
        "intrude" => {
            let victim: u64 = std::env::var("JOB").unwrap().parse().unwrap();
            let list = c.jobs(true).unwrap();
            let seen = list.iter().find(|j| j.id == victim).unwrap();
            let mine = c.register(&new_job("/bin/mine")).unwrap();
            serde_json::json!({
                           "uid": uid(),
                           "set_state": kind(c.set_state(victim, &StateChange::Exited { status: 0 })),
                           "add_move": kind(c.add_move(victim, &NewMove {
                               from: "h2".into(), to: "h3".into(), at_ms: 1, total_ms: 1.0, downtime_ms: 0.1, why: MoveWhy::Operator,
            reason: None,
                           })),
                           "detail": kind(c.job(victim)),
                           "listed_argv": seen.argv,
                           "listed_program": seen.program,
                           "mine_uid": mine.owner_uid,
                           "mine_id": mine.id,
                           "mine_set_state": kind(c.set_state(mine.id, &StateChange::Moving { to: "h3".into() })),
                       })
        }
        other => panic!("unknown helper {other}"),
    };
    println!("HELPER {out}");
    if what == "register" {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    }
}

/// How a call ended: "ok", or the error's kind.
fn kind<T>(r: Result<T, ClientError>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(ClientError::Api(e)) => serde_json::to_value(e.kind).unwrap().as_str().unwrap().to_string(),
        Err(e) => format!("error: {e}"),
    }
}

/// A child process running `helper` with `what`, against `sock`.
fn helper_command(dir: &std::path::Path, what: &str, sock: &std::path::Path, as_nobody: bool) -> Command {
    let mut cmd = Command::new(helper_exe(dir));
    cmd.args(["--exact", "helper", "--nocapture", "--test-threads=1", "--quiet"]);
    cmd.env("MOSVM_CLUSTER_HELPER", what).env("MOSVM_SOCK", sock);
    if as_nobody {
        cmd = mosvm_tests::as_nobody(cmd);
    }
    cmd
}

fn helper_output(p: &Proc) -> serde_json::Value {
    let out = p.stdout();
    let line = out.lines().find_map(|l| l.strip_prefix("HELPER ")).unwrap();
    serde_json::from_str(line).unwrap()
}

#[test]
fn hosts_see_each_other_and_a_killed_one_goes_down() {
    let mut c = Cluster::start("membership", 3);
    c.wait_all_alive(Duration::from_secs(10));
    for h in &c.hosts {
        let seen = h.hosts();
        assert_eq!(seen.len(), 3, "{seen:?}");
        for v in &seen {
            let host = c.hosts.iter().find(|x| x.name == v.name).unwrap();
            assert_eq!(v.addr, host.addr());
            assert_eq!(v.local, v.name == h.name);
        }
    }
    // Every host's free memory reaches every other.
    for h in &c.hosts {
        wait_until(&format!("memory figures at {}", h.name), Duration::from_secs(5), || {
            h.hosts().iter().all(|v| v.mem_available.is_some_and(|m| m > 0) && v.mem_total >= v.mem_available)
        });
    }

    // A job at home h2 whose body moved to h3 counts at h3, seen from h4.
    let api = BlockingClient::new(&c.hosts[0].sock).unwrap();
    let j = api.register(&new_job("/bin/cpu")).unwrap();
    let mv = NewMove {
        from: "h2".into(),
        to: "h3".into(),
        at_ms: 1,
        total_ms: 3.2,
        downtime_ms: 0.4,
        why: MoveWhy::Balancer,
        reason: None,
    };
    api.add_move(j.id, &mv).unwrap();
    wait_until("h4 to count the job at h3", Duration::from_secs(5), || {
        let seen = c.hosts[2].hosts();
        let jobs = |n: &str| seen.iter().find(|v| v.name == n).map(|v| v.jobs);
        jobs("h3") == Some(1) && jobs("h2") == Some(0)
    });

    // kill -9: the others notice within seconds.
    c.hosts[2].signal(libc::SIGKILL);
    for i in 0..2 {
        let h = &c.hosts[i];
        let took = wait_until(&format!("{} to see h4 down", h.name), Duration::from_secs(10), || {
            h.sees("h4") == Some(HostState::Down)
        });
        eprintln!("{} saw h4 down after {took:?}", h.name);
        let v = h.hosts().into_iter().find(|v| v.name == "h4").unwrap();
        assert_eq!((v.mem_available, v.mem_total), (None, None), "a down host's figures are not shown");
    }
    assert_eq!(c.hosts[0].sees("h3"), Some(HostState::Alive), "{}", c.dump());
}

#[test]
fn a_host_that_stops_cleanly_has_left() {
    let mut c = Cluster::start("leave", 3);
    c.wait_all_alive(Duration::from_secs(10));

    // The client finds its daemon through MOSVM_SOCK too; without one it
    // says so.
    let opts = Opts { env: vec![("MOSVM_SOCK", c.hosts[1].sock.to_str().unwrap())], ..Opts::default() };
    let mut cmd = Command::new(mosvm_tests::mosvm_bin());
    cmd.args(["hosts", "--json"]);
    let r = run_command(cmd, &opts);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let seen: Vec<mosvm_host::api::HostView> = serde_json::from_str(&r.stdout).unwrap();
    assert!(seen.iter().any(|v| v.name == "h3" && v.local));
    let r = mosvm_tests::mosvm(["hosts", "--sock", c.base.join("nothing.sock").to_str().unwrap()]);
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("cannot reach"), "{}", r.stderr);

    let sock = c.hosts[1].sock.clone();
    let status = c.hosts[1].signal(libc::SIGTERM);
    assert_eq!(status, Some(0), "SIGTERM must end the daemon with 0");
    assert!(!sock.exists(), "the API socket is removed at exit");
    for i in [0, 2] {
        let h = &c.hosts[i];
        wait_until(&format!("{} to see h3 left", h.name), Duration::from_secs(5), || {
            h.sees("h3") == Some(HostState::Left)
        });
    }
    // Left stays left (the failure detector does not turn it into down).
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(c.hosts[0].sees("h3"), Some(HostState::Left));

    // It comes back as a new incarnation and is alive again everywhere.
    let join = vec![c.hosts[0].addr()];
    c.hosts[1].start(&join);
    c.wait_all_alive(Duration::from_secs(10));
}

#[test]
fn job_records_survive_a_restart() {
    let mut c = Cluster::start("records", 1);
    let sock = c.hosts[0].sock.clone();
    let api = BlockingClient::new(&sock).unwrap();

    // One job whose deputy is this test process, one whose deputy is a
    // child that will be gone when the daemon comes back, one whose deputy
    // dies while the daemon runs.
    let j1 = api.register(&new_job("/bin/survivor")).unwrap();
    assert_eq!((j1.owner_uid, j1.deputy_pid), (uid(), Some(std::process::id())));
    let helper = Proc::spawn_holding_stdin(helper_command(&c.base, "register", &sock, false));
    helper.wait_for("the helper's job", Duration::from_secs(10), |o, _| o.contains("HELPER "));
    let h = helper_output(&helper);
    let j2 = h["id"].as_u64().unwrap();
    assert_eq!(h["deputy_pid"].as_u64(), Some(helper.child.id() as u64));
    let short = Proc::spawn_holding_stdin(helper_command(&c.base, "register", &sock, false));
    short.wait_for("the second helper's job", Duration::from_secs(10), |o, _| o.contains("HELPER "));
    let j3 = helper_output(&short)["id"].as_u64().unwrap();

    let ps = c.hosts[0].ps(false);
    let ids: Vec<u64> = ps.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![j1.id, j2, j3]);
    let v1 = &ps[0];
    assert_eq!((v1.home.as_str(), v1.host.as_str(), v1.state), ("h2", "h2", JobState::Running));
    assert_eq!(v1.argv.as_deref(), Some(&["/bin/survivor".to_string(), "--flag".to_string()][..]));
    assert!(v1.cpu_ms.is_some(), "a job at home in a live deputy has a CPU time");
    assert_eq!(v1.mem_bytes, 128 << 20);

    drop(short);
    wait_until("the job of a dead deputy to be lost", Duration::from_secs(6), || {
        c.hosts[0].ps(true).iter().any(|j| j.id == j3 && j.state == JobState::Lost)
    });

    // Restart; meanwhile j2's deputy ends.
    assert_eq!(c.hosts[0].signal(libc::SIGTERM), Some(0));
    drop(helper);
    c.hosts[0].start(&[]);
    let running: Vec<u64> = c.hosts[0].ps(false).iter().map(|j| j.id).collect();
    assert_eq!(running, vec![j1.id], "only the job whose deputy lives is running");
    let all = c.hosts[0].ps(true);
    assert_eq!(all.len(), 3);
    let lost = all.iter().find(|j| j.id == j2).unwrap();
    assert_eq!(lost.state, JobState::Lost);
    assert!(lost.lost_reason.as_deref().unwrap_or("").contains("found at daemon start"), "{lost:?}");
    assert!(all.iter().find(|j| j.id == j3).unwrap().lost_reason.as_deref().unwrap().contains("while running"));

    // The survivor moves and ends; its record says so across restarts.
    let api = BlockingClient::new(&sock).unwrap();
    let mv = NewMove {
        from: "h2".into(),
        to: "h2".into(),
        at_ms: 5,
        total_ms: 2.0,
        downtime_ms: 0.3,
        why: MoveWhy::Operator,
        reason: None,
    };
    api.add_move(j1.id, &mv).unwrap();
    api.set_state(j1.id, &StateChange::Exited { status: 3 }).unwrap();
    assert!(c.hosts[0].ps(false).is_empty());
    assert_eq!(c.hosts[0].signal(libc::SIGTERM), Some(0));
    c.hosts[0].start(&[]);
    let all = c.hosts[0].ps(true);
    let v1 = all.iter().find(|j| j.id == j1.id).unwrap();
    assert_eq!((v1.state, v1.exit_status, v1.moves), (JobState::Exited, Some(3), 1));
    assert!(v1.ended_ms.is_some_and(|e| e >= v1.started_ms));
    let detail = BlockingClient::new(&sock).unwrap().job(j1.id).unwrap();
    assert_eq!(detail.history.len(), 1);
    assert_eq!(detail.history[0].total_ms, 2.0);
}

#[test]
fn another_uid_cannot_touch_a_job() {
    if uid() != 0 {
        eprintln!("*** SKIPPED another_uid_cannot_touch_a_job: it needs root to run a helper as uid {NOBODY} ***");
        return;
    }
    let c = Cluster::start("owners", 1);
    let sock = c.hosts[0].sock.clone();
    let api = BlockingClient::new(&sock).unwrap();
    let j = api.register(&new_job("/bin/private")).unwrap();

    let mut cmd = helper_command(&c.base, "intrude", &sock, true);
    cmd.env("JOB", j.id.to_string());
    let p = Proc::spawn(cmd);
    let run = p.finish(Duration::from_secs(20));
    assert_eq!(run.status, 0, "helper: {}\n{}", run.stdout, run.stderr);
    let line = run.stdout.lines().find_map(|l| l.strip_prefix("HELPER ")).unwrap();
    let r: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(r["uid"], NOBODY);
    assert_eq!(r["set_state"], "permission_denied");
    assert_eq!(r["add_move"], "permission_denied");
    assert_eq!(r["detail"], "permission_denied");
    assert_eq!(r["listed_program"], "/bin/private", "the job is listed");
    assert!(r["listed_argv"].is_null(), "but its private details are not shown");
    assert_eq!(r["mine_uid"], NOBODY, "the owner is the caller's uid, from the socket");
    assert_eq!(r["mine_set_state"], "ok");

    // Untouched; and root may act on anyone's job.
    let v = api.job(j.id).unwrap().job;
    assert_eq!((v.state, v.moves), (JobState::Running, 0));
    let theirs = r["mine_id"].as_u64().unwrap();
    let t = api.set_state(theirs, &StateChange::Lost { reason: "test".into() }).unwrap();
    assert_eq!((t.state, t.owner_uid), (JobState::Lost, NOBODY));
    match api.set_state(theirs, &StateChange::Running { host: "h2".into() }) {
        Err(ClientError::Api(e)) => assert_eq!(e.kind, ErrorKind::Conflict),
        other => panic!("an ended job changed: {other:?}"),
    }
}

/// Deterministic noise.
fn noise(seed: &mut u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}

/// Asks the peer port who it is, over TCP.
fn ping(addr: &str) -> mosvm_host::membership::HostId {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    send_all(&mut s, &wire::encode_msg(Kind::Ping, &wire::Ping { from: "test".into() }));
    let mut header = [0u8; wire::HEADER_LEN];
    s.read_exact(&mut header).unwrap();
    let len = u32::from_le_bytes(header[4..8].try_into().unwrap()) as usize;
    let mut frame = header.to_vec();
    frame.resize(wire::HEADER_LEN + len, 0);
    s.read_exact(&mut frame[wire::HEADER_LEN..]).unwrap();
    let (kind, payload) = wire::decode_datagram(&frame).unwrap();
    assert_eq!(kind, Kind::Pong);
    wire::decode_msg::<wire::Pong>(kind, &payload).unwrap().id
}

#[test]
fn garbage_on_the_peer_port_is_refused() {
    // The plain protocol's own defences (a TLS port refuses all of this at
    // the handshake: see the next test).
    let opts = Options { insecure: true, ..Options::default() };
    let mut c = Cluster::start_with("garbage", 2, &opts);
    c.wait_all_alive(Duration::from_secs(10));
    let target = c.hosts[0].addr();
    assert_eq!(ping(&target).name, "h2");
    let mut seed = 0x2545f4914f6cdd1d_u64;

    let udp = UdpSocket::bind("127.0.0.9:0").unwrap();
    let status = wire::encode(Kind::Status, &noise(&mut seed, 40));
    let mut datagrams: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x4d],
        b"MV".to_vec(),
        noise(&mut seed, 11),
        noise(&mut seed, 1400),
        noise(&mut seed, 9000),
        wire::encode(Kind::Swim, &noise(&mut seed, 300)),
        status.clone(),
        status[..status.len() - 3].to_vec(),
        wire::encode(Kind::Leave, &noise(&mut seed, 30)),
        wire::encode(Kind::Ping, b""),
        wire::encode(Kind::Swim, &vec![0u8; 60000]),
    ];
    let mut bad_crc = wire::encode(Kind::Swim, b"hello");
    bad_crc[9] ^= 1;
    datagrams.push(bad_crc);
    let mut bad_version = wire::encode(Kind::Swim, b"hello");
    bad_version[2] = 99;
    datagrams.push(bad_version);
    for i in 0..300 {
        let mut d = noise(&mut seed, 1 + i * 5 % 1500);
        if i % 2 == 0 && d.len() > 12 {
            d[..2].copy_from_slice(&wire::MAGIC);
            d[2] = wire::VERSION;
        }
        datagrams.push(d);
    }
    for d in &datagrams {
        let _ = udp.send_to(d, &target);
    }

    let tcp_junk: Vec<Vec<u8>> = vec![
        vec![],
        noise(&mut seed, 1000),
        {
            let mut h = wire::encode(Kind::Ping, b"");
            h[4..8].copy_from_slice(&(1u32 << 30).to_le_bytes());
            h
        },
        wire::encode_msg(Kind::Ping, &wire::Ping { from: "half".into() })[..9].to_vec(),
        {
            let mut f = wire::encode_msg(Kind::Ping, &wire::Ping { from: "crc".into() });
            f[13] ^= 0xff;
            f
        },
        wire::encode(Kind::Pong, &noise(&mut seed, 20)),
        wire::encode(Kind::Ping, &noise(&mut seed, 20)),
        wire::encode(Kind::PrepareBody, &noise(&mut seed, 40)),
        wire::encode(Kind::MoveBody, &noise(&mut seed, 80)),
        wire::encode(Kind::BodyReady, &noise(&mut seed, 10)),
    ];
    let mut open = Vec::new();
    for junk in &tcp_junk {
        let mut s = TcpStream::connect(&target).unwrap();
        send_all(&mut s, junk);
        open.push(s);
    }
    // Many at once, then all hang up.
    for _ in 0..50 {
        open.push(TcpStream::connect(&target).unwrap());
    }
    drop(open);

    // A well-formed move from a host that is not a member is refused,
    // typed, and moves nothing.
    let mut s = TcpStream::connect(&target).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let intruder =
        mosvm_host::membership::HostId { name: "h3".into(), addr: c.hosts[1].addr().parse().unwrap(), incarnation: 1 };
    let mv = wire::MoveBody {
        from: intruder,
        job: wire::JobRef { home: "h3".into(), id: 1 },
        to: wire::Target::Home,
        opts: wire::MoveOptions::default(),
        arrival: wire::Arrival::default(),
    };
    // From 127.0.0.1, not h3's address: not h3.
    send_all(&mut s, &wire::encode_msg(Kind::MoveBody, &mv));
    let mut header = [0u8; wire::HEADER_LEN];
    s.read_exact(&mut header).unwrap();
    let len = u32::from_le_bytes(header[4..8].try_into().unwrap()) as usize;
    let mut frame = header.to_vec();
    frame.resize(wire::HEADER_LEN + len, 0);
    s.read_exact(&mut frame[wire::HEADER_LEN..]).unwrap();
    let (kind, payload) = wire::decode_datagram(&frame).unwrap();
    match wire::decode_msg::<wire::MoveReply>(kind, &payload).unwrap() {
        wire::MoveReply::Refused(r) => assert_eq!(r.kind, wire::RefusalKind::NotMember),
        other => panic!("a stranger's move was not refused: {other:?}"),
    }

    // Still serving: its API, its peer port, its membership.
    assert_eq!(ping(&target).name, "h2");
    for _ in 0..3 {
        assert_eq!(c.hosts[0].sees("h3"), Some(HostState::Alive));
        assert_eq!(c.hosts[1].sees("h2"), Some(HostState::Alive));
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(c.hosts[0].proc.as_mut().unwrap().child.try_wait().unwrap().is_none(), "h2 died: {}", c.dump());
    let err = c.hosts[0].stderr();
    assert!(err.contains("dropped datagram"), "refusals are logged: {err}");
}

/// With a cluster identity, a stranger gets nothing: plain datagrams
/// (even well-formed ones) are dropped, plain TCP gets no byte back, a
/// stranger's move is never read; each refusal is logged, and the hosts
/// go on as before.
#[test]
fn a_tls_peer_port_gives_strangers_nothing() {
    let c = Cluster::start("garbage-tls", 2);
    c.wait_all_alive(Duration::from_secs(10));
    assert!(c.hosts[0].ready.as_ref().unwrap().tls);
    let target = c.hosts[0].addr();
    let mut seed = 0x9e3779b97f4a7c15_u64;
    let udp = UdpSocket::bind("127.0.0.9:0").unwrap();
    // "h3 leaves", as a plain datagram: dropped before it is read.
    let leave = wire::Leave {
        from: mosvm_host::membership::HostId {
            name: "h3".into(),
            addr: c.hosts[1].addr().parse().unwrap(),
            incarnation: 0,
        },
    };
    for d in
        [wire::encode_msg(Kind::Leave, &leave), noise(&mut seed, 300), wire::encode(Kind::Swim, &noise(&mut seed, 200))]
    {
        let _ = udp.send_to(&d, &target);
    }
    let intruder =
        mosvm_host::membership::HostId { name: "h3".into(), addr: c.hosts[1].addr().parse().unwrap(), incarnation: 1 };
    let mv = wire::MoveBody {
        from: intruder,
        job: wire::JobRef { home: "h3".into(), id: 1 },
        to: wire::Target::Home,
        opts: wire::MoveOptions::default(),
        arrival: wire::Arrival::default(),
    };
    for junk in [
        wire::encode_msg(Kind::Ping, &wire::Ping { from: "plain".into() }),
        wire::encode_msg(Kind::MoveBody, &mv),
        noise(&mut seed, 2000),
    ] {
        let mut s = TcpStream::connect(&target).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
        send_all(&mut s, &junk);
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        // At most a TLS alert (content type 21), never a frame of ours.
        assert!(
            got.is_empty() || got[0] == 21,
            "a plain client got {} bytes: {:?}",
            got.len(),
            &got[..got.len().min(16)]
        );
        assert!(!got.windows(2).any(|w| w == wire::MAGIC), "a frame reached a stranger");
    }
    // The leave was not believed: h3 is still there for h2, and all goes on.
    for _ in 0..3 {
        assert_eq!(c.hosts[0].sees("h3"), Some(HostState::Alive));
        std::thread::sleep(Duration::from_secs(1));
    }
    let err = c.hosts[0].stderr();
    assert!(err.contains("refused a peer connection"), "TLS refusals are logged: {err}");
    assert!(err.contains("datagram not sealed by this cluster"), "datagram refusals are logged: {err}");
}

/// A TCP connection to `to` from address `from` (port picked).
fn connect_from(from: std::net::Ipv4Addr, to: std::net::SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let sa = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let std::net::SocketAddr::V4(to) = to else { panic!("IPv4 only") };
    let (local, remote) = (sa(from, 0), sa(*to.ip(), to.port()));
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new socket, bound and connected with valid sockaddr_in
    // values; the descriptor goes to the TcpStream that owns it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        assert_eq!(libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len), 0, "bind {from}");
        assert_eq!(libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len), 0, "connect {to}");
        TcpStream::from_raw_fd(fd)
    }
}

/// Under TLS a host of the cluster speaks only as itself: h3, with its
/// own certificate, asking h2 for an overview as h4 (and from h4's
/// address) gets nothing, and h2 logs why; as itself it gets an answer.
#[test]
fn a_host_cannot_speak_for_another() {
    use std::io::Write;
    let c = Cluster::start("impostor", 3);
    c.wait_all_alive(Duration::from_secs(10));
    let h3 = trust::Transport::tls(trust::Identity::load(&c.hosts[1].identity().unwrap()).unwrap()).unwrap();
    let target: std::net::SocketAddr = c.hosts[0].addr().parse().unwrap();
    let ask = |as_host: usize| {
        let h = &c.hosts[as_host];
        let from =
            mosvm_host::membership::HostId { name: h.name.clone(), addr: h.addr().parse().unwrap(), incarnation: 0 };
        let sock = connect_from(h.ip.parse().unwrap(), target);
        sock.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
        let mut link = h3.client(sock).expect("h3's certificate opens h2's peer port");
        link.write_all(&wire::encode_msg(Kind::Overview, &wire::Overview { from, moves: 1 })).unwrap();
        link.flush().unwrap();
        let mut got = [0u8; 64];
        link.read(&mut got).unwrap_or(0)
    };
    assert_eq!(ask(2), 0, "h3 speaking as h4 got an answer");
    assert!(ask(1) > 0, "h3 speaking as itself got no answer");
    wait_until("the refusal in h2's log", Duration::from_secs(5), || {
        c.hosts[0].stderr().contains("a peer spoke as another host")
    });
}

// ---- jobs moved by the daemons ----

const LONG: Duration = Duration::from_secs(60);

/// A working directory `job` with the homework's input.
fn homework_dir(base: &std::path::Path, name: &str) -> std::path::PathBuf {
    let d = base.join(name).join("job");
    std::fs::create_dir_all(&d).unwrap();
    let input: String = (1..=20_000).map(|i| format!("input line {i}\n")).collect();
    std::fs::write(d.join("in.txt"), input).unwrap();
    d
}

/// `mosvm run -- PROG ARGS` in `cwd`, registered with the daemon at `sock`.
fn run_registered(sock: &std::path::Path, cwd: &std::path::Path, prog: &std::path::Path, args: &[&str]) -> Proc {
    let mut cmd = Command::new(mosvm_tests::mosvm_bin());
    cmd.arg("run").arg("--").arg(prog).args(args).current_dir(cwd).env("MOSVM_SOCK", sock);
    Proc::spawn(cmd)
}

/// `mosvm ARGS --sock SOCK`.
fn at(sock: &std::path::Path, args: &[&str]) -> mosvm_tests::Run {
    let mut cmd = Command::new(mosvm_tests::mosvm_bin());
    cmd.args(args).arg("--sock").arg(sock);
    run_command(cmd, &Opts::default())
}

/// `mosvm migrate JOB --to TO --json` through the daemon at `sock`: the run
/// and its one JSON line.
fn migrate_job(sock: &std::path::Path, job: u64, to: &str) -> (mosvm_tests::Run, serde_json::Value) {
    let r = at(sock, &["migrate", &job.to_string(), "--to", to, "--json", "--verify"]);
    let line = r.stdout.lines().next().unwrap_or("").to_string();
    let v = serde_json::from_str(&line).unwrap_or_else(|e| panic!("migrate --json {line:?}: {e}; {r:?}"));
    (r, v)
}

/// The one job at `h` (waits for the deputy to register it).
fn the_job(h: &mosvm_tests::emulated::Host) -> mosvm_host::api::JobView {
    let mut job = None;
    wait_until(&format!("a job registered at {}", h.name), Duration::from_secs(10), || {
        job = h.ps(false).into_iter().next();
        job.is_some()
    });
    job.unwrap()
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn a_job_moved_by_the_daemons_a_b_c_a_stays_at_home() {
    if !mosvm_tests::require_kvm("a_job_moved_by_the_daemons_a_b_c_a_stays_at_home") {
        return;
    }
    let _l = mosvm_tests::migration_lock();
    let c = Cluster::start("daemon-moves", 3);
    c.wait_all_alive(Duration::from_secs(10));
    let (a, b, cc) = (&c.hosts[0], &c.hosts[1], &c.hosts[2]);
    let prog = mosvm_tests::image("tests/homework");
    let args = ["in.txt", "out.txt", "240"];
    let (dn, dv) = (homework_dir(&c.base, "native"), homework_dir(&c.base, "vm"));
    let n = mosvm_tests::native(&prog, &args, &Opts { cwd: Some(&dn), ..Opts::default() });
    assert_eq!(n.status, 3, "{n:?}");

    let job = run_registered(&a.sock, &dv, &prog, &args);
    let j = the_job(a);
    assert_eq!((j.home.as_str(), j.host.as_str(), j.state, j.moves), ("h2", "h2", JobState::Running, 0));
    assert_eq!(j.deputy_pid, Some(job.child.id()), "the mosvm run process is the deputy");
    assert!(j.control_sock.is_some(), "a registered job gets a control socket of its own");
    assert_eq!(j.argv.as_ref().map(|a| a[1..].to_vec()), Some(args.iter().map(|s| s.to_string()).collect()));
    let id = j.id;
    // Its deputy speaks TLS with the cluster's certificates only: a plain
    // connection, even one with the job's link header, gets no byte.
    let mut deputy: std::net::SocketAddr = j.deputy_addr.as_deref().expect("a deputy").parse().unwrap();
    if deputy.ip().is_unspecified() {
        deputy.set_ip(a.ip.parse().unwrap());
    }
    let mut s = TcpStream::connect(deputy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
    send_all(&mut s, b"MOSVDEP\0\x05\0\0\0\0\0\0\0hello");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty() || got[0] == 21, "a plain client got {} bytes from the deputy", got.len());
    // The operator hears of it (the daemon's log), the job does not.
    wait_until("the refusal in the home's log", Duration::from_secs(5), || {
        a.stderr().contains("its deputy refused a connection from")
    });

    // Refusals leave it running where it was, with a machine-readable kind.
    let (r, v) = migrate_job(&a.sock, id, "no-such-host");
    assert_eq!((r.status, v["kind"].as_str()), (1, Some("not_found")), "{r:?}");
    let (r, v) = migrate_job(&a.sock, id, "home");
    assert_eq!((r.status, v["kind"].as_str()), (1, Some("refused")), "{r:?}");
    assert_eq!(a.ps(false)[0].state, JobState::Running);

    let mut seen = 0;
    for (to, name, round) in [("h3", "h3", 20), (cc.ip.as_str(), "h4", 60), ("home", "h2", 100)] {
        job.wait_for(&format!("round {round}"), LONG, |o, _| o.contains(&format!("round {round} of")));
        let (r, v) = migrate_job(&a.sock, id, to);
        assert_eq!(r.status, 0, "move to {to}: {r:?}\n{}", c.dump());
        assert_eq!(v["result"], "ok", "{v}");
        assert!(v["total_ms"].as_f64().unwrap() >= v["downtime_ms"].as_f64().unwrap(), "{v}");
        seen += 1;
        let now = a.ps(false);
        assert_eq!((now[0].host.as_str(), now[0].state, now[0].moves), (name, JobState::Running, seen), "{now:?}");
        if name != "h2" {
            // The daemon prepared its body for this move only: a ticket.
            let host = [b, cc].into_iter().find(|h| h.name == name).unwrap();
            let bodies = host.state_dir.join("bodies");
            let logs: Vec<String> = files_in(&bodies)
                .iter()
                .filter(|f| f.ends_with(".log"))
                .map(|f| std::fs::read_to_string(bodies.join(f)).unwrap_or_default())
                .collect();
            assert!(
                logs.iter().any(|l| l.contains("takes only the stream that presents its move's ticket")),
                "the body at {name} was prepared without a ticket: {logs:?}"
            );
            // A moved job cannot be moved to where it is.
            let (r, v) = migrate_job(&a.sock, id, name);
            assert_eq!((r.status, v["kind"].as_str()), (1, Some("refused")), "{r:?}");
            // The other hosts count it where it runs.
            wait_until(&format!("{} to count the job at {name}", b.name), Duration::from_secs(5), || {
                b.hosts().iter().any(|h| h.name == name && h.jobs == 1)
            });
        }
    }
    let r = job.finish(LONG);
    assert_eq!(r.status, n.status, "exit status at home: {r:?}");
    assert_eq!(r.stdout, n.stdout, "stdout at home");
    assert_eq!(r.stderr, n.stderr, "stderr at home");
    assert_eq!(std::fs::read(dv.join("out.txt")).unwrap(), std::fs::read(dn.join("out.txt")).unwrap());
    assert_eq!(files_in(&dv), files_in(&dn));
    for h in [b, cc] {
        let empty = h.state_dir.join("bodies/empty");
        assert!(files_in(&empty).is_empty(), "files at {}: {:?}", h.name, files_in(&empty));
    }

    let all = a.ps(true);
    assert_eq!((all[0].state, all[0].exit_status, all[0].moves), (JobState::Exited, Some(3), 3), "{all:?}");
    let history = BlockingClient::new(&a.sock).unwrap().job(id).unwrap().history;
    let path: Vec<(&str, &str)> = history.iter().map(|m| (m.from.as_str(), m.to.as_str())).collect();
    assert_eq!(path, [("h2", "h3"), ("h3", "h4"), ("h4", "h2")]);
    assert!(history.iter().all(|m| m.why == MoveWhy::Operator && m.total_ms > 0.0));
    // The bodies' processes have ended and been forgotten.
    for h in [b, cc] {
        wait_until(&format!("{}'s body sockets to go", h.name), Duration::from_secs(10), || {
            files_in(&h.state_dir.join("bodies")) == ["empty"]
        });
    }
    let r = at(&a.sock, &["wait", &id.to_string()]);
    assert_eq!(r.status, 3, "wait on an ended job: {r:?}");
}

#[test]
fn kill_and_wait_reach_a_job_away_and_strangers_are_refused() {
    if !mosvm_tests::require_kvm("kill_and_wait_reach_a_job_away_and_strangers_are_refused") {
        return;
    }
    let _l = mosvm_tests::migration_lock();
    let c = Cluster::start("daemon-kill", 2);
    c.wait_all_alive(Duration::from_secs(10));
    let a = &c.hosts[0];
    let prog = mosvm_tests::image("tests/homework");
    let dir = homework_dir(&c.base, "kill");
    let job = run_registered(&a.sock, &dir, &prog, &["in.txt", "out.txt", "100000"]);
    let id = the_job(a).id;
    job.wait_for("round 2", LONG, |o, _| o.contains("round 2 of"));
    let (r, _) = migrate_job(&a.sock, id, "h3");
    assert_eq!(r.status, 0, "{r:?}");
    job.wait_for("a round away", LONG, |o, _| o.contains("round 6 of"));

    // Someone else may not move, signal, wait for or read it.
    if uid() == 0 {
        let mosvm = helper_mosvm(&c.base);
        for args in [
            vec!["migrate".to_string(), id.to_string(), "--to".into(), "home".into(), "--json".into()],
            vec!["kill".into(), "-s".into(), "KILL".into(), id.to_string()],
            vec!["wait".into(), id.to_string()],
            vec!["logs".into(), id.to_string()],
        ] {
            let mut cmd = as_nobody(Command::new(&mosvm));
            cmd.args(&args).arg("--sock").arg(&a.sock);
            let r = run_command(cmd, &Opts::default());
            assert_eq!(r.status, 1, "{args:?} as uid {NOBODY}: {r:?}");
            assert!(r.stderr.contains("may not touch it"), "{args:?}: {}", r.stderr);
        }
        let (_, v) = {
            let mut cmd = as_nobody(Command::new(&mosvm));
            cmd.args(["migrate", &id.to_string(), "--to", "home", "--json", "--sock"]).arg(&a.sock);
            let r = run_command(cmd, &Opts::default());
            let v: serde_json::Value = serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap();
            (r, v)
        };
        assert_eq!(v["kind"], "permission_denied");
        assert_eq!(a.ps(false)[0].host, "h3", "a stranger's requests changed nothing");
    } else {
        eprintln!("*** SKIPPED the stranger part: it needs root to run as uid {NOBODY} ***");
    }

    // A waiter started before the signal hears the status.
    let mut wcmd = Command::new(mosvm_tests::mosvm_bin());
    wcmd.args(["wait", &id.to_string(), "--sock"]).arg(&a.sock);
    let waiter = Proc::spawn(wcmd);
    std::thread::sleep(Duration::from_millis(300));
    let r = at(&a.sock, &["kill", "-s", "INT", &id.to_string()]);
    assert_eq!(r.status, 0, "{r:?}");
    let t = std::time::Instant::now();
    let r = job.finish(Duration::from_secs(20));
    assert_eq!(r.status, 130, "SIGINT at h3 ends the job with 130 at home: {r:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "the signal took {:?}", t.elapsed());
    let w = waiter.finish(Duration::from_secs(10));
    assert_eq!(w.status, 130, "mosvm wait: {w:?}");
    let v = a.ps(true).into_iter().find(|j| j.id == id).unwrap();
    assert_eq!((v.state, v.exit_status, v.host.as_str()), (JobState::Exited, Some(130), "h3"));
    let r = at(&a.sock, &["kill", &id.to_string()]);
    assert_eq!(r.status, 1, "an ended job cannot be signalled: {r:?}");
}

#[test]
fn when_the_host_of_a_body_dies_the_job_is_lost_at_home() {
    if !mosvm_tests::require_kvm("when_the_host_of_a_body_dies_the_job_is_lost_at_home") {
        return;
    }
    let _l = mosvm_tests::migration_lock();
    let mut c = Cluster::start("daemon-lost", 2);
    c.wait_all_alive(Duration::from_secs(10));
    let prog = mosvm_tests::image("tests/homework");
    let dir = homework_dir(&c.base, "lost");
    let job = run_registered(&c.hosts[0].sock, &dir, &prog, &["in.txt", "out.txt", "100000"]);
    let id = the_job(&c.hosts[0]).id;
    job.wait_for("round 2", LONG, |o, _| o.contains("round 2 of"));
    let b = c.hosts[1].name.clone();
    let (r, _) = migrate_job(&c.hosts[0].sock, id, &b);
    assert_eq!(r.status, 0, "{r:?}");
    job.wait_for("a round away", LONG, |o, _| o.contains("round 6 of"));
    // The whole host goes: its daemon and the body it holds.
    let bodies = c.hosts[1].state_dir.join("bodies");
    let out = Command::new("pgrep").arg("-f").arg(bodies.to_str().unwrap()).output().unwrap();
    let pids: Vec<i32> = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(!pids.is_empty(), "no body process under {}", bodies.display());
    c.hosts[1].signal(libc::SIGKILL);
    for p in pids {
        // SAFETY: killing the body process this test's cluster started.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    let t = std::time::Instant::now();
    let r = job.finish(Duration::from_secs(30));
    assert_eq!(r.status, 255, "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "noticed after {:?}", t.elapsed());
    assert!(r.stderr.contains("job lost"), "{}", r.stderr);
    let a = &c.hosts[0];
    wait_until("the record to say lost", Duration::from_secs(10), || {
        a.ps(true).iter().any(|j| j.id == id && j.state == JobState::Lost)
    });
    let w = at(&a.sock, &["wait", &id.to_string()]);
    assert_eq!(w.status, 255, "mosvm wait on a lost job: {w:?}");
}

#[test]
fn detached_jobs_run_as_their_caller_and_keep_their_logs() {
    if !mosvm_tests::require_kvm("detached_jobs_run_as_their_caller_and_keep_their_logs") {
        return;
    }
    let _l = mosvm_tests::migration_lock();
    let c = Cluster::start("daemon-detach", 2);
    c.wait_all_alive(Duration::from_secs(10));
    let a = &c.hosts[0];
    let prog = mosvm_tests::image("tests/homework");
    let args = ["in.txt", "out.txt", "120"];
    let (dn, dv) = (homework_dir(&c.base, "native"), homework_dir(&c.base, "vm"));
    let n = mosvm_tests::native(&prog, &args, &Opts { cwd: Some(&dn), ..Opts::default() });

    let mut cmd = Command::new(mosvm_tests::mosvm_bin());
    cmd.args(["run", "-d", "--env", "MOSVM_TEST_MARK=1", "--"]).arg(&prog).args(args);
    let sock = a.sock.to_str().unwrap();
    let r = run_command(cmd, &Opts { cwd: Some(&dv), env: vec![("MOSVM_SOCK", sock)], ..Opts::default() });
    assert_eq!(r.status, 0, "{r:?}");
    let id: u64 = r.stdout.trim().parse().unwrap_or_else(|_| panic!("run -d prints the job id: {:?}", r.stdout));
    let v = the_job(a);
    assert_eq!((v.id, v.detached, v.owner_uid), (id, true, uid()));
    // It can move like any other job.
    wait_until("the detached job's control socket", Duration::from_secs(10), || {
        a.ps(false).first().is_some_and(|j| j.control_sock.is_some())
    });
    let (r, _) = migrate_job(&a.sock, id, "h3");
    assert_eq!(r.status, 0, "{r:?}");

    // logs -f follows it to the end; then logs prints the same.
    let f = at(&a.sock, &["logs", "-f", &id.to_string()]);
    assert_eq!(f.status, 0, "{f:?}");
    assert_eq!(f.stdout, n.stdout, "logs -f: stdout");
    assert_eq!(f.stderr, n.stderr, "logs -f: stderr");
    let w = at(&a.sock, &["wait", &id.to_string()]);
    assert_eq!(w.status, n.status, "{w:?}");
    let l = at(&a.sock, &["logs", &id.to_string()]);
    assert_eq!((l.stdout.as_str(), l.stderr.as_str()), (n.stdout.as_str(), n.stderr.as_str()));
    assert_eq!(std::fs::read(dv.join("out.txt")).unwrap(), std::fs::read(dn.join("out.txt")).unwrap());
    // A job with a terminal has no logs.
    let r = at(&a.sock, &["logs", "999"]);
    assert_eq!(r.status, 1);

    if uid() != 0 {
        eprintln!("*** SKIPPED the uid part: it needs root to run as uid {NOBODY} ***");
        return;
    }
    // As uid 65534: the deputy runs as the caller (from the socket's
    // credentials), so its files are the caller's, and it may not open
    // root's /dev/kvm here: it ends with the VMM-failure status, recorded.
    let d = c.base.join("nobody");
    std::fs::create_dir_all(&d).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::copy(mosvm_tests::image("hello"), d.join("hello")).unwrap();
    let mut cmd = as_nobody(Command::new(helper_mosvm(&c.base)));
    cmd.args(["run", "-d", "--", "./hello"]).current_dir(&d).env("MOSVM_SOCK", &a.sock);
    let r = run_command(cmd, &Opts::default());
    assert_eq!(r.status, 0, "{r:?}");
    let theirs: u64 = r.stdout.trim().parse().unwrap();
    let mut v = None;
    wait_until("the stranger's job to end", Duration::from_secs(10), || {
        v = a.ps(true).into_iter().find(|j| j.id == theirs && j.state == JobState::Exited);
        v.is_some()
    });
    let v = v.unwrap();
    assert_eq!(v.owner_uid, NOBODY);
    let log = a.state_dir.join(format!("logs/{theirs}.err"));
    assert_eq!(std::fs::metadata(&log).unwrap().uid(), NOBODY, "its logs belong to it");
    let err = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert_eq!(v.exit_status, Some(125), "{err}");
    assert!(err.contains("/dev/kvm: Permission denied"), "{err}");
    // It may read its own logs, not root's job's.
    let mut cmd = as_nobody(Command::new(helper_mosvm(&c.base)));
    cmd.args(["logs", &theirs.to_string(), "--sock"]).arg(&a.sock);
    let r = run_command(cmd, &Opts::default());
    assert_eq!((r.status, r.stderr.as_str()), (0, err.as_str()), "{r:?}");
    let mut cmd = as_nobody(Command::new(helper_mosvm(&c.base)));
    cmd.args(["logs", &id.to_string(), "--sock"]).arg(&a.sock);
    let r = run_command(cmd, &Opts::default());
    assert!(r.status == 1 && r.stderr.contains("may not touch it"), "{r:?}");
}

/// A copy of the mosvm binary any uid can run.
fn helper_mosvm(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    helper_exe(dir);
    let copy = dir.join("mosvm");
    if !copy.exists() {
        std::fs::copy(mosvm_tests::mosvm_bin(), &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    copy
}

#[test]
fn an_unsupported_call_is_told_to_the_operator_not_to_the_job() {
    if !mosvm_tests::require_kvm("an_unsupported_call_is_told_to_the_operator_not_to_the_job") {
        return;
    }
    let _l = mosvm_tests::migration_lock();
    let c = Cluster::start("daemon-notice", 1);
    c.wait_all_alive(Duration::from_secs(10));
    let a = &c.hosts[0];
    let prog = mosvm_tests::image("tests/unknown");
    let native = mosvm_tests::native(&prog, &[], &Opts::default());
    let dir = c.base.join("notice");
    std::fs::create_dir_all(&dir).unwrap();
    let r = run_registered(&a.sock, &dir, &prog, &[]).finish(LONG);
    assert_eq!(r, native, "the job's output is the native one");
    let e = at(&a.sock, &["events", "--json", "-n", "50"]);
    assert_eq!(e.status, 0, "{e:?}");
    let events: Vec<mosvm_host::api::Event> =
        e.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|err| panic!("{l:?}: {err}"))).collect();
    let notices: Vec<_> = events.iter().filter(|e| e.kind == mosvm_host::api::EventKind::Notice).collect();
    assert_eq!(notices.len(), 2, "one notice per number: {events:?}");
    assert!(notices.iter().any(|n| n.reason.contains("system call 999")), "{notices:?}");
    assert!(notices.iter().all(|n| n.job.is_some()), "{notices:?}");
}

#[test]
fn a_detached_job_starts_with_its_callers_limits() {
    if !mosvm_tests::require_kvm("a_detached_job_starts_with_its_callers_limits") {
        return;
    }
    let _l = mosvm_tests::migration_lock();
    let c = Cluster::start("daemon-limits", 1);
    c.wait_all_alive(Duration::from_secs(10));
    let a = &c.hosts[0];
    let dir = c.base.join("limits");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(mosvm_tests::mosvm_bin());
    cmd.args(["run", "-d", "--", "/bin/bash", "-c", "ulimit -Sn; ulimit -Hn; ulimit -Ss"]);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let l = libc::rlimit { rlim_cur: 3000, rlim_max: 4000 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let sock = a.sock.to_str().unwrap();
    let r = run_command(cmd, &Opts { cwd: Some(&dir), env: vec![("MOSVM_SOCK", sock)], ..Opts::default() });
    assert_eq!(r.status, 0, "{r:?}");
    let id: u64 = r.stdout.trim().parse().unwrap();
    let w = at(&a.sock, &["wait", &id.to_string()]);
    assert_eq!(w.status, 0, "{w:?}");
    let l = at(&a.sock, &["logs", &id.to_string()]);
    // The descriptor limits are the caller's; the stack's is the VM's.
    assert_eq!(l.stdout, "3000\n4000\n8192\n", "{l:?}");
}
