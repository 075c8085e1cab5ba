//! The bodies this host runs for other homes: one `mosvm receive --once`
//! process per arriving job, started on a peer's `PrepareBody`, with the
//! control socket that lets the body move on. A process is reaped, and
//! forgotten, when it exits (the body moved on, ended, or never came).

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tracing::{info, warn};

use crate::membership::meminfo;
use crate::wire::{JobRef, Refusal, RefusalKind};

/// How long a receiver may take to say where it listens.
const ANNOUNCE_LIMIT: Duration = Duration::from_secs(10);
/// A receiver no body reached within this long is stopped (the move that
/// asked for it failed before connecting).
const UNUSED_LIMIT: Duration = Duration::from_secs(120);

/// One body process.
#[derive(Debug, Clone)]
pub struct Body {
    pub job: JobRef,
    /// Its control socket (exists once the body has arrived).
    pub control_sock: PathBuf,
    pub pid: u32,
    /// Where it listened for the body.
    pub addr: String,
    pub mem_bytes: u64,
    pub owner_uid: u32,
}

/// `mosvm receive --announce`'s one line on stdout.
#[derive(Deserialize)]
struct Announce {
    event: String,
    addr: String,
    pid: u32,
}

pub struct Bodies {
    /// The mosvm binary (the daemon's own executable).
    exe: PathBuf,
    /// Control sockets live here.
    dir: PathBuf,
    /// An empty directory, the bodies' working directory: a body uses
    /// its home's files, never this host's.
    empty: PathBuf,
    /// Receivers listen on this address (the host's advertised one).
    ip: IpAddr,
    seq: AtomicU64,
    /// Set by the operator: no new bodies.
    pub cordoned: AtomicBool,
    table: Mutex<HashMap<JobRef, Body>>,
}

fn remove_stale_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.path().extension().is_some_and(|x| x == "sock") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Forwards a body process's output to the log, line by line.
fn log_lines(job: JobRef, pid: u32, what: &'static str, r: impl AsyncRead + Unpin + Send + 'static) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            info!(body = %job, pid, "{what}: {line}");
        }
    });
}

impl Bodies {
    /// Bodies' sockets under `state_dir/bodies` (left-over ones from a
    /// previous run are removed: their processes died with it or run on
    /// unmanaged).
    pub fn new(state_dir: &Path, exe: PathBuf, ip: IpAddr) -> std::io::Result<Bodies> {
        let dir = state_dir.join("bodies");
        let empty = dir.join("empty");
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&empty)?;
        remove_stale_sockets(&dir);
        Ok(Bodies {
            exe,
            dir,
            empty,
            ip,
            seq: AtomicU64::new(0),
            cordoned: AtomicBool::new(false),
            table: Mutex::new(HashMap::new()),
        })
    }

    fn table(&self) -> MutexGuard<'_, HashMap<JobRef, Body>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest body of `job` here.
    pub fn get(&self, job: &JobRef) -> Option<Body> {
        self.table().get(job).cloned()
    }

    pub fn list(&self) -> Vec<Body> {
        let mut v: Vec<Body> = self.table().values().cloned().collect();
        v.sort_by(|a, b| a.job.home.cmp(&b.job.home).then(a.job.id.cmp(&b.job.id)));
        v
    }

    /// Starts a receiver for `job`'s body; returns where it listens.
    pub async fn prepare(self: &Arc<Self>, job: &JobRef, mem_bytes: u64, owner_uid: u32) -> Result<String, Refusal> {
        if self.cordoned.load(Ordering::Relaxed) {
            return Err(Refusal::new(RefusalKind::Cordoned, "this host is cordoned: it takes no new jobs"));
        }
        if let Some((avail, _)) = meminfo() {
            if mem_bytes > avail {
                return Err(Refusal::new(
                    RefusalKind::NoMemory,
                    format!("the job needs {mem_bytes} bytes of memory, {avail} are available here"),
                ));
            }
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let sock = self.dir.join(format!("{}-{}-{n}.sock", job.home, job.id));
        let cannot = |e: String| Refusal::new(RefusalKind::CannotSpawn, format!("cannot start a body process: {e}"));
        let mut cmd = Command::new(&self.exe);
        cmd.arg("receive")
            .arg("--listen")
            .arg(std::net::SocketAddr::new(self.ip, 0).to_string())
            .arg("--once")
            .arg("--announce")
            .arg("--api-sock")
            .arg(&sock)
            // parse_size: a plain number is MiB, so give KiB, rounded up.
            .arg("--mem-limit")
            .arg(format!("{}K", mem_bytes.div_ceil(1024)))
            .current_dir(&self.empty)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| cannot(format!("{}: {e}", self.exe.display())))?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.start_kill();
            return Err(cannot("no pipes to it".into()));
        };
        log_lines(job.clone(), pid, "body stderr", stderr);
        let mut out = BufReader::new(stdout);
        let mut line = String::new();
        let announced = match tokio::time::timeout(ANNOUNCE_LIMIT, out.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => serde_json::from_str::<Announce>(line.trim_end())
                .map_err(|e| format!("its first line {:?} is not its announcement: {e}", line.trim_end()))
                .and_then(|a| {
                    if a.event == "listening" && a.pid == pid {
                        Ok(a.addr)
                    } else {
                        Err(format!("unexpected announcement {:?}", line.trim_end()))
                    }
                }),
            Ok(Ok(_)) => Err("it exited before listening".into()),
            Ok(Err(e)) => Err(format!("reading its announcement: {e}")),
            Err(_) => Err(format!("it did not announce itself within {ANNOUNCE_LIMIT:?}")),
        };
        let addr = match announced {
            Ok(a) => a,
            Err(e) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(cannot(e));
            }
        };
        log_lines(job.clone(), pid, "body stdout", out.into_inner());
        let body = Body { job: job.clone(), control_sock: sock.clone(), pid, addr: addr.clone(), mem_bytes, owner_uid };
        self.table().insert(job.clone(), body);
        info!(body = %job, pid, %addr, "body process ready");

        let bodies = self.clone();
        let job = job.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s,
                _ = tokio::time::sleep(UNUSED_LIMIT) => {
                    if !sock.exists() {
                        warn!(body = %job, pid, "no body arrived within {UNUSED_LIMIT:?}; stopping its receiver");
                        let _ = child.start_kill();
                    }
                    child.wait().await
                }
            };
            match status {
                Ok(s) => info!(body = %job, pid, "body process ended ({s})"),
                Err(e) => warn!(body = %job, pid, "waiting for the body process: {e}"),
            }
            let mut t = bodies.table();
            if t.get(&job).is_some_and(|b| b.pid == pid) {
                t.remove(&job);
            }
            drop(t);
            let _ = std::fs::remove_file(&sock);
        });
        Ok(addr)
    }
}
