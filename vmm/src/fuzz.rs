//! Harnesses for the parsers that read what another host, a peer process
//! or a file hands the VMM: the fuzz targets (`fuzz/`, `make fuzz`) and
//! their short stable runs (`tests/fuzz.rs`) call them with any bytes.
//! Each must return, never panic, never write outside the guest's memory;
//! each returns how much of its input it took (records, frames, loaded
//! segments), so that a test can tell a harness that refuses everything
//! from one that reaches the parsers.

use std::path::Path;

use crate::elf::Program;
use crate::memory::GuestRam;
use crate::migration::wire::{self, Record, RecordReader};
use crate::site::proto;

/// Small guest memory: a page record past its end must be refused.
const RAM: u64 = 16 << 20;

fn with_ram(f: impl FnOnce(&GuestRam)) {
    thread_local! {
        static RAMS: GuestRam = GuestRam::new(RAM).expect("16 MiB of guest memory");
    }
    RAMS.with(f);
}

/// A migration stream or snapshot file, as a receiver reads it: the
/// header, then records (pages into guest memory), and the payloads of
/// the small ones decoded as the receiver decodes them.
pub fn migration_stream(data: &[u8]) -> usize {
    let mut r = data;
    if wire::read_header(&mut r).is_err() {
        // The state decoder straight away too: it is reached only late
        // in a stream.
        return crate::state::VmState::from_bytes(data).is_ok() as usize;
    }
    let mut taken = 1;
    with_ram(|ram| {
        let mut reader = RecordReader::new(r);
        for _ in 0..100_000 {
            let record = reader.next(Some(ram));
            if record.is_ok() {
                taken += 1;
            }
            match record {
                Ok(Record::Small(wire::TAG_END, _)) | Err(_) => break,
                Ok(Record::Small(wire::TAG_STATE, s)) => {
                    let _ = crate::state::VmState::from_bytes(&s);
                }
                Ok(Record::Small(wire::TAG_HELLO, h)) => {
                    let _ = postcard::from_bytes::<crate::migration::Hello>(&h);
                }
                Ok(Record::Small(wire::TAG_HOME, h)) => {
                    let _ = postcard::from_bytes::<crate::site::HomeLink>(&h);
                }
                Ok(_) => {}
            }
        }
    });
    taken
}

/// What a body sends its deputy (and a deputy its body): a link's hello,
/// then frames of calls, replies and events.
pub fn deputy_proto(data: &[u8]) -> usize {
    // As it is, then with every frame's checksum made right.
    let mut fixed = data.to_vec();
    let mut at = 0;
    while at + 8 <= fixed.len() {
        let len =
            (u32::from_le_bytes(fixed[at..at + 4].try_into().expect("4 bytes")) as usize).min(fixed.len() - at - 8);
        let crc = crc32c::crc32c(&fixed[at + 8..at + 8 + len]);
        fixed[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
        fixed[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at += 8 + len;
    }
    frames(data) + frames(&fixed)
}

fn frames(data: &[u8]) -> usize {
    let mut r = data;
    let mut taken = proto::read_hello(&mut r).is_ok() as usize;
    let mut r = data;
    let mut buf = Vec::new();
    for _ in 0..10_000 {
        if proto::read_frame(&mut r, &mut buf).is_err() {
            break;
        }
        taken += 1 + decode_all(&buf);
    }
    taken + decode_all(data)
}

fn decode_all(b: &[u8]) -> usize {
    let mut n = 0;
    if let Ok(c) = proto::decode::<proto::Call>(b) {
        let _ = c.kind();
        n += 1;
    }
    n += proto::decode::<proto::Reply>(b).is_ok() as usize;
    n += proto::decode::<proto::Event>(b).is_ok() as usize;
    n += proto::decode::<proto::Welcome>(b).is_ok() as usize;
    n += proto::decode::<proto::Claim>(b).is_ok() as usize;
    n + proto::decode::<crate::site::SiteState>(b).is_ok() as usize
}

/// A program file: parsed, placed and loaded into guest memory as `exec`
/// does, also as the interpreter of itself.
pub fn elf(data: &[u8]) -> usize {
    let Ok(p) = Program::parse(Path::new("fuzz"), data) else { return 0 };
    let _ = p.interp();
    let _ = p.check_interp(&p);
    let mut taken = 1;
    with_ram(|ram| {
        if let Ok((base, _)) = p.place(None, ram.size()) {
            taken += p.load(ram, data, base).is_ok() as usize;
        }
        if let Ok((_, Some(ibase))) = p.place(Some(&p), ram.size()) {
            taken += p.load(ram, data, ibase).is_ok() as usize;
        }
    });
    taken
}

/// Seeds for `deputy_proto`: a hello, then a few calls and answers.
pub fn deputy_seeds() -> Vec<Vec<u8>> {
    use proto::{Call, Event, Hello, LinkKind, Reply, Welcome};
    let mut out = Vec::new();
    let hello =
        Hello { version: proto::VERSION, token: [7; 16], generation: 1, kind: LinkKind::Calls, body: "h2".into() };
    let mut v = Vec::new();
    proto::write_hello(&mut v, &hello).expect("writing to memory");
    out.push(v.clone());
    let mut buf = Vec::new();
    let calls = [
        Call::Openat { dirfd: -100, path: b"/etc/passwd", flags: 0, mode: 0 },
        Call::Write { fd: 1, data: b"hello", offset: -1 },
        Call::Poll { fds: &[0, 0, 0, 0, 1, 0, 0, 0], timeout_ms: 10 },
        Call::EpollWait { epfd: 3, max: 4, timeout_ms: -1 },
        Call::Exit { status: 3, message: "bye" },
    ];
    for c in &calls {
        proto::write_frame(&mut v, &mut buf, c).expect("writing to memory");
        let mut one = Vec::new();
        proto::write_frame(&mut one, &mut buf, c).expect("writing to memory");
        out.push(one);
    }
    out.push(v);
    let mut one = Vec::new();
    proto::write_frame(&mut one, &mut buf, &Reply { ret: 5, aux: 0, signals: 1, data: b"hello" }).expect("memory");
    proto::write_frame(&mut one, &mut buf, &Event::Signal(1 << 9)).expect("memory");
    proto::write_frame(&mut one, &mut buf, &Welcome::Accepted).expect("memory");
    out.push(one);
    out
}
