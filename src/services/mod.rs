//! The platform services `kombify-sso` and `kombify-health`: domain logic that is pure and
//! testable, with HTTP at the edge. The binaries in `src/bin/` are thin wrappers over these.
//!
//! Not here: the compiler pipeline (`spec`, `model`, `emit`), which these services only read
//! configuration types from.

pub mod health;
