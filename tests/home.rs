//! The home model: a job moved away keeps its files, terminal, signals
//! and exit status at home (its deputy, the `mosvm run` process), and the
//! hosts its body visited keep nothing. Hosts are `mosvm receive`
//! processes on their own loopback addresses, each in an empty directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mosvm_tests::*;

const LONG: Duration = Duration::from_secs(120);

/// A host for bodies: `mosvm receive` on `ip` in an empty directory, with
/// a control socket so the body can move on.
struct Host {
    proc: Proc,
    addr: String,
    sock: PathBuf,
    dir: PathBuf,
}

fn host(name: &str, ip: &str) -> Host {
    let dir = scratch_dir(&format!("home-host-{name}"));
    let sock = sock_path(&format!("home-host-{name}"));
    let mut cmd = Command::new(mosvm_bin());
    cmd.args(["receive", "--listen", &format!("{ip}:0"), "--api-sock"]).arg(&sock).current_dir(&dir);
    let proc = Proc::spawn(cmd);
    proc.wait_for("the receiver to listen", Duration::from_secs(10), |_, e| e.contains("waiting for a job on "));
    let err = proc.stderr();
    let addr = err.split("waiting for a job on ").nth(1).unwrap().lines().next().unwrap().trim().to_string();
    Host { proc, addr, sock, dir }
}

/// The body process at `h` sees nothing of its host: an empty root, the
/// uid nobody, a seccomp filter, no way to gain privileges.
fn assert_confined(h: &Host) {
    let pid = h.proc.child.id();
    // The body confines itself as it starts, just after the move.
    let t = Instant::now();
    let mut status = String::new();
    while t.elapsed() < Duration::from_secs(5) {
        status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        if status.contains("Seccomp:\t2") {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let field = |k: &str| {
        status.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.split_whitespace().next().unwrap_or("").to_string())
    };
    assert_eq!(field("Uid:").as_deref(), Some("65534"), "{status}");
    assert_eq!(field("Seccomp:").as_deref(), Some("2"), "{status}");
    assert_eq!(field("NoNewPrivs:").as_deref(), Some("1"), "{status}");
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/root")).unwrap().collect();
    assert!(root.is_empty(), "the body sees files: {root:?}");
}

/// Moves the job behind `sock` to `to` and checks the move succeeded.
fn move_job(sock: &Path, to: &str) {
    let (m, json) = migrate(sock, to, &[]);
    assert_eq!(m.status, 0, "move to {to} failed: {m:?}");
    assert!(json.contains("\"result\":\"ok\""), "{json}");
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// A working directory named `job` (the job prints its name), with an input.
fn job_dir(name: &str) -> PathBuf {
    let d = scratch_dir(name).join("job");
    std::fs::create_dir_all(&d).unwrap();
    let input: String = (1..=20_000).map(|i| format!("input line {i}\n")).collect();
    std::fs::write(d.join("in.txt"), input).unwrap();
    d
}

#[test]
fn a_job_moved_a_b_c_a_behaves_as_if_it_never_left() {
    if !require_kvm("a_job_moved_a_b_c_a_behaves_as_if_it_never_left") {
        return;
    }
    let _l = migration_lock();
    let prog = image("tests/homework");
    let args = ["in.txt", "out.txt", "80"];
    let (dn, dv) = (job_dir("home-abca-native"), job_dir("home-abca-vm"));
    let n = native(&prog, &args, &Opts { cwd: Some(&dn), ..Default::default() });
    assert_eq!(n.status, 3, "{n:?}");

    let (b, c) = (host("b", "127.0.0.2"), host("c", "127.0.0.3"));
    let sock = sock_path("home-abca");
    let job = source(&prog, &args, &[], &sock, Some(&dv));
    job.wait_for("round 5", LONG, |o, _| o.contains("round 5 of"));
    move_job(&sock, &b.addr);
    assert_confined(&b);
    job.wait_for("round 20 (at B)", LONG, |o, _| o.contains("round 20 of"));
    wait_for_path(&b.sock);
    move_job(&b.sock, &c.addr);
    job.wait_for("round 40 (at C)", LONG, |o, _| o.contains("round 40 of"));
    wait_for_path(&c.sock);
    move_job(&c.sock, "home");
    let r = job.finish(LONG);

    assert_eq!(r.status, n.status, "exit status at home: {r:?}");
    assert_eq!(r.stdout, n.stdout, "stdout at home");
    assert_eq!(r.stderr, n.stderr, "stderr at home");
    for f in ["out.txt", "in.txt"] {
        assert_eq!(std::fs::read(dv.join(f)).unwrap(), std::fs::read(dn.join(f)).unwrap(), "{f}");
    }
    assert_eq!(files_in(&dv), files_in(&dn));
    // The hosts the body visited kept nothing of it.
    assert!(files_in(&b.dir).is_empty(), "files at B: {:?}", files_in(&b.dir));
    assert!(files_in(&c.dir).is_empty(), "files at C: {:?}", files_in(&c.dir));
    // B and C let go of the body when it moved on.
    for h in [b, c] {
        let out = h.proc.finish(Duration::from_secs(10));
        assert!(out.stdout.is_empty(), "a host printed the job's output: {out:?}");
    }
}

#[test]
fn stdin_and_stdout_stay_at_home_while_away() {
    if !require_kvm("stdin_and_stdout_stay_at_home_while_away") {
        return;
    }
    let _l = migration_lock();
    let b = host("stdin", "127.0.0.2");
    let sock = sock_path("home-stdin");
    let mut cmd = source_command(&image("tests/cat"), &[], &[], &sock, None);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    wait_for_path(&sock);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    use std::io::BufRead;
    let mut line = String::new();
    stdin.write_all(b"before the move\n").unwrap();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "before the move\n");
    // The job waits in read(0) at home when it moves.
    move_job(&sock, &b.addr);
    for i in 0..20 {
        line.clear();
        let msg = format!("line {i} typed at home\n");
        stdin.write_all(msg.as_bytes()).unwrap();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, msg, "an interactive line while away");
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let total = "before the move\n".len() + (0..20).map(|i| format!("line {i} typed at home\n").len()).sum::<usize>();
    assert_eq!(String::from_utf8_lossy(&out.stderr), format!("{total} bytes\n"));
    assert!(b.proc.finish(Duration::from_secs(10)).stdout.is_empty());
}

/// Starts a long job with a deputy and moves it to a fresh host.
fn job_away(name: &str, args: &[&str]) -> (Proc, Host) {
    let b = host(name, "127.0.0.2");
    let sock = sock_path(&format!("home-{name}"));
    let job = source(&image("tests/homework"), args, &[], &sock, Some(&job_dir(&format!("home-{name}"))));
    job.wait_for("round 2", LONG, |o, _| o.contains("round 2 of"));
    move_job(&sock, &b.addr);
    job.wait_for("a round away", LONG, |o, _| o.contains("round 4 of"));
    (job, b)
}

#[test]
fn signals_from_home_reach_the_body() {
    if !require_kvm("signals_from_home_reach_the_body") {
        return;
    }
    let _l = migration_lock();
    for (sig, status) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let (job, b) = job_away("signal", &["in.txt", "out.txt", "100000"]);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(job.child.id() as i32, sig) };
        let t = Instant::now();
        let r = job.finish(Duration::from_secs(20));
        assert_eq!(r.status, status, "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(5), "the signal took {:?}", t.elapsed());
        let at_b = b.proc.finish(Duration::from_secs(10));
        assert!(at_b.stdout.is_empty(), "{at_b:?}");
    }
}

#[test]
fn a_fault_away_is_reported_at_home() {
    if !require_kvm("a_fault_away_is_reported_at_home") {
        return;
    }
    let _l = migration_lock();
    let (job, _b) = job_away("crash", &["in.txt", "out.txt", "30", "crash"]);
    let r = job.finish(LONG);
    assert_eq!(r.status, 139, "{r:?}");
    assert!(r.stderr.contains("job killed by SIGSEGV"), "{}", r.stderr);
    assert!(r.stdout.contains("done in job"), "{}", r.stdout);
}

#[test]
fn when_the_body_host_dies_home_reports_the_job_lost() {
    if !require_kvm("when_the_body_host_dies_home_reports_the_job_lost") {
        return;
    }
    let _l = migration_lock();
    let (job, mut b) = job_away("lost", &["in.txt", "out.txt", "100000"]);
    b.proc.child.kill().unwrap();
    let t = Instant::now();
    let r = job.finish(Duration::from_secs(30));
    assert_eq!(r.status, 255, "{r:?}");
    assert!(r.stderr.contains("job lost") && r.stderr.contains("127.0.0.2"), "{}", r.stderr);
    assert!(t.elapsed() < Duration::from_secs(10), "noticed after {:?}", t.elapsed());
}

#[test]
fn when_home_dies_the_body_stops() {
    if !require_kvm("when_home_dies_the_body_stops") {
        return;
    }
    let _l = migration_lock();
    let (mut job, b) = job_away("orphan", &["in.txt", "out.txt", "100000"]);
    job.child.kill().unwrap();
    let t = Instant::now();
    let r = b.proc.finish(Duration::from_secs(30));
    assert!(t.elapsed() < Duration::from_secs(10), "the body ran on for {:?}", t.elapsed());
    assert!(r.stderr.contains("stopping this body"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
}

#[test]
fn garbage_on_the_deputy_port_is_refused_and_the_job_goes_on() {
    if !require_kvm("garbage_on_the_deputy_port_is_refused_and_the_job_goes_on") {
        return;
    }
    let _l = migration_lock();
    let (job, b) = job_away("garbage", &["in.txt", "out.txt", "40"]);
    // The deputy's port, from the body's control socket.
    let mut s = std::os::unix::net::UnixStream::connect(&b.sock).unwrap();
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut s, &mut resp).unwrap();
    let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let status: serde_json::Value = serde_json::from_str(body).unwrap();
    let home = status["home"].as_str().unwrap().to_string();
    let mut seed = 7u32;
    for n in [0usize, 3, 8, 9, 64, 4096] {
        let Ok(mut c) = std::net::TcpStream::connect(&home) else { continue };
        let mut junk = b"MOSVDEP\0".to_vec();
        for _ in 0..n {
            seed = seed.wrapping_mul(1103515245).wrapping_add(12345);
            junk.push((seed >> 16) as u8);
        }
        let _ = c.write_all(if n == 9 { &junk[8..] } else { &junk });
    }
    let r = job.finish(LONG);
    assert_eq!(r.status, 3, "{r:?}");
    assert!(r.stdout.contains("round 40 of 40"), "{}", r.stdout);
}

#[test]
fn a_state_of_the_previous_version_still_restores() {
    if !require_kvm("a_state_of_the_previous_version_still_restores") {
        return;
    }
    // Written by the release before the deputy link (state version 3):
    // `cpu 1500000000` snapshotted after "progress 20%".
    let snap = root().join("tests/data/v3-cpu.snap");
    let r = mosvm(["restore", snap.to_str().unwrap()]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stdout.ends_with("progress 100%\nchecksum 55a016d75d0de870 after 1500000000 iterations\n"), "{r:?}");
}
