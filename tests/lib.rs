//! Helpers for the end-to-end tests: where the `mosvm` binary and the guest
//! images are, and running a program natively and in a micro-VM.

pub mod corpus;
pub mod emulated;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The `mosvm` binary of this build (MOSVM_BIN overrides).
pub fn mosvm_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MOSVM_BIN") {
        return p.into();
    }
    // target/<profile>/deps/<test binary> or target/<profile>/<binary>
    // (the benchmarks) -> target/<profile>/mosvm
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    let bin = [dir, dir.parent().unwrap()].iter().map(|d| d.join("mosvm")).find(|b| b.exists());
    bin.unwrap_or_else(|| panic!("no mosvm binary near {}: build the workspace first (make test does)", dir.display()))
}

/// A guest program built by `make images`.
pub fn image(name: &str) -> PathBuf {
    let p = root().join("images/build").join(name);
    assert!(p.exists(), "{} is missing: run `make images` first (make test does)", p.display());
    p
}

/// True if /dev/kvm is usable. Without it a test fails with a clear
/// message, unless MOSVM_ALLOW_NO_KVM=1, in which case it says loudly that
/// it was skipped and passes.
pub fn require_kvm(test: &str) -> bool {
    let ok = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    if ok {
        return true;
    }
    if std::env::var("MOSVM_ALLOW_NO_KVM").as_deref() == Ok("1") {
        eprintln!("*** SKIPPED {test}: /dev/kvm is not available (MOSVM_ALLOW_NO_KVM=1) ***");
        return false;
    }
    panic!("{test} needs /dev/kvm, which is missing or not accessible; set MOSVM_ALLOW_NO_KVM=1 to skip KVM tests");
}

/// Starts `cmd`, again while its program is busy (ETXTBSY): a program a
/// test has just written can be held open for writing, for a moment, by a
/// process another test thread forked (its descriptors close at its exec).
pub fn spawn(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// What a run produced. Two runs are equal when their stdout bytes,
/// stderr and status are.
#[derive(Debug, Clone)]
pub struct Run {
    /// stdout as text (invalid UTF-8 replaced), for reading.
    pub stdout: String,
    /// stdout exactly as written, for comparing.
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
    /// Exit status as a shell reports it (128 + signal for a signal death).
    pub status: i32,
    /// The signal that killed the process itself. mosvm reports a job's
    /// death by a signal as exit status 128 + signal; this is mosvm dying.
    pub signal: Option<i32>,
}

impl PartialEq for Run {
    fn eq(&self, other: &Run) -> bool {
        (&self.stdout_bytes, &self.stderr, self.status) == (&other.stdout_bytes, &other.stderr, other.status)
    }
}

impl Run {
    fn new(stdout: Vec<u8>, stderr: &[u8], status: std::process::ExitStatus) -> Run {
        use std::os::unix::process::ExitStatusExt;
        Run {
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stdout_bytes: stdout,
            stderr: String::from_utf8_lossy(stderr).into_owned(),
            status: status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            signal: status.signal(),
        }
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run::new(o.stdout, &o.stderr, o.status)
    }
}

/// Options for a run.
#[derive(Default, Clone)]
pub struct Opts<'a> {
    pub cwd: Option<&'a Path>,
    pub stdin: Option<&'a [u8]>,
    pub env: Vec<(&'a str, &'a str)>,
    /// Extra `mosvm run` options (before the program).
    pub vm_args: Vec<&'a str>,
}

pub fn run_command(mut cmd: Command, opts: &Opts) -> Run {
    clean_descriptors(&mut cmd);
    if let Some(d) = opts.cwd {
        cmd.current_dir(d);
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    cmd.stdin(if opts.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn(&mut cmd).expect("spawn");
    if let Some(input) = opts.stdin {
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    child.wait_with_output().expect("wait").into()
}

/// Lets `cmd` start with stdin, stdout and stderr only, as from a
/// terminal: descriptors the test runner was started with (cargo's
/// jobserver, a shell's) would be the job's too, and a pipe of theirs
/// cannot go into a snapshot. They are marked close-on-exec in the child,
/// so std's own exec-error pipe keeps working.
pub fn clean_descriptors(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: close_range is async-signal-safe; it only sets flags.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
            Ok(())
        });
    }
}

/// Runs `program args` natively.
pub fn native(program: &Path, args: &[&str], opts: &Opts) -> Run {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_command(cmd, opts)
}

/// Runs `program args` with `mosvm run`.
pub fn vm(program: &Path, args: &[&str], opts: &Opts) -> Run {
    let mut cmd = Command::new(mosvm_bin());
    cmd.arg("run").args(&opts.vm_args).arg("--").arg(program).args(args);
    run_command(cmd, opts)
}

/// Runs `mosvm` with arbitrary arguments.
pub fn mosvm<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> Run {
    let mut cmd = Command::new(mosvm_bin());
    cmd.args(args);
    run_command(cmd, &Opts::default())
}

/// A fresh empty directory under [`scratch_root`].
pub fn scratch_dir(name: &str) -> PathBuf {
    let d = scratch_root().join(format!("mosvm-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Where scratch directories go: the system temp dir, unless tests run as
/// root and uid 65534 could not run a program there (a /tmp that is not
/// searchable by others, or mounted noexec, as on some CI machines); then
/// the first of a few usual places where it can. The tests that act as
/// another uid copy binaries and sockets into their scratch directories.
pub fn scratch_root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let tmp = std::env::temp_dir();
        if unsafe { libc::geteuid() } != 0 {
            return tmp;
        }
        let target_tmp = root().join("target/tmp");
        let candidates = [tmp.clone(), "/var/tmp".into(), target_tmp, "/dev/shm".into(), "/run".into()];
        for c in &candidates {
            if others_can_run_programs_in(c) {
                return c.clone();
            }
        }
        eprintln!(
            "*** no directory of {candidates:?} lets uid 65534 run a program: the tests that act as another uid will fail ***"
        );
        tmp
    })
    .clone()
}

/// The uid and gid that tests act as when they play another user.
pub const NOBODY: u32 = 65534;

/// `cmd`, run as uid and gid [`NOBODY`] with no groups.
pub fn as_nobody(mut cmd: Command) -> Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// True if uid 65534 can execute a copy of /bin/true placed in a fresh
/// directory under `root` (tried for real: modes, mounts and security
/// modules all have their say).
fn others_can_run_programs_in(root: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join(format!("mosvm-test-{}-probe", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return false;
    }
    let exe = dir.join("true");
    let ok = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).is_ok()
        && std::fs::copy("/bin/true", &exe).is_ok()
        && std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).is_ok()
        && {
            let mut cmd = as_nobody(Command::new(&exe));
            cmd.current_dir("/").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            cmd.status().is_ok_and(|s| s.success())
        };
    let _ = std::fs::remove_dir_all(&dir);
    ok
}

/// Puts `text` into the file at `path` between the lines `begin` and
/// `end` (a report's section: the rest of the file stays), or, if the
/// markers are not there, appends them with `heading`.
pub fn write_section(path: &Path, heading: &str, begin: &str, end: &str, text: &str) {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(begin), old.find(end)) {
        (Some(a), Some(b)) if a < b => format!("{}{begin}\n{text}{}", &old[..a], &old[b..]),
        _ => format!("{old}\n## {heading}\n\n{begin}\n{text}{end}\n"),
    };
    std::fs::write(path, new).unwrap();
}

// ---- running jobs in the background, for migration tests ----

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A child process whose stdout and stderr are collected line by line.
pub struct Proc {
    pub child: Child,
    /// Held open (see `spawn_holding_stdin`).
    _stdin: Option<std::process::ChildStdin>,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(r: impl std::io::Read + Send + 'static, into: Arc<Mutex<String>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            into.lock().unwrap().push_str(&line);
            line.clear();
        }
    })
}

impl Proc {
    /// Starts `cmd` with stdin at end of file.
    pub fn spawn(cmd: Command) -> Proc {
        Proc::start(cmd, Stdio::null())
    }

    /// Starts `cmd` with a stdin that stays open until the Proc is dropped
    /// (for jobs that run until their input ends).
    pub fn spawn_holding_stdin(cmd: Command) -> Proc {
        Proc::start(cmd, Stdio::piped())
    }

    fn start(mut cmd: Command, stdin: Stdio) -> Proc {
        clean_descriptors(&mut cmd);
        cmd.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = spawn(&mut cmd).unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let (out, err) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(String::new())));
        let readers = vec![
            collect(child.stdout.take().unwrap(), out.clone()),
            collect(child.stderr.take().unwrap(), err.clone()),
        ];
        Proc { _stdin: child.stdin.take(), child, out, err, readers }
    }

    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits until stdout or stderr satisfies `pred` (panics after `limit`).
    pub fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&str, &str) -> bool) {
        let t = Instant::now();
        while !pred(&self.stdout(), &self.stderr()) {
            assert!(
                t.elapsed() < limit,
                "timed out waiting for {what}; stdout {:?} stderr {:?}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the process to end (killing it after `limit`).
    pub fn finish(mut self, limit: Duration) -> Run {
        let t = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if t.elapsed() > limit {
                let _ = self.child.kill();
                panic!("process did not finish in {limit:?}; stdout {:?} stderr {:?}", self.stdout(), self.stderr());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Run::new(self.stdout().into_bytes(), self.stderr().as_bytes(), status)
    }
}

impl Proc {
    /// Ends the process now if it still runs; how it ended.
    pub fn finish_or_kill(mut self) -> Run {
        if self.child.try_wait().unwrap().is_none() {
            let _ = self.child.kill();
        }
        self.finish(Duration::from_secs(10))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mosvm receive` on a free loopback port; returns it and its address.
pub fn receiver(extra: &[&str], cwd: Option<&Path>) -> (Proc, String) {
    let mut cmd = Command::new(mosvm_bin());
    cmd.args(["receive", "--listen", "127.0.0.1:0"]).args(extra);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    receiver_of(cmd)
}

/// Starts a `mosvm receive` command; the process and where it listens.
pub fn receiver_of(cmd: Command) -> (Proc, String) {
    let p = Proc::spawn(cmd);
    p.wait_for("the receiver to listen", Duration::from_secs(10), |_, e| e.contains("waiting for a job on "));
    let err = p.stderr();
    let addr = err.split("waiting for a job on ").nth(1).unwrap().lines().next().unwrap().trim().to_string();
    (p, addr)
}

/// The command `mosvm run --api-sock SOCK [vm_args] PROGRAM ARGS`.
pub fn source_command(program: &Path, args: &[&str], vm_args: &[&str], sock: &Path, cwd: Option<&Path>) -> Command {
    let mut cmd = Command::new(mosvm_bin());
    cmd.arg("run").arg("--api-sock").arg(sock).args(vm_args).arg("--").arg(program).args(args);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    cmd
}

/// `mosvm run --api-sock SOCK [vm_args] PROGRAM ARGS`, once its control
/// socket is there.
pub fn source(program: &Path, args: &[&str], vm_args: &[&str], sock: &Path, cwd: Option<&Path>) -> Proc {
    let p = Proc::spawn(source_command(program, args, vm_args, sock, cwd));
    wait_for_path(sock);
    p
}

/// Waits (up to 10 s) for a control socket to appear.
pub fn wait_for_path(p: &Path) {
    let t = Instant::now();
    while !p.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "control socket {} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `mosvm migrate --api-sock SOCK --to ADDR --json --verify [extra]`;
/// returns the run and the JSON line. `--verify` makes the destination
/// check every page against the source's before it takes the job, so a
/// lost page fails the move even when the job's output would not show it.
pub fn migrate(sock: &Path, to: &str, extra: &[&str]) -> (Run, String) {
    let mut cmd = Command::new(mosvm_bin());
    cmd.arg("migrate").arg("--api-sock").arg(sock).args(["--to", to, "--json", "--verify"]).args(extra);

    let r = run_command(cmd, &Opts::default());
    let json = r.stdout.lines().next().unwrap_or("").to_string();
    (r, json)
}

/// The number after `"key":` in a flat JSON object.
pub fn json_number(json: &str, key: &str) -> Option<f64> {
    let rest = json.split(&format!("\"{key}\":")).nth(1)?;
    rest.split([',', '}']).next()?.trim().parse().ok()
}

/// A control-socket path for this test process.
pub fn sock_name(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("mosvm-test-{}-{name}.sock", std::process::id()))
}

/// A fresh (removed) control-socket path.
pub fn sock_path(name: &str) -> PathBuf {
    let p = sock_name(name);
    let _ = std::fs::remove_file(&p);
    p
}

/// What a byte-forwarding proxy does with the stream from the sender.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Flip a bit of the byte at this offset.
    Corrupt(u64),
    /// Close both directions after this many bytes.
    Drop(u64),
    /// Pass this many bytes, then shut the receiver's side for writing
    /// (the stream ends early) and keep the way back open.
    Truncate(u64),
    /// Overwrite 4 bytes at this offset (e.g. the version field).
    Patch(u64, [u8; 4]),
}

/// A TCP proxy to `to` that applies `fault` to the sender's bytes.
/// Returns its address.
pub fn faulty_proxy(to: String, fault: Fault) -> String {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut a, _) = l.accept().unwrap();
        let mut b = TcpStream::connect(&to).unwrap();
        let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut b2, &mut a2);
            let _ = a2.shutdown(Shutdown::Write);
        });
        let mut buf = vec![0u8; 65536];
        let mut off = 0u64;
        loop {
            let n = match a.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &mut buf[..n];
            let end = off + n as u64;
            match fault {
                Fault::Corrupt(at) if (off..end).contains(&at) => chunk[(at - off) as usize] ^= 0x10,
                Fault::Patch(at, bytes) => {
                    for (i, byte) in bytes.iter().enumerate() {
                        let p = at + i as u64;
                        if (off..end).contains(&p) {
                            chunk[(p - off) as usize] = *byte;
                        }
                    }
                }
                Fault::Drop(at) | Fault::Truncate(at) if end > at => {
                    let keep = (at.saturating_sub(off)) as usize;
                    let _ = b.write_all(&chunk[..keep]);
                    if let Fault::Drop(_) = fault {
                        let _ = a.shutdown(Shutdown::Both);
                        let _ = b.shutdown(Shutdown::Both);
                    } else {
                        let _ = b.shutdown(Shutdown::Write);
                        // Keep reading (and discarding) so the sender is not stuck.
                        while let Ok(n) = a.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                    return;
                }
                _ => {}
            }
            if b.write_all(chunk).is_err() {
                // The receiver stopped reading: swallow the rest so that
                // what it said last still reaches the sender.
                while let Ok(n) = a.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
                break;
            }
            off = end;
        }
        let _ = b.shutdown(Shutdown::Write);
    });
    addr
}

/// Serializes tests that move jobs: they measure time and compete for the
/// machine's two cores.
pub fn migration_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
