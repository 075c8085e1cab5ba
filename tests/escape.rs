//! A hostile job cannot reach the VMM through /proc.
//!
//! The job's pid is the VMM process's pid, so whatever spelling of
//! /proc/<pid>/mem, /proc/self/fd/N (the VMM's /dev/kvm, VM and vCPU
//! descriptors), /proc/self/root or /proc/self/cwd the VMM hands to the host
//! would reach the VMM itself. `tests/procescape` tries every spelling known
//! (repeated slashes, `.` and `..`, tasks, magic links, /dev/fd, symlinks
//! of its own, relative paths from several directories, directory
//! descriptors, raw system calls) and prints one `WHAT: VERDICT` line each.

use mosvm_tests::*;

/// One line of procescape's output.
#[derive(Debug)]
struct Attempt {
    what: String,
    /// The first word of the verdict (`info` lines say more after it).
    verdict: String,
}

/// Verdicts that pass: refused, the job's own view, kept working, not
/// tried here, or only a note.
const GOOD: &[&str] = &["blocked", "safe", "works", "skipped", "info"];
/// Verdicts that fail: a forbidden path opened (or an allowed one showed
/// the VMM), or something that must keep working did not.
const BAD: &[&str] = &["OPEN", "BROKEN"];

fn parse(stdout: &str) -> Vec<Attempt> {
    stdout
        .lines()
        .map(|line| {
            let (what, verdict) = line
                .rsplit_once(": ")
                .unwrap_or_else(|| panic!("procescape printed a line without a verdict: {line:?}"));
            let verdict = verdict.split_whitespace().next().unwrap_or("").to_string();
            Attempt { what: what.to_string(), verdict }
        })
        .collect()
}

fn with_verdict<'a>(attempts: &'a [Attempt], verdict: &str) -> Vec<&'a str> {
    attempts.iter().filter(|a| a.verdict == verdict).map(|a| a.what.as_str()).collect()
}

/// The verdict of the attempt named exactly `what`.
fn verdict_of<'a>(attempts: &'a [Attempt], what: &str) -> Option<&'a str> {
    attempts.iter().find(|a| a.what == what).map(|a| a.verdict.as_str())
}

fn run_procescape(run: fn(&std::path::Path, &[&str], &Opts) -> Run, name: &str) -> (Run, Vec<Attempt>) {
    let dir = scratch_dir(name);
    let r = run(&image("tests/procescape"), &[], &Opts { cwd: Some(&dir), ..Default::default() });
    let attempts = parse(&r.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    (r, attempts)
}

#[test]
fn proc_escapes_are_blocked() {
    if !require_kvm("proc_escapes_are_blocked") {
        return;
    }
    let (v, attempts) = run_procescape(vm, "procescape-vm");
    assert!(v.signal.is_none(), "mosvm died of a signal: {v:?}");

    let unknown: Vec<&Attempt> =
        attempts.iter().filter(|a| !GOOD.contains(&a.verdict.as_str()) && !BAD.contains(&a.verdict.as_str())).collect();
    assert!(unknown.is_empty(), "verdicts this test does not know: {unknown:?}");

    let open = with_verdict(&attempts, "OPEN");
    assert!(
        open.is_empty(),
        "{} of {} attempts reached the VMM:\n  {}\nstderr:\n{}",
        open.len(),
        attempts.len(),
        open.join("\n  "),
        v.stderr
    );
    let broken = with_verdict(&attempts, "BROKEN");
    assert!(broken.is_empty(), "what must keep working did not:\n  {}\nstderr:\n{}", broken.join("\n  "), v.stderr);

    // What a job needs from its /proc/self still works, and shows the job
    // (maps without the VMM's kvm mappings, status with the job's name).
    for must in [
        "open(/proc/self/maps, O_RDONLY)",
        "open(/proc/self/status, O_RDONLY)",
        "open(/dev/fd/1, O_WRONLY)",
        "open(/proc/self/fd/1, O_WRONLY)",
        "readlink(/proc/self/exe)",
    ] {
        assert_eq!(verdict_of(&attempts, must), Some("works"), "{must}\nstdout:\n{}", v.stdout);
    }

    // The program got through all of its attempts, not just a few.
    assert!(attempts.len() > 500, "only {} attempts:\n{}\nstderr:\n{}", attempts.len(), v.stdout, v.stderr);
    for tried in [
        "open(/proc/self/mem, O_RDWR)",
        "open(/proc/self/mem, O_PATH)",
        "open(/proc/self/root/proc/self/mem, O_RDONLY)",
        "open(/proc/self/net/../mem, O_RDONLY)",
        "open(/dev/fd/../mem, O_RDONLY)",
        "open(/proc/self/root, O_RDONLY)",
        "open(/proc/self/cwd, O_RDONLY)",
        "open(/proc/self/map_files, O_RDONLY)",
        "open(/proc/self/pagemap, O_RDONLY)",
        "in / open(proc/self/mem, O_RDONLY)",
        "in / open(/proc/self/cwd/proc/self/mem, O_RDONLY)",
        "openat(fd of /proc, self/mem, O_RDONLY)",
        "SYS_openat2(AT_FDCWD, /proc/self/mem, O_RDWR)",
    ] {
        assert_eq!(verdict_of(&attempts, tried), Some("blocked"), "{tried}\nstdout:\n{}", v.stdout);
    }
    let through = |part: &str| attempts.iter().filter(|a| a.what.contains(part)).count();
    assert!(through("/lnk/mem") >= 3, "the job's symlinks to /proc/self were not tried:\n{}", v.stdout);
    assert!(through("open(/dev/fd/") >= 20, "/dev/fd/N was not tried:\n{}", v.stdout);
    assert!(through("readlink(/dev/fd/") >= 10, "readlink /dev/fd/N was not tried:\n{}", v.stdout);

    assert_eq!(v.status, 0, "procescape failed in the VM:\nstdout:\n{}\nstderr:\n{}", v.stdout, v.stderr);
}

/// Natively the same paths are the process's own and open: procescape
/// notices them, so a pass in the VM means they were blocked there.
#[test]
fn procescape_notices_escapes_natively() {
    let (n, attempts) = run_procescape(native, "procescape-native");
    for reached in [
        "open(/proc/self/mem, O_RDWR)",
        "open(/proc/self/root/proc/self/mem, O_RDONLY)",
        "open(/dev/fd/../mem, O_RDONLY)",
        "in / open(proc/self/mem, O_RDONLY)",
    ] {
        assert_eq!(verdict_of(&attempts, reached), Some("OPEN"), "{reached}\nstdout:\n{}", n.stdout);
    }
    assert_eq!(verdict_of(&attempts, "open(/proc/self/maps, O_RDONLY)"), Some("works"), "{}", n.stdout);
    assert_eq!(n.status, 1, "{}", n.stderr);
}

/// A fork bomb meets the job's process limit (each process is a micro-VM:
/// mosvm caps a job at 512, and below that its RLIMIT_NPROC binds all but
/// root, as on Linux): fork fails with EAGAIN, the operator is told, the
/// children all end, a fork works again once they are gone, and a job
/// running beside it is unaffected.
#[test]
fn a_fork_bomb_meets_the_jobs_process_limit() {
    if !require_kvm("a_fork_bomb_meets_the_jobs_process_limit") {
        return;
    }
    let hello = image("hello");
    let native_hello = native(&hello, &[], &Opts::default());
    let beside = std::thread::spawn(move || vm(&hello, &[], &Opts::default()));
    let r = vm(&image("tests/forkbomb"), &[], &Opts::default());
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        "made 511 processes, then fork: Resource temporarily unavailable\n511 children ended\nfork after: 7\n"
    );
    assert!(r.stderr.contains("fork: the job has its limit of 512 processes (EAGAIN)"), "{}", r.stderr);
    assert_eq!(beside.join().unwrap(), native_hello, "the job beside it");
}
