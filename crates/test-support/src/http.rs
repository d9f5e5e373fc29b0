//! The HTTP client tests use to talk to their loopback servers: reqwest's blocking client, the
//! workspace's one HTTP client family, with ring (through `kombiform_sys::tls`) as its crypto.
//!
//! A 4xx or 5xx is a response, not an error (tests assert on statuses, and reqwest only turns
//! them into errors on request), and a loopback server is never reached through the
//! environment's proxy. Not a wrapper API: callers use `reqwest::blocking` directly.

use std::time::Duration;

use anyhow::{Context, Result};

/// A blocking client with an overall `timeout` per request, no proxy.
pub fn client(timeout: Duration) -> Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(kombiform_sys::tls::client_config()?)
        .timeout(timeout)
        .no_proxy()
        .build()
        .context("building the tests' HTTP client")
}
