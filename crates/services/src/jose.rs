//! JOSE on `ring`: strict compact-JWS parsing, JWK public keys (RSA and EC P-256), signature
//! verification (RS256, RS384, RS512, ES256) and signing (RS256 and ES256 from PKCS#8 keys).
//!
//! Strict means: a size limit before any decoding; exactly three base64url segments, without
//! padding and with canonical trailing bits; header and payload JSON objects without duplicate
//! members; `alg` only ever chosen from the caller's allow-list (the token's value selects among
//! those and must fit the key); `crit` refused, since no extension is understood (RFC 7515
//! §4.1.11); keys named by the token (`jku`, `jwk`, `x5u`, `x5c`) and the unencoded-payload
//! option (`b64`) refused. `none` and the HMAC algorithms do not exist here. The claims can only
//! be read through [`Jws::verify`], so nothing reads an unverified payload.
//!
//! Not here: which claims a token must carry (the caller's policy, e.g. `sso::token`) and where
//! keys come from (`sso::jwks`). Signing draws its randomness from `ring`'s own system source
//! (its `SecureRandom` trait is sealed); verification needs none.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, KeyPair};
use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The largest compact JWS accepted, in bytes, checked before anything is decoded.
pub const MAX_JWS_BYTES: usize = 8 * 1024;

/// The largest decoded header accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 1024;

/// The longest `kid` accepted.
pub const MAX_KID_LEN: usize = 256;

/// Header members that would make a token name its own key.
const KEY_LOCATION_MEMBERS: [&str; 4] = ["jku", "jwk", "x5u", "x5c"];

/// Why a token or key was refused: a fixed reason for logs, never shown to a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Invalid {}

/// A signature algorithm this module implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (Zitadel's default).
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// ECDSA on P-256 with SHA-256, signature as fixed-width `r || s`.
    ES256,
}

impl Alg {
    /// Every algorithm, in a stable order.
    pub const ALL: [Alg; 4] = [Alg::RS256, Alg::RS384, Alg::RS512, Alg::ES256];

    /// The JOSE name (`"RS256"`).
    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::ES256 => "ES256",
        }
    }

    /// The algorithm named `name`; `None` for anything else (`none`, `HS256`, `rs256`, …).
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    fn is_rsa(self) -> bool {
        matches!(self, Alg::RS256 | Alg::RS384 | Alg::RS512)
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Decodes one base64url segment: unpadded alphabet only, canonical trailing bits.
pub fn b64_decode(segment: &str) -> Result<Vec<u8>, Invalid> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Invalid("segment is not unpadded base64url"))
}

/// Encodes bytes as unpadded base64url.
pub fn b64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JSON object whose members are all distinct (RFC 7515 §4: a duplicate is refused, so no
/// two parsers can read different values from one token).
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StrictObject, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictObject, A::Error> {
                let mut out = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    if out.contains_key(&key) {
                        return Err(A::Error::custom("duplicate member"));
                    }
                    let value: Value = access.next_value()?;
                    out.insert(key, value);
                }
                Ok(StrictObject(out))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// `bytes` as a JSON object without duplicate members.
pub fn strict_object(bytes: &[u8]) -> Result<Map<String, Value>, Invalid> {
    serde_json::from_slice::<StrictObject>(bytes)
        .map(|o| o.0)
        .map_err(|_| Invalid("not a JSON object with distinct members"))
}

/// A parsed, not yet verified compact JWS.
#[derive(Debug)]
pub struct Jws<'a> {
    alg: Alg,
    kid: Option<String>,
    signing_input: &'a str,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

/// Parses `token` as a compact JWS whose `alg` is one of `allowed`; see the module doc for the
/// rules. The signature is not checked here: see [`Jws::verify`].
pub fn parse<'a>(token: &'a str, allowed: &[Alg]) -> Result<Jws<'a>, Invalid> {
    if token.is_empty() || token.len() > MAX_JWS_BYTES {
        return Err(Invalid("token empty or too large"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid("not three segments"));
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(Invalid("empty segment"));
    }
    if h.len() > MAX_HEADER_BYTES * 4 / 3 + 4 {
        return Err(Invalid("header too large"));
    }
    let header = strict_object(&b64_decode(h)?).map_err(|_| Invalid("malformed header"))?;
    let (alg, kid) = check_header(&header, allowed)?;
    let payload = b64_decode(p)?;
    let signature = b64_decode(s)?;
    Ok(Jws {
        alg,
        kid,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload,
        signature,
    })
}

/// The header rules: `alg` allowed, no `crit`, no key location, no `b64`, `kid` a short string.
fn check_header(
    header: &Map<String, Value>,
    allowed: &[Alg],
) -> Result<(Alg, Option<String>), Invalid> {
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::from_name)
        .filter(|a| allowed.contains(a))
        .ok_or(Invalid("algorithm not allowed"))?;
    if let Some(crit) = header.get("crit") {
        return Err(crit_problem(crit));
    }
    if KEY_LOCATION_MEMBERS.iter().any(|m| header.contains_key(*m)) {
        // Keys come only from the configured key set; a token pointing elsewhere is suspect.
        return Err(Invalid("key location header present"));
    }
    if header.contains_key("b64") {
        return Err(Invalid("unencoded payload option (b64) present"));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) if !k.is_empty() && k.len() <= MAX_KID_LEN => Some(k.clone()),
        Some(_) => return Err(Invalid("kid not a short non-empty string")),
    };
    Ok((alg, kid))
}

/// Why a `crit` member is refused: every well-formed one names extensions this module does not
/// understand (it understands none); anything else is malformed (RFC 7515 §4.1.11).
fn crit_problem(crit: &Value) -> Invalid {
    match crit.as_array() {
        Some(names) if !names.is_empty() && names.iter().all(Value::is_string) => {
            Invalid("crit names extensions that are not understood")
        }
        _ => Invalid("crit is not a non-empty array of strings"),
    }
}

impl Jws<'_> {
    /// The algorithm (one of the allowed ones).
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The `kid` header, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Checks the signature with `key` and returns the claims (a JSON object with distinct
    /// members). The key must fit the algorithm, and when it names an algorithm, the same one.
    pub fn verify(self, key: &PublicKey) -> Result<Map<String, Value>, Invalid> {
        if key.alg.is_some_and(|a| a != self.alg) {
            return Err(Invalid("key is for another algorithm"));
        }
        let message = self.signing_input.as_bytes();
        let ok = match (&key.kind, self.alg) {
            (KeyKind::Rsa { n, e }, alg) if alg.is_rsa() => {
                let params = match alg {
                    Alg::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    _ => &signature::RSA_PKCS1_2048_8192_SHA256,
                };
                signature::RsaPublicKeyComponents { n, e }
                    .verify(params, message, &self.signature)
                    .is_ok()
            }
            (KeyKind::EcP256 { point }, Alg::ES256) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, &self.signature)
                    .is_ok()
            }
            _ => return Err(Invalid("key type does not fit the algorithm")),
        };
        if !ok {
            return Err(Invalid("bad signature"));
        }
        strict_object(&self.payload).map_err(|_| Invalid("payload is not a JSON object"))
    }
}

/// A verification key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    kind: KeyKind,
    /// The JWK's `alg`, when it named one.
    alg: Option<Alg>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyKind {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// The uncompressed point `04 || x || y`.
    EcP256 { point: Vec<u8> },
}

/// Smallest and largest RSA modulus accepted, in bytes (2048 and 8192 bits, as `ring` verifies).
const RSA_MODULUS_BYTES: std::ops::RangeInclusive<usize> = 256..=1024;

fn strip_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

impl PublicKey {
    /// An RSA key from its modulus and exponent (big-endian; leading zeros ignored).
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<PublicKey, Invalid> {
        let (n, e) = (strip_leading_zeros(n), strip_leading_zeros(e));
        if !RSA_MODULUS_BYTES.contains(&n.len()) {
            return Err(Invalid("RSA modulus not 2048 to 8192 bits"));
        }
        if e.is_empty() || e.len() > 4 || e.last().is_some_and(|b| b & 1 == 0) {
            return Err(Invalid("RSA exponent not a small odd number"));
        }
        Ok(PublicKey {
            kind: KeyKind::Rsa { n, e },
            alg: None,
        })
    }

    /// A P-256 key from its coordinates (32 bytes each). The point is checked on first use.
    pub fn p256(x: &[u8], y: &[u8]) -> Result<PublicKey, Invalid> {
        if x.len() != 32 || y.len() != 32 {
            return Err(Invalid("P-256 coordinates are not 32 bytes"));
        }
        let mut point = Vec::with_capacity(65);
        point.push(4);
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        Ok(PublicKey {
            kind: KeyKind::EcP256 { point },
            alg: None,
        })
    }

    /// The key of a JWK (RFC 7517): `kty` RSA (`n`, `e`) or EC on P-256 (`x`, `y`); `use`
    /// absent or `sig`; `key_ops` absent or containing `verify`; `alg` absent or one of
    /// `allowed` (and then the only algorithm this key verifies). Private members are ignored.
    pub fn from_jwk(jwk: &Value, allowed: &[Alg]) -> Result<PublicKey, Invalid> {
        let field = |name: &str| jwk.get(name).and_then(Value::as_str);
        let bytes = |name: &str| {
            field(name)
                .ok_or(Invalid("JWK member missing"))
                .and_then(b64_decode)
        };
        if jwk.get("use").is_some_and(|u| u != "sig") {
            return Err(Invalid("JWK is not for signatures"));
        }
        if let Some(ops) = jwk.get("key_ops") {
            let verifies = ops
                .as_array()
                .is_some_and(|o| o.iter().any(|op| op == "verify"));
            if !verifies {
                return Err(Invalid("JWK key_ops without verify"));
            }
        }
        let alg = match jwk.get("alg") {
            None => None,
            Some(a) => Some(
                a.as_str()
                    .and_then(Alg::from_name)
                    .filter(|a| allowed.contains(a))
                    .ok_or(Invalid("JWK alg not allowed"))?,
            ),
        };
        let mut key = match field("kty") {
            Some("RSA") => PublicKey::rsa(&bytes("n")?, &bytes("e")?)?,
            Some("EC") if field("crv") == Some("P-256") => {
                PublicKey::p256(&bytes("x")?, &bytes("y")?)?
            }
            _ => return Err(Invalid("JWK key type not supported")),
        };
        let usable = |a: &Alg| match key.kind {
            KeyKind::Rsa { .. } => a.is_rsa(),
            KeyKind::EcP256 { .. } => *a == Alg::ES256,
        };
        if !allowed.iter().any(usable) || alg.is_some_and(|a| !usable(&a)) {
            return Err(Invalid("JWK fits no allowed algorithm"));
        }
        key.alg = alg;
        Ok(key)
    }
}

/// A private key that signs compact JWS.
pub struct SigningKey {
    inner: Signer,
    rng: ring::rand::SystemRandom,
}

enum Signer {
    Rs256(signature::RsaKeyPair),
    Es256(signature::EcdsaKeyPair),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.alg())
    }
}

impl SigningKey {
    /// An RS256 key from a PKCS#8 (DER) RSA private key of 2048 to 8192 bits.
    pub fn rs256_from_pkcs8(der: &[u8]) -> Result<SigningKey, Invalid> {
        let pair = signature::RsaKeyPair::from_pkcs8(der)
            .map_err(|_| Invalid("not a usable PKCS#8 RSA key"))?;
        Ok(SigningKey {
            inner: Signer::Rs256(pair),
            rng: ring::rand::SystemRandom::new(),
        })
    }

    /// An ES256 key from a PKCS#8 (DER) P-256 private key.
    pub fn es256_from_pkcs8(der: &[u8]) -> Result<SigningKey, Invalid> {
        let rng = ring::rand::SystemRandom::new();
        let pair = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &rng,
        )
        .map_err(|_| Invalid("not a usable PKCS#8 P-256 key"))?;
        Ok(SigningKey {
            inner: Signer::Es256(pair),
            rng,
        })
    }

    /// A fresh P-256 key and its PKCS#8 (DER) form, to be stored as a secret.
    pub fn generate_es256() -> Result<(SigningKey, Vec<u8>), Invalid> {
        let rng = ring::rand::SystemRandom::new();
        let der = signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .map_err(|_| Invalid("generating a P-256 key failed"))?;
        let key = SigningKey::es256_from_pkcs8(der.as_ref())?;
        Ok((key, der.as_ref().to_vec()))
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Alg {
        match self.inner {
            Signer::Rs256(_) => Alg::RS256,
            Signer::Es256(_) => Alg::ES256,
        }
    }

    /// The public JWK (`kty`, `use: sig`, `alg`, `kid` and the key members).
    pub fn public_jwk(&self, kid: &str) -> Value {
        let mut jwk = match &self.inner {
            Signer::Rs256(pair) => {
                let c: signature::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
                serde_json::json!({"kty": "RSA", "n": b64_encode(&c.n), "e": b64_encode(&c.e)})
            }
            Signer::Es256(pair) => {
                // ring gives the uncompressed point: 04 || x || y, 32 bytes each.
                let point = pair.public_key().as_ref();
                let (x, y) = (
                    point.get(1..33).unwrap_or_default(),
                    point.get(33..65).unwrap_or_default(),
                );
                serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64_encode(x), "y": b64_encode(y)})
            }
        };
        jwk["use"] = "sig".into();
        jwk["alg"] = self.alg().name().into();
        jwk["kid"] = kid.into();
        jwk
    }

    /// The verification key matching this signing key.
    pub fn public_key(&self) -> Result<PublicKey, Invalid> {
        PublicKey::from_jwk(&self.public_jwk("-"), &[self.alg()])
    }

    /// Signs `claims` under `header` (whose `alg` is set to this key's): a compact JWS.
    pub fn sign(&self, header: &Map<String, Value>, claims: &Value) -> Result<String, Invalid> {
        let mut header = header.clone();
        header.insert("alg".into(), self.alg().name().into());
        self.sign_raw(
            Value::Object(header).to_string().as_bytes(),
            claims.to_string().as_bytes(),
        )
    }

    /// Signs the given header and payload bytes as they are (tests use this to build tokens
    /// a well-behaved signer would not).
    pub fn sign_raw(&self, header: &[u8], payload: &[u8]) -> Result<String, Invalid> {
        let input = format!("{}.{}", b64_encode(header), b64_encode(payload));
        let signature = match &self.inner {
            Signer::Rs256(pair) => {
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| Invalid("RSA signing failed"))?;
                sig
            }
            Signer::Es256(pair) => pair
                .sign(&self.rng, input.as_bytes())
                .map_err(|_| Invalid("ECDSA signing failed"))?
                .as_ref()
                .to_vec(),
        };
        Ok(format!("{input}.{}", b64_encode(&signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn es256() -> SigningKey {
        SigningKey::generate_es256().unwrap().0
    }

    fn header(kid: &str) -> Map<String, Value> {
        let mut h = Map::new();
        h.insert("kid".into(), kid.into());
        h.insert("typ".into(), "JWT".into());
        h
    }

    #[test]
    fn es256_round_trips_and_the_payload_is_only_read_after_verification() {
        let key = es256();
        let token = key.sign(&header("k1"), &json!({"sub": "1"})).unwrap();
        let jws = parse(&token, &[Alg::ES256]).unwrap();
        assert_eq!((jws.alg(), jws.kid()), (Alg::ES256, Some("k1")));
        let claims = jws.verify(&key.public_key().unwrap()).unwrap();
        assert_eq!(claims["sub"], "1");

        let other = es256().public_key().unwrap();
        let jws = parse(&token, &[Alg::ES256]).unwrap();
        assert_eq!(jws.verify(&other), Err(Invalid("bad signature")));
    }

    #[test]
    fn the_allow_list_decides_never_the_token() {
        let key = es256();
        let token = key.sign(&header("k1"), &json!({})).unwrap();
        assert_eq!(
            parse(&token, &[Alg::RS256]).err(),
            Some(Invalid("algorithm not allowed"))
        );
        for alg in ["none", "HS256", "es256", ""] {
            let h = format!(r#"{{"alg":"{alg}","kid":"k1"}}"#);
            let t = key.sign_raw(h.as_bytes(), b"{}").unwrap();
            assert_eq!(
                parse(&t, &Alg::ALL).err(),
                Some(Invalid("algorithm not allowed")),
                "{alg}"
            );
        }
        // An RSA key never verifies an ES256 token, whatever the allow-list says.
        let n = vec![0xC5u8; 256];
        let rsa = PublicKey::rsa(&n, &[1, 0, 1]).unwrap();
        let jws = parse(&token, &Alg::ALL).unwrap();
        assert_eq!(
            jws.verify(&rsa),
            Err(Invalid("key type does not fit the algorithm"))
        );
    }

    #[test]
    fn compact_serialization_is_strict() {
        let key = es256();
        let good = key.sign(&header("k1"), &json!({"a": 1})).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            (format!("{}.{}", parts[0], parts[1]), "not three segments"),
            (format!("{good}.x"), "not three segments"),
            (format!("{}..{}", parts[0], parts[2]), "empty segment"),
            (format!("{}.{}.", parts[0], parts[1]), "empty segment"),
            (
                format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
                "segment is not unpadded base64url",
            ),
            (
                format!("{}.{}+.{}", parts[0], parts[1], parts[2]),
                "segment is not unpadded base64url",
            ),
            (
                format!("{}.{} .{}", parts[0], parts[1], parts[2]),
                "segment is not unpadded base64url",
            ),
            ("a".repeat(MAX_JWS_BYTES + 1), "token empty or too large"),
        ];
        for (token, why) in cases {
            assert_eq!(
                parse(&token, &Alg::ALL).err(),
                Some(Invalid(why)),
                "{token:.80}"
            );
        }
        // Non-canonical trailing bits: "AB" and "AC" would decode to the same byte.
        assert!(b64_decode("AA").is_ok());
        assert!(b64_decode("AB").is_err());
    }

    #[test]
    fn duplicate_members_are_refused_in_header_and_payload() {
        let key = es256();
        let dup_header = key
            .sign_raw(br#"{"alg":"ES256","kid":"a","kid":"b"}"#, b"{}")
            .unwrap();
        assert_eq!(
            parse(&dup_header, &Alg::ALL).err(),
            Some(Invalid("malformed header"))
        );
        let dup_claims = key
            .sign_raw(br#"{"alg":"ES256","kid":"a"}"#, br#"{"sub":"1","sub":"2"}"#)
            .unwrap();
        let jws = parse(&dup_claims, &Alg::ALL).unwrap();
        assert_eq!(
            jws.verify(&key.public_key().unwrap()),
            Err(Invalid("payload is not a JSON object"))
        );
    }

    #[test]
    fn crit_key_locations_and_b64_are_refused() {
        let key = es256();
        let with = |extra: Value| {
            let mut h = header("k1");
            if let Value::Object(o) = extra {
                h.extend(o);
            }
            let t = key.sign(&h, &json!({})).unwrap();
            parse(&t, &Alg::ALL).err()
        };
        let not_understood = Some(Invalid("crit names extensions that are not understood"));
        let malformed = Some(Invalid("crit is not a non-empty array of strings"));
        assert_eq!(with(json!({"crit": ["exp"], "exp": 1})), not_understood);
        assert_eq!(with(json!({"crit": ["b64"], "b64": false})), not_understood);
        assert_eq!(with(json!({"crit": []})), malformed);
        assert_eq!(with(json!({"crit": "exp"})), malformed);
        assert_eq!(with(json!({"crit": [1]})), malformed);
        assert_eq!(with(json!({"crit": null})), malformed);
        for member in KEY_LOCATION_MEMBERS {
            assert_eq!(
                with(json!({member: "x"})),
                Some(Invalid("key location header present"))
            );
        }
        assert_eq!(
            with(json!({"b64": true})),
            Some(Invalid("unencoded payload option (b64) present"))
        );
        assert_eq!(
            with(json!({"kid": 7})),
            Some(Invalid("kid not a short non-empty string"))
        );
        assert_eq!(
            with(json!({"kid": ""})),
            Some(Invalid("kid not a short non-empty string"))
        );
        assert_eq!(with(json!({})), None);
    }

    #[test]
    fn jwks_keys_are_filtered_by_use_ops_type_and_alg() {
        let es = es256().public_jwk("e");
        assert!(PublicKey::from_jwk(&es, &[Alg::ES256]).is_ok());
        assert!(PublicKey::from_jwk(&es, &[Alg::RS256]).is_err());
        let mut enc = es.clone();
        enc["use"] = "enc".into();
        assert!(PublicKey::from_jwk(&enc, &[Alg::ES256]).is_err());
        let mut ops = es.clone();
        ops["key_ops"] = json!(["sign"]);
        assert!(PublicKey::from_jwk(&ops, &[Alg::ES256]).is_err());
        let oct = json!({"kty": "oct", "k": "c2VjcmV0"});
        assert_eq!(
            PublicKey::from_jwk(&oct, &Alg::ALL),
            Err(Invalid("JWK key type not supported"))
        );
        let n = b64_encode(&[0xC5u8; 256]);
        let rsa = json!({"kty": "RSA", "alg": "RS384", "n": n, "e": "AQAB"});
        assert!(PublicKey::from_jwk(&rsa, &[Alg::RS256]).is_err());
        assert!(PublicKey::from_jwk(&rsa, &[Alg::RS256, Alg::RS384]).is_ok());
        let short = json!({"kty": "RSA", "n": b64_encode(&[0xC5u8; 128]), "e": "AQAB"});
        assert!(PublicKey::from_jwk(&short, &[Alg::RS256]).is_err());
    }
}
