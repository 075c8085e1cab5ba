//! Cordoning and draining this host.
//!
//! The mode (normal, cordoned, draining) is kept in the records, told to
//! every member in the membership status, and read by the balancer task on
//! every tick. Draining is cordoned plus the balancer moving every body
//! away (`balancer::Mode::Draining`); the task tells the `Drain` what left
//! and why the rest has not, so that anyone can ask where the drain stands
//! (`report`). A drain is never reported done while a body runs here.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use crate::api::{BodyStatus, DrainReport, DrainedBody, HomedJob, HostMode, JobState, MoveFigures};
use crate::server::{now_ms, Shared};
use crate::wire::JobRef;

/// Bodies a report lists as moved away, at most (the newest).
const MOVED_KEPT: usize = 10_000;

#[derive(Default)]
struct Inner {
    started_ms: Option<u64>,
    moved: Vec<DrainedBody>,
    /// Why a body has not left yet.
    waiting: HashMap<JobRef, String>,
    /// Where a body's move in flight goes (a host name).
    moving_to: HashMap<JobRef, String>,
    note: String,
}

pub struct Drain {
    mode: watch::Sender<HostMode>,
    inner: Mutex<Inner>,
}

impl Drain {
    /// The mode the records kept, and when a drain began.
    pub fn new(mode: HostMode, started_ms: Option<u64>) -> Drain {
        let inner = Inner { started_ms: started_ms.filter(|_| mode == HostMode::Draining), ..Inner::default() };
        Drain { mode: watch::channel(mode).0, inner: Mutex::new(inner) }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn mode(&self) -> HostMode {
        *self.mode.borrow()
    }

    /// Changes of the mode (for the membership status).
    pub fn watch(&self) -> watch::Receiver<HostMode> {
        self.mode.subscribe()
    }

    /// Sets the mode; returns when the drain began, if draining. A drain
    /// asked for again goes on (it keeps its start and what it moved).
    pub(crate) fn set(&self, mode: HostMode) -> Option<u64> {
        let mut i = self.inner();
        match mode {
            HostMode::Draining if i.started_ms.is_none() => {
                *i = Inner { started_ms: Some(now_ms()), ..Inner::default() };
            }
            HostMode::Draining => {}
            _ => *i = Inner::default(),
        }
        let since = i.started_ms;
        drop(i);
        self.mode.send_replace(mode);
        since
    }

    /// The balancer task: `job`'s body left for `to` while draining.
    pub fn moved(&self, job: &JobRef, to: &str, f: &MoveFigures) {
        let mut i = self.inner();
        if i.started_ms.is_none() {
            return;
        }
        i.waiting.remove(job);
        i.moving_to.remove(job);
        if i.moved.len() >= MOVED_KEPT {
            i.moved.remove(0);
        }
        i.moved.push(DrainedBody {
            job: job.to_string(),
            to: to.to_string(),
            at_ms: now_ms(),
            total_ms: f.total_ms,
            downtime_ms: f.downtime_ms,
        });
    }

    /// The balancer task: `job`'s body is on its way to `to`.
    pub fn moving(&self, job: &JobRef, to: &str) {
        let mut i = self.inner();
        if i.started_ms.is_some() {
            i.moving_to.insert(job.clone(), to.to_string());
        }
    }

    /// The balancer task: the move of `job`'s body has ended with the job
    /// (`moved` and `waiting` end the others).
    pub fn settled(&self, job: &JobRef) {
        self.inner().moving_to.remove(job);
    }

    /// The balancer task: `job`'s body has not left, and why.
    pub fn waiting(&self, job: &JobRef, why: String) {
        let mut i = self.inner();
        if i.started_ms.is_some() {
            i.moving_to.remove(job);
            i.waiting.insert(job.clone(), why);
        }
    }

    /// The balancer task's last word (what it waits for).
    pub fn note(&self, note: &str) {
        let mut i = self.inner();
        if i.note != note {
            i.note = note.to_string();
        }
    }

    /// Where the drain stands, or (not draining) what runs here.
    pub async fn report(&self, s: &Shared) -> DrainReport {
        struct Here {
            job: JobRef,
            program: String,
            mem_bytes: u64,
            stay: bool,
            sock: Option<std::path::PathBuf>,
        }
        let mut here = Vec::new();
        let mut homed = Vec::new();
        match s.store().jobs(false) {
            Ok(jobs) => {
                for j in jobs.into_iter().filter(|j| matches!(j.state, JobState::Running | JobState::Moving)) {
                    let job = JobRef { home: s.name.clone(), id: j.id };
                    homed.push(HomedJob { job: job.to_string(), program: j.program.clone(), host: j.host.clone() });
                    // Here, or on its way home: a drain waits for both.
                    if j.host == s.name || j.moving_to.as_deref() == Some(s.name.as_str()) {
                        here.push(Here {
                            job,
                            program: j.program,
                            mem_bytes: j.mem_bytes,
                            stay: j.stay,
                            sock: j.control_sock.map(Into::into),
                        });
                    }
                }
            }
            Err(e) => {
                // Unknown is not empty: never say drained on unreadable records.
                here.push(Here {
                    job: JobRef { home: s.name.clone(), id: 0 },
                    program: format!("(the job records cannot be read: {e})"),
                    mem_bytes: 0,
                    stay: false,
                    sock: None,
                });
            }
        }
        for b in s.bodies.list() {
            here.push(Here {
                program: String::new(),
                stay: false,
                sock: Some(b.control_sock.clone()),
                mem_bytes: b.mem_bytes,
                job: b.job,
            });
        }
        let mut bodies = Vec::with_capacity(here.len());
        for h in here {
            let moving = match &h.sock {
                Some(p) if p.exists() => crate::control::progress(p).await,
                _ => None,
            };
            let i = self.inner();
            bodies.push(BodyStatus {
                job: h.job.to_string(),
                program: h.program,
                mem_bytes: h.mem_bytes,
                stay: h.stay,
                moving_to: i.moving_to.get(&h.job).cloned(),
                moving,
                waiting: i.waiting.get(&h.job).cloned(),
            });
        }
        let i = self.inner();
        DrainReport {
            host: s.name.clone(),
            mode: self.mode(),
            started_ms: i.started_ms,
            // A body whose move the balancer has not yet heard the end of
            // may be gone already: drained once every move is accounted for.
            drained: bodies.is_empty() && i.moving_to.is_empty(),
            bodies,
            moved: i.moved.clone(),
            homed,
            note: i.note.clone(),
        }
    }
}
