//! The services' PostgreSQL roles against a real server: apply creates `kombify_sso` and
//! `kombify_health` with exactly their grants; each service's queries work as its role and
//! everything outside its grants is refused; a grant added out of band is planned away; the
//! password reaches the server as a SCRAM verifier and never the plan; a missing password
//! secret is a missing input naming its variable.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result};
use kombiform_emit::targets::postgres::{desired, Postgres as Target};
use kombiform_emit::targets::Target as _;
use kombiform_engine::providers::postgres::{ConnectParams, Postgres};
use kombiform_engine::providers::Client as _;
use kombiform_model::{PostgresTls, SecretRef};
use kombiform_plan::{self as plan, Change, DiffInput, Resource};
use kombiform_test_support::postgres::Postgres as Server;

const DB: &str = "kombify_platform";

fn provider(server: &Server, secrets: BTreeMap<String, SecretRef>) -> Result<Postgres> {
    Ok(Postgres::connect(ConnectParams {
        host: server.host().to_string(),
        port: server.port(),
        user: server.user().to_string(),
        password: None,
        dbname: DB.to_string(),
        tls: PostgresTls::disabled(),
        connect_timeout: Duration::from_secs(10),
    })?
    .with_role_secrets(secrets))
}

fn changes(p: &Postgres, want: &[Resource]) -> Result<Vec<Change>> {
    let live = p.read()?;
    let managed: BTreeSet<String> = live.resources.iter().map(|r| r.address.clone()).collect();
    let mut cs = plan::diff(&DiffInput {
        desired: want,
        live: &live.resources,
        applied: &BTreeMap::new(),
        managed: &managed,
    })?
    .changes;
    for c in &mut cs {
        Target.classify(c);
    }
    Ok(cs)
}

fn converge(p: &Postgres, want: &[Resource]) -> Result<Vec<Change>> {
    let cs = changes(p, want)?;
    let refs: Vec<&Change> = cs.iter().collect();
    p.apply(&refs)?;
    Ok(cs)
}

/// A login as `role` (trust authentication: no password needed on the test server).
fn login(server: &Server, role: &str) -> Result<postgres::Client> {
    postgres::Config::new()
        .host(server.host())
        .port(server.port())
        .user(role)
        .dbname(DB)
        .connect(postgres::NoTls)
        .with_context(|| format!("logging in as {role}"))
}

fn refused(c: &mut postgres::Client, sql: &str) -> bool {
    match c.batch_execute(sql) {
        Ok(()) => false,
        Err(e) => e.code() == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
    }
}

#[test]
fn each_service_works_with_its_role_and_is_refused_outside_it() -> Result<()> {
    let m = kombiform_test_support::example_model();
    let env = m.env("local").context("no local environment")?;
    let server = Server::start()?;
    server.create_database(DB)?;
    // PATH is set in every test run: it stands in for the role's password secret, so the
    // password path runs for real (trust authentication ignores it at login).
    let secrets = BTreeMap::from([
        ("kombify_sso".to_string(), SecretRef::Env("PATH".into())),
        ("kombify_health".to_string(), SecretRef::Env("PATH".into())),
    ]);
    let p = provider(&server, secrets)?;
    let want = desired(env);
    let applied = converge(&p, &want)?;
    let roles: Vec<&Change> = applied
        .iter()
        .filter(|c| c.address.starts_with("postgres.role."))
        .collect();
    assert_eq!(
        roles.len(),
        2,
        "{:?}",
        roles.iter().map(|c| &c.address).collect::<Vec<_>>()
    );
    let path = std::env::var("PATH").unwrap_or_default();
    let shown = serde_json::to_string(&applied)?;
    assert!(
        !path.is_empty() && !shown.contains(&path),
        "a password in the plan"
    );
    assert!(changes(&p, &want)?.is_empty(), "a second plan is clean");

    let mut admin = server.connect(DB)?;
    let verifiers = admin.query(
        "SELECT count(*) FROM pg_authid WHERE rolname IN ('kombify_sso', 'kombify_health') \
         AND rolpassword LIKE 'SCRAM-SHA-256$%' AND NOT rolsuper AND rolcanlogin",
        &[],
    )?;
    assert_eq!(
        verifiers[0].get::<_, i64>(0),
        2,
        "SCRAM verifiers, not passwords"
    );

    // kombify-sso: what the service does works.
    let mut sso = login(&server, "kombify_sso")?;
    sso.batch_execute(
        "SET search_path = kombify;
         SELECT t.slug, q.max_users FROM tenants t JOIN quotas q ON q.tenant = t.slug;
         SELECT name FROM plans;
         UPDATE quotas SET used_users = used_users + 1 WHERE tenant = 'acme' AND used_users < max_users;
         INSERT INTO audit_log (actor, action, target, result) VALUES ('t', 'sso.exchange', 'acme', 'success');
         INSERT INTO webhook_events (provider, event_id, event_type) VALUES ('stripe', 'evt_1', 'x') ON CONFLICT DO NOTHING;
         INSERT INTO sso_users (issuer, subject, tenant, org_id, pocketbase_user_id)
              VALUES ('i', 's', 'acme', '1', 'u') ON CONFLICT (issuer, subject) DO UPDATE SET last_login_at = now();
         INSERT INTO flags (name, description, default_enabled) VALUES ('x-flag', 'd', true)
              ON CONFLICT (name) DO UPDATE SET default_enabled = EXCLUDED.default_enabled;
         DELETE FROM flag_plan_overrides WHERE flag = 'x-flag';
         SELECT slug FROM tenants WHERE stripe_customer_id = 'cus_x' FOR UPDATE;",
    )
    .context("the SSO service's statements as kombify_sso")?;
    // ...and nothing outside its grants.
    for sql in [
        "DELETE FROM kombify.tenants",
        "SELECT * FROM kombify.audit_log",
        "UPDATE kombify.audit_log SET actor = 'x'",
        "INSERT INTO kombify.plans (name) VALUES ('x')",
        "UPDATE kombify.plans SET price_cents = 0",
        "DELETE FROM kombify.webhook_events",
        "SELECT * FROM kombify.schema_version",
        "CREATE TABLE kombify.mine (x int)",
        "DROP TABLE kombify.flags",
        "TRUNCATE kombify.sso_users",
    ] {
        assert!(refused(&mut sso, sql), "kombify_sso may: {sql}");
    }
    // kombify-health: connect and SELECT 1, nothing else.
    let mut health = login(&server, "kombify_health")?;
    health.batch_execute("SELECT 1")?;
    for sql in [
        "SELECT * FROM kombify.tenants",
        "INSERT INTO kombify.audit_log (actor, action, result) VALUES ('h', 'x', 'success')",
    ] {
        assert!(refused(&mut health, sql), "kombify_health may: {sql}");
    }

    // A grant added by hand is planned away, and apply takes it back.
    admin.batch_execute(
        "DELETE FROM kombify.flags WHERE name = 'x-flag';
         GRANT DELETE ON kombify.tenants TO kombify_sso",
    )?;
    let drift = changes(&p, &want)?;
    assert_eq!(
        drift.iter().map(|c| c.address.as_str()).collect::<Vec<_>>(),
        ["postgres.role.kombify_sso"]
    );
    converge(&p, &want)?;
    assert!(refused(
        &mut login(&server, "kombify_sso")?,
        "DELETE FROM kombify.tenants"
    ));

    // A missing password is an input a person gives, named by its variable.
    let unset = BTreeMap::from([(
        "kombify_sso".to_string(),
        SecretRef::Env("KOMBIFORM_TEST_NEVER_SET_7d1c".into()),
    )]);
    let q = provider(&server, unset)?;
    admin.batch_execute("REVOKE ALL ON kombify.plans FROM kombify_sso")?;
    let cs = changes(&q, &want)?;
    let missing = q.missing_inputs(&cs);
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(missing[0].command.contains("KOMBIFORM_TEST_NEVER_SET_7d1c"));
    Ok(())
}
