//! The platform services `kombify-sso` and `kombify-health`: domain logic that is plain and
//! testable, and HTTP at the edge ([`http`] holds what both share: the one error format, request
//! ids, logging, secrets).
//!
//! Not here: the binaries (`src/bin/`), which only parse arguments and start a server.

pub mod health;
pub mod http;
pub mod sso;
