//! A compact, versioned byte encoding of [`Message`] for the daemon to send
//! between hosts (it still owns framing, authentication and sockets).
//!
//! Layout (little endian): magic `b'B'`, version, message type, body.
//! An entry is 27 bytes: host u64, age in ms u32, runnable f32, cores u16,
//! speed f32, free memory in MiB u32, flags u8 (bit 0: accepting, bit 1:
//! seeking). A gossip
//! message with the default window of 8 entries is 3 + 2 + 8 * 27 = 221
//! bytes, whatever the cluster size.

use crate::gossip::{LoadInfo, WireEntry};
use crate::msg::{Message, MigrateReply, MigrateRequest, MoveKind};

const MAGIC: u8 = b'B';
/// Encoding version; decoders reject others.
pub const VERSION: u8 = 1;
const T_GOSSIP: u8 = 1;
const T_REQUEST: u8 = 2;
const T_REPLY: u8 = 3;
const T_CANCEL: u8 = 4;
/// Bytes per encoded entry.
pub const ENTRY_BYTES: usize = 27;
/// At most this many entries per gossip message.
pub const MAX_ENTRIES: usize = 64;
/// Reasons longer than this are cut (at a character boundary).
pub const MAX_REASON: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message truncated")]
    Truncated,
    #[error("not a balancer message (bad magic byte {0:#04x})")]
    BadMagic(u8),
    #[error("unsupported balancer message version {0}")]
    Version(u8),
    #[error("unknown balancer message type {0}")]
    UnknownType(u8),
    #[error("unknown move kind {0}")]
    UnknownKind(u8),
    #[error("too many entries ({0})")]
    TooManyEntries(usize),
    #[error("reason is not UTF-8")]
    BadUtf8,
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

fn put_entry(out: &mut Vec<u8>, e: &WireEntry) {
    out.extend_from_slice(&e.host.to_le_bytes());
    let age_ms = (e.age.max(0.0) * 1000.0).round().min(u32::MAX as f64) as u32;
    out.extend_from_slice(&age_ms.to_le_bytes());
    out.extend_from_slice(&(e.info.runnable as f32).to_le_bytes());
    out.extend_from_slice(&e.info.cores.to_le_bytes());
    out.extend_from_slice(&(e.info.speed as f32).to_le_bytes());
    let mib = (e.info.free_mem >> 20).min(u32::MAX as u64) as u32;
    out.extend_from_slice(&mib.to_le_bytes());
    out.push(u8::from(e.info.accepting) | (u8::from(e.info.seeking) << 1));
}

fn kind_byte(k: MoveKind) -> u8 {
    match k {
        MoveKind::Load => 0,
        MoveKind::Memory => 1,
        MoveKind::Drain => 2,
    }
}

fn cut_reason(s: &str) -> &str {
    if s.len() <= MAX_REASON {
        return s;
    }
    let mut end = MAX_REASON;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Encode a message.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(msg));
    out.push(MAGIC);
    out.push(VERSION);
    match msg {
        Message::Gossip { entries, want_reply } => {
            out.push(T_GOSSIP);
            out.push(u8::from(*want_reply));
            let n = entries.len().min(MAX_ENTRIES);
            out.push(n as u8);
            for e in &entries[..n] {
                put_entry(&mut out, e);
            }
        }
        Message::MigrateRequest(r) => {
            out.push(T_REQUEST);
            out.extend_from_slice(&r.job.to_le_bytes());
            out.push(kind_byte(r.kind));
            out.extend_from_slice(&(r.job_load as f32).to_le_bytes());
            out.extend_from_slice(&r.memory.to_le_bytes());
            out.extend_from_slice(&(r.source_rate as f32).to_le_bytes());
            out.extend_from_slice(&(r.source_load as f32).to_le_bytes());
            out.extend_from_slice(&(r.assumed_target_load as f32).to_le_bytes());
            put_entry(&mut out, &r.source);
        }
        Message::MigrateReply(r) => {
            out.push(T_REPLY);
            out.extend_from_slice(&r.job.to_le_bytes());
            out.push(u8::from(r.accepted) | (u8::from(r.hint.is_some()) << 1));
            put_entry(&mut out, &r.target);
            if let Some(h) = &r.hint {
                put_entry(&mut out, h);
            }
            let reason = cut_reason(&r.reason);
            out.push(reason.len() as u8);
            out.extend_from_slice(reason.as_bytes());
        }
        Message::Cancel { job } => {
            out.push(T_CANCEL);
            out.extend_from_slice(&job.to_le_bytes());
        }
    }
    out
}

/// Size of [`encode`]'s output, without encoding.
pub fn encoded_len(msg: &Message) -> usize {
    3 + match msg {
        Message::Gossip { entries, .. } => 2 + entries.len().min(MAX_ENTRIES) * ENTRY_BYTES,
        Message::MigrateRequest(_) => 8 + 1 + 4 + 8 + 4 + 4 + 4 + ENTRY_BYTES,
        Message::MigrateReply(r) => {
            8 + 1 + ENTRY_BYTES * (1 + usize::from(r.hint.is_some())) + 1 + cut_reason(&r.reason).len()
        }
        Message::Cancel { .. } => 8,
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() - self.pos < n {
            return Err(DecodeError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn f32(&mut self) -> Result<f64, DecodeError> {
        let v = f32::from_le_bytes(self.take(4)?.try_into().unwrap()) as f64;
        Ok(if v.is_finite() { v } else { 0.0 })
    }
    fn entry(&mut self) -> Result<WireEntry, DecodeError> {
        let host = self.u64()?;
        let age = self.u32()? as f64 / 1000.0;
        let runnable = self.f32()?.max(0.0);
        let cores = self.u16()?;
        let speed = self.f32()?.max(0.0);
        let free_mem = (self.u32()? as u64) << 20;
        let flags = self.u8()?;
        Ok(WireEntry {
            host,
            age,
            info: LoadInfo { runnable, cores, speed, free_mem, accepting: flags & 1 == 1, seeking: flags & 2 == 2 },
        })
    }
}

/// Decode a message; rejects anything it does not fully understand.
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let magic = r.u8()?;
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let msg = match r.u8()? {
        T_GOSSIP => {
            let want_reply = r.u8()? & 1 == 1;
            let n = r.u8()? as usize;
            if n > MAX_ENTRIES {
                return Err(DecodeError::TooManyEntries(n));
            }
            let entries = (0..n).map(|_| r.entry()).collect::<Result<_, _>>()?;
            Message::Gossip { entries, want_reply }
        }
        T_REQUEST => {
            let job = r.u64()?;
            let kind = match r.u8()? {
                0 => MoveKind::Load,
                1 => MoveKind::Memory,
                2 => MoveKind::Drain,
                k => return Err(DecodeError::UnknownKind(k)),
            };
            let job_load = r.f32()?;
            let memory = r.u64()?;
            let source_rate = r.f32()?;
            let source_load = r.f32()?;
            let assumed_target_load = r.f32()?;
            let source = r.entry()?;
            Message::MigrateRequest(MigrateRequest {
                job,
                kind,
                job_load,
                memory,
                source,
                source_rate,
                source_load,
                assumed_target_load,
            })
        }
        T_REPLY => {
            let job = r.u64()?;
            let flags = r.u8()?;
            let target = r.entry()?;
            let hint = if flags & 2 == 2 { Some(r.entry()?) } else { None };
            let n = r.u8()? as usize;
            let reason = std::str::from_utf8(r.take(n)?).map_err(|_| DecodeError::BadUtf8)?.to_string();
            Message::MigrateReply(MigrateReply { job, accepted: flags & 1 == 1, reason, target, hint })
        }
        T_CANCEL => Message::Cancel { job: r.u64()? },
        t => return Err(DecodeError::UnknownType(t)),
    };
    if r.pos != buf.len() {
        return Err(DecodeError::Trailing(buf.len() - r.pos));
    }
    Ok(msg)
}

/// One message of each kind, every field set: for round trips and as
/// the fuzz target's seeds.
pub fn samples() -> Vec<Message> {
    let e = |host: u64| WireEntry {
        host,
        age: 1.25,
        info: LoadInfo { runnable: 3.5, cores: 4, speed: 1.5, free_mem: 3 << 30, accepting: true, seeking: true },
    };
    vec![
        Message::Gossip { entries: (0..8).map(e).collect(), want_reply: true },
        Message::MigrateRequest(MigrateRequest {
            job: 77,
            kind: MoveKind::Memory,
            job_load: 1.0,
            memory: 64 << 20,
            source: e(3),
            source_rate: 0.5,
            source_load: 2.0,
            assumed_target_load: 1.0,
        }),
        Message::MigrateReply(MigrateReply {
            job: 77,
            accepted: false,
            reason: "no longer worth it".into(),
            target: e(4),
            hint: Some(e(5)),
        }),
        Message::MigrateReply(MigrateReply { job: 78, accepted: true, reason: "ok".into(), target: e(4), hint: None }),
        Message::Cancel { job: 9 },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(host: u64) -> WireEntry {
        WireEntry {
            host,
            age: 1.25,
            info: LoadInfo { runnable: 3.5, cores: 4, speed: 1.5, free_mem: 3 << 30, accepting: true, seeking: true },
        }
    }

    #[test]
    fn round_trip_every_message() {
        let msgs = samples();
        for m in msgs {
            let b = encode(&m);
            assert_eq!(b.len(), encoded_len(&m));
            assert_eq!(decode(&b).unwrap(), m);
        }
    }

    #[test]
    fn gossip_size_is_constant() {
        let m = Message::Gossip { entries: (0..8).map(e).collect(), want_reply: false };
        assert_eq!(encode(&m).len(), 221);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0, 1, 1]), Err(DecodeError::BadMagic(0)));
        assert_eq!(decode(&[b'B', 9, 1]), Err(DecodeError::Version(9)));
        assert_eq!(decode(&[b'B', VERSION, 99]), Err(DecodeError::UnknownType(99)));
        let mut b = encode(&Message::Cancel { job: 1 });
        b.push(0);
        assert_eq!(decode(&b), Err(DecodeError::Trailing(1)));
        b.truncate(5);
        assert_eq!(decode(&b), Err(DecodeError::Truncated));
    }

    #[test]
    fn long_reasons_are_cut_at_a_char_boundary() {
        let m = Message::MigrateReply(MigrateReply {
            job: 1,
            accepted: true,
            reason: "é".repeat(200),
            target: e(1),
            hint: None,
        });
        match decode(&encode(&m)).unwrap() {
            Message::MigrateReply(r) => {
                assert!(r.reason.len() <= MAX_REASON);
                assert!(r.reason.chars().all(|c| c == 'é'));
            }
            _ => panic!(),
        }
    }
}
