//! The health service: `GET /health` (alive, no IO) and `GET /ready` (every dependency checked
//! concurrently under a timeout, the result cached for a TTL with single-flight).
//!
//! A library first, so `kombify-sso` can serve the same endpoints: build a [`Readiness`] from
//! [`Dependency`]s (or from a [`HealthConfig`] with [`from_config`]), then mount
//! [`edge::routes`] in a router, or serve [`edge::app`] as `kombify-health` does.
//!
//! Every configured check is critical: `health.json` says "all must pass", and each dependency
//! is one the platform cannot serve without (tenants and quotas in PostgreSQL, users in
//! PocketBase, the gateway, the keys that verify every token). [`Dependency::critical`] is a
//! field so another service can report a dependency it can live without.
//!
//! Not here: the configuration types ([`kombiform_model::services`]) and process concerns
//! (arguments, logging setup, signals), which are in the `kombify-health` binary.

pub mod edge;
pub mod probe;
pub mod readiness;

use std::time::Duration;

use anyhow::{bail, Context, Result};

use kombiform_model::secret::{Secret, SecretError};
use kombiform_model::services::{HealthConfig, Probe as ProbeConfig};
use kombiform_model::SecretRef;
pub use probe::{BodyCheck, Failure, FailureKind, HttpCheck, PostgresCheck, PostgresTarget};
pub use readiness::{CheckReport, Dependency, Readiness, ReadyReport, Reason, Status};

/// The check name whose HTTP answer must also be a JSON Web Key Set (the emitter's name for
/// Zitadel's `jwks_uri`; `HttpProbe` has no field saying so).
pub const JWKS_CHECK: &str = "zitadel-jwks";

/// The [`Readiness`] `config` describes, resolving secrets with `secret` (the binary passes
/// [`crate::http::resolve_secret_allow_empty`]: the only secret is a PostgreSQL password,
/// which may be empty under trust authentication, as for `kombiform plan`).
///
/// Fails, naming the check, on an invalid URL, an unresolvable secret or a PostgreSQL CA
/// bundle without certificates; the error never holds a secret value.
pub fn from_config(
    config: &HealthConfig,
    secret: &dyn Fn(&SecretRef) -> Result<Secret, SecretError>,
) -> Result<Readiness> {
    let timeout = Duration::from_millis(u64::from(config.check_timeout_ms));
    let ttl = Duration::from_millis(u64::from(config.cache_ttl_ms));
    if timeout.is_zero() {
        bail!("checkTimeoutMs must be greater than 0");
    }
    let client = probe::http_client(timeout).context("building the HTTP client for checks")?;
    let mut dependencies = Vec::with_capacity(config.checks.len());
    for check in &config.checks {
        let dependency = match &check.probe {
            ProbeConfig::Http(http) => {
                let url = reqwest::Url::parse(&http.url)
                    .with_context(|| format!("check {}: invalid url", check.name))?;
                let body = if check.name == JWKS_CHECK {
                    BodyCheck::Jwks
                } else {
                    BodyCheck::Any
                };
                let probe = HttpCheck::new(client.clone(), url, http.expect_status, body);
                Dependency::critical(&check.name, probe)
            }
            ProbeConfig::Postgres(pg) => {
                let password = secret(&pg.password)
                    .with_context(|| format!("check {}: the PostgreSQL password", check.name))?;
                let target = PostgresTarget {
                    host: &pg.host,
                    port: pg.port,
                    database: &pg.database,
                    user: &pg.user,
                    tls: &pg.tls,
                };
                let probe = PostgresCheck::new(&target, password.expose(), timeout)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("check {}", check.name))?;
                Dependency::critical(&check.name, probe)
            }
        };
        dependencies.push(dependency);
    }
    Ok(Readiness::new(dependencies, timeout, ttl))
}
