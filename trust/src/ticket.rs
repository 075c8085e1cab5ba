//! Move tickets: a one-time secret that names one move. The destination's
//! daemon makes one when it prepares a body for a job; the source presents
//! it at the start of the migration stream; the prepared receiver takes no
//! other stream. A certificate says a peer belongs to the cluster; the
//! ticket says it is the move this receiver was started for.

use std::fmt;
use std::str::FromStr;

use ring::rand::{SecureRandom, SystemRandom};

pub const TICKET_LEN: usize = 16;
/// The environment variable that gives a prepared receiver (`mosvm
/// receive`) its move's ticket, in hex: not its command line, which every
/// user of the host can read.
pub const MOVE_TICKET_ENV: &str = "MOSVM_MOVE_TICKET";

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ticket([u8; TICKET_LEN]);

#[derive(Debug, thiserror::Error)]
#[error("a move ticket is {} hex digits", TICKET_LEN * 2)]
pub struct BadTicket;

impl Ticket {
    /// A fresh ticket from the system's random source.
    pub fn new() -> Ticket {
        let mut t = [0u8; TICKET_LEN];
        SystemRandom::new().fill(&mut t).expect("the system's random source works");
        Ticket(t)
    }

    pub fn from_bytes(b: [u8; TICKET_LEN]) -> Ticket {
        Ticket(b)
    }

    pub fn bytes(&self) -> &[u8; TICKET_LEN] {
        &self.0
    }

    /// Whether `presented` is this ticket, in time that does not depend
    /// on where the two differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        presented.len() == TICKET_LEN && self.0.iter().zip(presented).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Default for Ticket {
    fn default() -> Self {
        Ticket::new()
    }
}

impl FromStr for Ticket {
    type Err = BadTicket;

    fn from_str(s: &str) -> Result<Ticket, BadTicket> {
        let s = s.as_bytes();
        if s.len() != TICKET_LEN * 2 {
            return Err(BadTicket);
        }
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8).ok_or(BadTicket);
        let mut t = [0u8; TICKET_LEN];
        for (i, b) in t.iter_mut().enumerate() {
            *b = digit(s[2 * i])? << 4 | digit(s[2 * i + 1])?;
        }
        Ok(Ticket(t))
    }
}

/// Never printed: a ticket in a log would be a ticket for whoever reads it.
impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ticket(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip_and_match_only_themselves() {
        let t = Ticket::new();
        let back: Ticket = t.to_hex().parse().unwrap();
        assert_eq!(back, t);
        assert!(t.matches(t.bytes()));
        let mut other = *t.bytes();
        other[TICKET_LEN - 1] ^= 1;
        assert!(!t.matches(&other));
        assert!(!t.matches(&t.bytes()[..TICKET_LEN - 1]));
        assert_ne!(Ticket::new(), t);
        assert!("zz".parse::<Ticket>().is_err());
        assert!("g".repeat(TICKET_LEN * 2).parse::<Ticket>().is_err());
        assert_eq!(format!("{t:?}"), "Ticket(..)");
    }
}
