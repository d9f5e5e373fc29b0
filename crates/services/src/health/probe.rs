//! Dependency probes: one attempt to reach a dependency, answering `Ok(())` or a [`Failure`].
//! The built-in probes are [`HttpCheck`] (a GET expecting a status, optionally a JWKS body) and
//! [`PostgresCheck`] (connect + `SELECT 1`); anything implementing [`Probe`] can be checked.
//!
//! Not here: timeouts, concurrency and caching (see [`super::readiness`]), which wrap every
//! probe the same way. A probe never logs; its [`Failure`] carries a public message for the
//! `/ready` body and a detail for the logs, and neither ever holds a secret.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use kombiform_model::PostgresTls;
use kombiform_sys::tls::postgres as pg_tls;
use serde::{Deserialize, Serialize};

/// The future a [`Probe`] returns.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Failure>> + Send + 'a>>;

/// One way of checking that a dependency is usable.
pub trait Probe: Send + Sync + 'static {
    /// Makes one attempt. Need not enforce a timeout: the caller does.
    fn probe(&self) -> ProbeFuture<'_>;
}

/// Why a check failed, as a stable kebab-case code in the `/ready` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// No answer within the check timeout.
    Timeout,
    /// The connection could not be made (refused, reset, DNS, TLS).
    Unreachable,
    /// An HTTP answer with a status other than the expected one.
    Status,
    /// An answer whose body is not what the check expects (e.g. not a JWKS).
    Body,
    /// TLS to the dependency failed: its certificate is not trusted or does not match the
    /// host name, or one side requires TLS and the other does not speak it.
    Tls,
    /// Connected, but the database refused the login or the query.
    Query,
    /// The check itself broke (a panic in a probe); a bug, not the dependency's fault.
    Internal,
}

impl FailureKind {
    /// The stable code, as in the `/ready` body and the logs.
    pub fn code(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Unreachable => "unreachable",
            FailureKind::Status => "status",
            FailureKind::Body => "body",
            FailureKind::Tls => "tls",
            FailureKind::Query => "query",
            FailureKind::Internal => "internal",
        }
    }
}

/// A failed check: what the `/ready` body shows and what the log gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The stable code.
    pub kind: FailureKind,
    /// A short message safe to show to anyone who can reach `/ready`: no hosts, no errors
    /// from libraries, no secrets.
    pub message: String,
    /// The underlying error for the logs (no secrets, no URL credentials).
    pub detail: String,
}

impl Failure {
    /// A failure with its public message and its log detail.
    pub fn new(kind: FailureKind, message: impl Into<String>, detail: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            detail: detail.into(),
        }
    }

    /// The failure of a probe that did not answer within `timeout`.
    pub fn timeout(timeout: Duration) -> Self {
        let message = format!("no answer within {} ms", timeout.as_millis());
        Failure::new(FailureKind::Timeout, message.clone(), message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.detail)
    }
}

/// What an [`HttpCheck`] requires of the body, besides the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyCheck {
    /// Nothing: the status is enough.
    Any,
    /// A JSON Web Key Set: a JSON object whose `keys` is a non-empty array (a key set with no
    /// keys can verify no token, so it does not count as up).
    Jwks,
}

/// The largest body an [`HttpCheck`] reads (a JWKS is a few KiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A GET that must answer with a given status (redirects are not followed).
#[derive(Clone, Debug)]
pub struct HttpCheck {
    client: reqwest::Client,
    url: reqwest::Url,
    expect_status: u16,
    body: BodyCheck,
}

impl HttpCheck {
    /// A check of `url` with a client built by [`http_client`].
    pub fn new(
        client: reqwest::Client,
        url: reqwest::Url,
        expect_status: u16,
        body: BodyCheck,
    ) -> Self {
        HttpCheck {
            client,
            url,
            expect_status,
            body,
        }
    }

    async fn run(&self) -> Result<(), Failure> {
        let shown = redacted_url(&self.url);
        let mut response = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| {
                Failure::new(
                    FailureKind::Unreachable,
                    "connection failed",
                    format!("GET {shown}: {}", error_chain(&e.without_url())),
                )
            })?;
        let status = response.status().as_u16();
        if status != self.expect_status {
            return Err(Failure::new(
                FailureKind::Status,
                format!("answered {status}, expected {}", self.expect_status),
                format!("GET {shown}: status {status}"),
            ));
        }
        if self.body == BodyCheck::Any {
            return Ok(());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            Failure::new(
                FailureKind::Unreachable,
                "connection failed while reading the body",
                format!("GET {shown}: {}", error_chain(&e.without_url())),
            )
        })? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(Failure::new(
                    FailureKind::Body,
                    "body too large",
                    format!("GET {shown}: body over {MAX_BODY_BYTES} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        check_jwks(&body).map_err(|why| {
            Failure::new(
                FailureKind::Body,
                format!("not a usable JWKS: {why}"),
                format!("GET {shown}: {why}"),
            )
        })
    }
}

impl Probe for HttpCheck {
    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(self.run())
    }
}

/// Whether `body` is a JSON Web Key Set with at least one key; the reason when not.
pub fn check_jwks(body: &[u8]) -> Result<(), &'static str> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "the body is not JSON")?;
    match value.get("keys") {
        Some(serde_json::Value::Array(keys)) if !keys.is_empty() => Ok(()),
        Some(serde_json::Value::Array(_)) => Err("`keys` is empty"),
        Some(_) => Err("`keys` is not an array"),
        None => Err("no `keys`"),
    }
}

/// The HTTP client probes share: the workspace's TLS configuration, no redirects, no
/// cookies, a connect timeout.
pub fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(kombiform_sys::tls::client_config()?)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .user_agent(concat!("kombify-health/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// `url` without credentials, query or fragment: what logs may show.
pub fn redacted_url(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    // Both only fail for URLs that cannot have credentials, which have none to remove.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// An error with its sources, `outer: inner: innermost`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A PostgreSQL login followed by `SELECT 1`, on a new connection each time (a check must
/// prove a login works now, not that a pooled connection once did), with the platform's TLS:
/// `verify-full` (the certificate chain checked against the bundled Azure roots or the
/// configured CA certificates, and the host name) or `disable`
/// ([`kombiform_sys::tls::postgres`]).
#[derive(Clone)]
pub struct PostgresCheck {
    config: tokio_postgres::Config,
    /// `None` for `disable`.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// The TLS settings, to explain a failed handshake.
    tls_config: PostgresTls,
}

impl fmt::Debug for PostgresCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the config: it holds the password.
        f.write_str("PostgresCheck")
    }
}

impl PostgresCheck {
    /// A check logging in to `database` on `host:port` as `user` with `password`.
    ///
    /// Fails when the TLS configuration cannot be built (a CA bundle without certificates).
    pub fn new(
        target: &PostgresTarget<'_>,
        password: &str,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let tls = pg_tls::connector(target.tls).map_err(|e| e.to_string())?;
        let mut config = tokio_postgres::Config::new();
        config
            .host(target.host)
            .port(target.port)
            .dbname(target.database)
            .user(target.user)
            .password(password)
            .application_name("kombify-health")
            .connect_timeout(connect_timeout)
            .ssl_mode(pg_tls::ssl_mode(target.tls));
        Ok(PostgresCheck {
            config,
            tls,
            tls_config: target.tls.clone(),
        })
    }

    async fn run(&self) -> Result<(), Failure> {
        // The spawned connection drives the socket; it is stopped once the query is done.
        let (client, driver) = match &self.tls {
            None => {
                let (client, connection) = self
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| self.classify(&e, "login"))?;
                (client, tokio::spawn(connection))
            }
            Some(tls) => {
                let (client, connection) = self
                    .config
                    .connect(tls.clone())
                    .await
                    .map_err(|e| self.classify(&e, "login"))?;
                (client, tokio::spawn(connection))
            }
        };
        let result = client.simple_query("SELECT 1").await;
        drop(client);
        driver.abort();
        let messages = result.map_err(|e| self.classify(&e, "SELECT 1"))?;
        let one = messages.iter().any(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0) == Some("1"),
            _ => false,
        });
        if one {
            Ok(())
        } else {
            Err(Failure::new(
                FailureKind::Query,
                "unexpected query result",
                "SELECT 1 returned no row with 1",
            ))
        }
    }
}

impl Probe for PostgresCheck {
    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(self.run())
    }
}

/// Where a [`PostgresCheck`] connects, without the password.
#[derive(Clone, Copy, Debug)]
pub struct PostgresTarget<'a> {
    /// Host name.
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// Database name.
    pub database: &'a str,
    /// Login name.
    pub user: &'a str,
    /// TLS.
    pub tls: &'a PostgresTls,
}

impl PostgresCheck {
    /// A tokio-postgres error as a [`Failure`]: a TLS reason (certificate, host name, TLS
    /// missing on one side) is `tls` with that reason, a server error (bad login, missing
    /// database) `query`, anything else (refused, closed) `unreachable`. tokio-postgres
    /// errors never hold the password.
    fn classify(&self, e: &tokio_postgres::Error, step: &str) -> Failure {
        match pg_tls::explain(e, &self.tls_config) {
            Some(tls) => Failure::new(
                FailureKind::Tls,
                tls.kind.summary(),
                format!("{step}: {tls}"),
            ),
            None => classify_pg(e, step),
        }
    }
}

/// A tokio-postgres error that is not about TLS as a [`Failure`]: a server error (bad login,
/// missing database) is `query`, anything else (refused, closed) `unreachable`.
fn classify_pg(e: &tokio_postgres::Error, step: &str) -> Failure {
    let detail = format!("{step}: {}", error_chain(e));
    match e.as_db_error() {
        Some(db) => Failure::new(
            FailureKind::Query,
            format!("{step} refused ({})", db.code().code()),
            detail,
        ),
        None => Failure::new(FailureKind::Unreachable, "connection failed", detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_needs_a_non_empty_keys_array() {
        assert_eq!(check_jwks(br#"{"keys":[{"kty":"RSA"}]}"#), Ok(()));
        assert_eq!(check_jwks(br#"{"keys":[]}"#), Err("`keys` is empty"));
        assert_eq!(check_jwks(br#"{"keys":{}}"#), Err("`keys` is not an array"));
        assert_eq!(check_jwks(br#"{"key":[1]}"#), Err("no `keys`"));
        assert_eq!(check_jwks(b"<html>"), Err("the body is not JSON"));
    }

    #[test]
    fn codes_match_the_serialized_form() {
        use FailureKind::*;
        for kind in [Timeout, Unreachable, Status, Body, Tls, Query, Internal] {
            let json = serde_json::to_value(kind).ok();
            assert_eq!(json, Some(serde_json::Value::from(kind.code())));
        }
    }

    #[test]
    fn redacted_url_drops_credentials_and_query() {
        let url = match reqwest::Url::parse("http://u:p@h:1/a/b?token=x#f") {
            Ok(u) => u,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(redacted_url(&url), "http://h:1/a/b");
    }

    #[test]
    fn postgres_check_uses_tls_unless_disabled_and_hides_the_password() {
        let azure = PostgresTls::azure();
        let target = PostgresTarget {
            host: "h",
            port: 5432,
            database: "d",
            user: "u",
            tls: &azure,
        };
        let check = PostgresCheck::new(&target, "pw", Duration::from_secs(1));
        assert!(matches!(&check, Ok(c) if c.tls.is_some()), "{check:?}");
        let plain = PostgresTls::disabled();
        let target = PostgresTarget {
            tls: &plain,
            ..target
        };
        let check = PostgresCheck::new(&target, "hunter2", Duration::from_secs(1));
        assert!(matches!(&check, Ok(c) if c.tls.is_none()));
        assert!(matches!(&check, Ok(c) if !format!("{c:?}").contains("hunter2")));
        let broken = PostgresTls {
            ca_certificates_pem: Some("not a certificate".into()),
            ..PostgresTls::azure()
        };
        let target = PostgresTarget {
            tls: &broken,
            ..target
        };
        let err = PostgresCheck::new(&target, "pw", Duration::from_secs(1)).err();
        assert!(
            matches!(&err, Some(e) if e.contains("caCertificatesPem")),
            "{err:?}"
        );
    }
}
