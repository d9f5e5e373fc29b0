//! The services' integration tests: `kombify-sso` and `kombify-health` against real
//! PostgreSQL and PocketBase, with a fake Zitadel (`sso_env`).

mod health;
mod sso;
mod sso_env;
