//! The CLI's integration test binary: golden cases, `plan`/`apply` end to end against real
//! servers, robustness of the loader, and the tidy checks over the source tree. One binary,
//! so the crate and its dependencies are linked once (the ripgrep/cargo layout).

// Test code: unwrapping is how a test says "this must work" (clippy.toml allows it in
// `#[test]` functions; this extends it to the helpers beside them).
#![allow(clippy::unwrap_used)]

mod azure;
mod blob;
mod cli_golden;
mod deploy;
mod golden;
mod recovery;
mod robustness;
mod tidy;
mod unix;
