//! The PocketBase target, pure part: what the specs want of PocketBase (one resource per
//! collection of the emitted snapshot, `pocketbase.collection.<name>`), how a collection read
//! back is normalised to compare with it ([`normalise`]), which live collections kombiform
//! owns by convention (the tenant namespace `t_…`), and which updates lose data (a field
//! removed or retyped).
//!
//! Not here: HTTP (the engine's PocketBase client reads and imports collections), or the
//! collection JSON itself (`crate::pocketbase`, the emitter).

pub mod normalise;

use std::collections::BTreeMap;

use serde_json::Value;

use super::{postgres, Target};
use kombiform_model::{naming, Env, Scope};
use kombiform_plan::{Action, Change, Resource};

pub use normalise::{address, attrs};

/// The name of PocketBase's default auth collection, left alone unless the specs define it.
pub const DEFAULT_USERS: &str = "users";

/// The PocketBase target.
#[derive(Debug)]
pub struct PocketBase;

impl Target for PocketBase {
    fn name(&self) -> &'static str {
        "pocketbase"
    }

    fn desired(&self, env: Env<'_>) -> Vec<Resource> {
        desired(env)
    }

    fn owns(&self, address: &str) -> bool {
        address
            .strip_prefix(normalise::PREFIX)
            .is_some_and(|name| name.starts_with(naming::TENANT_COLLECTION_PREFIX))
    }

    fn classify(&self, change: &mut Change) {
        if change.action == Action::Update && !removed_fields(change).is_empty() {
            change.destructive = true;
        }
    }
}

/// What the specs want of PocketBase: one resource per collection of the emitted snapshot,
/// in the snapshot's order (`meta.import` holds the collection exactly as it is imported),
/// then the backup settings ([`BACKUPS`]).
pub fn desired(env: Env<'_>) -> Vec<Resource> {
    let bodies = crate::pocketbase::collections(env);
    let templates = tenant_templates(env);
    let names = names_by_id(&bodies);
    let mut out: Vec<Resource> = bodies
        .into_iter()
        .map(|body| {
            let name = body.get("name").and_then(Value::as_str).unwrap_or_default();
            let tenant = normalise::tenant_of(name, &templates);
            let mut r = normalise::resource(&body, &names, tenant.as_deref());
            r.meta.insert("import".into(), body);
            r
        })
        .collect();
    let b = &env.platform.backup;
    out.push(backups_resource(
        &b.pocketbase_cron,
        b.pocketbase_keep.into(),
    ));
    out
}

/// PocketBase's own backup schedule (its settings `backups.cron` and `backups.cronMaxKeep`):
/// from the platform spec's `backup.pocketbaseCron` and `backup.pocketbaseKeep`. PocketBase
/// writes each backup as a zip of `pb_data` into `pb_data/backups` and keeps the newest
/// `cronMaxKeep`; on Azure that directory is on the platform's file share.
pub const BACKUPS: &str = "pocketbase.settings.backups";

/// The backup settings as a resource (as written and as read back).
pub fn backups_resource(cron: &str, keep: u64) -> Resource {
    let mut attrs = serde_json::Map::new();
    attrs.insert("cron".into(), Value::String(cron.to_string()));
    attrs.insert("cronMaxKeep".into(), Value::from(keep));
    Resource::new(BACKUPS, attrs)
}

/// A live collection as a resource, normalised like [`desired`] so that an applied
/// collection read back compares equal. `names` maps collection ids to names (for relation
/// dependencies); `templates` are the tenant templates' names ([`tenant_templates`]).
pub fn live_resource(
    collection: &Value,
    names: &BTreeMap<String, String>,
    templates: &[String],
) -> Resource {
    let name = collection
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let tenant = normalise::tenant_of(name, templates);
    normalise::resource(collection, names, tenant.as_deref())
}

/// The names of the tenant-scoped templates of `env`.
pub fn tenant_templates(env: Env<'_>) -> Vec<String> {
    env.collections()
        .iter()
        .filter(|t| t.scope == Scope::Tenant)
        .map(|t| t.name.clone())
        .collect()
}

/// Whether the specs of `env` define a global collection named like PocketBase's default
/// `users` (then kombiform manages it; otherwise it is PocketBase's and never read).
pub fn manages_default_users(env: Env<'_>) -> bool {
    env.collections()
        .iter()
        .any(|t| t.scope == Scope::Global && t.name == DEFAULT_USERS)
}

/// Collection id → name.
pub fn names_by_id(collections: &[Value]) -> BTreeMap<String, String> {
    collections
        .iter()
        .filter_map(|c| {
            let id = c.get("id")?.as_str()?;
            let name = c.get("name")?.as_str()?;
            Some((id.to_string(), name.to_string()))
        })
        .collect()
}

/// Field ids whose data the change loses: fields dropped from the collection, and fields
/// whose type changes (PocketBase refuses to change a field's type: it is dropped first).
/// A renamed field (same id, new name) loses nothing.
pub fn removed_fields(change: &Change) -> Vec<String> {
    change
        .attrs
        .iter()
        .filter_map(|a| {
            let id = a.name.strip_prefix("fields.")?;
            let ty = |v: &Option<Value>| v.as_ref().and_then(|v| v.get("type")).cloned();
            match (&a.before, &a.after) {
                (Some(_), None) => Some(id.to_string()),
                (Some(_), Some(_)) if ty(&a.before) != ty(&a.after) => Some(id.to_string()),
                _ => None,
            }
        })
        .collect()
}

/// The tenant dependency of a tenant's collection.
pub(crate) fn tenant_dependency(slug: &str) -> String {
    postgres::tenant_address(slug)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use kombiform_plan::AttrChange;
    use kombiform_test_support::example_model;

    fn update(attrs: Vec<AttrChange>) -> Change {
        Change {
            address: address("c"),
            action: Action::Update,
            attrs,
            destructive: false,
            drift: false,
            desired: None,
            live: None,
        }
    }

    fn attr(name: &str, before: Option<Value>, after: Option<Value>) -> AttrChange {
        AttrChange {
            name: name.into(),
            before,
            after,
            sensitive: false,
            forces_replace: false,
        }
    }

    #[test]
    fn desired_has_one_resource_per_snapshot_collection() {
        let model = example_model();
        let env = model.env("local").unwrap();
        let desired = desired(env);
        assert_eq!(desired.len(), crate::pocketbase::collections(env).len() + 1);
        let backups = desired.last().unwrap();
        assert_eq!(backups.address, BACKUPS);
        assert_eq!(
            (&backups.attrs["cron"], &backups.attrs["cronMaxKeep"]),
            (
                &Value::from(env.platform.backup.pocketbase_cron.clone()),
                &Value::from(env.platform.backup.pocketbase_keep)
            )
        );
        let nodes = desired
            .iter()
            .find(|r| r.address == "pocketbase.collection.t_stark_lab_nodes")
            .unwrap();
        assert_eq!(nodes.meta["tenant"], "stark-lab");
        assert_eq!(nodes.meta["id"], "pbc_t_stark_lab_nodes");
        assert_eq!(
            nodes.depends_on,
            vec![
                "pocketbase.collection.t_stark_lab_stacks",
                "pocketbase.collection.t_stark_lab_users",
                "postgres.tenant.stark-lab",
            ]
        );
        assert_eq!(nodes.replace_on, vec!["type"]);
        let global = desired
            .iter()
            .find(|r| r.address == "pocketbase.collection._sso_mappings")
            .unwrap();
        assert!(global.depends_on.is_empty() && !global.meta.contains_key("tenant"));
    }

    #[test]
    fn every_auth_option_the_emitter_writes_is_compared() {
        let model = example_model();
        let env = model.env("local").unwrap();
        let users = crate::pocketbase::collections(env)
            .into_iter()
            .find(|c| c["type"] == "auth")
            .unwrap();
        let compared = |key: &str| -> Option<Option<&[&str]>> {
            normalise::AUTH_OPTIONS
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, sub)| *sub)
        };
        let obj = users.as_object().unwrap();
        let base_keys = ["id", "name", "type", "fields", "indexes"];
        for (key, value) in obj {
            if base_keys.contains(&key.as_str()) || key.ends_with("Rule") && compared(key).is_none()
            {
                continue;
            }
            let sub = compared(key).unwrap_or_else(|| panic!("{key} is not compared"));
            if let (Some(sub), Some(v)) = (sub, value.as_object()) {
                for k in v.keys() {
                    assert!(sub.contains(&k.as_str()), "{key}.{k} is not compared");
                }
            }
        }
    }

    #[test]
    fn removing_or_retyping_a_field_is_destructive_renaming_is_not() {
        let text = json!({"name": "a", "type": "text"});
        let renamed = json!({"name": "b", "type": "text"});
        let number = json!({"name": "a", "type": "number"});
        let mut pb_change = update(vec![attr(
            "fields.text1",
            Some(text.clone()),
            Some(renamed),
        )]);
        assert!(removed_fields(&pb_change).is_empty());
        pb_change = update(vec![attr("fields.text1", Some(text.clone()), None)]);
        assert_eq!(removed_fields(&pb_change), vec!["text1"]);
        let mut classified = pb_change.clone();
        PocketBase.classify(&mut classified);
        assert!(classified.destructive);
        pb_change = update(vec![attr("fields.text1", Some(text), Some(number))]);
        assert_eq!(removed_fields(&pb_change), vec!["text1"]);
        let added = update(vec![attr("fields.text2", None, Some(json!({})))]);
        assert!(removed_fields(&added).is_empty());
    }

    #[test]
    fn only_the_tenant_namespace_is_owned_by_convention() {
        assert!(PocketBase.owns("pocketbase.collection.t_acme_users"));
        assert!(!PocketBase.owns("pocketbase.collection._sso_mappings"));
        assert!(!PocketBase.owns("pocketbase.collection.users"));
        assert!(!PocketBase.owns("postgres.tenant.t_x"));
    }
}
