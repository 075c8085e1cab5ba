//! The job's vDSO: clock_gettime, gettimeofday and time without leaving the
//! VM.
//!
//! A system call costs an exit (tens of µs on nested KVM); these calls are
//! made often enough to matter, and need nothing the VMM has that a page
//! of data cannot carry. The job's clocks are a linear function of the
//! TSC (which the guest reads natively and which equals the host's), with
//! parameters the VMM keeps in the vvar page:
//!
//! ```text
//! monotonic ns = mono_base + ((tsc - tsc_base) * mult) >> 32
//! realtime ns  = monotonic ns + real_offset
//! ```
//!
//! The VMM computes its own clock with the same integer formula, so the
//! two never disagree. It rewrites the page only while the vCPU is out
//! (a move, a wall-clock correction) and bumps `seq` each time; a reader
//! interrupted between its reads sees `seq` change and reads again. With
//! `enabled` 0 every function makes the real system call.
//!
//! The code is fixed machine code that addresses the vvar page absolutely
//! (guest addresses are fixed); the image around it is a minimal ELF
//! shared object that musl's and glibc's vDSO lookups accept (DT_HASH,
//! DT_SYMTAB, DT_STRTAB, no versions, which both accept).

/// Guest address of the vvar page (read-only to the job).
pub const VVAR_ADDR: u64 = 0x8000;
/// Guest address of the vDSO image (AT_SYSINFO_EHDR).
pub const VDSO_ADDR: u64 = 0x9000;
/// The vDSO image's size (pages mapped read and execute).
pub const VDSO_SIZE: usize = 0x2000;

/// Offsets of the vvar fields (each a little-endian u64).
pub mod vvar {
    pub const SEQ: usize = 0;
    pub const ENABLED: usize = 8;
    pub const TSC_BASE: usize = 16;
    pub const MONO_BASE: usize = 24;
    pub const MULT: usize = 32;
    pub const REAL_OFFSET: usize = 40;
}

core::arch::global_asm!(
    ".pushsection .text.mosvm_vdso,\"ax\",@progbits",
    ".balign 16",
    ".globl mosvm_vdso_start",
    "mosvm_vdso_start:",
    // rax = the job's clock in ns: monotonic, plus the realtime offset if
    // r9d != 0. Clobbers rcx, rdx, r8.
    "mosvm_vdso_now:",
    ".Lnow_retry:",
    "    mov r8, qword ptr [{seq}]",
    // Ordered after the loads before it, as Linux's vDSO reads the TSC.
    "    lfence",
    "    rdtsc",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    sub rax, qword ptr [{tsc_base}]",
    "    jae .Lnow_after",
    "    xor eax, eax",
    ".Lnow_after:",
    "    mul qword ptr [{mult}]",
    "    shrd rax, rdx, 32",
    "    add rax, qword ptr [{mono_base}]",
    "    test r9d, r9d",
    "    jz .Lnow_mono",
    "    add rax, qword ptr [{real_offset}]",
    ".Lnow_mono:",
    "    cmp r8, qword ptr [{seq}]",
    "    jne .Lnow_retry",
    "    ret",
    // int clock_gettime(clockid_t id, struct timespec *ts)
    ".balign 16",
    ".globl mosvm_vdso_clock_gettime",
    "mosvm_vdso_clock_gettime:",
    "    cmp qword ptr [{enabled}], 0",
    "    je .Lcg_sys",
    "    xor r9d, r9d",
    "    cmp edi, 1", // CLOCK_MONOTONIC
    "    je .Lcg_read",
    "    cmp edi, 4", // CLOCK_MONOTONIC_RAW
    "    je .Lcg_read",
    "    cmp edi, 6", // CLOCK_MONOTONIC_COARSE
    "    je .Lcg_read",
    "    cmp edi, 7", // CLOCK_BOOTTIME
    "    je .Lcg_read",
    "    mov r9d, 1",
    "    test edi, edi", // CLOCK_REALTIME
    "    je .Lcg_read",
    "    cmp edi, 5", // CLOCK_REALTIME_COARSE
    "    je .Lcg_read",
    ".Lcg_sys:",
    "    mov eax, 228",
    "    syscall",
    "    ret",
    ".Lcg_read:",
    "    call mosvm_vdso_now",
    "    mov rcx, 1000000000",
    "    xor edx, edx",
    "    div rcx",
    "    mov qword ptr [rsi], rax",
    "    mov qword ptr [rsi + 8], rdx",
    "    xor eax, eax",
    "    ret",
    // int gettimeofday(struct timeval *tv, struct timezone *tz)
    ".balign 16",
    ".globl mosvm_vdso_gettimeofday",
    "mosvm_vdso_gettimeofday:",
    "    cmp qword ptr [{enabled}], 0",
    "    je .Lgtod_sys",
    "    test rsi, rsi",
    "    jnz .Lgtod_sys",
    "    test rdi, rdi",
    "    jz .Lgtod_done",
    "    mov r9d, 1",
    "    call mosvm_vdso_now",
    "    mov rcx, 1000000000",
    "    xor edx, edx",
    "    div rcx",
    "    mov qword ptr [rdi], rax",
    "    mov rax, rdx",
    "    mov rcx, 1000",
    "    xor edx, edx",
    "    div rcx",
    "    mov qword ptr [rdi + 8], rax",
    ".Lgtod_done:",
    "    xor eax, eax",
    "    ret",
    ".Lgtod_sys:",
    "    mov eax, 96",
    "    syscall",
    "    ret",
    // time_t time(time_t *t)
    ".balign 16",
    ".globl mosvm_vdso_time",
    "mosvm_vdso_time:",
    "    cmp qword ptr [{enabled}], 0",
    "    je .Ltime_sys",
    "    mov r9d, 1",
    "    call mosvm_vdso_now",
    "    mov rcx, 1000000000",
    "    xor edx, edx",
    "    div rcx",
    "    test rdi, rdi",
    "    jz .Ltime_done",
    "    mov qword ptr [rdi], rax",
    ".Ltime_done:",
    "    ret",
    ".Ltime_sys:",
    "    mov eax, 201",
    "    syscall",
    "    ret",
    ".globl mosvm_vdso_end",
    "mosvm_vdso_end:",
    ".popsection",
    seq = const VVAR_ADDR as usize + vvar::SEQ,
    enabled = const VVAR_ADDR as usize + vvar::ENABLED,
    tsc_base = const VVAR_ADDR as usize + vvar::TSC_BASE,
    mono_base = const VVAR_ADDR as usize + vvar::MONO_BASE,
    mult = const VVAR_ADDR as usize + vvar::MULT,
    real_offset = const VVAR_ADDR as usize + vvar::REAL_OFFSET,
);

extern "C" {
    static mosvm_vdso_start: u8;
    static mosvm_vdso_end: u8;
    static mosvm_vdso_clock_gettime: u8;
    static mosvm_vdso_gettimeofday: u8;
    static mosvm_vdso_time: u8;
}

/// The vDSO's machine code and the offsets of its entry points in it.
fn code() -> (&'static [u8], [(&'static str, usize); 3]) {
    // SAFETY: the symbols are labels of the assembly above, in one section
    // in this order; only their addresses are taken.
    unsafe {
        let start = core::ptr::addr_of!(mosvm_vdso_start);
        let len = core::ptr::addr_of!(mosvm_vdso_end) as usize - start as usize;
        let at = |p: *const u8| p as usize - start as usize;
        (
            core::slice::from_raw_parts(start, len),
            [
                ("clock_gettime", at(core::ptr::addr_of!(mosvm_vdso_clock_gettime))),
                ("gettimeofday", at(core::ptr::addr_of!(mosvm_vdso_gettimeofday))),
                ("time", at(core::ptr::addr_of!(mosvm_vdso_time))),
            ],
        )
    }
}

/// Where the code starts in the image.
const CODE_OFFSET: usize = 0x400;

fn put(b: &mut [u8], at: usize, bytes: &[u8]) {
    b[at..at + bytes.len()].copy_from_slice(bytes);
}

/// The vDSO image, to be placed at [`VDSO_ADDR`]. Addresses in it are
/// relative to its start, as in Linux's vDSO (libc adds the load address).
pub fn image() -> Vec<u8> {
    let (text, entries) = code();
    let mut img = vec![0u8; VDSO_SIZE];
    assert!(CODE_OFFSET + text.len() <= VDSO_SIZE, "vDSO code too large");
    put(&mut img, CODE_OFFSET, text);

    // Each entry point under its __vdso_ name and its plain name, as Linux has them.
    let mut strtab = vec![0u8];
    let mut syms: Vec<(usize, usize)> = Vec::new(); // (name offset, value)
    for (name, off) in entries {
        for prefix in ["__vdso_", ""] {
            syms.push((strtab.len(), CODE_OFFSET + off));
            strtab.extend_from_slice(prefix.as_bytes());
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
        }
    }
    let soname = strtab.len();
    strtab.extend_from_slice(b"linux-vdso.so.1\0");

    let nsyms = syms.len() + 1;
    const PHDRS: usize = 64;
    const HASH: usize = PHDRS + 2 * 56;
    let symtab = HASH + 8 + 4 + 4 * nsyms;
    let symtab = (symtab + 7) & !7;
    let strtab_at = symtab + 24 * nsyms;
    let dynamic = (strtab_at + strtab.len() + 7) & !7;
    let dyn_entries: [(u64, u64); 7] = [
        (4, HASH as u64),          // DT_HASH
        (5, strtab_at as u64),     // DT_STRTAB
        (6, symtab as u64),        // DT_SYMTAB
        (10, strtab.len() as u64), // DT_STRSZ
        (11, 24),                  // DT_SYMENT
        (14, soname as u64),       // DT_SONAME
        (0, 0),                    // DT_NULL
    ];
    assert!(dynamic + 16 * dyn_entries.len() <= CODE_OFFSET, "vDSO tables overlap its code");

    // ELF header: 64-bit, little endian, ET_DYN, x86-64.
    put(&mut img, 0, &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    put(&mut img, 16, &3u16.to_le_bytes());
    put(&mut img, 18, &62u16.to_le_bytes());
    put(&mut img, 20, &1u32.to_le_bytes());
    put(&mut img, 32, &(PHDRS as u64).to_le_bytes()); // e_phoff
    put(&mut img, 52, &64u16.to_le_bytes()); // e_ehsize
    put(&mut img, 54, &56u16.to_le_bytes()); // e_phentsize
    put(&mut img, 56, &2u16.to_le_bytes()); // e_phnum
    put(&mut img, 58, &64u16.to_le_bytes()); // e_shentsize

    // PT_LOAD of the whole image (read, execute), PT_DYNAMIC.
    let phdr = |kind: u32, flags: u32, off: u64, size: u64, align: u64| {
        let mut p = [0u8; 56];
        put(&mut p, 0, &kind.to_le_bytes());
        put(&mut p, 4, &flags.to_le_bytes());
        for field in [8, 16, 24] {
            put(&mut p, field, &off.to_le_bytes()); // p_offset, p_vaddr, p_paddr
        }
        put(&mut p, 32, &size.to_le_bytes());
        put(&mut p, 40, &size.to_le_bytes());
        put(&mut p, 48, &align.to_le_bytes());
        p
    };
    put(&mut img, PHDRS, &phdr(1, 5, 0, VDSO_SIZE as u64, 0x1000));
    put(&mut img, PHDRS + 56, &phdr(2, 4, dynamic as u64, 16 * dyn_entries.len() as u64, 8));

    // SysV hash: one bucket holding the chain 1 -> 2 -> ... -> 0.
    put(&mut img, HASH, &1u32.to_le_bytes());
    put(&mut img, HASH + 4, &(nsyms as u32).to_le_bytes());
    put(&mut img, HASH + 8, &1u32.to_le_bytes());
    for i in 1..nsyms {
        let next = if i + 1 < nsyms { i as u32 + 1 } else { 0 };
        put(&mut img, HASH + 12 + 4 * i, &next.to_le_bytes());
    }

    for (i, (name, value)) in syms.iter().enumerate() {
        let at = symtab + 24 * (i + 1);
        put(&mut img, at, &(*name as u32).to_le_bytes());
        img[at + 4] = 0x12; // STB_GLOBAL, STT_FUNC
        put(&mut img, at + 6, &1u16.to_le_bytes()); // defined (not SHN_UNDEF, not SHN_ABS)
        put(&mut img, at + 8, &(*value as u64).to_le_bytes());
        put(&mut img, at + 16, &16u64.to_le_bytes());
    }
    put(&mut img, strtab_at, &strtab);
    for (i, (tag, val)) in dyn_entries.iter().enumerate() {
        put(&mut img, dynamic + 16 * i, &tag.to_le_bytes());
        put(&mut img, dynamic + 16 * i + 8, &val.to_le_bytes());
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// Finds a symbol the way musl's vdsosym does.
    fn lookup(img: &[u8], name: &str) -> Option<u64> {
        let phoff = u64_at(img, 32) as usize;
        let mut dynv = 0;
        for i in 0..2 {
            let p = phoff + 56 * i;
            if u32::from_le_bytes(img[p..p + 4].try_into().unwrap()) == 2 {
                dynv = u64_at(img, p + 8) as usize;
            }
        }
        let (mut strtab, mut symtab, mut hash) = (0, 0, 0);
        let mut i = dynv;
        while u64_at(img, i) != 0 {
            match u64_at(img, i) {
                4 => hash = u64_at(img, i + 8) as usize,
                5 => strtab = u64_at(img, i + 8) as usize,
                6 => symtab = u64_at(img, i + 8) as usize,
                _ => {}
            }
            i += 16;
        }
        let nsyms = u32::from_le_bytes(img[hash + 4..hash + 8].try_into().unwrap()) as usize;
        (1..nsyms).find_map(|s| {
            let at = symtab + 24 * s;
            let n = u32::from_le_bytes(img[at..at + 4].try_into().unwrap()) as usize + strtab;
            let end = img[n..].iter().position(|&c| c == 0).unwrap();
            (&img[n..n + end] == name.as_bytes()).then(|| u64_at(img, at + 8))
        })
    }

    #[test]
    fn image_exports_the_clock_functions() {
        let img = image();
        assert_eq!(&img[..4], b"\x7fELF");
        let (text, _) = code();
        for name in ["__vdso_clock_gettime", "clock_gettime", "__vdso_gettimeofday", "__vdso_time", "time"] {
            let at = lookup(&img, name).unwrap_or_else(|| panic!("{name} missing")) as usize;
            assert!(at >= CODE_OFFSET && at < CODE_OFFSET + text.len(), "{name} at {at:#x}");
        }
        assert_eq!(lookup(&img, "__vdso_getcpu"), None);
    }
}
