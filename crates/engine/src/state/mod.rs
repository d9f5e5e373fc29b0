//! State: what kombiform applied, per environment, and the only code that knows its format.
//!
//! A [`State`] is a snapshot (`<env>.json`) plus a journal of what happened since
//! (`<env>.journal`, one [`Entry`] per line): before a change is sent, its start is one
//! fsynced append ([`EntryKind::Started`]: its outcome is in doubt until recorded); when it
//! completes, its result is another; a large apply does not rewrite the whole snapshot after
//! each change. A change whose start is recorded but whose end is not (a kill, a torn or
//! failed write) stays in [`State::pending`], so the next plan reconciles it against what is
//! live ([`kombiform_plan::reconcile`]): nothing live is ever lost track of. The snapshot is
//! rewritten atomically once, when an apply ends ([`StateBackend::compact`]). Serials order
//! everything: an entry at or below the snapshot's serial is already in it and is never
//! applied twice. Damage is refused with a clear error, checked and repaired on request
//! ([`StateBackend::check`], [`StateBackend::repair`]); it is never read as an empty state.
//!
//! Also here: the lock that keeps two runs apart ([`LockInfo`], [`LockGuard`]) and the
//! audit trail. [`StateBackend`] is the storage interface; [`LocalBackend`] keeps files
//! under `.kombiform/`, [`BlobBackend`] keeps the same layout in an Azure Blob container a
//! team shares, locked by a finite lease. Not here: deciding what to change (`plan`), talking to targets
//! (`providers`), printing (the CLI).

mod blob;
mod check;
mod local;
mod lock;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::providers::AuditRecord;
use kombiform_plan::{Action, Change, Resource};

pub use blob::{BlobBackend, BlobJournal, BlobSettings, BLOB_ENDPOINT_ENV, LEASE_LIMITS};
pub use check::Check;
pub use kombiform_sys::{now_rfc3339, random_id};
pub use local::{LocalBackend, LocalJournal, DEFAULT_DIR};
pub use lock::{LockError, LockGuard, LockInfo};

/// Version of the state format (snapshot and journal). Files of a newer version, or older
/// than [`OLDEST_FORMAT`], are refused with an error naming both versions; nothing is ever
/// guessed.
pub const STATE_FORMAT: u32 = 2;

/// The oldest format still read: format 1 is format 2 without changes in doubt
/// ([`State::pending`]) and with every journal entry a completed change.
pub const OLDEST_FORMAT: u32 = 1;

/// What kombiform applied in one environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// The environment.
    pub env: String,
    /// Completed changes so far: +1 per recorded change. Plans carry it; a plan made
    /// against another serial is stale.
    pub serial: u64,
    /// A random id given when the state was first created: a journal or snapshot of
    /// another lineage (a state file copied from elsewhere) is refused, not merged.
    pub lineage: String,
    /// Managed resources by address.
    pub resources: BTreeMap<String, ResourceState>,
    /// Changes started but never recorded as completed (the apply was killed, or its
    /// journal write was torn or failed), by address: their outcome is unknown until the
    /// next plan compares them with what is live. They count as managed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: BTreeMap<String, Action>,
}

/// One managed resource, as last applied.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceState {
    /// The attributes as applied (secrets redacted: state never holds one), keys sorted.
    pub attrs: Map<String, Value>,
    /// Provider-private data (remote ids), keys sorted.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub meta: Map<String, Value>,
}

/// What a journal entry records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A change completed: `resource` is the resource as applied (`None` for a delete).
    #[default]
    Done,
    /// A change is about to be sent: in doubt until an entry of another kind follows.
    Started,
    /// A live resource that matches the specs is recorded as it is (`resource`).
    Adopted,
    /// A record of a resource that is gone and no longer wanted is dropped.
    Forgotten,
}

impl EntryKind {
    fn is_done(&self) -> bool {
        *self == EntryKind::Done
    }
}

/// One line of the journal: a change started or completed, a resource adopted or forgotten.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// The lineage of the state it belongs to.
    pub lineage: String,
    /// The state's serial after this entry.
    pub serial: u64,
    /// The resource's address.
    pub address: String,
    /// What the entry records (absent: [`EntryKind::Done`], as in format 1).
    #[serde(default, skip_serializing_if = "EntryKind::is_done")]
    pub kind: EntryKind,
    /// What was done or started (absent for adoptions and forgotten records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// The resource as applied or adopted (`None` for a delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceState>,
}

impl State {
    /// An empty state (serial 0).
    pub fn new(env: impl Into<String>, lineage: impl Into<String>) -> State {
        State {
            format: STATE_FORMAT,
            env: env.into(),
            serial: 0,
            lineage: lineage.into(),
            resources: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Addresses kombiform manages (feeds [`kombiform_plan::DiffInput::managed`]): those
    /// recorded and those in doubt.
    pub fn managed(&self) -> BTreeSet<String> {
        self.resources
            .keys()
            .chain(self.pending.keys())
            .cloned()
            .collect()
    }

    /// Addresses whose change was started but never recorded as completed.
    pub fn in_doubt(&self) -> BTreeSet<String> {
        self.pending.keys().cloned().collect()
    }

    /// Attributes as last applied, by address (feeds [`kombiform_plan::DiffInput::applied`]).
    pub fn applied(&self) -> BTreeMap<String, Map<String, Value>> {
        self.resources
            .iter()
            .map(|(a, r)| (a.clone(), r.attrs.clone()))
            .collect()
    }

    /// The journal entry that records a completed change, without changing the state:
    /// append it durably first, then [`State::apply`] it. Create, update and replace
    /// store the desired attributes and meta (an update keeps remote ids it does not
    /// replace); delete removes the resource.
    pub fn entry_for(&self, change: &Change) -> Result<Entry> {
        let resource = match change.action {
            Action::Delete => None,
            Action::Create | Action::Update | Action::Replace => {
                let desired = change.desired.as_ref().with_context(|| {
                    format!(
                        "recording {} {}: the change carries no desired resource",
                        change.action.as_str(),
                        change.address
                    )
                })?;
                let mut meta = Map::new();
                if change.action == Action::Update {
                    // Remote ids: what state had, what the provider read, what apply set.
                    if let Some(old) = self.resources.get(&change.address) {
                        meta.extend(old.meta.clone());
                    }
                    if let Some(live) = &change.live {
                        meta.extend(live.meta.clone());
                    }
                }
                meta.extend(desired.meta.clone());
                Some(ResourceState {
                    attrs: sorted(desired.attrs.clone()),
                    meta: sorted(meta),
                })
            }
        };
        Ok(self.entry(
            change.address.clone(),
            EntryKind::Done,
            Some(change.action),
            resource,
        ))
    }

    /// An entry with the next serial.
    fn entry(
        &self,
        address: String,
        kind: EntryKind,
        action: Option<Action>,
        resource: Option<ResourceState>,
    ) -> Entry {
        Entry {
            format: STATE_FORMAT,
            lineage: self.lineage.clone(),
            serial: self.serial + 1,
            address,
            kind,
            action,
            resource,
        }
    }

    /// The entries that record changes as started (about to be sent), serials in order.
    pub fn started_entries(&self, changes: &[&Change]) -> Vec<Entry> {
        changes
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let mut e = self.entry(c.address.clone(), EntryKind::Started, Some(c.action), None);
                e.serial += k as u64;
                e
            })
            .collect()
    }

    /// The entries that adopt live resources (desired attributes, live remote ids) and
    /// forget records of resources that are gone, serials in order.
    pub fn reconcile_entries(&self, adopt: &[Resource], forget: &[String]) -> Vec<Entry> {
        let adopted = adopt.iter().map(|r| {
            let resource = ResourceState {
                attrs: sorted(r.attrs.clone()),
                meta: sorted(r.meta.clone()),
            };
            (r.address.clone(), EntryKind::Adopted, Some(resource))
        });
        let forgotten = forget
            .iter()
            .map(|a| (a.clone(), EntryKind::Forgotten, None));
        adopted
            .chain(forgotten)
            .enumerate()
            .map(|(k, (address, kind, resource))| {
                let mut e = self.entry(address, kind, None, resource);
                e.serial += k as u64;
                e
            })
            .collect()
    }

    /// The journal entries of several completed changes at once (a batch a provider applied
    /// in one transaction), serials in order, without changing the state. Each address may
    /// appear once.
    pub fn entries_for(&self, changes: &[&Change]) -> Result<Vec<Entry>> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(changes.len());
        for (k, change) in changes.iter().enumerate() {
            if !seen.insert(change.address.as_str()) {
                bail!("recording a batch: {} appears twice", change.address);
            }
            let mut entry = self.entry_for(change)?;
            entry.serial = self.serial + 1 + k as u64;
            out.push(entry);
        }
        Ok(out)
    }

    /// Records a completed change in memory ([`State::entry_for`] + [`State::apply`]) and
    /// returns its journal entry.
    pub fn record(&mut self, change: &Change) -> Result<Entry> {
        let entry = self.entry_for(change)?;
        self.apply(&entry)?;
        Ok(entry)
    }

    /// Applies a journal entry. An entry already contained (serial at or below the
    /// state's) is skipped and `Ok(false)` returned; the next serial is applied
    /// (`Ok(true)`); a gap, another lineage or another format is an error.
    pub fn apply(&mut self, entry: &Entry) -> Result<bool> {
        check_format(entry.format, "journal entry")?;
        if entry.lineage != self.lineage {
            bail!(
                "journal entry {} belongs to state lineage {}, but the state has lineage {}",
                entry.serial,
                entry.lineage,
                self.lineage
            );
        }
        if entry.serial <= self.serial {
            return Ok(false);
        }
        if entry.serial != self.serial + 1 {
            bail!(
                "journal entry has serial {}, but the state is at serial {}: entries are missing",
                entry.serial,
                self.serial
            );
        }
        self.apply_unordered(entry)?;
        self.serial = entry.serial;
        Ok(true)
    }

    /// What an entry does to the resources, whatever its serial.
    fn apply_unordered(&mut self, entry: &Entry) -> Result<()> {
        let missing = |what: &str| {
            anyhow::anyhow!(
                "journal entry {} ({:?} {}) has no {what}",
                entry.serial,
                entry.kind,
                entry.address
            )
        };
        match entry.kind {
            EntryKind::Started => {
                let action = entry.action.ok_or_else(|| missing("action"))?;
                self.pending.insert(entry.address.clone(), action);
                return Ok(());
            }
            EntryKind::Forgotten => {
                self.resources.remove(&entry.address);
            }
            EntryKind::Adopted => {
                let r = entry.resource.clone().ok_or_else(|| missing("resource"))?;
                self.resources.insert(entry.address.clone(), r);
            }
            EntryKind::Done => match (entry.action, &entry.resource) {
                (None, _) => return Err(missing("action")),
                (Some(Action::Delete), _) => {
                    self.resources.remove(&entry.address);
                }
                (Some(_), Some(r)) => {
                    self.resources.insert(entry.address.clone(), r.clone());
                }
                (Some(_), None) => return Err(missing("resource")),
            },
        }
        self.pending.remove(&entry.address);
        Ok(())
    }

    /// Parses a snapshot. A file of a newer or older format is refused with both versions
    /// named; another environment is refused.
    pub fn from_json(bytes: &[u8], env: &str) -> Result<State> {
        #[derive(Deserialize)]
        struct Header {
            format: Option<u32>,
        }
        let header: Header =
            serde_json::from_slice(bytes).context("not a kombiform state file (invalid JSON)")?;
        let format = header
            .format
            .context("not a kombiform state file (no `format`)")?;
        check_format(format, "state file")?;
        let state: State = serde_json::from_slice(bytes)
            .with_context(|| format!("reading a state file of format {format}"))?;
        if state.env != env {
            bail!("state file is for environment `{}`, not `{env}`", state.env);
        }
        Ok(state)
    }

    /// The snapshot as pretty JSON (keys in a stable order), ending in a newline.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut out = serde_json::to_vec_pretty(self).context("serialising state")?;
        out.push(b'\n');
        Ok(out)
    }
}

/// A journal entry as one line (with its newline).
pub fn entry_line(entry: &Entry) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(entry).context("serialising a journal entry")?;
    line.push(b'\n');
    Ok(line)
}

/// What replaying a journal did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// Entries applied.
    pub applied: usize,
    /// Entries skipped because the snapshot already held them.
    pub skipped: usize,
    /// An unterminated, unparsable last line (a write cut short by a crash) was ignored.
    pub torn_tail: bool,
}

/// Replays journal text onto a state. Every complete line must be a valid entry; an
/// unterminated last line is applied if it parses and ignored if it does not (the crash
/// cut it short before it was acknowledged).
pub fn replay(state: &mut State, journal: &[u8]) -> Result<Replay> {
    let mut report = Replay::default();
    let (complete, tail) = split_tail(journal);
    for (n, line) in complete.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry: Entry = serde_json::from_slice(line)
            .with_context(|| format!("journal line {} is not a valid entry", n + 1))?;
        count(&mut report, state.apply(&entry)?);
    }
    if !tail.is_empty() {
        match serde_json::from_slice::<Entry>(tail) {
            Ok(entry) => count(&mut report, state.apply(&entry)?),
            Err(_) => report.torn_tail = true,
        }
    }
    Ok(report)
}

fn count(report: &mut Replay, applied: bool) {
    if applied {
        report.applied += 1;
    } else {
        report.skipped += 1;
    }
}

/// Splits journal bytes into complete lines (through the last newline) and the
/// unterminated rest.
pub(crate) fn split_tail(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => bytes.split_at(i + 1),
        None => (&[], bytes),
    }
}

/// The lineage of the first complete entry of a journal, if any (a journal written before
/// the first snapshot decides the lineage of the state it belongs to).
pub(crate) fn journal_lineage(journal: &[u8]) -> Option<String> {
    journal
        .split(|b| *b == b'\n')
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
        .and_then(|l| serde_json::from_slice::<Entry>(l).ok())
        .map(|e| e.lineage)
}

fn check_format(format: u32, what: &str) -> Result<()> {
    if format > STATE_FORMAT {
        bail!(
            "{what} has format {format}, newer than format {STATE_FORMAT} that this kombiform \
             reads: upgrade kombiform (nothing was read or changed)"
        );
    }
    if format < OLDEST_FORMAT {
        bail!(
            "{what} has format {format}, older than format {OLDEST_FORMAT}, and no migration \
             from it exists (nothing was read or changed)"
        );
    }
    Ok(())
}

fn sorted(map: Map<String, Value>) -> Map<String, Value> {
    let mut entries: Vec<(String, Value)> = map.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.into_iter().collect()
}

/// One line per managed resource for `state list`: address and a short summary.
pub fn list(state: &State) -> Vec<(String, String)> {
    state
        .resources
        .iter()
        .map(|(addr, r)| {
            let mut summary = format!(
                "{} attribute{}",
                r.attrs.len(),
                if r.attrs.len() == 1 { "" } else { "s" }
            );
            if let Some(id) = r.meta.get("id") {
                let id = id.as_str().map_or_else(|| id.to_string(), str::to_string);
                summary.push_str(&format!(", id {id}"));
            }
            if let Some(action) = state.pending.get(addr) {
                summary.push_str(&format!(
                    ", in doubt: a {} was started and never recorded",
                    action.as_str()
                ));
            }
            (addr.clone(), summary)
        })
        .chain(
            state
                .pending
                .iter()
                .filter(|(a, _)| !state.resources.contains_key(*a))
                .map(|(a, action)| {
                    (
                        a.clone(),
                        format!(
                            "in doubt: a {} was started and never recorded; the next plan \
                             reconciles it with what is live",
                            action.as_str()
                        ),
                    )
                }),
        )
        .collect()
}

/// One managed resource for `state show ADDRESS`.
pub fn show<'a>(state: &'a State, address: &str) -> Option<&'a ResourceState> {
    state.resources.get(address)
}

/// Appends completed changes durably: one entry per call, on storage before it returns.
pub trait Journal: Send {
    /// Appends one entry and makes it durable.
    fn append(&mut self, entry: &Entry) -> Result<()>;

    /// Records a completed change: the entry is made durable first, then applied to
    /// `state`, so that memory never runs ahead of storage.
    fn record(&mut self, state: &mut State, change: &Change) -> Result<Entry> {
        let entry = state.entry_for(change)?;
        self.append(&entry)?;
        state.apply(&entry)?;
        Ok(entry)
    }

    /// Appends several entries and makes them durable together (one sync where the
    /// storage allows). The default appends them one by one.
    fn append_all(&mut self, entries: &[Entry]) -> Result<()> {
        entries.iter().try_for_each(|e| self.append(e))
    }

    /// Records changes that completed together (a batched provider's transaction): one
    /// durable append for all of them, then applied to `state`.
    fn record_all(&mut self, state: &mut State, changes: &[&Change]) -> Result<Vec<Entry>> {
        let entries = state.entries_for(changes)?;
        self.commit(state, entries)
    }

    /// Records that changes are about to be sent (one durable append): until their end is
    /// recorded, they are in doubt.
    fn record_started(&mut self, state: &mut State, changes: &[&Change]) -> Result<Vec<Entry>> {
        let entries = state.started_entries(changes);
        self.commit(state, entries)
    }

    /// Records adopted resources and forgotten records (one durable append).
    fn record_reconciled(
        &mut self,
        state: &mut State,
        adopt: &[Resource],
        forget: &[String],
    ) -> Result<Vec<Entry>> {
        let entries = state.reconcile_entries(adopt, forget);
        self.commit(state, entries)
    }

    /// Appends `entries` durably together, then applies them to `state`.
    fn commit(&mut self, state: &mut State, entries: Vec<Entry>) -> Result<Vec<Entry>> {
        if entries.is_empty() {
            return Ok(entries);
        }
        self.append_all(&entries)?;
        for e in &entries {
            state.apply(e)?;
        }
        Ok(entries)
    }
}

/// Where states, locks and audit records are kept: [`LocalBackend`] (files) or
/// [`BlobBackend`] (an Azure Blob container).
pub trait StateBackend: Send + Sync {
    /// Where the state is, for messages (a directory, a container URL).
    fn location(&self) -> String;

    /// The state of `env`: snapshot plus journal replay. An empty state when neither exists.
    fn load(&self, env: &str) -> Result<State>;

    /// The journal of `env`, open for appending (a torn last line is cut off first).
    fn journal(&self, env: &str) -> Result<Box<dyn Journal>>;

    /// Writes `state` as the new snapshot atomically and empties the journal.
    fn compact(&self, env: &str, state: &State) -> Result<()>;

    /// Takes the lock of `env`, failing fast with the holder when it is held.
    fn lock(&self, env: &str, info: LockInfo) -> Result<LockGuard, LockError>;

    /// Who holds the lock of `env`, if anyone.
    fn lock_holder(&self, env: &str) -> Result<Option<LockInfo>>;

    /// Breaks the lock of `env` if its id is `id`; returns who held it.
    fn unlock(&self, env: &str, id: &str) -> Result<LockInfo>;

    /// Appends an audit record durably.
    fn append_audit(&self, env: &str, record: &AuditRecord) -> Result<()>;

    /// The audit records of `env`, oldest first.
    fn read_audit(&self, env: &str) -> Result<Vec<AuditRecord>>;

    /// Keeps audit records that could not be delivered to every audit trail (PostgreSQL
    /// lost after the apply): each with the trails still owed, replacing what was kept.
    fn keep_undelivered(&self, env: &str, records: &[Undelivered]) -> Result<()>;

    /// The audit records still to deliver, oldest first.
    fn undelivered(&self, env: &str) -> Result<Vec<Undelivered>>;

    /// Whether any state of `env` exists (a snapshot or journal entries).
    fn exists(&self, env: &str) -> Result<bool>;

    /// Verifies the snapshot and the journal of `env`: what is damaged and what
    /// [`StateBackend::repair`] would do. Reads only.
    fn check(&self, env: &str) -> Result<Check>;

    /// Repairs the state of `env` as [`StateBackend::check`] described (damaged files are
    /// set aside, never deleted); the caller holds the lock. Returns what was done.
    fn repair(&self, env: &str) -> Result<Vec<String>>;
}

/// An audit record not yet delivered to some audit trails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undelivered {
    /// The providers whose audit trail still lacks it.
    pub to: Vec<String>,
    /// The record.
    pub record: AuditRecord,
}

/// Checks that an environment name is safe as a file name part.
pub fn check_env_name(env: &str) -> Result<()> {
    let ok = !env.is_empty()
        && env.len() <= 64
        && !env.starts_with('.')
        && env
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("environment name `{env}` is not usable for state files (letters, digits, `-`, `_`, `.`; not starting with `.`)");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
