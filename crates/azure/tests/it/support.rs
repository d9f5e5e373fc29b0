//! A stand-in on loopback and a client pointed at it the way production code is configured:
//! `KOMBIFORM_ARM_ENDPOINT`, `AZURE_AUTHORITY_HOST` and the `AZURE_*` credential variables
//! (read from a map, not the process environment, so tests can run in parallel), plus trust
//! in the stand-in's CA.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use kombiform_arm_standin::{Config, Record, StandIn};
use kombiform_azure::{Arm, ArmConfig, ArmOptions, RetryPolicy};

pub(crate) const SUB: &str = "5a1d0c3e-0000-4000-8000-00000000cafe";
pub(crate) const RG_API: &str = "2025-04-01";

pub(crate) async fn start(config: Config) -> Result<StandIn> {
    StandIn::start(config)
        .await
        .context("starting the stand-in")
}

/// The environment a CI job would set, pointing at `standin`.
pub(crate) fn environment(standin: &StandIn) -> HashMap<String, String> {
    [
        ("KOMBIFORM_ARM_ENDPOINT", standin.url()),
        ("AZURE_AUTHORITY_HOST", standin.url()),
        ("AZURE_TENANT_ID", "kombiform-tests".to_owned()),
        ("AZURE_CLIENT_ID", "kombiform-ci".to_owned()),
        ("AZURE_CLIENT_SECRET", "not-a-real-secret".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

pub(crate) fn client_with(
    standin: &StandIn,
    vars: &HashMap<String, String>,
    options: ArmOptions,
) -> Result<Arm> {
    let config = ArmConfig::from_lookup(&|name| vars.get(name).cloned())?;
    let options = ArmOptions {
        extra_root_certificates: vec![standin.ca_pem().as_bytes().to_vec()],
        ..options
    };
    Ok(Arm::new(config, options)?)
}

pub(crate) fn client(standin: &StandIn, options: ArmOptions) -> Result<Arm> {
    client_with(standin, &environment(standin), options)
}

/// Retries and polls on a short leash, for stand-ins whose time is compressed.
pub(crate) fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_secs(2),
        default_poll_interval: Duration::from_millis(20),
        ..RetryPolicy::default()
    }
}

pub(crate) fn group(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{name}")
}

/// The records after the first one for `method path` (case-insensitive path match).
pub(crate) fn after<'a>(records: &'a [Record], method: &str, path: &str) -> &'a [Record] {
    let at = records
        .iter()
        .position(|r| r.method == method && r.path.eq_ignore_ascii_case(path))
        .unwrap_or_else(|| panic!("no {method} {path} in the record"));
    &records[at + 1..]
}

/// `METHOD path-tail` of records, for readable assertions on call sequences: the path is
/// cut to its last `keep` segments.
pub(crate) fn calls(records: &[Record], keep: usize) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            let segments: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
            let tail = segments[segments.len().saturating_sub(keep)..].join("/");
            format!("{} {tail}", r.method)
        })
        .collect()
}
