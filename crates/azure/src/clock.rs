//! Time as the ARM client sees it: when a budget refills and how long a wait lasts.
//!
//! The client never reads the system clock directly: a [`Clock`] is passed in, so tests can
//! compress time ([`ScaledClock`]: a recorded `Retry-After: 17` becomes 17 ms) or step it by
//! hand, while the code under test is the same.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// A boxed wait, as returned by [`Clock::sleep`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A source of time for budgets, backoff and polling.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Time since this clock's origin, in the clock's own seconds.
    fn now(&self) -> Duration;
    /// A future that completes after `duration` of the clock's time.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// Real time: `now` is the time since the clock was made, `sleep` is tokio's.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Real time, compressed: one second of this clock lasts `scale` real seconds
/// (`ScaledClock::new(0.001)` turns a 17 s poll interval into 17 ms, and a bucket refilling
/// 25 tokens per clock second refills 25,000 per real second).
#[derive(Debug)]
pub struct ScaledClock {
    origin: Instant,
    scale: f64,
}

impl ScaledClock {
    /// A clock running `1 / scale` times faster than real time. `scale` must be positive and
    /// finite; anything else is taken as 1 (real time).
    pub fn new(scale: f64) -> Self {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        Self {
            origin: Instant::now(),
            scale,
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Duration {
        self.origin.elapsed().div_f64(self.scale)
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration.mul_f64(self.scale)))
    }
}

#[cfg(test)]
pub(crate) mod manual {
    //! A clock that moves only when told to (unit tests of the budget).

    use super::{Clock, Sleep};
    use std::sync::Mutex;
    use std::time::Duration;

    /// Time stands still until [`ManualClock::advance`]; `sleep` advances it by the time slept
    /// and returns at once, so a waiting caller sees exactly the time it asked for pass.
    #[derive(Debug, Default)]
    pub(crate) struct ManualClock {
        now: Mutex<Duration>,
    }

    impl ManualClock {
        pub(crate) fn advance(&self, by: Duration) {
            *self.now.lock().unwrap() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Duration {
            *self.now.lock().unwrap()
        }

        fn sleep(&self, duration: Duration) -> Sleep {
            self.advance(duration);
            Box::pin(std::future::ready(()))
        }
    }
}
