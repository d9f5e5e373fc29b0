//! The Kong emitter: one declarative config per environment, `<env>/kong/kong.yaml` (Kong OSS
//! 3.9, DB-less) or `<env>/kong/kong.enterprise.yaml` (Kong Enterprise, in Kong's own DB-less
//! format).
//!
//! It is a pure function of the model: no IO, no clock, no randomness, byte-for-byte
//! deterministic, so the config's hash (what the Kong provider plans and delivers) is known
//! from the file alone. It never writes a secret: Redis passwords, the upstream client key,
//! the OIDC client and session secrets are Kong vault references (`{vault://env/<name>}`, see
//! [`vault_ref`]). It is not the Kong provider (delivering the file) and not a YAML library
//! ([`yaml`] only writes what we build). [`router`] models Kong 3.9's route ranking and finds
//! routes that shadow each other (`build` refuses them); [`errors`] is the platform error
//! format of Kong's own responses.
//!
//! # What the OSS file contains (`_format_version: "3.0"`, no decK meta keys)
//! - a service per enabled platform service with its public and authenticated routes
//!   (`protocols: [http, https]`); https services get `tls_verify: true`, and with
//!   `kong.upstreamMtls` also `client_certificate`, `tls_verify_depth` and `ca_certificates`;
//! - route paths match whole segments: a spec path `P` becomes the regex `~P(?:/|$)` with
//!   `regex_priority` = its length (`/v1/admin` never matches `/v1/administrator`, deeper
//!   paths still win); with `frontDoor.id`, every route also requires the header
//!   `X-Azure-FDID` to be that id, so requests that bypass Front Door match no route (404);
//! - `access: internal` routes are not on the public gateway at all: a service-less route
//!   answers 404 under `/api/internal`, and callers inside the environment reach the service
//!   directly (its ingress is internal);
//! - `access: authenticated` routes: the bundled `jwt` plugin verifying platform tokens
//!   ([`kombiform_model::PlatformTokens`]) and an `acl` plugin allowing the groups
//!   `plan-<plan>` of the plans that may call the route; if no plan qualifies, a
//!   `request-termination` (403);
//! - one consumer per tenant: `username` = slug, `custom_id` = Zitadel organization id,
//!   `acls: [{group: plan-<plan>}]`, one `jwt_secrets` row per platform token key (`key` =
//!   `<slug>.<key id>`, the value of the tokens' [`CREDENTIAL_CLAIM`]), and a consumer-scoped
//!   `rate-limiting` plugin with the plan's limits; suspended tenants keep their consumer but
//!   get a consumer-scoped `request-termination` (403) instead;
//! - the anonymous consumer [`ANONYMOUS`]: the `jwt` plugin hands it every request whose
//!   token it refuses, so that the per-IP limit runs before the refusal (`jwt` runs at
//!   priority 1450, `acl` at 950, `rate-limiting` at 910, `request-termination` at 2): it
//!   passes `acl` (group [`ANONYMOUS_GROUP`]), meets its own per-IP `rate-limiting` and then
//!   its `request-termination` (401). No anonymous request reaches a service;
//! - global plugins: `cors`, `correlation-id`, a per-IP `rate-limiting` ([`kombiform_model::Kong::ip_rate_limits`]:
//!   public routes and suspended tenants; a tenant's own limit replaces it, Kong taking the
//!   consumer-scoped instance of a plugin over the global one) and the `post-function` of
//!   [`errors`];
//! - with `kong.upstreamMtls`: the client `certificates` entry (its `key` is a vault
//!   reference) and the `ca_certificates` entry.
//!
//! # Rate limits when Redis is down (`fault_tolerant`), per route class
//! - tenant plan limits (authenticated routes): fail open (`true`): a Redis outage must not cut
//!   off paying tenants; limits are fairness, not security, and the per-IP limit of refused
//!   tokens is counted the same way;
//! - the global per-IP limit (public routes): fail open (`true`): health probes and webhooks
//!   keep working; Front Door's own protections stay in place;
//! - public routes that issue credentials (`failClosed: true`, e.g. platform token minting):
//!   a route-scoped per-IP limit that fails closed (`false`): while counters are unavailable
//!   the route refuses (500, in the platform format) rather than allowing unlimited attempts.
//!
//! # Token validation on Kong OSS
//! OSS `jwt` has no JWKS, no `iss`/`aud` check and no `kid` selection: the value of the
//! `key_claim_name` claim selects one `jwt_secrets` row (claims first, then the JOSE header),
//! its `algorithm` must equal the token's `alg`, the signature is checked with its public key,
//! then `exp` and `nbf` (`claims_to_verify`) and `maximum_expiration`. So the gateway only
//! accepts kombify-sso's platform tokens: kombify-sso validates the Zitadel token fully
//! (issuer, audience, signature via JWKS, token type), then signs a short-lived token whose
//! issuer and audience are ours and whose credential claim is `<tenant>.<key id>`. Each tenant
//! holds one credential per listed key, so a key rotation is: add a key (credentials appear),
//! switch signing to it (both accepted), remove the old key after `ttlSeconds` (its
//! credentials disappear): nobody is ever locked out.
//!
//! # Enterprise (Kong's own DB-less format)
//! `openid-connect` with the issuer's discovery document, audiences from the project id and
//! client ids, consumer mapping by the organization claim onto `custom_id`; with
//! `kong.authorizationCode` also the browser login (authorization code with PKCE, the gateway
//! as relying party, sessions in Redis), and `disable_session: [bearer]` so bearer calls never
//! create a session. A consumer group `plan-<plan>` per plan; memberships are top-level
//! `consumer_group_consumers` entities and each plan's `rate-limiting` a top-level `plugins`
//! entity scoped by `consumer_group`, as DB-less Kong loads them (decK's nested
//! `consumers[].groups` and `consumer_groups[].plugins` are decK's own format, converted by
//! `deck file format`). `openid-connect` has no schema in our validator's plugin set, and the
//! validator's decK schema has no `consumer_group_consumers`: `scripts/validate-kong.sh` checks
//! this file in decK's form (the inverse of `deck file format dbless`).

pub mod errors;
pub mod router;
pub mod yaml;

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::Files;
use kombiform_model::{
    Access, Env, KongEdition, Protocol, RateLimits, Route, SecretRef, Service, Tenant,
    TenantStatus, CREDENTIAL_CLAIM, ORG_CLAIM,
};

/// The declarative format version we write.
pub const FORMAT_VERSION: &str = "3.0";
/// Paths under this prefix are internal.
pub const INTERNAL_PREFIX: &str = "/api/internal";
/// Name of the catch-all route refusing internal paths. The `_` keeps it apart from spec
/// route names (which may only contain lowercase letters, digits and `-`).
pub const INTERNAL_DENY_ROUTE: &str = "kombiform_internal_deny";
/// The consumer of requests whose token the gateway refuses (tenant slugs have no `_`).
pub const ANONYMOUS: &str = "kombiform_anonymous";
/// The ACL group of [`ANONYMOUS`], allowed by every `acl` so that its per-IP limit runs
/// before its `request-termination`.
pub const ANONYMOUS_GROUP: &str = "kombiform-anonymous";
/// The header Front Door sends with its profile id.
pub const FRONT_DOOR_HEADER: &str = "x-azure-fdid";
/// The `secret` of every asymmetric `jwt_secrets` row: decK's schema requires the field, Kong
/// ignores it for ES256/RS256 (it verifies with `rsa_public_key`). Not a secret.
pub const JWT_SECRET_PLACEHOLDER: &str = "unused-for-asymmetric-keys";
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

/// Routes of `env`'s config that Kong 3.9 could send requests meant for another route to
/// ([`router::shadowing`]); `build` refuses a config that has any.
pub fn shadowing(env: Env<'_>) -> Vec<router::Shadow> {
    let ctx = Ctx::new(env);
    let mut doc = Map::new();
    for (key, value) in ctx.head() {
        doc.insert(key.into(), value);
    }
    router::shadowing(&Value::Object(doc))
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
    let anonymous = ctx.anonymous();
    if anonymous.is_some() || tenants > 0 {
        out.push_str("consumers:\n");
    }
    if let Some(anonymous) = anonymous {
        yaml::write_seq_item(&mut out, 2, &anonymous);
    }
    let cache = ConsumerText::new(&ctx);
    for t in env.tenants() {
        cache.write(&ctx, &mut out, t);
    }
    if ctx.edition == KongEdition::Enterprise && tenants > 0 {
        out.push_str("consumer_group_consumers:\n");
        for t in env.tenants() {
            out.push_str("  - ");
            yaml::write_str_entry(&mut out, 4, false, "consumer", &t.slug);
            yaml::write_str_entry(&mut out, 4, true, "consumer_group", &plan_group(&t.plan));
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
    let consumers: Vec<Value> = ctx
        .anonymous()
        .into_iter()
        .chain(env.tenants().map(|t| ctx.consumer(t)))
        .collect();
    if !consumers.is_empty() {
        doc.insert("consumers".into(), Value::Array(consumers));
    }
    if ctx.edition == KongEdition::Enterprise {
        let members: Vec<Value> = env
            .tenants()
            .map(|t| json!({"consumer": t.slug, "consumer_group": plan_group(&t.plan)}))
            .collect();
        if !members.is_empty() {
            doc.insert("consumer_group_consumers".into(), Value::Array(members));
        }
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

/// The credential key of a tenant for a platform token key: `<slug>.<key id>`, the value of
/// [`CREDENTIAL_CLAIM`] in the tokens kombify-sso signs with that key for that tenant.
pub fn credential_key(slug: &str, key_id: &str) -> String {
    format!("{slug}.{key_id}")
}

/// What every part of one environment's config needs, computed once.
struct Ctx<'a> {
    env: Env<'a>,
    edition: KongEdition,
    /// Rate-limiting plugin per plan name.
    limits: BTreeMap<&'a str, Option<Value>>,
    /// How many emitted routes claim each path (a route gets `OPTIONS` only for paths it owns
    /// alone).
    path_owners: BTreeMap<&'a str, usize>,
}

impl<'a> Ctx<'a> {
    fn new(env: Env<'a>) -> Ctx<'a> {
        let mut path_owners = BTreeMap::new();
        for r in enabled(env).flat_map(public_routes) {
            for p in &r.paths {
                *path_owners.entry(p.as_str()).or_insert(0) += 1;
            }
        }
        let mut ctx = Ctx {
            env,
            edition: env.platform.kong.edition,
            limits: BTreeMap::new(),
            path_owners,
        };
        ctx.limits = env
            .plans()
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    ctx.rate_limiting(&p.rate_limits, "consumer", true),
                )
            })
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
        out.push((
            "routes",
            json!([{
                "name": INTERNAL_DENY_ROUTE,
                "paths": [router::Path::segment_regex(INTERNAL_PREFIX)],
                "regex_priority": INTERNAL_PREFIX.len(),
                "protocols": ["http", "https"],
                "strip_path": false,
                "plugins": [terminate(404, "Not Found")],
            }]),
        ));
        if self.edition == KongEdition::Enterprise {
            let groups: Vec<Value> = self
                .env
                .plans()
                .iter()
                .map(|p| json!({"name": plan_group(&p.name)}))
                .collect();
            if !groups.is_empty() {
                out.push(("consumer_groups", Value::Array(groups)));
            }
        }
        out
    }

    /// Top-level sections after `consumers` (and Enterprise memberships).
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
        if let Some(rl) = self.rate_limiting(&kong.ip_rate_limits, "ip", true) {
            plugins.push(rl);
        }
        plugins.push(errors::plugin(&kong.correlation_header));
        if self.edition == KongEdition::Enterprise {
            for p in self.env.plans() {
                if let Some(Some(rl)) = self.limits.get(p.name.as_str()) {
                    let mut rl = rl.clone();
                    if let Value::Object(m) = &mut rl {
                        m.insert("consumer_group".into(), json!(plan_group(&p.name)));
                    }
                    plugins.push(rl);
                }
            }
        }
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
        let routes: Vec<Value> = public_routes(s).map(|r| self.route(r)).collect();
        if !routes.is_empty() {
            m.insert("routes".into(), Value::Array(routes));
        }
        Value::Object(m)
    }

    fn route(&self, r: &Route) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(r.name));
        let paths: Vec<String> = r
            .paths
            .iter()
            .map(|p| router::Path::segment_regex(p))
            .collect();
        m.insert("paths".into(), json!(paths));
        let longest = r.paths.iter().map(String::len).max().unwrap_or(0);
        m.insert("regex_priority".into(), json!(longest));
        if !r.methods.is_empty() {
            let mut methods: Vec<&str> = r.methods.iter().map(String::as_str).collect();
            // Browsers send a CORS preflight (OPTIONS) before cross-origin calls; without it
            // in `methods` the route would not match and the global `cors` plugin never runs.
            let alone = r
                .paths
                .iter()
                .all(|p| self.path_owners.get(p.as_str()).copied().unwrap_or(0) <= 1);
            if alone && !methods.contains(&"OPTIONS") {
                methods.push("OPTIONS");
                methods.sort_unstable();
            }
            m.insert("methods".into(), json!(methods));
        }
        if let Some(id) = self.front_door_id() {
            m.insert("headers".into(), json!({ FRONT_DOOR_HEADER: [id] }));
        }
        m.insert("protocols".into(), json!(["http", "https"]));
        m.insert("strip_path".into(), json!(r.strip_path));
        let plugins = self.route_plugins(r);
        if !plugins.is_empty() {
            m.insert("plugins".into(), Value::Array(plugins));
        }
        Value::Object(m)
    }

    /// The Front Door id routes require, on Azure environments behind Front Door.
    fn front_door_id(&self) -> Option<&'a str> {
        let p = self.env.platform;
        p.azure.as_ref()?;
        p.front_door.as_ref()?.id.as_deref()
    }

    fn route_plugins(&self, r: &Route) -> Vec<Value> {
        match r.access {
            Access::Public if r.fail_closed => self
                .rate_limiting(&self.env.platform.kong.ip_rate_limits, "ip", false)
                .into_iter()
                .collect(),
            Access::Public | Access::Internal => Vec::new(),
            Access::Authenticated => {
                let mut groups: Vec<String> = self
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
                    groups.push(ANONYMOUS_GROUP.to_string());
                    groups.sort();
                    json!({"name": "acl", "config": {"allow": groups}})
                };
                vec![self.auth_plugin(), access]
            }
        }
    }

    fn auth_plugin(&self) -> Value {
        match self.edition {
            KongEdition::Oss => {
                let ttl = self.env.platform.sso.platform_tokens.ttl_seconds;
                json!({
                    "name": "jwt",
                    "config": {
                        "key_claim_name": CREDENTIAL_CLAIM,
                        "claims_to_verify": ["exp", "nbf"],
                        "maximum_expiration": ttl,
                        "anonymous": ANONYMOUS,
                        "header_names": ["authorization"],
                        "uri_param_names": [],
                        "cookie_names": [],
                        "run_on_preflight": true,
                    },
                })
            }
            KongEdition::Enterprise => self.openid_connect(),
        }
    }

    fn openid_connect(&self) -> Value {
        let p = self.env.platform;
        let z = &p.zitadel;
        let mut audiences = vec![z.project_id.clone()];
        audiences.extend(z.client_ids.iter().cloned());
        let https = z.issuer.starts_with("https://");
        let code = p.kong.authorization_code.as_ref();
        let mut c = Map::new();
        c.insert("issuer".into(), json!(z.discovery_uri()));
        c.insert("issuers_allowed".into(), json!([z.issuer]));
        let mut methods = vec!["bearer"];
        if code.is_some() {
            methods.insert(0, "authorization_code");
        }
        if p.kong.session_secret.is_some() {
            methods.push("session");
        }
        c.insert("auth_methods".into(), json!(methods));
        c.insert("bearer_token_param_type".into(), json!(["header"]));
        c.insert("audience_required".into(), json!(audiences));
        c.insert("consumer_claim".into(), json!([ORG_CLAIM]));
        c.insert("consumer_by".into(), json!(["custom_id"]));
        c.insert("consumer_optional".into(), json!(false));
        c.insert("leeway".into(), json!(p.sso.leeway_seconds));
        c.insert("ssl_verify".into(), json!(https));
        // A bearer call is one request: it never gets a session cookie.
        c.insert("disable_session".into(), json!(["bearer"]));
        if let Some(a) = code {
            c.insert("client_id".into(), json!([a.client_id]));
            c.insert("client_secret".into(), json!([vault_ref(&a.client_secret)]));
            c.insert("client_auth".into(), json!(["client_secret_basic"]));
            c.insert("redirect_uri".into(), json!([a.redirect_uri]));
            c.insert(
                "scopes".into(),
                json!([
                    "openid",
                    "email",
                    "profile",
                    "urn:zitadel:iam:user:resourceowner",
                    format!("urn:zitadel:iam:org:project:id:{}:aud", z.project_id),
                ]),
            );
            c.insert("response_mode".into(), json!("query"));
            c.insert("require_proof_key_for_code_exchange".into(), json!(true));
            c.insert("login_methods".into(), json!(["authorization_code"]));
            c.insert("login_action".into(), json!("upstream"));
            c.insert("preserve_query_args".into(), json!(true));
            c.insert("logout_uri_suffix".into(), json!("/logout"));
            c.insert("logout_methods".into(), json!(["POST"]));
            c.insert("logout_revoke".into(), json!(true));
            c.insert("logout_redirect_uri".into(), json!([a.logout_redirect_uri]));
        }
        if let Some(secret) = &p.kong.session_secret {
            c.insert("session_storage".into(), json!("redis"));
            c.insert("session_secret".into(), json!(vault_ref(secret)));
            c.insert("session_cookie_secure".into(), json!(https));
            c.insert("session_cookie_http_only".into(), json!(true));
            // Lax: the browser must send the session cookie when Zitadel redirects it back.
            let same_site = if code.is_some() { "Lax" } else { "Strict" };
            c.insert("session_cookie_same_site".into(), json!(same_site));
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

    /// A `rate-limiting` plugin with `limits`, counted per `limit_by` in Redis; `None` when
    /// no limit is set. `fault_tolerant`: whether requests pass while Redis is unreachable.
    fn rate_limiting(
        &self,
        limits: &RateLimits,
        limit_by: &str,
        fault_tolerant: bool,
    ) -> Option<Value> {
        let periods = limits.periods();
        if periods.is_empty() {
            return None;
        }
        let mut c = Map::new();
        for (name, limit) in periods {
            c.insert(name.into(), json!(limit));
        }
        c.insert("limit_by".into(), json!(limit_by));
        c.insert("policy".into(), json!("redis"));
        c.insert("fault_tolerant".into(), json!(fault_tolerant));
        c.insert("hide_client_headers".into(), json!(false));
        c.insert("redis".into(), self.redis());
        Some(json!({"name": "rate-limiting", "config": c}))
    }

    /// The consumer of refused tokens (OSS only).
    fn anonymous(&self) -> Option<Value> {
        if self.edition != KongEdition::Oss {
            return None;
        }
        let mut plugins: Vec<Value> = self
            .rate_limiting(&self.env.platform.kong.ip_rate_limits, "ip", true)
            .into_iter()
            .collect();
        plugins.push(terminate(401, "Unauthorized"));
        Some(json!({
            "username": ANONYMOUS,
            "acls": [{"group": ANONYMOUS_GROUP}],
            "plugins": plugins,
        }))
    }

    fn consumer(&self, t: &Tenant) -> Value {
        let group = plan_group(&t.plan);
        let mut m = Map::new();
        m.insert("username".into(), json!(t.slug));
        m.insert("custom_id".into(), json!(t.zitadel_org_id));
        if self.edition == KongEdition::Oss {
            m.insert("acls".into(), json!([{"group": group}]));
            let keys = &self.env.platform.sso.platform_tokens.keys;
            if !keys.is_empty() {
                let secrets: Vec<Value> = keys
                    .iter()
                    .map(|k| {
                        json!({
                            "key": credential_key(&t.slug, &k.id),
                            "algorithm": k.algorithm.as_str(),
                            "rsa_public_key": k.public_key_pem,
                            "secret": JWT_SECRET_PLACEHOLDER,
                        })
                    })
                    .collect();
                m.insert("jwt_secrets".into(), Value::Array(secrets));
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
    /// `acls:` (OSS) entry per plan; empty for Enterprise.
    membership: BTreeMap<String, String>,
    /// Per key, everything of its `jwt_secrets` item after `key` (OSS with keys only).
    jwt_rest: Vec<(String, String)>,
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
            let mut text = String::new();
            if ctx.edition == KongEdition::Oss {
                let acls = json!([{"group": plan_group(&p.name)}]);
                yaml::write_entry(&mut text, 4, true, "acls", &acls);
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
        let jwt_rest = match ctx.edition {
            KongEdition::Oss => ctx
                .env
                .platform
                .sso
                .platform_tokens
                .keys
                .iter()
                .map(|k| {
                    let mut text = String::new();
                    yaml::write_entry(
                        &mut text,
                        8,
                        true,
                        "algorithm",
                        &json!(k.algorithm.as_str()),
                    );
                    yaml::write_entry(
                        &mut text,
                        8,
                        true,
                        "rsa_public_key",
                        &json!(k.public_key_pem),
                    );
                    yaml::write_entry(&mut text, 8, true, "secret", &json!(JWT_SECRET_PLACEHOLDER));
                    (k.id.clone(), text)
                })
                .collect(),
            KongEdition::Enterprise => Vec::new(),
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
        if !self.jwt_rest.is_empty() {
            out.push_str("    jwt_secrets:\n");
            for (id, rest) in &self.jwt_rest {
                out.push_str("      - ");
                yaml::write_str_entry(out, 8, false, "key", &credential_key(&t.slug, id));
                out.push_str(rest);
            }
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

/// The routes of a service the public gateway carries (internal ones are not on it).
fn public_routes(s: &Service) -> impl Iterator<Item = &Route> {
    s.routes.iter().filter(|r| r.access != Access::Internal)
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
        assert_eq!(acme["jwt_secrets"][0]["key"], "acme.k2026a");
        assert_eq!(acme["jwt_secrets"][0]["algorithm"], "ES256");
        let rl = &acme["plugins"][0];
        assert_eq!(rl["name"], "rate-limiting");
        assert_eq!(rl["config"]["second"], 20);
        assert_eq!(rl["config"]["day"], 200000);
        assert_eq!(rl["config"]["policy"], "redis");
        assert_eq!(rl["config"]["limit_by"], "consumer");
        assert_eq!(rl["config"]["fault_tolerant"], true);
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
    fn every_tenant_has_one_credential_per_token_key() {
        let mut m = example();
        let mut second = m.platforms[1].sso.platform_tokens.keys[0].clone();
        second.id = "k2026b".into();
        second.signs = false;
        m.platforms[1].sso.platform_tokens.keys.push(second);
        let doc = document(env(&m, "prod"));
        let keys: Vec<&str> = consumer(&doc, "acme")["jwt_secrets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["key"].as_str())
            .collect();
        assert_eq!(keys, ["acme.k2026a", "acme.k2026b"]);
        let text = render(env(&m, "prod"));
        assert_eq!(text, format!("{HEADER}{}", yaml::to_string(&doc)));
    }

    #[test]
    fn refused_tokens_meet_the_per_ip_limit_before_the_401() {
        let m = example();
        let doc = document(env(&m, "prod"));
        let anon = consumer(&doc, ANONYMOUS);
        assert_eq!(anon["acls"], json!([{"group": ANONYMOUS_GROUP}]));
        assert_eq!(anon["plugins"][0]["name"], "rate-limiting");
        assert_eq!(anon["plugins"][0]["config"]["limit_by"], "ip");
        assert_eq!(anon["plugins"][1]["name"], "request-termination");
        assert_eq!(anon["plugins"][1]["config"]["status_code"], 401);
        assert!(anon.get("jwt_secrets").is_none());
        let jwt = &route(&doc, "kombistack-api")["plugins"][0]["config"];
        assert_eq!(jwt["anonymous"], ANONYMOUS);
        assert_eq!(jwt["key_claim_name"], CREDENTIAL_CLAIM);
        assert_eq!(jwt["maximum_expiration"], 300);
        assert_eq!(jwt["claims_to_verify"], json!(["exp", "nbf"]));
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
        assert_eq!(
            kits["plugins"][1]["config"]["allow"],
            json!([ANONYMOUS_GROUP, "plan-enterprise", "plan-pro"])
        );
        assert_eq!(kits["methods"], json!(["GET", "OPTIONS"]));
        assert_eq!(kits["paths"], json!(["~/v1/stackkits(?:/|$)"]));
        assert_eq!(kits["regex_priority"], 13);
        assert_eq!(
            kits["headers"],
            json!({"x-azure-fdid": ["7d2c4f18-93a1-4c57-b0e2-5f86a1c3d942"]})
        );
        let api = route(&doc, "kombistack-api");
        assert_eq!(
            api["plugins"][1]["config"]["allow"],
            json!([ANONYMOUS_GROUP, "plan-enterprise", "plan-free", "plan-pro"])
        );
        // Internal routes are not on the public gateway.
        assert!(route(&doc, "sso-exchange").is_null());
        assert!(route(&doc, "feature-flags-internal").is_null());
        assert!(route(&doc, "health").get("plugins").is_none());
        let token = route(&doc, "sso-token");
        assert_eq!(token["plugins"][0]["name"], "rate-limiting");
        assert_eq!(token["plugins"][0]["config"]["fault_tolerant"], false);
        assert_eq!(token["plugins"][0]["config"]["limit_by"], "ip");
        let deny = &doc["routes"][0];
        assert_eq!(deny["name"], INTERNAL_DENY_ROUTE);
        assert_eq!(deny["paths"], json!(["~/api/internal(?:/|$)"]));
        assert_eq!(deny["plugins"][0]["config"]["status_code"], 404);
        assert!(deny.get("headers").is_none());
        // No Front Door locally: no header.
        let local = document(env(&m, "local"));
        assert!(route(&local, "stackkits-api").get("headers").is_none());
    }

    #[test]
    fn the_example_routes_do_not_shadow_each_other() {
        for m in [example(), enterprise()] {
            for e in m.envs() {
                assert!(shadowing(e).is_empty(), "{}: {:?}", e.name(), shadowing(e));
            }
        }
    }

    #[test]
    fn a_method_route_above_a_deeper_path_is_refused() {
        let mut m = example();
        let p = &mut m.platforms[1];
        if let Some(s) = p.services.iter_mut().find(|s| s.name == "kombistack") {
            if let Some(r) = s.routes.iter_mut().find(|r| r.name == "kombistack-ui") {
                r.paths = vec!["/v1".into()];
            }
        }
        let e = env(&m, "prod");
        let s = shadowing(e);
        let losers: Vec<&str> = s.iter().map(|x| x.loser.as_str()).collect();
        assert_eq!(
            losers,
            ["admin-api", "kombisim-api", "kombistack-api"],
            "{s:?}"
        );
        assert!(s.iter().all(|x| x.winner == "kombistack-ui" && !x.tie));
        assert_eq!(s[2].example, "GET /v1/stacks");
        assert!(crate::compile(&m).is_err());
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
        let names: Vec<&str> = doc["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(
            names,
            ["cors", "correlation-id", "rate-limiting", "post-function"]
        );
        let cors = &doc["plugins"][0];
        assert_eq!(
            cors["config"]["origins"],
            json!(["https://app.kombify.io", "https://admin.kombify.io"])
        );
        assert_eq!(cors["config"]["credentials"], true);
        let cid = &doc["plugins"][1];
        assert_eq!(cid["config"]["header_name"], "X-Request-ID");
        assert_eq!(cid["config"]["echo_downstream"], true);
        let ip = &doc["plugins"][2]["config"];
        assert_eq!(ip["limit_by"], "ip");
        assert_eq!(ip["fault_tolerant"], true);
        assert_eq!(ip["minute"], 600);
        let errors = &doc["plugins"][3]["config"];
        assert!(errors["header_filter"][0]
            .as_str()
            .unwrap_or("")
            .contains("get_source"));
        assert!(errors["body_filter"][0]
            .as_str()
            .unwrap_or("")
            .contains("requestId"));
    }

    #[test]
    fn enterprise_uses_oidc_and_consumer_groups_in_dbless_form() {
        let m = enterprise();
        let doc = document(env(&m, "prod"));
        let api = route(&doc, "kombistack-api");
        let oidc = &api["plugins"][0];
        assert_eq!(oidc["name"], "openid-connect");
        let c = &oidc["config"];
        assert_eq!(
            c["issuer"],
            "https://auth.kombify.io/.well-known/openid-configuration"
        );
        assert_eq!(
            c["audience_required"],
            json!(["284713399019651074", "284713422512963586"])
        );
        assert_eq!(c["consumer_claim"], json!([ORG_CLAIM]));
        assert_eq!(c["consumer_by"], json!(["custom_id"]));
        assert_eq!(
            c["auth_methods"],
            json!(["authorization_code", "bearer", "session"])
        );
        assert_eq!(c["disable_session"], json!(["bearer"]));
        assert_eq!(c["require_proof_key_for_code_exchange"], true);
        assert_eq!(
            c["redirect_uri"],
            json!(["https://api.kombify.io/auth/callback"])
        );
        assert_eq!(
            c["client_secret"],
            json!(["{vault://env/kv-kong-oidc-client-secret}"])
        );
        assert_eq!(c["session_storage"], "redis");
        assert_eq!(c["session_cookie_same_site"], "Lax");
        assert_eq!(c["session_secret"], "{vault://env/kv-kong-session-secret}");
        assert_eq!(api["plugins"][1]["config"]["include_consumer_groups"], true);
        let names: Vec<&str> = doc["consumer_groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["name"].as_str())
            .collect();
        assert_eq!(names, ["plan-enterprise", "plan-free", "plan-pro"]);
        assert!(doc["consumer_groups"][0].get("plugins").is_none());
        let pro = doc["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["consumer_group"] == "plan-pro")
            .cloned()
            .unwrap_or_default();
        assert_eq!(pro["name"], "rate-limiting");
        assert_eq!(pro["config"]["minute"], 600);
        assert!(doc["consumer_group_consumers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|g| g == &json!({"consumer": "acme", "consumer_group": "plan-pro"})));
        let acme = consumer(&doc, "acme");
        assert!(acme.get("groups").is_none());
        assert!(acme.get("jwt_secrets").is_none() && acme.get("acls").is_none());
        assert!(consumer(&doc, ANONYMOUS).is_null());
        let text = render(env(&m, "prod"));
        assert!(!text.contains("jwt_secrets"));
        assert!(!text.contains("    groups:"));
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
        assert_eq!(credential_key("acme", "k1"), "acme.k1");
        for m in [example(), enterprise()] {
            for e in m.envs() {
                assert!(!render(e).contains("PRIVATE KEY"));
            }
        }
    }
}
