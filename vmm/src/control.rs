//! Talking to a running VM from other threads: pause it at a safe point and
//! take its state (for a move or a snapshot), then resume or release it;
//! throttle it while memory is copied.
//!
//! Commands go through a channel and a kick; the vCPU thread serves them
//! between two guest entries, where the machine and the job tables are
//! consistent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use crate::state::VmState;
use crate::vcpu::Kicker;

pub enum Command {
    /// Stop, capture the state and send it on `state`; then wait on
    /// `verdict` (a dropped sender means resume, unless the deputy gave
    /// the job to the new body).
    Pause {
        state: mpsc::Sender<Result<(VmState, Instant), PauseError>>,
        verdict: mpsc::Receiver<Verdict>,
        purpose: crate::site::Purpose,
    },
    /// Spend this percentage of the time stopped (auto-converge); 0 stops throttling.
    Throttle(u8),
    /// Could the job be taken for `purpose` now? Answered at once; the
    /// job goes on.
    Probe { purpose: crate::site::Purpose, answer: mpsc::Sender<Result<(), PauseError>> },
}

/// Why a job could not be paused and taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PauseError {
    /// Something the job holds cannot go (a socket, a child process).
    #[error("{0}")]
    Unmovable(String),
    /// The job has ended, or its state could not be read.
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug)]
pub enum Verdict {
    /// The job now runs elsewhere: end `Vm::run` with `Outcome::Moved`.
    Release(String),
    /// The destination may or may not run the job (its acknowledgement
    /// was lost): resume here only if the deputy did not give the job to
    /// the body at `to`, and answer whether the job resumed here.
    Settle { to: String, resumed: mpsc::Sender<bool> },
}

/// The VM's side of the channel.
pub struct ControlRx {
    pub(crate) rx: mpsc::Receiver<Command>,
}

pub struct Control {
    tx: Mutex<mpsc::Sender<Command>>,
    kicker: Mutex<Option<Kicker>>,
    busy: AtomicBool,
    /// The job has ended: its VM takes no more commands.
    ended: AtomicBool,
}

/// Held while one operation (migration, snapshot) owns the VM.
pub struct Busy<'a>(&'a Control);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::SeqCst);
    }
}

/// The VM is gone (its run loop ended).
#[derive(Debug)]
pub struct Gone;

impl Control {
    pub fn new() -> (Arc<Control>, ControlRx) {
        let (tx, rx) = mpsc::channel();
        (
            Arc::new(Control {
                tx: Mutex::new(tx),
                kicker: Mutex::new(None),
                busy: AtomicBool::new(false),
                ended: AtomicBool::new(false),
            }),
            ControlRx { rx },
        )
    }

    pub(crate) fn set_kicker(&self, k: Kicker) {
        *self.kicker.lock().unwrap() = Some(k);
    }

    /// Makes the vCPU reach its safe point soon.
    pub fn kick(&self) {
        if let Some(k) = &*self.kicker.lock().unwrap() {
            k.kick();
        }
    }

    pub fn send(&self, cmd: Command) -> Result<(), Gone> {
        self.tx.lock().unwrap().send(cmd).map_err(|_| Gone)?;
        self.kick();
        Ok(())
    }

    /// Has the job ended (`Vm::close_control`)? A move in flight stops.
    pub fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    pub(crate) fn mark_ended(&self) {
        self.ended.store(true, Ordering::SeqCst);
    }

    /// Claims the VM for one operation; None if another one holds it.
    pub fn try_begin(&self) -> Option<Busy<'_>> {
        self.busy.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).ok().map(|_| Busy(self))
    }

    /// Whether the job could be taken for `purpose` now (it holds no
    /// socket, has no child): asked before a move copies any memory.
    pub fn probe(&self, purpose: crate::site::Purpose) -> Result<(), PauseError> {
        let (tx, rx) = mpsc::channel();
        self.send(Command::Probe { purpose, answer: tx })
            .map_err(|_| PauseError::Failed("the job has ended".into()))?;
        rx.recv().unwrap_or_else(|_| Err(PauseError::Failed("the job ended before it could answer".into())))
    }

    /// Pauses the VM and returns its state and when its vCPU stopped; the
    /// VM waits for the verdict sent on the returned sender (dropping it
    /// resumes the VM).
    pub fn pause(
        &self,
        purpose: crate::site::Purpose,
    ) -> Result<(VmState, mpsc::Sender<Verdict>, Instant), PauseError> {
        let (state_tx, state_rx) = mpsc::channel();
        let (verdict_tx, verdict_rx) = mpsc::channel();
        self.send(Command::Pause { state: state_tx, verdict: verdict_rx, purpose })
            .map_err(|_| PauseError::Failed("the job has ended".into()))?;
        match state_rx.recv() {
            Ok(Ok((state, stopped))) => Ok((state, verdict_tx, stopped)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PauseError::Failed("the job ended before it could be paused".into())),
        }
    }
}
