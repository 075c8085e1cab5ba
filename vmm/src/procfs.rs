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
             SigQ:\t0/0\nSigPnd:\t{:016x}\nShdPnd:\t{:016x}\nSigBlk:\t{:016x}\nSigIgn:\t{ignored:016x}\nSigCgt:\t{caught:016x}\n",
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

    fn proc_stat(&self) -> String {
        let name = String::from_utf8_lossy(&self.comm[..self.comm.iter().position(|&b| b == 0).unwrap_or(16)]);
        let ids = &self.ids;
        let ticks = self.clock.cputime() / 10_000_000;
        let rss_pages = self.touched_bytes() / 4096;
        let vsize = self.mapped_kib() << 10;
        let layout = self.mm.layout();
        format!(
            "{} ({name}) R {} {} {} 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 1 0 0 {vsize} {rss_pages} 18446744073709551615 \
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
