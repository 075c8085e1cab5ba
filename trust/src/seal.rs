//! Sealed datagrams: gossip and load messages travel over UDP, where TLS
//! does not apply, so each is sealed with AES-256-GCM under the cluster's
//! gossip key (as Serf and Consul encrypt gossip). A sealed datagram is
//! `nonce (12) | ciphertext | tag (16)`; the plaintext starts with the
//! sender's clock (ms since the epoch), and one older than `MAX_AGE` (or
//! from too far ahead) is refused, so a recorded datagram cannot be
//! replayed later.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes a seal adds: nonce, clock, tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + 8 + 16;
const MAX_AGE: Duration = Duration::from_secs(30);
/// Binds the ciphertext to its use.
const AAD: &[u8] = b"mosvm gossip v1";

pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unsealed {
    #[error("shorter than a sealed datagram")]
    Short,
    #[error("not sealed with this cluster's key (or altered)")]
    Forged,
    #[error("sealed {0} s away from this host's clock")]
    Stale(i64),
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key"));
        Sealer { key, rng: SystemRandom::new() }
    }

    /// Seals `plain` into `out` (cleared first; kept for reuse).
    pub fn seal(&self, plain: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        // A random 96-bit nonce per datagram: gossip sends far fewer than
        // the 2^32 datagrams under one key where collisions begin to matter.
        self.rng.fill(&mut nonce).expect("the system random source");
        out.clear();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&now_ms().to_le_bytes());
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut out[NONCE_LEN..])
            .expect("AES-GCM seals any length a datagram has");
        out.extend_from_slice(tag.as_ref());
    }

    /// Opens a sealed datagram in place; returns its plaintext.
    pub fn open<'a>(&self, datagram: &'a mut [u8]) -> Result<&'a [u8], Unsealed> {
        if datagram.len() < SEAL_OVERHEAD {
            return Err(Unsealed::Short);
        }
        let (nonce, body) = datagram.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unsealed::Short)?;
        let plain = self.key.open_in_place(nonce, Aad::from(AAD), body).map_err(|_| Unsealed::Forged)?;
        let sent = i64::from_le_bytes(plain[..8].try_into().expect("8 bytes"));
        let age = now_ms() - sent;
        if age.unsigned_abs() > MAX_AGE.as_millis() as u64 {
            return Err(Unsealed::Stale(age / 1000));
        }
        Ok(&plain[8..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let s = Sealer::new(&[7; 32]);
        let mut out = Vec::new();
        s.seal(b"hello", &mut out);
        assert_eq!(out.len(), 5 + SEAL_OVERHEAD);
        let mut d = out.clone();
        assert_eq!(s.open(&mut d).unwrap(), b"hello");
        // Another key, any altered byte, or a short datagram: refused.
        assert_eq!(Sealer::new(&[8; 32]).open(&mut out.clone()), Err(Unsealed::Forged));
        for i in 0..out.len() {
            let mut d = out.clone();
            d[i] ^= 0x20;
            assert_eq!(s.open(&mut d), Err(Unsealed::Forged), "byte {i}");
        }
        assert_eq!(s.open(&mut out[..SEAL_OVERHEAD - 1].to_vec()), Err(Unsealed::Short));
        // The same plaintext twice seals differently (fresh nonces).
        let mut again = Vec::new();
        s.seal(b"hello", &mut again);
        assert_ne!(again, out);
        // An empty message is fine.
        s.seal(b"", &mut again);
        assert_eq!(s.open(&mut again).unwrap(), b"");
    }

    #[test]
    fn stale_datagrams_are_refused() {
        let s = Sealer::new(&[7; 32]);
        // Build one sealed 60 s ago by hand.
        let nonce = [1u8; NONCE_LEN];
        let mut body = (now_ms() - 60_000).to_le_bytes().to_vec();
        body.extend_from_slice(b"old");
        let tag =
            s.key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut body).unwrap();
        let mut d = nonce.to_vec();
        d.extend_from_slice(&body);
        d.extend_from_slice(tag.as_ref());
        assert_eq!(s.open(&mut d), Err(Unsealed::Stale(60)));
    }
}
