//! Loading a static x86-64 Linux ELF (ET_EXEC, or ET_DYN without an
//! interpreter: static-pie) the way Linux's binfmt_elf maps it.
//!
//! linux-loader's ELF loader is made for kernels (it loads at physical
//! addresses and knows nothing of program headers in memory, page-granular
//! segment mapping or a relocation base), so this is a small loader of our
//! own. It checks everything it reads: a malformed file is an error, never a
//! panic.

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

#[derive(Debug, Error)]
pub enum ElfError {
    #[error("{0} is a script (#!); mosvm runs static x86-64 ELF executables, run its interpreter instead")]
    Script(String),
    #[error("{0} is not an ELF executable")]
    NotElf(String),
    #[error("{0} is a 32-bit ELF; mosvm runs 64-bit x86-64 programs")]
    Not64Bit(String),
    #[error("{path} is an ELF for machine {machine}, not x86-64")]
    WrongMachine { path: String, machine: u16 },
    #[error("{path} is not an executable (ELF type {kind})")]
    NotExecutable { path: String, kind: u16 },
    #[error("{path} is dynamically linked (interpreter {interp}); mosvm runs statically linked programs: link it with -static (or -static-pie)")]
    Dynamic { path: String, interp: String },
    #[error("{path} is malformed: {what}")]
    Malformed { path: String, what: String },
    #[error("{path} needs memory at {start:#x}..{end:#x}, outside the guest's {mem} MiB (job memory starts at {USER_BASE:#x}); raise --mem or relink")]
    OutOfRange { path: String, start: u64, end: u64, mem: u64 },
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
#[derive(Debug)]
pub struct Program {
    path: String,
    pie: bool,
    entry: u64,
    phoff: u64,
    phnum: u16,
    phdr_vaddr: Option<u64>,
    segments: Vec<Segment>,
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
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl Program {
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Program, ElfError> {
        let name = path.display().to_string();
        let malformed = |what: &str| ElfError::Malformed { path: name.clone(), what: what.to_string() };
        if bytes.starts_with(b"#!") {
            return Err(ElfError::Script(name));
        }
        if bytes.len() < 16 || &bytes[..4] != b"\x7fELF" {
            return Err(ElfError::NotElf(name));
        }
        if bytes[4] != 2 {
            return Err(ElfError::Not64Bit(name));
        }
        if bytes[5] != 1 {
            return Err(malformed("not little-endian"));
        }
        if bytes.len() < EHDR_SIZE {
            return Err(malformed("truncated ELF header"));
        }
        let kind = u16_at(bytes, 16);
        let machine = u16_at(bytes, 18);
        if machine != EM_X86_64 {
            return Err(ElfError::WrongMachine { path: name, machine });
        }
        if kind != ET_EXEC && kind != ET_DYN {
            return Err(ElfError::NotExecutable { path: name, kind });
        }
        let entry = u64_at(bytes, 24);
        let phoff = u64_at(bytes, 32);
        let phentsize = u16_at(bytes, 54);
        let phnum = u16_at(bytes, 56);
        if phentsize as usize != PHDR_SIZE {
            return Err(malformed("unexpected program header size"));
        }
        let ph_end = phoff
            .checked_add(phnum as u64 * PHDR_SIZE as u64)
            .filter(|&end| end <= bytes.len() as u64)
            .ok_or_else(|| malformed("program headers run past the end of the file"))?;
        let mut segments = Vec::new();
        let mut phdr_vaddr = None;
        for ph in bytes[phoff as usize..ph_end as usize].chunks_exact(PHDR_SIZE) {
            let p_type = u32_at(ph, 0);
            let flags = u32_at(ph, 4);
            let offset = u64_at(ph, 8);
            let vaddr = u64_at(ph, 16);
            let filesz = u64_at(ph, 32);
            let memsz = u64_at(ph, 40);
            match p_type {
                PT_INTERP => {
                    let interp = offset
                        .checked_add(filesz)
                        .filter(|&end| end <= bytes.len() as u64)
                        .map(|end| &bytes[offset as usize..end as usize])
                        .map(|s| String::from_utf8_lossy(s.split(|&b| b == 0).next().unwrap_or(s)).into_owned())
                        .unwrap_or_else(|| "?".into());
                    return Err(ElfError::Dynamic { path: name, interp });
                }
                PT_PHDR => phdr_vaddr = Some(vaddr),
                PT_LOAD if memsz > 0 => {
                    if filesz > memsz {
                        return Err(malformed("segment file size exceeds its memory size"));
                    }
                    if offset.checked_add(filesz).is_none_or(|end| end > bytes.len() as u64) {
                        return Err(malformed("segment runs past the end of the file"));
                    }
                    if vaddr % PAGE_SIZE != offset % PAGE_SIZE {
                        return Err(malformed("segment address and file offset are not congruent"));
                    }
                    if vaddr.checked_add(memsz).is_none() {
                        return Err(malformed("segment wraps the address space"));
                    }
                    segments.push(Segment { offset, vaddr, filesz, memsz, flags });
                }
                _ => {}
            }
        }
        if segments.is_empty() {
            return Err(malformed("no loadable segments"));
        }
        Ok(Program { path: name, pie: kind == ET_DYN, entry, phoff, phnum, phdr_vaddr, segments })
    }

    /// Checks that the segments fit in `mem_size` bytes of guest RAM;
    /// returns the load base.
    pub fn fits(&self, mem_size: u64) -> Result<u64, ElfError> {
        let lowest = self.segments.iter().map(|s| page_floor(s.vaddr)).min().unwrap_or(0);
        let base = if self.pie { PIE_BASE.saturating_sub(lowest) } else { 0 };
        for s in &self.segments {
            let start = page_floor(s.vaddr).saturating_add(base);
            let end = s.vaddr.saturating_add(base).saturating_add(s.memsz);
            if start < USER_BASE || end > mem_size {
                return Err(ElfError::OutOfRange { path: self.path.clone(), start, end, mem: mem_size >> 20 });
            }
        }
        Ok(base)
    }

    /// Copies the segments into guest RAM. Like binfmt_elf's file mappings,
    /// each segment brings the whole file pages it starts and ends in, and
    /// the part of the last page past its file size reads as zero when the
    /// segment has a bss.
    pub fn load(&self, ram: &GuestRam, bytes: &[u8]) -> Result<Loaded, ElfError> {
        let base = self.fits(ram.size())?;
        let mut end = 0u64;
        let mut ranges = Vec::with_capacity(self.segments.len());
        for s in &self.segments {
            let start = page_floor(s.vaddr) + base;
            let seg_end = s.vaddr + base + s.memsz;
            let file_start = page_floor(s.offset);
            let file_end = if s.memsz > s.filesz {
                s.offset + s.filesz
            } else {
                page_ceil(s.offset + s.filesz).min(bytes.len() as u64)
            };
            ram.write(start, &bytes[file_start as usize..file_end as usize]).expect("range checked above");
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
            Some(v) => v + base,
            None => self
                .segments
                .iter()
                .find(|s| s.offset <= self.phoff && self.phoff < s.offset + s.filesz)
                .map(|s| s.vaddr + base + (self.phoff - s.offset))
                .unwrap_or(0),
        };
        Ok(Loaded { entry: self.entry + base, phdr, phnum: self.phnum as u64, base, end, ranges })
    }
}
