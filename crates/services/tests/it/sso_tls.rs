//! `kombify-sso`'s PostgreSQL pool over TLS, against a real PostgreSQL with `ssl=on`, a test
//! CA and `hostssl`-only `pg_hba.conf`: `verify-full` with the right CA gets TLS connections;
//! another CA, the bundled Azure roots, a host name the certificate does not hold, a plain pool
//! against the TLS-only server and a `verify-full` pool against a server without TLS are each
//! refused with an error naming what failed, never holding the password.

use std::time::Duration;

use anyhow::Result;
use kombiform_model::secret::Secret;
use kombiform_model::services::PostgresConfig;
use kombiform_model::{PostgresTls, PostgresTlsMode, SecretRef};
use kombiform_services::sso::db::Db;
use kombiform_test_support::postgres::{Postgres, OTHER_LOOPBACK};
use kombiform_test_support::tls::TestCa;

const PASSWORD: &str = "hunter2-sso-secret";

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn config(pg: &Postgres, host: &str, tls: PostgresTls) -> PostgresConfig {
    PostgresConfig {
        host: host.to_string(),
        port: pg.port(),
        database: "postgres".to_string(),
        schema: "kombify".to_string(),
        user: pg.user().to_string(),
        password: SecretRef::Env("PGPASSWORD".to_string()),
        tls,
    }
}

fn verify_full(ca: &TestCa) -> PostgresTls {
    PostgresTls {
        mode: PostgresTlsMode::VerifyFull,
        ca_certificates_pem: Some(ca.pem()),
    }
}

/// The error of a pooled connection that must fail, with its whole chain.
fn refused(cfg: &PostgresConfig) -> Result<String> {
    let db = Db::new(cfg, &Secret::new(PASSWORD))?;
    let got = runtime()?.block_on(async { db.client().await.map(|_| ()) });
    let msg = match got {
        Ok(()) => panic!("connected, but the connection must be refused"),
        Err(e) => format!("{e:#}"),
    };
    assert!(!msg.contains(PASSWORD), "{msg}");
    Ok(msg)
}

#[test]
fn the_pool_connects_over_tls_with_the_right_ca() -> Result<()> {
    let ca = TestCa::new("kombiform test CA")?;
    let pg = Postgres::start_tls(&ca)?;
    let db = Db::new(
        &config(&pg, pg.host(), verify_full(&ca)),
        &Secret::new(PASSWORD),
    )?;
    let (ssl, version): (bool, String) = runtime()?.block_on(async {
        db.ping(Duration::from_secs(10)).await?;
        let c = db.client().await?;
        let row = c
            .query_one(
                "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?;
        anyhow::Ok((row.get(0), row.get(1)))
    })?;
    assert!(ssl, "the pooled session is not TLS");
    assert!(version.starts_with("TLSv1."), "{version}");
    Ok(())
}

#[test]
fn the_pool_refuses_an_untrusted_certificate() -> Result<()> {
    let ca = TestCa::new("kombiform test CA")?;
    let pg = Postgres::start_tls(&ca)?;
    let other = TestCa::new("another CA")?;
    let msg = refused(&config(&pg, pg.host(), verify_full(&other)))?;
    assert!(msg.contains("TLS certificate verification failed"), "{msg}");
    assert!(msg.contains("postgres.tls.caCertificatesPem"), "{msg}");
    let msg = refused(&config(&pg, pg.host(), PostgresTls::azure()))?;
    assert!(msg.contains("TLS certificate verification failed"), "{msg}");
    assert!(
        msg.contains("bundled roots of Azure Database for PostgreSQL"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn the_pool_refuses_a_host_name_the_certificate_does_not_hold() -> Result<()> {
    let ca = TestCa::new("kombiform test CA")?;
    let pg = Postgres::start_tls(&ca)?;
    let msg = refused(&config(&pg, OTHER_LOOPBACK, verify_full(&ca)))?;
    assert!(msg.contains("TLS host name verification failed"), "{msg}");
    assert!(msg.contains(OTHER_LOOPBACK), "{msg}");
    Ok(())
}

#[test]
fn the_pool_never_mixes_plain_text_and_tls() -> Result<()> {
    let ca = TestCa::new("kombiform test CA")?;
    let tls_only = Postgres::start_tls(&ca)?;
    let msg = refused(&config(&tls_only, tls_only.host(), PostgresTls::disabled()))?;
    assert!(msg.contains("accepts only TLS connections"), "{msg}");
    let no_tls = Postgres::start()?;
    let msg = refused(&config(&no_tls, no_tls.host(), verify_full(&ca)))?;
    assert!(msg.contains("does not offer TLS"), "{msg}");
    assert!(msg.contains("never falls back to plain text"), "{msg}");
    Ok(())
}
