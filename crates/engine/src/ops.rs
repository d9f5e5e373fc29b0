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
    secret::resolve(r, |name| std::env::var(name).ok())
}

/// The providers of an environment, connected.
pub fn connect(env: Env<'_>) -> Result<Vec<Box<dyn Provider>>> {
    let p = env.platform;
    let sslmode = if p.azure.is_some() {
        providers::postgres::SslMode::Require
    } else {
        providers::postgres::SslMode::Disable
    };
    let pg = providers::postgres::Postgres::connect(providers::postgres::ConnectParams {
        host: p.postgres.host.clone(),
        port: p.postgres.port,
        user: p.postgres.admin_user.clone(),
        password: resolve_secret(&p.postgres.admin_password)
            .ok()
            .map(|s| s.expose().to_string()),
        dbname: p.postgres.platform_database.clone(),
        sslmode,
        connect_timeout: std::time::Duration::from_secs(10),
    })
    .with_context(|| {
        format!(
            "connecting to PostgreSQL at {}:{}",
            p.postgres.host, p.postgres.port
        )
    })?;
    let password = secret::resolve_non_empty(&p.pocketbase.superuser_password, |name| {
        std::env::var(name).ok()
    })
    .context("the PocketBase superuser password")?;
    let pb = providers::pocketbase::PocketBase::connect(
        &p.pocketbase.url,
        &p.pocketbase.superuser_email,
        password.expose(),
    )
    .with_context(|| format!("connecting to PocketBase at {}", p.pocketbase.url))?
    .managing(env);
    Ok(vec![Box::new(pg), Box::new(pb)])
}

/// Everything the specs want, for the providers given.
pub fn desired(env: Env<'_>, providers: &[Box<dyn Provider>]) -> Vec<Resource> {
    let names: BTreeSet<&str> = providers.iter().map(|p| p.name()).collect();
    let mut out = Vec::new();
    if names.contains("postgres") {
        out.extend(providers::postgres::desired(env));
    }
    if names.contains("pocketbase") {
        out.extend(providers::pocketbase::desired(env));
    }
    out
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
pub fn read_live(providers: &[Box<dyn Provider>]) -> Result<Live> {
    let results: Vec<(String, Result<providers::LiveRead>)> = std::thread::scope(|s| {
        let handles: Vec<_> = providers
            .iter()
            .map(|p| s.spawn(move || (p.name().to_string(), p.read())))
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

/// Resources kombiform owns by convention even without state: every row and table of the
/// `kombify` schema, and PocketBase collections in the tenant namespace (`t_…`).
fn owned_by_convention(address: &str) -> bool {
    address.starts_with("postgres.") || address.starts_with("pocketbase.collection.t_")
}

/// Consent given in the specs: tenants with `allowDestroy: true` (as the live tenant row or
/// the spec says) consent to the deletion of everything that belongs to them.
fn spec_consent(env: Env<'_>, live: &[Resource], desired: &[Resource]) -> BTreeSet<String> {
    let mut tenants: BTreeSet<String> = env
        .tenants()
        .filter(|t| t.allow_destroy)
        .map(|t| t.slug.clone())
        .collect();
    for r in live {
        if r.address.starts_with("postgres.tenant.")
            && r.attrs
                .get("allow_destroy")
                .and_then(serde_json::Value::as_bool)
                == Some(true)
        {
            if let Some(slug) = r.address.strip_prefix("postgres.tenant.") {
                tenants.insert(slug.to_string());
            }
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

/// Makes a plan.
pub fn make_plan(
    env: Env<'_>,
    spec_hash: &str,
    state: &State,
    providers: &[Box<dyn Provider>],
    live: &Live,
    allow_destroy: &[String],
) -> Plan {
    let desired = desired(env, providers);
    let mut managed = state.managed();
    managed.extend(
        live.resources
            .iter()
            .filter(|r| owned_by_convention(&r.address))
            .map(|r| r.address.clone()),
    );
    let applied = state.applied();
    let consent = Consent {
        allowed: allow_destroy.iter().cloned().collect(),
        spec_allowed: spec_consent(env, &live.resources, &desired),
    };
    let (mut changes, unchanged, _) = plan::diff(
        &DiffInput {
            desired: &desired,
            live: &live.resources,
            applied: &applied,
            managed: &managed,
        },
        &consent,
    );
    for c in &mut changes {
        if let Some(p) = providers.iter().find(|p| p.name() == c.provider()) {
            p.classify(c);
        }
    }
    // After `classify`: providers may have marked more changes destructive. A change that
    // would lose data by converting a column type is refused whatever the consent.
    let refused = changes
        .iter()
        .filter(|c| {
            (c.destructive && !consent.allows(&c.address))
                || !providers::postgres::lossy_type_changes(c).is_empty()
        })
        .map(|c| c.address.clone())
        .collect();
    Plan {
        format: PLAN_FORMAT,
        env: env.name().to_string(),
        spec_hash: spec_hash.to_string(),
        state_serial: state.serial,
        fingerprints: live.fingerprints.clone(),
        live_hashes: live.hashes.clone(),
        changes,
        unchanged,
        refused,
    }
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
    providers: &[Box<dyn Provider>],
    backend: &dyn StateBackend,
    state: State,
    opts: &apply::Options,
    command: &str,
    observe: &(dyn Fn(&Event) + Sync),
) -> Result<Report> {
    let started_at = crate::state::now_rfc3339();
    let mut state = state;
    let by_name: BTreeMap<String, &dyn Provider> = providers
        .iter()
        .map(|p| (p.name().to_string(), p.as_ref()))
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
        p.record_audit(&record)
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
