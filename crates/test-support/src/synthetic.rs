//! Synthetic tenants for benchmarks and scale tests: [`synthetic_specs`] writes the example
//! platform with N tenants as spec text (so a benchmark measures the real work, parsing
//! included), [`fleet`] adds N tenants to a model directly.
//!
//! Not used by the pipeline itself.

use std::fmt::Write as _;

use kombiform_model::{InstanceMode, Model, TenantSlug, TenantStatus};
use kombiform_spec::load::Input;

/// The example specs' shared documents (platforms, plans, flags, collection templates),
/// embedded so that benchmarks do not depend on the working directory.
const BASE: &[(&str, &str)] = &[
    (
        "specs/platform/local.yaml",
        include_str!("../../../tests/fixtures/example-specs/platform/local.yaml"),
    ),
    (
        "specs/platform/prod.yaml",
        include_str!("../../../tests/fixtures/example-specs/platform/prod.yaml"),
    ),
    (
        "specs/plans.yaml",
        include_str!("../../../tests/fixtures/example-specs/plans.yaml"),
    ),
    (
        "specs/flags.yaml",
        include_str!("../../../tests/fixtures/example-specs/flags.yaml"),
    ),
    (
        "specs/collections.yaml",
        include_str!("../../../tests/fixtures/example-specs/collections.yaml"),
    ),
];

/// The example platform with `tenants` synthetic tenants (every tenth one dedicated on the
/// enterprise plan) instead of the example tenants.
pub fn synthetic_specs(tenants: usize) -> Vec<Input> {
    let mut inputs: Vec<Input> = BASE
        .iter()
        .map(|(path, text)| Input {
            path: (*path).to_string(),
            text: (*text).to_string(),
        })
        .collect();
    // The example flags name example tenants; point them at synthetic ones.
    for input in &mut inputs {
        if input.path.ends_with("flags.yaml") {
            input.text = input
                .text
                .replace("acme: true", "t00001: true")
                .replace("hooli: false", "t00002: false");
        }
    }
    // Split tenants over files of 1,000 documents, as a real repository might.
    let plans = ["free", "pro", "enterprise"];
    for chunk in 0..tenants.div_ceil(1000) {
        let mut text = String::new();
        for i in chunk * 1000..((chunk + 1) * 1000).min(tenants) {
            let n = i + 1;
            let dedicated = n % 10 == 0;
            let plan = if dedicated {
                "enterprise"
            } else {
                plans[n % 3]
            };
            let _ = write!(
                text,
                "---\napiVersion: kombify.io/v1\nkind: Tenant\nmetadata:\n  name: t{n:05}\nspec:\n  displayName: \"Tenant {n} GmbH\"\n  plan: {plan}\n  zitadelOrgId: \"{}\"\n  instance: {}\n",
                300_000_000_000_000_000u64 + n as u64,
                if dedicated { "dedicated" } else { "shared" }
            );
        }
        inputs.push(Input {
            path: format!("specs/tenants/tenants-{chunk:03}.yaml"),
            text,
        });
    }
    inputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use kombiform_spec::load::load;

    #[test]
    fn a_fleet_has_exactly_what_it_asks_for() {
        let m = fleet(
            crate::example_model(),
            Fleet {
                tenants: 100,
                dedicated: 10,
                suspended_every: Some(7),
                keep_existing: false,
            },
        );
        assert_eq!(m.tenants.len(), 100);
        let dedicated = m
            .tenants
            .iter()
            .filter(|t| t.instance == InstanceMode::Dedicated);
        assert_eq!(dedicated.count(), 10);
        let suspended = m
            .tenants
            .iter()
            .filter(|t| t.status == TenantStatus::Suspended);
        assert_eq!(suspended.count(), 14);
    }

    #[test]
    fn synthetic_specs_are_valid() {
        let loaded = load(synthetic_specs(50));
        assert!(!loaded.has_errors(), "{}", loaded.render());
        assert_eq!(loaded.model.map(|m| m.tenants.len()), Some(50));
    }
}

/// What [`fleet`] generates.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fleet {
    /// Generated tenants: slugs `t00000`, `t00001`, … cloned from the model's first tenant.
    pub tenants: usize,
    /// How many of them are dedicated (spread evenly over the slugs, on the `enterprise`
    /// plan); the others are shared.
    pub dedicated: usize,
    /// Every k-th generated tenant (k > 0) is suspended.
    pub suspended_every: Option<usize>,
    /// Keep the model's own tenants beside the generated ones (their dedicated ones become
    /// shared, so that [`Fleet::dedicated`] is exact).
    pub keep_existing: bool,
}

/// `model` with a fleet of generated tenants: unique org ids and Stripe customer ids, plans
/// in turn, display names that need quoting in SQL and Bicep (`Tenant 7 O'Brien \ Co`), no
/// environment restriction. The one synthetic-model builder of the workspace's tests.
pub fn fleet(mut model: Model, fleet: Fleet) -> Model {
    let Some(template) = model.tenants.first().cloned() else {
        panic!("the model has no tenant to clone");
    };
    let plans: Vec<String> = model.plans.iter().map(|p| p.name.clone()).collect();
    if fleet.keep_existing {
        for t in &mut model.tenants {
            t.instance = InstanceMode::Shared;
        }
    } else {
        model.tenants.clear();
    }
    let step = (fleet.tenants / fleet.dedicated.max(1)).max(1);
    for i in 0..fleet.tenants {
        let mut t = template.clone();
        let slug = format!("t{i:05}");
        t.slug = TenantSlug::parse(&slug).unwrap_or_else(|e| panic!("{e}"));
        t.display_name = format!("Tenant {i} O'Brien \\ Co");
        t.zitadel_org_id = (300_000_000_000_000_000u64 + i as u64).to_string();
        t.stripe_customer_id = Some(format!("cus_{i:08}"));
        t.environments = Vec::new();
        t.plan = plans[i % plans.len()].clone();
        t.instance = InstanceMode::Shared;
        if fleet.dedicated > 0 && i % step == 0 && i / step < fleet.dedicated {
            t.instance = InstanceMode::Dedicated;
            t.plan = "enterprise".to_string();
        }
        t.status = match fleet.suspended_every {
            Some(k) if k > 0 && i % k == k - 1 => TenantStatus::Suspended,
            _ => TenantStatus::Active,
        };
        model.tenants.push(t);
    }
    model.tenants.sort_by(|a, b| a.slug.cmp(&b.slug));
    model
}
