//! The site's conformance suite, run against every implementation of
//! `SiteOps` (the local site, and the remote site served by a deputy over
//! loopback), and the deputy's rules about which body is the job.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::errno::Errno;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mosvm-site-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn local(dir: &Path) -> LocalSite {
    LocalSite::new(SiteConfig {
        inherited: Vec::new(),
        stdio: [0, 1, 2],
        cwd: dir.to_path_buf(),
        exe: PathBuf::from("/bin/true"),
        umask: Some(0o022),
        pid: std::process::id(),
    })
    .unwrap()
}

fn stat_size(st: &[u8; 144]) -> i64 {
    i64::from_le_bytes(st[48..56].try_into().unwrap())
}

/// What every site must do the same way, in the job's working directory.
fn conformance(site: &mut dyn SiteOps, dir: &Path) {
    let c = |s: &str| s.as_bytes().to_vec();
    // Files: create, write, seek, read back, stat, truncate.
    let fd = site.openat(libc::AT_FDCWD, b"a.txt", libc::O_RDWR | libc::O_CREAT, 0o666).unwrap() as i32;
    assert!(fd >= 3);
    assert_eq!(site.write(fd, b"hello, home\n").unwrap(), 12);
    assert_eq!(site.lseek(fd, 0, libc::SEEK_SET).unwrap(), 0);
    let mut buf = [0u8; 64];
    assert_eq!(site.read(fd, &mut buf).unwrap(), 12);
    assert_eq!(&buf[..12], b"hello, home\n");
    assert_eq!(site.pread(fd, &mut buf[..5], 7).unwrap(), 5);
    assert_eq!(&buf[..5], b"home\n");
    assert_eq!(site.pwrite(fd, b"H", 7).unwrap(), 1);
    let mut st = [0u8; 144];
    site.fstatat(fd, b"", libc::AT_EMPTY_PATH, &mut st).unwrap();
    assert_eq!(stat_size(&st), 12);
    site.fstatat(libc::AT_FDCWD, b"a.txt", 0, &mut st).unwrap();
    assert_eq!(stat_size(&st), 12);
    // The umask applies to what the site creates.
    let mode = u32::from_le_bytes(st[24..28].try_into().unwrap());
    assert_eq!(mode & 0o777, 0o644);
    site.ftruncate(fd, 5).unwrap();
    site.fsync(fd, false).unwrap();
    assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), b"hello");
    // Vectored I/O.
    let (a, b) = (b"vec".to_vec(), b"tor\n".to_vec());
    let ios = [std::io::IoSlice::new(&a), std::io::IoSlice::new(&b)];
    assert_eq!(site.writev(fd, &ios, 0).unwrap(), 7);
    let (mut x, mut y) = ([0u8; 2], [0u8; 10]);
    let mut iom = [std::io::IoSliceMut::new(&mut x), std::io::IoSliceMut::new(&mut y)];
    assert_eq!(site.readv(fd, &mut iom, 0).unwrap(), 7);
    assert_eq!((&x, &y[..5]), (b"ve", &b"ctor\n"[..]));
    // Reading in small pieces with the offset looked at in between, a
    // dup sharing it, and the file written through another descriptor (a
    // body away reads ahead; the job never notices).
    let content: Vec<u8> = (0..20000).flat_map(|i| format!("{i}\n").into_bytes()).collect();
    std::fs::write(dir.join("seq.txt"), &content).unwrap();
    let s = site.openat(libc::AT_FDCWD, b"seq.txt", libc::O_RDONLY, 0).unwrap() as i32;
    let mut big = [0u8; 200];
    let mut at = 0;
    for n in [10, 100, 5] {
        assert_eq!(site.read(s, &mut big[..n]).unwrap(), n as u64);
        assert_eq!(&big[..n], &content[at..at + n]);
        at += n;
        assert_eq!(site.lseek(s, 0, libc::SEEK_CUR).unwrap(), at as u64);
    }
    assert_eq!(site.read(s, &mut big[..7]).unwrap(), 7);
    assert_eq!(&big[..7], &content[at..at + 7]);
    at += 7;
    let s2 = site.dup(s, 0, false).unwrap() as i32;
    assert_eq!(site.read(s2, &mut big[..5]).unwrap(), 5);
    assert_eq!(&big[..5], &content[at..at + 5]);
    at += 5;
    let w = site.openat(libc::AT_FDCWD, b"seq.txt", libc::O_WRONLY, 0).unwrap() as i32;
    assert_eq!(site.read(s, &mut big[..5]).unwrap(), 5);
    at += 5;
    assert_eq!(site.pwrite(w, b"XYZ", at as i64).unwrap(), 3);
    assert_eq!(site.read(s, &mut big[..3]).unwrap(), 3);
    assert_eq!(&big[..3], b"XYZ");
    for x in [s, s2, w] {
        site.close(x).unwrap();
    }
    // The same with a descriptor of its own, read to the end.
    let s = site.openat(libc::AT_FDCWD, b"seq.txt", libc::O_RDONLY, 0).unwrap() as i32;
    let mut all = Vec::new();
    loop {
        let n = site.read(s, &mut big[..97]).unwrap() as usize;
        if n == 0 {
            break;
        }
        all.extend_from_slice(&big[..n]);
    }
    assert_eq!(all.len(), content.len());
    assert_eq!(site.lseek(s, 0, libc::SEEK_CUR).unwrap(), content.len() as u64);
    site.close(s).unwrap();
    // Descriptors: dup, fcntl, close, bad descriptors.
    let d = site.dup(fd, 10, true).unwrap() as i32;
    assert!(d >= 10);
    assert_eq!(site.fcntl(d, libc::F_GETFD, 0).unwrap(), libc::FD_CLOEXEC as u64);
    assert_eq!(site.dup3(fd, 20, false).unwrap(), 20);
    site.close(d).unwrap();
    site.close(20).unwrap();
    assert_eq!(site.close(d), Err(Errno::EBADF));
    assert_eq!(site.read(999, &mut buf), Err(Errno::EBADF));
    assert!(site.check_fd(fd).is_ok() && site.check_fd(998).is_err());
    // Pipes, and poll on them.
    let (r, w) = site.pipe2(libc::O_CLOEXEC).unwrap();
    let (r, w) = (r as i32, w as i32);
    let mut rec = [0u8; 8];
    rec[..4].copy_from_slice(&r.to_le_bytes());
    rec[4..6].copy_from_slice(&(libc::POLLIN).to_le_bytes());
    assert_eq!(site.poll(&mut rec, 0).unwrap(), 0);
    assert_eq!(site.write(w, b"through the pipe").unwrap(), 16);
    assert_eq!(site.poll(&mut rec, 1000).unwrap(), 1);
    assert_ne!(i16::from_le_bytes(rec[6..8].try_into().unwrap()) & libc::POLLIN, 0);
    assert_eq!(site.read(r, &mut buf).unwrap(), 16);
    site.close(w).unwrap();
    assert_eq!(site.read(r, &mut buf).unwrap(), 0);
    site.close(r).unwrap();
    // Names: directories, links, renames, errors.
    site.mkdirat(libc::AT_FDCWD, b"sub", 0o777).unwrap();
    assert_eq!(site.mkdirat(libc::AT_FDCWD, b"sub", 0o777), Err(Errno(libc::EEXIST)));
    site.symlinkat(b"a.txt", libc::AT_FDCWD, b"link").unwrap();
    let n = site.readlinkat(libc::AT_FDCWD, b"link", &mut buf).unwrap() as usize;
    assert_eq!(&buf[..n], b"a.txt");
    site.renameat2(libc::AT_FDCWD, b"a.txt", libc::AT_FDCWD, b"sub/b.txt", 0).unwrap();
    assert_eq!(site.faccessat(libc::AT_FDCWD, b"a.txt", libc::F_OK, 0), Err(Errno::ENOENT));
    assert_eq!(site.openat(libc::AT_FDCWD, b"missing", libc::O_RDONLY, 0), Err(Errno::ENOENT));
    site.unlinkat(libc::AT_FDCWD, b"link", 0).unwrap();
    // Working directory.
    assert_eq!(site.getcwd(), dir.as_os_str().as_encoded_bytes());
    site.chdir(b"sub").unwrap();
    assert_eq!(site.getcwd(), dir.join("sub").as_os_str().as_encoded_bytes());
    let f = site.openat(libc::AT_FDCWD, b"b.txt", libc::O_RDONLY, 0).unwrap() as i32;
    assert_eq!(site.read(f, &mut buf).unwrap(), 7);
    // Directory listing.
    let dfd = site.openat(libc::AT_FDCWD, b".", libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap() as i32;
    let mut ents = vec![0u8; 4096];
    let got = site.getdents64(dfd, &mut ents).unwrap() as usize;
    assert!(ents[..got].windows(5).any(|w| w == b"b.txt"));
    site.chdir(b"..").unwrap();
    assert_eq!(site.umask(0o077), 0o022);
    assert_eq!(site.current_umask(), 0o077);
    // Programs are read through the site (execve).
    let (bytes, path) = site.read_program(libc::AT_FDCWD, b"/bin/true", 0, 64 << 20).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert!(path.is_absolute());
    assert_eq!(site.read_program(libc::AT_FDCWD, b"sub", 0, 1 << 20).unwrap_err(), Errno::EACCES);
    // The VMM's own /proc entry is out of reach, however it is spelled.
    for p in ["/proc/self/mem", "//proc/self/mem", &format!("/proc/./{}/mem", std::process::id())] {
        assert_eq!(site.openat(libc::AT_FDCWD, &c(p), libc::O_RDONLY, 0), Err(Errno::EACCES), "{p}");
    }
    for x in [fd, f, dfd] {
        site.close(x).unwrap();
    }
    events(site);
    table(site, dir);
    xattrs(site, dir);
}

fn event(events: u32, data: u64) -> [u8; EPOLL_EVENT_SIZE] {
    let mut e = [0u8; EPOLL_EVENT_SIZE];
    e[..4].copy_from_slice(&events.to_le_bytes());
    e[4..].copy_from_slice(&data.to_le_bytes());
    e
}

fn itimerspec(interval_ns: i64, value_ns: i64) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, ns) in [interval_ns, value_ns].into_iter().enumerate() {
        b[i * 16..i * 16 + 8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
        b[i * 16 + 8..i * 16 + 16].copy_from_slice(&(ns % 1_000_000_000).to_le_bytes());
    }
    b
}

/// Event descriptors: epoll over the site's descriptors, eventfd, timerfd, signalfd.
fn events(site: &mut dyn SiteOps) {
    let ep = site.epoll_create(true).unwrap() as i32;
    assert_eq!(site.fcntl(ep, libc::F_GETFD, 0).unwrap(), libc::FD_CLOEXEC as u64);
    let (r, w) = site.pipe2(0).unwrap();
    let (r, w) = (r as i32, w as i32);
    let ev = site.eventfd(0, libc::EFD_NONBLOCK).unwrap() as i32;
    const IN: u32 = libc::EPOLLIN as u32;
    site.epoll_ctl(ep, libc::EPOLL_CTL_ADD, r, &event(IN, u64::MAX - 1)).unwrap();
    site.epoll_ctl(ep, libc::EPOLL_CTL_ADD, ev, &event(IN, 7)).unwrap();
    assert_eq!(site.epoll_ctl(ep, libc::EPOLL_CTL_ADD, r, &event(IN, 0)), Err(Errno::EEXIST));
    assert_eq!(site.epoll_ctl(ep, libc::EPOLL_CTL_ADD, 999, &event(IN, 0)), Err(Errno::EBADF));
    assert_eq!(site.epoll_ctl(ep, libc::EPOLL_CTL_ADD, ep, &event(IN, 0)), Err(Errno::EINVAL));
    assert_eq!(site.epoll_ctl(r, libc::EPOLL_CTL_ADD, ev, &event(IN, 0)), Err(Errno::EINVAL));
    let mut out = [0u8; 4 * EPOLL_EVENT_SIZE];
    assert_eq!(site.epoll_wait(ep, &mut out, 0).unwrap(), 0);
    assert_eq!(site.epoll_wait(r, &mut out, 0), Err(Errno::EINVAL));
    assert_eq!(site.epoll_wait(ep, &mut out[..5], 0), Err(Errno::EINVAL));
    site.write(w, b"x").unwrap();
    assert_eq!(site.write(ev, &3u64.to_le_bytes()).unwrap(), 8);
    assert_eq!(site.epoll_wait(ep, &mut out, 1000).unwrap(), 2);
    let mut datas: Vec<u64> =
        out.chunks_exact(EPOLL_EVENT_SIZE).take(2).map(|e| u64::from_le_bytes(e[4..].try_into().unwrap())).collect();
    datas.sort();
    assert_eq!(datas, [7, u64::MAX - 1], "epoll data comes back as given");
    // An epoll descriptor polls readable while events are ready.
    let mut rec = [0u8; 8];
    rec[..4].copy_from_slice(&ep.to_le_bytes());
    rec[4..6].copy_from_slice(&libc::POLLIN.to_le_bytes());
    assert_eq!(site.poll(&mut rec, 0).unwrap(), 1);
    let mut v = [0u8; 8];
    assert_eq!(site.read(ev, &mut v).unwrap(), 8);
    assert_eq!(u64::from_le_bytes(v), 3);
    assert_eq!(site.read(ev, &mut v), Err(Errno::EAGAIN));
    // The last close of the pipe's read end takes it out of the interest list.
    site.close(r).unwrap();
    assert_eq!(site.epoll_wait(ep, &mut out, 0).unwrap(), 0);
    site.close(w).unwrap();
    assert_eq!(site.eventfd(0, 0x4000_0000), Err(Errno::EINVAL));

    // timerfd: relative and absolute (on the job's clock, whatever the host's).
    let t = site.timerfd_create(libc::CLOCK_MONOTONIC, 0).unwrap() as i32;
    assert_eq!(site.timerfd_create(77, 0), Err(Errno::EINVAL));
    let mut old = [0u8; 32];
    site.timerfd_settime(t, 0, &itimerspec(0, 20_000_000), 0, &mut old).unwrap();
    let mut cur = [0u8; 32];
    site.timerfd_gettime(t, &mut cur).unwrap();
    assert!(cur[16..].iter().any(|&b| b != 0), "armed");
    site.epoll_ctl(ep, libc::EPOLL_CTL_ADD, t, &event(IN, 9)).unwrap();
    assert_eq!(site.epoll_wait(ep, &mut out, 2000).unwrap(), 1);
    assert_eq!(site.read(t, &mut v).unwrap(), 8);
    assert_eq!(u64::from_le_bytes(v), 1);
    // The job's clock reads 1000 s; 1000.02 s is 20 ms from now.
    let start = std::time::Instant::now();
    site.timerfd_settime(t, libc::TFD_TIMER_ABSTIME, &itimerspec(0, 1_000_020_000_000), 1_000_000_000_000, &mut old)
        .unwrap();
    assert_eq!(site.read(t, &mut v).unwrap(), 8);
    let took = start.elapsed();
    assert!(took >= std::time::Duration::from_millis(15) && took < std::time::Duration::from_secs(2), "{took:?}");
    assert_eq!(site.timerfd_settime(ev, 0, &itimerspec(0, 0), 0, &mut old), Err(Errno::EINVAL));
    site.close(t).unwrap();

    // signalfd: readable while a signal of its mask is pending; read by the body.
    let usr1 = 1u64 << (libc::SIGUSR1 - 1);
    let sfd = site.signalfd(-1, usr1, libc::SFD_NONBLOCK).unwrap() as i32;
    assert_eq!(site.signalfd_get(sfd).unwrap(), (usr1, true));
    assert_eq!(site.signalfd_get(ev), Err(Errno::EINVAL));
    assert_eq!(site.signalfd(ev, usr1, 0), Err(Errno::EINVAL));
    assert_eq!(site.read(sfd, &mut v), Err(SIGNALFD_READ));
    assert_eq!(site.write(sfd, &v), Err(Errno::EINVAL));
    site.epoll_ctl(ep, libc::EPOLL_CTL_ADD, sfd, &event(IN, 11)).unwrap();
    assert_eq!(site.signals_pending(1 << (libc::SIGUSR2 - 1)).unwrap(), 1);
    assert_eq!(site.epoll_wait(ep, &mut out, 0).unwrap(), 0);
    assert_eq!(site.signals_pending(usr1).unwrap(), 1);
    assert_eq!(site.epoll_wait(ep, &mut out, 0).unwrap(), 1);
    assert_eq!(u64::from_le_bytes(out[4..12].try_into().unwrap()), 11);
    // A new mask applies to every descriptor of that signalfd.
    let sdup = site.dup(sfd, 0, false).unwrap() as i32;
    site.signalfd(sdup, 1 << 63, 0).unwrap();
    assert_eq!(site.signalfd_get(sfd).unwrap().0, 1 << 63);
    site.signals_pending(0).unwrap();
    assert_eq!(site.epoll_wait(ep, &mut out, 0).unwrap(), 0);
    for x in [sfd, sdup, ev, ep] {
        site.close(x).unwrap();
    }
    assert_eq!(site.signals_pending(usr1).unwrap(), 0);
}

/// The descriptor table: its limit, close_range, the job's /proc/self/fd,
/// mknodat and fadvise.
fn table(site: &mut dyn SiteOps, dir: &Path) {
    // The limit: allocation stays below it, whatever the host's.
    site.set_fd_limit(40);
    assert_eq!(site.dup3(0, 40, false), Err(Errno::EBADF));
    assert_eq!(site.dup(0, 40, false), Err(Errno::EINVAL));
    let mut got = Vec::new();
    loop {
        match site.dup(0, 0, false) {
            Ok(fd) => got.push(fd as i32),
            Err(e) => {
                assert_eq!(e, Errno::EMFILE);
                break;
            }
        }
    }
    assert_eq!(got.last(), Some(&39));
    site.set_fd_limit(5000);
    assert_eq!(site.dup3(0, 4000, false).unwrap(), 4000);
    assert_eq!(site.dup(0, 4500, true).unwrap(), 4500);
    site.close_range(3, u32::MAX, true).unwrap();
    assert_eq!(site.fcntl(4000, libc::F_GETFD, 0).unwrap(), libc::FD_CLOEXEC as u64);
    site.close_range(3, u32::MAX, false).unwrap();
    assert_eq!(site.check_fd(4000), Err(Errno::EBADF));
    assert_eq!(site.check_fd(got[0]), Err(Errno::EBADF));
    assert!(site.check_fd(2).is_ok());

    // /proc/self/fd lists the job's descriptors, not this process's.
    let f = site.openat(libc::AT_FDCWD, b"/dev/null", libc::O_RDONLY, 0).unwrap() as i32;
    site.dup3(f, 77, false).unwrap();
    let d = site.openat(libc::AT_FDCWD, b"/proc/self/fd", libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap() as i32;
    let mut names = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let n = site.getdents64(d, &mut buf).unwrap() as usize;
        if n == 0 {
            break;
        }
        let mut at = 0;
        while at < n {
            let len = u16::from_le_bytes(buf[at + 16..at + 18].try_into().unwrap()) as usize;
            let name = &buf[at + 19..at + len];
            names.push(String::from_utf8_lossy(&name[..name.iter().position(|&b| b == 0).unwrap()]).into_owned());
            at += len;
        }
    }
    let want: Vec<String> =
        [".", "..", "0", "1", "2"].iter().map(|s| s.to_string()).chain([f, d, 77].map(|n| n.to_string())).collect();
    assert_eq!(names, want);
    assert_eq!(site.lseek(d, 0, libc::SEEK_SET).unwrap(), 0);
    assert!(site.getdents64(d, &mut buf).unwrap() > 0, "rewound");
    let mut link = [0u8; 64];
    let p = format!("/proc/self/fd/{f}");
    let n = site.readlinkat(libc::AT_FDCWD, p.as_bytes(), &mut link).unwrap() as usize;
    assert_eq!(&link[..n], b"/dev/null");
    let n = site.readlinkat(d, b"77", &mut link).unwrap() as usize;
    assert_eq!(&link[..n], b"/dev/null", "relative to the listing's descriptor");
    assert_eq!(site.openat(libc::AT_FDCWD, b"/proc/self/fd", libc::O_WRONLY, 0), Err(Errno(libc::EISDIR)));
    assert_eq!(site.openat(libc::AT_FDCWD, b"/proc/self/fd/1234", libc::O_RDONLY, 0), Err(Errno::ENOENT));
    for x in [f, d, 77] {
        site.close(x).unwrap();
    }

    // mknodat: FIFOs and files, not devices.
    site.mknodat(libc::AT_FDCWD, b"fifo", libc::S_IFIFO | 0o666, 0).unwrap();
    site.mknodat(libc::AT_FDCWD, b"plain", 0o666, 0).unwrap();
    assert_eq!(site.mknodat(libc::AT_FDCWD, b"fifo", libc::S_IFIFO | 0o666, 0), Err(Errno::EEXIST));
    assert_eq!(site.mknodat(libc::AT_FDCWD, b"dev", libc::S_IFCHR | 0o600, 0x103), Err(Errno::EPERM));
    assert_eq!(site.mknodat(libc::AT_FDCWD, b"no/dev", libc::S_IFBLK | 0o600, 0), Err(Errno::ENOENT));
    assert_eq!(site.mknodat(libc::AT_FDCWD, b"bad", 0o170000, 0), Err(Errno::EINVAL));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(dir.join("fifo")).unwrap().file_type().is_fifo());
    let m = std::fs::metadata(dir.join("plain")).unwrap();
    assert!(m.is_file());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(m.permissions().mode() & 0o777, 0o600, "the umask (077 by now) applies");
    // A FIFO opened without blocking; fadvise on it is ESPIPE.
    let fr = site.openat(libc::AT_FDCWD, b"fifo", libc::O_RDONLY | libc::O_NONBLOCK, 0).unwrap() as i32;
    assert_eq!(site.fadvise(fr, 0, 0, libc::POSIX_FADV_NORMAL), Err(Errno::ESPIPE));
    let pf = site.openat(libc::AT_FDCWD, b"plain", libc::O_RDONLY, 0).unwrap() as i32;
    site.fadvise(pf, 0, 0, libc::POSIX_FADV_SEQUENTIAL).unwrap();
    assert_eq!(site.fadvise(pf, 0, 0, 99), Err(Errno::EINVAL));
    assert_eq!(site.fadvise(999, 0, 0, 0), Err(Errno::EBADF));
    site.readahead(pf, 0, 4096).unwrap();
    for x in [fr, pf] {
        site.close(x).unwrap();
    }
}

/// Extended attributes, by path (with and without following a symlink)
/// and by descriptor, with Linux's errors.
fn xattrs(site: &mut dyn SiteOps, dir: &Path) {
    std::fs::write(dir.join("x.txt"), b"x").unwrap();
    std::os::unix::fs::symlink("x.txt", dir.join("x.link")).unwrap();
    assert_eq!(site.setxattr(libc::AT_FDCWD, b"x.txt", true, b"user.colour", b"blue", 0).unwrap(), 0);
    // A size query, then the value; too small a buffer is ERANGE.
    assert_eq!(site.getxattr(libc::AT_FDCWD, b"x.link", true, b"user.colour", &mut []).unwrap(), 4);
    let mut v = [0u8; 16];
    assert_eq!(site.getxattr(libc::AT_FDCWD, b"x.txt", true, b"user.colour", &mut v).unwrap(), 4);
    assert_eq!(&v[..4], b"blue");
    assert_eq!(site.getxattr(libc::AT_FDCWD, b"x.txt", true, b"user.colour", &mut v[..2]), Err(Errno(libc::ERANGE)));
    // Not through the symlink: the link itself has none.
    assert_eq!(site.getxattr(libc::AT_FDCWD, b"x.link", false, b"user.colour", &mut v), Err(Errno(libc::ENODATA)));
    assert_eq!(site.setxattr(libc::AT_FDCWD, b"x.txt", true, b"user.colour", b"red", 1), Err(Errno(libc::EEXIST)));
    let fd = site.openat(libc::AT_FDCWD, b"x.txt", libc::O_RDONLY, 0).unwrap() as i32;
    assert_eq!(site.setxattr(fd, b"", true, b"user.size", b"1", 0).unwrap(), 0);
    let mut names = [0u8; 64];
    let n = site.listxattr(fd, b"", true, &mut names).unwrap() as usize;
    let mut got: Vec<&[u8]> = names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()).collect();
    got.sort();
    assert_eq!(got, [&b"user.colour"[..], b"user.size"]);
    assert_eq!(site.listxattr(libc::AT_FDCWD, b"x.txt", true, &mut []).unwrap() as usize, n);
    assert_eq!(site.removexattr(fd, b"", true, b"user.size").unwrap(), 0);
    assert_eq!(site.removexattr(libc::AT_FDCWD, b"x.txt", true, b"user.size"), Err(Errno(libc::ENODATA)));
    assert_eq!(site.getxattr(libc::AT_FDCWD, b"nothing", true, b"user.colour", &mut v), Err(Errno::ENOENT));
    assert_eq!(site.getxattr(99, b"", true, b"user.colour", &mut v), Err(Errno::EBADF));
    site.close(fd).unwrap();
    // The attribute is on the file at home.
    let mut host = [0u8; 8];
    let path = std::ffi::CString::new(dir.join("x.txt").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings and buffer.
    let n = unsafe { libc::getxattr(path.as_ptr(), c"user.colour".as_ptr(), host.as_mut_ptr().cast(), 8) };
    assert_eq!(&host[..n as usize], b"blue");
}

#[test]
fn the_local_site_conforms() {
    let dir = scratch("local");
    conformance(&mut local(&dir), &dir);
}

/// A deputy serving a local site in `dir`, on a thread; and a body linked to it.
fn deputy(dir: &Path) -> (Arc<Home>, std::thread::JoinHandle<Served>) {
    deputy_with(dir, trust::Transport::Plain)
}

fn deputy_with(dir: &Path, transport: trust::Transport) -> (Arc<Home>, std::thread::JoinHandle<Served>) {
    let home = Home::start("127.0.0.1:0", transport).unwrap();
    let site = local(dir);
    let h = home.clone();
    (home, std::thread::spawn(move || h.serve(site)))
}

fn body(home: &Home, generation: u64) -> std::io::Result<RemoteSite> {
    body_with(home, generation, &trust::Transport::Plain)
}

fn body_with(home: &Home, generation: u64, transport: &trust::Transport) -> std::io::Result<RemoteSite> {
    let mut link = home.next_link();
    link.generation = generation;
    let names = SiteState {
        cwd: home_cwd(home),
        umask: 0o022,
        exe: PathBuf::from("/bin/true"),
        pid: std::process::id(),
        next_desc: 0,
        fds: Vec::new(),
    };
    RemoteSite::claim(RemoteSite::prepare(link, None, transport)?, &names)
}

/// Deputies and bodies of one process share its signal state (the
/// pending host signals, the thread a signal kicks): a body told to stop
/// posts SIGKILL, which would cut another test's deputy short. In a real
/// cluster each body and each deputy has a process of its own; here the
/// tests that link them take turns.
fn one_link_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let _ = crate::signal::take_host_signals();
    turn
}

fn home_cwd(_: &Home) -> Vec<u8> {
    CWD.with(|c| c.borrow().clone())
}

thread_local! {
    static CWD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[test]
fn the_remote_site_conforms() {
    let _turn = one_link_at_a_time();
    let dir = scratch("remote");
    CWD.with(|c| *c.borrow_mut() = dir.as_os_str().as_encoded_bytes().to_vec());
    let (home, served) = deputy(&dir);
    let mut r = body(&home, 1).unwrap();
    conformance(&mut r, &dir);
    // Every call was counted by kind, each landing in one latency bucket.
    let stats: Vec<_> = r.call_stats().read().collect();
    let openat = stats.iter().find(|k| k.kind == "openat").expect("openat counted");
    assert!(openat.count > 0 && openat.seconds > 0.0, "{openat:?}");
    for k in &stats {
        assert!(k.buckets.windows(2).all(|w| w[0].1 <= w[1].1) && k.buckets[10].1 <= k.count, "{k:?}");
    }
    assert!(stats.iter().any(|k| k.kind == "write"), "{stats:?}");
    r.report_exit(7, "the end");
    match served.join().unwrap() {
        Served::Exited { status, message } => assert_eq!((status, message.as_str()), (7, "the end")),
        other => panic!("{other:?}"),
    }
}

/// Job credentials of a fresh cluster: two jobs' (a deputy's and a
/// body's, issued by two hosts) and a stranger's, of another cluster.
fn tls_jobs(dir: &Path) -> [trust::Transport; 3] {
    let job = |ca: &Path, host: &str, name: &str| {
        let h = trust::Identity::load(&trust::add_host(ca, host).unwrap()).unwrap();
        let creds = h.issue_job(name).unwrap().unwrap();
        trust::Transport::tls(trust::Identity::from_job(&creds, name).unwrap()).unwrap()
    };
    let (ours, theirs) = (dir.join("ca"), dir.join("other-ca"));
    trust::init_cluster(&ours).unwrap();
    trust::init_cluster(&theirs).unwrap();
    [job(&ours, "h1", "1@h1"), job(&ours, "h2", "1@h1"), job(&theirs, "x", "1@x")]
}

/// The same suite over mutual TLS (job certificates at both ends); a
/// body with another cluster's certificate, or none, gets no link.
#[test]
fn the_remote_site_conforms_over_tls() {
    let _turn = one_link_at_a_time();
    let dir = scratch("remote-tls");
    CWD.with(|c| *c.borrow_mut() = dir.as_os_str().as_encoded_bytes().to_vec());
    let [deputy_t, body_t, stranger] = tls_jobs(&dir);
    let (home, served) = deputy_with(&dir, deputy_t);
    for t in [&stranger, &trust::Transport::Plain] {
        let e = body_with(&home, 1, t).err().expect("a stranger got a link");
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            "{e:?}"
        );
    }
    let mut r = body_with(&home, 1, &body_t).unwrap();
    conformance(&mut r, &dir);
    r.report_exit(3, "over TLS");
    match served.join().unwrap() {
        Served::Exited { status, message } => assert_eq!((status, message.as_str()), (3, "over TLS")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_deputy_serves_only_the_newest_body() {
    let _turn = one_link_at_a_time();
    let dir = scratch("generations");
    CWD.with(|c| *c.borrow_mut() = dir.as_os_str().as_encoded_bytes().to_vec());
    std::fs::write(dir.join("f"), b"data").unwrap();
    let (home, served) = deputy(&dir);
    let mut first = body(&home, 1).unwrap();
    assert!(first.openat(libc::AT_FDCWD, b"f", libc::O_RDONLY, 0).is_ok());
    // The same generation again (a replayed move) and an older one are refused.
    for g in [1, 0] {
        let e = body(&home, g).err().expect("an old generation must be refused");
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    }
    // A wrong secret is refused.
    let mut link = home.next_link();
    link.token[0] ^= 1;
    assert!(RemoteSite::prepare(link, None, &trust::Transport::Plain).is_err());
    // Garbage on the port changes nothing.
    for junk in
        [&b"MOSVDEP\0\xff\xff\xff\xff"[..], b"GET / HTTP/1.0\r\n\r\n", b"MOSVDEP\0\x05\x00\x00\x00\x00\x00\x00\x00ab"]
    {
        let mut s = TcpStream::connect(home.addr()).unwrap();
        let _ = std::io::Write::write_all(&mut s, junk);
    }
    // A newer body takes over: the old one is stopped, never served again.
    let mut second = body(&home, 2).unwrap();
    // The same job: the descriptor the first body opened is still open.
    assert!(second.check_fd(3).is_ok());
    assert_eq!(second.openat(libc::AT_FDCWD, b"f", libc::O_RDONLY, 0).unwrap(), 4);
    let t = std::time::Instant::now();
    while !first.is_lost() && t.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(first.is_lost(), "the replaced body was not told to stop");
    assert_eq!(first.openat(libc::AT_FDCWD, b"f", libc::O_RDONLY, 0), Err(Errno(libc::EIO)));
    // Signals posted meanwhile (the replaced body's SIGKILL) are not ours.
    let _ = crate::signal::take_host_signals();
    second.report_exit(0, "");
    assert!(matches!(served.join().unwrap(), Served::Exited { status: 0, .. }));
}

#[test]
fn a_body_that_vanishes_is_reported_lost() {
    let _turn = one_link_at_a_time();
    let dir = scratch("lost");
    CWD.with(|c| *c.borrow_mut() = dir.as_os_str().as_encoded_bytes().to_vec());
    let (home, served) = deputy(&dir);
    let b = body(&home, 1).unwrap();
    drop(b);
    match served.join().unwrap() {
        Served::Lost(why) => assert!(why.contains("stopped answering"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// After a move whose acknowledgement was lost, the body at home asks the
/// deputy whether it may go on: not if the new body runs.
#[test]
fn a_lost_acknowledgement_never_leaves_two_bodies() {
    let _turn = one_link_at_a_time();
    let dir = scratch("reclaim");
    CWD.with(|c| *c.borrow_mut() = dir.as_os_str().as_encoded_bytes().to_vec());
    let home = Home::start("127.0.0.1:0", trust::Transport::Plain).unwrap();
    // Nothing happened yet: the body at home goes on.
    assert!(home.reclaim());
    // The new body claimed the job and runs: the one at home must stop.
    let b = body(&home, home.next_link().generation).unwrap();
    assert!(!home.reclaim());
    drop(b);
    // A new body that claimed and then vanished before it ran: revoked,
    // and the body at home goes on (it was still the only one).
    let home = Home::start("127.0.0.1:0", trust::Transport::Plain).unwrap();
    let p = RemoteSite::prepare(home.next_link(), None, &trust::Transport::Plain).unwrap();
    let names =
        SiteState { cwd: home_cwd(&home), umask: 0, exe: "/bin/true".into(), pid: 1, next_desc: 0, fds: vec![] };
    let b = RemoteSite::claim(p, &names).unwrap();
    drop(b);
    let t = std::time::Instant::now();
    while !home.reclaim() {
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "a vanished body kept the job");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // That body's generation can never come back.
    let mut link = home.next_link();
    link.generation -= 1;
    assert!(RemoteSite::prepare(link, None, &trust::Transport::Plain).is_err());
    let _ = crate::signal::take_host_signals();
}

fn names_at(home: &Home) -> SiteState {
    SiteState { cwd: home_cwd(home), umask: 0, exe: "/bin/true".into(), pid: 1, next_desc: 0, fds: vec![] }
}

/// A body at home that went on after a move lost its acknowledgement
/// fences off that move's body: its claim, however late, is refused, and
/// the next move's body is welcome.
#[test]
fn after_a_reclaim_the_moves_body_can_never_claim_the_job() {
    let _turn = one_link_at_a_time();
    let dir = scratch("fence-home");
    CWD.with(|c| *c.borrow_mut() = dir.as_os_str().as_encoded_bytes().to_vec());
    let home = Home::start("127.0.0.1:0", trust::Transport::Plain).unwrap();
    // Its links are open (the pages were coming) but it has not claimed.
    let late = RemoteSite::prepare(home.next_link(), None, &trust::Transport::Plain).unwrap();
    assert!(home.reclaim());
    let e = RemoteSite::claim(late, &names_at(&home)).err().expect("a fenced body claimed the job");
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    assert!(home.reclaim(), "the body at home still has the job");
    // A second failed move in a row is fenced off as well.
    let late = RemoteSite::prepare(home.next_link(), None, &trust::Transport::Plain).unwrap();
    assert!(home.reclaim());
    let e = RemoteSite::claim(late, &names_at(&home)).err().expect("the second fenced body claimed the job");
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    // The next move gets a generation past the fence.
    let next = RemoteSite::prepare(home.next_link(), None, &trust::Transport::Plain).unwrap();
    let b = RemoteSite::claim(next, &names_at(&home)).unwrap();
    assert!(!home.reclaim(), "the next move's body runs the job");
    drop(b);
    let _ = crate::signal::take_host_signals();
}

/// The same away from home: the body asks its deputy (`Call::Stay`)
/// whether it may go on; yes fences off the move's body, no (a newer body
/// claimed the job first) stops it.
#[test]
fn a_body_away_asks_its_deputy_before_it_goes_on() {
    let _turn = one_link_at_a_time();
    let dir = scratch("fence-away");
    CWD.with(|c| *c.borrow_mut() = dir.as_os_str().as_encoded_bytes().to_vec());
    std::fs::write(dir.join("f"), b"data").unwrap();
    let (home, served) = deputy(&dir);
    let mut first = body(&home, 1).unwrap();
    let mut moving = first.link().clone();
    moving.generation += 1;
    let late = RemoteSite::prepare(moving.clone(), None, &trust::Transport::Plain).unwrap();
    assert!(first.stay(), "no newer body: the first goes on");
    let e = RemoteSite::claim(late, &names_at(&home)).err().expect("a fenced body claimed the job");
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    assert!(first.openat(libc::AT_FDCWD, b"f", libc::O_RDONLY, 0).is_ok(), "the first body is still served");
    // A second failed move in a row is fenced off as well.
    let mut again = first.link().clone();
    again.generation += 1;
    let late = RemoteSite::prepare(again, None, &trust::Transport::Plain).unwrap();
    assert!(first.stay(), "no newer body: the first goes on again");
    let e = RemoteSite::claim(late, &names_at(&home)).err().expect("the second fenced body claimed the job");
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    // Its next move starts past the fence; this time the new body claims
    // first, and the old one may not go on.
    let mut next = first.link().clone();
    next.generation += 1;
    assert!(next.generation > moving.generation, "{next:?} {moving:?}");
    let second =
        RemoteSite::claim(RemoteSite::prepare(next, None, &trust::Transport::Plain).unwrap(), &names_at(&home))
            .unwrap();
    assert!(!first.stay(), "a replaced body went on");
    assert_eq!(first.openat(libc::AT_FDCWD, b"f", libc::O_RDONLY, 0), Err(Errno(libc::EIO)));
    // The replaced body's watcher posts its SIGKILL on its own thread:
    // let it, so that the signal is not left for the next test.
    drop(first);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = crate::signal::take_host_signals();
    let mut second = second;
    second.report_exit(0, "");
    assert!(matches!(served.join().unwrap(), Served::Exited { status: 0, .. }));
}

/// Descriptors above 2 the caller passed keep their numbers and belong to
/// the job alone: its closing one ends a pipe for the reader.
#[test]
fn inherited_descriptors_are_the_jobs() {
    let dir = scratch("inherited");
    let mut p = [0; 2];
    // SAFETY: p has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let mut site = LocalSite::new(SiteConfig {
        inherited: vec![(7, p[1]), (9, p[1])],
        stdio: [0, 1, 2],
        cwd: dir.clone(),
        exe: PathBuf::from("/bin/true"),
        umask: Some(0o022),
        pid: std::process::id(),
    })
    .unwrap();
    // SAFETY: F_GETFD on a number: the original was taken over and closed.
    assert_eq!(unsafe { libc::fcntl(p[1], libc::F_GETFD) }, -1, "the site closes what it takes over");
    assert_eq!(site.write(7, b"seven").unwrap(), 5);
    assert_eq!(site.fcntl(9, libc::F_GETFD, 0).unwrap(), 0);
    assert!(site.check_fd(8).is_err());
    site.close(7).unwrap();
    site.close(9).unwrap();
    let mut buf = [0u8; 16];
    // SAFETY: reading into a local buffer from our read end.
    let n = unsafe { libc::read(p[0], buf.as_mut_ptr().cast(), 16) };
    assert_eq!(&buf[..n as usize], b"seven");
    // SAFETY: as above; the writer is gone, so this is the end.
    assert_eq!(unsafe { libc::read(p[0], buf.as_mut_ptr().cast(), 16) }, 0);
    // SAFETY: our read end.
    unsafe { libc::close(p[0]) };
    // The limit is the process's soft RLIMIT_NOFILE.
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
    assert!(site.fd_limit() <= l.rlim_cur.min(NR_OPEN) && site.fd_limit() >= 3);
}

/// A link opened with `version` (raw, as a body of that release would).
fn welcome_for(home: &Home, version: u32) -> proto::Welcome {
    let link = home.next_link();
    let s = TcpStream::connect(link.home).unwrap();
    let hello = proto::Hello {
        version,
        token: link.token,
        generation: link.generation,
        kind: proto::LinkKind::Calls,
        body: "old-body".into(),
    };
    proto::write_hello(&mut &s, &hello).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    proto::read_frame(&mut &s, &mut buf).unwrap();
    proto::decode(&buf).unwrap()
}

#[test]
fn the_deputy_takes_bodies_of_the_previous_link_version() {
    let _turn = one_link_at_a_time();
    let dir = scratch("versions");
    let (home, _served) = deputy(&dir);
    for v in proto::MIN_VERSION..=proto::VERSION {
        assert_eq!(welcome_for(&home, v), proto::Welcome::Accepted, "version {v}");
    }
    for v in [0, proto::VERSION + 1] {
        match welcome_for(&home, v) {
            proto::Welcome::Refused { kind: proto::RefusalKind::Protocol, .. } => {}
            other => panic!("version {v}: {other:?}"),
        }
    }
}

/// A signal the job did not get (a kick meant for another thread of the
/// home's process) does not cut the job's waiting call short: the deputy
/// waits again for the time left, and the call ends as it would have.
#[test]
fn a_stray_kick_at_home_is_not_the_jobs_interrupt() {
    let _turn = one_link_at_a_time();
    let dir = scratch("stray");
    CWD.with(|c| *c.borrow_mut() = dir.as_os_str().as_encoded_bytes().to_vec());
    let (home, served) = deputy(&dir);
    let mut r = body(&home, 1).unwrap();
    let ep = r.epoll_create(true).unwrap() as i32;
    let (rd, wr) = r.pipe2(0).unwrap();
    r.epoll_ctl(ep, libc::EPOLL_CTL_ADD, rd as i32, &event(libc::EPOLLIN as u32, 5)).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kicker = {
        let (home, stop) = (home.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                home.kick_server();
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        })
    };
    let mut out = [0u8; 2 * EPOLL_EVENT_SIZE];
    let start = std::time::Instant::now();
    assert_eq!(r.epoll_wait(ep, &mut out, 300), Ok(0), "the timeout ends the wait, not a stray kick");
    let took = start.elapsed();
    assert!(took >= std::time::Duration::from_millis(290), "{took:?}");
    let mut fds = [0u8; 8];
    fds[..4].copy_from_slice(&(rd as i32).to_le_bytes());
    fds[4..6].copy_from_slice(&libc::POLLIN.to_le_bytes());
    assert_eq!(r.poll(&mut fds, 100), Ok(0));
    r.write(wr as i32, b"x").unwrap();
    assert_eq!(r.epoll_wait(ep, &mut out, -1), Ok(1));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    kicker.join().unwrap();
    r.report_exit(0, "");
    assert!(matches!(served.join().unwrap(), Served::Exited { status: 0, .. }));
}
