//! Kong's bundled `jwt` plugin (kong@3.9.3 `kong/plugins/jwt/handler.lua` and
//! `jwt_parser.lua`) as it authenticates one request against a declarative config: which
//! credential it selects and whether the token verifies, step by step in the handler's order,
//! with the handler's messages. Verification is ring's (RS256 PKCS#1 v1.5, ES256 with the raw
//! 64-byte `r || s` signature, as `ecdsa_use_raw` expects).
//!
//! The steps of `do_authentication`:
//! 1. the token from the configured headers (`\s*[Bb]earer\s+(.+)`); none: "Unauthorized";
//!    several different ones: "Multiple tokens provided";
//! 2. three dot-separated parts, base64url (padding added), header and claims JSON, `alg` a
//!    supported string: else "Bad token; invalid JSON" / "Bad token; invalid alg";
//! 3. the credential key: `claims[key_claim_name]`, else the header's; absent: "No mandatory
//!    '<claim>' in claims"; empty: "Invalid '<claim>' in claims";
//! 4. the `jwt_secrets` row whose `key` equals it (keys are unique): none, "No credentials
//!    found for given '<claim>'";
//! 5. the row's `algorithm` (default HS256) must equal the token's `alg`: "Invalid algorithm";
//! 6. the signature with the row's `rsa_public_key`: "Invalid signature" (an ES256 signature
//!    that is not 64 bytes fails an `assert`: a 500);
//! 7. `claims_to_verify`: each a number (`must be a number`), `exp` > now ("token expired"),
//!    `nbf` <= now ("token not valid yet");
//! 8. `maximum_expiration` > 0: `exp - now` must not exceed it ("exceeds maximum allowed
//!    expiration");
//! 9. the row's consumer is the authenticated consumer.
//!
//! A failure with `anonymous` set hands the request to that consumer instead of answering 401.
//! Only the header source is modelled (our configs set no URI parameters or cookies).

use base64::Engine as _;
use serde_json::Value;

/// What the plugin does with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Authenticated as `consumer` (username) through the credential `key`.
    Consumer {
        /// The consumer's username.
        consumer: String,
        /// The credential's key.
        key: String,
    },
    /// Authentication failed and `anonymous` took over: the request goes on as that consumer.
    Anonymous(String),
    /// 401 with this message (or claim errors, joined).
    Unauthorized(String),
    /// A Lua error in the plugin: 500.
    Error(String),
}

/// Runs the `jwt` plugin configured as `conf` (its `config` object) on a request with
/// `authorization` as its `Authorization` header, against the consumers of `doc`, at `now`
/// (Unix seconds).
pub fn authenticate(doc: &Value, conf: &Value, authorization: Option<&str>, now: i64) -> Outcome {
    match verify(doc, conf, authorization, now) {
        Ok(o) => o,
        Err(Failure::Error(e)) => Outcome::Error(e),
        Err(Failure::Unauthorized(m)) => match conf.get("anonymous").and_then(Value::as_str) {
            Some(a) => Outcome::Anonymous(a.to_string()),
            None => Outcome::Unauthorized(m),
        },
    }
}

enum Failure {
    Unauthorized(String),
    Error(String),
}

fn unauthorized<T>(m: impl Into<String>) -> Result<T, Failure> {
    Err(Failure::Unauthorized(m.into()))
}

fn verify(
    doc: &Value,
    conf: &Value,
    authorization: Option<&str>,
    now: i64,
) -> Result<Outcome, Failure> {
    let headers: Vec<&str> = conf
        .get("header_names")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_else(|| vec!["authorization"]);
    let token = match (
        headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case("authorization")),
        authorization,
    ) {
        (true, Some(h)) => bearer(h),
        _ => None,
    };
    let Some(token) = token else {
        return unauthorized("Unauthorized");
    };
    let (header, claims, signing_input, signature) = decode(&token)?;
    let claim = conf
        .get("key_claim_name")
        .and_then(Value::as_str)
        .unwrap_or("iss");
    let selector = match claims
        .get(claim)
        .filter(|v| truthy(v))
        .or_else(|| header.get(claim).filter(|v| truthy(v)))
    {
        None => return unauthorized(format!("No mandatory '{claim}' in claims")),
        Some(Value::String(s)) if s.is_empty() => {
            return unauthorized(format!("Invalid '{claim}' in claims"))
        }
        Some(v) => v.clone(),
    };
    let Some((consumer, secret)) = credential(doc, &selector) else {
        return unauthorized(format!("No credentials found for given '{claim}'"));
    };
    let algorithm = secret
        .get("algorithm")
        .and_then(Value::as_str)
        .unwrap_or("HS256");
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg != algorithm {
        return unauthorized("Invalid algorithm");
    }
    let Some(pem) = secret.get("rsa_public_key").and_then(Value::as_str) else {
        return unauthorized("Invalid key/secret");
    };
    if !signature_verifies(alg, pem, signing_input.as_bytes(), &signature)? {
        return unauthorized("Invalid signature");
    }
    let to_verify: Vec<&str> = conf
        .get("claims_to_verify")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut errors = Vec::new();
    for name in to_verify {
        match claims.get(name).and_then(Value::as_f64) {
            None => errors.push(format!("{name}: must be a number")),
            Some(v) if name == "exp" && v <= now as f64 => errors.push("exp: token expired".into()),
            Some(v) if name == "nbf" && v > now as f64 => {
                errors.push("nbf: token not valid yet".into())
            }
            Some(_) => {}
        }
    }
    if !errors.is_empty() {
        return unauthorized(errors.join("; "));
    }
    let max = conf
        .get("maximum_expiration")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    if max > 0.0 {
        match claims.get("exp").and_then(Value::as_f64) {
            Some(exp) if exp - (now as f64) <= max => {}
            _ => return unauthorized("exp: exceeds maximum allowed expiration"),
        }
    }
    Ok(Outcome::Consumer {
        consumer,
        key: secret
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    })
}

/// Lua truthiness of a JSON value (`nil` and `false` are false; cjson's null is a userdata,
/// so true).
fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Bool(false))
}

/// The token of an `Authorization` value: `\s*[Bb]earer\s+(.+)` (the regex is unanchored, so
/// the first `bearer` anywhere counts).
fn bearer(h: &str) -> Option<String> {
    let lower_b = h.find("Bearer").into_iter().chain(h.find("bearer")).min()?;
    let rest = &h[lower_b + 6..];
    let trimmed = rest.trim_start_matches([' ', '\t']);
    if trimmed.len() == rest.len() || trimmed.is_empty() {
        return None;
    }
    Some(trimmed.to_string())
}

/// `jwt_parser.decode_token`: (header, claims, `header.claims` as sent, signature bytes).
fn decode(token: &str) -> Result<(Value, Value, String, Vec<u8>), Failure> {
    let mut parts = token.splitn(3, '.');
    let (h, c, s) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let json = |part: &str| -> Option<Value> { serde_json::from_slice(&b64url(part)?).ok() };
    let (Some(header), Some(claims), Some(signature)) = (json(h), json(c), b64url(s)) else {
        return unauthorized("Bad token; invalid JSON");
    };
    const ALGS: &[&str] = &[
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256",
        "PS384", "PS512", "EdDSA",
    ];
    if !header
        .get("alg")
        .and_then(Value::as_str)
        .is_some_and(|a| ALGS.contains(&a))
    {
        return unauthorized("Bad token; invalid alg");
    }
    if !claims.is_object() {
        return unauthorized("Bad token; invalid claims");
    }
    Ok((header, claims, format!("{h}.{c}"), signature))
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

/// The consumer username and the `jwt_secrets` row whose `key` equals `selector`.
fn credential(doc: &Value, selector: &Value) -> Option<(String, Value)> {
    let key = selector.as_str()?;
    doc.get("consumers")?.as_array()?.iter().find_map(|c| {
        let row = c
            .get("jwt_secrets")?
            .as_array()?
            .iter()
            .find(|s| s.get("key").and_then(Value::as_str) == Some(key))?;
        Some((c.get("username")?.as_str()?.to_string(), row.clone()))
    })
}

fn signature_verifies(
    alg: &str,
    pem: &str,
    input: &[u8],
    signature: &[u8],
) -> Result<bool, Failure> {
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256};
    let spki =
        pem_der(pem).ok_or_else(|| Failure::Error("Consumer Public Key is Invalid".into()))?;
    let key =
        spki_key(&spki).ok_or_else(|| Failure::Error("Consumer Public Key is Invalid".into()))?;
    match alg {
        "ES256" => {
            if signature.len() != 64 {
                return Err(Failure::Error("Signature must be 64 bytes.".into()));
            }
            Ok(UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
                .verify(input, signature)
                .is_ok())
        }
        "RS256" => Ok(UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key)
            .verify(input, signature)
            .is_ok()),
        other => Err(Failure::Error(format!("{other} is not modelled"))),
    }
}

/// The DER of a `-----BEGIN PUBLIC KEY-----` PEM.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// The subjectPublicKey of a SubjectPublicKeyInfo (the BIT STRING's content without its
/// unused-bits byte): the EC point, or the PKCS#1 RSAPublicKey.
fn spki_key(der: &[u8]) -> Option<&[u8]> {
    let (tag, outer, _) = tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _, rest) = tlv(outer)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, bits, _) = tlv(rest)?;
    if tag != 0x03 || bits.first() != Some(&0) {
        return None;
    }
    bits.get(1..)
}

/// One DER TLV: (tag, content, the rest).
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *der.first()?;
    let first = *der.get(1)? as usize;
    let (len, start) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *der.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let content = der.get(start..start + len)?;
    Some((tag, content, der.get(start + len..)?))
}

/// A fresh P-256 key pair for platform token tests: (private key as PKCS#8 PEM, public key as
/// SubjectPublicKeyInfo PEM), the forms `sso.platformTokens.keys[]` takes.
pub fn es256_key_pair() -> anyhow::Result<(String, String)> {
    use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("generating a P-256 key"))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| anyhow::anyhow!("reading the generated P-256 key"))?;
    // SubjectPublicKeyInfo of id-ecPublicKey on prime256v1, then the uncompressed point.
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    Ok((pem("PRIVATE KEY", pkcs8.as_ref()), pem("PUBLIC KEY", &spki)))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_public_keys_read_back() {
        let (_, public) = es256_key_pair().unwrap();
        let der = pem_der(&public).unwrap();
        assert_eq!(spki_key(&der).map(<[u8]>::len), Some(65));
    }

    #[test]
    fn bearer_follows_the_handlers_regex() {
        assert_eq!(bearer("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(bearer("  bearer   abc").as_deref(), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn malformed_tokens_are_bad_tokens() {
        let doc = serde_json::json!({"consumers": []});
        let conf = serde_json::json!({"key_claim_name": "k"});
        assert_eq!(
            authenticate(&doc, &conf, Some("Bearer a.b.c"), 0),
            Outcome::Unauthorized("Bad token; invalid JSON".into())
        );
        assert_eq!(
            authenticate(&doc, &conf, None, 0),
            Outcome::Unauthorized("Unauthorized".into())
        );
        let anon = serde_json::json!({"key_claim_name": "k", "anonymous": "anon"});
        assert_eq!(
            authenticate(&doc, &anon, None, 0),
            Outcome::Anonymous("anon".into())
        );
    }
}
