//! The bodies this host runs for other homes: one `mosvm receive --once`
//! process per arriving job, started on a peer's `PrepareBody`, with the
//! control socket that lets the body move on. A process is reaped, and
//! forgotten, when it exits (the body moved on, ended, or never came).

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
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

/// One body process. Kept beside its control socket (`NAME.json`), so
/// that a restarted daemon finds the bodies still running.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The host's identity, which issues each body its credentials.
    transport: trust::Transport,
    seq: AtomicU64,
    /// Set by the operator: no new bodies.
    pub cordoned: AtomicBool,
    table: Mutex<HashMap<JobRef, Body>>,
}

/// The record beside a body's control socket.
fn record_path(sock: &Path) -> PathBuf {
    sock.with_extension("json")
}

/// True if process `pid` is the body process serving `sock` (not a reused
/// pid).
fn is_body(pid: u32, sock: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let want = sock.as_os_str().as_encoded_bytes();
    cmdline.split(|&b| b == 0).any(|arg| arg == want)
}

/// The bodies a previous daemon left running (their records and sockets
/// are there and their processes live); everything else it left is
/// removed.
fn recover(dir: &Path) -> Vec<Body> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    let mut found = Vec::new();
    for f in files.iter().filter(|f| f.extension().is_some_and(|x| x == "json")) {
        let body = std::fs::read(f).ok().and_then(|b| serde_json::from_slice::<Body>(&b).ok());
        match body {
            Some(b)
                if b.control_sock.parent() == Some(dir)
                    && b.control_sock.exists()
                    && is_body(b.pid, &b.control_sock) =>
            {
                info!(body = %b.job, pid = b.pid, "a body left by the previous daemon still runs: managed again");
                found.push(b);
            }
            _ => {
                let _ = std::fs::remove_file(f);
            }
        }
    }
    for f in files.iter().filter(|f| f.extension().is_some_and(|x| x == "sock" || x == "log")) {
        let stem = f.with_extension("");
        if !found.iter().any(|b| b.control_sock.with_extension("") == stem) {
            // A body left running unmanaged keeps writing its log into
            // the removed file: nothing fails for it.
            let _ = std::fs::remove_file(f);
        }
    }
    found
}

/// Forwards what a body process writes to its log file to the daemon's
/// log, line by line, until the process has ended; then removes the file.
/// (A file, not a pipe: a body outlives a restart of its daemon, and a
/// write into a pipe nobody reads any more would fail and end the job.)
fn tail_log(job: JobRef, pid: u32, path: PathBuf, from_end: bool) {
    tokio::spawn(async move {
        let Ok(mut file) = tokio::fs::File::open(&path).await else { return };
        if from_end {
            use tokio::io::AsyncSeekExt;
            let _ = file.seek(std::io::SeekFrom::End(0)).await;
        }
        let mut lines = BufReader::new(file).lines();
        let alive = || Path::new(&format!("/proc/{pid}")).exists();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => info!(body = %job, pid, "body stderr: {line}"),
                Ok(None) if alive() => tokio::time::sleep(Duration::from_millis(250)).await,
                _ => break,
            }
        }
        let _ = tokio::fs::remove_file(&path).await;
    });
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
    /// Bodies' sockets under `state_dir/bodies`. Bodies a previous daemon
    /// left running are managed again (`watch_recovered` follows them);
    /// what else it left is removed.
    pub fn new(state_dir: &Path, exe: PathBuf, ip: IpAddr, transport: trust::Transport) -> std::io::Result<Bodies> {
        let dir = state_dir.join("bodies");
        let empty = dir.join("empty");
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&empty)?;
        let recovered = recover(&dir);
        // New sockets must not take a recovered one's name.
        let seq = recovered
            .iter()
            .filter_map(|b| b.control_sock.file_stem()?.to_str()?.rsplit('-').next()?.parse::<u64>().ok())
            .max()
            .map_or(0, |n| n + 1);
        Ok(Bodies {
            exe,
            dir,
            empty,
            ip,
            transport,
            seq: AtomicU64::new(seq),
            cordoned: AtomicBool::new(false),
            table: Mutex::new(recovered.into_iter().map(|b| (b.job.clone(), b)).collect()),
        })
    }

    /// Follows the bodies `new` found still running (they are not this
    /// daemon's children): their logs, and their end.
    pub fn watch_recovered(self: &Arc<Self>) {
        for b in self.list() {
            tail_log(b.job.clone(), b.pid, b.control_sock.with_extension("log"), true);
            let bodies = self.clone();
            tokio::spawn(async move {
                while is_body(b.pid, &b.control_sock) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                info!(body = %b.job, pid = b.pid, "body process ended");
                bodies.forget(&b);
            });
        }
    }

    /// A body process has ended.
    fn forget(&self, b: &Body) {
        let mut t = self.table();
        if t.get(&b.job).is_some_and(|x| x.pid == b.pid) {
            t.remove(&b.job);
        }
        drop(t);
        let _ = std::fs::remove_file(&b.control_sock);
        let _ = std::fs::remove_file(record_path(&b.control_sock));
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
    /// With `ticket`, the receiver takes only the stream that presents it.
    pub async fn prepare(
        self: &Arc<Self>,
        job: &JobRef,
        mem_bytes: u64,
        owner_uid: u32,
        ticket: Option<&trust::Ticket>,
    ) -> Result<String, Refusal> {
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
        let log_path = self.dir.join(format!("{}-{}-{n}.log", job.home, job.id));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|e| cannot(format!("its log {}: {e}", log_path.display())))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("receive")
            .arg("--listen")
            .arg(std::net::SocketAddr::new(self.ip, 0).to_string())
            .arg("--once")
            .arg("--wait")
            .arg(UNUSED_LIMIT.as_secs().to_string())
            .arg("--announce")
            .arg("--api-sock")
            .arg(&sock)
            // parse_size: a plain number is MiB, so give KiB, rounded up.
            .arg("--mem-limit")
            .arg(format!("{}K", mem_bytes.div_ceil(1024)))
            .current_dir(&self.empty)
            .stdin(if self.transport.is_tls() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if self.transport.is_tls() {
            cmd.arg("--credentials-stdin");
        }
        if let Some(t) = ticket {
            cmd.env(trust::MOVE_TICKET_ENV, t.to_hex());
        }
        let mut child = cmd.spawn().map_err(|e| cannot(format!("{}: {e}", self.exe.display())))?;
        let pid = child.id().unwrap_or(0);
        // Its certificate comes on its stdin: no other process sees it.
        if let trust::Transport::Tls(tls) = &self.transport {
            let creds = tls
                .identity
                .issue_job(&format!("body of {job} at {}", self.ip))
                .map_err(|e| cannot(format!("no certificate for it: {e}")))?
                .map(crate::api::Credentials::from);
            let line = serde_json::to_vec(&crate::api::CredentialsReply { credentials: creds }).unwrap_or_default();
            let sent = match child.stdin.take() {
                Some(mut stdin) => {
                    use tokio::io::AsyncWriteExt;
                    stdin.write_all(&line).await.and(stdin.shutdown().await)
                }
                None => Err(std::io::Error::other("no pipe to its stdin")),
            };
            if let Err(e) = sent {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(cannot(format!("giving it its certificate: {e}")));
            }
        }
        let Some(stdout) = child.stdout.take() else {
            let _ = child.start_kill();
            return Err(cannot("no pipe to it".into()));
        };
        tail_log(job.clone(), pid, log_path, false);
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
        if let Err(e) = std::fs::write(record_path(&sock), serde_json::to_vec(&body).unwrap_or_default()) {
            warn!(body = %job, "keeping the body's record: {e} (a restarted daemon would not find it)");
        }
        self.table().insert(job.clone(), body.clone());
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
            bodies.forget(&body);
        });
        Ok(addr)
    }
}
