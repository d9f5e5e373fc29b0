//! The Kong emitter: one declarative config per environment, `<env>/kong/kong.yaml` (Kong OSS
//! 3.9, DB-less) or `<env>/kong/kong.enterprise.yaml` (Kong Enterprise).
//!
//! It is a pure function of the model: no IO, no clock, no randomness, byte-for-byte
//! deterministic, so Kong's `/status` `configuration_hash` (the MD5 of the bytes posted to
//! `POST /config` as a string) is predictable from the file alone. It never writes a secret:
//! Redis passwords, the upstream client key and the session secret are Kong vault references
//! (`{vault://env/<name>}`, see [`vault_ref`]). It is not the Kong provider (pushing the file,
//! reading `/status`) and not a YAML library ([`yaml`] only writes what we build).
//! [`check`] holds our own typed checks of a generated document.
//!
//! # What the OSS file contains (`_format_version: "3.0"`, no decK meta keys)
//! - a service per enabled platform service, with its routes (`protocols: [http, https]`);
//!   https services get `tls_verify: true`, and with `kong.upstreamMtls` also
//!   `client_certificate`, `tls_verify_depth` and `ca_certificates` (UUID strings, the form
//!   both Kong's DB-less loader and decK accept); http services get none of these fields;
//! - `access: public` routes: no plugin; `access: internal` routes: `ip-restriction` allowing
//!   only `kong.internalCidrs` (404 for everyone else; route `sources` are not allowed on
//!   http routes), plus a service-less catch-all route `/api/internal` that answers 404, so
//!   unknown internal paths are refused too;
//! - `access: authenticated` routes: the bundled `jwt` plugin and an `acl` plugin allowing the
//!   groups `plan-<plan>` of the plans that may call the route (those with the route's
//!   `requiresFeature`, or all plans); if no plan qualifies, a `request-termination` (403);
//! - one consumer per tenant of the environment: `username` = slug, `custom_id` = Zitadel
//!   organization id, `acls: [{group: plan-<plan>}]`, a `jwt_secrets` row and a
//!   consumer-scoped `rate-limiting` plugin with the plan's limits (Redis policy, headers on);
//!   suspended tenants keep their consumer (so their requests are attributed) but get a
//!   consumer-scoped `request-termination` (403) instead of a rate limit;
//! - global `cors` and `correlation-id` plugins;
//! - with `kong.upstreamMtls`: the client `certificates` entry (its `key` is a vault
//!   reference) and the `ca_certificates` entry.
//!
//! # Token validation on Kong OSS, and its limits
//! OSS `jwt` has no JWKS, no discovery, no `iss`/`aud` check and no `kid` selection: the value
//! of the `key_claim_name` claim selects one `jwt_secrets` row, and the consumer owning that
//! row is the authenticated consumer. We set `key_claim_name` to Zitadel's organization claim
//! ([`ORG_CLAIM`]), so the verified org id of a token selects its tenant's consumer; tokens of
//! organizations that are not tenants find no row and are refused (401). Every row carries
//! the same Zitadel public key. Consequences, accepted and documented:
//! - one signing key per organization id (`key` is unique in Kong): we use the newest key of
//!   `zitadel.signingKeys` (largest numeric `kid`); when Zitadel rotates its key (without
//!   notice), the specs must get the new key and the config must be rebuilt and pushed;
//!   tokens signed with the old key fail until then;
//! - only `exp` is verified: no audience or issuer check at the gateway (the SSO exchange
//!   service validates tokens fully); the `alg` of a token must equal the row's `RS256`,
//!   so the `secret` placeholder (required by decK's schema, unused for RS256) cannot be
//!   used to forge HS256 tokens;
//! - `ip-restriction` judges the client address Kong computes, so Kong's `trusted_ips` and
//!   `real_ip_header` must only trust the load balancer in front of it.
//!
//! # Enterprise
//! `openid-connect` with the issuer's discovery document, audiences from the project id and
//! client ids, consumer mapping by the organization claim onto `custom_id`, sessions stored
//! in Redis (secret as a vault reference); a consumer group `plan-<plan>` per plan carrying a
//! `rate-limiting` plugin (scoped to the group, `limit_by: consumer`, so every tenant has its
//! own counters with its plan's limits); consumers join their plan's group (`groups`, decK's
//! format) and the `acl` plugin matches group names (`include_consumer_groups`).
//! `openid-connect` has no schema in our validator's plugin set: validate this file with
//! `kong-validate FILE --strict-plugins --allow-plugin openid-connect`.

pub mod yaml;

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::Files;
use kombiform_model::{
    Access, Env, KongEdition, Plan, Protocol, Route, SecretRef, Service, SigningKey, Tenant,
    TenantStatus, ORG_CLAIM,
};

/// The declarative format version we write.
pub const FORMAT_VERSION: &str = "3.0";
/// Paths under this prefix are internal.
pub const INTERNAL_PREFIX: &str = "/api/internal";
/// Name of the catch-all route refusing unknown internal paths. The `_` keeps it apart from
/// spec route names (which may only contain lowercase letters, digits and `-`).
pub const INTERNAL_DENY_ROUTE: &str = "kombiform_internal_deny";
/// The `secret` of every RS256 `jwt_secrets` row: decK's schema requires the field, Kong
/// ignores it for RS256 (it verifies with `rsa_public_key`). Not a secret.
pub const JWT_SECRET_PLACEHOLDER: &str = "unused-for-rs256";
/// What a suspended tenant's requests get (with status 403).
const SUSPENDED_MESSAGE: &str = "This tenant is suspended";
/// First line of every generated file.
pub const HEADER: &str =
    "# Generated by kombiform from specs/. Do not edit: change the specs and run `kombiform build`.\n";

/// The file name of an edition's config.
pub fn file_name(edition: KongEdition) -> &'static str {
    match edition {
        KongEdition::Oss => "kong.yaml",
        KongEdition::Enterprise => "kong.enterprise.yaml",
    }
}

/// The output path of an environment's Kong config, e.g. `prod/kong/kong.yaml`.
pub fn path(env: Env<'_>) -> String {
    format!(
        "{}/kong/{}",
        env.name(),
        file_name(env.platform.kong.edition)
    )
}

/// Adds the environment's Kong config to `files`.
pub fn emit(env: Env<'_>, files: &mut Files) {
    files.insert(path(env), render(env));
}

/// The Kong config of an environment as YAML text: [`HEADER`] followed by
/// [`document`] written with [`yaml`]. Consumers are built and written one at a time, so
/// memory stays flat however many tenants there are.
pub fn render(env: Env<'_>) -> String {
    let ctx = Ctx::new(env);
    let tenants = env.tenants().count();
    let mut out = String::with_capacity(8192 + tenants * 1400);
    out.push_str(HEADER);
    yaml::write_top_entry(&mut out, "_format_version", &json!(FORMAT_VERSION));
    for (key, value) in ctx.head() {
        yaml::write_top_entry(&mut out, key, &value);
    }
    if tenants > 0 {
        out.push_str("consumers:\n");
        let cache = ConsumerText::new(&ctx);
        for t in env.tenants() {
            cache.write(&ctx, &mut out, t);
        }
    }
    for (key, value) in ctx.tail() {
        yaml::write_top_entry(&mut out, key, &value);
    }
    out
}

/// The Kong config of an environment as a JSON tree (what [`render`] writes, for checks).
pub fn document(env: Env<'_>) -> Value {
    let ctx = Ctx::new(env);
    let mut doc = Map::new();
    doc.insert("_format_version".into(), json!(FORMAT_VERSION));
    for (key, value) in ctx.head() {
        doc.insert(key.into(), value);
    }
    let consumers: Vec<Value> = env.tenants().map(|t| ctx.consumer(t)).collect();
    if !consumers.is_empty() {
        doc.insert("consumers".into(), Value::Array(consumers));
    }
    for (key, value) in ctx.tail() {
        doc.insert(key.into(), value);
    }
    Value::Object(doc)
}

/// A Kong vault reference to a secret: `{vault://env/<name>}`. Kong's `env` vault (bundled
/// with OSS) upper-cases the name and turns `-` into `_`, so the reference is the secret's one
/// variable name ([`kombiform_model::secret::variable`]) lower-cased with `-`: the Kong
/// container gets that variable ([`vault_env_var`]) like every other process.
pub fn vault_ref(secret: &SecretRef) -> String {
    format!(
        "{{vault://env/{}}}",
        vault_env_var(secret).to_ascii_lowercase().replace('_', "-")
    )
}

/// The environment variable of the Kong container that [`vault_ref`] reads: the workspace's
/// one rule from a secret reference to its variable.
pub fn vault_env_var(secret: &SecretRef) -> String {
    kombiform_model::secret::variable(secret)
}

/// The ACL group (OSS) or consumer group (Enterprise) of a plan: `plan-<name>`.
pub fn plan_group(plan: &str) -> String {
    format!("plan-{plan}")
}

/// The Zitadel key the OSS gateway verifies tokens with: the newest (largest numeric `kid`,
/// longer kids being larger).
pub fn signing_key(keys: &[SigningKey]) -> Option<&SigningKey> {
    keys.iter()
        .max_by(|a, b| (a.kid.len(), &a.kid).cmp(&(b.kid.len(), &b.kid)))
}

/// What every part of one environment's config needs, computed once.
struct Ctx<'a> {
    env: Env<'a>,
    edition: KongEdition,
    /// Rate-limiting plugin per plan name.
    limits: BTreeMap<&'a str, Option<Value>>,
    /// How many routes claim each path (a route gets `OPTIONS` only for paths it owns alone).
    path_owners: BTreeMap<&'a str, usize>,
    key: Option<&'a SigningKey>,
}

impl<'a> Ctx<'a> {
    fn new(env: Env<'a>) -> Ctx<'a> {
        let mut path_owners = BTreeMap::new();
        for s in enabled(env) {
            for r in &s.routes {
                for p in &r.paths {
                    *path_owners.entry(p.as_str()).or_insert(0) += 1;
                }
            }
        }
        let mut ctx = Ctx {
            env,
            edition: env.platform.kong.edition,
            limits: BTreeMap::new(),
            path_owners,
            key: signing_key(&env.platform.zitadel.signing_keys),
        };
        ctx.limits = env
            .plans()
            .iter()
            .map(|p| (p.name.as_str(), ctx.rate_limiting(p)))
            .collect();
        ctx
    }

    /// Top-level sections before `consumers`, in order, empty ones left out.
    fn head(&self) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        if let Some(m) = &self.env.platform.kong.upstream_mtls {
            out.push((
                "certificates",
                json!([{
                    "id": m.client_certificate_id,
                    "cert": m.client_certificate_pem,
                    "key": vault_ref(&m.client_key),
                }]),
            ));
            out.push((
                "ca_certificates",
                json!([{"id": m.ca_certificate_id, "cert": m.ca_certificate_pem}]),
            ));
        }
        let services: Vec<Value> = enabled(self.env).map(|s| self.service(s)).collect();
        if !services.is_empty() {
            out.push(("services", Value::Array(services)));
        }
        let claimed = enabled(self.env)
            .flat_map(|s| &s.routes)
            .flat_map(|r| &r.paths)
            .any(|p| p == INTERNAL_PREFIX);
        if !claimed {
            out.push((
                "routes",
                json!([{
                    "name": INTERNAL_DENY_ROUTE,
                    "paths": [INTERNAL_PREFIX],
                    "protocols": ["http", "https"],
                    "strip_path": false,
                    "plugins": [terminate(404, "Not Found")],
                }]),
            ));
        }
        if self.edition == KongEdition::Enterprise {
            let groups: Vec<Value> = self
                .env
                .plans()
                .iter()
                .map(|p| {
                    let mut g = Map::new();
                    g.insert("name".into(), json!(plan_group(&p.name)));
                    if let Some(Some(rl)) = self.limits.get(p.name.as_str()) {
                        g.insert("plugins".into(), json!([rl]));
                    }
                    Value::Object(g)
                })
                .collect();
            if !groups.is_empty() {
                out.push(("consumer_groups", Value::Array(groups)));
            }
        }
        out
    }

    /// Top-level sections after `consumers`.
    fn tail(&self) -> Vec<(&'static str, Value)> {
        let kong = &self.env.platform.kong;
        let mut plugins = Vec::new();
        if !kong.cors_origins.is_empty() {
            plugins.push(json!({
                "name": "cors",
                "config": {
                    "origins": kong.cors_origins,
                    "methods": ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS"],
                    "headers": ["Accept", "Authorization", "Content-Type", kong.correlation_header],
                    "exposed_headers": [
                        kong.correlation_header,
                        "RateLimit-Limit",
                        "RateLimit-Remaining",
                        "RateLimit-Reset",
                        "Retry-After",
                    ],
                    "credentials": true,
                    "max_age": 3600,
                    "preflight_continue": false,
                },
            }));
        }
        plugins.push(json!({
            "name": "correlation-id",
            "config": {
                "header_name": kong.correlation_header,
                "generator": "uuid#counter",
                "echo_downstream": true,
            },
        }));
        vec![("plugins", Value::Array(plugins))]
    }

    fn service(&self, s: &Service) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(s.name));
        m.insert("protocol".into(), json!(s.protocol.as_str()));
        m.insert("host".into(), json!(s.upstream_host()));
        m.insert("port".into(), json!(s.port));
        if s.protocol == Protocol::Https {
            let mtls = self.env.platform.kong.upstream_mtls.as_ref();
            if let Some(t) = mtls {
                m.insert("client_certificate".into(), json!(t.client_certificate_id));
            }
            m.insert("tls_verify".into(), json!(true));
            if let Some(t) = mtls {
                m.insert("tls_verify_depth".into(), json!(t.verify_depth));
                m.insert("ca_certificates".into(), json!([t.ca_certificate_id]));
            }
        }
        let routes: Vec<Value> = s.routes.iter().map(|r| self.route(r)).collect();
        if !routes.is_empty() {
            m.insert("routes".into(), Value::Array(routes));
        }
        Value::Object(m)
    }

    fn route(&self, r: &Route) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(r.name));
        m.insert("paths".into(), json!(r.paths));
        if !r.methods.is_empty() {
            let mut methods: Vec<&str> = r.methods.iter().map(String::as_str).collect();
            // Browsers send a CORS preflight (OPTIONS) before cross-origin calls; without it
            // in `methods` the route would not match and the global `cors` plugin never runs.
            let alone = r
                .paths
                .iter()
                .all(|p| self.path_owners.get(p.as_str()).copied().unwrap_or(0) <= 1);
            if r.access != Access::Internal && alone && !methods.contains(&"OPTIONS") {
                methods.push("OPTIONS");
                methods.sort_unstable();
            }
            m.insert("methods".into(), json!(methods));
        }
        m.insert("protocols".into(), json!(["http", "https"]));
        m.insert("strip_path".into(), json!(r.strip_path));
        let plugins = self.route_plugins(r);
        if !plugins.is_empty() {
            m.insert("plugins".into(), Value::Array(plugins));
        }
        Value::Object(m)
    }

    fn route_plugins(&self, r: &Route) -> Vec<Value> {
        match r.access {
            Access::Public => Vec::new(),
            Access::Internal => {
                let cidrs = &self.env.platform.kong.internal_cidrs;
                if cidrs.is_empty() {
                    vec![terminate(404, "Not Found")]
                } else {
                    vec![json!({
                        "name": "ip-restriction",
                        "config": {"allow": cidrs, "status": 404, "message": "Not Found"},
                    })]
                }
            }
            Access::Authenticated => {
                let groups: Vec<String> = self
                    .env
                    .plans()
                    .iter()
                    .filter(|p| r.requires_feature.is_none_or(|f| p.has(f)))
                    .map(|p| plan_group(&p.name))
                    .collect();
                let access = if groups.is_empty() {
                    terminate(403, "Your plan does not include this API")
                } else if self.edition == KongEdition::Enterprise {
                    json!({
                        "name": "acl",
                        "config": {"allow": groups, "include_consumer_groups": true},
                    })
                } else {
                    json!({"name": "acl", "config": {"allow": groups}})
                };
                vec![self.auth_plugin(), access]
            }
        }
    }

    fn auth_plugin(&self) -> Value {
        match self.edition {
            KongEdition::Oss => json!({
                "name": "jwt",
                "config": {
                    "key_claim_name": ORG_CLAIM,
                    "claims_to_verify": ["exp"],
                    "header_names": ["authorization"],
                    "uri_param_names": [],
                    "cookie_names": [],
                    "run_on_preflight": true,
                },
            }),
            KongEdition::Enterprise => self.openid_connect(),
        }
    }

    fn openid_connect(&self) -> Value {
        let p = self.env.platform;
        let z = &p.zitadel;
        let mut audiences = vec![z.project_id.clone()];
        audiences.extend(z.client_ids.iter().cloned());
        let https = z.issuer.starts_with("https://");
        let mut c = Map::new();
        c.insert("issuer".into(), json!(z.discovery_uri()));
        c.insert("issuers_allowed".into(), json!([z.issuer]));
        let methods = if p.kong.session_secret.is_some() {
            json!(["bearer", "session"])
        } else {
            json!(["bearer"])
        };
        c.insert("auth_methods".into(), methods);
        c.insert("bearer_token_param_type".into(), json!(["header"]));
        c.insert("audience_required".into(), json!(audiences));
        c.insert("consumer_claim".into(), json!([ORG_CLAIM]));
        c.insert("consumer_by".into(), json!(["custom_id"]));
        c.insert("consumer_optional".into(), json!(false));
        c.insert("leeway".into(), json!(p.sso.leeway_seconds));
        c.insert("ssl_verify".into(), json!(https));
        if let Some(secret) = &p.kong.session_secret {
            c.insert("session_storage".into(), json!("redis"));
            c.insert("session_secret".into(), json!(vault_ref(secret)));
            c.insert("session_cookie_secure".into(), json!(https));
            c.insert("session_cookie_http_only".into(), json!(true));
            c.insert("session_cookie_same_site".into(), json!("Strict"));
            let mut redis = self.redis();
            if let Value::Object(r) = &mut redis {
                r.insert(
                    "prefix".into(),
                    json!(format!("kombify-{}-oidc-session", p.name)),
                );
            }
            c.insert("redis".into(), redis);
        }
        json!({"name": "openid-connect", "config": c})
    }

    /// The nested `redis` record (Kong ≥ 3.6; never the deprecated flat `redis_*` fields).
    fn redis(&self) -> Value {
        let r = &self.env.platform.redis;
        let mut m = Map::new();
        m.insert("host".into(), json!(r.host));
        m.insert("port".into(), json!(r.port));
        m.insert("ssl".into(), json!(r.ssl));
        m.insert("ssl_verify".into(), json!(r.ssl));
        if r.ssl && r.host.bytes().any(|b| b.is_ascii_alphabetic()) {
            m.insert("server_name".into(), json!(r.host));
        }
        if let Some(pw) = &r.password {
            m.insert("password".into(), json!(vault_ref(pw)));
        }
        Value::Object(m)
    }

    /// The `rate-limiting` plugin of a plan, `None` when the plan sets no limit.
    fn rate_limiting(&self, plan: &Plan) -> Option<Value> {
        let periods = plan.rate_limits.periods();
        if periods.is_empty() {
            return None;
        }
        let mut c = Map::new();
        for (name, limit) in periods {
            c.insert(name.into(), json!(limit));
        }
        c.insert("limit_by".into(), json!("consumer"));
        c.insert("policy".into(), json!("redis"));
        c.insert("fault_tolerant".into(), json!(true));
        c.insert("hide_client_headers".into(), json!(false));
        c.insert("redis".into(), self.redis());
        Some(json!({"name": "rate-limiting", "config": c}))
    }

    fn consumer(&self, t: &Tenant) -> Value {
        let group = plan_group(&t.plan);
        let mut m = Map::new();
        m.insert("username".into(), json!(t.slug));
        m.insert("custom_id".into(), json!(t.zitadel_org_id));
        match self.edition {
            KongEdition::Oss => {
                m.insert("acls".into(), json!([{"group": group}]));
                if let Some(k) = self.key {
                    m.insert(
                        "jwt_secrets".into(),
                        json!([{
                            "key": t.zitadel_org_id,
                            "algorithm": "RS256",
                            "rsa_public_key": k.public_key_pem,
                            "secret": JWT_SECRET_PLACEHOLDER,
                        }]),
                    );
                }
            }
            KongEdition::Enterprise => {
                m.insert("groups".into(), json!([{"name": group}]));
            }
        }
        let plugins = match t.status {
            TenantStatus::Suspended => vec![terminate(403, SUSPENDED_MESSAGE)],
            TenantStatus::Active if self.edition == KongEdition::Oss => self
                .limits
                .get(t.plan.as_str())
                .and_then(Option::clone)
                .into_iter()
                .collect(),
            TenantStatus::Active => Vec::new(),
        };
        if !plugins.is_empty() {
            m.insert("plugins".into(), Value::Array(plugins));
        }
        Value::Object(m)
    }
}

/// Pre-written YAML of the parts of a consumer that only depend on its plan and status, so
/// that writing 10,000 consumers is mostly copying. Writes exactly what
/// `yaml::write_seq_item(out, 2, &ctx.consumer(t))` writes (a test holds us to it).
struct ConsumerText {
    /// `acls:` (OSS) or `groups:` (Enterprise) entry per plan.
    membership: BTreeMap<String, String>,
    /// Everything of the `jwt_secrets` item after its `key`.
    jwt_rest: Option<String>,
    /// `plugins:` entry per plan of active tenants (absent when there is none).
    active_plugins: BTreeMap<String, String>,
    /// `plugins:` entry of suspended tenants.
    suspended_plugins: String,
}

impl ConsumerText {
    fn new(ctx: &Ctx<'_>) -> ConsumerText {
        let mut membership = BTreeMap::new();
        let mut active_plugins = BTreeMap::new();
        for p in ctx.env.plans() {
            let group = plan_group(&p.name);
            let mut text = String::new();
            match ctx.edition {
                KongEdition::Oss => {
                    yaml::write_entry(&mut text, 4, true, "acls", &json!([{"group": group}]))
                }
                KongEdition::Enterprise => {
                    yaml::write_entry(&mut text, 4, true, "groups", &json!([{"name": group}]))
                }
            }
            membership.insert(p.name.clone(), text);
            let mut text = String::new();
            if ctx.edition == KongEdition::Oss {
                if let Some(Some(rl)) = ctx.limits.get(p.name.as_str()) {
                    yaml::write_entry(&mut text, 4, true, "plugins", &json!([rl]));
                }
            }
            active_plugins.insert(p.name.clone(), text);
        }
        let jwt_rest = match (ctx.edition, ctx.key) {
            (KongEdition::Oss, Some(k)) => {
                let mut text = String::new();
                yaml::write_entry(&mut text, 8, true, "algorithm", &json!("RS256"));
                yaml::write_entry(
                    &mut text,
                    8,
                    true,
                    "rsa_public_key",
                    &json!(k.public_key_pem),
                );
                yaml::write_entry(&mut text, 8, true, "secret", &json!(JWT_SECRET_PLACEHOLDER));
                Some(text)
            }
            _ => None,
        };
        let mut suspended_plugins = String::new();
        yaml::write_entry(
            &mut suspended_plugins,
            4,
            true,
            "plugins",
            &json!([terminate(403, SUSPENDED_MESSAGE)]),
        );
        ConsumerText {
            membership,
            jwt_rest,
            active_plugins,
            suspended_plugins,
        }
    }

    fn write(&self, ctx: &Ctx<'_>, out: &mut String, t: &Tenant) {
        let (Some(membership), Some(active)) = (
            self.membership.get(&t.plan),
            self.active_plugins.get(&t.plan),
        ) else {
            // A plan the model does not know (validation prevents it): the slow, general way.
            yaml::write_seq_item(out, 2, &ctx.consumer(t));
            return;
        };
        out.push_str("  - ");
        yaml::write_str_entry(out, 4, false, "username", &t.slug);
        yaml::write_str_entry(out, 4, true, "custom_id", &t.zitadel_org_id);
        out.push_str(membership);
        if let Some(rest) = &self.jwt_rest {
            out.push_str("    jwt_secrets:\n      - ");
            yaml::write_str_entry(out, 8, false, "key", &t.zitadel_org_id);
            out.push_str(rest);
        }
        match t.status {
            TenantStatus::Suspended => out.push_str(&self.suspended_plugins),
            TenantStatus::Active => out.push_str(active),
        }
    }
}

fn enabled<'a>(env: Env<'a>) -> impl Iterator<Item = &'a Service> + 'a {
    env.platform.services.iter().filter(|s| s.enabled)
}

fn terminate(status: u16, message: &str) -> Value {
    json!({
        "name": "request-termination",
        "config": {"status_code": status, "message": message},
    })
}

#[cfg(test)]
mod tests {

    use super::*;
    use kombiform_model::Model;

    use kombiform_test_support::kong_check::check;
    use kombiform_test_support::synthetic::{fleet, Fleet};
    use kombiform_test_support::{enterprise_model as enterprise, example_model as example};

    fn env<'m>(m: &'m Model, name: &str) -> Env<'m> {
        m.env(name).expect("environment exists")
    }

    fn consumer<'d>(doc: &'d Value, username: &str) -> &'d Value {
        doc["consumers"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["username"] == username))
            .unwrap_or(&Value::Null)
    }

    fn route<'d>(doc: &'d Value, name: &str) -> &'d Value {
        doc["services"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["routes"].as_array().into_iter().flatten())
            .find(|r| r["name"] == name)
            .unwrap_or(&Value::Null)
    }

    /// `n` tenants across every plan, every 7th suspended.
    fn synthetic(m: Model, n: usize) -> Model {
        let f = Fleet {
            tenants: n,
            suspended_every: Some(7),
            ..Fleet::default()
        };
        fleet(m, f)
    }

    #[test]
    fn render_writes_the_document_and_is_stable() {
        let many = synthetic(example(), 60);
        let many_ee = synthetic(enterprise(), 60);
        for m in [example(), enterprise(), many, many_ee] {
            for e in m.envs() {
                let text = render(e);
                assert_eq!(text, format!("{HEADER}{}", yaml::to_string(&document(e))));
                assert_eq!(text, render(e), "two renders differ");
            }
        }
    }

    #[test]
    fn every_example_passes_our_checks() {
        for m in [example(), enterprise()] {
            for e in m.envs() {
                let problems = check(&document(e), e.platform.kong.edition);
                assert!(problems.is_empty(), "{}: {problems:#?}", e.name());
            }
        }
    }

    #[test]
    fn one_file_per_environment_named_by_edition() {
        let files = crate::build(&example());
        assert!(files.contains_key("prod/kong/kong.yaml"));
        assert!(files.contains_key("local/kong/kong.yaml"));
        let files = crate::build(&enterprise());
        assert!(files.contains_key("prod/kong/kong.enterprise.yaml"));
        assert!(!files.contains_key("prod/kong/kong.yaml"));
    }

    #[test]
    fn tenants_become_consumers_with_plan_limits() {
        let m = example();
        let doc = document(env(&m, "prod"));
        let acme = consumer(&doc, "acme");
        assert_eq!(acme["custom_id"], "284715550000000001");
        assert_eq!(acme["acls"], json!([{"group": "plan-pro"}]));
        assert_eq!(acme["jwt_secrets"][0]["key"], "284715550000000001");
        assert_eq!(acme["jwt_secrets"][0]["algorithm"], "RS256");
        let rl = &acme["plugins"][0];
        assert_eq!(rl["name"], "rate-limiting");
        assert_eq!(rl["config"]["second"], 20);
        assert_eq!(rl["config"]["day"], 200000);
        assert_eq!(rl["config"]["policy"], "redis");
        assert_eq!(rl["config"]["limit_by"], "consumer");
        assert_eq!(rl["config"]["hide_client_headers"], false);
        assert_eq!(rl["config"]["redis"]["port"], 6380);
        assert_eq!(
            rl["config"]["redis"]["password"],
            "{vault://env/kv-redis-access-key}"
        );
        // The free plan sets no per-second limit.
        assert!(consumer(&doc, "initech")["plugins"][0]["config"]
            .get("second")
            .is_none());
        // `devtest` only exists locally.
        assert!(consumer(&doc, "devtest").is_null());
        let local = document(env(&m, "local"));
        assert!(!consumer(&local, "devtest").is_null());
        assert!(consumer(&local, "devtest")["plugins"][0]["config"]["redis"]
            .get("password")
            .is_none());
    }

    #[test]
    fn suspended_tenants_are_refused() {
        let m = example();
        let doc = document(env(&m, "prod"));
        let hooli = consumer(&doc, "hooli");
        assert_eq!(hooli["plugins"].as_array().map(Vec::len), Some(1));
        assert_eq!(hooli["plugins"][0]["name"], "request-termination");
        assert_eq!(hooli["plugins"][0]["config"]["status_code"], 403);
    }

    #[test]
    fn route_access() {
        let m = example();
        let doc = document(env(&m, "prod"));
        let kits = route(&doc, "stackkits-api");
        assert_eq!(kits["plugins"][0]["name"], "jwt");
        assert_eq!(kits["plugins"][0]["config"]["key_claim_name"], ORG_CLAIM);
        assert_eq!(
            kits["plugins"][0]["config"]["claims_to_verify"],
            json!(["exp"])
        );
        assert_eq!(
            kits["plugins"][1]["config"]["allow"],
            json!(["plan-enterprise", "plan-pro"])
        );
        assert_eq!(kits["methods"], json!(["GET", "OPTIONS"]));
        let api = route(&doc, "kombistack-api");
        assert_eq!(
            api["plugins"][1]["config"]["allow"],
            json!(["plan-enterprise", "plan-free", "plan-pro"])
        );
        let sso = route(&doc, "sso-exchange");
        assert_eq!(sso["plugins"][0]["name"], "ip-restriction");
        assert_eq!(
            sso["plugins"][0]["config"]["allow"],
            json!(["10.20.0.0/16"])
        );
        assert_eq!(
            sso["methods"],
            json!(["POST"]),
            "internal routes get no OPTIONS"
        );
        assert!(route(&doc, "health").get("plugins").is_none());
        let deny = &doc["routes"][0];
        assert_eq!(deny["name"], INTERNAL_DENY_ROUTE);
        assert_eq!(deny["paths"], json!([INTERNAL_PREFIX]));
        assert_eq!(deny["plugins"][0]["config"]["status_code"], 404);
    }

    #[test]
    fn upstream_mtls_only_on_https_services() {
        let m = example();
        let doc = document(env(&m, "prod"));
        let services = doc["services"].as_array().cloned().unwrap_or_default();
        assert!(!services.is_empty());
        for s in &services {
            if s["protocol"] == "https" {
                assert_eq!(
                    s["client_certificate"],
                    "6a1f0c52-3e1b-4c1e-9a55-2f0d8e7b9c11"
                );
                assert_eq!(s["tls_verify"], true);
                assert_eq!(s["tls_verify_depth"], 2);
                assert_eq!(
                    s["ca_certificates"],
                    json!(["0b7d3c9e-8f21-4d6a-a1c4-5e9f2b3d7a80"])
                );
            } else {
                for f in [
                    "client_certificate",
                    "tls_verify",
                    "tls_verify_depth",
                    "ca_certificates",
                ] {
                    assert!(s.get(f).is_none(), "{} has {f}", s["name"]);
                }
            }
        }
        assert_eq!(
            doc["certificates"][0]["key"],
            "{vault://env/kv-kong-upstream-client-key}"
        );
        let local = document(env(&m, "local"));
        assert!(local.get("certificates").is_none());
    }

    #[test]
    fn global_plugins() {
        let m = example();
        let doc = document(env(&m, "prod"));
        let cors = &doc["plugins"][0];
        assert_eq!(cors["name"], "cors");
        assert_eq!(
            cors["config"]["origins"],
            json!(["https://app.kombify.io", "https://admin.kombify.io"])
        );
        assert_eq!(cors["config"]["credentials"], true);
        let cid = &doc["plugins"][1];
        assert_eq!(cid["name"], "correlation-id");
        assert_eq!(cid["config"]["header_name"], "X-Request-ID");
        assert_eq!(cid["config"]["generator"], "uuid#counter");
        assert_eq!(cid["config"]["echo_downstream"], true);
    }

    #[test]
    fn enterprise_uses_oidc_and_consumer_groups() {
        let m = enterprise();
        let doc = document(env(&m, "prod"));
        let api = route(&doc, "kombistack-api");
        let oidc = &api["plugins"][0];
        assert_eq!(oidc["name"], "openid-connect");
        assert_eq!(
            oidc["config"]["issuer"],
            "https://auth.kombify.io/.well-known/openid-configuration"
        );
        assert_eq!(
            oidc["config"]["audience_required"],
            json!(["284713399019651074", "284713422512963586"])
        );
        assert_eq!(oidc["config"]["consumer_claim"], json!([ORG_CLAIM]));
        assert_eq!(oidc["config"]["consumer_by"], json!(["custom_id"]));
        assert_eq!(oidc["config"]["session_storage"], "redis");
        assert_eq!(
            oidc["config"]["session_secret"],
            "{vault://env/kv-kong-session-secret}"
        );
        assert_eq!(api["plugins"][1]["config"]["include_consumer_groups"], true);
        let groups = doc["consumer_groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let names: Vec<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
        assert_eq!(names, ["plan-enterprise", "plan-free", "plan-pro"]);
        let pro = &groups[2]["plugins"][0];
        assert_eq!(pro["name"], "rate-limiting");
        assert_eq!(pro["config"]["minute"], 600);
        assert_eq!(pro["config"]["limit_by"], "consumer");
        let acme = consumer(&doc, "acme");
        assert_eq!(acme["groups"], json!([{"name": "plan-pro"}]));
        assert!(acme.get("jwt_secrets").is_none() && acme.get("acls").is_none());
        assert!(!render(env(&m, "prod")).contains("jwt_secrets"));
    }

    #[test]
    fn no_internal_catch_all_when_a_route_owns_the_prefix() {
        let mut m = example();
        let p = &mut m.platforms[0];
        if let Some(s) = p.services.iter_mut().find(|s| s.name == "sso") {
            if let Some(r) = s
                .routes
                .iter_mut()
                .find(|r| r.name == "feature-flags-internal")
            {
                r.paths = vec![INTERNAL_PREFIX.to_string()];
            }
        }
        let doc = document(env(&m, &m.platforms[0].name));
        assert!(doc.get("routes").is_none());
        assert!(check(&doc, KongEdition::Oss).is_empty());
    }

    #[test]
    fn secrets_and_keys() {
        assert_eq!(
            vault_ref(&SecretRef::KeyVault("redis-access-key".into())),
            "{vault://env/kv-redis-access-key}"
        );
        assert_eq!(
            vault_ref(&SecretRef::Env("SSO_INTERNAL_TOKEN".into())),
            "{vault://env/sso-internal-token}"
        );
        assert_eq!(
            vault_env_var(&SecretRef::KeyVault("redis-access-key".into())),
            "KV_REDIS_ACCESS_KEY"
        );
        let key = |kid: &str| SigningKey {
            kid: kid.into(),
            public_key_pem: String::new(),
        };
        let keys = [key("99"), key("100"), key("98")];
        assert_eq!(signing_key(&keys).map(|k| k.kid.as_str()), Some("100"));
        assert!(signing_key(&[]).is_none());
        for m in [example(), enterprise()] {
            for e in m.envs() {
                assert!(!render(e).contains("PRIVATE KEY"));
            }
        }
    }
}
