//! SIGINT and SIGTERM during `apply`: the first stops gracefully, a second exits at once.
//!
//! Signals are caught with `signal-hook`'s safe iterator on a thread of their own (no unsafe
//! code here; the workspace forbids it). What the first signal does depends on the phase:
//! while the apply prepares (reading, planning, asking), nothing has been changed, so the
//! lock is released and the process exits; once changes run, the engine's
//! [`Interrupt`] is triggered (the engine knows nothing of signals): nothing new starts,
//! calls in flight finish or are abandoned after the grace period, and `apply` journals,
//! audits, releases the lock and exits 130 (SIGINT) or 143 (SIGTERM). A second signal exits
//! at once with its own code; the lock is then left for the next run to break (its process
//! is gone). Not here: what the engine does when interrupted.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use kombiform_engine::apply::Interrupt;

use crate::errln;

/// Where the apply is.
enum Phase {
    /// Nothing changed yet; a stop runs `release` (the lock) and exits.
    Preparing {
        release: Option<Box<dyn FnOnce() + Send>>,
    },
    /// Changes run: a stop triggers the interrupt.
    Applying,
}

/// The signal watcher of one `apply`.
pub struct Stop {
    interrupt: Arc<Interrupt>,
    signal: AtomicI32,
    phase: Mutex<Phase>,
    grace_secs: u64,
}

/// The exit code for a signal: 128 + its number (130 for SIGINT, 143 for SIGTERM).
pub fn exit_code(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(1)
}

impl Stop {
    /// Starts watching SIGINT and SIGTERM. From now on they no longer end the process by
    /// default.
    pub fn install(grace_secs: u64) -> Result<Arc<Stop>> {
        let stop = Arc::new(Stop {
            interrupt: Interrupt::new(),
            signal: AtomicI32::new(0),
            phase: Mutex::new(Phase::Preparing { release: None }),
            grace_secs,
        });
        let mut signals = Signals::new([SIGINT, SIGTERM]).context("watching SIGINT and SIGTERM")?;
        let watcher = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("kombiform-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    watcher.on_signal(signal);
                }
            })
            .context("starting the signal watcher")?;
        Ok(stop)
    }

    /// The interrupt the engine watches.
    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    /// What a stop while preparing must undo (release the lock).
    pub fn on_stop_while_preparing(&self, release: Box<dyn FnOnce() + Send>) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        *phase = Phase::Preparing {
            release: Some(release),
        };
    }

    /// Enters the phase where changes run; from now on a signal interrupts the engine.
    pub fn enter_apply(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        *phase = Phase::Applying;
    }

    /// The exit code of the signal that stopped the apply, if one did.
    pub fn code(&self) -> Option<u8> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            s => Some(exit_code(s)),
        }
    }

    fn on_signal(&self, signal: i32) {
        let name = if signal == SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        if self
            .signal
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            errln!(
                "\n{name} again: exiting at once. Changes in flight are recorded as started (in \
                 doubt); the next plan reconciles them, and the next apply breaks this run's lock."
            );
            std::process::exit(i32::from(exit_code(signal)));
        }
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *phase {
            Phase::Preparing { release } => {
                if let Some(release) = release.take() {
                    release();
                }
                errln!("\n{name}: stopped before any change was applied; nothing was changed.");
                std::process::exit(i32::from(exit_code(signal)));
            }
            Phase::Applying => {
                self.interrupt.trigger();
                errln!(
                    "\n{name}: stopping. No new change starts; changes in flight may finish for \
                     up to {} s, then are abandoned. What completed is recorded, the audit \
                     record says `interrupted`. Send the signal again to exit at once.",
                    self.grace_secs
                );
            }
        }
    }
}
