//! State: what kombiform applied, per environment, and the only code that knows its format.
//!
//! A [`State`] is a snapshot (`<env>.json`) plus a journal of the changes completed since
//! (`<env>.journal`, one [`Entry`] per line): every completed change is one fsynced append,
//! so a crash at any moment loses nothing and duplicates nothing, and a large apply does
//! not rewrite the whole snapshot after each change. The snapshot is rewritten atomically
//! once, when an apply ends ([`StateBackend::compact`]). Serials order everything: an entry
//! at or below the snapshot's serial is already in it and is never applied twice.
//!
//! Also here: the lock that keeps two runs apart ([`LockInfo`], [`LockGuard`]) and the
//! audit trail. [`StateBackend`] is the storage interface; [`LocalBackend`] keeps files
//! under `.kombiform/`. Not here: deciding what to change (`plan`), talking to targets
//! (`providers`), printing (the CLI).

mod local;
mod lock;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::providers::AuditRecord;
use kombiform_plan::{Action, Change};

pub use kombiform_sys::{now_rfc3339, random_id};
pub use local::{LocalBackend, LocalJournal, DEFAULT_DIR};
pub use lock::{LockError, LockGuard, LockInfo};

/// Version of the state format (snapshot and journal). Files of another version are
/// refused with an error naming both versions; nothing is ever guessed.
pub const STATE_FORMAT: u32 = 1;

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

/// One completed change: a line of the journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// The lineage of the state it belongs to.
    pub lineage: String,
    /// The state's serial after this change.
    pub serial: u64,
    /// The resource's address.
    pub address: String,
    /// What was done.
    pub action: Action,
    /// The resource as applied (`None` for a delete).
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
        }
    }

    /// Addresses kombiform manages (feeds [`kombiform_plan::DiffInput::managed`]).
    pub fn managed(&self) -> BTreeSet<String> {
        self.resources.keys().cloned().collect()
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
        Ok(Entry {
            format: STATE_FORMAT,
            lineage: self.lineage.clone(),
            serial: self.serial + 1,
            address: change.address.clone(),
            action: change.action,
            resource,
        })
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
        match (&entry.action, &entry.resource) {
            (Action::Delete, _) => {
                self.resources.remove(&entry.address);
            }
            (_, Some(r)) => {
                self.resources.insert(entry.address.clone(), r.clone());
            }
            (action, None) => bail!(
                "journal entry {} ({} {}) has no resource",
                entry.serial,
                action.as_str(),
                entry.address
            ),
        }
        self.serial = entry.serial;
        Ok(true)
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
    if format < STATE_FORMAT {
        bail!(
            "{what} has format {format}, older than format {STATE_FORMAT}, and no migration \
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
            (addr.clone(), summary)
        })
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
        self.append_all(&entries)?;
        for e in &entries {
            state.apply(e)?;
        }
        Ok(entries)
    }
}

/// Where states, locks and audit records are kept. [`LocalBackend`] now; Azure Blob later.
pub trait StateBackend {
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
