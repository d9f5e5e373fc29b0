//! The typed model: what the specs say, once they are known to be valid.
//!
//! These types mirror the `spec:` bodies of the spec documents (they are deserialised
//! from them after schema validation, field names in camelCase) plus the document names.
//! Every collection is sorted by name, so that everything built from the model is
//! deterministic. Secrets appear only as [`SecretRef`]s: the model never holds a secret.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::naming::TenantSlug;

/// A reference to a secret: where to find it, never its value.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum SecretRef {
    /// A secret in the environment's Azure Key Vault, by secret name (Key Vault's rule:
    /// letters, digits and `-`).
    KeyVault(#[schemars(regex(pattern = r"^[A-Za-z0-9-]{1,127}$"))] String),
    /// An environment variable of the process that needs the secret: upper-case letters,
    /// digits and `_`, so every process (and Kong's `env` vault) reads the same name.
    Env(#[schemars(regex(pattern = r"^[A-Z_][A-Z0-9_]{0,127}$"))] String),
}

impl SecretRef {
    /// A short, redacted description such as `keyVault:pg-admin-password`.
    pub fn describe(&self) -> String {
        match self {
            SecretRef::KeyVault(n) => format!("keyVault:{n}"),
            SecretRef::Env(n) => format!("env:{n}"),
        }
    }
}

/// Everything the specs define, across all environments.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// One per environment, sorted by environment name.
    pub platforms: Vec<Platform>,
    /// Sorted by name.
    pub plans: Vec<Plan>,
    /// Sorted by slug.
    pub tenants: Vec<Tenant>,
    /// Sorted by name.
    pub flags: Vec<FeatureFlag>,
    /// Sorted by name.
    pub collections: Vec<CollectionTemplate>,
}

/// The model as one environment sees it.
#[derive(Clone, Copy, Debug)]
pub struct Env<'a> {
    /// The environment's platform.
    pub platform: &'a Platform,
    /// The whole model (plans, flags and collection templates are shared by all environments).
    pub model: &'a Model,
}

impl Model {
    /// The environment named `name`.
    pub fn env(&self, name: &str) -> Option<Env<'_>> {
        self.platforms
            .iter()
            .find(|p| p.name == name)
            .map(|platform| Env {
                platform,
                model: self,
            })
    }

    /// Every environment, sorted by name.
    pub fn envs(&self) -> impl Iterator<Item = Env<'_>> {
        self.platforms.iter().map(move |platform| Env {
            platform,
            model: self,
        })
    }

    /// The plan named `name`.
    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans
            .binary_search_by(|p| p.name.as_str().cmp(name))
            .ok()
            .and_then(|i| self.plans.get(i))
    }
}

impl<'a> Env<'a> {
    /// The environment's name (`local`, `prod`, ...).
    pub fn name(&self) -> &'a str {
        &self.platform.name
    }

    /// Tenants deployed to this environment, sorted by slug.
    pub fn tenants(&self) -> impl Iterator<Item = &'a Tenant> + 'a {
        let env = self.platform.name.as_str();
        self.model
            .tenants
            .iter()
            .filter(move |t| t.environments.is_empty() || t.environments.iter().any(|e| e == env))
    }

    /// All plans, sorted by name.
    pub fn plans(&self) -> &'a [Plan] {
        &self.model.plans
    }

    /// The plan of a tenant. Validation guarantees it exists.
    pub fn plan_of(&self, tenant: &Tenant) -> Option<&'a Plan> {
        self.model.plan(&tenant.plan)
    }

    /// All feature flags, sorted by name.
    pub fn flags(&self) -> &'a [FeatureFlag] {
        &self.model.flags
    }

    /// All collection templates, sorted by name.
    pub fn collections(&self) -> &'a [CollectionTemplate] {
        &self.model.collections
    }
}

// ---------------------------------------------------------------------------------------
// Platform
// ---------------------------------------------------------------------------------------

/// `kind: Platform`: one environment (its `metadata.name` is the environment name).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Platform {
    /// Environment name, from `metadata.name`.
    #[serde(skip_deserializing)]
    pub name: String,
    /// Public DNS domain, e.g. `kombify.io` (`localhost` for local).
    pub domain: String,
    /// Where the platform runs on Azure. Absent for environments that do not run on Azure
    /// (`local`): no Bicep is generated for them.
    #[serde(default)]
    pub azure: Option<Azure>,
    /// The identity provider.
    pub zitadel: Zitadel,
    /// The API gateway.
    pub kong: Kong,
    /// The services behind Kong, sorted by name.
    pub services: Vec<Service>,
    /// The platform database.
    pub postgres: Postgres,
    /// The tenant data store.
    pub pocketbase: PocketBase,
    /// Redis, for rate-limit counters and gateway sessions.
    pub redis: Redis,
    /// Azure Front Door in front of Kong (Azure environments only).
    #[serde(default)]
    pub front_door: Option<FrontDoor>,
    /// Probes and alerts.
    #[serde(default)]
    pub monitoring: Monitoring,
    /// Backups of PocketBase and state.
    #[serde(default)]
    pub backup: Backup,
    /// The SSO exchange service's settings.
    pub sso: Sso,
    /// Webhook signing secrets.
    pub webhooks: Webhooks,
    /// Where kombiform keeps this environment's state (absent: local files).
    #[serde(default)]
    pub state: StateStore,
}

impl Platform {
    /// The `iss` of platform tokens: `sso.platformTokens.issuer`, else `https://<domain>`.
    pub fn token_issuer(&self) -> String {
        self.sso
            .platform_tokens
            .issuer
            .clone()
            .unwrap_or_else(|| format!("https://{}", self.domain))
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The TLS every client of the platform database uses: `postgres.tls`, else
    /// `verify-full` with the bundled Azure roots on Azure and `disable` elsewhere.
    pub fn postgres_tls(&self) -> PostgresTls {
        match (&self.postgres.tls, &self.azure) {
            (Some(tls), _) => tls.clone(),
            (None, Some(_)) => PostgresTls::azure(),
            (None, None) => PostgresTls::disabled(),
        }
    }
}

/// Azure placement and naming.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Azure {
    /// Subscription id (a GUID).
    pub subscription_id: String,
    /// Entra tenant id (a GUID), for Key Vault.
    pub tenant_id: String,
    /// Azure region, e.g. `westeurope`.
    pub location: String,
    /// Resource group the platform is deployed into.
    pub resource_group: String,
    /// Short prefix of every resource name, e.g. `kfy`.
    pub name_prefix: String,
    /// Days Log Analytics keeps logs.
    #[serde(default = "default_log_retention")]
    pub log_retention_days: u32,
    /// Tags put on every resource, sorted by key.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn default_log_retention() -> u32 {
    30
}

/// Zitadel: who issues the tokens kombify accepts.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Zitadel {
    /// Issuer URL, e.g. `https://auth.kombify.io`.
    pub issuer: String,
    /// The Zitadel project id: tokens must carry it in `aud`.
    pub project_id: String,
    /// Client ids also accepted in `aud`, sorted.
    #[serde(default)]
    pub client_ids: Vec<String>,
    /// Signing keys published in the issuer's JWKS (public keys, not secrets). Informational:
    /// the gateway verifies platform tokens (`sso.platformTokens`), never Zitadel's own.
    #[serde(default)]
    pub signing_keys: Vec<SigningKey>,
}

impl Zitadel {
    /// The JWKS endpoint of the issuer.
    pub fn jwks_uri(&self) -> String {
        format!("{}/oauth/v2/keys", self.issuer.trim_end_matches('/'))
    }

    /// The OIDC discovery document of the issuer.
    pub fn discovery_uri(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        )
    }
}

/// The claim carrying the user's organization (the tenant) in Zitadel tokens.
pub const ORG_CLAIM: &str = "urn:zitadel:iam:user:resourceowner:id";

/// One public signing key of Zitadel.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningKey {
    /// The key id (`kid`).
    pub kid: String,
    /// The RSA public key, PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
}

/// Kong edition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum KongEdition {
    /// Kong OSS 3.9, DB-less: jwt plugin verifying platform tokens, one consumer per tenant.
    Oss,
    /// Kong Enterprise: openid-connect with Zitadel discovery, consumer groups per plan.
    Enterprise,
}

/// The API gateway.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kong {
    /// OSS or Enterprise.
    pub edition: KongEdition,
    /// Container image.
    pub image: String,
    /// Replicas and size of the gateway container.
    #[serde(default)]
    pub scale: Scale,
    /// The environment's internal address ranges, sorted. Internal routes are not routed by
    /// the public gateway at all (callers inside the environment reach the service directly).
    pub internal_cidrs: Vec<String>,
    /// Browser origins allowed by CORS.
    pub cors_origins: Vec<String>,
    /// Header carrying the correlation id.
    #[serde(default = "default_correlation_header")]
    pub correlation_header: String,
    /// Client certificate and CA for upstream mTLS on https services.
    #[serde(default)]
    pub upstream_mtls: Option<UpstreamMtls>,
    /// Session secret for Enterprise openid-connect sessions.
    #[serde(default)]
    pub session_secret: Option<SecretRef>,
    /// Enterprise license (Enterprise only).
    #[serde(default)]
    pub license: Option<SecretRef>,
    /// Requests per client IP for traffic without a tenant: public routes and requests whose
    /// token was refused. A tenant's plan limits replace it for that tenant's requests.
    #[serde(default = "default_ip_rate_limits")]
    pub ip_rate_limits: RateLimits,
    /// OpenID Connect authorization-code login at the gateway (Enterprise only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_code: Option<AuthorizationCode>,
}

fn default_ip_rate_limits() -> RateLimits {
    RateLimits {
        second: Some(20),
        minute: Some(600),
        hour: None,
        day: None,
    }
}

/// The Enterprise gateway's browser login (OpenID Connect authorization code with PKCE): the
/// gateway is the relying party, keeps the session in Redis and never creates a session for
/// bearer-token calls.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationCode {
    /// The Zitadel client id of the gateway (a web application with a client secret).
    pub client_id: String,
    /// Its client secret.
    pub client_secret: SecretRef,
    /// Where Zitadel sends the browser back, e.g. `https://api.kombify.io/auth/callback`
    /// (registered with the Zitadel application).
    pub redirect_uri: String,
    /// Where the browser goes after logging out.
    pub logout_redirect_uri: String,
}

fn default_correlation_header() -> String {
    "X-Request-ID".to_string()
}

/// Upstream mTLS material. Certificates are public; the private key is a reference.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamMtls {
    /// Stable UUID of the client certificate entity in Kong.
    pub client_certificate_id: String,
    /// The client certificate, PEM.
    pub client_certificate_pem: String,
    /// The client certificate's private key.
    pub client_key: SecretRef,
    /// Stable UUID of the CA certificate entity in Kong.
    pub ca_certificate_id: String,
    /// The CA that signs upstream server certificates, PEM.
    pub ca_certificate_pem: String,
    /// Verification depth.
    #[serde(default = "default_verify_depth")]
    pub verify_depth: u8,
}

fn default_verify_depth() -> u8 {
    2
}

/// Replicas and container size.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scale {
    /// Minimum replicas.
    #[serde(default = "one")]
    pub min_replicas: u32,
    /// Maximum replicas.
    #[serde(default = "three")]
    pub max_replicas: u32,
    /// vCPU, e.g. `0.5`.
    #[serde(default = "half")]
    pub cpu: f64,
    /// Memory, e.g. `1Gi`.
    #[serde(default = "one_gi")]
    pub memory: String,
}

impl Default for Scale {
    fn default() -> Self {
        Scale {
            min_replicas: 1,
            max_replicas: 3,
            cpu: 0.5,
            memory: "1Gi".to_string(),
        }
    }
}

fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}
fn half() -> f64 {
    0.5
}
fn one_gi() -> String {
    "1Gi".to_string()
}

/// Upstream protocol of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Protocol {
    /// Plain HTTP (inside the environment only).
    Http,
    /// HTTPS; with `upstreamMtls`, Kong presents a client certificate.
    Https,
}

impl Protocol {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

/// A kombify service behind Kong.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// Service name (`kombistack`, `sso`, ...): a slug.
    pub name: String,
    /// Container image.
    pub image: String,
    /// Port the container listens on.
    pub port: u16,
    /// Protocol Kong uses towards the service.
    pub protocol: Protocol,
    /// Host Kong sends requests to. Defaults to the service name.
    #[serde(default)]
    pub host: Option<String>,
    /// Path of the liveness probe.
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// Path of the readiness probe.
    #[serde(default = "default_ready_path")]
    pub ready_path: String,
    /// Replicas and size.
    #[serde(default)]
    pub scale: Scale,
    /// Services this one needs running first, sorted.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Whether Front Door may send traffic straight to this service (besides Kong).
    #[serde(default)]
    pub front_door_origin: bool,
    /// Whether the service is deployed at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Environment variables: plain values or secret references, sorted by name.
    #[serde(default)]
    pub env: BTreeMap<String, EnvValue>,
    /// Routes Kong exposes for it.
    #[serde(default)]
    pub routes: Vec<Route>,
}

fn yes() -> bool {
    true
}
fn default_health_path() -> String {
    "/health".to_string()
}
fn default_ready_path() -> String {
    "/ready".to_string()
}

impl Service {
    /// The upstream host name.
    pub fn upstream_host(&self) -> &str {
        self.host.as_deref().unwrap_or(&self.name)
    }
}

/// An environment variable value.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum EnvValue {
    /// A plain, non-secret value.
    Plain(String),
    /// A secret, by reference.
    Secret {
        /// Where the secret is.
        secret: SecretRef,
    },
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Access {
    /// Anyone.
    Public,
    /// A valid Zitadel access token of a known tenant.
    Authenticated,
    /// Not on the public gateway (it answers 404 under `/api/internal`): callers inside the
    /// environment reach the service directly.
    Internal,
}

/// A Kong route of a service.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// Route name, unique across the platform.
    pub name: String,
    /// Path prefixes, e.g. `/v1/stacks`.
    pub paths: Vec<String>,
    /// HTTP methods; empty means all.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Who may call it.
    pub access: Access,
    /// Only tenants whose plan has this feature (e.g. `stackkits`) may call it.
    #[serde(default)]
    pub requires_feature: Option<PlanFeature>,
    /// Whether Kong strips the matched prefix.
    #[serde(default)]
    pub strip_path: bool,
    /// A public route that issues credentials (e.g. platform tokens): its per-IP limit
    /// refuses requests while the rate-limit counters (Redis) are unreachable instead of
    /// letting them through (`fault_tolerant: false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_closed: bool,
}

/// The platform database.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Postgres {
    /// Host for services and apply (local) or the server name suffix (Azure).
    pub host: String,
    /// Port.
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// PostgreSQL major version.
    #[serde(default = "default_pg_version")]
    pub version: String,
    /// Azure SKU, e.g. `Standard_B2s`.
    #[serde(default = "default_pg_sku")]
    pub sku: String,
    /// Azure SKU tier.
    #[serde(default = "default_pg_tier")]
    pub tier: String,
    /// Storage in GiB.
    #[serde(default = "default_pg_storage")]
    pub storage_gb: u32,
    /// Days of point-in-time backups (7..35).
    #[serde(default = "default_backup_days")]
    pub backup_retention_days: u32,
    /// Geo-redundant backups.
    #[serde(default)]
    pub geo_redundant_backup: bool,
    /// High availability (zone-redundant standby).
    #[serde(default)]
    pub high_availability: bool,
    /// Databases to create, sorted.
    pub databases: Vec<String>,
    /// The platform database (plans, tenants, quotas, flags): one of `databases`.
    pub platform_database: String,
    /// Administrator login name (not a secret).
    pub admin_user: String,
    /// Administrator password.
    pub admin_password: SecretRef,
    /// TLS to the server, for `kombiform plan`/`apply`, `kombify-sso` and `kombify-health`.
    /// Absent: `verify-full` against the bundled roots of Azure Database for PostgreSQL on
    /// Azure environments, `disable` elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<PostgresTls>,
    /// IPv4 ranges (CIDR) outside Azure that the server's firewall lets in besides Azure's
    /// own services: the egress addresses of the CI runners (and operators) that run
    /// `kombiform plan`/`apply`. Each becomes a firewall rule of the server (Azure only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_cidrs: Vec<String>,
}

/// How clients speak TLS to PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresTls {
    /// `verify-full` (TLS only; the server's certificate must chain to a trusted root and
    /// name the host connected to) or `disable` (plain TCP; never on Azure).
    #[serde(default)]
    pub mode: PostgresTlsMode,
    /// PEM CA certificates to trust instead of the bundled roots of Azure Database for
    /// PostgreSQL (DigiCert Global Root G2, Microsoft RSA Root Certificate Authority 2017),
    /// e.g. a private CA, or the roots of another cloud. Certificates are public.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates_pem: Option<String>,
}

impl PostgresTls {
    /// Plain TCP.
    pub fn disabled() -> PostgresTls {
        PostgresTls {
            mode: PostgresTlsMode::Disable,
            ca_certificates_pem: None,
        }
    }

    /// `verify-full` against the bundled roots of Azure Database for PostgreSQL.
    pub fn azure() -> PostgresTls {
        PostgresTls {
            mode: PostgresTlsMode::VerifyFull,
            ca_certificates_pem: None,
        }
    }
}

/// Whether and how a PostgreSQL connection uses TLS. There is no mode that may fall back to
/// plain text, and none that encrypts without verifying whom it talks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresTlsMode {
    /// Plain TCP: local servers only.
    Disable,
    /// TLS or no connection; the certificate chain is verified against the trusted roots
    /// and the certificate must name the host (libpq's `sslmode=verify-full`).
    #[default]
    VerifyFull,
}

impl PostgresTlsMode {
    /// The spec's spelling, as libpq's `sslmode` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            PostgresTlsMode::Disable => "disable",
            PostgresTlsMode::VerifyFull => "verify-full",
        }
    }
}

/// The first and last address of an IPv4 CIDR block such as `203.0.113.0/28`; `None` when
/// `cidr` is not one (IPv6, no prefix length, a prefix over 32, or host bits set: the
/// address must be the block's first, so that what is written is what is opened).
pub fn ipv4_cidr_range(cidr: &str) -> Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)> {
    let (ip, bits) = cidr.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    if bits.is_empty() || bits.len() > 2 || !bits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u32 = bits.parse().ok().filter(|b| *b <= 32)?;
    let host_mask = u32::MAX.checked_shr(bits).unwrap_or(0);
    let start = u32::from(ip);
    if start & host_mask != 0 {
        return None;
    }
    Some((ip, std::net::Ipv4Addr::from(start | host_mask)))
}

fn default_pg_port() -> u16 {
    5432
}
fn default_pg_version() -> String {
    "16".to_string()
}
fn default_pg_sku() -> String {
    "Standard_B2s".to_string()
}
fn default_pg_tier() -> String {
    "Burstable".to_string()
}
fn default_pg_storage() -> u32 {
    32
}
fn default_backup_days() -> u32 {
    7
}

/// The tenant data store.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PocketBase {
    /// Base URL services use.
    pub url: String,
    /// Superuser e-mail (not a secret).
    pub superuser_email: String,
    /// Superuser password.
    pub superuser_password: SecretRef,
}

/// Redis.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redis {
    /// Host name.
    pub host: String,
    /// Port.
    #[serde(default = "default_redis_port")]
    pub port: u16,
    /// TLS.
    #[serde(default)]
    pub ssl: bool,
    /// Password.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// Azure Cache for Redis SKU (`Basic`, `Standard`, `Premium`).
    #[serde(default = "default_redis_sku")]
    pub sku: String,
    /// Azure capacity (0..6).
    #[serde(default = "default_redis_capacity")]
    pub capacity: u32,
}

fn default_redis_port() -> u16 {
    6379
}
fn default_redis_sku() -> String {
    "Standard".to_string()
}
fn default_redis_capacity() -> u32 {
    1
}

/// Azure Front Door.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FrontDoor {
    /// The profile's `frontDoorId` (a GUID, from `az afd profile show --query frontDoorId`):
    /// Front Door sends it to origins as `X-Azure-FDID`, and the gateway routes only requests
    /// that carry it, so calls that bypass Front Door find no route. Not a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `Standard_AzureFrontDoor` or `Premium_AzureFrontDoor`.
    #[serde(default = "default_fd_sku")]
    pub sku: String,
    /// Custom domain, e.g. `api.kombify.io`.
    #[serde(default)]
    pub custom_domain: Option<String>,
}

fn default_fd_sku() -> String {
    "Standard_AzureFrontDoor".to_string()
}

/// Where kombiform keeps the state of an environment: local files (the default), or an Azure
/// Blob container a team shares, locked by a finite lease renewed while a run lasts.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateStore {
    /// `local`: files under `--state-dir`; `azureBlob`: blobs in `container` of `account`.
    #[serde(default)]
    pub backend: StateBackendKind,
    /// The storage account (`azureBlob` only), e.g. `kfyprodstate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The blob container (`azureBlob` only), e.g. `kombiform-state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// How long the lease that locks the state lasts unless renewed (`azureBlob` only; 15 to
    /// 60 seconds, Blob Storage's finite lease limits). A killed run's lock ends this long
    /// after its last renewal.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u32,
}

/// Which state backend an environment uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StateBackendKind {
    /// Files under `--state-dir` (`.kombiform/`): one machine.
    #[default]
    Local,
    /// Azure Blob Storage: snapshot, journal, audit and lease in a container a team shares.
    AzureBlob,
}

fn default_lease_seconds() -> u32 {
    60
}

impl Default for StateStore {
    fn default() -> Self {
        StateStore {
            backend: StateBackendKind::Local,
            account: None,
            container: None,
            lease_seconds: default_lease_seconds(),
        }
    }
}

/// Probes and alerts.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Monitoring {
    /// Who gets alerts.
    #[serde(default)]
    pub alert_emails: Vec<String>,
    /// Readiness probe period.
    #[serde(default = "default_probe_period")]
    pub probe_period_seconds: u32,
    /// Timeout of each dependency check in `/ready`.
    #[serde(default = "default_check_timeout")]
    pub check_timeout_ms: u32,
    /// Alert when 5xx responses per 5 minutes exceed this.
    #[serde(default = "default_error_threshold")]
    pub error_rate_threshold: u32,
}

impl Default for Monitoring {
    fn default() -> Self {
        Monitoring {
            alert_emails: Vec::new(),
            probe_period_seconds: default_probe_period(),
            check_timeout_ms: default_check_timeout(),
            error_rate_threshold: default_error_threshold(),
        }
    }
}

fn default_probe_period() -> u32 {
    10
}
fn default_check_timeout() -> u32 {
    2000
}
fn default_error_threshold() -> u32 {
    50
}

/// Backups (PostgreSQL's own retention is on [`Postgres`]).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backup {
    /// Cron expression of PocketBase backups.
    #[serde(default = "default_pb_cron")]
    pub pocketbase_cron: String,
    /// How many PocketBase backups to keep.
    #[serde(default = "default_pb_keep")]
    pub pocketbase_keep: u32,
    /// Days blob versions of state and backups are kept.
    #[serde(default = "default_blob_days")]
    pub blob_retention_days: u32,
}

impl Default for Backup {
    fn default() -> Self {
        Backup {
            pocketbase_cron: default_pb_cron(),
            pocketbase_keep: default_pb_keep(),
            blob_retention_days: default_blob_days(),
        }
    }
}

fn default_pb_cron() -> String {
    "0 3 * * *".to_string()
}
fn default_pb_keep() -> u32 {
    14
}
fn default_blob_days() -> u32 {
    30
}

/// Settings of the SSO exchange service.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sso {
    /// Lifetime of issued PocketBase tokens.
    #[serde(default = "default_token_ttl")]
    pub token_ttl_seconds: u32,
    /// Clock leeway for `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u32,
    /// Least time between two JWKS refreshes.
    #[serde(default = "default_jwks_cooldown")]
    pub jwks_refresh_cooldown_seconds: u32,
    /// Secret used to authenticate internal calls (feature flag apply).
    pub internal_token: SecretRef,
    /// The platform access tokens kombify-sso mints for the gateway.
    #[serde(default)]
    pub platform_tokens: PlatformTokens,
}

/// Platform access tokens: after validating a Zitadel token fully, kombify-sso mints a
/// short-lived token of its own (issuer and audience ours) that the OSS gateway verifies.
/// Its claim [`CREDENTIAL_CLAIM`] is `<tenant>.<key id>`, which selects exactly one Kong
/// credential: each tenant has one credential per key listed here.
///
/// Rotation, one apply per step: add a key (the gateway accepts it, nothing signs with it);
/// move `signs: true` to it (both keys are accepted: tokens signed with the old one stay
/// valid until they expire); remove the old key once `ttlSeconds` have passed since the move.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlatformTokens {
    /// `iss` of the tokens. Default: `https://<domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `aud` of the tokens.
    #[serde(default = "default_token_audience")]
    pub audience: String,
    /// Lifetime of a token in seconds (60..=3600); also the gateway's `maximum_expiration`.
    #[serde(default = "default_platform_ttl")]
    pub ttl_seconds: u32,
    /// The signing keys, sorted by id: exactly one `signs`, every one accepted by the gateway.
    #[serde(default)]
    pub keys: Vec<TokenKey>,
}

impl Default for PlatformTokens {
    fn default() -> Self {
        PlatformTokens {
            issuer: None,
            audience: default_token_audience(),
            ttl_seconds: default_platform_ttl(),
            keys: Vec::new(),
        }
    }
}

impl PlatformTokens {
    /// The key kombify-sso signs with.
    pub fn signer(&self) -> Option<&TokenKey> {
        self.keys.iter().find(|k| k.signs)
    }
}

fn default_token_audience() -> String {
    "kombify-api".to_string()
}

fn default_platform_ttl() -> u32 {
    300
}

/// The claim of a platform token that selects its Kong credential: `<tenant>.<key id>`.
pub const CREDENTIAL_CLAIM: &str = "kombify_credential";

/// One platform token signing key. The private key stays in Key Vault.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenKey {
    /// Key id (lowercase letters, digits, `-`; at most 32): the JOSE `kid` and the suffix of
    /// every credential of this key.
    pub id: String,
    /// Signature algorithm.
    #[serde(default)]
    pub algorithm: TokenAlgorithm,
    /// The public key, PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
    /// The private key (PKCS#8 PEM), read by kombify-sso only.
    pub private_key: SecretRef,
    /// Whether kombify-sso signs with this key (exactly one key signs).
    #[serde(default)]
    pub signs: bool,
}

/// A platform token signature algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum TokenAlgorithm {
    /// ECDSA P-256 with SHA-256.
    #[default]
    ES256,
    /// RSA PKCS#1 v1.5 with SHA-256.
    RS256,
}

impl TokenAlgorithm {
    /// `ES256` or `RS256`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAlgorithm::ES256 => "ES256",
            TokenAlgorithm::RS256 => "RS256",
        }
    }
}

fn default_token_ttl() -> u32 {
    900
}
fn default_leeway() -> u32 {
    30
}
fn default_jwks_cooldown() -> u32 {
    30
}

/// Webhook signing secrets and tolerance.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Webhooks {
    /// Stripe endpoint secret.
    pub stripe_secret: SecretRef,
    /// Zitadel signing key.
    pub zitadel_secret: SecretRef,
    /// How old (or how far in the future) a signed timestamp may be.
    #[serde(default = "default_tolerance")]
    pub tolerance_seconds: u32,
}

fn default_tolerance() -> u32 {
    300
}

// ---------------------------------------------------------------------------------------
// Plans and tenants
// ---------------------------------------------------------------------------------------

/// A feature a plan can include.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum PlanFeature {
    /// The StackKits catalogue API (`/v1/stackkits`).
    Stackkits,
    /// KombiSim simulations.
    Simulations,
    /// Dedicated instances.
    DedicatedInstances,
    /// Audit log export.
    AuditExport,
}

impl PlanFeature {
    /// The feature's name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            PlanFeature::Stackkits => "stackkits",
            PlanFeature::Simulations => "simulations",
            PlanFeature::DedicatedInstances => "dedicatedInstances",
            PlanFeature::AuditExport => "auditExport",
        }
    }
}

/// `kind: Plan`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plan {
    /// Plan name (`free`, `pro`, ...), from `metadata.name`.
    #[serde(skip_deserializing)]
    pub name: String,
    /// Name shown to people.
    pub display_name: String,
    /// Monthly price in euro cents.
    #[serde(default)]
    pub price_cents: u32,
    /// Stripe price id that maps a subscription to this plan.
    #[serde(default)]
    pub stripe_price_id: Option<String>,
    /// Limits.
    pub quotas: Quotas,
    /// Gateway rate limits per tenant.
    pub rate_limits: RateLimits,
    /// Features included, sorted.
    #[serde(default)]
    pub features: Vec<PlanFeature>,
    /// StackKits this plan may use (when it has the `stackkits` feature), sorted.
    #[serde(default)]
    pub stackkits: Vec<String>,
    /// KombiSim limits and isolation.
    pub simulation: Simulation,
}

impl Plan {
    /// Whether the plan includes `feature`.
    pub fn has(&self, feature: PlanFeature) -> bool {
        self.features.contains(&feature)
    }
}

/// Plan quotas.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quotas {
    /// Users per tenant.
    pub max_users: u32,
    /// Homelab nodes per tenant.
    pub max_nodes: u32,
    /// Stacks per tenant.
    pub max_stacks: u32,
    /// Simulations per month.
    pub max_simulations: u32,
}

/// Tenant overrides of plan quotas (each optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaOverrides {
    /// Users per tenant.
    #[serde(default)]
    pub max_users: Option<u32>,
    /// Homelab nodes per tenant.
    #[serde(default)]
    pub max_nodes: Option<u32>,
    /// Stacks per tenant.
    #[serde(default)]
    pub max_stacks: Option<u32>,
    /// Simulations per month.
    #[serde(default)]
    pub max_simulations: Option<u32>,
}

impl Quotas {
    /// These quotas with a tenant's overrides applied.
    pub fn with(&self, o: &QuotaOverrides) -> Quotas {
        Quotas {
            max_users: o.max_users.unwrap_or(self.max_users),
            max_nodes: o.max_nodes.unwrap_or(self.max_nodes),
            max_stacks: o.max_stacks.unwrap_or(self.max_stacks),
            max_simulations: o.max_simulations.unwrap_or(self.max_simulations),
        }
    }
}

/// Requests per period; at least one is set, and a longer period never allows fewer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimits {
    /// Per second.
    #[serde(default)]
    pub second: Option<u32>,
    /// Per minute.
    #[serde(default)]
    pub minute: Option<u32>,
    /// Per hour.
    #[serde(default)]
    pub hour: Option<u32>,
    /// Per day.
    #[serde(default)]
    pub day: Option<u32>,
}

impl RateLimits {
    /// The limits that are set, shortest period first, as (period name, limit).
    pub fn periods(&self) -> Vec<(&'static str, u32)> {
        [
            ("second", self.second),
            ("minute", self.minute),
            ("hour", self.hour),
            ("day", self.day),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| (n, v)))
        .collect()
    }
}

/// How simulations of a tenant are isolated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Isolation {
    /// A Docker network per tenant.
    Network,
    /// A dedicated VM per tenant.
    Vm,
}

/// KombiSim limits of a plan.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Simulation {
    /// Simulations running at the same time.
    pub max_concurrent: u32,
    /// vCPU per simulation.
    pub cpu_per_simulation: f64,
    /// Memory per simulation in MiB.
    pub memory_mb_per_simulation: u32,
    /// Isolation level.
    pub isolation: Isolation,
}

/// Shared instance (namespaces in the shared KombiStack) or a dedicated one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum InstanceMode {
    /// Collections in the shared PocketBase, namespaced by slug.
    Shared,
    /// Its own KombiStack Container App.
    Dedicated,
}

/// Tenant status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TenantStatus {
    /// In use.
    Active,
    /// Logins refused (403), data kept.
    Suspended,
}

impl TenantStatus {
    /// `active` or `suspended`.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        }
    }
}

/// `kind: Tenant`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tenant {
    /// The tenant's slug, from `metadata.name` (the loader sets it; it is not a key of the
    /// spec, so the JSON Schema leaves it out). Valid by construction.
    #[schemars(skip)]
    pub slug: TenantSlug,
    /// Name shown to people (any text).
    pub display_name: String,
    /// The tenant's plan.
    pub plan: String,
    /// The tenant's Zitadel organization id.
    pub zitadel_org_id: String,
    /// Shared or dedicated.
    #[serde(default = "default_instance")]
    pub instance: InstanceMode,
    /// Active or suspended.
    #[serde(default = "default_status")]
    pub status: TenantStatus,
    /// Environments the tenant exists in; empty means all.
    #[serde(default)]
    pub environments: Vec<String>,
    /// Quota overrides.
    #[serde(default)]
    pub quota_overrides: QuotaOverrides,
    /// Stripe customer id.
    #[serde(default)]
    pub stripe_customer_id: Option<String>,
    /// Whether deleting this tenant's data may happen without `--allow-destroy`.
    #[serde(default)]
    pub allow_destroy: bool,
}

fn default_instance() -> InstanceMode {
    InstanceMode::Shared
}
fn default_status() -> TenantStatus {
    TenantStatus::Active
}

impl Tenant {
    /// The tenant's slug with `-` turned into `_`, for PocketBase collection names.
    pub fn ident(&self) -> String {
        self.slug.ident()
    }
}

// ---------------------------------------------------------------------------------------
// Feature flags and collection templates
// ---------------------------------------------------------------------------------------

/// `kind: FeatureFlag`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FeatureFlag {
    /// Flag name, from `metadata.name`.
    #[serde(skip_deserializing)]
    pub name: String,
    /// What the flag does.
    pub description: String,
    /// Value when nothing else applies.
    pub default: bool,
    /// Values per plan, sorted by plan.
    #[serde(default)]
    pub plans: BTreeMap<String, bool>,
    /// Values per tenant, sorted by slug.
    #[serde(default)]
    pub tenants: BTreeMap<String, bool>,
    /// Percentage (0..=100) of tenants, chosen stably by hash, that get `true` when neither
    /// plan nor tenant decides.
    #[serde(default)]
    pub rollout_percent: Option<u8>,
}

/// Where a collection template is instantiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    /// Once per tenant: `t_<slug>_<name>`.
    Tenant,
    /// Once: `<name>` (e.g. `_sso_mappings`).
    Global,
}

/// PocketBase collection type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CollectionKind {
    /// Plain records.
    Base,
    /// Users that can authenticate.
    Auth,
}

/// `kind: CollectionTemplate`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectionTemplate {
    /// Template name, from `metadata.name` (`nodes`, `_sso_mappings`).
    #[serde(skip_deserializing)]
    pub name: String,
    /// Per tenant or global.
    pub scope: Scope,
    /// Base or auth collection.
    #[serde(rename = "type")]
    pub kind: CollectionKind,
    /// Fields, in order.
    pub fields: Vec<Field>,
    /// Indexes.
    #[serde(default)]
    pub indexes: Vec<Index>,
    /// Who may do what. Global collections are superuser-only.
    #[serde(default)]
    pub access: CollectionAccess,
}

impl CollectionTemplate {
    /// The collection name for `tenant` (tenant scope) or the global name.
    pub fn collection_name(&self, tenant: Option<&Tenant>) -> String {
        match (self.scope, tenant) {
            (Scope::Tenant, Some(t)) => crate::naming::tenant_collection(&t.ident(), &self.name),
            _ => self.name.clone(),
        }
    }

    /// The access levels, with the defaults of the template's type filled in.
    pub fn levels(&self) -> Levels {
        self.access.levels(self.kind)
    }
}

/// Who may do what in a tenant collection. Every rule also requires an authenticated
/// user of the same tenant; anonymous access is never granted. A level left out takes the
/// default of the template's type ([`CollectionAccess::levels`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectionAccess {
    /// List and view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<AccessLevel>,
    /// Create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<AccessLevel>,
    /// Update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<AccessLevel>,
    /// Delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<AccessLevel>,
}

/// The access level of each operation, defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Levels {
    /// List and view.
    pub read: AccessLevel,
    /// Create.
    pub create: AccessLevel,
    /// Update.
    pub update: AccessLevel,
    /// Delete.
    pub delete: AccessLevel,
}

impl CollectionAccess {
    /// The levels for a template of `kind`. Defaults: `member` for everything in base
    /// templates; in auth templates `read: member`, `update: owner` (a user's own record) and
    /// `create`/`delete: nobody`, since user records are identities that kombify-sso creates.
    pub fn levels(&self, kind: CollectionKind) -> Levels {
        use AccessLevel::{Member, Nobody, Owner};
        let (create, update, delete) = match kind {
            CollectionKind::Base => (Member, Member, Member),
            CollectionKind::Auth => (Nobody, Owner, Nobody),
        };
        Levels {
            read: self.read.unwrap_or(Member),
            create: self.create.unwrap_or(create),
            update: self.update.unwrap_or(update),
            delete: self.delete.unwrap_or(delete),
        }
    }
}

/// An access level of a tenant collection rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AccessLevel {
    /// Any user of the tenant.
    Member,
    /// The record's owner (the record's `owner` field, or the user itself in auth
    /// collections).
    Owner,
    /// Nobody but superusers.
    Nobody,
}

/// A collection field.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Field {
    /// Field name.
    pub name: String,
    /// Field type.
    #[serde(rename = "type")]
    pub kind: FieldKind,
    /// Whether a value is required.
    #[serde(default)]
    pub required: bool,
    /// Text: minimum length. Number: minimum.
    #[serde(default)]
    pub min: Option<f64>,
    /// Text: maximum length. Number: maximum.
    #[serde(default)]
    pub max: Option<f64>,
    /// Text: a regular expression values must match.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Select: the allowed values.
    #[serde(default)]
    pub values: Vec<String>,
    /// Relation: the template this field points at (same tenant for tenant templates).
    #[serde(default)]
    pub target: Option<String>,
    /// Relation/select: how many values (1 = single).
    #[serde(default)]
    pub max_select: Option<u32>,
    /// Relation: delete this record when the target is deleted.
    #[serde(default)]
    pub cascade_delete: bool,
    /// Earlier names of this field: the deploy engine renames instead of dropping.
    #[serde(default)]
    pub renamed_from: Vec<String>,
    /// Who may write this field. Left out: `superuser` in auth templates (a user record is
    /// identity: its fields are kombify-sso's unless the template says otherwise), `members`
    /// in base templates. See [`Field::writers`].
    #[serde(default)]
    pub writable_by: Option<Writers>,
}

/// Who may write a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Writers {
    /// Whoever the collection's `create`/`update` access admits. The ownership field is
    /// still bound to the caller: see [`OWNER_FIELD`].
    Members,
    /// Superusers only (kombify-sso): a member's create or update that sets it is refused.
    Superuser,
}

/// The fields of a tenant's user records that kombify-sso writes and that identify or
/// authorise the user: the Zitadel subject and the role. Only superusers may write them; a
/// template that lets members write them is the `member-writable-identity` diagnostic.
pub const IDENTITY_FIELDS: [&str; 2] = [USER_SUBJECT_FIELD, USER_ROLE_FIELD];

/// The field of a tenant's user records holding the Zitadel subject.
pub const USER_SUBJECT_FIELD: &str = "zitadelSub";

/// The field of a tenant's user records holding the user's role in the tenant.
pub const USER_ROLE_FIELD: &str = "role";

/// The ownership field of base templates: `owner` access levels compare it with the caller,
/// and the generated rules bind it to the caller on create and keep members from changing it.
pub const OWNER_FIELD: &str = "owner";

impl Field {
    /// Who may write this field in a template of `kind`: `writableBy`, or the default of
    /// the template's type.
    pub fn writers(&self, kind: CollectionKind) -> Writers {
        self.writable_by.unwrap_or(match kind {
            CollectionKind::Auth => Writers::Superuser,
            CollectionKind::Base => Writers::Members,
        })
    }
}

/// PocketBase field types kombiform generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FieldKind {
    /// Text.
    Text,
    /// Number.
    Number,
    /// Boolean.
    Bool,
    /// E-mail address.
    Email,
    /// URL.
    Url,
    /// Date and time.
    Date,
    /// One or more of fixed values.
    Select,
    /// JSON.
    Json,
    /// A reference to records of another collection.
    Relation,
    /// Created/updated timestamp set by PocketBase.
    Autodate,
}

impl FieldKind {
    /// The PocketBase type name.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldKind::Text => "text",
            FieldKind::Number => "number",
            FieldKind::Bool => "bool",
            FieldKind::Email => "email",
            FieldKind::Url => "url",
            FieldKind::Date => "date",
            FieldKind::Select => "select",
            FieldKind::Json => "json",
            FieldKind::Relation => "relation",
            FieldKind::Autodate => "autodate",
        }
    }
}

/// An index of a collection.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Index {
    /// Fields, in order.
    pub fields: Vec<String>,
    /// Unique index.
    #[serde(default)]
    pub unique: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_cidr_ranges() {
        let range = |c: &str| ipv4_cidr_range(c).map(|(a, b)| format!("{a}-{b}"));
        assert_eq!(
            range("203.0.113.7/32").as_deref(),
            Some("203.0.113.7-203.0.113.7")
        );
        assert_eq!(
            range("203.0.113.0/28").as_deref(),
            Some("203.0.113.0-203.0.113.15")
        );
        assert_eq!(
            range("0.0.0.0/0").as_deref(),
            Some("0.0.0.0-255.255.255.255")
        );
        for bad in [
            "203.0.113.7/28",
            "203.0.113.7",
            "203.0.113.0/33",
            "203.0.113.0/+8",
            "203.0.113.0/",
            "2001:db8::/32",
            "example.com/32",
        ] {
            assert_eq!(range(bad), None, "{bad}");
        }
    }
}
