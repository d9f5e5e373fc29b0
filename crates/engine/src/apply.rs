//! Executes a [`Plan`] along its dependencies, in parallel with a bound.
//!
//! `apply` takes a plan, never a model: what was reviewed is what runs. Changes become
//! units of work (one change, or all of a batched provider's creates/updates — and
//! separately its deletes — in one transaction). A unit starts when every unit it depends
//! on is done. Transient failures are retried with exponential backoff, waiting at least
//! what the remote asked (`Retry-After`). On a failure, units in flight finish, nothing new
//! starts, and the report says what was done and what was not. Every completed change is
//! handed to `on_done` at once (the caller journals it to state), so a crash loses nothing
//! that finished. This module does not print: it reports [`Event`]s to an observer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Condvar, Mutex};
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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            parallelism: 4,
            max_retries: 5,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
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
    /// A change failed for good.
    Failed {
        /// Address.
        address: String,
        /// Action.
        action: Action,
        /// What failed.
        error: String,
    },
}

/// What happened.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Addresses completed, in completion order.
    pub done: Vec<String>,
    /// Addresses that failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Addresses never started because something failed first.
    pub not_started: Vec<String>,
    /// Wall time.
    pub elapsed_ms: u64,
}

impl Report {
    /// Whether everything was applied.
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty() && self.not_started.is_empty()
    }
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

/// Records completed changes (in state): one unit's changes at a time, so a batched
/// provider's transaction is journaled with one write.
pub type Recorder<'a> = dyn FnMut(&[&Change]) -> anyhow::Result<()> + Send + 'a;

/// Applies `plan` with `providers` (by name). `on_done` is called, under a lock, for every
/// completed change before anything that depends on it starts; if it fails, apply stops
/// as on any failure. `observe` receives events.
pub fn apply(
    plan: &Plan,
    providers: &BTreeMap<String, &dyn Client>,
    opts: &Options,
    on_done: &mut Recorder<'_>,
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
    let on_done = Mutex::new(on_done);
    let workers = opts.parallelism.max(1).min(units.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                worker(
                    plan, &units, providers, opts, &shared, &wake, &on_done, observe,
                )
            });
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
    sh.report.elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    sh.report
}

#[allow(clippy::too_many_arguments)]
fn worker(
    plan: &Plan,
    units: &[Unit],
    providers: &BTreeMap<String, &dyn Client>,
    opts: &Options,
    shared: &Mutex<Shared>,
    wake: &Condvar,
    on_done: &Mutex<&mut Recorder<'_>>,
    observe: &(dyn Fn(&Event) + Sync),
) {
    loop {
        let next = {
            let Ok(mut sh) = shared.lock() else { return };
            loop {
                if sh.stop && sh.running == 0 {
                    wake.notify_all();
                    return;
                }
                if !sh.stop {
                    if let Some(u) = sh.ready.pop() {
                        sh.running += 1;
                        sh.started.insert(u);
                        break u;
                    }
                }
                if sh.running == 0 && (sh.ready.is_empty() || sh.stop) {
                    wake.notify_all();
                    return;
                }
                sh = match wake.wait(sh) {
                    Ok(g) => g,
                    Err(_) => return,
                };
            }
        };
        let unit = &units[next];
        let changes: Vec<&Change> = unit.changes.iter().map(|i| &plan.changes[*i]).collect();
        for c in &changes {
            observe(&Event::Started {
                address: c.address.clone(),
                action: c.action,
            });
        }
        let t0 = Instant::now();
        let result = match providers.get(&unit.provider) {
            None => Err(anyhow::anyhow!(
                "no provider `{}` is configured for this environment",
                unit.provider
            )),
            Some(p) => run_with_retries(*p, &changes, opts, observe),
        };
        let elapsed_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        let result = result.and_then(|()| {
            let Ok(mut f) = on_done.lock() else {
                return Err(anyhow::anyhow!("state recorder poisoned"));
            };
            let first = changes
                .first()
                .map(|c| c.address.clone())
                .unwrap_or_default();
            f(&changes)
                .map_err(|e| e.context(format!("recording {first} (and its unit) in state")))?;
            Ok(())
        });
        let Ok(mut sh) = shared.lock() else { return };
        sh.running -= 1;
        match result {
            Ok(()) => {
                for c in &changes {
                    observe(&Event::Done {
                        address: c.address.clone(),
                        action: c.action,
                        elapsed_ms,
                    });
                    sh.report.done.push(c.address.clone());
                }
                let deps = sh.dependents[next].clone();
                for d in deps {
                    sh.remaining_needs[d] -= 1;
                    if sh.remaining_needs[d] == 0 {
                        sh.ready.push(d);
                    }
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                for c in &changes {
                    observe(&Event::Failed {
                        address: c.address.clone(),
                        action: c.action,
                        error: msg.clone(),
                    });
                    sh.report.failed.push((c.address.clone(), msg.clone()));
                }
                sh.stop = true;
            }
        }
        wake.notify_all();
    }
}

fn run_with_retries(
    p: &dyn Client,
    changes: &[&Change],
    opts: &Options,
    observe: &(dyn Fn(&Event) + Sync),
) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match p.apply(changes) {
            Ok(()) => return Ok(()),
            Err(e) => {
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
                observe(&Event::Retrying {
                    address: changes
                        .first()
                        .map(|c| c.address.clone())
                        .unwrap_or_default(),
                    attempt,
                    wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    error: format!("{e:#}"),
                });
                std::thread::sleep(wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{LiveRead, Transient};
    use kombiform_plan::{Resource, PLAN_FORMAT};
    use std::sync::atomic::{AtomicUsize, Ordering};

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
        }
    }

    fn fast() -> Options {
        Options {
            parallelism: 4,
            max_retries: 3,
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(10),
        }
    }

    #[test]
    fn dependencies_run_first_and_every_change_is_recorded() {
        let pb = Fake::new();
        let mut pg = Fake::new();
        pg.batched = true;
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
        let mut providers: BTreeMap<String, &dyn Client> = BTreeMap::new();
        providers.insert("pb".into(), &pb);
        providers.insert("pg".into(), &pg);
        let mut recorded = Vec::new();
        let report = apply(
            &p,
            &providers,
            &fast(),
            &mut |cs| {
                recorded.extend(cs.iter().map(|c| c.address.clone()));
                Ok(())
            },
            &|_| {},
        );
        assert!(report.succeeded(), "{report:?}");
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
        let p = plan(vec![
            change("pb.c.a", Action::Create, &[]),
            change("pb.c.b", Action::Create, &["pb.c.a"]),
            change("pb.c.c", Action::Create, &["pb.c.b"]),
        ]);
        let mut providers: BTreeMap<String, &dyn Client> = BTreeMap::new();
        providers.insert("pb".into(), &pb);
        let report = apply(&p, &providers, &fast(), &mut |_| Ok(()), &|_| {});
        assert_eq!(report.done, vec!["pb.c.a".to_string()]);
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.not_started, vec!["pb.c.c".to_string()]);
    }

    #[test]
    fn transient_failures_are_retried_honouring_retry_after() {
        let pb = Fake::new();
        pb.transient_left.store(2, Ordering::SeqCst);
        let p = plan(vec![change("pb.c.a", Action::Create, &[])]);
        let mut providers: BTreeMap<String, &dyn Client> = BTreeMap::new();
        providers.insert("pb".into(), &pb);
        let events = Mutex::new(Vec::new());
        let report = apply(&p, &providers, &fast(), &mut |_| Ok(()), &|e| {
            if let Ok(mut v) = events.lock() {
                v.push(e.clone());
            }
        });
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
        let pb = Fake::new();
        let p = plan(vec![
            change("pb.c.child", Action::Delete, &["pb.c.parent"]),
            change("pb.c.parent", Action::Delete, &[]),
        ]);
        let mut providers: BTreeMap<String, &dyn Client> = BTreeMap::new();
        providers.insert("pb".into(), &pb);
        let report = apply(&p, &providers, &fast(), &mut |_| Ok(()), &|_| {});
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
        let s = Slow {
            now: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
        };
        let p = plan(
            (0..20)
                .map(|i| change(&format!("s.c.{i}"), Action::Create, &[]))
                .collect(),
        );
        let mut providers: BTreeMap<String, &dyn Client> = BTreeMap::new();
        providers.insert("s".into(), &s);
        let opts = Options {
            parallelism: 3,
            ..fast()
        };
        let report = apply(&p, &providers, &opts, &mut |_| Ok(()), &|_| {});
        assert!(report.succeeded());
        let max = s.max.load(Ordering::SeqCst);
        assert!((2..=3).contains(&max), "max concurrency {max}");
    }
}
