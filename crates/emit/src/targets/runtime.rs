//! Fields the running platform owns: the effective model a plan is made from.
//!
//! Every field has one owner. The specs own almost everything; the running platform owns
//! what it changes while it runs, once it has changed it:
//!
//! | field | owner |
//! |---|---|
//! | `kombify.tenants.plan` | the specs until billing (a Stripe webhook) sets it (`plan_billed_at`), then billing |
//! | `kombify.flags` description, default, rollout, and the flag's plan and tenant overrides | the specs until the Admin flag sync writes the flag (`synced_at`), then the sync |
//! | `kombify.quotas.used_*`, `kombify.sso_users`, `webhook_events`, `audit_log` | the services, always (never read by a plan) |
//! | a tenant's quota limits and gateway rate limits | derived: the effective plan's, with the specs' overrides |
//!
//! [`effective`] reads the live rows of the platform database that the platform took over
//! (`meta.runtime`, set by the engine's reader) and returns the model with those values in
//! place of the specs', and one [`Kept`] per field where they differ. Desired resources made
//! from the effective model never revert a runtime-owned field, and what derives from it
//! follows: a tenant moved to another plan by billing gets that plan's quota limits and rate
//! limits in the next plan. The specs seed runtime-owned fields on creation (no live row).
//!
//! Pure. Not here: reading rows (the engine), or the columns themselves
//! ([`crate::sql::RuntimeOwned`]).

use std::collections::BTreeMap;

use serde_json::Value;

use super::postgres::RUNTIME_META;
use crate::sql::{FLAGS, TENANTS};
use kombiform_model::{Env, FeatureFlag, Model};
use kombiform_plan::{Kept, Resource};

/// The model with the runtime-owned values in place, when any differ from the specs'.
#[derive(Debug, Default)]
pub struct Effective {
    /// The effective model, `None` when it is the specs' own.
    pub model: Option<Model>,
    /// The fields kept as the platform set them, sorted by address and attribute.
    pub kept: Vec<Kept>,
}

/// A runtime-owned live flag: its values and overrides.
#[derive(Default)]
struct LiveFlag {
    description: Option<String>,
    default: Option<bool>,
    rollout: Option<Option<u8>>,
    plans: BTreeMap<String, bool>,
    tenants: BTreeMap<String, bool>,
}

fn taken_over(r: &Resource) -> bool {
    r.meta.get(RUNTIME_META).and_then(Value::as_bool) == Some(true)
}

/// The effective model of `env` given the live resources of the platform database.
pub fn effective(env: Env<'_>, live: &[Resource]) -> Effective {
    let mut plans: BTreeMap<&str, &str> = BTreeMap::new();
    let mut flags: BTreeMap<&str, LiveFlag> = BTreeMap::new();
    for r in live.iter().filter(|r| taken_over(r)) {
        if let Some(slug) = r.address.strip_prefix("postgres.tenant.") {
            if let Some(plan) = r.attrs.get("plan").and_then(Value::as_str) {
                plans.insert(slug, plan);
            }
        } else if let Some(name) = r.address.strip_prefix("postgres.flag.") {
            let f = flags.entry(name).or_default();
            f.description = r
                .attrs
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string);
            f.default = r.attrs.get("default_enabled").and_then(Value::as_bool);
            f.rollout = r
                .attrs
                .get("rollout_percent")
                .map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok()));
        }
    }
    // The overrides of a taken-over flag are the sync's too.
    for r in live {
        let (kind, rest) = match r.address.split_once('.').map(|(_, x)| x) {
            Some(x) => match x.split_once('.') {
                Some(p) => p,
                None => continue,
            },
            None => continue,
        };
        let Some((flag, key)) = rest.split_once(':') else {
            continue;
        };
        let Some(f) = flags.get_mut(flag) else {
            continue;
        };
        let on = r
            .attrs
            .get("enabled")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        match kind {
            "flag_plan" => {
                f.plans.insert(key.to_string(), on);
            }
            "flag_tenant" => {
                f.tenants.insert(key.to_string(), on);
            }
            _ => {}
        }
    }
    let mut out = Effective::default();
    let mut model: Option<Model> = None;
    for t in env.tenants() {
        let Some(live_plan) = plans.get(t.slug.as_str()) else {
            continue;
        };
        // A plan the specs no longer have cannot be planned from: keep the specs' (the plan's
        // deletion then fails on the tenant's foreign key, loudly).
        if *live_plan == t.plan || env.model.plan(live_plan).is_none() {
            continue;
        }
        out.kept.push(Kept {
            address: super::postgres::tenant_address(&t.slug),
            attr: "plan".into(),
            specs: Value::String(t.plan.clone()),
            live: Value::String((*live_plan).to_string()),
            owner: owner(&TENANTS),
        });
        let m = model.get_or_insert_with(|| env.model.clone());
        if let Some(mt) = m.tenants.iter_mut().find(|x| x.slug == t.slug) {
            mt.plan = (*live_plan).to_string();
        }
    }
    let here: Vec<&str> = env.tenants().map(|t| t.slug.as_str()).collect();
    for (name, live_flag) in &flags {
        let Some(spec) = env.flags().iter().find(|f| f.name == *name) else {
            continue;
        };
        let flag = merged(spec, live_flag, &here);
        let kept = kept_flag(spec, &flag, &here);
        if kept.is_empty() {
            continue;
        }
        out.kept.extend(kept);
        let m = model.get_or_insert_with(|| env.model.clone());
        if let Some(mf) = m.flags.iter_mut().find(|x| x.name == *name) {
            *mf = flag;
        }
    }
    out.kept
        .sort_by(|a, b| (&a.address, &a.attr).cmp(&(&b.address, &b.attr)));
    out.model = model;
    out
}

/// The spec flag with the sync's values and overrides (tenant overrides of other
/// environments' tenants stay as the specs say: this environment has no row for them).
fn merged(spec: &FeatureFlag, live: &LiveFlag, here: &[&str]) -> FeatureFlag {
    let mut f = spec.clone();
    if let Some(d) = &live.description {
        f.description = d.clone();
    }
    if let Some(d) = live.default {
        f.default = d;
    }
    if let Some(r) = live.rollout {
        f.rollout_percent = r;
    }
    f.plans = live.plans.clone();
    f.tenants.retain(|slug, _| !here.contains(&slug.as_str()));
    f.tenants.extend(live.tenants.clone());
    f
}

/// What differs between the specs' flag and the effective one, as [`Kept`] fields.
fn kept_flag(spec: &FeatureFlag, eff: &FeatureFlag, here: &[&str]) -> Vec<Kept> {
    let address = format!("postgres.flag.{}", spec.name);
    let mut out = Vec::new();
    let mut note = |address: String, attr: &str, specs: Value, live: Value| {
        if specs != live {
            out.push(Kept {
                address,
                attr: attr.to_string(),
                specs,
                live,
                owner: owner(&FLAGS),
            });
        }
    };
    note(
        address.clone(),
        "description",
        Value::from(spec.description.clone()),
        Value::from(eff.description.clone()),
    );
    note(
        address.clone(),
        "default_enabled",
        Value::Bool(spec.default),
        Value::Bool(eff.default),
    );
    note(
        address,
        "rollout_percent",
        spec.rollout_percent.map_or(Value::Null, Value::from),
        eff.rollout_percent.map_or(Value::Null, Value::from),
    );
    let pairs = |m: &BTreeMap<String, bool>, filter: bool| -> BTreeMap<String, bool> {
        m.iter()
            .filter(|(k, _)| !filter || here.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    for (kind, s, e) in [
        (
            "flag_plan",
            pairs(&spec.plans, false),
            pairs(&eff.plans, false),
        ),
        (
            "flag_tenant",
            pairs(&spec.tenants, true),
            pairs(&eff.tenants, true),
        ),
    ] {
        let keys: std::collections::BTreeSet<&String> = s.keys().chain(e.keys()).collect();
        for k in keys {
            let v = |m: &BTreeMap<String, bool>| m.get(k).map_or(Value::Null, |b| Value::Bool(*b));
            note(
                format!("postgres.{kind}.{}:{k}", spec.name),
                "enabled",
                v(&s),
                v(&e),
            );
        }
    }
    out
}

fn owner(table: &crate::sql::DataTable) -> String {
    table
        .runtime
        .as_ref()
        .map_or("the running platform", |r| r.owner)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live(address: &str, attrs: Value, runtime: bool) -> Resource {
        let mut r = Resource::new(address, attrs.as_object().cloned().unwrap_or_default());
        if runtime {
            r.meta.insert(RUNTIME_META.into(), Value::Bool(true));
        }
        r
    }

    #[test]
    fn a_billed_plan_is_kept_and_its_quotas_follow() {
        let m = kombiform_test_support::example_model();
        let env = m.env("local").unwrap();
        let acme = env.tenants().find(|t| t.slug.as_str() == "acme").unwrap();
        assert_eq!(acme.plan, "pro");
        // Not taken over: the specs own it, nothing changes.
        let plain = [live(
            "postgres.tenant.acme",
            json!({"plan": "enterprise"}),
            false,
        )];
        let e = effective(env, &plain);
        assert!(e.model.is_none() && e.kept.is_empty());
        // Billed: kept, and the effective model plans enterprise's quotas.
        let billed = [live(
            "postgres.tenant.acme",
            json!({"plan": "enterprise"}),
            true,
        )];
        let e = effective(env, &billed);
        assert_eq!(e.kept.len(), 1);
        assert_eq!(
            (
                e.kept[0].address.as_str(),
                e.kept[0].specs.clone(),
                e.kept[0].live.clone()
            ),
            ("postgres.tenant.acme", json!("pro"), json!("enterprise"))
        );
        let model = e.model.unwrap();
        let env2 = model.env("local").unwrap();
        let quota = super::super::postgres::desired(env2)
            .into_iter()
            .find(|r| r.address == "postgres.quota.acme")
            .unwrap();
        let ent = model.plan("enterprise").unwrap();
        assert_eq!(
            quota.attrs.get("rate_limit_minute"),
            Some(&ent.rate_limits.minute.map_or(Value::Null, Value::from))
        );
        // A plan the specs do not know is not planned from.
        let unknown = [live("postgres.tenant.acme", json!({"plan": "gold"}), true)];
        assert!(effective(env, &unknown).model.is_none());
    }

    #[test]
    fn a_synced_flag_keeps_its_values_and_overrides() {
        let m = kombiform_test_support::example_model();
        let env = m.env("local").unwrap();
        let spec = env
            .flags()
            .iter()
            .find(|f| f.name == "new-dashboard")
            .unwrap();
        let rs = [
            live(
                "postgres.flag.new-dashboard",
                json!({"name": "new-dashboard", "description": spec.description,
                       "default_enabled": !spec.default, "rollout_percent": 80}),
                true,
            ),
            live(
                "postgres.flag_tenant.new-dashboard:globex",
                json!({"flag": "new-dashboard", "tenant": "globex", "enabled": true}),
                false,
            ),
        ];
        let e = effective(env, &rs);
        let attrs: Vec<(&str, &str)> = e
            .kept
            .iter()
            .map(|k| (k.address.as_str(), k.attr.as_str()))
            .collect();
        assert!(attrs.contains(&("postgres.flag.new-dashboard", "default_enabled")));
        assert!(attrs.contains(&("postgres.flag.new-dashboard", "rollout_percent")));
        assert!(attrs.contains(&("postgres.flag_tenant.new-dashboard:globex", "enabled")));
        let model = e.model.unwrap();
        let f = model
            .flags
            .iter()
            .find(|f| f.name == "new-dashboard")
            .unwrap();
        assert_eq!(f.rollout_percent, Some(80));
        assert!(
            f.plans.is_empty(),
            "the sync's overrides replace the specs'"
        );
        assert_eq!(f.tenants.get("globex"), Some(&true));
    }
}
