//! `run -d`: the daemon starts a job's deputy (`mosvm run`) as the
//! caller, whose uid, gid and groups come from the socket's peer
//! credentials, never from the request. Its stdin is /dev/null, its
//! stdout and stderr files in `<state_dir>/logs` owned by the caller.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use tracing::{info, warn};

use crate::api::{ApiError, DetachedJob, ErrorKind, LogChunk, NewJob, StateChange, LOG_CHUNK};
use crate::procfs;
use crate::server::{now_ms, Shared};
use crate::store::{JobRecord, Owner};

pub fn logs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("logs")
}

fn log_paths(state_dir: &Path, id: u64) -> (PathBuf, PathBuf) {
    let d = logs_dir(state_dir);
    (d.join(format!("{id}.out")), d.join(format!("{id}.err")))
}

fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorKind::Internal, format!("{what}: {e}"))
}

/// A new log file owned by the job's owner.
fn create_log(path: &Path, owner: &Owner) -> Result<File, ApiError> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| internal(&path.display().to_string(), e))?;
    // SAFETY: fchown on a descriptor we own.
    if unsafe { libc::fchown(f.as_raw_fd(), owner.uid, owner.gid) } != 0 {
        return Err(internal(&path.display().to_string(), std::io::Error::last_os_error()));
    }
    Ok(f)
}

/// The caller's supplementary groups, as the kernel has them for its
/// process (SO_PEERCRED gives only uid and gid); just its gid if unknown.
fn groups_of(who: &Owner) -> Vec<libc::gid_t> {
    let from_proc = who.pid.and_then(|pid| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = text.lines().find_map(|l| l.strip_prefix("Groups:"))?;
        line.split_whitespace().map(|g| g.parse().ok()).collect::<Option<Vec<libc::gid_t>>>()
    });
    let mut g = from_proc.unwrap_or_default();
    if !g.contains(&who.gid) {
        g.push(who.gid);
    }
    g
}

fn check(req: &DetachedJob) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::new(ErrorKind::BadRequest, m);
    if req.program.is_empty() {
        return Err(bad("program is empty".into()));
    }
    if !req.cwd.starts_with('/') {
        return Err(bad(format!("cwd {:?} is not an absolute path", req.cwd)));
    }
    if req.mem_bytes == 0 || req.mem_bytes & 1023 != 0 {
        return Err(bad(format!("mem_bytes {} is not a positive number of KiB", req.mem_bytes)));
    }
    let nul = |s: &str| s.as_bytes().contains(&0);
    if nul(&req.program) || nul(&req.cwd) || req.args.iter().any(|a| nul(a)) || req.env.iter().any(|e| nul(e)) {
        return Err(bad("a NUL byte in the request".into()));
    }
    Ok(())
}

/// Starts the detached job; returns its record.
pub fn start(s: &Arc<Shared>, who: Owner, req: DetachedJob) -> Result<JobRecord, ApiError> {
    check(&req)?;
    let mode = s.drain.mode();
    if mode.closed() {
        return Err(ApiError::new(
            crate::api::ErrorKind::Refused,
            format!(
                "host {} is {}: it starts no new jobs (start it at another host, or `mosvm uncordon {}`)",
                s.name,
                mode.as_str(),
                s.name
            ),
        ));
    }
    let cwd = CString::new(req.cwd.as_bytes()).map_err(|e| internal("cwd", e))?;
    let limits = caller_limits(&req.limits)?;
    let groups = groups_of(&who);
    let dir = logs_dir(&s.state_dir);
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| internal("logs dir", e))?;

    let mut argv = vec![req.program.clone()];
    argv.extend(req.args.iter().cloned());
    let draft = NewJob {
        program: req.program.clone(),
        argv,
        cwd: req.cwd.clone(),
        control_sock: None,
        deputy_addr: None,
        mem_bytes: req.mem_bytes,
        stay: req.stay,
    };
    // Under the records' lock from insert to set_deputy: the deputy's own
    // registration (which adopts this record) waits for it.
    let store = &mut *s.store();
    let rec = store.insert_detached(who, &draft, &s.name, now_ms())?;
    let (out_path, err_path) = log_paths(&s.state_dir, rec.id);
    let (out, err) = (create_log(&out_path, &who)?, create_log(&err_path, &who)?);

    let mut cmd = std::process::Command::new(&s.exe);
    cmd.arg("run").arg("--mem").arg(format!("{}K", req.mem_bytes / 1024));
    if req.trace {
        cmd.arg("--trace");
    }
    if req.stay {
        cmd.arg("--stay");
    }
    cmd.arg("--").arg(&req.program).args(&req.args);
    cmd.env_clear();
    for kv in &req.env {
        if let Some((k, v)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) {
            cmd.env(k, v);
        }
    }
    // It registers with this daemon whatever the caller's environment says.
    cmd.env("MOSVM_SOCK", &s.api_sock);
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let (uid, gid) = (who.uid, who.gid);
    // SAFETY: only async-signal-safe calls between fork and exec; the
    // buffers were made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // The caller's limits, set while still privileged (raising a
            // hard limit back to the caller's needs it).
            for (resource, limit) in &limits {
                if libc::setrlimit(*resource as _, limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Its own session: the daemon's terminal signals are not its.
            if libc::setsid() < 0
                || libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // After setuid: the caller's permissions decide.
            if libc::chdir(cwd.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match tokio::process::Command::from(cmd).spawn() {
        Ok(c) => c,
        Err(e) => {
            let why = format!("cannot start its deputy: {e}");
            store.set_state(rec.id, &StateChange::Lost { reason: why.clone() }, now_ms())?;
            s.publish(store);
            return Err(ApiError::new(ErrorKind::BadRequest, why));
        }
    };
    let pid = child.id().unwrap_or(0);
    store.set_deputy(rec.id, pid, procfs::start_time(pid))?;
    s.children().insert(pid);
    let rec = store.job(rec.id)?.unwrap_or(rec);
    s.publish(store);
    info!(job = rec.id, uid, pid, program = %req.program, stay = req.stay, "detached job started");

    // Reap it; its status is the job's (mosvm run exits with it), for a
    // deputy that could not say so itself (the program was not found).
    let (shared, id) = (s.clone(), rec.id);
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(st) => {
                use std::os::unix::process::ExitStatusExt;
                st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
            }
            Err(e) => {
                warn!(job = id, "waiting for the deputy: {e}");
                return;
            }
        };
        let store = &mut *shared.store();
        if store.job(id).ok().flatten().is_some_and(|j| !j.state.ended()) {
            if let Err(e) = store.set_state(id, &StateChange::Exited { status }, now_ms()) {
                warn!(job = id, "recording the end: {e}");
            }
        }
        shared.children().remove(&pid);
        shared.publish(store);
        info!(job = id, pid, status, "detached deputy ended");
    });
    Ok(rec)
}

fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(LOG_CHUNK as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// What a detached job wrote from these offsets on.
pub fn logs(state_dir: &Path, job: &JobRecord, out: u64, err: u64) -> Result<LogChunk, ApiError> {
    if !job.detached {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!("job {} was not started with run -d: its output went to its terminal", job.id),
        ));
    }
    let (po, pe) = log_paths(state_dir, job.id);
    let ended = job.state.ended();
    let out = read_from(&po, out).map_err(|e| internal("reading the log", e))?;
    let err = read_from(&pe, err).map_err(|e| internal("reading the log", e))?;
    Ok(LogChunk { out, err, ended })
}

/// The caller's limits as `setrlimit` takes them, each clamped to this
/// daemon's own hard limit: a request cannot give a job more than a
/// deputy started by this daemon could have had anyway.
fn caller_limits(asked: &[(u32, u64, u64)]) -> Result<Vec<(u32, libc::rlimit)>, ApiError> {
    let mut out = Vec::with_capacity(asked.len());
    for &(resource, cur, max) in asked {
        if resource >= crate::api::RLIMITS || cur > max {
            return Err(ApiError::new(ErrorKind::BadRequest, format!("bad resource limit {resource}: {cur} > {max}")));
        }
        let mut own = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: valid resource number and out pointer.
        if unsafe { libc::getrlimit(resource as _, &mut own) } != 0 {
            continue;
        }
        let max = max.min(own.rlim_max);
        out.push((resource, libc::rlimit { rlim_cur: cur.min(max), rlim_max: max }));
    }
    Ok(out)
}
