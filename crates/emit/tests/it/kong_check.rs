//! The typed Kong output checks (`kombiform_test_support::kong_check`) catch what they claim:
//! each test breaks a good generated document in one way and expects the matching error.
use serde_json::json;

use kombiform_emit::kong::document;
use kombiform_model::KongEdition;
use kombiform_test_support::kong_check::{check, is_vault_ref};
use kombiform_test_support::{enterprise_model as enterprise, example_model as example};
use serde_json::Value;

fn prod(edition: KongEdition) -> Value {
    let m = match edition {
        KongEdition::Oss => example(),
        KongEdition::Enterprise => enterprise(),
    };
    m.env("prod").map(document).unwrap_or_default()
}

/// Breaks a good document with `f` and expects an error containing `expect`.
fn breaks(edition: KongEdition, f: impl FnOnce(&mut Value), expect: &str) {
    let mut doc = prod(edition);
    assert!(
        check(&doc, edition).is_empty(),
        "the unbroken document fails"
    );
    f(&mut doc);
    let errors = check(&doc, edition);
    assert!(
        errors.iter().any(|e| e.contains(expect)),
        "expected an error containing {expect:?}, got {errors:#?}"
    );
}

const OSS: KongEdition = KongEdition::Oss;
const EE: KongEdition = KongEdition::Enterprise;

fn acme_limits(d: &mut Value) -> &mut Value {
    // consumers[0] is the anonymous consumer; [1] is `acme`.
    &mut d["consumers"][1]["plugins"][0]["config"]
}

#[test]
fn rate_limiting() {
    breaks(
        OSS,
        |d| acme_limits(d)["minute"] = json!(10),
        "minute (10) is lower than second (20)",
    );
    breaks(
        OSS,
        |d| acme_limits(d)["policy"] = json!("cluster"),
        "only local or redis",
    );
    breaks(
        OSS,
        |d| acme_limits(d)["limit_by"] = json!("consumer-group"),
        "not an OSS limit_by",
    );
    breaks(
        OSS,
        |d| acme_limits(d)["redis_hostt"] = json!("x"),
        "unknown field `redis_hostt`",
    );
    breaks(
        OSS,
        |d| acme_limits(d)["minute"] = json!("six hundred"),
        "invalid type",
    );
    breaks(
        OSS,
        |d| acme_limits(d)["redis"]["password"] = json!("hunter2"),
        "vault reference",
    );
    breaks(
        OSS,
        |d| acme_limits(d)["hide_client_headers"] = json!(true),
        "rate limit headers",
    );
    breaks(
        OSS,
        |d| {
            for p in ["second", "minute", "hour", "day"] {
                if let Some(m) = acme_limits(d).as_object_mut() {
                    m.remove(p);
                }
            }
        },
        "at least one limit",
    );
}

#[test]
fn services_and_references() {
    // services[1] is `health`, plain http.
    breaks(
        OSS,
        |d| d["services"][1]["tls_verify"] = json!(true),
        "http services must not",
    );
    breaks(
        OSS,
        |d| d["services"][0]["client_certificate"] = json!("00000000-0000-0000-0000-000000000000"),
        "no certificate with id",
    );
    breaks(
        OSS,
        |d| d["services"][0]["ca_certificates"] = json!(["nope"]),
        "no ca_certificate",
    );
    breaks(
        OSS,
        |d| d["services"][0]["protocol"] = json!("htps"),
        "not http or https",
    );
    breaks(
        OSS,
        |d| d["services"][0]["tls_sans"] = json!({}),
        "unknown field `tls_sans`",
    );
    breaks(
        OSS,
        |d| d["certificates"][0]["key"] = json!("-----BEGIN PRIVATE KEY-----\nx"),
        "private key",
    );
    breaks(
        OSS,
        |d| d["certificates"][0]["id"] = json!("cert-1"),
        "not a UUID",
    );
}

#[test]
fn routes() {
    breaks(
        OSS,
        |d| d["services"][0]["routes"][0]["name"] = json!("health"),
        "route name `health` is used twice",
    );
    breaks(
        OSS,
        |d| d["services"][0]["routes"][0]["paths"] = d["services"][1]["routes"][0]["paths"].clone(),
        "also claimed by route",
    );
    breaks(
        OSS,
        |d| d["services"][0]["routes"][0]["pathz"] = json!(["/x"]),
        "unknown field `pathz`",
    );
    breaks(
        OSS,
        |d| d["services"][0]["routes"][0]["sources"] = json!([{"ip": "10.0.0.0/8"}]),
        "unknown field `sources`",
    );
    // services[4] is `sso`; its routes[1] is the public `webhooks`.
    breaks(
        OSS,
        |d| d["services"][4]["routes"][1]["paths"] = json!(["~/api/internal/sso/exchange(?:/|$)"]),
        "reachable from outside",
    );
    breaks(
        OSS,
        |d| d["routes"][0]["plugins"] = json!([]),
        "without a service must terminate",
    );
    // services[0] is `admin`: jwt then acl.
    breaks(
        OSS,
        |d| {
            if let Some(a) = d["services"][0]["routes"][0]["plugins"].as_array_mut() {
                a.remove(0);
            }
        },
        "acl without an authentication plugin",
    );
    breaks(
        OSS,
        |d| d["services"][0]["routes"][0]["plugins"][1]["config"]["allow"] = json!([]),
        "exactly one of allow and deny",
    );
}

#[test]
fn plugins_and_editions() {
    breaks(
        OSS,
        |d| d["plugins"][0]["name"] = json!("jwtt"),
        "not in Kong OSS 3.9",
    );
    breaks(
        OSS,
        |d| d["plugins"][1] = json!({"name": "openid-connect", "config": {}}),
        "`openid-connect` is not in Kong OSS 3.9",
    );
    breaks(
        OSS,
        |d| d["consumer_groups"] = json!([{"name": "plan-pro"}]),
        "Enterprise-only",
    );
    breaks(
        OSS,
        |d| d["consumers"][0]["groups"] = json!([{"name": "plan-pro"}]),
        "Enterprise-only",
    );
    breaks(
        OSS,
        |d| {
            d["services"][0]["routes"][0]["plugins"][1]["config"]["include_consumer_groups"] =
                json!(true)
        },
        "Enterprise-only field",
    );
    breaks(
        OSS,
        |d| {
            d["services"][0]["routes"][0]["plugins"][0]["config"]["claims_to_verify"] =
                json!(["iat"])
        },
        "only exp and nbf",
    );
    breaks(OSS, |d| d["_info"] = json!({}), "unknown field `_info`");
    breaks(
        OSS,
        |d| d["_format_version"] = json!("1.1"),
        "must be \"3.0\"",
    );
    breaks(
        OSS,
        |d| d["plugins"][0]["config"]["origins"] = json!([]),
        "any origin",
    );
    breaks(
        OSS,
        |d| {
            d["consumers"][2]["jwt_secrets"][0]["key"] =
                d["consumers"][1]["jwt_secrets"][0]["key"].clone()
        },
        "used twice",
    );
    breaks(
        OSS,
        |d| d["consumers"][1]["jwt_secrets"][0]["algorithm"] = json!("HS256"),
        "shared-secret",
    );
}

#[test]
fn enterprise_documents() {
    breaks(
        EE,
        |d| d["consumer_group_consumers"][0]["consumer_group"] = json!("plan-gold"),
        "no consumer group `plan-gold`",
    );
    breaks(
        EE,
        |d| d["consumers"][0]["groups"] = json!([{"name": "plan-pro"}]),
        "decK's nested form",
    );
    breaks(
        EE,
        |d| d["services"][0]["routes"][0]["plugins"][0]["config"]["audience_required"] = json!([]),
        "any audience",
    );
    breaks(
        EE,
        |d| {
            d["services"][0]["routes"][0]["plugins"][0]["config"]["session_secret"] =
                json!("s3cret")
        },
        "vault reference",
    );
    breaks(
        EE,
        |d| d["plugins"][1] = json!({"name": "rate-limiting-advanced", "config": {}}),
        "not in our Enterprise allow-list",
    );
}

#[test]
fn vault_references() {
    assert!(is_vault_ref("{vault://env/redis-access-key}"));
    assert!(!is_vault_ref("vault://env/x"));
    assert!(!is_vault_ref("{vault://env}"));
    assert!(!is_vault_ref("{vault://env/a b}"));
}
