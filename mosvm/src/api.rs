//! The control socket of a running job (`--api-sock`): HTTP/JSON over a
//! Unix socket, served by a thread beside the vCPU.
//!
//! - `PUT /migrate {"to": "HOST:PORT", "downtime_ms": 5}` moves the job
//! - `PUT /snapshot {"to": "FILE"}` writes a snapshot, the job continues
//! - `GET /status` describes the job
//! - `GET /progress` the move in flight (`Option<MoveProgress>`: null when none)
//! - `GET /stats` the remote site calls of a body away (`SiteStats`)

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mosvm_host::api::{MovePhase, MoveProgress, SiteCallStats, SiteStats};
use serde::Deserialize;
use serde_json::json;
use vmm::migration::{self, SendError, SendOptions};
use vmm::VmHandle;

use crate::http;

#[derive(Deserialize)]
struct MigrateRequest {
    to: String,
    #[serde(default)]
    downtime_ms: Option<f64>,
    /// Cap on the page stream in MB/s.
    #[serde(default)]
    max_bandwidth_mbps: Option<f64>,
    #[serde(default)]
    verify: bool,
    /// The move's ticket, in hex, from the destination's daemon.
    #[serde(default)]
    ticket: Option<String>,
}

#[derive(Deserialize)]
struct SnapshotRequest {
    to: PathBuf,
}

pub struct ApiServer {
    path: PathBuf,
    inflight: Arc<AtomicUsize>,
}

impl ApiServer {
    /// Listens on `path` (replacing a stale socket) and serves requests
    /// for the VM behind `handle` on background threads.
    pub fn start(path: &Path, handle: VmHandle) -> std::io::Result<ApiServer> {
        if path.exists() && UnixStream::connect(path).is_err() {
            let _ = std::fs::remove_file(path);
        }
        let listener = UnixListener::bind(path)?;
        let inflight = Arc::new(AtomicUsize::new(0));
        let count = inflight.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (handle, count) = (handle.clone(), count.clone());
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    serve(conn, &handle);
                    count.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Ok(ApiServer { path: path.to_path_buf(), inflight })
    }

    /// Waits (at most `limit`) for requests in progress to finish, so that
    /// a client hears how its request ended before the process exits.
    pub fn drain(&self, limit: Duration) {
        let t = Instant::now();
        while self.inflight.load(Ordering::SeqCst) > 0 && t.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn error_body(e: impl std::fmt::Display) -> String {
    json!({"result": "error", "error": e.to_string()}).to_string()
}

/// A failed move or snapshot, with its machine-readable kind.
fn send_error_body(e: &SendError) -> String {
    json!({"result": "error", "kind": e.kind(), "error": e.to_string()}).to_string()
}

fn send_error_status(e: &SendError) -> u16 {
    match e {
        SendError::Busy => 409,
        _ => 502,
    }
}

fn serve(mut conn: UnixStream, handle: &VmHandle) {
    let req = match http::read_request(&mut conn) {
        Ok(r) => r,
        Err(e) => {
            let _ = http::write_response(&mut conn, 400, &error_body(e));
            return;
        }
    };
    let (status, body) = match (req.method.as_str(), req.path.as_str()) {
        ("PUT", "/migrate") | ("POST", "/migrate") => match serde_json::from_slice::<MigrateRequest>(&req.body) {
            Ok(m) => {
                let mut opts = SendOptions { transport: crate::transport(), ..SendOptions::default() };
                if let Some(ms) = m.downtime_ms.filter(|ms| *ms > 0.0) {
                    opts.downtime = Duration::from_secs_f64(ms / 1e3);
                }
                opts.max_bandwidth = m.max_bandwidth_mbps.filter(|b| *b > 0.0).map(|b| (b * 1e6) as u64);
                opts.verify = m.verify;
                match m.ticket.as_deref().map(str::parse::<trust::Ticket>).transpose() {
                    Ok(t) => opts.ticket = t,
                    Err(e) => {
                        let _ = http::write_response(&mut conn, 400, &error_body(format!("bad request: ticket: {e}")));
                        return;
                    }
                }

                // `home`: back to the job's deputy.
                let to = match (m.to.as_str(), handle.info.home) {
                    ("home", Some(h)) if !h.ip().is_unspecified() => h.to_string(),
                    ("home", _) => {
                        let _ = http::write_response(&mut conn, 409, &error_body("the job is at home already"));
                        return;
                    }
                    (to, _) => to.to_string(),
                };
                match migration::migrate(handle, &to, &opts) {
                    Ok(stats) => (200, serde_json::to_string(&stats).unwrap()),
                    Err(e) => (send_error_status(&e), send_error_body(&e)),
                }
            }
            Err(e) => (400, error_body(format!("bad request: {e}"))),
        },
        ("PUT", "/snapshot") | ("POST", "/snapshot") => match serde_json::from_slice::<SnapshotRequest>(&req.body) {
            Ok(s) => match migration::snapshot(handle, &s.to) {
                Ok(stats) => (200, serde_json::to_string(&stats).unwrap()),
                Err(e) => (send_error_status(&e), send_error_body(&e)),
            },
            Err(e) => (400, error_body(format!("bad request: {e}"))),
        },
        ("GET", "/progress") => (200, serde_json::to_string(&progress(handle)).unwrap()),
        ("GET", "/stats") => (200, serde_json::to_string(&site_stats(handle)).unwrap()),
        // Whether the job could move now (it holds no socket, has no child).
        ("GET", "/movable") => match handle.control.probe(vmm::site::Purpose::Move) {
            // `tickets`: this VMM presents a move's ticket (older ones do not).
            Ok(()) => (200, json!({"movable": true, "tickets": true}).to_string()),
            Err(e) => {
                let kind = match e {
                    vmm::control::PauseError::Unmovable(_) => "unmovable",
                    vmm::control::PauseError::Failed(_) => "failed",
                };
                (200, json!({"movable": false, "kind": kind, "why": e.to_string()}).to_string())
            }
        },
        ("GET", "/status") => (
            200,
            json!({
                "state": "running",
                "program": handle.info.program,
                "mem_bytes": handle.ram.size(),
                "pid": std::process::id(),
                "home": handle.info.home.map(|h| h.to_string()),
            })
            .to_string(),
        ),
        _ => (404, error_body(format!("no such request: {} {}", req.method, req.path))),
    };
    let _ = http::write_response(&mut conn, status, &body);
}

/// The move in flight, as the daemon's API shows it.
fn progress(handle: &VmHandle) -> Option<MoveProgress> {
    let p = handle.progress.get()?;
    Some(MoveProgress {
        to: p.to,
        phase: match p.phase {
            migration::Phase::Connecting => MovePhase::Connecting,
            migration::Phase::Copying => MovePhase::Copying,
            migration::Phase::Stopped => MovePhase::Stopped,
        },
        round: p.round,
        round_pages: p.round_pages,
        round_sent: p.round_sent,
        pages_sent: p.pages_sent,
        bytes_sent: p.bytes_sent,
        resident_pages: p.resident_pages,
        elapsed_ms: p.elapsed.as_secs_f64() * 1e3,
        rate_mbps: p.rate_mbps,
    })
}

/// The remote site calls of this body (none at home).
fn site_stats(handle: &VmHandle) -> SiteStats {
    let calls = handle.site_calls.as_ref().map_or_else(Vec::new, |s| {
        s.read()
            .map(|k| SiteCallStats {
                kind: k.kind.to_string(),
                count: k.count,
                seconds: k.seconds,
                buckets: k.buckets.to_vec(),
            })
            .collect()
    });
    SiteStats { calls }
}
