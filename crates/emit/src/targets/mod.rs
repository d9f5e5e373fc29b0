//! Targets, pure part: for each system kombiform manages (Azure, Kong, PocketBase,
//! PostgreSQL), what the specs want of it as [`Resource`]s with stable addresses
//! (`<target>.<type>.<name>`) and dependencies, which live resources it owns by convention,
//! and which changes lose data or can never be made.
//!
//! A target is one module registered in [`ALL`]. The resource graph of an environment
//! ([`graph`]) is the union of every target's desired resources, so the graph that
//! `kombiform graph` prints, the cycle check of `build` and the order of a plan's changes all
//! use the same addresses and the same dependencies. The engine pairs each target with a
//! client (connect, read, apply) in its own registry.
//!
//! Not here: any IO (clients live in `kombiform_engine::providers`), or the generated files
//! (the emitter modules of this crate).

pub mod azure;
pub mod kong;
pub mod pocketbase;
pub mod postgres;
pub mod runtime;

use kombiform_model::Env;
use kombiform_plan::graph::Graph;
use kombiform_plan::{Change, Resource};

/// A system kombiform manages, as far as the specs and the plan see it. Pure.
pub trait Target: Sync + std::fmt::Debug {
    /// The address prefix of its resources (`postgres`).
    fn name(&self) -> &'static str;

    /// Whether `env` has this target at all (Azure only for Azure environments).
    fn applies(&self, env: Env<'_>) -> bool {
        let _ = env;
        true
    }

    /// Every resource the specs want of this target in `env`, with its dependencies (on
    /// resources of any target).
    fn desired(&self, env: Env<'_>) -> Vec<Resource>;

    /// Whether kombiform owns the live resource at `address` even when state does not name
    /// it (its own namespaces: the `kombify` schema, `t_…` collections). What it owns and
    /// the specs no longer want is deleted (with consent when it holds data).
    fn owns(&self, address: &str) -> bool {
        let _ = address;
        false
    }

    /// Marks changes destructive that the generic diff cannot judge (a column or a field
    /// dropped).
    fn classify(&self, change: &mut Change) {
        let _ = change;
    }

    /// Why `change` can never be applied, whatever the consent (a lossy column type change).
    fn refusal(&self, change: &Change) -> Option<String> {
        let _ = change;
        None
    }

    /// The tenant whose consent to destroy its data a live resource records
    /// (`postgres.tenant.acme` with `allow_destroy = true`), if any.
    fn destroy_consent(&self, live: &Resource) -> Option<String> {
        let _ = live;
        None
    }
}

/// Every target, in address order.
pub const ALL: &[&dyn Target] = &[
    &azure::Azure,
    &kong::Kong,
    &pocketbase::PocketBase,
    &postgres::Postgres,
];

/// The target of an address (`postgres.tenant.acme` → PostgreSQL).
pub fn of(address: &str) -> Option<&'static dyn Target> {
    let name = kombiform_plan::provider_of(address);
    ALL.iter().copied().find(|t| t.name() == name)
}

/// Every resource every target wants in `env`.
pub fn desired(env: Env<'_>) -> Vec<Resource> {
    ALL.iter()
        .filter(|t| t.applies(env))
        .flat_map(|t| t.desired(env))
        .collect()
}

/// The dependency graph of every resource of `env`, across every target.
pub fn graph(env: Env<'_>) -> Graph {
    Graph::from_resources(&desired(env))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kombiform_test_support::example_model;

    #[test]
    fn every_dependency_names_a_resource_of_the_graph() {
        let m = example_model();
        for env in m.envs() {
            let g = graph(env);
            assert!(g.order().is_ok(), "{}: cycle", env.name());
            assert!(
                g.dangling().is_empty(),
                "{}: {:?}",
                env.name(),
                g.dangling()
            );
        }
    }

    #[test]
    fn each_address_belongs_to_the_target_that_wants_it() {
        let m = example_model();
        for env in m.envs() {
            for t in ALL.iter().filter(|t| t.applies(env)) {
                for r in t.desired(env) {
                    assert_eq!(
                        of(&r.address).map(|t| t.name()),
                        Some(t.name()),
                        "{}",
                        r.address
                    );
                }
            }
        }
    }

    #[test]
    fn tenants_are_wired_across_targets() {
        let m = example_model();
        let env = m.env("prod").unwrap();
        let g = graph(env);
        assert!(g
            .needs("kong.consumer.acme")
            .any(|d| d == "postgres.tenant.acme"));
        assert!(g
            .needs("pocketbase.collection.t_acme_users")
            .any(|d| d == "postgres.tenant.acme"));
        assert!(g
            .needs("postgres.table.plans")
            .any(|d| d.starts_with("azure.postgres-database.")));
    }
}
