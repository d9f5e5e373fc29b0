//! The PostgreSQL provider against a real PostgreSQL server: desired → diff → apply → read
//! round-trips to no changes; model edits become exactly the expected row changes; deletes of
//! a tenant's rows are destructive; out-of-band edits show as updates and drift; usage
//! counters survive; lossy column type changes are refused; a failing batch rolls back whole.
//!
//! Not here: the text of the SQL scripts (tests/it/sql.rs) or the pure diff (src/plan).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kombiform_emit::sql;
use kombiform_emit::targets::postgres::{desired, lossy_type_changes, Postgres as Target};
use kombiform_emit::targets::Target as _;
use kombiform_engine::providers::postgres::{ConnectParams, Postgres};
use kombiform_engine::providers::{AuditChange, AuditRecord, Client as _};
use kombiform_model::{Env, Model, PostgresTls};
use kombiform_plan::{self as plan, Action, Change, Consent, DiffInput, Resource};
use serde_json::{json, Map, Value};

use kombiform_test_support::postgres::Postgres as Server;

use kombiform_test_support::model_from;

fn model() -> Result<Model> {
    Ok(kombiform_test_support::example_model())
}

fn env<'a>(m: &'a Model, name: &str) -> Result<Env<'a>> {
    m.env(name)
        .with_context(|| format!("no environment {name}"))
}

/// A provider connected to a fresh database `db` on `server`.
fn provider(server: &Server, db: &str) -> Result<Postgres> {
    server.create_database(db)?;
    Postgres::connect(ConnectParams {
        host: server.host().to_string(),
        port: server.port(),
        user: server.user().to_string(),
        password: None,
        dbname: db.to_string(),
        tls: PostgresTls::disabled(),
        connect_timeout: Duration::from_secs(10),
    })
}

/// Reads live state and diffs `want` against it: what `plan` does, with the provider's
/// classification. `managed`: addresses kombiform manages beyond `want`.
fn plan(
    p: &Postgres,
    want: &[Resource],
    managed: &BTreeSet<String>,
    applied: &BTreeMap<String, Map<String, Value>>,
) -> Result<(Vec<Change>, usize, Vec<String>, u64)> {
    let live = p.read()?;
    let d = plan::diff(&DiffInput {
        desired: want,
        live: &live.resources,
        applied,
        managed,
    })?;
    let mut changes = d.changes;
    for c in &mut changes {
        Target.classify(c);
    }
    let refused = plan::refused(&changes, &Consent::default(), |_| false);
    let unchanged = d.unchanged;
    Ok((changes, unchanged, refused, live.requests))
}

fn no_state() -> (BTreeSet<String>, BTreeMap<String, Map<String, Value>>) {
    (BTreeSet::new(), BTreeMap::new())
}

fn apply(p: &Postgres, changes: &[Change]) -> Result<()> {
    let refs: Vec<&Change> = changes.iter().collect();
    p.apply(&refs)
}

/// Applies `want` to the database and checks that a fresh plan shows nothing to do.
fn converge(p: &Postgres, want: &[Resource], managed: &BTreeSet<String>) -> Result<()> {
    let (changes, _, _, _) = plan(p, want, managed, &BTreeMap::new())?;
    apply(p, &changes)?;
    let (after, unchanged, _, _) = plan(p, want, managed, &BTreeMap::new())?;
    let summary: Vec<String> = after.iter().map(summary).collect();
    assert!(after.is_empty(), "changes after apply: {summary:#?}");
    assert_eq!(unchanged, want.len());
    Ok(())
}

fn summary(c: &Change) -> String {
    let attrs: Vec<String> = c
        .attrs
        .iter()
        .map(|a| format!("{}: {:?} -> {:?}", a.name, a.before, a.after))
        .collect();
    format!("{} {} [{}]", c.action.as_str(), c.address, attrs.join("; "))
}

fn addresses(rs: &[Resource]) -> BTreeSet<String> {
    rs.iter().map(|r| r.address.clone()).collect()
}

fn count(db: &mut postgres::Client, sql: &str) -> Result<i64> {
    Ok(db.query_one(sql, &[])?.get(0))
}

#[test]
fn desired_state_round_trips_through_a_real_database() -> Result<()> {
    let m = model()?;
    let server = Server::start()?;
    let p = provider(&server, "roundtrip")?;
    let want = desired(env(&m, "local")?);

    let live = p.read()?;
    assert!(live.resources.is_empty(), "no schema yet: nothing lives");
    let (managed, applied) = no_state();
    let (changes, unchanged, refused, _) = plan(&p, &want, &managed, &applied)?;
    assert_eq!(unchanged, 0);
    assert!(refused.is_empty());
    assert_eq!(changes.len(), want.len());
    assert!(changes.iter().all(|c| c.action == Action::Create));
    // Tables before their rows, referenced rows before the rows that refer to them.
    let pos = |a: &str| changes.iter().position(|c| c.address == a);
    assert!(pos("postgres.table.plans") < pos("postgres.plan.pro"));
    assert!(pos("postgres.table.tenants") < pos("postgres.tenant.acme"));
    assert!(pos("postgres.plan.pro") < pos("postgres.tenant.acme"));
    assert!(pos("postgres.tenant.acme") < pos("postgres.quota.acme"));

    apply(&p, &changes)?;
    let (after, unchanged, _, requests) = plan(&p, &want, &managed, &applied)?;
    let summaries: Vec<String> = after.iter().map(summary).collect();
    assert!(after.is_empty(), "{summaries:#?}");
    assert_eq!(unchanged, want.len());
    assert_eq!(
        requests,
        3 + 6 + 1,
        "three catalog queries, one SELECT per table, one for the services' roles"
    );

    // The database the provider built equals the one the generated scripts build.
    let mut db = server.connect("roundtrip")?;
    let version: i32 = db
        .query_one("SELECT version FROM kombify.schema_version", &[])?
        .get(0);
    assert_eq!(version, sql::SCHEMA_VERSION as i32);
    Ok(())
}

#[test]
fn the_generated_scripts_and_the_provider_agree() -> Result<()> {
    let m = model()?;
    let server = Server::start()?;
    let e = env(&m, "prod")?;
    // The roles script grants CONNECT on the platform database by its name.
    let name = e.platform.postgres.platform_database.clone();
    let p = provider(&server, &name)?;
    let mut db = server.connect(&name)?;
    db.batch_execute(&sql::schema_sql())?;
    db.batch_execute(&sql::data_sql(e))?;
    db.batch_execute(&sql::roles::script(e.platform))?;
    let (managed, applied) = no_state();
    let (changes, unchanged, _, _) = plan(&p, &desired(e), &managed, &applied)?;
    let summaries: Vec<String> = changes.iter().map(summary).collect();
    assert!(changes.is_empty(), "{summaries:#?}");
    assert_eq!(unchanged, desired(e).len());
    Ok(())
}

#[test]
fn model_edits_become_exactly_the_row_changes() -> Result<()> {
    let m = model()?;
    let server = Server::start()?;
    let p = provider(&server, "edits")?;
    let before = desired(env(&m, "local")?);
    converge(&p, &before, &BTreeSet::new())?;
    let mut db = server.connect("edits")?;
    // The SSO service's usage counters.
    db.execute(
        "UPDATE kombify.quotas SET used_users = 4, used_nodes = 9 WHERE tenant = 'acme'",
        &[],
    )?;

    // acme moves from pro to enterprise.
    let mut m2 = m.clone();
    let acme = m2
        .tenants
        .iter_mut()
        .find(|t| t.slug == "acme")
        .context("acme")?;
    acme.plan = "enterprise".into();
    let want = desired(env(&m2, "local")?);
    let (managed, applied) = no_state();
    let (changes, _, _, _) = plan(&p, &want, &managed, &applied)?;
    let got: Vec<(String, Action, Vec<String>)> = changes
        .iter()
        .map(|c| {
            (
                c.address.clone(),
                c.action,
                c.attrs.iter().map(|a| a.name.clone()).collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "postgres.tenant.acme".to_string(),
                Action::Update,
                vec!["plan".to_string()]
            ),
            (
                "postgres.quota.acme".to_string(),
                Action::Update,
                [
                    "max_nodes",
                    "max_simulations",
                    "max_stacks",
                    "max_users",
                    "rate_limit_day",
                    "rate_limit_hour",
                    "rate_limit_minute",
                    "rate_limit_second"
                ]
                .map(String::from)
                .to_vec()
            ),
        ]
    );
    assert!(changes.iter().all(|c| !c.destructive));
    let quota = &changes[1];
    let users = quota.attrs.iter().find(|a| a.name == "max_users");
    assert_eq!(
        users.map(|a| (a.before.clone(), a.after.clone())),
        Some((Some(json!(25)), Some(json!(500))))
    );
    apply(&p, &changes)?;
    converge(&p, &want, &BTreeSet::new())?;

    let row = db.query_one(
        "SELECT max_users, used_users, used_nodes FROM kombify.quotas WHERE tenant = 'acme'",
        &[],
    )?;
    assert_eq!(
        (
            row.get::<_, i32>(0),
            row.get::<_, i32>(1),
            row.get::<_, i32>(2)
        ),
        (500, 4, 9),
        "the limit changed, the usage counters survived"
    );
    Ok(())
}

#[test]
fn removing_a_tenant_deletes_its_rows_destructively() -> Result<()> {
    let m = model()?;
    let server = Server::start()?;
    let p = provider(&server, "removal")?;
    let before = desired(env(&m, "local")?);
    converge(&p, &before, &BTreeSet::new())?;
    let mut db = server.connect("removal")?;
    let others_before = count(
        &mut db,
        "SELECT count(*) FROM kombify.tenants WHERE slug <> 'acme'",
    )?;

    let mut m2 = m.clone();
    m2.tenants.retain(|t| t.slug != "acme");
    let want = desired(env(&m2, "local")?);
    let managed = addresses(&before);
    let (changes, _, refused, _) = plan(&p, &want, &managed, &BTreeMap::new())?;
    let deleted: BTreeSet<&str> = changes.iter().map(|c| c.address.as_str()).collect();
    assert_eq!(
        deleted,
        BTreeSet::from([
            "postgres.tenant.acme",
            "postgres.quota.acme",
            "postgres.flag_tenant.new-dashboard:acme",
        ])
    );
    assert!(changes
        .iter()
        .all(|c| c.action == Action::Delete && c.destructive));
    assert_eq!(refused.len(), 3, "no consent given: all three refused");
    assert!(changes
        .iter()
        .all(|c| c.live.as_ref().and_then(|r| r.meta.get("tenant")) == Some(&json!("acme"))));
    // Dependents first.
    assert_eq!(changes[2].address, "postgres.tenant.acme");

    apply(&p, &changes)?;
    assert_eq!(
        count(
            &mut db,
            "SELECT (SELECT count(*) FROM kombify.tenants WHERE slug = 'acme') \
                  + (SELECT count(*) FROM kombify.quotas WHERE tenant = 'acme') \
                  + (SELECT count(*) FROM kombify.flag_tenant_overrides WHERE tenant = 'acme')"
        )?,
        0
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM kombify.tenants WHERE slug <> 'acme'"
        )?,
        others_before
    );
    converge(&p, &want, &managed)?;
    Ok(())
}

#[test]
fn out_of_band_changes_show_as_updates_and_drift() -> Result<()> {
    let m = model()?;
    let server = Server::start()?;
    let p = provider(&server, "drift")?;
    let want = desired(env(&m, "local")?);
    converge(&p, &want, &BTreeSet::new())?;
    let mut db = server.connect("drift")?;
    db.execute(
        "UPDATE kombify.plans SET max_users = 99 WHERE name = 'pro'",
        &[],
    )?;

    let (managed, no_applied) = no_state();
    let (changes, _, _, _) = plan(&p, &want, &managed, &no_applied)?;
    assert_eq!(
        changes.len(),
        1,
        "{:#?}",
        changes.iter().map(summary).collect::<Vec<_>>()
    );
    let c = &changes[0];
    assert_eq!(
        (c.address.as_str(), c.action),
        ("postgres.plan.pro", Action::Update)
    );
    assert_eq!(c.attrs.len(), 1);
    assert_eq!(c.attrs[0].name, "max_users");
    assert_eq!(c.attrs[0].before, Some(json!(99)));
    assert_eq!(c.attrs[0].after, Some(json!(25)));
    assert!(!c.drift, "without state nothing says what was applied");

    // State says kombiform applied what the specs want: the live edit is drift.
    let applied: BTreeMap<String, Map<String, Value>> = want
        .iter()
        .map(|r| (r.address.clone(), r.attrs.clone()))
        .collect();
    let (changes, _, _, _) = plan(&p, &want, &managed, &applied)?;
    assert!(changes[0].drift);
    apply(&p, &changes)?;
    assert_eq!(
        count(
            &mut db,
            "SELECT max_users::bigint FROM kombify.plans WHERE name = 'pro'"
        )?,
        25
    );
    Ok(())
}

#[test]
fn schema_changes_are_diffed_and_lossy_type_changes_refused() -> Result<()> {
    let m = model()?;
    let server = Server::start()?;
    let p = provider(&server, "schema")?;
    let want = desired(env(&m, "local")?);
    converge(&p, &want, &BTreeSet::new())?;
    let mut db = server.connect("schema")?;

    // A lost index and a lost column (with its check) come back; the rows get their values.
    db.batch_execute(
        "DROP INDEX kombify.tenants_plan_idx; \
         ALTER TABLE kombify.flags DROP COLUMN rollout_percent;",
    )?;
    let (managed, applied) = no_state();
    let (changes, _, _, _) = plan(&p, &want, &managed, &applied)?;
    let tables: Vec<String> = changes
        .iter()
        .filter(|c| c.address.starts_with("postgres.table."))
        .map(summary)
        .collect();
    assert_eq!(tables.len(), 2, "{tables:#?}");
    assert!(changes.iter().all(|c| !c.destructive));
    assert!(changes
        .iter()
        .any(|c| c.address == "postgres.flag.new-dashboard"
            && c.attrs.iter().any(|a| a.name == "rollout_percent")));
    converge(&p, &want, &managed)?;
    let rollout: i16 = db
        .query_one(
            "SELECT rollout_percent FROM kombify.flags WHERE name = 'new-dashboard'",
            &[],
        )?
        .get(0);
    assert_eq!(rollout, 25);

    // A column added by hand is not ours: dropping it would lose data.
    db.batch_execute("ALTER TABLE kombify.plans ADD COLUMN notes text")?;
    let (changes, _, refused, _) = plan(&p, &want, &managed, &applied)?;
    assert_eq!(changes.len(), 1);
    assert!(changes[0].destructive, "dropping a column is destructive");
    assert!(lossy_type_changes(&changes[0]).is_empty());
    assert_eq!(
        refused,
        vec![changes[0].address.clone()],
        "the diff cannot judge it, the target did: refused without consent"
    );
    db.batch_execute("ALTER TABLE kombify.plans DROP COLUMN notes")?;

    // A desired type change that can lose data: text -> integer, integer -> smallint.
    let mut narrowed = want.clone();
    let plans = narrowed
        .iter_mut()
        .find(|r| r.address == "postgres.table.plans")
        .context("plans table")?;
    for (col, ty) in [("display_name", "integer"), ("max_users", "smallint")] {
        let c = plans
            .attrs
            .get_mut(&format!("column.{col}"))
            .and_then(Value::as_object_mut)
            .context("column")?;
        c.insert("type".into(), json!(ty));
    }
    let (changes, _, _, _) = plan(&p, &narrowed, &managed, &applied)?;
    let table = changes
        .iter()
        .find(|c| c.address == "postgres.table.plans")
        .context("a change of the plans table")?;
    assert!(table.destructive);
    let reasons = lossy_type_changes(table);
    assert_eq!(reasons.len(), 2, "{reasons:#?}");
    assert!(reasons[0].contains("column display_name: type text -> integer"));
    assert!(reasons[1].contains("column max_users: type integer -> smallint"));
    let err = match apply(&p, std::slice::from_ref(table)) {
        Ok(()) => bail!("a lossy type change was applied"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("can lose data"), "{err}");
    let ty: String = db
        .query_one(
            "SELECT data_type FROM information_schema.columns \
             WHERE table_schema = 'kombify' AND table_name = 'plans' AND column_name = 'max_users'",
            &[],
        )?
        .get(0);
    assert_eq!(ty, "integer");

    // A lossless widening passes classify (the apply itself refuses a definition that is not
    // this build's, so it is not applied here).
    let mut widened = want.clone();
    if let Some(c) = widened
        .iter_mut()
        .find(|r| r.address == "postgres.table.plans")
        .and_then(|r| r.attrs.get_mut("column.max_users"))
        .and_then(Value::as_object_mut)
    {
        c.insert("type".into(), json!("bigint"));
    }
    let (changes, _, _, _) = plan(&p, &widened, &managed, &applied)?;
    assert_eq!(changes.len(), 1);
    assert!(!changes[0].destructive);
    assert!(lossy_type_changes(&changes[0]).is_empty());
    let err = match apply(&p, &changes) {
        Ok(()) => bail!("a foreign table definition was applied"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("postgres.table.plans"), "{err}");
    Ok(())
}

#[test]
fn a_failing_change_rolls_back_the_whole_batch() -> Result<()> {
    let m = model()?;
    let server = Server::start()?;
    let p = provider(&server, "rollback")?;
    // A tenant whose plan does not exist: its row violates the foreign key.
    let mut m2 = m.clone();
    let mut ghost = m2.tenants[0].clone();
    ghost.slug = kombiform_model::TenantSlug::parse("ghost").unwrap();
    ghost.plan = "no-such-plan".into();
    ghost.zitadel_org_id = "999".into();
    ghost.stripe_customer_id = None;
    m2.tenants.push(ghost);
    m2.tenants.sort_by(|a, b| a.slug.cmp(&b.slug));
    let want: Vec<Resource> = desired(env(&m2, "local")?)
        .into_iter()
        // Without its quota (whose limits cannot be known): the tenant row fails first.
        .filter(|r| r.address != "postgres.quota.ghost")
        .collect();
    let (managed, applied) = no_state();
    let (changes, _, _, _) = plan(&p, &want, &managed, &applied)?;
    let failing = changes
        .iter()
        .position(|c| c.address == "postgres.tenant.ghost")
        .context("ghost's change")?;
    assert!(failing > 0, "other changes come before the failing one");
    let err = match apply(&p, &changes) {
        Ok(()) => bail!("a row violating a foreign key was applied"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.starts_with("postgres.tenant.ghost: create failed"),
        "{err}"
    );
    assert!(err.contains("foreign key"), "{err}");
    let live = p.read()?;
    assert!(
        live.resources.is_empty(),
        "tables and rows of the batch are gone too: {:?}",
        live.resources
            .iter()
            .map(|r| &r.address)
            .collect::<Vec<_>>()
    );

    // A value PostgreSQL cannot store (a NaN) is refused with the row's address.
    let mut m3 = m.clone();
    m3.plans[0].simulation.cpu_per_simulation = f64::NAN;
    let want = desired(env(&m3, "local")?);
    let (changes, _, _, _) = plan(&p, &want, &managed, &applied)?;
    let err = match apply(&p, &changes) {
        Ok(()) => bail!("a NaN was applied"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.starts_with(&format!(
            "postgres.plan.{}: create failed",
            m3.plans[0].name
        )),
        "{err}"
    );
    assert!(err.contains("not a finite number"), "{err}");
    assert!(p.read()?.resources.is_empty());
    Ok(())
}

#[test]
fn applies_leave_an_audit_record() -> Result<()> {
    let m = model()?;
    let server = Server::start()?;
    let p = provider(&server, "audit")?;
    converge(&p, &desired(env(&m, "local")?), &BTreeSet::new())?;
    let record = AuditRecord {
        id: "rec-1".into(),
        adopted: Vec::new(),
        forgotten: Vec::new(),
        actor: "ops@host".into(),
        started_at: "2025-01-01T00:00:00Z".into(),
        finished_at: "2025-01-01T00:00:01Z".into(),
        env: "local".into(),
        command: "kombiform apply plan.json".into(),
        plan_hash: "abc123".into(),
        changes: vec![AuditChange {
            address: "postgres.tenant.acme".into(),
            action: "update".into(),
            result: "done".into(),
        }],
        result: "succeeded".into(),
        error: None,
    };
    p.record_audit(&record)?;
    let mut db = server.connect("audit")?;
    let row = db.query_one(
        "SELECT actor, action, target, result, details->>'plan_hash', \
                details->'changes'->0->>'address' FROM kombify.audit_log",
        &[],
    )?;
    let got: Vec<String> = (0..6).map(|i| row.get::<_, String>(i)).collect();
    assert_eq!(
        got,
        [
            "ops@host",
            "apply",
            "local",
            "success",
            "abc123",
            "postgres.tenant.acme"
        ]
    );
    // Delivered again (its answer was lost): stored once.
    p.record_audit(&record)?;
    let n: i64 = db
        .query_one("SELECT count(*) FROM kombify.audit_log", &[])?
        .get(0);
    assert_eq!(n, 1, "a record delivered twice is stored once");
    Ok(())
}

/// 10,000 tenants: one apply, then read + diff with no changes. The read's queries do not
/// grow with the number of rows.
#[test]
fn ten_thousand_tenants_read_in_a_fixed_number_of_queries() -> Result<()> {
    let m = model_from(kombiform_test_support::synthetic::synthetic_specs(10_000))?;
    let e = env(&m, "prod")?;
    let want = desired(e);
    let server = Server::start()?;
    let p = provider(&server, "scale")?;
    let (managed, applied) = no_state();
    let (changes, _, _, _) = plan(&p, &want, &managed, &applied)?;
    apply(&p, &changes)?;
    let (changes, unchanged, _, requests) = plan(&p, &want, &managed, &applied)?;
    assert!(changes.is_empty());
    assert_eq!(unchanged, want.len());
    assert_eq!(requests, 10);
    assert!(want.len() > 20_000);
    Ok(())
}

/// Records nothing: the provider test needs no state.
struct NoState;

impl kombiform_engine::apply::Recorder for NoState {
    fn started(&mut self, _: &[&Change]) -> Result<()> {
        Ok(())
    }
    fn done(&mut self, _: &[&Change]) -> Result<()> {
        Ok(())
    }
}

#[test]
fn lost_and_refused_connections_are_retried_with_the_apply_budget() -> Result<()> {
    use kombiform_engine::apply::{self, Event, Interrupt, Options};
    use kombiform_test_support::proxy::Proxy;
    use std::sync::{Arc, Mutex};

    let m = model()?;
    let server = Server::start()?;
    server.create_database("lost")?;
    let proxy = Proxy::start(server.port())?;
    let p = Postgres::connect(ConnectParams {
        host: server.host().to_string(),
        port: proxy.port(),
        user: server.user().to_string(),
        password: None,
        dbname: "lost".to_string(),
        tls: PostgresTls::disabled(),
        connect_timeout: Duration::from_secs(10),
    })?;
    let (managed, applied) = no_state();
    let (changes, _, _, _) = plan(&p, &desired(env(&m, "local")?), &managed, &applied)?;
    assert!(!changes.is_empty());
    // The server goes away: the open connection is reset, new ones are refused.
    proxy.down();
    let the_plan = kombiform_plan::Plan {
        format: kombiform_plan::PLAN_FORMAT,
        env: "local".into(),
        spec_hash: String::new(),
        state_serial: 0,
        fingerprints: BTreeMap::new(),
        live_hashes: BTreeMap::new(),
        changes,
        unchanged: 0,
        refused: vec![],
        vetoed: Default::default(),
        consented: Default::default(),
        adopt: vec![],
        forget: vec![],
        kept: vec![],
    };
    let client: Arc<dyn kombiform_engine::providers::Client> = Arc::new(p);
    let providers: BTreeMap<String, Arc<dyn kombiform_engine::providers::Client>> =
        [("postgres".to_string(), Arc::clone(&client))]
            .into_iter()
            .collect();
    let opts = Options {
        parallelism: 1,
        max_retries: 5,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        grace: Duration::from_secs(60),
    };
    let retries = Mutex::new(Vec::new());
    let report = apply::apply(
        &the_plan,
        &providers,
        &opts,
        &mut NoState,
        &Interrupt::new(),
        &|e| {
            if let Event::Retrying { error, .. } = e {
                let mut r = retries.lock().unwrap_or_else(|p| p.into_inner());
                r.push(error.clone());
                // Back after the second failure: a third attempt must be made.
                if r.len() == 2 {
                    proxy.up();
                }
            }
        },
    );
    let retries = retries.into_inner().unwrap_or_default();
    assert!(report.succeeded(), "{report:?}\nretries: {retries:#?}");
    assert!(retries.len() >= 2, "{retries:#?}");
    assert!(
        retries.iter().any(|e| e.contains("refused")),
        "a refused connection is retried: {retries:#?}"
    );
    // Everything arrived.
    let (managed, applied) = no_state();
    let (left, _, _, _) = plan(
        client_as_postgres(&server, "lost")?.as_ref(),
        &desired(env(&m, "local")?),
        &managed,
        &applied,
    )?;
    assert!(left.is_empty(), "{left:#?}");
    Ok(())
}

fn client_as_postgres(server: &Server, db: &str) -> Result<Box<Postgres>> {
    Ok(Box::new(Postgres::connect(ConnectParams {
        host: server.host().to_string(),
        port: server.port(),
        user: server.user().to_string(),
        password: None,
        dbname: db.to_string(),
        tls: PostgresTls::disabled(),
        connect_timeout: Duration::from_secs(10),
    })?))
}
