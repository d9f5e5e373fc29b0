//! The services' integration tests: `kombify-sso` and `kombify-health` against real
//! PostgreSQL and PocketBase, with a fake Zitadel (`sso_env`).

// Test code: unwrapping is how a test says "this must work" (clippy.toml allows it in
// `#[test]` functions; this extends it to the helpers beside them).
#![allow(clippy::unwrap_used)]

mod health;
mod sso;
mod sso_env;
