//! Validation of Zitadel JWT access tokens (identity.md §4), on [`crate::jose`]: a fixed
//! algorithm allow-list from the configuration (never the token's choice), keys only from
//! [`KeyCache`], `iss`/`aud`/`exp`/`nbf`/`sub`/`jti` required, one leeway for `exp`, `nbf` and
//! `iat` (a token issued in the future is refused), ID tokens refused by their ID-token-only
//! claims, `sub` and the org claim identifiers that are safe in a PocketBase filter.
//!
//! Every failure is a [`Rejection`] whose reason goes to the logs only; callers answer one
//! uniform 401. Not here: JWS parsing and signatures ([`crate::jose`]), tenants, users, HTTP.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::input;
use super::jwks::KeyCache;
use crate::jose::{self, Alg};

/// The largest token accepted (bytes), before any decoding.
pub const MAX_TOKEN_BYTES: usize = jose::MAX_JWS_BYTES;

/// Claims only an ID token carries: a token with any of them is not an access token.
pub const ID_TOKEN_CLAIMS: [&str; 5] = ["nonce", "at_hash", "amr", "auth_time", "sid"];

/// The longest `jti` accepted.
pub const MAX_JTI_LEN: usize = 255;

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

/// The claim rules of one issuer, apart from the signature: pure, so they are testable at any
/// instant.
#[derive(Clone, Debug)]
pub struct ClaimRules {
    /// The exact `iss`.
    pub issuer: String,
    /// `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Clock leeway for `exp`, `nbf` and `iat`, in seconds.
    pub leeway_seconds: i64,
    /// The claim holding the organization id.
    pub org_claim: String,
}

/// Validates access tokens against one issuer.
pub struct TokenValidator {
    keys: Arc<KeyCache>,
    algorithms: Vec<Alg>,
    rules: ClaimRules,
}

/// The accepted algorithms: the configured names among RS256, RS384, RS512 and ES256; anything
/// else is an error (a configuration that would allow HS256 or `none` never starts).
pub fn algorithms(names: &[String]) -> Result<Vec<Alg>, String> {
    let mut out = Vec::new();
    for name in names {
        let alg = Alg::from_name(name).ok_or_else(|| {
            format!("token algorithm {name:?} is not allowed (RS256, RS384, RS512, ES256)")
        })?;
        out.push(alg);
    }
    if out.is_empty() {
        return Err("no token algorithm configured".to_string());
    }
    Ok(out)
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl TokenValidator {
    /// A validator for tokens of `issuer` carrying one of `audiences`.
    pub fn new(
        keys: Arc<KeyCache>,
        algorithms: Vec<Alg>,
        issuer: &str,
        audiences: &[String],
        leeway_seconds: u64,
        org_claim: String,
    ) -> TokenValidator {
        TokenValidator {
            keys,
            algorithms,
            rules: ClaimRules {
                issuer: issuer.to_string(),
                audiences: audiences.to_vec(),
                leeway_seconds: i64::try_from(leeway_seconds).unwrap_or(i64::MAX),
                org_claim,
            },
        }
    }

    /// The key cache (for fetch counts in tests and readiness).
    pub fn keys(&self) -> &Arc<KeyCache> {
        &self.keys
    }

    /// Validates `token` now; see the module doc for the rules.
    pub async fn validate(&self, token: &str) -> Result<AccessToken, Rejection> {
        let jws = jose::parse(token, &self.algorithms).map_err(|e| Rejection(e.0))?;
        // A token without a kid never triggers a key refresh (identity.md §4.1).
        let kid = jws.kid().ok_or(Rejection("no kid"))?;
        let key = self.keys.key(kid).await.ok_or(Rejection("unknown kid"))?;
        let claims = jws.verify(&key).map_err(|e| Rejection(e.0))?;
        self.rules.check(&claims, unix_now())
    }
}

/// A NumericDate claim: absent, or a finite JSON number (fractions rounded down).
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.is_finite() => Ok(Some(f.floor() as i64)),
            _ => Err(Rejection("time claim out of range")),
        },
        Some(_) => Err(Rejection("time claim not a number")),
    }
}

impl ClaimRules {
    /// Checks verified `claims` at Unix time `now`.
    pub fn check(&self, claims: &Map<String, Value>, now: i64) -> Result<AccessToken, Rejection> {
        self.times(claims, now)?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(Rejection("issuer missing or wrong"));
        }
        if !self.audience_matches(claims.get("aud")) {
            return Err(Rejection("audience missing or wrong"));
        }
        if ID_TOKEN_CLAIMS.iter().any(|c| claims.contains_key(*c)) {
            return Err(Rejection("ID token presented as access token"));
        }
        claims
            .get("jti")
            .and_then(Value::as_str)
            .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_LEN && input::is_printable(j))
            .ok_or(Rejection("no jti"))?;
        let identifier = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| input::is_identifier(s))
        };
        let subject = identifier("sub").ok_or(Rejection("sub not an identifier"))?;
        let org_id = identifier(&self.org_claim)
            .ok_or(Rejection("org claim missing or not an identifier"))?;
        Ok(AccessToken {
            subject: subject.to_string(),
            org_id: org_id.to_string(),
        })
    }

    /// `exp` and `nbf` required, `iat` optional; all within the leeway of `now`.
    fn times(&self, claims: &Map<String, Value>, now: i64) -> Result<(), Rejection> {
        let leeway = self.leeway_seconds;
        let exp = numeric_date(claims, "exp")?.ok_or(Rejection("no exp"))?;
        let nbf = numeric_date(claims, "nbf")?.ok_or(Rejection("no nbf"))?;
        if exp < now.saturating_sub(leeway) {
            return Err(Rejection("expired"));
        }
        if nbf > now.saturating_add(leeway) {
            return Err(Rejection("not yet valid"));
        }
        if numeric_date(claims, "iat")?.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return Err(Rejection("issued in the future"));
        }
        Ok(())
    }

    /// `aud` (a string or an array of strings) holds one of the configured audiences.
    fn audience_matches(&self, aud: Option<&Value>) -> bool {
        let wanted = |a: &str| self.audiences.iter().any(|x| x == a);
        match aud {
            Some(Value::String(a)) => wanted(a),
            Some(Value::Array(items)) => {
                items.iter().all(Value::is_string)
                    && items.iter().filter_map(Value::as_str).any(wanted)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_signature_algorithms_configure() {
        assert_eq!(algorithms(&["RS256".into()]), Ok(vec![Alg::RS256]));
        assert_eq!(algorithms(&["ES256".into()]), Ok(vec![Alg::ES256]));
        assert!(algorithms(&["HS256".into()]).is_err());
        assert!(algorithms(&["none".into()]).is_err());
        assert!(algorithms(&[]).is_err());
    }

    const NOW: i64 = 1_800_000_000;

    fn rules() -> ClaimRules {
        ClaimRules {
            issuer: "https://id.example".into(),
            audiences: vec!["100".into()],
            leeway_seconds: 60,
            org_claim: "org".into(),
        }
    }

    fn claims(edit: impl FnOnce(&mut Map<String, Value>)) -> Map<String, Value> {
        let mut c = json!({"iss": "https://id.example", "aud": ["100", "200"], "sub": "42",
            "exp": NOW + 3600, "nbf": NOW, "iat": NOW, "jti": "j1", "org": "7"});
        if let Value::Object(o) = &mut c {
            edit(o);
            return o.clone();
        }
        unreachable!("a JSON object literal")
    }

    fn why(edit: impl FnOnce(&mut Map<String, Value>)) -> Option<&'static str> {
        rules().check(&claims(edit), NOW).err().map(|r| r.0)
    }

    #[test]
    fn a_token_issued_in_the_future_beyond_the_leeway_is_refused() {
        assert_eq!(
            why(|c| c["iat"] = json!(NOW + 61)),
            Some("issued in the future")
        );
        assert_eq!(
            why(|c| c["iat"] = json!(NOW + 60)),
            None,
            "within the leeway"
        );
        assert_eq!(
            why(|c| c["iat"] = json!(NOW as f64 + 61.5)),
            Some("issued in the future")
        );
        assert_eq!(
            why(|c| c["iat"] = json!("soon")),
            Some("time claim not a number")
        );
        assert_eq!(why(|c| drop(c.remove("iat"))), None, "iat is optional");
    }

    #[test]
    fn the_claim_rules_hold_at_their_edges() {
        assert_eq!(why(|_| {}), None);
        assert_eq!(why(|c| c["exp"] = json!(NOW - 61)), Some("expired"));
        assert_eq!(why(|c| c["exp"] = json!(NOW - 60)), None);
        assert_eq!(
            why(|c| c["exp"] = json!("2099")),
            Some("time claim not a number")
        );
        assert_eq!(why(|c| c["nbf"] = json!(NOW + 61)), Some("not yet valid"));
        assert_eq!(why(|c| drop(c.remove("nbf"))), Some("no nbf"));
        assert_eq!(why(|c| drop(c.remove("exp"))), Some("no exp"));
        assert_eq!(why(|c| c["aud"] = json!("100")), None);
        assert_eq!(
            why(|c| c["aud"] = json!(["100", 5])),
            Some("audience missing or wrong")
        );
        assert_eq!(
            why(|c| c["aud"] = json!([])),
            Some("audience missing or wrong")
        );
        assert_eq!(
            why(|c| c["iss"] = json!("https://id.example/")),
            Some("issuer missing or wrong")
        );
        assert_eq!(
            why(|c| c["sub"] = json!("4 2")),
            Some("sub not an identifier")
        );
        assert_eq!(
            why(|c| c["sub"] = json!("a\u{0}b")),
            Some("sub not an identifier")
        );
        assert_eq!(
            why(|c| c["org"] = json!("x".repeat(256))),
            Some("org claim missing or not an identifier")
        );
        assert_eq!(why(|c| c["jti"] = json!("a\nb")), Some("no jti"));
        assert_eq!(
            why(|c| drop(c.insert("sid".into(), json!("s")))),
            Some("ID token presented as access token")
        );
    }
}
