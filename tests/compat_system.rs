//! Compatibility tests (issue 10): Go programs, process groups and
//! sessions, and a consistent view of the machine. Each program runs
//! natively and in a job and the two are compared; where they differ by
//! right (the host has two CPUs, the job one vCPU), what must be equal is
//! compared and the job's own value is checked. One Go program is moved
//! to another host mid-run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mosvm_tests::*;

const LONG: Duration = Duration::from_secs(120);

/// Go's runtime reserves about 600 MiB of address space (PROT_NONE) for
/// its page summaries before main; the job's address space is its RAM.
const GO_MEM: &str = "1G";

fn go(name: &str) -> PathBuf {
    image(&format!("tests/go/{name}"))
}

fn opts<'a>(cwd: Option<&'a Path>, stdin: Option<&'a [u8]>, vm_args: Vec<&'a str>) -> Opts<'a> {
    Opts { cwd, stdin, vm_args, ..Default::default() }
}

/// stdout without the lines starting with `prefix`, and those lines.
fn split_lines(out: &str, prefix: &str) -> (String, Vec<String>) {
    let (mut rest, mut picked) = (String::new(), Vec::new());
    for line in out.lines() {
        if line.starts_with(prefix) {
            picked.push(line.to_string());
        } else {
            rest.push_str(line);
            rest.push('\n');
        }
    }
    (rest, picked)
}

/// The host's CPU count as the native run saw it.
fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Native and job runs agree but for the lines starting with `prefix`,
/// which the native run has as `native_line` and the job as `job_line`.
fn assert_same_but(what: &str, n: &Run, v: &Run, prefix: &str, native_line: &str, job_line: &str) {
    assert_eq!(n.status, 0, "{what} native: {n:?}");
    assert_eq!(v.status, n.status, "{what}: status differs: {v:?}");
    assert_eq!(v.stderr, n.stderr, "{what}: stderr differs");
    let (nrest, nl) = split_lines(&n.stdout, prefix);
    let (vrest, vl) = split_lines(&v.stdout, prefix);
    assert_eq!(vrest, nrest, "{what}: stdout differs");
    assert!(nl.iter().all(|l| l == native_line), "{what} native: {nl:?}, expected {native_line:?}");
    assert!(!vl.is_empty() && vl.iter().all(|l| l == job_line), "{what} in the job: {vl:?}, expected {job_line:?}");
}

#[test]
fn go_goroutines_timers_and_sync_match_native() {
    if !require_kvm("go_goroutines_timers_and_sync_match_native") {
        return;
    }
    let p = go("goroutines");
    let n = native(&p, &[], &Opts::default());
    let v = vm(&p, &[], &opts(None, None, vec!["--mem", GO_MEM]));
    let c = host_cpus();
    // runtime.NumCPU and GOMAXPROCS: the host's CPUs natively, the one vCPU in the job.
    assert_same_but("goroutines", &n, &v, "cpus ", &format!("cpus {c} {c}"), "cpus 1 1");
    assert!(v.stdout.contains("preempted ok") && v.stdout.contains("pingpong 1000"), "{v:?}");
}

#[test]
fn go_files_match_native() {
    if !require_kvm("go_files_match_native") {
        return;
    }
    let p = go("gofiles");
    let (dn, dv) = (scratch_dir("go-files-native"), scratch_dir("go-files-vm"));
    let stdin = b"some input for Go\n";
    let n = native(&p, &["tree"], &opts(Some(&dn), Some(stdin), vec![]));
    let v = vm(&p, &["tree"], &opts(Some(&dv), Some(stdin), vec!["--mem", GO_MEM]));
    assert_eq!(n.status, 0, "{n:?}");
    assert_eq!(v, n, "gofiles: {v:?}");
    assert!(v.stdout.contains("removed: true"), "{v:?}");
    // The files it left behind are the same.
    for f in ["tree/lines.txt", "tree/copy"] {
        assert_eq!(std::fs::read(dv.join(f)).unwrap(), std::fs::read(dn.join(f)).unwrap(), "{f}");
    }
    assert_eq!(std::fs::read_link(dv.join("tree/link")).unwrap(), std::fs::read_link(dn.join("tree/link")).unwrap());
    let _ = std::fs::remove_dir_all(dn);
    let _ = std::fs::remove_dir_all(dv);
}

#[test]
fn go_memory_and_gc_match_native() {
    if !require_kvm("go_memory_and_gc_match_native") {
        return;
    }
    let p = go("gogc");
    let n = native(&p, &["192"], &Opts::default());
    let v = vm(&p, &["192"], &opts(None, None, vec!["--mem", GO_MEM]));
    assert_eq!(n.status, 0, "{n:?}");
    assert_eq!(v, n, "gogc: {v:?}");
    assert!(v.stdout.contains("finalized 10 gc ran true"), "{v:?}");
}

#[test]
fn go_processes_and_signals_match_native() {
    if !require_kvm("go_processes_and_signals_match_native") {
        return;
    }
    let p = go("goexec");
    let cat = image("tests/cat");
    let args = [cat.to_str().unwrap(), "/bin/echo"];
    let n = native(&p, &args, &Opts::default());
    let v = vm(&p, &args, &opts(None, None, vec!["--mem", GO_MEM]));
    assert_eq!(n.status, 0, "{n:?}");
    assert_eq!(v, n, "goexec: {v:?}");
    for line in
        ["cat: 21000 bytes <nil>", "exit status: true true", "own group: <nil>", "signal: user defined signal 1"]
    {
        assert!(v.stdout.contains(line), "missing {line:?} in\n{}", v.stdout);
    }
}

#[test]
fn a_go_program_moves_mid_run() {
    if !require_kvm("a_go_program_moves_mid_run") {
        return;
    }
    let _l = migration_lock();
    let p = go("gomove");
    let (dn, dv) = (scratch_dir("go-move-native"), scratch_dir("go-move-vm"));
    let n = native(&p, &["out.txt"], &opts(Some(&dn), None, vec![]));
    assert_eq!(n.status, 0, "{n:?}");

    let sock = sock_path("go-move");
    let (recv, addr) = receiver(&[], Some(&dv));
    let src = source(&p, &["out.txt"], &["--mem", GO_MEM], &sock, Some(&dv));
    src.wait_for("the Go job to start", LONG, |o, _| o.contains("step 2\n"));
    let (m, json) = migrate(&sock, &addr, &[]);
    assert_eq!(m.status, 0, "migrate failed: {m:?}");
    assert!(json.contains("\"result\":\"ok\""), "{json}");
    let s = src.finish(LONG);
    let r = recv.finish(LONG);
    assert_eq!((s.status, r.status), (0, 0), "source {s:?}\nreceiver {r:?}");
    assert!(r.stdout.is_empty(), "the body's host printed the job's output: {r:?}");
    let c = host_cpus();
    // NumCPU and /proc/cpuinfo, before the move and after (the body then
    // runs where the host's /proc is out of its reach).
    let (nrest, nl) = split_lines(&n.stdout, "cpus ");
    let (vrest, vl) = split_lines(&s.stdout, "cpus ");
    assert_eq!(vrest, nrest, "the Go job's output after a move");
    assert_eq!(nl, [format!("cpus {c} {c} true"), format!("cpus after {c} {c} true")]);
    assert_eq!(vl, ["cpus 1 1 true", "cpus after 1 1 true"]);
    assert!(s.stdout.contains("setpgid: <nil>\npgrp is pid: true\n"), "{}", s.stdout);
    assert!(s.stdout.contains("uname kept: true true\n"), "{}", s.stdout);
    assert_eq!(std::fs::read(dv.join("out.txt")).unwrap(), std::fs::read(dn.join("out.txt")).unwrap());
    let _ = std::fs::remove_dir_all(dn);
    let _ = std::fs::remove_dir_all(dv);
}

#[test]
fn process_groups_and_sessions_match_native() {
    if !require_kvm("process_groups_and_sessions_match_native") {
        return;
    }
    // An absolute path: the program execs itself.
    let p = image("tests/pgroups");
    let n = native(&p, &[], &Opts::default());
    let v = vm(&p, &[], &Opts::default());
    assert_eq!(n.status, 0, "{n:?}");
    assert_eq!(v, n, "pgroups: native\n{}\njob\n{}", n.stdout, v.stdout);
    // The checks themselves, so that a native run that changed would show.
    for line in [
        "setsid as group leader: -1 Operation not permitted",
        "child: setsid is pid: 1",
        "child: setpgid as session leader: -1 Operation not permitted",
        "setpgid(child, nonexistent group): -1 Operation not permitted",
        "same: usr1|pgrp: 3",
        "other: usr1|pgrp: 2",
        "killed by SIGTERM: 2",
        "exec: pgrp is pid: 1",
    ] {
        assert!(v.stdout.contains(line), "missing {line:?} in\n{}", v.stdout);
    }
}

/// Fields 5 and 6 of /proc/PID/stat: the host's process group and session.
fn host_group_and_session(pid: u32) -> (u32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

#[test]
fn a_session_made_away_from_home_is_kept_back_home() {
    if !require_kvm("a_session_made_away_from_home_is_kept_back_home") {
        return;
    }
    let _l = migration_lock();
    let dir = scratch_dir("pgaway");
    let (sock, bsock) = (sock_path("pgaway"), sock_path("pgaway-b"));
    let (b, baddr) = receiver(&["--api-sock", bsock.to_str().unwrap()], None);
    let job = source(&image("tests/pgaway"), &[], &[], &sock, Some(&dir));
    job.wait_for("the job to start", LONG, |o, _| o.contains("start: "));
    let pid = job.child.id();
    // Spawned by this test: in the test's group, not a leader.
    assert_eq!(job.stdout(), "start: leader 0\n");
    let (m, json) = migrate(&sock, &baddr, &[]);
    assert!(m.status == 0 && json.contains("\"result\":\"ok\""), "{m:?}");
    std::fs::write(dir.join("cue-away"), "").unwrap();
    job.wait_for("setsid away", LONG, |o, _| o.contains("away: setpgid"));
    // Away, the session is the job's: the deputy's host process keeps its own.
    let (pgrp, sid) = host_group_and_session(pid);
    assert!(pgrp != pid && sid != pid, "the deputy changed session while the body was away");
    wait_for_path(&bsock);
    let (m, json) = migrate(&bsock, "home", &[]);
    assert!(m.status == 0 && json.contains("\"result\":\"ok\""), "{m:?}");
    std::fs::write(dir.join("cue-home"), "").unwrap();
    job.wait_for("the job back home", LONG, |o, _| o.contains("home: "));
    // Back home the host process leads the session the job made.
    assert_eq!(host_group_and_session(pid), (pid, pid));
    std::fs::write(dir.join("cue-end"), "").unwrap();
    let r = job.finish(LONG);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        "start: leader 0\n\
         away: setsid 1, sid is pid 1, pgrp is pid 1\n\
         away: setsid again -1 Operation not permitted\n\
         away: setpgid as session leader -1 Operation not permitted\n\
         home: sid is pid 1, pgrp is pid 1, getpgid(me) 1\n"
    );
    drop(b);
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `program` natively and in a job with RLIMIT_NOFILE set to
/// (`soft`, `hard`) by the caller.
fn with_nofile(program: &Path, args: &[&str], soft: u64, hard: u64, vm_args: &[&str]) -> (Run, Run) {
    let run = |vm: bool| {
        let mut cmd = if vm {
            let mut c = Command::new(mosvm_bin());
            c.arg("run").args(vm_args).arg("--").arg(program).args(args);
            c
        } else {
            let mut c = Command::new(program);
            c.args(args);
            c
        };
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let l = libc::rlimit { rlim_cur: soft, rlim_max: hard };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        run_command(cmd, &Opts::default())
    };
    (run(false), run(true))
}

#[test]
fn the_machine_looks_the_same_every_way_it_is_asked() {
    if !require_kvm("the_machine_looks_the_same_every_way_it_is_asked") {
        return;
    }
    let p = image("tests/sysview");
    let mut hard = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) };
    let hard = hard.rlim_max.min(8192);
    let (n, v) = with_nofile(&p, &[], 2000, hard, &[]);
    let c = host_cpus();
    assert_same_but("sysview", &n, &v, "cpus:", &format!("cpus: {c}"), "cpus: 1");
    for line in [
        "cpu counts agree: 1",
        "MemTotal == sysinfo totalram: 1",
        "MemFree ~ sysinfo freeram: 1",
        "uptime agrees: 1",
        &format!("nofile: 2000 {hard}"),
        "open until No file descriptors available, last fd + 1 == soft limit: 1",
        "dup until No file descriptors available at 64",
        "dup2 to 100: -1 Bad file descriptor",
        "F_DUPFD 100: -1 Invalid argument",
    ] {
        assert!(v.stdout.contains(line), "missing {line:?} in\n{}", v.stdout);
    }
}

/// The first value (in kB) of `key` in a /proc/meminfo text.
fn kb(meminfo: &str, key: &str) -> u64 {
    let line = meminfo.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap_or_else(|| panic!("no {key}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn meminfo_describes_the_guest() {
    if !require_kvm("meminfo_describes_the_guest") {
        return;
    }
    let cat = Path::new("/bin/cat");
    // /proc/meminfo however it is named; a job of 512 MiB has 510 MiB for
    // itself (the low 2 MiB hold the machine).
    for (cwd, path) in
        [("/", "/proc/meminfo"), ("/proc", "meminfo"), ("/tmp", "../proc/./meminfo"), ("/", "//proc//meminfo")]
    {
        let v = vm(cat, &[path], &opts(Some(Path::new(cwd)), None, vec!["--mem", "512M"]));
        assert_eq!(v.status, 0, "{path}: {v:?}");
        assert_eq!(kb(&v.stdout, "MemTotal"), 510 * 1024, "{path}: {}", v.stdout);
        let free = kb(&v.stdout, "MemFree");
        assert!(free < 510 * 1024 && free > 400 * 1024, "{path}: {}", v.stdout);
        assert_eq!(kb(&v.stdout, "MemAvailable"), free);
        assert_eq!(kb(&v.stdout, "SwapTotal"), 0);
    }
    // The job's CPU files, as generated.
    for (path, want) in [
        ("/sys/devices/system/cpu/online", "0\n"),
        ("/sys/devices/system/cpu/possible", "0\n"),
        ("/sys/devices/system/cpu/present", "0\n"),
    ] {
        let v = vm(cat, &[path], &Opts::default());
        assert_eq!((v.status, v.stdout.as_str()), (0, want), "{path}: {v:?}");
    }
    let v = vm(cat, &["/proc/cpuinfo"], &Opts::default());
    assert_eq!(v.stdout.matches("processor\t:").count(), 1, "{}", v.stdout);
    for line in ["processor\t: 0", "siblings\t: 1", "cpu cores\t: 1", "core id\t\t: 0"] {
        assert!(v.stdout.contains(line), "{line:?} in {}", v.stdout);
    }
    // The model is the host's first processor.
    let host = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let model = host.lines().find(|l| l.starts_with("model name")).unwrap();
    assert!(v.stdout.contains(model), "{model:?} in {}", v.stdout);
    let stat = vm(cat, &["/proc/stat"], &Opts::default());
    let cpus: Vec<&str> =
        stat.stdout.lines().filter(|l| l.starts_with("cpu")).map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(cpus, ["cpu", "cpu0"], "{}", stat.stdout);
}

/// A Debian tool, where it is installed (dynamically linked programs
/// run through the job's loader).
fn tool(name: &str) -> Option<PathBuf> {
    let p = Path::new("/usr/bin").join(name);
    p.exists().then_some(p)
}

#[test]
fn tools_count_one_cpu_and_the_guest_memory() {
    if !require_kvm("tools_count_one_cpu_and_the_guest_memory") {
        return;
    }
    if let Some(nproc) = tool("nproc") {
        let v = vm(&nproc, &[], &Opts::default());
        assert_eq!((v.status, v.stdout.as_str()), (0, "1\n"), "nproc: {v:?}");
        let v = vm(&nproc, &["--all"], &Opts::default());
        assert_eq!((v.status, v.stdout.as_str()), (0, "1\n"), "nproc --all: {v:?}");
    }
    if let Some(getconf) = tool("getconf") {
        for var in ["_NPROCESSORS_ONLN", "_NPROCESSORS_CONF"] {
            let v = vm(&getconf, &[var], &Opts::default());
            assert_eq!((v.status, v.stdout.as_str()), (0, "1\n"), "getconf {var}: {v:?}");
        }
    }
    if let Some(python) = tool("python3") {
        let code = "import os; print(os.cpu_count(), len(os.sched_getaffinity(0)))";
        let v = vm(&python, &["-c", code], &Opts::default());
        assert_eq!((v.status, v.stdout.as_str()), (0, "1 1\n"), "python3: {v:?}");
    }
    if let Some(free) = tool("free") {
        let v = vm(&free, &["-k"], &opts(None, None, vec!["--mem", "512M"]));
        assert_eq!(v.status, 0, "free: {v:?}");
        let mem: Vec<u64> = v
            .stdout
            .lines()
            .find(|l| l.starts_with("Mem:"))
            .unwrap_or_else(|| panic!("no Mem: line in {}", v.stdout))
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        // total, used, free, shared, buff/cache, available
        assert_eq!(mem[0], 510 * 1024, "{}", v.stdout);
        assert_eq!(mem[0], mem[1] + mem[2] + mem[4], "{}", v.stdout);
        assert!(mem[1] > 0 && mem[1] < 100 * 1024, "{}", v.stdout);
    }
}

/// The vDSO checker, built with glibc (static and dynamic) beside the
/// musl build the Makefile made.
fn vdso_builds() -> Vec<(String, PathBuf)> {
    let mut builds = vec![("musl static".to_string(), image("tests/vdso"))];
    let dir = root().join("target/compat-system");
    std::fs::create_dir_all(&dir).unwrap();
    let src = root().join("tests/guest/vdso.c");
    for (name, flags) in [("glibc static", &["-static"][..]), ("glibc dynamic", &[][..])] {
        let out = dir.join(format!("vdso-{}", name.replace(' ', "-")));
        let ok = Command::new("gcc").args(flags).arg("-O2").arg("-o").arg(&out).arg(&src).status();
        match ok {
            Ok(s) if s.success() => builds.push((name.to_string(), out)),
            _ => eprintln!("*** {name} build of vdso.c failed: not checked ***"),
        }
    }
    builds
}

#[test]
fn the_vdso_has_linux_s_versions_and_the_libcs_use_it() {
    if !require_kvm("the_vdso_has_linux_s_versions_and_the_libcs_use_it") {
        return;
    }
    for (name, p) in vdso_builds() {
        let n = native(&p, &[], &Opts::default());
        let v = vm(&p, &[], &Opts::default());
        assert_eq!(n.status, 0, "{name} native: {n:?}");
        assert_eq!(v, n, "{name}: native\n{}\njob\n{}", n.stdout, v.stdout);
        assert!(v.stdout.contains("__vdso_clock_gettime@LINUX_2.6: found"), "{name}: {}", v.stdout);
        assert!(v.stdout.contains("base definition: linux-vdso.so.1 (flags 1, index 1)"), "{name}: {}", v.stdout);
        // The C library finds the functions through its own lookup (which
        // checks versions): none of its 1000 calls leaves the VM.
        let t = vm(&p, &["libc"], &opts(None, None, vec!["--trace"]));
        assert_eq!((t.status, t.stdout.as_str()), (0, "libc calls: 400\n"), "{name}: {t:?}");
        let calls: Vec<&str> = t
            .stderr
            .lines()
            .filter(|l| ["clock_gettime(", "gettimeofday(", " time(", "getcpu("].iter().any(|c| l.contains(c)))
            .collect();
        assert!(calls.is_empty(), "{name}: time calls left the VM: {calls:?}");
    }
}

#[test]
fn limits_are_the_caller_s() {
    if !require_kvm("limits_are_the_caller_s") {
        return;
    }
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
    let hard = l.rlim_max.min(20000);
    let (n, v) = with_nofile(Path::new("/bin/cat"), &["/proc/self/limits"], 1500, hard, &[]);
    assert_eq!(n.status, 0, "{n:?}");
    assert_eq!(v, n, "/proc/self/limits: native\n{}\njob\n{}", n.stdout, v.stdout);
    assert!(
        v.stdout.contains(&format!("Max open files            1500                 {hard:<20} files")),
        "{}",
        v.stdout
    );
    if let Some(bash) = tool("bash") {
        let (n, v) = with_nofile(&bash, &["-c", "ulimit -a; ulimit -n 1000; ulimit -n; ulimit -Hn"], 1500, hard, &[]);
        assert_eq!(n.status, 0, "{n:?}");
        assert_eq!(v, n, "ulimit -a: native\n{}\njob\n{}", n.stdout, v.stdout);
    }
}

#[test]
fn uname_is_the_same_across_execve() {
    if !require_kvm("uname_is_the_same_across_execve") {
        return;
    }
    let (sh, uname) = (Path::new("/bin/sh"), "/bin/uname");
    let script = format!("{uname} -a; exec {uname} -snrvm");
    let n = native(sh, &["-c", &script], &Opts::default());
    let v = vm(sh, &["-c", &script], &Opts::default());
    assert_eq!(n.status, 0, "{n:?}");
    assert_eq!(v, n, "uname: {v:?}");
}

#[test]
fn nice_values_are_the_caller_s() {
    if !require_kvm("nice_values_are_the_caller_s") {
        return;
    }
    let Some(nice) = tool("nice") else { return };
    let n = nice.to_str().unwrap();
    // The caller's nice value, and one the job sets for itself.
    for inner in [vec![n], vec![n, "-n", "3", n]] {
        let run = |vm: bool| {
            let mut cmd = Command::new(&nice);
            cmd.args(["-n", "5"]);
            if vm {
                cmd.arg(mosvm_bin()).args(["run", "--"]);
            }
            cmd.args(&inner);
            run_command(cmd, &Opts::default())
        };
        let (native_run, job) = (run(false), run(true));
        assert_eq!(native_run.status, 0, "{native_run:?}");
        assert_eq!(job, native_run, "{inner:?}: {job:?}");
    }
}

#[test]
fn bad_arguments_get_linux_s_errors() {
    if !require_kvm("bad_arguments_get_linux_s_errors") {
        return;
    }
    let p = image("tests/sysedges");
    let n = native(&p, &[], &Opts::default());
    let v = vm(&p, &[], &Opts::default());
    assert_eq!(n.status, 0, "{n:?}");
    assert_eq!(v, n, "native\n{}\njob\n{}", n.stdout, v.stdout);
}
