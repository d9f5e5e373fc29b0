//! Providers: the only code that talks to the systems kombiform manages.
//!
//! One [`Provider`] per target (PostgreSQL, PocketBase, later ARM and Kong). A provider
//! reads the live state of everything it manages in bulk (requests grow with pages, not
//! with resources), and applies changes. What the specs want of a target is computed by
//! the provider module's pure `desired(env)` function, so that `plan` can be tested without
//! servers. Providers never print; they report through return values.

pub mod pocketbase;
pub mod postgres;

use std::time::Duration;

use kombiform_plan::{Change, Resource};

/// What a provider read.
#[derive(Clone, Debug, Default)]
pub struct LiveRead {
    /// Every resource the provider could manage, normalised like desired resources.
    pub resources: Vec<Resource>,
    /// Requests (or queries) it took, for the benchmark and the plan summary.
    pub requests: u64,
}

/// A failure worth retrying (rate limited, overloaded, connection reset): the apply engine
/// retries it with backoff, waiting at least `retry_after` when the remote said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transient {
    /// What happened.
    pub message: String,
    /// How long the remote asked us to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.retry_after {
            Some(d) => write!(f, "{} (retry after {} ms)", self.message, d.as_millis()),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for Transient {}

/// An audit record of one apply, as providers that keep an audit trail store it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// Who ran it (`user@host`).
    pub actor: String,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// When it ended (RFC 3339, UTC).
    pub finished_at: String,
    /// The environment.
    pub env: String,
    /// The command line, without secrets.
    pub command: String,
    /// Hash of the applied plan.
    pub plan_hash: String,
    /// `address action result` per change.
    pub changes: Vec<AuditChange>,
    /// `succeeded`, `failed` or `refused`.
    pub result: String,
    /// The error, if any (no secrets).
    pub error: Option<String>,
}

/// One change in an audit record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditChange {
    /// The resource's address.
    pub address: String,
    /// `create`, `update`, `replace`, `delete`.
    pub action: String,
    /// `done`, `failed` or `not started`.
    pub result: String,
}

/// A target kombiform can plan and apply.
pub trait Provider: Send + Sync {
    /// The address prefix of its resources (`postgres`, `pocketbase`).
    fn name(&self) -> &'static str;

    /// Reads the live state of every resource it could manage.
    fn read(&self) -> anyhow::Result<LiveRead>;

    /// Marks changes destructive that the generic diff cannot judge (removing a field of a
    /// collection that holds data). Pure; the default does nothing.
    fn classify(&self, change: &mut Change) {
        let _ = change;
    }

    /// Whether [`Provider::apply`] takes all of this provider's changes at once, in one
    /// transaction (PostgreSQL), rather than one at a time.
    fn batched(&self) -> bool {
        false
    }

    /// Applies changes in the order given: one change, or all of them when [`batched`].
    /// A [`Transient`] error (downcast from the `anyhow::Error`) is retried by the engine.
    ///
    /// [`batched`]: Provider::batched
    fn apply(&self, changes: &[&Change]) -> anyhow::Result<()>;

    /// Stores an audit record, if this target keeps an audit trail. The default does nothing.
    fn record_audit(&self, record: &AuditRecord) -> anyhow::Result<()> {
        let _ = record;
        Ok(())
    }
}

/// Whether an error is [`Transient`], and how long to wait if the remote said.
pub fn transient(err: &anyhow::Error) -> Option<&Transient> {
    err.chain().find_map(|e| e.downcast_ref::<Transient>())
}
