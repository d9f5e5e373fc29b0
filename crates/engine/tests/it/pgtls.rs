//! The PostgreSQL provider over TLS against a real PostgreSQL with `ssl=on`, a test CA and a
//! `pg_hba.conf` of `hostssl` lines: `verify-full` with the right CA connects (and the session
//! really is TLS); another CA, the bundled Azure roots, a host name the certificate does not
//! hold, a plain client against the TLS-only server, and a `verify-full` client against a
//! server without TLS are each refused with an error that names what failed and holds no
//! password.

use std::time::Duration;

use anyhow::Result;
use kombiform_engine::providers::postgres::{ConnectParams, Postgres};
use kombiform_engine::providers::Client as _;
use kombiform_model::{PostgresTls, PostgresTlsMode};
use kombiform_test_support::postgres::{Postgres as Server, OTHER_LOOPBACK};
use kombiform_test_support::tls::TestCa;

const PASSWORD: &str = "hunter2-pg-secret";

fn verify_full(ca_pem: Option<String>) -> PostgresTls {
    PostgresTls {
        mode: PostgresTlsMode::VerifyFull,
        ca_certificates_pem: ca_pem,
    }
}

fn params(server: &Server, host: &str, tls: PostgresTls) -> ConnectParams {
    ConnectParams {
        host: host.to_string(),
        port: server.port(),
        user: server.user().to_string(),
        // Trust auth: the server never asks for it, but it must never show up in an error.
        password: Some(PASSWORD.to_string()),
        dbname: "postgres".to_string(),
        tls,
        connect_timeout: Duration::from_secs(10),
    }
}

/// The error of a connection that must fail, with its whole chain.
fn refused(params: ConnectParams) -> String {
    match Postgres::connect(params) {
        Ok(_) => panic!("connected, but the connection must be refused"),
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(!msg.contains(PASSWORD), "{msg}");
            msg
        }
    }
}

#[test]
fn verify_full_with_the_right_ca_connects_over_tls() -> Result<()> {
    let ca = TestCa::new("kombiform test CA")?;
    let server = Server::start_tls(&ca)?;
    let p = Postgres::connect(params(&server, server.host(), verify_full(Some(ca.pem()))))?;
    // A read runs real queries over the connection.
    assert!(p.read()?.resources.is_empty());
    let mut admin = server.connect("postgres")?;
    let row = admin.query_one(
        "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
          WHERE a.application_name = 'kombiform'",
        &[],
    )?;
    assert!(row.get::<_, bool>(0), "the provider's session is not TLS");
    let version: String = row.get(1);
    assert!(version.starts_with("TLSv1."), "{version}");
    Ok(())
}

#[test]
fn another_ca_is_refused_as_a_certificate_verification_failure() -> Result<()> {
    let ca = TestCa::new("kombiform test CA")?;
    let other = TestCa::new("another CA")?;
    let server = Server::start_tls(&ca)?;
    let msg = refused(params(
        &server,
        server.host(),
        verify_full(Some(other.pem())),
    ));
    assert!(msg.contains("TLS certificate verification failed"), "{msg}");
    assert!(msg.contains("postgres.tls.caCertificatesPem"), "{msg}");
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    Ok(())
}

#[test]
fn the_bundled_azure_roots_do_not_trust_a_test_ca() -> Result<()> {
    let ca = TestCa::new("kombiform test CA")?;
    let server = Server::start_tls(&ca)?;
    let msg = refused(params(&server, server.host(), PostgresTls::azure()));
    assert!(msg.contains("TLS certificate verification failed"), "{msg}");
    assert!(
        msg.contains("bundled roots of Azure Database for PostgreSQL"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn a_host_name_the_certificate_does_not_hold_is_refused() -> Result<()> {
    let ca = TestCa::new("kombiform test CA")?;
    let server = Server::start_tls(&ca)?;
    // The server listens on 127.0.0.2 too; its certificate names localhost and 127.0.0.1.
    let msg = refused(params(&server, OTHER_LOOPBACK, verify_full(Some(ca.pem()))));
    assert!(msg.contains("TLS host name verification failed"), "{msg}");
    assert!(msg.contains("127.0.0.2"), "{msg}");
    // The same CA and server by a name the certificate holds: connects.
    Postgres::connect(params(&server, "localhost", verify_full(Some(ca.pem()))))?;
    Ok(())
}

#[test]
fn a_plain_client_is_refused_by_a_tls_only_server() -> Result<()> {
    let ca = TestCa::new("kombiform test CA")?;
    let server = Server::start_tls(&ca)?;
    let msg = refused(params(&server, server.host(), PostgresTls::disabled()));
    assert!(msg.contains("accepts only TLS connections"), "{msg}");
    assert!(msg.contains("`postgres.tls.mode` is `disable`"), "{msg}");
    Ok(())
}

#[test]
fn verify_full_never_falls_back_to_plain_text() -> Result<()> {
    let ca = TestCa::new("kombiform test CA")?;
    let server = Server::start()?;
    let msg = refused(params(&server, server.host(), verify_full(Some(ca.pem()))));
    assert!(msg.contains("does not offer TLS"), "{msg}");
    assert!(msg.contains("never falls back to plain text"), "{msg}");
    Ok(())
}
