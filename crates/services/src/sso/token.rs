//! Validation of Zitadel JWT access tokens (identity.md §4): a fixed algorithm allow-list (RS256),
//! keys only from [`KeyCache`], `iss`/`aud`/`exp`/`nbf`/`sub` required, one leeway, ID tokens
//! refused by their ID-token-only claims, `jti` required, the org claim a non-empty string.
//!
//! Every failure is a [`Rejection`] whose reason goes to the logs only; callers answer one
//! uniform 401. Not here: tenants, users, HTTP.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwks::KeyCache;

/// The largest token accepted (bytes), before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Claims only an ID token carries: a token with any of them is not an access token.
pub const ID_TOKEN_CLAIMS: [&str; 5] = ["nonce", "at_hash", "amr", "auth_time", "sid"];

/// Why a token was refused (for logs; never shown to the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection(pub &'static str);

/// What a valid access token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessToken {
    /// `sub`: the Zitadel user id.
    pub subject: String,
    /// The organization (the configured org claim).
    pub org_id: String,
}

/// Validates access tokens against one issuer.
pub struct TokenValidator {
    keys: Arc<KeyCache>,
    validation: Validation,
    org_claim: String,
}

/// The accepted algorithms: the configured names that are RSA signatures; anything else is an
/// error (a configuration that would allow HS256 or `none` never starts).
pub fn algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    let mut out = Vec::new();
    for name in names {
        let alg = match name.as_str() {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            other => {
                return Err(format!(
                    "token algorithm {other:?} is not allowed (RS256, RS384, RS512)"
                ))
            }
        };
        out.push(alg);
    }
    if out.is_empty() {
        return Err("no token algorithm configured".to_string());
    }
    Ok(out)
}

impl TokenValidator {
    /// A validator for tokens of `issuer` carrying one of `audiences`.
    pub fn new(
        keys: Arc<KeyCache>,
        algorithms: Vec<Algorithm>,
        issuer: &str,
        audiences: &[String],
        leeway_seconds: u64,
        org_claim: String,
    ) -> TokenValidator {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.algorithms = algorithms;
        validation.leeway = leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        TokenValidator {
            keys,
            validation,
            org_claim,
        }
    }

    /// The key cache (for fetch counts in tests and readiness).
    pub fn keys(&self) -> &Arc<KeyCache> {
        &self.keys
    }

    /// Validates `token`; see the module doc for the rules.
    pub async fn validate(&self, token: &str) -> Result<AccessToken, Rejection> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection("token empty or too large"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Rejection("malformed header"))?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(Rejection("algorithm not allowed"));
        }
        if header.jku.is_some() || header.jwk.is_some() || header.x5u.is_some() {
            // Keys come only from the configured JWKS; a token pointing elsewhere is suspect.
            return Err(Rejection("key location header present"));
        }
        let kid = header.kid.ok_or(Rejection("no kid"))?;
        let key = self.keys.key(&kid).await.ok_or(Rejection("unknown kid"))?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &self.validation)
            .map_err(|e| {
                tracing::debug!(error = %e, "token rejected");
                Rejection("signature or claims invalid")
            })?;
        self.claims(&data.claims)
    }

    fn claims(&self, claims: &Map<String, Value>) -> Result<AccessToken, Rejection> {
        if ID_TOKEN_CLAIMS.iter().any(|c| claims.contains_key(*c)) {
            return Err(Rejection("ID token presented as access token"));
        }
        let string = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty() && s.len() <= 255)
        };
        string("jti").ok_or(Rejection("no jti"))?;
        let subject = string("sub").ok_or(Rejection("sub not a non-empty string"))?;
        let org_id = string(&self.org_claim).ok_or(Rejection("org claim missing or empty"))?;
        Ok(AccessToken {
            subject: subject.to_string(),
            org_id: org_id.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rsa_algorithms_configure() {
        assert_eq!(algorithms(&["RS256".into()]), Ok(vec![Algorithm::RS256]));
        assert!(algorithms(&["HS256".into()]).is_err());
        assert!(algorithms(&["none".into()]).is_err());
        assert!(algorithms(&[]).is_err());
    }
}
