//! Helpers for the end-to-end tests: where the `mosvm` binary and the guest
//! images are, and running a program natively and in a micro-VM.

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
    // target/<profile>/deps/<test binary> -> target/<profile>/mosvm
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("mosvm");
    assert!(bin.exists(), "{} is missing: build the workspace first (make test does)", bin.display());
    bin
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

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    /// Exit status as a shell reports it (128 + signal for a signal death).
    pub status: i32,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        use std::os::unix::process::ExitStatusExt;
        let status = o.status.code().unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0));
        Run {
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            status,
        }
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

fn run_command(mut cmd: Command, opts: &Opts) -> Run {
    if let Some(d) = opts.cwd {
        cmd.current_dir(d);
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    cmd.stdin(if opts.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    if let Some(input) = opts.stdin {
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    child.wait_with_output().expect("wait").into()
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

/// A fresh empty directory under the system temp dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mosvm-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
