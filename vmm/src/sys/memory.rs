//! brk, mmap and friends: bookkeeping in `mm`, memory given back with
//! `GuestRam::discard`.

use libc::{MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_PRIVATE, MAP_SHARED, MAP_SHARED_VALIDATE};

use crate::errno::{Errno, SysResult};
use crate::job::Job;
use crate::layout::{page_ceil, PAGE_SIZE, USER_BASE};
use crate::mm::VmaKind;

const MREMAP_MAYMOVE: i32 = 1;
const MREMAP_FIXED: i32 = 2;
const MREMAP_DONTUNMAP: i32 = 4;

/// Maps `len` bytes of host descriptor `fd` from `offset` at guest `start`
/// if it is a regular file open for reading (and writing, for a shared
/// writable mapping); Ok(false): copy it instead.
fn map_host_file(
    ram: &crate::memory::GuestRam,
    fd: i32,
    start: u64,
    len: u64,
    offset: u64,
    shared_write: bool,
) -> Result<bool, Errno> {
    // SAFETY: a zeroed stat is a valid out buffer; fd is the job's open descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return if shared_write { Err(Errno::ENODEV) } else { Ok(false) };
    }
    // SAFETY: F_GETFL has no side effects.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // As Linux: a mapping needs a descriptor open for reading, a shared
    // writable one a descriptor open for writing too.
    if fl >= 0 && (fl & libc::O_ACCMODE == libc::O_WRONLY || shared_write && fl & libc::O_ACCMODE != libc::O_RDWR) {
        return Err(Errno::EACCES);
    }
    if offset.checked_add(len).is_none_or(|e| e > i64::MAX as u64) {
        return Err(Errno(libc::EOVERFLOW));
    }
    if shared_write {
        return ram.map_file_shared(start, len, fd, offset).map(|_| true).map_err(Errno::from);
    }
    Ok(ram.map_file(start, len, fd, offset).is_ok())
}

impl Job {
    /// Checks an address range argument: page-aligned start, in job memory.
    fn user_range(&self, addr: u64, len: u64) -> Result<(u64, u64), Errno> {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        let len = page_ceil(len.min(u64::MAX - PAGE_SIZE));
        addr.checked_add(len).ok_or(Errno::EINVAL)?;
        if !self.mm.layout().contains(addr, len) || addr < USER_BASE {
            return Err(Errno::ENOMEM);
        }
        Ok((addr, len))
    }

    pub(super) fn sys_mmap(&mut self, addr: u64, len: u64, prot: i32, flags: i32, fd: i32, offset: u64) -> SysResult {
        if len == 0 || !offset.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        let kind = flags & 3;
        if kind != MAP_PRIVATE && kind != MAP_SHARED && kind != MAP_SHARED_VALIDATE {
            return Err(Errno::EINVAL);
        }
        let len = page_ceil(len.min(u64::MAX - PAGE_SIZE));
        let anon = flags & MAP_ANONYMOUS != 0;
        // Shared and writable: the host file itself is mapped (at home), so
        // the writes reach it and forked copies of the job share them.
        let shared_write = kind != MAP_PRIVATE && prot & libc::PROT_WRITE != 0;
        let host = if anon { None } else { self.site.host_fd(fd) };
        if !anon {
            self.site.check_fd(fd)?;
            if shared_write && host.is_none() {
                // Away from home the file is the deputy's: copies only.
                return Err(Errno::ENODEV);
            }
        }
        let start = if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
            let (start, len) = self.user_range(addr, len)?;
            if flags & MAP_FIXED_NOREPLACE != 0 && self.mm.find_free(start, len) != Some(start) {
                return Err(Errno::EEXIST);
            }
            start
        } else {
            self.mm.find_free(addr & !(PAGE_SIZE - 1), len).ok_or(Errno::ENOMEM)?
        };
        let vma_kind = if anon { VmaKind::Anon } else { VmaKind::File };
        self.mm.map(&self.ram, start, len, prot as u32, vma_kind);
        if anon && kind != MAP_PRIVATE && !self.site.is_remote() {
            // Shared with the processes the job forks (a job away from
            // home has none: there its memory is as good as shared).
            if let Err(e) = self.ram.map_shared_anonymous(start, len) {
                self.mm.unmap(&self.ram, start, len);
                return Err(Errno::from(e));
            }
        }
        if !anon {
            // At home, a regular file's pages are mapped into guest memory
            // as Linux maps them (no copy, the page cache shared with
            // every other user of the file; past its end, SIGBUS). They
            // travel as memory when the job moves.
            if let Some(h) = host {
                match map_host_file(&self.ram, h, start, len, offset, shared_write) {
                    Ok(true) => return Ok(start),
                    Ok(false) => {}
                    Err(e) => {
                        self.mm.unmap(&self.ram, start, len);
                        return Err(e);
                    }
                }
            }
            // Copy the file in; pages past its end stay zero.
            let mut done = 0u64;
            while done < len {
                let mut buf = self.ram.mapped_mut(start + done, len - done)?;
                let r = self.site.pread(fd, &mut buf, (offset + done) as i64);
                match r {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.commit(n as usize);
                        done += n;
                    }
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        drop(buf);
                        self.mm.unmap(&self.ram, start, len);
                        return Err(e);
                    }
                }
            }
        }
        Ok(start)
    }

    pub(super) fn sys_munmap(&mut self, addr: u64, len: u64) -> SysResult {
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let (start, len) = match self.user_range(addr, len) {
            Err(Errno::ENOMEM) => return Ok(0), // nothing of the job's there
            r => r?,
        };
        self.mm.unmap(&self.ram, start, len);
        Ok(0)
    }

    pub(super) fn sys_mremap(&mut self, old: u64, old_len: u64, new_len: u64, flags: i32, new_addr: u64) -> SysResult {
        if flags & !(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP) != 0
            || flags & MREMAP_FIXED != 0 && flags & MREMAP_MAYMOVE == 0
            || new_len == 0
        {
            return Err(Errno::EINVAL);
        }
        let (old, old_len) = self.user_range(old, old_len)?;
        let new_len = page_ceil(new_len);
        let (vstart, vma) = self.mm.find(old).ok_or(Errno::EFAULT)?;
        if old + old_len > vma.end {
            return Err(Errno::EFAULT);
        }
        if flags & MREMAP_FIXED == 0 {
            if new_len <= old_len {
                if new_len < old_len {
                    self.mm.unmap(&self.ram, old + new_len, old_len - new_len);
                }
                return Ok(old);
            }
            // Grow in place when the mapping ends here and the space is free.
            if vma.end == old + old_len {
                if vstart != old {
                    // Split so the mapping to grow starts at `old`.
                    self.mm.protect(old, vma.end, vma.prot);
                }
                if self.mm.extend(old, old + old_len, old + new_len) {
                    return Ok(old);
                }
            }
            if flags & MREMAP_MAYMOVE == 0 {
                return Err(Errno::ENOMEM);
            }
        }
        let target = if flags & MREMAP_FIXED != 0 {
            let (t, _) = self.user_range(new_addr, new_len)?;
            if t < old + old_len && old < t + new_len {
                return Err(Errno::EINVAL);
            }
            t
        } else {
            self.mm.find_free(0, new_len).ok_or(Errno::ENOMEM)?
        };
        self.mm.map(&self.ram, target, new_len, vma.prot, vma.kind);
        let n = old_len.min(new_len);
        {
            let src = self.ram.mapped(old, n)?.as_ptr();
            let mut dst = self.ram.mapped_mut(target, n)?;
            // SAFETY: both ranges are checked and do not overlap (target was free).
            unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), n as usize) };
        }
        if flags & MREMAP_DONTUNMAP != 0 {
            self.ram.discard(old, old_len).map_err(|_| Errno::EFAULT)?;
        } else {
            self.mm.unmap(&self.ram, old, old_len);
        }
        Ok(target)
    }

    pub(super) fn sys_mprotect(&mut self, addr: u64, len: u64, prot: i32) -> SysResult {
        if prot & !(libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC | libc::PROT_GROWSDOWN | libc::PROT_GROWSUP)
            != 0
        {
            return Err(Errno::EINVAL);
        }
        let (start, len) = self.user_range(addr, len)?;
        if len == 0 {
            return Ok(0);
        }
        if self.mm.protect(start, start + len, prot as u32) {
            Ok(0)
        } else {
            Err(Errno::ENOMEM)
        }
    }

    pub(super) fn sys_madvise(&mut self, addr: u64, len: u64, advice: i32) -> SysResult {
        let (start, len) = self.user_range(addr, len)?;
        match advice {
            libc::MADV_DONTNEED | libc::MADV_FREE | libc::MADV_REMOVE => {
                // Only anonymous memory can be dropped: file mappings are
                // copies that could not be read back.
                let mut at = start;
                while at < start + len {
                    match self.mm.find(at) {
                        Some((_, v)) => {
                            let end = v.end.min(start + len);
                            if v.kind != VmaKind::File && v.kind != VmaKind::Image {
                                let _ = self.ram.discard(at, end - at);
                            }
                            at = end;
                        }
                        None => return Err(Errno::ENOMEM),
                    }
                }
                Ok(0)
            }
            0..=4 | 8..=22 | 100..=101 => Ok(0),
            _ => Err(Errno::EINVAL),
        }
    }

    pub(super) fn sys_mincore(&mut self, addr: u64, len: u64, vec: u64) -> SysResult {
        let (start, len) = self.user_range(addr, len)?;
        if !self.mm.is_mapped(start, start + len) {
            return Err(Errno::ENOMEM);
        }
        let mut out = self.ram.user_mut(vec, len / PAGE_SIZE)?;
        out.fill(1);
        Ok(0)
    }
}
