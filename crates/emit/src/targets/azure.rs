//! The Azure target, pure part: the resources of the Azure inventory (`crate::azure`) as plan
//! resources, addressed `azure.<type>.<name>` (`azure.containerapp.kfy-prod-kong`).
//!
//! A resource's attributes are the paths of the body kombiform sends, flattened
//! (`properties.template.containers`, `sku.name`; arrays whole), without write-only values
//! (secrets, keys: ARM never returns them, so they are never compared). A value ARM knows only
//! once another resource exists (an identity's `principalId`) is the placeholder
//! [`placeholder`] here; the provider's read writes the same placeholder where the live value
//! equals the live referenced value, so a deployed platform plans empty. What the provider
//! needs to apply a change without the model (id, api-version, the symbolic body) is in the
//! resource's `meta`.
//!
//! Not here: ARM requests (`kombiform_engine::providers::azure`), the Bicep text
//! (`crate::bicep`).

use serde_json::{json, Map, Value as Json};

use super::Target;
use crate::azure::{self, ArmResource, Kind, Value};
use kombiform_model::{naming, Env, Platform};
use kombiform_plan::{Change, Resource};

/// The Azure target.
#[derive(Debug)]
pub struct Azure;

impl Target for Azure {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn applies(&self, env: Env<'_>) -> bool {
        env.platform.azure.is_some()
    }

    fn desired(&self, env: Env<'_>) -> Vec<Resource> {
        desired(env)
    }

    fn classify(&self, change: &mut Change) {
        // Deleting a database server, a vault, a storage account or a tenant's instance loses
        // data, whatever the live read said.
        let r = change.live.as_ref().or(change.desired.as_ref());
        if matches!(
            change.action,
            kombiform_plan::Action::Delete | kombiform_plan::Action::Replace
        ) && r.is_some_and(|r| r.data_bearing || r.meta.contains_key("tenant"))
        {
            change.destructive = true;
        }
    }

    fn refusal(&self, change: &Change) -> Option<String> {
        let kind = change
            .live
            .as_ref()
            .or(change.desired.as_ref())
            .and_then(|r| r.meta.get("kind"))
            .and_then(Json::as_str);
        let secret = matches!(kind, Some("generated_secret" | "provided_secret"));
        (secret && change.action == kombiform_plan::Action::Delete).then(|| {
            "kombiform never deletes a Key Vault secret: remove it with `az keyvault secret delete`"
                .to_string()
        })
    }

    fn destroy_consent(&self, live: &Resource) -> Option<String> {
        let _ = live;
        None
    }
}

/// `azure.<kind>.<name>`.
pub fn address(kind: &str, name: &str) -> String {
    format!("azure.{kind}.{name}")
}

/// The Container App of a platform service (`kong`, `sso`, ...).
pub fn container_app(p: &Platform, service: &str) -> String {
    address("containerapp", &naming::container_app(p, service))
}

/// The platform database's Azure resource, on Azure environments.
pub fn platform_database(p: &Platform) -> Option<String> {
    p.azure
        .as_ref()
        .map(|_| address("postgres-database", &p.postgres.platform_database))
}

/// The placeholder of a value ARM sets at deployment: `${azure.identity.kfy-prod-id.properties.principalId}`.
pub fn placeholder(address: &str, path: &str) -> String {
    format!("${{{address}.{path}}}")
}

/// Every Azure resource of `env` (none outside Azure).
pub fn desired(env: Env<'_>) -> Vec<Resource> {
    azure::inventory(env).map_or_else(Vec::new, |inv| inv.all().iter().map(resource).collect())
}

/// The plan resource of an inventory resource.
pub fn resource(r: &ArmResource) -> Resource {
    let body = pure_json(&r.body);
    let mut out = Resource::new(r.address.clone(), flatten(&body));
    out.depends_on = r.depends_on.clone();
    out.data_bearing = r.data_bearing;
    if r.type_ != "Microsoft.Resources/resourceGroups" && out.attrs.contains_key("location") {
        out.replace_on = vec!["location".to_string()];
    }
    out.meta = meta(r);
    out
}

/// What the provider needs to apply `r` from a plan: its id, type, api-version, kind, body
/// (symbolic: no secret value is in it) and tenant.
pub fn meta(r: &ArmResource) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("id".into(), json!(r.id));
    m.insert("type".into(), json!(r.type_));
    m.insert("api_version".into(), json!(r.api_version));
    m.insert(
        "kind".into(),
        serde_json::to_value(r.kind).unwrap_or(Json::Null),
    );
    m.insert(
        "body".into(),
        serde_json::to_value(&r.body).unwrap_or(Json::Null),
    );
    if let Some(t) = &r.tenant {
        m.insert("tenant".into(), json!(t));
    }
    m
}

/// The body with references as placeholders and write-only values left out.
pub fn pure_json(body: &Value) -> Json {
    let mut resolve = |v: &Value| -> Result<Option<Json>, ()> {
        Ok(match v {
            Value::Prop { of, path } => Some(Json::String(placeholder(&of.address, path))),
            _ => None,
        })
    };
    body.to_json(&mut resolve)
        .ok()
        .flatten()
        .unwrap_or(Json::Null)
}

/// A body as attributes: one per leaf path, arrays and empty objects whole.
pub fn flatten(body: &Json) -> Map<String, Json> {
    fn go(v: &Json, at: &str, out: &mut Map<String, Json>) {
        match v {
            Json::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    go(v, &azure::join(at, k), out);
                }
            }
            other => {
                out.insert(at.to_string(), other.clone());
            }
        }
    }
    let mut out = Map::new();
    if let Json::Object(m) = body {
        for (k, v) in m {
            go(v, &azure::join("", k), &mut out);
        }
    }
    out
}

/// The kind of a plan resource, from its meta.
pub fn kind_of(r: &Resource) -> Option<Kind> {
    r.meta
        .get("kind")
        .and_then(|k| serde_json::from_value(k.clone()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kombiform_test_support::example_model;

    #[test]
    fn attributes_are_flat_paths_without_secrets() {
        let m = example_model();
        let all = desired(m.env("prod").unwrap());
        let pg = all
            .iter()
            .find(|r| r.address == "azure.postgres.kfy-prod-pg")
            .unwrap();
        assert_eq!(pg.attrs["sku.name"], json!("Standard_D2ds_v5"));
        assert!(!pg.attrs.keys().any(|k| k.contains("Password")));
        let ra = all
            .iter()
            .find(|r| r.address == "azure.role-assignment.key-vault-secrets-user")
            .unwrap();
        assert_eq!(
            ra.attrs["properties.principalId"],
            json!("${azure.identity.kfy-prod-id.properties.principalId}")
        );
        let app = all
            .iter()
            .find(|r| r.address == "azure.containerapp.kfy-prod-t-globex")
            .unwrap();
        assert!(app.data_bearing);
        assert_eq!(app.meta["tenant"], json!("globex"));
        assert!(!app.depends_on.iter().any(|d| d.starts_with("postgres.")));
    }
}
