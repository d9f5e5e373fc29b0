//! Platform access tokens end to end: kombify-sso (real PostgreSQL, PocketBase, a fake
//! Zitadel) mints a token at `POST /api/sso/token` for a valid Zitadel token, and the Kong
//! config kombiform generates accepts it the way Kong's `jwt` plugin selects and verifies
//! (`kombiform_test_support::kong_jwt` over the generated document's credentials). Across a
//! key rotation: during the overlap, tokens signed with the old key and with the new key are
//! both accepted; after the removal, the old key's tokens are not.
//!
//! Not a test of the rotation's plan (the engine's Kong provider tests) or of Zitadel token
//! validation (the SSO tests).

use anyhow::{Context, Result};
use serde_json::Value;

use kombiform_model::secret::Secret;
use kombiform_model::services::PlatformTokensConfig;
use kombiform_model::{Model, SecretRef, TokenKey};
use kombiform_services::sso::platform::PlatformSigner;
use kombiform_test_support::kong_jwt::{authenticate, es256_key_pair, Outcome};

use crate::sso_env::{now, SsoEnv, ACME_ORG};

/// The example model with the local platform's token keys replaced: (id, public PEM, signs).
fn with_keys(keys: &[(&str, &str, bool)]) -> Model {
    let mut m = kombiform_test_support::example_model();
    for p in m.platforms.iter_mut().filter(|p| p.name == "local") {
        p.sso.platform_tokens.keys = keys
            .iter()
            .map(|(id, public, signs)| TokenKey {
                id: (*id).to_string(),
                algorithm: Default::default(),
                public_key_pem: (*public).to_string(),
                private_key: SecretRef::Env(format!("KEY_{id}")),
                signs: *signs,
            })
            .collect();
    }
    m
}

/// The generated local Kong document and the `jwt` plugin config of its first authenticated
/// route.
fn gateway(model: &Model) -> Result<(Value, Value)> {
    let env = model.env("local").context("local")?;
    let doc = kombiform_emit::kong::document(env);
    let conf = doc["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["routes"].as_array().into_iter().flatten())
        .flat_map(|r| r["plugins"].as_array().into_iter().flatten())
        .find(|p| p["name"] == "jwt")
        .map(|p| p["config"].clone())
        .context("no jwt plugin")?;
    Ok((doc, conf))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn acme_via(key: &str) -> Outcome {
    Outcome::Consumer {
        consumer: "acme".into(),
        key: key.into(),
    }
}

#[test]
fn tokens_of_the_old_and_the_new_key_are_accepted_during_the_overlap_only() -> Result<()> {
    let env = SsoEnv::start(30)?;
    // kombify-sso signs with `local1` (its config); its key is the new one of the rotation.
    let config = env
        .config
        .platform_tokens
        .clone()
        .context("the local sso config has platform tokens")?;
    assert_eq!(config.key_id, "local1");
    let zitadel = env.token("user-platform-1", ACME_ORG);
    let (status, _, body) = env.send(
        env.http
            .post(format!("{}/api/sso/token", env.url))
            .bearer_auth(&zitadel),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], config.ttl_seconds);
    let new_token = body["access_token"]
        .as_str()
        .context("access_token")?
        .to_string();

    // What the service signed with before the switch: the old key, as its own signer.
    let (old_private, old_public) = es256_key_pair()?;
    let old_signer = PlatformSigner::new(
        PlatformTokensConfig {
            key_id: "k0".into(),
            ..config.clone()
        },
        &Secret::new(old_private),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = now();
    let old_token = old_signer
        .mint("acme", "user-platform-1", t)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .access_token;
    let new_public = env.platform_public_pem.as_str();

    // The overlap: both keys listed, the new one signs.
    let (doc, jwt) = gateway(&with_keys(&[
        ("k0", &old_public, false),
        ("local1", new_public, true),
    ]))?;
    assert_eq!(jwt["maximum_expiration"], config.ttl_seconds);
    assert_eq!(
        authenticate(&doc, &jwt, Some(&bearer(&new_token)), t),
        acme_via("acme.local1")
    );
    assert_eq!(
        authenticate(&doc, &jwt, Some(&bearer(&old_token)), t),
        acme_via("acme.k0")
    );

    // Before the add, the new key's tokens would not have been accepted.
    let (doc, jwt) = gateway(&with_keys(&[("k0", &old_public, true)]))?;
    assert_eq!(
        authenticate(&doc, &jwt, Some(&bearer(&new_token)), t),
        Outcome::Anonymous(kombiform_emit::kong::ANONYMOUS.into())
    );

    // After the removal: the old key's tokens are refused (the anonymous consumer, whose
    // request-termination answers 401), the new key's still accepted.
    let (doc, jwt) = gateway(&with_keys(&[("local1", new_public, true)]))?;
    assert_eq!(
        authenticate(&doc, &jwt, Some(&bearer(&old_token)), t),
        Outcome::Anonymous(kombiform_emit::kong::ANONYMOUS.into())
    );
    assert_eq!(
        authenticate(&doc, &jwt, Some(&bearer(&new_token)), t),
        acme_via("acme.local1")
    );
    // Expired once its lifetime is over; a token for another tenant's credential is
    // another consumer, never acme.
    let later = t + i64::from(config.ttl_seconds) + 1;
    assert_eq!(
        authenticate(&doc, &jwt, Some(&bearer(&new_token)), later),
        Outcome::Anonymous(kombiform_emit::kong::ANONYMOUS.into())
    );
    Ok(())
}

#[test]
fn no_platform_token_without_a_valid_zitadel_token_or_an_active_tenant() -> Result<()> {
    let env = SsoEnv::start(30)?;
    let post = |token: &str| {
        env.send(
            env.http
                .post(format!("{}/api/sso/token", env.url))
                .bearer_auth(token),
        )
    };
    let (status, _, body) = post("not-a-token");
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    let (status, _, _) = post(&env.token("user-platform-2", "999999999999999999"));
    assert_eq!(status, 403);
    Ok(())
}
