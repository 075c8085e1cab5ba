//! Compatibility tests (issue 10): event descriptors (epoll, eventfd,
//! timerfd, signalfd) and the job's descriptor table (descriptors above 2
//! inherited, /dev/fd and /proc/self/fd, FIFOs, fadvise, the descriptor
//! limit), each compared byte for byte with a native run, and each kind
//! once moved to another host while it blocks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mosvm_tests::*;

const LONG: Duration = Duration::from_secs(120);

/// Runs `program args` natively and in a job, through `/bin/sh -c SETUP;
/// exec ...` (redirections, limits), in `cwd`, with `stdin`.
fn both(setup: &str, program: &Path, args: &[&str], cwd: &Path, stdin: &[u8]) -> (Run, Run) {
    let run = |vm: bool| {
        let mut cmd = Command::new("/bin/sh");
        let exec = if vm { format!("exec {} run -- \"$@\"", mosvm_bin().display()) } else { "exec \"$@\"".into() };
        cmd.arg("-c").arg(format!("{setup}\n{exec}")).arg("sh").arg(program).args(args);
        run_command(cmd, &Opts { cwd: Some(cwd), stdin: Some(stdin), ..Default::default() })
    };
    (run(false), run(true))
}

fn assert_same(what: &str, n: &Run, v: &Run) {
    assert_eq!(v.stdout, n.stdout, "{what}: stdout differs (native stderr {:?}, vm stderr {:?})", n.stderr, v.stderr);
    assert_eq!(v.stderr, n.stderr, "{what}: stderr differs");
    assert_eq!(v.status, n.status, "{what}: status differs");
}

#[test]
fn epoll_eventfd_and_timerfd_match_native() {
    if !require_kvm("epoll_eventfd_and_timerfd_match_native") {
        return;
    }
    let dir = scratch_dir("fds-epoll");
    let (n, v) = both("", &image("tests/epoll"), &[], &dir, b"");
    assert_eq!(n.status, 0, "{n:?}");
    assert!(!n.stdout.contains("WRONG"), "the native run itself disagrees: {}", n.stdout);
    assert!(n.stdout.contains("woken by a thread: 1 10") && n.stdout.contains("anon_inode:[eventpoll]"), "{n:?}");
    assert_same("epoll", &n, &v);
}

#[test]
fn signalfd_matches_native() {
    if !require_kvm("signalfd_matches_native") {
        return;
    }
    let dir = scratch_dir("fds-signalfd");
    let (n, v) = both("", &image("tests/signalfd"), &[], &dir, b"");
    assert_eq!(n.status, 0, "{n:?}");
    assert!(n.stdout.contains("epoll woken by the timer's signal: 1 data 77"), "{n:?}");
    assert_same("signalfd", &n, &v);
}

#[test]
fn the_descriptor_table_matches_native() {
    if !require_kvm("the_descriptor_table_matches_native") {
        return;
    }
    // One directory for both (the paths readlink shows are the same).
    let dir = scratch_dir("fds-table");
    std::fs::write(dir.join("three"), "file three\n").unwrap();
    let setup = "ulimit -Sn 4096; exec 3<three 5>five";
    let prog = image("tests/fdtable");
    let run = |dir: &PathBuf, vm: bool| {
        let mut cmd = Command::new("/bin/sh");
        let exec = if vm { format!("exec {} run -- \"$@\"", mosvm_bin().display()) } else { "exec \"$@\"".into() };
        cmd.arg("-c").arg(format!("{setup}\n{exec}")).arg("sh").arg(&prog);
        run_command(cmd, &Opts { cwd: Some(dir), stdin: Some(b"standard input\n"), ..Default::default() })
    };
    let n = run(&dir, false);
    std::fs::remove_file(dir.join("five")).unwrap();
    let v = run(&dir, true);
    assert_eq!(n.status, 0, "{n:?}");
    for want in ["read fd 3: 11 file three", "fifo read: 16 through the fifo", "dup2 to 4096: Bad file descriptor"] {
        assert!(n.stdout.contains(want), "native run: {want:?} missing: {}", n.stdout);
    }
    assert_same("fdtable", &n, &v);
    assert_eq!(std::fs::read(dir.join("five")).unwrap(), b"to five\n", "what the job wrote to its inherited fd 5");
    // The listing is the job's: none of the VMM's descriptors (/dev/kvm).
    assert!(!v.stdout.contains("kvm"), "{}", v.stdout);
}

/// Shell idioms in busybox sh (static): here-documents, descriptors above
/// 2, swapping stdout and stderr, a FIFO with a reader and a writer,
/// /dev/stdin and /proc/self/fd.
#[test]
fn busybox_shell_idioms_match_native() {
    if !require_kvm("busybox_shell_idioms_match_native") {
        return;
    }
    let (dn, dv) = (scratch_dir("fds-busybox-native"), scratch_dir("fds-busybox-vm"));
    let script = r#"
cat <<EOF
here-doc with $((6 * 7))
EOF
printf 'one\ntwo\n' > lines
exec 3<lines
read -r a <&3
read -r b <&3
echo "fd 3 gave $a then $b"
exec 3<&-
{ echo to-stderr 1>&2; echo to-stdout; } 3>&1 1>&2 2>&3
exec 4>out4
echo into four >&4
exec 4>&-
cat out4
mkfifo pipe
(echo through the fifo > pipe) &
cat pipe
wait
rm pipe
echo stdin says: $(cat /dev/stdin)
ls /proc/self/fd | sort -n | tr '\n' ' '; echo
readlink /proc/self/fd/0 </dev/null
ls /dev/fd/ >/dev/null && echo dev-fd listed
"#;
    let busybox = Path::new("/bin/busybox");
    let run = |dir: &Path, vm: bool| {
        let mut cmd = if vm {
            let mut c = Command::new(mosvm_bin());
            c.args(["run", "--"]).arg(busybox);
            c
        } else {
            Command::new(busybox)
        };
        cmd.args(["sh", "-c", script]);
        run_command(cmd, &Opts { cwd: Some(dir), stdin: Some(b"typed input\n"), ..Default::default() })
    };
    let (n, v) = (run(&dn, false), run(&dv, true));
    assert_eq!(n.status, 0, "{n:?}");
    assert!(n.stdout.contains("through the fifo") && n.stdout.contains("fd 3 gave one then two"), "{n:?}");
    assert_same("busybox sh", &n, &v);
}

/// Can the job run bash (dynamically linked: the loader's part)?
fn bash_runs() -> bool {
    let bash = Path::new("/usr/bin/bash");
    if !bash.exists() {
        eprintln!("*** SKIPPED: /usr/bin/bash is not installed ***");
        return false;
    }
    let r = vm(bash, &["-c", "echo ok"], &Opts::default());
    if r.stdout != "ok\n" {
        eprintln!("*** SKIPPED: bash does not run in a job yet: {r:?} ***");
        return false;
    }
    true
}

#[test]
fn bash_shell_idioms_match_native() {
    if !require_kvm("bash_shell_idioms_match_native") || !bash_runs() {
        return;
    }
    let (dn, dv) = (scratch_dir("fds-bash-native"), scratch_dir("fds-bash-vm"));
    let script = r#"
set -e
diff <(printf 'a\nb\n') <(printf 'a\nc\n') || echo "diff saw the difference"
cat <(echo process substitution)
while read -r l; do echo "got $l"; done < <(printf 'x\ny\n')
echo "$(cat <<< "here-string")"
cat <<'EOF'
here-doc $HOME stays
EOF
printf 'one\ntwo\n' > lines
exec 3<lines
read -u 3 a; read -u 3 b
echo "fd 3: $a $b"
exec 3<&-
{ echo err-side >&2; echo out-side; } 3>&1 1>&2 2>&3
exec {fd}>named
echo "to a named descriptor" >&$fd
exec {fd}>&-
cat named
mkfifo pipe
(echo through the fifo > pipe) &
cat pipe
wait
rm pipe
echo "stdin: $(cat /dev/stdin)"
ls /proc/self/fd | sort -n | tr '\n' ' '; echo
readlink /proc/self/fd/1 | sed 's/[0-9][0-9]*/N/'
echo "/dev/fd: $(ls /dev/fd | wc -l) entries"
"#;
    let bash = Path::new("/usr/bin/bash");
    let run = |dir: &Path, vm_run: bool| {
        let mut cmd = if vm_run {
            let mut c = Command::new(mosvm_bin());
            c.args(["run", "--"]).arg(bash);
            c
        } else {
            Command::new(bash)
        };
        cmd.args(["-c", script]);
        run_command(cmd, &Opts { cwd: Some(dir), stdin: Some(b"typed\n"), ..Default::default() })
    };
    let (n, v) = (run(&dn, false), run(&dv, true));
    assert_eq!(n.status, 0, "{n:?}");
    assert!(n.stdout.contains("process substitution") && n.stdout.contains("got y"), "{n:?}");
    assert_same("bash", &n, &v);
}

fn tokio_job() -> Option<PathBuf> {
    let p = root().join("target/release/tokio-job");
    if !p.exists() {
        eprintln!("*** SKIPPED: {} is not built (cargo build --release -p tokio-job) ***", p.display());
        return None;
    }
    let dir = scratch_dir("fds-tokio-probe");
    let r = vm(&p, &["1", dir.to_str().unwrap()], &Opts::default());
    if r.status != 0 {
        eprintln!("*** SKIPPED: the tokio program does not run in a job yet: {r:?} ***");
        return None;
    }
    Some(p)
}

#[test]
fn a_tokio_program_matches_native() {
    if !require_kvm("a_tokio_program_matches_native") {
        return;
    }
    let Some(prog) = tokio_job() else { return };
    let (dn, dv) = (scratch_dir("fds-tokio-native"), scratch_dir("fds-tokio-vm"));
    let n = native(&prog, &["10"], &Opts { cwd: Some(&dn), ..Default::default() });
    let v = vm(&prog, &["10"], &Opts { cwd: Some(&dv), ..Default::default() });
    assert_eq!(n.status, 0, "{n:?}");
    assert_same("tokio", &n, &v);
}

/// Starts `program args` as a job that may move, waits for `ready`, moves
/// it to a fresh receiver and lets it finish there.
fn moved(name: &str, program: &Path, args: &[&str], ready: &str, cwd: &Path, after: impl FnOnce()) -> Run {
    let sock = sock_path(name);
    let (recv, addr) = receiver(&[], None);
    let job = source(program, args, &[], &sock, Some(cwd));
    job.wait_for(ready, LONG, |o, _| o.contains(ready));
    // Let it block in its wait.
    std::thread::sleep(Duration::from_millis(300));
    let (m, json) = migrate(&sock, &addr, &[]);
    assert_eq!(m.status, 0, "{name}: the move failed: {m:?}");
    assert!(json.contains("\"result\":\"ok\""), "{json}");
    after();
    let r = job.finish(LONG);
    let body = recv.finish(LONG);
    assert!(body.stdout.is_empty(), "the body's host printed the job's output: {body:?}");
    r
}

#[test]
fn a_job_blocked_in_epoll_wait_moves() {
    if !require_kvm("a_job_blocked_in_epoll_wait_moves") {
        return;
    }
    let _l = migration_lock();
    let prog = image("tests/epoll");
    let dir = scratch_dir("fds-epoll-move");
    let n = native(&prog, &["wait", "3"], &Opts { cwd: Some(&dir), ..Default::default() });
    assert!(n.stdout.contains("woke: 1 0xfeedfacecafebeef expirations 1 on time yes"), "{n:?}");
    let v = moved("fds-epoll-move", &prog, &["wait", "3"], "waiting", &dir, || {});
    assert_same("epoll wait across a move", &n, &v);
}

#[test]
fn a_job_reading_a_fifo_moves() {
    if !require_kvm("a_job_reading_a_fifo_moves") {
        return;
    }
    let _l = migration_lock();
    let dir = scratch_dir("fds-fifo-move");
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    // The job blocks in open (for a writer), is moved, and then reads
    // what the writer sends, served by its home.
    let busybox = Path::new("/bin/busybox");
    let v = moved("fds-fifo-move", busybox, &["cat", "fifo"], "", &dir, move || {
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(&fifo, "sent after the move\n").unwrap();
    });
    assert_eq!(v.status, 0, "{v:?}");
    assert_eq!(v.stdout, "sent after the move\n", "{v:?}");
}

#[test]
fn a_tokio_program_moves() {
    if !require_kvm("a_tokio_program_moves") {
        return;
    }
    let Some(prog) = tokio_job() else { return };
    let _l = migration_lock();
    let (dn, dv) = (scratch_dir("fds-tokio-move-native"), scratch_dir("fds-tokio-move-vm"));
    let (d1, d2) = (dn.to_str().unwrap(), dv.to_str().unwrap());
    let n = native(&prog, &["10", d1, "3000"], &Opts { cwd: Some(&dn), ..Default::default() });
    assert!(n.stdout.contains("paused at least 3000 ms: true"), "{n:?}");
    let v = moved("fds-tokio-move", &prog, &["10", d2, "3000"], "squares of", &dv, || {});
    assert_same("tokio across a move", &n, &v);
}

/// A snapshot cannot carry event descriptors (their state is the host's):
/// it is refused with the reason, and the job goes on.
#[test]
fn a_snapshot_of_event_descriptors_is_refused() {
    if !require_kvm("a_snapshot_of_event_descriptors_is_refused") {
        return;
    }
    let _l = migration_lock();
    let prog = image("tests/epoll");
    let dir = scratch_dir("fds-snapshot");
    let sock = sock_path("fds-snapshot");
    let file = dir.join("job.snap");
    let job = source(&prog, &["wait", "2"], &[], &sock, Some(&dir));
    job.wait_for("waiting", LONG, |o, _| o.contains("waiting"));
    let r = mosvm(["snapshot", "--api-sock", sock.to_str().unwrap(), "--to", file.to_str().unwrap(), "--json"]);
    assert_ne!(r.status, 0, "{r:?}");
    assert!(r.stdout.contains("epoll instance") && r.stdout.contains("live move"), "{r:?}");
    let s = job.finish(LONG);
    assert_eq!(s.status, 0, "{s:?}");
    assert!(s.stdout.contains("woke: 1 0xfeedfacecafebeef expirations 1 on time yes"), "{s:?}");
}

/// Hostile arguments to the event and descriptor calls, at home and away
/// from home: every call is answered, the job ends normally.
#[test]
fn hostile_arguments_are_answered() {
    if !require_kvm("hostile_arguments_are_answered") {
        return;
    }
    let prog = image("tests/fuzzfds");
    let dir = scratch_dir("fds-fuzz");
    for seed in ["1", "7", "12345"] {
        let r = vm(&prog, &[seed, "20000"], &Opts { cwd: Some(&dir), ..Default::default() });
        assert_eq!((r.status, r.stdout.as_str(), r.stderr.as_str()), (0, "done\n", ""), "seed {seed}: {r:?}");
    }
    let _l = migration_lock();
    let sock = sock_path("fds-fuzz-move");
    let (recv, addr) = receiver(&[], None);
    let job = source(&prog, &["99", "150000"], &[], &sock, Some(&dir));
    std::thread::sleep(Duration::from_millis(500));
    let (m, _) = migrate(&sock, &addr, &[]);
    let r = job.finish(LONG);
    let _ = recv.finish(LONG);
    assert_eq!(m.status, 0, "the move failed: {m:?}");
    assert_eq!((r.status, r.stdout.as_str()), (0, "done\n"), "{r:?}");
}
