//! Webhook signatures and payloads (pure). Stripe (`Stripe-Signature`) and Zitadel
//! (`ZITADEL-Signature`, identity.md §2.1) use the same scheme: `t=<unix>,v1=<hex>[,v1=…]`,
//! HMAC-SHA256 keyed with the secret's raw bytes over `"<t>." + raw body`.
//!
//! Verification: the header must parse (each part `key=value`; unknown keys such as Stripe's
//! `v0` ignored, undecodable `v1` skipped), `t` within ±tolerance of now (past AND future), and
//! one `v1` equal, in constant time, to the HMAC under one of the configured secrets (several
//! during a rotation). Parsing then admits only values that may reach the database and a
//! PocketBase filter ([`super::input`]): ids and types are identifiers, so a signed event with a
//! NUL byte or an oversized id is a 400, never a database error. Not here: replay protection and
//! effects ([`super::db`]).

use ring::hmac;
use serde_json::Value;

use kombiform_model::secret::Secret;

use super::input::is_identifier;

/// The largest webhook body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Why a signature was refused (for logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigError {
    /// No header, or no secret configured.
    Missing,
    /// A part without `=`, or a bad `t`.
    Malformed,
    /// No `v1` value.
    NoSignature,
    /// `t` older than the tolerance.
    TooOld,
    /// `t` further in the future than the tolerance.
    TooNew,
    /// No `v1` matched.
    Mismatch,
}

/// The signed message: `"<t>." + body`.
fn signed_message(t: i64, body: &[u8]) -> Vec<u8> {
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    message
}

/// The signature header a sender would send (for tests and tools).
pub fn sign(t: i64, body: &[u8], secret: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, &signed_message(t, body));
    format!("t={t},v1={}", hex::encode(tag.as_ref()))
}

/// Verifies `header` over `body`; returns the signed timestamp.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[Secret],
    now: i64,
    tolerance: i64,
) -> Result<i64, SigError> {
    if header.is_empty() || secrets.is_empty() {
        return Err(SigError::Missing);
    }
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(SigError::Malformed)?;
        match k {
            "t" => t = Some(v.parse::<i64>().map_err(|_| SigError::Malformed)?),
            "v1" => {
                if let Ok(bytes) = hex::decode(v) {
                    sigs.push(bytes);
                }
            }
            _ => {}
        }
    }
    let t = t.ok_or(SigError::Malformed)?;
    if sigs.is_empty() {
        return Err(SigError::NoSignature);
    }
    if now.saturating_sub(t) > tolerance {
        return Err(SigError::TooOld);
    }
    if t.saturating_sub(now) > tolerance {
        return Err(SigError::TooNew);
    }
    let message = signed_message(t, body);
    for secret in secrets {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
        // ring's verify compares the tags in constant time.
        if sigs
            .iter()
            .any(|sig| hmac::verify(&key, &message, sig).is_ok())
        {
            return Ok(t);
        }
    }
    Err(SigError::Mismatch)
}

/// The parts of a Stripe event the service uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StripeEvent {
    /// `evt_…`.
    pub id: String,
    /// `type`.
    pub kind: String,
    /// `data.object.customer` (subscription events).
    pub customer: Option<String>,
    /// The price of the subscription's first item (`data.object.items.data[0].price.id`).
    pub price: Option<String>,
}

/// Parses a (verified) Stripe event.
pub fn parse_stripe(body: &[u8]) -> Result<StripeEvent, &'static str> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "not JSON")?;
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    let id = s("/id").filter(|i| is_identifier(i)).ok_or("no event id")?;
    let kind = s("/type")
        .filter(|k| is_identifier(k))
        .ok_or("no event type")?;
    let customer = s("/data/object/customer");
    let price = s("/data/object/items/data/0/price/id").or_else(|| s("/data/object/plan/id"));
    if customer.as_deref().is_some_and(|c| !is_identifier(c)) {
        return Err("customer is not an identifier");
    }
    if price.as_deref().is_some_and(|p| !is_identifier(p)) {
        return Err("price is not an identifier");
    }
    Ok(StripeEvent {
        id,
        kind,
        customer,
        price,
    })
}

/// Whether a Stripe event moves a tenant to the subscription's plan.
pub fn is_subscription_change(kind: &str) -> bool {
    matches!(
        kind,
        "customer.subscription.created" | "customer.subscription.updated"
    )
}

/// What a Zitadel user event does to the mapped PocketBase user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserEffect {
    /// Deactivated, locked or removed: every token revoked, exchanges refused.
    Disable,
    /// Reactivated or unlocked: exchanges allowed again.
    Enable,
    /// Anything else: recorded only.
    None,
}

/// The parts of a Zitadel event the service uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZitadelEvent {
    /// Idempotency key: `<instanceID>:<aggregateID>:<sequence>`.
    pub id: String,
    /// `event_type`.
    pub kind: String,
    /// `aggregateID` (the user id = token `sub` for user events).
    pub user_id: String,
    /// What it does.
    pub effect: UserEffect,
}

/// Parses a (verified) Zitadel Actions v2 event.
pub fn parse_zitadel(body: &[u8]) -> Result<ZitadelEvent, &'static str> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "not JSON")?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let short_identifier = |x: &String| x.len() <= 64 && is_identifier(x);
    let user_id = s("aggregateID")
        .filter(short_identifier)
        .ok_or("no aggregateID")?;
    let kind = s("event_type")
        .filter(|k| is_identifier(k))
        .ok_or("no event_type")?;
    let sequence = match v.get("sequence") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(x)) if short_identifier(x) => x.clone(),
        _ => return Err("no sequence"),
    };
    let instance = s("instanceID").unwrap_or_default();
    if !instance.is_empty() && !short_identifier(&instance) {
        return Err("instanceID is not an identifier");
    }
    let effect = match kind.as_str() {
        "user.deactivated" | "user.locked" | "user.removed" => UserEffect::Disable,
        "user.reactivated" | "user.unlocked" => UserEffect::Enable,
        _ => UserEffect::None,
    };
    Ok(ZitadelEvent {
        id: format!("{instance}:{user_id}:{sequence}"),
        kind,
        user_id,
        effect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(s: &[&str]) -> Vec<Secret> {
        s.iter().map(|x| Secret::new(*x)).collect()
    }

    #[test]
    fn signatures_verify_within_tolerance_only() {
        let body = br#"{"id":"evt_1"}"#;
        let h = sign(1000, body, "whsec_a");
        assert_eq!(
            verify(&h, body, &secrets(&["whsec_a"]), 1000, 300),
            Ok(1000)
        );
        assert_eq!(
            verify(&h, body, &secrets(&["whsec_b", "whsec_a"]), 1100, 300),
            Ok(1000)
        );
        assert_eq!(
            verify(&h, b"{}", &secrets(&["whsec_a"]), 1000, 300),
            Err(SigError::Mismatch)
        );
        assert_eq!(
            verify(&h, body, &secrets(&["whsec_a"]), 1301, 300),
            Err(SigError::TooOld)
        );
        assert_eq!(
            verify(&h, body, &secrets(&["whsec_a"]), 699, 300),
            Err(SigError::TooNew)
        );
        assert_eq!(
            verify("t=1000", body, &secrets(&["whsec_a"]), 1000, 300),
            Err(SigError::NoSignature)
        );
        assert_eq!(
            verify("t=1000,junk", body, &secrets(&["whsec_a"]), 1000, 300),
            Err(SigError::Malformed)
        );
        assert_eq!(verify(&h, body, &[], 1000, 300), Err(SigError::Missing));
        // Stripe's rolled secret: several v1 values, one matches; v0 ignored.
        let two = format!("{},v1=deadbeef,v0=abc", sign(1000, body, "whsec_new"));
        assert_eq!(
            verify(&two, body, &secrets(&["whsec_new"]), 1000, 300),
            Ok(1000)
        );
    }

    #[test]
    fn zitadel_events_parse() {
        let e = parse_zitadel(
            br#"{"aggregateID":"42","instanceID":"9","sequence":7,"event_type":"user.locked"}"#,
        )
        .unwrap();
        assert_eq!(e.id, "9:42:7");
        assert_eq!(e.effect, UserEffect::Disable);
        assert!(parse_zitadel(br#"{"event_type":"user.locked"}"#).is_err());
        for bad in [
            r#"{"aggregateID":"4\u00002","sequence":7,"event_type":"user.locked"}"#,
            r#"{"aggregateID":"42","sequence":"7\n","event_type":"user.locked"}"#,
            r#"{"aggregateID":"42","sequence":7,"event_type":"user locked"}"#,
            r#"{"aggregateID":"42","instanceID":"9\u0000","sequence":7,"event_type":"user.locked"}"#,
        ] {
            assert!(parse_zitadel(bad.as_bytes()).is_err(), "{bad}");
        }
        let long = format!(
            r#"{{"aggregateID":"{}","sequence":7,"event_type":"x"}}"#,
            "4".repeat(65)
        );
        assert!(parse_zitadel(long.as_bytes()).is_err());
    }

    #[test]
    fn stripe_events_parse() {
        let e = parse_stripe(br#"{"id":"evt_1","type":"customer.subscription.updated","data":{"object":{"customer":"cus_1","items":{"data":[{"price":{"id":"price_1"}}]}}}}"#).unwrap();
        assert_eq!(e.customer.as_deref(), Some("cus_1"));
        assert_eq!(e.price.as_deref(), Some("price_1"));
        assert!(is_subscription_change(&e.kind));
        for bad in [
            r#"{"id":"evt_\u0000","type":"x"}"#,
            r#"{"id":"evt_1","type":"a\u0001b"}"#,
            r#"{"id":"evt_1","type":"x","data":{"object":{"customer":"cus 1"}}}"#,
            r#"{"id":"evt_1","type":"x","data":{"object":{"plan":{"id":"p\u0000"}}}}"#,
        ] {
            assert!(parse_stripe(bad.as_bytes()).is_err(), "{bad}");
        }
        let long = format!(r#"{{"id":"evt_{}","type":"x"}}"#, "1".repeat(300));
        assert!(parse_stripe(long.as_bytes()).is_err());
    }
}
