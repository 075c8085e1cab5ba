//! `mosvm run`: one job in a micro-VM, in the foreground.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::Arc;

use vmm::{Vm, VmConfig, VmError};

use crate::cli::RunArgs;

/// Exit statuses for failures before the job runs, as env(1) uses them.
const EXIT_CANNOT_EXECUTE: i32 = 126;
const EXIT_NOT_FOUND: i32 = 127;
const EXIT_VMM_FAILURE: i32 = 125;

/// The caller's environment with `--env` overrides applied.
fn job_env(overrides: &[(OsString, OsString)]) -> Vec<OsString> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (k, v) in overrides {
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    env.into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            OsString::from_vec(kv)
        })
        .collect()
}

/// Finds PROGRAM like execvp: a name without a slash is looked up in PATH.
fn resolve(program: &OsString) -> PathBuf {
    let p = PathBuf::from(program);
    if program.as_bytes().contains(&b'/') {
        return p;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(&p);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    p
}

pub fn run(args: RunArgs) -> i32 {
    let program = resolve(&args.program);
    let mut argv = vec![args.program.clone()];
    argv.extend(args.args.iter().cloned());
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("mosvm: cannot determine the working directory: {e}");
            return EXIT_VMM_FAILURE;
        }
    };
    let config = VmConfig {
        mem_size: args.mem,
        program,
        argv,
        env: job_env(&args.env),
        cwd,
        stdio: [0, 1, 2],
        allow_user_io: false,
        trace: args.trace,
        log: Arc::new(|msg: &str| eprintln!("mosvm: {msg}")),
    };
    vmm::signal::forward_host_signals();
    let mut vm = match Vm::new(config) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("mosvm: {e}");
            return match e {
                VmError::Read { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                VmError::Read { .. } | VmError::Elf(_) => EXIT_CANNOT_EXECUTE,
                _ => EXIT_VMM_FAILURE,
            };
        }
    };
    match vm.run() {
        Ok(exit) => exit.shell_status(),
        Err(e) => {
            eprintln!("mosvm: {e}");
            EXIT_VMM_FAILURE
        }
    }
}
