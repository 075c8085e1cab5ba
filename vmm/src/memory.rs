//! Guest RAM: one anonymous mapping, registered with KVM as slot 0, with a
//! dirty bitmap for the VMM's own writes (KVM logs the guest's).
//!
//! All access from the VMM goes through here. Addresses coming from the job
//! (system-call pointers) use the `user_*` methods, which check them against
//! the job's part of RAM and fail with EFAULT; nothing the job passes can make
//! the VMM touch memory outside the guest.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

use thiserror::Error;
use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestMemoryBackend as _, GuestMemoryMmap, GuestRegionMmap};

use crate::layout::{page_ceil, page_floor, UserLayout, PAGE_SIZE};

pub type GuestMemory = GuestMemoryMmap<AtomicBitmap>;

/// Guest RAM mappings of this process that hold file pages (host start,
/// end), for the SIGBUS handler: a file page past the end of a file that
/// was cut short after it was mapped raises SIGBUS when the VMM reads it.
const FILE_RAM_SLOTS: usize = 16;
static FILE_RAM: [(AtomicUsize, AtomicUsize); FILE_RAM_SLOTS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; FILE_RAM_SLOTS];
static SIGBUS_HANDLER: std::sync::Once = std::sync::Once::new();

/// A VMM read of a file page that no longer exists (its file was
/// truncated) finds a zero page there instead of killing the VMM; any
/// other SIGBUS keeps its default action.
extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let ours = FILE_RAM.iter().any(|(s, e)| {
        let (s, e) = (s.load(Ordering::Acquire), e.load(Ordering::Acquire));
        s != 0 && (s..e).contains(&addr)
    });
    let page = addr & !(PAGE_SIZE as usize - 1);
    // SAFETY: mmap and sigaction are async-signal-safe; the page is inside
    // guest RAM, which is ours, and replaced in place.
    unsafe {
        if ours
            && libc::mmap(
                page as *mut libc::c_void,
                PAGE_SIZE as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            ) != libc::MAP_FAILED
        {
            return;
        }
        // Not ours: the fault comes back with the default action.
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
    }
}

fn install_sigbus_handler() {
    SIGBUS_HANDLER.call_once(|| {
        // SAFETY: a zeroed sigaction with a handler of the SA_SIGINFO kind.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        }
    });
}

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
    /// Ranges mapped from host files (start -> end): their pages are the
    /// file's until written, and would read the file again after
    /// MADV_DONTNEED, so `discard` maps fresh anonymous memory over them.
    file_maps: Mutex<BTreeMap<u64, u64>>,
    has_file_maps: AtomicBool,
    /// The part of `file_maps` mapped shared and writable: the job's
    /// writes there reach a host file, which a copy elsewhere could not.
    shared_maps: Mutex<BTreeMap<u64, u64>>,
    /// What the job's pointers may reach, mirrored from its address space
    /// (`set_access`): a system call may read only mapped, accessible
    /// memory and write only writable memory, as Linux's copy_to_user
    /// allows (the guest page tables map all RAM, so nothing else would
    /// stop a call writing into the job's own code). Sorted, disjoint
    /// (start, end, writable) ranges.
    access: RwLock<Vec<(u64, u64, bool)>>,
    /// The address-space generation `access` mirrors; [`NO_ACCESS_MAP`]
    /// until the first mirror, when only the layout is checked.
    access_gen: AtomicU64,
}

const NO_ACCESS_MAP: u64 = u64::MAX;

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
        Ok(GuestRam {
            mem,
            host,
            size,
            user: UserLayout::new(size),
            file_maps: Mutex::new(BTreeMap::new()),
            has_file_maps: AtomicBool::new(false),
            shared_maps: Mutex::new(BTreeMap::new()),
            access: RwLock::new(Vec::new()),
            access_gen: AtomicU64::new(NO_ACCESS_MAP),
        })
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

    /// The generation of the address space `access` mirrors, if any.
    #[inline]
    pub fn access_gen(&self) -> Option<u64> {
        Some(self.access_gen.load(Ordering::Acquire)).filter(|&g| g != NO_ACCESS_MAP)
    }

    /// Mirrors the job's mappings `(start, end, prot)`, in address order,
    /// as generation `gen` of its address space.
    pub fn set_access(&self, gen: u64, vmas: impl Iterator<Item = (u64, u64, u32)>) {
        let mut access = self.access.write().unwrap_or_else(|e| e.into_inner());
        access.clear();
        let rwx = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u32;
        for (start, end, prot) in vmas.filter(|&(s, e, p)| s < e && p & rwx != 0) {
            let writable = prot & libc::PROT_WRITE as u32 != 0;
            match access.last_mut() {
                Some(last) if last.1 == start && last.2 == writable => last.1 = end,
                _ => access.push((start, end, writable)),
            }
        }
        self.access_gen.store(gen, Ordering::Release);
    }

    /// Do the job's mappings cover `[addr, addr + len)` (writable ones,
    /// if `write`)? Before the first mirror, the layout alone decides.
    fn may_touch(&self, addr: u64, len: u64, write: bool) -> bool {
        if !self.user.contains(addr, len) {
            return false;
        }
        if self.access_gen.load(Ordering::Acquire) == NO_ACCESS_MAP {
            return true;
        }
        let access = self.access.read().unwrap_or_else(|e| e.into_inner());
        let end = addr + len;
        let mut at = addr;
        let mut i = access.partition_point(|r| r.1 <= at);
        while at < end {
            match access.get(i) {
                Some(&(s, e, w)) if s <= at && (w || !write) => at = e,
                _ => return false,
            }
            i += 1;
        }
        true
    }

    /// May the job's call read `[addr, addr + len)`?
    #[inline]
    pub fn check_user(&self, addr: u64, len: u64) -> Result<(), Efault> {
        if len == 0 || self.may_touch(addr, len, false) {
            Ok(())
        } else {
            Err(Efault)
        }
    }

    /// May the job's call write `[addr, addr + len)`?
    #[inline]
    pub fn check_user_mut(&self, addr: u64, len: u64) -> Result<(), Efault> {
        if len == 0 || self.may_touch(addr, len, true) {
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

    /// The job's bytes at `[addr, addr + len)`, to be written by the VMM
    /// on the job's behalf (they must be writable to the job).
    pub fn user_mut(&self, addr: u64, len: u64) -> Result<DirtyGuard<'_>, Efault> {
        if len == 0 {
            return Ok(DirtyGuard { ram: self, addr: 0, bytes: &mut [] });
        }
        self.check_user_mut(addr, len)?;
        Ok(self.guard(addr, len))
    }

    /// The job's memory at `[addr, addr + len)` whatever its protection,
    /// for the VMM itself: filling a mapping it just made (a file copied
    /// in), moving one (mremap). Only the layout is checked.
    pub fn mapped(&self, addr: u64, len: u64) -> Result<&[u8], Efault> {
        if len > 0 && !self.user.contains(addr, len) {
            return Err(Efault);
        }
        // SAFETY: checked to be inside RAM; see `slice`.
        Ok(unsafe { std::slice::from_raw_parts(self.host.add(addr as usize), len as usize) })
    }

    /// As [`GuestRam::mapped`], for writing.
    pub fn mapped_mut(&self, addr: u64, len: u64) -> Result<DirtyGuard<'_>, Efault> {
        if len == 0 {
            return Ok(DirtyGuard { ram: self, addr: 0, bytes: &mut [] });
        }
        if !self.user.contains(addr, len) {
            return Err(Efault);
        }
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
    /// `Ok(None)` if no NUL was found within `max` bytes. The string is
    /// read page by page up to its NUL, as Linux does: a string at the end
    /// of the job's memory is fine as long as its NUL is inside.
    pub fn user_cstr(&self, addr: u64, max: usize) -> Result<Option<&[u8]>, Efault> {
        let mut at = addr;
        let limit = addr.saturating_add(max as u64 + 1);
        while at < limit {
            let chunk = (page_floor(at) + PAGE_SIZE).min(limit) - at;
            let bytes = self.user(at, chunk)?;
            if let Some(n) = bytes.iter().position(|&b| b == 0) {
                let len = at - addr + n as u64;
                return Ok(Some(self.user(addr, len)?));
            }
            at += chunk;
        }
        Ok(None)
    }

    /// Maps `len` bytes of `file` from `offset` (both page aligned)
    /// privately at `[gpa, gpa + len)`: the guest reads the file's pages
    /// without a copy, and its writes stay its own (copy on write). KVM
    /// follows the change of the host mapping (its MMU notifier).
    pub fn map_file(&self, gpa: u64, len: u64, fd: std::os::fd::RawFd, offset: u64) -> std::io::Result<()> {
        self.map_fd(gpa, len, fd, offset, false)
    }

    /// As `map_file`, but shared: the job's writes reach the file, and
    /// every process mapping it (a forked copy of the job too) sees them.
    pub fn map_file_shared(&self, gpa: u64, len: u64, fd: std::os::fd::RawFd, offset: u64) -> std::io::Result<()> {
        self.map_fd(gpa, len, fd, offset, true)?;
        let mut shared = self.shared_maps.lock().unwrap_or_else(|e| e.into_inner());
        range_remove(&mut shared, gpa, gpa + page_ceil(len));
        shared.insert(gpa, gpa + page_ceil(len));
        Ok(())
    }

    /// Shared anonymous memory at `[gpa, gpa + len)`: zero pages that a
    /// forked copy of the job shares (a memory file mapped shared). It
    /// moves as memory: without other processes, shared is private.
    pub fn map_shared_anonymous(&self, gpa: u64, len: u64) -> std::io::Result<()> {
        // SAFETY: a valid name; the result is checked.
        let fd = unsafe { libc::memfd_create(c"mosvm-shared".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        file.set_len(page_ceil(len))?;
        self.map_fd(gpa, len, fd, 0, true)
    }

    /// Does the job map a host file shared and writable?
    pub fn has_shared_file_maps(&self) -> bool {
        self.has_file_maps() && !self.shared_maps.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    fn map_fd(&self, gpa: u64, len: u64, fd: std::os::fd::RawFd, offset: u64, shared: bool) -> std::io::Result<()> {
        if !gpa.is_multiple_of(PAGE_SIZE) || !offset.is_multiple_of(PAGE_SIZE) || len == 0 || !self.in_ram(gpa, len) {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        }
        let len = page_ceil(len);
        if !self.in_ram(gpa, len) {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        }
        let mut maps = self.file_maps.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: a page-aligned range inside our own mapping, replaced in
        // place (MAP_FIXED); nothing borrows guest memory across this call.
        let p = unsafe {
            libc::mmap(
                self.host.add(gpa as usize).cast(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                if shared { libc::MAP_SHARED } else { libc::MAP_PRIVATE } | libc::MAP_FIXED | libc::MAP_NORESERVE,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            // A failed MAP_FIXED may have unmapped the range: make it RAM again.
            let _ = self.anonymous(gpa, len);
            return Err(e);
        }
        range_remove(&mut maps, gpa, gpa + len);
        maps.insert(gpa, gpa + len);
        range_remove(&mut self.shared_maps.lock().unwrap_or_else(|e| e.into_inner()), gpa, gpa + len);
        if !self.has_file_maps.swap(true, Ordering::AcqRel) {
            self.register_file_ram();
        }
        drop(maps);
        self.mark_dirty(gpa, len);
        Ok(())
    }

    /// Tells the SIGBUS handler about this RAM (once it holds file pages).
    fn register_file_ram(&self) {
        install_sigbus_handler();
        let (start, end) = (self.host as usize, self.host as usize + self.size as usize);
        if FILE_RAM.iter().any(|(s, _)| s.load(Ordering::Acquire) == start) {
            return;
        }
        for (s, e) in FILE_RAM.iter() {
            // A slot is claimed by its start; its end (0 while free) follows.
            if s.compare_exchange(0, start, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                e.store(end, Ordering::Release);
                return;
            }
        }
    }

    /// Does any of this RAM hold pages mapped from a host file?
    pub fn has_file_maps(&self) -> bool {
        self.has_file_maps.load(Ordering::Acquire)
    }

    /// Fresh anonymous zero pages over `[gpa, gpa + len)` (page aligned).
    fn anonymous(&self, gpa: u64, len: u64) -> std::io::Result<()> {
        // SAFETY: as in `map_file`: our own mapping, replaced in place.
        let p = unsafe {
            libc::mmap(
                self.host.add(gpa as usize).cast(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Turns the file-mapped pages in `[start, end)` (page aligned) back
    /// into anonymous zero pages. Returns false if some could not be.
    fn unmap_files(&self, start: u64, end: u64) -> bool {
        if !self.has_file_maps.load(Ordering::Acquire) {
            return true;
        }
        let mut maps = self.file_maps.lock().unwrap_or_else(|e| e.into_inner());
        let hits: Vec<(u64, u64)> = maps
            .range(..end)
            .rev()
            .take_while(|(_, &e)| e > start)
            .map(|(&s, &e)| (s.max(start), e.min(end)))
            .collect();
        let mut ok = true;
        for &(s, e) in &hits {
            ok &= self.anonymous(s, e - s).is_ok();
        }
        if ok {
            range_remove(&mut maps, start, end);
            range_remove(&mut self.shared_maps.lock().unwrap_or_else(|e| e.into_inner()), start, end);
        }
        if maps.is_empty() {
            self.has_file_maps.store(false, Ordering::Release);
        }
        ok
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
            // File pages would be read back from the file by DONTNEED.
            let anon = self.unmap_files(inner_start, inner_end);
            // SAFETY: a page-aligned range inside our private anonymous
            // mapping; DONTNEED only drops its contents.
            let rc = unsafe {
                libc::madvise(
                    self.host.add(inner_start as usize) as *mut libc::c_void,
                    (inner_end - inner_start) as usize,
                    libc::MADV_DONTNEED,
                )
            };
            if rc != 0 || !anon {
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

    /// Bytes of guest RAM mapped from host files.
    pub fn file_mapped_bytes(&self) -> u64 {
        let maps = self.file_maps.lock().unwrap_or_else(|e| e.into_inner());
        maps.iter().map(|(s, e)| e - s).sum()
    }
}

/// Removes `[start, end)` from a set of disjoint ranges, splitting those it cuts.
fn range_remove(maps: &mut BTreeMap<u64, u64>, start: u64, end: u64) {
    let cut: Vec<(u64, u64)> = maps.range(..end).rev().take_while(|(_, &e)| e > start).map(|(&s, &e)| (s, e)).collect();
    for (s, e) in cut {
        maps.remove(&s);
        if s < start {
            maps.insert(s, start);
        }
        if e > end {
            maps.insert(end, e);
        }
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        let start = self.host as usize;
        for (s, e) in FILE_RAM.iter() {
            if s.load(Ordering::Acquire) == start {
                e.store(0, Ordering::Release);
                s.store(0, Ordering::Release);
            }
        }
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
        // A file-mapped page holds the file's bytes even when mincore says
        // it is not in the page cache now.
        if self.has_file_maps.load(Ordering::Acquire) {
            let maps = self.file_maps.lock().unwrap_or_else(|e| e.into_inner());
            for (&s, &e) in maps.iter() {
                for i in (s / PAGE_SIZE) as usize..(e / PAGE_SIZE) as usize {
                    bits[i / 64] |= 1 << (i % 64);
                }
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
    use std::os::fd::AsRawFd;

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
    fn calls_reach_only_what_the_job_mapped_and_write_only_what_it_may() {
        let ram = GuestRam::new(32 << 20).unwrap();
        let (r, w) = (libc::PROT_READ as u32, (libc::PROT_READ | libc::PROT_WRITE) as u32);
        let code = 0x40_0000;
        // Code, then data right after it, then a hole, then a PROT_NONE
        // reservation and a write-only page.
        let vmas = [(code, code + 0x2000, r | libc::PROT_EXEC as u32), (code + 0x2000, code + 0x3000, w)];
        let more = [(code + 0x5000, code + 0x6000, 0), (code + 0x6000, code + 0x7000, libc::PROT_WRITE as u32)];
        ram.set_access(7, vmas.iter().chain(&more).copied());
        assert_eq!(ram.access_gen(), Some(7));
        assert!(ram.user(code, 0x3000).is_ok(), "code and data read as one");
        assert_eq!(ram.user_mut(code + 0x1ff8, 8).err(), Some(Efault), "code is not written by a call");
        assert!(ram.user_mut(code + 0x2000, 0x1000).is_ok());
        assert!(ram.user_mut(code + 0x2ff8, 16).is_err(), "running into the hole");
        assert!(ram.user(code + 0x3000, 1).is_err(), "a hole is not the job's");
        assert!(ram.user(code + 0x5000, 1).is_err(), "PROT_NONE");
        assert!(ram.user_mut(code + 0x6000, 8).is_ok(), "write-only is writable (and readable, on x86)");
        assert!(ram.write_user(code, b"x").is_err());
        // The VMM itself fills mappings whatever their protection.
        assert!(ram.mapped_mut(code, 8).is_ok() && ram.mapped(code + 0x5000, 8).is_ok());
        assert!(ram.mapped_mut(0x1000, 8).is_err(), "but never outside the job's part of RAM");
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
    fn cstr_at_the_end_of_a_mapping() {
        let ram = GuestRam::new(32 << 20).unwrap();
        let guard = ram.user_layout().guard;
        // A string ending right at the last byte before the stack guard:
        // reading a maximal window at once would run into the guard.
        ram.write_user(guard - 4, b"abc\0").unwrap();
        assert_eq!(ram.user_cstr(guard - 4, 4096).unwrap(), Some(&b"abc"[..]));
        ram.write_user(guard - 3, b"abc").unwrap();
        assert_eq!(ram.user_cstr(guard - 3, 4096), Err(Efault));
        // Across a page boundary.
        let at = USER_BASE + PAGE_SIZE - 2;
        ram.write_user(at, b"xyz\0").unwrap();
        assert_eq!(ram.user_cstr(at, 4096).unwrap(), Some(&b"xyz"[..]));
        assert_eq!(ram.user_cstr(at, 2).unwrap(), None);
    }

    #[test]
    fn file_maps_copy_on_write_count_as_resident_and_discard_to_zeros() {
        use std::io::Write as _;
        let path = std::env::temp_dir().join(format!("mosvm-memory-test-{}", std::process::id()));
        let content: Vec<u8> = (0..5 * PAGE_SIZE as usize).map(|i| (i % 253) as u8 + 1).collect();
        std::fs::File::create(&path).unwrap().write_all(&content).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let ram = GuestRam::new(32 << 20).unwrap();
        let at = USER_BASE + 16 * PAGE_SIZE;
        // Pages 1..4 of the file.
        ram.map_file(at, 3 * PAGE_SIZE, file.as_raw_fd(), PAGE_SIZE).unwrap();
        assert_eq!(ram.user(at, 3 * PAGE_SIZE).unwrap(), &content[PAGE_SIZE as usize..4 * PAGE_SIZE as usize]);
        assert_eq!(ram.file_mapped_bytes(), 3 * PAGE_SIZE);
        // Every mapped page counts, touched or not.
        let bits = ram.resident_pages().unwrap();
        for p in 0..3 {
            let i = ((at / PAGE_SIZE) + p) as usize;
            assert_ne!(bits[i / 64] & (1 << (i % 64)), 0, "page {p}");
        }
        // Writes stay in guest memory.
        ram.write_user(at, &[0; 8]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), content);
        // A discard of the middle page reads zeros (not the file again), the
        // others keep their bytes.
        ram.discard(at + PAGE_SIZE, PAGE_SIZE).unwrap();
        assert!(ram.user(at + PAGE_SIZE, PAGE_SIZE).unwrap().iter().all(|&b| b == 0));
        assert_eq!(ram.user(at + 8, 8).unwrap(), &content[PAGE_SIZE as usize + 8..PAGE_SIZE as usize + 16]);
        let last = ram.user(at + 2 * PAGE_SIZE, PAGE_SIZE).unwrap();
        assert_eq!(last, &content[3 * PAGE_SIZE as usize..4 * PAGE_SIZE as usize]);
        assert_eq!(ram.file_mapped_bytes(), 2 * PAGE_SIZE);
        // The file cut short under the mapping: the VMM reads zeros where
        // it would take SIGBUS.
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        assert!(ram.user(at + 2 * PAGE_SIZE, PAGE_SIZE).unwrap().iter().all(|&b| b == 0));
        ram.discard(0, ram.size()).unwrap();
        assert_eq!(ram.file_mapped_bytes(), 0);
        assert!(ram.user(at, 3 * PAGE_SIZE).unwrap().iter().all(|&b| b == 0));
        // Nothing out of range or unaligned.
        assert!(ram.map_file(at + 1, PAGE_SIZE, file.as_raw_fd(), 0).is_err());
        assert!(ram.map_file(ram.size() - PAGE_SIZE, 2 * PAGE_SIZE, file.as_raw_fd(), 0).is_err());
        let _ = std::fs::remove_file(&path);
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
