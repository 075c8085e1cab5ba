//! Socket calls, body side: the job's addresses, buffers and message
//! headers turned into bytes for the site's sockets.

use std::io::{IoSlice, IoSliceMut};

use crate::errno::{Errno, SysResult};
use crate::job::Job;
use crate::site::net::ADDR_MAX;

/// Largest socket option value and control buffer accepted.
const OPT_MAX: u64 = 1024;
const CONTROL_MAX: u64 = 64 << 10;

/// struct msghdr as the job passes it.
struct MsgHdr {
    name: u64,
    namelen: u32,
    iov: u64,
    iovlen: u64,
    control: u64,
    controllen: u64,
}

impl Job {
    fn addr_in(&self, addr: u64, len: u64) -> Result<Vec<u8>, Errno> {
        if len as usize > ADDR_MAX {
            return Err(Errno::EINVAL);
        }
        Ok(self.ram.user(addr, len)?.to_vec())
    }

    /// Writes an address out as accept/getsockname/recvfrom do: `len_ptr`
    /// holds the room and receives the real length.
    fn addr_out(&self, addr: u64, len_ptr: u64, bytes: &[u8], len: u32) -> Result<(), Errno> {
        if addr == 0 {
            return Ok(());
        }
        let room = self.ram.read_user_u32(len_ptr)?;
        if (room as i32) < 0 {
            return Err(Errno::EINVAL);
        }
        let n = room.min(len).min(bytes.len() as u32) as u64;
        self.ram.write_user(addr, &bytes[..n as usize])?;
        self.ram.write_user_u32(len_ptr, len)?;
        Ok(())
    }

    fn msghdr(&self, msg: u64) -> Result<MsgHdr, Errno> {
        let b = self.ram.user(msg, 56)?;
        let w = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        Ok(MsgHdr {
            name: w(0),
            namelen: u32::from_le_bytes(b[8..12].try_into().unwrap()),
            iov: w(16),
            iovlen: w(24),
            control: w(32),
            controllen: w(40),
        })
    }

    pub(super) fn sys_socket(&mut self, domain: i32, ty: i32, protocol: i32) -> SysResult {
        self.site.here(Errno(libc::EAFNOSUPPORT))?.socket(domain, ty, protocol)
    }

    pub(super) fn sys_socketpair(&mut self, domain: i32, ty: i32, protocol: i32, sv: u64) -> SysResult {
        self.ram.check_user(sv, 8)?;
        let (a, b) = self.site.here(Errno(libc::EAFNOSUPPORT))?.socketpair(domain, ty, protocol)?;
        self.ram.write_user_u32(sv, a as u32)?;
        self.ram.write_user_u32(sv + 4, b as u32)?;
        Ok(0)
    }

    pub(super) fn sys_bind(&mut self, fd: i32, addr: u64, len: u64) -> SysResult {
        let a = self.addr_in(addr, len)?;
        self.site.here(Errno(libc::ENOTSOCK))?.bind(fd, &a)
    }

    pub(super) fn sys_connect(&mut self, fd: i32, addr: u64, len: u64) -> SysResult {
        let a = self.addr_in(addr, len)?;
        loop {
            let r = self.site.here(Errno(libc::ENOTSOCK))?.connect(fd, &a);
            if let Some(r) = self.retry(r) {
                return r;
            }
        }
    }

    pub(super) fn sys_accept(&mut self, fd: i32, addr: u64, len_ptr: u64, flags: i32) -> SysResult {
        if flags & !(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) != 0 {
            return Err(Errno::EINVAL);
        }
        self.park_unless_ready(fd, libc::POLLIN)?;
        let mut peer = [0u8; ADDR_MAX];
        let (new, len) = loop {
            let r = self.site.here(Errno(libc::ENOTSOCK))?.accept(fd, flags, &mut peer);
            if let Some(r) = self.retry(r) {
                break r?;
            }
        };
        if let Err(e) = self.addr_out(addr, len_ptr, &peer, len) {
            let _ = self.site.close(new as i32);
            return Err(e);
        }
        Ok(new)
    }

    pub(super) fn sys_sockname(&mut self, fd: i32, addr: u64, len_ptr: u64, peer: bool) -> SysResult {
        self.ram.check_user(len_ptr, 4)?;
        let mut a = [0u8; ADDR_MAX];
        let len = self.site.here(Errno(libc::ENOTSOCK))?.sockname(fd, peer, &mut a)?;
        self.addr_out(addr, len_ptr, &a, len)?;
        Ok(0)
    }

    pub(super) fn sys_setsockopt(&mut self, fd: i32, level: i32, name: i32, value: u64, len: u64) -> SysResult {
        if len > OPT_MAX {
            return Err(Errno::EINVAL);
        }
        let v = self.ram.user(value, len)?.to_vec();
        self.site.here(Errno(libc::ENOTSOCK))?.setsockopt(fd, level, name, &v)
    }

    pub(super) fn sys_getsockopt(&mut self, fd: i32, level: i32, name: i32, value: u64, len_ptr: u64) -> SysResult {
        let room = self.ram.read_user_u32(len_ptr)?;
        if (room as i32) < 0 {
            return Err(Errno::EINVAL);
        }
        let mut v = vec![0u8; (room as u64).min(OPT_MAX) as usize];
        let len = self.site.here(Errno(libc::ENOTSOCK))?.getsockopt(fd, level, name, &mut v)?;
        let n = (len as usize).min(v.len());
        self.ram.write_user(value, &v[..n])?;
        self.ram.write_user_u32(len_ptr, len)?;
        Ok(0)
    }

    /// sendto and sendmsg.
    fn send(&mut self, fd: i32, name: &[u8], vecs: &[(u64, u64)], control: &mut [u8], flags: i32) -> SysResult {
        self.park_unless_ready(fd, libc::POLLOUT)?;
        loop {
            let slices =
                vecs.iter().map(|&(b, l)| self.ram.user(b, l).map(IoSlice::new)).collect::<Result<Vec<_>, _>>()?;
            let r = self.site.here(Errno(libc::ENOTSOCK))?.sendmsg(fd, name, &slices, control, flags);
            match self.retry(r) {
                None => continue,
                // MSG_NOSIGNAL spares the job its SIGPIPE.
                Some(r) if flags & libc::MSG_NOSIGNAL != 0 => return r,
                Some(r) => return self.wrote(r),
            }
        }
    }

    pub(super) fn sys_sendto(&mut self, fd: i32, buf: u64, len: u64, flags: i32, addr: u64, alen: u64) -> SysResult {
        let name = if addr == 0 { Vec::new() } else { self.addr_in(addr, alen)? };
        self.send(fd, &name, &[(buf, len.min(0x7fff_f000))], &mut [], flags)
    }

    pub(super) fn sys_sendmsg(&mut self, fd: i32, msg: u64, flags: i32) -> SysResult {
        let m = self.msghdr(msg)?;
        let name = if m.name == 0 { Vec::new() } else { self.addr_in(m.name, m.namelen as u64)? };
        let vecs = self.iovecs(m.iov, m.iovlen)?;
        if m.controllen > CONTROL_MAX {
            return Err(Errno::ENOBUFS);
        }
        let mut control = if m.control == 0 { Vec::new() } else { self.ram.user(m.control, m.controllen)?.to_vec() };
        self.send(fd, &name, &vecs, &mut control, flags)
    }

    /// recvfrom and recvmsg: bytes read, and what to tell the job.
    fn recv(
        &mut self,
        fd: i32,
        vecs: &[(u64, u64)],
        control: &mut [u8],
        flags: i32,
        name: &mut [u8; ADDR_MAX],
    ) -> Result<crate::site::net::Received, Errno> {
        if flags & libc::MSG_DONTWAIT == 0 {
            self.park_unless_ready(fd, libc::POLLIN)?;
        }
        loop {
            let mut guards = vecs.iter().map(|&(b, l)| self.ram.user_mut(b, l)).collect::<Result<Vec<_>, _>>()?;
            let mut slices: Vec<IoSliceMut> = guards.iter_mut().map(|g| IoSliceMut::new(g)).collect();
            let r = self.site.here(Errno(libc::ENOTSOCK))?.recvmsg(fd, name, &mut slices, control, flags);
            drop(slices);
            let mut left = r.as_ref().map_or(0, |x| x.n as usize);
            for g in guards {
                let n = left.min(g.len());
                left -= n;
                g.commit(n);
            }
            if let Some(r) = self.retry(r) {
                return r;
            }
        }
    }

    pub(super) fn sys_recvfrom(
        &mut self,
        fd: i32,
        buf: u64,
        len: u64,
        flags: i32,
        addr: u64,
        len_ptr: u64,
    ) -> SysResult {
        let mut name = [0u8; ADDR_MAX];
        let r = self.recv(fd, &[(buf, len.min(0x7fff_f000))], &mut [], flags, &mut name)?;
        if addr != 0 {
            self.addr_out(addr, len_ptr, &name, r.addr_len)?;
        }
        Ok(r.n)
    }

    pub(super) fn sys_recvmsg(&mut self, fd: i32, msg: u64, flags: i32) -> SysResult {
        let m = self.msghdr(msg)?;
        let vecs = self.iovecs(m.iov, m.iovlen)?;
        let mut control = vec![0u8; m.controllen.min(CONTROL_MAX) as usize];
        if m.control != 0 {
            self.ram.check_user(m.control, control.len() as u64)?;
        } else {
            control.clear();
        }
        let mut name = [0u8; ADDR_MAX];
        let r = self.recv(fd, &vecs, &mut control, flags, &mut name)?;
        if m.name != 0 {
            let n = (m.namelen).min(r.addr_len) as u64;
            self.ram.write_user(m.name, &name[..n as usize])?;
        }
        self.ram.write_user_u32(msg + 8, if m.name != 0 { r.addr_len } else { 0 })?;
        if m.control != 0 {
            self.ram.write_user(m.control, &control[..r.control_len])?;
        }
        self.ram.write_user_u64(msg + 40, r.control_len as u64)?;
        self.ram.write_user_u32(msg + 48, r.flags as u32)?;
        Ok(r.n)
    }

    pub(super) fn sys_shutdown(&mut self, fd: i32, how: i32) -> SysResult {
        self.site.here(Errno(libc::ENOTSOCK))?.shutdown(fd, how)
    }
}
