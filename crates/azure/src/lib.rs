//! The Azure Resource Manager (ARM) client of kombiform: the one place that talks to ARM.
//!
//! [`Arm`] sends every request with its api-version and a bearer token from a credential
//! chain ([`CredentialSource`]: client secret or workload identity from the `AZURE_*`
//! variables, managed identity, Azure CLI; built on azure_identity over our reqwest client),
//! takes a token from a client-side budget per subscription and operation class first
//! ([`Limits`], ARM's own limits), retries 429 and 5xx after `Retry-After` or a backoff,
//! follows long-running operations to their end and lists across `nextLink` pages, and
//! counts what it sent ([`RequestCounts`]). Errors carry ARM's code, message and target
//! ([`ArmError`]). `KOMBIFORM_ARM_ENDPOINT` and `AZURE_AUTHORITY_HOST` point it at a test
//! server ([`ArmConfig`]).
//!
//! [`TokenSource`] gives tokens of the same chain for other Azure services (Blob Storage,
//! where the engine keeps a team's state).
//!
//! Not here: what a resource should look like, diffing, ordering or parallelism (the Azure
//! provider built on this crate does that). Bodies are `serde_json::Value`s, untouched.
//!
//! Code map: `config.rs` (endpoint, authority, environment) · `credential.rs` (the chain and
//! the token cache) · `transport.rs` (azure_identity over reqwest) · `client.rs` (one request:
//! budget, token, retries, counts) · `lro.rs` (get, list, put/delete/post and wait) ·
//! `budget.rs` · `clock.rs` · `error.rs`.

mod budget;
mod client;
mod clock;
mod config;
mod credential;
mod error;
mod lro;
mod transport;

pub use azure_core::credentials::Secret;
pub use budget::{BucketLimit, Limits, OperationClass};
pub use client::{Arm, ArmOptions, RequestCounts, RetryPolicy};
pub use clock::{Clock, ScaledClock, Sleep, SystemClock};
pub use config::{ArmConfig, ARM_ENDPOINT_ENV, AUTHORITY_HOST_ENV, DEFAULT_ARM_ENDPOINT};
pub use credential::{CredentialSource, TokenSource, ARM_SCOPE, CREDENTIAL_ENV, STORAGE_SCOPE};
pub use error::{ArmError, ErrorDetail, Terminal};
pub use lro::{Deleted, Put};
