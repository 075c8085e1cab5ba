//! Clocks and sleeps.

use crate::clock::{Timespec, NSEC_PER_SEC};
use crate::errno::{Errno, SysResult};
use crate::job::Job;
use crate::signal::{NSIG, SIGALRM};
use crate::timers::{Timer, SIGEV_NONE, SIGEV_SIGNAL, SIGEV_THREAD_ID};

const ITIMER_REAL: i32 = 0;
const ITIMER_VIRTUAL: i32 = 1;
const ITIMER_PROF: i32 = 2;

/// (interval, value) of a struct itimerval (microseconds) or itimerspec (nanoseconds).
fn read_pair(b: &[u8], micro: bool) -> Result<(i64, i64), Errno> {
    let w = |i: usize| i64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
    let (unit, max) = if micro { (1000, 1_000_000) } else { (1, NSEC_PER_SEC) };
    let (is, isub, vs, vsub) = (w(0), w(1), w(2), w(3));
    if is < 0 || vs < 0 || !(0..max).contains(&isub) || !(0..max).contains(&vsub) {
        return Err(Errno::EINVAL);
    }
    let ns = |s: i64, sub: i64| s.saturating_mul(NSEC_PER_SEC).saturating_add(sub * unit);
    Ok((ns(is, isub), ns(vs, vsub)))
}

fn write_pair(interval: i64, value: i64, micro: bool) -> [u8; 32] {
    let div = if micro { 1000 } else { 1 };
    let mut b = [0u8; 32];
    for (i, v) in
        [interval / NSEC_PER_SEC, (interval % NSEC_PER_SEC) / div, value / NSEC_PER_SEC, (value % NSEC_PER_SEC) / div]
            .iter()
            .enumerate()
    {
        b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    b
}

const TIMER_ABSTIME: i32 = 1;

impl Job {
    pub(super) fn sys_clock_gettime(&mut self, id: i32, tp: u64) -> SysResult {
        let now = self.clock.now(id)?;
        self.ram.write_user(tp, &now.to_bytes())?;
        Ok(0)
    }

    pub(super) fn sys_clock_getres(&mut self, id: i32, tp: u64) -> SysResult {
        let res = self.clock.resolution(id)?;
        if tp != 0 {
            self.ram.write_user(tp, &res.to_bytes())?;
        }
        Ok(0)
    }

    pub(super) fn sys_gettimeofday(&mut self, tv: u64, tz: u64) -> SysResult {
        if tv != 0 {
            let now = self.clock.now(libc::CLOCK_REALTIME)?;
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&now.sec.to_le_bytes());
            b[8..].copy_from_slice(&(now.nsec / 1000).to_le_bytes());
            self.ram.write_user(tv, &b)?;
        }
        if tz != 0 {
            self.ram.write_user(tz, &[0; 8])?;
        }
        Ok(0)
    }

    pub(super) fn sys_time(&mut self, tloc: u64) -> SysResult {
        let now = self.clock.now(libc::CLOCK_REALTIME)?.sec as u64;
        if tloc != 0 {
            self.ram.write_user_u64(tloc, now)?;
        }
        Ok(now)
    }

    pub(super) fn sys_clock_nanosleep(&mut self, id: i32, flags: i32, req: u64, rem: u64) -> SysResult {
        if !matches!(id, libc::CLOCK_REALTIME | libc::CLOCK_MONOTONIC | libc::CLOCK_BOOTTIME | libc::CLOCK_TAI) {
            return Err(if id == libc::CLOCK_THREAD_CPUTIME_ID { Errno::EINVAL } else { Errno::EOPNOTSUPP });
        }
        let t = Timespec::from_bytes(self.ram.user(req, 16)?)?;
        let now_mono = self.clock.monotonic();
        let deadline = if let Some(d) = self.restart_deadline.take() {
            // Restarted after an interruption no handler saw.
            d
        } else if flags & TIMER_ABSTIME != 0 {
            // Convert the absolute time on `id` to the job's monotonic clock.
            let now = self.clock.now(id)?.as_nanos();
            now_mono + (t.as_nanos() - now)
        } else {
            now_mono.saturating_add(t.as_nanos())
        };
        if self.has_threads() {
            // Kept for a restart when a signal without handler cuts it short.
            self.restart_deadline = Some(deadline);
            let rem = if flags & TIMER_ABSTIME == 0 { rem } else { 0 };
            return Err(self.park(crate::thread::Wait::Sleep { deadline: Some(deadline), rem }));
        }
        match self.sleep_until(Some(deadline)) {
            Ok(()) => Ok(0),
            Err(Errno::ERESTARTSYS) => {
                // A handler interrupts a sleep for good (EINTR, with the time
                // left); anything else restarts it with the same deadline.
                if flags & TIMER_ABSTIME == 0 && rem != 0 {
                    let left = Timespec::from_nanos((deadline - self.clock.monotonic()).max(0));
                    self.ram.write_user(rem, &left.to_bytes())?;
                }
                self.restart_deadline = Some(deadline);
                Err(Errno::ERESTARTNOHAND)
            }
            Err(e) => Err(e),
        }
    }

    fn itimer(&mut self, which: i32) -> Result<&mut Timer, Errno> {
        match which {
            ITIMER_REAL => Ok(&mut self.timers.real),
            ITIMER_VIRTUAL => Ok(&mut self.timers.virt),
            ITIMER_PROF => Ok(&mut self.timers.prof),
            _ => Err(Errno::EINVAL),
        }
    }

    pub(super) fn sys_alarm(&mut self, secs: u64) -> SysResult {
        let now = self.clock.monotonic();
        let old = std::mem::take(&mut self.timers.real);
        if secs > 0 {
            self.timers.real.deadline = Some(now + (secs.min(u32::MAX as u64) as i64) * NSEC_PER_SEC);
        }
        self.timers.rearm(self.clock.host_offset());
        // Linux rounds the time left to the nearest second, and never says 0 for an armed alarm.
        let left = old.deadline.map_or(0, |d| (((d - now).max(0) + NSEC_PER_SEC / 2) / NSEC_PER_SEC).max(1));
        Ok(left as u64)
    }

    pub(super) fn sys_getitimer(&mut self, which: i32, out: u64) -> SysResult {
        let now = self.clock.monotonic();
        let t = *self.itimer(which)?;
        self.ram.write_user(out, &write_pair(t.interval, t.remaining(now), true))?;
        Ok(0)
    }

    pub(super) fn sys_setitimer(&mut self, which: i32, new: u64, old: u64) -> SysResult {
        let now = self.clock.monotonic();
        let (interval, value) = if new == 0 { (0, 0) } else { read_pair(self.ram.user(new, 32)?, true)? };
        let prev = *self.itimer(which)?;
        if old != 0 {
            self.ram.write_user(old, &write_pair(prev.interval, prev.remaining(now), true))?;
        }
        *self.itimer(which)? = Timer { deadline: (value > 0).then(|| now + value), interval };
        self.timers.rearm(self.clock.host_offset());
        Ok(0)
    }

    pub(super) fn sys_timer_create(&mut self, clock: i32, sevp: u64, out: u64) -> SysResult {
        self.clock.now(clock)?;
        if !matches!(clock, libc::CLOCK_REALTIME | libc::CLOCK_MONOTONIC | libc::CLOCK_BOOTTIME) {
            return Err(Errno::EOPNOTSUPP);
        }
        let (signal, value) = if sevp == 0 {
            (SIGALRM, u64::MAX)
        } else {
            let b = self.ram.user(sevp, 16)?;
            let value = u64::from_le_bytes(b[0..8].try_into().unwrap());
            let signo = i32::from_le_bytes(b[8..12].try_into().unwrap());
            let notify = i32::from_le_bytes(b[12..16].try_into().unwrap());
            match notify {
                SIGEV_NONE => (0, value),
                SIGEV_SIGNAL | SIGEV_THREAD_ID if signo > 0 && signo as usize <= NSIG => (signo as u32, value),
                _ => return Err(Errno::EINVAL),
            }
        };
        self.ram.check_user(out, 4)?;
        let id = self.timers.create(clock, signal, value)?;
        if value == u64::MAX {
            self.timers.get(id as u64)?.value = id as u64;
        }
        self.ram.write_user_u32(out, id as u32)?;
        Ok(0)
    }

    pub(super) fn sys_timer_settime(&mut self, id: u64, flags: i32, new: u64, old: u64) -> SysResult {
        let now = self.clock.monotonic();
        let (interval, value) = read_pair(self.ram.user(new, 32)?, false)?;
        let clock = self.timers.get(id)?.clock;
        let deadline = if value == 0 {
            None
        } else if flags & TIMER_ABSTIME != 0 {
            Some(now + (value - self.clock.now(clock)?.as_nanos()))
        } else {
            Some(now.saturating_add(value))
        };
        let t = self.timers.get(id)?;
        let prev = t.timer;
        t.timer = Timer { deadline, interval };
        t.overrun = 0;
        if old != 0 {
            self.ram.write_user(old, &write_pair(prev.interval, prev.remaining(now), false))?;
        }
        self.timers.rearm(self.clock.host_offset());
        Ok(0)
    }

    pub(super) fn sys_timer_gettime(&mut self, id: u64, out: u64) -> SysResult {
        let now = self.clock.monotonic();
        let t = self.timers.get(id)?.timer;
        self.ram.write_user(out, &write_pair(t.interval, t.remaining(now), false))?;
        Ok(0)
    }
}
