//! The receiving side: accept or refuse a job, take its pages and state,
//! rebuild it, acknowledge. Also restoring from a snapshot file.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};
use trust::Link;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use thiserror::Error;

use super::wire::{self, Record, RecordReader, WireError};
use super::Hello;
use crate::job::RestoreEnv;
use crate::layout::{MAX_MEM, MIN_MEM, PAGE_SIZE};
use crate::memory::GuestRam;
use crate::state::VmState;
use crate::vm::{Machine, Vm, VmError};

#[derive(Debug, Clone, Default)]
pub struct ReceiveOptions {
    /// Refuse jobs with more resident memory than this.
    pub mem_limit: Option<u64>,
    /// Take only the stream that presents this ticket (a receiver its
    /// daemon prepared for one move).
    pub ticket: Option<trust::Ticket>,
}

#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    pub pages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Rebuilding the job from its state (part of the downtime).
    pub restore: Duration,
}

#[derive(Debug, Error)]
pub enum ReceiveError {
    #[error("{phase}: {source}")]
    Stream { phase: &'static str, source: WireError },
    #[error("refused the job: {0}")]
    Refused(String),
    /// The stream is not the move this receiver was prepared for: it
    /// still waits for that one.
    #[error("refused the stream: {0}")]
    NotThisMove(&'static str),
    #[error("cannot rebuild the job: {0}")]
    Restore(#[from] VmError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn in_phase(phase: &'static str) -> impl Fn(WireError) -> ReceiveError {
    move |source| ReceiveError::Stream { phase, source }
}

fn mem_available() -> Option<u64> {
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Why this host cannot take the job described by `hello`.
fn check(hello: &Hello, opts: &ReceiveOptions) -> Option<String> {
    if !(MIN_MEM..=MAX_MEM).contains(&hello.mem_size) || !hello.mem_size.is_multiple_of(2 << 20) {
        return Some(format!("guest memory size {} is not valid", hello.mem_size));
    }
    let mib = |b: u64| b >> 20;
    if let Some(limit) = opts.mem_limit {
        if hello.resident_bytes > limit {
            return Some(format!(
                "not enough memory: the job holds {} MiB, this host accepts at most {} MiB",
                mib(hello.resident_bytes),
                mib(limit)
            ));
        }
    }
    if let Some(avail) = mem_available() {
        if hello.resident_bytes > avail / 10 * 9 {
            return Some(format!(
                "not enough memory: the job holds {} MiB, {} MiB are available here",
                mib(hello.resident_bytes),
                mib(avail)
            ));
        }
    }
    let host = kvm_ioctls::Kvm::new().and_then(|k| k.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES));
    match host {
        Ok(cpuid) => super::incompatibility(&super::feature_words(&hello.cpuid), hello.xcr0, cpuid.as_slice()),

        Err(e) => Some(format!("KVM is not available here: {e}")),
    }
}

/// Zeroes the pages of a ZEROS record, one call per run of adjacent pages.
fn discard_zeros(ram: &GuestRam, gpas: &[u8]) -> Result<(), WireError> {
    let mut run: Option<(u64, u64)> = None;
    let flush = |run: Option<(u64, u64)>| match run {
        Some((start, end)) => ram
            .discard(start, end - start)
            .map_err(|_| WireError::BadPages(format!("zero pages {start:#x}..{end:#x} are outside guest memory"))),
        None => Ok(()),
    };
    for c in gpas.chunks_exact(8) {
        let gpa = u64::from_le_bytes(c.try_into().unwrap());
        if gpa % PAGE_SIZE != 0 || gpa.checked_add(PAGE_SIZE).is_none() {
            return Err(WireError::BadPages(format!("zero page address {gpa:#x} is not a page")));
        }
        run = match run {
            Some((start, end)) if end == gpa => Some((start, gpa + PAGE_SIZE)),
            other => {
                flush(other)?;
                Some((gpa, gpa + PAGE_SIZE))
            }
        };
    }
    flush(run)
}

/// Reads records into `ram` until END; returns the state bytes. `w`
/// answers SYNC records (a live stream); a file has none.
/// Links to the job's deputy, being opened while the pages come.
type Preparing = std::thread::JoinHandle<io::Result<crate::site::Prepared>>;

fn read_body<R: Read>(
    reader: &mut RecordReader<R>,
    ram: &GuestRam,
    stats: &mut ReceiveStats,
    mut w: Option<&mut dyn Write>,
    mut home: Option<(&mut Option<Preparing>, Option<std::net::SocketAddr>, &trust::Transport)>,
) -> Result<Vec<u8>, ReceiveError> {
    let mut state = None;
    loop {
        match reader.next(Some(ram)).map_err(in_phase("receiving the job"))? {
            Record::Small(wire::TAG_HOME, link) => {
                let link: crate::site::HomeLink = postcard::from_bytes(&link)
                    .map_err(|e| in_phase("receiving the job")(WireError::BadPages(format!("malformed HOME: {e}"))))?;
                if let Some((slot, here, transport)) = home.as_mut() {
                    let (here, transport) = (*here, transport.clone());
                    **slot = Some(std::thread::spawn(move || crate::site::RemoteSite::prepare(link, here, &transport)));
                }
            }
            Record::Pages(n) => stats.pages += n as u64,
            Record::Small(wire::TAG_ZEROS, gpas) => discard_zeros(ram, &gpas).map_err(in_phase("receiving the job"))?,
            Record::Small(wire::TAG_STATE, s) => state = Some(s),
            Record::Small(wire::TAG_VERIFY, sums) => {
                let differ: Vec<u64> = sums
                    .chunks_exact(4)
                    .enumerate()
                    .map(|(p, want)| (p as u64 * PAGE_SIZE, want))
                    .filter(|(gpa, want)| {
                        ram.slice(*gpa, PAGE_SIZE).map_or(true, |page| crc32c::crc32c(page).to_le_bytes() != **want)
                    })
                    .map(|(gpa, _)| gpa)
                    .collect();
                if !differ.is_empty() {
                    let first: Vec<String> = differ.iter().take(4).map(|g| format!("{g:#x}")).collect();
                    return Err(in_phase("verifying the copy")(WireError::BadPages(format!(
                        "{} pages differ from the sender's (first: {})",
                        differ.len(),
                        first.join(", ")
                    ))));
                }
            }
            Record::Small(wire::TAG_SYNC, _) if w.is_some() => {
                // The first round brought the fresh pages; later ones resend.
                reader.populate = false;
                let w = w.as_mut().unwrap();
                wire::write_record(w, wire::TAG_SYNCED, &[])?;
                w.flush()?;
            }
            Record::Small(wire::TAG_END, _) => break,
            Record::Small(t, _) => {
                return Err(in_phase("receiving the job")(WireError::Unexpected {
                    got: t,
                    want: "PAGES, ZEROS, STATE or END",
                }))
            }
        }
    }
    stats.bytes = reader.bytes;
    state.ok_or_else(|| in_phase("receiving the job")(WireError::Unexpected { got: wire::TAG_END, want: "STATE" }))
}

/// Tells the sender why the job is not taken, and makes sure it can read
/// that: closing a socket with unread input resets the connection and may
/// drop the reason, so stop writing and swallow what still comes (on a
/// thread, for a while) before closing.
fn refuse(w: &mut Link, why: &str) {
    let _ = wire::write_record(w, wire::TAG_REFUSE, why.as_bytes());
    let _ = w.flush();
    let _ = w.shutdown(std::net::Shutdown::Write);
    if let Ok(mut r) = w.try_clone() {
        std::thread::spawn(move || {
            let _ = r.socket().set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = vec![0u8; 1 << 16];
            while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
        });
    }
}

/// Takes one job from `stream`. On success the job has been rebuilt and
/// the sender told so; the caller must `run` the returned VM right away.
/// On failure nothing runs here and the sender keeps the job.
pub fn receive(stream: Link, mut env: RestoreEnv, opts: &ReceiveOptions) -> Result<(Vm, ReceiveStats), ReceiveError> {
    let start = Instant::now();
    // Until the job runs: this thread then becomes its vCPU's.
    let _boost = super::Boost::start();
    // The body's deputy names this host by the address it was reached at.
    env.here = stream.socket().local_addr().ok();
    // A sender whose host vanished is noticed in seconds.
    let _ = trust::watch_peer(stream.socket());
    // A sender that stalls for this long has failed.
    stream.socket().set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = stream.try_clone()?;
    let mut reader = RecordReader::new(stream);
    let kind = wire::read_header(&mut reader.inner).map_err(|e| {
        if let WireError::Version(_) = e {
            refuse(&mut w, &e.to_string());
        }
        in_phase("reading the stream header")(e)
    })?;
    if kind != wire::KIND_LIVE {
        refuse(&mut w, "expected a live migration stream");
        return Err(in_phase("reading the stream header")(WireError::Kind(kind)));
    }
    let mut first = reader.next(None).map_err(in_phase("reading the job description"))?;
    let presented = match first {
        wire::Record::Small(wire::TAG_TICKET, t) => {
            first = reader.next(None).map_err(in_phase("reading the job description"))?;
            Some(t)
        }
        _ => None,
    };
    if let Some(t) = &opts.ticket {
        if !presented.as_deref().is_some_and(|p| t.matches(p)) {
            let why = if presented.is_some() {
                "this body was prepared for another move (the stream's ticket does not match)"
            } else {
                "this body was prepared for one move and takes no stream without its ticket"
            };
            refuse(&mut w, why);
            return Err(ReceiveError::NotThisMove(why));
        }
    }
    let hello = match first {
        wire::Record::Small(wire::TAG_HELLO, h) => h,
        wire::Record::Small(got, _) => {
            return Err(in_phase("reading the job description")(WireError::Unexpected { got, want: "HELLO" }))
        }
        wire::Record::Pages(_) => {
            return Err(in_phase("reading the job description")(WireError::Unexpected {
                got: wire::TAG_PAGES,
                want: "HELLO",
            }))
        }
    };
    let hello: Hello = postcard::from_bytes(&hello)
        .map_err(|e| in_phase("reading the job description")(WireError::BadPages(format!("malformed HELLO: {e}"))))?;
    if let Some(why) = check(&hello, opts) {
        refuse(&mut w, &why);
        return Err(ReceiveError::Refused(why));
    }

    let machine =
        match GuestRam::new(hello.mem_size).map_err(VmError::from).and_then(|ram| Machine::new(ram, &hello.cpuid)) {
            Ok(m) => m,
            Err(e) => {
                refuse(&mut w, &e.to_string());
                return Err(e.into());
            }
        };
    wire::write_record(&mut w, wire::TAG_ACCEPT, &[])?;
    let mut stats = ReceiveStats::default();
    let mut preparing = None;
    let here = env.here;
    let state = match read_body(
        &mut reader,
        machine.ram(),
        &mut stats,
        Some(&mut w),
        Some((&mut preparing, here, &env.transport)),
    ) {
        Ok(s) => s,
        Err(e) => {
            // Tell the sender why, if it still listens; it keeps the job.
            refuse(&mut w, &e.to_string());
            return Err(e);
        }
    };
    let t = Instant::now();
    // A deputy that cannot be reached is found out at the claim.
    env.prepared = match preparing.and_then(|p| p.join().ok()) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            eprintln!("mosvm: the early link to the job's home failed ({e}); linking again in the downtime");
            None
        }
        None => None,
    };
    let vm = VmState::from_bytes(&state).map_err(VmError::Machine).and_then(|state| Vm::restore(state, machine, env));
    stats.restore = t.elapsed();
    let vm = match vm {
        Ok(vm) => vm,
        Err(e) => {
            refuse(&mut w, &e.to_string());
            return Err(e.into());
        }
    };
    // The job is ready: acknowledge, and the caller enters it at once. A
    // job with a deputy is this body's once the deputy gave it here (the
    // sender asks the deputy when the acknowledgement does not come);
    // without one, the acknowledgement decides: if it cannot be sent,
    // the sender keeps the job.
    let ack = (stats.restore.as_micros() as u64).to_le_bytes();
    if let Err(e) = wire::write_record(&mut w, wire::TAG_ACK, &ack).and_then(|()| w.flush()) {
        if !vm.has_deputy() {
            return Err(e.into());
        }
        eprintln!("mosvm: the acknowledgement did not reach the sender ({e}); the job's deputy gave it to this body");
    }
    stats.elapsed = start.elapsed();
    Ok((vm, stats))
}

/// Rebuilds a job from a snapshot file.
pub fn restore_file(path: &std::path::Path, env: RestoreEnv) -> Result<(Vm, ReceiveStats), ReceiveError> {
    let start = Instant::now();
    let file = std::fs::File::open(path)?;
    let mut reader = RecordReader::new(io::BufReader::with_capacity(1 << 20, file));
    let kind = wire::read_header(&mut reader.inner).map_err(in_phase("reading the snapshot header"))?;
    if kind != wire::KIND_SNAPSHOT {
        return Err(in_phase("reading the snapshot header")(WireError::Kind(kind)));
    }
    let hello = reader.expect(wire::TAG_HELLO, "HELLO").map_err(in_phase("reading the snapshot"))?;
    let hello: Hello = postcard::from_bytes(&hello)
        .map_err(|e| in_phase("reading the snapshot")(WireError::BadPages(format!("malformed HELLO: {e}"))))?;
    if let Some(why) = check(&hello, &ReceiveOptions::default()) {
        return Err(ReceiveError::Refused(why));
    }
    let machine = Machine::new(GuestRam::new(hello.mem_size).map_err(VmError::from)?, &hello.cpuid)?;
    let mut stats = ReceiveStats::default();
    let state = read_body(&mut reader, machine.ram(), &mut stats, None, None)?;
    let state = VmState::from_bytes(&state).map_err(VmError::Machine)?;
    let vm = Vm::restore(state, machine, env)?;
    stats.elapsed = start.elapsed();
    Ok((vm, stats))
}
