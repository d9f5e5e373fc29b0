//! The engine's integration tests: the providers against real PostgreSQL and PocketBase, the
//! PostgreSQL provider over TLS, and the local state backend across processes.

// Test code: unwrapping is how a test says "this must work" (clippy.toml allows it in
// `#[test]` functions; this extends it to the helpers beside them).
#![allow(clippy::unwrap_used)]

mod pbbackup;
mod pbprov;
mod pgprov;
mod pgroles;
mod pgtls;
mod state;
