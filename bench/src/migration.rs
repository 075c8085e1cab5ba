//! Live-migration figures: idle guests, a guest holding 200 MiB, a fast
//! writer; QEMU doing the same on this machine; what loopback TCP carries.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::procs::{self, Proc};
use crate::{image, median};

pub struct Case {
    pub name: String,
    pub runs: Vec<Value>,
}

impl Case {
    fn med(&self, key: &str) -> f64 {
        let mut v: Vec<f64> = self.runs.iter().filter_map(|r| r.get(key).and_then(|x| x.as_f64())).collect();
        if v.is_empty() {
            return 0.0;
        }
        median(&mut v)
    }

    fn paths(&self) -> String {
        let mut p: Vec<String> =
            self.runs.iter().filter_map(|r| r.get("path").and_then(|x| x.as_str()).map(String::from)).collect();
        p.sort();
        p.dedup();
        p.join(", ")
    }
}

#[allow(clippy::too_many_arguments)]
/// Runs `prog args` in a `mem` guest, waits for `ready` on its stdout (and
/// `settle` more), moves it; `reps` times.
fn case(
    name: &str,
    mem: &str,
    prog: &str,
    args: &[&str],
    ready: &str,
    settle: Duration,
    extra: &[&str],
    reps: usize,
) -> Result<Case> {
    let mut runs = Vec::new();
    let sock = std::env::temp_dir().join(format!("mosvm-bench-{}.sock", std::process::id()));
    for _ in 0..reps {
        let (recv, addr) = procs::receiver(&[], None);
        let src: Proc = procs::source(mem, &image(prog), args, &sock);
        src.wait_for(ready, Duration::from_secs(60), |o, _| o.contains(ready));
        std::thread::sleep(settle);
        runs.push(procs::migrate(&sock, &addr, extra).with_context(|| name.to_string())?);
        drop(src);
        drop(recv);
    }
    Ok(Case { name: name.into(), runs })
}

/// What loopback TCP carries: 1 GiB from one thread to another, the
/// receiver reusing one buffer (the ceiling), and into fresh memory (what a
/// migration receiver must do: every page is new to it).
pub fn loopback() -> Result<(f64, f64)> {
    let run = |fresh: bool| -> Result<f64> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        const TOTAL: usize = 1 << 30;
        let t = std::thread::spawn(move || -> std::io::Result<usize> {
            let (mut s, _) = l.accept()?;
            let mut got = 0;
            if fresh {
                let mut mem = vec![0u8; 0];
                mem.reserve_exact(TOTAL);
                // SAFETY: reading into reserved capacity; length set to what was read.
                unsafe {
                    while got < TOTAL {
                        let buf = std::slice::from_raw_parts_mut(mem.as_mut_ptr().add(got), (TOTAL - got).min(2 << 20));
                        let n = s.read(buf)?;
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                    mem.set_len(got);
                }
            } else {
                let mut buf = vec![0u8; 2 << 20];
                while got < TOTAL {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
            }
            Ok(got)
        });
        let mut s = TcpStream::connect(addr)?;
        let buf = vec![1u8; 2 << 20];
        let start = Instant::now();
        let mut sent = 0;
        while sent < TOTAL {
            s.write_all(&buf)?;
            sent += buf.len();
        }
        drop(s);
        let got = t.join().unwrap()?;
        Ok(got as f64 / start.elapsed().as_secs_f64() / 1e6)
    };
    let mut reuse: Vec<f64> = (0..3).map(|_| run(false)).collect::<Result<_>>()?;
    let mut fresh: Vec<f64> = (0..3).map(|_| run(true)).collect::<Result<_>>()?;
    Ok((median(&mut reuse), median(&mut fresh)))
}

struct QemuCase {
    total_ms: f64,
    downtime_ms: f64,
    mib: f64,
}

fn qemu_case(mem_mib: u64, file: Option<&Path>, reps: usize) -> Result<QemuCase> {
    let (mut t, mut d, mut b) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let r = crate::qemu::migrate(mem_mib, file)?;
        t.push(r.total_ms);
        d.push(r.downtime_ms);
        b.push(r.transferred as f64 / 1048576.0);
    }
    Ok(QemuCase { total_ms: median(&mut t), downtime_ms: median(&mut d), mib: median(&mut b) })
}

/// A 256 MiB RAM image: 200 MiB of random bytes, the rest zeros.
fn random_ram_file() -> Result<std::path::PathBuf> {
    let p = std::env::temp_dir().join(format!("mosvm-bench-ram-{}.img", std::process::id()));
    let mut f = std::fs::File::create(&p)?;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..200 {
        // SAFETY: filling our own buffer.
        unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
        f.write_all(&buf)?;
    }
    f.set_len(256 << 20)?;
    Ok(p)
}

/// Migrations of each QEMU case.
const QEMU_RUNS: usize = 3;

pub fn report(md: &mut String) -> Result<()> {
    eprintln!("bench: migration: loopback...");
    let (tcp, tcp_fresh) = loopback()?;
    eprintln!("bench: migration: ours...");
    let ms = Duration::from_millis;
    let cases = [
        case("(a) idle job, 256 MiB guest", "256M", "bench/hold", &["1"], "holding", ms(100), &[], 7)?,
        case("(a) idle job, 1 GiB guest", "1G", "bench/hold", &["1"], "holding", ms(100), &[], 7)?,
        case(
            "(b) 200 MiB non-zero, idle CPU, 256 MiB guest",
            "256M",
            "bench/hold",
            &["200"],
            "holding",
            ms(100),
            &[],
            5,
        )?,
        case(
            "(c) `mem` rewriting 64 MiB as fast as it can",
            "256M",
            "mem",
            &["64", "64", "--seconds", "60"],
            "allocated",
            ms(1000),
            &[],
            5,
        )?,
        case(
            "(c') the same over a link capped at 100 MB/s",
            "256M",
            "mem",
            &["64", "64", "--seconds", "60"],
            "allocated",
            ms(1000),
            &["--max-bandwidth", "100"],
            1,
        )?,
    ];
    let qemu = if crate::qemu::binary().is_some() {
        eprintln!("bench: migration: QEMU...");
        let file = random_ram_file()?;
        let r = (|| -> Result<_> {
            Ok((
                qemu_case(256, None, QEMU_RUNS)?,
                qemu_case(1024, None, QEMU_RUNS)?,
                qemu_case(256, Some(&file), QEMU_RUNS)?,
            ))
        })();
        let _ = std::fs::remove_file(file);
        Some(r?)
    } else {
        None
    };

    writeln!(md, "\n## Live migration (loopback, one run)\n")?;
    writeln!(
        md,
        "Loopback TCP on this machine: {tcp:.0} MB/s into a reused buffer, {tcp_fresh:.0} MB/s into fresh memory (as a migration receiver must).\n"
    )?;
    writeln!(md, "| case | total | downtime | rounds | sent | zero pages skipped | page stream | path |")?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    for c in &cases {
        writeln!(
            md,
            "| {} (median of {}) | {:.1} ms | {:.2} ms | {:.0} | {:.1} MiB | {:.0} | {:.0} MB/s | {} |",
            c.name,
            c.runs.len(),
            c.med("total_ms"),
            c.med("downtime_ms"),
            c.med("rounds"),
            c.med("bytes_sent") / 1048576.0,
            c.med("zero_pages_skipped"),
            c.med("bandwidth_mbps"),
            c.paths()
        )?;
    }
    let (a256, a1g, b) = (&cases[0], &cases[1], &cases[2]);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    writeln!(md, "\n| target | measured | |")?;
    writeln!(md, "|---|---|---|")?;
    writeln!(
        md,
        "| (a) idle 256 MiB: downtime ≤ 1 ms, total ≤ 20 ms | {:.2} ms, {:.1} ms | {} |",
        a256.med("downtime_ms"),
        a256.med("total_ms"),
        verdict(a256.med("downtime_ms") <= 1.0 && a256.med("total_ms") <= 20.0)
    )?;
    writeln!(
        md,
        "| (b) 200 MiB: total ≤ 250 ms, downtime ≤ 5 ms | {:.1} ms, {:.2} ms | {} |",
        b.med("total_ms"),
        b.med("downtime_ms"),
        verdict(b.med("total_ms") <= 250.0 && b.med("downtime_ms") <= 5.0)
    )?;
    let c = &cases[3];
    writeln!(
        md,
        "| (c) fast writer: completes, downtime ≤ 10 ms | all {} completed, {:.2} ms | {} |",
        c.runs.len(),
        c.med("downtime_ms"),
        verdict(c.med("downtime_ms") <= 10.0)
    )?;
    let stream = b.med("bandwidth_mbps");
    writeln!(
        md,
        "| page stream ≥ 80% of loopback TCP | {stream:.0} MB/s: {:.0}% of loopback into a reused buffer, {:.0}% of loopback into fresh memory | {} |",
        100.0 * stream / tcp,
        100.0 * stream / tcp_fresh,
        verdict(stream >= 0.8 * tcp)
    )?;
    if let Some((q256, q1g, qb)) = qemu {
        writeln!(
            md,
            "\nQEMU {} (KVM, max-bandwidth raised, other settings default), same machine, same run, median of {QEMU_RUNS}:\n",
            qemu_version()
        )?;
        writeln!(md, "| case | QEMU total | QEMU downtime | QEMU sent | mosvm total | mosvm downtime | total ratio | downtime ratio |")?;
        writeln!(md, "|---|---|---|---|---|---|---|---|")?;
        for (name, q, m) in [
            ("(a) 256 MiB, no OS", &q256, a256),
            ("(a) 1 GiB, no OS", &q1g, a1g),
            ("(b) 256 MiB, 200 MiB non-zero (QEMU: random bytes; mosvm: `hold`)", &qb, b),
        ] {
            writeln!(
                md,
                "| {name} | {:.0} ms | {:.1} ms | {:.1} MiB | {:.1} ms | {:.2} ms | {:.1}x faster | {:.1}x shorter |",
                q.total_ms,
                q.downtime_ms,
                q.mib,
                m.med("total_ms"),
                m.med("downtime_ms"),
                q.total_ms / m.med("total_ms").max(1e-9),
                q.downtime_ms / m.med("downtime_ms").max(1e-9)
            )?;
        }
    } else {
        writeln!(md, "\nQEMU is not installed (apt-get install qemu-system-x86): no comparison in this run.")?;
    }
    Ok(())
}

fn qemu_version() -> String {
    std::process::Command::new("/usr/bin/qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim_start_matches("QEMU emulator version ").to_string())
        })
        .unwrap_or_default()
}
