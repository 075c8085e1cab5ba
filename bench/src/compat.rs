//! Programs users run: launch-to-exit of a dynamically linked hello and of
//! `python3 -c pass`, the startup of a 100 MB static binary, each beside
//! its native run; and the fraction of the compatibility corpus
//! (tests/corpus.rs: Debian's tools, shells and interpreters) that gives
//! exactly its native result in a job.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use mosvm_tests::corpus::{cases, run_case};
use mosvm_tests::{image, mosvm_bin, root};

use crate::{median, ms, run_quiet};

/// Median launch-to-exit (ms) of `argv`, natively and in a job.
fn side_by_side(argv: &[&Path], args: &[&str], runs: usize) -> Result<(f64, f64)> {
    let native = || {
        let mut c = Command::new(argv[0]);
        c.args(args);
        c
    };
    let job = || {
        let mut c = Command::new(mosvm_bin());
        c.arg("run").arg("--").arg(argv[0]).args(args);
        c
    };
    for _ in 0..3 {
        run_quiet(&mut native())?;
        run_quiet(&mut job())?;
    }
    let (mut n, mut v) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        n.push(ms(run_quiet(&mut native())?));
        v.push(ms(run_quiet(&mut job())?));
    }
    Ok((median(&mut n), median(&mut v)))
}

/// A static program whose file is 100 MiB (initialised data it barely
/// touches), built once into target/.
fn big_binary() -> Result<PathBuf> {
    let dir = root().join("target/bench-big");
    let exe = dir.join("big");
    if exe.exists() {
        return Ok(exe);
    }
    std::fs::create_dir_all(&dir)?;
    let src = dir.join("big.c");
    std::fs::write(
        &src,
        "/* 100 MiB of initialised data in the file; main reads one byte. */\n\
         __attribute__((used)) const unsigned char big[100 << 20] = {1};\n\
         int main(int argc, char **argv) { (void)argv; return big[argc * 4096] != 0; }\n",
    )?;
    let st = Command::new("musl-gcc").args(["-static", "-O2", "-o"]).arg(&exe).arg(&src).status()?;
    if !st.success() {
        bail!("building {}: {st}", exe.display());
    }
    Ok(exe)
}

pub fn report(md: &mut String) -> Result<()> {
    writeln!(md, "\n## Programs users run\n")?;
    let date = Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC").output()?;
    writeln!(
        md,
        "Machine: {}, {}. `make bench` (`bench --compat-only` for this section alone). Each program is started \
         as a process, natively and as `mosvm run -- PROGRAM`, alternately.\n",
        crate::machine(),
        String::from_utf8_lossy(&date.stdout).trim()
    )?;
    writeln!(md, "| what | job | native | ratio |")?;
    writeln!(md, "|---|---|---|---|")?;
    const RUNS: usize = 20;
    // The floor: a small static program, the same way.
    let small = image("hello");
    let (n, v) = side_by_side(&[&small], &[], RUNS)?;
    writeln!(
        md,
        "| launch-to-exit, static musl `hello` (the anchor), median of {RUNS} | {v:.2} ms | {n:.2} ms | {:.1}x |",
        v / n
    )?;
    let hello = image("tests/hello-dynamic");
    let (n, v) = side_by_side(&[&hello], &[], RUNS)?;
    writeln!(
        md,
        "| launch-to-exit, dynamically linked glibc `hello`, median of {RUNS} | {v:.2} ms | {n:.2} ms | {:.1}x |",
        v / n
    )?;
    let py = Path::new("/usr/bin/python3");
    let (n, v) = side_by_side(&[py], &["-c", "pass"], RUNS)?;
    writeln!(md, "| `python3 -c pass`, median of {RUNS} | {v:.2} ms | {n:.2} ms | {:.1}x |", v / n)?;
    let big = big_binary().context("the 100 MiB binary")?;
    let size = std::fs::metadata(&big)?.len() as f64 / (1 << 20) as f64;
    let (n, v) = side_by_side(&[&big], &[], RUNS)?;
    writeln!(
        md,
        "| startup of a static binary of {size:.0} MiB, median of {RUNS} | {v:.2} ms | {n:.2} ms | {:.1}x |",
        v / n
    )?;

    let work = std::env::temp_dir().join(format!("mosvm-bench-corpus-{}", std::process::id()));
    let all = cases();
    let mut failed = Vec::new();
    for c in &all {
        let o = run_case(c, &work.join(c.name.replace(['/', ' '], "_")), &[]);
        if !o.same() {
            failed.push(c.name);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let passed = all.len() - failed.len();
    writeln!(
        md,
        "\nCompatibility corpus (tests/corpus.rs: Debian's coreutils, grep, sed, awk, tar, gzip, xz, bzip2, file, \
         sqlite3, jq, gcc, make, bash, dash, busybox, python3, perl; output, status and files compared with the native run): **{passed} of {} identical ({:.0}%)**.",
        all.len(),
        100.0 * passed as f64 / all.len() as f64
    )?;
    if !failed.is_empty() {
        writeln!(md, "Differing: {}.", failed.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", "))?;
    }
    Ok(())
}
