//! The job's view of /proc/self.
//!
//! A job reading /proc/self would otherwise see the VMM process. Files that
//! describe the process (maps, status, stat, cmdline, environ, comm) are
//! generated from the job's own tables and served as in-memory files;
//! /proc/self/fd/N names are translated to the host descriptor behind job
//! descriptor N (see `Site`).

use std::fmt::Write as _;

use crate::job::Job;
use crate::mm::VmaKind;
use crate::sys::process::RLIM_NLIMITS;

/// If `path` names something under the job's own /proc directory
/// (/proc/self, /proc/thread-self or /proc/<pid>), the rest of the path.
pub fn self_path(path: &[u8], pid: u32) -> Option<&[u8]> {
    let rest = path.strip_prefix(b"/proc/")?;
    let (first, rest) = match rest.iter().position(|&b| b == b'/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    let ours = first == b"self" || first == b"thread-self" || first == pid.to_string().as_bytes();
    if !ours {
        return None;
    }
    // /proc/<pid>/task/<pid>/x is the same as /proc/<pid>/x for one thread.
    let task = format!("task/{pid}/");
    Some(rest.strip_prefix(task.as_bytes()).unwrap_or(rest))
}

/// The longest system-file name worth matching (longer ones are never ours).
const SYSTEM_PATH_MAX: usize = 256;

/// The job's machine: memory, time and load, for `sysinfo` and /proc.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    /// RAM the job may use, and the part of it no mapping holds (bytes).
    pub total: u64,
    pub free: u64,
    /// Since the machine started (the job's CLOCK_BOOTTIME), and the part
    /// of it the one CPU was idle (ns).
    pub uptime: i64,
    pub idle: i64,
    /// 1, 5 and 15 minute load averages, fixed point with 16 fraction bits.
    pub loads: [u64; 3],
    pub procs: u16,
}

/// The host's load averages: the job's vCPU shares the host's CPUs, and
/// this is the pressure it runs under.
fn host_loads() -> [u64; 3] {
    // SAFETY: a zeroed sysinfo is a valid out buffer.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return [0; 3];
    }
    [info.loads[0], info.loads[1], info.loads[2]]
}

/// `path` made absolute (against `cwd`) and lexically normal (no `.`,
/// `..` or repeated slashes), in `buf`; None if it does not fit.
pub fn normalise<'a>(cwd: &[u8], path: &[u8], buf: &'a mut [u8; SYSTEM_PATH_MAX]) -> Option<&'a [u8]> {
    let mut len = 0;
    let parts = if path.first() == Some(&b'/') { &b""[..] } else { cwd };
    for part in parts.split(|&b| b == b'/').chain(path.split(|&b| b == b'/')) {
        match part {
            b"" | b"." => {}
            b".." => {
                // Back to the previous slash (the root's parent is the root).
                while len > 0 && buf[len - 1] != b'/' {
                    len -= 1;
                }
                len = len.saturating_sub(1);
            }
            name => {
                if len + 1 + name.len() > buf.len() {
                    return None;
                }
                buf[len] = b'/';
                buf[len + 1..len + 1 + name.len()].copy_from_slice(name);
                len += 1 + name.len();
            }
        }
    }
    if len == 0 {
        buf[0] = b'/';
        len = 1;
    }
    Some(&buf[..len])
}

/// The host's /proc/cpuinfo, taken when the process started (a body away
/// from home has no /proc later).
static HOST_CPUINFO: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Reads the host's CPU description now, while /proc is there. Called
/// before main (see `sys::process`), and again lazily if that did not run.
pub(crate) fn take_host_cpuinfo() {
    HOST_CPUINFO.get_or_init(|| std::fs::read_to_string("/proc/cpuinfo").ok());
}

/// /proc/cpuinfo for the job's one CPU.
fn cpuinfo() -> String {
    take_host_cpuinfo();
    one_cpu_info(HOST_CPUINFO.get().and_then(|c| c.as_deref()).unwrap_or(""))
}

/// The first processor of a host's /proc/cpuinfo, with the topology of a
/// machine that has only it.
fn one_cpu_info(host: &str) -> String {
    let first = host.split("\n\n").next().unwrap_or("");
    let mut out = String::new();
    for line in first.lines() {
        let (key, value) = match line.find(':') {
            Some(i) => (&line[..i], Some(&line[i..])),
            None => (line, None),
        };
        let ours = match key.trim_end() {
            "processor" | "physical id" | "core id" | "apicid" | "initial apicid" => Some("0"),
            "siblings" | "cpu cores" => Some("1"),
            _ => None,
        };
        match (ours, value) {
            (Some(v), Some(_)) => {
                let _ = writeln!(out, "{key}: {v}");
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if out.is_empty() {
        out.push_str("processor\t: 0\n");
    }
    out.push('\n');
    out
}

fn prot_string(prot: u32) -> String {
    let f = |bit: i32, c: char| if prot & bit as u32 != 0 { c } else { '-' };
    format!("{}{}{}p", f(libc::PROT_READ, 'r'), f(libc::PROT_WRITE, 'w'), f(libc::PROT_EXEC, 'x'))
}

impl Job {
    /// Contents of a generated /proc/self file, or None if the name is not one.
    pub fn proc_self_file(&self, name: &[u8]) -> Option<Vec<u8>> {
        match name {
            b"maps" => Some(self.proc_maps().into_bytes()),
            b"status" => Some(self.proc_status().into_bytes()),
            b"stat" => Some(self.proc_stat().into_bytes()),
            b"limits" => Some(self.proc_limits().into_bytes()),
            b"cmdline" => Some(self.cmdline.clone()),
            b"environ" => Some(self.environ.clone()),
            b"comm" => {
                let n = self.comm.iter().position(|&b| b == 0).unwrap_or(16);
                let mut v = self.comm[..n].to_vec();
                v.push(b'\n');
                Some(v)
            }
            _ => None,
        }
    }

    /// Contents of a generated system-wide file (/proc/meminfo,
    /// /proc/cpuinfo, /sys/devices/system/cpu/online...) describing the
    /// job's machine rather than the host, or None to pass `path` to the
    /// site. `path` is as the job gave it.
    pub fn system_file(&self, path: &[u8]) -> Option<Vec<u8>> {
        let mut buf = [0u8; SYSTEM_PATH_MAX];
        let path = normalise(self.site.getcwd(), path, &mut buf)?;
        let file = match path {
            b"/proc/meminfo" => self.meminfo(),
            b"/proc/cpuinfo" => cpuinfo(),
            b"/proc/stat" => self.proc_stat_system(),
            b"/proc/loadavg" => self.loadavg(),
            b"/proc/uptime" => self.uptime(),
            // The one vCPU.
            b"/sys/devices/system/cpu/online"
            | b"/sys/devices/system/cpu/possible"
            | b"/sys/devices/system/cpu/present" => "0\n".to_string(),
            _ => return None,
        };
        Some(file.into_bytes())
    }

    /// The job's machine as `sysinfo` and /proc describe it; one source
    /// for both so that they agree.
    pub fn machine(&self) -> Machine {
        // The low area holds the machine's own tables (a kernel's share).
        let total = self.ram.size().saturating_sub(crate::layout::USER_BASE);
        let mapped = self.mm.vmas().map(|(s, v)| v.end - s).sum::<u64>();
        let uptime = self.clock.monotonic().max(0);
        Machine {
            total,
            free: total.saturating_sub(mapped),
            uptime,
            idle: (uptime - self.clock.cputime()).max(0),
            loads: host_loads(),
            // This job's threads and the processes it forked (each its own VM).
            procs: (1 + self.threads.parked.len() + self.children.pids().count()) as u16,
        }
    }

    fn meminfo(&self) -> String {
        let m = self.machine();
        let mut out = String::new();
        let kib = |b: u64| b >> 10;
        for (key, value) in [
            ("MemTotal", kib(m.total)),
            ("MemFree", kib(m.free)),
            ("MemAvailable", kib(m.free)),
            ("Buffers", 0),
            ("Cached", 0),
            ("SwapCached", 0),
            ("Active", kib(m.total - m.free)),
            ("Inactive", 0),
            ("Active(anon)", kib(m.total - m.free)),
            ("Inactive(anon)", 0),
            ("Active(file)", 0),
            ("Inactive(file)", 0),
            ("Unevictable", 0),
            ("Mlocked", 0),
            ("SwapTotal", 0),
            ("SwapFree", 0),
            ("Dirty", 0),
            ("Writeback", 0),
            ("AnonPages", kib(m.total - m.free)),
            ("Mapped", 0),
            ("Shmem", 0),
            ("KReclaimable", 0),
            ("Slab", 0),
            ("SReclaimable", 0),
            ("SUnreclaim", 0),
            ("KernelStack", 0),
            ("PageTables", 0),
            ("NFS_Unstable", 0),
            ("Bounce", 0),
            ("WritebackTmp", 0),
            ("CommitLimit", kib(m.total)),
            ("Committed_AS", kib(m.total - m.free)),
            ("VmallocTotal", 0),
            ("VmallocUsed", 0),
            ("VmallocChunk", 0),
            ("HugePages_Total", 0),
            ("HugePages_Free", 0),
            ("HugePages_Rsvd", 0),
            ("HugePages_Surp", 0),
        ] {
            if key.starts_with("HugePages_") {
                let _ = writeln!(out, "{:<16}{value:>8}", format!("{key}:"));
            } else {
                let _ = writeln!(out, "{:<16}{value:>8} kB", format!("{key}:"));
            }
        }
        let _ = writeln!(out, "Hugepagesize:       2048 kB");
        out
    }

    /// /proc/stat: one CPU, busy for the job's CPU time, idle otherwise.
    fn proc_stat_system(&self) -> String {
        let m = self.machine();
        let tick = |ns: i64| ns / 10_000_000;
        let (user, idle) = (tick(self.clock.cputime()), tick(m.idle));
        let boot = (self.clock.realtime() - m.uptime) / 1_000_000_000;
        format!(
            "cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {user} 0 0 {idle} 0 0 0 0 0 0\nintr 0\nctxt 0\nbtime {boot}\n\
             processes {}\nprocs_running 1\nprocs_blocked 0\nsoftirq 0 0 0 0 0 0 0 0 0 0 0\n",
            m.procs
        )
    }

    fn loadavg(&self) -> String {
        let m = self.machine();
        let l = |x: u64| x as f64 / 65536.0;
        // The most recent pid: the newest thread, or the job itself.
        let last = self.threads.parked.iter().map(|p| p.state.tid).chain([self.tid, self.ids.pid]).max().unwrap_or(0);
        format!("{:.2} {:.2} {:.2} 1/{} {last}\n", l(m.loads[0]), l(m.loads[1]), l(m.loads[2]), m.procs)
    }

    fn uptime(&self) -> String {
        let m = self.machine();
        let cs = |ns: i64| format!("{}.{:02}", ns / 1_000_000_000, (ns % 1_000_000_000) / 10_000_000);
        format!("{} {}\n", cs(m.uptime), cs(m.idle))
    }

    fn proc_maps(&self) -> String {
        let exe = self.exe.to_string_lossy();
        let mut out = String::new();
        // The vDSO's pages, below the job's memory (tools look for [vdso] here).
        use crate::layout::{VDSO_ADDR, VDSO_END, VVAR_ADDR};
        let _ = writeln!(out, "{VVAR_ADDR:08x}-{VDSO_ADDR:08x} r--p 00000000 00:00 0 [vvar]");
        let _ = writeln!(out, "{VDSO_ADDR:08x}-{VDSO_END:08x} r-xp 00000000 00:00 0 [vdso]");
        for (start, v) in self.mm.vmas() {
            let name = match v.kind {
                VmaKind::Image => &*exe,
                VmaKind::Heap => "[heap]",
                VmaKind::Stack => "[stack]",
                VmaKind::Anon | VmaKind::File => "",
            };
            let _ = writeln!(out, "{start:08x}-{:08x} {} 00000000 00:00 0 {name}", v.end, prot_string(v.prot));
        }
        out
    }

    fn mapped_kib(&self) -> u64 {
        self.mm.vmas().map(|(s, v)| v.end - s).sum::<u64>() >> 10
    }

    fn proc_status(&self) -> String {
        let name = String::from_utf8_lossy(&self.comm[..self.comm.iter().position(|&b| b == 0).unwrap_or(16)]);
        let ids = &self.ids;
        let s = &self.signals;
        let mut ignored = 0u64;
        let mut caught = 0u64;
        for sig in 1..=crate::signal::NSIG as u32 {
            match s.actions[sig as usize].handler {
                crate::signal::SIG_DFL => {}
                crate::signal::SIG_IGN => ignored |= crate::signal::bit(sig),
                _ => caught |= crate::signal::bit(sig),
            }
        }
        format!(
            "Name:\t{name}\nUmask:\t{:04o}\nState:\tR (running)\nTgid:\t{pid}\nNgid:\t0\nPid:\t{pid}\nPPid:\t{}\n\
             TracerPid:\t0\nUid:\t{}\t{}\t{}\t{}\nGid:\t{}\t{}\t{}\t{}\nFDSize:\t{}\nGroups:\t{}\n\
             VmPeak:\t{} kB\nVmSize:\t{} kB\nVmRSS:\t{} kB\nThreads:\t{}\n\
             SigQ:\t0/0\nSigPnd:\t{:016x}\nShdPnd:\t{:016x}\nSigBlk:\t{:016x}\nSigIgn:\t{ignored:016x}\nSigCgt:\t{caught:016x}\n\
             Cpus_allowed:\t1\nCpus_allowed_list:\t0\nMems_allowed:\t1\nMems_allowed_list:\t0\n",
            self.site.current_umask(),
            ids.ppid,
            ids.uid,
            ids.euid,
            ids.euid,
            ids.euid,
            ids.gid,
            ids.egid,
            ids.egid,
            ids.egid,
            crate::site::MAX_FDS,
            ids.groups.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(" "),
            self.mapped_kib(),
            self.mapped_kib(),
            self.touched_bytes() >> 10,
            1 + self.threads.parked.len(),
            s.pending,
            s.shared,
            s.blocked,
            pid = ids.pid,
        )
    }

    /// /proc/self/limits, in Linux's layout, from the job's own limits.
    fn proc_limits(&self) -> String {
        const ROWS: [(&str, &str); RLIM_NLIMITS] = [
            ("Max cpu time", "seconds"),
            ("Max file size", "bytes"),
            ("Max data size", "bytes"),
            ("Max stack size", "bytes"),
            ("Max core file size", "bytes"),
            ("Max resident set", "bytes"),
            ("Max processes", "processes"),
            ("Max open files", "files"),
            ("Max locked memory", "bytes"),
            ("Max address space", "bytes"),
            ("Max file locks", "locks"),
            ("Max pending signals", "signals"),
            ("Max msgqueue size", "bytes"),
            ("Max nice priority", ""),
            ("Max realtime priority", ""),
            ("Max realtime timeout", "us"),
        ];
        let value = |v: u64| if v == u64::MAX { "unlimited".to_string() } else { v.to_string() };
        let mut out = format!("{:<25} {:<20} {:<20} {:<10}\n", "Limit", "Soft Limit", "Hard Limit", "Units");
        for ((name, unit), (soft, hard)) in ROWS.iter().zip(self.rlimits.iter()) {
            // Linux pads the unit only where there is one.
            let unit = if unit.is_empty() { String::new() } else { format!("{unit:<10}") };
            let _ = writeln!(out, "{name:<25} {:<20} {:<20} {unit}", value(*soft), value(*hard));
        }
        out
    }

    fn proc_stat(&self) -> String {
        let name = String::from_utf8_lossy(&self.comm[..self.comm.iter().position(|&b| b == 0).unwrap_or(16)]);
        let ids = &self.ids;
        let ticks = self.clock.cputime() / 10_000_000;
        let rss_pages = self.touched_bytes() / 4096;
        let vsize = self.mapped_kib() << 10;
        let layout = self.mm.layout();
        let threads = 1 + self.threads.parked.len();
        format!(
            "{} ({name}) R {} {} {} 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 {threads} 0 0 {vsize} {rss_pages} 18446744073709551615 \
             {} {} {} 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
            ids.pid,
            ids.ppid,
            ids.pgid,
            ids.sid,
            crate::layout::USER_BASE,
            self.image_end,
            layout.mem_end,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised() {
        let mut buf = [0u8; SYSTEM_PATH_MAX];
        let mut n = |cwd: &[u8], p: &[u8]| normalise(cwd, p, &mut buf).map(|s| s.to_vec());
        assert_eq!(n(b"/", b"/proc/meminfo").unwrap(), b"/proc/meminfo");
        assert_eq!(n(b"/proc", b"meminfo").unwrap(), b"/proc/meminfo");
        assert_eq!(n(b"/tmp/x", b"../../proc/./meminfo").unwrap(), b"/proc/meminfo");
        assert_eq!(n(b"/", b"//proc///meminfo/").unwrap(), b"/proc/meminfo");
        assert_eq!(n(b"/", b"/../../proc/self/../meminfo").unwrap(), b"/proc/meminfo");
        assert_eq!(n(b"/home", b"proc/meminfo").unwrap(), b"/home/proc/meminfo");
        assert_eq!(n(b"/", b"..").unwrap(), b"/");
        assert_eq!(n(b"/", &[b'a'; 300]), None);
    }

    #[test]
    fn cpuinfo_keeps_the_first_processor_as_one_cpu() {
        let host = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nphysical id\t: 0\n\
                    siblings\t: 2\ncore id\t\t: 0\ncpu cores\t: 2\napicid\t\t: 0\nflags\t\t: fpu sse2\n\
                    power management:\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\napicid\t\t: 1\n\n";
        let one = one_cpu_info(host);
        assert_eq!(one.matches("processor").count(), 1, "{one}");
        for line in [
            "processor\t: 0\n",
            "model name\t: AMD EPYC\n",
            "siblings\t: 1\n",
            "cpu cores\t: 1\n",
            "core id\t\t: 0\n",
            "flags\t\t: fpu sse2\n",
            "power management:\n",
        ] {
            assert!(one.contains(line), "{line:?} in {one}");
        }
        assert!(one.ends_with("\n\n") && !one.contains("apicid\t\t: 1"), "{one}");
        assert_eq!(one_cpu_info(""), "processor\t: 0\n\n");
    }

    #[test]
    fn recognises_own_proc_paths() {
        assert_eq!(self_path(b"/proc/self/maps", 42), Some(&b"maps"[..]));
        assert_eq!(self_path(b"/proc/thread-self/fd/3", 42), Some(&b"fd/3"[..]));
        assert_eq!(self_path(b"/proc/42/status", 42), Some(&b"status"[..]));
        assert_eq!(self_path(b"/proc/42/task/42/stat", 42), Some(&b"stat"[..]));
        assert_eq!(self_path(b"/proc/43/status", 42), None);
        assert_eq!(self_path(b"/proc/self", 42), Some(&b""[..]));
        assert_eq!(self_path(b"/proc/cpuinfo", 42), None);
        assert_eq!(self_path(b"/etc/passwd", 42), None);
    }
}
