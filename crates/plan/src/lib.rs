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
    /// Destructive changes without consent: apply refuses the whole plan while any remain.
    pub refused: Vec<String>,
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

    /// Whether the plan changes anything.
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
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

/// Which deletes the user consented to.
#[derive(Clone, Debug, Default)]
pub struct Consent {
    /// Addresses (or prefixes ending in `*`) given with `--allow-destroy`.
    pub allowed: BTreeSet<String>,
    /// Addresses whose spec opted in (a tenant with `allowDestroy: true`).
    pub spec_allowed: BTreeSet<String>,
}

impl Consent {
    /// Whether destroying `address` was consented to.
    pub fn allows(&self, address: &str) -> bool {
        self.spec_allowed.contains(address)
            || self.allowed.iter().any(|a| match a.strip_suffix('*') {
                Some(prefix) => address.starts_with(prefix),
                None => a == address,
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
        .filter(|c| (c.destructive && !consent.allows(&c.address)) || never(c))
        .map(|c| c.address.clone())
        .collect()
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
        assert!(consent.allows("pocketbase.collection.t_x_nodes"));
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
            spec_allowed: BTreeSet::new(),
        };
        assert!(refused(&changes, &consent, |_| false).is_empty());
        assert_eq!(refused(&changes, &consent, |_| true).len(), 1);
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
