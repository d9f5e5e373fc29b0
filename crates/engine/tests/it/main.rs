//! The engine's integration tests: the providers against real PostgreSQL and PocketBase, and
//! the local state backend across processes.

mod pbprov;
mod pgprov;
mod state;
