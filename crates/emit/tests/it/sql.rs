//! The PostgreSQL emitter against a real PostgreSQL server: the scripts apply to a fresh
//! database, apply again without harm, leave exactly the model's rows, keep usage counters, and
//! the quoting survives the server's own parser.
//!
//! Not here: the text of the scripts (unit tests in `src/emit/sql.rs` check that).

use std::sync::{Arc, Barrier};
use std::thread;

use anyhow::{bail, Context, Result};
use kombiform_emit::sql::{self, quote};
use kombiform_model::{Env, Model};
use kombiform_test_support::synthetic::{fleet, Fleet};
use postgres::Client;

use kombiform_test_support::postgres::Postgres;

fn model() -> Result<Model> {
    Ok(kombiform_test_support::example_model())
}

fn env<'a>(m: &'a Model, name: &str) -> Result<Env<'a>> {
    m.env(name)
        .with_context(|| format!("no environment {name} in the example specs"))
}

/// A fresh database `name` on `pg` with both scripts of `env` applied once.
fn applied(pg: &Postgres, name: &str, env: Env<'_>) -> Result<Client> {
    pg.create_database(name)?;
    let mut db = pg.connect(name)?;
    apply(&mut db, env)?;
    Ok(db)
}

fn apply(db: &mut Client, env: Env<'_>) -> Result<()> {
    db.batch_execute(&sql::schema_sql())
        .context("applying 001_schema.sql")?;
    db.batch_execute(&sql::data_sql(env))
        .context("applying 002_data.sql")?;
    Ok(())
}

fn count(db: &mut Client, table: &str) -> Result<i64> {
    let row = db.query_one(&format!("SELECT count(*) FROM kombify.{table}"), &[])?;
    Ok(row.get(0))
}

/// Reserves one user seat the way the SSO service does; `Some(new usage)` or `None` when full.
fn reserve_user(db: &mut Client, tenant: &str) -> Result<Option<i32>> {
    let rows = db.query(
        "UPDATE kombify.quotas SET used_users = used_users + 1 \
         WHERE tenant = $1 AND used_users < max_users RETURNING used_users",
        &[&tenant],
    )?;
    Ok(rows.first().map(|r| r.get(0)))
}

#[test]
fn scripts_apply_twice_and_leave_exactly_the_model() -> Result<()> {
    let m = model()?;
    let pg = Postgres::start()?;
    for env_name in ["prod", "local"] {
        let e = env(&m, env_name)?;
        let mut db = applied(&pg, &format!("platform_{env_name}"), e)?;

        // Usage between two applies, and drift a re-apply must undo.
        assert_eq!(reserve_user(&mut db, "acme")?, Some(1));
        assert_eq!(reserve_user(&mut db, "acme")?, Some(2));
        db.execute(
            "UPDATE kombify.quotas SET used_nodes = 7 WHERE tenant = 'globex'",
            &[],
        )?;
        db.execute(
            "UPDATE kombify.tenants SET display_name = 'drifted' WHERE slug = 'initech'",
            &[],
        )?;
        db.execute(
            "UPDATE kombify.quotas SET max_users = 1 WHERE tenant = 'globex'",
            &[],
        )?;
        apply(&mut db, e).context("applying a second time")?;

        let used = db.query_one(
            "SELECT (SELECT used_users FROM kombify.quotas WHERE tenant = 'acme'), \
                    (SELECT used_nodes FROM kombify.quotas WHERE tenant = 'globex')",
            &[],
        )?;
        assert_eq!(
            (used.get::<_, i32>(0), used.get::<_, i32>(1)),
            (2, 7),
            "{env_name}: re-applying kept the usage counters"
        );

        check_rows(&mut db, e).with_context(|| format!("rows of {env_name}"))?;

        // The cases the specs were written for.
        let initech: String = db
            .query_one(
                "SELECT display_name FROM kombify.tenants WHERE slug = 'initech'",
                &[],
            )?
            .get(0);
        assert_eq!(initech, "Initech \"Labs\"; O'Reilly & Sons \\ Co");
        assert_eq!(
            initech.as_bytes(),
            br#"Initech "Labs"; O'Reilly & Sons \ Co"#
        );
        let q = |db: &mut Client, t: &str| -> Result<Vec<i32>> {
            let r = db.query_one(
                "SELECT max_users, max_nodes, max_stacks, max_simulations \
                 FROM kombify.quotas WHERE tenant = $1",
                &[&t],
            )?;
            Ok((0..4).map(|i| r.get(i)).collect())
        };
        let pro = m.plan("pro").context("plan pro")?;
        let pro_quotas = [
            pro.quotas.max_users,
            pro.quotas.max_nodes,
            pro.quotas.max_stacks,
            pro.quotas.max_simulations,
        ]
        .map(|v| v as i32);
        assert_eq!(q(&mut db, "acme")?, pro_quotas, "acme has pro's quotas");
        assert_eq!(
            q(&mut db, "globex")?[0],
            800,
            "globex's maxUsers override (and the drift to 1 undone)"
        );

        let devtest = count_where(&mut db, "tenants", "slug = 'devtest'")?;
        assert_eq!(
            devtest,
            i64::from(env_name == "local"),
            "devtest is local only"
        );

        let version: i32 = db
            .query_one("SELECT max(version) FROM kombify.schema_version", &[])?
            .get(0);
        assert_eq!(version, sql::SCHEMA_VERSION as i32);
        assert_eq!(count(&mut db, "schema_version")?, 1);
    }
    Ok(())
}

fn count_where(db: &mut Client, table: &str, cond: &str) -> Result<i64> {
    let row = db.query_one(
        &format!("SELECT count(*) FROM kombify.{table} WHERE {cond}"),
        &[],
    )?;
    Ok(row.get(0))
}

/// Every row of every table the data script writes equals the model, and there are no others.
fn check_rows(db: &mut Client, e: Env<'_>) -> Result<()> {
    // Plans.
    let rows = db.query(
        "SELECT name, display_name, price_cents, stripe_price_id, features, stackkits, \
                max_users, max_nodes, max_stacks, max_simulations, \
                rate_limit_second, rate_limit_minute, rate_limit_hour, rate_limit_day, \
                sim_max_concurrent, sim_cpu_per_simulation, sim_memory_mb_per_simulation, \
                sim_isolation \
         FROM kombify.plans ORDER BY name",
        &[],
    )?;
    assert_eq!(rows.len(), e.plans().len(), "plan count");
    for (r, p) in rows.iter().zip(e.plans()) {
        assert_eq!(r.get::<_, String>(0), p.name);
        assert_eq!(r.get::<_, String>(1), p.display_name);
        assert_eq!(r.get::<_, i64>(2), i64::from(p.price_cents));
        assert_eq!(r.get::<_, Option<String>>(3), p.stripe_price_id);
        let features: Vec<&str> = p.features.iter().map(|f| f.as_str()).collect();
        assert_eq!(r.get::<_, Vec<String>>(4), features);
        assert_eq!(r.get::<_, Vec<String>>(5), p.stackkits);
        let quotas = [
            p.quotas.max_users,
            p.quotas.max_nodes,
            p.quotas.max_stacks,
            p.quotas.max_simulations,
        ];
        for (i, v) in quotas.iter().enumerate() {
            assert_eq!(
                r.get::<_, i32>(6 + i),
                *v as i32,
                "plan {} quota {i}",
                p.name
            );
        }
        let limits = [
            p.rate_limits.second,
            p.rate_limits.minute,
            p.rate_limits.hour,
            p.rate_limits.day,
        ];
        for (i, v) in limits.iter().enumerate() {
            assert_eq!(r.get::<_, Option<i64>>(10 + i), v.map(i64::from));
        }
        let s = &p.simulation;
        assert_eq!(r.get::<_, i32>(14), s.max_concurrent as i32);
        assert_eq!(r.get::<_, f64>(15), s.cpu_per_simulation);
        assert_eq!(r.get::<_, i32>(16), s.memory_mb_per_simulation as i32);
        let isolation = serde_json::to_value(s.isolation)?;
        assert_eq!(Some(r.get::<_, String>(17).as_str()), isolation.as_str());
    }

    // Tenants and their effective quotas.
    let tenants: Vec<_> = e.tenants().collect();
    let rows = db.query(
        "SELECT t.slug, t.display_name, t.plan, t.zitadel_org_id, t.instance, t.status, \
                t.stripe_customer_id, t.allow_destroy, \
                q.max_users, q.max_nodes, q.max_stacks, q.max_simulations \
         FROM kombify.tenants t JOIN kombify.quotas q ON q.tenant = t.slug ORDER BY t.slug",
        &[],
    )?;
    assert_eq!(rows.len(), tenants.len(), "tenant count");
    assert_eq!(count(db, "tenants")?, tenants.len() as i64);
    assert_eq!(count(db, "quotas")?, tenants.len() as i64);
    for (r, t) in rows.iter().zip(&tenants) {
        assert_eq!(r.get::<_, String>(0), t.slug);
        assert_eq!(r.get::<_, String>(1), t.display_name);
        assert_eq!(r.get::<_, String>(2), t.plan);
        assert_eq!(r.get::<_, String>(3), t.zitadel_org_id);
        let instance = serde_json::to_value(t.instance)?;
        assert_eq!(Some(r.get::<_, String>(4).as_str()), instance.as_str());
        assert_eq!(r.get::<_, String>(5), t.status.as_str());
        assert_eq!(r.get::<_, Option<String>>(6), t.stripe_customer_id);
        assert_eq!(r.get::<_, bool>(7), t.allow_destroy);
        let plan = e.plan_of(t).context("tenant plan")?;
        let q = plan.quotas.with(&t.quota_overrides);
        let want = [q.max_users, q.max_nodes, q.max_stacks, q.max_simulations];
        for (i, v) in want.iter().enumerate() {
            assert_eq!(
                r.get::<_, i32>(8 + i),
                *v as i32,
                "tenant {} quota {i}",
                t.slug
            );
        }
    }

    // Flags and overrides.
    let rows = db.query(
        "SELECT name, description, default_enabled, rollout_percent FROM kombify.flags ORDER BY name",
        &[],
    )?;
    assert_eq!(rows.len(), e.flags().len(), "flag count");
    for (r, f) in rows.iter().zip(e.flags()) {
        assert_eq!(r.get::<_, String>(0), f.name);
        assert_eq!(r.get::<_, String>(1), f.description);
        assert_eq!(r.get::<_, bool>(2), f.default);
        assert_eq!(r.get::<_, Option<i16>>(3), f.rollout_percent.map(i16::from));
    }
    let got: Vec<(String, String, bool)> = db
        .query(
            "SELECT flag, plan, enabled FROM kombify.flag_plan_overrides ORDER BY flag, plan",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let want: Vec<(String, String, bool)> = e
        .flags()
        .iter()
        .flat_map(|f| {
            f.plans
                .iter()
                .map(|(p, on)| (f.name.clone(), p.clone(), *on))
        })
        .collect();
    assert_eq!(got, want, "flag plan overrides");
    let got: Vec<(String, String, bool)> = db
        .query(
            "SELECT flag, tenant, enabled FROM kombify.flag_tenant_overrides ORDER BY flag, tenant",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let want: Vec<(String, String, bool)> = e
        .flags()
        .iter()
        .flat_map(|f| {
            f.tenants
                .iter()
                .map(|(t, on)| (f.name.clone(), t.clone(), *on))
        })
        .filter(|(_, t, _)| tenants.iter().any(|x| &x.slug == t))
        .collect();
    assert!(!want.is_empty(), "the example flags override some tenant");
    assert_eq!(got, want, "flag tenant overrides");
    Ok(())
}

#[test]
fn seat_reservations_never_pass_the_limit_under_concurrency() -> Result<()> {
    let m = model()?;
    let pg = Postgres::start()?;
    let e = env(&m, "prod")?;
    drop(applied(&pg, "platform", e)?);
    let limit = m.plan("free").context("plan free")?.quotas.max_users;
    assert_eq!(limit, 3, "initech is on free with 3 seats");

    let threads = 12;
    let barrier = Arc::new(Barrier::new(threads));
    let mut handles = Vec::new();
    for _ in 0..threads {
        let mut db = pg.connect("platform")?;
        let barrier = Arc::clone(&barrier);
        handles.push(thread::spawn(move || -> Result<Option<i32>> {
            barrier.wait();
            db.batch_execute("BEGIN")?;
            let got = reserve_user(&mut db, "initech")?;
            // Hold the row lock a moment so the others really queue behind it.
            db.batch_execute("SELECT pg_sleep(0.02); COMMIT")?;
            Ok(got)
        }));
    }
    let mut granted = Vec::new();
    for h in handles {
        match h.join() {
            Ok(r) => granted.extend(r?),
            Err(_) => bail!("a reservation thread panicked"),
        }
    }
    granted.sort_unstable();
    assert_eq!(granted, [1, 2, 3], "exactly the three seats were granted");
    let mut db = pg.connect("platform")?;
    let used: i32 = db
        .query_one(
            "SELECT used_users FROM kombify.quotas WHERE tenant = 'initech'",
            &[],
        )?
        .get(0);
    assert_eq!(used, 3);
    Ok(())
}

const NASTY: &[&str] = &[
    "",
    "plain",
    "O'Reilly",
    "''",
    "'",
    "a; DROP TABLE kombify.tenants; --",
    "x'); DELETE FROM kombify.plans; --",
    r"C:\temp\new",
    r"\",
    r"\'",
    r"'\",
    r"\\'';",
    "$$",
    "$tag$ $$ body $$ $tag$",
    "line\nbreak\r\nand\ttab",
    "Grüße, 東京, Ελληνικά, 🦀, \u{202e}rtl",
    "\"double\" \"quotes\"",
    "Initech \"Labs\"; O'Reilly & Sons \\ Co",
    "/* comment */ -- comment",
    "E'not an escape'",
];

#[test]
fn literals_round_trip_through_the_server_parser() -> Result<()> {
    let pg = Postgres::start()?;
    let mut db = pg.connect("postgres")?;
    // Whatever standard_conforming_strings says, a literal means the same text.
    for setting in ["on", "off"] {
        db.batch_execute(&format!(
            "SET standard_conforming_strings = {setting}; SET escape_string_warning = off"
        ))?;
        for input in NASTY {
            let lit = quote::quote_literal(input)?;
            let back: String = db
                .query_one(&format!("SELECT {lit}::text"), &[])
                .with_context(|| {
                    format!("literal {lit} with standard_conforming_strings {setting}")
                })?
                .get(0);
            assert_eq!(
                &back, input,
                "literal {lit}, standard_conforming_strings {setting}"
            );
            // And inside a multi-statement batch it cannot end the statement early.
            db.batch_execute(&format!(
                "CREATE TEMP TABLE IF NOT EXISTS lit (v text); TRUNCATE lit; \
                 INSERT INTO lit VALUES ({lit}); SELECT 1"
            ))?;
            let stored: String = db.query_one("SELECT v FROM lit", &[])?.get(0);
            assert_eq!(&stored, input);
        }
    }
    assert!(quote::quote_literal("a\0b").is_err(), "NUL is refused");
    Ok(())
}

#[test]
fn identifiers_quote_like_the_server_and_round_trip() -> Result<()> {
    let pg = Postgres::start()?;
    let mut db = pg.connect("postgres")?;
    // Every keyword the server knows is quoted exactly when the server quotes it.
    let keywords: Vec<(String, String, String)> = db
        .query(
            "SELECT word, catcode::text, quote_ident(word) FROM pg_get_keywords()",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(keywords.len() > 400, "the server lists its keywords");
    for (word, cat, server) in &keywords {
        let ours = quote::quote_ident(word)?;
        if cat != "U" {
            assert_eq!(&ours, server, "keyword {word} ({cat})");
        } else {
            assert_eq!(&ours, word, "unreserved keyword {word} stays bare");
        }
    }
    // Nasty names: same text as the server's quote_ident, and the name created is the input.
    let names = [
        "tenants",
        "Tenants",
        "1st",
        "stark-lab",
        "a\"b",
        "x\"; DROP SCHEMA public; --",
        "größe",
        "with space",
        "$dollar",
        "a$b",
        "_under",
        "user",
    ];
    for name in names {
        let ours = quote::quote_ident(name)?;
        let server: String = db.query_one("SELECT quote_ident($1)", &[&name])?.get(0);
        assert_eq!(ours, server, "identifier {name:?}");
        db.batch_execute(&format!("CREATE TEMP TABLE {ours} (v int)"))?;
        let found: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_class WHERE relname = $1 AND relpersistence = 't'",
                &[&name],
            )?
            .get(0);
        assert_eq!(found, 1, "table {name:?} exists under exactly that name");
    }
    Ok(())
}

#[test]
fn the_schema_enforces_replay_protection_audit_and_nul_refusal() -> Result<()> {
    let mut m = model()?;
    let pg = Postgres::start()?;
    let mut db = applied(&pg, "platform", env(&m, "prod")?)?;

    let record = "INSERT INTO kombify.webhook_events (provider, event_id, event_type) \
                  VALUES ('stripe', 'evt_1', 'invoice.paid') ON CONFLICT DO NOTHING";
    assert_eq!(db.execute(record, &[])?, 1, "first delivery recorded");
    assert_eq!(db.execute(record, &[])?, 0, "replay detected");
    assert!(db
        .execute(
            "INSERT INTO kombify.webhook_events (provider, event_id) VALUES ('paypal', 'x')",
            &[]
        )
        .is_err());

    db.execute(
        "INSERT INTO kombify.audit_log (actor, action, target, details, result) \
         VALUES ('kombiform', 'apply', 'prod', '{\"changes\": 3}', 'success')",
        &[],
    )?;
    let err = match db.execute("DELETE FROM kombify.audit_log", &[]) {
        Ok(_) => bail!("deleting from the audit log succeeded"),
        Err(e) => format!("{e:?}"),
    };
    assert!(err.contains("append-only"), "{err}");
    assert_eq!(count(&mut db, "audit_log")?, 1);

    // Counters cannot go negative; tenants need a known plan.
    assert!(db
        .execute(
            "UPDATE kombify.quotas SET used_users = -1 WHERE tenant = 'acme'",
            &[]
        )
        .is_err());
    assert!(db
        .execute(
            "UPDATE kombify.tenants SET plan = 'platinum' WHERE slug = 'acme'",
            &[]
        )
        .is_err());

    // A value PostgreSQL cannot hold fails the whole data script, leaving the rows as they were.
    let before: String = db
        .query_one(
            "SELECT display_name FROM kombify.plans WHERE name = 'pro'",
            &[],
        )?
        .get(0);
    let pro = m
        .plans
        .iter_mut()
        .find(|p| p.name == "pro")
        .context("plan pro")?;
    pro.display_name = "Pro\0".to_string();
    pro.price_cents = 1;
    let err = match db.batch_execute(&sql::data_sql(env(&m, "prod")?)) {
        Ok(()) => bail!("a data script with a NUL value applied"),
        Err(e) => format!("{e:?}"),
    };
    assert!(err.contains("NUL character"), "{err}");
    db.batch_execute("ROLLBACK")?;
    let after = db.query_one(
        "SELECT display_name, price_cents FROM kombify.plans WHERE name = 'pro'",
        &[],
    )?;
    assert_eq!(after.get::<_, String>(0), before);
    assert_eq!(after.get::<_, i64>(1), 4900);
    Ok(())
}

/// `n` generated tenants, every third with its own `maxUsers` (1000 + its number).
fn synthetic(n: usize) -> Result<Model> {
    let f = Fleet {
        tenants: n,
        ..Fleet::default()
    };
    let mut m = fleet(model()?, f);
    for (i, t) in m.tenants.iter_mut().enumerate().filter(|(i, _)| i % 3 == 0) {
        t.quota_overrides.max_users = Some(1000 + i as u32);
    }
    Ok(m)
}

#[test]
fn ten_thousand_tenants_apply_and_reapply_without_rewriting_rows() -> Result<()> {
    let m = synthetic(10_000)?;
    let e = env(&m, "prod")?;
    let pg = Postgres::start()?;
    pg.create_database("platform")?;
    let mut db = pg.connect("platform")?;
    apply(&mut db, e)?;
    assert_eq!(count(&mut db, "tenants")?, 10_000);
    assert_eq!(count(&mut db, "quotas")?, 10_000);
    assert_eq!(
        count_where(&mut db, "quotas", "max_users = 1000 + 9999")?,
        1
    );

    let versions = |db: &mut Client| -> Result<String> {
        let r = db.query_one(
            "SELECT (SELECT string_agg(xmin::text, ',' ORDER BY slug) FROM kombify.tenants) || '/' || \
                    (SELECT string_agg(xmin::text, ',' ORDER BY tenant) FROM kombify.quotas)",
            &[],
        )?;
        Ok(r.get(0))
    };
    let before = versions(&mut db)?;
    apply(&mut db, e)?;
    assert_eq!(
        versions(&mut db)?,
        before,
        "an unchanged row is not rewritten"
    );
    Ok(())
}
