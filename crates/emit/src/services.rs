//! The services emitter: `<env>/services/sso.json` and `<env>/services/health.json`, the
//! configuration `kombify-sso` and `kombify-health` read at startup. The serde types of both
//! live in [`kombiform_model::services`] (the services deserialize exactly those).
//!
//! Secrets stay [`SecretRef`]s (`{"keyVault": "name"}` or `{"env": "NAME"}`): a service
//! resolves them itself. Output is pretty JSON with keys sorted and a trailing newline.
//!
//! Not here: the services themselves, and anything per tenant (the SSO service reads tenants
//! and quotas from PostgreSQL, see [`super::sql`]).

use serde::Serialize;

use crate::Files;
pub use kombiform_model::services::*;
use kombiform_model::{
    naming, CollectionKind, Env, KongEdition, Platform, Scope, CREDENTIAL_CLAIM, ORG_CLAIM,
};

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
        postgres: postgres(p, SSO_SERVICE),
        webhooks: WebhooksConfig {
            stripe_secret: p.webhooks.stripe_secret.clone(),
            zitadel_secret: p.webhooks.zitadel_secret.clone(),
            tolerance_seconds: p.webhooks.tolerance_seconds,
        },
        internal_token: p.sso.internal_token.clone(),
        platform_tokens: platform_tokens(p),
    })
}

/// What kombify-sso signs platform tokens with: the key that `signs`, on an OSS gateway (the
/// Enterprise gateway verifies Zitadel's tokens itself).
fn platform_tokens(p: &Platform) -> Option<PlatformTokensConfig> {
    if p.kong.edition != KongEdition::Oss {
        return None;
    }
    let t = &p.sso.platform_tokens;
    let key = t.signer()?;
    Some(PlatformTokensConfig {
        issuer: t
            .issuer
            .clone()
            .unwrap_or_else(|| format!("https://{}", p.domain)),
        audience: t.audience.clone(),
        ttl_seconds: t.ttl_seconds,
        key_id: key.id.clone(),
        algorithm: key.algorithm.as_str().to_string(),
        private_key: key.private_key.clone(),
        credential_claim: CREDENTIAL_CLAIM.to_string(),
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
            probe: Probe::Postgres(postgres(p, HEALTH_SERVICE)),
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

/// The platform database as `service` reaches it: as its own least-privilege role
/// ([`naming::postgres_role`]), never as the administrator.
fn postgres(p: &Platform, service: &str) -> PostgresConfig {
    let pg = &p.postgres;
    let role = naming::postgres_role(service);
    PostgresConfig {
        host: pg.host.clone(),
        port: pg.port,
        database: pg.platform_database.clone(),
        schema: super::sql::SCHEMA.to_string(),
        password: kombiform_model::secret::postgres_role_password(&pg.admin_password, &role),
        user: role,
        tls: p.postgres_tls(),
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
    naming::tenant_collection(TENANT_PLACEHOLDER, name)
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
    use serde::Deserialize;

    use super::*;
    use kombiform_model::{Model, SecretRef};

    fn model() -> Model {
        kombiform_test_support::example_model()
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
        assert_eq!(cfg.postgres.tls, kombiform_model::PostgresTls::azure());
        assert!(files["prod/services/sso.json"]
            .contains("\"tls\": {\n      \"mode\": \"verify-full\"\n    }"));
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
        // Its own role, never the administrator.
        assert_eq!(local.postgres.user, "kombify_sso");
        assert_eq!(
            local.postgres.password,
            SecretRef::Env("PG_KOMBIFY_SSO_PASSWORD".into())
        );
        assert_eq!(local.postgres.tls, kombiform_model::PostgresTls::disabled());
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
                assert_eq!(pg.user, "kombify_health");
                assert_eq!(
                    pg.password,
                    SecretRef::KeyVault("pg-kombify-health-password".into())
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
