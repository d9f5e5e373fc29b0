//! The emitters' integration tests: generated Bicep parsed by the tree-sitter grammar, Kong
//! configs through the typed checks, PocketBase output imported into the real PocketBase
//! (and its rules tried by a hostile tenant member),
//! SQL applied to the real PostgreSQL.

// Test code: unwrapping is how a test says "this must work" (clippy.toml allows it in
// `#[test]` functions; this extends it to the helpers beside them).
#![allow(clippy::unwrap_used)]
// Tests may do IO (temp dirs, servers); the emitter itself may not (clippy-pure.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod bicep;
mod kong;
mod kong_check;
mod kong_errors;
mod pocketbase;
mod pocketbase_rules;
mod sql;
