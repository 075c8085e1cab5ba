//! What a job's path names, worked out the way the kernel would.
//!
//! The job's pid is the VMM process's pid, so a path the VMM hands to the
//! host unchanged that lands in the host's /proc/<pid> reaches the VMM
//! itself: its memory (`mem`), its descriptors (`fd/3` is /dev/kvm), its
//! root and cwd. Matching the string "/proc/self/..." is not enough: the
//! kernel walks a path one component at a time, so `//proc/./self/mem`,
//! `/proc/self/../self/mem`, `/proc/self/root/proc/self/mem`, a symlink the
//! job made to /proc/self, or /dev/fd/3 (a symlink to /proc/self/fd/3) all
//! arrive there. `resolve` repeats that walk:
//!
//! - outside /proc, every prefix is looked at on the host (lstat, readlink)
//!   and symlinks are followed, up to 40 like the kernel, so where a path
//!   leads is known before the host is given it;
//! - /proc's own symlinks (`self`, `thread-self`, `net`, `mounts`) and the
//!   job's pid lead into the job's entry, which is walked by name only
//!   (nothing in it is looked up on the host, as there it is the VMM);
//! - the job's `root` and `cwd` magic links restart the walk at "/" or at
//!   the job's cwd, so what follows them is resolved too;
//! - magic links of other processes (`/proc/1/root/...`) are never walked
//!   through: where they lead cannot be told from their text;
//! - the VMM's real pid when it differs from the job's (a moved job keeps
//!   its pid) and the tids of the VMM's own threads are not "another
//!   process": /proc/<tid> works for any thread, listed or not;
//! - another procfs (a chroot's /proc, /proc bind-mounted elsewhere) is
//!   recognised by its root inode and its `self` link.
//!
//! It must run in the process that makes the host call (the deputy, for a
//! job served from home): "self" and the thread check are that process's.
//!
//! Limits, by design (see the tests):
//! - `cwd` must be the job's current directory as the kernel knows it now
//!   (e.g. read from /proc/self/fd/<cwd fd> just before the call, or the
//!   path of the `dirfd` for *at calls): it is trusted to be a real
//!   directory without symlinks (looked at on the host only once, for
//!   procfs mounts on the way). A stale name (the directory was renamed)
//!   makes the answer wrong.
//! - This is a check made before the host call: a symlink changed in
//!   between (by another process) is not seen. A check of the opened
//!   descriptor afterwards closes that race.
//! - Paths that continue through the job's `cwd` or `fd/N` magic links and
//!   end outside the job's /proc entry are refused: the host would resolve
//!   the original spelling against the VMM's cwd and descriptors, not the
//!   job's, so `Host` cannot be answered for them.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

// Linux errno values (x86-64), without libc.
const ENOENT: i32 = 2;
const EACCES: i32 = 13;
const ENOTDIR: i32 = 20;
const EINVAL: i32 = 22;
const ENAMETOOLONG: i32 = 36;
const ELOOP: i32 = 40;

/// The longest path the kernel takes, counting its NUL: a path of 4096
/// bytes or more is ENAMETOOLONG.
pub const PATH_MAX: usize = 4096;

/// Symlinks (ordinary and magic) one lookup may follow before ELOOP.
const MAXSYMLINKS: u32 = 40;

/// Entries of the job's /proc/<pid> that reach the VMM whatever is done with
/// them (its memory, its page table, its kernel stack...).
const DENIED_NAMES: &[&[u8]] =
    &[b"mem", b"map_files", b"pagemap", b"syscall", b"stack", b"auxv", b"personality", b"io"];

/// What a job path names, resolved the way the kernel would (component by
/// component, `.`/`..`, repeated slashes, symlinks on the host file system
/// followed with a limit of 40, magic links under /proc handled specially).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Not under the VMM's own /proc entry: pass the original path to the
    /// host unchanged.
    Host,
    /// Under the job's own /proc/<pid> (however spelled): the rest,
    /// normalised, e.g. b"maps", b"fd/3", b"status", b"" for the directory
    /// itself; "task/<pid>/x" reduced to "x".
    ProcSelf(Vec<u8>),
    /// Names something the job must never reach (e.g. /proc/<pid>/mem,
    /// root, cwd, map_files...): refuse with this errno.
    Denied(i32),
}

/// Resolves `path` for a system call that follows a final symlink (open
/// without O_NOFOLLOW, stat, chdir, execve, truncate...). `cwd` is the
/// absolute path of the directory a relative `path` starts from; `pid` is
/// the pid the job sees as its own.
pub fn resolve(path: &[u8], cwd: &[u8], pid: u32) -> Resolved {
    resolve_with(path, cwd, pid, true)
}

/// Like `resolve` for a system call that acts on a final symlink itself
/// (O_NOFOLLOW, lstat, readlink, unlink, rename, AT_SYMLINK_NOFOLLOW): a job
/// symlink pointing to /proc/self/mem can be read or removed. A trailing
/// slash still follows, as in the kernel.
pub fn resolve_nofollow(path: &[u8], cwd: &[u8], pid: u32) -> Resolved {
    resolve_with(path, cwd, pid, false)
}

fn resolve_with(path: &[u8], cwd: &[u8], pid: u32, follow_last: bool) -> Resolved {
    if path.len() >= PATH_MAX {
        return Resolved::Denied(ENAMETOOLONG);
    }
    if path.is_empty() {
        // ENOENT, or the dirfd itself with AT_EMPTY_PATH: the caller's business.
        return Resolved::Host;
    }
    let mut w = Walker {
        cwd,
        pid,
        follow_last,
        out: Vec::with_capacity(64),
        proc_root: None,
        ours: false,
        rest: Vec::new(),
        in_task: false,
        links: 0,
        via_cwd: false,
        probe: false,
        probe_found: false,
        alias: None,
    };
    let walked = if path[0] == b'/' {
        w.walk(path, false, Tail::FINAL)
    } else {
        w.walk_cwd().and_then(|()| w.walk(path, false, Tail::FINAL))
    };
    match walked {
        Ok(()) => w.finish(),
        Err(Stop::Denied(e)) => Resolved::Denied(e),
        // The host walk of the same spelling fails the same way, with the
        // errno the kernel picks (which may depend on the system call).
        Err(Stop::Fails(e)) if w.via_cwd => Resolved::Denied(e),
        Err(Stop::Fails(_)) => Resolved::Host,
    }
}

/// Where the last component of a walked piece stands in the whole lookup.
#[derive(Clone, Copy)]
struct Tail {
    /// Nothing follows it (a trailing slash may).
    end: bool,
    /// Nothing follows it, not even a slash: the system call's own
    /// follow-or-not applies to it.
    last: bool,
}

impl Tail {
    const FINAL: Tail = Tail { end: true, last: true };
    const MORE: Tail = Tail { end: false, last: false };
}

/// Why a walk ended early.
enum Stop {
    /// Refused whatever the host would do.
    Denied(i32),
    /// The host cannot get past this point either (a missing or
    /// non-directory component, no search permission).
    Fails(i32),
}

struct Walker<'a> {
    cwd: &'a [u8],
    pid: u32,
    follow_last: bool,
    /// The host path walked so far, without symlinks ("" is "/"). When
    /// `ours`, it stays at the /proc that holds the job's entry.
    out: Vec<u8>,
    /// `out[..n]` is the root of a procfs mount, if `out` is inside one.
    proc_root: Option<usize>,
    /// Inside the job's /proc/<pid>: then `rest` is the path below it.
    ours: bool,
    rest: Vec<u8>,
    /// The job's entry was reached as /proc/<pid>/task/<tid> (so ".." from
    /// it is the task directory).
    in_task: bool,
    links: u32,
    /// The walk went through the job's `cwd` magic link.
    via_cwd: bool,
    /// Trusted walks still look for procfs mounts (a cwd not seen before).
    probe: bool,
    /// ... and found one.
    probe_found: bool,
    /// Our pid in a procfs of another pid namespace (what its `self` says).
    alias: Option<u32>,
}

impl Walker<'_> {
    /// Walks `path` from where the walk stands (from "/" if absolute).
    /// `trusted` skips host lookups (the job's cwd, known to be a real
    /// directory); `tail` says whether more of the lookup follows `path`
    /// (it is the job's cwd, or a symlink's target with more after the link).
    fn walk(&mut self, path: &[u8], trusted: bool, tail: Tail) -> Result<(), Stop> {
        if path.first() == Some(&b'/') {
            self.restart_at_root();
        }
        // "dir/" must be a directory: its last component is followed.
        let trailing_slash = path.last() == Some(&b'/');
        let mut comps = path.split(|&b| b == b'/').filter(|c| !c.is_empty()).peekable();
        while let Some(c) = comps.next() {
            let end = tail.end && comps.peek().is_none();
            let at = Tail { end, last: end && tail.last && !trailing_slash };
            self.step(c, at, trusted)?;
        }
        Ok(())
    }

    /// Walks the job's cwd. It is trusted to have no symlinks and to exist
    /// (a deleted cwd still has a parent for ".."), but it may lie inside a
    /// procfs mounted elsewhere than /proc (a chroot's /proc): that is
    /// looked for once per cwd.
    fn walk_cwd(&mut self) -> Result<(), Stop> {
        thread_local! {
            static ORDINARY_CWD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let cwd = self.cwd;
        self.probe = !ORDINARY_CWD.with(|c| *c.borrow() == cwd);
        let walked = self.walk(cwd, true, Tail::MORE);
        if self.probe && !self.probe_found && walked.is_ok() {
            ORDINARY_CWD.with(|c| {
                let mut c = c.borrow_mut();
                c.clear();
                c.extend_from_slice(cwd);
            });
        }
        self.probe = false;
        walked
    }

    fn restart_at_root(&mut self) {
        self.out.clear();
        self.proc_root = None;
        self.ours = false;
        self.rest.clear();
        self.in_task = false;
    }

    fn count_link(&mut self) -> Result<(), Stop> {
        self.links += 1;
        if self.links > MAXSYMLINKS {
            return Err(Stop::Denied(ELOOP));
        }
        Ok(())
    }

    fn step(&mut self, c: &[u8], at: Tail, trusted: bool) -> Result<(), Stop> {
        if self.ours {
            return self.step_ours(c, at);
        }
        let last = at.last;
        match c {
            b"." => return Ok(()),
            b".." => {
                // `out` has no symlinks in it, so ".." is its parent.
                let cut = self.out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                self.out.truncate(cut);
                if self.proc_root.is_some_and(|n| cut < n) {
                    self.proc_root = None;
                }
                return Ok(());
            }
            _ => {}
        }
        if self.proc_root == Some(self.out.len()) && self.proc_top(c, last)? {
            return Ok(());
        }
        let parent = self.out.len();
        self.out.push(b'/');
        self.out.extend_from_slice(c);
        if self.out == b"/proc" {
            // Trusted walks look nothing up: know /proc by its name too.
            self.proc_root = Some(self.out.len());
        }
        if trusted {
            if self.probe {
                if let Ok(m) = std::fs::symlink_metadata(os(&self.out)) {
                    self.probe_found |= self.note_proc_root(&m);
                }
            }
            return Ok(());
        }
        let meta = match std::fs::symlink_metadata(os(&self.out)) {
            Ok(m) => m,
            // A name that does not exist yet: O_CREAT, mkdir, rename's target.
            Err(e) if last && errno(&e) == ENOENT => return Ok(()),
            Err(e) => {
                return Err(match errno(&e) {
                    e @ (ENOENT | ENOTDIR | EACCES) => Stop::Fails(e),
                    // e.g. ENAMETOOLONG for a deep absolute `out`: the host,
                    // walking the original spelling, might get further.
                    e => Stop::Denied(e),
                });
            }
        };
        if meta.file_type().is_symlink() {
            if last && !self.follow_last {
                return Ok(());
            }
            if let Some(n) = self.proc_root {
                if parent != n {
                    // A magic link of another process (its root, cwd, fd/N,
                    // exe...): its text is not where the kernel goes (other
                    // namespaces, deleted files, anonymous inodes), so what
                    // lies beyond it cannot be checked. Opening the link
                    // itself is what the job could do natively.
                    return if last { Ok(()) } else { Err(Stop::Denied(EACCES)) };
                }
            }
            self.count_link()?;
            let target = std::fs::read_link(os(&self.out)).map_err(|e| Stop::Denied(errno(&e)))?;
            // A relative target starts from the link's directory.
            self.out.truncate(parent);
            return self.walk(target.as_os_str().as_bytes(), false, at);
        }
        if !last && !meta.is_dir() {
            return Err(Stop::Fails(ENOTDIR));
        }
        self.note_proc_root(&meta);
        Ok(())
    }

    /// Notes whether `out`, described by `meta`, is the root of a procfs
    /// other than /proc: /proc bind-mounted elsewhere (same device) or
    /// another procfs mount (a chroot's /proc), which has a `self` link.
    fn note_proc_root(&mut self, meta: &std::fs::Metadata) -> bool {
        if !meta.is_dir() || meta.ino() != PROC_ROOT_INO || self.proc_root == Some(self.out.len()) {
            return false;
        }
        let dev = meta.dev();
        if Some(dev) != proc_dev() {
            // Many file systems' roots are inode 1 too (devtmpfs, tmpfs,
            // sysfs): look at each device once.
            thread_local! {
                static NOT_PROC: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
            }
            if NOT_PROC.with(|d| d.borrow().contains(&dev)) {
                return false;
            }
            let len = self.out.len();
            self.out.extend_from_slice(b"/self");
            let me = std::fs::read_link(os(&self.out)).ok().and_then(|t| proc_number(t.as_os_str().as_bytes()));
            self.out.truncate(len);
            match me {
                // In another pid namespace the VMM has another number there.
                Some(n) => self.alias = Some(n),
                None => {
                    NOT_PROC.with(|d| {
                        let mut d = d.borrow_mut();
                        if d.len() < 16 {
                            d.push(dev);
                        }
                    });
                    return false;
                }
            }
        }
        self.proc_root = Some(self.out.len());
        true
    }

    /// A name directly in a procfs root. True if it led into the job's
    /// entry; false if it is an ordinary name there (cpuinfo, another pid).
    fn proc_top(&mut self, c: &[u8], last: bool) -> Result<bool, Stop> {
        if c == b"self" || c == b"thread-self" {
            if last && !self.follow_last {
                // The link itself (readlink gives the pid): harmless.
                return Ok(false);
            }
            self.count_link()?;
            self.enter_ours(c == b"thread-self");
            return Ok(true);
        }
        if let Some(n) = proc_number(c) {
            if n == self.pid {
                self.enter_ours(false);
                return Ok(true);
            }
            // The VMM away from home (a moved job keeps its pid; the host
            // process has another one), or one of its threads (/proc/<tid>
            // works for any thread, listed or not): not the job's.
            if n == std::process::id() || is_own_thread(n) {
                return Err(Stop::Denied(ENOENT));
            }
            if Some(n) == self.alias {
                self.enter_ours(false);
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn enter_ours(&mut self, in_task: bool) {
        self.ours = true;
        self.rest.clear();
        self.in_task = in_task;
    }

    /// A component below the job's /proc/<pid>, walked by name.
    fn step_ours(&mut self, c: &[u8], at: Tail) -> Result<(), Stop> {
        let last = at.last;
        match c {
            b"." => Ok(()),
            b".." => {
                if let Some(cut) = self.rest.iter().rposition(|&b| b == b'/') {
                    self.rest.truncate(cut);
                } else if !self.rest.is_empty() {
                    self.rest.clear();
                } else if self.in_task {
                    // /proc/<pid>/task/<tid>/.. is the task directory.
                    self.in_task = false;
                    self.rest.extend_from_slice(b"task");
                } else {
                    // Back in /proc (`out` and `proc_root` still say so).
                    self.ours = false;
                }
                Ok(())
            }
            _ if self.rest.is_empty() => self.entry_name(c, at),
            _ if self.rest == b"task" => {
                // Any task of the job's is the job's entry (it runs its
                // threads itself; the host's tids mean nothing to it).
                self.rest.clear();
                self.in_task = true;
                Ok(())
            }
            _ if self.rest == b"fd" && !last => {
                // fd/N is a magic link to the job's descriptor N, which only
                // the caller knows; walking through it here is not possible.
                Err(Stop::Denied(EACCES))
            }
            _ if self.rest == b"ns" && !last => Err(Stop::Denied(ENOTDIR)),
            _ => {
                self.rest.push(b'/');
                self.rest.extend_from_slice(c);
                Ok(())
            }
        }
    }

    /// A name directly in the job's /proc/<pid>.
    fn entry_name(&mut self, c: &[u8], at: Tail) -> Result<(), Stop> {
        if DENIED_NAMES.contains(&c) {
            return Err(Stop::Denied(EACCES));
        }
        match c {
            // "root/" too: the VMM's root or cwd itself, as a directory.
            b"root" | b"cwd" if at.end => Err(Stop::Denied(EACCES)),
            b"root" => {
                // The VMM's root is the job's: what follows is an ordinary path.
                self.count_link()?;
                self.restart_at_root();
                Ok(())
            }
            b"cwd" => {
                self.count_link()?;
                self.via_cwd = true;
                self.restart_at_root();
                let cwd = self.cwd;
                self.walk(cwd, true, Tail::MORE)
            }
            b"exe" if !at.last => Err(Stop::Denied(ENOTDIR)),
            // /proc/<pid>/task/<tid> has no "task".
            b"task" if self.in_task => Err(Stop::Denied(ENOENT)),
            _ => {
                self.rest.extend_from_slice(c);
                Ok(())
            }
        }
    }

    fn finish(self) -> Resolved {
        if self.ours {
            Resolved::ProcSelf(self.rest)
        } else if self.via_cwd {
            // The host would read /proc/self/cwd as the VMM's cwd.
            Resolved::Denied(EACCES)
        } else {
            Resolved::Host
        }
    }
}

/// The inode number of every procfs root.
const PROC_ROOT_INO: u64 = 1;

/// The device of the host's /proc, if it is a procfs.
fn proc_dev() -> Option<u64> {
    static DEV: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *DEV.get_or_init(|| std::fs::symlink_metadata("/proc").ok().filter(|m| m.ino() == PROC_ROOT_INO).map(|m| m.dev()))
}

/// A pid as procfs reads a directory name: decimal, no leading zero, no
/// sign (so "042" is not 42, as in the kernel's name_to_int).
fn proc_number(c: &[u8]) -> Option<u32> {
    if c.is_empty() || (c.len() > 1 && c[0] == b'0') {
        return None;
    }
    let mut n: u32 = 0;
    for &b in c {
        let d = b.wrapping_sub(b'0');
        if d > 9 || n >= (u32::MAX - 9) / 10 {
            return None;
        }
        n = n * 10 + d as u32;
    }
    Some(n)
}

/// Whether `tid` is a thread of this (the VMM's) process.
fn is_own_thread(tid: u32) -> bool {
    const PREFIX: &[u8] = b"/proc/self/task/";
    let mut buf = [0u8; PREFIX.len() + 10];
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = tid;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = PREFIX.len() + digits.len() - i;
    buf[PREFIX.len()..len].copy_from_slice(&digits[i..]);
    std::fs::symlink_metadata(os(&buf[..len])).is_ok()
}

fn os(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

fn errno(e: &std::io::Error) -> i32 {
    // No OS error: a NUL inside the path, which a C string cannot hold.
    e.raw_os_error().unwrap_or(EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    const PID: u32 = 42;

    fn r(path: &str) -> Resolved {
        resolve(path.as_bytes(), b"/tmp/x", PID)
    }

    fn rc(path: &str, cwd: &str) -> Resolved {
        resolve(path.as_bytes(), cwd.as_bytes(), PID)
    }

    fn ps(rest: &str) -> Resolved {
        Resolved::ProcSelf(rest.as_bytes().to_vec())
    }

    const DENIED: Resolved = Resolved::Denied(EACCES);

    /// A fresh directory for symlinks, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let d = std::env::temp_dir().join(format!("resolve-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Scratch(std::fs::canonicalize(&d).unwrap())
        }

        fn path(&self, name: &str) -> String {
            format!("{}/{name}", self.0.display())
        }

        fn link(&self, name: &str, target: &str) -> String {
            let p = self.path(name);
            symlink(target, &p).unwrap();
            p
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn ordinary_paths_go_to_the_host() {
        assert_eq!(r("/etc/passwd"), Resolved::Host);
        assert_eq!(r("/"), Resolved::Host);
        assert_eq!(r("//etc///passwd"), Resolved::Host);
        assert_eq!(rc("a/b", "/tmp"), Resolved::Host);
        assert_eq!(rc("a/b", "/tmp/x"), Resolved::Host);
        assert_eq!(r("/proc/cpuinfo"), Resolved::Host);
        assert_eq!(r("/proc"), Resolved::Host);
        assert_eq!(r("/proc/"), Resolved::Host);
        assert_eq!(r("/proc/sys/kernel/ostype"), Resolved::Host);
        assert_eq!(r("/proc/1/status"), Resolved::Host);
        assert_eq!(r("/proc/1"), Resolved::Host);
        assert_eq!(r("/proc/1/task/1/stat"), Resolved::Host);
        // "042" is not a pid to procfs.
        assert_eq!(r("/proc/042/mem"), Resolved::Host);
        assert_eq!(r(""), Resolved::Host);
        // Missing or non-directory components: the host fails the same way.
        assert_eq!(r("/nonexistent/../proc/self/mem"), Resolved::Host);
        assert_eq!(r("/etc/passwd/../../proc/self/mem"), Resolved::Host);
        assert_eq!(r("/tmp/does-not-exist-yet"), Resolved::Host);
    }

    #[test]
    fn own_entry_however_spelled() {
        assert_eq!(r("/proc/self/maps"), ps("maps"));
        assert_eq!(r("/proc/self/status"), ps("status"));
        assert_eq!(r("/proc/42/status"), ps("status"));
        assert_eq!(r("/proc/thread-self/fd/3"), ps("fd/3"));
        assert_eq!(r("/proc/self"), ps(""));
        assert_eq!(r("/proc/self/"), ps(""));
        assert_eq!(r("/proc/42"), ps(""));
        assert_eq!(r("//proc//42//maps"), ps("maps"));
        assert_eq!(r("//proc/42/maps"), ps("maps"));
        assert_eq!(r("/proc/./42/maps"), ps("maps"));
        assert_eq!(r("/proc/../proc/self/maps"), ps("maps"));
        assert_eq!(r("/proc/self/./maps"), ps("maps"));
        assert_eq!(r("/proc/self/../self/maps"), ps("maps"));
        assert_eq!(r("/proc/self/../42/maps"), ps("maps"));
        assert_eq!(r("/proc/self/fd/3"), ps("fd/3"));
        assert_eq!(r("/proc/self/fd"), ps("fd"));
        assert_eq!(r("/proc/self/fd/"), ps("fd"));
        assert_eq!(r("/proc/self/fdinfo/3"), ps("fdinfo/3"));
        assert_eq!(r("/proc/self/exe"), ps("exe"));
        assert_eq!(r("/proc/self/mountinfo"), ps("mountinfo"));
        assert_eq!(r("/proc/self/mounts"), ps("mounts"));
        assert_eq!(r("/proc/self/environ"), ps("environ"));
        assert_eq!(r("/proc/self/net/dev"), ps("net/dev"));
        assert_eq!(r("/proc/self/net/../status"), ps("status"));
        assert_eq!(r("/proc/self/attr/current"), ps("attr/current"));
    }

    #[test]
    fn tasks_are_the_entry() {
        assert_eq!(r("/proc/42/task/42/stat"), ps("stat"));
        assert_eq!(r("/proc/self/task/42/fd/1"), ps("fd/1"));
        assert_eq!(r("/proc/self/task/12345/status"), ps("status"));
        assert_eq!(r("/proc/self/task"), ps("task"));
        assert_eq!(r("/proc/self/task/42"), ps(""));
        assert_eq!(r("/proc/self/task/42/.."), ps("task"));
        assert_eq!(r("/proc/self/task/42/../.."), ps(""));
        assert_eq!(r("/proc/thread-self/.."), ps("task"));
        assert_eq!(r("/proc/thread-self/../42/maps"), ps("maps"));
        assert_eq!(r("/proc/self/task/42/mem"), DENIED);
        assert_eq!(r("/proc/thread-self/mem"), DENIED);
        assert_eq!(r("/proc/self/task/42/../../mem"), DENIED);
        // /proc/<pid>/task/<tid> has no task directory of its own.
        assert_eq!(r("/proc/self/task/42/task/42/mem"), Resolved::Denied(ENOENT));
    }

    #[test]
    fn dangerous_names_are_denied() {
        for name in
            ["mem", "map_files", "map_files/400000-401000", "pagemap", "syscall", "stack", "auxv", "personality", "io"]
        {
            assert_eq!(r(&format!("/proc/self/{name}")), DENIED, "{name}");
            assert_eq!(r(&format!("/proc/42/{name}")), DENIED, "{name}");
        }
        assert_eq!(r("/proc/self/root"), DENIED);
        assert_eq!(r("/proc/self/root/"), DENIED);
        assert_eq!(r("/proc/self/root//"), DENIED);
        assert_eq!(r("/proc/self/cwd"), DENIED);
        assert_eq!(r("/proc/self/cwd/"), DENIED);
        assert_eq!(resolve_nofollow(b"/proc/self/root", b"/", PID), DENIED);
        assert_eq!(resolve_nofollow(b"/proc/self/exe", b"/", PID), ps("exe"));
        // Past them, what follows is resolved: "/" itself is the host's.
        assert_eq!(r("/proc/self/root/."), Resolved::Host);
        assert_eq!(r("/proc/self/exe/"), Resolved::Denied(ENOTDIR));
        assert_eq!(r("/proc/42/root"), DENIED);
        assert_eq!(r("/proc/self/exe/x"), Resolved::Denied(ENOTDIR));
        assert_eq!(r("/proc/self/ns/net/x"), Resolved::Denied(ENOTDIR));
    }

    #[test]
    fn escape_spellings_are_caught() {
        for p in [
            "/proc/self/mem",
            "/proc/42/mem",
            "/proc/./42/mem",
            "//proc/42/mem",
            "/proc//42//mem",
            "/proc/42/./mem",
            "/proc/self/../self/mem",
            "/proc/self/../42/mem",
            "/proc/42/root/proc/42/mem",
            "/proc/self/root/proc/self/mem",
            "/proc/self/root/../proc/self/mem",
            "/proc/self/root//proc/thread-self/mem",
            "/proc/self/net/../mem",
            "/proc/self/fdinfo/../mem",
            "/proc/self/cwd/../../proc/self/mem",
            "/proc/thread-self/../../mem",
        ] {
            assert_eq!(r(p), DENIED, "{p}");
        }
        // /proc/net and /proc/mounts are host symlinks into the VMM's entry.
        if std::fs::read_link("/proc/net").is_ok() {
            assert_eq!(r("/proc/net/../mem"), DENIED);
            assert_eq!(r("/proc/net/dev"), ps("net/dev"));
        }
        if std::fs::read_link("/proc/mounts").is_ok() {
            assert_eq!(r("/proc/mounts"), ps("mounts"));
        }
    }

    #[test]
    fn relative_paths_start_at_cwd() {
        assert_eq!(rc("../../proc/self/maps", "/tmp/x"), ps("maps"));
        assert_eq!(rc("../../proc/self/mem", "/tmp/x"), DENIED);
        assert_eq!(rc("../../../../../../proc/self/mem", "/tmp/x"), DENIED);
        assert_eq!(rc("proc/self/mem", "/"), DENIED);
        assert_eq!(rc("proc/self/maps", "/"), ps("maps"));
        assert_eq!(rc("./proc/./42/mem", "/"), DENIED);
        assert_eq!(rc("self/mem", "/proc"), DENIED);
        assert_eq!(rc("42/maps", "/proc"), ps("maps"));
        assert_eq!(rc("cpuinfo", "/proc"), Resolved::Host);
        // A cwd (or dirfd) inside the job's entry.
        assert_eq!(rc("mem", "/proc/42"), DENIED);
        assert_eq!(rc("./mem", "/proc/42"), DENIED);
        assert_eq!(rc("maps", "/proc/42"), ps("maps"));
        assert_eq!(rc(".", "/proc/42"), ps(""));
        assert_eq!(rc("..", "/proc/42"), Resolved::Host);
        assert_eq!(rc("3", "/proc/42/fd"), ps("fd/3"));
        assert_eq!(rc("mem", "/proc/42/task/42"), DENIED);
        assert_eq!(rc("../mem", "/proc/42/task"), DENIED);
        assert_eq!(rc("42/mem", "/proc/42/task"), DENIED);
    }

    #[test]
    fn cwd_magic_link_resolves_against_the_job_cwd() {
        assert_eq!(rc("/proc/self/cwd/proc/self/mem", "/"), DENIED);
        assert_eq!(rc("/proc/42/cwd/../../proc/42/maps", "/tmp/x"), ps("maps"));
        assert_eq!(rc("/proc/self/cwd/mem", "/proc/42"), DENIED);
        assert_eq!(rc("/proc/self/cwd/status", "/proc/42"), ps("status"));
        // Ends on the host: the host would use the VMM's cwd, so refused.
        assert_eq!(rc("/proc/self/cwd/etc/passwd", "/"), DENIED);
        assert_eq!(rc("/proc/self/cwd/nonexistent/x", "/"), Resolved::Denied(ENOENT));
    }

    #[test]
    fn fd_links_cannot_be_walked_through() {
        assert_eq!(r("/proc/self/fd/3/proc/self/mem"), DENIED);
        assert_eq!(r("/proc/self/fd/3/x"), DENIED);
        assert_eq!(r("/proc/self/fd/3/.."), DENIED);
        assert_eq!(r("/proc/self/fd/../mem"), DENIED);
        assert_eq!(r("/proc/self/fd/./3"), ps("fd/3"));
        assert_eq!(r("/proc/self/fd/../fd/3"), ps("fd/3"));
    }

    #[test]
    fn dev_fd_and_stdio_links() {
        if std::fs::read_link("/dev/fd").is_err() {
            eprintln!("*** /dev/fd is not a symlink here: /dev/fd tests skipped ***");
            return;
        }
        assert_eq!(r("/dev/fd/3"), ps("fd/3"));
        assert_eq!(r("/dev/fd/1"), ps("fd/1"));
        assert_eq!(r("/dev/fd"), ps("fd"));
        assert_eq!(r("/dev/fd/../mem"), DENIED);
        assert_eq!(r("/dev/fd/3/proc/self/mem"), DENIED);
        assert_eq!(rc("fd/3", "/dev"), ps("fd/3"));
        assert_eq!(rc("../dev/./fd/7", "/tmp"), ps("fd/7"));
        for (name, fd) in [("stdin", "0"), ("stdout", "1"), ("stderr", "2")] {
            if std::fs::read_link(format!("/dev/{name}")).is_ok() {
                assert_eq!(r(&format!("/dev/{name}")), ps(&format!("fd/{fd}")), "{name}");
            }
        }
        // The link itself is not followed.
        assert_eq!(resolve_nofollow(b"/dev/fd", b"/", PID), Resolved::Host);
        assert_eq!(resolve_nofollow(b"/dev/fd/3", b"/", PID), ps("fd/3"));
    }

    #[test]
    fn job_symlinks_are_followed() {
        let s = Scratch::new("links");
        let abs = s.link("self", "/proc/self");
        assert_eq!(r(&abs), ps(""));
        assert_eq!(r(&format!("{abs}/maps")), ps("maps"));
        assert_eq!(r(&format!("{abs}/mem")), DENIED);
        assert_eq!(r(&format!("{abs}/./fd/3")), ps("fd/3"));
        let pid = s.link("pid", "/proc/42");
        assert_eq!(r(&format!("{pid}/mem")), DENIED);
        let mem = s.link("mem", "/proc/self/mem");
        assert_eq!(r(&mem), DENIED);
        // ... but the link itself can be read or removed.
        assert_eq!(resolve_nofollow(mem.as_bytes(), b"/", PID), Resolved::Host);
        // Relative targets start at the link's directory.
        let depth = s.0.components().count() - 1;
        let up = "../".repeat(depth);
        let rel = s.link("rel", &format!("{up}proc/self"));
        assert_eq!(r(&format!("{rel}/mem")), DENIED);
        assert_eq!(r(&format!("{rel}/status")), ps("status"));
        let relmem = s.link("relmem", &format!("{up}proc/./self/mem"));
        assert_eq!(r(&relmem), DENIED);
        // A chain, and a relative path through a link from the cwd.
        let chain = s.link("chain", "self");
        assert_eq!(r(&format!("{chain}/mem")), DENIED);
        assert_eq!(rc("chain/maps", &s.path("")), ps("maps"));
        // ".." after a link is the parent of where it led: /proc/chain/mem
        // does not exist, as natively.
        assert_eq!(rc("./chain/../chain/mem", &s.path("")), Resolved::Host);
        assert_eq!(rc("./chain/../self/mem", &s.path("")), DENIED);
        // A link to /proc, to the root, to /dev/fd.
        let proc = s.link("proc", "/proc");
        assert_eq!(r(&format!("{proc}/self/mem")), DENIED);
        assert_eq!(r(&format!("{proc}/cpuinfo")), Resolved::Host);
        let root = s.link("root", "/");
        assert_eq!(r(&format!("{root}/proc/42/mem")), DENIED);
        assert_eq!(r(&format!("{root}/etc/passwd")), Resolved::Host);
        if std::fs::read_link("/dev/fd").is_ok() {
            let fd = s.link("fd", "/dev/fd");
            assert_eq!(r(&format!("{fd}/3")), ps("fd/3"));
            assert_eq!(r(&format!("{fd}/../mem")), DENIED);
        }
        // ".." after a link is the parent of where the link led.
        let into = s.link("into", &format!("{up}proc/self/net"));
        assert_eq!(r(&format!("{into}/../mem")), DENIED);
        // A dangling link: the host creates or fails as it would.
        let dangling = s.link("dangling", &s.path("nothere"));
        assert_eq!(r(&dangling), Resolved::Host);
        // Ordinary links stay on the host.
        let etc = s.link("etc", "/etc");
        assert_eq!(r(&format!("{etc}/passwd")), Resolved::Host);
    }

    #[test]
    fn symlink_loops_stop_at_40() {
        let s = Scratch::new("loops");
        let a = s.link("a", "b");
        s.link("b", "a");
        assert_eq!(r(&a), Resolved::Denied(ELOOP));
        assert_eq!(r(&format!("{a}/x")), Resolved::Denied(ELOOP));
        // 40 links in a row are fine, 41 are not.
        s.link("l0", "/proc/self");
        for i in 1..=40 {
            s.link(&format!("l{i}"), &format!("l{}", i - 1));
        }
        // l39 -> ... -> l0 is 40 links, plus /proc/self itself is one more.
        assert_eq!(r(&format!("{}/maps", s.path("l38"))), ps("maps"));
        assert_eq!(r(&format!("{}/maps", s.path("l39"))), Resolved::Denied(ELOOP));
    }

    #[test]
    fn other_processes_magic_links_are_not_walked() {
        assert_eq!(r("/proc/1/root/proc/42/mem"), DENIED);
        assert_eq!(r("/proc/1/root/etc/passwd"), DENIED);
        assert_eq!(r("/proc/1/cwd/../proc/42/mem"), DENIED);
        assert_eq!(r("/proc/1/task/1/root/proc/42/mem"), DENIED);
        if std::fs::symlink_metadata("/proc/1/fd/0").is_ok() {
            assert_eq!(r("/proc/1/fd/0/x"), DENIED);
        }
        // The links themselves, as natively.
        assert_eq!(r("/proc/1/root"), Resolved::Host);
        assert_eq!(r("/proc/1/exe"), Resolved::Host);
        // Lexical ".." out of another entry into the job's.
        assert_eq!(r("/proc/1/../42/mem"), DENIED);
        assert_eq!(r("/proc/1/../self/maps"), ps("maps"));
    }

    #[test]
    fn the_vmm_process_and_its_threads_are_not_another_process() {
        let me = std::process::id();
        // A job that moved keeps its pid; the VMM's own is then another number.
        assert_eq!(r(&format!("/proc/{me}/mem")), Resolved::Denied(ENOENT));
        assert_eq!(r(&format!("/proc/{me}/status")), Resolved::Denied(ENOENT));
        assert_eq!(resolve(format!("/proc/{me}/status").as_bytes(), b"/", me), ps("status"));
        assert_eq!(resolve(format!("/proc/{me}/mem").as_bytes(), b"/", me), DENIED);
        // A thread of the VMM (e.g. a migration sender) by its tid.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ttx, trx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let link = std::fs::read_link("/proc/thread-self").unwrap();
            ttx.send(link.file_name().unwrap().to_str().unwrap().parse::<u32>().unwrap()).unwrap();
            let _ = rx.recv();
        });
        let live = trx.recv().unwrap();
        assert_eq!(r(&format!("/proc/{live}/mem")), Resolved::Denied(ENOENT));
        assert_eq!(r(&format!("/proc/{live}/root/etc/passwd")), Resolved::Denied(ENOENT));
        tx.send(()).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn bytes_and_lengths() {
        assert_eq!(resolve(b"/proc/self/\xff\xfe", b"/", PID), Resolved::ProcSelf(b"\xff\xfe".to_vec()));
        assert_eq!(resolve(b"/tmp/\xff/x", b"/", PID), Resolved::Host);
        assert_eq!(resolve(b"\xff", b"/tmp/\xfe", PID), Resolved::Host);
        let long = format!("/{}", "a/".repeat(2047));
        assert_eq!(long.len(), 4095);
        assert_ne!(r(&long), Resolved::Denied(ENAMETOOLONG));
        let too_long = format!("{long}b");
        assert_eq!(r(&too_long), Resolved::Denied(ENAMETOOLONG));
        assert_eq!(r(&format!("/proc/self/{}", "x".repeat(5000))), Resolved::Denied(ENAMETOOLONG));
        // 4095 bytes that lead into the job's entry are still checked.
        let dots = format!("/proc/self{}/mem", "/.".repeat(2040));
        assert!(dots.len() < PATH_MAX);
        assert_eq!(r(&dots), DENIED);
        assert_eq!(proc_number(b"0"), Some(0));
        assert_eq!(proc_number(b"42"), Some(42));
        assert_eq!(proc_number(b"042"), None);
        assert_eq!(proc_number(b"+42"), None);
        assert_eq!(proc_number(b"99999999999"), None);
        assert_eq!(proc_number(b""), None);
    }
}
