//! The state lock: who holds it ([`LockInfo`]), why a second run is refused
//! ([`LockError`]), and the guard that releases it ([`LockGuard`]).
//!
//! Not storage: the backends create and remove lock files or blobs. Neither this module nor a
//! backend breaks a lock: the error says whether its process is gone and names the command
//! that breaks it. The CLI breaks, with a warning, a lock whose process on this host is gone
//! (a killed apply), so that running again resumes; any other lock stays until
//! `kombiform state unlock`.

use std::fmt;

use serde::{Deserialize, Serialize};

use kombiform_sys as sys;

/// Who holds a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Random id: `kombiform state unlock ID` must name it.
    pub id: String,
    /// The user who ran the command.
    pub user: String,
    /// The host it ran on.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// When it took the lock (RFC 3339, UTC).
    pub started_at: String,
    /// The command line, without secrets.
    pub command: String,
}

impl LockInfo {
    /// A lock for this process running `command`: fresh id, current user, host, pid, time.
    pub fn current(command: impl Into<String>) -> LockInfo {
        LockInfo {
            id: sys::random_id(),
            user: sys::user(),
            host: sys::host(),
            pid: std::process::id(),
            started_at: sys::now_rfc3339(),
            command: command.into(),
        }
    }

    /// Whether the holding process is known to be gone: it ran on this host and no
    /// longer exists. `false` when that cannot be known (another host).
    pub fn process_gone(&self) -> bool {
        self.host == sys::host() && sys::process_gone(self.pid)
    }

    /// `user@host (pid P, since T, running `C`)`.
    pub fn describe(&self) -> String {
        format!(
            "{}@{} (pid {}, since {}, running `{}`)",
            self.user, self.host, self.pid, self.started_at, self.command
        )
    }
}

/// Why a lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Someone holds it.
    Held {
        /// The environment.
        env: String,
        /// The holder.
        holder: Box<LockInfo>,
        /// The holder ran on this host and its process no longer exists.
        process_gone: bool,
    },
    /// A lock exists but cannot be read (damaged): removing it is a manual decision.
    Unreadable {
        /// The environment.
        env: String,
        /// Where it is.
        location: String,
        /// Why it cannot be read.
        reason: String,
    },
    /// Storage failed.
    Io(anyhow::Error),
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Held {
                env,
                holder,
                process_gone,
            } => {
                write!(
                    f,
                    "the state of environment `{env}` is locked by {}, lock id {}",
                    holder.describe(),
                    holder.id
                )?;
                if *process_gone {
                    write!(
                        f,
                        "; process {} on {} is gone, so the lock is stale: break it with \
                         `kombiform state unlock {} --env {env}`",
                        holder.pid, holder.host, holder.id
                    )
                } else {
                    write!(
                        f,
                        "; if that run is over, break the lock with \
                         `kombiform state unlock {} --env {env}`",
                        holder.id
                    )
                }
            }
            LockError::Unreadable {
                env,
                location,
                reason,
            } => write!(
                f,
                "the state of environment `{env}` is locked, but the lock at {location} cannot \
                 be read ({reason}); make sure no run is active, then remove it by hand"
            ),
            LockError::Io(e) => write!(f, "taking the state lock: {e:#}"),
        }
    }
}

impl std::error::Error for LockError {}

/// A held lock. Released on [`LockGuard::release`] or on drop, only if it is still ours.
pub struct LockGuard {
    info: LockInfo,
    release: Option<Box<dyn FnOnce() -> anyhow::Result<()> + Send>>,
}

impl LockGuard {
    /// A guard for `info` that runs `release` once.
    pub fn new(
        info: LockInfo,
        release: Box<dyn FnOnce() -> anyhow::Result<()> + Send>,
    ) -> LockGuard {
        LockGuard {
            info,
            release: Some(release),
        }
    }

    /// The lock held.
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// Releases the lock now, reporting a failure (drop ignores it).
    pub fn release(mut self) -> anyhow::Result<()> {
        match self.release.take() {
            Some(f) => f(),
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(f) = self.release.take() {
            // Nothing to report to in a destructor; a lock left behind names its holder.
            let _ = f();
        }
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}
