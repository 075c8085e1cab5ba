//! Loading an x86-64 Linux ELF (ET_EXEC, or ET_DYN: static-pie, a PIE or
//! a dynamic loader) the way Linux's binfmt_elf maps it.
//!
//! linux-loader's ELF loader is made for kernels (it loads at physical
//! addresses and knows nothing of program headers in memory, page-granular
//! segment mapping or a relocation base), so this is a small loader of our
//! own. It checks everything it reads: a malformed file is an error, never a
//! panic. It reads only the headers and the segments' bytes, from whatever
//! holds the file (`ElfFile`): a host file, whose page-congruent pages are
//! mapped straight into guest RAM, or bytes the job's site read.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use thiserror::Error;

use crate::layout::*;
use crate::memory::GuestRam;
use crate::paging::{ImageRange, Perms};

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
/// Linux refuses more program headers than fit in 64 KiB.
const PHDRS_MAX: u64 = 65536;
/// Linux's limit on the PT_INTERP string (PATH_MAX).
const INTERP_MAX: u64 = 4096;

#[derive(Debug, Error)]
pub enum ElfError {
    #[error("{0} is a script (#!); mosvm runs x86-64 ELF executables, run its interpreter instead")]
    Script(String),
    #[error("{0} is not an ELF executable")]
    NotElf(String),
    #[error("{0} is a 32-bit ELF; mosvm runs 64-bit x86-64 programs")]
    Not64Bit(String),
    #[error("{path} is an ELF for machine {machine}, not x86-64")]
    WrongMachine { path: String, machine: u16 },
    #[error("{path} is not an executable (ELF type {kind})")]
    NotExecutable { path: String, kind: u16 },
    #[error("{path} is malformed: {what}")]
    Malformed { path: String, what: String },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}'s interpreter {interp} cannot be used: {what}")]
    BadInterp { path: String, interp: String, what: String },
    #[error("{path} needs memory at {start:#x}..{end:#x}, outside the guest's {mem} MiB (job memory starts at {USER_BASE:#x}); raise --mem or relink")]
    OutOfRange { path: String, start: u64, end: u64, mem: u64 },
}

/// Where an ELF's bytes come from.
pub trait ElfFile {
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; the range is inside the file.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// Maps the file's whole pages at `[offset, offset + len)` (page
    /// aligned, inside the file's last page) privately at guest address
    /// `gpa`, if this source can; false: copy them instead.
    fn map_into(&self, ram: &GuestRam, gpa: u64, offset: u64, len: u64) -> bool {
        let _ = (ram, gpa, offset, len);
        false
    }
}

impl ElfFile for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let bytes = offset
            .checked_add(buf.len() as u64)
            .and_then(|end| self.get(offset as usize..end as usize))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

impl ElfFile for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
}

/// A host file and its size when it was opened.
pub struct HostFile {
    pub file: std::fs::File,
    pub size: u64,
}

impl HostFile {
    pub fn open(path: &Path) -> std::io::Result<HostFile> {
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
        }
        Ok(HostFile { file, size: meta.len() })
    }
}

impl ElfFile for HostFile {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }
    fn map_into(&self, ram: &GuestRam, gpa: u64, offset: u64, len: u64) -> bool {
        ram.map_file(gpa, len, self.file.as_raw_fd(), offset).is_ok()
    }
}

/// One PT_LOAD segment.
#[derive(Clone, Copy, Debug)]
struct Segment {
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    flags: u32,
}

/// A parsed program, ready to load.
#[derive(Debug, Clone)]
pub struct Program {
    path: String,
    pie: bool,
    entry: u64,
    phoff: u64,
    phnum: u16,
    phdr_vaddr: Option<u64>,
    segments: Vec<Segment>,
    /// PT_INTERP: the dynamic loader to run it with.
    interp: Option<Vec<u8>>,
}

/// Where the program ended up, for the initial stack and the address space.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub entry: u64,
    pub phdr: u64,
    pub phnum: u64,
    pub base: u64,
    /// End of the highest segment: the program break starts here.
    pub end: u64,
    /// Page-aligned ranges with the segments' permissions.
    pub ranges: Vec<ImageRange>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl Program {
    /// Reads and checks the ELF header and program headers of `file`.
    pub fn parse(path: &Path, file: &(impl ElfFile + ?Sized)) -> Result<Program, ElfError> {
        let name = path.display().to_string();
        let malformed = |what: &str| ElfError::Malformed { path: name.clone(), what: what.to_string() };
        let io = |source| ElfError::Io { path: name.clone(), source };
        let size = file.size();
        let mut ehdr = [0u8; EHDR_SIZE];
        let head = size.min(EHDR_SIZE as u64) as usize;
        file.read_exact_at(&mut ehdr[..head], 0).map_err(io)?;
        if ehdr[..head].starts_with(b"#!") {
            return Err(ElfError::Script(name));
        }
        if head < 16 || &ehdr[..4] != b"\x7fELF" {
            return Err(ElfError::NotElf(name));
        }
        if ehdr[4] != 2 {
            return Err(ElfError::Not64Bit(name));
        }
        if ehdr[5] != 1 {
            return Err(malformed("not little-endian"));
        }
        if head < EHDR_SIZE {
            return Err(malformed("truncated ELF header"));
        }
        let kind = u16_at(&ehdr, 16);
        let machine = u16_at(&ehdr, 18);
        if machine != EM_X86_64 {
            return Err(ElfError::WrongMachine { path: name, machine });
        }
        if kind != ET_EXEC && kind != ET_DYN {
            return Err(ElfError::NotExecutable { path: name, kind });
        }
        let entry = u64_at(&ehdr, 24);
        let phoff = u64_at(&ehdr, 32);
        let phentsize = u16_at(&ehdr, 54);
        let phnum = u16_at(&ehdr, 56);
        if phentsize as usize != PHDR_SIZE {
            return Err(malformed("unexpected program header size"));
        }
        let ph_len = phnum as u64 * PHDR_SIZE as u64;
        if ph_len > PHDRS_MAX {
            return Err(malformed("too many program headers"));
        }
        if phoff.checked_add(ph_len).is_none_or(|end| end > size) {
            return Err(malformed("program headers run past the end of the file"));
        }
        let mut phdrs = vec![0u8; ph_len as usize];
        file.read_exact_at(&mut phdrs, phoff).map_err(io)?;
        let mut segments = Vec::new();
        let mut phdr_vaddr = None;
        let mut interp = None;
        for ph in phdrs.chunks_exact(PHDR_SIZE) {
            let p_type = u32_at(ph, 0);
            let flags = u32_at(ph, 4);
            let offset = u64_at(ph, 8);
            let vaddr = u64_at(ph, 16);
            let filesz = u64_at(ph, 32);
            let memsz = u64_at(ph, 40);
            match p_type {
                PT_INTERP => {
                    if interp.is_some() {
                        return Err(malformed("more than one interpreter"));
                    }
                    if !(2..=INTERP_MAX).contains(&filesz) || offset.checked_add(filesz).is_none_or(|e| e > size) {
                        return Err(malformed("bad interpreter name"));
                    }
                    let mut s = vec![0u8; filesz as usize];
                    file.read_exact_at(&mut s, offset).map_err(io)?;
                    // As Linux: the name is NUL-terminated and holds no other NUL.
                    if s.pop() != Some(0) || s.contains(&0) || s.is_empty() {
                        return Err(malformed("bad interpreter name"));
                    }
                    interp = Some(s);
                }
                PT_PHDR => phdr_vaddr = Some(vaddr),
                PT_LOAD if memsz > 0 => {
                    if filesz > memsz {
                        return Err(malformed("segment file size exceeds its memory size"));
                    }
                    if offset.checked_add(filesz).is_none_or(|end| end > size) {
                        return Err(malformed("segment runs past the end of the file"));
                    }
                    if vaddr % PAGE_SIZE != offset % PAGE_SIZE {
                        return Err(malformed("segment address and file offset are not congruent"));
                    }
                    if vaddr.checked_add(memsz).is_none_or(|e| e > MAX_MEM) {
                        return Err(malformed("segment lies outside any guest memory"));
                    }
                    segments.push(Segment { offset, vaddr, filesz, memsz, flags });
                }
                _ => {}
            }
        }
        if segments.is_empty() {
            return Err(malformed("no loadable segments"));
        }
        Ok(Program { path: name, pie: kind == ET_DYN, entry, phoff, phnum, phdr_vaddr, segments, interp })
    }

    /// The interpreter (PT_INTERP) the program asks for, if any.
    pub fn interp(&self) -> Option<&[u8]> {
        self.interp.as_deref()
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The lowest page and the end of the highest segment, unrelocated.
    fn extent(&self) -> (u64, u64) {
        let low = self.segments.iter().map(|s| page_floor(s.vaddr)).min().unwrap_or(0);
        let high = self.segments.iter().map(|s| s.vaddr + s.memsz).max().unwrap_or(0);
        (low, high)
    }

    /// Bytes of address space the loaded segments span.
    pub fn span(&self) -> u64 {
        let (low, high) = self.extent();
        page_ceil(high) - low
    }

    /// The load base for a program whose lowest page goes to `at` (ET_DYN;
    /// an ET_EXEC program stays at its addresses).
    pub fn base_for(&self, at: u64) -> u64 {
        if self.pie {
            at.wrapping_sub(self.extent().0)
        } else {
            0
        }
    }

    /// Checks that the segments, relocated by `base`, fit in the job's
    /// part of `mem_size` bytes of RAM below the stack guard.
    pub fn fits_at(&self, base: u64, mem_size: u64) -> Result<(), ElfError> {
        let guard = UserLayout::new(mem_size).guard;
        for s in &self.segments {
            let start = page_floor(s.vaddr).wrapping_add(base);
            let end = s.vaddr.wrapping_add(base).wrapping_add(s.memsz);
            if start < USER_BASE || end > guard || end < start {
                return Err(ElfError::OutOfRange { path: self.path.clone(), start, end, mem: mem_size >> 20 });
            }
        }
        Ok(())
    }

    /// Checks that the program fits in `mem_size` bytes of guest RAM at
    /// its usual place; returns the load base.
    pub fn fits(&self, mem_size: u64) -> Result<u64, ElfError> {
        let base = self.base_for(PIE_BASE);
        self.fits_at(base, mem_size)?;
        Ok(base)
    }

    /// Checks that `self`, a dynamic loader, can run `program`: an ELF
    /// without an interpreter of its own.
    pub fn check_interp(&self, program: &Program) -> Result<(), ElfError> {
        if self.interp.is_some() {
            return Err(ElfError::BadInterp {
                path: program.path.clone(),
                interp: self.path.clone(),
                what: "it asks for an interpreter itself".into(),
            });
        }
        Ok(())
    }

    /// Places the program (at its usual base) and `interp`, if it has
    /// one, in `mem_size` bytes of RAM: the loader goes at the top of the
    /// mmap area, as Linux puts it at its mmap base, leaving the space
    /// between the program's end and the loader for brk and mmap. Returns
    /// both bases.
    pub fn place(&self, interp: Option<&Program>, mem_size: u64) -> Result<(u64, Option<u64>), ElfError> {
        let base = self.fits(mem_size)?;
        let Some(i) = interp else { return Ok((base, None)) };
        i.check_interp(self)?;
        let guard = UserLayout::new(mem_size).guard;
        let ibase =
            if i.pie {
                let at = guard.checked_sub(i.span()).filter(|&a| a >= USER_BASE).ok_or_else(|| {
                    ElfError::OutOfRange { path: i.path.clone(), start: 0, end: i.span(), mem: mem_size >> 20 }
                })?;
                i.base_for(at)
            } else {
                0
            };
        i.fits_at(ibase, mem_size)?;
        let (plo, phi) = self.extent();
        let (ilo, ihi) = i.extent();
        let (pstart, pend) = (plo.wrapping_add(base), page_ceil(phi.wrapping_add(base)));
        let (istart, iend) = (ilo.wrapping_add(ibase), page_ceil(ihi.wrapping_add(ibase)));
        if pstart < iend && istart < pend {
            return Err(ElfError::BadInterp {
                path: self.path.clone(),
                interp: i.path.clone(),
                what: format!("it overlaps the program ({istart:#x}..{iend:#x} and {pstart:#x}..{pend:#x})"),
            });
        }
        Ok((base, Some(ibase)))
    }

    /// Puts the segments into guest RAM at `base` (checked with
    /// `fits_at`). Like binfmt_elf's file mappings, each segment brings
    /// the whole file pages it starts and ends in, and the part of the last
    /// page past its file size reads as zero when the segment has a bss.
    /// Whole pages are mapped from `file` where it can, else copied.
    pub fn load(&self, ram: &GuestRam, file: &(impl ElfFile + ?Sized), base: u64) -> Result<Loaded, ElfError> {
        self.fits_at(base, ram.size())?;
        let io = |source| ElfError::Io { path: self.path.clone(), source };
        let size = file.size();
        let mut end = 0u64;
        let mut ranges = Vec::with_capacity(self.segments.len());
        for s in &self.segments {
            let start = page_floor(s.vaddr).wrapping_add(base);
            let seg_end = s.vaddr.wrapping_add(base) + s.memsz;
            let file_start = page_floor(s.offset);
            let data_end = s.offset + s.filesz;
            // Whole file pages, then (with a bss) the page the data ends in,
            // whose rest must read as zeros.
            let (whole_end, tail) = if s.memsz > s.filesz {
                (page_floor(data_end), data_end - page_floor(data_end))
            } else {
                (page_ceil(data_end).min(page_ceil(size)), 0)
            };
            if whole_end > file_start {
                let len = whole_end - file_start;
                if !file.map_into(ram, start, file_start, len) {
                    // The last page may be short (the file ends in it).
                    let n = len.min(size - file_start);
                    let mut g = ram.slice_mut(start, len).expect("range checked above");
                    file.read_exact_at(&mut g[..n as usize], file_start).map_err(io)?;
                    g[n as usize..].fill(0);
                }
            }
            if tail > 0 {
                let at = start + (whole_end.max(file_start) - file_start);
                let mut page = [0u8; PAGE_SIZE as usize];
                file.read_exact_at(&mut page[..tail as usize], page_floor(data_end)).map_err(io)?;
                ram.write(at, &page).expect("range checked above");
            }
            end = end.max(seg_end);
            ranges.push(ImageRange {
                start,
                end: page_ceil(seg_end),
                perms: Perms { write: s.flags & PF_W != 0, exec: s.flags & PF_X != 0 },
            });
        }
        // Where the program headers are in memory: PT_PHDR, or the segment
        // that maps them from the file.
        let phdr = match self.phdr_vaddr {
            Some(v) => v.wrapping_add(base),
            None => self
                .segments
                .iter()
                .find(|s| s.offset <= self.phoff && self.phoff < s.offset + s.filesz)
                .map(|s| s.vaddr.wrapping_add(base) + (self.phoff - s.offset))
                .unwrap_or(0),
        };
        Ok(Loaded { entry: self.entry.wrapping_add(base), phdr, phnum: self.phnum as u64, base, end, ranges })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF: one PT_LOAD (and optionally PT_INTERP) header.
    fn elf(kind: u16, interp: Option<&[u8]>, vaddr: u64, filesz: u64, memsz: u64) -> Vec<u8> {
        let phnum = 1 + interp.is_some() as u16;
        let data_at = 0x1000u64;
        let mut b = vec![0u8; (data_at + filesz) as usize];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[16..18].copy_from_slice(&kind.to_le_bytes());
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[24..32].copy_from_slice(&(vaddr + 0x10).to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        b[56..58].copy_from_slice(&phnum.to_le_bytes());
        let ph = |b: &mut Vec<u8>, i: usize, t: u32, off: u64, va: u64, fs: u64, ms: u64| {
            let p = 64 + i * PHDR_SIZE;
            b[p..p + 4].copy_from_slice(&t.to_le_bytes());
            b[p + 4..p + 8].copy_from_slice(&5u32.to_le_bytes());
            b[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
            b[p + 16..p + 24].copy_from_slice(&va.to_le_bytes());
            b[p + 32..p + 40].copy_from_slice(&fs.to_le_bytes());
            b[p + 40..p + 48].copy_from_slice(&ms.to_le_bytes());
        };
        ph(&mut b, 0, PT_LOAD, data_at, vaddr + data_at, filesz, memsz);
        if let Some(name) = interp {
            let at = 0x200;
            b[at..at + name.len()].copy_from_slice(name);
            ph(&mut b, 1, PT_INTERP, at as u64, 0, name.len() as u64 + 1, 0);
        }
        for (i, x) in b[data_at as usize..].iter_mut().enumerate() {
            *x = (i % 251) as u8 + 1;
        }
        b
    }

    #[test]
    fn interpreter_is_read_and_checked() {
        let p = Program::parse(Path::new("p"), &elf(ET_DYN, Some(b"/lib/ld.so"), 0, 0x100, 0x100)[..]).unwrap();
        assert_eq!(p.interp(), Some(&b"/lib/ld.so"[..]));
        let mut bad = elf(ET_DYN, Some(b"/lib/ld.so"), 0, 0x100, 0x100);
        bad[0x200 + 10] = b'x'; // no NUL
        assert!(matches!(Program::parse(Path::new("p"), &bad[..]), Err(ElfError::Malformed { .. })));
        let ld = Program::parse(Path::new("ld"), &elf(ET_DYN, Some(b"/x"), 0, 0x100, 0x100)[..]).unwrap();
        assert!(matches!(p.place(Some(&ld), 64 << 20), Err(ElfError::BadInterp { .. })));
    }

    #[test]
    fn placement_and_bss() {
        let mem = 64 << 20;
        let p = Program::parse(Path::new("p"), &elf(ET_DYN, Some(b"/ld"), 0, 0x100, 0x100)[..]).unwrap();
        let ld_bytes = elf(ET_DYN, None, 0, 0x1800, 0x3000);
        let ld = Program::parse(Path::new("ld"), &ld_bytes[..]).unwrap();
        let (base, ibase) = p.place(Some(&ld), mem).unwrap();
        // The lowest segment (at 0x1000) goes to PIE_BASE.
        assert_eq!(base + 0x1000, PIE_BASE);
        let ibase = ibase.unwrap();
        let guard = UserLayout::new(mem).guard;
        assert_eq!(ibase + 0x1000 + ld.span(), guard, "the loader sits at the top of the mmap area");
        let ram = GuestRam::new(mem).unwrap();
        ram.write(ibase + 0x2000, &[0xff; 0x1000]).unwrap();
        let l = ld.load(&ram, &ld_bytes[..], ibase).unwrap();
        assert_eq!(l.entry, ibase + 0x10);
        let got = ram.slice(ibase + 0x1000, 0x3000).unwrap();
        assert_eq!(&got[..0x1800], &ld_bytes[0x1000..0x2800]);
        assert!(got[0x1800..].iter().all(|&b| b == 0), "bss reads as zeros");
        // Too little memory for both.
        let big = Program::parse(Path::new("big"), &elf(ET_DYN, None, 0, 0x100, 60 << 20)[..]).unwrap();
        assert!(p.place(Some(&big), mem).is_err());
    }

    /// Random damage to real programs' headers: an error or a load, never
    /// a panic.
    #[test]
    fn damaged_programs_never_panic() {
        let ram = GuestRam::new(64 << 20).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for path in ["/bin/true", "/lib64/ld-linux-x86-64.so.2"] {
            let Ok(orig) = std::fs::read(path) else { continue };
            for _ in 0..3000 {
                let mut b = orig.clone();
                for _ in 0..1 + next() % 8 {
                    let at = (next() % 1024.min(b.len() as u64)) as usize;
                    b[at] = next() as u8;
                }
                if next() % 8 == 0 {
                    b.truncate((next() % b.len() as u64) as usize);
                }
                let Ok(p) = Program::parse(Path::new(path), &b) else { continue };
                if let Ok((base, _)) = p.place(None, ram.size()) {
                    let _ = p.load(&ram, &b, base);
                }
                let _ = p.place(Some(&p), ram.size());
            }
        }
    }

    #[test]
    fn garbage_is_an_error() {
        for len in [0, 3, 16, 63, 64, 200] {
            let mut b = elf(ET_EXEC, None, 0x40_0000, 0x100, 0x100);
            b.truncate(len);
            assert!(Program::parse(Path::new("g"), &b[..]).is_err());
        }
        let mut b = elf(ET_EXEC, None, 0x40_0000, 0x100, 0x100);
        b[56..58].copy_from_slice(&0xffffu16.to_le_bytes());
        assert!(Program::parse(Path::new("g"), &b[..]).is_err());
    }
}
