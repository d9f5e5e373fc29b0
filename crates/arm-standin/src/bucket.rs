//! ARM's throttling as the stand-in applies it: a token bucket per subscription, principal
//! and operation class, in real time, answering with the remaining count ARM reports in
//! `x-ms-ratelimit-remaining-subscription-{reads,writes,deletes}`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::faults::{BucketSpec, Faults};

/// ARM's operation classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Class {
    /// GET, HEAD.
    Read,
    /// PUT, PATCH, POST.
    Write,
    /// DELETE.
    Delete,
}

impl Class {
    /// The class of a method.
    pub(crate) fn of(method: &hyper::Method) -> Self {
        match *method {
            hyper::Method::GET | hyper::Method::HEAD => Self::Read,
            hyper::Method::DELETE => Self::Delete,
            _ => Self::Write,
        }
    }

    /// `reads`, `writes`, `deletes`.
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Self::Read => "reads",
            Self::Write => "writes",
            Self::Delete => "deletes",
        }
    }
}

#[derive(Debug)]
struct Bucket {
    spec: BucketSpec,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.spec.refill_per_sec).min(self.spec.capacity);
        self.at = now;
    }
}

/// The decision for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Admission {
    /// Admitted; this many requests remain.
    Admitted { remaining: u64 },
    /// Throttled: the bucket is empty until `retry_after`.
    Throttled { retry_after: Duration },
}

/// All buckets of the stand-in.
#[derive(Debug)]
pub(crate) struct Buckets {
    reads: BucketSpec,
    writes: BucketSpec,
    deletes: BucketSpec,
    buckets: Mutex<HashMap<(String, String, Class), Bucket>>,
}

impl Buckets {
    pub(crate) fn new(faults: &Faults) -> Self {
        Self {
            reads: faults.reads,
            writes: faults.writes,
            deletes: faults.deletes,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for a request of `principal` in `subscription`.
    pub(crate) fn admit(&self, subscription: &str, principal: &str, class: Class) -> Admission {
        let spec = match class {
            Class::Read => self.reads,
            Class::Write => self.writes,
            Class::Delete => self.deletes,
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets
            .entry((
                subscription.to_ascii_lowercase(),
                principal.to_owned(),
                class,
            ))
            .or_insert(Bucket {
                spec,
                tokens: spec.capacity,
                at: now,
            });
        bucket.refill(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Admission::Admitted {
                remaining: bucket.tokens.floor() as u64,
            };
        }
        let missing = 1.0 - bucket.tokens;
        Admission::Throttled {
            retry_after: Duration::from_secs_f64(missing / spec.refill_per_sec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_admits_its_capacity_then_throttles_with_the_refill_time() {
        let faults = Faults::parse("writes=3/2").unwrap();
        let buckets = Buckets::new(&faults);
        let admit = || buckets.admit("SUB", "app", Class::Write);
        assert_eq!(admit(), Admission::Admitted { remaining: 2 });
        assert_eq!(admit(), Admission::Admitted { remaining: 1 });
        assert_eq!(admit(), Admission::Admitted { remaining: 0 });
        match admit() {
            Admission::Throttled { retry_after } => {
                assert!(retry_after <= Duration::from_millis(500), "{retry_after:?}");
                assert!(retry_after > Duration::from_millis(400), "{retry_after:?}");
            }
            other => panic!("expected a throttle, got {other:?}"),
        }
        // Other principals, subscriptions and classes have their own buckets.
        assert!(matches!(
            buckets.admit("sub", "other-app", Class::Write),
            Admission::Admitted { .. }
        ));
        assert!(matches!(
            buckets.admit("sub2", "app", Class::Write),
            Admission::Admitted { .. }
        ));
        assert!(matches!(
            buckets.admit("sub", "app", Class::Read),
            Admission::Admitted { .. }
        ));
    }
}
