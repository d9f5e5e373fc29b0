//! `kombify-sso` against a real PostgreSQL and PocketBase, with a fake Zitadel (see
//! [`crate::sso_env`]): the auditor's token table, the exchange (first and second login, the
//! token working in PocketBase, tenants refused), the quota under 50 concurrent first logins,
//! webhooks (signatures, rotation, replay, effects) and feature flags.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use serde_json::{json, Map, Value};

use kombiform_services::jose::b64_encode;

use kombiform_services::sso::flags::rollout_bucket;
use kombiform_services::sso::webhooks::sign;

use crate::sso_env::*;

/// The error body without its request id.
fn error_of(v: &Value) -> Value {
    let mut e = v["error"].clone();
    assert!(
        e["requestId"].as_str().is_some_and(|r| !r.is_empty()),
        "no requestId in {v}"
    );
    if let Some(o) = e.as_object_mut() {
        o.remove("requestId");
    }
    e
}

fn b64(v: &Value) -> String {
    b64_encode(v.to_string().as_bytes())
}

/// An HS256 token over `claims` keyed with `secret` (ring's HMAC): what an attacker who knows
/// the RSA public key would send.
fn hs256(kid: &str, claims: &Value, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        b64(&json!({"alg": "HS256", "typ": "JWT", "kid": kid})),
        b64(claims)
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64_encode(tag.as_ref()))
}

/// A header object from a JSON literal.
fn header(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn every_bad_token_gets_the_same_401() {
    let env = SsoEnv::start(3600).unwrap_or_else(|e| panic!("{e:#}"));
    let sub = "310000000000000001";
    // The baseline works, so each refusal below is the case's own.
    let (status, _, body) = env.exchange_blocking(&env.token(sub, ACME_ORG));
    assert_eq!(status, 200, "{body}");

    let claims = |f: &dyn Fn(&mut Value)| {
        let mut c = env.claims(sub, ACME_ORG);
        f(&mut c);
        c
    };
    let t = now();
    let mut cases: Vec<(&str, String)> = Vec::new();
    cases.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT", "kid": "key-1"})),
            b64(&env.claims(sub, ACME_ORG))
        ),
    ));
    cases.push((
        "HS256 with the public key",
        hs256("key-1", &env.claims(sub, ACME_ORG), &env.key.public_pem),
    ));
    cases.push((
        "expired",
        env.key.sign(&claims(&|c| {
            c["exp"] = json!(t - 3600);
            c["iat"] = json!(t - 7200);
            c["nbf"] = json!(t - 7200);
        })),
    ));
    cases.push((
        "not yet valid",
        env.key.sign(&claims(&|c| c["nbf"] = json!(t + 3600))),
    ));
    cases.push((
        "no nbf",
        env.key.sign(&claims(&|c| {
            c.as_object_mut().unwrap().remove("nbf");
        })),
    ));
    cases.push((
        "wrong issuer",
        env.key
            .sign(&claims(&|c| c["iss"] = json!("https://evil.example"))),
    ));
    cases.push((
        "wrong audience",
        env.key.sign(&claims(&|c| c["aud"] = json!(["999"]))),
    ));
    for (name, claim, value) in [
        ("nonce", "nonce", json!("n")),
        ("amr", "amr", json!(["pwd"])),
        ("auth_time", "auth_time", json!(t)),
        ("at_hash", "at_hash", json!("x")),
        ("sid", "sid", json!("s")),
    ] {
        let _ = name;
        cases.push((
            "ID token",
            env.key.sign(&claims(&|c| c[claim] = value.clone())),
        ));
    }
    cases.push((
        "missing org claim",
        env.key.sign(&claims(&|c| {
            c.as_object_mut().unwrap().remove(ORG_CLAIM);
        })),
    ));
    cases.push((
        "empty org claim",
        env.key.sign(&claims(&|c| c[ORG_CLAIM] = json!(""))),
    ));
    cases.push((
        "numeric org claim",
        env.key
            .sign(&claims(&|c| c[ORG_CLAIM] = json!(284715550000000001u64))),
    ));
    cases.push((
        "no jti",
        env.key.sign(&claims(&|c| {
            c.as_object_mut().unwrap().remove("jti");
        })),
    ));
    cases.push(("garbage", "not.a.jwt".to_string()));
    cases.push(("tampered payload", {
        let good = env.token(sub, ACME_ORG);
        let parts: Vec<&str> = good.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            b64(&claims(&|c| c["sub"] = json!("310000000000000999"))),
            parts[2]
        )
    }));
    cases.push((
        "no kid",
        env.key
            .sign_with(&header(json!({"typ": "JWT"})), &env.claims(sub, ACME_ORG)),
    ));
    // Issue 8, item 6: a token issued in the future (beyond the 60 s leeway), and `crit`
    // headers (none is understood; malformed ones are refused too).
    cases.push((
        "issued in the future",
        env.key.sign(&claims(&|c| c["iat"] = json!(t + 3600))),
    ));
    for crit in [
        json!(["exp"]),
        json!(["b64"]),
        json!([]),
        json!("exp"),
        json!([7]),
    ] {
        cases.push((
            "crit",
            env.key.sign_with(
                &header(json!({"kid": "key-1", "typ": "JWT", "crit": crit, "exp": t})),
                &env.claims(sub, ACME_ORG),
            ),
        ));
    }
    cases.push((
        "jku",
        env.key.sign_with(
            &header(json!({"kid": "key-1", "jku": "https://evil.example/keys"})),
            &env.claims(sub, ACME_ORG),
        ),
    ));
    cases.push(("huge token", "a".repeat(16 * 1024)));

    let mut bodies = HashSet::new();
    for (name, token) in &cases {
        let (status, headers, body) = env.exchange_blocking(token);
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(
            headers.get("www-authenticate").map(|v| v.as_bytes()),
            Some(&b"Bearer"[..]),
            "{name}"
        );
        bodies.insert(error_of(&body).to_string());
    }
    assert_eq!(bodies.len(), 1, "one uniform 401 body: {bodies:?}");
    assert_eq!(
        bodies.iter().next().map(String::as_str),
        Some(r#"{"code":"unauthorized","message":"missing or invalid credentials"}"#)
    );
    // No refresh was triggered so far (all kids known or absent): only the startup fetch.
    assert_eq!(env.zitadel.jwks_fetches.load(Ordering::SeqCst), 1);

    // Unknown kid: one refresh, then 401; a second unknown kid within the cooldown: no fetch.
    let other = RsaKey::generate("key-unknown").unwrap();
    let (status, _, _) = env.exchange_blocking(&other.sign(&env.claims(sub, ACME_ORG)));
    assert_eq!(status, 401);
    assert_eq!(env.zitadel.jwks_fetches.load(Ordering::SeqCst), 2);
    let another = RsaKey::generate("key-unknown-2").unwrap();
    for _ in 0..5 {
        let (status, _, _) = env.exchange_blocking(&another.sign(&env.claims(sub, ACME_ORG)));
        assert_eq!(status, 401);
    }
    assert_eq!(
        env.zitadel.jwks_fetches.load(Ordering::SeqCst),
        2,
        "cooldown respected"
    );
    assert_eq!(env.sso.validator.keys().fetch_count(), 2);
    // The known key still works after the refresh.
    assert_eq!(env.exchange_blocking(&env.token(sub, ACME_ORG)).0, 200);

    // Missing and malformed Authorization headers, and a huge header.
    let url = format!("{}/api/internal/sso/exchange", env.url);
    for req in [
        env.http.post(&url),
        env.http
            .post(&url)
            .header("Authorization", "Basic dXNlcjpwYXNz"),
        env.http
            .post(&url)
            .header("Authorization", format!("Bearer {}", "x".repeat(20_000))),
        env.http.post(&url).json(&json!({"token": ""})),
    ] {
        let (status, _, body) = env.send(req);
        assert_eq!(status, 401, "{body}");
        assert_eq!(error_of(&body).to_string(), *bodies.iter().next().unwrap());
    }
}

#[test]
fn exchange_creates_then_reuses_a_user_whose_token_works_in_pocketbase() {
    let env = SsoEnv::start(30).unwrap_or_else(|e| panic!("{e:#}"));
    let sub = "320000000000000001";
    let (status, headers, first) = env.exchange_blocking(&env.token(sub, ACME_ORG));
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["tenant"], json!({"slug": "acme", "plan": "pro"}));
    assert_eq!(first["user"]["collection"], "t_acme_users");
    assert_eq!(first["user"]["email"], format!("{sub}@example.test"));
    assert_eq!(first["quota"], json!({"maxUsers": 25, "usedUsers": 1}));
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(
        (
            h("x-quota-users-limit"),
            h("x-quota-users-used"),
            h("x-quota-users-remaining")
        ),
        ("25".into(), "1".into(), "24".into())
    );
    assert_eq!(h("cache-control"), "no-store");
    let user_id = first["user"]["id"].as_str().unwrap().to_string();

    // Second login: same user, no new seat, no userinfo call.
    let calls = env.zitadel.userinfo_calls.load(Ordering::SeqCst);
    let (status, _, second) = env.exchange_blocking(&env.token(sub, ACME_ORG));
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["user"]["id"], user_id.as_str());
    assert_eq!(second["quota"]["usedUsers"], 1);
    assert_eq!(env.zitadel.userinfo_calls.load(Ordering::SeqCst), calls);
    assert_ne!(first["token"], Value::Null);

    // The token works against PocketBase and sees its own collection only.
    let token = second["token"].as_str().unwrap();
    let (status, list) = env.pb_get("/api/collections/t_acme_users/records", token);
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"][0]["id"], user_id.as_str());
    let (status, other) = env.pb_get("/api/collections/t_globex_users/records", token);
    // The list rule filters: another tenant's users list answers, empty.
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["items"].as_array().map(Vec::len), Some(0), "{other}");

    // Database state: one seat, one SSO user, one mapping, audit rows without the token.
    assert_eq!(
        env.query("SELECT used_users FROM kombify.quotas WHERE tenant = 'acme'")[0]
            .get::<_, i32>(0),
        1
    );
    assert_eq!(
        env.query(&format!(
            "SELECT pocketbase_user_id FROM kombify.sso_users WHERE subject = '{sub}'"
        ))[0]
            .get::<_, String>(0),
        user_id
    );
    assert_eq!(env.pb_count("_sso_mappings"), 1);
    let audits = env.query(&format!("SELECT action, result, target, details::text FROM kombify.audit_log WHERE actor = '{sub}' ORDER BY id"));
    let actions: Vec<String> = audits.iter().map(|r| r.get::<_, String>(0)).collect();
    assert_eq!(actions, ["sso.user.create", "sso.exchange", "sso.exchange"]);
    assert!(audits
        .iter()
        .all(|r| !r.get::<_, String>(3).contains(token)));

    // The token may come in the body too; the request id is propagated.
    let req = env
        .http
        .post(format!("{}/api/internal/sso/exchange", env.url))
        .header("X-Request-ID", "trace-abc.1")
        .json(&json!({"token": env.token(sub, ACME_ORG)}));
    let (status, headers, _) = env.send(req);
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        Some("trace-abc.1")
    );

    // Issue 8, item 7: a token in both the header and the body is `invalid_request` (RFC 6750
    // §3.1), even the same valid token twice; a body without `token` beside a header is fine.
    let exchange_url = format!("{}/api/internal/sso/exchange", env.url);
    let token = env.token(sub, ACME_ORG);
    for body_token in [token.clone(), "other".to_string()] {
        let both = env
            .http
            .post(&exchange_url)
            .bearer_auth(&token)
            .json(&json!({ "token": body_token }));
        let (status, headers, body) = env.send(both);
        assert_eq!(
            (status, error_of(&body)["code"].clone()),
            (400, json!("invalid_request")),
            "{body}"
        );
        assert_eq!(
            headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some(r#"Bearer error="invalid_request""#)
        );
    }
    let header_only = env
        .http
        .post(&exchange_url)
        .bearer_auth(&token)
        .json(&json!({"note": "no token here"}));
    assert_eq!(env.send(header_only).0, 200);

    // A hyphenated tenant lands in its namespace collection.
    let (status, _, stark) =
        env.exchange_blocking(&env.token("320000000000000002", "284715550000000006"));
    assert_eq!(status, 200, "{stark}");
    assert_eq!(stark["user"]["collection"], "t_stark_lab_users");

    // Unknown organization and suspended tenant: 403 with the same body.
    let (s1, _, unknown) =
        env.exchange_blocking(&env.token("320000000000000003", "999999999999999999"));
    let (s2, _, hooli) =
        env.exchange_blocking(&env.token("320000000000000004", "284715550000000005"));
    assert_eq!((s1, s2), (403, 403));
    assert_eq!(error_of(&unknown), error_of(&hooli));
    assert_eq!(error_of(&unknown)["code"], "tenant_forbidden");
    let req = env
        .http
        .post(format!("{}/api/internal/sso/exchange", env.url))
        .header("X-Request-ID", "rid-403")
        .bearer_auth(env.token("320000000000000003", "999999999999999999"));
    let (_, _, body) = env.send(req);
    assert_eq!(body["error"]["requestId"], "rid-403");

    // No e-mail from userinfo: refused, seat not taken.
    let (status, _, body) = env.exchange_blocking(&env.token("920000000000000001", ACME_ORG));
    assert_eq!(
        (status, error_of(&body)["code"].clone()),
        (422, json!("email_required"))
    );
    assert_eq!(
        env.query("SELECT used_users FROM kombify.quotas WHERE tenant = 'acme'")[0]
            .get::<_, i32>(0),
        1
    );

    // Key rotation: a token signed with a newly published key works after one refresh.
    let fetches = env.zitadel.jwks_fetches.load(Ordering::SeqCst);
    let rotated = RsaKey::generate("key-2").unwrap();
    env.zitadel.keys.lock().unwrap().push(rotated.jwk.clone());
    let (status, _, body) = env.exchange_blocking(&rotated.sign(&env.claims(sub, ACME_ORG)));
    assert_eq!(status, 200, "{body}");
    assert_eq!(env.zitadel.jwks_fetches.load(Ordering::SeqCst), fetches + 1);

    // Every error has the one format: unknown route, wrong method.
    let (status, _, body) = env.send(env.http.get(format!("{}/nope", env.url)));
    assert_eq!(
        (status, error_of(&body)["code"].clone()),
        (404, json!("not_found"))
    );
    let (status, _, body) = env.send(
        env.http
            .get(format!("{}/api/internal/sso/exchange", env.url)),
    );
    assert_eq!(
        (status, error_of(&body)["code"].clone()),
        (405, json!("method_not_allowed"))
    );

    // Health and readiness.
    assert_eq!(env.send(env.http.get(format!("{}/health", env.url))).0, 200);
    let (status, _, ready) = env.send(env.http.get(format!("{}/ready", env.url)));
    assert_eq!(status, 200, "{ready}");
}

#[test]
fn a_first_login_never_lands_in_a_user_record_it_did_not_create_for_the_subject() {
    let env = SsoEnv::start(30).unwrap_or_else(|e| panic!("{e:#}"));
    let su = env.pb.superuser_token().unwrap_or_else(|e| panic!("{e:#}"));
    let (alice_sub, colleague) = ("340000000000000001", "340000000000000002");
    let (status, _, alice) = env.exchange_blocking(&env.token(alice_sub, ACME_ORG));
    assert_eq!(status, 200, "{alice}");
    let alice_id = alice["user"]["id"]
        .as_str()
        .expect("test value")
        .to_string();
    let alice_token = alice["token"].as_str().expect("test value");
    let used = || -> i32 {
        env.query("SELECT used_users FROM kombify.quotas WHERE tenant = 'acme'")[0].get(0)
    };
    assert_eq!(used(), 1);

    // alice cannot put the colleague's subject (or a higher role) on her own record.
    let me = format!("/api/collections/t_acme_users/records/{alice_id}");
    for body in [json!({"zitadelSub": colleague}), json!({"role": "owner"})] {
        let (status, reply) = env.pb_send("PATCH", &me, alice_token, Some(&body));
        assert_eq!(status, 404, "{body}: {reply}");
    }
    let (_, record) = env.pb_get(&me, &su);
    assert_eq!(
        (record["zitadelSub"].as_str(), record["role"].as_str()),
        (Some(alice_sub), Some("member"))
    );

    // A record holding the colleague's subject exists all the same (written before these
    // rules, or by hand): the colleague's first login does not land in it.
    let intruder = json!({
        "email": "intruder@acme.test", "password": "Intruder-Pass-123456",
        "passwordConfirm": "Intruder-Pass-123456", "verified": true,
        "zitadelSub": colleague, "role": "member",
    });
    let (status, created) = env.pb_send(
        "POST",
        "/api/collections/t_acme_users/records",
        &su,
        Some(&intruder),
    );
    assert_eq!(status, 200, "{created}");
    let intruder_id = created["id"].as_str().expect("test value").to_string();
    let (status, _, body) = env.exchange_blocking(&env.token(colleague, ACME_ORG));
    assert_eq!(
        (status, error_of(&body)["code"].clone()),
        (409, json!("subject_conflict")),
        "{body}"
    );
    assert_eq!(
        env.pb_count("_sso_mappings"),
        1,
        "no mapping was left behind"
    );
    assert_eq!(used(), 1, "no seat was taken");
    let denied = env.query(&format!(
        "SELECT details->>'reason' FROM kombify.audit_log \
         WHERE actor = '{colleague}' AND action = 'sso.user.create' AND result = 'denied'"
    ));
    assert_eq!(
        denied.first().map(|r| r.get::<_, String>(0)).as_deref(),
        Some("subject_held_by_unlinked_user")
    );

    // Once an operator removes that record, the colleague gets a record of their own.
    let path = format!("/api/collections/t_acme_users/records/{intruder_id}");
    assert_eq!(env.pb_send("DELETE", &path, &su, None).0, 204);
    let (status, _, body) = env.exchange_blocking(&env.token(colleague, ACME_ORG));
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["user"]["id"], intruder_id.as_str());
    assert_eq!(body["user"]["email"], format!("{colleague}@example.test"));
    assert_eq!(used(), 2);

    // The mapping is the link: a mapped user deleted by hand comes back at the mapped id,
    // in the seat it had.
    assert_eq!(env.pb_send("DELETE", &me, &su, None).0, 204);
    let (status, _, again) = env.exchange_blocking(&env.token(alice_sub, ACME_ORG));
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["user"]["id"], alice_id.as_str());
    assert_eq!(used(), 2);
    assert_eq!(env.pb_count("_sso_mappings"), 2);
}

#[test]
fn quota_holds_under_fifty_concurrent_first_logins() {
    let env = SsoEnv::start(30).unwrap_or_else(|e| panic!("{e:#}"));
    env.execute("UPDATE kombify.quotas SET used_users = max_users - 1 WHERE tenant = 'acme'");
    let tokens: Vec<String> = (0..50)
        .map(|i| env.token(&format!("33{i:016}"), ACME_ORG))
        .collect();
    let results = env.rt.block_on(async {
        let futures = tokens.iter().map(|t| env.exchange(t));
        futures_join_all(futures).await
    });
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let quota = results
        .iter()
        .filter(|r| r.0 == 403 && error_of(&r.2)["code"] == "quota_exceeded")
        .count();
    assert_eq!(
        (ok, quota),
        (1, 49),
        "{:?}",
        results
            .iter()
            .map(|r| (r.0, r.2.clone()))
            .collect::<Vec<_>>()
    );
    let used: i32 =
        env.query("SELECT used_users FROM kombify.quotas WHERE tenant = 'acme'")[0].get(0);
    let max: i32 =
        env.query("SELECT max_users FROM kombify.quotas WHERE tenant = 'acme'")[0].get(0);
    assert_eq!(used, max);
    assert_eq!(env.pb_count("t_acme_users"), 1);
    assert_eq!(
        env.query("SELECT count(*) FROM kombify.sso_users WHERE tenant = 'acme'")[0]
            .get::<_, i64>(0),
        1
    );

    // Ten concurrent first logins of the SAME subject: one user, one seat.
    let before: i32 =
        env.query("SELECT used_users FROM kombify.quotas WHERE tenant = 'globex'")[0].get(0);
    let token = env.token("330000000000009999", "284715550000000002");
    let results = env
        .rt
        .block_on(futures_join_all((0..10).map(|_| env.exchange(&token))));
    assert!(
        results.iter().all(|r| r.0 == 200),
        "{:?}",
        results.iter().map(|r| r.2.clone()).collect::<Vec<_>>()
    );
    let ids: HashSet<String> = results
        .iter()
        .map(|r| r.2["user"]["id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(ids.len(), 1);
    let after: i32 =
        env.query("SELECT used_users FROM kombify.quotas WHERE tenant = 'globex'")[0].get(0);
    assert_eq!(after, before + 1);
    assert_eq!(env.pb_count("t_globex_users"), 1);
}

/// Runs futures concurrently on the current task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

pub(crate) fn stripe_event(id: &str, customer: &str, price: &str) -> Vec<u8> {
    json!({"id": id, "type": "customer.subscription.updated", "data": {"object": {
        "id": "sub_1", "customer": customer, "status": "active",
        "items": {"data": [{"price": {"id": price}}]}}}})
    .to_string()
    .into_bytes()
}

#[test]
fn webhooks_verify_signatures_refuse_replays_and_apply_effects() {
    let env = SsoEnv::start(30).unwrap_or_else(|e| panic!("{e:#}"));
    let post = |path: &str, header: &str, sig: String, body: &[u8]| {
        env.send(
            env.http
                .post(format!("{}{path}", env.url))
                .header(header, sig)
                .header("content-type", "application/json")
                .body(body.to_vec()),
        )
    };
    let stripe =
        |sig: String, body: &[u8]| post("/api/webhooks/stripe", "Stripe-Signature", sig, body);
    env.execute("UPDATE kombify.quotas SET used_users = 3 WHERE tenant = 'acme'");
    let body = stripe_event(
        "evt_plan_1",
        "cus_QAcme000000001",
        "price_1PkEnt0000000000000000",
    );
    let t = now();

    // Refused: tampered body, old and future timestamps, unknown secret, no header.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    for (name, sig, b) in [
        ("tampered", sign(t, &body, STRIPE_SECRETS[1]), &tampered),
        ("old", sign(t - 301, &body, STRIPE_SECRETS[1]), &body),
        // Beyond the 300 s tolerance by a margin: the service's clock may already be a second
        // or more past `t` (a bare t + 301 made this case flaky under load).
        ("future", sign(t + 330, &body, STRIPE_SECRETS[1]), &body),
        ("unknown secret", sign(t, &body, "whsec_other"), &body),
        ("no v1", format!("t={t}"), &body),
    ] {
        let (status, _, resp) = stripe(sig, b);
        assert_eq!(
            (status, error_of(&resp)["code"].clone()),
            (400, json!("invalid_signature")),
            "{name}"
        );
    }
    let (status, _, _) = env.send(
        env.http
            .post(format!("{}/api/webhooks/stripe", env.url))
            .body(body.clone()),
    );
    assert_eq!(status, 400);
    assert_eq!(
        env.query("SELECT plan FROM kombify.tenants WHERE slug = 'acme'")[0].get::<_, String>(0),
        "pro"
    );

    // Valid (signed with the OLD secret of a rotation): plan and quota limits follow, usage kept.
    let (status, _, resp) = stripe(sign(t, &body, STRIPE_SECRETS[0]), &body);
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["effect"], "plan_changed");
    let row = &env.query("SELECT t.plan, q.max_users, q.max_nodes, q.used_users FROM kombify.tenants t JOIN kombify.quotas q ON q.tenant = t.slug WHERE t.slug = 'acme'")[0];
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, i32>(1),
            row.get::<_, i32>(2),
            row.get::<_, i32>(3)
        ),
        ("enterprise".into(), 500, 1000, 3)
    );

    // Duplicate (re-signed with the NEW secret): 200, no second effect.
    env.execute("UPDATE kombify.tenants SET plan = 'pro' WHERE slug = 'acme'");
    let (status, _, resp) = stripe(sign(now(), &body, STRIPE_SECRETS[1]), &body);
    assert_eq!((status, resp["duplicate"].clone()), (200, json!(true)));
    assert_eq!(
        env.query("SELECT plan FROM kombify.tenants WHERE slug = 'acme'")[0].get::<_, String>(0),
        "pro"
    );
    assert_eq!(env.query("SELECT count(*) FROM kombify.audit_log WHERE action = 'tenant.plan.change' AND details->>'event' = 'evt_plan_1'")[0].get::<_, i64>(0), 1);

    // An unknown customer is recorded, not applied.
    let unknown = stripe_event("evt_plan_2", "cus_nobody", "price_1PkEnt0000000000000000");
    let (status, _, resp) = stripe(sign(now(), &unknown, STRIPE_SECRETS[1]), &unknown);
    assert_eq!((status, resp["effect"].clone()), (200, json!("ignored")));

    // Zitadel: a deactivated user loses every token and cannot exchange again until reactivated.
    let sub = "340000000000000001";
    let (status, _, ex) = env.exchange_blocking(&env.token(sub, ACME_ORG));
    assert_eq!(status, 200, "{ex}");
    let (old_token, user_id) = (
        ex["token"].as_str().unwrap().to_string(),
        ex["user"]["id"].as_str().unwrap().to_string(),
    );
    let view = format!("/api/collections/t_acme_users/records/{user_id}");
    assert_eq!(env.pb_get(&view, &old_token).0, 200);
    let zitadel = |kind: &str, seq: u64| {
        let body = json!({"aggregateID": sub, "aggregateType": "user", "resourceOwner": ACME_ORG, "instanceID": "1",
                          "version": "v2", "sequence": seq, "event_type": kind, "created_at": "2026-11-26T10:00:00Z"}).to_string().into_bytes();
        post(
            "/api/webhooks/zitadel",
            "ZITADEL-Signature",
            sign(now(), &body, ZITADEL_SECRET),
            &body,
        )
    };
    let bad = json!({"aggregateID": sub, "sequence": 1, "event_type": "user.deactivated"})
        .to_string()
        .into_bytes();
    assert_eq!(
        post(
            "/api/webhooks/zitadel",
            "ZITADEL-Signature",
            sign(now(), &bad, "wrong"),
            &bad
        )
        .0,
        400
    );
    assert_eq!(
        env.pb_get(&view, &old_token).0,
        200,
        "a refused webhook has no effect"
    );
    let (status, _, resp) = zitadel("user.deactivated", 5);
    assert_eq!(
        (status, resp["effect"].clone()),
        (200, json!("tokens_revoked")),
        "{resp}"
    );
    assert_eq!(
        env.pb_get(&view, &old_token).0,
        404,
        "old token is now a guest"
    );
    assert_eq!(
        env.pb_post("/api/collections/t_acme_users/auth-refresh", &old_token),
        401
    );
    let (status, _, resp) = env.exchange_blocking(&env.token(sub, ACME_ORG));
    assert_eq!(
        (status, error_of(&resp)["code"].clone()),
        (403, json!("user_disabled"))
    );
    let (status, _, resp) = zitadel("user.deactivated", 5);
    assert_eq!((status, resp["duplicate"].clone()), (200, json!(true)));
    let (status, _, _) = zitadel("user.reactivated", 6);
    assert_eq!(status, 200);
    let (status, _, ex) = env.exchange_blocking(&env.token(sub, ACME_ORG));
    assert_eq!(status, 200, "{ex}");
    assert_eq!(env.pb_get(&view, ex["token"].as_str().unwrap()).0, 200);
    assert_eq!(
        env.query("SELECT count(*) FROM kombify.audit_log WHERE actor = 'zitadel'")[0]
            .get::<_, i64>(0),
        2
    );
}

#[test]
fn feature_flags_apply_and_evaluate_in_order() {
    let env = SsoEnv::start(30).unwrap_or_else(|e| panic!("{e:#}"));
    let apply = |token: &str, body: &Value| {
        env.send(
            env.http
                .post(format!("{}/api/internal/feature-flags/apply", env.url))
                .bearer_auth(token)
                .json(body),
        )
    };
    let get = |tenant: &str| {
        env.send(
            env.http
                .get(format!("{}/api/internal/feature-flags/{tenant}", env.url))
                .bearer_auth(INTERNAL_TOKEN),
        )
    };
    let payload = json!({"flags": [
        {"name": "beta-ui", "default": false, "plans": {"pro": true}, "tenants": {"acme": false}},
        {"name": "half", "default": false, "rolloutPercent": 50},
        {"name": "plain", "default": true, "description": "on for all"}
    ]});
    assert_eq!(apply("wrong", &payload).0, 401);
    assert_eq!(
        env.send(
            env.http
                .post(format!("{}/api/internal/feature-flags/apply", env.url))
                .json(&payload)
        )
        .0,
        401
    );
    assert_eq!(
        env.send(
            env.http
                .get(format!("{}/api/internal/feature-flags/acme", env.url))
        )
        .0,
        401
    );
    let (status, _, body) = apply(INTERNAL_TOKEN, &payload);
    assert_eq!(status, 200, "{body}");

    let flag = |tenant: &str, name: &str| {
        let (status, _, v) = get(tenant);
        assert_eq!(status, 200, "{v}");
        (
            v["flags"][name]["enabled"].as_bool().unwrap(),
            v["flags"][name]["source"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(flag("acme", "beta-ui"), (false, "tenant".into()));
    assert_eq!(flag("devtest", "beta-ui"), (true, "plan".into()));
    assert_eq!(flag("initech", "beta-ui"), (false, "default".into()));
    assert_eq!(flag("initech", "plain"), (true, "default".into()));
    let (status, _, body) = get("nosuchtenant");
    assert_eq!(
        (status, error_of(&body)["code"].clone()),
        (404, json!("not_found"))
    );

    // Re-apply replaces the overrides: acme now falls through to its plan.
    let (status, _, _) = apply(
        INTERNAL_TOKEN,
        &json!({"flags": [{"name": "beta-ui", "default": false, "plans": {"pro": true}}]}),
    );
    assert_eq!(status, 200);
    assert_eq!(flag("acme", "beta-ui"), (true, "plan".into()));

    // One transaction: an unknown plan refuses the whole payload.
    let (status, _, body) = apply(
        INTERNAL_TOKEN,
        &json!({"flags": [{"name": "new-one", "default": true}, {"name": "bad", "default": true, "plans": {"nosuchplan": true}}]}),
    );
    assert_eq!(
        (status, error_of(&body)["code"].clone()),
        (400, json!("bad_request"))
    );
    assert_eq!(
        env.query("SELECT count(*) FROM kombify.flags WHERE name = 'new-one'")[0].get::<_, i64>(0),
        0
    );
    assert_eq!(
        apply(
            INTERNAL_TOKEN,
            &json!({"flags": [{"name": "Bad Name", "default": true}]})
        )
        .0,
        400
    );

    // Rollout: stable, equal to the documented hash, roughly half of 400 tenants.
    env.execute("INSERT INTO kombify.tenants (slug, display_name, plan, zitadel_org_id, instance, status) \
                 SELECT 'r' || i, 'R' || i, 'free', (900000000 + i)::text, 'shared', 'active' FROM generate_series(1, 400) i");
    let mut on = 0;
    for i in 1..=400 {
        let slug = format!("r{i}");
        let (enabled, source) = flag(&slug, "half");
        assert_eq!(enabled, rollout_bucket("half", &slug) < 50, "{slug}");
        assert_eq!(source, if enabled { "rollout" } else { "default" });
        on += usize::from(enabled);
    }
    assert!((150..=250).contains(&on), "{on} of 400 in a 50% rollout");
    assert_eq!(flag("r7", "half"), flag("r7", "half"));
}

#[test]
fn the_binary_starts_from_the_generated_config_and_names_missing_secrets() {
    let exe = env!("CARGO_BIN_EXE_kombify-sso");
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("sso.json");
    std::fs::write(
        &config,
        crate::sso_env::generated("local/services/sso.json").expect("the fixture has sso.json"),
    )
    .expect("writing sso.json");
    let out = std::process::Command::new(exe)
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PG_KOMBIFY_SSO_PASSWORD"), "{stderr}");

    // Dependencies that cannot answer: a listener that never accepts holds PostgreSQL's and
    // PocketBase's connections until the check times out, whatever runs on this machine.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    cfg["postgres"]["port"] = json!(silent_port);
    cfg["pocketbase"]["url"] = json!(format!("http://127.0.0.1:{silent_port}"));
    std::fs::write(&config, cfg.to_string()).unwrap();
    let (platform_key, _) = kombiform_test_support::kong_jwt::es256_key_pair().unwrap();
    let mut child = std::process::Command::new(exe)
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env_clear()
        .envs([
            ("PG_KOMBIFY_SSO_PASSWORD", "x"),
            ("POCKETBASE_SUPERUSER_PASSWORD", "x"),
            ("SSO_INTERNAL_TOKEN", "x"),
            ("STRIPE_WEBHOOK_SECRET", "x"),
            ("ZITADEL_WEBHOOK_SECRET", "x"),
            ("SSO_TOKEN_KEY_LOCAL", platform_key.as_str()),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The bound address, from the service's own "listening" log line.
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let address = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            let v: Value = serde_json::from_str(&line).ok()?;
            (v["fields"]["message"] == "kombify-sso listening")
                .then(|| v["fields"]["address"].as_str().map(str::to_string))
                .flatten()
        })
        .expect("kombify-sso logs its address");
    std::thread::spawn(move || for _ in lines {});
    let agent = kombiform_test_support::http::client(std::time::Duration::from_secs(10)).unwrap();
    let health = agent
        .get(format!("http://{address}/health"))
        .send()
        .unwrap();
    let status = health.status().as_u16();
    let rid = health
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let ready = agent
        .get(format!("http://{address}/ready"))
        .send()
        .map(|r| (r.status().as_u16(), r.text().unwrap_or_default()));
    let _ = child.kill();
    let _ = child.wait();
    drop(silent);
    assert_eq!(status, 200);
    assert_eq!(rid.len(), 32);
    let (code, text) = ready.unwrap();
    assert_eq!(code, 503, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "not_ready", "{text}");
}
