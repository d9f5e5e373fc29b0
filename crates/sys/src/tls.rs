//! The one TLS client configuration of the workspace: rustls with the `ring` provider (the
//! workspace's only crypto provider, named explicitly so that no other crate's features can
//! make the choice ambiguous) and either the platform's certificate roots or a given CA
//! bundle (a test CA, Azure Database for PostgreSQL's bundle).
//!
//! - [`postgres`]: PostgreSQL over TLS (`verify-full`), the bundled roots of Azure Database for
//!   PostgreSQL, and what a failed handshake means.
//!
//! Not here: which server to trust for what (the callers decide), or client certificates.

pub mod postgres;

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Why a TLS configuration could not be built (no secret in it).
#[derive(Debug)]
pub struct TlsError(pub(crate) String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting the platform's roots (the system store).
pub fn client_config() -> Result<ClientConfig, TlsError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS protocol versions: {e}")))?
        .with_platform_verifier()
        .map_err(|e| TlsError(format!("TLS certificate verifier (system roots): {e}")))?
        .with_no_client_auth())
}

/// A client configuration trusting exactly the certificates of a PEM bundle.
pub fn client_config_with_roots(pem: &[u8]) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| TlsError(format!("reading the CA bundle: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| TlsError(format!("a CA certificate of the bundle: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(TlsError(
            "the CA bundle holds no PEM certificate".to_string(),
        ));
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS protocol versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_configuration_builds() {
        assert!(client_config().is_ok());
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let err = client_config_with_roots(b"not pem").unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}
