//! Integration tests of the local state backend across processes: a lock held by another
//! process fails fast and names it; a process killed with SIGKILL while journaling leaves a
//! state that loads and a lock that must be broken deliberately. Also the 50k-resource
//! figures (journal appends, compaction, load).
//!
//! The other process is this test binary again: a test run with `CHILD_ENV` set takes the
//! lock, journals changes until its stdin closes, then compacts and releases.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kombiform_engine::state::{LocalBackend, LockError, LockInfo, State, StateBackend};
use kombiform_plan::{Action, Change, Resource};
use serde_json::json;

/// Set in the child process: the `.kombiform` directory it works in.
const CHILD_ENV: &str = "KOMBIFORM_IT_STATE_CHILD";
/// The test the child runs (this module's first test, in its child role).
const CHILD_TEST: &str = "state::lock_held_by_another_process_fails_fast_naming_it";
const ENV: &str = "it";
const CHILD_COMMAND: &str = "kombiform apply --env it (state test child)";

fn create(i: usize) -> Change {
    let attrs = json!({
        "slug": format!("c{i}"),
        "plan": "pro",
        "note": "x".repeat(200),
    });
    let mut r = Resource::new(
        format!("postgres.tenant.c{i}"),
        attrs.as_object().cloned().unwrap_or_default(),
    );
    r.meta.insert("id".into(), json!(format!("row-{i}")));
    Change {
        address: r.address.clone(),
        action: Action::Create,
        attrs: Vec::new(),
        destructive: false,
        drift: false,
        desired: Some(r),
        live: None,
    }
}

/// The child's role: lock, journal, report READY, keep journaling until stdin closes.
fn child_main(dir: &Path) -> Result<()> {
    let backend = LocalBackend::new(dir);
    let guard = backend
        .lock(ENV, LockInfo::current(CHILD_COMMAND))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut state = backend.load(ENV)?;
    let mut journal = backend.journal(ENV)?;
    for i in 0..5 {
        journal.record(&mut state, &create(i))?;
    }
    let mut out = std::io::stdout();
    writeln!(out, "READY {}", guard.info().id)?;
    out.flush()?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || -> Result<State> {
            let mut i = 5;
            while !stop.load(Ordering::Relaxed) {
                journal.record(&mut state, &create(i))?;
                i += 1;
            }
            Ok(state)
        })
    };
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    stop.store(true, Ordering::Relaxed);
    let state = writer
        .join()
        .map_err(|_| anyhow::anyhow!("journal writer panicked"))??;
    backend.compact(ENV, &state)?;
    guard.release()
}

/// Starts the child and waits for its READY line; returns it with the lock id it holds.
fn spawn_child(dir: &Path) -> Result<(Child, String)> {
    let exe = std::env::current_exe().context("locating the test binary")?;
    let mut child = Command::new(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning the child test process")?;
    let stdout: ChildStdout = child.stdout.take().context("child stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print `test NAME ... ` on the same line first.
            if let Some((_, id)) = line.split_once("READY ") {
                let _ = tx.send(id.trim().to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(id) => Ok((child, id)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the child process never reported READY")
        }
    }
}

fn held(result: Result<kombiform_engine::state::LockGuard, LockError>) -> (LockInfo, bool, String) {
    match result {
        Err(e @ LockError::Held { .. }) => {
            let msg = e.to_string();
            match e {
                LockError::Held {
                    holder,
                    process_gone,
                    ..
                } => (*holder, process_gone, msg),
                _ => unreachable!("matched Held above"),
            }
        }
        Err(e) => panic!("expected the lock to be held, got: {e}"),
        Ok(g) => panic!("took a lock another process holds: {:?}", g.info()),
    }
}

fn ok<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e:#}"),
    }
}

#[test]
fn lock_held_by_another_process_fails_fast_naming_it() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        ok(child_main(Path::new(&dir)));
        return;
    }
    let dir = ok(tempfile::tempdir().context("tempdir"));
    let backend = LocalBackend::new(dir.path());
    let (mut child, child_lock_id) = ok(spawn_child(dir.path()));

    // `lock` never waits: it answers at once, naming the holder.
    let (holder, gone, msg) = held(backend.lock(ENV, LockInfo::current("kombiform plan")));
    assert_eq!(holder.id, child_lock_id);
    assert_eq!(holder.pid, child.id());
    assert_eq!(holder.command, CHILD_COMMAND);
    let me = LockInfo::current("me");
    assert_eq!((&holder.user, &holder.host), (&me.user, &me.host));
    assert!(!gone, "the child is alive");
    let pid = child.id().to_string();
    for part in [
        holder.user.as_str(),
        holder.host.as_str(),
        pid.as_str(),
        CHILD_COMMAND,
        child_lock_id.as_str(),
    ] {
        assert!(msg.contains(part), "{part} missing from: {msg}");
    }

    // A wrong id never breaks it, and the error shows the real holder.
    let e = match backend.unlock(ENV, "ffffffffffffffff") {
        Ok(h) => panic!("broke a lock with the wrong id: {h:?}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains(&child_lock_id) && e.contains(CHILD_COMMAND),
        "{e}"
    );
    assert_eq!(
        ok(backend.lock_holder(ENV)).map(|h| h.id),
        Some(child_lock_id)
    );

    // The child finishes normally: compacts, releases.
    drop(child.stdin.take());
    let status = ok(child.wait().context("waiting for the child"));
    assert!(status.success(), "child failed: {status}");
    assert_eq!(ok(backend.lock_holder(ENV)), None);
    let state = ok(backend.load(ENV));
    assert!(state.serial >= 5, "serial {}", state.serial);
    assert_eq!(state.resources.len() as u64, state.serial);
    let journal = ok(std::fs::read(backend.journal_path(ENV)).context("journal"));
    assert!(journal.is_empty(), "compaction left the journal non-empty");
    assert!(backend.lock(ENV, LockInfo::current("after")).is_ok());
}

#[test]
fn kill_9_mid_journal_leaves_a_loadable_state_and_a_lock_to_break() {
    let dir = ok(tempfile::tempdir().context("tempdir"));
    let backend = LocalBackend::new(dir.path());
    // The child journals without pause once READY: the kill lands mid-journal.
    let (mut child, child_lock_id) = ok(spawn_child(dir.path()));
    ok(child.kill().context("SIGKILL to the child")); // SIGKILL on Unix
    ok(child.wait().context("reaping the child").map(|_| ()));

    // Everything journaled before the kill is there, nothing twice, in order.
    let state = ok(backend.load(ENV));
    assert!(state.serial >= 5, "serial {}", state.serial);
    assert_eq!(state.resources.len() as u64, state.serial);
    for i in 0..state.serial {
        assert!(
            state
                .resources
                .contains_key(&format!("postgres.tenant.c{i}")),
            "c{i} missing"
        );
    }

    // The lock stays: the error says its process is gone and how to break it.
    let (holder, gone, msg) = held(backend.lock(ENV, LockInfo::current("kombiform apply")));
    assert!(gone, "the killed process should be known gone: {msg}");
    assert_eq!(holder.id, child_lock_id);
    assert!(
        msg.contains("is gone")
            && msg.contains(&format!(
                "kombiform state unlock {child_lock_id} --env {ENV}"
            )),
        "{msg}"
    );
    assert!(
        ok(backend.lock_holder(ENV)).is_some(),
        "broken automatically"
    );
    assert!(backend.unlock(ENV, "0123456789abcdef").is_err());
    assert_eq!(ok(backend.unlock(ENV, &child_lock_id)).pid, holder.pid);

    // Running again resumes from there.
    let guard = match backend.lock(ENV, LockInfo::current("kombiform apply")) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    let mut resumed = ok(backend.load(ENV));
    let mut journal = ok(backend.journal(ENV));
    let next = usize::try_from(resumed.serial).unwrap_or(usize::MAX);
    ok(journal.record(&mut resumed, &create(next)));
    ok(backend.compact(ENV, &resumed));
    assert_eq!(ok(backend.load(ENV)), resumed);
    assert_eq!(resumed.serial, state.serial + 1);
    ok(guard.release());
}

/// 10,000 tenants' worth of state (~50k resources): 2,000 single appends, the rest in
/// batches, a load that replays them all, compaction and a load of the snapshot, all equal.
/// (The times are a benchmark: `cargo bench -p kombiform-engine --bench state_journal`.)
#[test]
fn fifty_thousand_resources_journal_compact_load() {
    const N: usize = 50_000;
    const SINGLE: usize = 2_000;
    const BATCH: usize = 100;
    let dir = ok(tempfile::tempdir().context("tempdir"));
    let backend = LocalBackend::new(dir.path());
    let mut state = ok(backend.load(ENV));
    let mut journal = ok(backend.journal(ENV));
    let changes: Vec<Change> = (0..N).map(create).collect();
    for c in &changes[..SINGLE] {
        ok(journal.record(&mut state, c));
    }
    for chunk in changes[SINGLE..].chunks(BATCH) {
        let refs: Vec<&Change> = chunk.iter().collect();
        ok(journal.record_all(&mut state, &refs));
    }
    assert_eq!(ok(backend.load(ENV)), state);
    ok(backend.compact(ENV, &state));
    let loaded = ok(backend.load(ENV));
    assert_eq!(loaded.serial, N as u64);
    assert_eq!(loaded.resources.len(), N);
    assert_eq!(loaded, state);
}
