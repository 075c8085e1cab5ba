//! The job's clocks.
//!
//! The monotonic clock is a linear function of the TSC, computed the same
//! way here and in the job's vDSO (`agent::vdso`), so that a job reads
//! time without an exit and the VMM's deadlines agree with what it reads.
//! The guest's TSC is the host's (the vCPU's TSC offset is kept at 0).
//! Wall-clock time is the monotonic clock plus an offset that follows the
//! host's wall clock (slewed, never stepped back by a small amount). A
//! job moved to another host keeps reading a monotonic clock that never
//! goes backwards: the destination continues it from the source's last
//! reading plus the time the move took.
//!
//! Where the TSC cannot be trusted (the host does not use it as its own
//! clock source, or the TSC offset cannot be set) the clocks are the
//! host's plus an offset, and the vDSO makes real system calls.

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

/// The host's CLOCK_MONOTONIC in nanoseconds.
pub fn host_monotonic() -> i64 {
    host_now(libc::CLOCK_MONOTONIC)
}

fn host_now(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec
}

/// The host's TSC, read after the instructions before it (as the vDSO does).
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: lfence and rdtsc have no preconditions on x86-64.
    unsafe {
        core::arch::x86_64::_mm_lfence();
        core::arch::x86_64::_rdtsc()
    }
}

/// Is the TSC good for the job's clocks here: the host kernel keeps time
/// with it (so it is stable and synchronized across CPUs)?
pub fn host_uses_tsc() -> bool {
    // Read once per process: it is on the restore path of every move.
    static USES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USES.get_or_init(|| {
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .is_ok_and(|s| s.trim() == "tsc")
    })
}

/// How far the wall-clock offset may be slewed back per ns of monotonic
/// time (500 ppm, as adjtime); larger corrections step.
const SLEW_DIVISOR: i64 = 2000;
/// A host wall clock that went back by more than this was set back: step.
const STEP_BACK_NS: i64 = 100_000_000;
/// How often the wall-clock offset is compared with the host's.
const REAL_CHECK_NS: i64 = NSEC_PER_SEC;

/// The TSC-based clock: the parameters of the vvar page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscClock {
    pub tsc_base: u64,
    pub mono_base: i64,
    /// Nanoseconds per TSC cycle, 32.32 fixed point.
    pub mult: u64,
    /// Wall-clock time minus monotonic time.
    pub real_offset: i64,
    /// Monotonic time of the last comparison with the host's wall clock.
    pub real_checked: i64,
}

impl TscClock {
    /// A clock reading `monotonic` now, for a TSC of `tsc_khz`.
    pub fn new(tsc_khz: u32, monotonic: i64) -> Option<TscClock> {
        if tsc_khz == 0 {
            return None;
        }
        let mult = ((1_000_000u128 << 32) / tsc_khz as u128) as u64;
        Some(TscClock {
            tsc_base: rdtsc(),
            mono_base: monotonic,
            mult,
            real_offset: realtime_ns() - monotonic,
            real_checked: monotonic,
        })
    }

    /// The same arithmetic as the vDSO's.
    #[inline]
    pub fn monotonic_at(&self, tsc: u64) -> i64 {
        let cycles = tsc.saturating_sub(self.tsc_base);
        self.mono_base.wrapping_add(((cycles as u128 * self.mult as u128) >> 32) as u64 as i64)
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    /// The TSC-based clock, where the TSC is usable.
    pub tsc: Option<TscClock>,
    /// Otherwise: added to the host's CLOCK_MONOTONIC (and its relatives).
    pub monotonic_offset: i64,
    /// Added to the vCPU thread's CPU time.
    pub cputime_offset: i64,
}

impl Clock {
    /// A clock whose monotonic time reads `monotonic` now: on the TSC if
    /// `tsc_khz` is given, else on the host's clock.
    pub fn starting_at(monotonic: i64, tsc_khz: Option<u32>) -> Clock {
        match tsc_khz.and_then(|khz| TscClock::new(khz, monotonic)) {
            Some(t) => Clock { tsc: Some(t), ..Default::default() },
            None => Clock { monotonic_offset: monotonic - host_now(libc::CLOCK_MONOTONIC), ..Default::default() },
        }
    }

    /// Reads clock `id` as the job sees it.
    pub fn now(&self, id: i32) -> Result<Timespec, Errno> {
        let ns = match id {
            libc::CLOCK_REALTIME | libc::CLOCK_REALTIME_COARSE | libc::CLOCK_REALTIME_ALARM => self.realtime(),
            libc::CLOCK_TAI => self.realtime() + host_now(libc::CLOCK_TAI) - host_now(libc::CLOCK_REALTIME),
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

    #[inline]
    pub fn monotonic(&self) -> i64 {
        match &self.tsc {
            Some(t) => t.monotonic_at(rdtsc()),
            None => host_now(libc::CLOCK_MONOTONIC) + self.monotonic_offset,
        }
    }

    pub fn realtime(&self) -> i64 {
        match &self.tsc {
            Some(t) => t.monotonic_at(rdtsc()) + t.real_offset,
            None => realtime_ns(),
        }
    }

    pub fn cputime(&self) -> i64 {
        host_now(libc::CLOCK_THREAD_CPUTIME_ID) + self.cputime_offset
    }

    /// The job's monotonic time minus the host's, now (to aim host timers).
    pub fn host_offset(&self) -> i64 {
        match &self.tsc {
            Some(_) => self.monotonic() - host_now(libc::CLOCK_MONOTONIC),
            None => self.monotonic_offset,
        }
    }

    /// Keeps the job's wall clock with the host's; true if it changed
    /// (the vvar page then needs writing). Cheap when nothing is due.
    pub fn follow_realtime(&mut self) -> bool {
        let Some(t) = &mut self.tsc else { return false };
        let mono = t.monotonic_at(rdtsc());
        let since = mono - t.real_checked;
        if since < REAL_CHECK_NS {
            return false;
        }
        t.real_checked = mono;
        let target = realtime_ns() - mono;
        let delta = target - t.real_offset;
        let step = if !(-STEP_BACK_NS..0).contains(&delta) { delta } else { delta.max(-since / SLEW_DIVISOR) };
        t.real_offset += step;
        step != 0
    }

    /// Writes the vDSO's parameters into the vvar page.
    pub fn publish(&self, ram: &crate::memory::GuestRam) {
        use agent::vdso::{vvar, VVAR_ADDR};
        let seq = ram.read_u64(VVAR_ADDR + vvar::SEQ as u64).unwrap_or(0).wrapping_add(1);
        let mut page = [0u8; 48];
        let mut put = |at: usize, v: u64| page[at..at + 8].copy_from_slice(&v.to_le_bytes());
        put(vvar::SEQ, seq);
        if let Some(t) = &self.tsc {
            put(vvar::ENABLED, 1);
            put(vvar::TSC_BASE, t.tsc_base);
            put(vvar::MONO_BASE, t.mono_base as u64);
            put(vvar::MULT, t.mult);
            put(vvar::REAL_OFFSET, t.real_offset as u64);
        }
        let _ = ram.write(VVAR_ADDR, &page);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_apply_and_clocks_advance() {
        let c = Clock::starting_at(host_now(libc::CLOCK_MONOTONIC) + 1_000 * NSEC_PER_SEC, None);
        let a = c.now(libc::CLOCK_MONOTONIC).unwrap();
        let host = Timespec::from_nanos(host_now(libc::CLOCK_MONOTONIC));
        assert!(a.sec >= host.sec + 999);
        let b = c.now(libc::CLOCK_MONOTONIC).unwrap();
        assert!(b >= a);
        assert!(c.now(12345).is_err());
        assert_eq!(Timespec::from_nanos(-1), Timespec { sec: -1, nsec: 999_999_999 });
        assert!(Timespec::from_bytes(&[0xff; 16]).is_err());
    }

    #[test]
    fn tsc_clock_follows_the_host() {
        let start = 5 * NSEC_PER_SEC;
        let mut c = Clock::starting_at(start, Some(2_000_000));
        let t = c.tsc.unwrap();
        // 2 GHz: half a nanosecond per cycle.
        assert_eq!(t.monotonic_at(t.tsc_base + 2_000_000_000), start + NSEC_PER_SEC);
        assert_eq!(t.monotonic_at(t.tsc_base - 5), start, "a TSC before the base reads as the base");
        let a = c.monotonic();
        assert!(a >= start && c.monotonic() >= a);
        // The wall clock: slewed back by at most 500 ppm of the time since
        // the last check, stepped forward.
        let mut slow = c;
        slow.tsc.as_mut().unwrap().real_offset += 10_000_000; // 10 ms ahead
        slow.tsc.as_mut().unwrap().real_checked -= 2 * NSEC_PER_SEC;
        let before = slow.tsc.unwrap().real_offset;
        assert!(slow.follow_realtime());
        let after = slow.tsc.unwrap().real_offset;
        assert!(after < before && before - after <= 2 * NSEC_PER_SEC / SLEW_DIVISOR + 1_000_000);
        c.tsc.as_mut().unwrap().real_offset -= 10_000_000; // 10 ms behind
        c.tsc.as_mut().unwrap().real_checked -= 2 * NSEC_PER_SEC;
        assert!(c.follow_realtime());
        assert!((c.realtime() - realtime_ns()).abs() < 5_000_000, "stepped forward to the host's");
        assert!(!c.follow_realtime(), "nothing due right after a check");
    }
}
