//! The emitters' integration tests: generated Bicep parsed by the tree-sitter grammar, Kong
//! configs through the typed checks, PocketBase output imported into the real PocketBase
//! (and its rules tried by a hostile tenant member),
//! SQL applied to the real PostgreSQL.

// Tests may do IO (temp dirs, servers); the emitter itself may not (clippy-pure.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod bicep;
mod kong;
mod kong_check;
mod pocketbase;
mod pocketbase_rules;
mod sql;
