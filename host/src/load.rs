//! What this host can give its jobs (capacity) and how busy it is (load),
//! measured from /proc and the cpu cgroup, for the balancer.

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::cgroup::{self, Version};

/// What this daemon may use: cores × speed.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    pub cores: u16,
    /// Relative speed of one core (1.0: a whole core of this machine).
    pub speed: f64,
    /// Human-readable origin, e.g. "cgroup quota 0.50 CPU
    /// (/sys/fs/cgroup/cpu/mosvm-h1)", "2 cores allowed (sched_getaffinity)",
    /// "--cpus 4".
    pub source: String,
}

impl Capacity {
    pub fn cpus(&self) -> f64 {
        f64::from(self.cores) * self.speed
    }
}

/// The smallest CPU quota on this process's cpu cgroup and its ancestors
/// (as far up as the mount shows), with the cgroup holding it.
fn smallest_quota() -> Option<(f64, PathBuf, Version)> {
    let at = cgroup::locate(None).ok()?;
    let mut best: Option<(f64, PathBuf)> = None;
    let mut dir = at.dir.as_path();
    loop {
        if let Some(q) = cgroup::quota_of(dir, at.version) {
            let better = match &best {
                Some((b, _)) => q < *b,
                None => true,
            };
            if better {
                best = Some((q, dir.to_path_buf()));
            }
        }
        if dir == at.mount {
            break;
        }
        dir = dir.parent()?;
    }
    best.map(|(q, d)| (q, d, at.version))
}

/// CPUs this process may run on (not std's `available_parallelism`,
/// which already folds in the cgroup quota).
fn affinity_cpus() -> u16 {
    // SAFETY: cpu_set_t is plain bits; sched_getaffinity writes at most
    // size_of::<cpu_set_t>() bytes into it.
    let n = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            libc::CPU_COUNT(&set) as i64
        } else {
            // More CPUs than a cpu_set_t holds, or no syscall: count online ones.
            libc::sysconf(libc::_SC_NPROCESSORS_ONLN)
        }
    };
    n.clamp(1, i64::from(u16::MAX)) as u16
}

/// `detect_capacity` on given measurements: `quota` is the smallest cgroup
/// quota and where it is, `affinity` the CPUs we may run on.
fn capacity_from(cpus: Option<f64>, speed: Option<f64>, quota: Option<(f64, &Path)>, affinity: u16) -> Capacity {
    let affinity = affinity.max(1);
    let (cpus, max_cores, mut source) = match cpus.filter(|c| c.is_finite() && *c > 0.0) {
        // The operator knows best: may claim more than the affinity shows.
        Some(c) => (c, u16::MAX, format!("--cpus {c}")),
        None => match quota.filter(|(q, _)| *q < f64::from(affinity)) {
            Some((q, dir)) => (q, affinity, format!("cgroup quota {q:.2} CPU ({})", dir.display())),
            None => (f64::from(affinity), affinity, format!("{affinity} cores allowed (sched_getaffinity)")),
        },
    };
    // Fewer cores than CPUs would be faster than the cores are; a
    // fraction of a core is one slow core (0.5 CPU: one core at half speed).
    let cores = (cpus - 1e-9).ceil().clamp(1.0, f64::from(max_cores)) as u16;
    let mut per_core = cpus / f64::from(cores);
    if let Some(s) = speed.filter(|s| s.is_finite() && *s > 0.0) {
        per_core *= s;
        let _ = write!(source, ", --speed {s}");
    }
    Capacity { cores, speed: per_core, source }
}

/// What this daemon may use. `cpus`: the operator's override of the
/// number of CPUs (may be fractional); `speed`: the relative speed of one
/// core (default 1.0). Without override: cpus = min(smallest cpu cgroup
/// quota of this process and its ancestors, CPUs in sched_getaffinity);
/// cores = clamp(ceil(cpus), 1, affinity), speed = cpus / cores × `speed`.
/// Invalid overrides (not finite, not > 0) are ignored.
pub fn detect_capacity(cpus: Option<f64>, speed: Option<f64>) -> Capacity {
    let quota = if cpus.is_some() { None } else { smallest_quota() };
    capacity_from(cpus, speed, quota.as_ref().map(|(q, d, _)| (*q, d.as_path())), affinity_cpus())
}

/// One sample of runnable threads.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// For each pid asked about: how many of its threads are runnable now
    /// (state R), None if the process is gone.
    pub jobs: Vec<(u32, Option<u32>)>,
    /// Other runnable threads competing for this host's CPUs (never
    /// negative): in the daemon's quota cgroup if it has one, else on the
    /// machine; the jobs' threads and the daemon's own not included (the
    /// daemon is busy in bursts, often just when it is asked about its
    /// load: counting it would make a host with one job look like more).
    pub other: f64,
}

#[derive(Debug)]
enum Scope {
    Machine,
    /// The cgroup holding the quota that binds us, and its descendants.
    Cgroup {
        dir: PathBuf,
        version: Version,
    },
}

/// Runnable-thread sampling, once per balancer tick. Reuses its buffers:
/// it runs 10 times a second over a few dozen processes.
#[derive(Debug)]
pub struct Sampler {
    scope: Scope,
    buf: Vec<u8>,
    path: String,
    tids: Vec<u32>,
    job_tids: Vec<u32>,
    dirs: Vec<PathBuf>,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    /// Finds the scope once: the cgroup with this process's binding CPU
    /// quota, else the machine. Create it after `CpuLimit::create`.
    pub fn new() -> Sampler {
        let scope = match smallest_quota() {
            Some((_, dir, version)) => Scope::Cgroup { dir, version },
            None => Scope::Machine,
        };
        Self::with_scope(scope)
    }

    fn with_scope(scope: Scope) -> Sampler {
        Sampler {
            scope,
            buf: Vec::with_capacity(1024),
            path: String::new(),
            tids: vec![],
            job_tids: vec![],
            dirs: vec![],
        }
    }

    /// For logs: "cgroup /sys/fs/cgroup/cpu/mosvm-h1" or "machine".
    pub fn scope(&self) -> String {
        match &self.scope {
            Scope::Machine => "machine".into(),
            Scope::Cgroup { dir, .. } => format!("cgroup {}", dir.display()),
        }
    }

    /// Counts the runnable threads of each of `jobs` and of the rest of
    /// the scope. A thread in KVM_RUN and one throttled by the CFS quota
    /// are both runnable (R): both want the CPU.
    pub fn sample(&mut self, jobs: &[u32]) -> Sample {
        self.job_tids.clear();
        // The daemon's own threads first: they are left out like the jobs'.
        let own = self.count_process(std::process::id()).unwrap_or(1).max(1);
        let jobs: Vec<(u32, Option<u32>)> = jobs.iter().map(|&pid| (pid, self.count_process(pid))).collect();
        let in_jobs: u32 = jobs.iter().filter_map(|j| j.1).sum();
        let other = match &self.scope {
            Scope::Machine => {
                // The kernel's count includes the daemon's runnable threads,
                // the one reading it at least.
                self.machine_running().map_or(0.0, |n| n.saturating_sub(in_jobs).saturating_sub(own) as f64)
            }
            Scope::Cgroup { .. } => {
                self.job_tids.sort_unstable();
                self.list_cgroup_tids();
                let tids = std::mem::take(&mut self.tids);
                let mut n = 0u32;
                for &t in &tids {
                    if self.job_tids.binary_search(&t).is_err() && self.thread_state(t, t) == Some(b'R') {
                        n += 1;
                    }
                }
                self.tids = tids;
                f64::from(n)
            }
        };
        Sample { jobs, other }
    }

    /// Runnable threads of process `pid`, None if it is gone. Records its
    /// thread ids in `job_tids` (the threads not counted as other load).
    fn count_process(&mut self, pid: u32) -> Option<u32> {
        self.path.clear();
        let _ = write!(self.path, "/proc/{pid}/task");
        let dir = fs::read_dir(&self.path).ok()?;
        let (mut runnable, mut seen) = (0, false);
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            self.job_tids.push(tid);
            match self.thread_state(pid, tid) {
                Some(s) => {
                    seen = true;
                    runnable += u32::from(s == b'R');
                }
                None => continue,
            }
        }
        // Listed but every thread gone by the time we looked: gone.
        seen.then_some(runnable)
    }

    /// The state letter of thread `tid` of process `pid`.
    fn thread_state(&mut self, pid: u32, tid: u32) -> Option<u8> {
        self.path.clear();
        let _ = write!(self.path, "/proc/{pid}/task/{tid}/stat");
        self.read_path().then(|| parse_state(&self.buf))?
    }

    /// Reads the file at `self.path` into `self.buf`.
    fn read_path(&mut self) -> bool {
        self.buf.clear();
        fs::File::open(&self.path).and_then(|mut f| f.read_to_end(&mut self.buf)).is_ok()
    }

    /// Runnable threads on the machine, this one included.
    fn machine_running(&mut self) -> Option<u32> {
        // /proc/loadavg holds the same count as /proc/stat's procs_running
        // (nr_running), in a far smaller file.
        self.path.clear();
        self.path.push_str("/proc/loadavg");
        if self.read_path() {
            if let Some(n) = parse_loadavg_running(&self.buf) {
                return Some(n);
            }
        }
        self.path.clear();
        self.path.push_str("/proc/stat");
        self.read_path().then(|| parse_procs_running(&self.buf))?
    }

    /// Fills `tids` with the threads of the scope cgroup and its descendants.
    fn list_cgroup_tids(&mut self) {
        self.tids.clear();
        let Scope::Cgroup { dir, version } = &self.scope else { return };
        self.dirs.clear();
        self.dirs.push(dir.clone());
        while let Some(d) = self.dirs.pop() {
            if let Ok(entries) = fs::read_dir(&d) {
                let subdirs = entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir()));
                self.dirs.extend(subdirs.map(|e| e.path()));
            }
            self.buf.clear();
            let file = d.join(version.threads_file());
            if fs::File::open(file).and_then(|mut f| f.read_to_end(&mut self.buf)).is_ok() {
                let text = String::from_utf8_lossy(&self.buf);
                self.tids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        }
    }
}

/// The state letter of a /proc/PID/stat line: the first field after the
/// command name, which is in parentheses and may hold ") (" itself.
fn parse_state(stat: &[u8]) -> Option<u8> {
    let close = stat.iter().rposition(|&c| c == b')')?;
    let state = *stat[close + 1..].iter().find(|c| !c.is_ascii_whitespace())?;
    state.is_ascii_alphabetic().then_some(state)
}

/// The running count of /proc/loadavg ("0.52 0.40 0.31 3/412 12345").
fn parse_loadavg_running(text: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(text).ok()?;
    text.split_ascii_whitespace().nth(3)?.split_once('/')?.0.parse().ok()
}

/// The "procs_running N" line of /proc/stat.
fn parse_procs_running(text: &[u8]) -> Option<u32> {
    let text = String::from_utf8_lossy(text);
    text.lines().find_map(|l| l.strip_prefix("procs_running "))?.trim().parse().ok()
}

/// Free memory for jobs: MemAvailable from /proc/meminfo (bytes).
pub fn free_memory() -> Option<u64> {
    crate::membership::meminfo().map(|(available, _total)| available)
}

/// Resident bytes of process `pid`, None if it is gone.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|&p| p > 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};
    use std::time::Duration;

    #[test]
    fn parses_stat_states() {
        assert_eq!(parse_state(b"123 (a) (b) R 1 2 3 4"), Some(b'R'));
        assert_eq!(parse_state(b"7 (sleep) S 1 7 7 0 -1"), Some(b'S'));
        assert_eq!(parse_state(b"7 (x)y) Z 1"), Some(b'Z'));
        assert_eq!(parse_state(b"7 (x) 1"), None);
        assert_eq!(parse_state(b"7 (x)  \n"), None);
        assert_eq!(parse_state(b"7 x R 1"), None);
        assert_eq!(parse_state(b""), None);
    }

    #[test]
    fn parses_running_counts() {
        assert_eq!(parse_loadavg_running(b"0.52 0.40 0.31 3/412 12345\n"), Some(3));
        assert_eq!(parse_loadavg_running(b"0.52 0.40 0.31\n"), None);
        assert_eq!(parse_loadavg_running(b"0.52 0.40 0.31 x/412 1"), None);
        assert_eq!(parse_procs_running(b"cpu 1 2 3\nintr 5 6\nprocs_running 4\nprocs_blocked 0\n"), Some(4));
        assert_eq!(parse_procs_running(b"cpu 1 2 3\n"), None);
    }

    #[test]
    fn capacity_from_overrides() {
        let c = capacity_from(Some(0.5), None, Some((0.2, Path::new("/q"))), 2);
        assert_eq!((c.cores, c.speed, c.source.as_str()), (1, 0.5, "--cpus 0.5"));
        // Not capped by the affinity.
        let c = capacity_from(Some(3.0), None, None, 2);
        assert_eq!((c.cores, c.speed, c.cpus()), (3, 1.0, 3.0));
        let c = capacity_from(Some(1.5), Some(2.0), None, 2);
        assert_eq!((c.cores, c.speed, c.source.as_str()), (2, 1.5, "--cpus 1.5, --speed 2"));
        // Nonsense overrides count as none.
        let c = capacity_from(Some(f64::NAN), Some(-1.0), None, 2);
        assert_eq!((c.cores, c.speed), (2, 1.0));
    }

    #[test]
    fn capacity_from_measurements() {
        let c = capacity_from(None, None, Some((0.5, Path::new("/sys/fs/cgroup/cpu/mosvm-h1"))), 2);
        assert_eq!((c.cores, c.speed), (1, 0.5));
        assert_eq!(c.source, "cgroup quota 0.50 CPU (/sys/fs/cgroup/cpu/mosvm-h1)");
        let c = capacity_from(None, None, Some((1.5, Path::new("/q"))), 4);
        assert_eq!((c.cores, c.speed), (2, 0.75));
        let c = capacity_from(None, None, Some((2.0, Path::new("/q"))), 4);
        assert_eq!((c.cores, c.speed), (2, 1.0));
        // A quota above what the affinity allows does not bind.
        let c = capacity_from(None, None, Some((3.0, Path::new("/q"))), 2);
        assert_eq!((c.cores, c.speed, c.source.as_str()), (2, 1.0, "2 cores allowed (sched_getaffinity)"));
        let c = capacity_from(None, Some(2.0), None, 2);
        assert_eq!((c.cores, c.speed, c.cpus()), (2, 2.0, 4.0));
        let c = capacity_from(None, None, Some((0.01, Path::new("/q"))), 0);
        assert_eq!((c.cores, c.speed), (1, 0.01));
    }

    #[test]
    fn detects_capacity() {
        let c = detect_capacity(None, None);
        println!("capacity here: {c:?}");
        assert!(c.cores >= 1 && c.cores <= affinity_cpus() && c.speed > 0.0 && c.speed <= 1.0, "{c:?}");
        let c = detect_capacity(Some(0.5), None);
        assert_eq!((c.cores, c.speed), (1, 0.5));
        let c = detect_capacity(Some(3.0), Some(2.0));
        assert_eq!((c.cores, c.speed), (3, 2.0));
    }

    /// Kills the child however the test ends.
    struct Kill(Child);

    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn spawn(script: &str) -> Kill {
        Kill(Command::new("sh").args(["-c", script]).spawn().unwrap())
    }

    /// Samples `n` times 20 ms apart.
    fn samples(s: &mut Sampler, jobs: &[u32], n: usize) -> Vec<Sample> {
        (0..n)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(20));
                s.sample(jobs)
            })
            .collect()
    }

    #[test]
    fn counts_runnable_threads() {
        let busy = spawn("while :; do :; done");
        // exec: the pid is sleep itself, not a shell waiting for it.
        let idle = spawn("exec sleep 5");
        let gone = {
            let mut c = Command::new("true").spawn().unwrap();
            c.wait().unwrap();
            c.id()
        };
        let (b, i) = (busy.0.id(), idle.0.id());
        let mut s = Sampler::new();
        println!("scope: {}", s.scope());
        let all = samples(&mut s, &[b, i, gone], 10);
        for x in &all {
            assert_eq!(x.jobs.iter().map(|j| j.0).collect::<Vec<_>>(), [b, i, gone]);
            assert_eq!(x.jobs[1].1, Some(0), "{x:?}");
            assert_eq!(x.jobs[2].1, None);
            assert!(x.other >= 0.0 && x.other.is_finite());
        }
        let running = all.iter().filter(|x| x.jobs[0].1 == Some(1)).count();
        assert!(running >= 6, "busy child runnable in {running} of 10 samples: {all:?}");
        assert!(all.iter().all(|x| x.jobs[0].1 <= Some(1)));
    }

    #[test]
    fn counts_a_cgroup() {
        // SAFETY: geteuid has no memory effects.
        if unsafe { libc::geteuid() } != 0 {
            println!("SKIPPED (needs root)");
            return;
        }
        let busy = spawn("while :; do :; done");
        let pid = busy.0.id();
        let name = format!("test-{}-load", std::process::id());
        let limit = cgroup::CpuLimit::create_for(pid, &name, 0.2).unwrap();
        // Removes the cgroup however the test ends (after the child is gone).
        struct Remove(Option<cgroup::CpuLimit>, Kill);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = self.1 .0.kill();
                let _ = self.1 .0.wait();
                if let Some(l) = self.0.take() {
                    let _ = l.remove();
                }
            }
        }
        let version = cgroup::locate(Some(pid)).unwrap().version;
        let guard = Remove(Some(limit), busy);
        let dir = guard.0.as_ref().unwrap().path().to_path_buf();
        let mut s = Sampler::with_scope(Scope::Cgroup { dir: dir.clone(), version });
        assert_eq!(s.scope(), format!("cgroup {}", dir.display()));
        // Throttled to 0.2 CPU, the child still counts as runnable.
        let all = samples(&mut s, &[], 10);
        let seen = all.iter().filter(|x| x.other == 1.0).count();
        assert!(seen >= 6, "busy child counted in {seen} of 10 samples: {all:?}");
        assert!(all.iter().all(|x| x.other <= 1.0), "{all:?}");
        // As a job it is no longer "other".
        let all = samples(&mut s, &[pid], 10);
        assert!(all.iter().all(|x| x.other == 0.0), "{all:?}");
        let seen = all.iter().filter(|x| x.jobs[0].1 == Some(1)).count();
        assert!(seen >= 6, "busy child runnable in {seen} of 10 samples: {all:?}");
    }

    #[test]
    fn memory() {
        let free = free_memory().unwrap();
        assert!(free > 0);
        let me = resident_bytes(std::process::id()).unwrap();
        assert!(me > 1 << 20, "{me}");
        let mut c = Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        assert_eq!(resident_bytes(c.id()), None);
    }
}
