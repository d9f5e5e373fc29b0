//! The single integration test binary: every integration test is a module under `tests/it/`, so
//! the crate and its dependencies are linked once (the ripgrep/cargo layout).
//!
//! `support` starts real servers for tests; it is not a test module itself.

mod bicep;
mod deploy;
mod golden;
mod health;
mod kong;
mod pbprov;
mod pgprov;
mod pocketbase;
mod robustness;
mod servers;
mod sql;
mod sso;
mod sso_env;
mod state;
mod support;
mod tidy;
