//! The platform services `kombify-sso` and `kombify-health`: domain logic that is plain and
//! testable, and HTTP at the edge ([`http`] holds what both share: the one error format, request
//! ids, logging, secrets; [`server`] serves them, answering malformed requests in that format;
//! [`jose`] is the JWS/JWK code on `ring`).
//!
//! Not here: the binaries (`src/bin/`), which only parse arguments and start a server.

pub mod health;
pub mod http;
pub mod jose;
pub mod server;
pub mod sso;
