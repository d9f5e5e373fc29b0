//! Interrupted applies end to end: the `kombiform` binary against real PostgreSQL and
//! PocketBase, killed (-9) with changes in flight, signalled (SIGINT, SIGTERM, twice), its
//! journal torn at byte offsets, its disk filled (a real tmpfs), PostgreSQL lost while the
//! audit row is written. After each, the next run must end with every live resource
//! recorded in state, and every apply must have left an audit record.
//!
//! Changes are caught in flight without timing: PostgreSQL's unit waits on the apply's
//! advisory lock, which the test holds; PocketBase's answers are held back by a proxy
//! (`kombiform_test_support::proxy`) after the server acted on the request.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::deploy::{addresses, copy_dir, text, Lab};

/// How long a test waits for something the apply must do before it calls it a hang (a
/// deadlock guard, not a timing: the steps take milliseconds).
const HANG: Duration = Duration::from_secs(180);

/// One line the running apply printed.
#[derive(Debug)]
enum Line {
    Out(String),
    Err(String),
}

/// A running `kombiform apply --format json`.
struct Running {
    child: Child,
    lines: Receiver<Line>,
    seen: Vec<Line>,
}

impl Running {
    fn start(lab: &Lab, extra: &[&str]) -> Result<Running> {
        let mut args = vec![
            "apply",
            "--env",
            "local",
            "--auto-approve",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let mut child = lab
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().context("no stdout")?;
        let err = child.stderr.take().context("no stderr")?;
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(Line::Out(l));
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(Line::Err(l));
            }
        });
        Ok(Running {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits for a line matching `pred`; returns it.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Line) -> bool) -> Result<String> {
        loop {
            let line = self.lines.recv_timeout(HANG).map_err(|_| {
                anyhow::anyhow!(
                    "the apply never printed {what}; it printed:\n{:#?}",
                    self.seen
                )
            })?;
            let hit = pred(&line);
            let text = match &line {
                Line::Out(s) | Line::Err(s) => s.clone(),
            };
            self.seen.push(line);
            if hit {
                return Ok(text);
            }
        }
    }

    /// Waits for the JSON event `event` of an address starting with `prefix`.
    fn wait_event(&mut self, event: &str, prefix: &str) -> Result<String> {
        let needle = format!("\"event\":\"{event}\"");
        let addr = format!("\"address\":\"{prefix}");
        self.wait_for(
            &format!("a `{event}` event of {prefix}*"),
            |l| matches!(l, Line::Out(s) if s.contains(&needle) && s.contains(&addr)),
        )
    }

    fn signal(&self, name: &str) -> Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} failed");
        Ok(())
    }

    /// Waits for the process to end (killing it after [`HANG`], which fails the test: a
    /// killed process has no exit code); returns its status and every line it printed.
    fn finish(mut self) -> Result<(ExitStatus, Vec<String>, Vec<String>)> {
        let pid = self.child.id();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if done_rx.recv_timeout(HANG).is_err() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        });
        let status = self.child.wait()?;
        let _ = done_tx.send(());
        // The reader threads end with the pipes.
        while let Ok(l) = self.lines.recv_timeout(HANG) {
            self.seen.push(l);
        }
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for l in self.seen {
            match l {
                Line::Out(s) => out.push(s),
                Line::Err(s) => err.push(s),
            }
        }
        Ok((status, out, err))
    }
}

/// Every desired address: a plan of a lab where nothing was applied creates all of them.
fn desired(lab: &Lab) -> Result<BTreeSet<String>> {
    let (code, plan) = lab.plan_json()?;
    anyhow::ensure!(code == 2, "a fresh lab plans creates: {plan}");
    Ok(addresses(&plan).into_iter().collect())
}

/// What `state list` says: recorded addresses, and how many are in doubt.
pub(crate) fn recorded(lab: &Lab) -> Result<(BTreeSet<String>, usize)> {
    let out = lab.run(&["state", "list", "--env", "local"])?;
    anyhow::ensure!(out.status.success(), "state list: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut recorded = BTreeSet::new();
    let mut doubt = 0;
    for l in stdout.lines() {
        if l.contains("in doubt") {
            doubt += 1;
        }
        if let Some(a) = l.split_whitespace().next() {
            recorded.insert(a.to_string());
        }
    }
    Ok((recorded, doubt))
}

/// Applies again and checks the end state: exit 0, a clean plan, every desired address
/// recorded and nothing in doubt.
fn converges(lab: &Lab, want: &BTreeSet<String>, after: &str) -> Result<()> {
    let out = lab.apply(&[])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "apply after {after}: {}",
        text(&out)
    );
    let (code, plan) = lab.plan_json()?;
    assert_eq!(code, 0, "clean after {after}: {plan}");
    let (got, doubt) = recorded(lab)?;
    let missing: Vec<&String> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "after {after}, live resources are missing from state: {missing:#?}"
    );
    assert_eq!(doubt, 0, "after {after}, nothing stays in doubt");
    Ok(())
}

fn events(lines: &[String], event: &str) -> Vec<String> {
    let needle = format!("\"event\":\"{event}\"");
    lines
        .iter()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["address"].as_str().map(str::to_string))
        .collect()
}

/// Changes started after the last `started` event of an address starting with `prefix`.
fn started_after(lines: &[String], prefix: &str) -> usize {
    let needle = format!("\"address\":\"{prefix}");
    let started = |l: &String| l.contains("\"event\":\"started\"");
    let last = lines
        .iter()
        .rposition(|l| started(l) && l.contains(&needle))
        .unwrap_or(0);
    lines[last..]
        .iter()
        .filter(|l| started(l) && !l.contains(&needle))
        .count()
}

/// The platform database's own connection holding the apply's advisory lock, so that the
/// PostgreSQL unit of an apply waits in flight until [`AdvisoryLock::release`].
struct AdvisoryLock(postgres::Client);

impl AdvisoryLock {
    fn take(lab: &Lab) -> Result<AdvisoryLock> {
        let mut c = lab.pg.connect("kombify_platform")?;
        c.execute(
            "SELECT pg_advisory_lock($1)",
            &[&kombiform_emit::sql::LOCK_KEY],
        )?;
        Ok(AdvisoryLock(c))
    }

    fn release(mut self) -> Result<()> {
        self.0.execute(
            "SELECT pg_advisory_unlock($1)",
            &[&kombiform_emit::sql::LOCK_KEY],
        )?;
        Ok(())
    }
}

fn audit_log(lab: &Lab) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(lab.dir.path().join(".kombiform/audit/local.jsonl"))
        .unwrap_or_default();
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

fn lock_file(lab: &Lab) -> PathBuf {
    lab.dir.path().join(".kombiform/state/local.lock")
}

#[test]
fn changes_in_flight_at_a_kill_are_adopted_by_the_next_run() -> Result<()> {
    let lab = Lab::proxied()?;
    let want = desired(&lab)?;
    let pb = lab.pb_proxy.as_ref().context("proxied")?;
    let mut run = Running::start(&lab, &["--parallelism", "4"])?;
    // Once PocketBase changes run, their answers are held back: the collections are made,
    // the apply never hears so.
    run.wait_event("started", "pocketbase.")?;
    pb.hold();
    // Each answer is one read or more: four reads are at least two answers.
    pb.wait_held(4, HANG)?;
    run.signal("KILL")?;
    let (status, out, _) = run.finish()?;
    assert_eq!(status.code(), None, "killed");
    pb.release();
    let done: BTreeSet<String> = events(&out, "done").into_iter().collect();
    let live: BTreeSet<String> = lab
        .collections()?
        .into_iter()
        .map(|c| format!("pocketbase.collection.{c}"))
        .filter(|a| want.contains(a))
        .collect();
    let in_flight: Vec<&String> = live.difference(&done).collect();
    assert!(
        in_flight.len() >= 2,
        "collections made while their answers were held: {in_flight:?}"
    );
    // The next plan says it adopts them (nothing live changes for them).
    let (_, plan) = lab.plan_json()?;
    let adopt: BTreeSet<String> = plan["adopt"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for a in &in_flight {
        assert!(
            adopt.contains(*a),
            "{a} is not adopted by the plan: {adopt:?}"
        );
    }
    converges(&lab, &want, "a kill with changes in flight")
}

/// Kills an apply (-9) once `n` changes are done, with parallelism 1.
fn kill_after_done(lab: &Lab, n: usize) -> Result<Vec<String>> {
    let mut run = Running::start(lab, &["--parallelism", "1"])?;
    for _ in 0..n {
        run.wait_event("done", "")?;
    }
    run.signal("KILL")?;
    let (_, out, _) = run.finish()?;
    Ok(out)
}

/// The byte ranges of the journal's lines, with their entries.
fn journal_lines(journal: &[u8]) -> Vec<(usize, usize, Value)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in journal.iter().enumerate() {
        if *b == b'\n' {
            let v = serde_json::from_slice(&journal[start..i]).unwrap_or(Value::Null);
            out.push((start, i + 1, v));
            start = i + 1;
        }
    }
    out
}

#[test]
fn torn_journal_records_and_a_torn_batch_are_adopted_by_the_next_run() -> Result<()> {
    let lab = Lab::start()?;
    let want = desired(&lab)?;
    let pg_changes = want.iter().filter(|a| a.starts_with("postgres.")).count();
    // PostgreSQL's batch completes first (the tenants' collections depend on it).
    kill_after_done(&lab, pg_changes + 3)?;
    let state = lab.dir.path().join(".kombiform");
    let saved = lab.dir.path().join("saved-state");
    copy_dir(&state, &saved)?;
    let journal_path = state.join("state/local.journal");
    let journal = std::fs::read(&journal_path)?;
    let lines = journal_lines(&journal);
    let done = |v: &Value| v.get("kind").is_none() && v.get("action").is_some();
    // The last completed change's record, torn at several byte offsets.
    let (start, end, last) = lines
        .iter()
        .rfind(|(_, _, v)| done(v))
        .cloned()
        .context("no completed change in the journal")?;
    assert!(last["address"]
        .as_str()
        .is_some_and(|a| a.starts_with("pocketbase.")));
    // The batched PostgreSQL write: its lines, torn in the middle.
    let batch: Vec<&(usize, usize, Value)> = lines
        .iter()
        .filter(|(_, _, v)| {
            done(v)
                && v["address"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("postgres."))
        })
        .collect();
    assert_eq!(
        batch.len(),
        pg_changes,
        "one batch of every PostgreSQL change"
    );
    let mid = batch[batch.len() / 2];
    let cuts = [
        ("1 byte into the last record", start + 1),
        ("the middle of the last record", (start + end) / 2),
        ("the last record without its newline", end - 1),
        ("the middle of the PostgreSQL batch", (mid.0 + mid.1) / 2),
    ];
    for (what, at) in cuts {
        std::fs::remove_dir_all(&state)?;
        copy_dir(&saved, &state)?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&journal_path)?;
        f.set_len(at as u64)?;
        drop(f);
        let line_start = journal[..at]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        if serde_json::from_slice::<Value>(&journal[line_start..at]).is_err() {
            let check = lab.run(&["state", "check", "--env", "local"])?;
            assert_eq!(check.status.code(), Some(1), "{what}: {}", text(&check));
            assert!(
                String::from_utf8_lossy(&check.stdout).contains("torn"),
                "{what}: {}",
                text(&check)
            );
        }
        converges(&lab, &want, &format!("a journal torn at {what}"))?;
    }
    Ok(())
}

/// A small tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .context("running mount")?;
        if !out.status.success() {
            bail!(
                "`mount -t tmpfs -o size={size} tmpfs {}` failed ({}): this test fills a disk \
                 for real and needs a small tmpfs; run the tests as root, or in a container \
                 with CAP_SYS_ADMIN (`docker run --cap-add SYS_ADMIN ...`)",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    /// Fills it: a file grows until the disk says no space is left.
    fn fill(&self) -> Result<PathBuf> {
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path)?;
        for chunk in [64 * 1024, 4096, 512, 1] {
            let buf = vec![0u8; chunk];
            loop {
                match f.write_all(&buf).and_then(|()| f.sync_all()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                    Err(e) => return Err(e).context("filling the tmpfs"),
                }
            }
        }
        Ok(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_during_the_journal_append_loses_nothing_and_fails_nothing_that_committed(
) -> Result<()> {
    let lab = Lab::start()?;
    let want = desired(&lab)?;
    let tmpfs = Tmpfs::mount(&lab.dir.path().join(".kombiform"), "1m")?;
    // PostgreSQL's unit starts (its start is journaled), then waits for the lock we hold;
    // meanwhile the disk fills; then it commits and its journal write fails.
    let lock = AdvisoryLock::take(&lab)?;
    let mut run = Running::start(&lab, &["--parallelism", "1"])?;
    run.wait_event("started", "postgres.")?;
    let filler = tmpfs.fill()?;
    lock.release()?;
    let (status, out, err) = run.finish()?;
    assert_eq!(status.code(), Some(1), "{out:#?}\n{err:#?}");
    let unrecorded = events(&out, "unrecorded");
    let failed = events(&out, "failed");
    assert!(
        unrecorded.iter().any(|a| a.starts_with("postgres.")),
        "the committed batch is reported applied but not recorded: {out:#?}"
    );
    assert!(
        failed.iter().all(|a| !a.starts_with("postgres.")),
        "a committed change is never FAILED: {failed:?}"
    );
    assert_eq!(
        started_after(&out, "postgres."),
        0,
        "nothing started after it"
    );
    let tenants = lab.sql("SELECT 1 FROM kombify.tenants")?;
    assert!(!tenants.is_empty(), "the batch committed");
    // The audit row reached PostgreSQL although the local disk was full.
    let rows =
        lab.sql("SELECT details->>'result' FROM kombify.audit_log WHERE action = 'apply'")?;
    let results: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(results, vec!["partially failed".to_string()]);
    // Space again: the next run adopts what was committed and finishes.
    std::fs::remove_file(filler)?;
    converges(&lab, &want, "a full disk")?;
    drop(tmpfs);
    Ok(())
}

#[test]
fn sigint_lets_the_change_in_flight_finish_audits_unlocks_and_exits_130() -> Result<()> {
    let lab = Lab::start()?;
    let want = desired(&lab)?;
    let lock = AdvisoryLock::take(&lab)?;
    let mut run = Running::start(&lab, &["--parallelism", "1"])?;
    run.wait_event("started", "postgres.")?;
    run.signal("INT")?;
    run.wait_for(
        "the stopping message",
        |l| matches!(l, Line::Err(s) if s.contains("SIGINT: stopping")),
    )?;
    // The change in flight may finish now.
    lock.release()?;
    let (status, out, err) = run.finish()?;
    assert_eq!(status.code(), Some(130), "{out:#?}\n{err:#?}");
    let done = events(&out, "done");
    assert!(done.iter().any(|a| a.starts_with("postgres.")), "{out:#?}");
    assert_eq!(started_after(&out, "postgres."), 0, "nothing new started");
    assert!(!lock_file(&lab).exists(), "the lock is released");
    let audit = audit_log(&lab)?;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["result"], "interrupted");
    let rows = lab.sql("SELECT details->>'result' FROM kombify.audit_log")?;
    assert_eq!(
        rows.first().map(|r| r.get::<_, String>(0)),
        Some("interrupted".into())
    );
    let (recorded_now, _) = recorded(&lab)?;
    for a in &done {
        assert!(recorded_now.contains(a), "{a} completed and is recorded");
    }
    converges(&lab, &want, "SIGINT")
}

#[test]
fn sigterm_abandons_a_call_stuck_past_the_grace_period_and_exits_143() -> Result<()> {
    let lab = Lab::start()?;
    let want = desired(&lab)?;
    let lock = AdvisoryLock::take(&lab)?;
    let mut run = Running::start(&lab, &["--parallelism", "1", "--interrupt-grace", "1"])?;
    run.wait_event("started", "postgres.")?;
    run.signal("TERM")?;
    let (status, out, err) = run.finish()?;
    assert_eq!(status.code(), Some(143), "{out:#?}\n{err:#?}");
    assert!(!events(&out, "abandoned").is_empty(), "{out:#?}");
    assert!(
        events(&out, "done")
            .iter()
            .all(|a| !a.starts_with("postgres.")),
        "{out:#?}"
    );
    assert!(!lock_file(&lab).exists(), "the lock is released");
    let audit = audit_log(&lab)?;
    assert_eq!(audit.len(), 1, "{err:#?}");
    assert_eq!(audit[0]["result"], "interrupted");
    assert!(audit[0]["changes"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["result"] == "abandoned")));
    // The abandoned transaction died with the process; the audit table did not exist yet,
    // so the record is kept and delivered by the next apply.
    lock.release()?;
    converges(&lab, &want, "SIGTERM")?;
    let id = audit[0]["id"].as_str().context("id")?.to_string();
    let rows = lab.sql(&format!(
        "SELECT details->>'result' FROM kombify.audit_log WHERE details->>'id' = '{id}'"
    ))?;
    assert_eq!(
        rows.len(),
        1,
        "the interrupted apply's record was delivered once"
    );
    Ok(())
}

#[test]
fn a_second_signal_exits_at_once() -> Result<()> {
    let lab = Lab::start()?;
    let want = desired(&lab)?;
    let lock = AdvisoryLock::take(&lab)?;
    let mut run = Running::start(&lab, &["--parallelism", "1", "--interrupt-grace", "3600"])?;
    run.wait_event("started", "postgres.")?;
    run.signal("INT")?;
    run.wait_for(
        "the stopping message",
        |l| matches!(l, Line::Err(s) if s.contains("SIGINT: stopping")),
    )?;
    // The call in flight would be waited for an hour: a second signal must not wait.
    run.signal("INT")?;
    let (status, _, err) = run.finish()?;
    assert_eq!(status.code(), Some(130), "{err:#?}");
    assert!(
        err.iter().any(|l| l.contains("again: exiting at once")),
        "{err:#?}"
    );
    lock.release()?;
    converges(&lab, &want, "two signals")
}

#[test]
fn an_audit_record_postgres_could_not_take_is_kept_and_delivered_by_the_next_run() -> Result<()> {
    let lab = Lab::proxied()?;
    let out = lab.apply(&[])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    lab.edit(
        "flags.yaml",
        "  default: false\n  rolloutPercent: 25",
        "  default: false\n  rolloutPercent: 30",
    )?;
    // The audit insert waits for a table lock we hold (SHARE: reads of the catalog pass,
    // inserts wait); then PostgreSQL goes away.
    let mut holder = lab.pg.connect("kombify_platform")?;
    let mut tx = holder.transaction()?;
    tx.batch_execute("LOCK TABLE kombify.audit_log IN SHARE MODE")?;
    let mut run = Running::start(&lab, &[])?;
    run.wait_event("done", "postgres.")?;
    let mut watcher = lab.pg.connect("postgres")?;
    let waited = std::time::Instant::now();
    let waiting = "FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                   AND query LIKE 'INSERT INTO kombify.audit_log%'";
    loop {
        let n: i64 = watcher
            .query_one(&format!("SELECT count(*) {waiting}"), &[])?
            .get(0);
        if n > 0 {
            break;
        }
        anyhow::ensure!(waited.elapsed() < HANG, "the audit insert never waited");
        std::thread::sleep(Duration::from_millis(20));
    }
    // PostgreSQL is lost: the apply's connections are reset, new ones refused, and the
    // session that waited is gone with its insert.
    let proxy = lab.pg_proxy.as_ref().context("proxied")?;
    proxy.down();
    watcher.execute(&format!("SELECT pg_terminate_backend(pid) {waiting}"), &[])?;
    let (status, out, err) = run.finish()?;
    tx.rollback()?;
    proxy.up();
    assert_eq!(
        status.code(),
        Some(0),
        "the changes were applied: {out:#?}\n{err:#?}"
    );
    assert!(
        err.iter().any(|l| l.contains("marked undelivered")),
        "{err:#?}"
    );
    let audit = audit_log(&lab)?;
    let id = audit
        .last()
        .and_then(|r| r["id"].as_str())
        .context("id")?
        .to_string();
    let count = |lab: &Lab| -> Result<usize> {
        Ok(lab
            .sql(&format!(
                "SELECT 1 FROM kombify.audit_log WHERE details->>'id' = '{id}'"
            ))?
            .len())
    };
    assert_eq!(count(&lab)?, 0, "PostgreSQL did not take it");
    let kept = lab
        .dir
        .path()
        .join(".kombiform/audit/local.undelivered.json");
    assert!(kept.exists());
    // The next run (nothing to apply) delivers it, once.
    let out = lab.apply(&[])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("delivered 1 audit record"));
    assert_eq!(count(&lab)?, 1);
    assert!(!kept.exists());
    Ok(())
}

#[test]
fn damaged_state_is_checked_refused_and_repaired_never_read_as_empty() -> Result<()> {
    let lab = Lab::start()?;
    let want = desired(&lab)?;
    // Never applied: said loudly; an unknown environment is an error.
    let out = lab.run(&["state", "list", "--env", "local"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NO STATE"),
        "{}",
        text(&out)
    );
    let out = lab.run(&["state", "list", "--env", "nope"])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown environment"));
    // Two applies: the second compaction keeps the first snapshot as the previous one.
    let out = lab.apply(&[])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    lab.edit(
        "flags.yaml",
        "  default: false\n  rolloutPercent: 25",
        "  default: false\n  rolloutPercent: 30",
    )?;
    let out = lab.apply(&[])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let check = lab.run(&["state", "check", "--env", "local"])?;
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));

    // A truncated snapshot: refused clearly by every command, checked, repaired.
    let snap = lab.dir.path().join(".kombiform/state/local.json");
    let bytes = std::fs::read(&snap)?;
    std::fs::write(&snap, &bytes[..bytes.len() / 2])?;
    for args in [
        vec!["state", "list", "--env", "local"],
        vec!["plan", "--env", "local"],
    ] {
        let out = lab.run(&args)?;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("state check --env local"),
            "{args:?}: {}",
            text(&out)
        );
    }
    let check = lab.run(&["state", "check", "--env", "local"])?;
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains("cannot be read") && report.contains("previous snapshot"),
        "{report}"
    );
    let out = lab.run(&["state", "repair", "--env", "local"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let aside = std::fs::read_dir(lab.dir.path().join(".kombiform/state"))?
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("local.json.damaged-")
        });
    assert!(aside, "the damaged snapshot is set aside, not deleted");
    let check = lab.run(&["state", "check", "--env", "local"])?;
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    converges(&lab, &want, "a repaired snapshot")?;

    // A lost snapshot (and its previous one): the audit log says applies happened, so it
    // is refused, not read as "nothing is managed".
    std::fs::remove_file(&snap)?;
    std::fs::remove_file(lab.dir.path().join(".kombiform/state/local.json.prev"))?;
    let out = lab.run(&["state", "list", "--env", "local"])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("state was lost"),
        "{}",
        text(&out)
    );
    let out = lab.run(&["plan", "--env", "local"])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = lab.run(&["state", "repair", "--env", "local"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let check = lab.run(&["state", "check", "--env", "local"])?;
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("sound"),
        "{}",
        text(&check)
    );
    converges(&lab, &want, "a lost snapshot")
}

#[test]
fn a_commit_whose_answer_is_lost_is_not_run_twice_nor_reported_failed() -> Result<()> {
    let lab = Lab::proxied()?;
    let want = desired(&lab)?;
    let out = lab.apply(&[])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The next batch holds an ADD CONSTRAINT (not repeatable: a second run fails) and a
    // flag update; a deferred trigger on the flags makes its COMMIT wait for a lock the
    // test holds.
    let mut admin = lab.pg.connect("kombify_platform")?;
    let constraint: String = admin
        .query_one(
            "SELECT conname::text FROM pg_constraint \
             WHERE conrelid = 'kombify.flags'::regclass AND contype = 'c' ORDER BY 1 LIMIT 1",
            &[],
        )?
        .get(0);
    admin.batch_execute(&format!(
        "ALTER TABLE kombify.flags DROP CONSTRAINT {constraint};
         CREATE FUNCTION public.wait_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_advisory_lock(4242); PERFORM pg_advisory_unlock(4242); RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER wait_at_commit AFTER INSERT OR UPDATE ON kombify.flags
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.wait_at_commit();"
    ))?;
    lab.edit(
        "flags.yaml",
        "  default: false\n  rolloutPercent: 25",
        "  default: false\n  rolloutPercent: 30",
    )?;
    let mut holder = lab.pg.connect("kombify_platform")?;
    holder.execute("SELECT pg_advisory_lock(4242)", &[])?;
    let mut run = Running::start(&lab, &[])?;
    run.wait_event("started", "postgres.")?;
    let mut watcher = lab.pg.connect("postgres")?;
    let committing = "FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query = 'COMMIT'";
    let since = std::time::Instant::now();
    loop {
        let n: i64 = watcher
            .query_one(&format!("SELECT count(*) {committing}"), &[])?
            .get(0);
        if n > 0 {
            break;
        }
        anyhow::ensure!(since.elapsed() < HANG, "the COMMIT never waited");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The connection dies while COMMIT is being answered; the commit then completes.
    let proxy = lab.pg_proxy.as_ref().context("proxied")?;
    proxy.down();
    holder.execute("SELECT pg_advisory_unlock(4242)", &[])?;
    while watcher
        .query_one(&format!("SELECT count(*) {committing}"), &[])?
        .get::<_, i64>(0)
        > 0
    {
        anyhow::ensure!(since.elapsed() < HANG, "the COMMIT never finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.up();
    let (status, out, err) = run.finish()?;
    assert_eq!(status.code(), Some(0), "{out:#?}\n{err:#?}");
    assert!(events(&out, "failed").is_empty(), "{out:#?}");
    assert!(events(&out, "retrying")
        .iter()
        .any(|a| a.starts_with("postgres.")));
    let rows = lab.sql(&format!(
        "SELECT 1 FROM pg_constraint WHERE conname = '{constraint}' \
         AND conrelid = 'kombify.flags'::regclass"
    ))?;
    assert_eq!(rows.len(), 1, "the constraint is back, once");
    admin.batch_execute("DROP TRIGGER wait_at_commit ON kombify.flags")?;
    converges(&lab, &want, "a lost COMMIT answer")
}

#[test]
fn a_long_apply_off_a_terminal_prints_heartbeats_and_nothing_of_a_terminal() -> Result<()> {
    let lab = Lab::start()?;
    // PostgreSQL's unit waits for the advisory lock the test holds: the apply runs as long
    // as the test wants, without any timing on its side.
    let lock = AdvisoryLock::take(&lab)?;
    let mut run = Running::start(&lab, &["--parallelism", "1", "--heartbeat", "1"])?;
    run.wait_event("started", "postgres.")?;
    let beat = run.wait_for(
        "a heartbeat",
        |l| matches!(l, Line::Err(s) if s.starts_with("apply still running: ")),
    )?;
    assert!(
        beat.contains(" done, ")
            && beat.contains(" running, ")
            && beat.contains("; slowest: postgres."),
        "{beat}"
    );
    lock.release()?;
    let (status, out, err) = run.finish()?;
    assert_eq!(status.code(), Some(0), "{out:#?}\n{err:#?}");
    for line in out.iter().chain(&err) {
        assert!(
            !line.contains('\r') && !line.contains('\x1b'),
            "no status line or colour on a pipe: {line:?}"
        );
    }
    assert!(
        out.iter().all(|l| l.starts_with('{')),
        "--format json: only JSON on stdout: {out:#?}"
    );
    Ok(())
}
