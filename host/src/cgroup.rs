//! A CPU budget for the daemon and everything it runs: a cgroup of its own
//! with a CPU quota (`mosvm host --cpu-limit`), so one machine can emulate
//! hosts smaller than itself. Handles the cgroup v1 cpu controller and
//! cgroup v2 (`cpu.max`); also tells `load` where a process's cpu cgroup is.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The kernel's default CFS period, assumed where a cgroup names none.
const PERIOD_US: u64 = 100_000;
/// The CFS period we set: 10 ms. A cgroup that used up its quota is
/// throttled until the period ends, so a long period stalls an emulated
/// host for tens of ms at a time (a move's downtime with it), which a real
/// host of that size never does.
const SHORT_PERIOD_US: u64 = 10_000;
/// The smallest quota the kernel takes per period.
const MIN_QUOTA_US: u64 = 1000;
/// Smallest quota: the kernel refuses less than 1 ms per period.
const MIN_CPUS: f64 = 0.01;
/// Largest quota we accept; `Capacity::cores` is a u16.
const MAX_CPUS: f64 = u16::MAX as f64;
/// How long `remove` keeps trying while exiting tasks leave the cgroup.
const REMOVE_PATIENCE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid cgroup name {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ -")]
    BadName(String),
    #[error("invalid CPU limit {0}: give a finite number of CPUs from 0.01 to 65535")]
    BadCpus(f64),
    #[error("no cpu cgroup controller is mounted (per /proc/self/mountinfo)")]
    NoController,
    #[error("{0}: names no cgroup of the mounted cpu controller")]
    NotInCgroup(PathBuf),
    #[error("{}: the cgroup v2 cpu controller is not available here (not in cgroup.controllers)", .0.display())]
    NoCpuV2(PathBuf),
    #[error("{action} {}: {source}{}", path.display(), hint(.source))]
    Io { action: String, path: PathBuf, source: io::Error },
    #[error("{}: still busy {:?} after moving its tasks out ({last})", path.display(), REMOVE_PATIENCE)]
    Busy { path: PathBuf, last: io::Error },
}

/// What usually explains an error from a cgroup file.
fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => " (root only)",
        Some(libc::EROFS) => " (cgroup filesystem mounted read-only, e.g. in a container)",
        Some(libc::ESRCH) => " (no such process)",
        _ => "",
    }
}

fn io_err(action: impl Into<String>, path: &Path, source: io::Error) -> CgroupError {
    CgroupError::Io { action: action.into(), path: path.to_path_buf(), source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

impl Version {
    /// The file listing a cgroup's threads.
    pub(crate) fn threads_file(self) -> &'static str {
        match self {
            Version::V1 => "tasks",
            Version::V2 => "cgroup.threads",
        }
    }
}

/// Where a process's cpu cgroup is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    pub version: Version,
    /// Mount point of the hierarchy: the top of what we can see.
    pub mount: PathBuf,
    /// The process's cgroup directory (under `mount`).
    pub dir: PathBuf,
}

/// One line of /proc/PID/mountinfo, the fields we need.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    root: String,
    point: String,
    fstype: String,
    super_opts: String,
}

/// Parses a mountinfo line (proc(5)): "ID PARENT MAJ:MIN ROOT POINT OPTS
/// [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS".
fn parse_mount(line: &str) -> Option<Mount> {
    let mut f = line.split_ascii_whitespace();
    let root = f.nth(3)?;
    let point = f.next()?;
    // Skip the mount options and the variable number of optional fields.
    f.find(|&t| t == "-")?;
    let fstype = f.next()?;
    let _source = f.next()?;
    let super_opts = f.next().unwrap_or("");
    Some(Mount { root: unescape(root), point: unescape(point), fstype: fstype.into(), super_opts: super_opts.into() })
}

/// Undoes mountinfo's octal escapes ("\040" for a space and so on).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct.map(|d| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0'))) {
            Some(v) if v <= 0xff => {
                out.push(v as u8);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The process's cgroup path (relative to its hierarchy's root) from
/// /proc/PID/cgroup lines "ID:CONTROLLERS:PATH": for v1 the line whose
/// controllers include "cpu", for v2 the "0::" line.
fn cgroup_path(proc_cgroup: &str, version: Version) -> Option<&str> {
    proc_cgroup.lines().find_map(|line| {
        let mut f = line.splitn(3, ':');
        let (id, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let hit = match version {
            Version::V1 => controllers.split(',').any(|c| c == "cpu"),
            Version::V2 => id == "0" && controllers.is_empty(),
        };
        hit.then_some(path)
    })
}

/// Finds the cpu cgroup directory from the texts of /proc/self/mountinfo
/// and /proc/PID/cgroup. A v1 hierarchy with the cpu controller wins: on
/// hybrid machines the cgroup2 mount then lacks the cpu controller.
fn locate_in(mountinfo: &str, proc_cgroup: &str, cgroup_file: &Path) -> Result<Located, CgroupError> {
    let mounts: Vec<Mount> = mountinfo.lines().filter_map(parse_mount).collect();
    let v1 = |m: &&Mount| m.fstype == "cgroup" && m.super_opts.split(',').any(|o| o == "cpu");
    let v2 = |m: &&Mount| m.fstype == "cgroup2";
    let (version, candidates): (Version, Vec<&Mount>) = if mounts.iter().any(|m| v1(&m)) {
        (Version::V1, mounts.iter().filter(v1).collect())
    } else {
        (Version::V2, mounts.iter().filter(v2).collect())
    };
    if candidates.is_empty() {
        return Err(CgroupError::NoController);
    }
    let path = cgroup_path(proc_cgroup, version).ok_or_else(|| CgroupError::NotInCgroup(cgroup_file.into()))?;
    // A mount may show only a subtree (its root); the process's path must
    // lie inside it, and never climb out with "..".
    candidates
        .iter()
        .find_map(|m| {
            let rel = Path::new(path).strip_prefix(&m.root).ok()?;
            if rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                return None;
            }
            Some(Located { version, mount: PathBuf::from(&m.point), dir: Path::new(&m.point).join(rel) })
        })
        .ok_or_else(|| CgroupError::NotInCgroup(cgroup_file.into()))
}

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|e| io_err("reading", path, e))
}

/// Where the cpu cgroup of process `pid` (None: this process) is.
pub(crate) fn locate(pid: Option<u32>) -> Result<Located, CgroupError> {
    let cgroup_file = match pid {
        Some(p) => PathBuf::from(format!("/proc/{p}/cgroup")),
        None => PathBuf::from("/proc/self/cgroup"),
    };
    // Our own mount table: the paths are opened from our mount namespace.
    let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
    locate_in(&mountinfo, &read(&cgroup_file)?, &cgroup_file)
}

/// A v1 quota from cpu.cfs_quota_us and cpu.cfs_period_us, in CPUs;
/// None when unlimited (-1) or unreadable.
pub(crate) fn parse_cfs_quota(quota: &str, period: &str) -> Option<f64> {
    let q: i64 = quota.trim().parse().ok()?;
    let p: i64 = period.trim().parse().ok()?;
    (q > 0 && p > 0).then(|| q as f64 / p as f64)
}

/// A v2 quota from cpu.max ("QUOTA PERIOD" or "max PERIOD"), in CPUs;
/// None when unlimited or unreadable.
pub(crate) fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut f = text.split_ascii_whitespace();
    let q: u64 = f.next()?.parse().ok()?; // "max" fails here: no limit
    let p: u64 = f.next().map_or(Some(PERIOD_US), |p| p.parse().ok())?;
    (q > 0 && p > 0).then(|| q as f64 / p as f64)
}

/// The CPU quota set on cgroup directory `dir` itself (not its
/// ancestors), None if none or unreadable.
pub(crate) fn quota_of(dir: &Path, version: Version) -> Option<f64> {
    match version {
        Version::V1 => parse_cfs_quota(
            &fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok()?,
            &fs::read_to_string(dir.join("cpu.cfs_period_us")).ok()?,
        ),
        Version::V2 => parse_cpu_max(&fs::read_to_string(dir.join("cpu.max")).ok()?),
    }
}

fn valid_name(name: &str) -> bool {
    (1..=80).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Writes `value` to a cgroup control file in one write(2), as the
/// kernel wants (one pid per write for cgroup.procs and tasks).
fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| io_err(format!("writing {value:?} to"), path, e))
}

/// Pids (or tids) listed in a cgroup.procs / tasks / cgroup.threads file.
fn read_ids(path: &Path) -> Result<Vec<u32>, CgroupError> {
    Ok(read(path)?.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// A cgroup with a CPU quota that this daemon runs in.
#[derive(Debug)]
pub struct CpuLimit {
    dir: PathBuf,
    parent: PathBuf,
    version: Version,
    cpus: f64,
}

impl CpuLimit {
    /// Creates (or reuses, after a crash) the cgroup `mosvm-<name>` as a
    /// child of the cpu cgroup this process is in now, gives it a quota of
    /// `cpus` CPUs and moves this whole process (all threads) into it.
    /// What this process starts later inherits the cgroup.
    pub fn create(name: &str, cpus: f64) -> Result<CpuLimit, CgroupError> {
        Self::create_for(std::process::id(), name, cpus)
    }

    /// `create` for process `pid`: the cgroup is made under `pid`'s and
    /// `pid` moved into it. Lets tests limit a child, not the test harness.
    pub(crate) fn create_for(pid: u32, name: &str, cpus: f64) -> Result<CpuLimit, CgroupError> {
        if !valid_name(name) {
            return Err(CgroupError::BadName(name.into()));
        }
        if !(MIN_CPUS..=MAX_CPUS).contains(&cpus) {
            return Err(CgroupError::BadCpus(cpus));
        }
        let at = locate(Some(pid))?;
        let leaf = format!("mosvm-{name}");
        // Already inside it (a restarted daemon inherits it): reuse, not nest.
        let (parent, dir) = match at.dir.parent() {
            Some(p) if at.dir != at.mount && at.dir.file_name() == Some(leaf.as_ref()) => (p.to_path_buf(), at.dir),
            _ => (at.dir.clone(), at.dir.join(&leaf)),
        };
        if at.version == Version::V2 {
            let controllers = read(&parent.join("cgroup.controllers"))?;
            if !controllers.split_ascii_whitespace().any(|c| c == "cpu") {
                return Err(CgroupError::NoCpuV2(parent));
            }
        }
        let created = match fs::create_dir(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(io_err("creating", &dir, e)),
        };
        let limit = CpuLimit { dir, parent, version: at.version, cpus };
        match limit.configure(pid) {
            Ok(()) => Ok(limit),
            Err(e) => {
                // Leave things as they were: pid back home, no stray dir.
                let _ = write_file(&limit.parent.join("cgroup.procs"), &pid.to_string());
                if created {
                    let _ = fs::remove_dir(&limit.dir);
                }
                Err(e)
            }
        }
    }

    /// The period and quota for `cpus`: the short period, longer only
    /// where the quota would fall under the kernel's minimum.
    fn period_and_quota(cpus: f64) -> (u64, u64) {
        let period = ((MIN_QUOTA_US as f64 / cpus).ceil() as u64).clamp(SHORT_PERIOD_US, 1_000_000);
        (period, ((cpus * period as f64).round() as u64).max(MIN_QUOTA_US))
    }

    fn configure(&self, pid: u32) -> Result<(), CgroupError> {
        let (period, quota) = CpuLimit::period_and_quota(self.cpus);
        match self.version {
            Version::V1 => {
                // Quota off first: a new period must fit an old quota.
                write_file(&self.dir.join("cpu.cfs_quota_us"), "-1")?;
                write_file(&self.dir.join("cpu.cfs_period_us"), &period.to_string())?;
                write_file(&self.dir.join("cpu.cfs_quota_us"), &quota.to_string()).map_err(|e| match e {
                    // v1 refuses a child quota above its parent's.
                    CgroupError::Io { action, path, source } if source.raw_os_error() == Some(libc::EINVAL) => {
                        let source = io::Error::other(format!("{source} (above the parent cgroup's quota?)"));
                        CgroupError::Io { action, path, source }
                    }
                    e => e,
                })?;
                self.adopt(pid)
            }
            Version::V2 => {
                // v2 lets a cgroup hand controllers to its children only
                // once it holds no processes itself, so move first, then
                // enable cpu for the children, then set the quota.
                self.adopt(pid)?;
                let control = self.parent.join("cgroup.subtree_control");
                if !read(&control)?.split_ascii_whitespace().any(|c| c == "cpu") {
                    write_file(&control, "+cpu").map_err(|e| match e {
                        CgroupError::Io { action, path, source } if source.raw_os_error() == Some(libc::EBUSY) => {
                            let source = io::Error::other(format!(
                                "{source} (other processes are still in {}; cgroup v2 gives controllers \
                                 to children only of a cgroup holding no processes)",
                                self.parent.display()
                            ));
                            CgroupError::Io { action, path, source }
                        }
                        e => e,
                    })?;
                }
                write_file(&self.dir.join("cpu.max"), &format!("{quota} {period}"))
            }
        }
    }

    /// Moves process `pid` with all its threads into the cgroup.
    pub fn adopt(&self, pid: u32) -> Result<(), CgroupError> {
        // cgroup.procs moves the whole thread group at once (v1 and v2),
        // with no race against threads being created meanwhile.
        write_file(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The quota, in CPUs.
    pub fn cpus(&self) -> f64 {
        self.cpus
    }

    /// Moves every task still in the cgroup (this process included) to the
    /// parent cgroup and removes the directory.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + REMOVE_PATIENCE;
        loop {
            let busy = match drain_and_rmdir(&self.dir, &self.parent, self.version) {
                Ok(()) => return Ok(()),
                // Exiting tasks (and ones forked mid-move) keep it busy a while.
                Err(CgroupError::Io { source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => source,
                Err(e) => return Err(e),
            };
            if Instant::now() >= deadline {
                return Err(CgroupError::Busy { path: self.dir.clone(), last: busy });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Moves the tasks of `dir` and its descendants into `target` and removes
/// them, deepest first. A gone directory counts as removed.
fn drain_and_rmdir(dir: &Path, target: &Path, version: Version) -> Result<(), CgroupError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("listing", dir, e)),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            drain_and_rmdir(&entry.path(), target, version)?;
        }
    }
    // v1 by thread (a process's threads may sit in different cgroups
    // there), v2 by process (its threads move together).
    let (list, dest) = match version {
        Version::V1 => ("tasks", target.join("tasks")),
        Version::V2 => ("cgroup.procs", target.join("cgroup.procs")),
    };
    match read_ids(&dir.join(list)) {
        Ok(ids) => {
            for id in ids {
                match write_file(&dest, &id.to_string()) {
                    // Gone meanwhile: nothing to move.
                    Err(CgroupError::Io { source, .. }) if source.raw_os_error() == Some(libc::ESRCH) => {}
                    r => r?,
                }
            }
        }
        Err(CgroupError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", dir, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    const MOUNTINFO_V1: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const CGROUP_V1: &str = "\
4:memory:/process_api/aa3d
3:cpuset:/
2:cpuacct:/x
1:cpu:/mosvm-h1
0::/
";
    // A container: the mount shows a subtree; shared: optional fields.
    const MOUNTINFO_V2: &str = "\
1190 1180 0:27 /docker/abc /sys/fs/cgroup rw,nosuid shared:9 master:1 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn parses_mountinfo_lines() {
        let m = parse_mount("32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu,cpuacct").unwrap();
        assert_eq!(
            m,
            Mount {
                root: "/".into(),
                point: "/sys/fs/cgroup/cpu".into(),
                fstype: "cgroup".into(),
                super_opts: "rw,cpu,cpuacct".into()
            }
        );
        let m = parse_mount(MOUNTINFO_V2.trim()).unwrap();
        assert_eq!((m.root.as_str(), m.fstype.as_str()), ("/docker/abc", "cgroup2"));
        assert_eq!(parse_mount("36 35 98:0 /a\\040b /mnt\\134x rw - ext3 /dev/r rw").unwrap().point, "/mnt\\x");
        assert_eq!(parse_mount("36 35 98:0 /a\\040b /m rw - ext3 /dev/r rw").unwrap().root, "/a b");
        assert_eq!(unescape("\\04"), "\\04");
        assert_eq!(parse_mount("36 35 98:0 / /m rw ext3"), None);
        assert_eq!(parse_mount(""), None);
    }

    #[test]
    fn finds_the_cgroup_dir() {
        let f = Path::new("/proc/self/cgroup");
        // cpu, not cpuacct or cpuset; v1 wins over the hybrid's cgroup2.
        let at = locate_in(MOUNTINFO_V1, CGROUP_V1, f).unwrap();
        assert_eq!(at.version, Version::V1);
        assert_eq!(at.mount, Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(at.dir, Path::new("/sys/fs/cgroup/cpu/mosvm-h1"));
        // Combined controllers on one line.
        let at =
            locate_in("1 0 0:1 / /c rw - cgroup cgroup rw,cpuacct,cpu", "7:cpuacct,cpu:/user.slice\n0::/x", f).unwrap();
        assert_eq!(at.dir, Path::new("/c/user.slice"));
        // v2 with the mount showing only the container's subtree.
        let at = locate_in(MOUNTINFO_V2, "0::/docker/abc/daemon\n", f).unwrap();
        assert_eq!((at.version, at.dir), (Version::V2, PathBuf::from("/sys/fs/cgroup/daemon")));
        let at = locate_in(MOUNTINFO_V2, "0::/docker/abc\n", f).unwrap();
        assert_eq!(at.dir, Path::new("/sys/fs/cgroup"));
        // Outside the visible subtree, or climbing out of it.
        assert!(matches!(locate_in(MOUNTINFO_V2, "0::/docker/other\n", f), Err(CgroupError::NotInCgroup(_))));
        assert!(matches!(locate_in(MOUNTINFO_V2, "0::/docker/abc/../x\n", f), Err(CgroupError::NotInCgroup(_))));
        // v1 cpu mounted but the process has no cpu line.
        assert!(matches!(locate_in(MOUNTINFO_V1, "2:cpuacct:/\n0::/\n", f), Err(CgroupError::NotInCgroup(_))));
        assert!(matches!(locate_in("", CGROUP_V1, f), Err(CgroupError::NoController)));
        let e = locate_in("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw", "", f).unwrap_err();
        assert_eq!(e.to_string(), "no cpu cgroup controller is mounted (per /proc/self/mountinfo)");
    }

    #[test]
    fn parses_quotas() {
        assert_eq!(CpuLimit::period_and_quota(0.5), (10_000, 5000));
        assert_eq!(CpuLimit::period_and_quota(2.0), (10_000, 20_000));
        assert_eq!(CpuLimit::period_and_quota(0.05), (20_000, 1000));
        assert_eq!(CpuLimit::period_and_quota(0.01), (100_000, 1000));
        assert_eq!(parse_cfs_quota("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs_quota("50000\n", "100000\n"), Some(0.5));
        assert_eq!(parse_cfs_quota("150000", "50000"), Some(3.0));
        assert_eq!(parse_cfs_quota("50000", "0"), None);
        assert_eq!(parse_cfs_quota("", "100000"), None);
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("30000 100000\n"), Some(0.3));
        assert_eq!(parse_cpu_max("200000"), Some(2.0));
        assert_eq!(parse_cpu_max("10 zero"), None);
        assert_eq!(parse_cpu_max(""), None);
    }

    #[test]
    fn rejects_bad_names_and_quotas() {
        for bad in ["", "a/b", "a b", "..\u{e9}", &"x".repeat(81)] {
            assert!(matches!(CpuLimit::create_for(u32::MAX, bad, 1.0), Err(CgroupError::BadName(_))), "{bad:?}");
        }
        assert!(valid_name("h1.test_A-9") && valid_name(&"x".repeat(80)));
        for bad in [0.0, 0.009, -1.0, f64::NAN, f64::INFINITY, 1e6] {
            assert!(matches!(CpuLimit::create_for(u32::MAX, "ok", bad), Err(CgroupError::BadCpus(_))), "{bad}");
        }
        let e = io_err("writing \"1\" to", Path::new("cpu.cfs_quota_us"), io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(e.to_string(), "writing \"1\" to cpu.cfs_quota_us: Permission denied (os error 13) (root only)");
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no memory effects.
        unsafe { libc::geteuid() == 0 }
    }

    /// The cpu cgroup path of `pid` as /proc/PID/cgroup names it.
    fn cgroup_line(pid: &str, version: Version) -> String {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        cgroup_path(&text, version).unwrap().to_string()
    }

    /// Cleans up whatever a test leaves, even when an assertion fails.
    struct Guard {
        child: Option<Child>,
        dir: PathBuf,
        parent: PathBuf,
        version: Version,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(c) = &mut self.child {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = drain_and_rmdir(&self.dir, &self.parent, self.version);
        }
    }

    #[test]
    fn limits_a_busy_child() {
        if !is_root() {
            println!("SKIPPED (needs root)");
            return;
        }
        let child = Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap();
        let pid = child.id();
        let name = format!("test-{}-busy", std::process::id());
        let at = locate(Some(pid)).unwrap();
        let guard = Guard {
            child: Some(child),
            dir: at.dir.join(format!("mosvm-{name}")),
            parent: at.dir.clone(),
            version: at.version,
        };
        let limit = CpuLimit::create_for(pid, &name, 0.3).unwrap();
        assert_eq!(limit.path(), guard.dir);
        assert_eq!(limit.cpus(), 0.3);
        assert_eq!(quota_of(limit.path(), at.version), Some(0.3));
        let inside = cgroup_line(&pid.to_string(), at.version);
        assert!(inside.ends_with(&format!("/mosvm-{name}")), "{inside}");
        // Creating again from inside reuses it rather than nesting.
        let again = CpuLimit::create_for(pid, &name, 0.3).unwrap();
        assert_eq!(again.path(), limit.path());
        // So does creating from the parent while it exists (after a crash).
        let idle = Command::new("sleep").arg("5").spawn().unwrap();
        let idle =
            Guard { child: Some(idle), dir: guard.dir.clone(), parent: guard.parent.clone(), version: at.version };
        let idle_pid = idle.child.as_ref().unwrap().id();
        let reused = CpuLimit::create_for(idle_pid, &name, 0.3).unwrap();
        assert_eq!(reused.path(), limit.path());
        assert!(cgroup_line(&idle_pid.to_string(), at.version).ends_with(&format!("/mosvm-{name}")));

        let t0 = Instant::now();
        let c0 = crate::procfs::cpu_ms(pid).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let used = (crate::procfs::cpu_ms(pid).unwrap() - c0) as f64 / t0.elapsed().as_millis() as f64;
        println!("busy child under a 0.3 CPU quota used {used:.2} CPU");
        assert!((0.15..=0.45).contains(&used), "used {used:.2} CPU under a 0.3 CPU quota");

        limit.remove().unwrap();
        assert!(!guard.dir.exists());
        assert_eq!(cgroup_line(&idle_pid.to_string(), at.version), cgroup_line("self", at.version));
        let outside = cgroup_line(&pid.to_string(), at.version);
        assert_eq!(Path::new(&outside), Path::new(&cgroup_line("self", at.version)));
        // Removing what is already gone is fine.
        again.remove().unwrap();
    }

    /// Env var telling the re-run test binary to be the process that
    /// limits itself.
    const SELF_TEST: &str = "MOSVM_CGROUP_SELF_TEST";

    /// Run only by `limits_this_whole_process`, in a process of its own:
    /// `create` moves the calling process, which must not be the harness.
    #[test]
    #[ignore = "run by limits_this_whole_process in a child process"]
    fn self_limit_child() {
        let Ok(name) = std::env::var(SELF_TEST) else { return };
        let at = locate(None).unwrap();
        let _guard = Guard {
            child: None,
            dir: at.dir.join(format!("mosvm-{name}")),
            parent: at.dir.clone(),
            version: at.version,
        };
        let home = cgroup_line("self", at.version);
        // Threads that exist before the move must move too.
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(stop_rx));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || drop(rx.lock().map(|r| r.recv())))
            })
            .collect();
        let limit = CpuLimit::create(&name, 0.5).unwrap();
        let tids: Vec<String> =
            fs::read_dir("/proc/self/task").unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(tids.len() >= 4, "{tids:?}");
        for tid in &tids {
            let line = cgroup_line(&format!("self/task/{tid}"), at.version);
            assert!(line.ends_with(&format!("/mosvm-{name}")), "thread {tid}: {line}");
        }
        // A process started now inherits the cgroup.
        let out = Command::new("cat").arg("/proc/self/cgroup").output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(cgroup_path(&text, at.version).unwrap().ends_with(&format!("/mosvm-{name}")), "{text}");
        limit.remove().unwrap();
        for tid in &tids {
            assert_eq!(cgroup_line(&format!("self/task/{tid}"), at.version), home, "thread {tid}");
        }
        drop(stop_tx);
        threads.into_iter().for_each(|t| t.join().unwrap());
        println!("SELF LIMIT OK");
    }

    #[test]
    fn limits_this_whole_process() {
        if !is_root() {
            println!("SKIPPED (needs root)");
            return;
        }
        let name = format!("test-{}-self", std::process::id());
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "cgroup::tests::self_limit_child", "--nocapture", "--test-threads=1"])
            .env(SELF_TEST, &name)
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && stdout.contains("SELF LIMIT OK"), "child test failed:\n{stdout}\n{stderr}");
        let at = locate(None).unwrap();
        assert!(!at.dir.join(format!("mosvm-{name}")).exists());
    }
}
