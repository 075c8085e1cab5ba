//! The fault matrix: for each phase of a move × each fault, the job runs
//! on exactly one host and ends with its native output, or, only where
//! the one process holding its body (or its home) died, it is reported
//! lost at home within seconds. Never two running copies, never a silent
//! loss, never a hang.
//!
//! A move here is `mosvm migrate` of a `mosvm run` job (whose process is
//! its home and deputy) to a `mosvm receive`, through a proxy that reads
//! the stream record by record and strikes at a phase: the HELLO
//! (connect and handshake), the first PAGES (first round), the first
//! PAGES after a round's SYNC (later rounds), the STATE (final pages and
//! state), the destination's ACK (it runs the job; the source does not
//! know yet) and just after the ACK. "Away" cases move the job to a first
//! receiver cleanly, then from there: the source body, the destination
//! body and the home are three processes.
//!
//! `make test` runs a fast subset; `make faults` runs every case and
//! writes the table to RELIABILITY.md (MOSVM_FAULTS_REPORT=PATH).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mosvm_tests::*;

const JOB: [&str; 3] = ["64", "32", "400"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Handshake,
    FirstRound,
    LaterRounds,
    FinalState,
    StateDelivered,
    BeforeAck,
    AfterAck,
}

const PHASES: [Phase; 7] = [
    Phase::Handshake,
    Phase::FirstRound,
    Phase::LaterRounds,
    Phase::FinalState,
    Phase::StateDelivered,
    Phase::BeforeAck,
    Phase::AfterAck,
];

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Handshake => "connect and handshake",
            Phase::FirstRound => "first round",
            Phase::LaterRounds => "later rounds",
            Phase::FinalState => "final pages and state",
            Phase::StateDelivered => "state delivered, nothing back yet",
            Phase::BeforeAck => "destination resumed, before the ack",
            Phase::AfterAck => "after the ack",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    KillSource,
    KillDestination,
    KillHome,
    Cut,
    Delay,
    Corrupt,
    Truncate,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::KillSource => "kill -9 source body",
            Fault::KillDestination => "kill -9 destination body",
            Fault::KillHome => "kill -9 home deputy",
            Fault::Cut => "link cut",
            Fault::Delay => "link delayed 200 ms",
            Fault::Corrupt => "a corrupted byte",
            Fault::Truncate => "stream truncated",
        }
    }
}

/// What may come of a case; the first of `expected` is what the design
/// says, the others are outcomes it allows because the fault races with
/// the move (e.g. a destination killed just as it claimed the job).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The move failed and the job finished where it was.
    Stayed,
    /// The job finished at the destination.
    Moved,
    /// Its body died with the only process holding it: home says so.
    LostAtHome,
    /// Its home died: every body stopped by itself.
    GoneWithHome,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Stayed => "runs on at the source",
            Outcome::Moved => "runs on at the destination",
            Outcome::LostAtHome => "lost, reported at home",
            Outcome::GoneWithHome => "home gone: every body stops",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Case {
    away: bool,
    phase: Phase,
    fault: Fault,
}

impl Case {
    fn name(&self) -> String {
        format!("{}{} / {}", if self.away { "away: " } else { "" }, self.phase.label(), self.fault.label())
    }

    /// What the design promises.
    fn expected(&self) -> Vec<Outcome> {
        use Outcome::*;
        let before_claim = matches!(self.phase, Phase::Handshake | Phase::FirstRound | Phase::LaterRounds);
        match self.fault {
            // Home and body are one process unless the job is away.
            Fault::KillSource if !self.away => vec![GoneWithHome],
            Fault::KillHome => vec![GoneWithHome],
            Fault::KillSource => match self.phase {
                // The destination has claimed the job by its ack.
                Phase::BeforeAck | Phase::AfterAck => vec![Moved],
                // The STATE is out: the destination may have claimed it.
                Phase::FinalState | Phase::StateDelivered => vec![LostAtHome, Moved],
                _ => vec![LostAtHome],
            },
            Fault::KillDestination => match self.phase {
                _ if before_claim => vec![Stayed],
                Phase::FinalState | Phase::StateDelivered => vec![Stayed, LostAtHome],
                // It had claimed the job: its death is the job's.
                Phase::BeforeAck => vec![LostAtHome, Stayed],
                _ => vec![LostAtHome],
            },
            Fault::Delay => vec![Moved],
            Fault::Cut | Fault::Corrupt | Fault::Truncate => match self.phase {
                _ if before_claim => vec![Stayed],
                Phase::FinalState => vec![Stayed],
                // All of it arrived and nothing came back: whichever of the
                // destination's claim and the source's question reached the
                // deputy first decides. A corrupted END is refused.
                Phase::StateDelivered if self.fault == Fault::Cut => vec![Moved, Stayed],
                Phase::StateDelivered if self.fault == Fault::Corrupt => vec![Stayed],
                // The ack is what is struck: the destination runs it.
                _ => vec![Moved],
            },
        }
    }
}

fn all_cases() -> Vec<Case> {
    let mut v = Vec::new();
    for away in [false, true] {
        for phase in PHASES {
            for fault in [
                Fault::KillSource,
                Fault::KillDestination,
                Fault::KillHome,
                Fault::Cut,
                Fault::Delay,
                Fault::Corrupt,
                Fault::Truncate,
            ] {
                // At home, the source body is the home: one case.
                if !away && fault == Fault::KillHome {
                    continue;
                }
                v.push(Case { away, phase, fault });
            }
        }
    }
    v
}

// ---- the proxy ----

/// What the proxy does when the phase comes.
#[derive(Clone, Copy)]
enum Strike {
    Kill(u32),
    Cut,
    Delay,
    Corrupt,
    Truncate,
}

struct Proxy {
    addr: String,
    struck: Arc<AtomicBool>,
}

fn kill9(pid: u32) {
    // SAFETY: a plain kill(2) of a process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

fn read_record(r: &mut impl Read) -> Option<Vec<u8>> {
    let mut h = [0u8; 8];
    r.read_exact(&mut h).ok()?;
    let len = u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize;
    let mut rec = h.to_vec();
    rec.resize(8 + len + 4, 0);
    r.read_exact(&mut rec[8..]).ok()?;
    Some(rec)
}

const TAG_HELLO: u8 = 1;
const TAG_PAGES: u8 = 2;
const TAG_STATE: u8 = 4;
const TAG_END: u8 = 5;
const TAG_SYNC: u8 = 6;
const TAG_ACK: u8 = 18;

enum Out {
    Data(Instant, Vec<u8>),
    /// Ends the stream after what came before (a truncation).
    ShutWrite,
}

/// Writes to `sock` what it is given, each piece not before its time: a
/// link's latency, without costing its throughput.
fn delay_line(mut sock: TcpStream) -> std::sync::mpsc::Sender<Out> {
    let (tx, rx) = std::sync::mpsc::channel::<Out>();
    std::thread::spawn(move || {
        for out in rx {
            match out {
                Out::Data(due, bytes) => {
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    if sock.write_all(&bytes).is_err() {
                        return;
                    }
                }
                Out::ShutWrite => {
                    let _ = sock.shutdown(Shutdown::Write);
                }
            }
        }
        let _ = sock.shutdown(Shutdown::Write);
    });
    tx
}

const LATENCY: Duration = Duration::from_millis(200);

/// A proxy to `to` that strikes at `phase` once.
fn proxy(to: String, phase: Phase, strike: Strike) -> Proxy {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let struck = Arc::new(AtomicBool::new(false));
    let fired = struck.clone();
    std::thread::spawn(move || {
        let Ok((a, _)) = l.accept() else { return };
        let Ok(b) = TcpStream::connect(&to) else { return };
        let delayed = Arc::new(AtomicBool::new(false));
        let muted = Arc::new(AtomicBool::new(false));
        let hit = |s: &Arc<AtomicBool>| !s.swap(true, Ordering::SeqCst);
        let due = |d: &AtomicBool| Instant::now() + if d.load(Ordering::SeqCst) { LATENCY } else { Duration::ZERO };
        let cut = |a: &TcpStream, b: &TcpStream| {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        };
        // Does this forward record mark the phase?
        let forward_marks = move |tag: u8, pages_seen: u32, syncs: u32| match phase {
            Phase::Handshake => tag == TAG_HELLO,
            Phase::FirstRound => tag == TAG_PAGES && pages_seen == 2,
            Phase::LaterRounds => tag == TAG_PAGES && syncs >= 1,
            Phase::FinalState => tag == TAG_STATE,
            Phase::StateDelivered => tag == TAG_END,
            _ => false,
        };
        // The way back: ACCEPT, SYNCED, ACK (or a refusal).
        let back = {
            let (a, mut b) = (a.try_clone().unwrap(), b.try_clone().unwrap());
            let to_a = delay_line(a.try_clone().unwrap());
            let (fired, delayed, muted) = (fired.clone(), delayed.clone(), muted.clone());
            std::thread::spawn(move || {
                while let Some(mut rec) = read_record(&mut b) {
                    if muted.load(Ordering::SeqCst) {
                        continue;
                    }
                    let at_ack = rec[0] == TAG_ACK;
                    if at_ack && phase == Phase::BeforeAck && hit(&fired) {
                        match strike {
                            Strike::Kill(pid) => kill9(pid),
                            Strike::Cut => return cut(&a, &b),
                            Strike::Delay => delayed.store(true, Ordering::SeqCst),
                            Strike::Corrupt => rec[8] ^= 0x10,
                            Strike::Truncate => {
                                let _ = to_a.send(Out::Data(Instant::now(), rec[..6].to_vec()));
                                let _ = to_a.send(Out::ShutWrite);
                                return;
                            }
                        }
                    }
                    if to_a.send(Out::Data(due(&delayed), rec)).is_err() {
                        return;
                    }
                    if at_ack && phase == Phase::AfterAck && hit(&fired) {
                        std::thread::sleep(Duration::from_millis(300));
                        match strike {
                            Strike::Kill(pid) => kill9(pid),
                            Strike::Cut | Strike::Truncate => cut(&a, &b),
                            Strike::Delay => delayed.store(true, Ordering::SeqCst),
                            Strike::Corrupt => {}
                        }
                    }
                }
            })
        };
        let mut a = a;
        let to_b = delay_line(b.try_clone().unwrap());
        let mut header = [0u8; 16];
        if a.read_exact(&mut header).is_err() || to_b.send(Out::Data(Instant::now(), header.to_vec())).is_err() {
            return;
        }
        let (mut pages, mut syncs) = (0u32, 0u32);
        while let Some(mut rec) = read_record(&mut a) {
            let tag = rec[0];
            pages += (tag == TAG_PAGES) as u32;
            // All of the state goes through, then the strike.
            let after = matches!(strike, Strike::Kill(_) | Strike::Cut | Strike::Truncate);
            if phase == Phase::StateDelivered && tag == TAG_END && after && hit(&fired) {
                // A cut link: nothing the destination says comes back.
                muted.store(matches!(strike, Strike::Cut), Ordering::SeqCst);
                let _ = to_b.send(Out::Data(Instant::now(), rec));
                match strike {
                    Strike::Kill(pid) => {
                        std::thread::sleep(Duration::from_millis(20));
                        kill9(pid);
                    }
                    Strike::Cut => {
                        std::thread::sleep(Duration::from_millis(300));
                        cut(&a, &b);
                    }
                    _ => {
                        let _ = to_b.send(Out::ShutWrite);
                    }
                }
                continue;
            }
            if forward_marks(tag, pages, syncs) && hit(&fired) {
                match strike {
                    Strike::Kill(pid) => kill9(pid),
                    Strike::Cut => {
                        let half = rec[..rec.len() / 2].to_vec();
                        let _ = to_b.send(Out::Data(Instant::now(), half));
                        std::thread::sleep(Duration::from_millis(50));
                        cut(&a, &b);
                        break;
                    }
                    Strike::Delay => delayed.store(true, Ordering::SeqCst),
                    Strike::Corrupt => {
                        let i = 8 + (rec.len() - 12) / 2;
                        rec[i] ^= 0x10;
                    }
                    Strike::Truncate => {
                        let _ = to_b.send(Out::Data(Instant::now(), rec[..rec.len() / 2].to_vec()));
                        let _ = to_b.send(Out::ShutWrite);
                        // Swallow the rest so the sender is not stuck writing.
                        let mut sink = [0u8; 65536];
                        while a.read(&mut sink).is_ok_and(|n| n > 0) {}
                        break;
                    }
                }
            }
            syncs += (tag == TAG_SYNC) as u32;
            if to_b.send(Out::Data(due(&delayed), rec)).is_err() {
                break;
            }
        }
        drop(to_b);
        let _ = back.join();
    });
    Proxy { addr, struck }
}

// ---- a case ----

struct Observed {
    outcome: Option<Outcome>,
    detail: String,
    ok: bool,
}

fn receiver_once(api: &std::path::Path) -> (Proc, String) {
    receiver(&["--once", "--api-sock", api.to_str().unwrap()], None)
}

/// Moves the job at `home_sock` cleanly to a new receiver (its control
/// socket named after `name`): the receiver's socket and process, or the
/// case's failure.
fn move_away(home_sock: &std::path::Path, name: &str) -> Result<(PathBuf, Proc), Observed> {
    let s = sock_path(name);
    let (r, addr) = receiver_once(&s);
    let (m, _) = migrate(home_sock, &addr, &[]);
    if m.status != 0 {
        return Err(Observed {
            outcome: None,
            detail: format!("the first move failed: {}", m.stderr.trim()),
            ok: false,
        });
    }
    wait_for_path(&s);
    Ok((s, r))
}

fn finish_within(p: Proc, what: &str, limit: Duration) -> Result<Run, String> {
    let t = Instant::now();
    let mut p = p;
    loop {
        if p.child.try_wait().unwrap().is_some() {
            return Ok(p.finish(Duration::from_secs(5)));
        }
        if t.elapsed() > limit {
            let r = p.finish_or_kill();
            return Err(format!("{what} hung (killed after {limit:?}): {}", r.stderr.trim()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run_case(c: &Case, native: &Run, n: usize) -> Observed {
    let mem = image("mem");
    let home_sock = sock_path(&format!("fault{n}-home"));
    let home = source(&mem, &JOB, &[], &home_sock, None);
    home.wait_for("the job to start", Duration::from_secs(30), |o, _| o.contains("allocated"));
    let home_pid = home.child.id();
    // The source of the struck move: home itself, or a first receiver.
    let (src_sock, first) = if c.away {
        match move_away(&home_sock, &format!("fault{n}-first")) {
            Ok((s, r)) => (s, Some(r)),
            Err(o) => return o,
        }
    } else {
        (home_sock.clone(), None)
    };
    let src_pid = first.as_ref().map_or(home_pid, |p| p.child.id());
    let dst_sock = sock_path(&format!("fault{n}-dst"));
    let (dst, dst_addr) = receiver_once(&dst_sock);
    let strike = match c.fault {
        Fault::KillSource => Strike::Kill(src_pid),
        Fault::KillDestination => Strike::Kill(dst.child.id()),
        Fault::KillHome => Strike::Kill(home_pid),
        Fault::Cut => Strike::Cut,
        Fault::Delay => Strike::Delay,
        Fault::Corrupt => Strike::Corrupt,
        Fault::Truncate => Strike::Truncate,
    };
    let px = proxy(dst_addr, c.phase, strike);
    // Without --verify: what is checked is what the job prints.
    let mut cmd = std::process::Command::new(mosvm_bin());
    cmd.arg("migrate").arg("--api-sock").arg(&src_sock).args(["--to", &px.addr, "--json"]);
    let m = run_command(cmd, &Opts::default());
    let moved = m.stdout.contains("\"result\":\"ok\"");
    let home_killed = c.fault == Fault::KillHome || (c.fault == Fault::KillSource && !c.away);
    let bodies: Vec<(&str, Proc)> = first.map(|p| ("source", p)).into_iter().chain([("destination", dst)]).collect();
    let mut v = Verdict::of(home, bodies, native, c.away, home_killed);
    v.detail = format!("migrate: {}{}", if moved { "ok" } else { "failed" }, v.detail);
    if std::env::var_os("MOSVM_FAULTS_VERBOSE").is_some() {
        eprintln!("    migrate: {}", m.stderr.trim());
    }
    let struck = px.struck.load(Ordering::SeqCst);
    if !struck {
        v.detail += "; the phase never came";
    }
    // `mosvm migrate` must say what happened: ok exactly when the job
    // went (even if the acknowledgement was what the fault struck), unless
    // the body it asked is the one killed.
    let told = c.fault == Fault::KillSource
        || match v.outcome {
            Some(Outcome::Moved) => moved,
            Some(Outcome::Stayed) => !moved,
            _ => true,
        };
    if !told {
        v.detail += "; but migrate said otherwise";
    }
    let ok = v.outcome.is_some_and(|o| c.expected().contains(&o)) && struck && told;
    Observed { outcome: v.outcome, detail: v.detail, ok }
}

/// What became of a job: its home's process and its bodies' (named
/// "source", "destination"), each given time to end by itself.
struct Verdict {
    outcome: Option<Outcome>,
    detail: String,
    /// What home and the bodies wrote to stderr (not those that hung).
    said: String,
    /// When home ended.
    home_ended: Instant,
}

impl Verdict {
    fn of(home: Proc, bodies: Vec<(&str, Proc)>, native: &Run, away: bool, home_killed: bool) -> Verdict {
        Verdict::within(home, bodies, native, away, home_killed, Duration::from_secs(60))
    }

    /// The same, with `limit` for the job to end at home.
    fn within(
        home: Proc,
        bodies: Vec<(&str, Proc)>,
        native: &Run,
        away: bool,
        home_killed: bool,
        limit: Duration,
    ) -> Verdict {
        let home_r = finish_within(home, "home", limit);
        let home_ended = Instant::now();
        // Bodies must end by themselves soon after home did.
        let bodies: Vec<(&str, Result<Run, String>)> = bodies
            .into_iter()
            .map(|(who, p)| (who, finish_within(p, &format!("the {who} body"), Duration::from_secs(15))))
            .collect();
        let mut detail = String::new();
        let mut hung = Vec::new();
        let home_r = match home_r {
            Ok(r) => Some(r),
            Err(e) => {
                hung.push(e);
                None
            }
        };
        // Which bodies ran the job to its end: a receiver that did ends
        // with the job's status and never said it lost or handed on the job.
        let mut ran = Vec::new();
        let mut last_words = Vec::new();
        let mut everything = String::new();
        for (who, r) in bodies {
            match r {
                Err(e) => hung.push(e),
                Ok(r) => {
                    let said =
                        r.stderr.lines().rfind(|l| !l.contains("waiting for a job")).unwrap_or("").trim().to_string();
                    let done = r.status == native.status
                        && !["not received", "job moved", "lost", "stop"].iter().any(|w| r.stderr.contains(w));
                    if done {
                        ran.push(who);
                    }
                    everything += &r.stderr;
                    last_words.push(format!(
                        "{who} ended {}{}",
                        r.status,
                        if said.is_empty() { String::new() } else { format!(": {said}") }
                    ));
                }
            }
        }
        if std::env::var_os("MOSVM_FAULTS_VERBOSE").is_some() {
            eprintln!("    {}", last_words.join("\n    "));
        }
        if !hung.is_empty() {
            return Verdict {
                outcome: None,
                detail: format!("; {}", hung.join("; ")),
                said: String::new(),
                home_ended,
            };
        }
        let home_r = home_r.unwrap();
        if std::env::var_os("MOSVM_FAULTS_VERBOSE").is_some() {
            eprintln!("    home ended {}: {}", home_r.status, home_r.stderr.trim());
        }
        let outcome = if ran.len() > 1 {
            detail += "; TWO COPIES ran the job to its end";
            None
        } else if home_killed {
            // Home was killed: it reports nothing; what counts is that every
            // body stopped by itself (nothing hung) and none ran on.
            (home_r.status == 137 && ran.is_empty()).then_some(Outcome::GoneWithHome)
        } else if home_r.status == 255 && home_r.stderr.contains("job lost") && ran.is_empty() {
            let why = home_r.stderr.lines().find(|l| l.contains("job lost")).unwrap_or("").trim().to_string();
            detail += &format!("; {why}");
            Some(Outcome::LostAtHome)
        } else if home_r.status == native.status && home_r.stdout == native.stdout {
            match (away, ran.first()) {
                (_, Some(&"destination")) => Some(Outcome::Moved),
                (_, Some(_)) | (false, None) => Some(Outcome::Stayed),
                (true, None) => {
                    detail += "; the output is right but no body says it ran the job";
                    None
                }
            }
        } else {
            detail += &format!(
                "; home ended {} with {} bytes of output (native {}), stderr {:?}",
                home_r.status,
                home_r.stdout.len(),
                native.stdout.len(),
                home_r.stderr.trim()
            );
            None
        };
        everything += &home_r.stderr;
        Verdict { outcome, detail, said: everything, home_ended }
    }
}

/// After a move that failed once the job's state was out (its deputy
/// then fenced that move's body off), the next move still links its body
/// to the deputy while the pages flow: it presents a generation past the
/// fence, so the deputy refuses nothing.
#[test]
fn a_job_moves_again_after_a_move_failed_late() {
    if !require_kvm("a_job_moves_again_after_a_move_failed_late") {
        return;
    }
    let mem = image("mem");
    let native = native(&mem, &JOB, &Opts::default());
    let home_sock = sock_path("again-home");
    let home = source(&mem, &JOB, &[], &home_sock, None);
    home.wait_for("the job to start", Duration::from_secs(30), |o, _| o.contains("allocated"));
    let (failed, failed_addr) = receiver_once(&sock_path("again-failed"));
    let px = proxy(failed_addr, Phase::FinalState, Strike::Truncate);
    let (m, _) = migrate(&home_sock, &px.addr, &[]);
    assert!(px.struck.load(Ordering::SeqCst), "the stream was never cut: {m:?}");
    assert_ne!(m.status, 0, "the cut move should fail: {m:?}");
    let (dst, addr) = receiver_once(&sock_path("again-dst"));
    let (m, json) = migrate(&home_sock, &addr, &[]);
    let answer: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(answer["result"], "ok", "the second move: {m:?}");
    let v = Verdict::of(home, vec![("source", failed), ("destination", dst)], &native, false, false);
    assert_eq!(v.outcome, Some(Outcome::Moved), "{}", v.detail);
    assert!(!v.said.contains("early link"), "the second move's early link failed: {}", v.said);
}

// ---- faults on the deputy link ----
//
// The job (`homework`: reads its input, writes its output file and its
// stdout round by round, all through its deputy while away) runs with its
// deputy behind a proxy (`--home-advertise`), so every link a body opens
// to home passes it: the proxy cuts, delays, corrupts or truncates them
// while the body runs away from home, or keeps a moving body from
// reaching home at all.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkFault {
    /// Every link of the body away cut.
    Cut,
    /// A byte of a call (body to home) flipped.
    CorruptCall,
    /// A byte of a reply (home to body) flipped.
    CorruptReply,
    /// A bit of a reply frame's length flipped: the body waits for bytes
    /// that never come.
    CorruptLength,
    /// The body's side of its links ends early (home reads EOF).
    Truncate,
    /// Every link delayed 200 ms each way.
    Delay,
    /// A move's new body cannot reach home (its connections are refused).
    Partition,
    /// A move's new body reaches home only 200 ms late.
    SlowNewBody,
}

#[derive(Clone, Copy, Debug)]
struct LinkCase {
    fault: LinkFault,
    /// For a move's new body: is the move the job's first (from home)?
    from_home: bool,
}

impl LinkCase {
    fn name(&self) -> String {
        let what = match self.fault {
            LinkFault::Cut => "link of the body away cut",
            LinkFault::CorruptCall => "a byte of a call corrupted",
            LinkFault::CorruptReply => "a byte of a reply corrupted",
            LinkFault::CorruptLength => "the length of a reply frame corrupted",
            LinkFault::Truncate => "the body's side of its link ends early",
            LinkFault::Delay => "link of the body away delayed 200 ms",
            LinkFault::Partition => "a moving body cannot reach home",
            LinkFault::SlowNewBody => "a moving body reaches home 200 ms late",
        };
        match (self.fault, self.from_home) {
            (LinkFault::Partition | LinkFault::SlowNewBody, true) => format!("{what} (first move, from home)"),
            (LinkFault::Partition | LinkFault::SlowNewBody, false) => format!("{what} (second move, away)"),
            _ => what.to_string(),
        }
    }

    fn expected(&self) -> Vec<Outcome> {
        use Outcome::*;
        match self.fault {
            LinkFault::Cut
            | LinkFault::CorruptCall
            | LinkFault::CorruptReply
            | LinkFault::CorruptLength
            | LinkFault::Truncate => {
                vec![LostAtHome]
            }
            LinkFault::Delay => vec![Stayed],
            LinkFault::Partition => vec![Stayed],
            LinkFault::SlowNewBody => vec![Moved],
        }
    }
}

fn link_cases() -> Vec<LinkCase> {
    use LinkFault::*;
    let mut v: Vec<LinkCase> = [Cut, CorruptCall, CorruptReply, CorruptLength, Truncate, Delay]
        .map(|fault| LinkCase { fault, from_home: false })
        .to_vec();
    for from_home in [true, false] {
        v.push(LinkCase { fault: Partition, from_home });
        v.push(LinkCase { fault: SlowNewBody, from_home });
    }
    v
}

/// What the deputy-link proxy does to the connections through it.
#[derive(Default)]
struct LinkCtl {
    /// Both ends of every connection so far.
    conns: std::sync::Mutex<Vec<(TcpStream, TcpStream)>>,
    /// New connections are closed at once.
    refuse_new: AtomicBool,
    /// New connections get LATENCY each way.
    delay_new: AtomicBool,
    /// Every connection gets LATENCY each way from now on.
    delay_all: AtomicBool,
    /// The next bytes body to home / home to body get a bit flipped.
    corrupt_up: AtomicBool,
    corrupt_down: AtomicBool,
    /// The next frame home to body gets its length grown by 64 KiB.
    corrupt_length: AtomicBool,
    /// Something was struck (a flipped byte went through, a connection was
    /// refused).
    struck: AtomicBool,
}

impl LinkCtl {
    fn cut_all(&self) {
        for (a, b) in self.conns.lock().unwrap().iter() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
        self.struck.store(true, Ordering::SeqCst);
    }

    /// Home reads the end of every body's stream; its answers still flow.
    fn truncate_all(&self) {
        for (_, b) in self.conns.lock().unwrap().iter() {
            let _ = b.shutdown(Shutdown::Write);
        }
        self.struck.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` (through a delay line), striking as `ctl` says.
fn pump(mut from: TcpStream, to: TcpStream, ctl: Arc<LinkCtl>, up: bool, slow: bool) {
    let line = delay_line(to);
    let mut buf = vec![0u8; 65536];
    let mut frames = Frames::default();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        let flag = if up { &ctl.corrupt_up } else { &ctl.corrupt_down };
        if flag.swap(false, Ordering::SeqCst) {
            chunk[n / 2] ^= 0x10;
            ctl.struck.store(true, Ordering::SeqCst);
        }
        // Home to body, the stream is frames from its first byte on.
        if !up {
            let strike = ctl.corrupt_length.load(Ordering::SeqCst);
            if frames.walk(chunk, strike) {
                ctl.corrupt_length.store(false, Ordering::SeqCst);
                ctl.struck.store(true, Ordering::SeqCst);
            }
        }
        let late = slow || ctl.delay_all.load(Ordering::SeqCst);
        let due = Instant::now() + if late { LATENCY } else { Duration::ZERO };
        if line.send(Out::Data(due, chunk.to_vec())).is_err() {
            return;
        }
    }
}

/// Where the frames of a deputy-link stream start (u32 length, u32
/// checksum, payload).
#[derive(Default)]
struct Frames {
    head: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    left: usize,
}

impl Frames {
    /// Follows the frames through `chunk`; with `strike`, grows the length
    /// of the first frame whose header lies whole in it by 64 KiB (a
    /// flipped bit 16). Whether it struck.
    fn walk(&mut self, chunk: &mut [u8], strike: bool) -> bool {
        let mut flip = None;
        let mut i = 0;
        while i < chunk.len() {
            if self.left > 0 {
                let k = self.left.min(chunk.len() - i);
                self.left -= k;
                i += k;
                continue;
            }
            if strike && flip.is_none() && self.head.is_empty() && i + 8 <= chunk.len() && chunk[i + 2] & 1 == 0 {
                flip = Some(i + 2);
            }
            self.head.push(chunk[i]);
            i += 1;
            if self.head.len() == 8 {
                self.left = u32::from_le_bytes(self.head[..4].try_into().unwrap()) as usize;
                self.head.clear();
            }
        }
        if let Some(at) = flip {
            chunk[at] ^= 1;
        }
        flip.is_some()
    }
}

/// A proxy in front of the deputy at `to`, for every connection.
fn link_proxy(to: String) -> (String, Arc<LinkCtl>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let ctl = Arc::new(LinkCtl::default());
    let c = ctl.clone();
    std::thread::spawn(move || {
        for a in l.incoming() {
            let Ok(a) = a else { continue };
            if c.refuse_new.load(Ordering::SeqCst) {
                c.struck.store(true, Ordering::SeqCst);
                let _ = a.shutdown(Shutdown::Both);
                continue;
            }
            let Ok(b) = TcpStream::connect(&to) else { continue };
            let slow = c.delay_new.load(Ordering::SeqCst);
            if slow {
                c.struck.store(true, Ordering::SeqCst);
            }
            c.conns.lock().unwrap().push((a.try_clone().unwrap(), b.try_clone().unwrap()));
            let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
            let (c1, c2) = (c.clone(), c.clone());
            std::thread::spawn(move || pump(a, b, c1, true, slow));
            std::thread::spawn(move || pump(b2, a2, c2, false, slow));
        }
    });
    (addr, ctl)
}

/// A free port on 127.0.0.1 (for a listener that must be named before
/// it starts).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

const ROUNDS: &str = "60";

fn homework_input(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let input: String = (1..=5000).map(|i| format!("input line {i}\n")).collect();
    std::fs::write(dir.join("in.txt"), input).unwrap();
}

fn run_link_case(c: &LinkCase, native: &Run, native_out: &[u8], n: usize) -> Observed {
    let prog = image("tests/homework");
    let dir = scratch_dir(&format!("link-fault{n}")).join("job");
    homework_input(&dir);
    let port = free_port();
    let (px, ctl) = link_proxy(format!("127.0.0.1:{port}"));
    let home_sock = sock_path(&format!("link{n}-home"));
    let listen = format!("127.0.0.1:{port}");
    let vm_args = ["--home-listen", &listen, "--home-advertise", &px];
    let home = source(&prog, &["in.txt", "out.txt", ROUNDS], &vm_args, &home_sock, Some(&dir));
    home.wait_for("round 5", Duration::from_secs(30), |o, _| o.contains("round 5 of"));
    let new_body = matches!(c.fault, LinkFault::Partition | LinkFault::SlowNewBody);
    let arm = |ctl: &LinkCtl| match c.fault {
        LinkFault::Partition => ctl.refuse_new.store(true, Ordering::SeqCst),
        _ => ctl.delay_new.store(true, Ordering::SeqCst),
    };
    let mut bodies = Vec::new();
    let mut moved = None;
    let mut src_sock = home_sock.clone();
    if !(new_body && c.from_home) {
        let (s, r) = match move_away(&home_sock, &format!("link{n}-first")) {
            Ok(v) => v,
            Err(o) => return o,
        };
        bodies.push(("source", r));
        src_sock = s;
        home.wait_for("a round away", Duration::from_secs(30), |o, _| o.contains("round 15 of"));
    }
    if new_body {
        arm(&ctl);
        let s = sock_path(&format!("link{n}-dst"));
        let (r, addr) = receiver_once(&s);
        let mut cmd = std::process::Command::new(mosvm_bin());
        cmd.arg("migrate").arg("--api-sock").arg(&src_sock).args(["--to", &addr, "--json"]);
        let m = run_command(cmd, &Opts::default());
        moved = Some(m.stdout.contains("\"result\":\"ok\""));
        bodies.push(("destination", r));
    } else {
        match c.fault {
            LinkFault::Cut => ctl.cut_all(),
            LinkFault::Truncate => ctl.truncate_all(),
            LinkFault::CorruptCall => ctl.corrupt_up.store(true, Ordering::SeqCst),
            LinkFault::CorruptReply => ctl.corrupt_down.store(true, Ordering::SeqCst),
            LinkFault::CorruptLength => ctl.corrupt_length.store(true, Ordering::SeqCst),
            _ => {
                ctl.delay_all.store(true, Ordering::SeqCst);
                ctl.struck.store(true, Ordering::SeqCst);
            }
        }
    }
    // At home from the start (a failed first move): the home is the source.
    let away = !(new_body && c.from_home);
    // Every call of a job whose link is slow waits 400 ms more.
    let slow = matches!(c.fault, LinkFault::Delay | LinkFault::SlowNewBody);
    let limit = Duration::from_secs(if slow { 180 } else { 60 });
    let mut v = Verdict::within(home, bodies, native, away, false, limit);
    let out = std::fs::read(dir.join("out.txt")).ok();
    if v.outcome.is_some_and(|o| matches!(o, Outcome::Stayed | Outcome::Moved)) && out.as_deref() != Some(native_out) {
        v.detail += "; but out.txt differs from the native run's";
        v.outcome = None;
    }
    if let Some(m) = moved {
        v.detail = format!("migrate: {}{}", if m { "ok" } else { "failed" }, v.detail);
        let told = match v.outcome {
            Some(Outcome::Moved) => m,
            Some(Outcome::Stayed) => !m,
            _ => true,
        };
        if !told {
            v.detail += "; but migrate said otherwise";
            v.outcome = None;
        }
    }
    let struck = ctl.struck.load(Ordering::SeqCst);
    if !struck {
        v.detail += "; the fault never struck";
    }
    let ok = struck && v.outcome.is_some_and(|o| c.expected().contains(&o));
    let detail = match v.detail.trim_start_matches("; ") {
        "" => "the job's output and files are the native run's".to_string(),
        d => d.to_string(),
    };
    Observed { outcome: v.outcome, detail, ok }
}

// ---- the destination's daemon killed ----
//
// Moves between daemons (`mosvm migrate JOB --to h3` at the job's home
// h2): h3's daemon starts the body process the job moves into, then only
// keeps its record. Killed (and restarted) before, during or after the
// move, it must cost the job nothing.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DaemonPhase {
    /// Killed before the move is asked for: no host takes the body.
    BeforeMove,
    /// Killed while the pages stream into the body it started.
    DuringCopy,
    /// Killed once the job runs there, and restarted.
    AfterMove,
    /// Killed once the job runs there, and left dead.
    AfterMoveForGood,
}

impl DaemonPhase {
    fn name(self) -> &'static str {
        match self {
            DaemonPhase::BeforeMove => "before the move (then restarted)",
            DaemonPhase::DuringCopy => "while the pages stream (then restarted)",
            DaemonPhase::AfterMove => "after the move (then restarted)",
            DaemonPhase::AfterMoveForGood => "after the move, for good",
        }
    }

    fn expected(self) -> Vec<Outcome> {
        match self {
            DaemonPhase::BeforeMove => vec![Outcome::Stayed],
            _ => vec![Outcome::Moved],
        }
    }
}

const DAEMON_PHASES: [DaemonPhase; 4] =
    [DaemonPhase::BeforeMove, DaemonPhase::DuringCopy, DaemonPhase::AfterMove, DaemonPhase::AfterMoveForGood];

/// The body processes h3's daemon started (they run `mosvm receive` with
/// a control socket in its state dir).
fn bodies_of(h: &mosvm_tests::emulated::Host) -> Vec<i32> {
    let bodies = h.state_dir.join("bodies");
    let out = std::process::Command::new("pgrep").arg("-f").arg(bodies.to_str().unwrap()).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn run_daemon_case(phase: DaemonPhase, native: &Run, native_out: &[u8], n: usize) -> Observed {
    use mosvm_tests::emulated::{wait_until, Cluster};
    let fail = |detail: String| Observed { outcome: None, detail, ok: false };
    // Balancing off: the only move is the one struck.
    let opts = mosvm_tests::emulated::Options { no_balance: true, ..Default::default() };
    let mut c = Cluster::start_with(&format!("daemon-fault{n}"), 2, &opts);
    c.wait_all_alive(Duration::from_secs(10));
    let dir = c.base.join("job");
    homework_input(&dir);
    let mut cmd = std::process::Command::new(mosvm_bin());
    cmd.arg("run").arg("--").arg(image("tests/homework")).args(["in.txt", "out.txt", ROUNDS]);
    cmd.current_dir(&dir).env("MOSVM_SOCK", &c.hosts[0].sock);
    let job = Proc::spawn(cmd);
    let mut id = None;
    wait_until("the job's record", Duration::from_secs(10), || {
        id = c.hosts[0].ps(false).first().filter(|j| j.control_sock.is_some()).map(|j| j.id);
        id.is_some()
    });
    let id = id.unwrap().to_string();
    job.wait_for("round 5", Duration::from_secs(30), |o, _| o.contains("round 5 of"));
    let restart = |c: &mut Cluster| {
        let join = [c.hosts[0].addr()];
        c.hosts[1].start(&join);
    };
    if phase == DaemonPhase::BeforeMove {
        c.hosts[1].signal(libc::SIGKILL);
    }
    // The move; at 100 kB/s (over a second for this job) when it must last
    // while the daemon is killed.
    let (sock, to) = (c.hosts[0].sock.clone(), c.hosts[1].name.clone());
    let id2 = id.clone();
    let slow: &[&str] = if phase == DaemonPhase::DuringCopy { &["--max-bandwidth", "0.1"] } else { &[] };
    let mover = std::thread::spawn(move || {
        let mut cmd = std::process::Command::new(mosvm_bin());
        cmd.args(["migrate", &id2, "--to", &to, "--json"]).args(slow).arg("--sock").arg(&sock);
        run_command(cmd, &Opts::default())
    });
    if phase == DaemonPhase::DuringCopy {
        wait_until("the body process at h3", Duration::from_secs(10), || !bodies_of(&c.hosts[1]).is_empty());
        std::thread::sleep(Duration::from_millis(300));
        if mover.is_finished() {
            let m = mover.join().unwrap();
            return fail(format!(
                "the move ended before the daemon was killed: {} {}",
                m.stdout.trim(),
                m.stderr.trim()
            ));
        }
        c.hosts[1].signal(libc::SIGKILL);
    }
    let m = mover.join().unwrap();
    let moved = m.stdout.contains("\"result\":\"ok\"");
    if matches!(phase, DaemonPhase::AfterMove | DaemonPhase::AfterMoveForGood) {
        job.wait_for("a round away", Duration::from_secs(30), |o, _| o.contains("round 15 of"));
        c.hosts[1].signal(libc::SIGKILL);
    }
    if phase != DaemonPhase::AfterMoveForGood {
        restart(&mut c);
    }
    let r = finish_within(job, "the job", Duration::from_secs(60));
    let mut detail = match moved {
        true => "migrate: ok".to_string(),
        false => format!("migrate: failed ({})", m.stderr.trim()),
    };
    let r = match r {
        Ok(r) => r,
        Err(e) => return fail(format!("{detail}; {e}")),
    };
    let out = std::fs::read(dir.join("out.txt")).ok();
    let right = r.status == native.status && r.stdout == native.stdout && out.as_deref() == Some(native_out);
    let record = c.hosts[0].wait_job(id.parse().unwrap(), Duration::from_secs(10));
    let outcome = if !right {
        detail += &format!("; the job ended {} with {} bytes of output: {}", r.status, r.stdout.len(), r.stderr.trim());
        None
    } else if record.exit_status != Some(native.status) {
        detail += &format!("; its record says {:?} {:?}", record.state, record.exit_status);
        None
    } else {
        match (record.moves, moved) {
            (1, true) => Some(Outcome::Moved),
            (0, false) => Some(Outcome::Stayed),
            (n, _) => {
                detail += &format!("; the record counts {n} moves");
                None
            }
        }
    };
    // No body left behind at h3.
    let t = Instant::now();
    while !bodies_of(&c.hosts[1]).is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = bodies_of(&c.hosts[1]);
    if !left.is_empty() {
        detail += &format!("; body processes {left:?} still run at h3");
        for p in left {
            kill9(p as u32);
        }
    }
    if std::env::var_os("MOSVM_FAULTS_VERBOSE").is_some() {
        eprintln!("    job: {}\n{}", r.stderr.trim(), c.dump());
        for e in std::fs::read_dir(c.hosts[1].state_dir.join("bodies")).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                eprintln!("    {}: {}", e.path().display(), std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    let ok = outcome.is_some_and(|o| phase.expected().contains(&o)) && !detail.contains("still run");
    Observed { outcome, detail, ok }
}

/// The native run of the homework job the deputy-link and daemon sets
/// use: its result and output file.
fn homework_native(name: &str) -> (Run, Vec<u8>) {
    homework_native_of(name, ROUNDS)
}

fn homework_native_of(name: &str, rounds: &str) -> (Run, Vec<u8>) {
    let prog = image("tests/homework");
    let dir = scratch_dir(name).join("job");
    homework_input(&dir);
    let native = native(&prog, &["in.txt", "out.txt", rounds], &Opts { cwd: Some(&dir), ..Opts::default() });
    assert_eq!(native.status, 3, "{native:?}");
    let out = std::fs::read(dir.join("out.txt")).unwrap();
    (native, out)
}

// ---- a host's network gone (a black hole) ----
//
// The destination runs in a network namespace of its own (a veth pair to
// this one); its interface goes down, so the packets between it and the
// rest vanish without a reset: no FIN, no RST, only silence, as when a
// host's cable is pulled. For good, or for one second (then the links
// must survive).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BlackHole {
    /// While the pages stream to the destination (else: while the job runs
    /// there, away from its home).
    during_copy: bool,
    /// The interface comes back after a second.
    brief: bool,
}

const BLACK_HOLES: [BlackHole; 4] = [
    BlackHole { during_copy: true, brief: false },
    BlackHole { during_copy: true, brief: true },
    BlackHole { during_copy: false, brief: false },
    BlackHole { during_copy: false, brief: true },
];

impl Scenario for BlackHole {
    fn name(&self) -> String {
        format!(
            "destination's network {} {}",
            if self.brief { "down for 1 s" } else { "gone" },
            if self.during_copy { "while the pages stream" } else { "while the job runs there, away" }
        )
    }

    fn expected(&self) -> Vec<Outcome> {
        match (self.during_copy, self.brief) {
            (true, false) => vec![Outcome::Stayed],
            (true, true) => vec![Outcome::Moved],
            (false, false) => vec![Outcome::LostAtHome],
            (false, true) => vec![Outcome::Stayed],
        }
    }
}

/// A receiver for one job inside `ns`, listening on its address.
fn receiver_in(ns: &mosvm_tests::emulated::Netns, api: &std::path::Path) -> (Proc, String) {
    let mut cmd = ns.command(&mosvm_bin());
    cmd.args(["receive", "--listen", &format!("{}:0", ns.inner), "--once", "--api-sock", api.to_str().unwrap()]);
    receiver_of(cmd)
}

/// Rounds of homework that last past a slow move and a cut (about 15 s).
const HOLE_ROUNDS: &str = "400";

fn run_black_hole(c: &BlackHole, native: &Run, native_out: &[u8], n: usize) -> Observed {
    let ns = mosvm_tests::emulated::Netns::create();
    let prog = image("tests/homework");
    let dir = scratch_dir(&format!("black-hole{n}")).join("job");
    homework_input(&dir);
    // Home listens on this side of the pair, where the body can reach it.
    let listen = format!("{}:{}", ns.outer, free_port());
    let home_sock = sock_path(&format!("hole{n}-home"));
    let home = source(&prog, &["in.txt", "out.txt", HOLE_ROUNDS], &["--home-listen", &listen], &home_sock, Some(&dir));
    home.wait_for("round 5", Duration::from_secs(30), |o, _| o.contains("round 5 of"));
    let dst_sock = sock_path(&format!("hole{n}-dst"));
    let (dst, addr) = receiver_in(&ns, &dst_sock);
    let mut cmd = std::process::Command::new(mosvm_bin());
    cmd.arg("migrate").arg("--api-sock").arg(&home_sock).args(["--to", &addr, "--json"]);
    if c.during_copy {
        // 50 kB/s: the copy lasts well past the cut.
        cmd.args(["--max-bandwidth", "0.05"]);
    }
    let mut migrating = Some(std::thread::spawn(move || run_command(cmd, &Opts::default())));
    let mut m = None;
    if c.during_copy {
        std::thread::sleep(Duration::from_millis(1500));
    } else {
        let r = migrating.take().unwrap().join().unwrap();
        if r.status != 0 {
            return Observed { outcome: None, detail: format!("the move failed: {}", r.stderr.trim()), ok: false };
        }
        m = Some(r);
        home.wait_for("a round away", Duration::from_secs(30), |o, _| o.contains("round 15 of"));
    }
    let cut = Instant::now();
    ns.cut();
    if c.brief {
        std::thread::sleep(Duration::from_secs(1));
        ns.mend();
    }
    let mut detail = String::new();
    let m = match m {
        Some(m) => m,
        None => {
            let r = migrating.take().unwrap().join().unwrap();
            detail = format!(
                "; migrate {} after {:.1} s",
                if r.status == 0 { "ok" } else { "failed" },
                cut.elapsed().as_secs_f64()
            );
            r
        }
    };
    let answer: serde_json::Value = serde_json::from_str(m.stdout.lines().next().unwrap_or("")).unwrap_or_default();
    let moved = answer["result"] == "ok";
    let who = if c.during_copy { "destination" } else { "source" };
    let mut v = Verdict::within(home, vec![(who, dst)], native, !c.during_copy, false, Duration::from_secs(90));
    if !c.during_copy && !c.brief {
        detail += &format!("; home ended {:.1} s after the cut", (v.home_ended - cut).as_secs_f64());
    }
    let out = std::fs::read(dir.join("out.txt")).ok();
    if v.outcome.is_some_and(|o| matches!(o, Outcome::Stayed | Outcome::Moved)) && out.as_deref() != Some(native_out) {
        v.detail += "; but out.txt differs from the native run's";
        v.outcome = None;
    }
    if c.during_copy && v.outcome.is_some() && (v.outcome == Some(Outcome::Moved)) != moved {
        v.detail += "; but migrate said otherwise";
        v.outcome = None;
    }
    let ok = v.outcome.is_some_and(|o| c.expected().contains(&o));
    let detail = match format!("{detail}{}", v.detail).trim_start_matches("; ") {
        "" => "the job's output and files are the native run's".to_string(),
        d => d.to_string(),
    };
    Observed { outcome: v.outcome, detail, ok }
}

fn run_black_holes(cases: &[BlackHole]) -> Vec<(BlackHole, Observed)> {
    if !mosvm_tests::emulated::need_root() {
        return Vec::new();
    }
    let (native, out) = homework_native_of("black-hole-native", HOLE_ROUNDS);
    run_set("", cases, |c, n| run_black_hole(c, &native, &out, n))
}

/// A case of one of the sets: its name, what the design promises, and
/// its cells in the set's table.
trait Scenario: Copy {
    fn name(&self) -> String;
    fn expected(&self) -> Vec<Outcome>;
    fn cells(&self) -> Vec<String> {
        vec![self.name()]
    }
}

impl Scenario for Case {
    fn name(&self) -> String {
        Case::name(self)
    }
    fn expected(&self) -> Vec<Outcome> {
        Case::expected(self)
    }
    fn cells(&self) -> Vec<String> {
        let at = if self.away { "away" } else { "home" };
        vec![at.into(), self.phase.label().into(), self.fault.label().into()]
    }
}

impl Scenario for LinkCase {
    fn name(&self) -> String {
        LinkCase::name(self)
    }
    fn expected(&self) -> Vec<Outcome> {
        LinkCase::expected(self)
    }
}

impl Scenario for DaemonPhase {
    fn name(&self) -> String {
        DaemonPhase::name(*self).into()
    }
    fn expected(&self) -> Vec<Outcome> {
        DaemonPhase::expected(*self)
    }
}

/// Runs `cases` one after another (moves compete for the two cores),
/// saying how each came out.
fn run_set<C: Scenario>(what: &str, cases: &[C], run: impl Fn(&C, usize) -> Observed) -> Vec<(C, Observed)> {
    let _l = migration_lock();
    cases
        .iter()
        .enumerate()
        .map(|(n, c)| {
            let t = Instant::now();
            let o = run(c, n);
            eprintln!(
                "{} {what}{}: {} ({}; {:.1} s)",
                if o.ok { "ok  " } else { "FAIL" },
                c.name(),
                o.outcome.map_or("?", |o| o.label()),
                o.detail,
                t.elapsed().as_secs_f64()
            );
            (*c, o)
        })
        .collect()
}

fn run_cases(cases: &[Case]) -> Vec<(Case, Observed)> {
    let native = native(&image("mem"), &JOB, &Opts::default());
    run_set("", cases, |c, n| run_case(c, &native, n))
}

fn run_link_cases(cases: &[LinkCase]) -> Vec<(LinkCase, Observed)> {
    let (native, out) = homework_native("link-fault-native");
    run_set("deputy link: ", cases, |c, n| run_link_case(c, &native, &out, n))
}

fn run_daemon_cases(phases: &[DaemonPhase]) -> Vec<(DaemonPhase, Observed)> {
    let (native, out) = homework_native("daemon-fault-native");
    run_set("destination daemon killed ", phases, |p, n| run_daemon_case(*p, &native, &out, n))
}

/// A set's table: `columns` name the case's cells.
fn table<C: Scenario>(columns: &[&str], results: &[(C, Observed)]) -> String {
    let head: Vec<&str> = ["#"].iter().chain(columns).chain(&["expected", "observed", "detail"]).copied().collect();
    let mut s = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    for (i, (c, o)) in results.iter().enumerate() {
        let exp: Vec<&str> = c.expected().iter().map(|o| o.label()).collect();
        s += &format!(
            "| {} | {} | {} | {}{} | {} |\n",
            i + 1,
            c.cells().join(" | "),
            exp.join(", or "),
            if o.ok { "" } else { "**FAIL** " },
            o.outcome.map_or("none", |o| o.label()),
            o.detail.replace('|', "/")
        );
    }
    s
}

/// The cases of a set that did not come out as expected, by name.
fn failed<C: Scenario>(results: &[(C, Observed)]) -> Vec<String> {
    results.iter().filter(|(_, o)| !o.ok).map(|(c, o)| format!("{}: {}", c.name(), o.detail)).collect()
}

fn check(failures: Vec<String>, cases: usize) {
    assert!(failures.is_empty(), "{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
}

/// The fast subset: one case of each fault, at the phases where they
/// matter most.
#[test]
fn fault_matrix_fast_subset() {
    if !require_kvm("fault_matrix_fast_subset") {
        return;
    }
    let cases = [
        Case { away: false, phase: Phase::FirstRound, fault: Fault::Cut },
        Case { away: false, phase: Phase::LaterRounds, fault: Fault::Corrupt },
        Case { away: false, phase: Phase::FinalState, fault: Fault::Truncate },
        Case { away: false, phase: Phase::BeforeAck, fault: Fault::Cut },
        Case { away: false, phase: Phase::LaterRounds, fault: Fault::KillDestination },
        Case { away: false, phase: Phase::AfterAck, fault: Fault::KillDestination },
        Case { away: true, phase: Phase::FirstRound, fault: Fault::KillSource },
        Case { away: true, phase: Phase::LaterRounds, fault: Fault::KillHome },
    ];
    let links = [
        LinkCase { fault: LinkFault::CorruptLength, from_home: false },
        LinkCase { fault: LinkFault::Partition, from_home: false },
    ];
    let results = run_cases(&cases);
    let link_results = run_link_cases(&links);
    let daemon_results = run_daemon_cases(&[DaemonPhase::DuringCopy]);
    let hole_results = run_black_holes(&[BLACK_HOLES[0], BLACK_HOLES[2]]);
    let mut failures = failed(&results);
    failures.extend(failed(&link_results));
    failures.extend(failed(&daemon_results));
    failures.extend(failed(&hole_results));
    check(failures, results.len() + link_results.len() + daemon_results.len() + hole_results.len());
}

/// `make faults`: every case; the table goes to MOSVM_FAULTS_REPORT.
#[test]
#[ignore = "run by make faults"]
fn fault_matrix() {
    if !require_kvm("fault_matrix") {
        return;
    }
    // MOSVM_FAULTS_ONLY=TEXT: the cases whose name holds TEXT (no report).
    let only = std::env::var("MOSVM_FAULTS_ONLY").ok();
    let cases: Vec<Case> =
        all_cases().into_iter().filter(|c| only.as_ref().is_none_or(|o| c.name().contains(o.as_str()))).collect();
    let links: Vec<LinkCase> =
        link_cases().into_iter().filter(|c| only.as_ref().is_none_or(|o| c.name().contains(o.as_str()))).collect();
    let daemon_phases: Vec<DaemonPhase> =
        DAEMON_PHASES.into_iter().filter(|p| only.as_ref().is_none_or(|o| p.name().contains(o.as_str()))).collect();
    let results = run_cases(&cases);
    let link_results = run_link_cases(&links);
    let daemon_results = run_daemon_cases(&daemon_phases);
    let holes: Vec<BlackHole> =
        BLACK_HOLES.into_iter().filter(|c| only.as_ref().is_none_or(|o| c.name().contains(o.as_str()))).collect();
    let hole_results = run_black_holes(&holes);
    let total = results.len() + link_results.len() + daemon_results.len() + hole_results.len();
    if let Some(path) = std::env::var_os("MOSVM_FAULTS_REPORT").filter(|_| only.is_none()) {
        let ok = results.iter().filter(|(_, o)| o.ok).count()
            + link_results.iter().filter(|(_, o)| o.ok).count()
            + daemon_results.iter().filter(|(_, o)| o.ok).count()
            + hole_results.iter().filter(|(_, o)| o.ok).count();
        let date = std::process::Command::new("date").arg("-u").arg("+%Y-%m-%d").output().unwrap();
        let text = format!(
            "{} cases, {ok} as expected ({}, {} cores).\n\n### Faults during a move\n\n{}\n\
             ### Faults on the deputy link\n\n\
             The job (`homework`: its input, output file and stdout all served by its deputy while \
             away) has its deputy behind a proxy (`--home-advertise`) that strikes every link a body \
             opens to home.\n\n{}\n\
             ### The destination's daemon killed\n\n\
             Moves between daemons (`mosvm migrate JOB --to h3` at the job's home h2, 100 kB/s so the \
             stream lasts), h3's daemon killed with SIGKILL; checked: the job's output and files, its \
             record at home (status, number of moves) and that no body process is left at h3.\n\n{}\n\
             ### A destination's network gone\n\n\
             The destination runs in a network namespace of its own (a veth pair); its interface goes \
             down, so packets vanish without a reset (a pulled cable), for good or for one second. The \
             move is capped at 50 kB/s so that it lasts; the job is `homework`.\n\n{}",
            total,
            String::from_utf8_lossy(&date.stdout).trim(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            table(&["where", "phase", "fault"], &results),
            table(&["fault on the deputy link"], &link_results),
            table(&["kill -9 of the destination's daemon"], &daemon_results),
            table(&["the destination's network"], &hole_results)
        );
        let (begin, end) = ("<!-- fault matrix: begin (make faults) -->", "<!-- fault matrix: end -->");
        write_section(&PathBuf::from(path), "Fault matrix", begin, end, &text);
    }
    let mut failures = failed(&results);
    failures.extend(failed(&link_results));
    failures.extend(failed(&daemon_results));
    failures.extend(failed(&hole_results));
    check(failures, total);
}
