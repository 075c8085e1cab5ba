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
}

#[test]
fn the_local_site_conforms() {
    let dir = scratch("local");
    conformance(&mut local(&dir), &dir);
}

/// A deputy serving a local site in `dir`, on a thread; and a body linked to it.
fn deputy(dir: &Path) -> (Arc<Home>, std::thread::JoinHandle<Served>) {
    let home = Home::start("127.0.0.1:0").unwrap();
    let site = local(dir);
    let h = home.clone();
    (home, std::thread::spawn(move || h.serve(site)))
}

fn body(home: &Home, generation: u64) -> std::io::Result<RemoteSite> {
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
    RemoteSite::claim(RemoteSite::prepare(link, None)?, &names)
}

fn home_cwd(_: &Home) -> Vec<u8> {
    CWD.with(|c| c.borrow().clone())
}

thread_local! {
    static CWD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[test]
fn the_remote_site_conforms() {
    let dir = scratch("remote");
    CWD.with(|c| *c.borrow_mut() = dir.as_os_str().as_encoded_bytes().to_vec());
    let (home, served) = deputy(&dir);
    let mut r = body(&home, 1).unwrap();
    conformance(&mut r, &dir);
    r.report_exit(7, "the end");
    match served.join().unwrap() {
        Served::Exited { status, message } => assert_eq!((status, message.as_str()), (7, "the end")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_deputy_serves_only_the_newest_body() {
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
    assert!(RemoteSite::prepare(link, None).is_err());
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
    let dir = scratch("reclaim");
    CWD.with(|c| *c.borrow_mut() = dir.as_os_str().as_encoded_bytes().to_vec());
    let home = Home::start("127.0.0.1:0").unwrap();
    // Nothing happened yet: the body at home goes on.
    assert!(home.reclaim());
    // The new body claimed the job and runs: the one at home must stop.
    let b = body(&home, 1).unwrap();
    assert!(!home.reclaim());
    drop(b);
    // A new body that claimed and then vanished before it ran: revoked,
    // and the body at home goes on (it was still the only one).
    let home = Home::start("127.0.0.1:0").unwrap();
    let p = RemoteSite::prepare(home.next_link(), None).unwrap();
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
    assert!(RemoteSite::prepare(link, None).is_err());
    let _ = crate::signal::take_host_signals();
}
