//! Several hosts on this machine: one `mosvm host` per loopback address,
//! seen through `mosvm hosts --json` and `mosvm ps --json`.

mod cluster_fixture;

use std::io::{BufRead, Read};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use cluster_fixture::{helper_exe, send_all, wait_until, Cluster};
use mosvm_host::api::{ErrorKind, HostState, JobState, MoveWhy, NewJob, NewMove, StateChange};
use mosvm_host::wire::{self, Kind};
use mosvm_host::{BlockingClient, ClientError};
use mosvm_tests::{run_command, Opts, Proc};

fn new_job(program: &str) -> NewJob {
    NewJob {
        program: program.into(),
        argv: vec![program.into(), "--flag".into()],
        cwd: "/".into(),
        control_sock: None,
        deputy_addr: Some("127.0.0.2:4100".into()),
        mem_bytes: 128 << 20,
    }
}

fn uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

const NOBODY: u32 = 65534;

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
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
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
    wire::decode_msg::<wire::Pong>(kind, payload).unwrap().id
}

#[test]
fn garbage_on_the_peer_port_is_refused() {
    let mut c = Cluster::start("garbage", 2);
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
