//! The configuration of the platform services, as `generated/<env>/services/*.json` holds it:
//! the serde types `kombify-sso` and `kombify-health` deserialize at startup, and the emitter
//! (`kombiform_emit::services`) fills.
//!
//! Secrets stay [`SecretRef`]s: a service resolves them itself ([`crate::secret`]).
//! Not here: how the values are derived from the specs (the emitter), or the services.

use serde::{Deserialize, Serialize};

use crate::{PostgresTls, SecretRef};

/// The port of Kong's status listener (`KONG_STATUS_LISTEN=0.0.0.0:8100`), whose `/status`
/// the health service checks. The gateway deployment must open it inside the environment.
pub const KONG_STATUS_PORT: u16 = 8100;

/// How long `kombify-health` reuses a `/ready` result, in milliseconds.
pub const READY_CACHE_TTL_MS: u32 = 1000;

/// The only token signature algorithm the SSO service accepts (Zitadel's default).
pub const TOKEN_ALGORITHM: &str = "RS256";

/// The name of the platform service whose port `kombify-sso` listens on.
pub const SSO_SERVICE: &str = "sso";

/// The name of the platform service whose port `kombify-health` listens on.
pub const HEALTH_SERVICE: &str = "health";

/// The placeholder in [`PocketBaseConfig::users_collection`] replaced by the tenant's
/// identifier (its slug with `-` turned into `_`).
pub const TENANT_PLACEHOLDER: &str = "{tenant}";

/// `sso.json`: the configuration of `kombify-sso`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SsoConfig {
    /// Where the service listens.
    pub listen: Listen,
    /// Which tokens it accepts.
    pub zitadel: ZitadelConfig,
    /// Lifetime of the PocketBase tokens it issues, in seconds.
    pub token_ttl_seconds: u32,
    /// Where tenant users live.
    pub pocketbase: PocketBaseConfig,
    /// The platform database (tenants, quotas, flags, webhook events, audit log).
    pub postgres: PostgresConfig,
    /// Webhook signature verification.
    pub webhooks: WebhooksConfig,
    /// The bearer token internal callers (feature flag apply) must present.
    pub internal_token: SecretRef,
    /// The platform access tokens it mints for the OSS gateway (`POST /api/sso/token`);
    /// absent when the gateway verifies Zitadel's tokens itself (Enterprise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_tokens: Option<PlatformTokensConfig>,
}

/// How kombify-sso signs platform access tokens: with the one key of
/// `sso.platformTokens.keys` that `signs` (the gateway accepts every listed key).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlatformTokensConfig {
    /// `iss` of the tokens.
    pub issuer: String,
    /// `aud` of the tokens.
    pub audience: String,
    /// Lifetime in seconds (the gateway's `maximum_expiration`).
    pub ttl_seconds: u32,
    /// The signing key's id: the JOSE `kid` and the suffix of the credential claim.
    pub key_id: String,
    /// `ES256` or `RS256`.
    pub algorithm: String,
    /// Its private key, PKCS#8 PEM.
    pub private_key: SecretRef,
    /// The claim whose value `<tenant>.<key id>` selects the gateway credential.
    pub credential_claim: String,
}

/// A listening socket.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listen {
    /// Address to bind: `0.0.0.0` in containers, `127.0.0.1` on a developer machine.
    pub address: String,
    /// TCP port.
    pub port: u16,
}

/// Validation of Zitadel access tokens.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZitadelConfig {
    /// Expected `iss`, compared exactly (never derived from a token).
    pub issuer: String,
    /// The OIDC discovery document, to compare its `issuer` with [`Self::issuer`] at startup.
    pub discovery_uri: String,
    /// Where the signing keys are.
    pub jwks_uri: String,
    /// Accepted `alg` values (a fixed allow-list, never the token's own choice).
    pub algorithms: Vec<String>,
    /// `aud` must contain at least one of these: the project id, then the client ids.
    pub audiences: Vec<String>,
    /// The claim naming the user's organization, i.e. the tenant.
    pub org_claim: String,
    /// Clock leeway for `exp` and `nbf`, in seconds.
    pub leeway_seconds: u32,
    /// Least time between two JWKS refreshes (refresh on an unknown `kid`), in seconds.
    pub jwks_refresh_cooldown_seconds: u32,
}

/// The PocketBase the service creates users in and issues tokens from.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PocketBaseConfig {
    /// Base URL.
    pub url: String,
    /// Superuser e-mail.
    pub superuser_email: String,
    /// Superuser password.
    pub superuser_password: SecretRef,
    /// Name of a tenant's users collection, with [`TENANT_PLACEHOLDER`], e.g. `t_{tenant}_users`.
    pub users_collection: String,
    /// The global collection mapping Zitadel users to PocketBase users.
    pub sso_mappings_collection: String,
}

/// A PostgreSQL connection.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresConfig {
    /// Host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database name (the platform database).
    pub database: String,
    /// Schema holding the platform tables.
    pub schema: String,
    /// Login name.
    pub user: String,
    /// Password.
    pub password: SecretRef,
    /// TLS: the platform's [`crate::Platform::postgres_tls`] (`verify-full` with the bundled
    /// Azure roots on Azure, `disable` locally, unless the spec says otherwise).
    pub tls: PostgresTls,
}

/// Webhook signature verification.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Stripe endpoint secret (`Stripe-Signature`, HMAC-SHA256 over `t.body`).
    pub stripe_secret: SecretRef,
    /// Zitadel signing key.
    pub zitadel_secret: SecretRef,
    /// How far a signed timestamp may be from now, in seconds.
    pub tolerance_seconds: u32,
}

/// `health.json`: the configuration of `kombify-health`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthConfig {
    /// Where the service listens.
    pub listen: Listen,
    /// Timeout of each dependency check, in milliseconds.
    pub check_timeout_ms: u32,
    /// How long a `/ready` result is reused, in milliseconds.
    pub cache_ttl_ms: u32,
    /// The dependencies `/ready` checks (all must pass), sorted by name.
    pub checks: Vec<Check>,
}

/// One dependency check of `/ready`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Check {
    /// Name shown in the `/ready` response.
    pub name: String,
    /// How to check.
    pub probe: Probe,
}

/// How a dependency is checked.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Probe {
    /// An HTTP GET that must answer with a given status.
    Http(HttpProbe),
    /// A PostgreSQL connection that must answer `SELECT 1`.
    Postgres(PostgresConfig),
}

/// An HTTP GET check.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbe {
    /// The URL.
    pub url: String,
    /// The status it must answer with.
    pub expect_status: u16,
}
