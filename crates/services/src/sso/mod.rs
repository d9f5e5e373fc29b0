//! `kombify-sso`: exchanges a Zitadel access token for a PocketBase token within the tenant's
//! user quota (CRIT-001, CRIT-006), applies and evaluates feature flags (HIGH-001), and receives
//! signed Stripe and Zitadel webhooks with replay protection (HIGH-006); audit rows for every
//! effect (MED-004).
//!
//! Layout: [`token`] + [`jwks`] validate tokens, [`exchange`] is the exchange, [`platform`]
//! mints the platform access tokens the OSS gateway verifies (`POST /api/sso/token`), [`flags`] and
//! [`webhooks`] are pure, [`input`] says what request values may reach the database, [`db`] and
//! [`pocketbase`] are the only IO, [`routes`] is the HTTP edge and [`error`] the one mapping of
//! domain errors to responses.
//!
//! Secrets: every secret comes from the environment through its `SecretRef`
//! ([`crate::http::resolve_secret`]). The webhook secrets may list several values,
//! comma-separated (`new,old`), so a rotation can overlap: a signature under any of them verifies.

pub mod db;
pub mod error;
pub mod exchange;
pub mod flags;
pub mod input;
pub mod jwks;
pub mod platform;
pub mod pocketbase;
pub mod routes;
pub mod token;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use kombiform_model::secret::{self, Secret};
use kombiform_model::services::SsoConfig;

/// Everything a request handler needs.
pub struct Sso {
    /// The configuration (secrets are references only).
    pub config: SsoConfig,
    /// Access-token validation.
    pub validator: token::TokenValidator,
    /// The platform database.
    pub db: db::Db,
    /// PocketBase, as superuser.
    pub pb: pocketbase::PocketBase,
    /// HTTP client for Zitadel (userinfo).
    pub http: reqwest::Client,
    /// The bearer token of internal callers.
    pub internal_token: Secret,
    /// Stripe endpoint secrets (one, or several during a rotation).
    pub stripe_secrets: Vec<Secret>,
    /// Zitadel signing keys (one, or several during a rotation).
    pub zitadel_secrets: Vec<Secret>,
    /// The signer of platform access tokens, when the gateway verifies those.
    pub platform: Option<platform::PlatformSigner>,
}

impl Sso {
    /// Builds the service from its configuration, reading secrets with `lookup` (the process
    /// environment in the binary). Makes no connection.
    pub fn new(config: SsoConfig, lookup: impl Fn(&str) -> Option<String>) -> Result<Sso> {
        let secret = |r| secret::resolve_non_empty(r, &lookup).map_err(|e| anyhow!(e));
        // The one secret that may be empty: a local PostgreSQL with trust authentication
        // (the same rule as `kombiform plan`/`apply`).
        let pg_password =
            secret::resolve(&config.postgres.password, &lookup).map_err(|e| anyhow!(e))?;
        let pb_password = secret(&config.pocketbase.superuser_password)?;
        let internal_token = secret(&config.internal_token)?;
        let stripe_secrets = secret(&config.webhooks.stripe_secret)?.list();
        let zitadel_secrets = secret(&config.webhooks.zitadel_secret)?.list();
        let platform = match &config.platform_tokens {
            Some(t) => Some(
                platform::PlatformSigner::new(t.clone(), &secret(&t.private_key)?)
                    .map_err(|e| anyhow!("platform token key `{}`: {e}", t.key_id))?,
            ),
            None => None,
        };
        if !config
            .pocketbase
            .users_collection
            .contains(kombiform_model::services::TENANT_PLACEHOLDER)
        {
            bail!(
                "pocketbase.usersCollection must contain {}",
                kombiform_model::services::TENANT_PLACEHOLDER
            );
        }
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(kombiform_sys::tls::client_config()?)
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(64)
            .build()
            .context("building the HTTP client")?;
        let z = &config.zitadel;
        let algorithms = token::algorithms(&z.algorithms).map_err(|e| anyhow!(e))?;
        let keys = Arc::new(jwks::KeyCache::new(
            z.jwks_uri.clone(),
            http.clone(),
            algorithms.clone(),
            Duration::from_secs(u64::from(z.jwks_refresh_cooldown_seconds)),
        ));
        let validator = token::TokenValidator::new(
            keys,
            algorithms,
            &z.issuer,
            &z.audiences,
            u64::from(z.leeway_seconds),
            z.org_claim.clone(),
        );
        let db = db::Db::new(&config.postgres, &pg_password)?;
        let pb = pocketbase::PocketBase::new(
            &config.pocketbase.url,
            http.clone(),
            config.pocketbase.superuser_email.clone(),
            pb_password,
        );
        Ok(Sso {
            config,
            validator,
            db,
            pb,
            http,
            internal_token,
            stripe_secrets,
            zitadel_secrets,
            platform,
        })
    }

    /// Loads the signing keys once at startup; a failure is logged (the first token retries).
    pub async fn warm_up(&self) {
        match self.validator.keys().load().await {
            Ok(n) => tracing::info!(keys = n, "JWKS loaded"),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "JWKS not loaded at startup; will retry on the first token")
            }
        }
    }
}

/// Serves `sso` on `listener` with `limits` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sso: Arc<Sso>,
    limits: crate::server::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    crate::server::serve(listener, routes::router(sso), limits, shutdown).await;
}
