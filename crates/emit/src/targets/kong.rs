//! The Kong target, pure part: the gateway's config as one deliverable resource, the platform
//! token keys it accepts, and its entities as graph nodes, addressed `kong.<entity>.<name>`
//! (`kong.config.gateway`, `kong.token_key.k2026a`, `kong.route.stackkits-api`,
//! `kong.consumer.acme`).
//!
//! - [`CONFIG`] carries what is delivered: the config file's content-addressed name, its
//!   SHA-256 and size. A config change is a visible update of its hash; the Kong provider
//!   delivers the file as a whole (a new revision of the gateway serving exactly that file).
//! - `kong.token_key.<id>` per platform token key (algorithm, public key fingerprint,
//!   whether kombify-sso signs with it), so that a rotation reads in a plan as an add (a new
//!   key, every tenant gets a credential for it), an overlap (`signs` moves; both accepted)
//!   and a later removal (the old key's credentials go).
//! - Entities (services, routes, consumers, ...) carry no attributes: they place the gateway
//!   in the dependency graph and show which entities a config change adds or removes.
//!
//! The config depends on every other Kong resource and on Kong's Container App, so it is
//! delivered last. Not here: the delivery itself (`kombiform_engine::providers::kong`), or the
//! config text (`crate::kong`).

use std::collections::BTreeMap;

use serde_json::{json, Map};
use sha2::{Digest, Sha256};

use super::{azure, postgres, Target};
use kombiform_model::{Access, Env, KongEdition, Protocol};
use kombiform_plan::{Action, Change, Resource};

/// The Kong target.
#[derive(Debug)]
pub struct Kong;

impl Target for Kong {
    fn name(&self) -> &'static str {
        "kong"
    }

    fn desired(&self, env: Env<'_>) -> Vec<Resource> {
        desired(env)
    }

    /// Every gateway entity is ours: a delivered config replaces the whole gateway config.
    fn owns(&self, address: &str) -> bool {
        address.starts_with("kong.")
    }

    /// A token key kombify-sso still signs with is never removed: the tokens it signed would
    /// be refused for up to `ttlSeconds`. The rotation moves `signs` first (one apply), then
    /// removes the key (a later apply).
    fn refusal(&self, change: &Change) -> Option<String> {
        let live = change.live.as_ref()?;
        let removed = change.action == Action::Delete;
        let signing = live.attrs.get("signs").and_then(serde_json::Value::as_bool) == Some(true);
        (removed && signing && change.address.starts_with("kong.token_key.")).then(|| {
            "kombify-sso still signs with this key: move `signs: true` to another key first, \
             and remove this one in a later apply, once `platformTokens.ttlSeconds` have passed"
                .to_string()
        })
    }
}

/// The address of the delivered config.
pub const CONFIG: &str = "kong.config.gateway";

/// `kong.<entity>.<name>`.
pub fn address(entity: &str, name: &str) -> String {
    format!("kong.{entity}.{name}")
}

/// The SHA-256 of a config, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    kombiform_model::hex(&Sha256::digest(bytes))
}

/// The content-addressed file name of a config: `kong-<first 16 hex digits of its SHA-256>.yaml`.
pub fn file_name(sha256: &str) -> String {
    format!("kong-{}.yaml", sha256.get(..16).unwrap_or(sha256))
}

/// The attributes of [`CONFIG`] for a config text.
pub fn config_attrs(edition: KongEdition, text: &str) -> Map<String, serde_json::Value> {
    let sha = sha256_hex(text.as_bytes());
    let mut attrs = Map::new();
    attrs.insert(
        "edition".into(),
        json!(match edition {
            KongEdition::Oss => "oss",
            KongEdition::Enterprise => "enterprise",
        }),
    );
    attrs.insert("file".into(), json!(file_name(&sha)));
    attrs.insert("sha256".into(), json!(sha));
    attrs.insert("bytes".into(), json!(text.len()));
    attrs
}

/// Every Kong resource of `env`: entities, token keys and the config.
pub fn desired(env: Env<'_>) -> Vec<Resource> {
    desired_with(env, &crate::kong::render(env))
}

/// [`desired`] for an already rendered config text.
pub fn desired_with(env: Env<'_>, text: &str) -> Vec<Resource> {
    let p = env.platform;
    let mut needs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mtls = p.kong.upstream_mtls.as_ref().map(|_| {
        let c = address("certificate", "upstream-client");
        let ca = address("ca_certificate", "upstream-ca");
        needs.entry(c.clone()).or_default();
        needs.entry(ca.clone()).or_default();
        (c, ca)
    });
    for s in p.services.iter().filter(|s| s.enabled) {
        let ks = address("service", &s.name);
        let deps = needs.entry(ks.clone()).or_default();
        if p.azure.is_some() {
            deps.push(azure::container_app(p, &s.name));
        }
        if let (Some((c, ca)), Protocol::Https) = (&mtls, s.protocol) {
            deps.push(c.clone());
            deps.push(ca.clone());
        }
        for r in s.routes.iter().filter(|r| r.access != Access::Internal) {
            needs
                .entry(address("route", &r.name))
                .or_default()
                .push(ks.clone());
        }
    }
    let enterprise = p.kong.edition == KongEdition::Enterprise;
    if enterprise {
        for plan in env.plans() {
            needs
                .entry(address("consumer_group", &plan.name))
                .or_default();
        }
    }
    for t in env.tenants() {
        let deps = needs.entry(address("consumer", &t.slug)).or_default();
        deps.push(postgres::tenant_address(&t.slug));
        if enterprise {
            deps.push(address("consumer_group", &t.plan));
        }
    }
    let mut out: Vec<Resource> = needs
        .into_iter()
        .map(|(address, mut deps)| {
            deps.sort();
            deps.dedup();
            let mut r = Resource::new(address, Map::new());
            r.depends_on = deps;
            r
        })
        .collect();
    if !enterprise {
        for k in &p.sso.platform_tokens.keys {
            let mut attrs = Map::new();
            attrs.insert("algorithm".into(), json!(k.algorithm.as_str()));
            let fp = sha256_hex(k.public_key_pem.trim().as_bytes());
            attrs.insert(
                "public_key_sha256".into(),
                json!(fp.get(..16).unwrap_or(&fp)),
            );
            attrs.insert("signs".into(), json!(k.signs));
            out.push(Resource::new(address("token_key", &k.id), attrs));
        }
    }
    let mut config = Resource::new(CONFIG, config_attrs(p.kong.edition, text));
    config.depends_on = out.iter().map(|r| r.address.clone()).collect();
    if p.azure.is_some() {
        config.depends_on.push(azure::container_app(p, "kong"));
    }
    config.depends_on.sort();
    out.push(config);
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kombiform_test_support::example_model;

    #[test]
    fn the_config_is_one_resource_named_by_its_hash() {
        let m = example_model();
        let env = m.env("prod").unwrap();
        let text = crate::kong::render(env);
        let r = desired(env);
        let config = r.iter().find(|r| r.address == CONFIG).unwrap();
        let sha = sha256_hex(text.as_bytes());
        assert_eq!(config.attrs["sha256"], sha.as_str());
        assert_eq!(config.attrs["file"], file_name(&sha).as_str());
        assert_eq!(config.attrs["bytes"], text.len());
        assert!(config
            .depends_on
            .contains(&"kong.token_key.k2026a".to_string()));
        assert!(config
            .depends_on
            .contains(&"kong.consumer.acme".to_string()));
        assert!(config
            .depends_on
            .iter()
            .any(|d| d.starts_with("azure.containerapp.")));
        let key = r
            .iter()
            .find(|r| r.address == "kong.token_key.k2026a")
            .unwrap();
        assert_eq!(key.attrs["signs"], true);
        assert_eq!(key.attrs["algorithm"], "ES256");
        // Internal routes are not on the gateway.
        assert!(!r.iter().any(|r| r.address == "kong.route.sso-exchange"));
    }

    #[test]
    fn the_signing_key_is_never_removed() {
        let key = |signs: bool| {
            let mut attrs = Map::new();
            attrs.insert("signs".into(), json!(signs));
            Resource::new("kong.token_key.k1", attrs)
        };
        let delete = |signs: bool| Change {
            address: "kong.token_key.k1".into(),
            action: Action::Delete,
            attrs: Vec::new(),
            destructive: false,
            drift: false,
            desired: None,
            live: Some(key(signs)),
        };
        assert!(Kong.refusal(&delete(true)).is_some());
        assert!(Kong.refusal(&delete(false)).is_none());
        assert!(Kong.owns("kong.consumer.acme") && !Kong.owns("postgres.tenant.acme"));
    }

    #[test]
    fn file_names_are_content_addressed() {
        let sha = sha256_hex(b"x");
        assert_eq!(file_name(&sha), format!("kong-{}.yaml", &sha[..16]));
        assert_ne!(file_name(&sha256_hex(b"y")), file_name(&sha));
    }
}
