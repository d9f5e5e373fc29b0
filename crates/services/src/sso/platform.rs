//! Platform access tokens: what the OSS gateway verifies. After validating a Zitadel access
//! token fully (issuer, audience, signature through the JWKS, token type: [`super::token`]) and
//! finding its tenant active, kombify-sso signs a short-lived token of its own:
//! `iss`/`aud` ours, `sub` the Zitadel subject, `tenant` the slug, `exp - iat = ttlSeconds`,
//! and the credential claim `<tenant>.<key id>` that selects exactly one Kong `jwt_secrets`
//! row (Kong's jwt plugin picks its credential by that claim alone; it has no JWKS).
//!
//! Rotation needs nothing here: the gateway holds one credential per tenant per listed key,
//! and this service signs with the one key `signs` names (its config, [`PlatformTokensConfig`]);
//! a rotation is three applies of the specs (kombiform's `sso.platformTokens`).
//!
//! Not here: the HTTP edge (`POST /api/sso/token`, [`super::routes`]).

use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Map};

use super::error::SsoError;
use super::Sso;
use crate::jose::{Alg, Invalid, SigningKey};
use kombiform_model::secret::Secret;
use kombiform_model::services::PlatformTokensConfig;

/// The signer of platform tokens.
#[derive(Debug)]
pub struct PlatformSigner {
    config: PlatformTokensConfig,
    key: SigningKey,
}

/// The token endpoint's answer (OAuth 2.0 token response members).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Minted {
    /// The platform access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: u32,
}

impl PlatformSigner {
    /// The signer of `config`, its private key (PKCS#8 PEM) read from `private_key`.
    pub fn new(config: PlatformTokensConfig, private_key: &Secret) -> Result<Self, Invalid> {
        let der = pem_der(private_key.expose()).ok_or(Invalid("the key is not a PEM block"))?;
        let key = match Alg::from_name(&config.algorithm) {
            Some(Alg::ES256) => SigningKey::es256_from_pkcs8(&der)?,
            Some(Alg::RS256) => SigningKey::rs256_from_pkcs8(&der)?,
            _ => return Err(Invalid("platform tokens are ES256 or RS256")),
        };
        Ok(PlatformSigner { config, key })
    }

    /// The key id it signs under.
    pub fn key_id(&self) -> &str {
        &self.config.key_id
    }

    /// A token for `subject` of `tenant`, issued at `now` (Unix seconds).
    pub fn mint(&self, tenant: &str, subject: &str, now: i64) -> Result<Minted, Invalid> {
        let c = &self.config;
        let mut header = Map::new();
        header.insert("typ".into(), "JWT".into());
        header.insert("kid".into(), c.key_id.clone().into());
        let mut claims = json!({
            "iss": c.issuer,
            "aud": c.audience,
            "sub": subject,
            "tenant": tenant,
            "iat": now,
            "nbf": now,
            "exp": now + i64::from(c.ttl_seconds),
            "jti": kombiform_sys::random_id(),
        });
        claims[c.credential_claim.as_str()] = format!("{tenant}.{}", c.key_id).into();
        Ok(Minted {
            access_token: self.key.sign(&header, &claims)?,
            token_type: "Bearer",
            expires_in: c.ttl_seconds,
        })
    }
}

/// The DER of a PEM block (the first one; labels are not checked, the key parser is).
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN "))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END "))
        .collect();
    if body.is_empty() {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// Mints a platform token for a raw Zitadel access token: the same validation and tenant
/// checks as the exchange (unknown or suspended tenant: 403; disabled user: 403), no
/// PocketBase call.
pub async fn issue(sso: &Sso, raw_token: &str, now: i64) -> Result<Minted, SsoError> {
    let signer = sso.platform.as_ref().ok_or(SsoError::NotFound)?;
    let token = sso
        .validator
        .validate(raw_token)
        .await
        .map_err(|r| SsoError::Unauthorized(r.0))?;
    let issuer = sso.config.zitadel.issuer.as_str();
    let Some(tenant) = sso.db.lookup(&token.org_id, issuer, &token.subject).await? else {
        return Err(SsoError::TenantForbidden("unknown organization"));
    };
    if tenant.status != "active" {
        return Err(SsoError::TenantForbidden("tenant suspended"));
    }
    if tenant.user_disabled == Some(true) {
        return Err(SsoError::UserDisabled);
    }
    signer
        .mint(&tenant.slug, &token.subject, now)
        .map_err(|e| SsoError::Internal(anyhow::anyhow!("signing a platform token: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose;

    fn config() -> PlatformTokensConfig {
        PlatformTokensConfig {
            issuer: "https://kombify.io".into(),
            audience: "kombify-api".into(),
            ttl_seconds: 300,
            key_id: "k2".into(),
            algorithm: "ES256".into(),
            private_key: kombiform_model::SecretRef::Env("K".into()),
            credential_claim: "kombify_credential".into(),
        }
    }

    fn pem(der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
    }

    #[test]
    fn tokens_carry_our_issuer_audience_and_the_credential_of_the_signing_key() {
        let (key, der) = SigningKey::generate_es256().unwrap();
        let signer = PlatformSigner::new(config(), &Secret::new(pem(&der))).unwrap();
        let minted = signer.mint("acme", "user-1", 1_000).unwrap();
        assert_eq!(minted.expires_in, 300);
        let jws = jose::parse(&minted.access_token, &[Alg::ES256]).unwrap();
        assert_eq!(jws.kid(), Some("k2"));
        let claims = jws.verify(&key.public_key().unwrap()).unwrap();
        assert_eq!(claims["kombify_credential"], "acme.k2");
        assert_eq!(claims["iss"], "https://kombify.io");
        assert_eq!(claims["aud"], "kombify-api");
        assert_eq!(claims["exp"], 1_300);
        assert_eq!(claims["nbf"], 1_000);
    }

    #[test]
    fn a_bad_key_is_refused() {
        assert!(PlatformSigner::new(config(), &Secret::new("not pem")).is_err());
        let rsa = PlatformTokensConfig {
            algorithm: "HS256".into(),
            ..config()
        };
        let (_, der) = SigningKey::generate_es256().unwrap();
        assert!(PlatformSigner::new(rsa, &Secret::new(pem(&der))).is_err());
    }
}
