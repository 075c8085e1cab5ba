//! Dirty-page tracking for pre-copy: KVM's log of guest writes OR'ed with
//! the VMM's own write bitmap (vm-memory), one bit per page.

use std::io;

use kvm_bindings::{kvm_dirty_log, kvm_userspace_memory_region, KVMIO, KVM_MEM_LOG_DIRTY_PAGES};
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

use crate::layout::PAGE_SIZE;
use crate::vm::VmHandle;

ioctl_iow_nr!(KVM_GET_DIRTY_LOG, KVMIO, 0x42, kvm_dirty_log);

pub struct DirtyLog {
    handle: VmHandle,
    /// KVM's bitmap for the last round, then the union with the VMM's.
    bits: Vec<u64>,
}

fn set_logging(handle: &VmHandle, on: bool) -> io::Result<()> {
    let ram = &handle.ram;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: if on { KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
        guest_phys_addr: 0,
        memory_size: ram.size(),
        userspace_addr: ram.host_base() as u64,
    };
    // SAFETY: the same region the VM was created with, only the flags change.
    unsafe { handle.vm_fd.set_user_memory_region(region) }.map_err(|e| io::Error::from_raw_os_error(e.errno()))
}

impl DirtyLog {
    /// Starts logging: from now on every write to guest memory is recorded.
    pub fn start(handle: &VmHandle) -> io::Result<DirtyLog> {
        let pages = handle.ram.size() / PAGE_SIZE;
        // Forget what the VMM wrote before: round 0 sends everything anyway.
        handle.ram.dirty_bitmap().reset();
        set_logging(handle, true)?;
        Ok(DirtyLog { handle: handle.clone(), bits: vec![0; pages.div_ceil(64) as usize] })
    }

    /// Pages written since the previous call (or since `start`), as a
    /// bitmap; logging restarts for the next round.
    pub fn collect(&mut self) -> io::Result<&[u64]> {
        let log = kvm_dirty_log {
            slot: 0,
            padding1: 0,
            __bindgen_anon_1: kvm_bindings::kvm_dirty_log__bindgen_ty_1 { dirty_bitmap: self.bits.as_mut_ptr().cast() },
        };
        // SAFETY: the bitmap has one bit per page of slot 0.
        let rc = unsafe { ioctl_with_ref(self.handle.vm_fd.as_ref(), KVM_GET_DIRTY_LOG(), &log) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // Same layout as KVM's: bit i%64 of word i/64 is page i.
        let vmm = self.handle.ram.dirty_bitmap().get_and_reset();
        for (w, v) in self.bits.iter_mut().zip(vmm) {
            *w |= v;
        }
        Ok(&self.bits)
    }

    /// Stops logging (when the move failed and the job stays).
    pub fn stop(self) {
        let _ = set_logging(&self.handle, false);
    }
}

/// Calls `f(gpa)` for every set bit.
#[inline]
pub fn for_each_page(bits: &[u64], mut f: impl FnMut(u64) -> io::Result<()>) -> io::Result<()> {
    for (i, &w) in bits.iter().enumerate() {
        let mut w = w;
        while w != 0 {
            let b = w.trailing_zeros() as u64;
            w &= w - 1;
            f((i as u64 * 64 + b) * PAGE_SIZE)?;
        }
    }
    Ok(())
}

pub fn count(bits: &[u64]) -> u64 {
    bits.iter().map(|w| w.count_ones() as u64).sum()
}
