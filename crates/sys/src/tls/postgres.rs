//! PostgreSQL over TLS, the one way for every client of the workspace (the deploy engine's
//! provider, `kombify-sso`'s pool, `kombify-health`'s probe): a spec's [`PostgresTls`] becomes
//! the `sslmode` to ask for and a rustls connector for tokio-postgres (the sync `postgres`
//! crate takes the same connector), and a failed connection is explained in words that name
//! what failed.
//!
//! `verify-full` means: TLS or no connection (`sslmode=require` on the wire, never a fallback
//! to plain text), the server's certificate chain verified against the trusted roots, and the
//! host name connected to (a DNS name or an IP address) present in the certificate, both by
//! rustls' WebPKI verifier. The trusted roots are [`AZURE_ROOTS_PEM`] (bundled, see
//! `crates/sys/certs/README.md`) unless `caCertificatesPem` replaces them.
//!
//! Not here: connecting (each client does, with its own timeouts and pool), or which server
//! to trust for what (the spec says).

use std::error::Error as StdError;
use std::fmt;

use kombiform_model::{PostgresTls, PostgresTlsMode};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{client_config_with_roots, TlsError};

/// The root CAs of Azure Database for PostgreSQL flexible server (DigiCert Global Root G2,
/// Microsoft RSA Root Certificate Authority 2017), PEM, with their source in comments.
pub const AZURE_ROOTS_PEM: &str = include_str!("../../certs/azure-postgres-roots.pem");

/// What tokio-postgres (and `postgres`) must be told: `Require` for `verify-full` (the
/// verification is the connector's), `Disable` for `disable`. Never `Prefer`.
pub fn ssl_mode(tls: &PostgresTls) -> SslMode {
    match tls.mode {
        PostgresTlsMode::Disable => SslMode::Disable,
        PostgresTlsMode::VerifyFull => SslMode::Require,
    }
}

/// The connector for `tls`: `None` for `disable` (connect with `NoTls`), else rustls trusting
/// the bundled Azure roots or the spec's `caCertificatesPem`. Fails when that bundle holds no
/// usable certificate.
pub fn connector(tls: &PostgresTls) -> Result<Option<MakeRustlsConnect>, TlsError> {
    if tls.mode == PostgresTlsMode::Disable {
        return Ok(None);
    }
    let pem = tls
        .ca_certificates_pem
        .as_deref()
        .unwrap_or(AZURE_ROOTS_PEM);
    let config = client_config_with_roots(pem.as_bytes())
        .map_err(|e| TlsError(format!("{} ({e})", roots(tls))))?;
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// Which roots `tls` trusts, for messages.
pub fn roots(tls: &PostgresTls) -> &'static str {
    match tls.ca_certificates_pem {
        Some(_) => "the CA certificates of `postgres.tls.caCertificatesPem`",
        None => "the bundled roots of Azure Database for PostgreSQL",
    }
}

/// Why a PostgreSQL connection failed, when TLS (or its absence) is the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The server's certificate does not chain to a trusted root (or is expired, revoked,
    /// malformed).
    Untrusted,
    /// The certificate is trusted but does not name the host connected to.
    HostName,
    /// The client requires TLS and the server does not offer it.
    ServerWithoutTls,
    /// The client speaks plain text and the server accepts TLS connections only.
    ServerRequiresTls,
    /// The TLS handshake failed for another reason (protocol versions, ciphers, a reset).
    Handshake,
}

impl FailureKind {
    /// A short public phrase (no host, no library text): what `/ready` may show.
    pub fn summary(self) -> &'static str {
        match self {
            FailureKind::Untrusted => "TLS: the server certificate is not trusted",
            FailureKind::HostName => "TLS: the server certificate does not match the host name",
            FailureKind::ServerWithoutTls => "TLS: the server does not offer TLS",
            FailureKind::ServerRequiresTls => "the server requires TLS",
            FailureKind::Handshake => "TLS: the handshake failed",
        }
    }
}

/// A TLS failure of a PostgreSQL connection: its kind and a message naming what failed and
/// what to check. Holds no secret: built from certificate names and TLS alerts only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What failed.
    pub kind: FailureKind,
    /// The explanation, for errors and logs.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Failure {}

/// The TLS reason `err` (a tokio-postgres or `postgres` error, or anything wrapping one) failed
/// with, under `tls`; `None` when TLS is not why.
pub fn explain(err: &(dyn StdError + 'static), tls: &PostgresTls) -> Option<Failure> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = explain_one(e, tls) {
            return Some(found);
        }
        // An io::Error's `source` skips the error it wraps (rustls' lives there).
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(found) = explain(inner, tls) {
                return Some(found);
            }
        }
        next = e.source();
    }
    None
}

fn explain_one(e: &(dyn StdError + 'static), tls: &PostgresTls) -> Option<Failure> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(rustls_failure(r, tls));
    }
    if let Some(db) = e.downcast_ref::<tokio_postgres::error::DbError>() {
        // `no pg_hba.conf entry for host …, no encryption`: only `hostssl` lines match.
        let plain_refused = db.code()
            == &tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            && db.message().ends_with("no encryption");
        return plain_refused.then(|| Failure {
            kind: FailureKind::ServerRequiresTls,
            message: format!(
                "the server accepts only TLS connections and `postgres.tls.mode` is `{}`: use \
                 `verify-full` ({})",
                tls.mode.as_str(),
                db.message()
            ),
        });
    }
    // tokio-postgres' own words when the server answers "N" to the TLS request.
    (e.to_string() == "server does not support TLS").then(|| Failure {
        kind: FailureKind::ServerWithoutTls,
        message: format!(
            "the server does not offer TLS, and `postgres.tls.mode: {}` never falls back to plain \
             text: enable TLS on the server (`ssl = on`)",
            tls.mode.as_str()
        ),
    })
}

fn rustls_failure(e: &rustls::Error, tls: &PostgresTls) -> Failure {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => Failure {
            kind: FailureKind::HostName,
            message: format!(
                "TLS host name verification failed: the server's certificate does not name \
                     the host connected to ({e}); connect by a name the certificate holds (on \
                     Azure, the server's `*.postgres.database.azure.com` name)"
            ),
        },
        rustls::Error::InvalidCertificate(_) => Failure {
            kind: FailureKind::Untrusted,
            message: format!(
                "TLS certificate verification failed: the server's certificate is not trusted \
                 by {} ({e})",
                roots(tls)
            ),
        },
        _ => Failure {
            kind: FailureKind::Handshake,
            message: format!("the TLS handshake with the server failed ({e})"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_bundle_holds_exactly_the_documented_azure_roots() {
        let fingerprints: Vec<String> = CertificateDer::pem_slice_iter(AZURE_ROOTS_PEM.as_bytes())
            .map(|c| kombiform_model::hex(&Sha256::digest(c.unwrap().as_ref())))
            .collect();
        assert_eq!(
            fingerprints,
            [
                // DigiCert Global Root G2
                "cb3ccbb76031e5e0138f8dd39a23f9de47ffc35e43c1144cea27d46a5ab1cb5f",
                // Microsoft RSA Root Certificate Authority 2017
                "c741f70f4b2a8d88bf2e71c14122ef53ef10eba0cfa5e64cfa20f418853073e0",
            ]
        );
    }

    #[test]
    fn modes_map_to_require_or_disable_never_prefer() {
        assert_eq!(ssl_mode(&PostgresTls::azure()), SslMode::Require);
        assert_eq!(ssl_mode(&PostgresTls::disabled()), SslMode::Disable);
        assert!(connector(&PostgresTls::disabled()).unwrap().is_none());
        assert!(connector(&PostgresTls::azure()).unwrap().is_some());
    }

    #[test]
    fn a_bundle_without_certificates_names_the_spec_field() {
        let tls = PostgresTls {
            ca_certificates_pem: Some("not pem".into()),
            ..PostgresTls::azure()
        };
        let err = connector(&tls).err().unwrap().to_string();
        assert!(err.contains("caCertificatesPem"), "{err}");
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn rustls_errors_inside_io_errors_are_explained() {
        let name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, name);
        let got = explain(&io, &PostgresTls::azure()).unwrap();
        assert_eq!(got.kind, FailureKind::HostName);
        assert!(
            got.message.contains("host name verification failed"),
            "{got}"
        );

        let issuer = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, issuer);
        let got = explain(&io, &PostgresTls::azure()).unwrap();
        assert_eq!(got.kind, FailureKind::Untrusted);
        assert!(got.message.contains("bundled roots of Azure"), "{got}");

        let other = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(explain(&other, &PostgresTls::azure()), None);
    }
}
