//! Automatic rebalancing on emulated hosts: each `mosvm host` runs with a
//! CPU budget of its own (`--cpu-limit`, a cgroup), so a host of 0.5 CPU
//! really runs its jobs at half speed and a move really pays. The tests of
//! this file run one at a time (they measure time).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use mosvm_host::api::{Event, EventKind, JobDetail, JobState, JobView, MoveWhy};
use mosvm_host::wire::{self, BalanceEnvelope, Kind};
use mosvm_tests::emulated::{half_cpu, serial, wait_until, Cluster, Host, Options, FOREVER, WORK};
use mosvm_tests::{image, native, require_kvm, Opts};

fn root() -> bool {
    mosvm_tests::emulated::need_root()
}

/// `mosvm ARGS --sock SOCK` at host `h`.
fn at(h: &Host, args: &[&str]) -> mosvm_tests::Run {
    h.at(args)
}

fn submit(h: &Host, flags: &[&str], prog: &str, args: &[&str]) -> u64 {
    h.submit(flags, prog, args)
}

fn detail(h: &Host, id: u64) -> JobDetail {
    let r = at(h, &["ps", &id.to_string(), "--json"]);
    assert_eq!(r.status, 0, "ps {id}: {r:?}");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("ps {id} --json {:?}: {e}", r.stdout))
}

fn events(h: &Host) -> Vec<Event> {
    let r = at(h, &["events", "--json", "-n", "10000"]);
    assert_eq!(r.status, 0, "events at {}: {r:?}", h.name);
    r.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event {l:?}: {e}"))).collect()
}

fn jobs(h: &Host) -> Vec<JobView> {
    h.ps(true)
}

fn wait_job(h: &Host, id: u64, limit: Duration) -> JobView {
    h.wait_job(id, limit)
}

/// The hosts job `id` ran on: its home and every move's destination.
fn ran_on(h: &Host, id: u64) -> BTreeSet<String> {
    let d = detail(h, id);
    let mut s: BTreeSet<String> = d.history.iter().map(|m| m.to.clone()).collect();
    s.insert(d.job.home.clone());
    s
}

fn kill_all(h: &Host) {
    for j in jobs(h).into_iter().filter(|j| !j.state.ended()) {
        let _ = at(h, &["kill", "-s", "KILL", &j.id.to_string()]);
    }
}

struct Batch {
    makespan: f64,
    ids: Vec<u64>,
}

/// Six CPU-bound jobs started at the first of three hosts of 0.5 CPU;
/// checks each one's output against the native run.
fn six_jobs(c: &Cluster, native_out: &str) -> Batch {
    let h = &c.hosts[0];
    let ids: Vec<u64> = (0..6).map(|_| submit(h, &[], "cpu", &[WORK])).collect();
    let mut started = u64::MAX;
    let mut ended = 0;
    for &id in &ids {
        let v = wait_job(h, id, Duration::from_secs(120));
        assert_eq!((v.state, v.exit_status), (JobState::Exited, Some(0)), "job {id}: {v:?}\n{}", c.dump());
        started = started.min(v.started_ms);
        ended = ended.max(v.ended_ms.unwrap());
        let logs = at(h, &["logs", &id.to_string()]);
        assert_eq!(logs.status, 0, "{logs:?}");
        assert_eq!(logs.stdout, native_out, "job {id}'s output differs from the native run");
    }
    Batch { makespan: (ended - started) as f64 / 1000.0, ids }
}

#[test]
fn six_jobs_at_one_host_spread_and_finish_at_least_twice_as_fast() {
    if !require_kvm("six_jobs_at_one_host_spread") || !root() {
        return;
    }
    let _l = serial();
    let n = native(&image("cpu"), &[WORK], &Opts::default());
    assert_eq!(n.status, 0);

    let c = Cluster::start_with("balance-six", 3, &half_cpu());
    c.wait_all_alive(Duration::from_secs(10));
    let on = six_jobs(&c, &n.stdout);
    let home = &c.hosts[0];
    for other in &c.hosts[1..] {
        let ran = on.ids.iter().filter(|&&id| ran_on(home, id).contains(&other.name)).count();
        assert!(ran >= 2, "{} jobs ran on {} (want at least 2)\n{}", ran, other.name, c.dump());
    }
    // Every move says why, in the job's history and in the events.
    let d = detail(home, on.ids[0]);
    let moves: Vec<_> = on.ids.iter().flat_map(|&id| detail(home, id).history).collect();
    assert!(
        moves.iter().all(|m| m.why == MoveWhy::Load && m.reason.as_deref().is_some_and(|r| r.contains("load"))),
        "{moves:?}"
    );
    let ev = events(home);
    let moved: Vec<&Event> = ev.iter().filter(|e| e.kind == EventKind::Moved).collect();
    assert!(moved.len() >= 4, "{ev:?}");
    assert!(moved.iter().all(|e| e.reason.contains("gain")), "{moved:?}");
    drop(d);
    drop(c);

    let off = Options { no_balance: true, ..half_cpu() };
    let c = Cluster::start_with("balance-six-off", 3, &off);
    c.wait_all_alive(Duration::from_secs(10));
    let unbalanced = six_jobs(&c, &n.stdout);
    for &id in &unbalanced.ids {
        assert_eq!(ran_on(&c.hosts[0], id).len(), 1, "balancing off, yet job {id} moved");
    }
    eprintln!("makespan: balanced {:.1} s, balancing off {:.1} s", on.makespan, unbalanced.makespan);
    assert!(
        unbalanced.makespan >= 2.0 * on.makespan,
        "balanced {:.1} s is not twice as fast as unbalanced {:.1} s",
        on.makespan,
        unbalanced.makespan
    );
}

#[test]
fn no_move_when_balanced_and_pinned_jobs_stay() {
    if !require_kvm("no_move_when_balanced") || !root() {
        return;
    }
    let _l = serial();
    let c = Cluster::start_with("balance-still", 3, &half_cpu());
    c.wait_all_alive(Duration::from_secs(10));
    // h2 is the busiest, but its jobs are pinned; h3 and h4 have one each.
    let pinned: Vec<u64> = (0..2).map(|_| submit(&c.hosts[0], &["--stay"], "cpu", &[FOREVER])).collect();
    let one = submit(&c.hosts[1], &[], "cpu", &[FOREVER]);
    let other = submit(&c.hosts[2], &[], "cpu", &[FOREVER]);
    std::thread::sleep(Duration::from_secs(8));
    for (h, id) in [(0, pinned[0]), (0, pinned[1]), (1, one), (2, other)] {
        let d = detail(&c.hosts[h], id);
        assert_eq!(d.job.state, JobState::Running, "{d:?}");
        assert!(d.history.is_empty(), "job {id} moved: {:?}\n{}", d.history, c.dump());
    }
    assert!(jobs(&c.hosts[0]).iter().all(|j| j.stay), "ps shows the pin");
    for h in &c.hosts {
        let ev = events(h);
        assert!(!ev.iter().any(|e| e.kind == EventKind::Moved), "{}: {ev:?}", h.name);
        kill_all(h);
    }
}

#[test]
fn a_job_that_cannot_move_is_skipped_and_another_goes() {
    if !require_kvm("a_job_that_cannot_move_is_skipped") || !root() {
        return;
    }
    let _l = serial();
    let c = Cluster::start_with("balance-skip", 2, &half_cpu());
    c.wait_all_alive(Duration::from_secs(10));
    let h = &c.hosts[0];
    let holders: Vec<u64> = (0..2).map(|_| submit(h, &[], "tests/sockspin", &[FOREVER])).collect();
    let movable = submit(h, &[], "cpu", &[FOREVER]);
    wait_until("the movable job to go to h3", Duration::from_secs(30), || {
        jobs(h).iter().any(|j| j.id == movable && j.host == c.hosts[1].name)
    });
    wait_until("a skip in the events", Duration::from_secs(30), || {
        events(h).iter().any(|e| e.kind == EventKind::Skipped)
    });
    let ev = events(h);
    let skip = ev.iter().find(|e| e.kind == EventKind::Skipped).unwrap();
    assert!(skip.reason.contains("socket"), "{skip:?}");
    assert!(holders.iter().any(|id| skip.job.as_deref() == Some(&format!("{}-{id}", h.name))), "{skip:?}");
    for id in holders {
        let d = detail(h, id);
        assert_eq!((d.job.state, d.job.host.as_str()), (JobState::Running, h.name.as_str()), "{d:?}");
        assert!(d.history.is_empty());
    }
    kill_all(h);
}

#[test]
fn a_late_host_gets_work_and_a_killed_one_is_forgotten() {
    if !require_kvm("a_late_host_gets_work") || !root() {
        return;
    }
    let _l = serial();
    let mut c = Cluster::start_with("balance-late", 2, &half_cpu());
    c.wait_all_alive(Duration::from_secs(10));
    let ids: Vec<u64> = (0..4).map(|_| submit(&c.hosts[0], &[], "cpu", &[FOREVER])).collect();
    let (h2, h3) = (c.hosts[0].name.clone(), c.hosts[1].name.clone());
    let at_host =
        |c: &Cluster, name: &str| jobs(&c.hosts[0]).iter().filter(|j| !j.state.ended() && j.host == name).count();
    wait_until("two jobs at h3", Duration::from_secs(30), || at_host(&c, &h3) == 2);

    let late = c.add(&half_cpu());
    c.wait_all_alive(Duration::from_secs(10));
    let h4 = c.hosts[late].name.clone();
    let t = Instant::now();
    wait_until("the late host to get a job", Duration::from_secs(30), || at_host(&c, &h4) >= 1);
    eprintln!("{h4} got work {:?} after it joined", t.elapsed());

    // h4 dies with its bodies: their jobs are lost at home, the others
    // forget it and keep going.
    let bodies = c.hosts[late].state_dir.join("bodies");
    let out = Command::new("pgrep").arg("-f").arg(bodies.to_str().unwrap()).output().unwrap();
    let pids: Vec<i32> = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(!pids.is_empty());
    let lost: Vec<u64> = jobs(&c.hosts[0]).iter().filter(|j| j.host == h4).map(|j| j.id).collect();
    c.hosts[late].signal(libc::SIGKILL);
    for p in pids {
        // SAFETY: killing body processes this test's cluster started.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    for &id in &lost {
        let v = wait_job(&c.hosts[0], id, Duration::from_secs(20));
        assert_eq!(v.state, JobState::Lost, "{v:?}");
    }
    for h in &c.hosts[..2] {
        wait_until(&format!("{} to record {h4} failed", h.name), Duration::from_secs(20), || {
            events(h).iter().any(|e| e.kind == EventKind::HostFailed && e.from.as_deref() == Some(h4.as_str()))
        });
    }
    // The rest run on, never towards the dead host.
    std::thread::sleep(Duration::from_secs(3));
    for id in ids.iter().filter(|id| !lost.contains(id)) {
        let d = detail(&c.hosts[0], *id);
        assert_eq!(d.job.state, JobState::Running, "{d:?}");
        assert!(d.job.host == h2 || d.job.host == h3, "{d:?}");
    }
    kill_all(&c.hosts[0]);
}

#[test]
fn bad_gossip_is_dropped_and_balancing_goes_on() {
    if !require_kvm("bad_gossip_is_dropped") || !root() {
        return;
    }
    let _l = serial();
    // The plain protocol's own defences: under TLS all of this is dropped
    // unread, for want of the cluster's seal (see cluster.rs).
    let c = Cluster::start_with("balance-gossip", 2, &Options { insecure: true, ..half_cpu() });
    c.wait_all_alive(Duration::from_secs(10));
    let target: std::net::SocketAddr = c.hosts[0].addr().parse().unwrap();
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let envelope = |name: &str, msg: Vec<u8>| {
        wire::encode_msg(Kind::Balance, &BalanceEnvelope { name: name.into(), boot: u64::MAX, seq: u64::MAX, msg })
    };
    let gossip = balancer::wire::encode(&balancer::Message::Gossip { entries: vec![], want_reply: true });
    // The first drop is logged as a warning (the rest of a burst at debug
    // level): make it a balancer message.
    let mut bad: Vec<Vec<u8>> = vec![
        // No member at all.
        envelope("intruder", gossip.clone()),
        b"garbage".to_vec(),
        wire::encode(Kind::Balance, b"\x01\x02\x03"),
        // A member's name, sent from another address.
        envelope(&c.hosts[1].name, gossip),
        envelope(&c.hosts[1].name, vec![b'B', 1, 9]),
    ];
    for i in 0..200u32 {
        let mut f = envelope(&c.hosts[1].name, vec![b'B', 1, 1, 0, 1]);
        let n = f.len();
        f[(i as usize * 7) % n] ^= (i % 255 + 1) as u8;
        bad.push(f);
    }
    for d in &bad {
        s.send_to(d, target).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        c.hosts[0].stderr().contains("dropped balancer message: \\\"intruder\\\" is not an active member"),
        "{}",
        c.dump()
    );
    // Still balancing: of two jobs at h2, one goes to h3.
    let ids: Vec<u64> = (0..2).map(|_| submit(&c.hosts[0], &[], "cpu", &[FOREVER])).collect();
    wait_until("a job to move to h3", Duration::from_secs(30), || {
        jobs(&c.hosts[0]).iter().any(|j| ids.contains(&j.id) && j.host == c.hosts[1].name)
    });
    kill_all(&c.hosts[0]);
}
