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
//! shared object laid out as Linux's is where the lookups care: a SysV
//! hash table, the symbols under their `__vdso_` names (global) and plain
//! names (weak), and symbol versions (every symbol at LINUX_2.6, index 2;
//! index 1 the base definition named after the soname). Go's runtime
//! requires the versions (it reads DT_VERDEF unconditionally), glibc's
//! dl_vdso_vsym checks them once its loader has read the version tables,
//! musl's vdsosym checks them when DT_VERSYM is present.

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
    /// Not read by the vDSO: the job's struct utsname (its home's, six
    /// fields of 65 bytes), kept here so that it travels with the job's
    /// memory (the VMM fills it when the job starts).
    pub const UTSNAME: usize = 0x100;
    pub const UTSNAME_LEN: usize = 390;
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
    // int getcpu(unsigned *cpu, unsigned *node, void *cache): the job has
    // one vCPU, number 0, on node 0.
    ".balign 16",
    ".globl mosvm_vdso_getcpu",
    "mosvm_vdso_getcpu:",
    "    test rdi, rdi",
    "    jz .Lgetcpu_node",
    "    mov dword ptr [rdi], 0",
    ".Lgetcpu_node:",
    "    test rsi, rsi",
    "    jz .Lgetcpu_done",
    "    mov dword ptr [rsi], 0",
    ".Lgetcpu_done:",
    "    xor eax, eax",
    "    ret",
    // int clock_getres(clockid_t id, struct timespec *res): rare enough to
    // leave to the VMM, which knows every clock's resolution.
    ".balign 16",
    ".globl mosvm_vdso_clock_getres",
    "mosvm_vdso_clock_getres:",
    "    mov eax, 229",
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
    static mosvm_vdso_getcpu: u8;
    static mosvm_vdso_clock_getres: u8;
}

/// The entry points, by the names Linux's x86-64 vDSO exports them under.
const ENTRIES: usize = 5;

/// The vDSO's machine code and the offsets of its entry points in it.
fn code() -> (&'static [u8], [(&'static str, usize); ENTRIES]) {
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
                ("getcpu", at(core::ptr::addr_of!(mosvm_vdso_getcpu))),
                ("clock_getres", at(core::ptr::addr_of!(mosvm_vdso_clock_getres))),
            ],
        )
    }
}

/// Where the code starts in the image (the tables fill the space before).
const CODE_OFFSET: usize = 0x800;

/// The version every symbol is defined at, as on Linux/x86-64.
pub const VERSION: &str = "LINUX_2.6";
/// The vDSO's soname (also the name of its base version definition).
pub const SONAME: &str = "linux-vdso.so.1";
/// The version index of [`VERSION`] (1 is the base definition).
const VERSION_INDEX: u16 = 2;

const DT_NULL: u64 = 0;
const DT_HASH: u64 = 4;
const DT_STRTAB: u64 = 5;
const DT_SYMTAB: u64 = 6;
const DT_STRSZ: u64 = 10;
const DT_SYMENT: u64 = 11;
const DT_SONAME: u64 = 14;
const DT_VERSYM: u64 = 0x6fff_fff0;
const DT_VERDEF: u64 = 0x6fff_fffc;
const DT_VERDEFNUM: u64 = 0x6fff_fffd;
const STB_GLOBAL: u8 = 1;
const STB_WEAK: u8 = 2;
const STT_FUNC: u8 = 2;
const VER_FLG_BASE: u16 = 1;

/// The SysV ELF hash (DT_HASH buckets, and vd_hash of a version definition).
pub fn elf_hash(name: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &c in name {
        h = (h << 4).wrapping_add(c as u32);
        let g = h & 0xf000_0000;
        if g != 0 {
            h ^= g >> 24;
        }
        h &= !g;
    }
    h
}

fn put(b: &mut [u8], at: usize, bytes: &[u8]) {
    b[at..at + bytes.len()].copy_from_slice(bytes);
}

fn align(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// The vDSO image, to be placed at [`VDSO_ADDR`]. Addresses in it are
/// relative to its start, as in Linux's vDSO (libc adds the load address).
pub fn image() -> Vec<u8> {
    let (text, entries) = code();
    let mut img = vec![0u8; VDSO_SIZE];
    assert!(CODE_OFFSET + text.len() <= VDSO_SIZE, "vDSO code too large");
    put(&mut img, CODE_OFFSET, text);

    // Strings: each entry point as __vdso_NAME (global) and NAME (weak),
    // then the soname and the version name.
    let mut strtab = vec![0u8];
    let mut add_str = |s: &[u8]| {
        let at = strtab.len();
        strtab.extend_from_slice(s);
        strtab.push(0);
        at
    };
    // (name offset, name, binding, value); index 0 is the null symbol.
    let mut syms: Vec<(usize, Vec<u8>, u8, usize)> = Vec::new();
    for (name, off) in entries {
        let vdso_name = [b"__vdso_", name.as_bytes()].concat();
        syms.push((add_str(&vdso_name), vdso_name, STB_GLOBAL, CODE_OFFSET + off));
        syms.push((add_str(name.as_bytes()), name.as_bytes().to_vec(), STB_WEAK, CODE_OFFSET + off));
    }
    let soname = add_str(SONAME.as_bytes());
    let version = add_str(VERSION.as_bytes());
    let nsyms = syms.len() + 1;

    const PHDRS: usize = 64;
    const NPHDRS: usize = 2;
    let nbucket = nsyms / 2 + 1;
    let hash = PHDRS + NPHDRS * 56;
    let symtab = align(hash + 4 * (2 + nbucket + nsyms), 8);
    let strtab_at = symtab + 24 * nsyms;
    let versym = align(strtab_at + strtab.len(), 2);
    let verdef = align(versym + 2 * nsyms, 8);
    // Two definitions (base, LINUX_2.6), each a Verdef and one Verdaux.
    const VERDEF_SIZE: usize = 20 + 8;
    let dynamic = align(verdef + 2 * VERDEF_SIZE, 8);
    let dyn_entries: [(u64, u64); 10] = [
        (DT_SONAME, soname as u64),
        (DT_HASH, hash as u64),
        (DT_STRTAB, strtab_at as u64),
        (DT_SYMTAB, symtab as u64),
        (DT_STRSZ, strtab.len() as u64),
        (DT_SYMENT, 24),
        (DT_VERSYM, versym as u64),
        (DT_VERDEF, verdef as u64),
        (DT_VERDEFNUM, 2),
        (DT_NULL, 0),
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
    put(&mut img, 56, &(NPHDRS as u16).to_le_bytes()); // e_phnum
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

    // SysV hash: nbucket, nchain, buckets, chains (each bucket a list
    // through the chain array, ended by 0).
    let mut buckets = vec![0u32; nbucket];
    let mut chains = vec![0u32; nsyms];
    for (i, (_, name, _, _)) in syms.iter().enumerate() {
        let index = i + 1;
        let b = elf_hash(name) as usize % nbucket;
        chains[index] = buckets[b];
        buckets[b] = index as u32;
    }
    put(&mut img, hash, &(nbucket as u32).to_le_bytes());
    put(&mut img, hash + 4, &(nsyms as u32).to_le_bytes());
    for (i, v) in buckets.iter().chain(chains.iter()).enumerate() {
        put(&mut img, hash + 8 + 4 * i, &v.to_le_bytes());
    }

    for (i, (name, _, bind, value)) in syms.iter().enumerate() {
        let at = symtab + 24 * (i + 1);
        put(&mut img, at, &(*name as u32).to_le_bytes());
        img[at + 4] = bind << 4 | STT_FUNC;
        put(&mut img, at + 6, &1u16.to_le_bytes()); // defined (not SHN_UNDEF, not SHN_ABS)
        put(&mut img, at + 8, &(*value as u64).to_le_bytes());
        put(&mut img, at + 16, &16u64.to_le_bytes());
        // versym: 0 (local) for the null symbol, LINUX_2.6 for the rest.
        put(&mut img, versym + 2 * (i + 1), &VERSION_INDEX.to_le_bytes());
    }
    put(&mut img, strtab_at, &strtab);

    // Verdef: vd_version, vd_flags, vd_ndx, vd_cnt (u16), vd_hash, vd_aux,
    // vd_next (u32); its Verdaux: vda_name, vda_next (u32).
    let defs = [(VER_FLG_BASE, 1u16, SONAME, soname), (0, VERSION_INDEX, VERSION, version)];
    for (i, (flags, ndx, name, name_at)) in defs.iter().enumerate() {
        let at = verdef + i * VERDEF_SIZE;
        put(&mut img, at, &1u16.to_le_bytes());
        put(&mut img, at + 2, &flags.to_le_bytes());
        put(&mut img, at + 4, &ndx.to_le_bytes());
        put(&mut img, at + 6, &1u16.to_le_bytes());
        put(&mut img, at + 8, &elf_hash(name.as_bytes()).to_le_bytes());
        put(&mut img, at + 12, &20u32.to_le_bytes());
        let next = if i + 1 < defs.len() { VERDEF_SIZE as u32 } else { 0 };
        put(&mut img, at + 16, &next.to_le_bytes());
        put(&mut img, at + 20, &(*name_at as u32).to_le_bytes());
        put(&mut img, at + 24, &0u32.to_le_bytes());
    }
    for (i, (tag, val)) in dyn_entries.iter().enumerate() {
        put(&mut img, dynamic + 16 * i, &tag.to_le_bytes());
        put(&mut img, dynamic + 16 * i + 8, &val.to_le_bytes());
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }
    fn cstr(b: &[u8], at: usize) -> &[u8] {
        let end = b[at..].iter().position(|&c| c == 0).unwrap();
        &b[at..at + end]
    }

    /// The dynamic table's entries, found through PT_DYNAMIC as every
    /// parser finds them.
    struct Dynamic {
        hash: usize,
        strtab: usize,
        symtab: usize,
        versym: Option<usize>,
        verdef: Option<usize>,
        verdefnum: u64,
        soname: Option<usize>,
    }

    fn dynamic(img: &[u8]) -> Dynamic {
        let phoff = u64_at(img, 32) as usize;
        let phnum = u16_at(img, 56) as usize;
        let mut dynv = None;
        let mut load = None;
        for i in 0..phnum {
            let p = phoff + 56 * i;
            match u32_at(img, p) {
                1 => load = Some(u64_at(img, p + 8) as i64 - u64_at(img, p + 16) as i64),
                2 => dynv = Some(u64_at(img, p + 8) as usize),
                _ => {}
            }
        }
        assert_eq!(load, Some(0), "PT_LOAD: offsets are addresses");
        let mut d = Dynamic { hash: 0, strtab: 0, symtab: 0, versym: None, verdef: None, verdefnum: 0, soname: None };
        let mut i = dynv.expect("PT_DYNAMIC");
        while u64_at(img, i) != DT_NULL {
            let v = u64_at(img, i + 8);
            match u64_at(img, i) {
                DT_HASH => d.hash = v as usize,
                DT_STRTAB => d.strtab = v as usize,
                DT_SYMTAB => d.symtab = v as usize,
                DT_VERSYM => d.versym = Some(v as usize),
                DT_VERDEF => d.verdef = Some(v as usize),
                DT_VERDEFNUM => d.verdefnum = v,
                DT_SONAME => d.soname = Some(v as usize),
                _ => {}
            }
            i += 16;
        }
        d
    }

    /// The version definitions: (flags, index, hash, name).
    fn verdefs(img: &[u8], d: &Dynamic) -> Vec<(u16, u16, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = d.verdef.expect("DT_VERDEF");
        loop {
            assert_eq!(u16_at(img, at), 1, "vd_version");
            let aux = at + u32_at(img, at + 12) as usize;
            let name = cstr(img, d.strtab + u32_at(img, aux) as usize).to_vec();
            out.push((u16_at(img, at + 2), u16_at(img, at + 4), u32_at(img, at + 8), name));
            let next = u32_at(img, at + 16) as usize;
            if next == 0 {
                break;
            }
            at += next;
        }
        out
    }

    fn sym(img: &[u8], d: &Dynamic, i: usize) -> (Vec<u8>, u8, u16, u64) {
        let at = d.symtab + 24 * i;
        (cstr(img, d.strtab + u32_at(img, at) as usize).to_vec(), img[at + 4], u16_at(img, at + 6), u64_at(img, at + 8))
    }

    /// Go's runtime (vdso_linux.go): the version's index from the
    /// definitions by hash and name, then the hash chain of the symbol's
    /// ELF hash, accepting a defined global or weak function at that index.
    fn lookup_go(img: &[u8], name: &str) -> Option<u64> {
        let d = dynamic(img);
        let defs = verdefs(img, &d);
        let version = defs
            .iter()
            .find(|(flags, _, hash, n)| flags & VER_FLG_BASE == 0 && *hash == 0x3ae75f6 && n == b"LINUX_2.6")
            .map(|(_, ndx, _, _)| ndx & 0x7fff)?;
        let nbucket = u32_at(img, d.hash) as usize;
        let bucket = |i: usize| u32_at(img, d.hash + 8 + 4 * i) as usize;
        let chain = |i: usize| u32_at(img, d.hash + 8 + 4 * (nbucket + i)) as usize;
        let mut s = bucket(elf_hash(name.as_bytes()) as usize % nbucket);
        while s != 0 {
            let (n, info, shndx, value) = sym(img, &d, s);
            let versym = u16_at(img, d.versym.unwrap() + 2 * s) & 0x7fff;
            if n == name.as_bytes()
                && info & 0xf == STT_FUNC
                && matches!(info >> 4, 1 | 2)
                && shndx != 0
                && versym == version
            {
                return Some(value);
            }
            s = chain(s);
        }
        None
    }

    /// musl's vdsosym: every symbol in turn (nchain of them), with the
    /// version checked by index against the named definition.
    fn lookup_musl(img: &[u8], vername: &str, name: &str) -> Option<u64> {
        let d = dynamic(img);
        let nsyms = u32_at(img, d.hash + 4) as usize;
        let defs = verdefs(img, &d);
        (0..nsyms).find_map(|i| {
            let (n, info, shndx, value) = sym(img, &d, i);
            let ok_type = (0..=2).contains(&(info & 0xf));
            let ok_bind = matches!(info >> 4, 1 | 2);
            if !ok_type || !ok_bind || shndx == 0 || n != name.as_bytes() {
                return None;
            }
            let vsym = u16_at(img, d.versym? + 2 * i) & 0x7fff;
            let def = defs.iter().find(|(flags, ndx, _, _)| flags & VER_FLG_BASE == 0 && ndx & 0x7fff == vsym)?;
            (def.3 == vername.as_bytes()).then_some(value)
        })
    }

    #[test]
    fn elf_hash_matches_known_values() {
        // The hashes Go's runtime and glibc carry for these names.
        assert_eq!(elf_hash(b"LINUX_2.6"), 0x3ae75f6);
        assert_eq!(elf_hash(b"__vdso_gettimeofday"), 0x315ca59);
        assert_eq!(elf_hash(b"__vdso_clock_gettime"), 0xd35ec75);
    }

    #[test]
    fn versions_are_linux_s() {
        let img = image();
        let d = dynamic(&img);
        assert_eq!(cstr(&img, d.strtab + d.soname.unwrap()), SONAME.as_bytes());
        let defs = verdefs(&img, &d);
        assert_eq!(d.verdefnum as usize, defs.len());
        assert_eq!(
            defs,
            vec![
                (VER_FLG_BASE, 1, elf_hash(b"linux-vdso.so.1"), b"linux-vdso.so.1".to_vec()),
                (0, 2, 0x3ae75f6, b"LINUX_2.6".to_vec())
            ]
        );
        let nsyms = u32_at(&img, d.hash + 4) as usize;
        assert_eq!(u16_at(&img, d.versym.unwrap()), 0, "the null symbol is local");
        for i in 1..nsyms {
            assert_eq!(u16_at(&img, d.versym.unwrap() + 2 * i), 2, "symbol {i} at LINUX_2.6");
        }
    }

    #[test]
    fn image_exports_the_functions_linux_does() {
        let img = image();
        assert_eq!(&img[..4], b"\x7fELF");
        let (text, entries) = code();
        for (name, off) in entries {
            for full in [format!("__vdso_{name}"), name.to_string()] {
                let go = lookup_go(&img, &full).unwrap_or_else(|| panic!("Go finds no {full}"));
                let musl = lookup_musl(&img, VERSION, &full).unwrap_or_else(|| panic!("musl finds no {full}"));
                assert_eq!(go, musl);
                assert_eq!(go as usize, CODE_OFFSET + off, "{full}");
                assert!((go as usize) < CODE_OFFSET + text.len());
            }
        }
        // Plain names are weak, __vdso_ names global, as on Linux.
        let d = dynamic(&img);
        assert_eq!(sym(&img, &d, 1).0, b"__vdso_clock_gettime");
        assert_eq!(sym(&img, &d, 1).1 >> 4, STB_GLOBAL);
        assert_eq!(sym(&img, &d, 2).1 >> 4, STB_WEAK);
        assert_eq!(lookup_go(&img, "__vdso_getrandom"), None);
        assert_eq!(lookup_musl(&img, "LINUX_2.5", "__vdso_clock_gettime"), None);
    }
}
