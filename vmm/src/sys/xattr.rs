//! Extended attributes: getxattr, setxattr, listxattr, removexattr and
//! their l* (no final symlink) and f* (descriptor) forms, served by the
//! job's site like every other call on its files.

use crate::errno::{Errno, SysResult};
use crate::job::Job;
use crate::memory::GuestRam;

/// Linux's limits: a name is at most 255 bytes, a value at most 64 KiB.
const XATTR_NAME_MAX: usize = 255;
const XATTR_CREATE: i32 = 1;
const XATTR_REPLACE: i32 = 2;

/// Which file a call names: a path (following a final symlink or not),
/// or a descriptor.
#[derive(Clone, Copy)]
pub(super) enum At {
    Path { path: u64, follow: bool },
    Fd(i32),
}

/// The target as the site takes it: (fd, path, follow).
fn target(ram: &GuestRam, at: At) -> Result<(i32, &[u8], bool), Errno> {
    match at {
        At::Fd(fd) if fd < 0 => Err(Errno::EBADF),
        At::Fd(fd) => Ok((fd, b"", true)),
        At::Path { path, follow } => {
            let p = ram.user_cstr(path, libc::PATH_MAX as usize - 1)?.ok_or(Errno::ENAMETOOLONG)?;
            if p.is_empty() {
                return Err(Errno::ENOENT);
            }
            Ok((libc::AT_FDCWD, p, follow))
        }
    }
}

fn attr_name(ram: &GuestRam, name: u64) -> Result<&[u8], Errno> {
    let n = ram.user_cstr(name, XATTR_NAME_MAX)?.ok_or(Errno(libc::ERANGE))?;
    if n.is_empty() {
        return Err(Errno(libc::ERANGE));
    }
    Ok(n)
}

impl Job {
    pub(super) fn sys_getxattr(&mut self, at: At, name: u64, value: u64, size: u64) -> SysResult {
        let ram = self.ram.clone();
        let (fd, path, follow) = target(&ram, at)?;
        let name = attr_name(&ram, name)?;
        // A size of 0 asks for the size: the buffer may be NULL.
        if size == 0 {
            return self.site.getxattr(fd, path, follow, name, &mut []);
        }
        let mut out = ram.user_mut(value, size.min(crate::site::XATTR_SIZE_MAX as u64))?;
        let r = self.site.getxattr(fd, path, follow, name, &mut out);
        out.commit(*r.as_ref().unwrap_or(&0) as usize);
        r
    }

    pub(super) fn sys_listxattr(&mut self, at: At, list: u64, size: u64) -> SysResult {
        let ram = self.ram.clone();
        let (fd, path, follow) = target(&ram, at)?;
        if size == 0 {
            return self.site.listxattr(fd, path, follow, &mut []);
        }
        let mut out = ram.user_mut(list, size.min(crate::site::XATTR_SIZE_MAX as u64))?;
        let r = self.site.listxattr(fd, path, follow, &mut out);
        out.commit(*r.as_ref().unwrap_or(&0) as usize);
        r
    }

    pub(super) fn sys_setxattr(&mut self, at: At, name: u64, value: u64, size: u64, flags: i32) -> SysResult {
        if flags & !(XATTR_CREATE | XATTR_REPLACE) != 0 {
            return Err(Errno::EINVAL);
        }
        if size > crate::site::XATTR_SIZE_MAX as u64 {
            return Err(Errno(libc::E2BIG));
        }
        let ram = self.ram.clone();
        let (fd, path, follow) = target(&ram, at)?;
        let name = attr_name(&ram, name)?;
        let value: &[u8] = if size == 0 { &[] } else { ram.user(value, size)? };
        self.site.setxattr(fd, path, follow, name, value, flags)
    }

    pub(super) fn sys_removexattr(&mut self, at: At, name: u64) -> SysResult {
        let ram = self.ram.clone();
        let (fd, path, follow) = target(&ram, at)?;
        let name = attr_name(&ram, name)?;
        self.site.removexattr(fd, path, follow, name)
    }
}
