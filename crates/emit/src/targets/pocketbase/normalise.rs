//! A PocketBase collection (as the import API takes it, or as `GET /api/collections` returns
//! it) turned into the attributes kombiform compares, and the resource around them. Pure.
//!
//! Not HTTP and not the diff: the same function normalises both sides, so that a collection
//! imported from the specs and read back compares equal. What it keeps is what kombiform
//! owns (verified against PocketBase 0.40.6, `shared/ref/pocketbase.md`):
//! - `name`, `type`, the five API rules, and for auth collections the auth options the
//!   emitter writes (only the sub-keys it writes: import merges nested objects, so the keys
//!   it leaves out are PocketBase's).
//! - one attribute per field, `fields.<field id>`: its name, type and every option of its
//!   type, with PocketBase's default filled in where the import body left it out (import
//!   replaces a field as a whole, so an option PocketBase has that we do not write is a
//!   default we own too). Fields are keyed by id because PocketBase matches them by id: a
//!   renamed field (same id, new name) is a change of one attribute, not a drop and an add.
//!   System fields PocketBase adds to auth collections (`password`, `tokenKey`, `email`, ...)
//!   are its own and left out; the `id` primary key is written by the emitter and compared.
//! - `indexes`, sorted, without the two unique indexes PocketBase adds to auth collections.
//!
//! Left out: `id` (kept in `meta`, it is the remote id), `system`, `created`/`updated` (every
//! import bumps them), templates and the auth options kombiform does not set.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use kombiform_model::naming;
use kombiform_plan::Resource;

/// Address prefix of a collection.
pub(crate) const PREFIX: &str = "pocketbase.collection.";

/// The five API rules.
const RULES: [&str; 5] = [
    "listRule",
    "viewRule",
    "createRule",
    "updateRule",
    "deleteRule",
];

/// Auth options kombiform sets: the key, and the sub-keys it sets (`None`: the whole value).
pub(crate) const AUTH_OPTIONS: [(&str, Option<&[&str]>); 11] = [
    ("authRule", None),
    ("manageRule", None),
    ("passwordAuth", Some(&["enabled", "identityFields"])),
    ("oauth2", Some(&["enabled"])),
    ("mfa", Some(&["enabled"])),
    ("otp", Some(&["enabled"])),
    ("authToken", Some(&["duration"])),
    ("passwordResetToken", Some(&["duration"])),
    ("emailChangeToken", Some(&["duration"])),
    ("verificationToken", Some(&["duration"])),
    ("fileToken", Some(&["duration"])),
];

/// The address of the collection named `name`.
pub fn address(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// The collection as a resource: normalised attributes, relation targets (found through
/// `names`, collection id → name) and the tenant as dependencies, the remote id in `meta`.
pub(crate) fn resource(
    collection: &Value,
    names: &BTreeMap<String, String>,
    tenant: Option<&str>,
) -> Resource {
    let name = str_of(collection, "name");
    let id = str_of(collection, "id");
    let mut r = Resource::new(address(name), attrs(collection));
    r.data_bearing = true;
    r.replace_on = vec!["type".to_string()];
    let mut deps: Vec<String> = fields(collection)
        .filter(|f| f.get("type").and_then(Value::as_str) == Some("relation"))
        .filter_map(|f| f.get("collectionId").and_then(Value::as_str))
        .filter(|target| *target != id)
        .map(|target| names.get(target).map_or(target, String::as_str))
        .filter(|target| *target != name)
        .map(address)
        .collect();
    if let Some(slug) = tenant {
        deps.push(super::tenant_dependency(slug));
        r.meta
            .insert("tenant".into(), Value::String(slug.to_string()));
    }
    deps.sort();
    deps.dedup();
    r.depends_on = deps;
    r.meta.insert("id".into(), Value::String(id.to_string()));
    r
}

/// The tenant slug of a tenant collection `t_<ident>_<template>`, given the tenant templates'
/// names (see [`naming::tenant_of_collection`]).
pub(crate) fn tenant_of(name: &str, templates: &[String]) -> Option<String> {
    naming::tenant_of_collection(name, templates)
}

/// The attributes kombiform compares, keys in a fixed (sorted) order.
pub fn attrs(c: &Value) -> Map<String, Value> {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    let Some(obj) = c.as_object() else {
        // Not a collection at all (a bug upstream): keep it visible as a difference.
        out.insert("invalid".into(), c.clone());
        return out.into_iter().collect();
    };
    for key in ["name", "type"] {
        out.insert(key.into(), obj.get(key).cloned().unwrap_or(Value::Null));
    }
    for key in RULES {
        out.insert(key.into(), obj.get(key).cloned().unwrap_or(Value::Null));
    }
    if obj.get("type").and_then(Value::as_str) == Some("auth") {
        for (key, sub) in AUTH_OPTIONS {
            let v = obj.get(key).cloned().unwrap_or(Value::Null);
            let v = match sub {
                None => v,
                Some(keys) => Value::Object(
                    keys.iter()
                        .map(|k| ((*k).to_string(), v.get(*k).cloned().unwrap_or(Value::Null)))
                        .collect(),
                ),
            };
            out.insert(key.into(), canonical(v));
        }
    }
    let id = str_of(c, "id");
    let mut indexes: Vec<Value> = obj
        .get("indexes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|ix| !ix.as_str().is_some_and(|sql| is_system_index(sql, id)))
        .cloned()
        .collect();
    indexes.sort_by_key(Value::to_string);
    out.insert("indexes".into(), Value::Array(indexes));
    for f in fields(c) {
        let system = f.get("system").and_then(Value::as_bool) == Some(true);
        let primary = f.get("primaryKey").and_then(Value::as_bool) == Some(true);
        if system && !primary {
            continue;
        }
        let key = match f.get("id").and_then(Value::as_str) {
            Some(id) => format!("fields.{id}"),
            None => format!("fields.(no id) {}", str_of(f, "name")),
        };
        out.insert(key, field(f));
    }
    out.into_iter().collect()
}

/// The field objects of a collection.
pub fn fields(c: &Value) -> impl Iterator<Item = &Value> {
    c.get("fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// One field: name, type, then every option of its type with defaults filled in.
fn field(f: &Value) -> Value {
    let ty = str_of(f, "type");
    let mut out = Map::new();
    out.insert("name".into(), f.get("name").cloned().unwrap_or(Value::Null));
    out.insert("type".into(), Value::String(ty.to_string()));
    let mut options: BTreeMap<String, Value> = BTreeMap::new();
    match defaults(ty) {
        Some(defaults) => {
            for (key, default) in defaults {
                let v = f.get(key).cloned().unwrap_or(default);
                options.insert(key.to_string(), canonical(v));
            }
        }
        // A type kombiform never writes: compare everything PocketBase says about it.
        None => {
            if let Some(obj) = f.as_object() {
                for (k, v) in obj {
                    if !matches!(k.as_str(), "id" | "name" | "type") {
                        options.insert(k.clone(), canonical(v.clone()));
                    }
                }
            }
        }
    }
    out.extend(options);
    Value::Object(out)
}

/// Every option PocketBase 0.40.6 returns for a field of type `ty`, with the value it gives
/// an option left out (measured: `GET /api/collections` after creating fields by name only).
fn defaults(ty: &str) -> Option<Vec<(&'static str, Value)>> {
    let common = || {
        vec![
            ("help", json!("")),
            ("hidden", json!(false)),
            ("presentable", json!(false)),
            ("required", json!(false)),
            ("system", json!(false)),
        ]
    };
    let mut d = common();
    let extra: Vec<(&'static str, Value)> = match ty {
        "text" => vec![
            ("autogeneratePattern", json!("")),
            ("max", json!(0)),
            ("min", json!(0)),
            ("pattern", json!("")),
            ("primaryKey", json!(false)),
        ],
        "number" => vec![
            ("max", Value::Null),
            ("min", Value::Null),
            ("onlyInt", json!(false)),
        ],
        "bool" | "geoPoint" => vec![],
        "email" | "url" => vec![("exceptDomains", json!([])), ("onlyDomains", json!([]))],
        "date" => vec![("max", json!("")), ("min", json!(""))],
        "select" => vec![("maxSelect", json!(0)), ("values", json!([]))],
        "json" => vec![("maxSize", json!(0))],
        "relation" => vec![
            ("cascadeDelete", json!(false)),
            ("collectionId", json!("")),
            ("maxSelect", json!(0)),
            ("minSelect", json!(0)),
        ],
        "editor" => vec![("convertURLs", json!(false)), ("maxSize", json!(0))],
        "file" => vec![
            ("maxSelect", json!(0)),
            ("maxSize", json!(0)),
            ("mimeTypes", json!([])),
            ("protected", json!(false)),
            ("thumbs", json!([])),
        ],
        "autodate" => {
            // No `help` and no `required` on autodate fields.
            d = vec![
                ("hidden", json!(false)),
                ("presentable", json!(false)),
                ("system", json!(false)),
            ];
            vec![("onCreate", json!(false)), ("onUpdate", json!(false))]
        }
        _ => return None,
    };
    d.extend(extra);
    Some(d)
}

/// Whether `sql` is one of the unique indexes PocketBase adds to an auth collection
/// (`idx_tokenKey_<collection id>`, `idx_email_<collection id>`).
fn is_system_index(sql: &str, collection_id: &str) -> bool {
    let mut words = sql.split_whitespace();
    let Some(_) = words.by_ref().find(|w| w.eq_ignore_ascii_case("INDEX")) else {
        return false;
    };
    let mut name = words.next().unwrap_or_default();
    if name.eq_ignore_ascii_case("IF") {
        // IF NOT EXISTS <name>
        name = words.nth(2).unwrap_or_default();
    }
    let name = name.trim_matches(|c| matches!(c, '`' | '"' | '\'' | '[' | ']'));
    name == format!("idx_tokenKey_{collection_id}") || name == format!("idx_email_{collection_id}")
}

/// Numbers written as integers where they are whole (PocketBase may send `1` for what was
/// written `1.0`), recursively.
fn canonical(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => json!(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(canonical).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, canonical(v))).collect()),
        other => other,
    }
}

/// A string member, `""` when missing.
fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_import_body_and_full_get_response_normalise_alike() {
        let body = json!({"id": "pbc_t_a_users", "name": "t_a_users", "type": "auth",
            "listRule": null, "viewRule": "x", "createRule": null, "updateRule": null, "deleteRule": null,
            "authRule": "", "manageRule": null, "oauth2": {"enabled": false},
            "authToken": {"duration": 900},
            "fields": [{"id": "text1", "name": "n", "type": "text", "max": 5},
                       {"id": "number2", "name": "q", "type": "number", "min": 1}],
            "indexes": ["CREATE INDEX `b` ON `t_a_users` (`n`)", "CREATE INDEX `a` ON `t_a_users` (`q`)"]});
        let got = json!({"id": "pbc_t_a_users", "name": "t_a_users", "type": "auth", "system": false,
            "created": "2026", "updated": "2026",
            "listRule": null, "viewRule": "x", "createRule": null, "updateRule": null, "deleteRule": null,
            "authRule": "", "manageRule": null,
            "oauth2": {"enabled": false, "providers": [], "mappedFields": {}},
            "authToken": {"duration": 900.0},
            "fields": [
                {"id": "number2", "name": "q", "type": "number", "min": 1.0, "max": null, "onlyInt": false,
                 "help": "", "hidden": false, "presentable": false, "required": false, "system": false},
                {"id": "text1", "name": "n", "type": "text", "max": 5, "min": 0, "pattern": "",
                 "autogeneratePattern": "", "primaryKey": false,
                 "help": "", "hidden": false, "presentable": false, "required": false, "system": false},
                {"id": "password9", "name": "password", "type": "password", "system": true, "hidden": true}],
            "indexes": ["CREATE INDEX `a` ON `t_a_users` (`q`)", "CREATE INDEX `b` ON `t_a_users` (`n`)",
                "CREATE UNIQUE INDEX `idx_tokenKey_pbc_t_a_users` ON `t_a_users` (`tokenKey`)",
                "CREATE UNIQUE INDEX `idx_email_pbc_t_a_users` ON `t_a_users` (`email`) WHERE `email` != ''"]});
        assert_eq!(attrs(&body), attrs(&got));
        let a = attrs(&got);
        assert!(a.contains_key("fields.text1") && !a.contains_key("fields.password9"));
        assert_eq!(a["oauth2"], json!({"enabled": false}));
        assert_eq!(a["indexes"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn an_option_changed_out_of_band_is_a_difference() {
        let body = json!({"name": "c", "type": "base", "fields": [{"id": "bool1", "name": "b", "type": "bool"}]});
        let got = json!({"name": "c", "type": "base", "fields": [{"id": "bool1", "name": "b", "type": "bool", "hidden": true}]});
        assert_ne!(attrs(&body), attrs(&got));
    }

    #[test]
    fn tenants_are_found_by_template_suffix() {
        let templates = vec!["users".to_string(), "lab_notes".to_string()];
        assert_eq!(
            tenant_of("t_stark_lab_users", &templates).as_deref(),
            Some("stark-lab")
        );
        assert_eq!(
            tenant_of("t_acme_lab_notes", &templates).as_deref(),
            Some("acme")
        );
        assert_eq!(tenant_of("_sso_mappings", &templates), None);
        assert_eq!(tenant_of("t__users", &templates), None);
    }

    #[test]
    fn relations_and_tenant_are_dependencies() {
        let c = json!({"id": "pbc_t_a_nodes", "name": "t_a_nodes", "type": "base", "fields": [
            {"id": "relation1", "name": "s", "type": "relation", "collectionId": "pbc_t_a_stacks"},
            {"id": "relation2", "name": "me", "type": "relation", "collectionId": "pbc_t_a_nodes"}]});
        let names: BTreeMap<String, String> =
            [("pbc_t_a_stacks".to_string(), "t_a_stacks".to_string())].into();
        let r = resource(&c, &names, Some("a"));
        assert_eq!(r.address, "pocketbase.collection.t_a_nodes");
        assert_eq!(
            r.depends_on,
            vec!["pocketbase.collection.t_a_stacks", "postgres.tenant.a"]
        );
        assert_eq!(r.meta["id"], "pbc_t_a_nodes");
        assert!(r.data_bearing);
    }
}
