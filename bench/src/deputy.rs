//! The deputy link: a site call served at home for a body away, against a
//! loopback TCP round trip in the same run; a remote job's file copy and
//! printing against the same job at home.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::median;
use crate::procs::{self, mosvm};
use mosvm_tests::{image, Proc};

/// Median loopback TCP round trip (16 bytes each way, Nagle off), in ns.
fn loopback_rtt(n: usize) -> Result<f64> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 16];
        while s.read_exact(&mut b).is_ok() {
            s.write_all(&b)?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let mut b = [7u8; 16];
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(&b)?;
        c.read_exact(&mut b)?;
        v.push(t.elapsed().as_nanos() as f64);
    }
    drop(c);
    let _ = echo.join();
    Ok(median(&mut v))
}

/// A body host: `mosvm receive` on 127.0.0.2; its address from the
/// announce line.
fn body_host(dir: &Path) -> Result<(Proc, String)> {
    let mut cmd = Command::new(mosvm());
    cmd.args(["receive", "--listen", "127.0.0.2:0", "--once", "--announce"]).current_dir(dir);
    let p = Proc::spawn(cmd);
    p.wait_for("the body host to listen", Duration::from_secs(10), |o, _| o.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(p.stdout().lines().next().unwrap_or(""))?;
    let addr = v["addr"].as_str().context("no address in the announce line")?.to_string();
    Ok((p, addr))
}

/// Runs `remote ARGS` in `dir` with a deputy; when `away`, moves it to a
/// body host first (the job sleeps before its work). Returns the job's
/// stdout and stderr.
fn job(dir: &Path, args: &[&str], away: bool) -> Result<(String, String)> {
    let sock = std::env::temp_dir().join(format!("mosvm-bench-deputy-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let mut cmd = mosvm_tests::source_command(&image("bench/remote"), args, &["--mem", "64M"], &sock, Some(dir));
    cmd.stdin(std::process::Stdio::null());
    let src = Proc::spawn(cmd);
    mosvm_tests::wait_for_path(&sock);
    let host = if away {
        let (h, addr) = body_host(dir)?;
        procs::migrate(&sock, &addr, &[]).context("moving the benchmark job away")?;
        Some(h)
    } else {
        None
    };
    let r = src.finish(Duration::from_secs(600));
    drop(host);
    if r.status != 0 {
        bail!("remote {args:?} failed: {r:?}");
    }
    Ok((r.stdout, r.stderr))
}

fn field(text: &str, key: &str) -> Result<f64> {
    let v: Vec<f64> = text.lines().filter_map(|l| l.strip_prefix(key).and_then(|r| r.trim().parse().ok())).collect();
    v.last().copied().with_context(|| format!("no {key} in {text:?}"))
}

/// A `mosvm host` daemon on `ip:port`, ready.
fn daemon(base: &Path, name: &str, ip: &str, port: u16, join: Option<&str>) -> Result<(Proc, std::path::PathBuf)> {
    let sock = base.join(format!("{name}.sock"));
    let mut cmd = Command::new(mosvm());
    cmd.args(["host", "--insecure", "--name", name, "--listen", &format!("{ip}:{port}"), "--api-sock"])
        .arg(&sock)
        .arg("--state-dir")
        .arg(base.join(name));
    if let Some(j) = join {
        cmd.args(["--join", j]);
    }
    let p = Proc::spawn(cmd);
    p.wait_for("the daemon to be ready", Duration::from_secs(10), |o, _| o.contains("\"ready\""));
    Ok((p, sock))
}

/// Moves of an idle 256 MiB job between two daemons (`migrate JOB --to`),
/// there and home again: the figures of each move and the command's
/// own time, which includes starting the body host at the destination.
fn daemon_moves(reps: usize) -> Result<(f64, f64, f64)> {
    let base = mosvm_tests::scratch_dir("bench-daemons");
    let port = 21000 + (std::process::id() % 2000) as u16;
    let (h1, s1) = daemon(&base, "h1", "127.0.0.2", port, None)?;
    let (h2, _) = daemon(&base, "h2", "127.0.0.3", port, Some(&format!("127.0.0.2:{port}")))?;
    let mosvm_at = |args: &[&str]| Command::new(mosvm()).env("MOSVM_SOCK", &s1).args(args).output();
    // Both hosts alive in h1's view.
    let t = Instant::now();
    loop {
        let out = mosvm_at(&["hosts", "--json"])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v.as_array().is_some_and(|a| a.iter().filter(|h| h["state"] == "alive").count() == 2) {
            break;
        }
        if t.elapsed() > Duration::from_secs(15) {
            bail!("the daemons did not see each other: {v}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut cmd = Command::new(mosvm());
    cmd.env("MOSVM_SOCK", &s1).args(["run", "--mem", "256M", "--"]).arg(image("bench/hold")).arg("1");
    let job = Proc::spawn_holding_stdin(cmd);
    job.wait_for("the job to start", Duration::from_secs(10), |o, _| o.contains("holding"));
    let out = mosvm_at(&["ps", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let id = v[0]["id"].as_u64().context("no job in ps")?.to_string();
    let (mut total, mut down, mut wall) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        for to in ["h2", "home"] {
            let t = Instant::now();
            let out = mosvm_at(&["migrate", &id, "--to", to, "--json"])?;
            wall.push(t.elapsed().as_secs_f64() * 1e3);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .with_context(|| format!("migrate said {:?}", String::from_utf8_lossy(&out.stderr)))?;
            if v["result"] != "ok" {
                bail!("a move between daemons failed: {v}");
            }
            total.push(v["total_ms"].as_f64().unwrap_or(0.0));
            down.push(v["downtime_ms"].as_f64().unwrap_or(0.0));
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    drop(job);
    drop(h2);
    drop(h1);
    let _ = std::fs::remove_dir_all(&base);
    Ok((median(&mut total), median(&mut down), median(&mut wall)))
}

/// Direct moves of the same idle job (`migrate --api-sock`), there and
/// home again, in the same run.
fn direct_moves(reps: usize) -> Result<(f64, f64)> {
    let dir = mosvm_tests::scratch_dir("bench-direct");
    let sock = dir.join("job.sock");
    let src = procs::source("256M", &image("bench/hold"), &["1"], &sock);
    src.wait_for("the job to start", Duration::from_secs(10), |o, _| o.contains("holding"));
    let (mut total, mut down) = (Vec::new(), Vec::new());
    for i in 0..reps {
        let body = dir.join(format!("body{i}.sock"));
        // A body host with a control socket, so the body can come home.
        let mut cmd = Command::new(mosvm());
        cmd.args(["receive", "--listen", "127.0.0.2:0", "--once", "--announce", "--api-sock"]).arg(&body);
        let h = Proc::spawn(cmd);
        h.wait_for("the body host", Duration::from_secs(10), |o, _| o.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(h.stdout().lines().next().unwrap_or(""))?;
        let addr = v["addr"].as_str().context("no address")?.to_string();
        for (from, to) in [(&sock, addr.as_str()), (&body, "home")] {
            if from == &body {
                mosvm_tests::wait_for_path(&body);
            }
            let r = procs::migrate(from, to, &[])?;
            total.push(r["total_ms"].as_f64().unwrap_or(0.0));
            down.push(r["downtime_ms"].as_f64().unwrap_or(0.0));
            std::thread::sleep(Duration::from_millis(200));
        }
        drop(h);
    }
    drop(src);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((median(&mut total), median(&mut down)))
}

pub fn report(md: &mut String) -> Result<()> {
    let dir = mosvm_tests::scratch_dir("bench-deputy");
    eprintln!("bench: deputy link: round trips...");
    let rtt = loopback_rtt(20_000)?;
    // fstat of an open file: rounds at home, then (after the move) away.
    let (home_out, _) = job(&dir, &["fstat", "5", "20000"], false)?;
    let mut home: Vec<f64> =
        home_out.lines().filter_map(|l| l.strip_prefix("fstat_ns ").and_then(|x| x.parse().ok())).collect();
    let (away_out, _) = job(&dir, &["fstat", "12", "5000"], true)?;
    // The first rounds may straddle the move.
    let mut away: Vec<f64> =
        away_out.lines().filter_map(|l| l.strip_prefix("fstat_ns ").and_then(|x| x.parse().ok())).skip(4).collect();
    let (home_call, away_call) = (median(&mut home), median(&mut away));

    eprintln!("bench: deputy link: copying 256 MiB...");
    let status = Command::new("dd")
        .args(["if=/dev/urandom", "of=in.bin", "bs=1M", "count=256", "status=none"])
        .current_dir(&dir)
        .status()?;
    if !status.success() {
        bail!("cannot make the input file");
    }
    let copy = |away: bool| -> Result<f64> {
        let (out, _) = job(&dir, &["copy", "in.bin", "out.bin", "1500"], away)?;
        if std::fs::read(dir.join("in.bin"))? != std::fs::read(dir.join("out.bin"))? {
            bail!("the copy differs from its input");
        }
        field(&out, "copy_mb_s ")
    };
    let (copy_home, copy_away) = (copy(false)?, copy(true)?);
    let _ = std::fs::remove_file(dir.join("in.bin"));
    let _ = std::fs::remove_file(dir.join("out.bin"));

    eprintln!("bench: deputy link: 100000 lines...");
    let lines = |away: bool| -> Result<f64> {
        let (out, err) = job(&dir, &["lines", "100000", "1500"], away)?;
        if out.lines().count() != 100_000 {
            bail!("{} lines arrived, not 100000", out.lines().count());
        }
        field(&err, "lines_ms ")
    };
    let (lines_home, lines_away) = (lines(false)?, lines(true)?);
    let _ = std::fs::remove_dir_all(&dir);

    eprintln!("bench: deputy link: moves between daemons...");
    let (d_total, d_down, d_wall) = daemon_moves(5)?;
    let (m_total, m_down) = direct_moves(5)?;

    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    writeln!(md, "\n## Deputy link (a job away from home, its site served at home)\n")?;
    writeln!(md, "Body host: `mosvm receive` on 127.0.0.2; home: the job's `mosvm run`; loopback TCP between them.\n")?;
    writeln!(md, "| what | away | at home / anchor | ratio | goal | |")?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    // The remote call includes the guest's own exit to the VMM, which the
    // same call at home pays too: compare what the link adds to the RTT.
    let link = away_call - home_call;
    writeln!(
        md,
        "| fstat of an open file (ns per call) | {away_call:.0} | at home {home_call:.0}; loopback TCP round trip {rtt:.0} | link cost {:.2}x RTT | ≤ 1.5x | {} |",
        link / rtt,
        verdict(link / rtt <= 1.5)
    )?;
    writeln!(
        md,
        "| copy 256 MiB, 64 KiB reads and writes (MB/s) | {copy_away:.0} | {copy_home:.0} | {:.0}% | ≥ 50% | {} |",
        100.0 * copy_away / copy_home,
        verdict(copy_away / copy_home >= 0.5)
    )?;
    writeln!(
        md,
        "| 100000 lines, one write each (ms) | {lines_away:.0} | {lines_home:.0} | {:.2}x | ≤ 2x | {} |",
        lines_away / lines_home,
        verdict(lines_away / lines_home <= 2.0)
    )?;
    writeln!(
        md,
        "| idle 256 MiB job moved between daemons (`migrate JOB --to`), median of 10 moves there and home | total {d_total:.1} ms, downtime {d_down:.2} ms (the command: {d_wall:.1} ms, with starting the body host) | direct `migrate --api-sock`, same run: total {m_total:.1} ms, downtime {m_down:.2} ms | | no worse than direct (within 20% + 0.5 ms total, 20% + 0.2 ms downtime: this machine's run-to-run noise) | {} |",
        verdict(d_total <= m_total * 1.2 + 0.5 && d_down <= m_down * 1.2 + 0.2)
    )?;
    Ok(())
}
