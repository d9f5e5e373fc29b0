//! The services' integration tests: `kombify-sso` and `kombify-health` against real
//! PostgreSQL and PocketBase, with a fake Zitadel (`sso_env`); their PostgreSQL clients over
//! TLS (`sso_tls`, and in `health`); malformed requests over raw TCP against the binaries
//! (`edge`, with `wire`); a Stripe plan change kept by the next plan of the deploy engine
//! (`ownership`).

// Test code: unwrapping is how a test says "this must work" (clippy.toml allows it in
// `#[test]` functions; this extends it to the helpers beside them).
#![allow(clippy::unwrap_used)]

mod edge;
mod health;
mod ownership;
mod platform_tokens;
mod sso;
mod sso_env;
mod sso_tls;
mod wire;
