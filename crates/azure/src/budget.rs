//! The client-side request budget: one token bucket per subscription and operation class,
//! sized at ARM's limits, so kombiform slows itself down instead of being throttled.
//!
//! ARM (since 2024) throttles per region with token buckets per subscription, per principal
//! and per operation class: reads 250 then 25/s, writes 200 then 10/s, deletes 200 then 10/s.
//! An `Arm` client is one principal, so its buckets are keyed by subscription and class. Every
//! request, including retries and polls, takes a token before it is sent. When ARM reports
//! fewer remaining requests than a bucket holds (`x-ms-ratelimit-remaining-subscription-*`,
//! other clients of the same principal spend from the same budget), the bucket drops to that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::clock::Clock;

/// The kind of request, as ARM counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperationClass {
    /// GET and HEAD (polls included).
    Read,
    /// PUT, PATCH and POST.
    Write,
    /// DELETE.
    Delete,
}

impl OperationClass {
    /// The class of an HTTP method.
    pub fn of(method: &reqwest::Method) -> Self {
        if method == reqwest::Method::DELETE {
            Self::Delete
        } else if method == reqwest::Method::GET || method == reqwest::Method::HEAD {
            Self::Read
        } else {
            Self::Write
        }
    }

    /// `reads`, `writes` or `deletes`: the suffix of ARM's remaining-budget headers.
    pub fn header_suffix(self) -> &'static str {
        match self {
            Self::Read => "reads",
            Self::Write => "writes",
            Self::Delete => "deletes",
        }
    }
}

/// One token bucket's size and refill rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketLimit {
    /// Tokens when full (the burst).
    pub capacity: f64,
    /// Tokens added per second of the client's clock.
    pub refill_per_sec: f64,
}

/// A bucket per operation class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// GET and HEAD.
    pub reads: BucketLimit,
    /// PUT, PATCH and POST.
    pub writes: BucketLimit,
    /// DELETE.
    pub deletes: BucketLimit,
}

impl Limits {
    /// ARM's documented per-subscription, per-principal limits.
    pub const ARM: Limits = Limits {
        reads: BucketLimit {
            capacity: 250.0,
            refill_per_sec: 25.0,
        },
        writes: BucketLimit {
            capacity: 200.0,
            refill_per_sec: 10.0,
        },
        deletes: BucketLimit {
            capacity: 200.0,
            refill_per_sec: 10.0,
        },
    };

    /// The client's default: ARM's limits with a tenth of each burst held back. Requests reach
    /// ARM a little later than they leave, and unevenly; a client that used the whole burst
    /// could arrive bunched past ARM's bucket. The reserve covers 2 s of such jitter at the
    /// write refill rate; the refill rates are ARM's own.
    pub const CLIENT_DEFAULT: Limits = Limits {
        reads: BucketLimit {
            capacity: 225.0,
            refill_per_sec: 25.0,
        },
        writes: BucketLimit {
            capacity: 180.0,
            refill_per_sec: 10.0,
        },
        deletes: BucketLimit {
            capacity: 180.0,
            refill_per_sec: 10.0,
        },
    };

    /// The limit of one class.
    pub fn of(&self, class: OperationClass) -> BucketLimit {
        match class {
            OperationClass::Read => self.reads,
            OperationClass::Write => self.writes,
            OperationClass::Delete => self.deletes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::CLIENT_DEFAULT
    }
}

/// A token bucket on the client's clock.
#[derive(Debug)]
struct Bucket {
    limit: BucketLimit,
    tokens: f64,
    at: Duration,
}

impl Bucket {
    fn full(limit: BucketLimit, now: Duration) -> Self {
        Self {
            limit,
            tokens: limit.capacity,
            at: now,
        }
    }

    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.limit.refill_per_sec).min(self.limit.capacity);
        self.at = self.at.max(now);
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, now: Duration) -> Result<(), Duration> {
        self.refill(now);
        // The epsilon absorbs float rounding of refills (0.04 s × 25/s may come out just
        // under one token).
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            return Ok(());
        }
        if self.limit.refill_per_sec <= 0.0 {
            // A bucket that never refills: wait a second and look again (only a test would
            // configure this).
            return Err(Duration::from_secs(1));
        }
        let missing = 1.0 - self.tokens;
        Err(Duration::from_secs_f64(missing / self.limit.refill_per_sec))
    }

    /// ARM says only `remaining` requests are left: never believe we have more.
    fn observe(&mut self, remaining: f64, now: Duration) {
        self.refill(now);
        self.tokens = self.tokens.min(remaining.max(0.0));
    }
}

/// The buckets of one client (one principal), created on first use per subscription.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: Limits,
    clock: Arc<dyn Clock>,
    buckets: Mutex<HashMap<(String, OperationClass), Bucket>>,
}

impl Budget {
    pub(crate) fn new(limits: Limits, clock: Arc<dyn Clock>) -> Self {
        Self {
            limits,
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn with_bucket<T>(
        &self,
        scope: &str,
        class: OperationClass,
        f: impl FnOnce(&mut Bucket, Duration) -> T,
    ) -> T {
        let now = self.clock.now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets
            .entry((scope.to_ascii_lowercase(), class))
            .or_insert_with(|| Bucket::full(self.limits.of(class), now));
        f(bucket, now)
    }

    /// Waits until the bucket of `scope` (a subscription id, or "" for tenant-level calls)
    /// and `class` has a token, and takes it. Returns the time waited.
    pub(crate) async fn acquire(&self, scope: &str, class: OperationClass) -> Duration {
        let mut waited = Duration::ZERO;
        loop {
            match self.with_bucket(scope, class, |bucket, now| bucket.take(now)) {
                Ok(()) => return waited,
                Err(wait) => {
                    waited += wait;
                    self.clock.sleep(wait).await;
                }
            }
        }
    }

    /// Lowers a bucket to what ARM reported as remaining.
    pub(crate) fn observe(&self, scope: &str, class: OperationClass, remaining: f64) {
        self.with_bucket(scope, class, |bucket, now| bucket.observe(remaining, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::manual::ManualClock;

    fn budget(limits: Limits) -> (Budget, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        (Budget::new(limits, clock.clone()), clock)
    }

    async fn take_n(budget: &Budget, class: OperationClass, n: usize) -> Duration {
        let mut waited = Duration::ZERO;
        for _ in 0..n {
            waited += budget.acquire("sub", class).await;
        }
        waited
    }

    #[tokio::test]
    async fn arm_limits_allow_the_burst_then_the_refill_rate() {
        for (class, burst, per_second) in [
            (OperationClass::Read, 250, 25),
            (OperationClass::Write, 200, 10),
            (OperationClass::Delete, 200, 10),
        ] {
            let (budget, clock) = budget(Limits::ARM);
            // The burst costs no time…
            assert_eq!(take_n(&budget, class, burst).await, Duration::ZERO);
            // …then the refill rate sets the pace: one second per `per_second` requests.
            take_n(&budget, class, per_second).await;
            assert_eq!(clock.now().as_millis(), 1000, "{class:?}");
        }
    }

    #[tokio::test]
    async fn subscriptions_have_their_own_buckets_and_case_does_not_matter() {
        let (budget, _clock) = budget(Limits::ARM);
        take_n(&budget, OperationClass::Write, 200).await;
        assert_eq!(
            budget.acquire("OTHER", OperationClass::Write).await,
            Duration::ZERO
        );
        assert_eq!(
            budget.acquire("SUB", OperationClass::Write).await,
            Duration::from_millis(100)
        );
    }

    #[tokio::test]
    async fn idle_time_refills_but_never_past_the_capacity() {
        let (budget, clock) = budget(Limits::ARM);
        take_n(&budget, OperationClass::Write, 200).await;
        clock.advance(Duration::from_secs(3600));
        assert_eq!(
            take_n(&budget, OperationClass::Write, 200).await,
            Duration::ZERO
        );
        assert_eq!(
            budget.acquire("sub", OperationClass::Write).await,
            Duration::from_millis(100)
        );
    }

    #[tokio::test]
    async fn a_lower_remaining_count_from_arm_empties_the_bucket() {
        let (budget, _clock) = budget(Limits::ARM);
        budget.observe("sub", OperationClass::Read, 0.0);
        assert_eq!(
            budget.acquire("sub", OperationClass::Read).await,
            Duration::from_millis(40)
        );
        // A higher count never adds tokens.
        budget.observe("sub", OperationClass::Read, 10_000.0);
        assert_eq!(
            budget.acquire("sub", OperationClass::Read).await,
            Duration::from_millis(40)
        );
    }

    #[test]
    fn methods_map_to_arm_operation_classes() {
        use reqwest::Method;
        assert_eq!(OperationClass::of(&Method::GET), OperationClass::Read);
        assert_eq!(OperationClass::of(&Method::HEAD), OperationClass::Read);
        assert_eq!(OperationClass::of(&Method::PUT), OperationClass::Write);
        assert_eq!(OperationClass::of(&Method::PATCH), OperationClass::Write);
        assert_eq!(OperationClass::of(&Method::POST), OperationClass::Write);
        assert_eq!(OperationClass::of(&Method::DELETE), OperationClass::Delete);
    }
}
