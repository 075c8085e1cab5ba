//! The harness of the peer wire's fuzz target (`fuzz/`, `make fuzz`) and
//! its short stable run (`tests/fuzz.rs`): any bytes, as a datagram or a
//! stream frame from another host, must decode or be refused, never
//! panic.

use crate::wire::{self, Kind};

/// How many decodings took the input (0: refused at the frame). The
/// input goes in as it is, then with its checksum made right, so that
/// mutated payloads reach the message decoders too.
pub fn peer_wire(data: &[u8]) -> usize {
    let mut fixed = data.to_vec();
    wire::fix_checksum(&mut fixed);
    decode(data) + decode(&fixed)
}

fn decode(data: &[u8]) -> usize {
    let Ok((kind, payload)) = wire::decode_datagram(data) else { return 0 };
    let p = &payload[..];
    let mut n = 1;
    // Every message of every kind, whatever the kind says: a peer may lie.
    n += wire::decode_msg::<wire::Status>(kind, p).is_ok() as usize;
    n += wire::decode_msg::<wire::Leave>(kind, p).is_ok() as usize;
    n += wire::decode_msg::<wire::Ping>(kind, p).is_ok() as usize;
    n += wire::decode_msg::<wire::Pong>(kind, p).is_ok() as usize;
    n += wire::decode_msg::<wire::PrepareBody>(kind, p).is_ok() as usize;
    n += wire::decode_msg::<wire::PrepareReply>(kind, p).is_ok() as usize;
    n += wire::decode_msg::<wire::MoveBody>(kind, p).is_ok() as usize;
    n += wire::decode_msg::<wire::MoveReply>(kind, p).is_ok() as usize;
    n += wire::decode_msg::<wire::BalanceMove>(kind, p).is_ok() as usize;
    n += wire::decode_msg::<wire::HostOp>(kind, p).is_ok() as usize;
    n += wire::decode_msg::<wire::HostOpReply>(kind, p).is_ok() as usize;
    n += wire::decode_msg::<wire::Overview>(kind, p).is_ok() as usize;
    n += wire::decode_msg::<wire::OverviewReply>(kind, p).is_ok() as usize;
    n += wire::decode_msg::<wire::Progress>(kind, p).is_ok() as usize;
    n += wire::decode_msg::<wire::ProgressReply>(kind, p).is_ok() as usize;
    if let Ok(env) = wire::decode_msg::<wire::BalanceEnvelope>(kind, p) {
        n += 1 + balancer::wire::decode(&env.msg).is_ok() as usize;
    }
    n
}

/// Seeds: one well-formed frame of each kind.
pub fn seeds() -> Vec<Vec<u8>> {
    use crate::membership::HostId;
    let id = HostId { name: "h1".into(), addr: "127.0.0.1:7077".parse().unwrap(), incarnation: 7 };
    let job = wire::JobRef { home: "h1".into(), id: 3 };
    vec![
        wire::encode_msg(Kind::Leave, &wire::Leave { from: id.clone() }),
        wire::encode_msg(Kind::Ping, &wire::Ping { from: "x".into() }),
        wire::encode_msg(Kind::Pong, &wire::Pong { id: id.clone() }),
        wire::encode_msg(
            Kind::PrepareBody,
            &wire::PrepareBody {
                from: id.clone(),
                job: job.clone(),
                mem_bytes: 1 << 20,
                owner_uid: 0,
                arrival: Default::default(),
                ticket: true,
            },
        ),
        wire::encode_msg(
            Kind::MoveBody,
            &wire::MoveBody {
                from: id.clone(),
                job: job.clone(),
                to: wire::Target::Home,
                opts: wire::MoveOptions::default(),
                arrival: Default::default(),
            },
        ),
        wire::encode_msg(Kind::Overview, &wire::Overview { from: id, moves: 4 }),
        wire::encode_msg(
            Kind::Balance,
            &wire::BalanceEnvelope {
                name: "h1".into(),
                boot: 1,
                seq: 2,
                msg: balancer::wire::encode(&balancer::Message::Gossip { entries: vec![], want_reply: true }),
            },
        ),
    ]
}
