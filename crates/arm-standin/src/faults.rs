//! Fault injection: the `--faults SPEC` language and the dice that apply it.
//!
//! A SPEC is a comma-separated list of `key=value` items, every item optional:
//!
//! | item | meaning |
//! |---|---|
//! | `429=30%` | answer that share of ARM requests `429 ResourceRequestsThrottled` with `Retry-After` |
//! | `5xx=5%` | answer that share `500 InternalServerError` or `503 ServiceUnavailable` (with `Retry-After`) |
//! | `retry-after=2` | the `Retry-After` of injected 429 and 503 answers, in seconds (default 1; scaled by `--time-scale`) |
//! | `failed=10%` | end that share of long-running operations `Failed` |
//! | `canceled=5%` | end that share of long-running operations `Canceled` |
//! | `latency=100ms` | wait that long (real time: `ms` or `s`) before answering any request |
//! | `drop=2%` | close that share of connections without an answer |
//! | `reads=250/25` | ARM's read bucket per subscription and principal: capacity / refill per second (default 250/25) |
//! | `writes=200/10` | the write bucket (default 200/10) |
//! | `deletes=200/10` | the delete bucket (default 200/10) |
//! | `seed=7` | the seed of the dice (default 1), for repeatable runs |
//!
//! Faults apply to ARM requests, polls included, never to the token endpoint. Injected 429s
//! come on top of the real throttling: a request first takes a token from ARM's bucket (an
//! empty bucket is a `429 SubscriptionRequestsThrottled` whose `Retry-After` is the time until
//! the next token), then meets the dice.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// A bucket's capacity and refill rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketSpec {
    /// Tokens when full.
    pub capacity: f64,
    /// Tokens added per second (real time).
    pub refill_per_sec: f64,
}

/// The parsed `--faults` SPEC.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Share of requests answered 429 on top of real throttling (0..=1).
    pub throttle: f64,
    /// Share of requests answered 500 or 503.
    pub server_error: f64,
    /// `Retry-After` of injected answers, in the stand-in's (scaled) seconds.
    pub retry_after: Duration,
    /// Share of long-running operations that end Failed.
    pub failed: f64,
    /// Share of long-running operations that end Canceled.
    pub canceled: f64,
    /// Real-time delay before every answer.
    pub latency: Duration,
    /// Share of connections dropped without an answer.
    pub drop: f64,
    /// ARM's read bucket.
    pub reads: BucketSpec,
    /// ARM's write bucket.
    pub writes: BucketSpec,
    /// ARM's delete bucket.
    pub deletes: BucketSpec,
    /// Seed of the dice.
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            throttle: 0.0,
            server_error: 0.0,
            retry_after: Duration::from_secs(1),
            failed: 0.0,
            canceled: 0.0,
            latency: Duration::ZERO,
            drop: 0.0,
            reads: BucketSpec {
                capacity: 250.0,
                refill_per_sec: 25.0,
            },
            writes: BucketSpec {
                capacity: 200.0,
                refill_per_sec: 10.0,
            },
            deletes: BucketSpec {
                capacity: 200.0,
                refill_per_sec: 10.0,
            },
            seed: 1,
        }
    }
}

impl Faults {
    /// Parses a SPEC (see the module documentation); the empty SPEC is no faults.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut faults = Faults::default();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .with_context(|| format!("fault {item:?} is not key=value"))?;
            let value = value.trim();
            let context = || format!("fault {item:?}");
            match key.trim() {
                "429" => faults.throttle = share(value).with_context(context)?,
                "5xx" => faults.server_error = share(value).with_context(context)?,
                "retry-after" => {
                    let secs: u64 = value.parse().with_context(context)?;
                    faults.retry_after = Duration::from_secs(secs);
                }
                "failed" => faults.failed = share(value).with_context(context)?,
                "canceled" => faults.canceled = share(value).with_context(context)?,
                "latency" => faults.latency = duration(value).with_context(context)?,
                "drop" => faults.drop = share(value).with_context(context)?,
                "reads" => faults.reads = bucket(value).with_context(context)?,
                "writes" => faults.writes = bucket(value).with_context(context)?,
                "deletes" => faults.deletes = bucket(value).with_context(context)?,
                "seed" => faults.seed = value.parse().with_context(context)?,
                other => bail!(
                    "unknown fault {other:?} (known: 429, 5xx, retry-after, failed, canceled, \
                     latency, drop, reads, writes, deletes, seed)"
                ),
            }
        }
        if faults.throttle + faults.server_error + faults.drop > 1.0 {
            bail!("429, 5xx and drop shares add up to more than 100%");
        }
        if faults.failed + faults.canceled > 1.0 {
            bail!("failed and canceled shares add up to more than 100%");
        }
        Ok(faults)
    }
}

fn share(value: &str) -> Result<f64> {
    let Some(number) = value.strip_suffix('%') else {
        bail!("a share is a percentage such as 30%");
    };
    let percent: f64 = number.trim().parse().context("not a number")?;
    if !(0.0..=100.0).contains(&percent) {
        bail!("a share is between 0% and 100%");
    }
    Ok(percent / 100.0)
}

fn duration(value: &str) -> Result<Duration> {
    let (number, unit) = if let Some(n) = value.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1.0)
    } else {
        bail!("a duration ends in ms or s");
    };
    let number: f64 = number.trim().parse().context("not a number")?;
    if !(number.is_finite() && number >= 0.0) {
        bail!("a duration is not negative");
    }
    Ok(Duration::from_secs_f64(number * unit))
}

fn bucket(value: &str) -> Result<BucketSpec> {
    let (capacity, refill) = value
        .split_once('/')
        .context("a bucket is CAPACITY/REFILL_PER_SECOND")?;
    let capacity: f64 = capacity.trim().parse().context("capacity")?;
    let refill_per_sec: f64 = refill.trim().parse().context("refill")?;
    if capacity < 1.0 || refill_per_sec <= 0.0 {
        bail!("a bucket holds at least 1 token and refills");
    }
    Ok(BucketSpec {
        capacity,
        refill_per_sec,
    })
}

/// What the dice decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestFault {
    None,
    Throttle,
    ServerError { unavailable: bool },
    Drop,
}

/// How a new long-running operation will end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeeded,
    Failed,
    Canceled,
}

/// SplitMix64: small, seedable, good enough for dice.
#[derive(Debug)]
pub(crate) struct Dice {
    state: Mutex<u64>,
}

impl Dice {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: Mutex::new(seed),
        }
    }

    /// A number in [0, 1).
    pub(crate) fn roll(&self) -> f64 {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn request(&self, faults: &Faults) -> RequestFault {
        let roll = self.roll();
        if roll < faults.throttle {
            RequestFault::Throttle
        } else if roll < faults.throttle + faults.server_error {
            RequestFault::ServerError {
                unavailable: self.roll() < 0.5,
            }
        } else if roll < faults.throttle + faults.server_error + faults.drop {
            RequestFault::Drop
        } else {
            RequestFault::None
        }
    }

    pub(crate) fn outcome(&self, faults: &Faults) -> Outcome {
        let roll = self.roll();
        if roll < faults.failed {
            Outcome::Failed
        } else if roll < faults.failed + faults.canceled {
            Outcome::Canceled
        } else {
            Outcome::Succeeded
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_spec_parses() {
        let f = Faults::parse(
            "429=30%, 5xx=5%, retry-after=2, failed=10%, canceled=5%, latency=100ms, drop=1%, \
             reads=40/100, writes=20/50, deletes=20/50, seed=7",
        )
        .unwrap();
        assert_eq!(f.throttle, 0.3);
        assert_eq!(f.server_error, 0.05);
        assert_eq!(f.retry_after, Duration::from_secs(2));
        assert_eq!(f.failed, 0.1);
        assert_eq!(f.canceled, 0.05);
        assert_eq!(f.latency, Duration::from_millis(100));
        assert_eq!(f.drop, 0.01);
        assert_eq!(f.reads.capacity, 40.0);
        assert_eq!(f.writes.refill_per_sec, 50.0);
        assert_eq!(f.seed, 7);
        assert_eq!(Faults::parse("").unwrap(), Faults::default());
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let err = |spec| format!("{:#}", Faults::parse(spec).unwrap_err());
        assert!(err("429=30").contains("percentage"), "{}", err("429=30"));
        assert!(err("boom=1%").contains("unknown fault"));
        assert!(err("latency=5").contains("ms or s"));
        assert!(err("reads=0/1").contains("at least 1 token"));
        assert!(err("429=60%,5xx=50%").contains("more than 100%"));
        assert!(err("drop").contains("key=value"));
    }

    #[test]
    fn dice_follow_the_shares() {
        let faults = Faults::parse("429=30%,5xx=10%").unwrap();
        let dice = Dice::new(42);
        let rolls: Vec<RequestFault> = (0..10_000).map(|_| dice.request(&faults)).collect();
        let throttled = rolls
            .iter()
            .filter(|f| **f == RequestFault::Throttle)
            .count();
        let errors = rolls
            .iter()
            .filter(|f| matches!(f, RequestFault::ServerError { .. }))
            .count();
        assert!((2700..3300).contains(&throttled), "{throttled}");
        assert!((800..1200).contains(&errors), "{errors}");
    }
}
