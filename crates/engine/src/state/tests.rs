//! Unit tests of the state format, recording, journal replay and the local backend.

use serde_json::json;

use super::*;
use kombiform_plan::Resource;

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn change(action: Action, addr: &str, attrs: Value, meta: Value) -> Change {
    let mut r = Resource::new(addr, obj(attrs));
    r.meta = obj(meta);
    let (desired, live) = match action {
        Action::Create => (Some(r), None),
        Action::Update | Action::Replace => (Some(r.clone()), Some(r)),
        Action::Delete => (None, Some(r)),
    };
    Change {
        address: addr.to_string(),
        action,
        attrs: Vec::new(),
        destructive: false,
        drift: false,
        desired,
        live,
    }
}

fn tmp() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("creating a temp dir: {e}"),
    }
}

fn ok<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e:#}"),
    }
}

fn err<T: std::fmt::Debug>(r: Result<T>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => format!("{e:#}"),
    }
}

/// A sequence of changes touching creates, updates, replaces and deletes.
fn script() -> Vec<Change> {
    let mut out = Vec::new();
    for i in 0..20 {
        out.push(change(
            Action::Create,
            &format!("postgres.tenant.t{i:02}"),
            json!({"plan": "free", "slug": format!("t{i:02}")}),
            json!({}),
        ));
    }
    for i in 0..20 {
        if i % 3 == 0 {
            out.push(change(
                Action::Update,
                &format!("postgres.tenant.t{i:02}"),
                json!({"plan": "pro", "slug": format!("t{i:02}")}),
                json!({"id": format!("id{i}")}),
            ));
        }
        if i % 5 == 0 {
            out.push(change(
                Action::Delete,
                &format!("postgres.tenant.t{i:02}"),
                json!({}),
                json!({}),
            ));
        }
    }
    out
}

#[test]
fn snapshot_format_is_stable_pretty_json() {
    let mut s = State::new("dev", "abcd");
    ok(s.record(&change(
        Action::Create,
        "pocketbase.collection.t_a_nodes",
        json!({"type": "base", "name": "t_a_nodes"}),
        json!({"id": "pbc_1"}),
    )));
    let text = String::from_utf8(ok(s.to_json())).unwrap_or_default();
    let expected = r#"{
  "format": 2,
  "env": "dev",
  "serial": 1,
  "lineage": "abcd",
  "resources": {
    "pocketbase.collection.t_a_nodes": {
      "attrs": {
        "name": "t_a_nodes",
        "type": "base"
      },
      "meta": {
        "id": "pbc_1"
      }
    }
  }
}
"#;
    assert_eq!(text, expected);
    assert_eq!(ok(State::from_json(text.as_bytes(), "dev")), s);
}

#[test]
fn newer_older_and_foreign_state_files_are_refused() {
    let newer =
        br#"{"format": 3, "env": "dev", "serial": 1, "lineage": "x", "resources": {}, "new": 1}"#;
    let e = err(State::from_json(newer, "dev"));
    assert!(
        e.contains("format 3") && e.contains("upgrade kombiform"),
        "{e}"
    );
    // Format 1 (no changes in doubt) is still read.
    let older = br#"{"format": 1, "env": "dev", "serial": 1, "lineage": "x", "resources": {}}"#;
    assert_eq!(ok(State::from_json(older, "dev")).serial, 1);
    let older = br#"{"format": 0, "env": "dev"}"#;
    let e = err(State::from_json(older, "dev"));
    assert!(e.contains("format 0") && e.contains("no migration"), "{e}");
    let e = err(State::from_json(br#"{"env": "dev"}"#, "dev"));
    assert!(e.contains("no `format`"), "{e}");
    let other_env =
        br#"{"format": 1, "env": "prod", "serial": 0, "lineage": "x", "resources": {}}"#;
    let e = err(State::from_json(other_env, "dev"));
    assert!(e.contains("`prod`"), "{e}");
    let unknown =
        br#"{"format": 1, "env": "dev", "serial": 0, "lineage": "x", "resources": {}, "extra": 1}"#;
    assert!(err(State::from_json(unknown, "dev")).contains("extra"));
}

#[test]
fn newer_journal_entries_are_refused() {
    let mut s = State::new("dev", "L");
    let line = br#"{"format":3,"lineage":"L","serial":1,"address":"a.b.c","action":"delete"}
"#;
    let e = err(replay(&mut s, line));
    assert!(e.contains("format 3"), "{e}");
    assert_eq!(s.serial, 0);
}

#[test]
fn record_managed_applied_and_serials() {
    let mut s = State::new("dev", "L");
    ok(s.record(&change(
        Action::Create,
        "postgres.tenant.a",
        json!({"plan": "free"}),
        json!({"row": 7}),
    )));
    ok(s.record(&change(
        Action::Create,
        "postgres.tenant.b",
        json!({"plan": "free"}),
        json!({}),
    )));
    assert_eq!(s.serial, 2);
    // An update keeps remote ids it does not replace.
    let mut up = change(
        Action::Update,
        "postgres.tenant.a",
        json!({"plan": "pro"}),
        json!({}),
    );
    if let Some(live) = up.live.as_mut() {
        live.meta = obj(json!({"etag": "e1"}));
    }
    let entry = ok(s.record(&up));
    assert_eq!(entry.serial, 3);
    assert_eq!(
        show(&s, "postgres.tenant.a").map(|r| r.meta.clone()),
        Some(obj(json!({"etag": "e1", "row": 7})))
    );
    ok(s.record(&change(
        Action::Delete,
        "postgres.tenant.b",
        json!({}),
        json!({}),
    )));
    assert_eq!(s.serial, 4);
    assert_eq!(
        s.managed().into_iter().collect::<Vec<_>>(),
        vec!["postgres.tenant.a".to_string()]
    );
    assert_eq!(
        s.applied().get("postgres.tenant.a"),
        Some(&obj(json!({"plan": "pro"})))
    );
    assert_eq!(
        list(&s),
        vec![("postgres.tenant.a".to_string(), "1 attribute".to_string())]
    );
    // A create without a desired resource cannot be recorded.
    let mut broken = change(Action::Create, "x.y.z", json!({}), json!({}));
    broken.desired = None;
    assert!(err(s.record(&broken)).contains("no desired resource"));
    assert_eq!(s.serial, 4);
}

#[test]
fn replay_skips_what_the_snapshot_holds_and_refuses_gaps_and_other_lineages() {
    let mut s = State::new("dev", "L");
    let entries: Vec<Entry> = script().iter().map(|c| ok(s.record(c))).collect();
    let text: Vec<u8> = entries.iter().flat_map(|e| ok(entry_line(e))).collect();

    let mut fresh = State::new("dev", "L");
    let r = ok(replay(&mut fresh, &text));
    assert_eq!(r.applied, entries.len());
    assert_eq!(fresh, s);

    // Replaying again applies nothing twice.
    let r = ok(replay(&mut fresh, &text));
    assert_eq!((r.applied, r.skipped), (0, entries.len()));
    assert_eq!(fresh, s);

    let mut gap = State::new("dev", "L");
    let later: Vec<u8> = entries[3..]
        .iter()
        .flat_map(|e| ok(entry_line(e)))
        .collect();
    assert!(err(replay(&mut gap, &later)).contains("entries are missing"));

    let mut other = State::new("dev", "M");
    assert!(err(replay(&mut other, &text)).contains("lineage"));

    // A damaged line in the middle is an error, not silently skipped.
    let mut damaged = text.clone();
    damaged.splice(0..0, b"{not json\n".iter().copied());
    assert!(err(replay(&mut State::new("dev", "L"), &damaged)).contains("line 1"));
}

#[test]
fn torn_last_line_is_ignored_and_repaired_on_open() {
    let dir = tmp();
    let b = LocalBackend::new(dir.path());
    let mut state = ok(b.load("dev"));
    let mut j = ok(LocalJournal::open(&b, "dev"));
    for c in &script()[..5] {
        ok(j.record(&mut state, c));
    }
    drop(j);
    let path = b.journal_path("dev");
    let mut bytes = ok(fs::read(&path).context("read"));
    let next = ok(state.clone().record(&script()[5]));
    let line = ok(entry_line(&next));
    bytes.extend_from_slice(&line[..line.len() / 2]);
    ok(fs::write(&path, &bytes).context("write"));

    let loaded = ok(b.load("dev"));
    assert_eq!(loaded, state);

    // Opening the journal cuts the torn tail; later appends land on a clean line.
    let mut j = ok(LocalJournal::open(&b, "dev"));
    let mut s2 = loaded;
    ok(j.record(&mut s2, &script()[5]));
    assert_eq!(ok(b.load("dev")), s2);
    assert_eq!(s2.serial, 6);

    // A whole last entry without its newline (cut before the newline) is kept.
    let mut bytes = ok(fs::read(&path).context("read"));
    assert_eq!(bytes.pop(), Some(b'\n'));
    ok(fs::write(&path, &bytes).context("write"));
    assert_eq!(ok(b.load("dev")), s2);
    let mut j = ok(LocalJournal::open(&b, "dev"));
    ok(j.record(&mut s2, &script()[6]));
    assert_eq!(ok(b.load("dev")), s2);
}

use std::fs;

#[test]
fn crash_between_journal_and_compaction_reloads_the_same_state() {
    // Uninterrupted: every change journaled, then compacted.
    let d1 = tmp();
    let b1 = LocalBackend::new(d1.path());
    let mut s1 = ok(b1.load("dev"));
    let mut j1 = ok(b1.journal("dev"));
    for c in &script() {
        ok(j1.record(&mut s1, c));
    }
    ok(b1.compact("dev", &s1));
    assert_eq!(
        ok(fs::read(b1.journal_path("dev")).context("read")).len(),
        0
    );
    let uninterrupted = ok(b1.load("dev"));
    assert_eq!(uninterrupted, s1);

    // Crashed before compaction: a first apply compacted half, the second died mid-way.
    let d2 = tmp();
    let b2 = LocalBackend::new(d2.path());
    let all = script();
    let (first, second) = all.split_at(all.len() / 2);
    let mut s2 = ok(b2.load("dev"));
    let mut j2 = ok(b2.journal("dev"));
    for c in first {
        ok(j2.record(&mut s2, c));
    }
    ok(b2.compact("dev", &s2));
    for c in second {
        ok(j2.record(&mut s2, c));
    }
    drop(j2); // the crash: no compaction
    let mut reloaded = ok(b2.load("dev"));
    reloaded.lineage.clone_from(&uninterrupted.lineage);
    assert_eq!(reloaded, uninterrupted);

    // Crashed after the snapshot was renamed but before the journal was emptied: the
    // entries are in both, and none is applied twice.
    let journal = ok(fs::read(b2.journal_path("dev")).context("read"));
    let s2 = ok(b2.load("dev"));
    ok(b2.compact("dev", &s2));
    ok(fs::write(b2.journal_path("dev"), &journal).context("write"));
    assert_eq!(ok(b2.load("dev")), s2);

    // A state behind its journal is never compacted over it.
    let stale = State::new("dev", s2.lineage.clone());
    let e = err(b2.compact("dev", &stale));
    assert!(e.contains("refusing to compact"), "{e}");
}

#[test]
fn journal_without_snapshot_keeps_its_lineage() {
    let dir = tmp();
    let b = LocalBackend::new(dir.path());
    let mut s = ok(b.load("dev"));
    let mut j = ok(b.journal("dev"));
    ok(j.record(&mut s, &script()[0]));
    let again = ok(b.load("dev"));
    assert_eq!(again.lineage, s.lineage);
    assert_eq!(again, s);
}

#[test]
fn bad_env_names_are_refused() {
    let dir = tmp();
    let b = LocalBackend::new(dir.path());
    for bad in ["", "../x", "a/b", ".hidden"] {
        assert!(b.load(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn lock_is_exclusive_released_on_drop_and_broken_only_by_id() {
    let dir = tmp();
    let b = LocalBackend::new(dir.path());
    let guard = match b.lock("dev", LockInfo::current("kombiform apply --env dev")) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    let id = guard.info().id.clone();
    match b.lock("dev", LockInfo::current("kombiform plan --env dev")) {
        Err(LockError::Held {
            holder,
            process_gone,
            ..
        }) => {
            assert_eq!(holder.id, id);
            assert_eq!(holder.command, "kombiform apply --env dev");
            assert!(!process_gone);
        }
        other => panic!("expected Held, got {other:?}"),
    }
    // Another environment has its own lock.
    assert!(b.lock("prod", LockInfo::current("x")).is_ok());
    drop(guard);
    assert_eq!(ok(b.lock_holder("dev")), None);

    let g = match b.lock("dev", LockInfo::current("again")) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    let e = err(b.unlock("dev", "0000000000000000"));
    assert!(
        e.contains("does not match") && e.contains(&g.info().id),
        "{e}"
    );
    let holder = ok(b.unlock("dev", &g.info().id.clone()));
    assert_eq!(holder.command, "again");
    // Someone else took it after the break: the old guard must not remove theirs.
    let theirs = match b.lock("dev", LockInfo::current("theirs")) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    ok(g.release());
    assert_eq!(
        ok(b.lock_holder("dev")).map(|h| h.id),
        Some(theirs.info().id.clone())
    );
    assert!(err(b.unlock("nolock", "x")).contains("not locked"));
}

#[test]
fn a_damaged_lock_is_reported_not_broken() {
    let dir = tmp();
    let b = LocalBackend::new(dir.path());
    ok(fs::create_dir_all(dir.path().join("state")).context("mkdir"));
    ok(fs::write(b.lock_path("dev"), b"{\"id\": ").context("write"));
    match b.lock("dev", LockInfo::current("x")) {
        Err(e @ LockError::Unreadable { .. }) => {
            assert!(e.to_string().contains("remove it by hand"));
        }
        other => panic!("expected Unreadable, got {other:?}"),
    }
}

#[test]
fn audit_records_append_and_read_back() {
    let dir = tmp();
    let b = LocalBackend::new(dir.path());
    let rec = |n: usize| AuditRecord {
        id: format!("id{n}"),
        adopted: Vec::new(),
        forgotten: Vec::new(),
        actor: "alice@box".into(),
        started_at: "2025-01-01T00:00:00Z".into(),
        finished_at: "2025-01-01T00:00:01Z".into(),
        env: "dev".into(),
        command: "kombiform apply".into(),
        plan_hash: format!("h{n}"),
        changes: Vec::new(),
        result: "succeeded".into(),
        error: None,
    };
    assert!(ok(b.read_audit("dev")).is_empty());
    ok(b.append_audit("dev", &rec(1)));
    ok(b.append_audit("dev", &rec(2)));
    // A torn last record is ignored.
    let path = b.audit_path("dev");
    let mut bytes = ok(fs::read(&path).context("read"));
    bytes.extend_from_slice(b"{\"actor\":");
    ok(fs::write(&path, &bytes).context("write"));
    assert_eq!(ok(b.read_audit("dev")), vec![rec(1), rec(2)]);
    ok(b.append_audit("dev", &rec(3)));
    assert_eq!(ok(b.read_audit("dev")), vec![rec(1), rec(2), rec(3)]);
    // Undelivered records are kept, read back and cleared.
    assert!(ok(b.undelivered("dev")).is_empty());
    let kept = vec![crate::state::Undelivered {
        to: vec!["postgres".into()],
        record: rec(4),
    }];
    ok(b.keep_undelivered("dev", &kept));
    assert_eq!(ok(b.undelivered("dev")), kept);
    ok(b.keep_undelivered("dev", &[]));
    assert!(ok(b.undelivered("dev")).is_empty());
}

#[test]
fn batches_are_recorded_with_consecutive_serials_and_one_append() {
    let dir = tmp();
    let b = LocalBackend::new(dir.path());
    let mut s = ok(b.load("dev"));
    let mut j = ok(b.journal("dev"));
    ok(j.record(&mut s, &script()[0]));
    let batch: Vec<Change> = script()[1..10].to_vec();
    let refs: Vec<&Change> = batch.iter().collect();
    let entries = ok(j.record_all(&mut s, &refs));
    assert_eq!(
        entries.iter().map(|e| e.serial).collect::<Vec<_>>(),
        (2..=10).collect::<Vec<_>>()
    );
    assert_eq!(s.serial, 10);
    assert_eq!(ok(b.load("dev")), s);
    let twice = [&batch[0], &batch[0]];
    assert!(err(j.record_all(&mut s, &twice)).contains("appears twice"));
    assert_eq!(s.serial, 10);
    assert_eq!(ok(b.load("dev")), s);
}
