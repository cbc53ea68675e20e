//! rustls configuration with libpq's `sslmode` semantics.
//!
//! RDS endpoints present certificates that chain to the Amazon RDS global bundle, which is
//! embedded in the binary so that `verify-full` works with no files on disk (Lambda has none).
//! One crypto provider (ring) is chosen explicitly: with two compiled in and none chosen, rustls
//! panics at run time.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::config::SslMode;
use crate::error::{Error, Result};

/// The Amazon RDS global CA bundle (108 regional roots), as published by AWS.
pub const RDS_CA_BUNDLE_PEM: &[u8] = include_bytes!("../../data/rds-global-bundle.pem");

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn rds_roots() -> Result<Arc<RootCertStore>> {
    static ROOTS: OnceLock<std::result::Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| load_roots(RDS_CA_BUNDLE_PEM, "embedded RDS CA bundle").map_err(|e| e.to_string()))
        .clone()
        .map_err(|reason| Error::TlsConfig { reason })
}

fn load_roots(pem: &[u8], what: &str) -> Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| Error::TlsConfig { reason: format!("{what}: {e}") })?;
        store.add(cert).map_err(|e| Error::TlsConfig { reason: format!("{what}: {e}") })?;
    }
    if store.is_empty() {
        return Err(Error::TlsConfig { reason: format!("{what} holds no certificate") });
    }
    Ok(Arc::new(store))
}

/// Root certificates from a PEM file (`sslrootcert`).
pub fn roots_from_file(path: &Path) -> Result<Arc<RootCertStore>> {
    let pem = std::fs::read(path)
        .map_err(|e| Error::TlsConfig { reason: format!("cannot read sslrootcert {}: {e}", path.display()) })?;
    load_roots(&pem, &format!("sslrootcert {}", path.display()))
}

/// Builds the rustls client configuration for one connection.
pub fn client_config(mode: SslMode, rootcert: Option<&Path>) -> Result<ClientConfig> {
    let roots = match rootcert {
        Some(path) => Some(roots_from_file(path)?),
        None => None,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::TlsConfig { reason: e.to_string() })?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::VerifyFull => webpki(roots.map_or_else(rds_roots, Ok)?)?,
        SslMode::VerifyCa => Arc::new(IgnoreHostName(webpki(roots.map_or_else(rds_roots, Ok)?)?)),
        // libpq: with a root file present, `require` verifies the chain like verify-ca.
        SslMode::Require | SslMode::Prefer => match roots {
            Some(roots) => Arc::new(IgnoreHostName(webpki(roots)?)),
            None => Arc::new(NoVerification(provider())),
        },
        SslMode::Disable => Arc::new(NoVerification(provider())),
    };
    Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}

fn webpki(roots: Arc<RootCertStore>) -> Result<Arc<WebPkiServerVerifier>> {
    WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| Error::TlsConfig { reason: e.to_string() })
}

/// `verify-ca`: the chain must be valid, the name may differ.
#[derive(Debug)]
struct IgnoreHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for IgnoreHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require`/`prefer` without a root file: encrypted, not authenticated (libpq's meaning). The
/// handshake signatures are still checked so the session keys belong to the presented key.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bundle is the authentic one described in shared/data/rds-global-bundle.md.
    #[test]
    fn t49_embedded_rds_bundle_is_the_checked_copy() {
        let digest = ring_digest(RDS_CA_BUNDLE_PEM);
        assert_eq!(digest, "e5bb2084ccf45087bda1c9bffdea0eb15ee67f0b91646106e466714f9de3c7e3");
        assert_eq!(rds_roots().unwrap().len(), 108);
    }

    fn ring_digest(data: &[u8]) -> String {
        use std::fmt::Write;
        let d = ::ring::digest::digest(&::ring::digest::SHA256, data);
        d.as_ref().iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    #[test]
    fn every_sslmode_builds_a_config() {
        for mode in [SslMode::Disable, SslMode::Prefer, SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            client_config(mode, None).unwrap();
        }
    }

    #[test]
    fn a_missing_rootcert_file_is_a_clear_error() {
        let err = client_config(SslMode::VerifyFull, Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(err.to_string().contains("cannot read sslrootcert /nonexistent/ca.pem"), "{err}");
    }
}
