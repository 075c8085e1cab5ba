//! Clocks and sleeps.

use crate::clock::Timespec;
use crate::errno::{Errno, SysResult};
use crate::job::Job;

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
}
