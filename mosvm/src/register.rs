//! A `mosvm run` and its host daemon: registering the job (this process
//! is its deputy, identified by the socket's peer credentials), reporting
//! its end, and `run -d`, which asks the daemon to start the deputy.

use std::cell::Cell;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use mosvm_host::api::{DetachedJob, NewJob, StateChange};
use mosvm_host::BlockingClient;

use crate::cli::RunArgs;

/// The daemon's API socket (MOSVM_SOCK, else the default), if a daemon
/// answers there.
pub fn daemon_socket() -> Option<PathBuf> {
    let p = mosvm_host::socket_path(None);
    UnixStream::connect(&p).ok().map(|_| p)
}

/// A control socket for a job that did not ask for one, so the daemon
/// can move it: $XDG_RUNTIME_DIR/mosvm/job-PID.sock, else
/// /tmp/mosvm-UID/job-PID.sock (a directory only we own and can enter).
pub fn own_control_socket() -> Result<PathBuf, String> {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(d) if d.is_absolute() && d.is_dir() => d.join("mosvm"),
        _ => std::env::temp_dir().join(format!("mosvm-{uid}")),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    // Someone else's directory (or a symlink) in /tmp must not receive it.
    let m = std::fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !m.is_dir() || m.uid() != uid || m.mode() & 0o077 != 0 {
        return Err(format!("{} is not a private directory of uid {uid}", dir.display()));
    }
    Ok(dir.join(format!("job-{}.sock", std::process::id())))
}

/// The job's notices (an unsupported system call...) go to its daemon,
/// which logs them and keeps them as events: the operator reads them
/// there, and the job's own output stays as it is natively.
pub fn send_notices(sock: &Path, id: u64) {
    // The client is made at the first notice: most jobs send none.
    let sock = sock.to_path_buf();
    let client: std::sync::Mutex<Option<BlockingClient>> = std::sync::Mutex::new(None);
    vmm::notice::set_sink(std::sync::Arc::new(move |n: &vmm::notice::Notice| {
        let n = match n {
            vmm::notice::Notice::Unsupported { nr, name } => {
                mosvm_host::api::JobNotice::UnsupportedSyscall { nr: *nr, name: name.map(str::to_string) }
            }
            vmm::notice::Notice::Refused { from, why } => {
                mosvm_host::api::JobNotice::Refused { from: from.map(|a| a.to_string()), why: why.clone() }
            }
        };
        let Ok(mut c) = client.lock() else { return };
        if c.is_none() {
            *c = BlockingClient::new(&sock).ok();
        }
        // Best effort: a daemon that is gone must not stop the job.
        if let Some(c) = c.as_ref() {
            let _ = c.notice(id, &n);
        }
    }));
}

/// The transport of a job process at the host whose daemon listens on
/// `sock`: mutual TLS with a certificate from it, or plain when the
/// daemon runs `--insecure`, cannot be reached, or there is none.
pub fn transport(sock: Option<&Path>) -> trust::Transport {
    let Some(sock) = sock else { return trust::Transport::Plain };
    let reply = BlockingClient::new(sock).and_then(|c| c.credentials());
    match reply {
        Ok(r) => from_credentials(r.credentials),
        Err(e) => {
            eprintln!("mosvm: no credentials from the daemon ({e}): the job's links are plain");
            trust::Transport::Plain
        }
    }
}

/// The transport `creds` make (plain without).
pub fn from_credentials(creds: Option<mosvm_host::api::Credentials>) -> trust::Transport {
    let Some(c) = creds else { return trust::Transport::Plain };
    let name = format!("job process {}", std::process::id());
    match trust::Identity::from_job(&c.into(), &name).and_then(trust::Transport::tls) {
        Ok(t) => t,
        Err(e) => {
            // Its links will be refused: it runs, and cannot move.
            eprintln!("mosvm: the daemon's credentials do not load ({e}): the job cannot leave this host");
            trust::Transport::Plain
        }
    }
}

/// A registered job; reports its end once.
pub struct Registration {
    client: BlockingClient,
    id: u64,
    ended: Cell<bool>,
}

/// Registers the job whose deputy is this process.
pub fn register(sock: &Path, job: &NewJob) -> Result<Registration, String> {
    let client = BlockingClient::new(sock).map_err(|e| e.to_string())?;
    let view = client.register(job).map_err(|e| e.to_string())?;
    Ok(Registration { client, id: view.id, ended: Cell::new(false) })
}

impl Registration {
    pub fn id(&self) -> u64 {
        self.id
    }

    fn end(&self, change: StateChange) {
        if self.ended.replace(true) {
            return;
        }
        if let Err(e) = self.client.set_state(self.id, &change) {
            eprintln!("mosvm: cannot tell the daemon how job {} ended: {e}", self.id);
        }
    }

    /// The job ended with `status` (as a shell reports it).
    pub fn exited(&self, status: i32) {
        self.end(StateChange::Exited { status });
    }

    /// The job was lost (its body's host died, or it could not come home).
    pub fn lost(&self, reason: &str) {
        let reason = if reason.is_empty() { "lost" } else { reason };
        self.end(StateChange::Lost { reason: reason.to_string() });
    }
}

fn utf8(what: &str, s: &std::ffi::OsStr) -> Result<String, String> {
    s.to_str().map(str::to_string).ok_or_else(|| format!("{what} {s:?} is not UTF-8"))
}

/// The caller's environment with `--env` overrides, as K=V.
fn env_with(overrides: &[(std::ffi::OsString, std::ffi::OsString)]) -> Result<Vec<String>, String> {
    let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os().collect();
    for (k, v) in overrides {
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    env.iter().map(|(k, v)| Ok(format!("{}={}", utf8("variable", k)?, utf8("value", v)?))).collect()
}

/// `mosvm run -d`: the daemon starts the job's deputy as the caller, with
/// this environment and working directory; prints the job's id.
pub fn detach(args: &RunArgs) -> i32 {
    let Some(sock) = daemon_socket() else {
        eprintln!(
            "mosvm: run -d needs the host daemon, and none answers at {} (MOSVM_SOCK names another socket)",
            mosvm_host::socket_path(None).display()
        );
        return 1;
    };
    let request = (|| -> Result<DetachedJob, String> {
        let cwd = std::env::current_dir().map_err(|e| format!("cannot determine the working directory: {e}"))?;
        Ok(DetachedJob {
            program: utf8("program", &args.program)?,
            args: args.args.iter().map(|a| utf8("argument", a)).collect::<Result<_, _>>()?,
            env: env_with(&args.env)?,
            cwd: utf8("working directory", cwd.as_os_str())?,
            mem_bytes: args.mem,
            trace: args.trace,
            stay: args.stay,
            limits: own_limits(),
        })
    })();
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mosvm: {e}");
            return 1;
        }
    };
    match BlockingClient::new(&sock).and_then(|c| c.detach(&request)) {
        Ok(job) => {
            println!("{}", job.id);
            0
        }
        Err(e) => {
            eprintln!("mosvm: {e}");
            1
        }
    }
}

/// This process's resource limits, for a detached job to start with.
fn own_limits() -> Vec<(u32, u64, u64)> {
    (0..mosvm_host::api::RLIMITS)
        .filter_map(|r| {
            let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: valid out pointer; an unknown resource fails cleanly.
            (unsafe { libc::getrlimit(r as _, &mut l) } == 0).then_some((r, l.rlim_cur, l.rlim_max))
        })
        .collect()
}
