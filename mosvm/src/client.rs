//! `mosvm migrate` and `mosvm snapshot`: requests to a job's control socket.

use std::os::unix::net::UnixStream;
use std::path::Path;

use serde_json::{json, Value};

use crate::cli::{MigrateArgs, SnapshotArgs};
use crate::http;

/// Sends one request; returns (status, parsed body).
fn request(sock: &Path, path: &str, body: &Value) -> Result<(u16, Value), String> {
    let mut s = UnixStream::connect(sock).map_err(|e| format!("cannot reach the job at {}: {e}", sock.display()))?;
    http::write_request(&mut s, "PUT", path, &body.to_string()).map_err(|e| format!("cannot send the request: {e}"))?;
    let (status, body) = http::read_response(&mut s).map_err(|e| format!("no answer from the job: {e}"))?;
    let v = serde_json::from_slice(&body).map_err(|e| format!("malformed answer from the job: {e}"))?;
    Ok((status, v))
}

fn report(what: &str, json_out: bool, r: Result<(u16, Value), String>, summary: impl Fn(&Value) -> String) -> i32 {
    match r {
        Ok((200, v)) => {
            if json_out {
                println!("{v}");
            } else {
                println!("{}", summary(&v));
            }
            0
        }
        Ok((_, v)) => {
            let why = v.get("error").and_then(|e| e.as_str()).unwrap_or("unknown error").to_string();
            if json_out {
                println!("{v}");
            }
            eprintln!("mosvm: {what} failed: {why}");
            1
        }
        Err(e) => {
            if json_out {
                println!("{}", json!({"result": "error", "error": e}));
            }
            eprintln!("mosvm: {what} failed: {e}");
            1
        }
    }
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0)
}

fn move_summary(to: &str, v: &Value) -> String {
    format!(
        "moved to {} in {:.1} ms: downtime {:.2} ms, {} rounds, {:.1} MiB sent, {} zero pages skipped, {:.0} MB/s, {}{}",
        to,
        f(v, "total_ms"),
        f(v, "downtime_ms"),
        f(v, "rounds"),
        f(v, "bytes_sent") / 1048576.0,
        f(v, "zero_pages_skipped"),
        f(v, "bandwidth_mbps"),
        v.get("path").and_then(|p| p.as_str()).unwrap_or("?"),
        if v.get("acknowledged").and_then(|a| a.as_bool()) == Some(false) {
            " (its acknowledgement was lost, but the job's deputy had given it the job)"
        } else {
            ""
        },
    )
}

pub fn migrate(args: MigrateArgs) -> i32 {
    let (Some(sock), None) = (&args.api_sock, args.job) else {
        return migrate_job(args);
    };
    let body = json!({
        "to": args.to,
        "downtime_ms": args.downtime_ms,
        "max_bandwidth_mbps": args.max_bandwidth,
        "verify": args.verify,
        "ticket": args.ticket.map(|t| t.to_hex()),
    });
    let sock2 = sock.clone();
    let r = with_bar(!args.json, &args.to, move || request(&sock2, "/migrate", &body), || control_progress(sock));
    report("migration", args.json, r, |v| move_summary(&args.to, v))
}

/// The move in flight at a job's control socket (`GET /progress`).
fn control_progress(sock: &Path) -> Option<mosvm_host::api::MoveProgress> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2))).ok()?;
    http::write_request(&mut s, "GET", "/progress", "").ok()?;
    match http::read_response(&mut s).ok()? {
        (200, body) => serde_json::from_slice::<Option<_>>(&body).ok().flatten(),
        _ => None,
    }
}

/// Runs `work` (a move) on a thread while a bar shows what `progress`
/// says, when `show` (plain lines on stderr when it is not a terminal).
fn with_bar<T: Send + 'static>(
    show: bool,
    to: &str,
    work: impl FnOnce() -> T + Send + 'static,
    progress: impl Fn() -> Option<mosvm_host::api::MoveProgress>,
) -> T {
    let worker = std::thread::spawn(work);
    if show {
        let mut bar = crate::progress::MoveBar::new(None, &format!("-> {to}"), crate::progress::terminal());
        while !worker.is_finished() {
            if let Some(p) = progress() {
                bar.update(&p);
            }
            std::thread::sleep(std::time::Duration::from_millis(150));
        }
        bar.finish();
    }
    // The worker returns a value; a panic there is a bug worth seeing.
    worker.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// `mosvm migrate JOB --to HOST`: through the job's home daemon, which
/// answers with the same figures the control socket gives.
fn migrate_job(args: MigrateArgs) -> i32 {
    use mosvm_host::api::MigrateRequest;
    use mosvm_host::{BlockingClient, ClientError};
    let Some(id) = args.job else { return 2 };
    let req = MigrateRequest {
        to: args.to.clone(),
        downtime_ms: Some(args.downtime_ms),
        max_bandwidth_mbps: args.max_bandwidth,
        verify: args.verify,
    };
    let sock = mosvm_host::socket_path(args.sock.as_deref());
    let watcher = BlockingClient::new(sock.clone()).ok();
    let r = with_bar(
        !args.json,
        &args.to,
        move || BlockingClient::new(sock).and_then(|c| c.migrate(id, &req)),
        || watcher.as_ref().and_then(|w| w.progress(id).ok().flatten()),
    );
    match r {
        Ok(done) => {
            let v = serde_json::to_value(&done.figures).unwrap_or_default();
            if args.json {
                println!("{}", serde_json::to_string(&done.figures).unwrap_or_default());
            } else {
                println!("{}", move_summary(&done.to, &v));
            }
            0
        }
        Err(e) => {
            let kind = match &e {
                ClientError::Api(a) => a.kind.as_str(),
                ClientError::Connect { .. } | ClientError::Timeout(_) => "unreachable",
                _ => "internal",
            };
            if args.json {
                println!("{}", json!({"result": "error", "kind": kind, "error": e.to_string()}));
            }
            eprintln!("mosvm: migration of job {id} failed ({kind}): {e}");
            1
        }
    }
}

pub fn snapshot(args: SnapshotArgs) -> i32 {
    let body = json!({"to": args.to});
    report("snapshot", args.json, request(&args.api_sock, "/snapshot", &body), |v| {
        format!(
            "snapshot written to {} in {:.1} ms ({:.1} MiB; the job was stopped {:.1} ms)",
            args.to.display(),
            f(v, "total_ms"),
            f(v, "bytes_sent") / 1048576.0,
            f(v, "downtime_ms"),
        )
    })
}
