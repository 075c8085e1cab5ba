//! Sockets of a job: host sockets behind job descriptors. Addresses,
//! options and control data come in and go out as bytes.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::local::{LocalSite, Origin};
use super::SiteOps;
use crate::errno::{host, Errno, SysResult};

/// Room for any socket address (struct sockaddr_storage).
pub const ADDR_MAX: usize = 128;

/// A received message: bytes read, and lengths of address and control data.
pub struct Received {
    pub n: u64,
    pub addr_len: u32,
    pub control_len: usize,
    pub flags: i32,
}

const CMSG_HDR: usize = 16;

/// Walks the cmsgs in `control`, calling `f` on the data of SCM_RIGHTS ones.
fn each_rights(control: &mut [u8], mut f: impl FnMut(&mut [u8]) -> Result<(), Errno>) -> Result<(), Errno> {
    let mut at = 0;
    while at + CMSG_HDR <= control.len() {
        let len = u64::from_le_bytes(control[at..at + 8].try_into().unwrap()) as usize;
        if len < CMSG_HDR || at + len > control.len() {
            break;
        }
        let level = i32::from_le_bytes(control[at + 8..at + 12].try_into().unwrap());
        let kind = i32::from_le_bytes(control[at + 12..at + 16].try_into().unwrap());
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            f(&mut control[at + CMSG_HDR..at + len])?;
        }
        at += (len + 7) & !7;
    }
    Ok(())
}

impl LocalSite {
    fn own(&mut self, fd: RawFd, cloexec: bool) -> SysResult {
        self.own_as(fd, cloexec, Origin::Socket)
    }

    fn own_as(&mut self, fd: RawFd, cloexec: bool, origin: Origin) -> SysResult {
        // SAFETY: a fresh descriptor the host just gave us.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        self.install(owned, cloexec, 0, origin)
    }

    pub fn socket(&mut self, domain: i32, ty: i32, protocol: i32) -> SysResult {
        // SAFETY: plain arguments.
        let fd = host(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) } as i64)?;
        self.own(fd as RawFd, ty & libc::SOCK_CLOEXEC != 0)
    }

    pub fn socketpair(&mut self, domain: i32, ty: i32, protocol: i32) -> Result<(u64, u64), Errno> {
        let mut sv = [0; 2];
        // SAFETY: sv has room for two descriptors.
        host(unsafe { libc::socketpair(domain, ty | libc::SOCK_CLOEXEC, protocol, sv.as_mut_ptr()) } as i64)?;
        let cloexec = ty & libc::SOCK_CLOEXEC != 0;
        // A Unix pair connects the job to itself: no peer elsewhere sees
        // where its body runs.
        let origin = if domain == libc::AF_UNIX { Origin::SocketPair } else { Origin::Socket };
        let a = self.own_as(sv[0], cloexec, origin)?;
        match self.own_as(sv[1], cloexec, origin) {
            Ok(b) => Ok((a, b)),
            Err(e) => {
                self.close(a as i32)?;
                Err(e)
            }
        }
    }

    pub fn bind(&mut self, fd: i32, addr: &[u8]) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: addr is a socket address of its length.
        host(unsafe { libc::bind(h, addr.as_ptr().cast(), addr.len() as u32) } as i64)
    }

    pub fn connect(&mut self, fd: i32, addr: &[u8]) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: addr is a socket address of its length.
        host(unsafe { libc::connect(h, addr.as_ptr().cast(), addr.len() as u32) } as i64)
    }

    pub fn listen(&mut self, fd: i32, backlog: i32) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: plain arguments.
        host(unsafe { libc::listen(h, backlog) } as i64)
    }

    /// accept4; the peer's address goes to `addr`, its length is returned.
    pub fn accept(&mut self, fd: i32, flags: i32, addr: &mut [u8; ADDR_MAX]) -> Result<(u64, u32), Errno> {
        let h = self.host_fd(fd)?;
        let mut len = ADDR_MAX as u32;
        // SAFETY: addr has ADDR_MAX bytes.
        let r =
            host(unsafe { libc::accept4(h, addr.as_mut_ptr().cast(), &mut len, flags | libc::SOCK_CLOEXEC) } as i64)?;
        Ok((self.own(r as RawFd, flags & libc::SOCK_CLOEXEC != 0)?, len))
    }

    /// getsockname (or getpeername with `peer`); returns the address length.
    pub fn sockname(&mut self, fd: i32, peer: bool, addr: &mut [u8; ADDR_MAX]) -> Result<u32, Errno> {
        let h = self.host_fd(fd)?;
        let mut len = ADDR_MAX as u32;
        // SAFETY: addr has ADDR_MAX bytes.
        host(unsafe {
            if peer {
                libc::getpeername(h, addr.as_mut_ptr().cast(), &mut len)
            } else {
                libc::getsockname(h, addr.as_mut_ptr().cast(), &mut len)
            }
        } as i64)?;
        Ok(len)
    }

    pub fn setsockopt(&mut self, fd: i32, level: i32, name: i32, value: &[u8]) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: value is an option value of its length.
        host(unsafe { libc::setsockopt(h, level, name, value.as_ptr().cast(), value.len() as u32) } as i64)
    }

    /// getsockopt; returns the value's length.
    pub fn getsockopt(&mut self, fd: i32, level: i32, name: i32, value: &mut [u8]) -> Result<u32, Errno> {
        let h = self.host_fd(fd)?;
        let mut len = value.len() as u32;
        // SAFETY: value has len bytes.
        host(unsafe { libc::getsockopt(h, level, name, value.as_mut_ptr().cast(), &mut len) } as i64)?;
        Ok(len)
    }

    /// sendmsg; SCM_RIGHTS descriptors in `control` are job descriptors.
    pub fn sendmsg(&mut self, fd: i32, name: &[u8], iov: &[IoSlice<'_>], control: &mut [u8], flags: i32) -> SysResult {
        let h = self.host_fd(fd)?;
        each_rights(control, |data| {
            for c in data.chunks_exact_mut(4) {
                let job_fd = i32::from_le_bytes(c.try_into().unwrap());
                c.copy_from_slice(&self.host_fd(job_fd)?.to_le_bytes());
            }
            Ok(())
        })?;
        // SAFETY: a zeroed msghdr filled with live buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = if name.is_empty() { std::ptr::null_mut() } else { name.as_ptr() as *mut _ };
        msg.msg_namelen = name.len() as u32;
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len();
        msg.msg_control = if control.is_empty() { std::ptr::null_mut() } else { control.as_mut_ptr().cast() };
        msg.msg_controllen = control.len();
        // SAFETY: msg points at live buffers of the given lengths.
        host(unsafe { libc::sendmsg(h, &msg, flags | libc::MSG_NOSIGNAL) } as i64)
    }

    /// recvmsg; descriptors received with SCM_RIGHTS become job descriptors.
    pub fn recvmsg(
        &mut self,
        fd: i32,
        name: &mut [u8; ADDR_MAX],
        iov: &mut [IoSliceMut<'_>],
        control: &mut [u8],
        flags: i32,
    ) -> Result<Received, Errno> {
        let h = self.host_fd(fd)?;
        // SAFETY: a zeroed msghdr filled with live buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = name.as_mut_ptr().cast();
        msg.msg_namelen = ADDR_MAX as u32;
        msg.msg_iov = iov.as_mut_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len();
        msg.msg_control = if control.is_empty() { std::ptr::null_mut() } else { control.as_mut_ptr().cast() };
        msg.msg_controllen = control.len();
        // SAFETY: msg points at live buffers of the given lengths.
        let n = host(unsafe { libc::recvmsg(h, &mut msg, flags | libc::MSG_CMSG_CLOEXEC) } as i64)?;
        let control_len = msg.msg_controllen.min(control.len());
        let cloexec = flags & libc::MSG_CMSG_CLOEXEC != 0;
        each_rights(&mut control[..control_len], |data| {
            for c in data.chunks_exact_mut(4) {
                let host_fd = i32::from_le_bytes(c.try_into().unwrap());
                let job_fd = self.own(host_fd, cloexec)?;
                c.copy_from_slice(&(job_fd as i32).to_le_bytes());
            }
            Ok(())
        })?;
        Ok(Received { n, addr_len: msg.msg_namelen, control_len, flags: msg.msg_flags })
    }

    pub fn shutdown(&mut self, fd: i32, how: i32) -> SysResult {
        let h = self.host_fd(fd)?;
        // SAFETY: plain arguments.
        host(unsafe { libc::shutdown(h, how) } as i64)
    }
}
