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

/// The hostile set together, on one daemon, beside a job that must not
/// notice: wild pointers to every call family, an allocation past
/// `--mem`, a fork bomb, descriptor exhaustion and the /proc escapes, each
/// a job of the daemon's host, while another job runs away from home in a
/// confined body. Each hostile job gets errors or a Linux-like death and
/// its record says how it ended; both daemons keep answering; the job
/// beside them ends with its native output and files.
#[test]
fn hostile_jobs_leave_the_daemons_and_other_jobs_alone() {
    use mosvm_host::api::JobState;
    use mosvm_tests::emulated::{wait_until, Cluster};
    use std::process::Command;
    use std::time::Duration;
    if !require_kvm("hostile_jobs_leave_the_daemons_and_other_jobs_alone") {
        return;
    }
    let _l = migration_lock();
    let c = Cluster::start("hostile", 2);
    c.wait_all_alive(Duration::from_secs(10));
    let (a, b) = (&c.hosts[0], &c.hosts[1]);
    let registered = |args: &[&str], cwd: &std::path::Path, nofile: Option<u32>| {
        let mut cmd = match nofile {
            Some(n) => {
                let mut sh = Command::new("sh");
                // A common setup: a soft limit of 1024 under a hard one of N.
                sh.arg("-c").arg(format!("ulimit -Sn 1024 && ulimit -Hn {n} && exec \"$0\" \"$@\"")).arg(mosvm_bin());
                sh
            }
            None => Command::new(mosvm_bin()),
        };
        cmd.arg("run").args(args).current_dir(cwd).env("MOSVM_SOCK", &a.sock);
        Proc::spawn(cmd)
    };

    // The job beside them: its files and output all come from home.
    let homework = image("tests/homework");
    let input: String = (1..=5000).map(|i| format!("input line {i}\n")).collect();
    let dirs = ["native", "beside"].map(|n| {
        let d = c.base.join(n).join("job");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("in.txt"), &input).unwrap();
        d
    });
    let hw_args = ["in.txt", "out.txt", "120"];
    let native_hw = native(&homework, &hw_args, &Opts { cwd: Some(&dirs[0]), ..Opts::default() });
    let hw = homework.to_str().unwrap();
    let beside = registered(&["--", hw, hw_args[0], hw_args[1], hw_args[2]], &dirs[1], None);
    let mut beside_id = None;
    wait_until("the job beside to register", Duration::from_secs(10), || {
        beside_id = a.ps(false).first().filter(|j| j.control_sock.is_some()).map(|j| j.id);
        beside_id.is_some()
    });
    let beside_id = beside_id.unwrap();
    beside.wait_for("round 3", Duration::from_secs(30), |o, _| o.contains("round 3 of"));
    let m = a.at(&["migrate", &beside_id.to_string(), "--to", &b.name, "--json"]);
    assert_eq!(m.status, 0, "the move of the job beside: {m:?}");

    // The hostile set, all at once.
    struct Hostile {
        name: &'static str,
        args: Vec<String>,
        nofile: Option<u32>,
        /// Its status and what its output must hold.
        status: i32,
        says: &'static str,
    }
    let img = |n: &str| image(n).display().to_string();
    let set = [
        Hostile {
            name: "wild pointers and lengths",
            args: vec!["--".into(), img("tests/badptr")],
            nofile: None,
            status: 0,
            says: "Bad address",
        },
        Hostile {
            name: "512 MiB past --mem 64M",
            args: vec!["--mem".into(), "64M".into(), "--".into(), img("tests/bigalloc"), "512".into()],
            nofile: None,
            status: 1,
            says: "malloc(512 MiB) failed",
        },
        Hostile {
            name: "a fork bomb",
            args: vec!["--".into(), img("tests/forkbomb")],
            nofile: None,
            status: 0,
            says: "then fork: Resource temporarily unavailable",
        },
        Hostile {
            name: "descriptor exhaustion",
            args: vec!["--".into(), img("tests/fdbomb")],
            nofile: Some(4096),
            status: 0,
            says: "after 32 pipes",
        },
        Hostile {
            name: "/proc escapes",
            args: vec!["--".into(), img("tests/procescape")],
            nofile: None,
            status: 0,
            says: "/proc/self/mem",
        },
    ];
    let scratch = c.base.join("hostile");
    std::fs::create_dir_all(&scratch).unwrap();
    let procs: Vec<Proc> = set
        .iter()
        .map(|h| registered(&h.args.iter().map(String::as_str).collect::<Vec<_>>(), &scratch, h.nofile))
        .collect();
    let mut report = Vec::new();
    for (h, p) in set.iter().zip(procs) {
        let pid = p.child.id();
        let r = p.finish(Duration::from_secs(120));
        let said = r.stdout.lines().next().unwrap_or("").to_string();
        report.push(format!("{}: exit {}, {said:?} {}", h.name, r.status, r.stderr.trim()));
        assert_eq!(r.status, h.status, "{}: {r:?}", h.name);
        assert!(r.stdout.contains(h.says), "{}: {}", h.name, r.stdout);
        assert!(!r.stderr.contains("panicked"), "{}: {}", h.name, r.stderr);
        if h.name == "/proc escapes" {
            let attempts = parse(&r.stdout);
            for bad in BAD {
                assert!(with_verdict(&attempts, bad).is_empty(), "{bad}: {:?}", with_verdict(&attempts, bad));
            }
        }
        // Its record says how it ended.
        wait_until(&format!("the record of {}", h.name), Duration::from_secs(10), || {
            a.ps(true)
                .iter()
                .any(|j| j.deputy_pid == Some(pid) && j.state == JobState::Exited && j.exit_status == Some(h.status))
        });
    }
    eprintln!("hostile set: {}", report.join("; "));

    // Both daemons still answer, and the job beside them never noticed.
    assert!(a.hosts().len() == 2 && b.hosts().len() == 2);
    let r = beside.finish(Duration::from_secs(120));
    assert_eq!((r.status, &r.stdout), (native_hw.status, &native_hw.stdout), "the job beside: {}", r.stderr);
    assert_eq!(std::fs::read(dirs[1].join("out.txt")).unwrap(), std::fs::read(dirs[0].join("out.txt")).unwrap());
    let rec = a.wait_job(beside_id, Duration::from_secs(10));
    assert_eq!((rec.state, rec.exit_status, rec.moves), (JobState::Exited, Some(native_hw.status), 1));
}
