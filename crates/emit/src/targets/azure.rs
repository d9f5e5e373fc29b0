//! The Azure target, pure part: the Azure resources of an environment with their
//! dependencies, addressed `azure.<type>.<name>` (`azure.containerapp.kfy-prod-kong`).
//!
//! Today these resources carry no attributes: they place Azure in the dependency graph
//! (`kombiform graph`, the order of everything that needs them) while the Bicep under
//! `generated/<env>/bicep/` deploys them. Not here: ARM requests (there is no Azure client
//! yet), or the Bicep text (`crate::bicep`).

use std::collections::BTreeMap;

use super::{postgres, Target};
use kombiform_model::{naming, Env, InstanceMode, Platform};
use kombiform_plan::Resource;

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

/// The resources, each with what it needs.
struct Builder(BTreeMap<String, Vec<String>>);

impl Builder {
    fn add(&mut self, address: String, needs: &[&String]) -> String {
        let deps = self.0.entry(address.clone()).or_default();
        deps.extend(needs.iter().map(|s| (*s).clone()));
        address
    }
}

/// Every Azure resource of `env` (none outside Azure).
pub fn desired(env: Env<'_>) -> Vec<Resource> {
    let p = env.platform;
    if p.azure.is_none() {
        return Vec::new();
    }
    let mut b = Builder(BTreeMap::new());
    let logs = b.add(address("loganalytics", &naming::log_analytics(p)), &[]);
    let id = b.add(address("identity", &naming::identity(p)), &[]);
    let kv = b.add(address("keyvault", &naming::key_vault(p)), &[&id]);
    b.add(address("storage", &naming::storage_account(p)), &[]);
    let cae = b.add(address("containerenv", &naming::container_env(p)), &[&logs]);
    let pg = b.add(address("postgres", &naming::postgres_server(p)), &[]);
    for db in &p.postgres.databases {
        b.add(address("postgres-database", db), &[&pg]);
    }
    let redis = b.add(address("redis", &naming::redis(p)), &[]);
    let kong = b.add(container_app(p, "kong"), &[&cae, &kv, &id, &redis, &pg]);
    let mut apps: BTreeMap<&str, String> = BTreeMap::from([("kong", kong.clone())]);
    let enabled: Vec<_> = p.services.iter().filter(|s| s.enabled).collect();
    for s in &enabled {
        let app = b.add(container_app(p, &s.name), &[&cae, &kv, &id]);
        apps.insert(s.name.as_str(), app);
    }
    for s in &enabled {
        let Some(me) = apps.get(s.name.as_str()).cloned() else {
            continue;
        };
        let deps: Vec<&String> = s
            .depends_on
            .iter()
            .filter_map(|d| apps.get(d.as_str()))
            .collect();
        b.add(me.clone(), &deps);
        if ["sso", "admin", "health"].contains(&s.name.as_str()) {
            b.add(me, &[&pg]);
        }
    }
    for t in env
        .tenants()
        .filter(|t| t.instance == InstanceMode::Dedicated)
    {
        let row = postgres::tenant_address(&t.slug);
        b.add(
            address("containerapp", &naming::tenant_app(p, t)),
            &[&cae, &kv, &id, &row],
        );
    }
    let alerts = b.add(address("actiongroup", "oncall"), &[]);
    for a in ["kong-5xx", "kong-unhealthy", "postgres-cpu"] {
        b.add(address("alert", a), &[&alerts, &logs]);
    }
    if p.front_door.is_some() {
        let prof = b.add(address("frontdoor", &naming::front_door(p)), &[]);
        let ep = b.add(address("frontdoor-endpoint", "api"), &[&prof]);
        let mut origins = vec![("kong", kong)];
        for s in enabled.iter().filter(|s| s.front_door_origin) {
            if let Some(app) = apps.get(s.name.as_str()) {
                origins.push((s.name.as_str(), app.clone()));
            }
        }
        for (name, app) in origins {
            let og = b.add(address("frontdoor-origingroup", name), &[&prof]);
            let o = b.add(address("frontdoor-origin", name), &[&og, &app]);
            b.add(address("frontdoor-route", name), &[&ep, &og, &o]);
        }
    }
    b.0.into_iter()
        .map(|(address, mut deps)| {
            deps.sort();
            deps.dedup();
            let mut r = Resource::new(address, serde_json::Map::new());
            r.depends_on = deps;
            r
        })
        .collect()
}
