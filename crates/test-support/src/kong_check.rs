//! Our own typed checks of a generated Kong config (the test oracle's layers b and c of
//! `shared/ref/kong.md` §4), on top of the schema oracle ([`crate::kong_oracle`]).
//!
//! The document is read into typed structs that mirror the Kong 3.9 entity and plugin
//! schemas we emit (unknown fields are errors), then invariants are checked: only plugins of
//! the edition's allow-list, rate-limiting periods non-decreasing and policy `local`/`redis`,
//! no TLS fields on http services, every reference resolving (certificates, CA certificates,
//! consumer groups), no consumer groups in OSS, unique route names and paths, unique
//! consumers and JWT keys, internal paths guarded, authenticated routes authenticating, the
//! anonymous consumer of `jwt` never reaching a service (its own `request-termination`),
//! Enterprise in Kong's DB-less form (top-level `consumer_group_consumers` and
//! `consumer_group`-scoped plugins, never decK's nested `groups`), bearer calls without
//! sessions, and no secret written as a value. It is not a full Kong schema: it knows what kombiform
//! emits, and rejects everything else.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use kombiform_model::KongEdition;

/// Plugins bundled with Kong OSS 3.9 (`kong/constants.lua`).
pub const OSS_PLUGINS: &[&str] = &[
    "jwt",
    "acl",
    "correlation-id",
    "cors",
    "oauth2",
    "tcp-log",
    "udp-log",
    "file-log",
    "http-log",
    "key-auth",
    "hmac-auth",
    "basic-auth",
    "ip-restriction",
    "request-transformer",
    "response-transformer",
    "request-size-limiting",
    "rate-limiting",
    "response-ratelimiting",
    "syslog",
    "loggly",
    "datadog",
    "ldap-auth",
    "statsd",
    "bot-detection",
    "aws-lambda",
    "request-termination",
    "prometheus",
    "proxy-cache",
    "session",
    "acme",
    "grpc-gateway",
    "grpc-web",
    "pre-function",
    "post-function",
    "azure-functions",
    "zipkin",
    "opentelemetry",
    "ai-proxy",
    "ai-prompt-decorator",
    "ai-prompt-template",
    "ai-prompt-guard",
    "ai-request-transformer",
    "ai-response-transformer",
    "standard-webhooks",
    "redirect",
];

/// Enterprise-only plugins we may emit.
pub const ENTERPRISE_PLUGINS: &[&str] = &["openid-connect"];

/// Checks a Kong declarative config; returns every problem found (empty: accepted).
pub fn check(doc: &Value, edition: KongEdition) -> Vec<String> {
    let mut c = Checker {
        edition,
        errors: Vec::new(),
    };
    c.secrets("", doc);
    let parsed = match Doc::deserialize(doc) {
        Ok(d) => d,
        Err(e) => {
            c.errors
                .push(format!("/: not a config kombiform emits: {e}"));
            return c.errors;
        }
    };
    c.doc(&parsed);
    c.errors
}

// ---------------------------------------------------------------------------------------
// Entities
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(rename = "_format_version")]
    format_version: String,
    #[serde(default)]
    certificates: Vec<Certificate>,
    #[serde(default)]
    ca_certificates: Vec<CaCertificate>,
    #[serde(default)]
    services: Vec<ServiceE>,
    #[serde(default)]
    routes: Vec<RouteE>,
    #[serde(default)]
    consumer_groups: Option<Vec<ConsumerGroup>>,
    #[serde(default)]
    consumers: Vec<Consumer>,
    #[serde(default)]
    consumer_group_consumers: Option<Vec<GroupMember>>,
    #[serde(default)]
    plugins: Vec<Plugin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupMember {
    consumer: String,
    consumer_group: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Certificate {
    id: String,
    cert: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaCertificate {
    id: String,
    cert: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceE {
    name: String,
    protocol: String,
    host: String,
    port: u16,
    #[serde(default)]
    client_certificate: Option<String>,
    #[serde(default)]
    tls_verify: Option<bool>,
    #[serde(default)]
    tls_verify_depth: Option<u8>,
    #[serde(default)]
    ca_certificates: Option<Vec<String>>,
    #[serde(default)]
    routes: Vec<RouteE>,
    #[serde(default)]
    plugins: Vec<Plugin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteE {
    name: String,
    paths: Vec<String>,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    headers: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    regex_priority: Option<u32>,
    protocols: Vec<String>,
    #[allow(dead_code)] // typed: must be a boolean
    strip_path: bool,
    #[serde(default)]
    plugins: Vec<Plugin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumerGroup {
    name: String,
    #[serde(default)]
    plugins: Vec<Plugin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Consumer {
    username: String,
    #[serde(default)]
    custom_id: Option<String>,
    #[serde(default)]
    acls: Vec<AclGroup>,
    #[serde(default)]
    jwt_secrets: Vec<JwtSecret>,
    #[serde(default)]
    groups: Option<Vec<GroupRef>>,
    #[serde(default)]
    plugins: Vec<Plugin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclGroup {
    group: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupRef {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtSecret {
    key: String,
    algorithm: String,
    #[serde(default)]
    rsa_public_key: Option<String>,
    secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Plugin {
    name: String,
    #[serde(default)]
    config: Value,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    consumer_group: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Plugin configs (the fields we emit; defaults are Kong's)
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct JwtConfig {
    key_claim_name: String,
    claims_to_verify: Vec<String>,
    #[serde(default)]
    header_names: Vec<String>,
    #[serde(default)]
    uri_param_names: Vec<String>,
    #[serde(default)]
    cookie_names: Vec<String>,
    #[serde(default)]
    run_on_preflight: Option<bool>,
    #[serde(default)]
    maximum_expiration: Option<u32>,
    #[serde(default)]
    anonymous: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionConfig {
    #[serde(default)]
    header_filter: Vec<String>,
    #[serde(default)]
    body_filter: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitingConfig {
    #[serde(default)]
    second: Option<f64>,
    #[serde(default)]
    minute: Option<f64>,
    #[serde(default)]
    hour: Option<f64>,
    #[serde(default)]
    day: Option<f64>,
    #[serde(default)]
    month: Option<f64>,
    #[serde(default)]
    year: Option<f64>,
    limit_by: String,
    policy: String,
    #[serde(default)]
    fault_tolerant: Option<bool>,
    #[serde(default)]
    hide_client_headers: Option<bool>,
    #[serde(default)]
    redis: Option<RedisConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RedisConfig {
    host: String,
    port: u16,
    ssl: bool,
    ssl_verify: bool,
    #[serde(default)]
    server_name: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclConfig {
    #[serde(default)]
    allow: Option<Vec<String>>,
    #[serde(default)]
    deny: Option<Vec<String>>,
    #[serde(default)]
    include_consumer_groups: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IpRestrictionConfig {
    allow: Vec<String>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestTerminationConfig {
    status_code: u16,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct CorsConfig {
    origins: Vec<String>,
    methods: Vec<String>,
    headers: Vec<String>,
    exposed_headers: Vec<String>,
    credentials: bool,
    max_age: u32,
    preflight_continue: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct CorrelationIdConfig {
    header_name: String,
    generator: String,
    echo_downstream: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct OpenidConnectConfig {
    issuer: String,
    issuers_allowed: Vec<String>,
    auth_methods: Vec<String>,
    bearer_token_param_type: Vec<String>,
    audience_required: Vec<String>,
    consumer_claim: Vec<String>,
    consumer_by: Vec<String>,
    consumer_optional: bool,
    leeway: u32,
    ssl_verify: bool,
    #[serde(default)]
    session_storage: Option<String>,
    #[serde(default)]
    session_secret: Option<String>,
    #[serde(default)]
    session_cookie_secure: Option<bool>,
    #[serde(default)]
    session_cookie_http_only: Option<bool>,
    #[serde(default)]
    session_cookie_same_site: Option<String>,
    #[serde(default)]
    redis: Option<RedisConfig>,
    #[serde(default)]
    disable_session: Vec<String>,
    #[serde(default)]
    client_id: Vec<String>,
    #[serde(default)]
    client_secret: Vec<String>,
    #[serde(default)]
    client_auth: Vec<String>,
    #[serde(default)]
    redirect_uri: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    response_mode: Option<String>,
    #[serde(default)]
    require_proof_key_for_code_exchange: Option<bool>,
    #[serde(default)]
    login_methods: Vec<String>,
    #[serde(default)]
    login_action: Option<String>,
    #[serde(default)]
    preserve_query_args: Option<bool>,
    #[serde(default)]
    logout_uri_suffix: Option<String>,
    #[serde(default)]
    logout_methods: Vec<String>,
    #[serde(default)]
    logout_revoke: Option<bool>,
    #[serde(default)]
    logout_redirect_uri: Vec<String>,
}

/// Where a plugin sits, which decides what it may be.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    Global,
    Service,
    Route,
    Consumer,
    ConsumerGroup,
}

struct Checker {
    edition: KongEdition,
    errors: Vec<String>,
}

const HTTP_METHODS: &[&str] = &[
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

impl Checker {
    fn err(&mut self, at: &str, msg: impl std::fmt::Display) {
        self.errors.push(format!("{at}: {msg}"));
    }

    fn doc(&mut self, d: &Doc) {
        if d.format_version != "3.0" {
            self.err("/_format_version", "must be \"3.0\"");
        }
        let oss = self.edition == KongEdition::Oss;
        let cert_ids: BTreeSet<&str> = d.certificates.iter().map(|c| c.id.as_str()).collect();
        let ca_ids: BTreeSet<&str> = d.ca_certificates.iter().map(|c| c.id.as_str()).collect();
        for (i, c) in d.certificates.iter().enumerate() {
            let at = format!("/certificates/{i}");
            self.uuid(&format!("{at}/id"), &c.id);
            if !c.cert.starts_with("-----BEGIN CERTIFICATE-----") {
                self.err(&format!("{at}/cert"), "not a PEM certificate");
            }
            if !is_vault_ref(&c.key) {
                self.err(
                    &format!("{at}/key"),
                    "must be a vault reference, never the key",
                );
            }
        }
        for (i, c) in d.ca_certificates.iter().enumerate() {
            let at = format!("/ca_certificates/{i}");
            self.uuid(&format!("{at}/id"), &c.id);
            if !c.cert.starts_with("-----BEGIN CERTIFICATE-----") {
                self.err(&format!("{at}/cert"), "not a PEM certificate");
            }
        }

        // Groups consumers can be in: ACL groups (OSS) or consumer groups (Enterprise).
        let mut group_names = BTreeSet::new();
        match (&d.consumer_groups, oss) {
            (Some(_), true) => self.err("/consumer_groups", "consumer groups are Enterprise-only"),
            (Some(groups), false) => {
                for (i, g) in groups.iter().enumerate() {
                    if !group_names.insert(g.name.as_str()) {
                        self.err(
                            &format!("/consumer_groups/{i}"),
                            format!("group `{}` is defined twice", g.name),
                        );
                    }
                    if !g.plugins.is_empty() {
                        self.err(
                            &format!("/consumer_groups/{i}/plugins"),
                            "decK's nested form: DB-less Kong takes group plugins as top-level `plugins` with `consumer_group`",
                        );
                    }
                }
            }
            (None, _) => {}
        }

        let mut names = BTreeMap::new();
        let mut claims: BTreeMap<(&str, &str), &str> = BTreeMap::new();
        let mut service_names = BTreeSet::new();
        for (i, s) in d.services.iter().enumerate() {
            let at = format!("/services/{i}");
            if !service_names.insert(s.name.as_str()) {
                self.err(&at, format!("service `{}` is defined twice", s.name));
            }
            self.service(&at, s, &cert_ids, &ca_ids);
            for (j, r) in s.routes.iter().enumerate() {
                self.route(
                    &format!("{at}/routes/{j}"),
                    r,
                    &mut names,
                    &mut claims,
                    true,
                );
            }
            for (j, p) in s.plugins.iter().enumerate() {
                self.plugin(&format!("{at}/plugins/{j}"), p, Scope::Service);
            }
        }
        for (j, r) in d.routes.iter().enumerate() {
            self.route(&format!("/routes/{j}"), r, &mut names, &mut claims, false);
        }

        let mut usernames = BTreeSet::new();
        let mut custom_ids = BTreeSet::new();
        let anonymous_users: BTreeSet<&str> = self.anonymous_consumers(d);
        let mut jwt_keys = BTreeSet::new();
        for (i, c) in d.consumers.iter().enumerate() {
            let at = format!("/consumers/{i}");
            if !usernames.insert(c.username.as_str()) {
                self.err(&at, format!("consumer `{}` is defined twice", c.username));
            }
            match &c.custom_id {
                Some(id) if !custom_ids.insert(id.as_str()) => {
                    self.err(&at, format!("custom_id `{id}` is used twice"));
                }
                Some(_) => {}
                None if anonymous_users.contains(c.username.as_str()) => {
                    self.anonymous_consumer(&at, c);
                }
                None => self.err(
                    &at,
                    "a tenant consumer needs its custom_id (the organization id)",
                ),
            }
            if c.groups
                .as_ref()
                .is_some_and(|g| g.iter().all(|g| !g.name.is_empty()))
            {
                self.err(
                    &format!("{at}/groups"),
                    if oss {
                        "consumer groups are Enterprise-only"
                    } else {
                        "decK's nested form: DB-less Kong takes memberships as top-level `consumer_group_consumers`"
                    },
                );
            }
            for (j, s) in c.jwt_secrets.iter().enumerate() {
                let sat = format!("{at}/jwt_secrets/{j}");
                if !jwt_keys.insert(s.key.as_str()) {
                    self.err(
                        &sat,
                        format!("jwt key `{}` is used twice (keys are unique)", s.key),
                    );
                }
                self.jwt_secret(&sat, s);
            }
            for (j, a) in c.acls.iter().enumerate() {
                if a.group.is_empty() {
                    self.err(&format!("{at}/acls/{j}/group"), "empty group");
                }
            }
            for (j, p) in c.plugins.iter().enumerate() {
                self.plugin(&format!("{at}/plugins/{j}"), p, Scope::Consumer);
            }
        }
        match (&d.consumer_group_consumers, oss) {
            (Some(_), true) => self.err(
                "/consumer_group_consumers",
                "consumer groups are Enterprise-only",
            ),
            (Some(members), false) => {
                let mut seen = BTreeSet::new();
                for (i, m) in members.iter().enumerate() {
                    let at = format!("/consumer_group_consumers/{i}");
                    if !usernames.contains(m.consumer.as_str()) {
                        self.err(&at, format!("no consumer `{}`", m.consumer));
                    }
                    if !group_names.contains(m.consumer_group.as_str()) {
                        self.err(&at, format!("no consumer group `{}`", m.consumer_group));
                    }
                    if !seen.insert(m.consumer.as_str()) {
                        self.err(
                            &at,
                            format!("consumer `{}` is in two plan groups", m.consumer),
                        );
                    }
                }
            }
            (None, _) => {}
        }
        for (j, p) in d.plugins.iter().enumerate() {
            let at = format!("/plugins/{j}");
            if let Some(g) = &p.consumer_group {
                if oss {
                    self.err(
                        &format!("{at}/consumer_group"),
                        "consumer groups are Enterprise-only",
                    );
                } else if !group_names.contains(g.as_str()) {
                    self.err(
                        &format!("{at}/consumer_group"),
                        format!("no consumer group `{g}`"),
                    );
                }
                self.plugin(&at, p, Scope::ConsumerGroup);
            } else {
                self.plugin(&at, p, Scope::Global);
            }
        }
        for (name, at) in self.anonymous_refs(d) {
            if !usernames.contains(name.as_str()) {
                self.err(&at, format!("anonymous consumer `{name}` does not exist"));
            }
        }
    }

    /// Consumers named by a `jwt` plugin's `anonymous`.
    fn anonymous_consumers<'d>(&self, d: &'d Doc) -> BTreeSet<&'d str> {
        all_plugins(d)
            .filter(|p| p.name == "jwt")
            .filter_map(|p| p.config.get("anonymous").and_then(Value::as_str))
            .collect()
    }

    fn anonymous_refs(&self, d: &Doc) -> Vec<(String, String)> {
        all_plugins(d)
            .filter(|p| p.name == "jwt")
            .filter_map(|p| p.config.get("anonymous").and_then(Value::as_str))
            .map(|n| (n.to_string(), "/…/plugins/jwt/config/anonymous".to_string()))
            .collect()
    }

    /// The consumer of refused tokens: no credentials, and its requests always end in a 401
    /// from its own `request-termination` (after its own per-IP `rate-limiting`).
    fn anonymous_consumer(&mut self, at: &str, c: &Consumer) {
        if !c.jwt_secrets.is_empty() {
            self.err(
                &format!("{at}/jwt_secrets"),
                "the anonymous consumer must hold no credential",
            );
        }
        let terminates = c.plugins.iter().any(|p| {
            p.name == "request-termination"
                && p.config.get("status_code").and_then(Value::as_u64) == Some(401)
        });
        if !terminates {
            self.err(at, "the anonymous consumer must end every request with request-termination 401: otherwise refused tokens reach the services");
        }
        if !c.plugins.iter().any(|p| p.name == "rate-limiting") {
            self.err(at, "the anonymous consumer needs its per-IP rate-limiting");
        }
    }

    fn service(&mut self, at: &str, s: &ServiceE, certs: &BTreeSet<&str>, cas: &BTreeSet<&str>) {
        if s.name.is_empty() || s.host.is_empty() || s.port == 0 {
            self.err(at, "service needs a name, a host and a port");
        }
        match s.protocol.as_str() {
            "https" => {
                if let Some(c) = &s.client_certificate {
                    if !certs.contains(c.as_str()) {
                        self.err(
                            &format!("{at}/client_certificate"),
                            format!("no certificate with id {c}"),
                        );
                    }
                }
                if s.tls_verify != Some(true) {
                    self.err(
                        &format!("{at}/tls_verify"),
                        "https services must verify the upstream",
                    );
                }
                if s.tls_verify_depth.is_some_and(|d| d > 64) {
                    self.err(&format!("{at}/tls_verify_depth"), "must be 0..=64");
                }
                for (j, ca) in s.ca_certificates.iter().flatten().enumerate() {
                    if !cas.contains(ca.as_str()) {
                        self.err(
                            &format!("{at}/ca_certificates/{j}"),
                            format!("no ca_certificate with id {ca}"),
                        );
                    }
                }
            }
            "http" => {
                if s.client_certificate.is_some()
                    || s.tls_verify.is_some()
                    || s.tls_verify_depth.is_some()
                    || s.ca_certificates.is_some()
                {
                    self.err(at, "http services must not have client_certificate, tls_verify, tls_verify_depth or ca_certificates");
                }
            }
            other => self.err(
                &format!("{at}/protocol"),
                format!("`{other}` is not http or https"),
            ),
        }
    }

    fn route<'d>(
        &mut self,
        at: &str,
        r: &'d RouteE,
        names: &mut BTreeMap<&'d str, ()>,
        claims: &mut BTreeMap<(&'d str, &'d str), &'d str>,
        has_service: bool,
    ) {
        if names.insert(r.name.as_str(), ()).is_some() {
            self.err(at, format!("route name `{}` is used twice", r.name));
        }
        if !r
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
            || r.name.is_empty()
        {
            self.err(
                &format!("{at}/name"),
                "Kong names allow letters, digits and `-_.~`",
            );
        }
        if r.paths.is_empty() {
            self.err(&format!("{at}/paths"), "a route needs paths");
        }
        let regex = r.paths.iter().any(|p| p.starts_with('~'));
        if regex != r.regex_priority.is_some() {
            self.err(
                &format!("{at}/regex_priority"),
                "regex paths need a regex_priority (plain prefixes ignore it)",
            );
        }
        for (h, values) in r.headers.iter().flatten() {
            if h.is_empty() || values.is_empty() || h.eq_ignore_ascii_case("host") {
                self.err(
                    &format!("{at}/headers"),
                    format!("header `{h}`: a name other than host and at least one value"),
                );
            }
        }
        if r.protocols.iter().any(|p| p != "http" && p != "https") || r.protocols.is_empty() {
            self.err(&format!("{at}/protocols"), "only http and https");
        }
        let methods: Vec<&str> = match &r.methods {
            Some(m) if m.is_empty() => {
                self.err(
                    &format!("{at}/methods"),
                    "empty methods: leave the field out",
                );
                vec!["*"]
            }
            Some(m) => {
                for x in m {
                    if !HTTP_METHODS.contains(&x.as_str()) {
                        self.err(
                            &format!("{at}/methods"),
                            format!("`{x}` is not an HTTP method"),
                        );
                    }
                }
                m.iter().map(String::as_str).collect()
            }
            None => vec!["*"],
        };
        for p in &r.paths {
            if !literal_path(p).starts_with('/') {
                self.err(
                    &format!("{at}/paths"),
                    format!("`{p}` does not start with /"),
                );
            }
            for m in &methods {
                let conflict = if *m == "*" {
                    claims.keys().find(|(cp, _)| *cp == p.as_str()).copied()
                } else {
                    [(p.as_str(), *m), (p.as_str(), "*")]
                        .into_iter()
                        .find(|k| claims.contains_key(k))
                };
                if let Some(k) = conflict {
                    let other = claims.get(&k).copied().unwrap_or_default();
                    self.err(
                        at,
                        format!("path `{p}` ({m}) is also claimed by route `{other}`"),
                    );
                } else {
                    claims.insert((p.as_str(), m), r.name.as_str());
                }
            }
        }
        let names_of: BTreeSet<&str> = r.plugins.iter().map(|p| p.name.as_str()).collect();
        let internal = r
            .paths
            .iter()
            .map(|p| literal_path(p))
            .any(|p| p == "/api/internal" || p.starts_with("/api/internal/"));
        if internal
            && !names_of.contains("ip-restriction")
            && !names_of.contains("request-termination")
        {
            self.err(at, "internal path without ip-restriction or request-termination: reachable from outside");
        }
        if internal
            && r.methods
                .as_ref()
                .is_some_and(|m| m.iter().any(|x| x == "OPTIONS"))
        {
            self.err(
                &format!("{at}/methods"),
                "internal routes do not answer CORS preflights",
            );
        }
        let auth = names_of.contains("jwt") || names_of.contains("openid-connect");
        if names_of.contains("acl") && !auth {
            self.err(
                at,
                "acl without an authentication plugin: no consumer to check",
            );
        }
        if !has_service && !names_of.contains("request-termination") {
            self.err(at, "a route without a service must terminate requests");
        }
        let mut seen = BTreeSet::new();
        for (j, p) in r.plugins.iter().enumerate() {
            if !seen.insert(p.name.as_str()) {
                self.err(
                    &format!("{at}/plugins/{j}"),
                    format!("plugin `{}` twice on one route", p.name),
                );
            }
            self.plugin(&format!("{at}/plugins/{j}"), p, Scope::Route);
        }
    }

    fn jwt_secret(&mut self, at: &str, s: &JwtSecret) {
        const ALGS: &[&str] = &[
            "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
            "PS256", "PS384", "PS512", "EdDSA",
        ];
        if !ALGS.contains(&s.algorithm.as_str()) {
            self.err(
                &format!("{at}/algorithm"),
                format!("`{}` is not a jwt algorithm", s.algorithm),
            );
        }
        if s.algorithm.starts_with("HS") {
            self.err(
                &format!("{at}/algorithm"),
                "shared-secret algorithms would put a secret in the file",
            );
        } else if !s
            .rsa_public_key
            .as_deref()
            .is_some_and(|k| k.starts_with("-----BEGIN PUBLIC KEY-----"))
        {
            self.err(
                &format!("{at}/rsa_public_key"),
                "asymmetric algorithms need a PEM public key",
            );
        }
        if s.key.is_empty() || s.secret.is_empty() {
            self.err(at, "key and secret must not be empty");
        }
    }

    fn plugin(&mut self, at: &str, p: &Plugin, scope: Scope) {
        let oss = self.edition == KongEdition::Oss;
        let known = OSS_PLUGINS.contains(&p.name.as_str())
            || !oss && ENTERPRISE_PLUGINS.contains(&p.name.as_str());
        if !known {
            let which = if oss {
                "Kong OSS 3.9"
            } else {
                "our Enterprise allow-list"
            };
            self.err(
                &format!("{at}/name"),
                format!("plugin `{}` is not in {which}", p.name),
            );
            return;
        }
        if p.consumer_group.is_some() && scope != Scope::ConsumerGroup {
            self.err(
                &format!("{at}/consumer_group"),
                "consumer_group only on top-level plugins",
            );
        }
        if p.enabled == Some(false) {
            self.err(
                &format!("{at}/enabled"),
                "kombiform does not emit disabled plugins",
            );
        }
        let cat = format!("{at}/config");
        match p.name.as_str() {
            "jwt" => {
                if scope != Scope::Route && scope != Scope::Service && scope != Scope::Global {
                    self.err(at, "jwt cannot be scoped to a consumer");
                }
                if let Some(c) = self.config::<JwtConfig>(&cat, &p.config) {
                    if c.key_claim_name.is_empty() {
                        self.err(&cat, "key_claim_name is empty");
                    }
                    if c.claims_to_verify.iter().any(|x| x != "exp" && x != "nbf") {
                        self.err(&format!("{cat}/claims_to_verify"), "only exp and nbf");
                    }
                    if !c.claims_to_verify.iter().any(|x| x == "exp") {
                        self.err(
                            &format!("{cat}/claims_to_verify"),
                            "tokens must expire: verify exp",
                        );
                    }
                    match c.maximum_expiration {
                        Some(m) if (1..=31_536_000).contains(&m) => {}
                        _ => self.err(
                            &format!("{cat}/maximum_expiration"),
                            "set it (1..=31536000): tokens must be short-lived",
                        ),
                    }
                }
            }
            "rate-limiting" => {
                if let Some(c) = self.config::<RateLimitingConfig>(&cat, &p.config) {
                    self.rate_limiting(&cat, &c);
                }
            }
            "acl" => {
                if scope == Scope::Consumer || scope == Scope::ConsumerGroup {
                    self.err(at, "acl cannot be scoped to a consumer");
                }
                if let Some(c) = self.config::<AclConfig>(&cat, &p.config) {
                    let allow = c.allow.as_ref().is_some_and(|a| !a.is_empty());
                    let deny = c.deny.as_ref().is_some_and(|a| !a.is_empty());
                    if allow == deny {
                        self.err(&cat, "exactly one of allow and deny must be set");
                    }
                    if oss && c.include_consumer_groups.is_some() {
                        self.err(
                            &format!("{cat}/include_consumer_groups"),
                            "Enterprise-only field",
                        );
                    }
                }
            }
            "ip-restriction" => {
                if let Some(c) = self.config::<IpRestrictionConfig>(&cat, &p.config) {
                    if c.allow.is_empty() {
                        self.err(&format!("{cat}/allow"), "empty allow list");
                    }
                    for cidr in &c.allow {
                        if !looks_like_cidr(cidr) {
                            self.err(
                                &format!("{cat}/allow"),
                                format!("`{cidr}` is not an address or CIDR"),
                            );
                        }
                    }
                    if c.status.is_some_and(|s| !(100..=599).contains(&s)) {
                        self.err(&format!("{cat}/status"), "not an HTTP status");
                    }
                    let _ = c.message;
                }
            }
            "request-termination" => {
                if let Some(c) = self.config::<RequestTerminationConfig>(&cat, &p.config) {
                    if !(100..=599).contains(&c.status_code) {
                        self.err(&format!("{cat}/status_code"), "not an HTTP status");
                    }
                    let _ = c.message;
                }
            }
            "cors" => {
                if scope != Scope::Global {
                    self.err(at, "kombiform emits cors globally only");
                }
                if let Some(c) = self.config::<CorsConfig>(&cat, &p.config) {
                    if c.origins.is_empty() {
                        self.err(&format!("{cat}/origins"), "no origins means any origin");
                    }
                    if c.credentials && c.origins.iter().any(|o| o == "*") {
                        self.err(&format!("{cat}/origins"), "`*` with credentials");
                    }
                    for m in &c.methods {
                        if !HTTP_METHODS.contains(&m.as_str()) {
                            self.err(
                                &format!("{cat}/methods"),
                                format!("`{m}` is not an HTTP method"),
                            );
                        }
                    }
                }
            }
            "correlation-id" => {
                if let Some(c) = self.config::<CorrelationIdConfig>(&cat, &p.config) {
                    if !["uuid", "uuid#counter", "tracker"].contains(&c.generator.as_str()) {
                        self.err(&format!("{cat}/generator"), "uuid, uuid#counter or tracker");
                    }
                    if c.header_name.is_empty() {
                        self.err(&format!("{cat}/header_name"), "empty");
                    }
                }
            }
            "post-function" => {
                if scope != Scope::Global {
                    self.err(at, "kombiform emits post-function globally only");
                }
                if let Some(c) = self.config::<FunctionConfig>(&cat, &p.config) {
                    if c.header_filter.is_empty() && c.body_filter.is_empty() {
                        self.err(&cat, "no function");
                    }
                    for f in c.header_filter.iter().chain(&c.body_filter) {
                        let forbidden = [
                            "require(",
                            "require \"",
                            "os.",
                            "io.",
                            "loadstring",
                            "ngx.pipe",
                        ];
                        let uses = |w: &str| {
                            f.match_indices(w).any(|(i, _)| {
                                i == 0 || !f.as_bytes()[i - 1].is_ascii_alphanumeric()
                            })
                        };
                        if forbidden.iter().any(|w| uses(w)) {
                            self.err(
                                &cat,
                                "functions use only the kong PDK (the sandbox refuses the rest)",
                            );
                        }
                    }
                }
            }
            "openid-connect" => {
                if scope == Scope::Consumer || scope == Scope::ConsumerGroup {
                    self.err(at, "openid-connect cannot be scoped to a consumer");
                }
                if let Some(c) = self.config::<OpenidConnectConfig>(&cat, &p.config) {
                    if c.audience_required.is_empty() {
                        self.err(
                            &format!("{cat}/audience_required"),
                            "tokens of any audience would pass",
                        );
                    }
                    if c.consumer_claim.is_empty() || c.consumer_optional {
                        self.err(&cat, "tokens must map to a tenant consumer");
                    }
                    if c.session_storage.is_some()
                        && !c.session_secret.as_deref().is_some_and(is_vault_ref)
                    {
                        self.err(
                            &format!("{cat}/session_secret"),
                            "must be a vault reference",
                        );
                    }
                    if let Some(r) = &c.redis {
                        self.redis(&format!("{cat}/redis"), r);
                    }
                    if c.auth_methods.iter().any(|m| m == "session")
                        && !c.disable_session.iter().any(|m| m == "bearer")
                    {
                        self.err(
                            &format!("{cat}/disable_session"),
                            "bearer calls would create sessions: list `bearer`",
                        );
                    }
                    if c.auth_methods.iter().any(|m| m == "authorization_code") {
                        if c.client_id.is_empty() || c.redirect_uri.is_empty() {
                            self.err(&cat, "authorization code needs client_id and redirect_uri");
                        }
                        if !c.client_secret.iter().all(|s| is_vault_ref(s))
                            || c.client_secret.is_empty()
                        {
                            self.err(&format!("{cat}/client_secret"), "must be vault references");
                        }
                        if c.require_proof_key_for_code_exchange != Some(true) {
                            self.err(&cat, "authorization code without PKCE");
                        }
                        if c.session_storage.is_none() {
                            self.err(&cat, "authorization code needs a session store");
                        }
                        let _ = (
                            &c.client_auth,
                            &c.scopes,
                            &c.response_mode,
                            &c.login_methods,
                        );
                        let _ = (&c.login_action, c.preserve_query_args, &c.logout_uri_suffix);
                        let _ = (&c.logout_methods, c.logout_revoke, &c.logout_redirect_uri);
                    }
                }
            }
            other => self.err(
                &format!("{at}/name"),
                format!("kombiform does not emit `{other}`; teach the checker first"),
            ),
        }
    }

    fn rate_limiting(&mut self, at: &str, c: &RateLimitingConfig) {
        let periods = [
            ("second", c.second),
            ("minute", c.minute),
            ("hour", c.hour),
            ("day", c.day),
            ("month", c.month),
            ("year", c.year),
        ];
        let set: Vec<(&str, f64)> = periods
            .iter()
            .filter_map(|(n, v)| v.map(|v| (*n, v)))
            .collect();
        if set.is_empty() {
            self.err(at, "at least one limit is required");
        }
        for (n, v) in &set {
            if *v <= 0.0 {
                self.err(&format!("{at}/{n}"), "must be greater than 0");
            }
        }
        for w in set.windows(2) {
            if let [(a, x), (b, y)] = w {
                if y < x {
                    self.err(
                        &format!("{at}/{b}"),
                        format!("{b} ({y}) is lower than {a} ({x})"),
                    );
                }
            }
        }
        let limit_by = ["consumer", "credential", "ip", "service", "header", "path"];
        if !limit_by.contains(&c.limit_by.as_str()) {
            self.err(
                &format!("{at}/limit_by"),
                format!("`{}` is not an OSS limit_by", c.limit_by),
            );
        }
        match c.policy.as_str() {
            "local" => {}
            "redis" => match &c.redis {
                Some(r) => self.redis(&format!("{at}/redis"), r),
                None => self.err(
                    &format!("{at}/redis"),
                    "policy redis needs the redis record",
                ),
            },
            other => self.err(
                &format!("{at}/policy"),
                format!("`{other}`: DB-less Kong allows only local or redis"),
            ),
        }
        if c.hide_client_headers == Some(true) {
            self.err(
                &format!("{at}/hide_client_headers"),
                "clients must see their rate limit headers",
            );
        }
        let _ = c.fault_tolerant;
    }

    fn redis(&mut self, at: &str, r: &RedisConfig) {
        if r.host.is_empty() || r.port == 0 {
            self.err(at, "redis needs a host and a port");
        }
        if let Some(pw) = &r.password {
            if !is_vault_ref(pw) {
                self.err(
                    &format!("{at}/password"),
                    "must be a vault reference, never the password",
                );
            }
        }
        if r.ssl_verify && !r.ssl {
            self.err(&format!("{at}/ssl_verify"), "verification without ssl");
        }
    }

    fn config<'v, T: Deserialize<'v>>(&mut self, at: &str, v: &'v Value) -> Option<T> {
        match T::deserialize(v) {
            Ok(c) => Some(c),
            Err(e) => {
                self.err(at, e);
                None
            }
        }
    }

    fn uuid(&mut self, at: &str, s: &str) {
        let groups: Vec<&str> = s.split('-').collect();
        let ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
            && groups
                .iter()
                .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            self.err(at, format!("`{s}` is not a UUID"));
        }
    }

    /// No secret value anywhere: private keys and unreferenced passwords are refused.
    fn secrets(&mut self, at: &str, v: &Value) {
        match v {
            Value::String(s) if s.contains("PRIVATE KEY") => {
                self.err(
                    if at.is_empty() { "/" } else { at },
                    "a private key is written as a value",
                );
            }
            Value::Object(m) => {
                for (k, v) in m {
                    let here = format!("{at}/{k}");
                    if let Value::String(s) = v {
                        let secretish = matches!(
                            k.as_str(),
                            "password" | "session_secret" | "key" | "client_secret"
                        ) && !here.contains("/jwt_secrets/");
                        if secretish && !is_vault_ref(s) {
                            self.err(&here, "must be a vault reference, never the value");
                        }
                    }
                    self.secrets(&here, v);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    self.secrets(&format!("{at}/{i}"), v);
                }
            }
            _ => {}
        }
    }
}

/// The literal path of a route path: a plain prefix as it is, a whole-segment regex
/// `~P(?:/|$)` as `P` (other regexes as written).
fn literal_path(p: &str) -> String {
    match p.strip_prefix('~') {
        Some(r) => r.strip_suffix("(?:/|$)").unwrap_or(r).replace("\\.", "."),
        None => p.to_string(),
    }
}

/// Every plugin of a document, wherever it sits.
fn all_plugins(d: &Doc) -> impl Iterator<Item = &Plugin> {
    let services = d.services.iter().flat_map(|s| {
        s.plugins
            .iter()
            .chain(s.routes.iter().flat_map(|r| r.plugins.iter()))
    });
    let routes = d.routes.iter().flat_map(|r| r.plugins.iter());
    let consumers = d.consumers.iter().flat_map(|c| c.plugins.iter());
    services
        .chain(routes)
        .chain(consumers)
        .chain(d.plugins.iter())
}

/// `{vault://<vault>/<resource>...}`.
pub fn is_vault_ref(s: &str) -> bool {
    s.strip_prefix("{vault://")
        .and_then(|r| r.strip_suffix('}'))
        .is_some_and(|r| {
            r.contains('/')
                && !r.starts_with('/')
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_/.?=&".contains(&b))
        })
}

fn looks_like_cidr(s: &str) -> bool {
    let (addr, len) = s.split_once('/').unwrap_or((s, "32"));
    let addr_ok = addr.parse::<std::net::IpAddr>().is_ok();
    let max = if addr.contains(':') { 128 } else { 32 };
    addr_ok && len.parse::<u8>().is_ok_and(|l| l <= max)
}
