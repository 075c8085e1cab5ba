//! A job's state as data: everything needed to rebuild it on another host
//! (or from a file), apart from guest memory, which travels as pages.
//!
//! These structs are separate from the running objects (`Vm`, `Vcpu`,
//! `Job`): `Vm::capture` fills them at a safe point, `Vm::restore` builds a
//! fresh machine from them.

use kvm_bindings::{kvm_cpuid_entry2, kvm_mp_state, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs};
use serde::{Deserialize, Serialize};

use crate::cpu::CpuFeatures;
use crate::job::{Ids, JobStats};
use crate::mm::AddressSpace;
use crate::signal::{AltStack, SigAction, SigInfo};
use crate::site::{HomeLink, SiteState};
use crate::sys::process::RLIM_NLIMITS;
use crate::timers::{PosixTimer, Timer};

/// Version of the state layout; a reader refuses any other.
pub const STATE_VERSION: u32 = 4;

/// The previous layout, still read: it lacks `JobState::home` (its last
/// field) and names a parked thread's descriptor by its host number.
pub const STATE_VERSION_V3: u32 = 3;

#[derive(Clone, Serialize, Deserialize)]
pub struct VcpuState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    /// The FPU/SSE/AVX state: the 4 KiB KVM_GET_XSAVE image.
    pub xsave: Vec<u8>,
    pub xcrs: kvm_xcrs,
    /// Model-specific registers other than the TSC.
    pub msrs: Vec<(u32, u64)>,
    /// The guest's TSC when it stopped.
    pub tsc: u64,
    pub events: kvm_vcpu_events,
    pub mp_state: kvm_mp_state,
    pub cpuid: Vec<kvm_cpuid_entry2>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignalState {
    pub actions: Vec<SigAction>,
    pub blocked: u64,
    pub pending: u64,
    pub info: Vec<SigInfo>,
    pub altstack: AltStack,
    pub shared: u64,
    pub shared_info: Vec<SigInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimerState {
    pub real: Timer,
    pub virt: Timer,
    pub prof: Timer,
    pub posix: Vec<Option<PosixTimer>>,
}

/// The job's clocks when it stopped, to continue from on the destination.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ClockState {
    /// The job's CLOCK_MONOTONIC.
    pub monotonic: i64,
    /// The job's CPU time.
    pub cputime: i64,
    /// Wall-clock time at the same moment, to measure the time the move took.
    pub realtime: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobState {
    pub mm: AddressSpace,
    pub signals: SignalState,
    pub timers: TimerState,
    pub clock: ClockState,
    pub ids: Ids,
    /// The running thread, what it waits for, and the other threads.
    pub tid: u32,
    pub wait: Option<(crate::thread::Wait, u64)>,
    pub wait_ctx: Option<kvm_regs>,
    pub threads: crate::thread::Threads,
    pub features: CpuFeatures,
    pub rlimits: [(u64, u64); RLIM_NLIMITS],
    pub image_end: u64,
    pub tid_address: u64,
    pub robust_list: u64,
    pub comm: [u8; 16],
    pub exe: std::path::PathBuf,
    pub cmdline: Vec<u8>,
    pub environ: Vec<u8>,
    pub restart_nr: Option<u64>,
    pub restart_deadline: Option<i64>,
    pub saved_mask: Option<u64>,
    pub unknown_reported: Vec<u64>,
    pub stats: JobStats,
    /// Without `home`: the descriptors, reopened where the job starts.
    /// With it: only the names a body keeps (cwd, umask, program).
    pub site: SiteState,
    /// Where the job's deputy serves its site, and the generation of the
    /// body this state starts. Last, so that a v3 state reads as `None`.
    pub home: Option<HomeLink>,
}

impl JobState {
    /// A v3 parked wait on a descriptor named the host descriptor, which
    /// means nothing here: make the call again (it parks anew if the
    /// descriptor is still not ready).
    fn upgrade_v3(&mut self) {
        let retry = |w: &mut Option<(crate::thread::Wait, u64)>| {
            if let Some((wait @ crate::thread::Wait::Fd { .. }, _)) = w {
                *wait = crate::thread::Wait::Retry { at: 0 };
            }
        };
        retry(&mut self.wait);
        for p in self.threads.parked.iter_mut() {
            retry(&mut p.state.wait);
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct VmState {
    pub version: u32,
    pub mem_size: u64,
    pub vcpu: VcpuState,
    pub job: JobState,
}

impl VmState {
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("state serializes")
    }

    pub fn from_bytes(b: &[u8]) -> Result<VmState, String> {
        let (version, _) = postcard::take_from_bytes::<u32>(b).map_err(|e| format!("malformed state: {e}"))?;
        match version {
            STATE_VERSION => postcard::from_bytes(b).map_err(|e| format!("malformed state: {e}")),
            STATE_VERSION_V3 => {
                // v3 + a trailing None for `home` is a v4 state.
                let mut v4 = b.to_vec();
                v4.push(0);
                let mut s: VmState = postcard::from_bytes(&v4).map_err(|e| format!("malformed v3 state: {e}"))?;
                s.version = STATE_VERSION;
                s.job.upgrade_v3();
                Ok(s)
            }
            v => Err(format!(
                "state version {v} is not supported (this build reads {STATE_VERSION_V3} and {STATE_VERSION})"
            )),
        }
    }
}
