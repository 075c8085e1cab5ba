//! The cluster identity end to end: a CA, hosts and jobs, and links
//! between them over loopback; strangers and wrong roles are refused.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use trust::{Identity, Link, Role, Transport};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("trust-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn cluster(name: &str, hosts: &[&str]) -> (PathBuf, Vec<Transport>) {
    let dir = scratch(name);
    trust::init_cluster(&dir).unwrap();
    let t = hosts.iter().map(|h| Transport::from_dir(&trust::add_host(&dir, h).unwrap()).unwrap()).collect();
    (dir, t)
}

/// Serves one connection on a thread: the server side's handshake result,
/// and on success an echo of everything until EOF.
fn serve(t: Transport) -> (SocketAddr, std::thread::JoinHandle<std::io::Result<u64>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept()?;
        let link = t.server(s)?;
        let mut buf = vec![0u8; 100_000];
        let mut n = 0u64;
        loop {
            let got = (&link).read(&mut buf)?;
            if got == 0 {
                return Ok(n);
            }
            n += got as u64;
            (&link).write_all(&buf[..got])?;
        }
    });
    (addr, h)
}

fn connect(t: &Transport, addr: SocketAddr) -> std::io::Result<Link> {
    t.connect(&addr, Duration::from_secs(5))
}

#[test]
fn hosts_of_one_cluster_talk_and_bytes_arrive_intact() {
    let (_dir, t) = cluster("talk", &["h1", "h2"]);
    let (addr, server) = serve(t[1].clone());
    let link = connect(&t[0], addr).unwrap();
    assert!(link.is_tls());
    // A reader thread on a clone while this one writes: 8 MiB each way.
    let reader = link.try_clone().unwrap();
    let total = 8 << 20;
    let rx = std::thread::spawn(move || {
        let mut got = Vec::with_capacity(total);
        let mut buf = vec![0u8; 65536];
        while got.len() < total {
            let n = (&reader).read(&mut buf).unwrap();
            assert!(n > 0, "early EOF at {}", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 4096) as u8).collect();
    // Vectored writes (a record's header, body and checksum) and plain ones.
    let (first, rest) = data.split_at(1 << 20);
    let mut parts = first.chunks(4096 + 13).map(std::io::IoSlice::new).collect::<Vec<_>>();
    let mut slices = &mut parts[..];
    while !slices.is_empty() {
        let n = (&link).write_vectored(slices).unwrap();
        std::io::IoSlice::advance_slices(&mut slices, n);
    }
    for chunk in rest.chunks(1 << 20) {
        (&link).write_all(chunk).unwrap();
    }
    assert!(rx.join().unwrap() == data, "the echo differs");
    link.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(server.join().unwrap().unwrap(), total as u64);
}

#[test]
fn a_stranger_gets_nothing() {
    let (_a, ours) = cluster("ours", &["h1", "h2"]);
    let (_b, theirs) = cluster("theirs", &["x1"]);
    // A host of another cluster, as client.
    let (addr, server) = serve(ours[0].clone());
    assert!(connect(&theirs[0], addr)
        .and_then(|l| (&l).write_all(b"hi").and_then(|_| (&l).read(&mut [0; 4])))
        .is_err());
    let e = server.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    // As server: our client refuses it.
    let (addr, server) = serve(theirs[0].clone());
    let e = connect(&ours[1], addr).err().expect("refused");
    assert!(e.to_string().contains("TLS handshake"), "{e}");
    let _ = server.join().unwrap();
    // Plain TCP to a TLS port: no byte of service.
    let (addr, server) = serve(ours[0].clone());
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"MOSVDEP\0\x05\0\0\0\0\0\0\0hello");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!buf.windows(5).any(|w| w == b"hello"), "a plain client got an answer");
    assert!(server.join().unwrap().is_err());
}

#[test]
fn jobs_reach_jobs_but_no_peer_port() {
    let (dir, t) = cluster("jobs", &["h1", "h2"]);
    let Transport::Tls(h1) = &t[0] else { panic!("plain") };
    assert_eq!(h1.identity.role(), Role::Host);
    let creds = h1.identity.issue_job("7@h1").unwrap().expect("a host issues");
    let job = Identity::from_job(&creds, "7@h1").unwrap();
    assert_eq!(job.role(), Role::Job);
    assert!(job.issue_job("x").unwrap().is_none(), "a job issues nothing");
    let job = Transport::tls(job).unwrap();
    assert!(job.sealer().is_none(), "a job has no gossip key");
    let Transport::Tls(h2) = &t[1] else { panic!("plain") };
    let other =
        Transport::tls(Identity::from_job(&h2.identity.issue_job("9@h2").unwrap().unwrap(), "9@h2").unwrap()).unwrap();
    // Job to job (a body to its deputy; a source to its receiver).
    let (addr, server) = serve(other.clone());
    let link = connect(&job, addr).unwrap();
    (&link).write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    // A peek leaves the bytes for the next read.
    link.peek_exact(&mut b[..2], Duration::from_secs(5)).unwrap();
    assert_eq!(&b[..2], b"pi");
    (&link).read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
    link.shutdown(std::net::Shutdown::Both).unwrap();
    assert_eq!(server.join().unwrap().unwrap(), 4);
    // A job's certificate opens no host's port, and a host does not take
    // a job's server for a host.
    let (addr, server) = serve(t[1].clone());
    let _ = connect(&job, addr).and_then(|l| (&l).write_all(b"x").and_then(|_| (&l).read(&mut [0; 1])));
    let e = server.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let (addr, server) = serve(other);
    assert!(connect(&t[0], addr).is_err());
    let _ = server.join().unwrap();
    // The cluster directory refuses a second CA and a second h1.
    assert!(matches!(trust::init_cluster(&dir), Err(trust::Error::Exists(_))));
    assert!(trust::add_host(&dir, "h1").is_err());
    assert!(matches!(trust::add_host(&dir, "../x"), Err(trust::Error::BadName(_))));
}

#[test]
fn keys_are_private_and_a_bad_directory_fails_at_load() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("files");
    trust::init_cluster(&dir).unwrap();
    let h = trust::add_host(&dir, "h1").unwrap();
    for (d, f) in [(&dir, "ca-key.pem"), (&dir, "gossip.key"), (&h, "host-key.pem"), (&h, "issuer-key.pem")] {
        let mode = std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    // Another host's key with this host's certificate: refused at load.
    let h2 = trust::add_host(&dir, "h2").unwrap();
    std::fs::copy(h2.join("host-key.pem"), h.join("host-key.pem")).unwrap();
    let e = Identity::load(&h).unwrap_err();
    assert!(e.to_string().contains("TLS setup") || e.to_string().contains("key"), "{e}");
    std::fs::write(h2.join("gossip.key"), "nothex\n").unwrap();
    assert!(Identity::load(&h2).unwrap_err().to_string().contains("gossip.key"));
    assert!(Identity::load(&dir.join("nowhere")).is_err());
}
