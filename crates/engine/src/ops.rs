//! Operations behind `plan` and `apply`: connect providers, read live state, make a plan,
//! check a saved plan is still fresh, apply it while holding the state lock, journal every
//! completed change, and leave audit records.
//!
//! The glue between `plan` (pure), `providers` (IO), `state` (storage) and `apply` (the
//! engine). It does not print: the CLI renders what these functions return.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::apply::{self, Event, Report};
use crate::providers::{self, AuditChange, AuditRecord, Provider};
use crate::state::{LockInfo, State, StateBackend};
use kombiform_model::secret::{self, Secret, SecretError};
use kombiform_model::{Env, SecretRef};
use kombiform_plan::{self as plan, Consent, DiffInput, Plan, Resource, PLAN_FORMAT};
use kombiform_spec::load::Input;

/// A hash of the spec files (paths relative to the spec directory, and contents).
pub fn spec_hash(inputs: &[Input], dir: &str) -> String {
    let mut sorted: Vec<&Input> = inputs.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut h = Sha256::new();
    for i in sorted {
        let rel = i.path.strip_prefix(dir).unwrap_or(&i.path);
        h.update(rel.trim_start_matches('/').as_bytes());
        h.update([0]);
        h.update(i.text.as_bytes());
        h.update([0]);
    }
    plan::hex(&h.finalize())
}

/// Resolves a secret reference from the process environment with the workspace's one rule
/// ([`kombiform_model::secret`]: `{env: NAME}` reads `NAME`, `{keyVault: name}` reads
/// `KV_NAME`; a set but empty variable is an empty value).
pub fn resolve_secret(r: &SecretRef) -> Result<Secret, SecretError> {
    secret::resolve(r, env_lookup)
}

/// The process environment as a secret lookup.
pub fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The providers of an environment, connected: every registered provider whose target
/// applies to it.
pub fn connect(env: Env<'_>) -> Result<Vec<Provider>> {
    providers::REGISTRY
        .iter()
        .filter(|r| r.target.applies(env))
        .map(|r| {
            let client = (r.connect)(env)?;
            Ok(Provider {
                target: r.target,
                client,
            })
        })
        .collect()
}

/// Everything the specs want, of the providers given.
pub fn desired(env: Env<'_>, providers: &[Provider]) -> Vec<Resource> {
    providers
        .iter()
        .flat_map(|p| p.target.desired(env))
        .collect()
}

/// What every provider read.
pub struct Live {
    /// All live resources.
    pub resources: Vec<Resource>,
    /// Per provider, the fingerprint.
    pub fingerprints: BTreeMap<String, String>,
    /// Per resource, a short hash.
    pub hashes: BTreeMap<String, String>,
    /// Requests it took.
    pub requests: u64,
}

/// Reads every provider, in parallel.
pub fn read_live(providers: &[Provider]) -> Result<Live> {
    let results: Vec<(String, Result<providers::LiveRead>)> = std::thread::scope(|s| {
        let handles: Vec<_> = providers
            .iter()
            .map(|p| s.spawn(move || (p.name().to_string(), p.client.read())))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| ("?".to_string(), Err(anyhow::anyhow!("reader panicked"))))
            })
            .collect()
    });
    let mut live = Live {
        resources: Vec::new(),
        fingerprints: BTreeMap::new(),
        hashes: BTreeMap::new(),
        requests: 0,
    };
    for (name, r) in results {
        let read = r.with_context(|| format!("reading live state from {name}"))?;
        live.fingerprints
            .insert(name, plan::fingerprint(&read.resources));
        live.requests += read.requests;
        for res in &read.resources {
            live.hashes
                .insert(res.address.clone(), plan::resource_hash(res));
        }
        live.resources.extend(read.resources);
    }
    Ok(live)
}

/// Whether a target owns `address` by convention even without state (its namespaces).
fn owned_by_convention(providers: &[Provider], address: &str) -> bool {
    providers
        .iter()
        .find(|p| p.name() == kombiform_plan::provider_of(address))
        .is_some_and(|p| p.target.owns(address))
}

/// Consent given in the specs: tenants with `allowDestroy: true` (as the spec says, or as a
/// live resource of some target records it) consent to the deletion of everything that
/// belongs to them.
fn spec_consent(
    env: Env<'_>,
    providers: &[Provider],
    live: &[Resource],
    desired: &[Resource],
) -> BTreeSet<String> {
    let mut tenants: BTreeSet<String> = env
        .tenants()
        .filter(|t| t.allow_destroy)
        .map(|t| t.slug.to_string())
        .collect();
    for r in live {
        if let Some(p) = providers
            .iter()
            .find(|p| p.name() == kombiform_plan::provider_of(&r.address))
        {
            tenants.extend(p.target.destroy_consent(r));
        }
    }
    live.iter()
        .chain(desired)
        .filter(|r| {
            r.meta
                .get("tenant")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|t| tenants.contains(t))
        })
        .map(|r| r.address.clone())
        .collect()
}

/// Makes a plan. A dependency cycle among the resources is an error naming it.
pub fn make_plan(
    env: Env<'_>,
    spec_hash: &str,
    state: &State,
    providers: &[Provider],
    live: &Live,
    allow_destroy: &[String],
) -> Result<Plan> {
    let desired = desired(env, providers);
    let mut managed = state.managed();
    managed.extend(
        live.resources
            .iter()
            .filter(|r| owned_by_convention(providers, &r.address))
            .map(|r| r.address.clone()),
    );
    let applied = state.applied();
    let consent = Consent {
        allowed: allow_destroy.iter().cloned().collect(),
        spec_allowed: spec_consent(env, providers, &live.resources, &desired),
    };
    let diff = plan::diff(&DiffInput {
        desired: &desired,
        live: &live.resources,
        applied: &applied,
        managed: &managed,
    })
    .map_err(|cycle| {
        anyhow::anyhow!("dependency cycle: resources depend on each other: {cycle}")
    })?;
    let target_of = |address: &str| {
        providers
            .iter()
            .find(|p| p.name() == kombiform_plan::provider_of(address))
            .map(|p| p.target)
    };
    let mut changes = diff.changes;
    for c in &mut changes {
        if let Some(t) = target_of(&c.address) {
            t.classify(c);
        }
    }
    // After the targets classified: some destructive changes only a target can see, and
    // some changes a target can never make whatever the consent.
    let refused = plan::refused(&changes, &consent, |c| {
        target_of(&c.address).is_some_and(|t| t.refusal(c).is_some())
    });
    Ok(Plan {
        format: PLAN_FORMAT,
        env: env.name().to_string(),
        spec_hash: spec_hash.to_string(),
        state_serial: state.serial,
        fingerprints: live.fingerprints.clone(),
        live_hashes: live.hashes.clone(),
        changes,
        unchanged: diff.unchanged,
        refused,
    })
}

/// Why a saved plan can no longer be applied, or `None` when it is fresh.
pub fn staleness(plan: &Plan, spec_hash: &str, state: &State, live: &Live) -> Option<String> {
    if plan.format != PLAN_FORMAT {
        return Some(format!(
            "the plan file has format {}, this kombiform reads format {PLAN_FORMAT}",
            plan.format
        ));
    }
    let mut why = Vec::new();
    if plan.spec_hash != spec_hash {
        why.push("the specs changed since the plan was made".to_string());
    }
    if plan.state_serial != state.serial {
        why.push(format!(
            "the state moved from serial {} to {} (another apply ran)",
            plan.state_serial, state.serial
        ));
    }
    if plan.fingerprints != live.fingerprints {
        let moved = plan::moved(&plan.live_hashes, &live.hashes);
        let shown: Vec<String> = moved.iter().take(20).cloned().collect();
        let more = moved.len().saturating_sub(shown.len());
        let mut s = format!(
            "the live state changed since the plan was made:\n    {}",
            shown.join("\n    ")
        );
        if more > 0 {
            s.push_str(&format!("\n    … and {more} more"));
        }
        why.push(s);
    }
    (!why.is_empty()).then(|| why.join("\n  "))
}

/// Who is running this, for locks and audit records.
pub fn lock_info(command: &str) -> LockInfo {
    LockInfo::current(command)
}

/// Applies a plan while the caller holds the lock: journals each completed change, compacts
/// the state at the end, and leaves audit records (state backend and providers).
pub fn run_apply(
    plan: &Plan,
    providers: &[Provider],
    backend: &dyn StateBackend,
    state: State,
    opts: &apply::Options,
    command: &str,
    observe: &(dyn Fn(&Event) + Sync),
) -> Result<Report> {
    let started_at = crate::state::now_rfc3339();
    let mut state = state;
    let by_name: BTreeMap<String, &dyn providers::Client> = providers
        .iter()
        .map(|p| (p.name().to_string(), p.client.as_ref()))
        .collect();
    let mut journal = backend
        .journal(&plan.env)
        .with_context(|| format!("opening the state journal of `{}`", plan.env))?;
    let report = {
        let state_ref = &mut state;
        let journal_ref = &mut journal;
        let mut record = |cs: &[&plan::Change]| -> Result<()> {
            journal_ref.record_all(state_ref, cs)?;
            Ok(())
        };
        apply::apply(plan, &by_name, opts, &mut record, observe)
    };
    backend
        .compact(&plan.env, &state)
        .with_context(|| format!("writing the state of `{}`", plan.env))?;
    let info = LockInfo::current(command);
    let record = AuditRecord {
        actor: format!("{}@{}", info.user, info.host),
        started_at,
        finished_at: crate::state::now_rfc3339(),
        env: plan.env.clone(),
        command: command.to_string(),
        plan_hash: plan.hash(),
        changes: audit_changes(plan, &report),
        result: if report.succeeded() {
            "succeeded"
        } else {
            "failed"
        }
        .to_string(),
        error: report.failed.first().map(|(a, e)| format!("{a}: {e}")),
    };
    backend
        .append_audit(&plan.env, &record)
        .context("appending the audit record to the state backend")?;
    for p in providers {
        p.client
            .record_audit(&record)
            .with_context(|| format!("writing the audit record to {}", p.name()))?;
    }
    Ok(report)
}

fn audit_changes(plan: &Plan, report: &Report) -> Vec<AuditChange> {
    let done: BTreeSet<&str> = report.done.iter().map(String::as_str).collect();
    let failed: BTreeSet<&str> = report.failed.iter().map(|(a, _)| a.as_str()).collect();
    plan.changes
        .iter()
        .map(|c| AuditChange {
            address: c.address.clone(),
            action: c.action.as_str().to_string(),
            result: if done.contains(c.address.as_str()) {
                "done"
            } else if failed.contains(c.address.as_str()) {
                "failed"
            } else {
                "not started"
            }
            .to_string(),
        })
        .collect()
}

// ---- --target: a part of the graph ----

/// What `--target ADDRESS_PREFIX` selects: the resources matching a prefix and everything
/// they depend on, and the targets (providers) they belong to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// The prefixes given.
    pub prefixes: Vec<String>,
    /// Every selected address (matches and their dependencies).
    pub addresses: BTreeSet<String>,
    /// The targets of the selected addresses.
    pub targets: BTreeSet<String>,
}

/// Whether `address` matches `prefix`: equal, below it (`azure` and `azure.` both match
/// `azure.keyvault.x`; `postgres.tenant.acme` matches itself, not `postgres.tenant.acme-labs`).
pub fn matches_prefix(address: &str, prefix: &str) -> bool {
    let p = prefix.trim_end_matches('.');
    address == p
        || address
            .strip_prefix(p)
            .is_some_and(|rest| rest.starts_with('.'))
}

impl Selection {
    /// Whether `address` was selected, or (for resources no longer desired, to delete)
    /// matches a prefix.
    pub fn contains(&self, address: &str) -> bool {
        self.addresses.contains(address) || self.prefixes.iter().any(|p| matches_prefix(address, p))
    }
}

/// The selection of `prefixes` in `env`; `None` when none was given (everything). A prefix
/// matching nothing is an error naming it.
pub fn select(env: Env<'_>, prefixes: &[String]) -> Result<Option<Selection>> {
    if prefixes.is_empty() {
        return Ok(None);
    }
    let graph = kombiform_emit::targets::graph(env);
    let all: Vec<String> = graph
        .order()
        .map_err(|c| anyhow::anyhow!("dependency cycle: {c}"))?
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut sel = Selection {
        prefixes: prefixes.to_vec(),
        ..Selection::default()
    };
    let mut todo: Vec<String> = Vec::new();
    for p in prefixes {
        let hits: Vec<&String> = all.iter().filter(|a| matches_prefix(a, p)).collect();
        let is_target = kombiform_emit::targets::ALL
            .iter()
            .any(|t| t.name() == p.trim_end_matches('.') && t.applies(env));
        if hits.is_empty() && !is_target {
            anyhow::bail!(
                "--target {p} matches no resource of environment `{}`",
                env.name()
            );
        }
        if is_target {
            sel.targets.insert(p.trim_end_matches('.').to_string());
        }
        todo.extend(hits.into_iter().cloned());
    }
    while let Some(a) = todo.pop() {
        if !sel.addresses.insert(a.clone()) {
            continue;
        }
        todo.extend(graph.needs(&a).map(str::to_string));
    }
    sel.targets.extend(
        sel.addresses
            .iter()
            .map(|a| kombiform_plan::provider_of(a).to_string()),
    );
    Ok(Some(sel))
}

/// The providers of `env` a selection needs (all of them without one).
pub fn connect_selected(env: Env<'_>, selection: Option<&Selection>) -> Result<Vec<Provider>> {
    providers::REGISTRY
        .iter()
        .filter(|r| r.target.applies(env))
        .filter(|r| selection.is_none_or(|s| s.targets.contains(r.target.name())))
        .map(|r| {
            let client = (r.connect)(env)?;
            Ok(Provider {
                target: r.target,
                client,
            })
        })
        .collect()
}

/// The plan cut to a selection: only the selected resources' changes (and deletes of what
/// matches a prefix).
pub fn restrict(plan: &mut Plan, selection: &Selection) {
    plan.changes.retain(|c| selection.contains(&c.address));
    let kept: BTreeSet<&str> = plan.changes.iter().map(|c| c.address.as_str()).collect();
    plan.refused.retain(|a| kept.contains(a.as_str()));
}

// ---- inputs a person must give ----

/// The inputs a plan needs that nobody gave (a secret a person must set), per provider.
pub fn missing_inputs(plan: &Plan, providers: &[Provider]) -> Vec<providers::MissingInput> {
    providers
        .iter()
        .flat_map(|p| {
            let mine: Vec<plan::Change> = plan
                .changes
                .iter()
                .filter(|c| c.provider() == p.name())
                .cloned()
                .collect();
            p.client.missing_inputs(&mine)
        })
        .collect()
}

/// The plan without the changes of `blocked` addresses and everything that depends on them:
/// what can be applied before a person provides the missing inputs.
pub fn without(plan: &Plan, blocked: &BTreeSet<String>) -> Plan {
    let mut out = plan.clone();
    let mut removed: BTreeSet<String> = blocked.clone();
    loop {
        let before = removed.len();
        for c in &plan.changes {
            let deps = c
                .desired
                .as_ref()
                .or(c.live.as_ref())
                .map_or(&[][..], |r| r.depends_on.as_slice());
            if deps.iter().any(|d| removed.contains(d)) {
                removed.insert(c.address.clone());
            }
        }
        if removed.len() == before {
            break;
        }
    }
    out.changes.retain(|c| !removed.contains(&c.address));
    out.refused.retain(|a| !removed.contains(a));
    out
}
