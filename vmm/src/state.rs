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
use crate::site::SiteState;
use crate::sys::process::RLIM_NLIMITS;
use crate::timers::{PosixTimer, Timer};

/// Version of the state layout; a reader refuses any other.
pub const STATE_VERSION: u32 = 3;

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
    pub site: SiteState,
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
        let s: VmState = postcard::from_bytes(b).map_err(|e| format!("malformed state: {e}"))?;
        if s.version != STATE_VERSION {
            return Err(format!("state version {} is not supported (this build reads {STATE_VERSION})", s.version));
        }
        Ok(s)
    }
}
