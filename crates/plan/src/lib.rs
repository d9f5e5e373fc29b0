//! Plans: desired resources vs live resources → the changes to make (pure).
//!
//! Every provider describes its resources the same way, as a [`Resource`]: a stable
//! address (`postgres.tenant.acme`, `pocketbase.collection.t_acme_nodes`), the attributes
//! kombiform owns (normalised, so that what the remote rewrites does not show as a change),
//! and what kind of resource it is (does deleting it lose data? which attributes force a
//! replacement?). [`diff`] compares desired, live and last-applied resources and classifies
//! each change; [`Plan`] is what `plan` saves and `apply` executes.
//!
//! Not here: any IO. Providers read live state, the engine's `state` stores what was
//! applied, the CLI prints.

pub mod graph;
pub mod render;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Version of the saved-plan format. A plan file of another version is refused.
pub const PLAN_FORMAT: u32 = 1;

/// What a value looks like in plans and logs when it is a secret.
pub const REDACTED: &str = "(sensitive)";

/// One resource, desired or live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Stable address: `<provider>.<type>.<name>`.
    pub address: String,
    /// Attributes kombiform owns, normalised.
    pub attrs: Map<String, Value>,
    /// Attribute names whose values are secrets: shown redacted, compared by hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<String>,
    /// Deleting it loses data (a collection with records, a tenant's rows).
    #[serde(default)]
    pub data_bearing: bool,
    /// Attributes whose change cannot be made in place: the resource is replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replace_on: Vec<String>,
    /// Addresses this resource needs first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Provider-private data a later apply needs (a remote id), never compared or shown.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub meta: Map<String, Value>,
}

impl Resource {
    /// A resource with attributes and nothing else.
    pub fn new(address: impl Into<String>, attrs: Map<String, Value>) -> Resource {
        Resource {
            address: address.into(),
            attrs,
            sensitive: Vec::new(),
            data_bearing: false,
            replace_on: Vec::new(),
            depends_on: Vec::new(),
            meta: Map::new(),
        }
    }

    /// The provider part of the address (`postgres`).
    pub fn provider(&self) -> &str {
        provider_of(&self.address)
    }
}

/// The provider part of an address.
pub fn provider_of(address: &str) -> &str {
    address.split('.').next().unwrap_or(address)
}

/// What a change does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The resource does not exist yet.
    Create,
    /// Attributes change in place.
    Update,
    /// The resource is deleted and created again.
    Replace,
    /// The resource is deleted.
    Delete,
}

impl Action {
    /// `create`, `update`, `replace`, `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
        }
    }
}

/// One attribute of a change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttrChange {
    /// Attribute name.
    pub name: String,
    /// Live value (`None`: absent).
    pub before: Option<Value>,
    /// Desired value (`None`: removed).
    pub after: Option<Value>,
    /// Secret: `before`/`after` hold [`REDACTED`].
    #[serde(default)]
    pub sensitive: bool,
    /// This attribute forces a replacement.
    #[serde(default)]
    pub forces_replace: bool,
}

/// One change of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The resource's address.
    pub address: String,
    /// What happens.
    pub action: Action,
    /// The attributes that differ (all of them for create and delete), sorted by name.
    pub attrs: Vec<AttrChange>,
    /// Loses data (deleting or replacing a data-bearing resource).
    pub destructive: bool,
    /// The live resource differs from what kombiform last applied: someone changed it
    /// out of band. The change puts it back.
    pub drift: bool,
    /// What apply writes (create, update, replace). Secrets are never in it.
    pub desired: Option<Resource>,
    /// What apply found (update, replace, delete): remote ids live in its `meta`.
    pub live: Option<Resource>,
}

impl Change {
    /// The provider part of the address.
    pub fn provider(&self) -> &str {
        provider_of(&self.address)
    }

    /// The tenant the resource belongs to (its `meta.tenant`, desired or live), if any.
    pub fn tenant(&self) -> Option<&str> {
        self.desired
            .iter()
            .chain(&self.live)
            .find_map(|r| r.meta.get("tenant").and_then(Value::as_str))
    }
}

/// A plan: what `plan` shows and saves, and exactly what `apply` executes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`PLAN_FORMAT`].
    pub format: u32,
    /// The environment.
    pub env: String,
    /// Hash of the spec files the plan was made from.
    pub spec_hash: String,
    /// The state serial the plan was made against.
    pub state_serial: u64,
    /// Per provider, a fingerprint of the live state the plan saw.
    pub fingerprints: BTreeMap<String, String>,
    /// Per live resource, a short hash of its attributes: lets `apply` say what moved.
    #[serde(default)]
    pub live_hashes: BTreeMap<String, String>,
    /// The changes, in dependency order (deletes of dependents before their dependencies).
    pub changes: Vec<Change>,
    /// Resources in sync with the specs (no change), for the summary.
    pub unchanged: usize,
    /// Destructive changes without consent, and changes a target never makes: apply refuses
    /// the whole plan while any remain.
    pub refused: Vec<String>,
    /// Of [`Plan::refused`], those no consent can allow, with the reason (a lossy column
    /// type change).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vetoed: BTreeMap<String, String>,
    /// Destructive changes that were consented to, with who consented (the
    /// `--allow-destroy` argument, the specs, or recorded state).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consented: BTreeMap<String, String>,
    /// Live resources that match the specs but that the state does not record as they are
    /// (an interrupted apply made them): apply records them, changing nothing live.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopt: Vec<Resource>,
    /// Addresses the state records (or holds in doubt) that are neither live nor wanted any
    /// more (a delete an interrupted apply made): apply drops them from the state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forget: Vec<String>,
    /// Fields the running platform owns (a tenant's plan set by billing, flags synced by the
    /// Admin) whose live value differs from what the specs say: shown, kept, never reverted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<Kept>,
}

/// A field owned by the running platform whose live value differs from the specs' (which
/// only seeded it when the resource was created): the plan shows it and keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kept {
    /// The resource's address.
    pub address: String,
    /// The attribute.
    pub attr: String,
    /// What the specs say (the value it was seeded with, or would be).
    pub specs: Value,
    /// What the running platform set: what stays.
    pub live: Value,
    /// Who owns it now (`billing (Stripe)`, `Admin flag sync`).
    pub owner: String,
}

impl Plan {
    /// Counts per action.
    pub fn counts(&self) -> BTreeMap<Action, usize> {
        let mut m = BTreeMap::new();
        for c in &self.changes {
            *m.entry(c.action).or_insert(0) += 1;
        }
        m
    }

    /// Whether the plan changes anything live.
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Whether the plan brings the state in line with live resources ([`Plan::adopt`],
    /// [`Plan::forget`]) without changing them.
    pub fn has_state_changes(&self) -> bool {
        !self.adopt.is_empty() || !self.forget.is_empty()
    }

    /// A hash of the plan's content, for audit records.
    pub fn hash(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex(&Sha256::digest(bytes))
    }
}

pub use kombiform_model::hex;

/// A short hash of one resource's attributes.
pub fn resource_hash(r: &Resource) -> String {
    let digest = Sha256::digest(serde_json::to_vec(&r.attrs).unwrap_or_default());
    hex(digest.get(..8).unwrap_or(&[]))
}

/// What moved between two sets of live hashes: `(address, what)` lines, sorted.
pub fn moved(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (a, h) in before {
        match after.get(a) {
            None => out.push(format!("{a}: deleted")),
            Some(h2) if h2 != h => out.push(format!("{a}: changed")),
            Some(_) => {}
        }
    }
    for a in after.keys() {
        if !before.contains_key(a) {
            out.push(format!("{a}: created"));
        }
    }
    out.sort();
    out
}

/// A fingerprint of a set of live resources: stable whatever their order.
pub fn fingerprint(resources: &[Resource]) -> String {
    let mut sorted: Vec<&Resource> = resources.iter().collect();
    sorted.sort_by(|a, b| a.address.cmp(&b.address));
    let mut h = Sha256::new();
    for r in sorted {
        h.update(r.address.as_bytes());
        h.update([0]);
        h.update(serde_json::to_vec(&r.attrs).unwrap_or_default());
        h.update([0]);
    }
    hex(&h.finalize())
}

/// Which destructive changes were consented to, and by whom.
#[derive(Clone, Debug, Default)]
pub struct Consent {
    /// What `--allow-destroy` gave: addresses, prefixes ending in `*`, or `tenant:SLUG` for
    /// everything of one tenant.
    pub allowed: BTreeSet<String>,
    /// Tenants whose spec opts in (`allowDestroy: true`).
    pub spec_tenants: BTreeSet<String>,
    /// Tenants whose consent a live record keeps (the tenant's row, written by an earlier
    /// apply from a spec that opted in): what still consents once the spec is gone.
    pub recorded_tenants: BTreeSet<String>,
}

/// The `--allow-destroy` argument that consents to everything of one tenant.
pub fn tenant_consent(slug: &str) -> String {
    format!("tenant:{slug}")
}

impl Consent {
    /// Whether destroying what `change` touches was consented to.
    pub fn allows(&self, change: &Change) -> bool {
        self.source(change).is_some()
    }

    /// Who consented to `change`: the argument of `--allow-destroy`, the specs or a live
    /// record (described for people), or `None`.
    pub fn source(&self, change: &Change) -> Option<String> {
        let address = change.address.as_str();
        let tenant = change.tenant();
        if let Some(a) =
            self.allowed
                .iter()
                .find(|a| match (a.strip_prefix("tenant:"), a.strip_suffix('*')) {
                    (Some(slug), _) => tenant == Some(slug),
                    (None, Some(prefix)) => address.starts_with(prefix),
                    (None, None) => *a == address,
                })
        {
            return Some(format!("--allow-destroy {a}"));
        }
        let tenant = tenant?;
        if self.spec_tenants.contains(tenant) {
            return Some(format!(
                "the specs: tenant `{tenant}` has `allowDestroy: true`"
            ));
        }
        self.recorded_tenants.contains(tenant).then(|| {
            format!(
                "recorded state: tenant `{tenant}` had `allowDestroy: true` when last applied \
                 (its spec is gone)"
            )
        })
    }
}

/// The inputs of [`diff`].
pub struct DiffInput<'a> {
    /// What the specs want.
    pub desired: &'a [Resource],
    /// What the providers read.
    pub live: &'a [Resource],
    /// What kombiform last applied (from state), by address.
    pub applied: &'a BTreeMap<String, Map<String, Value>>,
    /// Addresses kombiform manages (from state) even if the specs no longer name them.
    pub managed: &'a BTreeSet<String>,
}

/// What [`diff`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Diff {
    /// The changes, in a safe order.
    pub changes: Vec<Change>,
    /// Desired resources already in sync.
    pub unchanged: usize,
}

/// Compares desired with live resources. Live resources that are neither desired nor
/// managed by kombiform are left alone (never deleted). Changes come in a safe order:
/// creates and updates along dependencies, then deletes in reverse. A dependency cycle among
/// the resources is an error naming it.
///
/// Consent is not judged here: targets classify changes first (some destructive changes
/// only a target can see), then [`refused`] decides once.
pub fn diff(input: &DiffInput<'_>) -> Result<Diff, graph::Cycle> {
    let live: BTreeMap<&str, &Resource> =
        input.live.iter().map(|r| (r.address.as_str(), r)).collect();
    let desired: BTreeMap<&str, &Resource> = input
        .desired
        .iter()
        .map(|r| (r.address.as_str(), r))
        .collect();
    let mut changes = Vec::new();
    let mut unchanged = 0;
    for (addr, want) in &desired {
        let applied = input.applied.get(*addr);
        match live.get(addr) {
            None => changes.push(Change {
                address: (*addr).to_string(),
                action: Action::Create,
                attrs: attr_changes(None, Some(want)),
                destructive: false,
                drift: applied.is_some(),
                desired: Some(redacted(want, &[])),
                live: None,
            }),
            Some(have) => {
                let attrs = attr_changes(Some(have), Some(want));
                if attrs.is_empty() {
                    unchanged += 1;
                    continue;
                }
                let replace = attrs.iter().any(|a| a.forces_replace);
                let drift = applied.is_some_and(|a| a != &have.attrs);
                changes.push(Change {
                    address: (*addr).to_string(),
                    action: if replace {
                        Action::Replace
                    } else {
                        Action::Update
                    },
                    attrs,
                    destructive: replace && (want.data_bearing || have.data_bearing),
                    drift,
                    desired: Some(redacted(want, &have.sensitive)),
                    live: Some(redacted(have, &want.sensitive)),
                });
            }
        }
    }
    let mut deletes = Vec::new();
    for (addr, have) in &live {
        if desired.contains_key(addr) || !input.managed.contains(*addr) {
            continue;
        }
        deletes.push(Change {
            address: (*addr).to_string(),
            action: Action::Delete,
            attrs: attr_changes(Some(have), None),
            destructive: have.data_bearing,
            drift: false,
            desired: None,
            live: Some(redacted(have, &[])),
        });
    }
    let changes = order(changes, deletes, input.desired, input.live)?;
    Ok(Diff { changes, unchanged })
}

/// What the state must record so that it matches what is live, without any live change
/// ([`Plan::adopt`], [`Plan::forget`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reconcile {
    /// Desired resources that are live and match the specs, but are not recorded as they
    /// are (or are in doubt): recorded as applied, with the live resource's `meta`.
    pub adopt: Vec<Resource>,
    /// Recorded or in-doubt addresses of providers that were read, that are neither live
    /// nor desired: dropped from the state.
    pub forget: Vec<String>,
}

/// Reconciles the state with what is live: whatever interrupted an apply (a kill, a torn or
/// failed journal write), a resource that exists and matches the specs is recorded, and a
/// record of a resource that is gone and unwanted is dropped. `in_doubt` holds the addresses
/// whose change was started but never recorded as done; `read` the providers whose live
/// state `input.live` holds (nothing is known gone of a provider not read). The changes of
/// [`diff`] resolve every other in-doubt address.
pub fn reconcile(
    input: &DiffInput<'_>,
    in_doubt: &BTreeSet<String>,
    read: &BTreeSet<String>,
) -> Reconcile {
    let live: BTreeMap<&str, &Resource> =
        input.live.iter().map(|r| (r.address.as_str(), r)).collect();
    let desired: BTreeSet<&str> = input.desired.iter().map(|r| r.address.as_str()).collect();
    let mut adopt = Vec::new();
    for want in input.desired {
        let Some(have) = live.get(want.address.as_str()) else {
            continue;
        };
        if !attr_changes(Some(have), Some(want)).is_empty() {
            continue; // a change of the plan records it
        }
        let record = redacted(want, &have.sensitive);
        if input.applied.get(&want.address) == Some(&record.attrs)
            && !in_doubt.contains(&want.address)
        {
            continue;
        }
        let mut r = record;
        let mut meta = have.meta.clone();
        meta.extend(r.meta);
        r.meta = meta;
        adopt.push(r);
    }
    let forget: BTreeSet<String> = input
        .applied
        .keys()
        .chain(in_doubt)
        .filter(|a| read.contains(provider_of(a)))
        .filter(|a| !live.contains_key(a.as_str()) && !desired.contains(a.as_str()))
        .cloned()
        .collect();
    Reconcile {
        adopt,
        forget: forget.into_iter().collect(),
    }
}

/// The addresses apply must refuse: destructive changes without consent, and changes a
/// target can never make whatever the consent (`never`). Computed once, after the targets
/// classified the changes.
pub fn refused(
    changes: &[Change],
    consent: &Consent,
    never: impl Fn(&Change) -> bool,
) -> Vec<String> {
    changes
        .iter()
        .filter(|c| (c.destructive && !consent.allows(c)) || never(c))
        .map(|c| c.address.clone())
        .collect()
}

/// The destructive changes that were consented to, with who consented.
pub fn consented(changes: &[Change], consent: &Consent) -> BTreeMap<String, String> {
    changes
        .iter()
        .filter(|c| c.destructive)
        .filter_map(|c| Some((c.address.clone(), consent.source(c)?)))
        .collect()
}

/// The fewest `--allow-destroy` arguments that consent to every refused change of `plan`
/// that consent can allow: `tenant:SLUG` once per tenant, the address for a resource of no
/// tenant. Vetoed changes are left out (no argument allows them).
pub fn consent_arguments(plan: &Plan) -> Vec<String> {
    let mut args = BTreeSet::new();
    for c in &plan.changes {
        if !plan.refused.contains(&c.address) || plan.vetoed.contains_key(&c.address) {
            continue;
        }
        args.insert(match c.tenant() {
            Some(t) => tenant_consent(t),
            None => c.address.clone(),
        });
    }
    args.into_iter().collect()
}

/// Consent given after the plan was made (`apply FILE --allow-destroy …`): the refused
/// changes it covers are allowed and recorded as consented. Returns the addresses it
/// allowed; vetoed changes stay refused.
pub fn grant(plan: &mut Plan, consent: &Consent) -> Vec<String> {
    let mut granted = Vec::new();
    for c in &plan.changes {
        if !plan.refused.contains(&c.address) || plan.vetoed.contains_key(&c.address) {
            continue;
        }
        if let Some(by) = consent.source(c) {
            plan.consented.insert(c.address.clone(), by);
            granted.push(c.address.clone());
        }
    }
    plan.refused.retain(|a| !granted.contains(a));
    granted
}

/// A copy with sensitive attribute values replaced by [`REDACTED`]: plans carry no secret.
/// Providers resolve secrets again at apply time.
fn redacted(r: &Resource, also: &[String]) -> Resource {
    let mut r = r.clone();
    for k in r.sensitive.clone().iter().chain(also) {
        if let Some(v) = r.attrs.get_mut(k) {
            *v = Value::String(REDACTED.to_string());
        }
    }
    r
}

/// Attribute differences; secrets redacted, keys sorted.
fn attr_changes(before: Option<&Resource>, after: Option<&Resource>) -> Vec<AttrChange> {
    let empty = Map::new();
    let b = before.map_or(&empty, |r| &r.attrs);
    let a = after.map_or(&empty, |r| &r.attrs);
    let sensitive: BTreeSet<&str> = before
        .into_iter()
        .chain(after)
        .flat_map(|r| r.sensitive.iter().map(String::as_str))
        .collect();
    let replace_on: BTreeSet<&str> = after
        .or(before)
        .map(|r| r.replace_on.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    let mut out = Vec::new();
    for k in keys {
        let (bv, av) = (b.get(k), a.get(k));
        if bv == av {
            continue;
        }
        let secret = sensitive.contains(k.as_str());
        let redact = |v: Option<&Value>| {
            v.map(|v| {
                if secret {
                    Value::String(REDACTED.to_string())
                } else {
                    v.clone()
                }
            })
        };
        out.push(AttrChange {
            name: k.clone(),
            before: redact(bv),
            after: redact(av),
            sensitive: secret,
            // Only a change of an existing resource can force a replacement.
            forces_replace: before.is_some() && after.is_some() && replace_on.contains(k.as_str()),
        });
    }
    out
}

/// Orders changes: creates/updates/replaces so that dependencies come first (ties by
/// address), then deletes so that dependents go first. Dependencies are those of the desired
/// and live resources together; a cycle among them is an error.
fn order(
    mut upserts: Vec<Change>,
    mut deletes: Vec<Change>,
    desired: &[Resource],
    live: &[Resource],
) -> Result<Vec<Change>, graph::Cycle> {
    let g = graph::Graph::from_resources(desired.iter().chain(live));
    let depth = g.depths()?;
    let rank = |c: &Change| depth.get(c.address.as_str()).copied().unwrap_or(0);
    upserts.sort_by(|a, b| (rank(a), &a.address).cmp(&(rank(b), &b.address)));
    deletes.sort_by(|a, b| {
        (std::cmp::Reverse(rank(a)), &a.address).cmp(&(std::cmp::Reverse(rank(b)), &b.address))
    });
    upserts.extend(deletes);
    Ok(upserts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn res(addr: &str, attrs: Value) -> Resource {
        Resource::new(addr, attrs.as_object().cloned().unwrap_or_default())
    }

    fn run(
        desired: &[Resource],
        live: &[Resource],
        applied: &[(&str, Value)],
        managed: &[&str],
    ) -> (Vec<Change>, usize, Vec<String>) {
        let applied: BTreeMap<String, Map<String, Value>> = applied
            .iter()
            .map(|(a, v)| ((*a).to_string(), v.as_object().cloned().unwrap_or_default()))
            .collect();
        let managed: BTreeSet<String> = managed.iter().map(|s| (*s).to_string()).collect();
        let d = diff(&DiffInput {
            desired,
            live,
            applied: &applied,
            managed: &managed,
        })
        .unwrap();
        let refused = refused(&d.changes, &Consent::default(), |_| false);
        (d.changes, d.unchanged, refused)
    }

    #[test]
    fn reconcile_adopts_unrecorded_matches_and_forgets_what_is_gone() {
        let want = res("pb.c.a", json!({"x": 1}));
        let mut have = res("pb.c.a", json!({"x": 1}));
        have.meta.insert("id".into(), json!("pbc_a"));
        let desired = [want.clone(), res("pb.c.b", json!({"x": 2}))];
        let live = [have, res("pb.c.b", json!({"x": 2}))];
        let applied: BTreeMap<String, Map<String, Value>> = [
            ("pb.c.b".to_string(), want.attrs.clone()), // recorded, but not as it is
            ("pb.c.gone".to_string(), Map::new()),
            ("other.c.unread".to_string(), Map::new()),
        ]
        .into_iter()
        .collect();
        let managed = applied.keys().cloned().collect();
        let input = DiffInput {
            desired: &desired,
            live: &live,
            applied: &applied,
            managed: &managed,
        };
        let read: BTreeSet<String> = ["pb".to_string()].into_iter().collect();
        let in_doubt: BTreeSet<String> = ["pb.c.started".to_string()].into_iter().collect();
        let r = reconcile(&input, &in_doubt, &read);
        let adopted: Vec<&str> = r.adopt.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(adopted, vec!["pb.c.a", "pb.c.b"]);
        assert_eq!(
            r.adopt[0].meta.get("id"),
            Some(&json!("pbc_a")),
            "live ids kept"
        );
        assert_eq!(
            r.forget,
            vec!["pb.c.gone".to_string(), "pb.c.started".to_string()]
        );
        // Recorded as it is and not in doubt: nothing to do.
        let applied: BTreeMap<String, Map<String, Value>> = desired
            .iter()
            .map(|d| (d.address.clone(), d.attrs.clone()))
            .collect();
        let input = DiffInput {
            applied: &applied,
            ..input
        };
        assert_eq!(
            reconcile(&input, &BTreeSet::new(), &read),
            Reconcile::default()
        );
        let in_doubt: BTreeSet<String> = ["pb.c.a".to_string()].into_iter().collect();
        assert_eq!(
            reconcile(&input, &in_doubt, &read).adopt.len(),
            1,
            "in doubt: adopted"
        );
    }

    #[test]
    fn create_update_and_unchanged() {
        let desired = [
            res("postgres.tenant.a", json!({"plan": "pro"})),
            res("postgres.tenant.b", json!({"plan": "free"})),
            res("postgres.tenant.c", json!({"plan": "free"})),
        ];
        let live = [
            res("postgres.tenant.b", json!({"plan": "pro"})),
            res("postgres.tenant.c", json!({"plan": "free"})),
        ];
        let (changes, unchanged, refused) = run(&desired, &live, &[], &[]);
        assert_eq!(unchanged, 1);
        assert!(refused.is_empty());
        let summary: Vec<(&str, Action)> = changes
            .iter()
            .map(|c| (c.address.as_str(), c.action))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("postgres.tenant.a", Action::Create),
                ("postgres.tenant.b", Action::Update)
            ]
        );
        assert_eq!(changes[1].attrs.len(), 1);
        assert_eq!(changes[1].attrs[0].before, Some(json!("pro")));
        assert_eq!(changes[1].attrs[0].after, Some(json!("free")));
    }

    #[test]
    fn unmanaged_live_resources_are_never_deleted() {
        let live = [res("pocketbase.collection.posts", json!({}))];
        let (changes, _, _) = run(&[], &live, &[], &[]);
        assert!(changes.is_empty());
    }

    #[test]
    fn managed_data_bearing_deletes_are_refused_without_consent() {
        let mut gone = res("pocketbase.collection.t_x_nodes", json!({"type": "base"}));
        gone.data_bearing = true;
        let (changes, _, refused) = run(&[], &[gone], &[], &["pocketbase.collection.t_x_nodes"]);
        assert_eq!(changes[0].action, Action::Delete);
        assert!(changes[0].destructive);
        assert_eq!(refused, vec!["pocketbase.collection.t_x_nodes".to_string()]);
        let consent = Consent {
            allowed: ["pocketbase.collection.t_x_*".to_string()].into(),
            ..Consent::default()
        };
        assert!(consent.allows(&changes[0]));
    }

    #[test]
    fn out_of_band_changes_are_drift() {
        let desired = [res("postgres.plan.pro", json!({"max_users": 25}))];
        let live = [res("postgres.plan.pro", json!({"max_users": 99}))];
        let (changes, _, _) = run(
            &desired,
            &live,
            &[("postgres.plan.pro", json!({"max_users": 25}))],
            &[],
        );
        assert!(changes[0].drift);
    }

    #[test]
    fn secrets_are_redacted_and_replacements_classified() {
        let mut want = res("x.y.z", json!({"password": "new", "type": "auth"}));
        want.sensitive = vec!["password".into()];
        want.replace_on = vec!["type".into()];
        want.data_bearing = true;
        let have = res("x.y.z", json!({"password": "old", "type": "base"}));
        let (changes, _, refused) = run(&[want], &[have], &[], &[]);
        let c = &changes[0];
        assert_eq!(c.action, Action::Replace);
        assert!(c.destructive);
        assert_eq!(refused.len(), 1);
        let pw = c.attrs.iter().find(|a| a.name == "password");
        assert_eq!(pw.and_then(|a| a.after.clone()), Some(json!(REDACTED)));
        let text = serde_json::to_string(&changes).unwrap_or_default();
        assert!(
            !text.contains("\"old\"") && !text.contains("\"new\""),
            "{text}"
        );
    }

    #[test]
    fn dependencies_order_creates_and_reverse_order_deletes() {
        let mut child = res("p.c.child", json!({}));
        child.depends_on = vec!["p.c.parent".into()];
        let parent = res("p.c.parent", json!({}));
        let (changes, _, _) = run(&[child.clone(), parent.clone()], &[], &[], &[]);
        assert_eq!(changes[0].address, "p.c.parent");
        let (changes, _, _) = run(&[], &[parent, child], &[], &["p.c.parent", "p.c.child"]);
        assert_eq!(changes[0].address, "p.c.child");
    }

    #[test]
    fn a_dependency_cycle_is_an_error_not_an_order() {
        let mut a = res("x.a", json!({}));
        a.depends_on = vec!["x.b".into()];
        let mut b = res("x.b", json!({}));
        b.depends_on = vec!["x.a".into()];
        let err = diff(&DiffInput {
            desired: &[a, b],
            live: &[],
            applied: &BTreeMap::new(),
            managed: &BTreeSet::new(),
        })
        .unwrap_err();
        assert_eq!(err.0.len(), 2);
    }

    #[test]
    fn refusal_is_decided_once_with_consent_and_target_vetoes() {
        let mut gone = res("pocketbase.collection.t_x_nodes", json!({}));
        gone.data_bearing = true;
        let (changes, _, _) = run(&[], &[gone], &[], &["pocketbase.collection.t_x_nodes"]);
        let consent = Consent {
            allowed: ["pocketbase.collection.t_x_*".to_string()].into(),
            ..Consent::default()
        };
        assert!(refused(&changes, &consent, |_| false).is_empty());
        assert_eq!(refused(&changes, &consent, |_| true).len(), 1);
    }

    /// A tenant's data-bearing resources, gone from the specs: (changes, plan refusing all).
    fn removed_tenant(slug: &str) -> Vec<Change> {
        let mut live = Vec::new();
        for addr in [
            format!("postgres.tenant.{slug}"),
            format!("postgres.quota.{slug}"),
            format!("pocketbase.collection.t_{slug}_nodes"),
            format!("pocketbase.collection.t_{slug}_users"),
        ] {
            let mut r = res(&addr, json!({}));
            r.data_bearing = true;
            r.meta.insert("tenant".into(), json!(slug));
            live.push(r);
        }
        let managed: Vec<String> = live.iter().map(|r| r.address.clone()).collect();
        let managed: Vec<&str> = managed.iter().map(String::as_str).collect();
        run(&[], &live, &[], &managed).0
    }

    fn plan_of(changes: Vec<Change>, consent: &Consent) -> Plan {
        let refused = refused(&changes, consent, |c| {
            c.address.starts_with("postgres.column")
        });
        let vetoed = changes
            .iter()
            .filter(|c| c.address.starts_with("postgres.column"))
            .map(|c| (c.address.clone(), "lossy".to_string()))
            .collect();
        Plan {
            format: PLAN_FORMAT,
            env: "local".into(),
            spec_hash: String::new(),
            state_serial: 0,
            fingerprints: BTreeMap::new(),
            live_hashes: BTreeMap::new(),
            consented: consented(&changes, consent),
            changes,
            unchanged: 0,
            refused,
            vetoed,
            adopt: vec![],
            forget: vec![],
            kept: vec![],
        }
    }

    #[test]
    fn consent_is_asked_once_per_tenant_and_said_where_it_came_from() {
        let mut changes = removed_tenant("stark-lab");
        changes.extend(removed_tenant("globex"));
        let mut global = res("pocketbase.collection.audit", json!({}));
        global.data_bearing = true;
        let mut column = res("postgres.column.plans.max_users", json!({}));
        column.data_bearing = true;
        let (more, _, _) = run(
            &[],
            &[global, column],
            &[],
            &[
                "pocketbase.collection.audit",
                "postgres.column.plans.max_users",
            ],
        );
        changes.extend(more);
        let plan = plan_of(changes.clone(), &Consent::default());
        assert_eq!(plan.refused.len(), 10);
        assert_eq!(
            consent_arguments(&plan),
            vec![
                "pocketbase.collection.audit".to_string(),
                "tenant:globex".to_string(),
                "tenant:stark-lab".to_string()
            ],
            "one per tenant, the address otherwise, nothing for a veto"
        );
        let consent = Consent {
            allowed: ["tenant:globex".to_string()].into(),
            spec_tenants: ["stark-lab".to_string()].into(),
            recorded_tenants: BTreeSet::new(),
        };
        let plan = plan_of(changes.clone(), &consent);
        assert_eq!(
            plan.refused,
            vec![
                "pocketbase.collection.audit".to_string(),
                "postgres.column.plans.max_users".to_string()
            ]
        );
        assert_eq!(
            plan.consented
                .get("postgres.quota.globex")
                .map(String::as_str),
            Some("--allow-destroy tenant:globex")
        );
        assert!(plan.consented["postgres.tenant.stark-lab"].starts_with("the specs"));
        let recorded = Consent {
            recorded_tenants: ["globex".to_string()].into(),
            ..Consent::default()
        };
        let plan = plan_of(changes, &recorded);
        assert!(plan.consented["postgres.tenant.globex"].starts_with("recorded state"));
    }

    #[test]
    fn consent_given_to_a_saved_plan_allows_what_it_covers_and_never_a_veto() {
        let mut changes = removed_tenant("acme");
        let mut column = res("postgres.column.plans.max_users", json!({}));
        column.data_bearing = true;
        changes.extend(run(&[], &[column], &[], &["postgres.column.plans.max_users"]).0);
        let mut plan = plan_of(changes, &Consent::default());
        let granted = grant(
            &mut plan,
            &Consent {
                allowed: ["tenant:acme".to_string(), "postgres.column.*".to_string()].into(),
                ..Consent::default()
            },
        );
        assert_eq!(granted.len(), 4);
        assert_eq!(
            plan.refused,
            vec!["postgres.column.plans.max_users".to_string()]
        );
        assert_eq!(plan.consented.len(), 4);
    }

    #[test]
    fn fingerprints_ignore_order() {
        let a = res("a.b.c", json!({"x": 1}));
        let b = res("a.b.d", json!({"x": 2}));
        assert_eq!(
            fingerprint(&[a.clone(), b.clone()]),
            fingerprint(&[b, a.clone()])
        );
        assert_ne!(
            fingerprint(std::slice::from_ref(&a)),
            fingerprint(&[res("a.b.c", json!({"x": 3}))])
        );
    }
}
