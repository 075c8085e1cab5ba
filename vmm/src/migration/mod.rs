//! Live migration (pre-copy over TCP) and snapshots.
//!
//! The sender copies guest memory while the job runs, round after round of
//! the pages dirtied meanwhile, until the rest would fit in the downtime
//! target; then it pauses the vCPU, sends the last pages and the state, and
//! waits for the receiver to acknowledge before it lets go of the job. Any
//! failure before the acknowledgement leaves the job running where it was.

pub mod dirty;
mod receive;
mod send;
pub mod wire;

use serde::{Deserialize, Serialize};

/// The nice value of a thread moving a job. The busy jobs sharing the
/// host's cores would otherwise get as much CPU as the copy that empties
/// it (and, during the downtime, as the stopped job's last pages).
const MOVE_NICE: i32 = -10;

/// Raises the calling thread's CPU priority for as long as it lives, where
/// the process may (root, or an RLIMIT_NICE that allows it: a confined
/// body keeps one); elsewhere it changes nothing.
pub(crate) struct Boost {
    before: Option<i32>,
}

impl Boost {
    pub(crate) fn start() -> Boost {
        // SAFETY: getpriority/setpriority of the calling thread (a TID is a
        // PRIO_PROCESS id of that thread alone on Linux).
        unsafe {
            let tid = libc::gettid() as libc::id_t;
            *libc::__errno_location() = 0;
            let before = libc::getpriority(libc::PRIO_PROCESS, tid);
            if *libc::__errno_location() != 0 || before <= MOVE_NICE {
                return Boost { before: None };
            }
            let ok = libc::setpriority(libc::PRIO_PROCESS, tid, MOVE_NICE) == 0;
            Boost { before: ok.then_some(before) }
        }
    }
}

impl Drop for Boost {
    fn drop(&mut self) {
        if let Some(n) = self.before {
            // SAFETY: as above; back to where the thread was.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, n) };
        }
    }
}

pub use receive::{receive, restore_file, ReceiveError, ReceiveOptions, ReceiveStats};
pub use send::{migrate, snapshot, Path, Phase, Progress, ProgressView, SendError, SendOptions, SendStats};

/// CPUID words a job may rely on, for the destination's compatibility check.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CpuWord {
    pub function: u32,
    pub index: u32,
    /// Register: 0 eax, 1 ebx, 2 ecx, 3 edx.
    pub reg: u8,
    pub bits: u32,
}

/// The first record: what the receiver needs to accept or refuse the job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    pub mem_size: u64,
    /// Guest memory the host has backed: what the destination must hold.
    pub resident_bytes: u64,
    pub xcr0: u64,
    /// The CPUID the job sees.
    pub cpuid: Vec<kvm_bindings::kvm_cpuid_entry2>,
    pub program: String,
}

/// Feature words compared between hosts, with bits that describe the
/// running state rather than the CPU masked out (OSXSAVE, OSPKE).
const FEATURE_WORDS: [(u32, u32, u8, u32); 7] = [
    (1, 0, 2, !(1 << 27)),
    (1, 0, 3, !0),
    (7, 0, 1, !0),
    (7, 0, 2, !(1 << 4)),
    (7, 0, 3, !0),
    (0x8000_0001, 0, 2, !0),
    (0x8000_0001, 0, 3, !0),
];

pub fn feature_words(cpuid: &[kvm_bindings::kvm_cpuid_entry2]) -> Vec<CpuWord> {
    FEATURE_WORDS
        .iter()
        .filter_map(|&(function, index, reg, mask)| {
            let e = cpuid.iter().find(|e| e.function == function && e.index == index)?;
            let v = [e.eax, e.ebx, e.ecx, e.edx][reg as usize];
            Some(CpuWord { function, index, reg, bits: v & mask })
        })
        .collect()
}

/// Why this host cannot run a job that saw `job` CPU features and XCR0.
pub fn incompatibility(job: &[CpuWord], job_xcr0: u64, host: &[kvm_bindings::kvm_cpuid_entry2]) -> Option<String> {
    let here = feature_words(host);
    let host_xcr0 = crate::cpu::CpuFeatures::from_cpuid_entries(host).xcr0;
    if job_xcr0 & !host_xcr0 != 0 {
        return Some(format!("this CPU lacks extended state the job uses (XCR0 {job_xcr0:#x}, here {host_xcr0:#x})"));
    }
    for w in job {
        let have = here.iter().find(|h| h.function == w.function && h.index == w.index && h.reg == w.reg);
        let missing = w.bits & !have.map_or(0, |h| h.bits);
        if missing != 0 {
            let reg = ["eax", "ebx", "ecx", "edx"][w.reg as usize & 3];
            return Some(format!(
                "this CPU lacks features the job may use (CPUID {:#x}.{} {reg} bits {missing:#x})",
                w.function, w.index
            ));
        }
    }
    None
}
