//! Executes a [`Plan`] along its dependencies, in parallel with a bound.
//!
//! `apply` takes a plan, never a model: what was reviewed is what runs. Changes become
//! units of work (one change, or all of a batched provider's creates/updates — and
//! separately its deletes — in one transaction). A unit starts when every unit it depends
//! on is done. Before a unit is sent, its start is recorded (the [`Recorder`] journals it:
//! until its end is recorded, it is in doubt); when it completes, its end is. Transient
//! failures are retried with exponential backoff, waiting at least what the remote asked
//! (`Retry-After`). On a failure, units in flight finish, nothing new starts, and the report
//! says what was done and what was not. A change that was applied but could not be recorded
//! is reported as such ([`Report::unrecorded`]), never as failed.
//!
//! An [`Interrupt`] (the CLI triggers it on a signal; this module knows nothing of signals)
//! stops the apply gracefully: nothing new starts, calls in flight may finish for
//! [`Options::grace`], and those still running then are abandoned ([`Report::abandoned`]:
//! in doubt, reconciled by the next plan). Each call runs on a thread of its own so that it
//! can be abandoned. This module does not print: it reports [`Event`]s to an observer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::providers::{transient, Client};
use kombiform_plan::{Action, Change, Plan};

/// How to apply.
#[derive(Clone, Debug)]
pub struct Options {
    /// Units running at the same time (at least 1).
    pub parallelism: usize,
    /// Retries of a transient failure before giving up.
    pub max_retries: u32,
    /// First backoff; doubled per retry, capped at `max_backoff`.
    pub base_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// After an interrupt, how long calls in flight may take to finish before they are
    /// abandoned.
    pub grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            parallelism: 4,
            max_retries: 5,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            grace: Duration::from_secs(30),
        }
    }
}

/// A request to stop, shared by whoever asks (the CLI, on a signal) and the engine: once
/// triggered, nothing new starts, waits for a retry end, and calls still in flight after
/// [`Options::grace`] are abandoned.
#[derive(Debug, Default)]
pub struct Interrupt {
    since: Mutex<Option<Instant>>,
    wake: Condvar,
}

impl Interrupt {
    /// A shared interrupt, not triggered.
    pub fn new() -> Arc<Interrupt> {
        Arc::new(Interrupt::default())
    }

    /// Asks the apply to stop (the first call's time counts).
    pub fn trigger(&self) {
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        since.get_or_insert_with(Instant::now);
        self.wake.notify_all();
    }

    /// Whether a stop was asked for.
    pub fn is_set(&self) -> bool {
        self.since().is_some()
    }

    /// When the stop was asked for.
    pub fn since(&self) -> Option<Instant> {
        *self.since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for `d`, or less if a stop is asked for; returns whether one was.
    pub fn wait(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        while since.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            since = match self.wake.wait_timeout(since, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

/// Something that happened during apply, for progress displays and JSON event streams.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A change started.
    Started {
        /// Address.
        address: String,
        /// Action.
        action: Action,
    },
    /// A transient failure; the change will be tried again.
    Retrying {
        /// Address (the first of the unit).
        address: String,
        /// Attempt that failed (1-based).
        attempt: u32,
        /// Wait before the next attempt.
        wait_ms: u64,
        /// What failed.
        error: String,
    },
    /// A change completed.
    Done {
        /// Address.
        address: String,
        /// Action.
        action: Action,
        /// Time the unit took.
        elapsed_ms: u64,
    },
    /// A change was applied, but the state could not record it (the next plan adopts it).
    Unrecorded {
        /// Address.
        address: String,
        /// Action.
        action: Action,
        /// Why it could not be recorded.
        error: String,
    },
    /// A change failed for good.
    Failed {
        /// Address.
        address: String,
        /// Action.
        action: Action,
        /// What failed.
        error: String,
    },
    /// A change was still in flight when the grace period after an interrupt ended: its
    /// outcome is unknown (in doubt in the state).
    Abandoned {
        /// Address.
        address: String,
        /// Action.
        action: Action,
    },
}

/// What happened.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Addresses completed and recorded, in completion order.
    pub done: Vec<String>,
    /// Addresses applied but not recorded in state, with why: the next plan adopts them.
    pub unrecorded: Vec<(String, String)>,
    /// Addresses that failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Addresses in flight when the grace period after an interrupt ended (in doubt).
    pub abandoned: Vec<String>,
    /// Addresses never started because something failed first or the apply was interrupted.
    pub not_started: Vec<String>,
    /// An interrupt stopped the apply.
    pub interrupted: bool,
    /// Wall time.
    pub elapsed_ms: u64,
}

impl Report {
    /// Whether everything was applied and recorded.
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty()
            && self.unrecorded.is_empty()
            && self.abandoned.is_empty()
            && self.not_started.is_empty()
            && !self.interrupted
    }

    /// Whether some change was applied (recorded or not).
    pub fn applied_any(&self) -> bool {
        !self.done.is_empty() || !self.unrecorded.is_empty()
    }
}

/// Records, in state, that a unit's changes are about to be sent and that they completed:
/// one write per unit, so a batched provider's transaction is journaled with one write.
pub trait Recorder: Send {
    /// The changes are about to be sent. If this fails they are not sent.
    fn started(&mut self, changes: &[&Change]) -> anyhow::Result<()>;
    /// The changes completed.
    fn done(&mut self, changes: &[&Change]) -> anyhow::Result<()>;
}

/// A unit of work: indexes into `plan.changes`.
struct Unit {
    changes: Vec<usize>,
    provider: String,
    needs: BTreeSet<usize>,
}

/// Groups changes into units and finds which unit needs which.
fn units(plan: &Plan, batched: &BTreeSet<String>) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::new();
    let mut batch_unit: HashMap<(String, bool), usize> = HashMap::new();
    let mut unit_of: Vec<usize> = Vec::with_capacity(plan.changes.len());
    for (i, c) in plan.changes.iter().enumerate() {
        let p = c.provider().to_string();
        let delete = c.action == Action::Delete;
        let u = if batched.contains(&p) {
            *batch_unit.entry((p.clone(), delete)).or_insert_with(|| {
                units.push(Unit {
                    changes: Vec::new(),
                    provider: p.clone(),
                    needs: BTreeSet::new(),
                });
                units.len() - 1
            })
        } else {
            units.push(Unit {
                changes: Vec::new(),
                provider: p,
                needs: BTreeSet::new(),
            });
            units.len() - 1
        };
        units[u].changes.push(i);
        unit_of.push(u);
    }
    let index: HashMap<&str, usize> = plan
        .changes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.address.as_str(), i))
        .collect();
    for (i, c) in plan.changes.iter().enumerate() {
        let me = unit_of[i];
        let deps: &[String] = c
            .desired
            .as_ref()
            .or(c.live.as_ref())
            .map_or(&[], |r| r.depends_on.as_slice());
        for d in deps {
            let Some(&j) = index.get(d.as_str()) else {
                continue;
            };
            let other = unit_of[j];
            if other == me {
                continue;
            }
            if c.action == Action::Delete && plan.changes[j].action == Action::Delete {
                // Dependents are deleted before what they depend on.
                units[other].needs.insert(me);
            } else if c.action != Action::Delete && plan.changes[j].action != Action::Delete {
                units[me].needs.insert(other);
            }
        }
    }
    // Deletes run after every create/update of other units (a replacement elsewhere may
    // still need what is deleted); creates never wait for deletes.
    let upserts: Vec<usize> = (0..units.len())
        .filter(|u| {
            units[*u]
                .changes
                .iter()
                .all(|i| plan.changes[*i].action != Action::Delete)
        })
        .collect();
    for (u, unit) in units.iter_mut().enumerate() {
        let is_delete = unit
            .changes
            .iter()
            .all(|i| plan.changes[*i].action == Action::Delete);
        if is_delete {
            unit.needs.extend(upserts.iter().filter(|o| **o != u));
        }
    }
    units
}

struct Shared {
    ready: Vec<usize>,
    remaining_needs: Vec<usize>,
    dependents: Vec<Vec<usize>>,
    running: usize,
    stop: bool,
    report: Report,
    started: BTreeSet<usize>,
}

/// Applies `plan` with `providers` (by name). Each unit's start is handed to `recorder`
/// before it is sent and its end after it completed, under a lock, before anything that
/// depends on it starts; if recording fails, apply stops as on any failure (a change applied
/// but not recorded is reported as [`Report::unrecorded`]). `interrupt` stops it gracefully.
/// `observe` receives events.
pub fn apply(
    plan: &Plan,
    providers: &BTreeMap<String, Arc<dyn Client>>,
    opts: &Options,
    recorder: &mut dyn Recorder,
    interrupt: &Arc<Interrupt>,
    observe: &(dyn Fn(&Event) + Sync),
) -> Report {
    let start = Instant::now();
    let batched: BTreeSet<String> = providers
        .iter()
        .filter(|(_, p)| p.batched())
        .map(|(n, _)| n.clone())
        .collect();
    let units = units(plan, &batched);
    let mut dependents = vec![Vec::new(); units.len()];
    for (u, unit) in units.iter().enumerate() {
        for &n in &unit.needs {
            dependents[n].push(u);
        }
    }
    let remaining_needs: Vec<usize> = units.iter().map(|u| u.needs.len()).collect();
    let ready: Vec<usize> = (0..units.len())
        .rev()
        .filter(|u| remaining_needs[*u] == 0)
        .collect();
    let shared = Mutex::new(Shared {
        ready,
        remaining_needs,
        dependents,
        running: 0,
        stop: false,
        report: Report::default(),
        started: BTreeSet::new(),
    });
    let wake = Condvar::new();
    let recorder = Mutex::new(recorder);
    let workers = opts.parallelism.max(1).min(units.len().max(1));
    let run = Run {
        plan,
        units: &units,
        providers,
        opts,
        shared: &shared,
        wake: &wake,
        recorder: &recorder,
        interrupt,
        observe,
    };
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| run.worker());
        }
    });
    let mut sh = match shared.into_inner() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    for (u, unit) in units.iter().enumerate() {
        if !sh.started.contains(&u) {
            for &i in &unit.changes {
                sh.report.not_started.push(plan.changes[i].address.clone());
            }
        }
    }
    sh.report.interrupted = interrupt.is_set();
    sh.report.elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    sh.report
}

/// Everything a worker shares.
struct Run<'a, 'r> {
    plan: &'a Plan,
    units: &'a [Unit],
    providers: &'a BTreeMap<String, Arc<dyn Client>>,
    opts: &'a Options,
    shared: &'a Mutex<Shared>,
    wake: &'a Condvar,
    recorder: &'a Mutex<&'r mut dyn Recorder>,
    interrupt: &'a Arc<Interrupt>,
    observe: &'a (dyn Fn(&Event) + Sync),
}

/// How a unit ended.
enum Outcome {
    /// Applied and recorded.
    Done(u64),
    /// Applied, not recorded.
    Unrecorded(String),
    /// Not applied (or in doubt).
    Failed(String),
    /// Still in flight when the grace period ended.
    Abandoned,
}

impl Run<'_, '_> {
    fn worker(&self) {
        while let Some(next) = self.next_unit() {
            let unit = &self.units[next];
            let changes: Vec<&Change> = unit
                .changes
                .iter()
                .map(|i| &self.plan.changes[*i])
                .collect();
            let outcome = self.run_unit(unit, &changes);
            self.finish(next, &changes, outcome);
        }
    }

    /// The next unit to run, or `None` when the worker is done.
    fn next_unit(&self) -> Option<usize> {
        let Ok(mut sh) = self.shared.lock() else {
            return None;
        };
        loop {
            if self.interrupt.is_set() {
                sh.stop = true;
            }
            if sh.stop && sh.running == 0 {
                self.wake.notify_all();
                return None;
            }
            if !sh.stop {
                if let Some(u) = sh.ready.pop() {
                    sh.running += 1;
                    sh.started.insert(u);
                    return Some(u);
                }
            }
            if sh.running == 0 && (sh.ready.is_empty() || sh.stop) {
                self.wake.notify_all();
                return None;
            }
            // Woken by a finishing unit; an interrupt is noticed within the timeout.
            sh = match self.wake.wait_timeout(sh, Duration::from_millis(100)) {
                Ok((g, _)) => g,
                Err(_) => return None,
            };
        }
    }

    fn record(
        &self,
        f: impl FnOnce(&mut dyn Recorder) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let Ok(mut r) = self.recorder.lock() else {
            anyhow::bail!("state recorder poisoned");
        };
        f(&mut **r)
    }

    fn run_unit(&self, unit: &Unit, changes: &[&Change]) -> Outcome {
        let first = changes
            .first()
            .map(|c| c.address.clone())
            .unwrap_or_default();
        if let Err(e) = self.record(|r| r.started(changes)) {
            return Outcome::Failed(format!(
                "not sent: recording its start in state failed: {e:#}"
            ));
        }
        for c in changes {
            (self.observe)(&Event::Started {
                address: c.address.clone(),
                action: c.action,
            });
        }
        let t0 = Instant::now();
        let result = match self.providers.get(&unit.provider) {
            None => Err(anyhow::anyhow!(
                "no provider `{}` is configured for this environment",
                unit.provider
            )),
            Some(p) => match self.call(p, changes) {
                Some(r) => r,
                None => return Outcome::Abandoned,
            },
        };
        let elapsed_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Err(e) = result {
            return Outcome::Failed(format!("{e:#}"));
        }
        match self.record(|r| r.done(changes)) {
            Ok(()) => Outcome::Done(elapsed_ms),
            Err(e) => Outcome::Unrecorded(format!(
                "applied, but recording {first} (and its unit) in state failed: {e:#}"
            )),
        }
    }

    /// Runs the unit's call (with retries) on a thread of its own and waits for it; `None`
    /// when it was abandoned after an interrupt and the grace period.
    fn call(&self, p: &Arc<dyn Client>, changes: &[&Change]) -> Option<anyhow::Result<()>> {
        enum Msg {
            Event(Event),
            Done(anyhow::Result<()>),
        }
        let (tx, rx) = mpsc::channel::<Msg>();
        let client = Arc::clone(p);
        let owned: Vec<Change> = changes.iter().map(|c| (*c).clone()).collect();
        let opts = self.opts.clone();
        let interrupt = Arc::clone(self.interrupt);
        let spawned = std::thread::Builder::new()
            .name("kombiform-apply-call".into())
            .spawn(move || {
                let refs: Vec<&Change> = owned.iter().collect();
                let events = tx.clone();
                let r = run_with_retries(client.as_ref(), &refs, &opts, &interrupt, &|e| {
                    let _ = events.send(Msg::Event(e.clone()));
                });
                let _ = tx.send(Msg::Done(r));
            });
        if let Err(e) = spawned {
            return Some(Err(
                anyhow::Error::new(e).context("starting a thread for the call")
            ));
        }
        loop {
            let wait = match self.interrupt.since() {
                None => Duration::from_millis(100),
                Some(t) => (t + self.opts.grace).saturating_duration_since(Instant::now()),
            };
            match rx.recv_timeout(wait) {
                Ok(Msg::Event(e)) => (self.observe)(&e),
                Ok(Msg::Done(r)) => return Some(r),
                Err(RecvTimeoutError::Timeout) => {
                    if self
                        .interrupt
                        .since()
                        .is_some_and(|t| t.elapsed() >= self.opts.grace)
                    {
                        return None;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Some(Err(anyhow::anyhow!("the call ended without an answer")))
                }
            }
        }
    }

    fn finish(&self, unit: usize, changes: &[&Change], outcome: Outcome) {
        let Ok(mut sh) = self.shared.lock() else {
            return;
        };
        sh.running -= 1;
        let observe = self.observe;
        match outcome {
            Outcome::Done(elapsed_ms) => {
                for c in changes {
                    observe(&Event::Done {
                        address: c.address.clone(),
                        action: c.action,
                        elapsed_ms,
                    });
                    sh.report.done.push(c.address.clone());
                }
                let deps = sh.dependents[unit].clone();
                for d in deps {
                    sh.remaining_needs[d] -= 1;
                    if sh.remaining_needs[d] == 0 {
                        sh.ready.push(d);
                    }
                }
            }
            Outcome::Unrecorded(msg) => {
                for c in changes {
                    observe(&Event::Unrecorded {
                        address: c.address.clone(),
                        action: c.action,
                        error: msg.clone(),
                    });
                    sh.report.unrecorded.push((c.address.clone(), msg.clone()));
                }
                sh.stop = true;
            }
            Outcome::Failed(msg) => {
                for c in changes {
                    observe(&Event::Failed {
                        address: c.address.clone(),
                        action: c.action,
                        error: msg.clone(),
                    });
                    sh.report.failed.push((c.address.clone(), msg.clone()));
                }
                sh.stop = true;
            }
            Outcome::Abandoned => {
                for c in changes {
                    observe(&Event::Abandoned {
                        address: c.address.clone(),
                        action: c.action,
                    });
                    sh.report.abandoned.push(c.address.clone());
                }
                sh.stop = true;
            }
        }
        self.wake.notify_all();
    }
}

/// Runs `f` until it succeeds, retrying [`crate::providers::Transient`] failures with the
/// budget of `opts` (backoff doubling from `base_backoff`, at least what the remote asked);
/// an interrupt ends the waiting. `on_retry` hears of each retry.
pub fn retrying<T>(
    opts: &Options,
    interrupt: &Interrupt,
    mut f: impl FnMut() -> anyhow::Result<T>,
    on_retry: &dyn Fn(u32, Duration, &anyhow::Error),
) -> anyhow::Result<T> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let e = match f() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let Some(t) = transient(&e) else {
            return Err(e);
        };
        if attempt > opts.max_retries {
            return Err(e.context(format!("gave up after {attempt} attempts")));
        }
        let backoff = opts
            .base_backoff
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(opts.max_backoff);
        let wait = t.retry_after.map_or(backoff, |r| r.max(backoff));
        on_retry(attempt, wait, &e);
        if interrupt.wait(wait) {
            return Err(e.context("interrupted while waiting to try again"));
        }
    }
}

fn run_with_retries(
    p: &dyn Client,
    changes: &[&Change],
    opts: &Options,
    interrupt: &Interrupt,
    observe: &(dyn Fn(&Event) + Sync),
) -> anyhow::Result<()> {
    let address = changes
        .first()
        .map(|c| c.address.clone())
        .unwrap_or_default();
    retrying(opts, interrupt, || p.apply(changes), &|attempt, wait, e| {
        observe(&Event::Retrying {
            address: address.clone(),
            attempt,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            error: format!("{e:#}"),
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{LiveRead, Transient};
    use kombiform_plan::{Resource, PLAN_FORMAT};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Records the addresses of completed units; refuses starts of `refuse_start`.
    #[derive(Default)]
    struct Rec {
        started: Vec<String>,
        done: Vec<String>,
        fail_done: bool,
    }

    impl Recorder for Rec {
        fn started(&mut self, cs: &[&Change]) -> anyhow::Result<()> {
            self.started.extend(cs.iter().map(|c| c.address.clone()));
            Ok(())
        }
        fn done(&mut self, cs: &[&Change]) -> anyhow::Result<()> {
            if self.fail_done {
                anyhow::bail!("No space left on device");
            }
            self.done.extend(cs.iter().map(|c| c.address.clone()));
            Ok(())
        }
    }

    fn run(p: &Plan, providers: &BTreeMap<String, Arc<dyn Client>>, opts: &Options) -> Report {
        apply(
            p,
            providers,
            opts,
            &mut Rec::default(),
            &Interrupt::new(),
            &|_| {},
        )
    }

    fn one(name: &str, c: Arc<dyn Client>) -> BTreeMap<String, Arc<dyn Client>> {
        [(name.to_string(), c)].into_iter().collect()
    }

    struct Fake {
        batched: bool,
        log: Mutex<Vec<String>>,
        fail_on: Option<&'static str>,
        transient_left: AtomicUsize,
    }

    impl Fake {
        fn new() -> Fake {
            Fake {
                batched: false,
                log: Mutex::new(Vec::new()),
                fail_on: None,
                transient_left: AtomicUsize::new(0),
            }
        }
    }

    impl Client for Fake {
        fn read(&self) -> anyhow::Result<LiveRead> {
            Ok(LiveRead::default())
        }
        fn batched(&self) -> bool {
            self.batched
        }
        fn apply(&self, changes: &[&Change]) -> anyhow::Result<()> {
            if self.transient_left.load(Ordering::SeqCst) > 0 {
                self.transient_left.fetch_sub(1, Ordering::SeqCst);
                return Err(anyhow::Error::new(Transient {
                    message: "429".into(),
                    retry_after: Some(Duration::from_millis(5)),
                }));
            }
            for c in changes {
                if Some(c.address.as_str()) == self.fail_on {
                    anyhow::bail!("boom");
                }
                if let Ok(mut l) = self.log.lock() {
                    l.push(format!("{} {}", c.action.as_str(), c.address));
                }
            }
            Ok(())
        }
    }

    fn change(addr: &str, action: Action, deps: &[&str]) -> Change {
        let mut r = Resource::new(addr, serde_json::Map::new());
        r.depends_on = deps.iter().map(|s| (*s).to_string()).collect();
        Change {
            address: addr.into(),
            action,
            attrs: vec![],
            destructive: false,
            drift: false,
            desired: (action != Action::Delete).then(|| r.clone()),
            live: (action == Action::Delete).then_some(r),
        }
    }

    fn plan(changes: Vec<Change>) -> Plan {
        Plan {
            format: PLAN_FORMAT,
            env: "t".into(),
            spec_hash: String::new(),
            state_serial: 0,
            fingerprints: BTreeMap::new(),
            live_hashes: BTreeMap::new(),
            changes,
            unchanged: 0,
            refused: vec![],
            vetoed: Default::default(),
            consented: Default::default(),
            adopt: vec![],
            forget: vec![],
            kept: vec![],
        }
    }

    fn fast() -> Options {
        Options {
            parallelism: 4,
            max_retries: 3,
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(10),
            grace: Duration::from_secs(60),
        }
    }

    #[test]
    fn dependencies_run_first_and_every_change_is_recorded() {
        let pb = Arc::new(Fake::new());
        let mut pg = Fake::new();
        pg.batched = true;
        let pg = Arc::new(pg);
        let p = plan(vec![
            change("pg.tenant.a", Action::Create, &[]),
            change("pg.tenant.b", Action::Create, &[]),
            change("pb.collection.a_users", Action::Create, &["pg.tenant.a"]),
            change(
                "pb.collection.a_nodes",
                Action::Create,
                &["pb.collection.a_users"],
            ),
        ]);
        let mut providers: BTreeMap<String, Arc<dyn Client>> = BTreeMap::new();
        providers.insert("pb".into(), pb);
        providers.insert("pg".into(), pg.clone());
        let mut rec = Rec::default();
        let report = apply(
            &p,
            &providers,
            &fast(),
            &mut rec,
            &Interrupt::new(),
            &|_| {},
        );
        assert!(report.succeeded(), "{report:?}");
        let recorded = rec.done;
        assert_eq!(
            rec.started.len(),
            4,
            "every start is recorded before the call"
        );
        assert_eq!(recorded.len(), 4);
        let pos = |a: &str| recorded.iter().position(|r| r == a).unwrap_or(usize::MAX);
        assert!(pos("pg.tenant.a") < pos("pb.collection.a_users"));
        assert!(pos("pb.collection.a_users") < pos("pb.collection.a_nodes"));
        // The batched provider got both of its changes in one call.
        assert_eq!(pg.log.lock().map(|l| l.len()).unwrap_or(0), 2);
    }

    #[test]
    fn a_failure_stops_new_work_and_reports_what_was_not_done() {
        let mut pb = Fake::new();
        pb.fail_on = Some("pb.c.b");
        let pb: Arc<dyn Client> = Arc::new(pb);
        let p = plan(vec![
            change("pb.c.a", Action::Create, &[]),
            change("pb.c.b", Action::Create, &["pb.c.a"]),
            change("pb.c.c", Action::Create, &["pb.c.b"]),
        ]);
        let report = run(&p, &one("pb", pb), &fast());
        assert_eq!(report.done, vec!["pb.c.a".to_string()]);
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.not_started, vec!["pb.c.c".to_string()]);
    }

    #[test]
    fn transient_failures_are_retried_honouring_retry_after() {
        let pb = Fake::new();
        pb.transient_left.store(2, Ordering::SeqCst);
        let p = plan(vec![change("pb.c.a", Action::Create, &[])]);
        let events = Mutex::new(Vec::new());
        let report = apply(
            &p,
            &one("pb", Arc::new(pb)),
            &fast(),
            &mut Rec::default(),
            &Interrupt::new(),
            &|e| {
                if let Ok(mut v) = events.lock() {
                    v.push(e.clone());
                }
            },
        );
        assert!(report.succeeded());
        let retries: Vec<u64> = events
            .lock()
            .map(|v| {
                v.iter()
                    .filter_map(|e| match e {
                        Event::Retrying { wait_ms, .. } => Some(*wait_ms),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(retries.len(), 2);
        assert!(retries.iter().all(|w| *w >= 5), "{retries:?}");
    }

    #[test]
    fn deletes_of_dependents_come_before_their_dependencies() {
        let p = plan(vec![
            change("pb.c.child", Action::Delete, &["pb.c.parent"]),
            change("pb.c.parent", Action::Delete, &[]),
        ]);
        let report = run(&p, &one("pb", Arc::new(Fake::new())), &fast());
        assert_eq!(
            report.done,
            vec!["pb.c.child".to_string(), "pb.c.parent".to_string()]
        );
    }

    #[test]
    fn parallelism_is_bounded() {
        struct Slow {
            now: AtomicUsize,
            max: AtomicUsize,
        }
        impl Client for Slow {
            fn read(&self) -> anyhow::Result<LiveRead> {
                Ok(LiveRead::default())
            }
            fn apply(&self, _: &[&Change]) -> anyhow::Result<()> {
                let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                self.max.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                self.now.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        }
        let s = Arc::new(Slow {
            now: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
        });
        let p = plan(
            (0..20)
                .map(|i| change(&format!("s.c.{i}"), Action::Create, &[]))
                .collect(),
        );
        let opts = Options {
            parallelism: 3,
            ..fast()
        };
        let report = run(&p, &one("s", s.clone()), &opts);
        assert!(report.succeeded());
        let max = s.max.load(Ordering::SeqCst);
        assert!((2..=3).contains(&max), "max concurrency {max}");
    }

    /// A client whose calls wait until `release` is triggered (or never).
    struct Held {
        release: Arc<Interrupt>,
        entered: Arc<Interrupt>,
    }

    impl Client for Held {
        fn read(&self) -> anyhow::Result<LiveRead> {
            Ok(LiveRead::default())
        }
        fn apply(&self, _: &[&Change]) -> anyhow::Result<()> {
            self.entered.trigger();
            while !self.release.wait(Duration::from_secs(3600)) {}
            Ok(())
        }
    }

    #[test]
    fn an_applied_change_whose_recording_fails_is_unrecorded_not_failed() {
        let p = plan(vec![
            change("pb.c.a", Action::Create, &[]),
            change("pb.c.b", Action::Create, &["pb.c.a"]),
        ]);
        let mut rec = Rec {
            fail_done: true,
            ..Rec::default()
        };
        let report = apply(
            &p,
            &one("pb", Arc::new(Fake::new())),
            &fast(),
            &mut rec,
            &Interrupt::new(),
            &|_| {},
        );
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!(report.unrecorded.len(), 1);
        assert_eq!(report.unrecorded[0].0, "pb.c.a");
        assert!(report.unrecorded[0].1.contains("No space left"));
        assert_eq!(report.not_started, vec!["pb.c.b".to_string()]);
        assert!(!report.succeeded());
    }

    #[test]
    fn an_interrupt_lets_calls_in_flight_finish_and_starts_nothing_new() {
        let (release, entered) = (Interrupt::new(), Interrupt::new());
        let held = Arc::new(Held {
            release: release.clone(),
            entered: entered.clone(),
        });
        let p = plan(vec![
            change("h.c.a", Action::Create, &[]),
            change("h.c.b", Action::Create, &["h.c.a"]),
        ]);
        let interrupt = Interrupt::new();
        let report = std::thread::scope(|s| {
            let h = s.spawn(|| {
                apply(
                    &p,
                    &one("h", held),
                    &fast(),
                    &mut Rec::default(),
                    &interrupt,
                    &|_| {},
                )
            });
            while !entered.wait(Duration::from_secs(3600)) {}
            interrupt.trigger();
            release.trigger();
            h.join().unwrap()
        });
        assert!(report.interrupted);
        assert_eq!(report.done, vec!["h.c.a".to_string()]);
        assert_eq!(report.not_started, vec!["h.c.b".to_string()]);
        assert!(report.abandoned.is_empty());
    }

    #[test]
    fn a_call_still_in_flight_after_the_grace_period_is_abandoned() {
        let (release, entered) = (Interrupt::new(), Interrupt::new());
        let held = Arc::new(Held {
            release,
            entered: entered.clone(),
        });
        let p = plan(vec![change("h.c.a", Action::Create, &[])]);
        let interrupt = Interrupt::new();
        let opts = Options {
            grace: Duration::from_millis(1),
            ..fast()
        };
        let mut rec = Rec::default();
        let report = std::thread::scope(|s| {
            let h = s.spawn(|| apply(&p, &one("h", held), &opts, &mut rec, &interrupt, &|_| {}));
            while !entered.wait(Duration::from_secs(3600)) {}
            interrupt.trigger();
            h.join().unwrap()
        });
        assert_eq!(report.abandoned, vec!["h.c.a".to_string()]);
        assert!(report.done.is_empty() && report.failed.is_empty());
        assert_eq!(
            rec.started,
            vec!["h.c.a".to_string()],
            "its start stays recorded"
        );
    }
}
