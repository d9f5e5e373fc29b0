//! Checking and repairing a damaged state: what is wrong with a snapshot and its journal,
//! and the state a repair writes instead.
//!
//! Pure: it works on the bytes a backend read (the snapshot, the previous snapshot kept at
//! the last compaction, the journal) and returns words and a [`State`]; the backend sets
//! damaged files aside and writes the result. The rule it follows: never guess a resource
//! away. What cannot be read any more is marked in doubt ([`State::pending`]) where its
//! address is known, so the next plan reconciles it with what is live; a state rebuilt
//! without its history says so, loudly, in what it reports.

use anyhow::Result;

use super::{split_tail, Entry, State};
use kombiform_sys as sys;

/// What `kombiform state check` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Check {
    /// What is damaged, one line each; empty when the state is sound.
    pub problems: Vec<String>,
    /// What a repair would do, one line each.
    pub repairs: Vec<String>,
    /// What is worth knowing but not damage (changes in doubt the next plan reconciles).
    pub notes: Vec<String>,
    /// Resources recorded (after a repair, when damaged).
    pub resources: usize,
    /// The serial (after a repair, when damaged).
    pub serial: u64,
}

impl Check {
    /// Whether nothing is damaged.
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What a backend read of one environment's state.
pub(crate) struct Files<'a> {
    pub(crate) env: &'a str,
    /// The snapshot, if it exists.
    pub(crate) snapshot: Option<&'a [u8]>,
    /// The previous snapshot, kept by the last compaction, if it exists.
    pub(crate) previous: Option<&'a [u8]>,
    /// The journal (empty if it does not exist).
    pub(crate) journal: &'a [u8],
    /// Whether the audit log records an apply that completed changes: a state existed.
    pub(crate) applied_before: bool,
}

/// The verdict on one environment's state, and the state a repair would write.
pub(crate) struct Analysis {
    pub(crate) check: Check,
    /// The repaired state (the state as loaded, when clean).
    pub(crate) state: State,
    /// The snapshot is damaged or lost: set it aside and write `state`.
    pub(crate) snapshot_damaged: bool,
    /// The journal must be rewritten (damaged lines or a torn tail).
    pub(crate) journal_damaged: bool,
}

/// Analyses the files of a state.
pub(crate) fn analyse(files: &Files<'_>) -> Analysis {
    let mut check = Check::default();
    let (base, snapshot_damaged) = base_state(files, &mut check);
    let (state, journal_damaged) = replay_leniently(base, files.journal, &mut check);
    if files.snapshot.is_none() && files.journal.is_empty() && check.problems.is_empty() {
        check.notes.push(format!(
            "no state is recorded for `{}` here: nothing was applied from this state directory",
            files.env
        ));
    }
    check.notes.extend(state.pending.iter().map(|(a, action)| {
        format!(
            "{a}: a {} was started and never recorded (in doubt): the next plan compares it \
             with what is live and adopts, changes or forgets it",
            action.as_str()
        )
    }));
    if !check.problems.is_empty() {
        check.repairs.push(format!(
            "write the repaired state: {} resources, {} in doubt, serial {}; then run \
             `kombiform plan --env {}`: the next apply adopts every live resource that matches \
             the specs and is not recorded",
            state.resources.len(),
            state.pending.len(),
            state.serial,
            files.env
        ));
    }
    check.resources = state.resources.len();
    check.serial = state.serial;
    Analysis {
        check,
        state,
        snapshot_damaged,
        journal_damaged,
    }
}

/// The state the journal applies to: the snapshot; else the previous snapshot, when the
/// snapshot is damaged or lost; else an empty state.
fn base_state(files: &Files<'_>, check: &mut Check) -> (State, bool) {
    let journal_lineage = super::journal_lineage(files.journal);
    let fresh = || {
        State::new(
            files.env,
            journal_lineage.clone().unwrap_or_else(sys::random_id),
        )
    };
    let why = match files.snapshot {
        Some(bytes) => match State::from_json(bytes, files.env) {
            Ok(s) => return (s, false),
            Err(e) => format!("the snapshot cannot be read: {e:#}"),
        },
        None if files.applied_before || files.previous.is_some() => {
            "the snapshot is missing, but applies were recorded before: the state was lost"
                .to_string()
        }
        None => return (fresh(), false),
    };
    check.problems.push(why);
    check
        .repairs
        .push("set the damaged snapshot aside (renamed, never deleted)".to_string());
    match files.previous.map(|b| State::from_json(b, files.env)) {
        Some(Ok(prev)) => {
            check.repairs.push(format!(
                "start from the previous snapshot (serial {}, {} resources), kept by the last \
                 compaction: it is one apply older, so mark what it records in doubt",
                prev.serial,
                prev.resources.len()
            ));
            (in_doubt_all(prev), true)
        }
        _ => {
            check.repairs.push(
                "start from an EMPTY state: no earlier snapshot is readable. The next apply \
                 adopts every live resource the specs name; a live resource that the specs no \
                 longer name and that kombiform created is no longer tracked (check by hand)"
                    .to_string(),
            );
            (fresh(), true)
        }
    }
}

/// A state whose every resource is in doubt (its history is incomplete): the next plan
/// reconciles each of them.
fn in_doubt_all(mut s: State) -> State {
    for a in s.resources.keys() {
        s.pending
            .entry(a.clone())
            .or_insert(kombiform_plan::Action::Update);
    }
    s
}

/// Applies what can be applied of a journal, in order; from the first line that cannot be
/// applied on, what the lines name is marked in doubt instead (their serials no longer
/// follow), and a torn last line is cut.
fn replay_leniently(mut state: State, journal: &[u8], check: &mut Check) -> (State, bool) {
    let (complete, tail) = split_tail(journal);
    let mut broken_at: Option<usize> = None;
    for (n, line) in complete.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry = serde_json::from_slice::<Entry>(line).map_err(anyhow::Error::from);
        let applied = match (&entry, broken_at) {
            (Ok(e), None) => state.apply(e).map(|_| ()),
            (Ok(e), Some(_)) => doubt(&mut state, e),
            (Err(e), _) => Err(anyhow::anyhow!("{e}")),
        };
        if let Err(e) = applied {
            check
                .problems
                .push(format!("journal line {} cannot be applied: {e:#}", n + 1));
            broken_at.get_or_insert(n + 1);
            match &entry {
                Ok(e) if e.lineage == state.lineage => {
                    let _ = doubt(&mut state, e);
                }
                Ok(_) => {}
                Err(_) => mark(&mut state, address_of(line)),
            }
        }
    }
    if let Some(n) = broken_at {
        check.repairs.push(format!(
            "keep the journal entries before line {n}; mark what the lines from {n} on name \
             in doubt; set the damaged journal aside (copied, never deleted)"
        ));
    }
    let mut torn = false;
    if !tail.is_empty() {
        let entry = serde_json::from_slice::<Entry>(tail).ok();
        match entry {
            Some(e) if broken_at.is_none() && state.apply(&e).is_ok() => {}
            Some(e) => {
                let _ = doubt(&mut state, &e);
            }
            None => {
                torn = true;
                check.problems.push(format!(
                    "the last journal record is torn ({} bytes without an end: a write cut \
                     short)",
                    tail.len()
                ));
                check.repairs.push(
                    "cut the torn last record (an apply does this too; what it recorded is \
                     reconciled with what is live by the next plan)"
                        .to_string(),
                );
                mark(&mut state, address_of(tail));
            }
        }
    }
    (state, broken_at.is_some() || torn)
}

/// Marks the address of an entry that cannot be applied in doubt, keeping the serial moving.
fn doubt(state: &mut State, e: &Entry) -> Result<()> {
    if e.lineage != state.lineage {
        anyhow::bail!(
            "entry {} belongs to state lineage {}, not {}",
            e.serial,
            e.lineage,
            state.lineage
        );
    }
    state
        .pending
        .entry(e.address.clone())
        .or_insert(e.action.unwrap_or(kombiform_plan::Action::Update));
    state.serial = state.serial.max(e.serial);
    Ok(())
}

/// Marks an address read from a damaged line in doubt.
fn mark(state: &mut State, address: Option<String>) {
    if let Some(a) = address {
        state
            .pending
            .entry(a)
            .or_insert(kombiform_plan::Action::Update);
    }
}

/// The `address` of a damaged line, if it can still be found.
fn address_of(line: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(line);
    let start = text.find("\"address\":\"")? + "\"address\":\"".len();
    let rest = &text[start..];
    let end = rest.find('"')?;
    let addr = &rest[..end];
    (!addr.is_empty() && addr.split('.').count() >= 3).then(|| addr.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::entry_line;
    use kombiform_plan::{Action, Change, Resource};
    use serde_json::json;

    fn create(addr: &str) -> Change {
        let r = Resource::new(
            addr,
            json!({"a": 1}).as_object().cloned().unwrap_or_default(),
        );
        Change {
            address: addr.into(),
            action: Action::Create,
            attrs: vec![],
            destructive: false,
            drift: false,
            desired: Some(r),
            live: None,
        }
    }

    fn files<'a>(snapshot: Option<&'a [u8]>, journal: &'a [u8]) -> Files<'a> {
        Files {
            env: "dev",
            snapshot,
            previous: None,
            journal,
            applied_before: false,
        }
    }

    #[test]
    fn a_sound_state_is_clean_and_in_doubt_changes_are_notes() {
        let mut s = State::new("dev", "L");
        let mut journal = Vec::new();
        for e in s.started_entries(&[&create("p.c.a"), &create("p.c.b")]) {
            journal.extend(entry_line(&e).unwrap_or_default());
            s.apply(&e).unwrap_or_default();
        }
        let e = s.entry_for(&create("p.c.a")).unwrap();
        journal.extend(entry_line(&e).unwrap_or_default());
        let a = analyse(&files(None, &journal));
        assert!(a.check.clean(), "{:?}", a.check);
        assert_eq!(a.check.notes.len(), 1, "{:?}", a.check.notes);
        assert!(a.check.notes[0].starts_with("p.c.b"));
        assert_eq!(a.state.resources.len(), 1);
    }

    #[test]
    fn a_broken_middle_line_keeps_the_prefix_and_doubts_the_rest() {
        let mut s = State::new("dev", "L");
        let mut lines = Vec::new();
        for a in ["p.c.a", "p.c.b", "p.c.c"] {
            let e = s.record(&create(a)).unwrap();
            lines.push(entry_line(&e).unwrap());
        }
        let mut journal = lines[0].clone();
        journal.extend(b"{\"format\":2,\"lineage\":\"L\",\"serial\":2,\"address\":\"p.c.b\",\"kind\":garbage}\n");
        journal.extend(&lines[2]);
        let a = analyse(&files(None, &journal));
        assert!(!a.check.clean());
        assert!(
            a.check.problems[0].contains("journal line 2"),
            "{:?}",
            a.check
        );
        assert!(a.state.resources.contains_key("p.c.a"));
        assert!(
            a.state.pending.contains_key("p.c.b"),
            "{:?}",
            a.state.pending
        );
        assert!(a.state.pending.contains_key("p.c.c"));
        assert_eq!(a.state.serial, 3);
        assert!(a.journal_damaged && !a.snapshot_damaged);
        assert_eq!(a.state.pending.len() + a.state.resources.len(), 3);
    }

    #[test]
    fn a_lost_snapshot_falls_back_to_the_previous_one_or_says_empty_loudly() {
        let mut prev = State::new("dev", "L");
        prev.record(&create("p.c.a")).unwrap();
        let prev_bytes = prev.to_json().unwrap();
        let truncated = &prev_bytes[..prev_bytes.len() / 2];
        let mut f = files(Some(truncated), b"");
        let a = analyse(&f);
        assert!(
            a.check.problems[0].contains("cannot be read"),
            "{:?}",
            a.check
        );
        assert!(
            a.check.repairs.iter().any(|r| r.contains("EMPTY")),
            "{:?}",
            a.check
        );
        f.previous = Some(&prev_bytes);
        let a = analyse(&f);
        assert!(a.snapshot_damaged);
        assert!(a.state.pending.contains_key("p.c.a"));
        assert!(a.state.resources.contains_key("p.c.a"));
        let missing = Files {
            applied_before: true,
            ..files(None, b"")
        };
        assert!(analyse(&missing).check.problems[0].contains("state was lost"));
    }
}
