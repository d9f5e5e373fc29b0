//! kombiform: an infrastructure-as-code compiler and deploy engine for the kombify platform.
//!
//! The pipeline, one module per stage:
//! - [`spec`]: YAML files → span-carrying documents → diagnostics (schema + semantics).
//! - [`model`]: the validated, typed model and the dependency graph of every resource.
//! - [`emit`]: the model → files under `generated/` (Kong, Bicep, PocketBase, SQL, services).
//! - [`services`]: the `kombify-sso` and `kombify-health` services (axum), which do IO.
//!
//! None of the pipeline stages does IO; the binary (`src/main.rs`) reads and writes files.
//!
//! The deploy engine around them:
//! - [`plan`]: desired vs live resources → a plan (pure).
//! - [`providers`]: the only code that talks to the systems kombiform manages.
//! - [`state`]: what was applied (snapshot + journal), the lock, the audit trail; the only
//!   code that knows the state format.

pub mod apply;
pub mod cli;
pub mod emit;
pub mod model;
pub mod ops;
pub mod plan;
pub mod providers;
pub mod services;
pub mod spec;
pub mod state;
pub mod testkit;
