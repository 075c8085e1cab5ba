//! Moving running jobs between two `mosvm` processes on loopback: every
//! image ends with the output of an unmoved run, the clock never goes
//! backwards, and every failure leaves the job running where it was.

use std::path::Path;
use std::time::Duration;

use mosvm_tests::*;

const LONG: Duration = Duration::from_secs(120);

/// Runs `program args` with one move in the middle; returns (source, receiver).
fn moved_once(program: &Path, args: &[&str], started: &str, cwd: Option<&Path>) -> (Run, Run, String) {
    let sock = sock_path("once");
    let (recv, addr) = receiver(&[], cwd);
    let src = source(program, args, &[], &sock, cwd);
    src.wait_for("the job to start", LONG, |o, _| o.contains(started));
    let (m, json) = migrate(&sock, &addr, &[]);
    assert_eq!(m.status, 0, "migrate failed: {m:?}");
    let s = src.finish(LONG);
    let r = recv.finish(LONG);
    (s, r, json)
}

#[test]
fn each_image_moves_mid_run() {
    if !require_kvm("each_image_moves_mid_run") {
        return;
    }
    let _l = migration_lock();
    let cpu = image("cpu");
    let native_cpu = native(&cpu, &["2000000000"], &Opts::default());
    let (s, r, json) = moved_once(&cpu, &["2000000000"], "progress 10%", None);
    assert_eq!(s.status, 0, "{s:?}");
    assert_eq!(r.status, 0, "{r:?}");
    // The output stays at home: the body's host prints nothing.
    assert_eq!(s.stdout, native_cpu.stdout, "cpu output after a move");
    assert!(r.stdout.is_empty(), "{r:?}");
    // The report describes this move: a CPU-bound job with a few MiB touched.
    assert!(json.contains("\"result\":\"ok\"") && json.contains("\"path\":\"precopy"), "{json}");
    let num = |key: &str| json_number(&json, key).unwrap_or_else(|| panic!("no number {key} in {json}"));
    assert!(num("rounds") >= 1.0 && num("pages_sent") > 0.0, "{json}");
    assert!(num("bytes_sent") >= num("pages_sent") * 4096.0, "{json}");
    assert!(num("zero_pages_skipped") > 0.0 && num("bandwidth_mbps") > 0.0, "{json}");
    assert!(num("downtime_ms") > 0.0 && num("downtime_ms") <= num("total_ms"), "{json}");

    let mem = image("mem");
    let args = ["96", "32", "300"];
    let native_mem = native(&mem, &args, &Opts::default());
    let (s, r, _) = moved_once(&mem, &args, "pass 120", None);
    assert_eq!((s.status, r.status), (0, 0), "{s:?} {r:?}");
    assert_eq!(s.stdout, native_mem.stdout, "mem output after a move");
    assert!(r.stdout.is_empty() && s.stdout.contains("never went backwards"), "{r:?}");

    // files: big enough to be caught while its files are open.
    let (dn, dv) = (scratch_dir("mig-files-native"), scratch_dir("mig-files-vm"));
    let input: String = (1..=400_000).map(|i| format!("line {i} of the input file\n")).collect();
    std::fs::write(dn.join("in.txt"), &input).unwrap();
    std::fs::write(dv.join("in.txt"), &input).unwrap();
    let files = image("files");
    let fargs = ["in.txt", "out.txt", "8"];
    let n = native(&files, &fargs, &Opts { cwd: Some(&dn), ..Default::default() });
    let sock = sock_path("files");
    let (recv, addr) = receiver(&[], Some(&dv));
    let src = source(&files, &fargs, &[], &sock, Some(&dv));
    std::thread::sleep(Duration::from_millis(150));
    // The job takes seconds here: the move catches it with files open.
    let (m, _) = migrate(&sock, &addr, &[]);
    assert_eq!(m.status, 0, "{m:?}");
    let s = src.finish(LONG);
    let r = recv.finish(LONG);
    assert_eq!(s.stdout, n.stdout, "files output after a move: {s:?} {r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");
    assert_eq!(std::fs::read(dn.join("out.txt")).unwrap(), std::fs::read(dv.join("out.txt")).unwrap());
    let _ = std::fs::remove_dir_all(dn);
    let _ = std::fs::remove_dir_all(dv);
}

/// Moves a job ten times between fresh `mosvm receive` processes; all its
/// output appears at home, the `mosvm run` that started it.
fn ten_hops(name: &str, program: &Path, args: &[&str], ready: &str, cwd: Option<&Path>) -> String {
    let sock = sock_path(name);
    let first = source(program, args, &[], &sock, cwd);
    first.wait_for("the job to start", LONG, |o, _| o.contains(ready));
    let mut procs = vec![first];
    let mut cur = sock.clone();
    for hop in 0..10 {
        let next = sock_path(&format!("{name}{hop}"));
        let (recv, addr) = receiver(&["--api-sock", next.to_str().unwrap()], cwd);
        let (m, json) = migrate(&cur, &addr, &[]);
        assert_eq!(m.status, 0, "{name} hop {hop}: {m:?}");
        assert!(json.contains("\"result\":\"ok\""), "{json}");
        wait_for_path(&next);
        procs.push(recv);
        cur = next;
    }
    let mut out = String::new();
    let last = procs.len() - 1;
    for (i, p) in procs.into_iter().enumerate() {
        let r = p.finish(LONG);
        assert_eq!(r.status, 0, "{name} process {i}: {r:?}");
        if 0 < i && i < last {
            assert!(r.stderr.contains("job moved to"), "{name} process {i}: {}", r.stderr);
        }
        if i > 0 {
            assert!(r.stdout.is_empty(), "{name} process {i} printed the job's output: {r:?}");
        }
        out += &r.stdout;
    }
    out
}

#[test]
fn back_and_forth_ten_times() {
    if !require_kvm("back_and_forth") {
        return;
    }
    let _l = migration_lock();
    let mem = image("mem");
    let args = ["64", "16", "4000"];
    let out = ten_hops("hop-mem", &mem, &args, "allocated", None);
    assert_eq!(out, native(&mem, &args, &Opts::default()).stdout);
    assert!(out.contains("never went backwards"));

    let cpu = image("cpu");
    let args = ["4000000000"];
    let out = ten_hops("hop-cpu", &cpu, &args, "progress 10%", None);
    assert_eq!(out, native(&cpu, &args, &Opts::default()).stdout);

    // A threaded job: nine threads at the first hop.
    let threads = image("tests/threads");
    let args = ["300000000"];
    let out = ten_hops("hop-threads", &threads, &args, "", None);
    assert_eq!(out, native(&threads, &args, &Opts::default()).stdout);

    let (dn, dv) = (scratch_dir("hop-files-native"), scratch_dir("hop-files-vm"));
    let input: String = (1..=100_000).map(|i| format!("line {i} of the input file\n")).collect();
    std::fs::write(dn.join("in.txt"), &input).unwrap();
    std::fs::write(dv.join("in.txt"), &input).unwrap();
    let files = image("files");
    let args = ["in.txt", "out.txt", "16"];
    let out = ten_hops("hop-files", &files, &args, "", Some(&dv));
    let n = native(&files, &args, &Opts { cwd: Some(&dn), ..Default::default() });
    assert_eq!(out, n.stdout);
    assert_eq!(std::fs::read(dn.join("out.txt")).unwrap(), std::fs::read(dv.join("out.txt")).unwrap());
    let _ = std::fs::remove_dir_all(dn);
    let _ = std::fs::remove_dir_all(dv);
}

/// A failed move leaves the job running at the source, unaffected; the
/// error names the cause.
fn failed_move(name: &str, vm_args: &[&str], extra: &[&str], prepare: impl FnOnce(String) -> String, cause: &[&str]) {
    let mem = image("mem");
    let args = ["96", "32", "40"];
    let native_mem = native(&mem, &args, &Opts::default());
    let sock = sock_path(name);
    let (recv, addr) = receiver(vm_args, None);
    let src = source(&mem, &args, &[], &sock, None);
    src.wait_for("the job to start", LONG, |o, _| o.contains("pass 4"));
    let (m, json) = migrate(&sock, &prepare(addr), extra);
    assert_ne!(m.status, 0, "{name}: the move should fail: {m:?}");
    assert!(json.contains("\"result\":\"error\""), "{name}: {json}");
    assert!(
        cause.iter().any(|c| m.stderr.to_lowercase().contains(c)),
        "{name}: error should name the cause ({cause:?}): {}",
        m.stderr
    );
    let s = src.finish(LONG);
    assert_eq!(s.status, 0, "{name}: {s:?}");
    assert!(!s.stderr.contains("moved"), "{name}: {}", s.stderr);
    assert_eq!(s.stdout, native_mem.stdout, "{name}: the job's output after a failed move");
    drop(recv);
}

#[test]
fn failures_leave_the_job_at_the_source() {
    if !require_kvm("failures") {
        return;
    }
    let _l = migration_lock();
    failed_move("corrupt", &[], &[], |a| faulty_proxy(a, Fault::Corrupt(300_000)), &["checksum", "corrupt"]);
    failed_move(
        "dropped",
        &[],
        &[],
        |a| faulty_proxy(a, Fault::Drop(2_000_000)),
        &["connection", "closed", "reset", "broken"],
    );
    failed_move(
        "truncated",
        &[],
        &[],
        |a| faulty_proxy(a, Fault::Truncate(1_000_000)),
        &["closed", "refused", "middle"],
    );
    failed_move("version", &[], &[], |a| faulty_proxy(a, Fault::Patch(8, 99u32.to_le_bytes())), &["version 99"]);
    failed_move("memory", &["--mem-limit", "16M"], &[], |a| a, &["not enough memory"]);
    failed_move("nobody", &[], &[], |_| "127.0.0.1:1".to_string(), &["cannot connect"]);
}

/// A receiver its daemon prepared for one move (`MOSVM_MOVE_TICKET`)
/// refuses a stream without that move's ticket, or with another, and goes
/// on waiting for its move even with `--once`; then takes it.
#[test]
fn a_receiver_prepared_for_one_move_takes_only_its_ticket() {
    if !require_kvm("tickets") {
        return;
    }
    let _l = migration_lock();
    let mem = image("mem");
    let args = ["96", "32", "40"];
    let native_mem = native(&mem, &args, &Opts::default());
    let ticket = "0123456789abcdef0123456789abcdef";
    let mut cmd = std::process::Command::new(mosvm_bin());
    cmd.args(["receive", "--listen", "127.0.0.1:0", "--once"]).env("MOSVM_MOVE_TICKET", ticket);
    let (recv, addr) = receiver_of(cmd);
    let sock = sock_path("ticket");
    let src = source(&mem, &args, &[], &sock, None);
    src.wait_for("the job to start", LONG, |o, _| o.contains("pass 4"));
    let other = "f".repeat(32);
    for (extra, why) in [
        (&[][..], "takes no stream without its ticket"),
        (&["--ticket", other.as_str()][..], "prepared for another move"),
    ] {
        let (m, json) = migrate(&sock, &addr, extra);
        assert_ne!(m.status, 0, "a move with {extra:?} should fail: {m:?}");
        let answer: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(answer["result"], "error", "{json}");
        assert!(m.stderr.contains(why), "the refusal should say {why:?}: {}", m.stderr);
    }
    let (m, json) = migrate(&sock, &addr, &["--ticket", ticket]);
    assert_eq!(m.status, 0, "the move with its ticket: {m:?} {json}");
    // The job's output goes to its home, the source.
    let s = src.finish(LONG);
    assert_eq!((s.status, &s.stdout), (native_mem.status, &native_mem.stdout), "the job after its move: {s:?}");
    let r = recv.finish(LONG);
    assert_eq!(r.status, native_mem.status, "the body that ran it: {r:?}");
}

#[test]
fn destination_killed_mid_stream() {
    if !require_kvm("destination_killed") {
        return;
    }
    let _l = migration_lock();
    let mem = image("mem");
    let args = ["128", "32", "40"];
    let native_mem = native(&mem, &args, &Opts::default());
    let sock = sock_path("killed");
    let (mut recv, addr) = receiver(&[], None);
    let src = source(&mem, &args, &[], &sock, None);
    src.wait_for("the job to start", LONG, |o, _| o.contains("pass 4"));
    // A slow link, so the stream is surely in flight when the receiver dies.
    let migrating = std::thread::spawn({
        let sock = sock.clone();
        move || migrate(&sock, &addr, &["--max-bandwidth", "40"])
    });
    std::thread::sleep(Duration::from_millis(400));
    recv.child.kill().unwrap();
    let (m, _) = migrating.join().unwrap();
    assert_ne!(m.status, 0, "{m:?}");
    let s = src.finish(LONG);
    assert_eq!(s.status, 0, "{s:?}");
    assert_eq!(s.stdout, native_mem.stdout);
}

#[test]
fn migrate_twice_at_once_is_refused() {
    if !require_kvm("migrate_twice") {
        return;
    }
    let _l = migration_lock();
    let sock = sock_path("twice");
    let (recv, addr) = receiver(&[], None);
    let src = source(&image("mem"), &["96", "32", "--seconds", "6"], &[], &sock, None);
    src.wait_for("the job to start", LONG, |o, _| o.contains("allocated"));
    let first = std::thread::spawn({
        let (sock, addr) = (sock.clone(), addr.clone());
        move || migrate(&sock, &addr, &["--max-bandwidth", "60"])
    });
    std::thread::sleep(Duration::from_millis(300));
    let (second, json) = migrate(&sock, &addr, &[]);
    assert_ne!(second.status, 0);
    assert!(second.stderr.contains("in progress"), "{}", second.stderr);
    assert!(json.contains("error"));
    let (m, _) = first.join().unwrap();
    assert_eq!(m.status, 0, "{m:?}");
    let s = src.finish(LONG);
    assert!(s.stdout.contains("checksum consistent: yes"), "{s:?}");
    drop(recv);
}

#[test]
fn snapshot_and_restore() {
    if !require_kvm("snapshot") {
        return;
    }
    let _l = migration_lock();
    let cpu = image("cpu");
    let args = ["3000000000"];
    let native_cpu = native(&cpu, &args, &Opts::default());
    let sock = sock_path("snap");
    let file = std::env::temp_dir().join(format!("mosvm-test-{}.snap", std::process::id()));
    let src = source(&cpu, &args, &[], &sock, None);
    src.wait_for("the job to start", LONG, |o, _| o.contains("progress 20%"));
    let r = mosvm(["snapshot", "--api-sock", sock.to_str().unwrap(), "--to", file.to_str().unwrap(), "--json"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.stdout.contains("\"path\":\"snapshot\""), "{}", r.stdout);
    let at_snapshot = src.stdout();
    // The job keeps running after a snapshot.
    let s = src.finish(LONG);
    assert_eq!(s.status, 0);
    assert_eq!(s.stdout, native_cpu.stdout);
    // A restore continues from the snapshot point.
    let restored = mosvm(["restore", file.to_str().unwrap()]);
    assert_eq!(restored.status, 0, "{restored:?}");
    let whole = at_snapshot.clone() + &restored.stdout;
    assert_eq!(whole, native_cpu.stdout, "snapshot at {at_snapshot:?}");
    // Corrupt snapshots are refused.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let bad = mosvm(["restore", file.to_str().unwrap()]);
    assert_ne!(bad.status, 0);
    assert!(
        bad.stderr.contains("checksum") || bad.stderr.contains("corrupt") || bad.stderr.contains("malformed"),
        "{}",
        bad.stderr
    );
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_fast_writer_moves_with_throttling() {
    if !require_kvm("throttle") {
        return;
    }
    let _l = migration_lock();
    let sock = sock_path("throttle");
    let (recv, addr) = receiver(&[], None);
    let src = source(&image("mem"), &["64", "64", "--seconds", "8"], &[], &sock, None);
    src.wait_for("the job to start", LONG, |o, _| o.contains("allocated"));
    // A link slower than the job writes: pre-copy alone cannot converge.
    let (m, json) = migrate(&sock, &addr, &["--max-bandwidth", "100"]);
    assert_eq!(m.status, 0, "{m:?}");
    assert!(json.contains("\"path\":\"precopy+throttle\""), "{json}");
    let s = src.finish(LONG);
    assert!(s.stdout.contains("checksum consistent: yes"), "{s:?}");
    assert!(s.stdout.contains("never went backwards"), "{s:?}");
    assert!(recv.finish(LONG).stdout.is_empty());
}

/// A snapshot whose job description or state was tampered with (and the
/// checksum made to match) is refused or restored, never a crash of mosvm.
#[test]
fn tampered_snapshots_never_crash_the_vmm() {
    if !require_kvm("tampered_snapshots") {
        return;
    }
    let _l = migration_lock();
    let sock = sock_path("tamper");
    let file = std::env::temp_dir().join(format!("mosvm-test-{}-base.snap", std::process::id()));
    let src = source(&image("cpu"), &["300000000"], &[], &sock, None);
    src.wait_for("the job to start", LONG, |o, _| o.contains("progress 10%"));
    let r = mosvm(["snapshot", "--api-sock", sock.to_str().unwrap(), "--to", file.to_str().unwrap()]);
    assert_eq!(r.status, 0, "{r:?}");
    drop(src);
    let base = std::fs::read(&file).unwrap();
    // Records after the 16-byte header: tag, 3 zero bytes, length, payload, crc32c.
    let mut records = Vec::new();
    let mut at = 16;
    while at + 8 <= base.len() {
        let len = u32::from_le_bytes(base[at + 4..at + 8].try_into().unwrap()) as usize;
        records.push((base[at], at, len));
        at += 8 + len + 4;
    }
    let targets: Vec<_> = records.iter().filter(|r| r.0 == 1 || r.0 == 4).collect();
    assert_eq!(targets.len(), 2, "HELLO and STATE records expected");
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let bad = file.with_extension("bad");
    for round in 0..40 {
        let mut b = base.clone();
        let &&(_, off, len) = &targets[round % 2];
        for _ in 0..1 + next() % 6 {
            let i = off + 8 + (next() as usize % len);
            b[i] = next() as u8;
        }
        let crc = crc32c::crc32c(&b[off..off + 8 + len]);
        b[off + 8 + len..off + 12 + len].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&bad, &b).unwrap();
        let mut cmd = std::process::Command::new(mosvm_bin());
        cmd.arg("restore").arg(&bad);
        let p = Proc::spawn(cmd);
        let t = std::time::Instant::now();
        let r = loop {
            if p.stdout().len() + p.stderr().len() > 0 || t.elapsed() > Duration::from_secs(3) {
                // Give it a moment to finish or fail, then stop it.
                std::thread::sleep(Duration::from_millis(200));
                break p.finish_or_kill();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // mosvm itself must not die of a signal (the job may: mosvm then
        // exits 128+N); SIGKILL is finish_or_kill stopping a job that runs.
        let crashed = r.signal.is_some_and(|s| s != libc::SIGKILL);
        assert!(!r.stderr.contains("panicked") && r.status != 101 && !crashed, "round {round}: {r:?}");
    }
    let _ = std::fs::remove_file(bad);
    let _ = std::fs::remove_file(file);
}

/// A job holding a socket cannot move (yet): the move fails naming the
/// descriptor, and the job goes on where it was, its socket working.
#[test]
fn a_job_with_a_socket_stays() {
    if !require_kvm("socket_stays") {
        return;
    }
    let _l = migration_lock();
    let sock = sock_path("netjob");
    let (recv, addr) = receiver(&[], None);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    // busybox nc listening: it holds a listening socket, then prints what arrives.
    let src = source(std::path::Path::new("/bin/busybox"), &["nc", "-l", "-p", &port], &[], &sock, None);
    std::thread::sleep(Duration::from_millis(300));
    let (m, json) = migrate(&sock, &addr, &[]);
    assert_ne!(m.status, 0);
    assert!(m.stderr.contains("socket"), "{}", m.stderr);
    // Told apart from a busy or refusing destination, for programs.
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["kind"], "unmovable", "{json}");
    // Still running here, with its socket: what we send comes out.
    let t = std::time::Instant::now();
    let mut conn = loop {
        match std::net::TcpStream::connect(format!("127.0.0.1:{port}")) {
            Ok(c) => break c,
            Err(e) => assert!(t.elapsed() < Duration::from_secs(10), "the job no longer listens: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::io::Write::write_all(&mut conn, b"still here\n").unwrap();
    drop(conn);
    src.wait_for("the job to print what it got", LONG, |o, _| o.contains("still here"));
    drop(src);
    drop(recv);
}

/// A job with a child process stays where it is (its children cannot
/// follow it yet), naming the child; a job that ran a child and then
/// exec'd another program moves like any other.
#[test]
fn processes_and_moves() {
    if !require_kvm("processes_and_moves") {
        return;
    }
    let _l = migration_lock();
    let busybox = Path::new("/bin/busybox");
    let sock = sock_path("parent");
    let (recv, addr) = receiver(&[], None);
    let src = source(busybox, &["sh", "-c", "echo started; /bin/busybox sleep 2; echo parent done"], &[], &sock, None);
    src.wait_for("the job to start", LONG, |o, _| o.contains("started"));
    std::thread::sleep(Duration::from_millis(200));
    let (m, _) = migrate(&sock, &addr, &[]);
    assert_ne!(m.status, 0, "{m:?}");
    assert!(m.stderr.contains("child process"), "{}", m.stderr);
    let s = src.finish(LONG);
    assert_eq!((s.status, s.stdout.as_str()), (0, "started\nparent done\n"), "{s:?}");
    drop(recv);

    let cpu = image("cpu");
    let native_cpu = native(&cpu, &["2000000000"], &Opts::default());
    let cmd = format!("/bin/busybox true && exec {} 2000000000", cpu.display());
    let (s, r, _) = moved_once(busybox, &["sh", "-c", &cmd], "progress 10%", None);
    assert_eq!((s.status, r.status), (0, 0), "{s:?} {r:?}");
    assert_eq!(s.stdout, native_cpu.stdout, "an exec'd job's output after a move");
}

#[test]
fn a_receiver_nobody_reaches_gives_up_by_itself() {
    // Even when the daemon that started it is gone.
    let (p, _) = receiver(&["--once", "--wait", "1"], None);
    let r = p.finish(Duration::from_secs(10));
    assert_eq!(r.status, 125, "{r:?}");
    assert!(r.stderr.contains("no job arrived within 1 s"), "{r:?}");
}

/// A job that ends while it is being moved: `mosvm migrate` hears so at
/// once (not a closed socket), the job's output is whole, and the
/// receiver gives up by itself.
#[test]
fn a_job_that_ends_during_its_move_says_so() {
    if !require_kvm("a_job_that_ends_during_its_move_says_so") {
        return;
    }
    let _l = migration_lock();
    let mem = image("mem");
    let args = ["64", "32", "100"];
    let n = native(&mem, &args, &Opts::default());
    let sock = sock_path("ends-during-move");
    let job = source(&mem, &args, &[], &sock, None);
    job.wait_for("the job to start", Duration::from_secs(30), |o, _| o.contains("allocated"));
    let (rx, addr) = receiver(&["--once"], None);
    // 64 MiB at 5 MB/s: the job ends long before the copy would.
    let (m, json) = migrate(&sock, &addr, &["--max-bandwidth", "5"]);
    assert_eq!(m.status, 1, "{m:?}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json:?}: {e}"));
    assert_eq!(v["kind"], "failed", "{v}");
    assert!(v["error"].as_str().unwrap().contains("the job ended during the move"), "{v}");
    let r = job.finish(Duration::from_secs(30));
    assert_eq!((r.status, &r.stdout), (n.status, &n.stdout));
    let r = rx.finish(Duration::from_secs(15));
    assert!(r.stderr.contains("not received"), "{}", r.stderr);
}
