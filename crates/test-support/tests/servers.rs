//! Tests of the server helpers themselves: each server really starts, answers, and is gone (process
//! and temp dir) after drop.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use kombiform_test_support::pocketbase::{PocketBase, SUPERUSER_EMAIL};
use kombiform_test_support::postgres::Postgres;

#[test]
fn postgres_round_trip_in_a_fresh_database() -> Result<()> {
    let pg = Postgres::start()?;
    let url = pg.create_database("round_trip")?;
    assert_eq!(
        url,
        format!(
            "postgres://{}@{}:{}/round_trip",
            pg.user(),
            pg.host(),
            pg.port()
        )
    );

    let mut db = postgres::Client::connect(&url, postgres::NoTls).context("connecting by URL")?;
    db.batch_execute("CREATE TABLE tenant (slug text PRIMARY KEY, seats int NOT NULL)")?;
    db.execute(
        "INSERT INTO tenant VALUES ($1, $2), ($3, $4)",
        &[&"acme", &5i32, &"globex", &12i32],
    )?;
    let rows: Vec<(String, i32)> = db
        .query("SELECT slug, seats FROM tenant ORDER BY slug", &[])?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(rows, [("acme".to_string(), 5), ("globex".to_string(), 12)]);

    // The table lives in the new database only, and the server does not run as root.
    let mut default_db = postgres::Client::connect(&pg.url(), postgres::NoTls)?;
    let tables = default_db.query("SELECT 1 FROM pg_tables WHERE tablename = 'tenant'", &[])?;
    assert!(tables.is_empty(), "table leaked into the default database");
    let user: String = default_db
        .query_one("SELECT current_user::text", &[])?
        .get(0);
    assert_eq!(user, pg.user());
    Ok(())
}

#[test]
fn postgres_is_gone_after_drop() -> Result<()> {
    let pg = Postgres::start()?;
    let port = pg.port();
    let dir = pg.dir().to_path_buf();
    assert!(
        dir.join("data/PG_VERSION").is_file(),
        "no cluster in {}",
        dir.display()
    );
    pg.connect("postgres")?.batch_execute("SELECT 1")?;
    assert!(
        pg.create_database("Bad-Name").is_err(),
        "invalid database name accepted"
    );

    drop(pg);
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
    let refused = postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .connect_timeout(Duration::from_secs(2))
        .connect(postgres::NoTls);
    assert!(
        refused.is_err(),
        "server on port {port} still answers after drop"
    );
    Ok(())
}

#[test]
fn pocketbase_superuser_lists_collections() -> Result<()> {
    let pb = PocketBase::start()?;
    let url = format!("{}/api/collections", pb.url());

    let anonymous = pb.agent().get(&url).send()?;
    assert_eq!(
        anonymous.status(),
        401,
        "collections listed without a token"
    );

    let token = pb.superuser_token()?;
    let response = pb
        .agent()
        .get(&url)
        .header("Authorization", &token)
        .send()?;
    assert_eq!(response.status(), 200);
    let body: Value = response.json()?;
    let names: Vec<&str> = body["items"]
        .as_array()
        .context("no `items` array in the collection list")?
        .iter()
        .filter_map(|collection| collection["name"].as_str())
        .collect();
    assert!(
        names.contains(&"_superusers"),
        "no _superusers collection in {names:?}"
    );
    Ok(())
}

#[test]
fn pocketbase_runs_without_automigrate() -> Result<()> {
    let pb = PocketBase::start()?;
    let token = pb.superuser_token()?;
    let collection = serde_json::json!({
        "name": "t_acme_nodes",
        "type": "base",
        "fields": [{ "name": "name", "type": "text", "required": true }],
    });
    let response = pb
        .agent()
        .post(format!("{}/api/collections", pb.url()))
        .header("Authorization", &token)
        .json(&collection)
        .send()?;
    assert_eq!(response.status(), 200);

    // With automigrate on, that API call would have written pb_migrations/<ts>_created_t_acme_nodes.js.
    let migrations = pb.dir().join("pb_migrations");
    let written: Vec<_> = match std::fs::read_dir(&migrations) {
        Ok(entries) => entries.collect::<Result<_, _>>()?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(err).context("listing pb_migrations"),
    };
    assert!(written.is_empty(), "automigrate wrote {written:?}");
    Ok(())
}

#[test]
fn pocketbase_is_gone_after_drop() -> Result<()> {
    let pb = PocketBase::start()?;
    let health = format!("{}/api/health", pb.url());
    let dir = pb.dir().to_path_buf();
    let agent = pb.agent().clone();
    assert_eq!(agent.get(&health).send()?.status(), 200);

    // A wrong password is refused: the superuser is real, not a stub that accepts anything.
    let wrong = agent
        .post(format!(
            "{}/api/collections/_superusers/auth-with-password",
            pb.url()
        ))
        .json(&serde_json::json!({ "identity": SUPERUSER_EMAIL, "password": "wrong-password" }))
        .send()?;
    assert_eq!(wrong.status(), 400);

    drop(pb);
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
    assert!(
        agent.get(&health).send().is_err(),
        "server still answers after drop"
    );
    Ok(())
}
