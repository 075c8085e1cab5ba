//! epoll, eventfd, timerfd and signalfd, and the small file calls
//! (mknodat, fadvise64, readahead) that go with them: the job's pointers
//! and clocks here, the descriptors at the site (see `site::events`).
//!
//! A blocking epoll_wait waits at the site (the host's epoll, here or at
//! home) like a blocking read: a signal or a kick cuts it short. With
//! other threads to run it parks instead, on the epoll descriptor (which
//! polls readable when events are ready) or, with a timeout, looking
//! again every `thread::POLL_RECHECK_NS`.
//!
//! signalfd: the signals live here, in the body. The site's signalfd is a
//! host eventfd kept readable while a signal in its mask is pending
//! (`sync_signalfds`, run whenever the job takes in events), so poll and
//! epoll see it; a read is served here from the pending set. Limits: a
//! signal pending only for a parked thread does not make it readable,
//! and a signalfd shared with a forked child follows whichever process
//! told it last.

use crate::clock::Timespec;
use crate::errno::{Errno, SysResult};
use crate::job::Job;
use crate::signal::UNBLOCKABLE;
use crate::site::EPOLL_EVENT_SIZE;

const EPOLL_CTL_DEL: i32 = 2;
/// Linux's limit on maxevents (INT_MAX / sizeof(struct epoll_event)).
const EP_MAX_EVENTS: i32 = i32::MAX / EPOLL_EVENT_SIZE as i32;
/// The most events one wait takes in (the job's buffer may be larger).
const EVENTS_AT_ONCE: u64 = 4096;
const SIGNALFD_SIGINFO: u64 = 128;

/// A relative timeout in ms for the host, rounded up, from a deadline.
fn ms_until(deadline: Option<i64>, now: i64) -> i32 {
    deadline.map_or(-1, |d| (((d - now).max(0) + 999_999) / 1_000_000).min(i32::MAX as i64) as i32)
}

impl Job {
    /// Tells the site's signalfds what is pending, if that changed.
    pub fn sync_signalfds(&mut self) {
        let s = &self.signals;
        if !s.signalfds {
            return;
        }
        let want = s.pending | s.shared;
        if s.signalfd_sent == Some(want) {
            return;
        }
        match self.site.signals_pending(want) {
            Ok(0) => {
                self.signals.signalfds = false;
                self.signals.signalfd_sent = None;
            }
            Ok(_) => self.signals.signalfd_sent = Some(want),
            Err(_) => {}
        }
    }

    pub(super) fn sys_mknodat(&mut self, dirfd: i32, path: u64, mode: u32, dev: u64) -> SysResult {
        let p = self.ram.user_cstr(path, 4095)?.ok_or(Errno::ENAMETOOLONG)?;
        self.site.mknodat(dirfd, p, mode, dev)
    }

    pub(super) fn sys_fadvise(&mut self, fd: i32, offset: i64, len: i64, advice: i32) -> SysResult {
        self.site.fadvise(fd, offset, len, advice)
    }

    pub(super) fn sys_readahead(&mut self, fd: i32, offset: i64, count: u64) -> SysResult {
        self.site.readahead(fd, offset, count)
    }

    pub(super) fn sys_epoll_create(&mut self, arg: i32, legacy: bool) -> SysResult {
        if legacy {
            if arg <= 0 {
                return Err(Errno::EINVAL);
            }
            return self.site.epoll_create(false);
        }
        if arg & !libc::EPOLL_CLOEXEC != 0 {
            return Err(Errno::EINVAL);
        }
        self.site.epoll_create(arg & libc::EPOLL_CLOEXEC != 0)
    }

    pub(super) fn sys_epoll_ctl(&mut self, epfd: i32, op: i32, fd: i32, event: u64) -> SysResult {
        let mut ev = [0u8; EPOLL_EVENT_SIZE];
        if op != EPOLL_CTL_DEL {
            ev.copy_from_slice(self.ram.user(event, EPOLL_EVENT_SIZE as u64)?);
        }
        let r = self.site.epoll_ctl(epfd, op, fd, &ev);
        // A signalfd just added must show what is pending now.
        self.signals.signalfd_sent = None;
        self.sync_signalfds();
        r
    }

    pub(super) fn sys_epoll_wait(
        &mut self,
        epfd: i32,
        events: u64,
        max: i32,
        timeout_ms: i64,
        sigmask: u64,
        sigsetsize: u64,
    ) -> SysResult {
        let timeout = (timeout_ms >= 0).then(|| timeout_ms * 1_000_000);
        self.epoll_with_mask(epfd, events, max, timeout, sigmask, sigsetsize)
    }

    pub(super) fn sys_epoll_pwait2(
        &mut self,
        epfd: i32,
        events: u64,
        max: i32,
        timeout: u64,
        sigmask: u64,
        sigsetsize: u64,
    ) -> SysResult {
        let timeout = if timeout == 0 {
            None
        } else {
            let t = Timespec::from_bytes(self.ram.user(timeout, 16)?)?;
            Some(t.as_nanos())
        };
        self.epoll_with_mask(epfd, events, max, timeout, sigmask, sigsetsize)
    }

    /// epoll_pwait's temporary signal mask around the wait, as ppoll's.
    fn epoll_with_mask(
        &mut self,
        epfd: i32,
        events: u64,
        max: i32,
        timeout: Option<i64>,
        sigmask: u64,
        sigsetsize: u64,
    ) -> SysResult {
        if max <= 0 || max > EP_MAX_EVENTS {
            return Err(Errno::EINVAL);
        }
        self.ram.check_user(events, max as u64 * EPOLL_EVENT_SIZE as u64)?;
        let mask = if sigmask != 0 {
            if sigsetsize != 8 {
                return Err(Errno::EINVAL);
            }
            Some(self.ram.read_user_u64(sigmask)? & !UNBLOCKABLE)
        } else {
            None
        };
        let saved = self.signals.blocked;
        if let Some(m) = mask {
            self.signals.blocked = m;
        }
        let r = self.epoll_wait_for(epfd, events, max, timeout);
        if mask.is_some() {
            match r {
                // The handler runs with the temporary mask; the old one
                // comes back when it returns.
                Err(Errno::ERESTARTNOHAND) | Err(Errno::ERESTARTSYS) | Err(Errno::PARKED) => {
                    self.saved_mask = Some(saved)
                }
                _ => self.signals.blocked = saved,
            }
        }
        r
    }

    fn epoll_wait_for(&mut self, epfd: i32, events: u64, max: i32, timeout: Option<i64>) -> SysResult {
        let len = (max as u64).min(EVENTS_AT_ONCE) * EPOLL_EVENT_SIZE as u64;
        let now = self.clock.monotonic();
        let deadline = self.restart_deadline.take().or(timeout.map(|t| now.saturating_add(t)));
        self.collect_events();
        if self.has_threads() {
            let mut buf = self.ram.user_mut(events, len)?;
            let r = self.site.epoll_wait(epfd, &mut buf, 0);
            let n = *r.as_ref().unwrap_or(&0);
            buf.commit(n as usize * EPOLL_EVENT_SIZE);
            if r? > 0 || deadline.is_some_and(|d| d <= now) {
                return Ok(n);
            }
            let wait = match deadline {
                // The epoll descriptor polls readable once an event is ready.
                None => crate::thread::Wait::Fd { fd: epfd, events: libc::POLLIN },
                Some(d) => {
                    self.restart_deadline = deadline;
                    crate::thread::Wait::Retry { at: now + crate::thread::POLL_RECHECK_NS.min(d - now) }
                }
            };
            return Err(self.park(wait));
        }
        loop {
            let left = ms_until(deadline, self.clock.monotonic());
            let mut buf = self.ram.user_mut(events, len)?;
            let r = self.site.epoll_wait(epfd, &mut buf, left);
            buf.commit(*r.as_ref().unwrap_or(&0) as usize * EPOLL_EVENT_SIZE);
            match r {
                Err(Errno::EINTR) => {
                    // A signal the job blocks may have made a signalfd
                    // readable (taking it in tells the site): wait again.
                    if self.interrupted() {
                        // Linux never restarts epoll_wait after a handler.
                        self.restart_deadline = deadline;
                        return Err(Errno::ERESTARTNOHAND);
                    }
                }
                r => return r,
            }
        }
    }

    pub(super) fn sys_eventfd(&mut self, initval: u32, flags: i32) -> SysResult {
        self.site.eventfd(initval, flags)
    }

    pub(super) fn sys_timerfd_create(&mut self, clock: i32, flags: i32) -> SysResult {
        self.site.timerfd_create(clock, flags)
    }

    pub(super) fn sys_timerfd_settime(&mut self, fd: i32, flags: i32, new: u64, old: u64) -> SysResult {
        if flags & !(libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET) != 0 {
            return Err(Errno::EINVAL);
        }
        let spec: [u8; 32] = self.ram.user(new, 32)?.try_into().unwrap();
        for half in spec.chunks_exact(16) {
            Timespec::from_bytes(half)?;
        }
        if old != 0 {
            self.ram.check_user(old, 32)?;
        }
        let mut prev = [0u8; 32];
        let now = self.clock.monotonic();
        self.site.timerfd_settime(fd, flags, &spec, now, &mut prev)?;
        if old != 0 {
            self.ram.write_user(old, &prev)?;
        }
        Ok(0)
    }

    pub(super) fn sys_timerfd_gettime(&mut self, fd: i32, cur: u64) -> SysResult {
        self.ram.check_user(cur, 32)?;
        let mut spec = [0u8; 32];
        self.site.timerfd_gettime(fd, &mut spec)?;
        self.ram.write_user(cur, &spec)?;
        Ok(0)
    }

    pub(super) fn sys_signalfd(&mut self, fd: i32, mask: u64, size: u64, flags: i32) -> SysResult {
        if size != 8 {
            return Err(Errno::EINVAL);
        }
        let m = self.ram.read_user_u64(mask)?;
        let r = self.site.signalfd(fd, m, flags)?;
        self.signals.signalfds = true;
        self.signals.signalfd_sent = None;
        self.sync_signalfds();
        Ok(r)
    }

    /// read(2) of a signalfd (the site answered `SIGNALFD_READ`): takes
    /// pending signals in its mask, as many as fit, each as a struct
    /// signalfd_siginfo; waits for one unless the descriptor is
    /// non-blocking.
    pub(super) fn read_signalfd(&mut self, fd: i32, addr: u64, len: u64) -> SysResult {
        if len < SIGNALFD_SIGINFO {
            return Err(Errno::EINVAL);
        }
        let (mask, nonblock) = self.site.signalfd_get(fd)?;
        let room = (len / SIGNALFD_SIGINFO).min(64);
        self.ram.check_user(addr, room * SIGNALFD_SIGINFO)?;
        loop {
            self.collect_events();
            let mut n = 0;
            while n < room {
                let Some((sig, info)) = self.signals.take_in(mask) else { break };
                let pid = if info.addr != 0 && info.code <= 0 { info.addr as u32 } else { self.ids.pid };
                self.ram.write_user(addr + n * SIGNALFD_SIGINFO, &info.to_signalfd(sig, pid, self.ids.uid))?;
                n += 1;
            }
            if n > 0 {
                self.sync_signalfds();
                return Ok(n * SIGNALFD_SIGINFO);
            }
            if nonblock {
                return Err(Errno::EAGAIN);
            }
            if self.interrupted() {
                return Err(Errno::ERESTARTSYS);
            }
            if self.has_threads() {
                let at = self.clock.monotonic() + crate::thread::POLL_RECHECK_NS;
                return Err(self.park(crate::thread::Wait::Retry { at }));
            }
            // Until a host signal, a timer or a kick: then look again.
            self.wait_for(self.timers.next, &mut []);
        }
    }
}
