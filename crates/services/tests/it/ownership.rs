//! Data the platform owns at run time, end to end against a real PostgreSQL: a signed Stripe
//! webhook moves acme from `pro` to `enterprise` through the real `kombify-sso`; the deploy
//! engine's next plan keeps the billed plan (shown in `plan.kept`, no change reverting it)
//! and shows the follow-on gateway change (acme's rate limits, which Kong enforces, become
//! enterprise's); applying it leaves the plan clean and the billed plan in place.
//! Then the Admin flag sync rewrites a flag through the same service: the next plan keeps its
//! values and overrides.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use kombiform_engine::ops;
use kombiform_engine::providers::postgres::{ConnectParams, Postgres};
use kombiform_engine::providers::Provider;
use kombiform_engine::state::State;
use kombiform_model::PostgresTls;
use kombiform_plan::{Change, Plan};
use kombiform_services::sso::webhooks::sign;

use crate::sso::stripe_event;
use crate::sso_env::*;

fn acme_changes(plan: &Plan) -> Vec<&Change> {
    plan.changes
        .iter()
        .filter(|c| c.address.ends_with(".acme"))
        .collect()
}

#[test]
fn a_stripe_plan_change_is_kept_and_its_gateway_limits_follow_through_the_next_apply() {
    let env = SsoEnv::start(30).unwrap_or_else(|e| panic!("{e:#}"));
    let model = kombiform_test_support::example_model();
    let local = model.env("local").unwrap();
    let client = Postgres::connect(ConnectParams {
        host: env.pg.host().to_string(),
        port: env.pg.port(),
        user: env.pg.user().to_string(),
        password: None,
        dbname: DB.to_string(),
        tls: PostgresTls::disabled(),
        connect_timeout: Duration::from_secs(10),
    })
    .unwrap();
    let providers = vec![Provider {
        target: &kombiform_emit::targets::postgres::Postgres,
        client: Arc::new(client),
    }];
    let state = State::new("local", "ownership-test");
    let plan = || {
        let live = ops::read_live(&providers).unwrap();
        ops::make_plan(local, "specs", &state, &providers, &live, &[]).unwrap()
    };
    let before = plan();
    assert!(
        acme_changes(&before).is_empty(),
        "the scripts applied the specs"
    );
    assert!(before.kept.is_empty());

    // Stripe moves acme to enterprise.
    let body = stripe_event(
        "evt_owner_1",
        "cus_QAcme000000001",
        "price_1PkEnt0000000000000000",
    );
    let (status, _, resp) = env.send(
        env.http
            .post(format!("{}/api/webhooks/stripe", env.url))
            .header("Stripe-Signature", sign(now(), &body, STRIPE_SECRETS[1]))
            .header("content-type", "application/json")
            .body(body.clone()),
    );
    assert_eq!(
        (status, resp["effect"].clone()),
        (200, json!("plan_changed")),
        "{resp}"
    );

    // The next plan keeps it, and shows what follows from it.
    let after = plan();
    assert!(
        !after
            .changes
            .iter()
            .any(|c| c.address == "postgres.tenant.acme"),
        "the billed plan is reverted: {:?}",
        after.changes.iter().map(|c| &c.address).collect::<Vec<_>>()
    );
    assert_eq!(after.kept.len(), 1, "{:?}", after.kept);
    let k = &after.kept[0];
    assert_eq!(
        (k.address.as_str(), k.attr.as_str(), &k.specs, &k.live),
        (
            "postgres.tenant.acme",
            "plan",
            &json!("pro"),
            &json!("enterprise")
        )
    );
    let text = kombiform_plan::render::text(&after, false);
    assert!(
        text.contains("postgres.tenant.acme plan: \"enterprise\"")
            && text.contains("billing (Stripe)"),
        "{text}"
    );
    let enterprise = model.plan("enterprise").unwrap();
    let quota = after
        .changes
        .iter()
        .find(|c| c.address == "postgres.quota.acme")
        .unwrap_or_else(|| panic!("no gateway change: {text}"));
    let minute = quota
        .attrs
        .iter()
        .find(|a| a.name == "rate_limit_minute")
        .unwrap_or_else(|| panic!("no rate-limit change: {quota:?}"));
    assert_eq!(
        minute.after,
        Some(
            enterprise
                .rate_limits
                .minute
                .map_or(Value::Null, Value::from)
        )
    );
    assert!(
        !quota.attrs.iter().any(|a| a.name == "max_users"),
        "the webhook already set the seat limit: {quota:?}"
    );

    // Applied, the plan is clean; the billed plan stays; usage was never touched.
    let refs: Vec<&Change> = after.changes.iter().collect();
    providers[0].client.apply(&refs).unwrap();
    let clean = plan();
    assert!(acme_changes(&clean).is_empty(), "{:?}", clean.changes);
    assert_eq!(clean.kept.len(), 1);
    let row = &env.query(
        "SELECT t.plan, q.rate_limit_minute FROM kombify.tenants t \
         JOIN kombify.quotas q ON q.tenant = t.slug WHERE t.slug = 'acme'",
    )[0];
    assert_eq!(row.get::<_, String>(0), "enterprise");
    assert_eq!(
        row.get::<_, Option<i64>>(1),
        enterprise.rate_limits.minute.map(i64::from)
    );

    // The Admin flag sync takes a flag over: its values and overrides are kept too.
    let payload = json!({"flags": [{"name": "new-dashboard", "default": true,
        "description": "synced by the Admin", "rolloutPercent": 80, "tenants": {"globex": true}}]});
    let (status, _, resp) = env.send(
        env.http
            .post(format!("{}/api/internal/feature-flags/apply", env.url))
            .bearer_auth(INTERNAL_TOKEN)
            .json(&payload),
    );
    assert_eq!(status, 200, "{resp}");
    let synced = plan();
    let reverts: Vec<&String> = synced
        .changes
        .iter()
        .map(|c| &c.address)
        .filter(|a| a.contains("new-dashboard"))
        .collect();
    assert!(
        reverts.is_empty(),
        "the synced flag is reverted: {reverts:?}"
    );
    let kept: Vec<(&str, &str)> = synced
        .kept
        .iter()
        .map(|k| (k.address.as_str(), k.attr.as_str()))
        .collect();
    for want in [
        ("postgres.flag.new-dashboard", "rollout_percent"),
        ("postgres.flag.new-dashboard", "default_enabled"),
        ("postgres.flag_tenant.new-dashboard:globex", "enabled"),
    ] {
        assert!(kept.contains(&want), "{want:?} not kept: {kept:?}");
    }
}
