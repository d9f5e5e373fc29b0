//! Where the client connects, and as whom: the ARM endpoint, the Entra authority host and the
//! credential chain, read from the environment.
//!
//! `KOMBIFORM_ARM_ENDPOINT` (default `https://management.azure.com`) and
//! `AZURE_AUTHORITY_HOST` (default azure_identity's, `https://login.microsoftonline.com`) point
//! the real client and the real credential at a test server such as `kombiform-arm-standin`;
//! nothing else changes. A bearer token is only ever sent over HTTPS, or over plain HTTP to a
//! loopback address.

use reqwest::Url;

use crate::credential::CredentialSource;
use crate::error::ArmError;

/// The environment variable naming the ARM endpoint.
pub const ARM_ENDPOINT_ENV: &str = "KOMBIFORM_ARM_ENDPOINT";

/// The environment variable naming the Entra authority host (azure_identity's own name).
pub const AUTHORITY_HOST_ENV: &str = "AZURE_AUTHORITY_HOST";

/// Azure's public-cloud ARM endpoint.
pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";

/// Where the ARM client connects, and with which credentials.
#[derive(Clone, Debug)]
pub struct ArmConfig {
    /// The ARM endpoint; resource ids are appended to its path.
    pub endpoint: Url,
    /// The Entra authority host; None for azure_identity's default.
    pub authority_host: Option<Url>,
    /// The credential chain, tried in order.
    pub credentials: Vec<CredentialSource>,
}

impl ArmConfig {
    /// The configuration the process environment describes.
    pub fn from_env() -> Result<Self, ArmError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// The configuration the variables seen through `lookup` describe.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ArmError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let endpoint = var(ARM_ENDPOINT_ENV).unwrap_or_else(|| DEFAULT_ARM_ENDPOINT.to_owned());
        let endpoint = parse_endpoint(ARM_ENDPOINT_ENV, &endpoint)?;
        let authority_host = var(AUTHORITY_HOST_ENV)
            .map(|host| parse_endpoint(AUTHORITY_HOST_ENV, &host))
            .transpose()?;
        Ok(Self {
            endpoint,
            authority_host,
            credentials: CredentialSource::from_lookup(lookup)?,
        })
    }
}

/// An endpoint URL that may receive a bearer token: HTTPS, or HTTP on loopback.
pub(crate) fn parse_endpoint(name: &str, value: &str) -> Result<Url, ArmError> {
    let url = Url::parse(value.trim())
        .map_err(|err| ArmError::Invalid(format!("{name}={value:?} is not a URL: {err}")))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ArmError::Invalid(format!(
            "{name}={value:?} must not have a query or fragment"
        )));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        _ => Err(ArmError::Invalid(format!(
            "{name}={value:?}: tokens are only sent over https (or http to a loopback address)"
        ))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<ArmConfig, ArmError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ArmConfig::from_lookup(&|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_to_public_arm_and_the_cli() {
        let config = config(&[]).unwrap();
        assert_eq!(config.endpoint.as_str(), "https://management.azure.com/");
        assert!(config.authority_host.is_none());
        assert_eq!(config.credentials[0].name(), "azure cli");
    }

    #[test]
    fn the_environment_points_endpoint_and_authority_at_a_test_server() {
        let config = config(&[
            ("KOMBIFORM_ARM_ENDPOINT", "https://127.0.0.1:8443"),
            ("AZURE_AUTHORITY_HOST", "https://127.0.0.1:8443/"),
        ])
        .unwrap();
        assert_eq!(config.endpoint.as_str(), "https://127.0.0.1:8443/");
        assert_eq!(
            config.authority_host.unwrap().as_str(),
            "https://127.0.0.1:8443/"
        );
    }

    #[test]
    fn plain_http_is_only_for_loopback() {
        assert!(config(&[("KOMBIFORM_ARM_ENDPOINT", "http://localhost:8080")]).is_ok());
        assert!(config(&[("KOMBIFORM_ARM_ENDPOINT", "http://[::1]:8080")]).is_ok());
        let err = config(&[("KOMBIFORM_ARM_ENDPOINT", "http://arm.example.com")]).unwrap_err();
        assert!(err.to_string().contains("only sent over https"), "{err}");
        let err = config(&[("KOMBIFORM_ARM_ENDPOINT", "management.azure.com")]).unwrap_err();
        assert!(err.to_string().contains("is not a URL"), "{err}");
    }
}
