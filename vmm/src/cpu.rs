//! The machine state a job starts in: descriptor tables, control registers,
//! syscall MSRs, CPUID and XCR0, all built by the VMM (there is no guest
//! kernel to do it).

use kvm_bindings::{kvm_msr_entry, kvm_segment, kvm_sregs, kvm_xcrs, CpuId, Msrs};

use crate::layout::*;
use crate::memory::{GuestRam, MemoryError};

pub const MSR_EFER: u32 = 0xc000_0080;
pub const MSR_STAR: u32 = 0xc000_0081;
pub const MSR_LSTAR: u32 = 0xc000_0082;
pub const MSR_CSTAR: u32 = 0xc000_0083;
pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
pub const MSR_FS_BASE: u32 = 0xc000_0100;
pub const MSR_GS_BASE: u32 = 0xc000_0101;
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
pub const MSR_IA32_TSC: u32 = 0x10;
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;

const EFER_SCE: u64 = 1 << 0;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

/// PG | AM | WP | NE | ET | MP | PE, as Linux runs user code with.
const CR0: u64 = 0x8005_0033;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_FSGSBASE: u64 = 1 << 16;
const CR4_OSXSAVE: u64 = 1 << 18;

/// rflags bits cleared on `syscall` entry: TF, DF, IF, AC, NT.
const SYSCALL_MASK: u64 = 0x4_7700;

/// XCR0 components a Linux process may use without asking: x87, SSE, AVX
/// and AVX-512. (MPX is obsolete; PKRU needs CR4.PKE; AMX needs a prctl.)
const XCR0_ALLOWED: u64 = 0b1110_0111;

const GDT_ENTRIES: usize = 10;
const IDT_ENTRIES: usize = agent::EXCEPTION_VECTORS;
/// The TSS proper, then an I/O permission bitmap for ports 0..=255 and
/// its terminating byte.
const TSS_SIZE: u64 = 104;
const TSS_LIMIT: u64 = TSS_SIZE + 32 + 1 - 1;

/// What the host CPU (as KVM exposes it) lets a job use.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct CpuFeatures {
    pub xsave: bool,
    pub fsgsbase: bool,
    /// XCR0 the job runs with.
    pub xcr0: u64,
    /// CPUID.1:EDX, reported to the job as AT_HWCAP.
    pub hwcap: u32,
    /// Bytes of XSAVE state for XCR0 (CPUID.0xD.0:EBX after XCR0 is set
    /// is not available before the vCPU runs, so the maximum is used).
    pub xsave_size: u32,
}

impl CpuFeatures {
    pub fn from_cpuid(cpuid: &CpuId) -> Self {
        Self::from_cpuid_entries(cpuid.as_slice())
    }

    pub fn from_cpuid_entries(cpuid: &[kvm_bindings::kvm_cpuid_entry2]) -> Self {
        let leaf =
            |function: u32, index: u32| cpuid.iter().find(|e| e.function == function && e.index == index).copied();
        let l1 = leaf(1, 0);
        let xsave = l1.is_some_and(|e| e.ecx & (1 << 26) != 0);
        let fsgsbase = leaf(7, 0).is_some_and(|e| e.ebx & 1 != 0);
        let (xcr0, xsave_size) = match leaf(0xd, 0) {
            Some(e) if xsave => {
                let supported = (e.eax as u64) | ((e.edx as u64) << 32);
                (supported & XCR0_ALLOWED, e.ecx)
            }
            _ => (0b11, 512),
        };
        CpuFeatures { xsave, fsgsbase, xcr0, hwcap: l1.map_or(0, |e| e.edx), xsave_size: xsave_size.max(512) }
    }
}

/// Writes the GDT, IDT, TSS and the ring-0 code page into guest RAM.
/// `extra_ports` are I/O ports user code may also write (benchmarks only).
pub fn write_machine_tables(ram: &GuestRam, extra_ports: &[u16]) -> Result<(), MemoryError> {
    let mut gdt = [0u64; GDT_ENTRIES];
    gdt[(KERNEL_CS >> 3) as usize] = 0x00af_9b00_0000_ffff; // 64-bit code, DPL 0, accessed
    gdt[(KERNEL_DS >> 3) as usize] = 0x00cf_9300_0000_ffff; // data, DPL 0, accessed
    gdt[(USER32_CS >> 3) as usize] = 0x00cf_fb00_0000_ffff; // 32-bit code, DPL 3
    gdt[(USER_DS >> 3) as usize] = 0x00cf_f300_0000_ffff; // data, DPL 3
    gdt[(USER_CS >> 3) as usize] = 0x00af_fb00_0000_ffff; // 64-bit code, DPL 3
    let (lo, hi) = tss_descriptor(TSS_ADDR, TSS_LIMIT);
    gdt[(TSS_SELECTOR >> 3) as usize] = lo;
    gdt[(TSS_SELECTOR >> 3) as usize + 1] = hi;
    let bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
    ram.write(GDT_ADDR, &bytes)?;

    let mut idt = Vec::with_capacity(IDT_ENTRIES * 16);
    for vector in 0..IDT_ENTRIES as u8 {
        let handler = RING0_CODE_ADDR + agent::exception_stub(vector) as u64;
        // int3 and into may be raised by user code (they then raise SIGTRAP
        // and SIGSEGV as on Linux); other gates are kernel-only, so `int N`
        // from the job is a #GP.
        let dpl = if matches!(vector, 3 | 4) { 3 } else { 0 };
        idt.extend_from_slice(&idt_gate(handler, dpl));
    }
    ram.write(IDT_ADDR, &idt)?;

    let mut tss = [0u8; TSS_LIMIT as usize + 1];
    tss[4..12].copy_from_slice(&RING0_STACK_TOP.to_le_bytes()); // RSP0
    tss[102..104].copy_from_slice(&(TSS_SIZE as u16).to_le_bytes());
    // Nested KVM here enters the syscall entry without leaving CPL3, so its
    // `out` must be allowed from user mode. Only the system-call port is:
    // a job writing it from anywhere else gets SIGSEGV from the VMM.
    let bitmap = &mut tss[TSS_SIZE as usize..];
    bitmap.fill(0xff);
    for &port in std::iter::once(&agent::SYSCALL_PORT).chain(extra_ports) {
        let port = port as usize;
        bitmap[port / 8] &= !(1 << (port % 8));
    }
    ram.write(TSS_ADDR, &tss)?;

    ram.write(RING0_CODE_ADDR, &agent::code_page())?;
    ram.write(VDSO_ADDR, vdso_image())?;
    Ok(())
}

/// The vDSO image (made once per process).
fn vdso_image() -> &'static [u8] {
    static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMAGE.get_or_init(agent::vdso::image)
}

fn tss_descriptor(base: u64, limit: u64) -> (u64, u64) {
    let lo = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89 << 40) // present, DPL 0, available 64-bit TSS
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    (lo, base >> 32)
}

fn idt_gate(handler: u64, dpl: u8) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
    g[2..4].copy_from_slice(&KERNEL_CS.to_le_bytes());
    g[5] = 0x8e | (dpl << 5); // present, 64-bit interrupt gate
    g[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    g[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
    g
}

fn segment(selector: u16, code: bool, dpl: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl,
        db: if code { 0 } else { 1 },
        s: 1,
        l: if code { 1 } else { 0 },
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

fn null_segment() -> kvm_segment {
    kvm_segment { unusable: 1, ..Default::default() }
}

/// Special registers for the first entry: ring 0 at the `iretq`, from
/// where the VMM's iret frame drops to the program's entry point at CPL3.
pub fn initial_sregs(mut sregs: kvm_sregs, cr3: u64, features: &CpuFeatures) -> kvm_sregs {
    sregs.cs = segment(KERNEL_CS, true, 0);
    sregs.ss = segment(KERNEL_DS, false, 0);
    sregs.ds = null_segment();
    sregs.es = null_segment();
    sregs.fs = null_segment();
    sregs.gs = null_segment();
    sregs.tr = kvm_segment {
        base: TSS_ADDR,
        limit: TSS_LIMIT as u32,
        selector: TSS_SELECTOR,
        type_: 0xb, // busy 64-bit TSS
        present: 1,
        ..Default::default()
    };
    sregs.ldt = null_segment();
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT_ENTRIES * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = (IDT_ENTRIES * 16 - 1) as u16;
    sregs.cr0 = CR0;
    sregs.cr3 = cr3;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    if features.xsave {
        sregs.cr4 |= CR4_OSXSAVE;
    }
    if features.fsgsbase {
        sregs.cr4 |= CR4_FSGSBASE;
    }
    sregs.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
    sregs
}

/// The MSRs `syscall` needs, and the rest at their Linux values.
pub fn initial_msrs() -> Msrs {
    let star = ((USER32_CS as u64) << 48) | ((KERNEL_CS as u64) << 32);
    let lstar = RING0_CODE_ADDR + agent::SYSCALL_ENTRY as u64;
    let entries = [
        (MSR_STAR, star),
        (MSR_LSTAR, lstar),
        (MSR_CSTAR, lstar),
        (MSR_SYSCALL_MASK, SYSCALL_MASK),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_FS_BASE, 0),
        (MSR_GS_BASE, 0),
        (MSR_IA32_MISC_ENABLE, 1), // fast strings
    ];
    Msrs::from_entries(
        &entries.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect::<Vec<_>>(),
    )
    .expect("fixed number of MSRs")
}

pub fn initial_xcrs(features: &CpuFeatures) -> kvm_xcrs {
    let mut xcrs = kvm_xcrs { nr_xcrs: 1, ..Default::default() };
    xcrs.xcrs[0].xcr = 0;
    xcrs.xcrs[0].value = features.xcr0;
    xcrs
}

/// The CPUID a job sees: what KVM supports, with the topology of a
/// machine with one CPU (what nproc, /proc/cpuinfo and
/// /sys/devices/system/cpu tell the job too).
pub fn job_cpuid(mut cpuid: CpuId) -> CpuId {
    for e in cpuid.as_mut_slice() {
        one_cpu_topology(e);
    }
    cpuid
}

fn one_cpu_topology(e: &mut kvm_bindings::kvm_cpuid_entry2) {
    match e.function {
        // One logical processor, initial APIC ID 0.
        1 => {
            e.ebx &= 0x0000_ffff;
            e.ebx |= 1 << 16;
        }
        // Deterministic cache parameters: one thread shares each cache,
        // one core in the package.
        4 => e.eax &= 0x3fff,
        // Extended topology (Intel's and the v2 leaf): one logical
        // processor at each level, x2APIC ID 0. Level type 0 (past the
        // last level) stays all zero but for the subleaf number.
        0xb | 0x1f => {
            if (e.ecx >> 8) & 0xff != 0 {
                e.ebx = (e.ebx & !0xffff) | 1;
            }
            e.edx = 0;
        }
        // AMD: one core (NC = 0), one thread per core, node 0.
        0x8000_0008 => e.ecx &= !0xff,
        0x8000_001e => {
            e.eax = 0;
            e.ebx &= !0xff_ff;
            e.ecx &= !0xff;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_descriptor_encodes_base_and_limit() {
        let (lo, hi) = tss_descriptor(0x1234_5678_9abc_def0, 0x67);
        assert_eq!(lo & 0xffff, 0x67);
        assert_eq!((lo >> 16) & 0xff_ffff, 0xbc_def0);
        assert_eq!((lo >> 56) & 0xff, 0x9a);
        assert_eq!(hi, 0x1234_5678);
        assert_eq!((lo >> 40) & 0xff, 0x89);
    }

    #[test]
    fn cpuid_describes_one_cpu() {
        use kvm_bindings::kvm_cpuid_entry2;
        let entry = |function, index, eax, ebx, ecx, edx| kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        };
        // A 2-thread, 8-core host as KVM reports it.
        let mut leaves = [
            entry(1, 0, 0xa20f10, 0x0310_0800, 0, 0x178b_fbff),
            entry(4, 0, 0x1c00_4121, 0x01c0_003f, 0x3f, 0),
            entry(0xb, 0, 1, 2, 0x100, 3),
            entry(0xb, 1, 4, 16, 0x201, 3),
            entry(0xb, 2, 0, 0, 2, 3),
            entry(0x8000_0008, 0, 0x3030, 0, 0x400f, 0),
            entry(0x8000_001e, 0, 3, 0x0101, 0x0300, 0),
        ];
        for e in leaves.iter_mut() {
            one_cpu_topology(e);
        }
        assert_eq!(leaves[0].ebx, 0x0001_0800, "leaf 1: one logical processor, APIC ID 0");
        assert_eq!(leaves[0].edx, 0x178b_fbff, "features untouched");
        assert_eq!(leaves[1].eax, 0x0121, "leaf 4: nothing shared");
        assert_eq!(leaves[1].ebx, 0x01c0_003f, "cache geometry untouched");
        assert_eq!((leaves[2].ebx, leaves[2].edx, leaves[2].ecx), (1, 0, 0x100));
        assert_eq!((leaves[3].ebx, leaves[3].edx, leaves[3].ecx), (1, 0, 0x201));
        assert_eq!((leaves[4].ebx, leaves[4].ecx), (0, 2), "the last level stays invalid");
        assert_eq!(leaves[5].ecx, 0x4000);
        assert_eq!((leaves[6].eax, leaves[6].ebx, leaves[6].ecx), (0, 0, 0x300), "AMD: node 0, one thread per core");
    }

    #[test]
    fn idt_gate_points_at_stub() {
        let g = idt_gate(0x4018, 3);
        assert_eq!(u16::from_le_bytes([g[0], g[1]]), 0x4018);
        assert_eq!(u16::from_le_bytes([g[2], g[3]]), KERNEL_CS);
        assert_eq!(g[5], 0xee);
    }
}
