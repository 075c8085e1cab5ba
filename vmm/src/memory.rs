//! Guest RAM: one anonymous mapping, registered with KVM as slot 0, with a
//! dirty bitmap for the VMM's own writes (KVM logs the guest's).
//!
//! All access from the VMM goes through here. Addresses coming from the job
//! (system-call pointers) use the `user_*` methods, which check them against
//! the job's part of RAM and fail with EFAULT; nothing the job passes can make
//! the VMM touch memory outside the guest.

use std::ops::{Deref, DerefMut};

use thiserror::Error;
use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestMemoryBackend as _, GuestMemoryMmap, GuestRegionMmap};

use crate::layout::{page_ceil, page_floor, UserLayout, PAGE_SIZE};

pub type GuestMemory = GuestMemoryMmap<AtomicBitmap>;

#[derive(Debug, Error)]
pub enum MemoryError {
    #[error("cannot allocate {size} bytes of guest memory: {source}")]
    Alloc { size: u64, source: vm_memory::mmap::MmapRegionError },
    #[error("guest memory range {addr:#x}+{len:#x} is outside RAM")]
    OutOfRange { addr: u64, len: u64 },
}

/// A job pointer that does not point into the job's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Efault;

pub struct GuestRam {
    mem: GuestMemory,
    host: *mut u8,
    size: u64,
    user: UserLayout,
}

// SAFETY: `host` points into the mapping owned by `mem`, which lives as long
// as `self` and is itself Send + Sync; all access through it is bounds checked.
unsafe impl Send for GuestRam {}
// SAFETY: as above.
unsafe impl Sync for GuestRam {}

impl GuestRam {
    /// Reserves `size` bytes of zeroed guest RAM. Nothing is committed until
    /// it is touched.
    pub fn new(size: u64) -> Result<Self, MemoryError> {
        let bitmap = AtomicBitmap::new(size as usize, std::num::NonZeroUsize::new(PAGE_SIZE as usize).unwrap());
        let region = MmapRegionBuilder::new_with_bitmap(size as usize, bitmap)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE)
            .build()
            .map_err(|source| MemoryError::Alloc { size, source })?;
        let host = region.as_ptr();
        let region = GuestRegionMmap::new(region, GuestAddress(0)).expect("region at 0 cannot overflow");
        let mem = GuestMemoryMmap::from_regions(vec![region]).expect("a single region is valid");
        Ok(GuestRam { mem, host, size, user: UserLayout::new(size) })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn user_layout(&self) -> &UserLayout {
        &self.user
    }

    /// The vm-memory view, for KVM registration and page transfer.
    pub fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    /// Host address of guest physical address 0.
    pub fn host_base(&self) -> *mut u8 {
        self.host
    }

    /// The VMM's own write log (one bit per page).
    pub fn dirty_bitmap(&self) -> &AtomicBitmap {
        self.mem.iter().next().expect("one region").bitmap()
    }

    #[inline]
    fn in_ram(&self, addr: u64, len: u64) -> bool {
        addr.checked_add(len).is_some_and(|end| end <= self.size)
    }

    /// Records that the VMM wrote `[addr, addr + len)`. Call after the write
    /// so that a concurrent pre-copy round cannot miss it.
    #[inline]
    pub fn mark_dirty(&self, addr: u64, len: u64) {
        if len > 0 {
            self.dirty_bitmap().mark_dirty(addr as usize, len as usize);
        }
    }

    // ---- machine access: the VMM's own structures, anywhere in RAM ----

    /// Borrow guest RAM for reading.
    pub fn slice(&self, addr: u64, len: u64) -> Result<&[u8], MemoryError> {
        if !self.in_ram(addr, len) {
            return Err(MemoryError::OutOfRange { addr, len });
        }
        // SAFETY: in bounds of the mapping; the vCPU is not running while the
        // VMM builds or inspects machine state.
        Ok(unsafe { std::slice::from_raw_parts(self.host.add(addr as usize), len as usize) })
    }

    /// Borrow guest RAM for writing; the range is marked dirty when the
    /// borrow ends.
    pub fn slice_mut(&self, addr: u64, len: u64) -> Result<DirtyGuard<'_>, MemoryError> {
        if !self.in_ram(addr, len) {
            return Err(MemoryError::OutOfRange { addr, len });
        }
        Ok(self.guard(addr, len))
    }

    /// A whole page for the migration receiver, which fills pages of a VM
    /// that is not running yet and marks them itself. `gpa` must be a
    /// page-aligned address inside RAM.
    #[allow(clippy::mut_from_ref)]
    pub fn page_mut(&self, gpa: u64) -> &mut [u8] {
        assert!(gpa.is_multiple_of(PAGE_SIZE) && self.in_ram(gpa, PAGE_SIZE));
        // SAFETY: in bounds; the VM is not running while a stream fills it,
        // and each page appears once per record.
        unsafe { std::slice::from_raw_parts_mut(self.host.add(gpa as usize), PAGE_SIZE as usize) }
    }

    pub fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        self.slice_mut(addr, bytes.len() as u64)?.copy_from_slice(bytes);
        Ok(())
    }

    pub fn write_u64(&self, addr: u64, value: u64) -> Result<(), MemoryError> {
        self.write(addr, &value.to_le_bytes())
    }

    pub fn read_u64(&self, addr: u64) -> Result<u64, MemoryError> {
        Ok(u64::from_le_bytes(self.slice(addr, 8)?.try_into().unwrap()))
    }

    fn guard(&self, addr: u64, len: u64) -> DirtyGuard<'_> {
        // SAFETY: the caller checked the range; the borrow of `self` keeps the
        // mapping alive; the vCPU is stopped while the VMM serves an exit.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.host.add(addr as usize), len as usize) };
        DirtyGuard { ram: self, addr, bytes }
    }

    // ---- user access: pointers the job passed in ----

    #[inline]
    pub fn check_user(&self, addr: u64, len: u64) -> Result<(), Efault> {
        if len == 0 || self.user.contains(addr, len) {
            Ok(())
        } else {
            Err(Efault)
        }
    }

    /// The job's bytes at `[addr, addr + len)`.
    pub fn user(&self, addr: u64, len: u64) -> Result<&[u8], Efault> {
        if len == 0 {
            return Ok(&[]);
        }
        self.check_user(addr, len)?;
        // SAFETY: checked to be inside RAM; see `slice`.
        Ok(unsafe { std::slice::from_raw_parts(self.host.add(addr as usize), len as usize) })
    }

    /// The job's bytes at `[addr, addr + len)`, to be written by the VMM.
    pub fn user_mut(&self, addr: u64, len: u64) -> Result<DirtyGuard<'_>, Efault> {
        if len == 0 {
            return Ok(DirtyGuard { ram: self, addr: 0, bytes: &mut [] });
        }
        self.check_user(addr, len)?;
        Ok(self.guard(addr, len))
    }

    pub fn read_user_u64(&self, addr: u64) -> Result<u64, Efault> {
        Ok(u64::from_le_bytes(self.user(addr, 8)?.try_into().unwrap()))
    }

    pub fn read_user_u32(&self, addr: u64) -> Result<u32, Efault> {
        Ok(u32::from_le_bytes(self.user(addr, 4)?.try_into().unwrap()))
    }

    pub fn write_user(&self, addr: u64, bytes: &[u8]) -> Result<(), Efault> {
        self.user_mut(addr, bytes.len() as u64)?.copy_from_slice(bytes);
        Ok(())
    }

    pub fn write_user_u64(&self, addr: u64, value: u64) -> Result<(), Efault> {
        self.write_user(addr, &value.to_le_bytes())
    }

    pub fn write_user_u32(&self, addr: u64, value: u32) -> Result<(), Efault> {
        self.write_user(addr, &value.to_le_bytes())
    }

    /// A NUL-terminated string of at most `max` bytes (without the NUL).
    /// `Ok(None)` if no NUL was found within `max` bytes.
    pub fn user_cstr(&self, addr: u64, max: usize) -> Result<Option<&[u8]>, Efault> {
        if addr < crate::layout::USER_BASE || addr >= self.user.mem_end {
            return Err(Efault);
        }
        let avail = (self.user.mem_end - addr).min(max as u64 + 1);
        let bytes = self.user(addr, avail)?;
        match bytes.iter().position(|&b| b == 0) {
            Some(n) => Ok(Some(&bytes[..n])),
            None if avail <= max as u64 => Err(Efault), // ran off the end of RAM
            None => Ok(None),
        }
    }

    /// Gives `[addr, addr + len)` back to the host and makes it read as
    /// zeros, as fresh anonymous memory does on Linux.
    pub fn discard(&self, addr: u64, len: u64) -> Result<(), MemoryError> {
        if !self.in_ram(addr, len) {
            return Err(MemoryError::OutOfRange { addr, len });
        }
        let end = addr + len;
        let (inner_start, inner_end) = (page_ceil(addr), page_floor(end));
        if inner_start < inner_end {
            // SAFETY: a page-aligned range inside our private anonymous
            // mapping; DONTNEED only drops its contents.
            let rc = unsafe {
                libc::madvise(
                    self.host.add(inner_start as usize) as *mut libc::c_void,
                    (inner_end - inner_start) as usize,
                    libc::MADV_DONTNEED,
                )
            };
            if rc != 0 {
                // Cannot happen for a valid anonymous range; fall back to writing zeros.
                self.slice_mut(inner_start, inner_end - inner_start)?.fill(0);
            }
            self.mark_dirty(inner_start, inner_end - inner_start);
            if addr < inner_start {
                self.slice_mut(addr, inner_start - addr)?.fill(0);
            }
            if inner_end < end {
                self.slice_mut(inner_end, end - inner_end)?.fill(0);
            }
        } else {
            self.slice_mut(addr, len)?.fill(0);
        }
        Ok(())
    }
}

impl GuestRam {
    /// The pages the host has backed, one bit per page (bit i%64 of word
    /// i/64): the only ones that can hold anything but zeros. A page never
    /// touched, or given back with DONTNEED, reads as zeros.
    pub fn resident_pages(&self) -> std::io::Result<Vec<u64>> {
        let pages = (self.size / PAGE_SIZE) as usize;
        let mut vec = vec![0u8; pages];
        // SAFETY: the guest mapping is ours; vec has a byte per page.
        if unsafe { libc::mincore(self.host.cast(), self.size as usize, vec.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut bits = vec![0u64; pages.div_ceil(64)];
        for (i, &v) in vec.iter().enumerate() {
            if v & 1 != 0 {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        Ok(bits)
    }

    /// Bytes of guest RAM the host has backed.
    pub fn resident_bytes(&self) -> u64 {
        self.resident_pages().map_or(0, |b| b.iter().map(|w| w.count_ones() as u64).sum::<u64>() * PAGE_SIZE)
    }
}

/// Mutable guest bytes that are marked dirty when dropped, i.e. after the
/// VMM's write.
pub struct DirtyGuard<'a> {
    ram: &'a GuestRam,
    addr: u64,
    bytes: &'a mut [u8],
}

impl DirtyGuard<'_> {
    /// Marks only the first `n` bytes dirty (for a read that filled less).
    pub fn commit(mut self, n: usize) {
        let n = n.min(self.bytes.len());
        self.ram.mark_dirty(self.addr, n as u64);
        self.bytes = &mut [];
    }
}

impl Deref for DirtyGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

impl DerefMut for DirtyGuard<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.bytes
    }
}

impl Drop for DirtyGuard<'_> {
    fn drop(&mut self) {
        self.ram.mark_dirty(self.addr, self.bytes.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::USER_BASE;

    #[test]
    fn user_pointer_checks() {
        let ram = GuestRam::new(32 << 20).unwrap();
        assert!(ram.user(0, 8).is_err());
        assert!(ram.user(0x1000, 8).is_err());
        assert!(ram.user(USER_BASE - 1, 2).is_err());
        assert!(ram.user(USER_BASE, 8).is_ok());
        assert!(ram.user((32 << 20) - 8, 8).is_ok());
        assert!(ram.user((32 << 20) - 8, 9).is_err());
        assert!(ram.user(u64::MAX - 4, 8).is_err());
        assert!(ram.user(0, 0).is_ok());
    }

    #[test]
    fn cstr_bounds() {
        let ram = GuestRam::new(32 << 20).unwrap();
        ram.write_user(USER_BASE, b"hello\0").unwrap();
        assert_eq!(ram.user_cstr(USER_BASE, 100).unwrap(), Some(&b"hello"[..]));
        assert_eq!(ram.user_cstr(USER_BASE, 3).unwrap(), None);
        let end = 32 << 20;
        ram.write_user(end - 2, b"ab").unwrap();
        assert_eq!(ram.user_cstr(end - 2, 100), Err(Efault));
    }

    #[test]
    fn writes_are_logged_and_discard_zeroes() {
        let ram = GuestRam::new(32 << 20).unwrap();
        let bitmap = ram.dirty_bitmap();
        assert!(!bitmap.dirty_at(USER_BASE as usize));
        ram.write_user(USER_BASE + 10, &[1; 5000]).unwrap();
        assert!(bitmap.dirty_at(USER_BASE as usize));
        assert!(bitmap.dirty_at((USER_BASE + 4096) as usize));
        assert!(!bitmap.dirty_at((USER_BASE + 8192) as usize));
        ram.write_user(USER_BASE, &[1; 12000]).unwrap();
        ram.discard(USER_BASE + 5, 8000).unwrap();
        let b = ram.user(USER_BASE, 12000).unwrap();
        assert!(b[..5].iter().all(|&x| x == 1));
        assert!(b[5..8005].iter().all(|&x| x == 0));
        assert!(b[8005..].iter().all(|&x| x == 1));
    }
}
