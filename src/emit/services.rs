//! The services emitter: `<env>/services/sso.json` and `<env>/services/health.json`, the
//! configuration `kombify-sso` and `kombify-health` read at startup, and the serde types of
//! both (the services deserialize exactly these).
//!
//! Secrets stay [`SecretRef`]s (`{"keyVault": "name"}` or `{"env": "NAME"}`): a service
//! resolves them itself. Output is pretty JSON with keys sorted and a trailing newline.
//!
//! Not here: the services themselves, and anything per tenant (the SSO service reads tenants
//! and quotas from PostgreSQL, see [`super::sql`]).

use serde::{Deserialize, Serialize};

use crate::emit::Files;
use crate::model::{naming, CollectionKind, Env, Platform, Scope, SecretRef, ORG_CLAIM};

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
    /// libpq `sslmode`: `require` on Azure, `disable` locally.
    pub ssl_mode: String,
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

/// Adds `<env>/services/sso.json` and `<env>/services/health.json`, each when the platform
/// has the service ([`SSO_SERVICE`], [`HEALTH_SERVICE`]).
pub fn emit(env: Env<'_>, files: &mut Files) {
    if let Some(cfg) = sso(env) {
        files.insert(format!("{}/services/sso.json", env.name()), to_json(&cfg));
    }
    if let Some(cfg) = health(env.platform) {
        files.insert(
            format!("{}/services/health.json", env.name()),
            to_json(&cfg),
        );
    }
}

/// The SSO service's configuration, if the platform has the service.
pub fn sso(env: Env<'_>) -> Option<SsoConfig> {
    let p = env.platform;
    let service = p.service(SSO_SERVICE)?;
    let z = &p.zitadel;
    let audiences = std::iter::once(z.project_id.clone())
        .chain(z.client_ids.iter().cloned())
        .collect();
    Some(SsoConfig {
        listen: listen(p, service.port),
        zitadel: ZitadelConfig {
            issuer: z.issuer.clone(),
            discovery_uri: z.discovery_uri(),
            jwks_uri: z.jwks_uri(),
            algorithms: vec![TOKEN_ALGORITHM.to_string()],
            audiences,
            org_claim: ORG_CLAIM.to_string(),
            leeway_seconds: p.sso.leeway_seconds,
            jwks_refresh_cooldown_seconds: p.sso.jwks_refresh_cooldown_seconds,
        },
        token_ttl_seconds: p.sso.token_ttl_seconds,
        pocketbase: PocketBaseConfig {
            url: p.pocketbase.url.clone(),
            superuser_email: p.pocketbase.superuser_email.clone(),
            superuser_password: p.pocketbase.superuser_password.clone(),
            users_collection: users_collection(env),
            sso_mappings_collection: sso_mappings_collection(env),
        },
        postgres: postgres(p),
        webhooks: WebhooksConfig {
            stripe_secret: p.webhooks.stripe_secret.clone(),
            zitadel_secret: p.webhooks.zitadel_secret.clone(),
            tolerance_seconds: p.webhooks.tolerance_seconds,
        },
        internal_token: p.sso.internal_token.clone(),
    })
}

/// The health service's configuration, if the platform has the service.
pub fn health(p: &Platform) -> Option<HealthConfig> {
    let service = p.service(HEALTH_SERVICE)?;
    let http = |name: &str, url: String| Check {
        name: name.to_string(),
        probe: Probe::Http(HttpProbe {
            url,
            expect_status: 200,
        }),
    };
    let mut checks = vec![
        http(
            "pocketbase",
            format!("{}/api/health", p.pocketbase.url.trim_end_matches('/')),
        ),
        Check {
            name: "postgres".to_string(),
            probe: Probe::Postgres(postgres(p)),
        },
        http(
            "kong",
            format!("http://{}:{KONG_STATUS_PORT}/status", kong_host(p)),
        ),
        http("zitadel-jwks", p.zitadel.jwks_uri()),
    ];
    checks.sort_by(|a, b| a.name.cmp(&b.name));
    Some(HealthConfig {
        listen: listen(p, service.port),
        check_timeout_ms: p.monitoring.check_timeout_ms,
        cache_ttl_ms: READY_CACHE_TTL_MS,
        checks,
    })
}

fn listen(p: &Platform, port: u16) -> Listen {
    let address = if p.azure.is_some() {
        "0.0.0.0"
    } else {
        "127.0.0.1"
    };
    Listen {
        address: address.to_string(),
        port,
    }
}

/// Kong's host inside the environment: its Container App on Azure, this machine locally.
fn kong_host(p: &Platform) -> String {
    if p.azure.is_some() {
        naming::container_app(p, "kong")
    } else {
        "127.0.0.1".to_string()
    }
}

fn postgres(p: &Platform) -> PostgresConfig {
    let pg = &p.postgres;
    PostgresConfig {
        host: pg.host.clone(),
        port: pg.port,
        database: pg.platform_database.clone(),
        schema: super::sql::SCHEMA.to_string(),
        user: pg.admin_user.clone(),
        password: pg.admin_password.clone(),
        ssl_mode: if p.azure.is_some() {
            "require"
        } else {
            "disable"
        }
        .to_string(),
    }
}

/// `t_{tenant}_<name>` of the tenant-scoped auth collection template (`users` when there is
/// none, or when `users` is one of several).
fn users_collection(env: Env<'_>) -> String {
    let auth: Vec<&str> = env
        .collections()
        .iter()
        .filter(|c| c.scope == Scope::Tenant && c.kind == CollectionKind::Auth)
        .map(|c| c.name.as_str())
        .collect();
    let name = match auth.as_slice() {
        [one] => one,
        _ => "users",
    };
    format!("t_{TENANT_PLACEHOLDER}_{name}")
}

/// The global `_sso_mappings` collection (the global template of that name, else the name).
fn sso_mappings_collection(env: Env<'_>) -> String {
    const NAME: &str = "_sso_mappings";
    env.collections()
        .iter()
        .find(|c| c.scope == Scope::Global && c.name == NAME)
        .map_or(NAME, |c| c.name.as_str())
        .to_string()
}

/// Pretty JSON with every object's keys sorted, and a trailing newline.
fn to_json<T: Serialize>(value: &T) -> String {
    // These types hold only strings, integers, lists and string-keyed structs: serializing
    // them cannot fail.
    let mut v = serde_json::to_value(value).expect("service config serializes");
    v.sort_all_objects();
    let mut s = serde_json::to_string_pretty(&v).expect("a JSON value serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::Model;

    fn model() -> Model {
        let inputs = match crate::cli::read_specs(Path::new("specs")) {
            Ok(i) => i,
            Err(e) => panic!("reading specs: {e:#}"),
        };
        let loaded = crate::spec::load::load(inputs);
        let rendered = loaded.render();
        match loaded.model {
            Some(m) => m,
            None => panic!("the example specs are invalid:\n{rendered}"),
        }
    }

    fn files() -> Files {
        let m = model();
        let mut files = Files::new();
        for env in m.envs() {
            emit(env, &mut files);
        }
        files
    }

    fn parse<T: for<'de> Deserialize<'de>>(files: &Files, path: &str) -> T {
        let text = match files.get(path) {
            Some(t) => t,
            None => panic!("{path} not emitted"),
        };
        match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => panic!("{path} does not deserialize: {e}\n{text}"),
        }
    }

    /// Whether every object in `v` has its keys in sorted order.
    fn sorted(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(m) => {
                m.keys().zip(m.keys().skip(1)).all(|(a, b)| a < b) && m.values().all(sorted)
            }
            serde_json::Value::Array(a) => a.iter().all(sorted),
            _ => true,
        }
    }

    #[test]
    fn sso_config_round_trips_and_holds_only_references() {
        let files = files();
        let cfg: SsoConfig = parse(&files, "prod/services/sso.json");
        assert_eq!(
            cfg.listen,
            Listen {
                address: "0.0.0.0".into(),
                port: 8080
            }
        );
        assert_eq!(cfg.zitadel.issuer, "https://auth.kombify.io");
        assert_eq!(
            cfg.zitadel.jwks_uri,
            "https://auth.kombify.io/oauth/v2/keys"
        );
        assert_eq!(
            cfg.zitadel.audiences,
            ["284713399019651074", "284713422512963586"]
        );
        assert_eq!(
            cfg.zitadel.org_claim,
            "urn:zitadel:iam:user:resourceowner:id"
        );
        assert_eq!(cfg.zitadel.algorithms, ["RS256"]);
        assert_eq!(cfg.pocketbase.users_collection, "t_{tenant}_users");
        assert_eq!(cfg.pocketbase.sso_mappings_collection, "_sso_mappings");
        assert_eq!(
            cfg.pocketbase.superuser_password,
            SecretRef::KeyVault("pocketbase-superuser-password".into())
        );
        assert_eq!(cfg.postgres.database, "kombify_platform");
        assert_eq!(cfg.postgres.schema, "kombify");
        assert_eq!(cfg.postgres.ssl_mode, "require");
        assert_eq!(
            cfg.internal_token,
            SecretRef::KeyVault("sso-internal-token".into())
        );
        assert_eq!(cfg.webhooks.tolerance_seconds, 300);

        let text = &files["prod/services/sso.json"];
        assert!(text.contains("\"superuserPassword\": {\n      \"keyVault\": \"pocketbase-superuser-password\"\n    }"));
        assert!(text.ends_with("}\n"));

        let local: SsoConfig = parse(&files, "local/services/sso.json");
        assert_eq!(local.listen.address, "127.0.0.1");
        assert_eq!(local.postgres.password, SecretRef::Env("PGPASSWORD".into()));
        assert_eq!(local.postgres.ssl_mode, "disable");
        assert_eq!(local.zitadel.audiences, ["100000000000000001"]);
    }

    #[test]
    fn health_config_checks_every_dependency() {
        let files = files();
        let cfg: HealthConfig = parse(&files, "prod/services/health.json");
        assert_eq!(cfg.listen.port, 8080);
        assert_eq!(cfg.check_timeout_ms, 2000);
        assert_eq!(cfg.cache_ttl_ms, 1000);
        let names: Vec<&str> = cfg.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["kong", "pocketbase", "postgres", "zitadel-jwks"]);
        let url = |i: usize| match &cfg.checks[i].probe {
            Probe::Http(h) => h.url.clone(),
            Probe::Postgres(_) => panic!("{} is not http", cfg.checks[i].name),
        };
        assert_eq!(url(0), "http://kfy-prod-kong:8100/status");
        assert_eq!(url(1), "https://kombistack.internal.kombify.io/api/health");
        assert_eq!(url(3), "https://auth.kombify.io/oauth/v2/keys");
        match &cfg.checks[2].probe {
            Probe::Postgres(pg) => {
                assert_eq!(pg.host, "kfy-prod-pg.postgres.database.azure.com");
                assert_eq!(
                    pg.password,
                    SecretRef::KeyVault("postgres-admin-password".into())
                );
            }
            Probe::Http(_) => panic!("postgres is not http"),
        }
        let local: HealthConfig = parse(&files, "local/services/health.json");
        assert!(
            matches!(&local.checks[0].probe, Probe::Http(h) if h.url == "http://127.0.0.1:8100/status")
        );
    }

    #[test]
    fn json_is_sorted_pretty_and_stable() {
        let a = files();
        let b = files();
        assert_eq!(a, b);
        assert_eq!(a.len(), 4);
        for (path, text) in &a {
            let v: serde_json::Value = match serde_json::from_str(text) {
                Ok(v) => v,
                Err(e) => panic!("{path}: {e}"),
            };
            assert!(sorted(&v), "{path} keys are sorted");
            assert!(text.ends_with("}\n") && !text.ends_with("\n\n"), "{path}");
            assert!(text.starts_with("{\n  \""), "{path} is pretty");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let files = files();
        let text = files["prod/services/health.json"].replacen('{', "{\"extra\": 1,", 1);
        assert!(serde_json::from_str::<HealthConfig>(&text).is_err());
    }

    #[test]
    fn no_service_no_file() {
        let mut m = model();
        for p in &mut m.platforms {
            p.services.retain(|s| s.name != SSO_SERVICE);
        }
        let mut files = Files::new();
        for env in m.envs() {
            emit(env, &mut files);
        }
        assert!(!files.contains_key("prod/services/sso.json"));
        assert!(files.contains_key("prod/services/health.json"));
    }
}
