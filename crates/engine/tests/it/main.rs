//! The engine's integration tests: the providers against real PostgreSQL and PocketBase, the
//! PostgreSQL provider over TLS, the local state backend across processes, and the Azure Blob
//! state backend against Azurite.

// Test code: unwrapping is how a test says "this must work" (clippy.toml allows it in
// `#[test]` functions; this extends it to the helpers beside them).
#![allow(clippy::unwrap_used)]

mod blob;
mod kongprov;
mod pbbackup;
mod pbprov;
mod pgprov;
mod pgroles;
mod pgtls;
mod state;
