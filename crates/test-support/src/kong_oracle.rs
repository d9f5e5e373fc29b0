//! The project's own Kong schema oracle: a Kong declarative file (DB-less / decK format)
//! checked the way decK and Kong OSS 3.9 would judge it, with nothing outside the repository
//! (no Kong, no decK, no Python).
//!
//! Four layers, each error prefixed with its layer:
//! 1. `[deck-schema]`: decK's own JSON Schema (draft-04) over the whole document, what
//!    `deck file validate` checks before anything else.
//! 2. `[plugin:NAME]` (with [`Options::strict_plugins`]): each plugin's `config` against the
//!    schema Kong publishes for that plugin, with `additionalProperties: false` added to every
//!    object that lists its properties (unknown keys are caught) and the non-standard
//!    `shorthand_fields` accepted as keys. A plugin without a schema here is refused unless
//!    it is bundled with Kong OSS or allowed by name.
//! 3. `[oss]` (with [`Options::oss_dbless`]): what Kong OSS 3.9 in DB-less mode refuses although
//!    layers 1 and 2 accept it (the published schemas come from Kong Enterprise):
//!    Enterprise-only entities and fields, plugins not bundled with OSS, `policy: cluster`
//!    without a database, TLS fields on plain services, `sources`/`destinations` on HTTP routes.
//! 4. `[ref]`: every reference resolves (certificates, CA certificates, the service, route and
//!    consumer of a plugin), what decK checks after the schema.
//!
//! The schemas are test data under `tests/fixtures/kong/` (Kong's and decK's, Apache-2.0; see
//! the README there). The rules of layer 3 follow Kong 3.9.3's sources as
//! `shared/ref/kong.md` quotes them. Not here: the typed checks of what kombiform emits
//! ([`crate::kong_check`]), which know our conventions; this oracle knows only Kong's.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use kombiform_model::KongEdition;

use crate::kong_check::OSS_PLUGINS;

/// decK's schema of declarative files.
const DECK_SCHEMA: &str = include_str!("../../../tests/fixtures/kong/kong_json_schema.json");

/// The plugins with a published configuration schema here: name, schema.
const PLUGIN_SCHEMAS: [(&str, &str); 9] = [
    (
        "jwt",
        include_str!("../../../tests/fixtures/kong/plugin-schemas-3.9/Jwt.json"),
    ),
    (
        "rate-limiting",
        include_str!("../../../tests/fixtures/kong/plugin-schemas-3.9/RateLimiting.json"),
    ),
    (
        "acl",
        include_str!("../../../tests/fixtures/kong/plugin-schemas-3.9/Acl.json"),
    ),
    (
        "cors",
        include_str!("../../../tests/fixtures/kong/plugin-schemas-3.9/Cors.json"),
    ),
    (
        "request-transformer",
        include_str!("../../../tests/fixtures/kong/plugin-schemas-3.9/RequestTransformer.json"),
    ),
    (
        "correlation-id",
        include_str!("../../../tests/fixtures/kong/plugin-schemas-3.9/CorrelationId.json"),
    ),
    (
        "session",
        include_str!("../../../tests/fixtures/kong/plugin-schemas-3.9/Session.json"),
    ),
    (
        "ip-restriction",
        include_str!("../../../tests/fixtures/kong/plugin-schemas-3.9/IpRestriction.json"),
    ),
    (
        "request-termination",
        include_str!("../../../tests/fixtures/kong/plugin-schemas-3.9/RequestTermination.json"),
    ),
];

/// Top-level keys decK knows that a Kong OSS 3.9 DB-less file must not carry (Enterprise or
/// decK-only).
const NOT_OSS_DBLESS_KEYS: [&str; 14] = [
    "consumer_groups",
    "consumer_group_consumers",
    "consumer_group_plugins",
    "partials",
    "plugins_partials",
    "rbac_roles",
    "licenses",
    "custom_entities",
    "service_packages",
    "cloned_plugins",
    "custom_plugins",
    "_info",
    "_konnect",
    "_workspace",
];

/// Plugin entity fields Kong OSS does not have.
const NOT_OSS_PLUGIN_FIELDS: [&str; 6] = [
    "consumer_group",
    "ordering",
    "partials",
    "condition",
    "_config",
    "run_on",
];

/// Service protocols Kong 3.9 accepts.
const SERVICE_PROTOCOLS: [&str; 10] = [
    "grpc",
    "grpcs",
    "http",
    "https",
    "tcp",
    "tls",
    "tls_passthrough",
    "udp",
    "ws",
    "wss",
];

/// Which layers to run beyond decK's schema and the references.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Check each plugin's `config` against its published schema, unknown keys refused.
    pub strict_plugins: bool,
    /// Apply Kong OSS 3.9's DB-less rules.
    pub oss_dbless: bool,
    /// Plugins allowed by name although there is no schema for them here.
    pub allow_plugins: Vec<String>,
    /// The file is in Kong's own DB-less format, which has Enterprise entities decK's schema
    /// does not know (top-level `consumer_group_consumers`, `consumer_group_plugins`): decK's
    /// schema judges its decK form ([`deck_form`], what `deck file format` converts from).
    pub native_dbless: bool,
}

impl Options {
    /// What a file of `edition` must pass: every layer for OSS; for Enterprise (in Kong's
    /// DB-less format), strict plugins with `openid-connect` allowed by name (there is no
    /// schema for it here; the typed checks cover its config).
    pub fn for_edition(edition: KongEdition) -> Options {
        match edition {
            KongEdition::Oss => Options {
                strict_plugins: true,
                oss_dbless: true,
                allow_plugins: Vec::new(),
                native_dbless: false,
            },
            KongEdition::Enterprise => Options {
                strict_plugins: true,
                oss_dbless: false,
                allow_plugins: vec!["openid-connect".to_string()],
                native_dbless: true,
            },
        }
    }
}

/// Checks a Kong declarative file given as YAML (or JSON) text; returns every error found
/// (empty: accepted). `Err` only when the text is not one YAML document.
pub fn check_yaml(text: &str, opts: &Options) -> Result<Vec<String>> {
    let (docs, diags) = kombiform_spec::yaml::parse(text, 0);
    if let Some(d) = diags.first() {
        bail!("not YAML: {}", d.message);
    }
    let [doc] = docs.as_slice() else {
        bail!("expected one YAML document, found {}", docs.len());
    };
    let mut diags = Vec::new();
    let json = doc.root.to_json(0, &mut diags);
    if let Some(d) = diags.first() {
        bail!("not representable as JSON: {}", d.message);
    }
    check(&json, opts)
}

/// Checks a Kong declarative document; returns every error found (empty: accepted). `Err`
/// only when a schema of the test data does not compile (a broken fixture).
pub fn check(doc: &Value, opts: &Options) -> Result<Vec<String>> {
    let deck = if opts.native_dbless {
        deck_form(doc)
    } else {
        doc.clone()
    };
    let doc = &deck;
    let mut errors = deck_schema_errors(doc)?;
    if opts.strict_plugins {
        errors.extend(plugin_errors(doc, opts)?);
    }
    if opts.oss_dbless {
        errors.extend(oss_dbless_errors(doc, &opts.allow_plugins));
    }
    errors.extend(reference_errors(doc));
    Ok(errors)
}

/// The decK form of a document in Kong's own DB-less format: the inverse of `deck file format`
/// (deck `cmd/file_format.go` `convertDeckToDBless`). Each `consumer_group_consumers` entry
/// `{consumer, consumer_group}` becomes `{name: consumer_group}` in that consumer's `groups`;
/// each `consumer_group_plugins` entry moves into its group's `plugins` (without its
/// `consumer_group`). Entries naming a consumer or group the file lacks stay where they are
/// (decK's schema then refuses the key). A document without those keys is returned as is.
pub fn deck_form(doc: &Value) -> Value {
    let mut doc = doc.clone();
    let Some(top) = doc.as_object_mut() else {
        return doc;
    };
    let mut left = Vec::new();
    if let Some(Value::Array(members)) = top.remove("consumer_group_consumers") {
        for m in members {
            let (Some(consumer), Some(group)) = (
                m.get("consumer").and_then(Value::as_str),
                m.get("consumer_group").and_then(Value::as_str),
            ) else {
                left.push(m);
                continue;
            };
            let target = top
                .get_mut("consumers")
                .and_then(Value::as_array_mut)
                .and_then(|cs| {
                    cs.iter_mut()
                        .find(|c| c.get("username").and_then(Value::as_str) == Some(consumer))
                })
                .and_then(Value::as_object_mut);
            match target {
                Some(c) => {
                    let groups = c
                        .entry("groups")
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Some(g) = groups.as_array_mut() {
                        g.push(serde_json::json!({ "name": group }));
                    }
                }
                None => left.push(m),
            }
        }
    }
    if !left.is_empty() {
        top.insert("consumer_group_consumers".into(), Value::Array(left));
    }
    let mut left = Vec::new();
    if let Some(Value::Array(plugins)) = top.remove("consumer_group_plugins") {
        for mut p in plugins {
            let group = p
                .get("consumer_group")
                .and_then(Value::as_str)
                .map(str::to_string);
            let target = group.as_deref().and_then(|g| {
                top.get_mut("consumer_groups")
                    .and_then(Value::as_array_mut)
                    .and_then(|gs| {
                        gs.iter_mut()
                            .find(|x| x.get("name").and_then(Value::as_str) == Some(g))
                    })
                    .and_then(Value::as_object_mut)
            });
            match target {
                Some(g) => {
                    if let Some(o) = p.as_object_mut() {
                        o.remove("consumer_group");
                    }
                    let plugins = g
                        .entry("plugins")
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Some(a) = plugins.as_array_mut() {
                        a.push(p);
                    }
                }
                None => left.push(p),
            }
        }
    }
    if !left.is_empty() {
        top.insert("consumer_group_plugins".into(), Value::Array(left));
    }
    doc
}

fn compiled(
    cell: &'static OnceLock<Result<jsonschema::Validator, String>>,
    make: impl FnOnce() -> Result<jsonschema::Validator, String>,
) -> Result<&'static jsonschema::Validator> {
    cell.get_or_init(make)
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn deck_validator() -> Result<&'static jsonschema::Validator> {
    static CELL: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    compiled(&CELL, || {
        let schema: Value = serde_json::from_str(DECK_SCHEMA)
            .map_err(|e| format!("kong_json_schema.json is not JSON: {e}"))?;
        jsonschema::draft4::new(&schema)
            .map_err(|e| format!("kong_json_schema.json does not compile: {e}"))
    })
}

fn deck_schema_errors(doc: &Value) -> Result<Vec<String>> {
    let v = deck_validator()?;
    let mut errors: Vec<(String, String)> = v
        .iter_errors(doc)
        .map(|e| {
            (
                e.instance_path().as_str().to_string(),
                short(&e.to_string()),
            )
        })
        .collect();
    errors.sort();
    Ok(errors
        .into_iter()
        .map(|(path, msg)| format!("[deck-schema] {}: {msg}", or_root(&path)))
        .collect())
}

fn or_root(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

/// Error messages quote the offending value; a whole document is no help in a report.
fn short(msg: &str) -> String {
    if msg.chars().count() > 200 {
        let cut: String = msg.chars().take(200).collect();
        format!("{cut}…")
    } else {
        msg.to_string()
    }
}

/// The validator of one plugin's `config`, compiled once per plugin.
fn plugin_validator(name: &str) -> Result<Option<&'static jsonschema::Validator>> {
    type Compiled = Vec<(&'static str, Result<jsonschema::Validator, String>)>;
    static CELL: OnceLock<Compiled> = OnceLock::new();
    let all = CELL.get_or_init(|| {
        PLUGIN_SCHEMAS
            .iter()
            .map(|(name, text)| (*name, config_validator(name, text)))
            .collect()
    });
    match all.iter().find(|(n, _)| *n == name) {
        None => Ok(None),
        Some((_, Ok(v))) => Ok(Some(v)),
        Some((_, Err(e))) => bail!("{e}"),
    }
}

/// The schema of `properties.config`, closed: `shorthand_fields` become ordinary properties,
/// and every object listing its properties refuses others.
fn config_validator(name: &str, text: &str) -> Result<jsonschema::Validator, String> {
    let schema: Value =
        serde_json::from_str(text).map_err(|e| format!("schema of {name} is not JSON: {e}"))?;
    let mut config = schema
        .pointer("/properties/config")
        .cloned()
        .ok_or_else(|| format!("schema of {name} has no properties.config"))?;
    let shorthands = config
        .as_object_mut()
        .and_then(|o| o.remove("shorthand_fields"))
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    close_objects(&mut config);
    if let Some(props) = config
        .as_object_mut()
        .map(|o| {
            o.entry("properties")
                .or_insert_with(|| Value::Object(Default::default()))
        })
        .and_then(Value::as_object_mut)
    {
        props.extend(shorthands);
    }
    jsonschema::draft7::new(&config).map_err(|e| format!("schema of {name} does not compile: {e}"))
}

/// Sets `additionalProperties: false` on every object schema that lists its properties and
/// says nothing about others.
fn close_objects(node: &mut Value) {
    match node {
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) == Some("object")
                && o.contains_key("properties")
                && !o.contains_key("additionalProperties")
            {
                o.insert("additionalProperties".into(), Value::Bool(false));
            }
            o.values_mut().for_each(close_objects);
        }
        Value::Array(a) => a.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// Every plugin of the document, wherever it is nested (top level, under a service, a route
/// or a consumer), with its JSON pointer.
fn plugins(doc: &Value) -> Vec<(String, &Value)> {
    fn walk<'a>(node: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
        match node {
            Value::Object(o) => {
                for (k, v) in o {
                    let here = format!("{path}/{k}");
                    if k == "plugins" {
                        if let Value::Array(items) = v {
                            for (i, p) in items.iter().enumerate() {
                                if p.is_object() {
                                    out.push((format!("{here}/{i}"), p));
                                }
                            }
                        }
                    }
                    walk(v, &here, out);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &format!("{path}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, "", &mut out);
    out
}

fn plugin_errors(doc: &Value, opts: &Options) -> Result<Vec<String>> {
    let mut errors = Vec::new();
    for (path, p) in plugins(doc) {
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            continue; // decK's schema reports a plugin without a name
        };
        let Some(validator) = plugin_validator(name)? else {
            let known = OSS_PLUGINS.contains(&name) || opts.allow_plugins.iter().any(|a| a == name);
            if !known {
                errors.push(format!(
                    "[plugin] {path}: no schema for plugin '{name}' (unknown or not allowed)"
                ));
            }
            continue;
        };
        if let Some(config) = p.get("config").filter(|c| c.is_object()) {
            for e in validator.iter_errors(config) {
                errors.push(format!(
                    "[plugin:{name}] {path}/config{}: {}",
                    e.instance_path().as_str(),
                    short(&e.to_string())
                ));
            }
        }
    }
    Ok(errors)
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn oss_dbless_errors(doc: &Value, allow: &[String]) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(o) = doc.as_object() {
        for k in o
            .keys()
            .filter(|k| NOT_OSS_DBLESS_KEYS.contains(&k.as_str()))
        {
            errors.push(format!(
                "[oss] /{k}: not a Kong OSS 3.9 DB-less top-level key (Enterprise or decK-only)"
            ));
        }
    }
    for (i, c) in items(doc, "consumers").iter().enumerate() {
        if c.get("groups").is_some() {
            errors.push(format!(
                "[oss] /consumers/{i}/groups: consumer groups are Enterprise-only"
            ));
        }
    }
    for (path, p) in plugins(doc) {
        errors.extend(oss_plugin_errors(&path, p, allow));
    }
    for (i, s) in items(doc, "services").iter().enumerate() {
        errors.extend(oss_service_errors(&format!("/services/{i}"), s));
    }
    errors
}

fn oss_plugin_errors(path: &str, p: &Value, allow: &[String]) -> Vec<String> {
    let mut errors = Vec::new();
    let name = str_at(p, "name").unwrap_or_default();
    if !name.is_empty() && !OSS_PLUGINS.contains(&name) && !allow.iter().any(|a| a == name) {
        errors.push(format!(
            "[oss] {path}: plugin '{name}' is not bundled with Kong OSS 3.9"
        ));
    }
    for f in NOT_OSS_PLUGIN_FIELDS {
        if p.get(f).is_some() {
            errors.push(format!(
                "[oss] {path}/{f}: field not in the OSS plugins entity"
            ));
        }
    }
    let config = p.get("config").cloned().unwrap_or(Value::Null);
    if name == "rate-limiting" {
        let policy = str_at(&config, "policy");
        if policy == Some("cluster") {
            errors.push(format!(
                "[oss] {path}/config/policy: 'cluster' is not allowed when database=off"
            ));
        }
        if str_at(&config, "limit_by") == Some("consumer-group") {
            errors.push(format!(
                "[oss] {path}/config/limit_by: 'consumer-group' is Enterprise-only"
            ));
        }
        let host = config
            .pointer("/redis/host")
            .or_else(|| config.get("redis_host"))
            .filter(|h| !h.is_null());
        if policy == Some("redis") && host.is_none() {
            errors.push(format!(
                "[oss] {path}/config/redis/host: required when policy is redis"
            ));
        }
    }
    if name == "acl" && config.get("include_consumer_groups").is_some() {
        errors.push(format!(
            "[oss] {path}/config/include_consumer_groups: Enterprise-only field"
        ));
    }
    errors
}

fn oss_service_errors(path: &str, s: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    if s.get("tls_sans").is_some() {
        errors.push(format!(
            "[oss] {path}/tls_sans: Enterprise-only service field"
        ));
    }
    let proto = str_at(s, "protocol").unwrap_or("http");
    if !SERVICE_PROTOCOLS.contains(&proto) {
        errors.push(format!(
            "[oss] {path}/protocol: '{proto}' is not a valid protocol"
        ));
    }
    for (j, ca) in items(s, "ca_certificates").iter().enumerate() {
        if !ca.as_str().is_some_and(is_uuid) {
            errors.push(format!("[oss] {path}/ca_certificates/{j}: must be a UUID"));
        }
    }
    if proto != "https" && proto != "tls" {
        for f in [
            "client_certificate",
            "tls_verify",
            "tls_verify_depth",
            "ca_certificates",
        ] {
            if s.get(f).is_some_and(|v| !v.is_null()) {
                errors.push(format!(
                    "[oss] {path}/{f}: only allowed when protocol is https or tls"
                ));
            }
        }
    }
    for (j, r) in items(s, "routes").iter().enumerate() {
        let protocols: Vec<&str> = match r.get("protocols").and_then(Value::as_array) {
            Some(p) => p.iter().filter_map(Value::as_str).collect(),
            None => vec!["http", "https"],
        };
        if protocols.iter().any(|p| *p == "http" || *p == "https") {
            for f in ["sources", "destinations"] {
                if r.get(f)
                    .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
                {
                    errors.push(format!(
                        "[oss] {path}/routes/{j}/{f}: cannot be set when protocols is http/https"
                    ));
                }
            }
        }
    }
    errors
}

/// The names and ids an entity can be referenced by.
fn keys_of<'a>(entities: impl Iterator<Item = &'a Value>, fields: &[&str]) -> BTreeSet<String> {
    entities
        .flat_map(|e| fields.iter().filter_map(|f| str_at(e, f)))
        .map(str::to_string)
        .collect()
}

fn reference_errors(doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let certs = keys_of(items(doc, "certificates").iter(), &["id"]);
    let cas = keys_of(items(doc, "ca_certificates").iter(), &["id"]);
    let services = items(doc, "services");
    let service_keys = keys_of(services.iter(), &["name", "id"]);
    let routes = services
        .iter()
        .flat_map(|s| items(s, "routes"))
        .chain(items(doc, "routes"));
    let route_keys = keys_of(routes, &["name", "id"]);
    let consumer_keys = keys_of(
        items(doc, "consumers").iter(),
        &["username", "id", "custom_id"],
    );
    for (i, s) in services.iter().enumerate() {
        if let Some(cc) = str_at(s, "client_certificate") {
            if !certs.contains(cc) {
                errors.push(format!(
                    "[ref] /services/{i}/client_certificate: no certificate with id {cc}"
                ));
            }
        }
        for (j, ca) in items(s, "ca_certificates").iter().enumerate() {
            if let Some(ca) = ca.as_str().filter(|ca| !cas.contains(*ca)) {
                errors.push(format!(
                    "[ref] /services/{i}/ca_certificates/{j}: no ca_certificate with id {ca}"
                ));
            }
        }
    }
    for (path, p) in plugins(doc) {
        for (field, keys) in [
            ("service", &service_keys),
            ("route", &route_keys),
            ("consumer", &consumer_keys),
        ] {
            let reference = match p.get(field) {
                Some(Value::String(s)) => Some(s.as_str()),
                Some(o @ Value::Object(_)) => str_at(o, "id").or_else(|| str_at(o, "name")),
                _ => None,
            };
            if let Some(r) = reference.filter(|r| !keys.contains(*r)) {
                errors.push(format!("[ref] {path}/{field}: '{r}' does not exist"));
            }
        }
    }
    errors
}

/// Reads and checks a file; the error names the file.
pub fn check_file(path: &std::path::Path, opts: &Options) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    check_yaml(&text, opts).with_context(|| format!("checking {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn oss() -> Options {
        Options::for_edition(KongEdition::Oss)
    }

    fn minimal() -> Value {
        json!({
            "_format_version": "3.0",
            "services": [{
                "name": "api", "url": "http://api.internal:8080",
                "routes": [{"name": "api", "paths": ["/api"]}],
                "plugins": [{"name": "rate-limiting", "config": {"minute": 60, "policy": "local"}}]
            }],
            "consumers": [{"username": "acme"}],
            "plugins": [{"name": "cors", "config": {"origins": ["https://app.example"]}}]
        })
    }

    fn errors(doc: &Value) -> Vec<String> {
        check(doc, &oss()).unwrap()
    }

    #[test]
    fn a_plain_file_is_accepted() {
        assert_eq!(errors(&minimal()), Vec::<String>::new());
    }

    #[test]
    fn decks_schema_refuses_unknown_entity_fields() {
        let mut doc = minimal();
        doc["services"][0]["colour"] = json!("blue");
        let e = errors(&doc);
        assert!(
            e.iter()
                .any(|e| e.starts_with("[deck-schema] /services/0") && e.contains("colour")),
            "{e:?}"
        );
    }

    #[test]
    fn strict_plugins_refuse_unknown_config_keys_and_wrong_types() {
        let mut doc = minimal();
        doc["services"][0]["plugins"][0]["config"]["minutes"] = json!(60);
        doc["plugins"][0]["config"]["origins"] = json!("https://app.example");
        let e = errors(&doc);
        assert!(
            e.iter()
                .any(|e| e.starts_with("[plugin:rate-limiting]") && e.contains("minutes")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|e| e.starts_with("[plugin:cors] /plugins/0/config/origins")),
            "{e:?}"
        );
        let lax = Options {
            strict_plugins: false,
            ..oss()
        };
        assert!(check(&doc, &lax)
            .unwrap()
            .iter()
            .all(|e| !e.starts_with("[plugin")));
    }

    #[test]
    fn oss_dbless_refuses_what_only_enterprise_or_a_database_allows() {
        let mut doc = minimal();
        doc["services"][0]["plugins"][0]["config"]["policy"] = json!("cluster");
        doc["plugins"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "openid-connect"}));
        doc["consumer_groups"] = json!([{"name": "gold"}]);
        doc["services"][0]["tls_verify"] = json!(true);
        let e = errors(&doc);
        for needle in [
            "[oss] /services/0/plugins/0/config/policy: 'cluster' is not allowed",
            "[oss] /plugins/1: plugin 'openid-connect' is not bundled",
            "[oss] /consumer_groups",
            "[oss] /services/0/tls_verify",
        ] {
            assert!(e.iter().any(|e| e.starts_with(needle)), "{needle}: {e:?}");
        }
        // Enterprise allows openid-connect by name and has no DB-less rules.
        let ee = check(&doc, &Options::for_edition(KongEdition::Enterprise)).unwrap();
        assert!(ee.iter().all(|e| !e.starts_with("[oss]")), "{ee:?}");
    }

    #[test]
    fn native_dbless_enterprise_is_judged_in_its_deck_form() {
        let mut doc = minimal();
        doc["consumer_groups"] = json!([{"name": "gold"}]);
        doc["consumer_group_consumers"] = json!([{"consumer": "acme", "consumer_group": "gold"}]);
        let ee = Options::for_edition(KongEdition::Enterprise);
        assert_eq!(check(&doc, &ee).unwrap(), Vec::<String>::new());
        let deck = deck_form(&doc);
        assert_eq!(deck["consumers"][0]["groups"], json!([{"name": "gold"}]));
        assert!(deck.get("consumer_group_consumers").is_none());
        // Without the flag, decK's schema sees Kong's own key and refuses it.
        let deck_only = Options {
            native_dbless: false,
            ..ee.clone()
        };
        assert!(check(&doc, &deck_only)
            .unwrap()
            .iter()
            .any(|e| e.contains("consumer_group_consumers")));
        // A membership of a consumer the file lacks is not hidden.
        doc["consumer_group_consumers"] = json!([{"consumer": "nobody", "consumer_group": "gold"}]);
        assert!(check(&doc, &ee)
            .unwrap()
            .iter()
            .any(|e| e.contains("consumer_group_consumers")));
    }

    #[test]
    fn references_must_resolve() {
        let mut doc = minimal();
        doc["plugins"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "acl", "consumer": "nobody", "config": {"allow": ["x"]}}));
        doc["services"][0]["url"] = json!("https://api.internal");
        doc["services"][0]["client_certificate"] = json!({"id": "x"});
        let e = errors(&doc);
        assert!(
            e.iter()
                .any(|e| e == "[ref] /plugins/1/consumer: 'nobody' does not exist"),
            "{e:?}"
        );
    }

    #[test]
    fn yaml_text_is_read_like_decks_yaml_to_json() {
        let text = "_format_version: \"3.0\"\nservices:\n  - name: api\n    url: http://a:1\n    port: \"80\"\n";
        let e = check_yaml(text, &oss()).unwrap();
        assert!(
            e.iter()
                .any(|e| e.starts_with("[deck-schema] /services/0/port")),
            "a quoted number is a string: {e:?}"
        );
        assert!(check_yaml("a: [", &oss()).is_err());
    }
}
