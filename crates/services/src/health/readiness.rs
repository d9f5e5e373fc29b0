//! [`Readiness`]: runs every dependency's [`Probe`] concurrently, each under the same timeout,
//! and caches the resulting [`ReadyReport`] for a TTL with single-flight: however many callers
//! ask within the TTL, dependencies see one round of checks.
//!
//! Not here: HTTP (see [`super::edge`]) and how probes are built from configuration (see
//! [`super::from_config`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
// tokio's clock, so tests with a paused clock see timeouts and the TTL pass.
use tokio::time::Instant;

use super::probe::{Failure, FailureKind, Probe};

/// A dependency `/ready` checks.
#[derive(Clone)]
pub struct Dependency {
    /// Name shown in the report, e.g. `postgres`.
    pub name: String,
    /// Whether the service is not ready while this dependency is down. A non-critical
    /// dependency is reported but does not change [`ReadyReport::status`].
    pub critical: bool,
    /// How to check it.
    pub probe: Arc<dyn Probe>,
}

impl Dependency {
    /// A critical dependency.
    pub fn critical(name: impl Into<String>, probe: impl Probe) -> Self {
        Dependency {
            name: name.into(),
            critical: true,
            probe: Arc::new(probe),
        }
    }
}

/// Up or down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Usable.
    Up,
    /// Not usable.
    Down,
}

/// Why a check is down, as shown in `/ready`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reason {
    /// Stable code: `timeout`, `unreachable`, `status`, `body`, `tls`, `query`, `internal`.
    pub code: FailureKind,
    /// Short public message (no hosts, no library errors, no secrets).
    pub message: String,
}

/// One dependency's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// The dependency's name.
    pub name: String,
    /// Its state.
    pub status: Status,
    /// Whether its being down makes the service not ready.
    pub critical: bool,
    /// How long the check took, in milliseconds (the timeout when it timed out).
    pub latency_ms: f64,
    /// Why it is down; absent when up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

/// The `/ready` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyReport {
    /// `up` when every critical check is up.
    pub status: Status,
    /// One per dependency, in configuration order.
    pub checks: Vec<CheckReport>,
    /// Milliseconds since this round of checks finished (0 for a fresh round).
    pub age_ms: u64,
}

/// A finished round and when it finished.
struct Round {
    report: ReadyReport,
    finished: Instant,
}

/// The readiness of a service's dependencies, cached; cheap to clone (shared state).
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

struct Inner {
    dependencies: Vec<Dependency>,
    timeout: Duration,
    ttl: Duration,
    /// The last round. Held across a round, so callers arriving during one wait for it
    /// instead of starting their own (single-flight).
    last: Mutex<Option<Round>>,
    rounds: AtomicU64,
}

impl Readiness {
    /// Checks `dependencies`, each under `timeout`, reusing a round's result for `ttl`.
    pub fn new(dependencies: Vec<Dependency>, timeout: Duration, ttl: Duration) -> Self {
        Readiness {
            inner: Arc::new(Inner {
                dependencies,
                timeout,
                ttl,
                last: Mutex::new(None),
                rounds: AtomicU64::new(0),
            }),
        }
    }

    /// The current report: the cached one if younger than the TTL, else a new round.
    ///
    /// Takes about the timeout at worst: every probe runs concurrently under it. If the caller
    /// goes away mid-round the round is abandoned and the next caller starts a new one; probes
    /// already spawned still end by their timeout.
    pub async fn status(&self) -> ReadyReport {
        let mut last = self.inner.last.lock().await;
        if let Some(round) = last.as_ref() {
            let age = round.finished.elapsed();
            if age < self.inner.ttl {
                let mut report = round.report.clone();
                report.age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
                return report;
            }
        }
        let report = self.run_round().await;
        *last = Some(Round {
            report: report.clone(),
            finished: Instant::now(),
        });
        report
    }

    /// How many rounds of checks have run since creation (a cached answer is not a round).
    pub fn rounds(&self) -> u64 {
        self.inner.rounds.load(Ordering::Relaxed)
    }

    /// The names of the dependencies, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.inner.dependencies.iter().map(|d| d.name.as_str())
    }

    async fn run_round(&self) -> ReadyReport {
        self.inner.rounds.fetch_add(1, Ordering::Relaxed);
        let timeout = self.inner.timeout;
        // Spawned, so probes run in parallel and a panicking probe is reported, not fatal.
        let handles: Vec<_> = self
            .inner
            .dependencies
            .iter()
            .map(|d| tokio::spawn(check_one(d.probe.clone(), timeout)))
            .collect();
        let mut checks = Vec::with_capacity(handles.len());
        for (dep, handle) in self.inner.dependencies.iter().zip(handles) {
            let (latency, result) = match handle.await {
                Ok(outcome) => outcome,
                Err(e) => (
                    timeout,
                    Err(Failure::new(
                        FailureKind::Internal,
                        "the check failed",
                        format!("probe task: {e}"),
                    )),
                ),
            };
            checks.push(report_one(dep, latency, result));
        }
        let status = if checks.iter().all(|c| c.status == Status::Up || !c.critical) {
            Status::Up
        } else {
            Status::Down
        };
        ReadyReport {
            status,
            checks,
            age_ms: 0,
        }
    }
}

async fn check_one(probe: Arc<dyn Probe>, timeout: Duration) -> (Duration, Result<(), Failure>) {
    let start = Instant::now();
    let result = match tokio::time::timeout(timeout, probe.probe()).await {
        Ok(result) => result,
        Err(_) => Err(Failure::timeout(timeout)),
    };
    (start.elapsed(), result)
}

/// The report line of one check; logs a failure with its detail.
fn report_one(dep: &Dependency, latency: Duration, result: Result<(), Failure>) -> CheckReport {
    let latency_ms = (latency.as_secs_f64() * 100_000.0).round() / 100.0;
    let reason = match result {
        Ok(()) => None,
        Err(f) => {
            tracing::warn!(
                check = %dep.name,
                critical = dep.critical,
                code = f.kind.code(),
                latency_ms,
                detail = %f.detail,
                "dependency check failed"
            );
            Some(Reason {
                code: f.kind,
                message: f.message,
            })
        }
    };
    CheckReport {
        name: dep.name.clone(),
        status: if reason.is_none() {
            Status::Up
        } else {
            Status::Down
        },
        critical: dep.critical,
        latency_ms,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::health::probe::ProbeFuture;

    /// A probe that counts calls, sleeps, then answers `ok`.
    struct Fake {
        calls: Arc<AtomicUsize>,
        sleep: Duration,
        ok: bool,
    }

    impl Probe for Fake {
        fn probe(&self) -> ProbeFuture<'_> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(self.sleep).await;
                if self.ok {
                    Ok(())
                } else {
                    Err(Failure::new(FailureKind::Status, "answered 500", "detail"))
                }
            })
        }
    }

    fn fake(sleep_ms: u64, ok: bool) -> (Fake, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let probe = Fake {
            calls: calls.clone(),
            sleep: Duration::from_millis(sleep_ms),
            ok,
        };
        (probe, calls)
    }

    fn runtime() -> tokio::runtime::Runtime {
        match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("runtime: {e}"),
        }
    }

    #[test]
    fn down_critical_check_makes_the_service_down_but_not_a_non_critical_one() {
        let (up, _) = fake(1, true);
        let (down, _) = fake(1, false);
        let (optional, _) = fake(1, false);
        let mut optional = Dependency::critical("optional", optional);
        optional.critical = false;
        let r = Readiness::new(
            vec![Dependency::critical("a", up), optional],
            Duration::from_secs(1),
            Duration::ZERO,
        );
        let report = runtime().block_on(r.status());
        assert_eq!(report.status, Status::Up);
        assert_eq!(report.checks[1].status, Status::Down);
        let r = Readiness::new(
            vec![Dependency::critical("b", down)],
            Duration::from_secs(1),
            Duration::ZERO,
        );
        let report = runtime().block_on(r.status());
        assert_eq!(report.status, Status::Down);
        let reason = report.checks[0].reason.as_ref().map(|r| r.code);
        assert_eq!(reason, Some(FailureKind::Status));
    }

    #[test]
    fn a_hanging_probe_times_out() {
        let (slow, _) = fake(10_000, true);
        let r = Readiness::new(
            vec![Dependency::critical("slow", slow)],
            Duration::from_millis(200),
            Duration::ZERO,
        );
        let report = runtime().block_on(r.status());
        assert_eq!(report.status, Status::Down);
        let reason = report.checks[0].reason.as_ref().map(|r| r.code);
        assert_eq!(reason, Some(FailureKind::Timeout));
        assert!(report.checks[0].latency_ms >= 200.0);
    }

    #[test]
    fn concurrent_callers_within_the_ttl_share_one_round() {
        let (probe, calls) = fake(50, true);
        let r = Readiness::new(
            vec![Dependency::critical("p", probe)],
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        runtime().block_on(async {
            let tasks: Vec<_> = (0..20)
                .map(|_| {
                    let r = r.clone();
                    tokio::spawn(async move { r.status().await })
                })
                .collect();
            for t in tasks {
                assert!(matches!(t.await, Ok(rep) if rep.status == Status::Up));
            }
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            tokio::time::sleep(Duration::from_millis(1001)).await;
            r.status().await;
        });
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a new round after the TTL");
        assert_eq!(r.rounds(), 2);
    }
}
