//! The page stream under mutual TLS, side by side with plain TCP in the
//! same run: the transport alone (1 GiB through `trust::Link`), and the
//! same 200 MiB job moved over each.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use trust::Transport;

use crate::procs::{self, Proc};
use crate::{image, median};

/// Two host identities of a fresh cluster, in a scratch directory.
fn identities() -> Result<(PathBuf, PathBuf, PathBuf)> {
    let dir = std::env::temp_dir().join(format!("mosvm-bench-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    trust::init_cluster(&dir)?;
    Ok((trust::add_host(&dir, "src")?, trust::add_host(&dir, "dst")?, dir))
}

/// MB/s of 1 GiB from one thread to another over `a` -> `b`, in 2 MiB
/// writes of records the size migration uses, read into one buffer.
fn link_rate(a: &Transport, b: &Transport, suite: &mut String) -> Result<f64> {
    const TOTAL: usize = 1 << 30;
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let server = b.clone();
    let t = std::thread::spawn(move || -> std::io::Result<usize> {
        let (s, _) = l.accept()?;
        let link = server.server(s)?;
        let mut buf = vec![0u8; 2 << 20];
        let mut got = 0;
        while got < TOTAL {
            let n = (&link).read(&mut buf)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok(got)
    });
    let link = a.connect(&addr, Duration::from_secs(5))?;
    *suite = link.cipher_suite().unwrap_or("none").to_string();
    let buf = vec![1u8; 2 << 20];
    let start = Instant::now();
    let mut sent = 0;
    while sent < TOTAL {
        (&link).write_all(&buf)?;
        sent += buf.len();
    }
    let got = t.join().expect("the reader thread")?;
    let rate = got as f64 / start.elapsed().as_secs_f64() / 1e6;
    // The reader may have gone already: nothing to say to it.
    let _ = link.shutdown(std::net::Shutdown::Both);
    Ok(rate)
}

/// One move of `hold 200` (200 MiB non-zero) in a 256 MiB guest; with
/// `tls`, both ends use those identities.
fn move_once(tls: Option<(&Path, &Path)>) -> Result<serde_json::Value> {
    let sock = std::env::temp_dir().join(format!("mosvm-bench-tls-{}.sock", std::process::id()));
    let (src_args, dst_args): (Vec<String>, Vec<String>) = match tls {
        Some((s, d)) => (
            vec!["--mem".into(), "256M".into(), "--tls".into(), s.display().to_string()],
            vec!["--tls".into(), d.display().to_string()],
        ),
        None => (vec!["--mem".into(), "256M".into()], vec![]),
    };
    let dst: Vec<&str> = dst_args.iter().map(String::as_str).collect();
    let (recv, addr) = procs::receiver(&dst, None);
    let _ = std::fs::remove_file(&sock);
    let src_flags: Vec<&str> = src_args.iter().map(String::as_str).collect();
    let src =
        Proc::spawn_holding_stdin(mosvm_tests::source_command(&image("bench/hold"), &["200"], &src_flags, &sock, None));
    mosvm_tests::wait_for_path(&sock);
    src.wait_for("holding", Duration::from_secs(60), |o, _| o.contains("holding"));
    std::thread::sleep(Duration::from_millis(100));
    let r = procs::migrate(&sock, &addr, &[]);
    drop(src);
    drop(recv);
    r
}

pub fn report(md: &mut String) -> Result<()> {
    let (src, dst, dir) = identities()?;
    let (ts, td) = (Transport::from_dir(&src)?, Transport::from_dir(&dst)?);
    eprintln!("bench: tls: the transport alone...");
    const LINK_RUNS: usize = 3;
    let (mut plain, mut tls, mut suite) = (Vec::new(), Vec::new(), String::new());
    for _ in 0..LINK_RUNS {
        plain.push(link_rate(&Transport::Plain, &Transport::Plain, &mut String::new())?);
        tls.push(link_rate(&ts, &td, &mut suite)?);
    }
    let (plain_link, tls_link) = (median(&mut plain), median(&mut tls));
    eprintln!("bench: tls: moves...");
    const MOVES: usize = 5;
    let (mut p, mut t) = (Vec::new(), Vec::new());
    for _ in 0..MOVES {
        // Alternating, so that both see the same machine.
        p.push(move_once(None).context("a plain move")?);
        t.push(move_once(Some((&src, &dst))).context("a move over TLS")?);
    }
    let _ = std::fs::remove_dir_all(dir);
    let med = |v: &[serde_json::Value], k: &str| {
        let mut x: Vec<f64> = v.iter().filter_map(|r| r[k].as_f64()).collect();
        median(&mut x)
    };
    writeln!(md, "\n## The page stream under mutual TLS (loopback, one run)\n")?;
    writeln!(
        md,
        "TLS 1.3 ({suite}; rustls 0.23 on ring), certificates of a fresh cluster CA at both ends; plain TCP \
         alternating with it in the same run.\n"
    )?;
    writeln!(md, "| what | plain TCP | mutual TLS | TLS / plain |")?;
    writeln!(md, "|---|---|---|---|")?;
    writeln!(
        md,
        "| 1 GiB through one link, 2 MiB writes (median of {LINK_RUNS}) | {plain_link:.0} MB/s | {tls_link:.0} MB/s | {:.0}% |",
        100.0 * tls_link / plain_link
    )?;
    let (pb, tb) = (med(&p, "bandwidth_mbps"), med(&t, "bandwidth_mbps"));
    writeln!(
        md,
        "| move of a 256 MiB guest with 200 MiB non-zero: page stream (median of {MOVES}) | {pb:.0} MB/s | {tb:.0} MB/s | {:.0}% |",
        100.0 * tb / pb
    )?;
    writeln!(
        md,
        "| the same move: total, downtime | {:.1} ms, {:.2} ms | {:.1} ms, {:.2} ms | |",
        med(&p, "total_ms"),
        med(&p, "downtime_ms"),
        med(&t, "total_ms"),
        med(&t, "downtime_ms")
    )?;
    let verdict = if tb >= 0.7 * pb { "met" } else { "MISSED" };
    writeln!(md, "\nGoal: the page stream under TLS at least 70% of plain: {:.0}%, {verdict}.", 100.0 * tb / pb)?;
    Ok(())
}
