//! TLS on the client listeners (docs/enhancements/0009-client-tls.md): one rustls server
//! configuration built from PEM bytes that Python read from etcd's `--cert-file`,
//! `--key-file` and `--trusted-ca-file`.
//!
//! etcd's rules (its `transport.TLSInfo.ServerConfig`): a client certificate is required
//! and verified against the trusted CAs whenever CAs are given. ALPN offers HTTP/1.1 before
//! HTTP/2 (when HTTP/1 is served on the port at all): gRPC clients offer only `h2` and get
//! it, clients that can do both get HTTP/1.1, which Python serves.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    ServerConfig, SignatureScheme, SupportedProtocolVersion,
};
use tokio_rustls::TlsAcceptor;

/// What Python passes: PEM bytes, the TLS versions to offer ("1.2", "1.3") and the TLS 1.2
/// cipher suites to allow by IANA name (empty: rustls' defaults; TLS 1.3 suites are not
/// configurable, as in Go).
pub struct Settings {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Option<Vec<u8>>,
    pub versions: Vec<String>,
    pub cipher_suites: Vec<String>,
    pub http1: bool,
    /// Certificate revocation lists (DER), checked for the client's own certificate when
    /// client certificates are verified (etcd's `--client-crl-file`).
    pub crls: Vec<Vec<u8>>,
    /// When not empty, a client certificate must also be valid for one of these host names
    /// or IP addresses (etcd's `--client-cert-allowed-hostname`).
    pub allowed_hostnames: Vec<String>,
}

/// The IANA names of the TLS 1.2 suites rustls (with ring) offers.
pub fn tls12_suite_names() -> Vec<String> {
    ring::DEFAULT_CIPHER_SUITES
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS12)
        .map(|s| format!("{:?}", s.suite()))
        .collect()
}

/// WebPKI's client verification, with two of etcd's (Go's) ways:
/// - a client certificate byte for byte equal to one of the trusted CA certificates is
///   accepted although it is a CA certificate (`CA:TRUE`): a self-signed certificate given as
///   both `--trusted-ca-file` and the client's certificate, which Go's TLS accepts and WebPKI
///   refuses as "CaUsedAsEndEntity". WebPKI checks the validity period before that, so an
///   expired one is still refused;
/// - with `allowed_hostnames`, the certificate must also be valid for one of them (its DNS or
///   IP subject alternative names, as Go's `VerifyHostname`), else the handshake fails.
#[derive(Debug)]
struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trusted: Vec<CertificateDer<'static>>,
    allowed_hostnames: Vec<ServerName<'static>>,
}

impl ClientVerifier {
    fn name_allowed(&self, end_entity: &CertificateDer<'_>) -> bool {
        if self.allowed_hostnames.is_empty() {
            return true;
        }
        let Ok(cert) = webpki::EndEntityCert::try_from(end_entity) else {
            return false;
        };
        self.allowed_hostnames.iter().any(|h| cert.verify_is_valid_for_subject_name(h).is_ok())
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = match self.inner.verify_client_cert(end_entity, intermediates, now) {
            Err(Error::InvalidCertificate(CertificateError::Other(e)))
                if e.to_string().contains("CaUsedAsEndEntity")
                    && self.trusted.iter().any(|t| t.as_ref() == end_entity.as_ref()) =>
            {
                ClientCertVerified::assertion()
            }
            other => other?,
        };
        if !self.name_allowed(end_entity) {
            return Err(Error::General("client certificate authentication failed".into()));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The acceptor for `settings`, or a message saying what is wrong with them.
pub fn acceptor(settings: &Settings) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&settings.cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read the certificate: {e}"))?;
    if certs.is_empty() {
        return Err("the certificate file holds no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&settings.key_pem)
        .map_err(|e| format!("cannot read the private key: {e}"))?;

    let mut provider = ring::default_provider();
    if !settings.cipher_suites.is_empty() {
        let wanted = &settings.cipher_suites;
        for name in wanted {
            if !tls12_suite_names().contains(name) {
                return Err(format!("unsupported TLS cipher suite {name:?}"));
            }
        }
        provider.cipher_suites.retain(|s| {
            s.version() != &rustls::version::TLS12 || wanted.contains(&format!("{:?}", s.suite()))
        });
    }
    let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::new();
    for v in &settings.versions {
        match v.as_str() {
            "1.2" => versions.push(&rustls::version::TLS12),
            "1.3" => versions.push(&rustls::version::TLS13),
            other => return Err(format!("unsupported TLS version {other:?}")),
        }
    }
    if versions.is_empty() {
        return Err("no TLS version to offer".into());
    }
    let provider = Arc::new(provider);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("cannot configure TLS: {e}"))?;
    let builder = match &settings.ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let mut trusted = Vec::new();
            for c in CertificateDer::pem_slice_iter(ca) {
                let c = c.map_err(|e| format!("cannot read the trusted CA file: {e}"))?;
                trusted.push(c.clone());
                roots
                    .add(c)
                    .map_err(|e| format!("cannot use a certificate of the trusted CA file: {e}"))?;
            }
            if trusted.is_empty() {
                return Err("the trusted CA file holds no PEM certificate".into());
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if !settings.crls.is_empty() {
                // As etcd: a client whose certificate a list revokes is refused; a list does
                // not have to cover every issuer, and its next-update time is not enforced.
                let crls =
                    settings.crls.iter().map(|c| CertificateRevocationListDer::from(c.clone()));
                verifier = verifier
                    .with_crls(crls)
                    .only_check_end_entity_revocation()
                    .allow_unknown_revocation_status();
            }
            let verifier = verifier
                .build()
                .map_err(|e| format!("cannot verify client certificates: {e}"))?;
            let mut allowed_hostnames = Vec::new();
            for h in &settings.allowed_hostnames {
                let name = ServerName::try_from(h.as_str())
                    .map_err(|_| format!("invalid allowed hostname {h:?}"))?;
                allowed_hostnames.push(name.to_owned());
            }
            let verifier = ClientVerifier { inner: verifier, trusted, allowed_hostnames };
            builder.with_client_cert_verifier(Arc::new(verifier))
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("cannot use the certificate and key: {e}"))?;
    cfg.alpn_protocols = if settings.http1 {
        vec![b"http/1.1".to_vec(), b"h2".to_vec()]
    } else {
        vec![b"h2".to_vec()]
    };
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_tls12_suites_are_iana_names() {
        let names = tls12_suite_names();
        assert!(names.contains(&"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_owned()), "{names:?}");
        assert!(names.contains(&"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".to_owned()));
    }

    #[test]
    fn bad_material_is_refused_with_a_reason() {
        let s = Settings {
            cert_pem: b"not a pem".to_vec(),
            key_pem: Vec::new(),
            ca_pem: None,
            versions: vec!["1.2".into()],
            cipher_suites: Vec::new(),
            http1: false,
            crls: Vec::new(),
            allowed_hostnames: Vec::new(),
        };
        let e = acceptor(&s).err().unwrap();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
