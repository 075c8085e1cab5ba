//! The sending side: pre-copy rounds, auto-converge, the final stop, and
//! snapshots to a file.

use std::io::{self, Write};
use std::net::ToSocketAddrs;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trust::Link;

use serde::Serialize;
use thiserror::Error;

use super::dirty::{self, DirtyLog};
use super::wire::{self, PageWriter, Record, RecordReader, WireError};
use super::Hello;
use crate::control::{Command, Verdict};
use crate::layout::PAGE_SIZE;
use crate::site::Purpose;
use crate::vm::{VmHandle, THROTTLE_PERIOD};

#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Stop iterating once the rest is expected to take less than this.
    pub downtime: Duration,
    /// Give up converging after this many rounds (then stop anyway).
    pub max_rounds: u32,
    /// How long to wait for the receiver's acknowledgement.
    pub ack_timeout: Duration,
    /// Cap on the page stream, bytes per second (None: as fast as it goes).
    pub max_bandwidth: Option<u64>,
    /// Send a checksum of every page while the job is stopped; the receiver
    /// refuses the job if its copy differs (costs downtime: a debugging aid).
    pub verify: bool,
    /// How to reach the receiver: mutual TLS with this job's certificate,
    /// or plain TCP.
    pub transport: trust::Transport,
    /// The ticket the destination's daemon gave for this move, if any.
    pub ticket: Option<trust::Ticket>,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            downtime: Duration::from_millis(5),
            max_rounds: 30,
            ack_timeout: Duration::from_secs(30),
            max_bandwidth: None,
            verify: false,
            transport: trust::Transport::Plain,
            ticket: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Path {
    Precopy,
    #[serde(rename = "precopy+throttle")]
    PrecopyThrottle,
    Snapshot,
}

/// What a move (or snapshot) did; serialized as `mosvm migrate --json`.
#[derive(Debug, Clone, Serialize)]
pub struct SendStats {
    pub result: &'static str,
    pub to: String,
    /// False when the destination's acknowledgement was lost but the
    /// job's deputy had already given the job to it: the move happened.
    pub acknowledged: bool,
    pub total_ms: f64,
    pub downtime_ms: f64,
    pub rounds: u32,
    pub pages_sent: u64,
    pub bytes_sent: u64,
    pub zero_pages_skipped: u64,
    pub bandwidth_mbps: f64,
    pub path: Path,
    pub max_throttle_percent: u8,
    pub final_pages: u64,
    /// Parts of the downtime: stop until the state was sent, and the
    /// receiver's rebuild of the job.
    pub stop_to_state_sent_ms: f64,
    pub receiver_restore_ms: f64,
}

#[derive(Debug, Error)]
pub enum SendError {
    #[error("another migration or snapshot of this job is in progress")]
    Busy,
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("cannot connect to {to}: {source}")]
    Connect { to: String, source: io::Error },
    #[error("the destination refused the job: {0}")]
    Refused(String),
    #[error("{phase}: {source}")]
    Stream { phase: &'static str, source: WireError },
    #[error("{phase}: {source}")]
    Io { phase: &'static str, source: io::Error },
    #[error("cannot stop the job: {0}")]
    Pause(crate::control::PauseError),
    #[error("no acknowledgement from the destination: {0}")]
    NoAck(WireError),
}

impl SendError {
    /// Why, for programs: `busy` (another move or snapshot), `unmovable`
    /// (the job holds what cannot go: a socket, a child), `refused` (the
    /// destination said no), `unreachable` (no destination there), or
    /// `failed` (the stream broke; the job runs on where it was).
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::Busy => "busy",
            SendError::Pause(crate::control::PauseError::Unmovable(_)) => "unmovable",
            SendError::Refused(_) => "refused",
            SendError::Resolve(_) | SendError::Connect { .. } => "unreachable",
            SendError::Pause(_) | SendError::Stream { .. } | SendError::Io { .. } | SendError::NoAck(_) => "failed",
        }
    }
}

fn io_in(phase: &'static str) -> impl Fn(io::Error) -> SendError {
    move |source| SendError::Io { phase, source }
}

fn wire_in(phase: &'static str) -> impl Fn(WireError) -> SendError {
    move |source| match source {
        WireError::Refused(why) => SendError::Refused(why),
        source => SendError::Stream { phase, source },
    }
}

/// Where a move stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting, waiting for the destination to accept.
    Connecting,
    /// Copying memory while the job runs.
    Copying,
    /// The job is stopped: the last pages and the state are going.
    Stopped,
}

/// A move in flight as `Progress::get` reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressView {
    pub to: String,
    pub phase: Phase,
    /// The round under way, from 1 (the first carries resident memory).
    pub round: u32,
    /// Pages to go through in this round, and how many it has so far.
    pub round_pages: u64,
    pub round_sent: u64,
    /// Pages and bytes on the wire since the move began.
    pub pages_sent: u64,
    pub bytes_sent: u64,
    pub resident_pages: u64,
    pub elapsed: Duration,
    /// Bytes per second over the move so far, in MB/s.
    pub rate_mbps: f64,
}

/// The live record of a move, shared by every clone of a `VmHandle`:
/// `migrate` writes it (the page loop every `PROGRESS_PAGES`), any thread
/// reads it. Plain atomics: a reader may see fields of slightly different
/// instants, never a torn number.
#[derive(Debug, Default)]
pub struct Progress {
    /// 0: no move; else `Phase` + 1.
    phase: AtomicU8,
    round: AtomicU32,
    round_pages: AtomicU64,
    round_sent: AtomicU64,
    pages_sent: AtomicU64,
    bytes_sent: AtomicU64,
    resident_pages: AtomicU64,
    /// When the move began and where to; None when no move is in flight.
    began: Mutex<Option<(Instant, String)>>,
}

/// Pages between two updates of the record from the page loop (1 MiB).
const PROGRESS_PAGES: u32 = 256;

impl Progress {
    /// The move in flight, if one is.
    pub fn get(&self) -> Option<ProgressView> {
        let phase = match self.phase.load(Ordering::Acquire) {
            1 => Phase::Connecting,
            2 => Phase::Copying,
            3 => Phase::Stopped,
            _ => return None,
        };
        let (elapsed, to) = {
            let began = self.began.lock().unwrap_or_else(|e| e.into_inner());
            let (t, to) = began.as_ref()?;
            (t.elapsed(), to.clone())
        };
        let round_pages = self.round_pages.load(Ordering::Relaxed);
        let bytes_sent = self.bytes_sent.load(Ordering::Relaxed);
        Some(ProgressView {
            to,
            phase,
            round: self.round.load(Ordering::Relaxed),
            round_pages,
            round_sent: self.round_sent.load(Ordering::Relaxed).min(round_pages),
            pages_sent: self.pages_sent.load(Ordering::Relaxed),
            bytes_sent,
            resident_pages: self.resident_pages.load(Ordering::Relaxed),
            elapsed,
            rate_mbps: bytes_sent as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6,
        })
    }

    /// A move to `to` begins; it reads "no move" again once the guard goes.
    fn begin(&self, to: &str) -> Moving<'_> {
        *self.began.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), to.to_string()));
        for a in [&self.round_pages, &self.round_sent, &self.pages_sent, &self.bytes_sent, &self.resident_pages] {
            a.store(0, Ordering::Relaxed);
        }
        self.round.store(0, Ordering::Relaxed);
        self.phase.store(Phase::Connecting as u8 + 1, Ordering::Release);
        Moving(self)
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8 + 1, Ordering::Release);
    }

    /// Round `round` (from 1) goes through `pages` pages.
    fn round(&self, round: u32, pages: u64) {
        self.round_sent.store(0, Ordering::Relaxed);
        self.round_pages.store(pages, Ordering::Relaxed);
        self.round.store(round, Ordering::Relaxed);
    }

    fn sent(&self, round_sent: u64, pw: &PageWriter) {
        self.round_sent.store(round_sent, Ordering::Relaxed);
        self.pages_sent.store(pw.pages_sent, Ordering::Relaxed);
        self.bytes_sent.store(pw.bytes_sent, Ordering::Relaxed);
    }
}

/// A move in flight: dropping it (the move ended, either way) clears the
/// record.
struct Moving<'a>(&'a Progress);

impl Drop for Moving<'_> {
    fn drop(&mut self) {
        self.0.phase.store(0, Ordering::Release);
        *self.0.began.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Kicks the vCPU every THROTTLE_PERIOD while alive, so a throttle set on
/// it takes effect even if the job makes no system calls.
struct Kicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kicker {
    fn start(handle: &VmHandle) -> Kicker {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, control) = (stop.clone(), handle.control.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                control.kick();
                std::thread::sleep(THROTTLE_PERIOD);
            }
        });
        Kicker { stop, thread: Some(thread) }
    }
}

impl Drop for Kicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Next auto-converge step, as QEMU's: more of the time stopped.
fn next_throttle(t: u8) -> u8 {
    match t {
        0 => 30,
        30 => 50,
        50 => 70,
        70 => 85,
        85 => 95,
        _ => 99,
    }
}

fn hello(handle: &VmHandle, resident: &[u64]) -> Vec<u8> {
    postcard::to_allocvec(&Hello {
        mem_size: handle.ram.size(),
        resident_bytes: dirty::count(resident) * PAGE_SIZE,
        xcr0: handle.info.xcr0,
        cpuid: handle.info.cpuid.clone(),

        program: handle.info.program.clone(),
    })
    .expect("hello serializes")
}

/// Moves the job to the receiver at `to` (HOST:PORT). On success the VM is
/// released (its `run` returns `Outcome::Moved`); on failure it keeps running.
pub fn migrate(handle: &VmHandle, to: &str, opts: &SendOptions) -> Result<SendStats, SendError> {
    let _busy = handle.control.try_begin().ok_or(SendError::Busy)?;
    // A job that cannot go says so before any memory is copied.
    handle.control.probe(Purpose::Move).map_err(SendError::Pause)?;
    let _moving = handle.progress.begin(to);
    let _boost = super::Boost::start();
    let start = Instant::now();
    let addr = to.to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or_else(|| SendError::Resolve(to.into()))?;
    let stream = opts
        .transport
        .connect(&addr, Duration::from_secs(5))
        .map_err(|source| SendError::Connect { to: to.into(), source })?;
    // A destination that vanishes mid-move (its host died, the path went
    // down) fails the move in seconds, not after TCP's retransmits: the
    // job may be paused meanwhile.
    let _ = trust::watch_peer(stream.socket());
    let mut w = stream.try_clone().map_err(io_in("connecting"))?;
    let mut reader = RecordReader::new(stream);
    reader.inner.socket().set_read_timeout(Some(Duration::from_secs(10))).map_err(io_in("connecting"))?;

    let mut dirty = DirtyLog::start(handle).map_err(io_in("starting dirty logging"))?;
    // Round 0 covers what is resident now that logging is on: a page first
    // touched before this scan is in it, one touched after is in the log.
    let handshake = |w: &mut Link, reader: &mut RecordReader<Link>| -> Result<Vec<u64>, SendError> {
        let resident = handle.ram.resident_pages().map_err(io_in("scanning memory"))?;
        wire::write_header(w, wire::KIND_LIVE).map_err(io_in("sending the header"))?;
        if let Some(t) = &opts.ticket {
            wire::write_record(w, wire::TAG_TICKET, t.bytes()).map_err(io_in("sending the header"))?;
        }
        wire::write_record(w, wire::TAG_HELLO, &hello(handle, &resident)).map_err(io_in("sending the header"))?;
        reader.expect(wire::TAG_ACCEPT, "ACCEPT").map_err(wire_in("waiting for the destination to accept"))?;
        handle.progress.resident_pages.store(dirty::count(&resident), Ordering::Relaxed);
        Ok(resident)
    };
    let result = handshake(&mut w, &mut reader)
        .and_then(|resident| {
            // The destination joins the job's deputy while the pages flow.
            let next = handle.next_link.lock().unwrap().clone();
            if let Some(mut link) = next {
                reachable_home(&mut link.home, &w);
                let bytes = postcard::to_allocvec(&link).expect("a link serializes");
                wire::write_record(&mut w, wire::TAG_HOME, &bytes).map_err(io_in("sending the header"))?;
            }
            Ok(resident)
        })
        .and_then(|resident| precopy(handle, &mut w, &mut reader, &mut dirty, resident, opts, to, start));
    match result {
        Ok(stats) => Ok(stats),
        Err(e) => {
            let _ = handle.control.send(Command::Throttle(0));
            dirty.stop();
            Err(e)
        }
    }
}

/// A deputy listening on all addresses is reached at the address the
/// destination reached us from.
fn reachable_home(home: &mut std::net::SocketAddr, w: &Link) {
    if home.ip().is_unspecified() {
        if let Ok(local) = w.socket().local_addr() {
            home.set_ip(local.ip());
        }
    }
}

/// The receiver's reason if it has refused the job meanwhile (checked
/// without blocking: a refusal is all a receiver ever sends unasked).
fn refusal(reader: &mut RecordReader<Link>) -> Option<String> {
    use std::os::fd::AsRawFd;
    let mut b = 0u8;
    // SAFETY: a one-byte peek into a local.
    let n = unsafe {
        libc::recv(reader.inner.as_raw_fd(), (&mut b as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    if n <= 0 {
        return None;
    }
    let _ = reader.inner.socket().set_read_timeout(Some(Duration::from_millis(500)));
    match reader.next(None) {
        Ok(Record::Small(wire::TAG_REFUSE, why)) => Some(String::from_utf8_lossy(&why).into()),
        _ => None,
    }
}

/// Sends the pages in `bits`, watching for a refusal; a write that fails
/// because the receiver gave up reports the receiver's reason.
#[allow(clippy::too_many_arguments)]
fn send_pages(
    w: &mut Link,
    reader: &mut RecordReader<Link>,
    pw: &mut PageWriter,
    ram: &crate::memory::GuestRam,
    bits: &[u64],
    send_zeros: bool,
    phase: &'static str,
    progress: &Progress,
    control: &crate::control::Control,
) -> Result<(), SendError> {
    let mut n = 0u32;
    let mut refused = None;
    let mut ended = false;
    let r = dirty::for_each_page(bits, |gpa| {
        pw.push(w, ram, gpa, send_zeros)?;
        n += 1;
        if n.is_multiple_of(PROGRESS_PAGES) {
            progress.sent(n as u64, pw);
        }
        if n.is_multiple_of(8192) {
            // A job that ends meanwhile ends the move.
            if control.has_ended() {
                ended = true;
                return Err(io::ErrorKind::ConnectionAborted.into());
            }
            if let Some(why) = refusal(reader) {
                refused = Some(why);
                return Err(io::ErrorKind::ConnectionAborted.into());
            }
        }
        Ok(())
    })
    .and_then(|_| pw.flush(w));
    progress.sent(n as u64, pw);
    if ended || control.has_ended() {
        return Err(SendError::Pause(crate::control::PauseError::Failed("the job ended during the move".into())));
    }
    match (r, refused) {
        (_, Some(why)) => Err(SendError::Refused(why)),
        (Ok(()), None) => Ok(()),
        (Err(e), None) => {
            std::thread::sleep(Duration::from_millis(50));
            Err(refusal(reader).map_or(SendError::Io { phase, source: e }, SendError::Refused))
        }
    }
}

/// Ends a round: waits until the receiver has taken everything sent so
/// far, so that bandwidth and the downtime estimate reflect what arrived,
/// not what sits in socket buffers.
fn sync(w: &mut Link, reader: &mut RecordReader<Link>) -> Result<(), SendError> {
    wire::write_record(w, wire::TAG_SYNC, &[]).map_err(io_in("ending a round"))?;
    w.flush().map_err(io_in("ending a round"))?;
    reader.expect(wire::TAG_SYNCED, "SYNCED").map_err(wire_in("ending a round"))?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn precopy(
    handle: &VmHandle,
    w: &mut Link,
    reader: &mut RecordReader<Link>,
    dirty: &mut DirtyLog,
    resident: Vec<u64>,
    opts: &SendOptions,
    to: &str,
    start: Instant,
) -> Result<SendStats, SendError> {
    let ram = &handle.ram;
    let mut pw = PageWriter::default();
    pw.max_bandwidth = opts.max_bandwidth;

    let mut sending = Duration::ZERO;

    let progress = &*handle.progress;

    // Round 0: every page the host has backed; the rest is zeros already.
    let t = Instant::now();
    progress.round(1, dirty::count(&resident));
    progress.set_phase(Phase::Copying);
    send_pages(w, reader, &mut pw, ram, &resident, false, "sending memory", progress, &handle.control)?;
    sync(w, reader)?;
    sending += t.elapsed();
    // Pages the host never backed are zeros skipped without reading them.
    let untouched = ram.size() / PAGE_SIZE - dirty::count(&resident);
    let zero_skipped = pw.zero_pages + untouched;

    let mut rounds = 1;
    // Only ever grows during a move.
    let mut throttle = 0u8;
    let mut kicker: Option<Kicker> = None;
    let mut prev = u64::MAX;
    let mut stalls = 0;
    // The last round's dirty pages, sent with the final ones once stopped.
    let leftover = loop {
        let bits = dirty.collect().map_err(io_in("reading the dirty log"))?;
        let n = dirty::count(bits);
        // Bandwidth as measured so far (at least 100 MB/s to start from).
        let bw = (pw.bytes_sent as f64 / sending.as_secs_f64().max(1e-6)).max(100e6);
        let expected = Duration::from_secs_f64(n as f64 * PAGE_SIZE as f64 / bw);
        if expected <= opts.downtime || rounds >= opts.max_rounds {
            break bits.to_vec();
        }
        // Not converging: the job dirties memory about as fast as we send
        // it. Hold its vCPU stopped for a growing share of the time.
        if n * 10 >= prev * 9 {
            stalls += 1;
        }
        if stalls >= 2 && throttle < 99 {
            throttle = next_throttle(throttle);
            stalls = 0;
            let _ = handle.control.send(Command::Throttle(throttle));
            kicker.get_or_insert_with(|| Kicker::start(handle));
        }
        prev = n;
        let t = Instant::now();
        progress.round(rounds + 1, n);
        send_pages(w, reader, &mut pw, ram, bits, true, "sending memory", progress, &handle.control)?;
        sync(w, reader)?;
        sending += t.elapsed();
        rounds += 1;
    };

    // Stop the job, send what is left and the state.
    let (mut state, verdict, stopped) = handle.control.pause(Purpose::Move).map_err(SendError::Pause)?;
    if let Some(link) = state.job.home.as_mut() {
        reachable_home(&mut link.home, w);
    }
    // The stopped job waits on us: no pacing now. (The kicker thread stays
    // until we return; joining it here could cost a period of downtime.)
    pw.max_bandwidth = None;
    let before = pw.pages_sent;

    // Reading the log cleared it: what the last round saw must go now too.
    let mut bits = leftover;
    for (b, d) in bits.iter_mut().zip(dirty.collect().map_err(io_in("reading the dirty log"))?) {
        *b |= d;
    }
    progress.set_phase(Phase::Stopped);
    progress.round(rounds + 1, dirty::count(&bits));
    send_pages(w, reader, &mut pw, ram, &bits, true, "sending the last pages", progress, &handle.control)?;

    let final_pages = pw.pages_sent - before;
    if opts.verify {
        let sums: Vec<u8> = (0..ram.size() / PAGE_SIZE)
            .flat_map(|p| crc32c::crc32c(ram.slice(p * PAGE_SIZE, PAGE_SIZE).unwrap()).to_le_bytes())
            .collect();
        wire::write_record(w, wire::TAG_VERIFY, &sums).map_err(io_in("sending checksums"))?;
    }
    let state_bytes = state.to_bytes();
    wire::write_record(w, wire::TAG_STATE, &state_bytes).map_err(io_in("sending the state"))?;
    wire::write_record(w, wire::TAG_END, &[]).map_err(io_in("sending the state"))?;
    w.flush().map_err(io_in("sending the state"))?;
    let sent = stopped.elapsed();
    progress.bytes_sent.store(pw.bytes_sent + state_bytes.len() as u64, Ordering::Relaxed);

    reader.inner.socket().set_read_timeout(Some(opts.ack_timeout)).map_err(io_in("waiting for the acknowledgement"))?;
    let restore_us = match reader.expect(wire::TAG_ACK, "ACK") {
        Ok(ack) => {
            let _ = verdict.send(Verdict::Release(to.to_string()));
            ack.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        }
        // Dropping `verdict` resumes the job here.
        Err(WireError::Refused(why)) => return Err(SendError::Refused(why)),
        Err(e) => {
            // The destination may have claimed the job from its deputy
            // before the link broke: the job's body decides, and this
            // reports what it decided.
            let (resumed, answer) = std::sync::mpsc::channel();
            let _ = verdict.send(Verdict::Settle { to: to.to_string(), resumed });
            if answer.recv().unwrap_or(true) {
                return Err(SendError::NoAck(e));
            }
            None
        }
    };
    let downtime = stopped.elapsed();
    let total = start.elapsed();
    Ok(SendStats {
        result: "ok",
        to: to.to_string(),
        acknowledged: restore_us.is_some(),
        total_ms: total.as_secs_f64() * 1e3,
        downtime_ms: downtime.as_secs_f64() * 1e3,
        rounds,
        pages_sent: pw.pages_sent,
        bytes_sent: pw.bytes_sent + state_bytes.len() as u64,
        zero_pages_skipped: zero_skipped,
        bandwidth_mbps: pw.bytes_sent as f64 / sending.as_secs_f64().max(1e-9) / 1e6,
        path: if throttle > 0 { Path::PrecopyThrottle } else { Path::Precopy },
        max_throttle_percent: throttle,
        final_pages,
        stop_to_state_sent_ms: sent.as_secs_f64() * 1e3,
        receiver_restore_ms: restore_us.unwrap_or(0) as f64 / 1e3,
    })
}

/// Writes the job's state and memory to `path` while it is paused, then
/// lets it continue. `mosvm restore` starts a copy from the file.
pub fn snapshot(handle: &VmHandle, path: &std::path::Path) -> Result<SendStats, SendError> {
    let _busy = handle.control.try_begin().ok_or(SendError::Busy)?;
    let start = Instant::now();
    // Unbuffered: page records are already 256 KiB batches.
    let mut w = std::fs::File::create(path).map_err(io_in("creating the snapshot file"))?;
    let (state, verdict, stopped) = handle.control.pause(Purpose::Copy).map_err(SendError::Pause)?;
    let resident = handle.ram.resident_pages().map_err(io_in("scanning memory"))?;
    wire::write_header(&mut w, wire::KIND_SNAPSHOT).map_err(io_in("writing the snapshot"))?;
    wire::write_record(&mut w, wire::TAG_HELLO, &hello(handle, &resident)).map_err(io_in("writing the snapshot"))?;
    let mut pw = PageWriter::default();
    let ram = &handle.ram;
    dirty::for_each_page(&resident, |gpa| pw.push(&mut w, ram, gpa, false)).map_err(io_in("writing the snapshot"))?;
    pw.flush(&mut w).map_err(io_in("writing the snapshot"))?;
    let state_bytes = state.to_bytes();
    wire::write_record(&mut w, wire::TAG_STATE, &state_bytes).map_err(io_in("writing the snapshot"))?;
    wire::write_record(&mut w, wire::TAG_END, &[]).map_err(io_in("writing the snapshot"))?;
    // The job continues; only the file's durability is left to wait for.
    drop(verdict);
    let downtime = stopped.elapsed();
    w.sync_all().map_err(io_in("writing the snapshot"))?;
    Ok(SendStats {
        result: "ok",
        to: path.display().to_string(),
        acknowledged: true,
        total_ms: start.elapsed().as_secs_f64() * 1e3,
        downtime_ms: downtime.as_secs_f64() * 1e3,
        rounds: 1,
        pages_sent: pw.pages_sent,
        bytes_sent: pw.bytes_sent + state_bytes.len() as u64,
        zero_pages_skipped: pw.zero_pages + (handle.ram.size() / PAGE_SIZE - dirty::count(&resident)),
        bandwidth_mbps: pw.bytes_sent as f64 / downtime.as_secs_f64().max(1e-9) / 1e6,
        path: Path::Snapshot,
        max_throttle_percent: 0,
        final_pages: pw.pages_sent,
        stop_to_state_sent_ms: downtime.as_secs_f64() * 1e3,
        receiver_restore_ms: 0.0,
    })
}
