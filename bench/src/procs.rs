//! Child processes for the benchmarks: `mosvm receive`, `mosvm run
//! --api-sock`, `mosvm migrate`, with their output collected.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub fn mosvm() -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().join("mosvm")
}

pub struct Proc {
    pub child: Child,
    /// Kept open: jobs like `hold` run until their stdin closes.
    _stdin: Option<ChildStdin>,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Result<Proc> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        let (out, err) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(String::new())));
        for (r, into) in [
            (Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>, out.clone()),
            (Box::new(child.stderr.take().unwrap()), err.clone()),
        ] {
            std::thread::spawn(move || {
                let mut r = BufReader::new(r);
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    into.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(Proc { child, _stdin: stdin, out, err })
    }

    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    pub fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&str, &str) -> bool) -> Result<()> {
        let t = Instant::now();
        while !pred(&self.stdout(), &self.stderr()) {
            if t.elapsed() > limit {
                bail!("timed out waiting for {what}: {:?} {:?}", self.stdout(), self.stderr());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mosvm receive` on a free port: (process, address).
pub fn receiver() -> Result<(Proc, String)> {
    let mut cmd = Command::new(mosvm());
    cmd.args(["receive", "--listen", "127.0.0.1:0"]);
    let p = Proc::spawn(cmd)?;
    p.wait_for("the receiver", Duration::from_secs(10), |_, e| e.contains("waiting for a job on "))?;
    let addr = p.stderr().split("waiting for a job on ").nth(1).unwrap().lines().next().unwrap().trim().to_string();
    Ok((p, addr))
}

pub fn source(mem: &str, program: &Path, args: &[&str], sock: &Path) -> Result<Proc> {
    let _ = std::fs::remove_file(sock);
    let mut cmd = Command::new(mosvm());
    cmd.args(["run", "--mem", mem, "--api-sock"]).arg(sock).arg("--").arg(program).args(args);
    let p = Proc::spawn(cmd)?;
    let t = Instant::now();
    while !sock.exists() {
        if t.elapsed() > Duration::from_secs(10) {
            bail!("no control socket: {}", p.stderr());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(p)
}

/// `mosvm migrate --json`: the parsed result.
pub fn migrate(sock: &Path, to: &str, extra: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(mosvm())
        .arg("migrate")
        .arg("--api-sock")
        .arg(sock)
        .args(["--to", to, "--json"])
        .args(extra)
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!("migrate said {:?} {:?}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })?;
    if !out.status.success() {
        bail!("migration failed: {v}");
    }
    Ok(v)
}
