//! rustls configurations for mutual TLS: TLS 1.3 only, the `ring`
//! provider, the cluster CA as the only root on both sides.
//!
//! A host's configurations admit hosts only (a certificate the cluster CA
//! issued itself, with no intermediate): a job's certificate opens no peer
//! port. A job's configurations admit any certificate of the cluster
//! (bodies and deputies are job processes).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};

use crate::identity::{Identity, Role, CLUSTER_NAME};
use crate::Error;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(id: &Identity) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    roots.add(id.ca.clone())?;
    Ok(Arc::new(roots))
}

fn not_a_host() -> rustls::Error {
    rustls::Error::General("a job's certificate: only hosts may connect here".into())
}

/// Admits what the inner verifier admits, and only if the peer needed no
/// intermediate (the cluster CA issued its certificate itself).
#[derive(Debug)]
struct HostsOnly<V: ?Sized>(Arc<V>);

impl ClientCertVerifier for HostsOnly<dyn ClientCertVerifier> {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Chain first: a stranger is told it is unknown, not "not a host".
        let v = self.0.verify_client_cert(end_entity, intermediates, now)?;
        if !intermediates.is_empty() {
            return Err(not_a_host());
        }
        Ok(v)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl ServerCertVerifier for HostsOnly<WebPkiServerVerifier> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let v = self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        if !intermediates.is_empty() {
            return Err(not_a_host());
        }
        Ok(v)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The server side: a client must show a certificate of the cluster CA
/// (a host's only, when `id` is a host's).
pub fn server_config(id: &Identity) -> Result<Arc<ServerConfig>, Error> {
    let any = WebPkiClientVerifier::builder_with_provider(roots(id)?, provider())
        .build()
        .map_err(|e| Error::Verifier(e.to_string()))?;
    let verifier: Arc<dyn ClientCertVerifier> = match id.role() {
        Role::Host => Arc::new(HostsOnly(any)),
        Role::Job => any,
    };
    let mut c = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain.clone(), id.key.clone_key())?;
    // Links are long-lived and between two known ends: no resumption.
    c.send_tls13_tickets = 0;
    Ok(Arc::new(c))
}

/// The client side: the server must show a certificate of the cluster CA
/// (a host's only, when `id` is a host's), and we show ours.
pub fn client_config(id: &Identity) -> Result<Arc<ClientConfig>, Error> {
    let builder = ClientConfig::builder_with_provider(provider()).with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match id.role() {
        Role::Job => builder.with_root_certificates(roots(id)?),
        Role::Host => {
            let webpki = WebPkiServerVerifier::builder_with_provider(roots(id)?, provider())
                .build()
                .map_err(|e| Error::Verifier(e.to_string()))?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(HostsOnly(webpki)))
        }
    };
    let mut c = builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?;
    c.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(c))
}

/// The name a client asks for: every certificate of the cluster has it.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(CLUSTER_NAME).expect("a valid DNS name")
}

/// Is `cert` (a peer's, already verified against the cluster CA) host
/// `name`'s? A host's certificate carries its name as a DNS name, so a
/// host of the cluster cannot speak for another.
pub fn names_host(cert: &CertificateDer<'_>, name: &str) -> bool {
    if name == CLUSTER_NAME {
        return false;
    }
    let (Ok(subject), Ok(ee)) = (ServerName::try_from(name), webpki::EndEntityCert::try_from(cert)) else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&subject).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn a_host_certificate_names_its_host_only() {
        let dir = std::env::temp_dir().join(format!("mosvm-trust-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::init_cluster(&dir).unwrap();
        let host = crate::add_host(&dir, "h2").unwrap();
        let pem = std::fs::read(host.join("host.pem")).unwrap();
        let cert = CertificateDer::pem_slice_iter(&pem).next().unwrap().unwrap();
        assert!(names_host(&cert, "h2"));
        for other in ["h3", "h", "h2.x", CLUSTER_NAME, "127.0.0.2", "", "h2\0"] {
            assert!(!names_host(&cert, other), "{other:?}");
        }
        assert!(!names_host(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]), "h2"), "garbage is no one's");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
