//! Malformed requests against the real binaries (issue 8): every error either service sends,
//! whatever layer produced it (the connection layer before a request exists, the router, the
//! body extractor), is in the one JSON error format with a request id (item 9); and values that
//! cannot be valid are refused at the edge with a 4xx, never reach PostgreSQL, and log no
//! ERROR (item 8). Requests go over raw TCP (`wire.rs`), so they can be as broken as needed.
//!
//! Not here: the head rules one by one (unit tests in `src/server/head.rs`).

use anyhow::{Context, Result};
use serde_json::{json, Value};

use kombiform_services::sso::webhooks::sign;

use crate::health::{closed_port, config, Targets};
use crate::sso_env::{now, SsoEnv, ACME_ORG, INTERNAL_TOKEN, STRIPE_SECRETS, ZITADEL_SECRET};
use crate::wire::{errors, Reply, Service};

/// Head and body timeouts the binaries are started with, so a timeout test waits a moment.
const TIMEOUT_ARGS: [&str; 4] = ["--head-timeout-ms", "300", "--body-timeout-ms", "300"];

/// A request with `head_extra` headers and no body.
fn get(path: &str, head_extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n{head_extra}\r\n").into_bytes()
}

/// The malformed-request classes of item 9, each on a fresh connection: (what, request,
/// status, code). Only the last one reaches the router; the others hyper would have answered
/// itself, with an empty body.
fn malformed() -> Vec<(&'static str, Vec<u8>, u16, &'static str)> {
    let big = format!("X-Big: {}\r\n", "a".repeat(70_000));
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(70_000));
    let post =
        |headers: &str| format!("POST /health HTTP/1.1\r\nHost: t\r\n{headers}\r\n").into_bytes();
    vec![
        (
            "oversized header",
            get("/health", &big),
            431,
            "headers_too_large",
        ),
        (
            "101 headers",
            get("/health", &many),
            431,
            "headers_too_large",
        ),
        (
            "request line too long",
            long_target.into_bytes(),
            414,
            "uri_too_long",
        ),
        (
            "control character in a header value",
            get("/health", "X-A: a\u{1}b\r\n"),
            400,
            "bad_request",
        ),
        (
            "folded header line",
            get("/health", "X-A: a\r\n  folded\r\n"),
            400,
            "bad_request",
        ),
        (
            "space in a header name",
            get("/health", "Bad Name: x\r\n"),
            400,
            "bad_request",
        ),
        ("not HTTP", b"GARBAGE\r\n\r\n".to_vec(), 400, "bad_request"),
        (
            "unknown HTTP version",
            b"GET /health HTTP/9.9\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "raw NUL in the path",
            b"GET /hea\0lth HTTP/1.1\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "invalid UTF-8 in the path",
            b"GET /\xff HTTP/1.1\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "malformed Content-Length",
            post("Content-Length: 1x\r\n"),
            400,
            "bad_request",
        ),
        (
            "conflicting Content-Length",
            post("Content-Length: 1\r\nContent-Length: 2\r\n"),
            400,
            "bad_request",
        ),
        (
            "Transfer-Encoding not chunked",
            post("Transfer-Encoding: gzip\r\n"),
            400,
            "bad_request",
        ),
        (
            "unknown method",
            b"FOO /health HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            405,
            "method_not_allowed",
        ),
    ]
}

/// Sends every class of [`malformed`], a slow head, and a pipelined pair to `service`, checking
/// each reply's format; returns the request ids the replies carried.
fn every_malformed_request_gets_the_error_format(service: &Service) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for (what, request, status, code) in malformed() {
        let reply = service.once(&request).with_context(|| what)?;
        ids.push(reply.assert_error(status, code, what));
    }

    // A head that does not arrive in time: 408, then the connection closes.
    let mut slow = service.connect()?;
    slow.send(b"GET /health HTTP/1.1\r\nHost: t\r\n")?;
    ids.push(
        slow.reply()?
            .assert_error(408, "request_timeout", "slow head"),
    );
    assert!(slow.closed()?, "the connection closes after a refused head");

    // Pipelined: a valid request, then a malformed one in the same write. The valid one is
    // answered first, then the refusal, then the connection closes.
    let mut pipe = service.connect()?;
    let mut both = get("/health", "");
    both.extend_from_slice(b"GET /health HTTP/1.1\r\nX: a\r\n folded\r\n\r\n");
    pipe.send(&both)?;
    let first = pipe.reply()?;
    assert_eq!(first.status, 200, "{first:?}");
    ids.push(
        pipe.reply()?
            .assert_error(400, "bad_request", "pipelined refusal"),
    );
    assert!(pipe.closed()?);

    // Keep-alive still works through the guard: two requests on one connection.
    let mut keep = service.connect()?;
    for _ in 0..2 {
        keep.send(&get("/health", ""))?;
        assert_eq!(keep.reply()?.status, 200);
    }
    Ok(ids)
}

/// Every refusal's request id is in the log (so a caller's report can be traced), and nothing
/// was logged as an ERROR.
fn assert_logged_without_errors(log: &[String], ids: &[String]) {
    assert!(errors(log).is_empty(), "ERROR lines: {:#?}", errors(log));
    for id in ids {
        assert!(
            log.iter().any(|l| l.contains(id.as_str())),
            "request id {id} not logged"
        );
    }
}

#[test]
fn kombify_health_answers_every_malformed_request_in_the_error_format() -> Result<()> {
    let closed = closed_port()?;
    let targets = Targets {
        kong: format!("http://127.0.0.1:{closed}/status"),
        pocketbase: format!("http://127.0.0.1:{closed}/api/health"),
        jwks: format!("http://127.0.0.1:{closed}/oauth/v2/keys"),
        postgres: ("127.0.0.1".to_string(), closed),
    };
    let cfg = serde_json::to_string(&config(&targets, 1000, 1000)?)?;
    let service = Service::start(
        env!("CARGO_BIN_EXE_kombify-health"),
        &cfg,
        &TIMEOUT_ARGS,
        &[("PG_KOMBIFY_HEALTH_PASSWORD", "x".to_string())],
        "kombify-health listening",
        "listen",
    )?;
    let ids = every_malformed_request_gets_the_error_format(&service)?;
    let log = service.stop();
    assert_logged_without_errors(&log, &ids);
    Ok(())
}

/// A POST to `path` with `body` and extra headers.
fn post(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Starts the `kombify-sso` binary against `env`'s servers.
fn sso_binary(env: &SsoEnv) -> Result<Service> {
    let envs: Vec<(&str, String)> = env.secrets.iter().map(|(k, v)| (*k, v.clone())).collect();
    Service::start(
        env!("CARGO_BIN_EXE_kombify-sso"),
        &serde_json::to_string(&env.config)?,
        &TIMEOUT_ARGS,
        &envs,
        "kombify-sso listening",
        "address",
    )
}

#[test]
fn kombify_sso_answers_every_malformed_request_in_the_error_format() -> Result<()> {
    let env = SsoEnv::start(30)?;
    let service = sso_binary(&env)?;
    let mut ids = every_malformed_request_gets_the_error_format(&service)?;

    // Bodies: too large by Content-Length, and too slow.
    let stripe = "/api/webhooks/stripe";
    let reply = service.once(
        format!("POST {stripe} HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\n").as_bytes(),
    )?;
    ids.push(reply.assert_error(413, "payload_too_large", "body over the limit"));
    let reply = service.once(
        format!("POST {stripe} HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{{\"id\":")
            .as_bytes(),
    )?;
    ids.push(reply.assert_error(408, "request_timeout", "slow body"));

    // A chunked body is served (the guard passes it through), then the connection closes.
    let token = env.token("350000000000000001", ACME_ORG);
    let body = json!({ "token": token }).to_string();
    let mut chunked = b"POST /api/internal/sso/exchange HTTP/1.1\r\nHost: t\r\n\
        Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for part in body.as_bytes().chunks(100) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut raw = service.connect()?;
    raw.send(&chunked)?;
    let reply = raw.reply()?;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(raw.closed()?);

    // A body with a Content-Length keeps the connection usable for the next request.
    let mut keep = service.connect()?;
    keep.send(&post("/api/internal/sso/exchange", "", b"{}"))?;
    keep.reply()?.assert_error(401, "unauthorized", "no token");
    keep.send(&get("/health", ""))?;
    assert_eq!(keep.reply()?.status, 200);

    let log = service.stop();
    assert_logged_without_errors(&log, &ids);
    Ok(())
}

/// Lines of the PostgreSQL log after byte `from` that are errors, or that mention `marker`.
fn pg_log_problems(env: &SsoEnv, from: usize, marker: &str) -> Result<Vec<String>> {
    let bytes = std::fs::read(env.pg.log_path()).context("reading the PostgreSQL log")?;
    let text = String::from_utf8_lossy(bytes.get(from..).unwrap_or_default());
    Ok(text
        .lines()
        .filter(|l| l.contains("ERROR:") || l.contains(marker))
        .map(str::to_string)
        .collect())
}

#[test]
fn values_that_cannot_be_valid_never_reach_postgres() -> Result<()> {
    const MARKER: &str = "zzmarkerzz";
    let env = SsoEnv::start(30)?;
    // Every statement the service sends is logged with its parameters.
    env.execute("ALTER DATABASE kombify_platform SET log_statement = 'all'");
    let service = sso_binary(&env)?;
    let auth = format!("Authorization: Bearer {INTERNAL_TOKEN}\r\n");
    let flags = "/api/internal/feature-flags";

    // The log does show what reaches PostgreSQL: a valid slug of an unknown tenant (404).
    let reply = service.once(&get(&format!("{flags}/valid-{MARKER}"), &auth))?;
    reply.assert_error(404, "not_found", "unknown tenant");
    let seen = pg_log_problems(&env, 0, MARKER)?;
    assert!(
        seen.iter().any(|l| l.contains(&format!("valid-{MARKER}"))),
        "{seen:#?}"
    );
    let from = usize::try_from(std::fs::metadata(env.pg.log_path())?.len())?;

    let mut cases: Vec<(&str, Reply, u16, &str)> = Vec::new();
    for (what, path, status, code) in [
        (
            "NUL in a path segment",
            format!("{flags}/a%00{MARKER}"),
            404,
            "not_found",
        ),
        (
            "control character in a path segment",
            format!("{flags}/a%01{MARKER}"),
            404,
            "not_found",
        ),
        (
            "invalid UTF-8 in a path segment",
            format!("{flags}/a%FF{MARKER}"),
            400,
            "bad_request",
        ),
        (
            "oversized path segment",
            format!("{flags}/{MARKER}{}", "a".repeat(300)),
            404,
            "not_found",
        ),
        (
            "not a slug",
            format!("{flags}/{MARKER}_x"),
            404,
            "not_found",
        ),
    ] {
        cases.push((what, service.once(&get(&path, &auth))?, status, code));
    }
    let flag_bodies = [
        (
            "NUL in a description",
            json!({"flags": [{"name": "f", "default": true, "description": format!("a\u{0}{MARKER}")}]}),
        ),
        (
            "NUL in a tenant",
            json!({"flags": [{"name": "f", "default": true, "tenants": {format!("a\u{0}{MARKER}"): true}}]}),
        ),
        (
            "control character in a plan",
            json!({"flags": [{"name": "f", "default": true, "plans": {format!("p\u{7}{MARKER}"): true}}]}),
        ),
    ];
    for (what, body) in flag_bodies {
        let reply = service.once(&post(
            &format!("{flags}/apply"),
            &auth,
            body.to_string().as_bytes(),
        ))?;
        cases.push((what, reply, 400, "bad_request"));
    }
    // Signed webhooks carrying impossible values (the signature is valid: only the sender knows
    // the secret, but even the sender cannot make the database fail).
    let t = now();
    let stripe = json!({"id": format!("evt_\u{0}{MARKER}"), "type": "customer.subscription.updated",
        "data": {"object": {"customer": "cus_QAcme000000001", "items": {"data": [{"price": {"id": "price_1"}}]}}}});
    let stripe_customer = json!({"id": format!("evt_{MARKER}"), "type": "customer.subscription.updated",
        "data": {"object": {"customer": format!("cus_\u{0}{MARKER}"), "items": {"data": [{"price": {"id": "price_1"}}]}}}});
    for (what, body) in [
        ("NUL in a Stripe event id", stripe),
        ("NUL in a Stripe customer", stripe_customer),
    ] {
        let body = body.to_string().into_bytes();
        let sig = format!(
            "Stripe-Signature: {}\r\n",
            sign(t, &body, STRIPE_SECRETS[1])
        );
        cases.push((
            what,
            service.once(&post("/api/webhooks/stripe", &sig, &body))?,
            400,
            "bad_request",
        ));
    }
    let zitadel =
        json!({"aggregateID": format!("34\u{0}{MARKER}"), "instanceID": "1", "sequence": 1,
        "event_type": "user.deactivated"})
        .to_string()
        .into_bytes();
    let sig = format!(
        "ZITADEL-Signature: {}\r\n",
        sign(t, &zitadel, ZITADEL_SECRET)
    );
    cases.push((
        "NUL in a Zitadel user id",
        service.once(&post("/api/webhooks/zitadel", &sig, &zitadel))?,
        400,
        "bad_request",
    ));
    // Validly signed access tokens whose org or subject cannot be valid: the uniform 401.
    for (what, claim, value) in [
        (
            "NUL in the org claim",
            crate::sso_env::ORG_CLAIM,
            format!("{ACME_ORG}\u{0}{MARKER}"),
        ),
        ("NUL in the subject", "sub", format!("36\u{0}{MARKER}")),
        (
            "oversized org claim",
            crate::sso_env::ORG_CLAIM,
            format!("{MARKER}{}", "9".repeat(300)),
        ),
    ] {
        let mut claims = env.claims("360000000000000001", ACME_ORG);
        claims[claim] = Value::String(value);
        let token = env.key.sign(&claims);
        let auth = format!("Authorization: Bearer {token}\r\n");
        cases.push((
            what,
            service.once(&post("/api/internal/sso/exchange", &auth, b""))?,
            401,
            "unauthorized",
        ));
    }
    for (what, reply, status, code) in &cases {
        reply.assert_error(*status, code, what);
    }

    let log = service.stop();
    assert!(errors(&log).is_empty(), "ERROR lines: {:#?}", errors(&log));
    let problems = pg_log_problems(&env, from, MARKER)?;
    assert!(problems.is_empty(), "PostgreSQL saw: {problems:#?}");
    Ok(())
}
