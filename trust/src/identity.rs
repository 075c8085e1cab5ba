//! The cluster CA and host certificates, on disk.
//!
//! A cluster directory (`init_cluster`) holds `ca.pem`, `ca-key.pem`,
//! `ca-name` and `gossip.key`; `add_host` writes a host directory
//! `hosts/NAME/` with `ca.pem`, `host.pem`, `host-key.pem`, `gossip.key`
//! and the host's job issuer (`issuer.pem`, `issuer-key.pem`), which is
//! what `mosvm host --tls DIR` reads. Keys are written 0600 and the CA is
//! never overwritten.
//!
//! Two roles: a *host* certificate is issued by the cluster CA itself and
//! is what the daemons show each other on the peer port; a *job*
//! certificate is issued by a host's job issuer (an intermediate CA that
//! can issue nothing but leaves) to the VMM processes of its jobs, for
//! their deputy links and migration streams. A job's process runs as its
//! user: it never holds the host's key nor the gossip key, and a job
//! certificate opens no peer port.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// The name every certificate of the cluster carries, and that every
/// client checks: the CA and the role decide, not an address (a body may
/// arrive anywhere, a deputy lives on any home).
pub const CLUSTER_NAME: &str = "mosvm.cluster";

const CA_YEARS: i64 = 20;
const HOST_YEARS: i64 = 5;
/// A job's certificate outlives any batch job; a new one comes with
/// every registration.
const JOB_DAYS: i64 = 90;

/// A process's credentials: the cluster CA it trusts, its certificate
/// chain and key; for a host also the gossip key and its job issuer.
pub struct Identity {
    /// The host's name (a job: `JOB@HOME`).
    pub name: String,
    pub(crate) ca: CertificateDer<'static>,
    ca_pem: String,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
    pub(crate) gossip: Option<[u8; 32]>,
    issuer: Option<Issuer>,
}

/// A host's job issuer, ready to sign.
struct Issuer {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

/// A job's certificate, as the daemon hands it to the job's process.
#[derive(Clone, PartialEq, Eq)]
pub struct JobCredentials {
    pub ca_pem: String,
    /// The job's certificate, then its issuer's.
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for JobCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobCredentials { .. }")
    }
}

/// Which certificates a process shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Host,
    Job,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Identity").field("name", &self.name).finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |err| Error::File { path: path.to_path_buf(), err }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(io(path))
}

/// Writes `data` to a new file `path` with `mode` (never over an old one).
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(io(path))?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(io(path))
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The system's random source does not fail on Linux once booted.
    SystemRandom::new().fill(&mut b).expect("the system random source");
    b
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.contains("..")
}

fn validity(p: &mut CertificateParams, years: i64) {
    let now = time::OffsetDateTime::now_utc();
    // An hour back, for clocks a little behind the one that issued it.
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(365 * years);
    p.serial_number = Some(SerialNumber::from_slice(&random::<16>()));
}

/// A CA's parameters: the cluster's (`depth` 1: it issues hosts' job
/// issuers) or a job issuer's (`depth` 0: leaves only).
fn ca_params(ca_name: &str, depth: u8) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, ca_name);
    dn.push(DnType::OrganizationName, "mosvm");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(depth));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = depth == 0;
    p
}

fn leaf_params(names: Vec<String>, cn: &str) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::new(names)?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name.push(DnType::OrganizationName, "mosvm");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

fn issuer_name(host: &str) -> String {
    format!("mosvm jobs of {host}")
}

/// What `init_cluster` made.
#[derive(Debug)]
pub struct ClusterCa {
    pub name: String,
}

/// Creates a cluster CA and gossip key in `dir` (made 0700 if missing).
/// Refuses a directory that holds a CA already.
pub fn init_cluster(dir: &Path) -> Result<ClusterCa, Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
    let ca_pem = dir.join("ca.pem");
    if ca_pem.exists() || dir.join("ca-key.pem").exists() {
        return Err(Error::Exists(dir.to_path_buf()));
    }
    let name = format!("mosvm cluster {}", hex(&random::<4>()));
    let key = KeyPair::generate()?;
    let mut params = ca_params(&name, 1);
    validity(&mut params, CA_YEARS);
    let cert = params.self_signed(&key)?;
    // The key first: a CA certificate without its key would be useless.
    write_new(&dir.join("ca-key.pem"), key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&dir.join("ca-name"), format!("{name}\n").as_bytes(), 0o644)?;
    write_new(&dir.join("gossip.key"), format!("{}\n", hex(&random::<32>())).as_bytes(), 0o600)?;
    write_new(&ca_pem, cert.pem().as_bytes(), 0o644)?;
    Ok(ClusterCa { name })
}

/// Issues host `name` a certificate of the cluster in `dir`; returns the
/// host directory it wrote (`dir/hosts/NAME`), to copy to that host.
pub fn add_host(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    use std::os::unix::fs::DirBuilderExt;
    if !valid_name(name) {
        return Err(Error::BadName(name.to_string()));
    }
    let ca_name_path = dir.join("ca-name");
    let ca_name = String::from_utf8_lossy(&read(&ca_name_path)?).trim().to_string();
    let key_path = dir.join("ca-key.pem");
    let key_pem = String::from_utf8(read(&key_path)?)
        .map_err(|_| Error::Invalid { path: key_path.clone(), what: "not PEM text".into() })?;
    let ca_key =
        KeyPair::from_pem(&key_pem).map_err(|e| Error::Invalid { path: key_path.clone(), what: e.to_string() })?;
    let ca_pem = read(&dir.join("ca.pem"))?;
    let gossip = read(&dir.join("gossip.key"))?;
    // The issuer as rcgen needs it: the same name and key sign as the CA
    // certificate on disk (a chain is checked by name and key, not by
    // the bytes of the issuer's certificate).
    let ca = ca_params(&ca_name, 1).self_signed(&ca_key)?;

    let host_dir = dir.join("hosts").join(name);
    if host_dir.exists() {
        return Err(Error::Invalid { path: host_dir, what: "this host has a certificate already".into() });
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&host_dir).map_err(io(&host_dir))?;
    let key = KeyPair::generate()?;
    let mut params = leaf_params(vec![CLUSTER_NAME.to_string(), name.to_string()], name)?;
    validity(&mut params, HOST_YEARS);
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    // The host's job issuer: its own key, never the host's.
    let issuer_key = KeyPair::generate()?;
    let mut issuer = ca_params(&issuer_name(name), 0);
    validity(&mut issuer, HOST_YEARS);
    let issuer = issuer.signed_by(&issuer_key, &ca, &ca_key)?;
    write_new(&host_dir.join("host-key.pem"), key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&host_dir.join("issuer-key.pem"), issuer_key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&host_dir.join("host.pem"), cert.pem().as_bytes(), 0o644)?;
    write_new(&host_dir.join("issuer.pem"), issuer.pem().as_bytes(), 0o644)?;
    write_new(&host_dir.join("ca.pem"), &ca_pem, 0o644)?;
    write_new(&host_dir.join("gossip.key"), &gossip, 0o600)?;
    write_new(&host_dir.join("name"), format!("{name}\n").as_bytes(), 0o644)?;
    Ok(host_dir)
}

fn parse_chain(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bad = |what: String| Error::Invalid { path: path.to_path_buf(), what };
    let chain = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| bad(e.to_string()))?;
    if chain.is_empty() {
        return Err(bad("no certificate".into()));
    }
    Ok(chain)
}

impl Identity {
    /// Reads a host directory `add_host` wrote.
    pub fn load(dir: &Path) -> Result<Identity, Error> {
        let bad = |path: PathBuf, what: String| Error::Invalid { path, what };
        let ca_path = dir.join("ca.pem");
        let ca_pem = String::from_utf8(read(&ca_path)?).map_err(|_| bad(ca_path.clone(), "not PEM text".into()))?;
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| bad(ca_path.clone(), e.to_string()))?;
        let cert_path = dir.join("host.pem");
        let chain = parse_chain(&read(&cert_path)?, &cert_path)?;
        let key_path = dir.join("host-key.pem");
        let key = PrivateKeyDer::from_pem_slice(&read(&key_path)?).map_err(|e| bad(key_path.clone(), e.to_string()))?;
        let gossip_path = dir.join("gossip.key");
        let gossip: [u8; 32] = unhex(&String::from_utf8_lossy(&read(&gossip_path)?))
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad(gossip_path, "not 64 hex digits".into()))?;
        let name_path = dir.join("name");
        let name = String::from_utf8_lossy(&read(&name_path)?).trim().to_string();
        let issuer_path = dir.join("issuer.pem");
        let issuer_pem =
            String::from_utf8(read(&issuer_path)?).map_err(|_| bad(issuer_path.clone(), "not PEM text".into()))?;
        let ikey_path = dir.join("issuer-key.pem");
        let ikey_pem =
            String::from_utf8(read(&ikey_path)?).map_err(|_| bad(ikey_path.clone(), "not PEM text".into()))?;
        let ikey = KeyPair::from_pem(&ikey_pem).map_err(|e| bad(ikey_path.clone(), e.to_string()))?;
        // Signs as the issuer on disk: same name, same key (see add_host).
        let icert = ca_params(&issuer_name(&name), 0).self_signed(&ikey)?;
        let issuer = Some(Issuer { cert: icert, key: ikey, pem: issuer_pem });
        let id = Identity { name, ca, ca_pem, chain, key, gossip: Some(gossip), issuer };
        id.check()?;
        Ok(id)
    }

    /// A job's identity from what its daemon handed it.
    pub fn from_job(creds: &JobCredentials, name: &str) -> Result<Identity, Error> {
        let here = Path::new("job credentials");
        let bad = |what: String| Error::Invalid { path: here.into(), what };
        let ca = CertificateDer::from_pem_slice(creds.ca_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let chain = parse_chain(creds.chain_pem.as_bytes(), here)?;
        let key = PrivateKeyDer::from_pem_slice(creds.key_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let id = Identity {
            name: name.to_string(),
            ca,
            ca_pem: creds.ca_pem.clone(),
            chain,
            key,
            gossip: None,
            issuer: None,
        };
        id.check()?;
        Ok(id)
    }

    /// Both configurations build (the key matches the certificate, the
    /// CA parses): bad credentials fail at start, not at a connection.
    fn check(&self) -> Result<(), Error> {
        crate::tls::server_config(self)?;
        crate::tls::client_config(self)?;
        Ok(())
    }

    /// A host shows a certificate the cluster CA issued itself; a job one
    /// its host's issuer did.
    pub fn role(&self) -> Role {
        if self.chain.len() > 1 {
            Role::Job
        } else {
            Role::Host
        }
    }

    /// Issues the process of job `job` (e.g. "17@h1") its credentials.
    /// None for a job's own identity (it issues nothing).
    pub fn issue_job(&self, job: &str) -> Result<Option<JobCredentials>, Error> {
        let Some(issuer) = &self.issuer else { return Ok(None) };
        let key = KeyPair::generate()?;
        let mut params = leaf_params(vec![CLUSTER_NAME.to_string()], job)?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(JOB_DAYS);
        params.serial_number = Some(SerialNumber::from_slice(&random::<16>()));
        let cert = params.signed_by(&key, &issuer.cert, &issuer.key)?;
        Ok(Some(JobCredentials {
            ca_pem: self.ca_pem.clone(),
            chain_pem: format!("{}{}", cert.pem(), issuer.pem),
            key_pem: key.serialize_pem(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "host-1", "node7.rack2", "A1"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", ".a", "a..b", "a/b", "a b", &"x".repeat(64), "../etc"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn hex_round_trip() {
        let b = random::<32>();
        assert_eq!(unhex(&hex(&b)).unwrap(), b);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }
}
