//! `mosvm run`: one job in a micro-VM, in the foreground.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::Arc;

use vmm::{Vm, VmConfig, VmError};

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use vmm::migration::{self, ReceiveOptions};
use vmm::{Outcome, RestoreEnv};

use crate::api::ApiServer;
use crate::cli::{ReceiveArgs, RestoreArgs, RunArgs};

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
        log: log(),
    };
    let vm = match Vm::new(config) {
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
    foreground(vm, args.api_sock.as_deref())
}

fn log() -> vmm::Log {
    Arc::new(|msg: &str| eprintln!("mosvm: {msg}"))
}

/// Runs `vm` until its job ends here (its status) or moves away (0).
fn foreground(mut vm: Vm, api_sock: Option<&Path>) -> i32 {
    let api = match api_sock.map(|p| ApiServer::start(p, vm.handle())).transpose() {
        Ok(api) => api,
        Err(e) => {
            eprintln!("mosvm: cannot serve the control socket {}: {e}", api_sock.unwrap().display());
            return EXIT_VMM_FAILURE;
        }
    };
    // From now on terminal signals go to the job (before, they end mosvm).
    vmm::signal::forward_host_signals();
    let code = match vm.run() {
        Ok(Outcome::Exited(exit)) => exit.shell_status(),
        Ok(Outcome::Moved(to)) => {
            eprintln!("mosvm: job moved to {to}");
            0
        }
        Err(e) => {
            eprintln!("mosvm: {e}");
            EXIT_VMM_FAILURE
        }
    };
    if let Some(api) = &api {
        // Let `mosvm migrate` hear the result before this process goes.
        api.drain(Duration::from_secs(5));
    }
    code
}

/// `mosvm receive`: wait for a job, then run it in the foreground.
pub fn receive(args: ReceiveArgs) -> i32 {
    let listener = match TcpListener::bind(&args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mosvm: cannot listen on {}: {e}", args.listen);
            return EXIT_VMM_FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(a) => eprintln!("mosvm: waiting for a job on {a}"),
        Err(_) => eprintln!("mosvm: waiting for a job on {}", args.listen),
    }
    let opts = ReceiveOptions { mem_limit: args.mem_limit };
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("mosvm: accept failed: {e}");
                return EXIT_VMM_FAILURE;
            }
        };
        let env = RestoreEnv { stdio: [0, 1, 2], log: log(), trace: args.trace };
        match migration::receive(stream, env, &opts) {
            Ok((vm, _)) => return foreground(vm, args.api_sock.as_deref()),
            Err(e) => {
                eprintln!("mosvm: job from {peer} not received: {e}");
                if args.once {
                    return EXIT_VMM_FAILURE;
                }
            }
        }
    }
}

/// `mosvm restore FILE`: start a job from a snapshot.
pub fn restore(args: RestoreArgs) -> i32 {
    let env = RestoreEnv { stdio: [0, 1, 2], log: log(), trace: args.trace };
    match migration::restore_file(&args.file, env) {
        Ok((vm, _)) => foreground(vm, args.api_sock.as_deref()),
        Err(e) => {
            eprintln!("mosvm: cannot restore {}: {e}", args.file.display());
            EXIT_VMM_FAILURE
        }
    }
}
