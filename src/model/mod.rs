//! The validated, typed model and the dependency graph of every resource.
//!
//! Built by [`crate::spec`] from documents that passed schema validation; semantic
//! checks run on it there. This module does no IO and holds no secret values.

pub mod graph;
pub mod naming;
pub mod types;

pub use types::*;
