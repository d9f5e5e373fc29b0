//! Operations behind `plan` and `apply`: connect providers, read live state, make a plan,
//! check a saved plan is still fresh, apply it while holding the state lock, journal every
//! change's start and end, and leave an audit record whatever happens.
//!
//! Recovery: a plan reconciles the state with what is live ([`kombiform_plan::reconcile`]):
//! whatever interrupted an earlier apply, a live resource that matches the specs but is not
//! recorded is adopted, and a change in doubt is adopted, made again or forgotten. An audit
//! record that an audit trail could not take (PostgreSQL lost) is kept by the state backend
//! and delivered by the next apply ([`deliver_audit`]). Connecting, reading and auditing
//! retry transient failures with the apply's budget ([`apply::Options`]).
//!
//! The glue between `plan` (pure), `providers` (IO), `state` (storage) and `apply` (the
//! engine). It does not print: the CLI renders what these functions return.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::apply::{self, Event, Interrupt, Recorder, Report};
use crate::providers::{self, AuditChange, AuditRecord, Provider};
use crate::state::{Journal, LockInfo, State, StateBackend, Undelivered};
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
/// applies to it. A transient failure (a server restarting, a connection refused) is
/// retried with the default budget of [`apply::Options`].
pub fn connect(env: Env<'_>) -> Result<Vec<Provider>> {
    connect_selected(env, None)
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
            .map(|p| {
                s.spawn(move || {
                    let opts = apply::Options::default();
                    let never = Interrupt::default();
                    let read = apply::retrying(&opts, &never, || p.client.read(), &|_, _, _| {});
                    (p.name().to_string(), read)
                })
            })
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

/// Consent given by the specs (tenants with `allowDestroy: true`) and kept by live records
/// (a target's record of a tenant's consent, such as the tenant's row: what still consents
/// once the tenant's spec is gone), on top of the `--allow-destroy` arguments. A tenant's
/// consent covers everything that belongs to it (`meta.tenant`).
fn consent(env: Env<'_>, providers: &[Provider], live: &[Resource], allowed: &[String]) -> Consent {
    let spec_tenants: BTreeSet<String> = env
        .tenants()
        .filter(|t| t.allow_destroy)
        .map(|t| t.slug.to_string())
        .collect();
    let mut recorded_tenants = BTreeSet::new();
    for r in live {
        if let Some(p) = providers
            .iter()
            .find(|p| p.name() == kombiform_plan::provider_of(&r.address))
        {
            recorded_tenants.extend(p.target.destroy_consent(r));
        }
    }
    Consent {
        allowed: allowed.iter().cloned().collect(),
        spec_tenants,
        recorded_tenants,
    }
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
    // Fields the running platform owns are planned from their live values (billing's plan,
    // the Admin's flags), so nothing reverts them and what derives from them follows.
    let effective = kombiform_emit::targets::runtime::effective(env, &live.resources);
    let env = effective
        .model
        .as_ref()
        .and_then(|m| m.env(env.name()))
        .unwrap_or(env);
    let desired = desired(env, providers);
    let mut managed = state.managed();
    managed.extend(
        live.resources
            .iter()
            .filter(|r| owned_by_convention(providers, &r.address))
            .map(|r| r.address.clone()),
    );
    let applied = state.applied();
    let consent = consent(env, providers, &live.resources, allow_destroy);
    let input = DiffInput {
        desired: &desired,
        live: &live.resources,
        applied: &applied,
        managed: &managed,
    };
    let diff = plan::diff(&input).map_err(|cycle| {
        anyhow::anyhow!("dependency cycle: resources depend on each other: {cycle}")
    })?;
    let read: BTreeSet<String> = live.fingerprints.keys().cloned().collect();
    let reconciled = plan::reconcile(&input, &state.in_doubt(), &read);
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
    let vetoed: BTreeMap<String, String> = changes
        .iter()
        .filter_map(|c| Some((c.address.clone(), target_of(&c.address)?.refusal(c)?)))
        .collect();
    let refused = plan::refused(&changes, &consent, |c| vetoed.contains_key(&c.address));
    let consented = plan::consented(&changes, &consent);
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
        vetoed,
        consented,
        adopt: reconciled.adopt,
        forget: reconciled.forget,
        kept: effective.kept,
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

/// What an apply needs besides its plan and state. The caller holds the lock.
pub struct ApplyContext<'a> {
    /// The connected providers.
    pub providers: &'a [Provider],
    /// Where the state, journal and audit log are kept.
    pub backend: &'a dyn StateBackend,
    /// Parallelism, retries, grace period.
    pub opts: &'a apply::Options,
    /// Triggered to stop gracefully (the CLI does on a signal).
    pub interrupt: &'a Arc<Interrupt>,
    /// The command line, for the audit record.
    pub command: &'a str,
    /// Hears every event.
    pub observe: &'a (dyn Fn(&Event) + Sync),
}

/// What an apply did.
#[derive(Debug)]
pub struct Applied {
    /// The changes: done, unrecorded, failed, abandoned, not started.
    pub report: Report,
    /// Resources adopted into the state and records forgotten, before the changes.
    pub adopted: usize,
    /// Records forgotten.
    pub forgotten: usize,
    /// Failures of the state or the audit (the changes' own failures are in `report`).
    pub errors: Vec<String>,
    /// What the user should know (an audit record kept for later delivery).
    pub warnings: Vec<String>,
    /// The audit record left.
    pub audit: AuditRecord,
}

impl Applied {
    /// Whether every change was applied and recorded, and nothing else failed.
    pub fn succeeded(&self) -> bool {
        self.report.succeeded() && self.errors.is_empty()
    }
}

/// Records starts and ends in the journal, then in the state in memory.
struct StateRecorder<'a> {
    state: &'a mut State,
    journal: &'a mut dyn Journal,
}

impl Recorder for StateRecorder<'_> {
    fn started(&mut self, changes: &[&plan::Change]) -> Result<()> {
        self.journal.record_started(self.state, changes).map(|_| ())
    }

    fn done(&mut self, changes: &[&plan::Change]) -> Result<()> {
        self.journal.record_all(self.state, changes).map(|_| ())
    }
}

/// Applies a plan while the caller holds the lock: records what the plan adopts and
/// forgets, journals each change's start and end, compacts the state at the end, and leaves
/// an audit record whatever happened (failed, interrupted, or the state unwritable), in the
/// state backend and in every provider's audit trail (kept for later delivery where a trail
/// cannot take it). Never fails as a whole: what went wrong is in the result.
pub fn run_apply(plan: &Plan, ctx: &ApplyContext<'_>, state: State) -> Applied {
    let started_at = crate::state::now_rfc3339();
    let mut state = state;
    let mut errors = Vec::new();
    let (report, reconciled) = match journal_and_apply(plan, ctx, &mut state) {
        Ok(report) => (report, true),
        Err(why) => {
            errors.push(why);
            let report = Report {
                not_started: plan.changes.iter().map(|c| c.address.clone()).collect(),
                interrupted: ctx.interrupt.is_set(),
                ..Report::default()
            };
            (report, false)
        }
    };
    if let Err(e) = ctx.backend.compact(&plan.env, &state) {
        errors.push(format!(
            "writing the state snapshot of `{}` (the journal keeps every record: the next run \
             replays it): {e:#}",
            plan.env
        ));
    }
    let info = LockInfo::current(ctx.command);
    let first_error = report
        .failed
        .first()
        .or(report.unrecorded.first())
        .map(|(a, e)| format!("{a}: {e}"))
        .or_else(|| errors.first().cloned())
        .or_else(|| {
            report
                .interrupted
                .then(|| "interrupted before every change was applied".to_string())
        });
    let record = AuditRecord {
        id: crate::state::random_id(),
        actor: format!("{}@{}", info.user, info.host),
        started_at,
        finished_at: crate::state::now_rfc3339(),
        env: plan.env.clone(),
        command: ctx.command.to_string(),
        plan_hash: plan.hash(),
        changes: audit_changes(plan, &report),
        result: audit_result(&report, &errors).to_string(),
        error: first_error,
        adopted: if reconciled {
            plan.adopt.iter().map(|r| r.address.clone()).collect()
        } else {
            Vec::new()
        },
        forgotten: if reconciled {
            plan.forget.clone()
        } else {
            Vec::new()
        },
    };
    let mut warnings = Vec::new();
    leave_audit(ctx, &record, &mut errors, &mut warnings);
    Applied {
        adopted: record.adopted.len(),
        forgotten: record.forgotten.len(),
        report,
        errors,
        warnings,
        audit: record,
    }
}

/// Opens the journal, records what the plan adopts and forgets, then runs the changes. `Err`
/// (why) when the state could not be written before any change started.
fn journal_and_apply(
    plan: &Plan,
    ctx: &ApplyContext<'_>,
    state: &mut State,
) -> std::result::Result<Report, String> {
    let mut journal = ctx
        .backend
        .journal(&plan.env)
        .map_err(|e| format!("opening the state journal of `{}`: {e:#}", plan.env))?;
    journal
        .record_reconciled(state, &plan.adopt, &plan.forget)
        .map_err(|e| {
            format!(
                "recording {} adopted and {} forgotten resources in state: {e:#}",
                plan.adopt.len(),
                plan.forget.len()
            )
        })?;
    let mut recorder = StateRecorder {
        state,
        journal: journal.as_mut(),
    };
    let by_name: BTreeMap<String, Arc<dyn providers::Client>> = ctx
        .providers
        .iter()
        .map(|p| (p.name().to_string(), Arc::clone(&p.client)))
        .collect();
    Ok(apply::apply(
        plan,
        &by_name,
        ctx.opts,
        &mut recorder,
        ctx.interrupt,
        ctx.observe,
    ))
}

/// Leaves an audit record of a plan that was not applied at all (refused by the guard,
/// stale, cancelled): `result` is `refused`, `why` says why.
pub fn audit_unapplied(
    plan: &Plan,
    ctx: &ApplyContext<'_>,
    why: &str,
) -> (Vec<String>, Vec<String>) {
    let info = LockInfo::current(ctx.command);
    let now = crate::state::now_rfc3339();
    let report = Report {
        not_started: plan.changes.iter().map(|c| c.address.clone()).collect(),
        ..Report::default()
    };
    let record = AuditRecord {
        id: crate::state::random_id(),
        actor: format!("{}@{}", info.user, info.host),
        started_at: now.clone(),
        finished_at: now,
        env: plan.env.clone(),
        command: ctx.command.to_string(),
        plan_hash: plan.hash(),
        changes: audit_changes(plan, &report),
        result: "refused".to_string(),
        error: Some(why.to_string()),
        adopted: Vec::new(),
        forgotten: Vec::new(),
    };
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    leave_audit(ctx, &record, &mut errors, &mut warnings);
    (errors, warnings)
}

/// `succeeded`, `interrupted`, `partially failed` or `failed`.
fn audit_result(report: &Report, errors: &[String]) -> &'static str {
    if report.interrupted {
        "interrupted"
    } else if report.succeeded() && errors.is_empty() {
        "succeeded"
    } else if report.applied_any() {
        "partially failed"
    } else {
        "failed"
    }
}

/// Writes `record` to the state backend's audit log and to every provider's audit trail
/// (retrying transient failures); what a trail could not take is kept for the next apply.
fn leave_audit(
    ctx: &ApplyContext<'_>,
    record: &AuditRecord,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    if let Err(e) = ctx.backend.append_audit(&record.env, record) {
        errors.push(format!(
            "appending the audit record to the state backend: {e:#}"
        ));
    }
    // Records kept by earlier applies go first (their trail may exist only now).
    if let Err(e) = deliver_audit(&record.env, ctx.providers, ctx.backend) {
        warnings.push(format!(
            "delivering audit records kept by an earlier apply: {e:#}"
        ));
    }
    let mut owed = Vec::new();
    for p in ctx.providers {
        if let Err(e) = audit_to(p, ctx.opts, record) {
            warnings.push(format!(
                "the audit record could not be written to {}: {e:#}",
                p.name()
            ));
            owed.push(p.name().to_string());
        }
    }
    if owed.is_empty() {
        return;
    }
    let kept = ctx.backend.undelivered(&record.env).and_then(|mut all| {
        all.push(Undelivered {
            to: owed.clone(),
            record: record.clone(),
        });
        ctx.backend.keep_undelivered(&record.env, &all)
    });
    match kept {
        Ok(()) => warnings.push(format!(
            "the audit record is kept in the state backend, marked undelivered to {}: the \
             next apply delivers it",
            owed.join(", ")
        )),
        Err(e) => errors.push(format!(
            "keeping the undelivered audit record for {}: {e:#}",
            owed.join(", ")
        )),
    }
}

/// One provider's audit trail, retrying transient failures.
fn audit_to(p: &Provider, opts: &apply::Options, record: &AuditRecord) -> Result<()> {
    let never = Interrupt::default();
    apply::retrying(
        opts,
        &never,
        || p.client.record_audit(record),
        &|_, _, _| {},
    )
}

/// Delivers the audit records kept because an audit trail could not take them (the caller
/// holds the lock). Returns how many were delivered; what still fails stays kept.
pub fn deliver_audit(
    env: &str,
    providers: &[Provider],
    backend: &dyn StateBackend,
) -> Result<usize> {
    let kept = backend.undelivered(env)?;
    if kept.is_empty() {
        return Ok(0);
    }
    let opts = apply::Options::default();
    let mut delivered = 0;
    let mut still = Vec::new();
    for mut u in kept {
        u.to.retain(|name| {
            providers
                .iter()
                .find(|p| p.name() == name)
                .is_none_or(|p| audit_to(p, &opts, &u.record).is_err())
        });
        if u.to.is_empty() {
            delivered += 1;
        } else {
            still.push(u);
        }
    }
    backend
        .keep_undelivered(env, &still)
        .context("updating the undelivered audit records")?;
    Ok(delivered)
}

fn audit_changes(plan: &Plan, report: &Report) -> Vec<AuditChange> {
    let set = |v: &[String]| -> BTreeSet<String> { v.iter().cloned().collect() };
    let pairs =
        |v: &[(String, String)]| -> BTreeSet<String> { v.iter().map(|(a, _)| a.clone()).collect() };
    let done = set(&report.done);
    let unrecorded = pairs(&report.unrecorded);
    let failed = pairs(&report.failed);
    let abandoned = set(&report.abandoned);
    plan.changes
        .iter()
        .map(|c| AuditChange {
            address: c.address.clone(),
            action: c.action.as_str().to_string(),
            result: if done.contains(&c.address) {
                "done"
            } else if unrecorded.contains(&c.address) {
                "unrecorded"
            } else if failed.contains(&c.address) {
                "failed"
            } else if abandoned.contains(&c.address) {
                "abandoned"
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

/// The providers of `env` a selection needs (all of them without one), connected; a
/// transient failure is retried with the default budget of [`apply::Options`].
pub fn connect_selected(env: Env<'_>, selection: Option<&Selection>) -> Result<Vec<Provider>> {
    let opts = apply::Options::default();
    let never = Interrupt::default();
    providers::REGISTRY
        .iter()
        .filter(|r| r.target.applies(env) && (r.available)(env))
        .filter(|r| selection.is_none_or(|s| s.targets.contains(r.target.name())))
        .map(|r| {
            let client = apply::retrying(&opts, &never, || (r.connect)(env), &|_, _, _| {})?;
            Ok(Provider {
                target: r.target,
                client: Arc::from(client),
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
