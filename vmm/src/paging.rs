//! The guest's page tables, built once before the vCPU first runs.
//!
//! Job RAM is mapped with 2 MiB pages (read, write, execute: mprotect is
//! bookkeeping, so JIT code and stacks just work), except the 2 MiB blocks
//! holding the program image, which get 4 KiB pages carrying the ELF
//! segments' permissions so that writes to text or rodata fault as on Linux.
//! Accessed and dirty bits are preset so the MMU never writes the tables.

use thiserror::Error;

use crate::layout::*;
use crate::memory::{GuestRam, MemoryError};

pub const PRESENT: u64 = 1 << 0;
pub const WRITABLE: u64 = 1 << 1;
pub const USER: u64 = 1 << 2;
pub const ACCESSED: u64 = 1 << 5;
pub const DIRTY: u64 = 1 << 6;
pub const LARGE: u64 = 1 << 7;
pub const NO_EXECUTE: u64 = 1 << 63;

const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const TABLE_FLAGS: u64 = PRESENT | WRITABLE | USER | ACCESSED;

/// Access rights of a range of the program image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Perms {
    pub write: bool,
    pub exec: bool,
}

impl Perms {
    pub const RWX: Perms = Perms { write: true, exec: true };

    fn union(self, other: Perms) -> Perms {
        Perms { write: self.write || other.write, exec: self.exec || other.exec }
    }

    fn user_flags(self) -> u64 {
        let mut f = PRESENT | USER | ACCESSED | DIRTY;
        if self.write {
            f |= WRITABLE;
        }
        if !self.exec {
            f |= NO_EXECUTE;
        }
        f
    }
}

/// A page-aligned range of the program image and its rights.
#[derive(Clone, Copy, Debug)]
pub struct ImageRange {
    pub start: u64,
    pub end: u64,
    pub perms: Perms,
}

#[derive(Debug, Error)]
pub enum PagingError {
    #[error("guest page tables do not fit below {PAGE_TABLES_END:#x}")]
    OutOfTables,
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

struct Builder<'a> {
    ram: &'a GuestRam,
    next: u64,
    pml4: u64,
}

impl<'a> Builder<'a> {
    fn new(ram: &'a GuestRam) -> Result<Self, PagingError> {
        let mut b = Builder { ram, next: PAGE_TABLES_ADDR, pml4: 0 };
        b.pml4 = b.alloc()?;
        Ok(b)
    }

    fn alloc(&mut self) -> Result<u64, PagingError> {
        if self.next >= PAGE_TABLES_END {
            return Err(PagingError::OutOfTables);
        }
        let page = self.next;
        self.next += PAGE_SIZE;
        // Fresh guest RAM reads as zeros, but a restored or reused machine may not.
        self.ram.slice_mut(page, PAGE_SIZE)?.fill(0);
        Ok(page)
    }

    /// The table that entry `index` of `table` points to, created if absent.
    fn next_table(&mut self, table: u64, index: u64) -> Result<u64, PagingError> {
        let at = table + index * 8;
        let entry = self.ram.read_u64(at)?;
        if entry & PRESENT != 0 {
            return Ok(entry & ADDR_MASK);
        }
        let child = self.alloc()?;
        self.ram.write_u64(at, child | TABLE_FLAGS)?;
        Ok(child)
    }

    fn page_directory(&mut self, va: u64) -> Result<u64, PagingError> {
        let pdpt = self.next_table(self.pml4, (va >> 39) & 511)?;
        self.next_table(pdpt, (va >> 30) & 511)
    }

    fn map_large(&mut self, va: u64, flags: u64) -> Result<(), PagingError> {
        let pd = self.page_directory(va)?;
        self.ram.write_u64(pd + ((va >> 21) & 511) * 8, va | flags | LARGE)?;
        Ok(())
    }

    fn map_small(&mut self, va: u64, flags: u64) -> Result<(), PagingError> {
        let pd = self.page_directory(va)?;
        let pt = self.next_table(pd, (va >> 21) & 511)?;
        self.ram.write_u64(pt + ((va >> 12) & 511) * 8, va | flags)?;
        Ok(())
    }
}

/// Builds the identity-mapped address space and returns CR3.
pub fn build(ram: &GuestRam, image: &[ImageRange]) -> Result<u64, PagingError> {
    let mut b = Builder::new(ram)?;
    let sup_rw = PRESENT | WRITABLE | ACCESSED | DIRTY | NO_EXECUTE;
    b.map_small(GDT_ADDR, sup_rw)?;
    b.map_small(IDT_ADDR, PRESENT | ACCESSED | NO_EXECUTE)?;
    b.map_small(TSS_ADDR, sup_rw)?;
    // Nested KVM triple-faults when emulated ring-0 code touches
    // supervisor-only pages, so the trampolines and their stack carry U.
    b.map_small(RING0_CODE_ADDR, PRESENT | USER | ACCESSED)?;
    let mut page = RING0_STACK_ADDR;
    while page < RING0_STACK_TOP {
        b.map_small(page, sup_rw | USER)?;
        page += PAGE_SIZE;
    }

    b.map_small(VVAR_ADDR, PRESENT | USER | ACCESSED | NO_EXECUTE)?;
    let mut page = VDSO_ADDR;
    while page < VDSO_END {
        b.map_small(page, PRESENT | USER | ACCESSED)?;
        page += PAGE_SIZE;
    }

    let layout = *ram.user_layout();
    let mut block = USER_BASE;
    while block < layout.mem_end {
        let block_end = block + LARGE_PAGE_SIZE;
        if (layout.guard..layout.stack_limit).contains(&block) {
            block = block_end;
            continue;
        }
        if image.iter().any(|r| r.start < block_end && r.end > block) {
            let mut page = block;
            while page < block_end {
                let perms = image
                    .iter()
                    .filter(|r| r.start <= page && page < r.end)
                    .map(|r| r.perms)
                    .reduce(Perms::union)
                    .unwrap_or(Perms::RWX);
                b.map_small(page, perms.user_flags())?;
                page += PAGE_SIZE;
            }
        } else {
            b.map_large(block, Perms::RWX.user_flags())?;
        }
        block = block_end;
    }
    Ok(b.pml4)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables like the MMU: returns the leaf entry for `va`.
    fn walk(ram: &GuestRam, cr3: u64, va: u64) -> Option<u64> {
        let mut table = cr3;
        for (level, shift) in [39u64, 30, 21, 12].iter().enumerate() {
            let e = ram.read_u64(table + ((va >> shift) & 511) * 8).unwrap();
            if e & PRESENT == 0 {
                return None;
            }
            if level == 2 && e & LARGE != 0 || level == 3 {
                return Some(e);
            }
            table = e & ADDR_MASK;
        }
        None
    }

    #[test]
    fn identity_map_with_image_permissions() {
        let ram = GuestRam::new(64 << 20).unwrap();
        let image = [
            ImageRange { start: 0x40_0000, end: 0x40_2000, perms: Perms { write: false, exec: true } },
            ImageRange { start: 0x40_2000, end: 0x40_3000, perms: Perms { write: true, exec: false } },
        ];
        let cr3 = build(&ram, &image).unwrap();
        assert_eq!(walk(&ram, cr3, 0), None, "page 0 must stay unmapped");
        assert_eq!(walk(&ram, cr3, 0x7000), None);
        let text = walk(&ram, cr3, 0x40_1234).unwrap();
        assert_eq!(text & ADDR_MASK, 0x40_1000);
        assert_eq!(text & (WRITABLE | NO_EXECUTE), 0);
        let data = walk(&ram, cr3, 0x40_2000).unwrap();
        assert_ne!(data & WRITABLE, 0);
        assert_ne!(data & NO_EXECUTE, 0);
        let heap = walk(&ram, cr3, 0x40_3000).unwrap();
        assert_ne!(heap & WRITABLE, 0);
        let big = walk(&ram, cr3, 0x80_0000 + 0x1234).unwrap();
        assert_ne!(big & LARGE, 0);
        assert_eq!(big & ADDR_MASK & !0x1f_ffff, 0x80_0000);
        assert_eq!(walk(&ram, cr3, 64 << 20), None, "nothing beyond RAM");
        let layout = ram.user_layout();
        assert_eq!(walk(&ram, cr3, layout.stack_limit - 8), None, "stack guard");
        assert!(walk(&ram, cr3, layout.stack_limit).is_some());
        assert!(walk(&ram, cr3, layout.guard - 8).is_some());
        let code = walk(&ram, cr3, RING0_CODE_ADDR).unwrap();
        assert_ne!(code & USER, 0);
        let gdt = walk(&ram, cr3, GDT_ADDR).unwrap();
        assert_eq!(gdt & USER, 0);
        let vvar = walk(&ram, cr3, VVAR_ADDR).unwrap();
        assert_eq!(vvar & (USER | WRITABLE | NO_EXECUTE), USER | NO_EXECUTE, "vvar: read-only data");
        let vdso = walk(&ram, cr3, VDSO_ADDR).unwrap();
        assert_eq!(vdso & (USER | WRITABLE | NO_EXECUTE), USER, "vDSO: read and execute");
    }
}
