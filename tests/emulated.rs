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

use crate::{mosvm, mosvm_bin, run_command, scratch_dir, Opts, Proc, Run};
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
    /// Serve Prometheus metrics on the host's own address, port picked
    /// (`Ready::metrics` says which).
    pub metrics: bool,
    /// Run the hosts `--insecure`; by default each gets an identity of one
    /// cluster CA (in the cluster's directory) and runs with `--tls`.
    pub insecure: bool,
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
            if self.opts.metrics {
                cmd.arg("--metrics").arg(format!("{}:0", self.ip));
            }
            match self.identity() {
                Some(dir) => cmd.arg("--tls").arg(dir),
                None => cmd.arg("--insecure"),
            };
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

    /// The host's identity directory (made on first use), unless the
    /// cluster runs insecure.
    pub fn identity(&self) -> Option<PathBuf> {
        if self.opts.insecure {
            return None;
        }
        let ca = self.sock.parent().expect("the cluster's directory").join("ca");
        let dir = ca.join("hosts").join(&self.name);
        if !dir.exists() {
            if !ca.join("ca.pem").exists() {
                trust::init_cluster(&ca).expect("a cluster CA");
            }
            trust::add_host(&ca, &self.name).expect("a host certificate");
        }
        Some(dir)
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

    /// `mosvm ARGS --sock SOCK`: a command run against this host's daemon.
    pub fn at(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(mosvm_bin());
        cmd.args(args).arg("--sock").arg(&self.sock);
        run_command(cmd, &Opts::default())
    }

    /// Starts a detached job here, `mosvm run -d --mem 64M [flags] -- PROG
    /// ARGS` (PROG an image name), in `/`; returns its id.
    pub fn submit(&self, flags: &[&str], prog: &str, args: &[&str]) -> u64 {
        let mut cmd = Command::new(mosvm_bin());
        cmd.args(["run", "-d", "--mem", "64M"]).args(flags).arg("--").arg(crate::image(prog)).args(args);
        let sock = self.sock.to_str().unwrap();
        let r =
            run_command(cmd, &Opts { env: vec![("MOSVM_SOCK", sock)], cwd: Some(Path::new("/")), ..Opts::default() });
        assert_eq!(r.status, 0, "run -d at {}: {r:?}", self.name);
        r.stdout.trim().parse().unwrap_or_else(|_| panic!("run -d prints the job id: {:?}", r.stdout))
    }

    /// Waits until detached job `id` of this home runs (its deputy has
    /// filled in its record: it can move).
    pub fn wait_started(&self, id: u64) {
        wait_until(&format!("job {id} at {} to start", self.name), Duration::from_secs(10), || {
            self.ps(false).iter().any(|j| j.id == id && j.control_sock.is_some())
        });
    }

    /// Waits for job `id` of this home to end; returns its record.
    pub fn wait_job(&self, id: u64, limit: Duration) -> JobView {
        let mut v = None;
        wait_until(&format!("job {id} at {} to end", self.name), limit, || {
            v = self.ps(true).into_iter().find(|j| j.id == id && j.state.ended());
            v.is_some()
        });
        v.unwrap()
    }
}

/// `cpu` iterations for about 2 s of CPU on this machine's cores.
pub const WORK: &str = "1200000000";
/// `cpu` iterations for longer than any test waits.
pub const FOREVER: &str = "400000000000";

/// Hosts of 0.5 CPU each.
pub fn half_cpu() -> Options {
    Options { cpus: Some(0.5), ..Options::default() }
}

/// Tests of a file that start hosts with CPU budgets, or measure time,
/// run one at a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Emulated hosts with CPU budgets, and cordoning, need root (cgroups, the
/// operator's API), as CI has. Without it a test fails, unless
/// MOSVM_ALLOW_NO_ROOT=1 says to skip it (loudly).
pub fn need_root() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("MOSVM_ALLOW_NO_ROOT").as_deref() == Ok("1") {
        eprintln!("*** SKIPPED: this test needs root (cgroups, the operator's API) (MOSVM_ALLOW_NO_ROOT=1) ***");
        return false;
    }
    panic!("this test needs root (cgroups, the operator's API); set MOSVM_ALLOW_NO_ROOT=1 to skip it");
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
        // Detached jobs outlive their daemon by design: a test that failed
        // half-way must not leave its jobs running.
        for h in self.hosts.iter().filter(|h| h.proc.is_some()) {
            let sock = h.sock.to_str().unwrap_or_default();
            let r = mosvm(["ps", "--json", "--sock", sock]);
            let jobs: Vec<JobView> = serde_json::from_str(&r.stdout).unwrap_or_default();
            // Not the jobs a test registered with itself as their deputy.
            let me = std::process::id();
            for j in jobs.iter().filter(|j| !j.state.ended() && j.deputy_pid.is_some_and(|p| p != me)) {
                let _ = mosvm(["kill", "-s", "KILL", &j.id.to_string(), "--sock", sock]);
            }
        }
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

/// A host on a network of its own: a network namespace joined to this
/// one by a veth pair (`outer` here, `inner` there), as root. `cut` takes
/// the namespace's interface down, so packets between the two vanish
/// without a reset, as when a host's cable is pulled; `mend` brings it
/// back. Removed on drop.
pub struct Netns {
    pub name: String,
    dev: String,
    /// This side's address on the pair.
    pub outer: String,
    /// The namespace's address.
    pub inner: String,
}

impl Netns {
    pub fn create() -> Netns {
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{n}", std::process::id() % 100_000);
        let subnet = 1 + (std::process::id() as u16 % 50) * 5 + n % 5;
        let ns = Netns {
            name: format!("mosvm{id}"),
            dev: format!("mv{id}"),
            outer: format!("10.213.{subnet}.1"),
            inner: format!("10.213.{subnet}.2"),
        };
        ns.remove();
        let (name, outer_dev, inner_dev) = (&ns.name, format!("{}o", ns.dev), format!("{}i", ns.dev));
        let steps: [&[&str]; 8] = [
            &["netns", "add", name],
            &["link", "add", &outer_dev, "type", "veth", "peer", "name", &inner_dev],
            &["link", "set", &inner_dev, "netns", name],
            &["addr", "add", &format!("{}/24", ns.outer), "dev", &outer_dev],
            &["link", "set", &outer_dev, "up"],
            &["-n", name, "addr", "add", &format!("{}/24", ns.inner), "dev", &inner_dev],
            &["-n", name, "link", "set", &inner_dev, "up"],
            &["-n", name, "link", "set", "lo", "up"],
        ];
        for step in steps {
            ip(step).unwrap_or_else(|e| panic!("making network namespace {name}: ip {}: {e}", step.join(" ")));
        }
        ns
    }

    /// `program` to run inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// The namespace's interface goes down.
    pub fn cut(&self) {
        ip(&["-n", &self.name, "link", "set", &format!("{}i", self.dev), "down"]).unwrap();
    }

    pub fn mend(&self) {
        ip(&["-n", &self.name, "link", "set", &format!("{}i", self.dev), "up"]).unwrap();
    }

    fn remove(&self) {
        let _ = ip(&["link", "del", &format!("{}o", self.dev)]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}
