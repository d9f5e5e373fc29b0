//! Providers: the only code that talks to the systems kombiform manages.
//!
//! A provider is a target's pure part (`kombiform_emit::targets`: what the specs want,
//! what it owns, what needs consent) paired with a [`Client`] that connects, reads the live
//! state in bulk (requests grow with pages, not with resources) and applies changes. Each
//! provider is one module registered once in [`REGISTRY`]; `ops` loops over the registry and
//! matches on no provider name. Adding a target's client is one module and one entry.
//! Providers never print; they report through return values.

pub mod azure;
pub mod kong;
pub mod pocketbase;
pub mod postgres;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use kombiform_emit::targets::Target;
use kombiform_model::Env;
use kombiform_plan::{Change, Resource};

/// A target's client: the IO half of a provider.
pub trait Client: Send + Sync {
    /// Reads the live state of every resource the target could manage.
    fn read(&self) -> Result<LiveRead>;

    /// Whether [`Client::apply`] takes all of this provider's changes at once, in one
    /// transaction (PostgreSQL), rather than one at a time.
    fn batched(&self) -> bool {
        false
    }

    /// Applies changes in the order given: one change, or all of them when [`batched`].
    /// A [`Transient`] error (downcast from the `anyhow::Error`) is retried by the engine.
    ///
    /// [`batched`]: Client::batched
    fn apply(&self, changes: &[&Change]) -> Result<()>;

    /// Inputs `changes` need that nobody gave (a secret only a person can provide): apply
    /// leaves those changes and what depends on them out, and says what to set. The default
    /// has none.
    fn missing_inputs(&self, changes: &[Change]) -> Vec<MissingInput> {
        let _ = changes;
        Vec::new()
    }

    /// Stores an audit record, if this target keeps an audit trail. The default does nothing.
    fn record_audit(&self, record: &AuditRecord) -> Result<()> {
        let _ = record;
        Ok(())
    }
}

/// One registered provider: a target and how to connect its client for an environment.
pub struct Registration {
    /// The pure part.
    pub target: &'static dyn Target,
    /// Connects the client, resolving the environment's secrets.
    pub connect: fn(Env<'_>) -> Result<Box<dyn Client>>,
    /// Whether the environment has something for this client to talk to (Kong: a gateway
    /// runtime kombiform delivers to). Targets without one stay in the graph, not in plans.
    pub available: fn(Env<'_>) -> bool,
}

/// [`Registration::available`] of providers every environment has.
pub fn always(_env: Env<'_>) -> bool {
    true
}

/// Every provider kombiform can plan and apply.
pub const REGISTRY: &[Registration] = &[
    azure::REGISTRATION,
    kong::REGISTRATION,
    postgres::REGISTRATION,
    pocketbase::REGISTRATION,
];

/// A connected provider.
pub struct Provider {
    /// The pure part.
    pub target: &'static dyn Target,
    /// The client (shared with the threads that run its calls).
    pub client: Arc<dyn Client>,
}

impl Provider {
    /// The address prefix of its resources.
    pub fn name(&self) -> &'static str {
        self.target.name()
    }
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("target", &self.name())
            .finish_non_exhaustive()
    }
}

/// The registered provider of `target`, if it has a client.
pub fn registration(target: &str) -> Option<&'static Registration> {
    REGISTRY.iter().find(|r| r.target.name() == target)
}

/// What a provider read.
#[derive(Clone, Debug, Default)]
pub struct LiveRead {
    /// Every resource the provider could manage, normalised like desired resources.
    pub resources: Vec<Resource>,
    /// Requests (or queries) it took, for the benchmark and the plan summary.
    pub requests: u64,
}

/// An input a person must give before a change can be applied.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MissingInput {
    /// The change that needs it.
    pub address: String,
    /// What is missing (`Key Vault secret stripe-webhook-secret of kfy-prod-kv`).
    pub what: String,
    /// How to give it.
    pub command: String,
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
    /// A random id: a record delivered again (after a lost answer) is stored once.
    #[serde(default)]
    pub id: String,
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
    /// `succeeded`, `partially failed` (some changes applied, some not), `failed` (none
    /// applied), `interrupted` (stopped by a signal) or `refused`.
    pub result: String,
    /// The error, if any (no secrets).
    pub error: Option<String>,
    /// Live resources recorded in state as they were found (an earlier apply was
    /// interrupted after making them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopted: Vec<String>,
    /// Records dropped from state: their resources are gone and no longer wanted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forgotten: Vec<String>,
}

/// One change in an audit record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditChange {
    /// The resource's address.
    pub address: String,
    /// `create`, `update`, `replace`, `delete`.
    pub action: String,
    /// `done`; `unrecorded` (applied, the state could not record it); `failed`;
    /// `abandoned` (in flight when an interrupted apply ended: outcome unknown); `not
    /// started`.
    pub result: String,
}

/// Whether an error is [`Transient`], and how long to wait if the remote said.
pub fn transient(err: &anyhow::Error) -> Option<&Transient> {
    err.chain().find_map(|e| e.downcast_ref::<Transient>())
}
