//! Operating the cluster on emulated hosts: cordon, drain (from another
//! host, with a job that cannot move, with jobs homed at the drained host)
//! and a cordon kept across a restart. The tests run one at a time: they
//! start three daemons each and measure nothing, but share two cores.

use std::time::{Duration, Instant};

use mosvm_host::api::{DrainReport, HostMode, JobDetail, JobState, JobView};
use mosvm_tests::emulated::{half_cpu, need_root, serial, wait_until, Cluster, Host, FOREVER, WORK};
use mosvm_tests::{image, native, require_kvm, Opts};

fn ready(test: &str) -> bool {
    require_kvm(test) && need_root()
}

fn mode_seen(by: &Host, of: &str) -> Option<HostMode> {
    by.hosts().into_iter().find(|h| h.name == of).map(|h| h.mode)
}

fn detail(h: &Host, id: u64) -> JobDetail {
    let r = h.at(&["ps", &id.to_string(), "--json"]);
    assert_eq!(r.status, 0, "ps {id}: {r:?}");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("ps {id} --json {:?}: {e}", r.stdout))
}

fn running_at<'a>(jobs: &'a [JobView], host: &str) -> Vec<&'a JobView> {
    jobs.iter().filter(|j| !j.state.ended() && (j.host == host || j.moving_to.as_deref() == Some(host))).collect()
}

fn report(h: &Host, of: &str) -> DrainReport {
    let r = h.at(&["drain", of, "--status", "--json"]);
    assert_eq!(r.status, 0, "drain --status: {r:?}");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("drain --status --json {:?}: {e}", r.stdout))
}

fn kill_all(h: &Host) {
    for j in h.ps(false) {
        let _ = h.at(&["kill", "-s", "KILL", &j.id.to_string()]);
    }
}

#[test]
fn a_drain_from_another_host_empties_it_and_every_job_finishes_as_natively() {
    if !ready("drain_from_another_host") {
        return;
    }
    let _l = serial();
    let n = native(&image("cpu"), &[WORK], &Opts::default());
    assert_eq!(n.status, 0);
    let c = Cluster::start_with("ops-drain", 3, &half_cpu());
    c.wait_all_alive(Duration::from_secs(10));
    let (a, b, far) = (&c.hosts[0], &c.hosts[1], &c.hosts[2]);

    // Six jobs started at A spread; one more is pinned and put on B by
    // its operator: a drain moves it too, home.
    let ids: Vec<u64> = (0..6).map(|_| a.submit(&[], "cpu", &[WORK])).collect();
    let pinned = a.submit(&["--stay"], "cpu", &[WORK]);
    a.wait_started(pinned);
    let m = a.at(&["migrate", &pinned.to_string(), "--to", &b.name, "--json"]);
    assert_eq!(m.status, 0, "migrate the pinned job to B: {m:?}");
    wait_until("a job to spread to B", Duration::from_secs(40), || running_at(&a.ps(false), &b.name).len() >= 2);

    // Drained from the third host: it returns only once B runs no body.
    let t = Instant::now();
    let d = far.at(&["drain", &b.name, "--timeout", "90s"]);
    let took = t.elapsed();
    assert_eq!(d.status, 0, "drain from {}: {d:?}\n{}", far.name, c.dump());
    assert!(d.stdout.contains(&format!("{} drained", b.name)), "{d:?}");
    assert!(d.stdout.contains("-> "), "a line per job that left: {d:?}");
    let left_b = a.ps(false);
    assert!(running_at(&left_b, &b.name).is_empty(), "drained, yet A's records say a job runs at B: {left_b:?}");
    let r = report(a, &b.name);
    assert!(r.drained && r.bodies.is_empty() && r.mode == HostMode::Draining, "{r:?}");
    assert!(!r.moved.is_empty(), "the report lists what left: {r:?}");
    // "drained" came only after every move had been accounted for: each
    // has its line.
    assert_eq!(d.stdout.matches(": moved in ").count(), r.moved.len(), "{d:?}\n{r:?}");
    eprintln!("drained in {took:?}: {} bodies moved", r.moved.len());
    assert_eq!(mode_seen(a, &b.name), Some(HostMode::Draining));
    assert_eq!(detail(a, pinned).job.host, a.name, "the pinned job went home");

    // Nothing goes to B while it drains; everything finishes as natively.
    for &id in ids.iter().chain([&pinned]) {
        let v = a.wait_job(id, Duration::from_secs(180));
        assert_eq!((v.state, v.exit_status), (JobState::Exited, Some(0)), "job {id}: {v:?}\n{}", c.dump());
        let logs = a.at(&["logs", &id.to_string()]);
        assert_eq!(logs.stdout, n.stdout, "job {id}'s output differs from the native run");
        let drain_ms = r.started_ms.unwrap();
        // A move counts from its start: one whose body B agreed to take
        // before the cordon may start a moment after it, and end later.
        let late: Vec<_> = detail(a, id)
            .history
            .into_iter()
            .filter(|m| m.to == b.name && m.at_ms as f64 - m.total_ms > drain_ms as f64 + 1000.0)
            .collect();
        assert!(late.is_empty(), "job {id} moved to B while it drained: {late:?}");
    }
    let u = far.at(&["uncordon", &b.name]);
    assert_eq!(u.status, 0, "{u:?}");
    wait_until("A to see B open", Duration::from_secs(5), || mode_seen(a, &b.name) == Some(HostMode::Normal));
}

#[test]
fn a_job_holding_a_socket_keeps_a_drain_from_finishing_and_is_named() {
    if !ready("drain_with_a_socket") {
        return;
    }
    let _l = serial();
    let c = Cluster::start_with("ops-socket", 2, &half_cpu());
    c.wait_all_alive(Duration::from_secs(10));
    let b = &c.hosts[1];
    let holder = b.submit(&[], "tests/sockspin", &[FOREVER]);
    wait_until("the job to run", Duration::from_secs(10), || !b.ps(false).is_empty());

    let d = b.at(&["drain", &b.name, "--timeout", "5s"]);
    assert_eq!(d.status, 3, "a drain that cannot finish exits 3: {d:?}");
    let job = format!("{}-{holder}", b.name);
    assert!(d.stderr.contains("not drained") && d.stderr.contains(&job), "names what stayed: {d:?}");
    assert!(d.stderr.contains("unmovable") && d.stderr.contains("socket"), "and why: {d:?}");
    assert_eq!(detail(b, holder).job.host, b.name, "the job runs on where it was");
    // The drain went on meanwhile; an uncordon ends it.
    assert_eq!(report(b, &b.name).mode, HostMode::Draining);
    let u = b.at(&["uncordon", &b.name, "--json"]);
    assert_eq!(u.status, 0, "{u:?}");
    let r: DrainReport = serde_json::from_str(&u.stdout).unwrap();
    assert_eq!((r.mode, r.bodies.len()), (HostMode::Normal, 1), "{r:?}");
    kill_all(b);
}

#[test]
fn jobs_homed_at_a_drained_host_are_listed_and_waited_for() {
    if !ready("drain_homed_jobs") {
        return;
    }
    let _l = serial();
    let c = Cluster::start_with("ops-homed", 3, &half_cpu());
    c.wait_all_alive(Duration::from_secs(10));
    let b = &c.hosts[1];
    // Two jobs of B, one pinned: both leave, both stay homed at B.
    let ids = [b.submit(&[], "cpu", &[WORK]), b.submit(&["--stay"], "cpu", &[WORK])];
    let d = b.at(&["drain", &b.name, "--timeout", "60s"]);
    assert_eq!(d.status, 0, "{d:?}\n{}", c.dump());
    assert!(d.stdout.contains("2 jobs are homed here: their deputies serve them until they end"), "{d:?}");
    let jobs = b.ps(false);
    assert!(running_at(&jobs, &b.name).is_empty(), "drained, yet a body runs at B: {jobs:?}");

    let w = b.at(&["drain", &b.name, "--wait-home", "--timeout", "120s", "--json"]);
    assert_eq!(w.status, 0, "{w:?}\n{}", c.dump());
    let r: DrainReport = serde_json::from_str(&w.stdout).unwrap_or_else(|e| panic!("{w:?}: {e}"));
    assert!(r.drained && r.homed.is_empty(), "{r:?}");
    for id in ids {
        let v = b.ps(true).into_iter().find(|j| j.id == id).unwrap();
        assert_eq!(
            (v.state, v.exit_status),
            (JobState::Exited, Some(0)),
            "--wait-home returned before job {id} ended: {v:?}"
        );
    }
    assert_eq!(b.at(&["uncordon", &b.name]).status, 0);
}

#[test]
fn a_cordon_is_kept_across_a_restart_and_refuses_new_jobs() {
    if !ready("cordon_restart") {
        return;
    }
    let _l = serial();
    let mut c = Cluster::start("ops-cordon", 2);
    c.wait_all_alive(Duration::from_secs(10));
    let b_name = c.hosts[1].name.clone();
    let r = c.hosts[0].at(&["cordon", &b_name]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stdout.contains(&format!("{b_name} cordoned")), "{r:?}");
    wait_until("A to see B cordoned", Duration::from_secs(5), || {
        mode_seen(&c.hosts[0], &b_name) == Some(HostMode::Cordoned)
    });

    // No new detached job at B, no body from A.
    let mut cmd = std::process::Command::new(mosvm_tests::mosvm_bin());
    cmd.args(["run", "-d", "--mem", "64M", "--"]).arg(image("cpu")).arg(WORK).env("MOSVM_SOCK", &c.hosts[1].sock);
    let refused = mosvm_tests::run_command(cmd, &Opts::default());
    assert_ne!(refused.status, 0, "a cordoned host started a job: {refused:?}");
    assert!(refused.stderr.contains("cordoned"), "{refused:?}");
    let id = c.hosts[0].submit(&[], "cpu", &[FOREVER]);
    c.hosts[0].wait_started(id);
    let m = c.hosts[0].at(&["migrate", &id.to_string(), "--to", &b_name]);
    assert_ne!(m.status, 0, "a cordoned host took a body: {m:?}");
    assert!(m.stderr.contains("cordoned"), "{m:?}");

    // Kept in B's records: still cordoned after a restart, told to A.
    c.hosts[1].stop();
    let join = vec![c.hosts[0].addr()];
    c.hosts[1].start(&join);
    assert_eq!(mode_seen(&c.hosts[1], &b_name), Some(HostMode::Cordoned), "B forgot its cordon");
    c.wait_all_alive(Duration::from_secs(10));
    wait_until("A to see the restarted B cordoned", Duration::from_secs(5), || {
        mode_seen(&c.hosts[0], &b_name) == Some(HostMode::Cordoned)
    });
    let table = c.hosts[0].at(&["hosts"]);
    assert!(table.stdout.lines().any(|l| l.starts_with(&b_name) && l.contains("cordoned")), "{table:?}");

    // Reopened from A: B takes the body now.
    assert_eq!(c.hosts[0].at(&["uncordon", &b_name]).status, 0);
    wait_until("B open", Duration::from_secs(5), || mode_seen(&c.hosts[1], &b_name) == Some(HostMode::Normal));
    let m = c.hosts[0].at(&["migrate", &id.to_string(), "--to", &b_name]);
    assert_eq!(m.status, 0, "{m:?}");
    assert_eq!(detail(&c.hosts[0], id).job.host, b_name);
    kill_all(&c.hosts[0]);
}

#[test]
fn a_restarted_daemon_manages_the_bodies_it_left_running() {
    if !require_kvm("restarted_daemon_keeps_bodies") {
        return;
    }
    let _l = serial();
    let mut c = Cluster::start("ops-restart", 2);
    c.wait_all_alive(Duration::from_secs(10));
    let (a_name, b_name) = (c.hosts[0].name.clone(), c.hosts[1].name.clone());
    let id = c.hosts[0].submit(&[], "cpu", &[FOREVER]);
    c.hosts[0].wait_started(id);
    let m = c.hosts[0].at(&["migrate", &id.to_string(), "--to", &b_name]);
    assert_eq!(m.status, 0, "{m:?}");

    // B's daemon goes and comes back; the body it ran goes on meanwhile.
    c.hosts[1].stop();
    let join = vec![c.hosts[0].addr()];
    c.hosts[1].start(&join);
    c.wait_all_alive(Duration::from_secs(10));
    let r = report(&c.hosts[1], &b_name);
    let job = format!("{a_name}-{id}");
    assert!(r.bodies.iter().any(|b| b.job == job), "the restarted daemon lost track of the body: {r:?}");
    assert!(!r.drained);
    // And it can move it on: home.
    let m = c.hosts[0].at(&["migrate", &id.to_string(), "--to", "home"]);
    assert_eq!(m.status, 0, "{m:?}\n{}", c.dump());
    assert_eq!(detail(&c.hosts[0], id).job.host, a_name);
    wait_until("the body at B to go", Duration::from_secs(10), || report(&c.hosts[1], &b_name).bodies.is_empty());
    kill_all(&c.hosts[0]);
}
