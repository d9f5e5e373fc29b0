//! Progress on long work: a spinner for validating, building and reading live state, and an
//! apply's status (done / running / waiting, elapsed, the slowest running change).
//!
//! On a terminal both are a live status line at the bottom of standard error
//! ([`crate::output::status`]), redrawn a few times a second. Not on a terminal (a pipe, a
//! CI log) there is no spinner and no status line; an apply prints a heartbeat line every
//! `--heartbeat` seconds instead (10 by default), so a log shows it is alive. `--quiet`
//! silences all of it. The state of an apply ([`Tracker`]) is plain data with the time
//! passed in, so its lines are tested without a clock.
//!
//! Not here: the per-change log lines and the summary of an apply (`cli.rs`), or what the
//! engine reports ([`kombiform_engine::apply::Event`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kombiform_engine::apply::Event;

use crate::{errln, output};

/// How long validating or building runs before a spinner appears.
pub(crate) const SPINNER_DELAY: Duration = Duration::from_secs(2);

/// How often a live line is redrawn.
const REDRAW: Duration = Duration::from_millis(200);

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// A stop flag a drawing thread waits on.
#[derive(Default)]
struct StopFlag {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopFlag {
    /// Waits up to `d`; true once stopped.
    fn wait(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }

    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
    }
}

/// A background thread drawing progress until dropped.
struct Drawer {
    stop: Arc<StopFlag>,
    thread: Option<JoinHandle<()>>,
}

impl Drawer {
    fn spawn(f: impl FnOnce(&StopFlag) + Send + 'static) -> Drawer {
        let stop = Arc::new(StopFlag::default());
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("kombiform-progress".into())
            .spawn(move || f(&flag))
            .ok();
        Drawer { stop, thread }
    }
}

impl Drop for Drawer {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        output::status(None);
    }
}

/// Whether live lines are drawn: a terminal, and not `--quiet`.
fn live() -> bool {
    output::stderr_is_terminal() && !output::quiet()
}

/// A spinner with a label and the time elapsed, on a terminal only; it disappears when
/// dropped.
pub(crate) struct Spinner {
    _drawer: Option<Drawer>,
}

impl Spinner {
    /// A spinner that appears only if the work takes longer than [`SPINNER_DELAY`].
    pub(crate) fn delayed(label: String) -> Spinner {
        Spinner::start(label, SPINNER_DELAY)
    }

    /// A spinner that appears at once.
    pub(crate) fn now(label: String) -> Spinner {
        Spinner::start(label, Duration::ZERO)
    }

    fn start(label: String, delay: Duration) -> Spinner {
        if !live() {
            return Spinner { _drawer: None };
        }
        let started = Instant::now();
        let drawer = Drawer::spawn(move |stop| {
            if stop.wait(delay) {
                return;
            }
            for frame in FRAMES.iter().cycle() {
                let secs = started.elapsed().as_secs();
                output::status(Some(&format!("{frame} {label} ({secs} s)")));
                if stop.wait(REDRAW) {
                    return;
                }
            }
        });
        Spinner {
            _drawer: Some(drawer),
        }
    }
}

/// What an apply is doing, from its events.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    total: usize,
    done: usize,
    failed: usize,
    running: BTreeMap<String, Instant>,
}

impl Tracker {
    /// An apply of `total` changes.
    pub(crate) fn new(total: usize) -> Tracker {
        Tracker {
            total,
            ..Tracker::default()
        }
    }

    /// Takes in an event that happened at `now`.
    pub(crate) fn observe(&mut self, e: &Event, now: Instant) {
        match e {
            Event::Started { address, .. } => {
                self.running.insert(address.clone(), now);
            }
            Event::Done { address, .. } | Event::Unrecorded { address, .. } => {
                self.running.remove(address);
                self.done += 1;
            }
            Event::Failed { address, .. } | Event::Abandoned { address, .. } => {
                self.running.remove(address);
                self.failed += 1;
            }
            Event::Retrying { .. } => {}
        }
    }

    /// `12/40 done, 4 running, 24 waiting, 35 s; slowest: ADDRESS (12 s)`.
    pub(crate) fn line(&self, elapsed: Duration, now: Instant) -> String {
        let waiting = self
            .total
            .saturating_sub(self.done + self.failed + self.running.len());
        let mut s = format!(
            "{}/{} done, {} running, {waiting} waiting",
            self.done,
            self.total,
            self.running.len()
        );
        if self.failed > 0 {
            s.push_str(&format!(", {} failed", self.failed));
        }
        s.push_str(&format!(", {} s", elapsed.as_secs()));
        if let Some((address, since)) = self.running.iter().min_by_key(|(a, t)| (**t, *a)) {
            let secs = now.saturating_duration_since(*since).as_secs();
            s.push_str(&format!("; slowest: {address} ({secs} s)"));
        }
        s
    }
}

/// The progress of one apply: a live status line on a terminal, a heartbeat line every
/// `heartbeat` when not (none with a zero interval), nothing with `--quiet`.
pub(crate) struct ApplyProgress {
    tracker: Arc<Mutex<Tracker>>,
    _drawer: Option<Drawer>,
}

impl ApplyProgress {
    /// Starts showing the progress of an apply of `total` changes.
    pub(crate) fn start(total: usize, heartbeat: Duration) -> ApplyProgress {
        let tracker = Arc::new(Mutex::new(Tracker::new(total)));
        let started = Instant::now();
        let shared = Arc::clone(&tracker);
        let line = move || {
            let t = shared.lock().unwrap_or_else(|p| p.into_inner());
            t.line(started.elapsed(), Instant::now())
        };
        let drawer = if output::quiet() {
            None
        } else if output::stderr_is_terminal() {
            Some(Drawer::spawn(move |stop| {
                for frame in FRAMES.iter().cycle() {
                    output::status(Some(&format!("{frame} apply: {}", line())));
                    if stop.wait(REDRAW) {
                        return;
                    }
                }
            }))
        } else if heartbeat.is_zero() {
            None
        } else {
            Some(Drawer::spawn(move |stop| {
                while !stop.wait(heartbeat) {
                    errln!("apply still running: {}", line());
                }
            }))
        };
        ApplyProgress {
            tracker,
            _drawer: drawer,
        }
    }

    /// Takes in an event of the apply.
    pub(crate) fn observe(&self, e: &Event) {
        self.tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(e, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(a: &str) -> Event {
        Event::Started {
            address: a.into(),
            action: kombiform_plan::Action::Create,
        }
    }

    #[test]
    fn the_status_counts_and_names_the_slowest_running_change() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut t = Tracker::new(5);
        t.observe(&started("pg.a"), at(0));
        t.observe(&started("pb.b"), at(1));
        t.observe(&started("pb.c"), at(2));
        assert_eq!(
            t.line(Duration::from_secs(3), at(3)),
            "0/5 done, 3 running, 2 waiting, 3 s; slowest: pg.a (3 s)"
        );
        t.observe(
            &Event::Done {
                address: "pg.a".into(),
                action: kombiform_plan::Action::Create,
                elapsed_ms: 4000,
            },
            at(4),
        );
        t.observe(
            &Event::Failed {
                address: "pb.c".into(),
                action: kombiform_plan::Action::Create,
                error: "boom".into(),
            },
            at(5),
        );
        assert_eq!(
            t.line(Duration::from_secs(12), at(12)),
            "1/5 done, 1 running, 2 waiting, 1 failed, 12 s; slowest: pb.b (11 s)"
        );
    }

    #[test]
    fn nothing_is_drawn_or_spawned_off_a_terminal() {
        // The test runner's standard error is captured, not a terminal.
        assert!(!output::stderr_is_terminal());
        let s = Spinner::now("reading".into());
        assert!(s._drawer.is_none());
        let p = ApplyProgress::start(3, Duration::ZERO);
        assert!(p._drawer.is_none());
    }
}
