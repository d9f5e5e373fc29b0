//! The Zitadel signing-key cache: the JWKS fetched from the configured `jwks_uri` (never from a
//! token header), kept in memory, refreshed once when a token names an unknown `kid`.
//!
//! Refresh rules: single-flight (one fetch at a time; waiters re-check after it), at most one
//! on-demand refresh per cooldown (the load at startup does not start the cooldown), the old keys
//! kept when a refresh fails, and only signature keys with a `kid` that fit an allowed algorithm
//! are kept ([`PublicKey::from_jwk`]: an `oct` key is never one). Not here: token validation
//! ([`super::token`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::jose::{Alg, PublicKey};

/// The largest JWKS document accepted, in bytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The most keys kept from one JWKS document.
pub const MAX_KEYS: usize = 64;

/// A cache of verification keys by `kid`.
pub struct KeyCache {
    uri: String,
    http: reqwest::Client,
    algorithms: Vec<Alg>,
    cooldown: Duration,
    keys: RwLock<Arc<HashMap<String, Arc<PublicKey>>>>,
    /// When the last on-demand refresh started; the mutex makes refreshes single-flight.
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
    fetches: AtomicU64,
}

impl KeyCache {
    /// An empty cache for `uri`; `algorithms` is the allow-list a key must fit (and its `alg`,
    /// if any, be in).
    pub fn new(
        uri: String,
        http: reqwest::Client,
        algorithms: Vec<Alg>,
        cooldown: Duration,
    ) -> KeyCache {
        KeyCache {
            uri,
            http,
            algorithms,
            cooldown,
            keys: RwLock::new(Arc::new(HashMap::new())),
            last_refresh: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
        }
    }

    /// The startup load. A failure leaves the cache empty (the first token refreshes it).
    pub async fn load(&self) -> Result<usize> {
        let keys = self.fetch().await?;
        let n = keys.len();
        self.store(keys);
        Ok(n)
    }

    /// How many times the JWKS was fetched (startup and refreshes).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The key for `kid`, refreshing once (within the cooldown rules) when it is unknown.
    pub async fn key(&self, kid: &str) -> Option<Arc<PublicKey>> {
        if let Some(k) = self.cached(kid) {
            return Some(k);
        }
        let mut last = self.last_refresh.lock().await;
        // Another request may have refreshed while this one waited.
        if let Some(k) = self.cached(kid) {
            return Some(k);
        }
        if last.is_some_and(|t| t.elapsed() < self.cooldown) {
            tracing::debug!("unknown kid within the JWKS refresh cooldown; not refreshing");
            return None;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "JWKS refreshed");
                self.store(keys);
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "JWKS refresh failed; keeping the old keys")
            }
        }
        self.cached(kid)
    }

    fn cached(&self, kid: &str) -> Option<Arc<PublicKey>> {
        let keys = match self.keys.read() {
            Ok(k) => Arc::clone(&k),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        keys.get(kid).cloned()
    }

    fn store(&self, keys: HashMap<String, Arc<PublicKey>>) {
        let new = Arc::new(keys);
        match self.keys.write() {
            Ok(mut k) => *k = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<PublicKey>>> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let mut response = self
            .http
            .get(&self.uri)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .with_context(|| format!("GET {}", self.uri))?;
        if !response.status().is_success() {
            bail!("GET {} answered {}", self.uri, response.status());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.context("reading the JWKS")? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                bail!(
                    "the JWKS at {} is larger than {MAX_JWKS_BYTES} bytes",
                    self.uri
                );
            }
        }
        parse_jwks(&body, &self.algorithms)
    }
}

/// The usable keys of a JWKS document: with a non-empty `kid`, accepted by
/// [`PublicKey::from_jwk`] for `algorithms` (RSA or P-256, `use` absent or `sig`, `alg` absent or
/// allowed). Other keys are skipped (one odd key never breaks the set).
pub fn parse_jwks(body: &[u8], algorithms: &[Alg]) -> Result<HashMap<String, Arc<PublicKey>>> {
    let doc: serde_json::Value = serde_json::from_slice(body).context("the JWKS is not JSON")?;
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .context("the JWKS has no `keys` array")?;
    let mut out = HashMap::new();
    for key in keys {
        if out.len() >= MAX_KEYS {
            break;
        }
        let Some(kid) = key
            .get("kid")
            .and_then(|v| v.as_str())
            .filter(|k| !k.is_empty() && k.len() <= crate::jose::MAX_KID_LEN)
        else {
            continue;
        };
        match PublicKey::from_jwk(key, algorithms) {
            Ok(k) => {
                out.insert(kid.to_string(), Arc::new(k));
            }
            Err(err) => tracing::debug!(kid, reason = %err, "skipping a JWKS key"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rsa_signature_keys_with_kid_and_allowed_alg_are_kept() {
        let n = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "a", "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "b", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "rs384", "alg": "RS384", "n": n, "e": "AQAB"},
            {"kty": "RSA", "n": n, "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "x", "y": "y"},
            "not an object"
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes(), &[Alg::RS256]).unwrap();
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort();
        assert_eq!(kids, ["a", "b"]);
    }

    #[test]
    fn a_document_without_keys_is_an_error() {
        assert!(parse_jwks(b"{}", &[]).is_err());
        assert!(parse_jwks(b"nope", &[]).is_err());
    }
}
