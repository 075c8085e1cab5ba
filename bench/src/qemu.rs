//! QEMU live-migrating a guest of the same size over loopback, measured in
//! the same run for comparison. Driven over QMP.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

pub fn binary() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/qemu-system-x86_64");
    p.exists().then_some(p)
}

struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Result<Qmp> {
        let t = Instant::now();
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(_) if t.elapsed() < Duration::from_secs(10) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => bail!("QMP {}: {e}", path.display()),
            }
        };
        let mut q = Qmp { r: BufReader::new(s.try_clone()?), w: s };
        let mut greeting = String::new();
        q.r.read_line(&mut greeting)?;
        q.cmd("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn cmd(&mut self, name: &str, args: Value) -> Result<Value> {
        writeln!(self.w, "{}", json!({"execute": name, "arguments": args}))?;
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line)? == 0 {
                bail!("QMP closed");
            }
            let v: Value = serde_json::from_str(&line)?;
            if let Some(e) = v.get("error") {
                bail!("QMP {name}: {e}");
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
        }
    }
}

pub struct QemuResult {
    pub total_ms: f64,
    pub downtime_ms: f64,
    pub transferred: u64,
}

/// Moves a `mem_mib` guest from one QEMU to another. With `ram_file` the
/// source's RAM is that file (mapped privately), so its bytes are what moves.
pub fn migrate(mem_mib: u64, ram_file: Option<&Path>) -> Result<QemuResult> {
    let qemu = binary().context("qemu-system-x86_64 is not installed")?;
    let dir = std::env::temp_dir();
    let id = std::process::id();
    let (ssock, dsock) = (dir.join(format!("mosvm-bench-qs-{id}.sock")), dir.join(format!("mosvm-bench-qd-{id}.sock")));
    let _ = std::fs::remove_file(&ssock);
    let _ = std::fs::remove_file(&dsock);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let common = |sock: &Path| {
        let mut c = Command::new(&qemu);
        c.args(["-accel", "kvm", "-m", &format!("{mem_mib}M"), "-nodefaults", "-display", "none", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let mut dst = common(&dsock);
    dst.arg("-incoming").arg(format!("tcp:127.0.0.1:{port}"));
    let mut src = common(&ssock);
    if let Some(f) = ram_file {
        let backend = format!("memory-backend-file,id=ram0,size={mem_mib}M,mem-path={},share=off", f.display());
        src.args(["-object", &backend, "-machine", "memory-backend=ram0"]);
        dst.args([
            "-object",
            &format!("memory-backend-ram,id=ram0,size={mem_mib}M"),
            "-machine",
            "memory-backend=ram0",
        ]);
    }
    let _d = Qemu(dst.spawn()?);
    let _s = Qemu(src.spawn()?);
    let mut q = Qmp::connect(&ssock)?;
    let _qd = Qmp::connect(&dsock)?;
    // Let the firmware run and settle.
    std::thread::sleep(Duration::from_millis(500));
    q.cmd("migrate-set-parameters", json!({"max-bandwidth": 100_000_000_000u64}))?;
    q.cmd("migrate", json!({"uri": format!("tcp:127.0.0.1:{port}")}))?;
    let t = Instant::now();
    loop {
        let r = q.cmd("query-migrate", json!({}))?;
        match r.get("status").and_then(|s| s.as_str()) {
            Some("completed") => {
                let f = |k: &str| r.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0);
                return Ok(QemuResult {
                    total_ms: f("total-time"),
                    downtime_ms: f("downtime"),
                    transferred: r.pointer("/ram/transferred").and_then(|v| v.as_u64()).unwrap_or(0),
                });
            }
            Some("failed") | Some("cancelled") => bail!("QEMU migration failed: {r}"),
            _ => {}
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("QEMU migration did not finish");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
