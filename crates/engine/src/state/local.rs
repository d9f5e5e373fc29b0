//! The local state backend: files under `.kombiform/` in the working directory.
//!
//! - `state/<env>.json`: the snapshot, replaced atomically (temp file in the same
//!   directory, fsync, rename, fsync of the directory);
//! - `state/<env>.json.prev`: the snapshot before the last compaction (for repairs);
//! - `state/<env>.journal`: changes started and completed since the snapshot, one fsynced
//!   line per write; a failed write is cut back, so a full disk never leaves half a line;
//! - `state/<env>.lock`: who holds the lock, created exclusively with its full content
//!   (written to a temp file, then hard-linked into place: never seen half-written);
//! - `audit/<env>.jsonl`: one audit record per line;
//! - `audit/<env>.undelivered.json`: records some audit trail still lacks (delivered by the
//!   next apply).
//!
//! Not for teams sharing a state: a lock file only excludes runs that see the same disk.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::check::{analyse, Analysis, Check, Files};
use super::lock::{LockError, LockGuard, LockInfo};
use super::{
    check_env_name, entry_line, journal_lineage, replay, split_tail, Entry, Journal, State,
    StateBackend, Undelivered,
};
use crate::providers::AuditRecord;
use kombiform_sys as sys;

/// The directory the local backend uses by default, relative to the working directory.
pub const DEFAULT_DIR: &str = ".kombiform";

/// State in local files.
#[derive(Clone, Debug)]
pub struct LocalBackend {
    /// The `.kombiform` directory.
    pub dir: PathBuf,
}

impl LocalBackend {
    /// A backend keeping its files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> LocalBackend {
        LocalBackend { dir: dir.into() }
    }

    /// The default backend for a working directory: `<workdir>/.kombiform`.
    pub fn in_workdir(workdir: &Path) -> LocalBackend {
        LocalBackend::new(workdir.join(DEFAULT_DIR))
    }

    /// `state/<env>.json`.
    pub fn snapshot_path(&self, env: &str) -> PathBuf {
        self.dir.join("state").join(format!("{env}.json"))
    }

    /// `state/<env>.json.prev`: the snapshot before the last compaction.
    pub fn previous_path(&self, env: &str) -> PathBuf {
        self.dir.join("state").join(format!("{env}.json.prev"))
    }

    /// `audit/<env>.undelivered.json`.
    pub fn undelivered_path(&self, env: &str) -> PathBuf {
        self.dir
            .join("audit")
            .join(format!("{env}.undelivered.json"))
    }

    /// `state/<env>.journal`.
    pub fn journal_path(&self, env: &str) -> PathBuf {
        self.dir.join("state").join(format!("{env}.journal"))
    }

    /// `state/<env>.lock`.
    pub fn lock_path(&self, env: &str) -> PathBuf {
        self.dir.join("state").join(format!("{env}.lock"))
    }

    /// `audit/<env>.jsonl`.
    pub fn audit_path(&self, env: &str) -> PathBuf {
        self.dir.join("audit").join(format!("{env}.jsonl"))
    }

    fn state_dir(&self) -> Result<PathBuf> {
        let dir = self.dir.join("state");
        fs::create_dir_all(&dir)
            .with_context(|| format!("creating state directory {}", dir.display()))?;
        Ok(dir)
    }

    fn read_lock(&self, env: &str) -> Result<Option<Result<LockInfo, String>>> {
        let path = self.lock_path(env);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice::<LockInfo>(&bytes).map_err(|e| e.to_string()),
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading lock {}", path.display())),
        }
    }

    /// Creates the lock file exclusively with its full content; `Ok(false)` if it exists.
    fn create_lock(&self, env: &str, info: &LockInfo) -> Result<bool> {
        let dir = self.state_dir()?;
        let path = self.lock_path(env);
        let mut text = serde_json::to_vec_pretty(info).context("serialising lock")?;
        text.push(b'\n');
        let tmp = dir.join(format!(".{env}.lock.{}.tmp", info.id));
        write_synced(&tmp, &text)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        let created = match linked {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
            // A file system without hard links: exclusive create, then write.
            Err(_) => match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(&text)
                        .and_then(|()| f.sync_all())
                        .with_context(|| format!("writing lock {}", path.display()))?;
                    true
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
                Err(e) => {
                    return Err(e).with_context(|| format!("creating lock {}", path.display()))
                }
            },
        };
        if created {
            sync_dir(&dir)?;
        }
        Ok(created)
    }
}

impl StateBackend for LocalBackend {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn load(&self, env: &str) -> Result<State> {
        check_env_name(env)?;
        let hint = format!(
            "nothing was changed; `kombiform state check --env {env}` says what is damaged and \
             `kombiform state repair --env {env}` repairs it"
        );
        let snap = self.snapshot_path(env);
        let snapshot = read_optional(&snap)?;
        let jpath = self.journal_path(env);
        let journal = read_optional(&jpath)?.unwrap_or_default();
        let mut state = match snapshot {
            Some(bytes) => State::from_json(&bytes, env)
                .with_context(|| format!("loading state {}: {hint}", snap.display()))?,
            None => {
                if journal_lineage(&journal).is_none() && self.applied_before(env)? {
                    bail!(
                        "the state snapshot {} is missing, but the audit log records applies to \
                         `{env}`: the state was lost (or --state-dir points elsewhere); it is \
                         not read as empty: {hint}",
                        snap.display()
                    );
                }
                State::new(
                    env,
                    journal_lineage(&journal).unwrap_or_else(sys::random_id),
                )
            }
        };
        replay(&mut state, &journal)
            .with_context(|| format!("replaying journal {}: {hint}", jpath.display()))?;
        Ok(state)
    }

    fn journal(&self, env: &str) -> Result<Box<dyn Journal>> {
        Ok(Box::new(LocalJournal::open(self, env)?))
    }

    fn compact(&self, env: &str, state: &State) -> Result<()> {
        check_env_name(env)?;
        if state.env != env {
            bail!("compacting state of `{}` as `{env}`", state.env);
        }
        let jpath = self.journal_path(env);
        let journal = read_optional(&jpath)?.unwrap_or_default();
        let (complete, _) = split_tail(&journal);
        if let Some(last) = complete
            .split(|b| *b == b'\n')
            .rfind(|l| !l.iter().all(u8::is_ascii_whitespace))
        {
            let last: Entry = serde_json::from_slice(last)
                .with_context(|| format!("reading the last entry of {}", jpath.display()))?;
            if last.lineage != state.lineage || last.serial > state.serial {
                bail!(
                    "refusing to compact {}: the journal reaches serial {} (lineage {}), the \
                     state given is at serial {} (lineage {}); load the state again first",
                    jpath.display(),
                    last.serial,
                    last.lineage,
                    state.serial,
                    state.lineage
                );
            }
        }
        let dir = self.state_dir()?;
        let snap = self.snapshot_path(env);
        keep_previous(&dir, &snap, &self.previous_path(env))?;
        atomic_write(&dir, &snap, &state.to_json()?)?;
        if !journal.is_empty() {
            // Truncate rather than delete: a journal still open appends at the new end.
            let f = OpenOptions::new()
                .write(true)
                .open(&jpath)
                .with_context(|| format!("opening journal {}", jpath.display()))?;
            f.set_len(0)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("emptying journal {}", jpath.display()))?;
        }
        Ok(())
    }

    fn lock(&self, env: &str, info: LockInfo) -> Result<LockGuard, LockError> {
        check_env_name(env).map_err(LockError::Io)?;
        // A lock released between our attempt and our read: try again, a few times.
        for _ in 0..3 {
            if self.create_lock(env, &info).map_err(LockError::Io)? {
                let backend = self.clone();
                let (env_owned, id) = (env.to_string(), info.id.clone());
                return Ok(LockGuard::new(
                    info,
                    Box::new(move || backend.release(&env_owned, &id)),
                ));
            }
            match self.read_lock(env).map_err(LockError::Io)? {
                None => continue,
                Some(Ok(holder)) => {
                    return Err(LockError::Held {
                        env: env.to_string(),
                        process_gone: holder.process_gone(),
                        holder: Box::new(holder),
                    })
                }
                Some(Err(reason)) => {
                    return Err(LockError::Unreadable {
                        env: env.to_string(),
                        location: self.lock_path(env).display().to_string(),
                        reason,
                    })
                }
            }
        }
        Err(LockError::Io(anyhow::anyhow!(
            "the lock of `{env}` kept appearing and disappearing; try again"
        )))
    }

    fn lock_holder(&self, env: &str) -> Result<Option<LockInfo>> {
        check_env_name(env)?;
        match self.read_lock(env)? {
            None => Ok(None),
            Some(Ok(info)) => Ok(Some(info)),
            Some(Err(reason)) => bail!(
                "lock {} cannot be read: {reason}",
                self.lock_path(env).display()
            ),
        }
    }

    fn unlock(&self, env: &str, id: &str) -> Result<LockInfo> {
        let Some(holder) = self.lock_holder(env)? else {
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
        let path = self.lock_path(env);
        fs::remove_file(&path).with_context(|| format!("removing lock {}", path.display()))?;
        sync_dir(&self.state_dir()?)?;
        Ok(holder)
    }

    fn append_audit(&self, env: &str, record: &AuditRecord) -> Result<()> {
        check_env_name(env)?;
        let path = self.audit_path(env);
        let dir = self.dir.join("audit");
        fs::create_dir_all(&dir)
            .with_context(|| format!("creating audit directory {}", dir.display()))?;
        let mut line = serde_json::to_vec(record).context("serialising audit record")?;
        line.push(b'\n');
        let mut f = open_append(&path, &dir)?;
        cut_torn_tail(&mut f, &path)?;
        f.write_all(&line)
            .and_then(|()| f.sync_data())
            .with_context(|| format!("appending to audit log {}", path.display()))
    }

    fn read_audit(&self, env: &str) -> Result<Vec<AuditRecord>> {
        check_env_name(env)?;
        let path = self.audit_path(env);
        let bytes = read_optional(&path)?.unwrap_or_default();
        let (complete, _torn) = split_tail(&bytes);
        complete
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
            .map(|(n, l)| {
                serde_json::from_slice(l).with_context(|| {
                    format!("{} line {} is not an audit record", path.display(), n + 1)
                })
            })
            .collect()
    }

    fn keep_undelivered(&self, env: &str, records: &[Undelivered]) -> Result<()> {
        check_env_name(env)?;
        let path = self.undelivered_path(env);
        let dir = self.dir.join("audit");
        if records.is_empty() {
            return match fs::remove_file(&path) {
                Ok(()) => sync_dir(&dir),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
            };
        }
        fs::create_dir_all(&dir)
            .with_context(|| format!("creating audit directory {}", dir.display()))?;
        let mut text = serde_json::to_vec_pretty(records).context("serialising audit records")?;
        text.push(b'\n');
        atomic_write(&dir, &path, &text)
    }

    fn undelivered(&self, env: &str) -> Result<Vec<Undelivered>> {
        check_env_name(env)?;
        let path = self.undelivered_path(env);
        match read_optional(&path)? {
            None => Ok(Vec::new()),
            Some(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a list of audit records", path.display())),
        }
    }

    fn exists(&self, env: &str) -> Result<bool> {
        check_env_name(env)?;
        let journal = read_optional(&self.journal_path(env))?.unwrap_or_default();
        Ok(self.snapshot_path(env).exists() || !split_tail(&journal).0.is_empty())
    }

    fn check(&self, env: &str) -> Result<Check> {
        Ok(self.analyse(env)?.check)
    }

    fn repair(&self, env: &str) -> Result<Vec<String>> {
        let a = self.analyse(env)?;
        if a.check.clean() {
            return Ok(Vec::new());
        }
        let dir = self.state_dir()?;
        let mut done = Vec::new();
        let snap = self.snapshot_path(env);
        if a.snapshot_damaged {
            if let Some(aside) = self.set_aside(&snap, false)? {
                done.push(format!(
                    "set the damaged snapshot aside as {}",
                    aside.display()
                ));
            }
        }
        let jpath = self.journal_path(env);
        if a.journal_damaged {
            if let Some(aside) = self.set_aside(&jpath, true)? {
                done.push(format!("copied the damaged journal to {}", aside.display()));
            }
        }
        let mut state = a.state;
        // A repaired state is a new state: plans made before it are stale.
        state.serial += 1;
        atomic_write(&dir, &snap, &state.to_json()?)?;
        if jpath.exists() {
            let f = OpenOptions::new()
                .write(true)
                .open(&jpath)
                .with_context(|| format!("opening journal {}", jpath.display()))?;
            f.set_len(0)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("emptying journal {}", jpath.display()))?;
        }
        done.push(format!(
            "wrote {}: {} resources, {} in doubt, serial {}",
            snap.display(),
            state.resources.len(),
            state.pending.len(),
            state.serial
        ));
        Ok(done)
    }
}

impl LocalBackend {
    /// Whether the audit log records an apply of `env` that completed a change.
    fn applied_before(&self, env: &str) -> Result<bool> {
        Ok(self
            .read_audit(env)?
            .iter()
            .any(|r| r.changes.iter().any(|c| c.result == "done")))
    }

    /// Reads every file of the state of `env` and analyses them.
    fn analyse(&self, env: &str) -> Result<Analysis> {
        check_env_name(env)?;
        let snapshot = read_optional(&self.snapshot_path(env))?;
        let previous = read_optional(&self.previous_path(env))?;
        let journal = read_optional(&self.journal_path(env))?.unwrap_or_default();
        let applied_before = self.applied_before(env)?;
        Ok(analyse(&Files {
            env,
            snapshot: snapshot.as_deref(),
            previous: previous.as_deref(),
            journal: &journal,
            applied_before,
        }))
    }

    /// Renames `path` to `<path>.damaged-<id>` (a copy for the journal, which is emptied
    /// after); returns the new name.
    fn set_aside(&self, path: &Path, copy: bool) -> Result<Option<PathBuf>> {
        if !path.exists() {
            return Ok(None);
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let aside = path.with_file_name(format!("{name}.damaged-{}", sys::random_id()));
        if copy {
            fs::copy(path, &aside)
        } else {
            fs::rename(path, &aside).map(|()| 0)
        }
        .with_context(|| format!("setting {} aside as {}", path.display(), aside.display()))?;
        Ok(Some(aside))
    }

    /// Removes the lock of `env` if it is still `id`'s.
    fn release(&self, env: &str, id: &str) -> Result<()> {
        match self.read_lock(env)? {
            Some(Ok(holder)) if holder.id == id => {
                let path = self.lock_path(env);
                match fs::remove_file(&path) {
                    Ok(()) => sync_dir(&self.state_dir()?),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e).with_context(|| format!("removing lock {}", path.display())),
                }
            }
            _ => Ok(()),
        }
    }
}

/// The journal file of one environment, open for appending.
#[derive(Debug)]
pub struct LocalJournal {
    file: File,
    path: PathBuf,
    /// The length of the journal's whole lines: a failed write is cut back to it.
    len: u64,
    /// Why appends are refused: a failed write could not be cut back.
    broken: Option<String>,
}

impl LocalJournal {
    /// Opens (creating) the journal of `env`. A torn last line left by a crash is completed
    /// with a newline if it is a whole entry, cut off otherwise, so appends start clean.
    pub fn open(backend: &LocalBackend, env: &str) -> Result<LocalJournal> {
        check_env_name(env)?;
        let dir = backend.state_dir()?;
        let path = backend.journal_path(env);
        let mut file = open_append(&path, &dir)?;
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let (complete, tail) = split_tail(&bytes);
        let mut len = bytes.len() as u64;
        if !tail.is_empty() {
            if serde_json::from_slice::<Entry>(tail).is_ok() {
                len += 1;
                file.write_all(b"\n")
            } else {
                len = complete.len() as u64;
                file.set_len(len)
            }
            .and_then(|()| file.sync_all())
            .with_context(|| format!("repairing the torn last line of {}", path.display()))?;
        }
        Ok(LocalJournal {
            file,
            path,
            len,
            broken: None,
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends whole lines and syncs them. A failed write (a full disk) is cut back to the
    /// last whole line, so the journal never holds half an entry that a later append would
    /// glue to; if even that fails, later appends are refused.
    fn append_lines(&mut self, lines: &[u8]) -> Result<()> {
        if let Some(why) = &self.broken {
            bail!(
                "the journal {} is not written any more: {why}",
                self.path.display()
            );
        }
        let written = self
            .file
            .write_all(lines)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += lines.len() as u64;
                Ok(())
            }
            Err(e) => {
                let cut = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_all());
                if let Err(c) = cut {
                    self.broken = Some(format!("a failed write ({e}) could not be cut back ({c})"));
                }
                Err(e).with_context(|| format!("appending to journal {}", self.path.display()))
            }
        }
    }
}

impl Journal for LocalJournal {
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

/// Opens `path` for appending, creating it (and making its directory entry durable).
fn open_append(path: &Path, dir: &Path) -> Result<File> {
    let existed = path.exists();
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("opening {} for appending", path.display()))?;
    if !existed {
        sync_dir(dir)?;
    }
    Ok(f)
}

/// Cuts an unterminated last line (a write a crash cut short) so appends start clean.
fn cut_torn_tail(f: &mut File, path: &Path) -> Result<()> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (complete, tail) = split_tail(&bytes);
    if !tail.is_empty() {
        f.set_len(complete.len() as u64)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cutting the torn last line of {}", path.display()))?;
    }
    Ok(())
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Replaces `path` atomically: a temp file in `dir` (the same directory), fsync, rename,
/// fsync of the directory. A crash leaves the old file or the new one, never a mix.
fn atomic_write(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", sys::random_id()));
    let written = write_synced(&tmp, bytes).and_then(|()| {
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// Keeps the current snapshot as `previous` (a hard link, or a copy where links are not
/// supported) before it is replaced.
fn keep_previous(dir: &Path, snap: &Path, previous: &Path) -> Result<()> {
    if !snap.exists() {
        return Ok(());
    }
    let tmp = dir.join(format!(".prev.{}.tmp", sys::random_id()));
    let kept = fs::hard_link(snap, &tmp)
        .or_else(|_| fs::copy(snap, &tmp).map(|_| ()))
        .and_then(|()| fs::rename(&tmp, previous));
    if kept.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    kept.with_context(|| format!("keeping {} as {}", snap.display(), previous.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}
