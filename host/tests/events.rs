//! Events, pinned jobs and move reasons through a daemon's API (one
//! daemon in this process, on a loopback address of its own).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mosvm_host::api::{ErrorKind, EventKind, MoveWhy, NewEvent, NewJob, NewMove};
use mosvm_host::{Client, ClientError, Config, Daemon, Settings};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mosvm-host-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(base: &std::path::Path, name: &str, ip: &str) -> Config {
    let mut c = Config::from_settings(Settings {
        name: Some(name.into()),
        listen: Some(format!("{ip}:0")),
        api_sock: Some(base.join(format!("{name}.sock"))),
        state_dir: Some(base.join(name)),
        join: Some(vec![]),
        insecure: Some(true),
        ..Settings::default()
    })
    .unwrap();
    // Only the events this test records.
    c.balance.enabled = false;
    c
}

fn moved(job: &str, reason: &str) -> NewEvent {
    NewEvent {
        kind: EventKind::Moved,
        job: Some(job.into()),
        from: Some("e".into()),
        to: Some("f".into()),
        reason: reason.into(),
    }
}

fn api_kind<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorKind {
    match r {
        Err(ClientError::Api(e)) => e.kind,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_pins_and_reasons() {
    let base = dir("events");
    let d = Daemon::start(config(&base, "e", "127.0.0.20")).await.unwrap();
    let c = Client::new(&d.ready().api_sock);
    let s = d.shared().clone();

    assert!(c.last_events(10).await.unwrap().is_empty());
    // No event within the wait: an empty answer once it is over.
    let t = Instant::now();
    assert!(c.events(0, 10, Duration::from_millis(300)).await.unwrap().is_empty());
    assert!(t.elapsed() >= Duration::from_millis(290), "{:?}", t.elapsed());

    s.event(moved("e-1", "load 3.0 vs 1.0 at f, gain 41 s > cost 0.2 s"));
    s.event(NewEvent { kind: EventKind::HostJoined, job: None, from: None, to: None, reason: "g is alive".into() });
    let all = c.events(0, 10, Duration::ZERO).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!((all[0].kind, all[0].host.as_str(), all[0].job.as_deref()), (EventKind::Moved, "e", Some("e-1")));
    assert_eq!(all[0].reason, "load 3.0 vs 1.0 at f, gain 41 s > cost 0.2 s");
    assert_eq!((all[1].kind, all[1].job.as_deref()), (EventKind::HostJoined, None));
    assert!(all[0].seq < all[1].seq);
    assert_eq!(c.events(all[0].seq, 10, Duration::ZERO).await.unwrap(), all[1..]);
    assert_eq!(c.events(0, 1, Duration::ZERO).await.unwrap(), all[..1]);
    assert_eq!(c.last_events(1).await.unwrap(), all[1..]);
    assert_eq!(*s.events.borrow(), all[1].seq);

    // A follower waiting after the newest one is woken by the next one.
    let after = all[1].seq;
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { (c.events(after, 10, Duration::from_secs(20)).await, Instant::now()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    let s2 = s.clone();
    // From sync code as well as from async tasks.
    tokio::task::spawn_blocking(move || s2.event(moved("e-2", "skipped? no: moved"))).await.unwrap();
    let (got, woke) = waiter.await.unwrap();
    let got = got.unwrap();
    assert_eq!((got.len(), got[0].job.as_deref()), (1, Some("e-2")));
    assert!(woke.duration_since(sent) < Duration::from_secs(5), "woken late");

    // Bad queries are refused, typed.
    assert_eq!(api_kind(c.events(0, 0, Duration::ZERO).await), ErrorKind::BadRequest);
    assert_eq!(api_kind(c.events(0, 10_001, Duration::ZERO).await), ErrorKind::BadRequest);
    assert_eq!(api_kind(c.last_events(10_001).await), ErrorKind::BadRequest);

    // A pinned job says so; a move keeps its reason.
    let job = NewJob {
        program: "/bin/sleep".into(),
        argv: vec!["sleep".into(), "100".into()],
        cwd: "/".into(),
        control_sock: None,
        deputy_addr: Some("127.0.0.20:4000".into()),
        mem_bytes: 64 << 20,
        stay: true,
    };
    let j = c.register(&job).await.unwrap();
    assert!(j.stay);
    assert!(c.jobs(false).await.unwrap().iter().any(|v| v.id == j.id && v.stay));
    let unpinned = c.register(&NewJob { stay: false, ..job }).await.unwrap();
    assert!(!unpinned.stay);
    let mv = NewMove {
        from: "e".into(),
        to: "f".into(),
        at_ms: 1,
        total_ms: 2.0,
        downtime_ms: 0.3,
        why: MoveWhy::Load,
        reason: Some("load 2.0 vs 0.0 at f".into()),
    };
    c.add_move(unpinned.id, &mv).await.unwrap();
    let detail = c.job(unpinned.id).await.unwrap();
    assert_eq!(detail.history[0].why, MoveWhy::Load);
    assert_eq!(detail.history[0].reason.as_deref(), Some("load 2.0 vs 0.0 at f"));

    // The events are records: a restarted daemon still has them, and
    // numbers on.
    d.shutdown().await;
    let d = Daemon::start(config(&base, "e", "127.0.0.20")).await.unwrap();
    let c = Client::new(&d.ready().api_sock);
    let kept = c.last_events(10).await.unwrap();
    assert_eq!(kept.len(), 3);
    assert_eq!(kept[..2], all[..]);
    d.shared().event(moved("e-3", "after the restart"));
    let next = c.events(kept[2].seq, 10, Duration::ZERO).await.unwrap();
    assert_eq!((next.len(), next[0].seq, next[0].job.as_deref()), (1, kept[2].seq + 1, Some("e-3")));
    assert!(c.jobs(false).await.unwrap().iter().any(|v| v.id == j.id && v.stay), "pins survive too");
    d.shutdown().await;
    let _ = std::fs::remove_dir_all(&base);
}
