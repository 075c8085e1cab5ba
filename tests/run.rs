//! `mosvm run` behaves like running the program directly: same stdout,
//! stderr and exit status, for every image and for libc's corner cases.

use mosvm_tests::*;

/// Asserts that a program gives the same result in the VM and natively.
fn same(test: &str, program: &str, args: &[&str], opts: Opts) -> Option<Run> {
    if !require_kvm(test) {
        return None;
    }
    let p = image(program);
    let n = native(&p, args, &opts);
    let v = vm(&p, args, &opts);
    assert_eq!(v, n, "{program} {args:?}: VM (left) and native (right) differ");
    Some(v)
}

#[test]
fn hello_musl() {
    let r = same("hello_musl", "hello", &[], Opts::default());
    if let Some(r) = r {
        assert_eq!(r.stdout, "hello, world\n");
    }
}

#[test]
fn hello_glibc_static_and_static_pie() {
    same("hello_glibc", "tests/hello-glibc", &[], Opts::default());
    same("hello_glibc_pie", "tests/hello-glibc-pie", &[], Opts::default());
}

#[test]
fn cpu_image() {
    let r = same("cpu_image", "cpu", &["300000000"], Opts::default());
    if let Some(r) = r {
        assert!(r.stdout.contains("checksum"), "{}", r.stdout);
    }
}

#[test]
fn mem_image() {
    let r = same("mem_image", "mem", &["64", "16", "10"], Opts::default());
    if let Some(r) = r {
        assert!(r.stdout.contains("never went backwards"), "{}", r.stdout);
    }
}

#[test]
fn files_image() {
    if !require_kvm("files_image") {
        return;
    }
    let input: String = (1..=2000).map(|i| format!("line {i} of the input\n")).collect();
    let (dn, dv) = (scratch_dir("files-native"), scratch_dir("files-vm"));
    std::fs::write(dn.join("in.txt"), &input).unwrap();
    std::fs::write(dv.join("in.txt"), &input).unwrap();
    let p = image("files");
    let args = ["in.txt", "out.txt", "3"];
    let n = native(&p, &args, &Opts { cwd: Some(&dn), ..Default::default() });
    let v = vm(&p, &args, &Opts { cwd: Some(&dv), ..Default::default() });
    assert_eq!(v, n);
    assert_eq!(n.status, 0, "{n:?}");
    assert_eq!(std::fs::read(dn.join("out.txt")).unwrap(), std::fs::read(dv.join("out.txt")).unwrap());
    assert!(!dv.join("out.txt.tmp").exists());
    let _ = std::fs::remove_dir_all(dn);
    let _ = std::fs::remove_dir_all(dv);
}

/// Faults end the job like Linux ends a process; the VM adds one line
/// naming the signal, rip and address.
#[test]
fn crash_modes() {
    if !require_kvm("crash_modes") {
        return;
    }
    let p = image("crash");
    for (mode, status, signal) in [
        ("null", 139, Some("SIGSEGV")),
        ("gp", 139, Some("SIGSEGV")),
        ("stack", 139, Some("SIGSEGV")),
        ("div", 136, Some("SIGFPE")),
        ("ud", 132, Some("SIGILL")),
        ("abort", 134, None),
    ] {
        let n = native(&p, &[mode], &Opts::default());
        let v = vm(&p, &[mode], &Opts::default());
        assert_eq!(n.status, status, "native crash {mode}");
        assert_eq!(v.status, status, "vm crash {mode}: {v:?}");
        assert_eq!(v.stdout, n.stdout, "crash {mode}");
        match signal {
            Some(sig) => {
                let line = v.stderr.trim_end();
                assert_eq!(line.lines().count(), 1, "one line on stderr: {line}");
                assert!(line.contains(sig) && line.contains("rip 0x") && line.contains("address 0x"), "{line}");
            }
            None => assert_eq!(v.stderr, n.stderr),
        }
    }
    let v = vm(&p, &["null"], &Opts::default());
    assert!(v.stderr.contains("address 0x10"), "NULL+16 write reports its address: {}", v.stderr);
}

#[test]
fn argv_env_auxv() {
    let opts = Opts {
        env: vec![("MOSVM_TEST_A", "alpha"), ("MOSVM_TEST_B", "b e t a"), ("MOSVM_TEST_EMPTY", "")],
        ..Default::default()
    };
    let r = same("argv_env_auxv", "tests/args", &["one", "two words", "", "--flag", "-x"], opts);
    if let Some(r) = r {
        assert!(r.stdout.contains("argv[2]=[two words]"));
        assert!(r.stdout.contains("AT_RANDOM: 16 random bytes"));
        assert_eq!(r.status, 6);
    }
}

#[test]
fn env_option_sets_variables() {
    if !require_kvm("env_option") {
        return;
    }
    let p = image("tests/args");
    let v = vm(&p, &[], &Opts { vm_args: vec!["--env", "MOSVM_TEST_A=set-by-flag"], ..Default::default() });
    assert!(v.stdout.contains("env MOSVM_TEST_A=set-by-flag"), "{}", v.stdout);
}

#[test]
fn big_guest_allocates_512_mib() {
    if !require_kvm("big_guest") {
        return;
    }
    let p = image("tests/bigalloc");
    let v = vm(&p, &["512"], &Opts { vm_args: vec!["--mem", "1G"], ..Default::default() });
    let n = native(&p, &["512"], &Opts::default());
    assert_eq!(v, n);
    assert!(v.stdout.contains("touched 512 MiB"));
    // A 256 MiB guest cannot hold it: malloc fails cleanly.
    let small = vm(&p, &["512"], &Opts { vm_args: vec!["--mem", "256M"], ..Default::default() });
    assert_eq!(small.stdout, "malloc(512 MiB) failed\n");
    assert_eq!(small.status, 1);
}

#[test]
fn bad_pointers_get_efault() {
    let r = same("bad_pointers", "tests/badptr", &[], Opts::default());
    if let Some(r) = r {
        assert!(r.stdout.contains("write(1, 0x1, 10)                  -> -1 Bad address"), "{}", r.stdout);
        assert!(r.stdout.contains("still alive"));
    }
}

#[test]
fn unknown_syscalls_get_enosys_and_are_logged_once() {
    if !require_kvm("unknown_syscalls") {
        return;
    }
    let p = image("tests/unknown");
    let n = native(&p, &[], &Opts::default());
    let v = vm(&p, &[], &Opts::default());
    assert!(v.stdout.contains("Function not implemented"));
    // The notice is for the operator: the job's output is the native one.
    assert_eq!(v, n, "an unsupported call must not change the job's output");
    let mut cmd = std::process::Command::new(mosvm_bin());
    cmd.args(["run", "--trace", "--"]).arg(&p);
    let t = run_command(cmd, &Opts::default());
    assert_eq!(t.stdout, n.stdout);
    assert_eq!(t.stderr.matches("unknown system call 999,").count(), 1, "{}", t.stderr);
    assert_eq!(t.stderr.matches("unknown system call 100000,").count(), 1, "{}", t.stderr);
}

#[test]
fn mmap_semantics() {
    same("mmap_semantics", "tests/mmap", &[], Opts::default());
}

#[test]
fn signals_musl_and_glibc() {
    for prog in ["tests/signals", "tests/signals-glibc"] {
        if let Some(r) = same("signals", prog, &[], Opts::default()) {
            assert_eq!(r.status, 143, "{prog}: {r:?}");
            assert!(r.stdout.contains("SIGSEGV handled again: 2"), "{prog}: {}", r.stdout);
            assert!(r.stdout.contains("on altstack: 1"), "{prog}: {}", r.stdout);
        }
    }
}

#[test]
fn file_system_calls() {
    if !require_kvm("file_system_calls") {
        return;
    }
    let (dn, dv) = (scratch_dir("fs-native"), scratch_dir("fs-vm"));
    let p = image("tests/fsops");
    let n = native(&p, &[], &Opts { cwd: Some(&dn), ..Default::default() });
    let v = vm(&p, &[], &Opts { cwd: Some(&dv), ..Default::default() });
    assert_eq!(v, n);
    assert!(n.stdout.contains("rmdir: 0"), "{}", n.stdout);
    let _ = std::fs::remove_dir_all(dn);
    let _ = std::fs::remove_dir_all(dv);
}

#[test]
fn stdin_is_passed_through() {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = same("stdin", "tests/cat", &[], Opts { stdin: Some(&data), ..Default::default() });
    if let Some(r) = r {
        assert_eq!(r.stdout_bytes, data, "stdin came out of the job changed");
        assert_eq!(r.stderr, "300000 bytes\n");
    }
}

#[test]
fn dynamic_elf_runs_as_natively() {
    if !require_kvm("dynamic_elf") {
        return;
    }
    let prog = image("tests/hello-dynamic");
    let r = vm(&prog, &[], &Opts::default());
    assert_eq!(r, native(&prog, &[], &Opts::default()), "{r:?}");
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stdout.contains("hello"), "{r:?}");
}

#[test]
fn non_elf_and_missing_files_are_refused_clearly() {
    if !require_kvm("non_elf") {
        return;
    }
    let r = vm(&image("tests/not-elf"), &[], &Opts::default());
    assert_eq!(r.status, 126, "{r:?}");
    assert!(r.stderr.contains("not an ELF executable"), "{}", r.stderr);
    let r = vm(&image("tests/script.sh"), &[], &Opts::default());
    assert_eq!(r.status, 126, "{r:?}");
    assert!(r.stderr.contains("script"), "{}", r.stderr);
    let r = vm(std::path::Path::new("/nonexistent/prog"), &[], &Opts::default());
    assert_eq!(r.status, 127, "{r:?}");
    assert!(r.stderr.contains("/nonexistent/prog"), "{}", r.stderr);
    let r = vm(std::path::Path::new("/"), &[], &Opts::default());
    assert_eq!(r.status, 126, "{r:?}");
}

#[test]
fn bad_cli_arguments() {
    let r = mosvm(["run", "--mem", "lots", "/bin/true"]);
    assert_eq!(r.status, 2);
    assert!(r.stderr.contains("not a size"), "{}", r.stderr);
    let r = mosvm(["run", "--env", "NOEQUALS", "/bin/true"]);
    assert_eq!(r.status, 2);
    assert!(r.stderr.contains("K=V"), "{}", r.stderr);
    let r = mosvm(["run"]);
    assert_eq!(r.status, 2);
    let r = mosvm(["frobnicate"]);
    assert_eq!(r.status, 2);
    if require_kvm("bad_cli_mem_range") {
        let r = mosvm(["run", "--mem", "1M", image("hello").to_str().unwrap()]);
        assert_eq!(r.status, 125);
        assert!(r.stderr.contains("out of range"), "{}", r.stderr);
    }
}

/// `mosvm run cpu --seconds 30` with its stdout piped to us, once it runs.
fn spinning_job() -> (std::process::Child, std::io::BufReader<std::process::ChildStdout>) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(mosvm_bin())
        .args(["run", "--"])
        .arg(image("cpu"))
        .args(["--seconds", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("progress"), "{line}");
    (child, out)
}

/// Ctrl-C reaches the job: without a handler it dies of SIGINT (130).
#[test]
fn sigint_is_forwarded() {
    if !require_kvm("sigint") {
        return;
    }
    let (mut child, _out) = spinning_job();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let started = std::time::Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(started.elapsed().as_secs() < 10, "the job did not stop promptly");
}

/// Writing to a closed pipe kills the job with SIGPIPE, as `prog | head` expects.
#[test]
fn sigpipe_on_closed_stdout() {
    if !require_kvm("sigpipe") {
        return;
    }
    let (mut child, out) = spinning_job();
    drop(out);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(141), "{status:?}");
}

/// Thousands of system calls with hostile arguments: the VMM answers every
/// one (the job finishes), never fails itself.
#[test]
fn hostile_syscalls_do_not_break_the_vmm() {
    if !require_kvm("hostile_syscalls") {
        return;
    }
    let dir = scratch_dir("fuzz");
    let p = image("tests/fuzz");
    for seed in 1..=30 {
        let s = seed.to_string();
        let r = vm(&p, &[&s, "5000"], &Opts { cwd: Some(&dir), ..Default::default() });
        assert_eq!(r.status, 0, "seed {seed}: {}", r.stderr);
        assert!(r.stdout.contains("done: 5000 calls"), "seed {seed}: {:?}", r.stdout);
        assert!(!r.stderr.contains("failed") && !r.stderr.contains("panicked"), "seed {seed}: {}", r.stderr);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn timers_and_alarms() {
    if let Some(r) = same("timers", "tests/timers", &[], Opts::default()) {
        assert_eq!(r.status, 142);
        assert!(r.stdout.contains("alarm fired while spinning: 1"), "{}", r.stdout);
        assert!(r.stdout.contains("value 4242"), "{}", r.stdout);
    }
}

#[test]
fn proc_self_describes_the_job() {
    if let Some(r) = same("proc_self", "tests/procself", &["arg one", "two"], Opts::default()) {
        assert!(!r.stdout.contains(": 0"), "{}", r.stdout);
    }
}

/// A program nobody here wrote: Debian's static busybox, many applets, in
/// the VM and natively, with the same output.
#[test]
fn busybox_applets() {
    if !require_kvm("busybox") {
        return;
    }
    let busybox = std::path::Path::new("/bin/busybox");
    assert!(busybox.exists(), "/bin/busybox is missing: make test installs busybox-static");
    let dir = scratch_dir("busybox");
    let nums: String = (1..=5000).map(|i| format!("{}\n", (i * 7919) % 10007)).collect();
    std::fs::write(dir.join("nums.txt"), &nums).unwrap();
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::write(dir.join("sub/deeper/f.txt"), "x").unwrap();
    let cases: &[&[&str]] = &[
        &["ls", "-la", "sub"],
        &["sort", "-n", "nums.txt"],
        &["md5sum", "nums.txt"],
        &["sha256sum", "nums.txt"],
        &["wc", "nums.txt"],
        &["grep", "-c", "7", "nums.txt"],
        &["awk", "{s+=$1} END {print s}", "nums.txt"],
        &["sed", "-n", "100,105p", "nums.txt"],
        &["find", ".", "-name", "*.txt"],
        &["du", "-s", "sub"],
        &["od", "-x", "nums.txt"],
        &["gzip", "-c", "nums.txt"],
        &["bzip2", "-c", "nums.txt"],
        &["tar", "cf", "-", "sub"],
        &["expr", "6", "*", "7"],
        &["printf", "%s-%d\\n", "a", "3"],
        &["basename", "/a/b/c.txt", ".txt"],
        &["uname", "-a"],
        &["id"],
        &["pwd"],
        &["date", "+%Y"],
        &["stat", "-c", "%s %F", "nums.txt"],
        &["readlink", "/proc/self/exe"],
        &["cat", "/proc/self/cmdline"],
    ];
    for args in cases {
        let opts = Opts { cwd: Some(&dir), stdin: Some(b"stdin text\n"), ..Default::default() };
        let n = native(busybox, args, &opts);
        let v = vm(busybox, args, &opts);
        assert_eq!(v, n, "busybox {args:?}");
        assert_eq!(n.status, 0, "busybox {args:?}: {n:?}");
    }
    // a pipeline's worth of work through stdin
    let opts = Opts { cwd: Some(&dir), stdin: Some(nums.as_bytes()), ..Default::default() };
    assert_eq!(vm(busybox, &["sort", "-u"], &opts), native(busybox, &["sort", "-u"], &opts));
    let _ = std::fs::remove_dir_all(dir);
}

/// Threads (musl and glibc): they run one at a time on the job's vCPU,
/// with the behaviour of real threads.
#[test]
fn threads_musl_and_glibc() {
    for prog in ["tests/threads", "tests/threads-glibc"] {
        if let Some(r) = same("threads", prog, &[], Opts::default()) {
            assert_eq!(r.status, 0, "{prog}: {r:?}");
            assert!(!r.stdout.contains(": 0"), "{prog}: {}", r.stdout);
            assert!(r.stdout.contains("sum 500500"), "{prog}: {}", r.stdout);
        }
    }
}

/// Sockets: TCP between threads, UDP, a socketpair passing a descriptor.
#[test]
fn sockets() {
    if let Some(r) = same("sockets", "tests/sockets", &[], Opts::default()) {
        assert!(r.stdout.contains("client got 9: HELLO TCP"), "{}", r.stdout);
        assert!(r.stdout.contains("through a passed fd"), "{}", r.stdout);
    }
}

/// The VM's stderr without mosvm's own diagnostics (a forked child that
/// crashes is reported by mosvm as well as by its parent).
fn without_mosvm_lines(stderr: &str) -> String {
    stderr.lines().filter(|l| !l.starts_with("mosvm: ")).map(|l| format!("{l}\n")).collect()
}

/// Processes (musl and glibc): fork, vfork, posix_spawn, execve, wait,
/// pipes between processes, kill and SIGCHLD, as natively.
#[test]
fn processes_musl_and_glibc() {
    if !require_kvm("processes") {
        return;
    }
    for prog in ["tests/procs", "tests/procs-glibc"] {
        let p = image(prog);
        let n = native(&p, &[], &Opts::default());
        let v = vm(&p, &[], &Opts::default());
        assert_eq!(v.stdout, n.stdout, "{prog}: VM (left) and native (right) differ");
        assert_eq!(v.status, n.status, "{prog}: {v:?}");
        assert_eq!(without_mosvm_lines(&v.stderr), n.stderr, "{prog}");
        assert_eq!(v.status, 5, "{prog}: {v:?}");
        for line in [
            "global in parent: 1",
            "cloexec fd after exec: closed",
            "20 children: 20 right",
            "spawned child says hello",
        ] {
            assert!(v.stdout.contains(line), "{prog}: no {line:?} in {}", v.stdout);
        }
    }
}

/// Shell scripts: busybox sh runs pipelines, command substitution,
/// background jobs and scripts, each process its own micro-VM.
#[test]
fn shell_scripts() {
    if !require_kvm("shell_scripts") {
        return;
    }
    let dir = scratch_dir("shell");
    let script = dir.join("count.sh");
    std::fs::write(&script, "#!/bin/busybox sh\necho \"script $0 got $# args: $*\"\nexit 4\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let b = "/bin/busybox";
    let cases = [
        format!("{b} seq 1 2000 | {b} grep 7 | {b} sort -r | {b} head -n 3 | {b} wc -l"),
        format!("x=$({b} echo inner | {b} tr a-z A-Z); echo \"got $x\""),
        format!("{b} sleep 0.2 & {b} echo started; wait $!; echo \"waited $?\""),
        "./count.sh a 'b c'; echo \"status $?\"".to_string(),
        format!("{b} sh -c 'kill -TERM $$'; echo \"killed $?\""),
        format!("for i in 1 2 3 4 5; do {b} expr $i \\* $i; done | {b} awk '{{s+=$1}} END {{print s}}'"),
        format!("{b} false || echo \"false gave $?\"; ( exit 9 ); echo \"subshell $?\""),
        format!("echo data > f.txt && {b} cat f.txt && {b} rm f.txt && {b} test ! -e f.txt && echo removed"),
        format!("exec {b} echo replaced"),
    ];
    for cmd in &cases {
        let opts = Opts { cwd: Some(&dir), ..Default::default() };
        let n = native(std::path::Path::new(b), &["sh", "-c", cmd], &opts);
        let v = vm(std::path::Path::new(b), &["sh", "-c", cmd], &opts);
        assert_eq!(v, n, "sh -c {cmd:?}: VM (left) and native (right) differ");
        assert!(!n.stdout.is_empty(), "sh -c {cmd:?}: {n:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A job execs a dynamically linked program as Linux does: its loader
/// comes from the job's file system.
#[test]
fn exec_of_a_dynamic_program_runs_it() {
    if !require_kvm("exec_dynamic") {
        return;
    }
    let dynamic = image("tests/hello-dynamic");
    let cmd = format!("{}; echo \"status $?\"", dynamic.display());
    let v = vm(std::path::Path::new("/bin/busybox"), &["sh", "-c", &cmd], &Opts::default());
    let n = native(std::path::Path::new("/bin/busybox"), &["sh", "-c", &cmd], &Opts::default());
    assert_eq!(v, n, "{v:?}");
    assert!(v.stdout.ends_with("status 0\n") && v.stdout.contains("hello"), "{v:?}");
}

/// Clocks: read through the job's vDSO without an exit, and the same
/// clock as the system calls (interleaved reads never go backwards,
/// absolute sleeps never end early); with MOSVM_CLOCK=host the vDSO makes
/// system calls and everything still holds.
#[test]
fn clocks_through_the_vdso() {
    if !require_kvm("clocks") {
        return;
    }
    for prog in ["tests/clocks", "tests/clocks-glibc"] {
        for host_clock in [false, true] {
            let opts =
                Opts { env: if host_clock { vec![("MOSVM_CLOCK", "host")] } else { vec![] }, ..Default::default() };
            let p = image(prog);
            let n = native(&p, &[], &Opts::default());
            let v = vm(&p, &[], &opts);
            assert_eq!(v, n, "{prog} (host clock: {host_clock}): VM (left) and native (right) differ");
            assert!(v.stdout.contains("MONOTONIC: backwards 0") && v.stdout.contains("ending early: 0"), "{v:?}");
            // libc's clock_gettime, gettimeofday and time: exits only on the host clock.
            let traced = vm(&p, &["calls", "1000"], &Opts { vm_args: vec!["--trace"], ..opts.clone() });
            let exits = traced
                .stderr
                .lines()
                .filter(|l| {
                    ["syscall clock_gettime(", "syscall gettimeofday(", "syscall time("].iter().any(|s| l.contains(s))
                })
                .count();
            assert_eq!(traced.stdout, "done 1000\n", "{traced:?}");
            if host_clock {
                assert!(exits >= 3000, "{prog}: {exits} clock exits with MOSVM_CLOCK=host");
            } else {
                assert_eq!(exits, 0, "{prog}: clock reads left the VM");
            }
        }
    }
}
