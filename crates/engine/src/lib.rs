//! The deploy engine: plan against live systems, apply a saved plan along its dependencies,
//! record what was applied, lock against concurrent runs, leave audit records.
//!
//! - [`ops`]: the glue behind `kombiform plan` and `apply` (connect, read, plan, check a
//!   saved plan, apply with journal and audit).
//! - [`apply`]: runs a [`kombiform_plan::Plan`] (never a model) with bounded parallelism,
//!   retries and stop-on-failure.
//! - [`state`]: snapshot + journal, the lock, the audit log; the only code that knows the
//!   state format.
//! - [`providers`]: the only code that talks to the systems kombiform manages.
//!
//! Not here: the pure diff (`kombiform_plan`), what the specs want of each target
//! (`kombiform_emit`), printing and exit codes (the CLI).

pub mod apply;
pub mod ops;
pub mod providers;
pub mod state;
