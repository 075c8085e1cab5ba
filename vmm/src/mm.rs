//! The job's address space, as bookkeeping.
//!
//! All RAM is mapped in the guest page tables from the start, so mmap,
//! munmap and brk only decide which addresses are in use and give memory
//! back to the host (zeroing it, as Linux guarantees for fresh anonymous
//! memory). Mappings are non-overlapping, page-aligned ranges keyed by start.

use std::collections::BTreeMap;

use crate::layout::{page_ceil, UserLayout, USER_BASE};
use crate::memory::GuestRam;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VmaKind {
    Image,
    Heap,
    Stack,
    Anon,
    File,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Vma {
    pub end: u64,
    pub prot: u32,
    pub kind: VmaKind,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AddressSpace {
    layout: UserLayout,
    brk_start: u64,
    brk: u64,
    vmas: BTreeMap<u64, Vma>,
    /// Changes with every change of the map, unique in this process, so
    /// that the copy guest RAM checks pointers against (`sync_access`) is
    /// renewed only when needed.
    #[serde(skip, default = "fresh_gen")]
    gen: u64,
}

fn fresh_gen() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

const PROT_RW: u32 = (libc::PROT_READ | libc::PROT_WRITE) as u32;

impl AddressSpace {
    /// `image` are the program's page-aligned ranges (start, end, prot);
    /// the break starts at `image_end`.
    pub fn new(layout: UserLayout, image: &[(u64, u64, u32)], image_end: u64) -> Self {
        let mut mm =
            AddressSpace { layout, brk_start: image_end, brk: image_end, vmas: BTreeMap::new(), gen: fresh_gen() };
        for &(start, end, prot) in image {
            mm.insert(start, end, prot, VmaKind::Image);
        }
        mm.insert(layout.stack_limit, layout.mem_end, PROT_RW, VmaKind::Stack);
        mm
    }

    /// Records a mapping of fresh memory (a loaded ELF's), without
    /// touching guest memory.
    pub fn add(&mut self, start: u64, end: u64, prot: u32, kind: VmaKind) {
        self.insert(start, end, prot, kind);
    }

    pub fn layout(&self) -> &UserLayout {
        &self.layout
    }

    pub fn brk(&self) -> u64 {
        self.brk
    }

    /// Mirrors the map into `ram` if it changed since `ram` last saw it:
    /// the system calls' pointer checks then follow mmap, munmap,
    /// mprotect and brk.
    #[inline]
    pub fn sync_access(&self, ram: &GuestRam) {
        if ram.access_gen() != Some(self.gen) {
            ram.set_access(self.gen, self.vmas.iter().map(|(&s, v)| (s, v.end, v.prot)));
        }
    }

    pub fn vmas(&self) -> impl Iterator<Item = (u64, &Vma)> {
        self.vmas.iter().map(|(&s, v)| (s, v))
    }

    /// Does any mapping intersect `[start, end)`?
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.vmas.range(..end).next_back().is_some_and(|(_, v)| v.end > start)
    }

    /// Removes `[start, end)` from the map, splitting mappings it cuts.
    fn unmap_range(&mut self, start: u64, end: u64) {
        self.gen = fresh_gen();
        let cut: Vec<(u64, Vma)> =
            self.vmas.range(..end).rev().take_while(|(_, v)| v.end > start).map(|(&s, &v)| (s, v)).collect();
        for (s, v) in cut {
            self.vmas.remove(&s);
            if s < start {
                self.vmas.insert(s, Vma { end: start, ..v });
            }
            if v.end > end {
                self.vmas.insert(end, v);
            }
        }
    }

    fn insert(&mut self, start: u64, end: u64, prot: u32, kind: VmaKind) {
        if start >= end {
            return;
        }
        self.unmap_range(start, end);
        self.gen = fresh_gen();
        let mut start = start;
        let mut vma = Vma { end, prot, kind };
        // Merge with equal anonymous neighbours, as Linux does, so that a
        // range mapped piecewise can be remapped as one.
        let mergeable = |v: &Vma| v.prot == prot && v.kind == kind && matches!(kind, VmaKind::Anon | VmaKind::Heap);
        if let Some((&s, v)) = self.vmas.range(..start).next_back() {
            if v.end == start && mergeable(v) {
                self.vmas.remove(&s);
                start = s;
            }
        }
        if let Some(next) = self.vmas.get(&end).copied() {
            if mergeable(&next) {
                self.vmas.remove(&end);
                vma.end = next.end;
            }
        }
        self.vmas.insert(start, vma);
    }

    /// brk(2): moves the break if the new heap does not run into a mapping;
    /// returns the (possibly unchanged) break.
    pub fn set_brk(&mut self, ram: &GuestRam, new: u64) -> u64 {
        if new < self.brk_start || new > self.layout.guard {
            return self.brk;
        }
        let (old_top, new_top) = (page_ceil(self.brk), page_ceil(new));
        if new_top > old_top {
            if self.overlaps(old_top, new_top) {
                return self.brk;
            }
        } else if new_top < old_top {
            let _ = ram.discard(new_top, old_top - new_top);
        }
        self.unmap_range(page_ceil(self.brk_start), old_top.max(new_top));
        self.insert(page_ceil(self.brk_start), new_top, PROT_RW, VmaKind::Heap);
        self.brk = new;
        self.brk
    }

    /// A free range of `len` bytes (page multiple): `hint` if it is free,
    /// else the highest free range below the stack guard.
    pub fn find_free(&self, hint: u64, len: u64) -> Option<u64> {
        if hint >= USER_BASE
            && hint.is_multiple_of(crate::layout::PAGE_SIZE)
            && hint.checked_add(len).is_some_and(|e| e <= self.layout.guard)
            && !self.overlaps(hint, hint + len)
        {
            return Some(hint);
        }
        let mut top = self.layout.guard;
        for (&start, v) in self.vmas.range(..self.layout.guard).rev() {
            if v.end < top && top - v.end >= len {
                return Some(top - len);
            }
            top = top.min(start);
        }
        (top >= USER_BASE && top - USER_BASE >= len).then(|| top - len)
    }

    /// Records a new mapping at `[start, start + len)`, replacing whatever
    /// was there (its memory is zeroed).
    pub fn map(&mut self, ram: &GuestRam, start: u64, len: u64, prot: u32, kind: VmaKind) {
        if self.overlaps(start, start + len) {
            let _ = ram.discard(start, len);
        }
        self.insert(start, start + len, prot, kind);
    }

    /// munmap(2) of a range inside the job's memory.
    pub fn unmap(&mut self, ram: &GuestRam, start: u64, len: u64) {
        self.unmap_range(start, start + len);
        let _ = ram.discard(start, len);
    }

    /// The mapping containing `addr`.
    pub fn find(&self, addr: u64) -> Option<(u64, Vma)> {
        self.vmas.range(..=addr).next_back().filter(|(_, v)| v.end > addr).map(|(&s, &v)| (s, v))
    }

    /// Is `[start, end)` entirely covered by mappings?
    pub fn is_mapped(&self, start: u64, end: u64) -> bool {
        let mut at = start;
        while at < end {
            match self.find(at) {
                Some((_, v)) => at = v.end,
                None => return false,
            }
        }
        true
    }

    /// mprotect(2): records the new protection. The page tables keep
    /// everything accessible to the job itself; the system calls' pointer
    /// checks follow it (`sync_access`).
    pub fn protect(&mut self, start: u64, end: u64, prot: u32) -> bool {
        if !self.is_mapped(start, end) {
            return false;
        }
        let parts: Vec<(u64, Vma)> =
            self.vmas.range(..end).rev().take_while(|(_, v)| v.end > start).map(|(&s, &v)| (s, v)).collect();
        for (s, v) in parts {
            let (a, b) = (s.max(start), v.end.min(end));
            self.insert(a, b, prot, v.kind);
        }
        true
    }

    /// Grows the mapping that ends at `end` in place to `new_end`, if free.
    pub fn extend(&mut self, start: u64, end: u64, new_end: u64) -> bool {
        if new_end > self.layout.guard || self.overlaps(end, new_end) {
            return false;
        }
        match self.vmas.get_mut(&start) {
            Some(v) if v.end == end => {
                v.end = new_end;
                self.gen = fresh_gen();
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn setup() -> (GuestRam, AddressSpace) {
        let ram = GuestRam::new(64 * MB).unwrap();
        let layout = *ram.user_layout();
        let mm = AddressSpace::new(layout, &[(0x40_0000, 0x40_2000, 5), (0x40_2000, 0x40_3000, 3)], 0x40_3000);
        (ram, mm)
    }

    #[test]
    fn brk_grows_shrinks_and_zeroes() {
        let (ram, mut mm) = setup();
        assert_eq!(mm.set_brk(&ram, 0), 0x40_3000);
        assert_eq!(mm.set_brk(&ram, 0x40_5010), 0x40_5010);
        ram.write_user(0x40_4000, &[9; 16]).unwrap();
        assert_eq!(mm.set_brk(&ram, 0x40_3800), 0x40_3800);
        assert_eq!(mm.set_brk(&ram, 0x40_5000), 0x40_5000);
        assert_eq!(ram.user(0x40_4000, 16).unwrap(), &[0; 16]);
        // the heap cannot run into a mapping
        mm.map(&ram, 0x40_6000, 0x1000, 3, VmaKind::Anon);
        assert_eq!(mm.set_brk(&ram, 0x40_7000), 0x40_5000);
    }

    #[test]
    fn mmap_top_down_and_reuse() {
        let (ram, mut mm) = setup();
        let limit = ram.user_layout().guard;
        let a = mm.find_free(0, 0x3000).unwrap();
        assert_eq!(a, limit - 0x3000);
        mm.map(&ram, a, 0x3000, 3, VmaKind::Anon);
        let b = mm.find_free(0, 0x1000).unwrap();
        assert_eq!(b, a - 0x1000);
        mm.map(&ram, b, 0x1000, 3, VmaKind::Anon);
        // punch a hole in the middle of a and reuse it
        mm.unmap(&ram, a + 0x1000, 0x1000);
        assert!(mm.find(a).is_some());
        assert!(mm.find(a + 0x1000).is_none());
        assert!(mm.find(a + 0x2000).is_some());
        assert_eq!(mm.find_free(0, 0x1000), Some(a + 0x1000));
        // hints are honoured when free, ignored when not
        assert_eq!(mm.find_free(0x100_0000, 0x1000), Some(0x100_0000));
        assert_ne!(mm.find_free(a, 0x1000), Some(a));
    }

    #[test]
    fn exhaustion_and_protect() {
        let (ram, mut mm) = setup();
        assert!(mm.find_free(0, 128 * MB).is_none());
        let a = mm.find_free(0, 0x4000).unwrap();
        mm.map(&ram, a, 0x4000, 3, VmaKind::Anon);
        assert!(mm.protect(a + 0x1000, a + 0x2000, 1));
        assert_eq!(mm.find(a + 0x1000).unwrap().1.prot, 1);
        assert_eq!(mm.find(a).unwrap().1.prot, 3);
        assert_eq!(mm.find(a + 0x2000).unwrap().1.prot, 3);
        assert!(!mm.protect(a - 0x1000, a + 0x1000, 1));
        assert!(mm.is_mapped(a, a + 0x4000));
    }

    #[test]
    fn neighbours_merge() {
        let (ram, mut mm) = setup();
        mm.map(&ram, 0x100_0000, 0x4000, 3, VmaKind::Anon);
        mm.unmap(&ram, 0x100_1000, 0x1000);
        assert_eq!(mm.find(0x100_0000).unwrap().1.end, 0x100_1000);
        mm.map(&ram, 0x100_1000, 0x1000, 3, VmaKind::Anon);
        assert_eq!(mm.find(0x100_0000), Some((0x100_0000, Vma { end: 0x100_4000, prot: 3, kind: VmaKind::Anon })));
        // different protection or kind stays apart
        mm.map(&ram, 0x100_4000, 0x1000, 1, VmaKind::Anon);
        mm.map(&ram, 0x100_5000, 0x1000, 3, VmaKind::File);
        assert_eq!(mm.find(0x100_4000).unwrap().0, 0x100_4000);
        assert_eq!(mm.find(0x100_5000).unwrap().0, 0x100_5000);
    }

    #[test]
    fn extend_in_place() {
        let (ram, mut mm) = setup();
        mm.map(&ram, 0x100_0000, 0x1000, 3, VmaKind::Anon);
        assert!(mm.extend(0x100_0000, 0x100_1000, 0x100_3000));
        mm.map(&ram, 0x100_4000, 0x1000, 3, VmaKind::Anon);
        assert!(!mm.extend(0x100_0000, 0x100_3000, 0x100_5000));
    }
}
