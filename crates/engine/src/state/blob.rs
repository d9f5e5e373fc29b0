//! The Azure Blob state backend: a team's state in one blob container, the same layout as
//! the local backend's files, locked by a finite lease.
//!
//! - `state/<env>.json`: the snapshot (a block blob), replaced whole by one Put Blob (atomic:
//!   readers see the old content or the new), conditional on the entity tag it had
//!   (`If-Match`) and on the lease. Its lease is the lock: finite (`state.leaseSeconds`,
//!   15 to 60 s), renewed by a background thread every third of its duration while the run
//!   lasts, released when the run ends (also after SIGINT/SIGTERM); a killed run's lease
//!   runs out by itself. The holder (id, user, host, pid, start, command) is in the blob's
//!   metadata, so a second run's error names it.
//! - `state/<env>.json.prev`: the snapshot before the last compaction (for repairs).
//! - `state/<env>.journal`: an append blob; each write is one Append Block (all or nothing)
//!   at the position this run expects (`x-ms-blob-condition-appendpos`): a write that lands
//!   anywhere else is refused, never interleaved. An answer lost after the block was stored
//!   is recognised (the block is found at that position) and never written twice.
//! - `audit/<env>.jsonl` (append blob) and `audit/<env>.undelivered.json`.
//!
//! A crash at any point loses nothing committed: an entry is acknowledged only once its
//! block is stored; compaction writes the snapshot before it empties the journal (entries
//! at or below the snapshot's serial are skipped on replay), both conditional on what this
//! run read. A run whose lease was lost (renewals failed past its duration) writes nothing
//! more.
//!
//! Not here: the format (the parent module), the REST calls (`rest.rs`). The endpoint is
//! `https://<account>.blob.core.windows.net`, or `KOMBIFORM_BLOB_ENDPOINT` (Azurite:
//! `https://127.0.0.1:10000/devstoreaccount1`); tokens come from the Azure credential chain.

mod rest;

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::Method;

use super::check::{analyse, Analysis, Check, Files};
use super::lock::{LockError, LockGuard, LockInfo};
use super::{
    check_env_name, entry_line, journal_lineage, replay, split_tail, Entry, Journal, State,
    StateBackend, Undelivered,
};
use crate::providers::AuditRecord;
use kombiform_sys as sys;
use rest::{meta_decode, meta_encode, Call, Rest};

/// The environment variable that points the backend at another Blob endpoint (Azurite).
pub const BLOB_ENDPOINT_ENV: &str = "KOMBIFORM_BLOB_ENDPOINT";

/// The shortest and longest finite lease Blob Storage grants, in seconds.
pub const LEASE_LIMITS: (u32, u32) = (15, 60);

/// The largest Append Block: a batch larger than this is appended in several blocks.
const MAX_BLOCK: usize = 4 * 1024 * 1024;

/// Metadata keys of the lock holder (on the snapshot blob).
const META: [&str; 6] = [
    "kombiform_lock_id",
    "kombiform_user",
    "kombiform_host",
    "kombiform_pid",
    "kombiform_started_at",
    "kombiform_command",
];

/// Where a Blob state lives and how long its lease lasts.
#[derive(Clone, Debug)]
pub struct BlobSettings {
    /// The account's blob endpoint, e.g. `https://kfyprodstate.blob.core.windows.net`.
    pub endpoint: String,
    /// The container.
    pub container: String,
    /// The lease duration (15 to 60 seconds).
    pub lease: Duration,
    /// A CA bundle (PEM) to trust instead of the platform's roots (tests).
    pub ca_pem: Option<Vec<u8>>,
}

impl BlobSettings {
    /// The settings for `account` and `container`: the public endpoint of the account, or
    /// `KOMBIFORM_BLOB_ENDPOINT` when set (seen through `lookup`).
    pub fn for_account(
        account: &str,
        container: &str,
        lease_seconds: u32,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<BlobSettings> {
        let endpoint = match lookup(BLOB_ENDPOINT_ENV).filter(|v| !v.trim().is_empty()) {
            Some(e) => e.trim().trim_end_matches('/').to_string(),
            None => format!("https://{account}.blob.core.windows.net"),
        };
        check_endpoint(&endpoint)?;
        let (lo, hi) = LEASE_LIMITS;
        if !(lo..=hi).contains(&lease_seconds) {
            bail!("a state lease of {lease_seconds} s: Blob Storage grants {lo} to {hi} s");
        }
        Ok(BlobSettings {
            endpoint,
            container: container.to_string(),
            lease: Duration::from_secs(u64::from(lease_seconds)),
            ca_pem: None,
        })
    }
}

/// A bearer token goes over HTTPS only.
fn check_endpoint(endpoint: &str) -> Result<()> {
    let url = reqwest::Url::parse(endpoint)
        .with_context(|| format!("the Blob endpoint `{endpoint}` is not a URL"))?;
    if url.scheme() != "https" || url.query().is_some() {
        bail!("the Blob endpoint `{endpoint}` must be an https URL without a query (tokens are sent to it)");
    }
    Ok(())
}

/// State in an Azure Blob container. Cheap to clone; clones share their leases.
#[derive(Clone, Debug)]
pub struct BlobBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    rest: Arc<Rest>,
    lease: Duration,
    /// The leases this process holds, by environment.
    held: Mutex<HashMap<String, Arc<Held>>>,
}

/// A lease this process holds.
#[derive(Debug)]
struct Held {
    lease_id: String,
    info: LockInfo,
    /// Why the lease is lost (renewals failed): nothing more may be written.
    lost: Mutex<Option<String>>,
    /// Stops the renewal thread.
    stop: Mutex<Option<Sender<()>>>,
    renewer: Mutex<Option<JoinHandle<()>>>,
}

impl Held {
    fn check(&self, env: &str) -> Result<()> {
        match &*self.lost.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(why) => bail!(
                "the state lease of `{env}` was lost ({why}): another run may hold the state \
                 now, so this run writes nothing more to it"
            ),
        }
    }

    /// Stops renewing (waits for the renewal thread).
    fn stop(&self) {
        drop(self.stop.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = self
            .renewer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = t.join();
        }
    }
}

fn snapshot_blob(env: &str) -> String {
    format!("state/{env}.json")
}
fn previous_blob(env: &str) -> String {
    format!("state/{env}.json.prev")
}
fn journal_blob(env: &str) -> String {
    format!("state/{env}.journal")
}
fn audit_blob(env: &str) -> String {
    format!("audit/{env}.jsonl")
}
fn undelivered_blob(env: &str) -> String {
    format!("audit/{env}.undelivered.json")
}

impl BlobBackend {
    /// A backend on `settings`, with tokens of the Azure credential chain the environment
    /// describes.
    pub fn connect(settings: BlobSettings) -> Result<BlobBackend> {
        let tokens = kombiform_azure::TokenSource::from_env(kombiform_azure::STORAGE_SCOPE)
            .context("configuring the Azure credential for the Blob state")?;
        BlobBackend::with_tokens(settings, tokens)
    }

    /// A backend on `settings` with the given token source.
    pub fn with_tokens(
        settings: BlobSettings,
        tokens: kombiform_azure::TokenSource,
    ) -> Result<BlobBackend> {
        check_endpoint(&settings.endpoint)?;
        let url = format!(
            "{}/{}",
            settings.endpoint.trim_end_matches('/'),
            settings.container
        );
        let rest = Rest::new(url, tokens, settings.ca_pem.as_deref())?;
        Ok(BlobBackend {
            inner: Arc::new(Inner {
                rest: Arc::new(rest),
                lease: settings.lease,
                held: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn rest(&self) -> &Rest {
        &self.inner.rest
    }

    fn held(&self, env: &str) -> Option<Arc<Held>> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(env)
            .cloned()
    }

    /// A blob's content, `None` when it does not exist.
    fn read(&self, blob: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.rest().get(blob)?.map(|(b, _)| b))
    }

    /// The snapshot's content (`None` when absent or still empty: a lock was taken before
    /// any snapshot was written) and its entity tag.
    fn read_snapshot(&self, env: &str) -> Result<(Option<Vec<u8>>, Option<String>)> {
        Ok(match self.rest().get(&snapshot_blob(env))? {
            None => (None, None),
            Some((b, etag)) if b.is_empty() => (None, Some(etag)),
            Some((b, etag)) => (Some(b), Some(etag)),
        })
    }

    /// Creates an empty snapshot blob to hold the lease, unless one exists; creates the
    /// container on first use.
    fn ensure_snapshot_blob(&self, env: &str) -> Result<()> {
        let name = snapshot_blob(env);
        for _ in 0..2 {
            let call = Call::new(Method::PUT, &name)
                .header("x-ms-blob-type", "BlockBlob")
                .header("if-none-match", "*");
            let answer = self.rest().send(&call)?;
            match (answer.status, answer.code()) {
                (s, _) if (200..300).contains(&s) => return Ok(()),
                (409 | 412, _) => return Ok(()), // it exists (or is leased): fine
                (404, "ContainerNotFound") => self.rest().create_container()?,
                _ => return Err(answer.error(&format!("creating blob {name}"))),
            }
        }
        bail!(
            "the container {} was created but cannot be written",
            self.rest().container_url()
        )
    }

    /// The holder named in the snapshot's metadata, and whether its lease is live.
    fn holder(&self, env: &str) -> Result<(Option<LockInfo>, bool)> {
        let name = snapshot_blob(env);
        let answer = self.rest().send(&Call::new(Method::HEAD, &name))?;
        if answer.status == 404 {
            return Ok((None, false));
        }
        if !answer.ok() {
            return Err(answer.error(&format!("reading the properties of {name}")));
        }
        let leased = answer.header("x-ms-lease-state") == Some("leased");
        let meta = |k: &str| answer.header(&format!("x-ms-meta-{k}")).map(meta_decode);
        let info = meta(META[0]).map(|id| LockInfo {
            id,
            user: meta(META[1]).unwrap_or_default(),
            host: meta(META[2]).unwrap_or_default(),
            pid: meta(META[3]).and_then(|p| p.parse().ok()).unwrap_or(0),
            started_at: meta(META[4]).unwrap_or_default(),
            command: meta(META[5]).unwrap_or_default(),
        });
        Ok((info, leased))
    }

    /// A lease call on the snapshot blob.
    fn lease_call(
        &self,
        env: &str,
        action: &str,
        headers: &[(&str, String)],
    ) -> Result<rest::Answer> {
        let name = snapshot_blob(env);
        let mut call = Call::new(Method::PUT, &name)
            .query(&[("comp", "lease")])
            .header("x-ms-lease-action", action);
        for (k, v) in headers {
            call = call.header(k, v.clone());
        }
        self.rest().send(&call)
    }

    /// Writes (or, with `None`, clears) the holder metadata under `lease_id`.
    fn set_holder(&self, env: &str, lease_id: Option<&str>, info: Option<&LockInfo>) -> Result<()> {
        let name = snapshot_blob(env);
        let mut call = Call::new(Method::PUT, &name).query(&[("comp", "metadata")]);
        if let Some(id) = lease_id {
            call = call.header("x-ms-lease-id", id);
        }
        for (k, v) in holder_meta(info) {
            call = call.header(&k, v);
        }
        let answer = self.rest().send(&call)?;
        rest::expect_ok(answer, &format!("writing the lock holder of `{env}`")).map(|_| ())
    }

    /// Starts renewing `held`'s lease every third of its duration until stopped; a renewal
    /// the service refuses marks the lease lost.
    fn start_renewal(&self, env: &str, held: &Arc<Held>) -> Result<()> {
        let (tx, rx) = mpsc::channel::<()>();
        let every = self.inner.lease / 3;
        let (backend, env, h) = (self.clone(), env.to_string(), Arc::clone(held));
        let thread = std::thread::Builder::new()
            .name(format!("kombiform-lease-{env}"))
            .spawn(move || loop {
                match rx.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                let renewed =
                    backend.lease_call(&env, "renew", &[("x-ms-lease-id", h.lease_id.clone())]);
                match renewed {
                    Ok(a) if a.ok() => {}
                    Ok(a) if a.status == 409 || a.status == 412 => {
                        let why = a.error("renewing the lease").to_string();
                        *h.lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                        return;
                    }
                    Ok(a) => {
                        tracing::warn!("{}; trying again", a.error("renewing the state lease"))
                    }
                    Err(e) => tracing::warn!("renewing the state lease: {e:#}; trying again"),
                }
            })
            .context("starting the lease renewal thread")?;
        *held.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        *held.renewer.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        Ok(())
    }

    /// Ends this process's lease of `env` if it is `id`: stops renewing, clears the holder,
    /// releases the lease.
    fn release(&self, env: &str, id: &str) -> Result<()> {
        let held = {
            let mut map = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(env) {
                Some(h) if h.info.id == id => map.remove(env),
                _ => None,
            }
        };
        let Some(held) = held else {
            return Ok(());
        };
        held.stop();
        if held
            .lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return Ok(()); // nothing of ours is left to release
        }
        self.set_holder(env, Some(&held.lease_id), None)?;
        let answer =
            self.lease_call(env, "release", &[("x-ms-lease-id", held.lease_id.clone())])?;
        rest::expect_ok(answer, &format!("releasing the state lease of `{env}`")).map(|_| ())
    }

    /// The lease id to write the snapshot under, if this process holds the lock of `env`
    /// (failing if its lease is lost).
    fn write_lease(&self, env: &str) -> Result<Option<Arc<Held>>> {
        match self.held(env) {
            Some(h) => {
                h.check(env)?;
                Ok(Some(h))
            }
            None => Ok(None),
        }
    }

    /// Replaces the snapshot with `bytes`, if it still has entity tag `etag` (`None`: it must
    /// not exist), under this process's lease; the holder metadata is kept.
    fn put_snapshot(&self, env: &str, bytes: Vec<u8>, etag: Option<&str>) -> Result<()> {
        let name = snapshot_blob(env);
        let held = self.write_lease(env)?;
        let mut call = Call::new(Method::PUT, &name)
            .header("x-ms-blob-type", "BlockBlob")
            .header("content-type", "application/json")
            .body(bytes);
        call = match etag {
            Some(t) => call.header("if-match", t),
            None => call.header("if-none-match", "*"),
        };
        if let Some(h) = &held {
            call = call.header("x-ms-lease-id", h.lease_id.clone());
        }
        for (k, v) in holder_meta(held.as_ref().map(|h| &h.info)) {
            call = call.header(&k, v);
        }
        let answer = self.rest().send(&call)?;
        if answer.ok() {
            return Ok(());
        }
        if matches!(answer.status, 409 | 412) && answer.retried {
            // An earlier attempt may have stored it and lost its answer: compare.
            if let Some((now, _)) = self.rest().get(&name)? {
                if now == call.body {
                    return Ok(());
                }
            }
        }
        Err(answer.error(&format!(
            "writing the state snapshot {name} (it changed since it was read, or the lock is \
             not held)"
        )))
    }

    /// Writes a block blob unconditionally.
    fn put_plain(&self, blob: &str, bytes: Vec<u8>) -> Result<()> {
        let call = Call::new(Method::PUT, blob)
            .header("x-ms-blob-type", "BlockBlob")
            .body(bytes);
        self.rest()
            .send_ok(&call, &format!("writing blob {blob}"))
            .map(|_| ())
    }

    /// Empties the journal (a new, empty append blob) if it still has entity tag `etag`.
    fn reset_journal(&self, env: &str, etag: &str) -> Result<()> {
        let name = journal_blob(env);
        let call = Call::new(Method::PUT, &name)
            .header("x-ms-blob-type", "AppendBlob")
            .header("if-match", etag);
        let answer = self.rest().send(&call)?;
        if answer.ok() || (answer.status == 412 && answer.retried) {
            return Ok(());
        }
        Err(answer.error(&format!(
            "emptying the journal {name} (another run appended to it since it was read?)"
        )))
    }

    /// Creates an empty append blob unless it exists.
    fn ensure_append_blob(&self, blob: &str) -> Result<()> {
        let call = Call::new(Method::PUT, blob)
            .header("x-ms-blob-type", "AppendBlob")
            .header("if-none-match", "*");
        let answer = self.rest().send(&call)?;
        match answer.status {
            s if (200..300).contains(&s) => Ok(()),
            409 | 412 => Ok(()),
            404 if answer.code() == "ContainerNotFound" => {
                self.rest().create_container()?;
                let again = self.rest().send(&call)?;
                if again.ok() || matches!(again.status, 409 | 412) {
                    Ok(())
                } else {
                    Err(again.error(&format!("creating blob {blob}")))
                }
            }
            _ => Err(answer.error(&format!("creating blob {blob}"))),
        }
    }

    /// Whether the audit log records an apply of `env` that completed a change.
    fn applied_before(&self, env: &str) -> Result<bool> {
        Ok(self
            .read_audit(env)?
            .iter()
            .any(|r| r.changes.iter().any(|c| c.result == "done")))
    }

    fn analyse(&self, env: &str) -> Result<Analysis> {
        check_env_name(env)?;
        let (snapshot, _) = self.read_snapshot(env)?;
        let previous = self.read(&previous_blob(env))?;
        let journal = self.read(&journal_blob(env))?.unwrap_or_default();
        let applied_before = self.applied_before(env)?;
        Ok(analyse(&Files {
            env,
            snapshot: snapshot.as_deref(),
            previous: previous.as_deref(),
            journal: &journal,
            applied_before,
        }))
    }

    /// Copies `blob` to `<blob>.damaged-<id>`; returns the copy's name.
    fn set_aside(&self, blob: &str) -> Result<Option<String>> {
        let Some(bytes) = self.read(blob)? else {
            return Ok(None);
        };
        let aside = format!("{blob}.damaged-{}", sys::random_id());
        self.put_plain(&aside, bytes)?;
        Ok(Some(aside))
    }
}

/// The `x-ms-meta-*` headers naming a holder (none for `None`).
fn holder_meta(info: Option<&LockInfo>) -> Vec<(String, String)> {
    let Some(i) = info else {
        return Vec::new();
    };
    let values = [
        i.id.clone(),
        i.user.clone(),
        i.host.clone(),
        i.pid.to_string(),
        i.started_at.clone(),
        i.command.clone(),
    ];
    META.iter()
        .zip(values)
        .map(|(k, v)| (format!("x-ms-meta-{k}"), meta_encode(&v)))
        .collect()
}

/// A lease id: a random GUID (the form Blob Storage requires).
fn lease_id() -> String {
    let b = sys::random_bytes::<16>();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

impl StateBackend for BlobBackend {
    fn location(&self) -> String {
        self.rest().container_url().to_string()
    }

    fn load(&self, env: &str) -> Result<State> {
        check_env_name(env)?;
        let hint = format!(
            "nothing was changed; `kombiform state check --env {env}` says what is damaged and \
             `kombiform state repair --env {env}` repairs it"
        );
        let (snapshot, _) = self.read_snapshot(env)?;
        let journal = self.read(&journal_blob(env))?.unwrap_or_default();
        let snap = snapshot_blob(env);
        let mut state = match snapshot {
            Some(bytes) => State::from_json(&bytes, env)
                .with_context(|| format!("loading state blob {snap}: {hint}"))?,
            None => {
                if journal_lineage(&journal).is_none() && self.applied_before(env)? {
                    bail!(
                        "the state blob {snap} in {} is empty, but the audit log records \
                         applies to `{env}`: the state was lost; it is not read as empty: {hint}",
                        self.location()
                    );
                }
                State::new(
                    env,
                    journal_lineage(&journal).unwrap_or_else(sys::random_id),
                )
            }
        };
        replay(&mut state, &journal)
            .with_context(|| format!("replaying journal blob {}: {hint}", journal_blob(env)))?;
        Ok(state)
    }

    fn journal(&self, env: &str) -> Result<Box<dyn Journal>> {
        Ok(Box::new(BlobJournal::open(self, env)?))
    }

    fn compact(&self, env: &str, state: &State) -> Result<()> {
        check_env_name(env)?;
        if state.env != env {
            bail!("compacting state of `{}` as `{env}`", state.env);
        }
        let jname = journal_blob(env);
        let (journal, journal_etag) = self.rest().get(&jname)?.unwrap_or_default();
        let (complete, _) = split_tail(&journal);
        if let Some(last) = complete
            .split(|b| *b == b'\n')
            .rfind(|l| !l.iter().all(u8::is_ascii_whitespace))
        {
            let last: Entry = serde_json::from_slice(last)
                .with_context(|| format!("reading the last entry of {jname}"))?;
            if last.lineage != state.lineage || last.serial > state.serial {
                bail!(
                    "refusing to compact {jname}: the journal reaches serial {} (lineage {}), \
                     the state given is at serial {} (lineage {}); load the state again first",
                    last.serial,
                    last.lineage,
                    state.serial,
                    state.lineage
                );
            }
        }
        let (snapshot, etag) = self.read_snapshot(env)?;
        if let Some(prev) = snapshot {
            self.put_plain(&previous_blob(env), prev)?;
        }
        self.put_snapshot(env, state.to_json()?, etag.as_deref())?;
        if !journal.is_empty() {
            self.reset_journal(env, &journal_etag)?;
        }
        Ok(())
    }

    fn lock(&self, env: &str, info: LockInfo) -> Result<LockGuard, LockError> {
        check_env_name(env).map_err(LockError::Io)?;
        self.ensure_snapshot_blob(env).map_err(LockError::Io)?;
        let id = lease_id();
        let secs = self.inner.lease.as_secs().to_string();
        let answer = self
            .lease_call(
                env,
                "acquire",
                &[
                    ("x-ms-lease-duration", secs),
                    ("x-ms-proposed-lease-id", id.clone()),
                ],
            )
            .map_err(LockError::Io)?;
        if answer.status == 409 && answer.code() == "LeaseAlreadyPresent" {
            return Err(self.held_error(env));
        }
        let answer = rest::expect_ok(answer, &format!("taking the state lease of `{env}`"))
            .map_err(LockError::Io)?;
        let lease = answer.header("x-ms-lease-id").unwrap_or(&id).to_string();
        let held = Arc::new(Held {
            lease_id: lease.clone(),
            info: info.clone(),
            lost: Mutex::new(None),
            stop: Mutex::new(None),
            renewer: Mutex::new(None),
        });
        let started = self
            .set_holder(env, Some(&lease), Some(&info))
            .and_then(|()| self.start_renewal(env, &held));
        if let Err(e) = started {
            held.stop();
            let _ = self.lease_call(env, "release", &[("x-ms-lease-id", lease)]);
            return Err(LockError::Io(e));
        }
        self.inner
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(env.to_string(), held);
        let backend = self.clone();
        let (env_owned, id) = (env.to_string(), info.id.clone());
        Ok(LockGuard::new(
            info,
            Box::new(move || backend.release(&env_owned, &id)),
        ))
    }

    fn lock_holder(&self, env: &str) -> Result<Option<LockInfo>> {
        check_env_name(env)?;
        let (info, leased) = self.holder(env)?;
        Ok(if leased { info } else { None })
    }

    fn unlock(&self, env: &str, id: &str) -> Result<LockInfo> {
        check_env_name(env)?;
        if let Some(h) = self.held(env).filter(|h| h.info.id == id) {
            let info = h.info.clone();
            self.release(env, id)?;
            return Ok(info);
        }
        let (info, leased) = self.holder(env)?;
        let Some(holder) = info.filter(|_| leased) else {
            bail!("the state of environment `{env}` is not locked");
        };
        if holder.id != id {
            bail!(
                "lock id `{id}` does not match: the state of environment `{env}` is locked by \
                 {}, lock id {}",
                holder.describe(),
                holder.id
            );
        }
        let answer = self.lease_call(env, "break", &[("x-ms-lease-break-period", "0".into())])?;
        rest::expect_ok(answer, &format!("breaking the state lease of `{env}`"))?;
        // The broken lease no longer guards the blob: clear the holder it named.
        self.set_holder(env, None, None)?;
        Ok(holder)
    }

    fn append_audit(&self, env: &str, record: &AuditRecord) -> Result<()> {
        check_env_name(env)?;
        let name = audit_blob(env);
        self.ensure_append_blob(&name)?;
        let mut line = serde_json::to_vec(record).context("serialising audit record")?;
        line.push(b'\n');
        let call = Call::new(Method::PUT, &name)
            .query(&[("comp", "appendblock")])
            .body(line);
        self.rest()
            .send_ok(&call, &format!("appending to audit log {name}"))
            .map(|_| ())
    }

    fn read_audit(&self, env: &str) -> Result<Vec<AuditRecord>> {
        check_env_name(env)?;
        let name = audit_blob(env);
        let bytes = self.read(&name)?.unwrap_or_default();
        let (complete, _torn) = split_tail(&bytes);
        complete
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
            .map(|(n, l)| {
                serde_json::from_slice(l)
                    .with_context(|| format!("{name} line {} is not an audit record", n + 1))
            })
            .collect()
    }

    fn keep_undelivered(&self, env: &str, records: &[Undelivered]) -> Result<()> {
        check_env_name(env)?;
        let name = undelivered_blob(env);
        if records.is_empty() {
            let answer = self.rest().send(&Call::new(Method::DELETE, &name))?;
            if answer.ok() || answer.status == 404 {
                return Ok(());
            }
            return Err(answer.error(&format!("removing {name}")));
        }
        let mut text = serde_json::to_vec_pretty(records).context("serialising audit records")?;
        text.push(b'\n');
        self.put_plain(&name, text)
    }

    fn undelivered(&self, env: &str) -> Result<Vec<Undelivered>> {
        check_env_name(env)?;
        let name = undelivered_blob(env);
        match self.read(&name)? {
            None => Ok(Vec::new()),
            Some(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{name} is not a list of audit records")),
        }
    }

    fn exists(&self, env: &str) -> Result<bool> {
        check_env_name(env)?;
        let (snapshot, _) = self.read_snapshot(env)?;
        let journal = self.read(&journal_blob(env))?.unwrap_or_default();
        Ok(snapshot.is_some() || !split_tail(&journal).0.is_empty())
    }

    fn check(&self, env: &str) -> Result<Check> {
        Ok(self.analyse(env)?.check)
    }

    fn repair(&self, env: &str) -> Result<Vec<String>> {
        let a = self.analyse(env)?;
        if a.check.clean() {
            return Ok(Vec::new());
        }
        let mut done = Vec::new();
        let snap = snapshot_blob(env);
        if a.snapshot_damaged {
            if let Some(aside) = self.set_aside(&snap)? {
                done.push(format!("copied the damaged snapshot to {aside}"));
            }
        }
        let jname = journal_blob(env);
        if a.journal_damaged {
            if let Some(aside) = self.set_aside(&jname)? {
                done.push(format!("copied the damaged journal to {aside}"));
            }
        }
        let mut state = a.state;
        // A repaired state is a new state: plans made before it are stale.
        state.serial += 1;
        let (_, etag) = self.read_snapshot(env)?;
        self.put_snapshot(env, state.to_json()?, etag.as_deref())?;
        if let Some((bytes, etag)) = self.rest().get(&jname)? {
            if !bytes.is_empty() {
                self.reset_journal(env, &etag)?;
            }
        }
        done.push(format!(
            "wrote {snap}: {} resources, {} in doubt, serial {}",
            state.resources.len(),
            state.pending.len(),
            state.serial
        ));
        Ok(done)
    }
}

impl BlobBackend {
    /// The error for a lease someone holds: the holder from the metadata. A lease taken a
    /// moment ago may not name its holder yet: asked again briefly before saying so.
    fn held_error(&self, env: &str) -> LockError {
        for attempt in 0..5 {
            match self.holder(env) {
                Ok((Some(holder), true)) => {
                    return LockError::Held {
                        env: env.to_string(),
                        process_gone: holder.process_gone(),
                        holder: Box::new(holder),
                    }
                }
                Ok(_) if attempt < 4 => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Ok(_) => break,
                Err(e) => return LockError::Io(e),
            }
        }
        LockError::Unreadable {
            env: env.to_string(),
            location: format!("{}/{}", self.location(), snapshot_blob(env)),
            reason: "its lease is held but its metadata names no holder".to_string(),
        }
    }
}

/// The journal append blob of one environment, open for appending at a known position.
pub struct BlobJournal {
    backend: BlobBackend,
    env: String,
    name: String,
    /// The length of the journal's whole lines: the position of the next block.
    pos: u64,
}

impl BlobJournal {
    /// Opens (creating) the journal of `env`. A torn last line (never left by Append Block,
    /// which stores a block whole or not at all, but possible in a blob written by hand) is
    /// completed if it is a whole entry and dropped otherwise, by rewriting the journal.
    pub fn open(backend: &BlobBackend, env: &str) -> Result<BlobJournal> {
        check_env_name(env)?;
        let name = journal_blob(env);
        backend.ensure_append_blob(&name)?;
        let (bytes, etag) = backend.rest().get(&name)?.unwrap_or_default();
        let (complete, tail) = split_tail(&bytes);
        let mut journal = BlobJournal {
            backend: backend.clone(),
            env: env.to_string(),
            name,
            pos: bytes.len() as u64,
        };
        if !tail.is_empty() {
            let mut keep = complete.to_vec();
            if serde_json::from_slice::<Entry>(tail).is_ok() {
                keep.extend_from_slice(tail);
                keep.push(b'\n');
            }
            backend.reset_journal(env, &etag)?;
            journal.pos = 0;
            journal
                .append_lines(&keep)
                .with_context(|| format!("repairing the torn last line of {}", journal.name))?;
        }
        Ok(journal)
    }

    /// Appends whole lines at the expected position, in blocks of at most 4 MiB cut at line
    /// ends. A block found already stored at that position (an answer lost after the write)
    /// counts as written; anything else there means another writer, and is refused.
    fn append_lines(&mut self, lines: &[u8]) -> Result<()> {
        if let Some(h) = self.backend.held(&self.env) {
            h.check(&self.env)?;
        }
        for block in blocks(lines) {
            self.append_block(block)?;
        }
        Ok(())
    }

    fn append_block(&mut self, block: &[u8]) -> Result<()> {
        let pos = self.pos.to_string();
        let call = Call::new(Method::PUT, &self.name)
            .query(&[("comp", "appendblock")])
            .header("x-ms-blob-condition-appendpos", pos)
            .body(block.to_vec());
        let answer = self.backend.rest().send(&call)?;
        if answer.ok() {
            self.pos += block.len() as u64;
            return Ok(());
        }
        if answer.status == 412 && answer.code() == "AppendPositionConditionNotMet" {
            let now = self.backend.read(&self.name)?.unwrap_or_default();
            let at = usize::try_from(self.pos).unwrap_or(usize::MAX);
            if now.len() == at + block.len() && now.get(at..) == Some(block) {
                // Stored by an attempt whose answer was lost.
                self.pos += block.len() as u64;
                return Ok(());
            }
            bail!(
                "appending to journal {}: it holds {} bytes where this run expected {}: \
                 another run wrote the state of `{}`",
                self.name,
                now.len(),
                self.pos,
                self.env
            );
        }
        Err(answer.error(&format!("appending to journal {}", self.name)))
    }
}

/// `lines` cut at line ends into blocks of at most [`MAX_BLOCK`] bytes (a longer single
/// line is one block of its own).
fn blocks(lines: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for (i, b) in lines.iter().enumerate() {
        if *b != b'\n' {
            continue;
        }
        if i + 1 - start > MAX_BLOCK && end > start {
            out.push(&lines[start..end]);
            start = end;
        }
        end = i + 1;
    }
    if end > start {
        out.push(&lines[start..end]);
    }
    if end < lines.len() {
        out.push(&lines[end..]);
    }
    out
}

impl Journal for BlobJournal {
    fn append(&mut self, entry: &Entry) -> Result<()> {
        let line = entry_line(entry)?;
        self.append_lines(&line)
    }

    fn append_all(&mut self, entries: &[Entry]) -> Result<()> {
        let mut lines = Vec::new();
        for e in entries {
            lines.extend(entry_line(e)?);
        }
        self.append_lines(&lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_guids() {
        let id = lease_id();
        assert_eq!(id.len(), 36, "{id}");
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_ne!(lease_id(), id);
    }

    #[test]
    fn batches_are_cut_at_line_ends() {
        let line = vec![b'x'; 1024 * 1024 - 1];
        let mut lines = Vec::new();
        for _ in 0..9 {
            lines.extend_from_slice(&line);
            lines.push(b'\n');
        }
        let cut = blocks(&lines);
        assert_eq!(cut.iter().map(|b| b.len()).sum::<usize>(), lines.len());
        assert!(cut
            .iter()
            .all(|b| b.len() <= MAX_BLOCK && b.ends_with(b"\n")));
        assert_eq!(cut.len(), 3);
        assert_eq!(blocks(b"a\nb\n"), vec![&b"a\nb\n"[..]]);
        assert!(blocks(b"").is_empty());
    }

    #[test]
    fn settings_refuse_plain_http_and_leases_blob_storage_does_not_grant() {
        let none = |_: &str| None;
        let s = BlobSettings::for_account("kfystate", "state", 60, &none).unwrap();
        assert_eq!(s.endpoint, "https://kfystate.blob.core.windows.net");
        let err = BlobSettings::for_account("kfystate", "state", 90, &none).unwrap_err();
        assert!(err.to_string().contains("15 to 60"), "{err}");
        let plain = |_: &str| Some("http://127.0.0.1:10000/devstoreaccount1".to_string());
        let err = BlobSettings::for_account("kfystate", "state", 60, &plain).unwrap_err();
        assert!(err.to_string().contains("https"), "{err}");
        let azurite = |_: &str| Some("https://127.0.0.1:10000/devstoreaccount1/".to_string());
        let s = BlobSettings::for_account("kfystate", "state", 15, &azurite).unwrap();
        assert_eq!(s.endpoint, "https://127.0.0.1:10000/devstoreaccount1");
    }
}
