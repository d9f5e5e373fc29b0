//! The services' integration tests: `kombify-sso` and `kombify-health` against real
//! PostgreSQL and PocketBase, with a fake Zitadel (`sso_env`); malformed requests over raw TCP
//! against the binaries (`edge`, with `wire`).

mod edge;
mod health;
mod sso;
mod sso_env;
mod wire;
