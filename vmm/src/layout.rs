//! Where everything lives in a job's guest.
//!
//! Guest virtual addresses equal guest physical addresses: all RAM is mapped
//! once, at start, and never remapped (shadow paging on nested KVM caches the
//! tables; changing them under a running vCPU needs a forced resync). The low
//! 2 MiB hold the machine (descriptor tables, the ring-0 trampolines and
//! stack, page tables) and are not accessible to the job; the job owns every
//! byte from [`USER_BASE`] to the end of RAM.

/// Guest page size.
pub const PAGE_SIZE: u64 = 4096;
/// Large page size used to map the job's RAM.
pub const LARGE_PAGE_SIZE: u64 = 2 << 20;

/// Page 0 stays unmapped so that NULL dereferences fault.
pub const GDT_ADDR: u64 = 0x1000;
pub const IDT_ADDR: u64 = 0x2000;
pub const TSS_ADDR: u64 = 0x3000;
/// The ring-0 trampolines (`agent::code_page`).
pub const RING0_CODE_ADDR: u64 = 0x4000;
/// The ring-0 stack: exception frames and the iret frames the VMM writes.
pub const RING0_STACK_ADDR: u64 = 0x5000;
pub const RING0_STACK_TOP: u64 = 0x7000;
/// The vDSO's data page (read-only to the job) and its code (see
/// `agent::vdso`).
pub const VVAR_ADDR: u64 = agent::vdso::VVAR_ADDR;
pub const VDSO_ADDR: u64 = agent::vdso::VDSO_ADDR;
pub const VDSO_END: u64 = VDSO_ADDR + agent::vdso::VDSO_SIZE as u64;
/// Page tables are allocated from here up to [`PAGE_TABLES_END`]. They are
/// not mapped: only the MMU reads them.
pub const PAGE_TABLES_ADDR: u64 = 0x10000;
pub const PAGE_TABLES_END: u64 = USER_BASE;

/// First byte the job may use.
pub const USER_BASE: u64 = 0x20_0000;
/// Where a static-pie program is loaded (the usual non-PIE link address).
pub const PIE_BASE: u64 = 0x40_0000;

/// Smallest and largest guest RAM.
pub const MIN_MEM: u64 = 16 << 20;
pub const MAX_MEM: u64 = 64 << 30;

/// The user stack may grow this far below its top (RLIMIT_STACK).
pub const STACK_LIMIT: u64 = 8 << 20;

/// GDT selectors, laid out as Linux does so that a job sees the same
/// segment registers (cs = 0x33, ss = 0x2b) and `syscall`'s STAR layout works.
pub const KERNEL_CS: u16 = 0x10;
pub const KERNEL_DS: u16 = 0x18;
pub const USER32_CS: u16 = 0x23;
pub const USER_DS: u16 = 0x2b;
pub const USER_CS: u16 = 0x33;
pub const TSS_SELECTOR: u16 = 0x40;

/// The job's part of the address space for a given RAM size.
///
/// ```text
/// USER_BASE .. program, heap, mmap area .. guard | stack .. mem_end
/// ```
/// The guard block below the stack is not mapped, so a stack overflow
/// faults (SIGSEGV) as at Linux's stack guard gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserLayout {
    /// End of RAM (exclusive); also the initial stack top.
    pub mem_end: u64,
    /// Lowest address the stack may grow down to.
    pub stack_limit: u64,
    /// Start of the unmapped guard block below the stack; the mmap area ends here.
    pub guard: u64,
}

impl UserLayout {
    /// `mem_size` is a multiple of [`LARGE_PAGE_SIZE`], at least [`MIN_MEM`].
    pub fn new(mem_size: u64) -> Self {
        let stack = STACK_LIMIT.min(mem_size / 4) & !(LARGE_PAGE_SIZE - 1);
        UserLayout { mem_end: mem_size, stack_limit: mem_size - stack, guard: mem_size - stack - LARGE_PAGE_SIZE }
    }

    /// Is `[addr, addr + len)` inside the job's mapped memory?
    #[inline]
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        match addr.checked_add(len) {
            Some(end) => addr >= USER_BASE && end <= self.mem_end && (end <= self.guard || addr >= self.stack_limit),
            None => false,
        }
    }
}

pub const fn page_floor(addr: u64) -> u64 {
    addr & !(PAGE_SIZE - 1)
}

pub const fn page_ceil(addr: u64) -> u64 {
    (addr + PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}
