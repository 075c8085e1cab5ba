//! Emulated hosts, for the cluster tests and the benchmarks: one `mosvm
//! host` per loopback address (127.0.0.2, .3, ...), each with its own state
//! dir, API socket and config file, ready once it printed its readiness
//! line. With a CPU budget (`Options::cpus`) each daemon runs with
//! `--cpu-limit`: it and everything it runs get a cgroup with that quota,
//! so a host of 0.5 CPU really runs its jobs at half speed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use crate::{mosvm, mosvm_bin, scratch_dir, Proc};
use mosvm_host::api::{HostState, HostView, JobView, Ready};

/// Ports handed out to this test process: a base derived from its pid, so
/// that two test runs at once rarely collide, and retries when they do.
fn next_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 20000) as u16;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    20000 + (base - 20000 + n * 7) % 40000
}

/// How the emulated hosts run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Each host's CPU budget (`mosvm host --cpu-limit`), if any.
    pub cpus: Option<f64>,
    /// Balancing off (`--no-balance`).
    pub no_balance: bool,
    /// More TOML for every host's config file (e.g. a `[balancer]` table).
    pub toml: String,
}

pub struct Host {
    pub name: String,
    pub opts: Options,
    pub ip: String,
    pub port: u16,
    pub sock: PathBuf,
    pub state_dir: PathBuf,
    pub config: PathBuf,
    pub ready: Option<Ready>,
    pub proc: Option<Proc>,
}

impl Host {
    /// Host number `i` of a cluster in `base`: h2 on 127.0.0.2, h3 on
    /// 127.0.0.3, ...; not started.
    fn new(base: &Path, i: usize, opts: &Options) -> Host {
        let name = format!("h{}", i + 2);
        Host {
            opts: opts.clone(),
            ip: format!("127.0.0.{}", i + 2),
            port: next_port(),
            sock: base.join(format!("{name}.sock")),
            state_dir: base.join(format!("{name}-state")),
            config: base.join(format!("{name}.toml")),
            name,
            ready: None,
            proc: None,
        }
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn pid(&self) -> i32 {
        self.proc.as_ref().expect("host is not running").child.id() as i32
    }

    /// Starts the daemon and waits for its readiness line. The config
    /// file gives the state dir, socket, join list and a wrong name that
    /// the --name flag overrides.
    pub fn start(&mut self, join: &[String]) {
        for attempt in 0..5 {
            if attempt > 0 {
                self.port = next_port();
            }
            let join_toml: Vec<String> = join.iter().map(|j| format!("{j:?}")).collect();
            let toml = format!(
                "name = \"not-{name}\"\nstate_dir = {dir:?}\napi_sock = {sock:?}\njoin = [{join}]\nlog_format = \"json\"\n{extra}\n",
                name = self.name,
                dir = self.state_dir.display().to_string(),
                sock = self.sock.display().to_string(),
                join = join_toml.join(", "),
                extra = self.opts.toml,
            );
            std::fs::write(&self.config, toml).unwrap();
            let mut cmd = Command::new(mosvm_bin());
            cmd.arg("host")
                .arg("--name")
                .arg(&self.name)
                .arg("--listen")
                .arg(self.addr())
                .arg("--config")
                .arg(&self.config);
            if let Some(cpus) = self.opts.cpus {
                cmd.arg("--cpu-limit").arg(cpus.to_string());
            }
            if self.opts.no_balance {
                cmd.arg("--no-balance");
            }
            cmd.env("MOSVM_LOG", "info");
            let t = Instant::now();
            let mut p = Proc::spawn(cmd);
            match wait_ready(&mut p) {
                Ok(ready) => {
                    let took = t.elapsed();
                    assert_eq!(ready.event, "ready");
                    assert_eq!(ready.name, self.name, "--name must win over the config file");
                    assert_eq!(ready.api_sock, self.sock.display().to_string());
                    assert!(took < Duration::from_secs(2), "{} took {took:?} to start", self.name);
                    self.ready = Some(ready);
                    self.proc = Some(p);
                    return;
                }
                // Another process has the port: try the next one.
                Err(err) if err.contains("peer port") && err.contains("in use") => {
                    eprintln!("{}: port {} taken, trying another", self.name, self.port)
                }
                Err(err) => panic!("{} did not start: {err}", self.name),
            }
        }
        panic!("{}: no free port after 5 tries", self.name);
    }

    /// Sends `sig`; with SIGTERM, waits for the exit and returns its status.
    pub fn signal(&mut self, sig: i32) -> Option<i32> {
        let pid = self.pid();
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(pid, sig) };
        let p = self.proc.take()?;
        let run = p.finish(Duration::from_secs(10));
        Some(run.status)
    }

    /// The cgroup of its CPU budget (`mosvm-NAME-PORT` under the cpu
    /// controller), if it has one.
    pub fn cgroup(&self) -> Option<PathBuf> {
        self.opts.cpus?;
        let leaf = format!("mosvm-{}-{}", self.name, self.port);
        ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup"]
            .iter()
            .map(|m| Path::new(m).join(&leaf))
            .find(|p| p.is_dir())
    }

    /// Stops the host and everything it ran: the processes in its cgroup
    /// (bodies, jobs) are killed, the daemon is asked to stop (it removes
    /// its cgroup) and killed if it does not; a cgroup left by a daemon that
    /// was killed is removed here.
    pub fn stop(&mut self) {
        let cg = self.cgroup();
        let daemon = self.proc.as_ref().map(|p| p.child.id());
        if let Some(dir) = &cg {
            for pid in read_pids(dir).into_iter().filter(|&p| Some(p) != daemon) {
                // SAFETY: plain kill(2) of a process of this test's host.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        if let Some(mut p) = self.proc.take() {
            if cg.is_some() {
                // SAFETY: plain kill(2) of our own child.
                unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
                let t = Instant::now();
                while p.child.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            // Proc's drop kills what still runs, and reaps.
        }
        if let Some(dir) = cg.filter(|d| d.exists()) {
            let t = Instant::now();
            while std::fs::remove_dir(&dir).is_err() && t.elapsed() < Duration::from_secs(5) {
                for pid in read_pids(&dir) {
                    // SAFETY: as above.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn stderr(&self) -> String {
        self.proc.as_ref().map(|p| p.stderr()).unwrap_or_default()
    }

    pub fn hosts(&self) -> Vec<HostView> {
        let r = mosvm(["hosts", "--json", "--sock", self.sock.to_str().unwrap()]);
        assert_eq!(r.status, 0, "mosvm hosts at {}: {}", self.name, r.stderr);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("hosts --json {:?}: {e}", r.stdout))
    }

    pub fn ps(&self, all: bool) -> Vec<JobView> {
        let mut args = vec!["ps", "--json", "--sock", self.sock.to_str().unwrap()];
        if all {
            args.push("--all");
        }
        let r = mosvm(args);
        assert_eq!(r.status, 0, "mosvm ps at {}: {}", self.name, r.stderr);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("ps --json {:?}: {e}", r.stdout))
    }

    /// The state of host `name` as this host sees it.
    pub fn sees(&self, name: &str) -> Option<HostState> {
        self.hosts().into_iter().find(|h| h.name == name).map(|h| h.state)
    }
}

pub struct Cluster {
    pub base: PathBuf,
    pub hosts: Vec<Host>,
}

impl Cluster {
    /// `n` hosts on 127.0.0.2, .3, ...; each joins through the first.
    pub fn start(test: &str, n: usize) -> Cluster {
        Cluster::start_with(test, n, &Options::default())
    }

    /// `n` hosts run as `opts` says.
    pub fn start_with(test: &str, n: usize, opts: &Options) -> Cluster {
        let base = scratch_dir(test);
        let mut c = Cluster { base: base.clone(), hosts: Vec::new() };
        for i in 0..n {
            c.hosts.push(Host::new(&base, i, opts));
        }
        for i in 0..n {
            let join: Vec<String> = if i == 0 { vec![] } else { vec![c.hosts[0].addr()] };
            c.hosts[i].start(&join);
        }
        c
    }

    /// One more host (the next loopback address), joining through the
    /// first; returns its index.
    pub fn add(&mut self, opts: &Options) -> usize {
        let i = self.hosts.len();
        self.hosts.push(Host::new(&self.base, i, opts));
        let join = vec![self.hosts[0].addr()];
        self.hosts[i].start(&join);
        i
    }

    /// Waits until every running host sees every running host alive.
    pub fn wait_all_alive(&self, limit: Duration) {
        let running: Vec<&Host> = self.hosts.iter().filter(|h| h.proc.is_some()).collect();
        let names: Vec<&str> = running.iter().map(|h| h.name.as_str()).collect();
        for h in &running {
            wait_until(&format!("{} to see {names:?} alive", h.name), limit, || {
                let seen = h.hosts();
                names.iter().all(|n| seen.iter().any(|v| v.name == *n && v.state == HostState::Alive))
            });
        }
    }

    pub fn dump(&self) -> String {
        let mut s = String::new();
        for h in &self.hosts {
            s.push_str(&format!("--- {} stderr:\n{}\n", h.name, h.stderr()));
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            h.stop();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}

fn read_pids(cgroup: &Path) -> Vec<u32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

pub fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    t.elapsed()
}

/// A copy of this test executable that any uid can run (the target dir
/// need not be readable by others).
pub fn helper_exe(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let me = std::env::current_exe().unwrap();
    let copy = dir.join("cluster-helper");
    if !copy.exists() {
        std::fs::copy(&me, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    copy
}

/// The readiness line of a starting daemon, or why there is none.
fn wait_ready(p: &mut Proc) -> Result<Ready, String> {
    let t = Instant::now();
    loop {
        let out = p.stdout();
        if let Some((line, _)) = out.split_once('\n') {
            return serde_json::from_str(line).map_err(|e| format!("readiness line {line:?}: {e}"));
        }
        if let Some(st) = p.child.try_wait().unwrap() {
            // Let the reader threads catch up with the last words.
            std::thread::sleep(Duration::from_millis(50));
            return Err(format!("exited ({st}) before it was ready; stderr:\n{}", p.stderr()));
        }
        if t.elapsed() > Duration::from_secs(10) {
            return Err(format!("not ready after 10 s; stderr:\n{}", p.stderr()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes all of `bytes` to `w`, ignoring a peer that already hung up.
pub fn send_all(w: &mut impl Write, bytes: &[u8]) {
    let _ = w.write_all(bytes);
    let _ = w.flush();
}
