//! Interval timers (alarm, setitimer, POSIX timers) of a job.
//!
//! Deadlines are kept on the job's monotonic clock, so they survive a move
//! to another host. While a timer is armed, one host POSIX timer aimed at
//! the vCPU thread kicks it out of KVM_RUN at the earliest deadline; the
//! vCPU loop then raises the signal (`Timers::expire`).

use crate::errno::Errno;
use crate::signal::{SigInfo, Signals, SIGALRM};

pub const SI_TIMER: i32 = -2;
pub const SIGEV_SIGNAL: i32 = 0;
pub const SIGEV_NONE: i32 = 1;
pub const SIGEV_THREAD_ID: i32 = 4;
/// POSIX timers a job may have (Linux allows more; jobs rarely use many).
pub const MAX_TIMERS: usize = 64;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timer {
    /// Next expiry on the job's monotonic clock; None: disarmed.
    pub deadline: Option<i64>,
    /// Period after the first expiry; 0: one-shot.
    pub interval: i64,
}

impl Timer {
    /// Advances past `now`; returns how many periods elapsed (0: not due).
    fn fire(&mut self, now: i64) -> u64 {
        match self.deadline {
            Some(d) if d <= now => {
                if self.interval > 0 {
                    let n = (now - d) / self.interval + 1;
                    self.deadline = Some(d + n * self.interval);
                    n as u64
                } else {
                    self.deadline = None;
                    1
                }
            }
            _ => 0,
        }
    }

    /// Time left until expiry (0 if disarmed).
    pub fn remaining(&self, now: i64) -> i64 {
        self.deadline.map_or(0, |d| (d - now).max(1))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PosixTimer {
    pub clock: i32,
    /// Signal to send, or 0 for SIGEV_NONE.
    pub signal: u32,
    pub value: u64,
    pub timer: Timer,
    pub overrun: u64,
}

/// A host timer that signals one thread (the vCPU's) at an absolute
/// CLOCK_MONOTONIC time.
struct HostTimer {
    id: libc::timer_t,
    armed_for: Option<i64>,
}

impl HostTimer {
    fn for_this_thread(signal: i32) -> Option<HostTimer> {
        crate::vcpu::install_kick_handler();
        // SAFETY: a zeroed sigevent is valid; we fill the thread-id variant.
        let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = signal;
        // SAFETY: gettid has no preconditions.
        sev.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: valid clock, sigevent and out pointer.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut id) } != 0 {
            return None;
        }
        Some(HostTimer { id, armed_for: None })
    }

    fn arm(&mut self, host_deadline: Option<i64>) {
        if self.armed_for == host_deadline {
            return;
        }
        let ns = host_deadline.unwrap_or(0).max(if host_deadline.is_some() { 1 } else { 0 });
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: ns / 1_000_000_000, tv_nsec: ns % 1_000_000_000 },
        };
        // SAFETY: a timer we created; a zero value disarms it.
        unsafe { libc::timer_settime(self.id, libc::TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
        self.armed_for = host_deadline;
    }
}

impl Drop for HostTimer {
    fn drop(&mut self) {
        // SAFETY: a timer we created and delete once.
        unsafe { libc::timer_delete(self.id) };
    }
}

#[derive(Default)]
pub struct Timers {
    pub real: Timer,
    /// ITIMER_VIRTUAL and ITIMER_PROF are kept but never fire (CPU-time
    /// timers are not emulated).
    pub virt: Timer,
    pub prof: Timer,
    pub posix: Vec<Option<PosixTimer>>,
    /// The earliest deadline of a signalling timer (kept by `rearm`).
    pub next: Option<i64>,
    /// When the running thread's slice ends, if others wait to run: the
    /// host timer kicks the vCPU then, without a signal.
    pub preempt: Option<i64>,
    host: Option<HostTimer>,
}

impl std::fmt::Debug for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers").field("real", &self.real).field("posix", &self.posix).finish()
    }
}

impl Timers {
    fn earliest(&self) -> Option<i64> {
        let posix = self.posix.iter().flatten().filter(|t| t.signal != 0).filter_map(|t| t.timer.deadline);
        [self.real.deadline, self.preempt].into_iter().flatten().chain(posix).min()
    }

    /// Raises the signals of timers due at `now`, re-aims the host timer.
    /// `offset` converts job monotonic time to host monotonic time.
    pub fn expire(&mut self, now: i64, offset: i64, signals: &mut Signals) {
        if self.preempt.is_some_and(|p| p <= now) {
            self.preempt = None;
        }
        if self.real.fire(now) > 0 {
            signals.raise_shared(SIGALRM, SigInfo { code: crate::signal::SI_KERNEL, ..Default::default() });
        }
        for (id, slot) in self.posix.iter_mut().enumerate() {
            if let Some(t) = slot {
                let n = t.timer.fire(now);
                if n > 0 && t.signal != 0 {
                    // A still-pending signal of this timer counts as an overrun.
                    t.overrun = n - 1;
                    signals.raise_shared(
                        t.signal,
                        SigInfo { code: SI_TIMER, addr: id as u64, value: t.value, ..Default::default() },
                    );
                }
            }
        }
        self.rearm(offset);
    }

    /// Points the host timer at the earliest deadline (creating it on the
    /// calling thread, which must be the vCPU thread, on first use).
    pub fn rearm(&mut self, offset: i64) {
        let next = self.earliest();
        self.next = next;
        if next.is_none() && self.host.is_none() {
            return;
        }
        if self.host.is_none() {
            self.host = HostTimer::for_this_thread(crate::vcpu::kick_signal());
        }
        if let Some(h) = &mut self.host {
            h.arm(next.map(|d| d - offset));
        }
    }

    /// Is a timer due at `now`?
    #[inline]
    pub fn due(&self, now_fn: impl FnOnce() -> i64) -> bool {
        self.next.is_some_and(|d| d <= now_fn())
    }

    pub fn create(&mut self, clock: i32, signal: u32, value: u64) -> Result<usize, Errno> {
        if self.posix.is_empty() {
            self.posix.resize(MAX_TIMERS, None);
        }
        let id = self.posix.iter().position(|t| t.is_none()).ok_or(Errno::EAGAIN)?;
        self.posix[id] = Some(PosixTimer { clock, signal, value, timer: Timer::default(), overrun: 0 });
        Ok(id)
    }

    pub fn get(&mut self, id: u64) -> Result<&mut PosixTimer, Errno> {
        self.posix.get_mut(id as usize).and_then(|t| t.as_mut()).ok_or(Errno::EINVAL)
    }

    pub fn delete(&mut self, id: u64) -> Result<(), Errno> {
        self.get(id)?;
        self.posix[id as usize] = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_timer_counts_overruns() {
        let mut t = Timer { deadline: Some(100), interval: 10 };
        assert_eq!(t.fire(99), 0);
        assert_eq!(t.fire(100), 1);
        assert_eq!(t.deadline, Some(110));
        assert_eq!(t.fire(135), 3);
        assert_eq!(t.deadline, Some(140));
        let mut once = Timer { deadline: Some(5), interval: 0 };
        assert_eq!(once.fire(7), 1);
        assert_eq!(once.deadline, None);
        assert_eq!(once.fire(100), 0);
    }

    #[test]
    fn expiry_raises_signals() {
        let mut timers = Timers::default();
        let mut sigs = Signals::default();
        timers.real = Timer { deadline: Some(50), interval: 0 };
        let id = timers.create(libc::CLOCK_MONOTONIC, 10, 77).unwrap();
        timers.get(id as u64).unwrap().timer = Timer { deadline: Some(60), interval: 0 };
        timers.expire(55, 0, &mut sigs);
        // Timer signals go to the process, not one thread.
        assert_eq!(sigs.shared, crate::signal::bit(SIGALRM));
        assert_eq!(sigs.pending, 0);
        timers.expire(61, 0, &mut sigs);
        assert_ne!(sigs.shared & crate::signal::bit(10), 0);
        assert_eq!(sigs.shared_info[10].value, 77);
        assert_eq!(timers.next, None);
    }
}
