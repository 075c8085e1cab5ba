//! `mosvm run`: one job in a micro-VM, in the foreground.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::Arc;

use vmm::{Vm, VmConfig, VmError};

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use std::sync::{mpsc, Mutex};

use vmm::migration::{self, ReceiveOptions};
use vmm::site::{Home, Served, Site};
use vmm::{Outcome, RestoreEnv, Unstarted};

use crate::api::ApiServer;
use crate::cli::{ReceiveArgs, RestoreArgs, RunArgs};

/// Exit statuses for failures before the job runs, as env(1) uses them.
const EXIT_CANNOT_EXECUTE: i32 = 126;
const EXIT_NOT_FOUND: i32 = 127;
const EXIT_VMM_FAILURE: i32 = 125;
/// The job was lost with the host its body ran on (like ssh's 255 when
/// the connection to the remote side is lost).
const EXIT_LOST: i32 = 255;

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
    if args.detach {
        return crate::register::detach(&args);
    }
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
    let job_program = std::path::absolute(&program).unwrap_or_else(|_| program.clone());
    let job_argv: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let config = VmConfig {
        mem_size: args.mem,
        program,
        argv,
        env: job_env(&args.env),
        cwd: cwd.clone(),
        stdio: [0, 1, 2],
        inherited: crate::inherited_fds(),
        allow_user_io: false,
        trace: args.trace,
        log: log(),
    };
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
    // With a host daemon the job is registered and may be moved: it gets
    // a control socket of its own if it did not ask for one.
    let daemon = crate::register::daemon_socket();
    let transport = match &args.tls {
        Some(dir) => match trust::Transport::from_dir(dir) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("mosvm: --tls {}: {e}", dir.display());
                return EXIT_VMM_FAILURE;
            }
        },
        None => crate::register::transport(daemon.as_deref()),
    };
    crate::set_transport(transport);
    let api_sock = match (&args.api_sock, &daemon) {
        (Some(p), _) => Some(cwd.join(p)),
        (None, Some(_)) => match crate::register::own_control_socket() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("mosvm: no control socket for the job, so it cannot move: {e}");
                None
            }
        },
        (None, None) => None,
    };
    // A job that may move gets a deputy: its site stays here and is
    // served to the body wherever it runs; the body may also come home.
    let home = match &api_sock {
        None => None,
        Some(_) => match Home::start_advertised(&args.home_listen, args.home_advertise, crate::transport()) {
            Ok(home) => {
                vm.set_home(home.clone());
                Some(take_back(home, args.trace))
            }
            Err(e) => {
                eprintln!("mosvm: cannot listen for the job's body on {}: {e}", args.home_listen);
                return EXIT_VMM_FAILURE;
            }
        },
    };
    // The control socket listens before the daemon hears of the job: a
    // registered job whose socket is missing is one that is ending.
    let api = match api_sock.as_deref().map(|p| ApiServer::start(p, vm.handle())).transpose() {
        Ok(api) => api,
        Err(e) => {
            eprintln!("mosvm: cannot serve the control socket {}: {e}", api_sock.as_deref().unwrap().display());
            return EXIT_VMM_FAILURE;
        }
    };
    let registration = match &daemon {
        None => None,
        Some(sock) => {
            let job = mosvm_host::api::NewJob {
                program: job_program.display().to_string(),
                argv: job_argv,
                cwd: cwd.display().to_string(),
                control_sock: api_sock.as_ref().map(|p| p.display().to_string()),
                deputy_addr: home.as_ref().map(|(h, _)| h.addr().to_string()),
                mem_bytes: args.mem,
                stay: args.stay,
            };
            match crate::register::register(sock, &job) {
                Ok(r) => {
                    if args.trace {
                        eprintln!("mosvm: registered with {} as job {}", sock.display(), r.id());
                    }
                    crate::register::send_notices(sock, r.id());
                    Some(r)
                }
                Err(e) => {
                    eprintln!("mosvm: the job runs unregistered: {e}");
                    None
                }
            }
        }
    };
    let status = foreground(vm, api_sock.as_deref(), api, home, Arc::default(), registration.as_ref());
    if let Some(r) = &registration {
        r.exited(status);
    }
    status
}

/// The deputy's port takes the body back when it comes home; the rebuilt
/// VM arrives on the returned channel.
fn take_back(home: Arc<Home>, trace: bool) -> (Arc<Home>, mpsc::Receiver<Unstarted>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let h = home.clone();
    home.set_incoming(Box::new(move |stream| {
        let env = RestoreEnv {
            stdio: [0, 1, 2],
            log: log(),
            trace,
            home: Some(h.clone()),
            here: None,
            prepared: None,
            transport: crate::transport(),
        };
        match migration::receive(stream, env, &ReceiveOptions::default()) {
            Ok((vm, _)) => {
                let _ = tx.lock().unwrap().send(Unstarted(vm));
            }
            Err(e) => eprintln!("mosvm: the job's body could not come home: {e}"),
        }
    }));
    (home, rx)
}

fn log() -> vmm::Log {
    Arc::new(|msg: &str| eprintln!("mosvm: {msg}"))
}

/// A body away from home needs nothing of this host: confine it (see
/// `vmm::confine`). Without root it cannot be; say so loudly.
fn confine_body() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        if let Err(e) = vmm::confine::confine_body() {
            eprintln!("mosvm: WARNING: this body runs unconfined ({e}); run `mosvm receive` as root to confine it");
        }
    });
}

/// A log that also keeps the last fault report, for a body away from
/// home to send to its deputy (the user reads it at home).
fn log_keeping_faults(last: Arc<Mutex<String>>) -> vmm::Log {
    Arc::new(move |msg: &str| {
        eprintln!("mosvm: {msg}");
        if msg.starts_with("job killed by") {
            *last.lock().unwrap() = msg.to_string();
        }
    })
}

/// Runs `vm` until its job ends (its status). A job without a deputy
/// that moves away ends here with 0; with its deputy (`home`), this
/// process serves the job's site while the body is away, takes the body
/// back when it comes home, and ends with the job's status wherever it
/// ended.
fn foreground(
    mut vm: Vm,
    api_sock: Option<&Path>,
    mut bound: Option<ApiServer>,
    home: Option<(Arc<Home>, mpsc::Receiver<Unstarted>)>,
    faults: Arc<Mutex<String>>,
    registration: Option<&crate::register::Registration>,
) -> i32 {
    loop {
        // The first round may come with its socket bound already; a body
        // that came home binds it again.
        let api = match bound.take().map(Ok).or_else(|| api_sock.map(|p| ApiServer::start(p, vm.handle()))).transpose()
        {
            Ok(api) => api,
            Err(e) => {
                eprintln!("mosvm: cannot serve the control socket {}: {e}", api_sock.unwrap().display());
                return EXIT_VMM_FAILURE;
            }
        };
        // From now on terminal signals go to the job (before, they end mosvm).
        vmm::signal::forward_host_signals();
        if vm.is_away() {
            confine_body();
        }
        let outcome = vm.run();
        if matches!(outcome, Ok(Outcome::Exited(_)) | Err(_)) {
            // A move in flight hears that the job ended.
            vm.close_control();
        }
        if let Some(api) = &api {
            // Let `mosvm migrate` hear the result before going on.
            api.drain(Duration::from_secs(5));
        }
        drop(api);
        match outcome {
            Ok(Outcome::Exited(exit)) => {
                // A body away from home reports the end to its deputy.
                let msg = std::mem::take(&mut *faults.lock().unwrap());
                vm.report_exit(exit.shell_status(), &msg);
                return exit.shell_status();
            }
            Ok(Outcome::Moved(to)) => {
                let Some((home, back)) = &home else {
                    eprintln!("mosvm: job moved to {to}");
                    return 0;
                };
                let Site::Local { site, .. } = vm.into_site() else {
                    eprintln!("mosvm: internal error: a job at home without its site");
                    return EXIT_VMM_FAILURE;
                };
                match home.serve(site) {
                    Served::Exited { status, message } => {
                        if !message.is_empty() {
                            eprintln!("mosvm: {message}");
                        }
                        return status;
                    }
                    Served::Lost(why) => {
                        eprintln!("mosvm: job lost: {why}");
                        if let Some(r) = registration {
                            r.lost(&why);
                        }
                        return EXIT_LOST;
                    }
                    Served::Home => match back.recv_timeout(Duration::from_secs(30)) {
                        Ok(v) => vm = v.0,
                        Err(_) => {
                            eprintln!("mosvm: job lost: its body came home but could not be restarted");
                            if let Some(r) = registration {
                                r.lost("its body came home but could not be restarted");
                            }
                            return EXIT_LOST;
                        }
                    },
                }
            }
            Err(e) => {
                eprintln!("mosvm: {e}");
                return EXIT_VMM_FAILURE;
            }
        }
    }
}

/// `mosvm receive`: wait for a job, then run it in the foreground.
pub fn receive(args: ReceiveArgs) -> i32 {
    // A body's own stderr is its host's log (the daemon keeps it), never
    // the job's stderr, which its deputy serves.
    vmm::notice::set_sink(Arc::new(|n: &vmm::notice::Notice| eprintln!("mosvm: job notice: {n}")));
    if let Some(dir) = &args.tls {
        match trust::Transport::from_dir(dir) {
            Ok(t) => crate::set_transport(t),
            Err(e) => {
                eprintln!("mosvm: --tls {}: {e}", dir.display());
                return EXIT_VMM_FAILURE;
            }
        }
    }
    if args.credentials_stdin {
        let mut line = String::new();
        let creds = std::io::Read::read_to_string(&mut std::io::stdin(), &mut line)
            .map_err(|e| e.to_string())
            .and_then(|_| serde_json::from_str::<mosvm_host::api::CredentialsReply>(&line).map_err(|e| e.to_string()));
        match creds {
            Ok(r) => crate::set_transport(crate::register::from_credentials(r.credentials)),
            Err(e) => {
                eprintln!("mosvm: no credentials on stdin: {e}");
                return EXIT_VMM_FAILURE;
            }
        }
    }
    // The daemon that prepared this body for one move names the move's
    // ticket; the job never sees this process's environment.
    let ticket = match std::env::var(trust::MOVE_TICKET_ENV) {
        Ok(hex) => match hex.parse::<trust::Ticket>() {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("mosvm: {}: {e}", trust::MOVE_TICKET_ENV);
                return EXIT_VMM_FAILURE;
            }
        },
        Err(_) => None,
    };
    std::env::remove_var(trust::MOVE_TICKET_ENV);
    if ticket.is_some() {
        eprintln!("mosvm: this body takes only the stream that presents its move's ticket");
    }
    let listener = match TcpListener::bind(&args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mosvm: cannot listen on {}: {e}", args.listen);
            return EXIT_VMM_FAILURE;
        }
    };
    let addr = listener.local_addr().map_or_else(|_| args.listen.clone(), |a| a.to_string());
    if args.announce {
        println!("{}", serde_json::json!({"event": "listening", "addr": addr, "pid": std::process::id()}));
    }
    eprintln!("mosvm: waiting for a job on {addr}");
    // A receiver nobody reaches ends by itself, even if the daemon that
    // started it (and would have stopped it) is gone.
    let arrived = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(secs) = args.wait {
        let arrived = arrived.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            if !arrived.load(std::sync::atomic::Ordering::SeqCst) {
                eprintln!("mosvm: no job arrived within {secs} s; giving up");
                std::process::exit(EXIT_VMM_FAILURE);
            }
        });
    }
    let opts = ReceiveOptions { mem_limit: args.mem_limit, ticket };
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("mosvm: accept failed: {e}");
                return EXIT_VMM_FAILURE;
            }
        };
        // A connection without a certificate of the cluster is refused
        // here and does not count as an attempt: the job may still come.
        let stream = match crate::transport().server(stream) {
            Ok(l) => {
                arrived.store(true, std::sync::atomic::Ordering::SeqCst);
                l
            }
            Err(e) => {
                eprintln!("mosvm: refused a connection from {peer}: {e}");
                continue;
            }
        };
        let faults = Arc::new(Mutex::new(String::new()));
        let env = RestoreEnv {
            stdio: [0, 1, 2],
            log: log_keeping_faults(faults.clone()),
            trace: args.trace,
            home: None,
            here: None,
            prepared: None,
            transport: crate::transport(),
        };
        match migration::receive(stream, env, &opts) {
            Ok((vm, _)) => return foreground(vm, args.api_sock.as_deref(), None, None, faults, None),
            Err(e @ migration::ReceiveError::NotThisMove(_)) => {
                // Not an attempt at this body's move: it may still come.
                eprintln!("mosvm: a stream from {peer} refused: {e}");
                arrived.store(false, std::sync::atomic::Ordering::SeqCst);
            }
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
    let env = RestoreEnv {
        stdio: [0, 1, 2],
        log: log(),
        trace: args.trace,
        home: None,
        here: None,
        prepared: None,
        transport: crate::transport(),
    };
    match migration::restore_file(&args.file, env) {
        Ok((vm, _)) => foreground(vm, args.api_sock.as_deref(), None, None, Arc::default(), None),
        Err(e) => {
            eprintln!("mosvm: cannot restore {}: {e}", args.file.display());
            EXIT_VMM_FAILURE
        }
    }
}
