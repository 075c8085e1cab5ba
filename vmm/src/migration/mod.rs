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

/// The bits of `list` set.
const fn bits(list: &[u32]) -> u32 {
    let mut m = 0;
    let mut i = 0;
    while i < list.len() {
        m |= 1 << list[i];
        i += 1;
    }
    m
}

/// Feature words compared between hosts: only what a ring-3 program can
/// use (instruction sets and their extensions). A kernel-less job never
/// sees system features (VMX, x2APIC, PCID, SMEP, speculation controls,
/// topology, the hypervisor bit), and a host lacking one of those can
/// run it: comparing them refused moves between an AMD and an Intel
/// host, or a VM and bare metal, for nothing.
const FEATURE_WORDS: [(u32, u32, u8, u32); 7] = [
    // SSE3 PCLMULQDQ SSSE3 FMA CX16 SSE4.1 SSE4.2 MOVBE POPCNT AES XSAVE AVX F16C RDRAND
    (1, 0, 2, bits(&[0, 1, 9, 12, 13, 19, 20, 22, 23, 25, 26, 28, 29, 30])),
    // FPU TSC CX8 CMOV CLFSH MMX FXSR SSE SSE2
    (1, 0, 3, bits(&[0, 4, 8, 15, 19, 23, 24, 25, 26])),
    // FSGSBASE BMI1 HLE AVX2 BMI2 ERMS RTM MPX AVX512F/DQ RDSEED ADX IFMA
    // CLFLUSHOPT CLWB AVX512PF/ER/CD SHA AVX512BW/VL
    (7, 0, 1, bits(&[0, 3, 4, 5, 8, 9, 11, 14, 16, 17, 18, 19, 21, 23, 24, 26, 27, 28, 29, 30, 31])),
    // PREFETCHWT1 VBMI PKU WAITPKG VBMI2 GFNI VAES VPCLMULQDQ VNNI BITALG
    // VPOPCNTDQ RDPID KL CLDEMOTE MOVDIRI MOVDIR64B ENQCMD
    (7, 0, 2, bits(&[0, 1, 3, 5, 6, 8, 9, 10, 11, 12, 14, 22, 23, 25, 27, 28, 29])),
    // 4VNNIW 4FMAPS FSRM VP2INTERSECT SERIALIZE TSXLDTRK AMX-BF16 FP16 AMX-TILE AMX-INT8
    (7, 0, 3, bits(&[2, 3, 4, 8, 14, 16, 22, 23, 24, 25])),
    // LAHF_LM ABM SSE4A 3DNOWPREFETCH XOP FMA4 TBM MONITORX
    (0x8000_0001, 0, 2, bits(&[0, 5, 6, 8, 11, 16, 21, 29])),
    // SYSCALL RDTSCP LM 3DNOWEXT 3DNOW (not AMD's copies of leaf 1's bits,
    // nor MMXEXT, a subset of SSE: Intel sets none of them)
    (0x8000_0001, 0, 3, bits(&[11, 27, 29, 30, 31])),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, ecx: u32, edx: u32) -> kvm_bindings::kvm_cpuid_entry2 {
        kvm_bindings::kvm_cpuid_entry2 { function, ecx, edx, ..Default::default() }
    }

    #[test]
    fn only_features_a_program_can_use_are_compared() {
        // A job seen on an AMD guest: CMP_LEGACY, CR8_LEGACY, MISALIGNSSE,
        // OSVW, TOPOEXT; and the hypervisor bit.
        let job = [entry(1, 1 << 31 | 1 << 28, 0), entry(0x8000_0001, 0x400292 | 1 << 5, 0x1c08111 | 1 << 29)];
        let host = [entry(1, 1 << 28, 0), entry(0x8000_0001, 1 << 5, 1 << 29)];
        assert_eq!(incompatibility(&feature_words(&job), 0, &host), None);
        // A host without AVX (leaf 1 ecx bit 28) cannot take it.
        let host = [entry(1, 0, 0), entry(0x8000_0001, 1 << 5, 1 << 29)];
        let why = incompatibility(&feature_words(&job), 0, &host).expect("refused");
        assert!(why.contains("0x1.0 ecx bits 0x10000000"), "{why}");
    }
}
