//! The Kong target, pure part: the gateway's entities of an environment with their
//! dependencies, addressed `kong.<entity>.<name>` (`kong.route.stackkits-api`,
//! `kong.consumer.acme`).
//!
//! Today these resources carry no attributes: they place the gateway in the dependency graph
//! while `generated/<env>/kong/` holds the declarative config itself. Not here: delivering
//! the config (no Kong client yet), or its text (`crate::kong`).

use std::collections::BTreeMap;

use super::{azure, postgres, Target};
use kombiform_model::{Env, KongEdition, Protocol};
use kombiform_plan::Resource;

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
}

/// `kong.<entity>.<name>`.
pub fn address(entity: &str, name: &str) -> String {
    format!("kong.{entity}.{name}")
}

/// Every Kong entity of `env`.
pub fn desired(env: Env<'_>) -> Vec<Resource> {
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
        for r in &s.routes {
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
    needs
        .into_iter()
        .map(|(address, mut deps)| {
            deps.sort();
            deps.dedup();
            let mut r = Resource::new(address, serde_json::Map::new());
            r.depends_on = deps;
            r
        })
        .collect()
}
