//! The job's clocks.
//!
//! Wall-clock time is the host's. The monotonic clocks and the CPU-time
//! clocks are the host's plus an offset, so that a job moved to another host
//! keeps reading a clock that never goes backwards (the destination sets the
//! offsets from the source's last reading).

use crate::errno::Errno;

pub const NSEC_PER_SEC: i64 = 1_000_000_000;

/// A point in time as (seconds, nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: i64,
}

impl Timespec {
    pub fn from_nanos(ns: i64) -> Timespec {
        Timespec { sec: ns.div_euclid(NSEC_PER_SEC), nsec: ns.rem_euclid(NSEC_PER_SEC) }
    }

    pub fn as_nanos(self) -> i64 {
        self.sec.saturating_mul(NSEC_PER_SEC).saturating_add(self.nsec)
    }

    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0; 16];
        b[..8].copy_from_slice(&self.sec.to_le_bytes());
        b[8..].copy_from_slice(&self.nsec.to_le_bytes());
        b
    }

    /// Parses a struct timespec, rejecting out-of-range nanoseconds.
    pub fn from_bytes(b: &[u8]) -> Result<Timespec, Errno> {
        let sec = i64::from_le_bytes(b[..8].try_into().unwrap());
        let nsec = i64::from_le_bytes(b[8..16].try_into().unwrap());
        if !(0..NSEC_PER_SEC).contains(&nsec) || sec < 0 {
            return Err(Errno::EINVAL);
        }
        Ok(Timespec { sec, nsec })
    }
}

/// The host's wall-clock time in nanoseconds.
pub fn realtime_ns() -> i64 {
    host_now(libc::CLOCK_REALTIME)
}

fn host_now(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Clock {
    /// Added to the host's CLOCK_MONOTONIC (and its relatives).
    pub monotonic_offset: i64,
    /// Added to the vCPU thread's CPU time.
    pub cputime_offset: i64,
}

impl Clock {
    /// Reads clock `id` as the job sees it.
    pub fn now(&self, id: i32) -> Result<Timespec, Errno> {
        let ns = match id {
            libc::CLOCK_REALTIME | libc::CLOCK_REALTIME_COARSE | libc::CLOCK_TAI | libc::CLOCK_REALTIME_ALARM => {
                host_now(if id == libc::CLOCK_TAI { libc::CLOCK_TAI } else { libc::CLOCK_REALTIME })
            }
            libc::CLOCK_MONOTONIC
            | libc::CLOCK_MONOTONIC_RAW
            | libc::CLOCK_MONOTONIC_COARSE
            | libc::CLOCK_BOOTTIME
            | libc::CLOCK_BOOTTIME_ALARM => self.monotonic(),
            libc::CLOCK_PROCESS_CPUTIME_ID | libc::CLOCK_THREAD_CPUTIME_ID => self.cputime(),
            _ => return Err(Errno::EINVAL),
        };
        Ok(Timespec::from_nanos(ns))
    }

    pub fn resolution(&self, id: i32) -> Result<Timespec, Errno> {
        self.now(id)?;
        let coarse = matches!(id, libc::CLOCK_REALTIME_COARSE | libc::CLOCK_MONOTONIC_COARSE);
        Ok(Timespec::from_nanos(if coarse { 4_000_000 } else { 1 }))
    }

    pub fn monotonic(&self) -> i64 {
        host_now(libc::CLOCK_MONOTONIC) + self.monotonic_offset
    }

    pub fn cputime(&self) -> i64 {
        host_now(libc::CLOCK_THREAD_CPUTIME_ID) + self.cputime_offset
    }

    /// Host CLOCK_MONOTONIC time for a job monotonic time.
    pub fn to_host_monotonic(&self, ns: i64) -> i64 {
        ns - self.monotonic_offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_apply_and_clocks_advance() {
        let c = Clock { monotonic_offset: 1_000 * NSEC_PER_SEC, cputime_offset: 0 };
        let a = c.now(libc::CLOCK_MONOTONIC).unwrap();
        let host = Timespec::from_nanos(host_now(libc::CLOCK_MONOTONIC));
        assert!(a.sec >= host.sec + 999);
        let b = c.now(libc::CLOCK_MONOTONIC).unwrap();
        assert!(b >= a);
        assert!(c.now(12345).is_err());
        assert_eq!(Timespec::from_nanos(-1), Timespec { sec: -1, nsec: 999_999_999 });
        assert!(Timespec::from_bytes(&[0xff; 16]).is_err());
    }
}
