//! Semantic checks: what a schema cannot say.
//!
//! References (a tenant's plan, a flag's tenants, a relation's target, a service's
//! dependencies), uniqueness (names, Zitadel org ids, routes), name rules (slugs end up in
//! collection names, Kong consumers, Azure resource names and SQL), value ranges, and
//! cycles. Each check has its own stable diagnostic code. Pure: documents in, model and
//! diagnostics out.

use std::collections::{BTreeMap, HashMap, HashSet};

use petgraph::algo::tarjan_scc;
use petgraph::graph::DiGraph;

use super::diag::{did_you_mean, Diagnostic, Label};
use super::load::{Documents, Located};
use kombiform_model::naming::{self, ident_problem, name_problem};
use kombiform_model::{
    ipv4_cidr_range, Access, AccessLevel, CollectionKind, FieldKind, KongEdition, Model,
    PlanFeature, Platform, PostgresTlsMode, Scope, StateBackendKind, Writers, IDENTITY_FIELDS,
    OWNER_FIELD,
};

/// Runs every check and returns the model (sorted). The model is only meaningful when no
/// error was added.
pub fn check(docs: Documents, diags: &mut Vec<Diagnostic>) -> Model {
    let before = diags.len();
    let model = check_all(
        docs.platforms,
        docs.plans,
        docs.tenants,
        docs.flags,
        docs.collections,
        diags,
    );
    // References to documents that already have errors are not news.
    let broken = &docs.broken;
    let mut i = before;
    while i < diags.len() {
        let d = &diags[i];
        let kind = match d.code {
            "unknown-plan" => Some("Plan"),
            "unknown-tenant" => Some("Tenant"),
            "unknown-environment" => Some("Platform"),
            "unknown-collection" => Some("CollectionTemplate"),
            _ => None,
        };
        let name = d.message.split('`').nth(1).unwrap_or_default();
        if kind.is_some_and(|k| broken.contains(&(k.to_string(), name.to_string()))) {
            diags.remove(i);
        } else {
            i += 1;
        }
    }
    model
}

fn check_all(
    platforms: Vec<Located<Platform>>,
    plans: Vec<Located<kombiform_model::Plan>>,
    tenants: Vec<Located<kombiform_model::Tenant>>,
    flags: Vec<Located<kombiform_model::FeatureFlag>>,
    collections: Vec<Located<kombiform_model::CollectionTemplate>>,
    diags: &mut Vec<Diagnostic>,
) -> Model {
    let docs = (platforms, plans, tenants, flags, collections);
    let platforms = unique(docs.0, |p| p.name.clone(), "environment", diags);
    let plans = unique(docs.1, |p| p.name.clone(), "plan", diags);
    let tenants = unique(docs.2, |t| t.slug.to_string(), "tenant", diags);
    let flags = unique(docs.3, |f| f.name.clone(), "feature flag", diags);
    let collections = unique(docs.4, |c| c.name.clone(), "collection template", diags);

    let env_names: Vec<&str> = platforms.iter().map(|p| p.item.name.as_str()).collect();
    let plan_names: Vec<&str> = plans.iter().map(|p| p.item.name.as_str()).collect();
    let tenant_names: HashSet<&str> = tenants.iter().map(|t| t.item.slug.as_str()).collect();

    for p in &platforms {
        check_platform(p, diags);
    }
    for p in &plans {
        check_plan(p, diags);
    }
    check_tenants(&tenants, &plans, &platforms, &env_names, &plan_names, diags);
    for f in &flags {
        check_flag(f, &plan_names, &tenant_names, diags);
    }
    check_collections(&collections, diags);

    let mut model = Model {
        platforms: platforms.into_iter().map(|l| l.item).collect(),
        plans: plans.into_iter().map(|l| l.item).collect(),
        tenants: tenants.into_iter().map(|l| l.item).collect(),
        flags: flags.into_iter().map(|l| l.item).collect(),
        collections: collections.into_iter().map(|l| l.item).collect(),
    };
    normalise(&mut model);
    model
}

/// Sorts everything that is a set, so that output does not depend on spec order.
fn normalise(model: &mut Model) {
    model.platforms.sort_by(|a, b| a.name.cmp(&b.name));
    model.plans.sort_by(|a, b| a.name.cmp(&b.name));
    model.tenants.sort_by(|a, b| a.slug.cmp(&b.slug));
    model.flags.sort_by(|a, b| a.name.cmp(&b.name));
    model.collections.sort_by(|a, b| a.name.cmp(&b.name));
    for p in &mut model.platforms {
        p.services.sort_by(|a, b| a.name.cmp(&b.name));
        for s in &mut p.services {
            s.depends_on.sort();
            s.depends_on.dedup();
            s.routes.sort_by(|a, b| a.name.cmp(&b.name));
            for r in &mut s.routes {
                r.methods.iter_mut().for_each(|m| *m = m.to_uppercase());
                r.methods.sort();
                r.methods.dedup();
            }
        }
        p.kong.internal_cidrs.sort();
        p.kong.internal_cidrs.dedup();
        p.postgres.databases.sort();
        p.postgres.databases.dedup();
        p.postgres.allowed_cidrs.sort();
        p.postgres.allowed_cidrs.dedup();
        p.zitadel.client_ids.sort();
        p.zitadel.signing_keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        p.sso.platform_tokens.keys.sort_by(|a, b| a.id.cmp(&b.id));
    }
    for p in &mut model.plans {
        p.features.sort();
        p.features.dedup();
        p.stackkits.sort();
        p.stackkits.dedup();
    }
    for t in &mut model.tenants {
        t.environments.sort();
        t.environments.dedup();
    }
}

/// Keeps the first item of each name; reports the others.
fn unique<T>(
    items: Vec<Located<T>>,
    name: impl Fn(&T) -> String,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Located<T>> {
    let mut seen: HashMap<String, Label> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for l in items {
        let n = name(&l.item);
        let here = l.label(&["metadata", "name"]);
        if let Some(first) = seen.get(&n) {
            diags.push(
                Diagnostic::error(
                    "duplicate-name",
                    format!("{what} `{n}` is defined twice"),
                    here,
                )
                .also(first.clone().with_message("first defined here"))
                .hint(format!("rename or remove one of the two {what} documents")),
            );
        } else {
            seen.insert(n, here);
            out.push(l);
        }
    }
    out
}

fn unknown(code: &'static str, what: &str, name: &str, known: &[&str], at: Label) -> Diagnostic {
    let d = Diagnostic::error(code, format!("unknown {what} `{name}`"), at);
    match did_you_mean(name, known.iter().copied()) {
        Some(s) => d.hint(format!("did you mean `{s}`?")),
        None if known.is_empty() => d.hint(format!("no {what} is defined")),
        None => {
            let mut k: Vec<&str> = known.to_vec();
            k.sort();
            k.truncate(12);
            d.hint(format!("defined: {}", k.join(", ")))
        }
    }
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

fn url_problem(url: &str, allow_local_http: bool) -> Option<&'static str> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', ':', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) || url.contains(char::is_whitespace) {
        return Some("has no valid host");
    }
    match scheme {
        "https" => None,
        "http"
            if allow_local_http
                && (host == "localhost"
                    || host.starts_with("127.")
                    || host.ends_with(".localhost")) =>
        {
            None
        }
        "http" => Some("must use https (http is allowed for localhost only)"),
        _ => Some("must be an http(s) URL"),
    }
    .or(None)
}

fn check_url(url: &str, what: &str, at: Label, diags: &mut Vec<Diagnostic>) {
    let problem = if url.contains("://") {
        url_problem(url, true)
    } else {
        Some("must be an absolute URL such as https://auth.example.com")
    };
    if let Some(p) = problem {
        diags.push(
            Diagnostic::error("invalid-url", format!("{what} `{url}` {p}"), at)
                .hint("write an absolute https URL"),
        );
    }
}

/// `sso.platformTokens`: the OSS gateway verifies platform tokens, so it needs keys, exactly
/// one of which signs; key ids name Kong credentials (`<tenant>.<id>`).
fn check_platform_tokens(l: &Located<Platform>, diags: &mut Vec<Diagnostic>) {
    let p = &l.item;
    let t = &p.sso.platform_tokens;
    let base = ["spec", "sso", "platformTokens"];
    let authenticated = p
        .services
        .iter()
        .filter(|s| s.enabled)
        .flat_map(|s| &s.routes)
        .any(|r| r.access == Access::Authenticated);
    if p.kong.edition == KongEdition::Oss && authenticated && t.keys.is_empty() {
        diags.push(
            Diagnostic::error(
                "missing-signing-key",
                "the OSS gateway verifies platform tokens, but `sso.platformTokens.keys` is empty",
                l.key_label(&["spec"], "sso"),
            )
            .hint("add a P-256 key: its private key (PKCS#8 PEM) in Key Vault as `privateKey`, its public key as `publicKeyPem`; or use `kong.edition: enterprise`"),
        );
    }
    if !t.keys.is_empty() && t.keys.iter().filter(|k| k.signs).count() != 1 {
        diags.push(
            Diagnostic::error(
                "token-key-signer",
                "exactly one key of `sso.platformTokens.keys` must have `signs: true`",
                l.label(&[&base[..], &["keys"]].concat()),
            )
            .hint(
                "rotation: add the new key, then move `signs: true` to it, then remove the old key",
            ),
        );
    }
    if !(60..=3600).contains(&t.ttl_seconds) {
        diags.push(
            Diagnostic::error(
                "out-of-range",
                format!("`ttlSeconds` {} is outside 60..=3600", t.ttl_seconds),
                l.label(&[&base[..], &["ttlSeconds"]].concat()),
            )
            .hint("platform tokens are short-lived: the gateway refuses longer ones"),
        );
    }
    if let Some(issuer) = &t.issuer {
        check_url(
            issuer,
            "platform token issuer",
            l.label(&[&base[..], &["issuer"]].concat()),
            diags,
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, k) in t.keys.iter().enumerate() {
        let idx = i.to_string();
        let at = |f: &str| l.label(&[&base[..], &["keys", &idx, f]].concat());
        let valid = !k.id.is_empty()
            && k.id.len() <= 32
            && k.id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !k.id.starts_with('-');
        if !valid {
            diags.push(
                Diagnostic::error("invalid-name", format!("token key id `{}` is not valid", k.id), at("id"))
                    .hint("lowercase letters, digits and `-`, at most 32: it ends every credential key `<tenant>.<id>`"),
            );
        } else if !seen.insert(k.id.as_str()) {
            diags.push(
                Diagnostic::error(
                    "duplicate-name",
                    format!("token key `{}` is defined twice", k.id),
                    at("id"),
                )
                .hint("key ids are unique"),
            );
        }
        check_pem(
            &k.public_key_pem,
            "PUBLIC KEY",
            "token key",
            at("publicKeyPem"),
            diags,
        );
    }
}

/// Front Door in front of the gateway: without its id the gateway routes requests that
/// bypass Front Door too.
fn check_gateway_edge(l: &Located<Platform>, diags: &mut Vec<Diagnostic>) {
    let p = &l.item;
    if let Some(a) = &p.kong.authorization_code {
        check_url(
            &a.redirect_uri,
            "redirect uri",
            l.label(&["spec", "kong", "authorizationCode", "redirectUri"]),
            diags,
        );
        check_url(
            &a.logout_redirect_uri,
            "logout redirect uri",
            l.label(&["spec", "kong", "authorizationCode", "logoutRedirectUri"]),
            diags,
        );
    }
    let Some(fd) = &p.front_door else {
        return;
    };
    match &fd.id {
        Some(id) if !is_guid(id) => diags.push(
            Diagnostic::error("invalid-id", format!("front door id `{id}` is not a GUID"), l.label(&["spec", "frontDoor", "id"]))
                .hint("copy the profile's frontDoorId: `az afd profile show --query frontDoorId`"),
        ),
        Some(_) => {}
        None => diags.push(
            Diagnostic::warning(
                "front-door-id-missing",
                "the gateway routes requests that bypass Front Door until `frontDoor.id` is set",
                l.key_label(&["spec"], "frontDoor"),
            )
            .hint("after the first apply, copy the profile's frontDoorId (`az afd profile show --query frontDoorId`) into `frontDoor.id`"),
        ),
    }
}

fn check_pem(pem: &str, expected: &str, what: &str, at: Label, diags: &mut Vec<Diagnostic>) {
    let begin = format!("-----BEGIN {expected}-----");
    let end = format!("-----END {expected}-----");
    if !(pem.trim_start().starts_with(&begin) && pem.trim_end().ends_with(&end)) {
        diags.push(
            Diagnostic::error(
                "invalid-pem",
                format!("{what} is not a PEM `{expected}`"),
                at,
            )
            .hint(format!("paste the PEM text, from `{begin}` to `{end}`")),
        );
    }
}

/// `postgres.tls` and `postgres.allowedCidrs`: TLS is never off on Azure, a CA bundle is PEM,
/// and the firewall takes IPv4 ranges on Azure only.
fn check_postgres_access(l: &Located<Platform>, diags: &mut Vec<Diagnostic>) {
    let p = &l.item;
    let pg = &p.postgres;
    if let Some(tls) = &pg.tls {
        if tls.mode == PostgresTlsMode::Disable && p.azure.is_some() {
            diags.push(
                Diagnostic::error(
                    "postgres-tls-disabled",
                    "`postgres.tls.mode: disable` on Azure: Azure Database for PostgreSQL requires TLS, and credentials must not cross the network in plain text",
                    l.label(&["spec", "postgres", "tls", "mode"]),
                )
                .hint("remove `tls` (verify-full against the bundled Azure roots) or write `mode: verify-full`"),
            );
        }
        if let Some(pem) = &tls.ca_certificates_pem {
            check_pem(
                pem,
                "CERTIFICATE",
                "the PostgreSQL CA bundle",
                l.label(&["spec", "postgres", "tls", "caCertificatesPem"]),
                diags,
            );
        }
    }
    for (i, cidr) in pg.allowed_cidrs.iter().enumerate() {
        let at = || l.label(&["spec", "postgres", "allowedCidrs", &i.to_string()]);
        match ipv4_cidr_range(cidr) {
            None => diags.push(
                Diagnostic::error(
                    "invalid-cidr",
                    format!("`{cidr}` is not an IPv4 CIDR block"),
                    at(),
                )
                .hint("write the block's first address and its prefix length, e.g. `203.0.113.7/32` or `203.0.113.0/28`: the server's firewall takes IPv4 ranges"),
            ),
            Some((start, _)) if start.is_unspecified() => diags.push(
                Diagnostic::error(
                    "invalid-cidr",
                    format!("`{cidr}` starts at 0.0.0.0: it would open the server to the whole internet, or (as 0.0.0.0/32) to every Azure customer"),
                    at(),
                )
                .hint("list the CI runners' egress addresses, e.g. `203.0.113.7/32`; Azure's own services are already let in"),
            ),
            Some(_) => {}
        }
    }
    if !pg.allowed_cidrs.is_empty() && p.azure.is_none() {
        diags.push(
            Diagnostic::error(
                "allowed-cidrs-without-azure",
                "`postgres.allowedCidrs` opens the firewall of the Azure server, and this environment has no `azure` section",
                l.key_label(&["spec", "postgres"], "allowedCidrs"),
            )
            .hint("remove `allowedCidrs`, or add `azure`"),
        );
    }
}

fn range(
    value: f64,
    min: f64,
    max: f64,
    what: &str,
    code: &'static str,
    at: Label,
    diags: &mut Vec<Diagnostic>,
) {
    if value < min || value > max {
        diags.push(
            Diagnostic::error(
                code,
                format!("{what} is {value}, outside {min}..={max}"),
                at,
            )
            .hint(format!("use a value from {min} to {max}")),
        );
    }
}

// ---------------------------------------------------------------------------------------

fn check_platform(l: &Located<Platform>, diags: &mut Vec<Diagnostic>) {
    let p = &l.item;
    if let Some(problem) = name_problem(&p.name, 10) {
        diags.push(
            Diagnostic::error(
                "invalid-name",
                format!("environment name `{}` {problem}", p.name),
                l.label(&["metadata", "name"]),
            )
            .hint("environment names end up in every Azure resource name: keep them short, e.g. `prod`"),
        );
    }
    check_url(
        &p.zitadel.issuer,
        "zitadel issuer",
        l.label(&["spec", "zitadel", "issuer"]),
        diags,
    );
    check_url(
        &p.pocketbase.url,
        "pocketbase url",
        l.label(&["spec", "pocketbase", "url"]),
        diags,
    );
    check_platform_tokens(l, diags);
    check_gateway_edge(l, diags);
    for (i, k) in p.zitadel.signing_keys.iter().enumerate() {
        let idx = i.to_string();
        check_pem(
            &k.public_key_pem,
            "PUBLIC KEY",
            "signing key",
            l.label(&["spec", "zitadel", "signingKeys", &idx, "publicKeyPem"]),
            diags,
        );
    }
    if p.kong.edition == KongEdition::Enterprise && p.kong.session_secret.is_none() {
        diags.push(
            Diagnostic::error(
                "missing-session-secret",
                "the Enterprise gateway keeps OIDC sessions in Redis and needs `kong.sessionSecret`",
                l.key_label(&["spec", "kong"], "edition"),
            )
            .hint("add `sessionSecret: {keyVault: kong-session-secret}`"),
        );
    }
    for (i, cidr) in p.kong.internal_cidrs.iter().enumerate() {
        if !is_cidr(cidr) {
            diags.push(
                Diagnostic::error(
                    "invalid-cidr",
                    format!("`{cidr}` is not a CIDR block"),
                    l.label(&["spec", "kong", "internalCidrs", &i.to_string()]),
                )
                .hint("write an address and prefix length, e.g. `10.20.0.0/16`"),
            );
        }
    }
    for (i, origin) in p.kong.cors_origins.iter().enumerate() {
        if origin != "*" && url_problem(origin, true).is_some() || origin.ends_with('/') {
            diags.push(
                Diagnostic::error(
                    "invalid-url",
                    format!("CORS origin `{origin}` is not an origin"),
                    l.label(&["spec", "kong", "corsOrigins", &i.to_string()]),
                )
                .hint("write scheme and host without a path, e.g. `https://app.kombify.io`"),
            );
        }
    }
    if let Some(m) = &p.kong.upstream_mtls {
        for (field, id) in [
            ("clientCertificateId", &m.client_certificate_id),
            ("caCertificateId", &m.ca_certificate_id),
        ] {
            if !is_guid(id) {
                diags.push(
                    Diagnostic::error(
                        "invalid-uuid",
                        format!("`{field}` must be a UUID, found `{id}`"),
                        l.label(&["spec", "kong", "upstreamMtls", field]),
                    )
                    .hint("generate one with `uuidgen` and keep it stable"),
                );
            }
        }
        check_pem(
            &m.client_certificate_pem,
            "CERTIFICATE",
            "upstream client certificate",
            l.label(&["spec", "kong", "upstreamMtls", "clientCertificatePem"]),
            diags,
        );
        check_pem(
            &m.ca_certificate_pem,
            "CERTIFICATE",
            "upstream CA certificate",
            l.label(&["spec", "kong", "upstreamMtls", "caCertificatePem"]),
            diags,
        );
        range(
            f64::from(m.verify_depth),
            0.0,
            64.0,
            "`verifyDepth`",
            "out-of-range",
            l.label(&["spec", "kong", "upstreamMtls", "verifyDepth"]),
            diags,
        );
    }
    check_scale(l, &["spec", "kong", "scale"], &p.kong.scale, diags);
    if let Some(a) = &p.azure {
        for (field, v) in [
            ("subscriptionId", &a.subscription_id),
            ("tenantId", &a.tenant_id),
        ] {
            if !is_guid(v) {
                diags.push(
                    Diagnostic::error(
                        "invalid-uuid",
                        format!("`azure.{field}` must be a GUID, found `{v}`"),
                        l.label(&["spec", "azure", field]),
                    )
                    .hint("copy it from the Azure portal"),
                );
            }
        }
        if !(2..=6).contains(&a.name_prefix.len())
            || !a.name_prefix.as_bytes()[0].is_ascii_lowercase()
            || !a
                .name_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            diags.push(
                Diagnostic::error(
                    "invalid-name",
                    format!("`azure.namePrefix` `{}` must be 2 to 6 lowercase letters or digits, starting with a letter", a.name_prefix),
                    l.label(&["spec", "azure", "namePrefix"]),
                )
                .hint("it starts every Azure resource name; storage accounts allow no other characters"),
            );
        }
        if a.location.is_empty()
            || !a
                .location
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            diags.push(
                Diagnostic::error(
                    "invalid-value",
                    format!(
                        "`azure.location` `{}` is not an Azure region name",
                        a.location
                    ),
                    l.label(&["spec", "azure", "location"]),
                )
                .hint("write the region's programmatic name, e.g. `westeurope`"),
            );
        }
        range(
            f64::from(a.log_retention_days),
            30.0,
            730.0,
            "`logRetentionDays`",
            "out-of-range",
            l.label(&["spec", "azure", "logRetentionDays"]),
            diags,
        );
        let kv = naming::key_vault(p);
        let st = naming::storage_account(p);
        for (what, name, max) in [("Key Vault", kv, 24), ("storage account", st, 24)] {
            if name.len() > max {
                diags.push(
                    Diagnostic::error(
                        "name-too-long",
                        format!("the {what} name `{name}` is longer than {max} characters"),
                        l.label(&["metadata", "name"]),
                    )
                    .hint("shorten `azure.namePrefix` or the environment name"),
                );
            }
        }
    } else if p.front_door.is_some() {
        diags.push(
            Diagnostic::error(
                "front-door-without-azure",
                "`frontDoor` needs an `azure` section: Front Door exists only on Azure",
                l.key_label(&["spec"], "frontDoor"),
            )
            .hint("remove `frontDoor` or add `azure`"),
        );
    }
    let pg = &p.postgres;
    range(
        f64::from(pg.backup_retention_days),
        7.0,
        35.0,
        "`backupRetentionDays`",
        "out-of-range",
        l.label(&["spec", "postgres", "backupRetentionDays"]),
        diags,
    );
    range(
        f64::from(pg.storage_gb),
        32.0,
        16384.0,
        "`storageGb`",
        "out-of-range",
        l.label(&["spec", "postgres", "storageGb"]),
        diags,
    );
    for (i, db) in pg.databases.iter().enumerate() {
        if ident_problem(db, 63).is_some()
            || db.starts_with('_')
            || db.chars().any(|c| c.is_ascii_uppercase())
        {
            diags.push(
                Diagnostic::error(
                    "invalid-name",
                    format!("database name `{db}` must be lowercase letters, digits and `_`, starting with a letter"),
                    l.label(&["spec", "postgres", "databases", &i.to_string()]),
                )
                .hint("use e.g. `kombify_platform`"),
            );
        }
    }
    check_postgres_access(l, diags);
    if !pg.databases.contains(&pg.platform_database) {
        let known: Vec<&str> = pg.databases.iter().map(String::as_str).collect();
        diags.push(unknown(
            "unknown-database",
            "database",
            &pg.platform_database,
            &known,
            l.label(&["spec", "postgres", "platformDatabase"]),
        ));
    }
    range(
        f64::from(p.redis.capacity),
        0.0,
        6.0,
        "`redis.capacity`",
        "out-of-range",
        l.label(&["spec", "redis", "capacity"]),
        diags,
    );
    range(
        f64::from(p.sso.token_ttl_seconds),
        60.0,
        86400.0,
        "`sso.tokenTtlSeconds`",
        "out-of-range",
        l.label(&["spec", "sso", "tokenTtlSeconds"]),
        diags,
    );
    range(
        f64::from(p.sso.leeway_seconds),
        0.0,
        300.0,
        "`sso.leewaySeconds`",
        "out-of-range",
        l.label(&["spec", "sso", "leewaySeconds"]),
        diags,
    );
    range(
        f64::from(p.webhooks.tolerance_seconds),
        1.0,
        3600.0,
        "`webhooks.toleranceSeconds`",
        "out-of-range",
        l.label(&["spec", "webhooks", "toleranceSeconds"]),
        diags,
    );
    for (i, e) in p.monitoring.alert_emails.iter().enumerate() {
        if !e.contains('@') || e.starts_with('@') || e.ends_with('@') {
            diags.push(
                Diagnostic::error(
                    "invalid-value",
                    format!("`{e}` is not an e-mail address"),
                    l.label(&["spec", "monitoring", "alertEmails", &i.to_string()]),
                )
                .hint("write an address such as oncall@example.com"),
            );
        }
    }
    check_services(l, diags);
    check_state(l, diags);
}

/// `state:`: an Azure Blob backend names a valid account and container and a lease Blob
/// Storage grants; a local backend carries none of those settings.
fn check_state(l: &Located<Platform>, diags: &mut Vec<Diagnostic>) {
    let s = &l.item.state;
    if s.backend == StateBackendKind::Local {
        for (key, set) in [
            ("account", s.account.is_some()),
            ("container", s.container.is_some()),
        ] {
            if set {
                diags.push(
                    Diagnostic::error(
                        "unused-state-setting",
                        format!("`state.{key}` is only used by the `azureBlob` backend"),
                        l.key_label(&["spec", "state"], key),
                    )
                    .hint("add `backend: azureBlob`, or remove the setting"),
                );
            }
        }
        return;
    }
    let fields = [
        (
            "account",
            s.account.as_deref(),
            account_problem as fn(&str) -> Option<&'static str>,
        ),
        ("container", s.container.as_deref(), container_problem),
    ];
    for (key, value, problem) in fields {
        match value {
            None => diags.push(
                Diagnostic::error(
                    "missing-state-location",
                    format!("the `azureBlob` state backend needs `state.{key}`"),
                    l.key_label(&["spec", "state"], "backend"),
                )
                .hint(format!(
                    "add `{key}:` (the storage {key} that keeps the state), e.g. `{}`",
                    if key == "account" {
                        "kfyprodstate"
                    } else {
                        "kombiform-state"
                    }
                )),
            ),
            Some(v) => {
                if let Some(why) = problem(v) {
                    diags.push(
                        Diagnostic::error(
                            "invalid-name",
                            format!("storage {key} name `{v}` {why}"),
                            l.label(&["spec", "state", key]),
                        )
                        .hint("see Azure's naming rules for storage accounts and containers"),
                    );
                }
            }
        }
    }
    range(
        f64::from(s.lease_seconds),
        15.0,
        60.0,
        "`state.leaseSeconds`",
        "out-of-range",
        l.label(&["spec", "state", "leaseSeconds"]),
        diags,
    );
}

/// Why `name` is not a storage account name (3 to 24 lowercase letters and digits).
fn account_problem(name: &str) -> Option<&'static str> {
    if !(3..=24).contains(&name.len()) {
        return Some("must be 3 to 24 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Some("may hold only lowercase letters and digits");
    }
    None
}

/// Why `name` is not a blob container name (3 to 63 lowercase letters, digits and single
/// hyphens, starting and ending with a letter or digit).
fn container_problem(name: &str) -> Option<&'static str> {
    if !(3..=63).contains(&name.len()) {
        return Some("must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("may hold only lowercase letters, digits and hyphens");
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Some("must start and end with a letter or digit and hold no `--`");
    }
    None
}

fn check_scale(
    l: &Located<Platform>,
    path: &[&str],
    s: &kombiform_model::Scale,
    diags: &mut Vec<Diagnostic>,
) {
    let at = |k: &str| l.label(&[path, &[k]].concat());
    range(
        f64::from(s.min_replicas),
        0.0,
        300.0,
        "`minReplicas`",
        "out-of-range",
        at("minReplicas"),
        diags,
    );
    range(
        f64::from(s.max_replicas),
        1.0,
        300.0,
        "`maxReplicas`",
        "out-of-range",
        at("maxReplicas"),
        diags,
    );
    if s.min_replicas > s.max_replicas {
        diags.push(
            Diagnostic::error(
                "out-of-range",
                format!(
                    "`minReplicas` ({}) is above `maxReplicas` ({})",
                    s.min_replicas, s.max_replicas
                ),
                at("minReplicas"),
            )
            .hint("make minReplicas at most maxReplicas"),
        );
    }
    range(s.cpu, 0.25, 4.0, "`cpu`", "out-of-range", at("cpu"), diags);
    let mem_ok = s
        .memory
        .strip_suffix("Gi")
        .and_then(|n| n.parse::<f64>().ok())
        .is_some_and(|g| (0.5..=8.0).contains(&g));
    if !mem_ok {
        diags.push(
            Diagnostic::error(
                "invalid-value",
                format!(
                    "`memory` `{}` is not a Container Apps memory size",
                    s.memory
                ),
                at("memory"),
            )
            .hint("write e.g. `1Gi` or `2.5Gi` (0.5Gi to 8Gi)"),
        );
    }
}

fn check_services(l: &Located<Platform>, diags: &mut Vec<Diagnostic>) {
    let p = &l.item;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, s) in p.services.iter().enumerate() {
        let idx = i.to_string();
        if let Some(problem) = name_problem(&s.name, 20) {
            diags.push(
                Diagnostic::error(
                    "invalid-name",
                    format!("service name `{}` {problem}", s.name),
                    l.label(&["spec", "services", &idx, "name"]),
                )
                .hint("service names become Kong service and Azure Container App names"),
            );
        } else if naming::container_app(p, &s.name).len() > naming::MAX_CONTAINER_APP {
            diags.push(
                Diagnostic::error(
                    "name-too-long",
                    format!(
                        "the Container App name `{}` is longer than {} characters",
                        naming::container_app(p, &s.name),
                        naming::MAX_CONTAINER_APP
                    ),
                    l.label(&["spec", "services", &idx, "name"]),
                )
                .hint("shorten the service name"),
            );
        }
        if matches!(s.name.as_str(), "kong") {
            diags.push(
                Diagnostic::error(
                    "invalid-name",
                    "`kong` is the gateway itself and cannot be a service name",
                    l.label(&["spec", "services", &idx, "name"]),
                )
                .hint("pick another name"),
            );
        }
        if let Some(first) = seen.get(s.name.as_str()) {
            diags.push(
                Diagnostic::error(
                    "duplicate-name",
                    format!("service `{}` is defined twice", s.name),
                    l.label(&["spec", "services", &idx, "name"]),
                )
                .also(
                    l.label(&["spec", "services", &first.to_string(), "name"])
                        .with_message("first defined here"),
                )
                .hint("rename or remove one of them"),
            );
        } else {
            seen.insert(&s.name, i);
        }
        if s.port == 0 {
            diags.push(
                Diagnostic::error(
                    "out-of-range",
                    "`port` must be 1 to 65535",
                    l.label(&["spec", "services", &idx, "port"]),
                )
                .hint("write the port the container listens on"),
            );
        }
        for path_field in ["healthPath", "readyPath"] {
            let v = if path_field == "healthPath" {
                &s.health_path
            } else {
                &s.ready_path
            };
            if !v.starts_with('/') {
                diags.push(
                    Diagnostic::error(
                        "invalid-path",
                        format!("`{path_field}` `{v}` must start with `/`"),
                        l.label(&["spec", "services", &idx, path_field]),
                    )
                    .hint("write an absolute path such as `/health`"),
                );
            }
        }
        check_scale(l, &["spec", "services", &idx, "scale"], &s.scale, diags);
    }
    let names: Vec<&str> = p.services.iter().map(|s| s.name.as_str()).collect();
    for (i, s) in p.services.iter().enumerate() {
        for (j, dep) in s.depends_on.iter().enumerate() {
            if !names.contains(&dep.as_str()) {
                diags.push(unknown(
                    "unknown-service",
                    "service",
                    dep,
                    &names,
                    l.label(&[
                        "spec",
                        "services",
                        &i.to_string(),
                        "dependsOn",
                        &j.to_string(),
                    ]),
                ));
            }
        }
    }
    check_service_cycles(l, diags);
    check_routes(l, diags);
}

fn check_service_cycles(l: &Located<Platform>, diags: &mut Vec<Diagnostic>) {
    let p = &l.item;
    let mut g: DiGraph<usize, ()> = DiGraph::new();
    let idx: Vec<_> = (0..p.services.len()).map(|i| g.add_node(i)).collect();
    let by_name: HashMap<&str, usize> = p
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    for (i, s) in p.services.iter().enumerate() {
        for d in &s.depends_on {
            if let Some(&j) = by_name.get(d.as_str()) {
                g.add_edge(idx[i], idx[j], ());
            }
        }
    }
    for scc in tarjan_scc(&g) {
        let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        let mut members: Vec<usize> = scc.iter().map(|n| g[*n]).collect();
        members.sort();
        let cycle = cycle_order(&members, |i| {
            p.services[i]
                .depends_on
                .iter()
                .filter_map(|d| by_name.get(d.as_str()).copied())
                .collect()
        });
        let names: Vec<&str> = cycle.iter().map(|i| p.services[*i].name.as_str()).collect();
        let first = cycle[0];
        let next = cycle.get(1).copied().unwrap_or(first);
        let dep_idx = p.services[first]
            .depends_on
            .iter()
            .position(|d| d == &p.services[next].name)
            .unwrap_or(0);
        diags.push(
            Diagnostic::error(
                "dependency-cycle",
                format!(
                    "services depend on each other in a cycle: {} -> {}",
                    names.join(" -> "),
                    names[0]
                ),
                l.label(&[
                    "spec",
                    "services",
                    &first.to_string(),
                    "dependsOn",
                    &dep_idx.to_string(),
                ]),
            )
            .hint("remove one `dependsOn` entry of the cycle"),
        );
    }
}

/// Orders the members of a strongly connected component as a cycle, starting at the
/// smallest member, following `next`.
fn cycle_order(members: &[usize], next: impl Fn(usize) -> Vec<usize>) -> Vec<usize> {
    let set: HashSet<usize> = members.iter().copied().collect();
    let start = members[0];
    let mut order = vec![start];
    let mut cur = start;
    while let Some(n) = next(cur)
        .into_iter()
        .filter(|n| set.contains(n))
        .find(|n| !order.contains(n) || *n == start)
    {
        if n == start {
            break;
        }
        order.push(n);
        cur = n;
    }
    order
}

fn check_routes(l: &Located<Platform>, diags: &mut Vec<Diagnostic>) {
    let p = &l.item;
    let mut names: HashMap<&str, Label> = HashMap::new();
    // (path, method) -> first label
    let mut claims: HashMap<(&str, &str), (Label, &str)> = HashMap::new();
    for (i, s) in p.services.iter().enumerate() {
        for (j, r) in s.routes.iter().enumerate() {
            let base =
                ["spec", "services", &i.to_string(), "routes", &j.to_string()].map(String::from);
            let at = |k: &str| {
                let mut v: Vec<&str> = base.iter().map(String::as_str).collect();
                v.push(k);
                l.label(&v)
            };
            if let Some(problem) = name_problem(&r.name, 40) {
                diags.push(
                    Diagnostic::error(
                        "invalid-name",
                        format!("route name `{}` {problem}", r.name),
                        at("name"),
                    )
                    .hint("route names become Kong route names"),
                );
            }
            if let Some(first) = names.get(r.name.as_str()) {
                diags.push(
                    Diagnostic::error(
                        "duplicate-name",
                        format!("route `{}` is defined twice", r.name),
                        at("name"),
                    )
                    .also(first.clone().with_message("first defined here"))
                    .hint("route names are unique across the platform"),
                );
            } else {
                names.insert(&r.name, at("name"));
            }
            if r.paths.is_empty() {
                diags.push(
                    Diagnostic::error(
                        "invalid-path",
                        format!("route `{}` has no paths", r.name),
                        at("paths"),
                    )
                    .hint("add at least one path such as `/v1/things`"),
                );
            }
            for (k, m) in r.methods.iter().enumerate() {
                const METHODS: &[&str] =
                    &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
                if !METHODS.contains(&m.to_uppercase().as_str()) {
                    let d = Diagnostic::error(
                        "invalid-value",
                        format!("`{m}` is not an HTTP method"),
                        {
                            let mut v: Vec<&str> = base.iter().map(String::as_str).collect();
                            let ks = k.to_string();
                            v.push("methods");
                            v.push(&ks);
                            l.label(&v)
                        },
                    );
                    diags.push(
                        match did_you_mean(&m.to_uppercase(), METHODS.iter().copied()) {
                            Some(s) => d.hint(format!("did you mean `{s}`?")),
                            None => d.hint(format!("allowed: {}", METHODS.join(", "))),
                        },
                    );
                }
            }
            if r.requires_feature.is_some() && r.access != Access::Authenticated {
                diags.push(
                    Diagnostic::error("feature-needs-auth", format!("route `{}` requires a plan feature, so it must have `access: authenticated`", r.name), at("requiresFeature"))
                        .hint("only an authenticated tenant has a plan"),
                );
            }
            for (k, path) in r.paths.iter().enumerate() {
                let ks = k.to_string();
                let pat = {
                    let mut v: Vec<&str> = base.iter().map(String::as_str).collect();
                    v.push("paths");
                    v.push(&ks);
                    l.label(&v)
                };
                if !path.starts_with('/')
                    || path.len() > 1 && path.ends_with('/')
                    || path.contains("//")
                    || !path
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
                {
                    diags.push(
                        Diagnostic::error("invalid-path", format!("route path `{path}` is not a plain path prefix"), pat.clone())
                            .hint("start with `/`, no trailing `/`, letters, digits and `-_.~` only (no regex)"),
                    );
                    continue;
                }
                let internal = path == "/api/internal" || path.starts_with("/api/internal/");
                if internal && r.access != Access::Internal {
                    diags.push(
                        Diagnostic::error("internal-route-exposed", format!("`{path}` is under /api/internal but route `{}` is not internal", r.name), pat.clone())
                            .hint("set `access: internal`: internal APIs must be unreachable from outside"),
                    );
                }
                if !internal && r.access == Access::Internal {
                    diags.push(
                        Diagnostic::error(
                            "internal-route-outside",
                            format!(
                                "internal route `{}` has path `{path}` outside /api/internal",
                                r.name
                            ),
                            pat.clone(),
                        )
                        .hint("move internal endpoints under /api/internal/"),
                    );
                }
                let methods: Vec<&str> = if r.methods.is_empty() {
                    vec!["*"]
                } else {
                    r.methods.iter().map(String::as_str).collect()
                };
                for m in methods {
                    let keys: Vec<(&str, &str)> = if m == "*" {
                        vec![(path.as_str(), "*")]
                    } else {
                        vec![(path.as_str(), m), (path.as_str(), "*")]
                    };
                    let conflict = keys.iter().find_map(|k| claims.get(k)).or_else(|| {
                        if m == "*" {
                            claims
                                .iter()
                                .find(|((p2, _), _)| *p2 == path.as_str())
                                .map(|(_, v)| v)
                        } else {
                            None
                        }
                    });
                    if let Some((first, other)) = conflict {
                        if *other != r.name.as_str() {
                            diags.push(
                                Diagnostic::error("route-conflict", format!("route `{}` claims `{path}` ({m}), already claimed by route `{other}`", r.name), pat.clone())
                                    .also(first.clone().with_message("claimed here"))
                                    .hint("give one route a different path or different methods"),
                            );
                            break;
                        }
                    } else {
                        claims.insert((path.as_str(), m), (pat.clone(), r.name.as_str()));
                    }
                }
            }
        }
    }
}

fn check_plan(l: &Located<kombiform_model::Plan>, diags: &mut Vec<Diagnostic>) {
    let p = &l.item;
    if let Some(problem) = name_problem(&p.name, 30) {
        diags.push(
            Diagnostic::error(
                "invalid-name",
                format!("plan name `{}` {problem}", p.name),
                l.label(&["metadata", "name"]),
            )
            .hint("plan names become Kong ACL groups and SQL values"),
        );
    }
    let q = &p.quotas;
    for (field, v, max) in [
        ("maxUsers", q.max_users, 100_000u32),
        ("maxNodes", q.max_nodes, 1_000_000),
        ("maxStacks", q.max_stacks, 100_000),
        ("maxSimulations", q.max_simulations, 1_000_000),
    ] {
        let min = if field == "maxUsers" { 1 } else { 0 };
        if v < min || v > max {
            diags.push(
                Diagnostic::error(
                    "invalid-quota",
                    format!("quota `{field}` is {v}, outside {min}..={max}"),
                    l.label(&["spec", "quotas", field]),
                )
                .hint(format!("use a value from {min} to {max}")),
            );
        }
    }
    let periods = p.rate_limits.periods();
    if periods.is_empty() {
        diags.push(
            Diagnostic::error(
                "invalid-rate-limit",
                "`rateLimits` sets no limit",
                l.key_label(&["spec"], "rateLimits"),
            )
            .hint("set at least one of second, minute, hour, day"),
        );
    }
    for (name, v) in &periods {
        if *v == 0 {
            diags.push(
                Diagnostic::error(
                    "invalid-rate-limit",
                    format!("rate limit `{name}` is 0"),
                    l.label(&["spec", "rateLimits", name]),
                )
                .hint("limits must be above 0; leave the period out for no limit"),
            );
        }
    }
    for w in periods.windows(2) {
        let ((short, a), (long, b)) = (w[0], w[1]);
        if b < a {
            diags.push(
                Diagnostic::error(
                    "invalid-rate-limit",
                    format!("rate limit per {long} ({b}) is lower than per {short} ({a})"),
                    l.label(&["spec", "rateLimits", long]),
                )
                .hint("a longer period must allow at least as many requests as a shorter one"),
            );
        }
    }
    if !p.stackkits.is_empty() && !p.has(PlanFeature::Stackkits) {
        diags.push(
            Diagnostic::error(
                "stackkits-without-feature",
                format!(
                    "plan `{}` lists StackKits but does not include the `stackkits` feature",
                    p.name
                ),
                l.key_label(&["spec"], "stackkits"),
            )
            .hint("add `stackkits` to `features`, or remove the list"),
        );
    }
    for (i, k) in p.stackkits.iter().enumerate() {
        if let Some(problem) = name_problem(k, 40) {
            diags.push(
                Diagnostic::error(
                    "invalid-name",
                    format!("StackKit name `{k}` {problem}"),
                    l.label(&["spec", "stackkits", &i.to_string()]),
                )
                .hint("write the StackKit's slug"),
            );
        }
    }
    let s = &p.simulation;
    range(
        f64::from(s.max_concurrent),
        0.0,
        1000.0,
        "`maxConcurrent`",
        "invalid-quota",
        l.label(&["spec", "simulation", "maxConcurrent"]),
        diags,
    );
    range(
        s.cpu_per_simulation,
        0.25,
        16.0,
        "`cpuPerSimulation`",
        "invalid-quota",
        l.label(&["spec", "simulation", "cpuPerSimulation"]),
        diags,
    );
    range(
        f64::from(s.memory_mb_per_simulation),
        128.0,
        65536.0,
        "`memoryMbPerSimulation`",
        "invalid-quota",
        l.label(&["spec", "simulation", "memoryMbPerSimulation"]),
        diags,
    );
}

fn check_tenants(
    tenants: &[Located<kombiform_model::Tenant>],
    plans: &[Located<kombiform_model::Plan>],
    platforms: &[Located<Platform>],
    env_names: &[&str],
    plan_names: &[&str],
    diags: &mut Vec<Diagnostic>,
) {
    let plan_by_name: HashMap<&str, &kombiform_model::Plan> = plans
        .iter()
        .map(|p| (p.item.name.as_str(), &p.item))
        .collect();
    let mut orgs: HashMap<&str, Label> = HashMap::new();
    let mut customers: HashMap<&str, Label> = HashMap::new();
    let longest_base = platforms
        .iter()
        .filter(|p| p.item.azure.is_some())
        .map(|p| &p.item)
        .max_by_key(|p| naming::container_app(p, "").len());
    for l in tenants {
        let t = &l.item;
        // The slug itself was checked by the loader (a `TenantSlug` is valid).
        if let Some(p) = longest_base {
            let name = naming::tenant_app(p, t);
            if t.instance == kombiform_model::InstanceMode::Dedicated
                && name.len() > naming::MAX_CONTAINER_APP
            {
                diags.push(
                    Diagnostic::error("name-too-long", format!("the dedicated Container App name `{name}` is longer than {} characters", naming::MAX_CONTAINER_APP), l.label(&["metadata", "name"]))
                        .hint("shorten the slug"),
                );
            }
        }
        if t.display_name.trim().is_empty()
            || t.display_name.chars().count() > 200
            || t.display_name.chars().any(char::is_control)
        {
            diags.push(
                Diagnostic::error(
                    "invalid-value",
                    "`displayName` must be 1 to 200 printable characters",
                    l.label(&["spec", "displayName"]),
                )
                .hint("any text is fine, without control characters"),
            );
        }
        match plan_by_name.get(t.plan.as_str()) {
            None => diags.push(unknown(
                "unknown-plan",
                "plan",
                &t.plan,
                plan_names,
                l.label(&["spec", "plan"]),
            )),
            Some(plan) => {
                if t.instance == kombiform_model::InstanceMode::Dedicated
                    && !plan.has(PlanFeature::DedicatedInstances)
                {
                    diags.push(
                        Diagnostic::error("plan-disallows-dedicated", format!("tenant `{}` wants a dedicated instance, but plan `{}` does not include `dedicatedInstances`", t.slug, plan.name), l.label(&["spec", "instance"]))
                            .hint("use `instance: shared` or a plan with dedicated instances"),
                    );
                }
            }
        }
        if t.zitadel_org_id.is_empty()
            || t.zitadel_org_id.len() > 32
            || !t.zitadel_org_id.bytes().all(|b| b.is_ascii_digit())
        {
            diags.push(
                Diagnostic::error(
                    "invalid-org-id",
                    format!(
                        "`zitadelOrgId` `{}` is not a Zitadel organization id",
                        t.zitadel_org_id
                    ),
                    l.label(&["spec", "zitadelOrgId"]),
                )
                .hint("Zitadel ids are digits, e.g. \"284715550000000001\"; quote them in YAML"),
            );
        } else if let Some(first) = orgs.get(t.zitadel_org_id.as_str()) {
            diags.push(
                Diagnostic::error(
                    "duplicate-org-id",
                    format!(
                        "Zitadel organization `{}` is mapped to a second tenant (`{}`)",
                        t.zitadel_org_id, t.slug
                    ),
                    l.label(&["spec", "zitadelOrgId"]),
                )
                .also(first.clone().with_message("first mapped here"))
                .hint("each Zitadel organization belongs to exactly one tenant"),
            );
        } else {
            orgs.insert(&t.zitadel_org_id, l.label(&["spec", "zitadelOrgId"]));
        }
        if let Some(c) = &t.stripe_customer_id {
            let at = l.label(&["spec", "stripeCustomerId"]);
            if let Some(first) = customers.get(c.as_str()) {
                diags.push(
                    Diagnostic::error("duplicate-stripe-customer", format!("Stripe customer `{c}` belongs to a second tenant (`{}`)", t.slug), at)
                        .also(first.clone().with_message("first used here"))
                        .hint("a subscription moves exactly one tenant between plans: give each tenant its own customer"),
                );
            } else {
                customers.insert(c, at);
            }
        }
        for (i, e) in t.environments.iter().enumerate() {
            if !env_names.contains(&e.as_str()) {
                diags.push(unknown(
                    "unknown-environment",
                    "environment",
                    e,
                    env_names,
                    l.label(&["spec", "environments", &i.to_string()]),
                ));
            }
        }
        let o = &t.quota_overrides;
        for (field, v) in [
            ("maxUsers", o.max_users),
            ("maxNodes", o.max_nodes),
            ("maxStacks", o.max_stacks),
            ("maxSimulations", o.max_simulations),
        ] {
            if let Some(v) = v {
                let min = u32::from(field == "maxUsers");
                if v < min || v > 1_000_000 {
                    diags.push(
                        Diagnostic::error(
                            "invalid-quota",
                            format!("quota override `{field}` is {v}, outside {min}..=1000000"),
                            l.label(&["spec", "quotaOverrides", field]),
                        )
                        .hint("use a value within the range"),
                    );
                }
            }
        }
    }
}

fn check_flag(
    l: &Located<kombiform_model::FeatureFlag>,
    plan_names: &[&str],
    tenant_names: &HashSet<&str>,
    diags: &mut Vec<Diagnostic>,
) {
    let f = &l.item;
    if let Some(problem) = name_problem(&f.name, 60) {
        diags.push(
            Diagnostic::error(
                "invalid-name",
                format!("flag name `{}` {problem}", f.name),
                l.label(&["metadata", "name"]),
            )
            .hint("use kebab-case, e.g. `new-dashboard`"),
        );
    }
    for plan in f.plans.keys() {
        if !plan_names.contains(&plan.as_str()) {
            let at = l.key_label(&["spec", "plans"], plan);
            diags.push(unknown("unknown-plan", "plan", plan, plan_names, at));
        }
    }
    let mut tenant_list: Option<Vec<&str>> = None;
    for t in f.tenants.keys() {
        if !tenant_names.contains(t.as_str()) {
            let known = tenant_list.get_or_insert_with(|| {
                let mut v: Vec<&str> = tenant_names.iter().copied().collect();
                v.sort();
                v
            });
            let at = l.key_label(&["spec", "tenants"], t);
            diags.push(unknown("unknown-tenant", "tenant", t, known, at));
        }
    }
    if let Some(p) = f.rollout_percent {
        range(
            f64::from(p),
            0.0,
            100.0,
            "`rolloutPercent`",
            "out-of-range",
            l.label(&["spec", "rolloutPercent"]),
            diags,
        );
    }
}

/// `member-writable-identity`: a tenant template that lets members write what identifies,
/// authorises or owns: creating user records (identities are kombify-sso's), writing a user's
/// Zitadel subject or role, or writing the ownership field freely.
fn check_member_writable_identity(
    l: &Located<kombiform_model::CollectionTemplate>,
    diags: &mut Vec<Diagnostic>,
) {
    let c = &l.item;
    if c.kind == CollectionKind::Auth {
        if let Some(level) = c.access.create.filter(|a| *a != AccessLevel::Nobody) {
            diags.push(
                Diagnostic::error(
                    "member-writable-identity",
                    format!(
                        "`{}` lets {} create user records, but a user record is an identity: kombify-sso creates it on the user's first login",
                        c.name,
                        level_who(level)
                    ),
                    l.label(&["spec", "access", "create"]),
                )
                .hint("leave `create` out or set `create: nobody`"),
            );
        }
    }
    for (i, f) in c.fields.iter().enumerate() {
        if f.writable_by != Some(Writers::Members) {
            continue;
        }
        let why = match c.kind {
            CollectionKind::Auth if IDENTITY_FIELDS.contains(&f.name.as_str()) => {
                "identifies or authorises a user: only kombify-sso may write it"
            }
            CollectionKind::Base if f.name == OWNER_FIELD => {
                "is the ownership field: it is set from the caller on create and members cannot change it"
            }
            _ => continue,
        };
        diags.push(
            Diagnostic::error(
                "member-writable-identity",
                format!("`{}.{}` {why}", c.name, f.name),
                l.label(&["spec", "fields", &i.to_string(), "writableBy"]),
            )
            .hint("remove `writableBy: members`"),
        );
    }
}

/// Who an access level admits, in words.
fn level_who(level: AccessLevel) -> &'static str {
    match level {
        AccessLevel::Member => "members",
        AccessLevel::Owner => "owners",
        AccessLevel::Nobody => "nobody",
    }
}

fn check_collections(
    cols: &[Located<kombiform_model::CollectionTemplate>],
    diags: &mut Vec<Diagnostic>,
) {
    let by_name: BTreeMap<&str, &kombiform_model::CollectionTemplate> = cols
        .iter()
        .map(|c| (c.item.name.as_str(), &c.item))
        .collect();
    let names: Vec<&str> = by_name.keys().copied().collect();
    let has_tenant_templates = cols.iter().any(|c| c.item.scope == Scope::Tenant);
    let users_ok = by_name
        .get("users")
        .is_some_and(|u| u.scope == Scope::Tenant && u.kind == CollectionKind::Auth);
    if has_tenant_templates && !users_ok {
        if let Some(first) = cols.iter().find(|c| c.item.scope == Scope::Tenant) {
            diags.push(
                Diagnostic::error("missing-users-collection", "tenant collections need a `users` template with `scope: tenant` and `type: auth`: the SSO service creates users there", first.label(&["metadata", "name"]))
                    .hint("add a CollectionTemplate named `users` (type auth, scope tenant)"),
            );
        }
    }
    for l in cols {
        let c = &l.item;
        if let Some(problem) = ident_problem(&c.name, 40) {
            diags.push(
                Diagnostic::error(
                    "invalid-name",
                    format!("collection template name `{}` {problem}", c.name),
                    l.label(&["metadata", "name"]),
                )
                .hint("use letters, digits and `_`, e.g. `nodes`"),
            );
        }
        if c.scope == Scope::Global && c.name.starts_with("t_") {
            diags.push(
                Diagnostic::error(
                    "invalid-name",
                    format!(
                        "global collection `{}` starts with `t_`, the tenant namespace",
                        c.name
                    ),
                    l.label(&["metadata", "name"]),
                )
                .hint("rename it"),
            );
        }
        if c.scope == Scope::Global && c.kind == CollectionKind::Auth {
            diags.push(Diagnostic::error("invalid-value", "global auth collections are not supported: users live in their tenant's namespace", l.label(&["spec", "type"])).hint("use `scope: tenant` or `type: base`"));
        }
        let mut fields: HashMap<&str, usize> = HashMap::new();
        for (i, f) in c.fields.iter().enumerate() {
            let idx = i.to_string();
            let at = |k: &str| l.label(&["spec", "fields", &idx, k]);
            if let Some(problem) = ident_problem(&f.name, 60) {
                diags.push(
                    Diagnostic::error(
                        "invalid-name",
                        format!("field name `{}` {problem}", f.name),
                        at("name"),
                    )
                    .hint("use letters, digits and `_`"),
                );
            }
            let reserved: &[&str] = if c.kind == CollectionKind::Auth {
                &[
                    "id",
                    "collectionId",
                    "collectionName",
                    "expand",
                    "email",
                    "emailVisibility",
                    "verified",
                    "password",
                    "tokenKey",
                    "passwordConfirm",
                    "oldPassword",
                ]
            } else {
                &["id", "collectionId", "collectionName", "expand"]
            };
            if reserved.contains(&f.name.as_str()) {
                diags.push(
                    Diagnostic::error(
                        "reserved-field",
                        format!("field `{}` is defined by PocketBase itself", f.name),
                        at("name"),
                    )
                    .hint("remove it or choose another name"),
                );
            }
            if let Some(first) = fields.get(f.name.as_str()) {
                diags.push(
                    Diagnostic::error(
                        "duplicate-field",
                        format!("field `{}` is defined twice in `{}`", f.name, c.name),
                        at("name"),
                    )
                    .also(
                        l.label(&["spec", "fields", &first.to_string(), "name"])
                            .with_message("first defined here"),
                    )
                    .hint("rename or remove one of them"),
                );
            } else {
                fields.insert(&f.name, i);
            }
            if let (Some(min), Some(max)) = (f.min, f.max) {
                if min > max {
                    diags.push(
                        Diagnostic::error(
                            "out-of-range",
                            format!("field `{}` has min {min} above max {max}", f.name),
                            at("min"),
                        )
                        .hint("make min at most max"),
                    );
                }
            }
            match f.kind {
                FieldKind::Select if f.values.is_empty() => {
                    diags.push(
                        Diagnostic::error(
                            "missing-values",
                            format!("select field `{}` has no `values`", f.name),
                            at("type"),
                        )
                        .hint("list the allowed values: `values: [a, b]`"),
                    );
                }
                FieldKind::Relation => match f.target.as_deref() {
                    None => diags.push(
                        Diagnostic::error(
                            "missing-target",
                            format!("relation field `{}` has no `target`", f.name),
                            at("type"),
                        )
                        .hint("name the collection template it points at: `target: stacks`"),
                    ),
                    Some(t) => match by_name.get(t) {
                        None => diags.push(unknown(
                            "unknown-collection",
                            "collection template",
                            t,
                            &names,
                            at("target"),
                        )),
                        Some(target) if target.scope != c.scope => diags.push(
                            Diagnostic::error(
                                "invalid-relation",
                                format!(
                                    "`{}` ({:?} scope) cannot point at `{t}` ({:?} scope)",
                                    c.name, c.scope, target.scope
                                )
                                .to_lowercase(),
                                at("target"),
                            )
                            .hint("relations stay within a tenant, or within global collections"),
                        ),
                        Some(_) => {}
                    },
                },
                _ => {}
            }
            if f.kind != FieldKind::Relation && f.target.is_some() {
                diags.push(
                    Diagnostic::error(
                        "invalid-value",
                        format!("field `{}` has a `target` but is not a relation", f.name),
                        at("target"),
                    )
                    .hint("remove `target` or use `type: relation`"),
                );
            }
        }
        for (i, ix) in c.indexes.iter().enumerate() {
            for (j, f) in ix.fields.iter().enumerate() {
                let known = fields.contains_key(f.as_str())
                    || matches!(f.as_str(), "id" | "created" | "updated")
                    || (c.kind == CollectionKind::Auth
                        && matches!(f.as_str(), "email" | "verified"));
                if !known {
                    let known_fields: Vec<&str> =
                        c.fields.iter().map(|f| f.name.as_str()).collect();
                    diags.push(unknown(
                        "unknown-field",
                        "field",
                        f,
                        &known_fields,
                        l.label(&["spec", "indexes", &i.to_string(), "fields", &j.to_string()]),
                    ));
                }
            }
            if ix.fields.is_empty() {
                diags.push(
                    Diagnostic::error(
                        "invalid-list",
                        "an index needs at least one field",
                        l.label(&["spec", "indexes", &i.to_string()]),
                    )
                    .hint("list the fields: `fields: [name]`"),
                );
            }
        }
        if c.kind == CollectionKind::Base && c.scope == Scope::Tenant {
            let levels = c.levels();
            let uses_owner = [levels.read, levels.create, levels.update, levels.delete]
                .contains(&AccessLevel::Owner);
            let owner_ok = c.fields.iter().any(|f| {
                f.name == OWNER_FIELD
                    && f.kind == FieldKind::Relation
                    && f.target.as_deref() == Some("users")
                    && f.max_select.unwrap_or(1) == 1
            });
            if uses_owner && !owner_ok {
                diags.push(
                    Diagnostic::error("missing-owner-field", format!("`{}` grants access to the record's owner, but has no single `owner` relation to `users`", c.name), l.key_label(&["spec"], "access"))
                        .hint("add `{name: owner, type: relation, target: users, maxSelect: 1}` or use `member`/`nobody`"),
                );
            }
        }
        if c.scope == Scope::Tenant {
            check_member_writable_identity(l, diags);
        }
    }
    // Relation cycles: collections must be creatable in some order.
    let mut g: DiGraph<&str, usize> = DiGraph::new();
    let idx: HashMap<&str, _> = names.iter().map(|n| (*n, g.add_node(*n))).collect();
    for l in cols {
        for (i, f) in l.item.fields.iter().enumerate() {
            if let (FieldKind::Relation, Some(t)) = (f.kind, f.target.as_deref()) {
                if let (Some(&a), Some(&b)) = (idx.get(l.item.name.as_str()), idx.get(t)) {
                    if a != b {
                        g.add_edge(a, b, i);
                    }
                }
            }
        }
    }
    for scc in tarjan_scc(&g) {
        if scc.len() < 2 {
            continue;
        }
        let mut members: Vec<&str> = scc.iter().map(|n| g[*n]).collect();
        members.sort();
        let pos: HashMap<&str, usize> = members.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let order = cycle_order(&(0..members.len()).collect::<Vec<_>>(), |i| {
            by_name
                .get(members[i])
                .map(|c| {
                    c.fields
                        .iter()
                        .filter_map(|f| f.target.as_deref())
                        .filter_map(|t| pos.get(t).copied())
                        .collect()
                })
                .unwrap_or_default()
        });
        let cyc: Vec<&str> = order.iter().map(|i| members[*i]).collect();
        let first = cyc[0];
        let next = cyc.get(1).copied().unwrap_or(first);
        if let Some(l) = cols.iter().find(|c| c.item.name == first) {
            let fi = l
                .item
                .fields
                .iter()
                .position(|f| f.target.as_deref() == Some(next))
                .unwrap_or(0);
            diags.push(
                Diagnostic::error(
                    "dependency-cycle",
                    format!(
                        "collection relations form a cycle: {} -> {}",
                        cyc.join(" -> "),
                        first
                    ),
                    l.label(&["spec", "fields", &fi.to_string(), "target"]),
                )
                .hint("break the cycle: one of these relations must go"),
            );
        }
    }
}
