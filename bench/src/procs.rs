//! The benchmarks drive `mosvm` the way the end-to-end tests do, with
//! their helpers (`mosvm_tests`); here only what the benchmarks add: a
//! source whose stdin stays open (jobs like `hold` run until it closes)
//! and the move's JSON parsed.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

pub use mosvm_tests::{mosvm_bin as mosvm, receiver, Proc};

/// `mosvm run --mem MEM --api-sock SOCK PROGRAM ARGS`, stdin held open.
pub fn source(mem: &str, program: &Path, args: &[&str], sock: &Path) -> Proc {
    let _ = std::fs::remove_file(sock);
    let p = Proc::spawn_holding_stdin(mosvm_tests::source_command(program, args, &["--mem", mem], sock, None));
    mosvm_tests::wait_for_path(sock);
    p
}

/// `mosvm migrate --json [extra]`: the parsed result of a move that succeeded.
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
