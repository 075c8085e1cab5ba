//! `make bench`: measures the micro-VM runner and writes BENCHMARKS.md.
//!
//! All figures come from this run on this machine; nothing is copied from
//! earlier runs.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Seek};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

mod cluster;
mod compat;
mod deputy;
mod drain;
mod migration;
mod procs;
mod qemu;
mod tls;

use mosvm_tests::image;
use procs::mosvm;

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn run_quiet(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    let st = cmd.stdout(Stdio::null()).stderr(Stdio::null()).stdin(Stdio::null()).status()?;
    let d = t.elapsed();
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(d)
}

pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string()))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb >> 20);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let nested = if Path::new("/sys/module/kvm_pvm").exists() {
        "nested KVM (kvm_pvm: guest ring 0 emulated, ring 3 native)"
    } else {
        "KVM"
    };
    format!("{model}, {cores} cores, {mem} GiB, Linux {kernel}, {nested}")
}

struct Launch {
    native_ms: f64,
    vm_ms: f64,
    in_process_ms: f64,
    runs: usize,
}

/// (a) launch-to-exit of hello, as processes, and the VM alone in-process.
fn launch(runs: usize) -> Result<Launch> {
    let hello = image("hello");
    let (mut native, mut vm, mut inproc) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        run_quiet(&mut Command::new(&hello))?;
        run_quiet(Command::new(mosvm()).arg("run").arg(&hello))?;
    }
    for _ in 0..runs {
        native.push(ms(run_quiet(&mut Command::new(&hello))?));
        vm.push(ms(run_quiet(Command::new(mosvm()).arg("run").arg(&hello))?));
        let devnull = std::fs::File::create("/dev/null")?;
        let t = Instant::now();
        let code = run_in_process(&hello, &[], devnull.as_raw_fd(), false)?;
        inproc.push(ms(t.elapsed()));
        if code != 0 {
            bail!("hello exited {code}");
        }
    }
    Ok(Launch { native_ms: median(&mut native), vm_ms: median(&mut vm), in_process_ms: median(&mut inproc), runs })
}

fn run_in_process(program: &Path, args: &[&str], stdout: i32, user_io: bool) -> Result<i32> {
    let mut argv = vec![program.as_os_str().to_owned()];
    argv.extend(args.iter().map(|a| a.into()));
    let config = vmm::VmConfig {
        mem_size: 256 << 20,
        program: program.to_path_buf(),
        argv,
        env: vec!["PATH=/usr/bin:/bin".into()],
        cwd: std::env::current_dir()?,
        stdio: [0, stdout, 2],
        inherited: Vec::new(),
        allow_user_io: user_io,
        log: Arc::new(|m: &str| eprintln!("bench vm: {m}")),
        trace: false,
    };
    let mut vm = vmm::Vm::new(config)?;
    match vm.run()? {
        vmm::Outcome::Exited(e) => Ok(e.shell_status()),
        vmm::Outcome::Moved(to) => bail!("the job moved to {to}"),
    }
}

/// (b) a getpid round trip against a bare I/O-port exit, in the same VM.
fn exits() -> Result<(f64, f64)> {
    let prog = image("bench/exits");
    let mut out = tempfile()?;
    let code = run_in_process(&prog, &["200000"], out.as_raw_fd(), true)?;
    if code != 0 {
        bail!("exits guest exited {code}");
    }
    let mut text = String::new();
    out.rewind()?;
    out.read_to_string(&mut text)?;
    Ok((field(&text, "bare_exit_ns")?, field(&text, "getpid_ns")?))
}

/// The number after `key` on a line of a guest's report.
fn field(text: &str, key: &str) -> Result<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().parse::<f64>()))
        .with_context(|| format!("no {key} in {text:?}"))?
        .with_context(|| format!("{key} is not a number in {text:?}"))
}

/// A guest's stdout, if it succeeded.
fn report(out: std::process::Output) -> Result<String> {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("guest failed: {text} {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(text)
}

fn tempfile() -> Result<std::fs::File> {
    let path = std::env::temp_dir().join(format!("mosvm-bench-{}", std::process::id()));
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// (c) CPU-bound speed: the cpu image with a fixed amount of work.
fn cpu_speed(iterations: &str, runs: usize) -> Result<(f64, f64)> {
    let cpu = image("cpu");
    let (mut native, mut vm) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        native.push(run_quiet(Command::new(&cpu).arg(iterations))?.as_secs_f64());
        vm.push(run_quiet(Command::new(mosvm()).arg("run").arg(&cpu).arg(iterations))?.as_secs_f64());
    }
    Ok((median(&mut native), median(&mut vm)))
}

/// (e) process creation in a job, natively and in the VM: medians of
/// fork+exit+wait and fork+exec+wait in µs, as the `spawn` guest measures.
fn spawn_times(n: usize) -> Result<[(f64, f64); 2]> {
    let spawn = image("bench/spawn");
    let parse = |out| -> Result<(f64, f64)> {
        let text = report(out)?;
        Ok((field(&text, "fork_us")?, field(&text, "spawn_us")?))
    };
    let native = parse(Command::new(&spawn).arg(n.to_string()).output()?)?;
    let vm = parse(Command::new(mosvm()).arg("run").arg(&spawn).arg(n.to_string()).output()?)?;
    Ok([(native.0, vm.0), (native.1, vm.1)])
}

/// (f) ns per clock_gettime(CLOCK_MONOTONIC) through libc, natively and
/// in the VM (the vDSO), median of `runs`.
fn clock_read(runs: usize) -> Result<(f64, f64)> {
    let bin = image("bench/clock");
    let parse = |out| field(&report(out)?, "clock_ns");
    let (mut native, mut vm) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        native.push(parse(Command::new(&bin).arg("2000000").output()?)?);
        vm.push(parse(Command::new(mosvm()).arg("run").arg(&bin).arg("2000000").output()?)?);
    }
    Ok((median(&mut native), median(&mut vm)))
}

struct Rss {
    total_kib: u64,
    guest_kib: u64,
}

/// (d) resident memory of a `mosvm run` process holding `hold_mib` of
/// guest memory: the guest RAM mapping versus everything else.
fn rss(hold_mib: u64) -> Result<Rss> {
    let mem = 256u64 << 20;
    let mut child = Command::new(mosvm())
        .args(["run", "--mem", "256M"])
        .arg(image("bench/hold"))
        .arg(hold_mib.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    if !line.starts_with("holding") {
        bail!("hold guest said {line:?}");
    }
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", child.id()))?;
    drop(child.stdin.take());
    child.wait()?;
    let (mut total, mut guest) = (0u64, 0u64);
    let mut size = 0u64;
    for l in smaps.lines() {
        let mut f = l.split_whitespace();
        match (f.next(), f.next()) {
            (Some("Size:"), Some(v)) => size = v.parse().unwrap_or(0),
            (Some("Rss:"), Some(v)) => {
                let v: u64 = v.parse().unwrap_or(0);
                total += v;
                if size == mem >> 10 {
                    guest += v;
                }
            }
            _ => {}
        }
    }
    Ok(Rss { total_kib: total, guest_kib: guest })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args.iter().position(|a| a == "--out").and_then(|i| args.get(i + 1)).cloned();
    if !Path::new("/dev/kvm").exists() {
        bail!("the benchmarks need /dev/kvm");
    }
    let date = Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC").output()?;
    let date = String::from_utf8_lossy(&date.stdout).trim().to_string();
    if args.iter().any(|a| a == "--deputy-only") {
        // For working on the deputy link: its section alone, on stdout.
        let mut md = String::new();
        deputy::report(&mut md)?;
        print!("{md}");
        return Ok(());
    }
    if args.iter().any(|a| a == "--table1-only") {
        // For working on the balancer: its section alone, on stdout.
        let mut md = String::new();
        cluster::report(&mut md)?;
        print!("{md}");
        return Ok(());
    }
    if args.iter().any(|a| a == "--compat-only") {
        let mut md = String::new();
        compat::report(&mut md)?;
        print!("{md}");
        return Ok(());
    }
    if args.iter().any(|a| a == "--drain-only") {
        let mut md = String::new();
        drain::report(&mut md)?;
        print!("{md}");
        return Ok(());
    }
    if args.iter().any(|a| a == "--tls-only") {
        let mut md = String::new();
        tls::report(&mut md)?;
        print!("{md}");
        return Ok(());
    }
    if args.iter().any(|a| a == "--migration-only") {
        // For working on migration: its section alone, on stdout.
        let mut md = String::new();
        migration::report(&mut md)?;
        print!("{md}");
        return Ok(());
    }
    let machine = machine();
    eprintln!("bench: launch-to-exit...");
    let l = launch(30)?;
    eprintln!("bench: exits...");
    let (bare, getpid) = exits()?;
    eprintln!("bench: cpu speed...");
    const CPU_WORK: &str = "1000000000";
    const CPU_RUNS: usize = 3;
    let (cpu_native, cpu_vm) = cpu_speed(CPU_WORK, CPU_RUNS)?;
    eprintln!("bench: rss...");
    const HOLD_MIB: u64 = 64;
    let r = rss(HOLD_MIB)?;
    eprintln!("bench: process creation...");
    const SPAWNS: usize = 30;
    let [fork, spawn] = spawn_times(SPAWNS)?;
    eprintln!("bench: clock reads...");
    const CLOCK_RUNS: usize = 5;
    let (clock_native, clock_vm) = clock_read(CLOCK_RUNS)?;

    let mut md = String::new();
    writeln!(md, "# mosvm benchmarks\n")?;
    writeln!(md, "Machine: {machine}  ")?;
    writeln!(md, "Date: {date}  ")?;
    writeln!(md, "Command: `make bench` (`cargo run --release -p mosvm-bench --bin bench`)\n")?;
    writeln!(md, "## Micro-VM runner\n")?;
    writeln!(md, "| what | measured | target | |")?;
    writeln!(md, "|---|---|---|---|")?;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    writeln!(
        md,
        "| (a) launch-to-exit of `hello`, median of {} | VM {:.2} ms, native {:.2} ms, ratio {:.2}x | ≤ 5 ms | {} |",
        l.runs,
        l.vm_ms,
        l.native_ms,
        l.vm_ms / l.native_ms,
        verdict(l.vm_ms <= 5.0)
    )?;
    writeln!(md, "| (a') the VM alone (create, load, run, exit; no process spawn) | {:.2} ms | | |", l.in_process_ms)?;
    writeln!(
        md,
        "| (b) getpid round trip vs bare I/O-port exit, same VM | {:.1} µs vs {:.1} µs, ratio {:.2}x | ≤ 1.2x | {} |",
        getpid / 1e3,
        bare / 1e3,
        getpid / bare,
        verdict(getpid / bare <= 1.2)
    )?;
    writeln!(
        md,
        "| (c) CPU-bound `cpu {CPU_WORK}`, median of {CPU_RUNS} | VM {:.3} s, native {:.3} s: {:.1}% of native | ≥ 98% | {} |",
        cpu_vm,
        cpu_native,
        100.0 * cpu_native / cpu_vm,
        verdict(cpu_native / cpu_vm >= 0.98)
    )?;
    let overhead = (r.total_kib - r.guest_kib) as f64 / 1024.0;
    writeln!(
        md,
        "| (d) VMM RSS beyond guest-touched memory (job holding {HOLD_MIB} MiB) | {:.2} MiB (process RSS {:.1} MiB, guest RAM {:.1} MiB) | ≤ 4 MiB | {} |",
        overhead,
        r.total_kib as f64 / 1024.0,
        r.guest_kib as f64 / 1024.0,
        verdict(overhead <= 4.0)
    )?;
    for (what, (native, vm)) in [("fork+exit+wait", fork), ("fork+exec+wait (a shell running a command)", spawn)] {
        writeln!(
            md,
            "| (e) {what} in a job, median of {SPAWNS} | VM {:.2} ms, native {:.2} ms, ratio {:.2}x | | |",
            vm / 1e3,
            native / 1e3,
            vm / native
        )?;
    }
    writeln!(
        md,
        "| (f) clock_gettime(CLOCK_MONOTONIC) through libc, median of {CLOCK_RUNS} | VM {clock_vm:.1} ns (vDSO), native {clock_native:.1} ns, ratio {:.2}x | | |",
        clock_vm / clock_native
    )?;
    let only_runner = args.iter().any(|a| a == "--runner-only");
    if !only_runner {
        migration::report(&mut md)?;
        tls::report(&mut md)?;
        deputy::report(&mut md)?;
        cluster::report(&mut md)?;
        drain::report(&mut md)?;
        compat::report(&mut md)?;
    }
    print!("{md}");
    if let Some(path) = out {
        std::fs::write(&path, &md).with_context(|| format!("writing {path}"))?;
        eprintln!("bench: wrote {path}");
    }
    Ok(())
}
