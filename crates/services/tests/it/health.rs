//! `kombify-health` against a REAL PostgreSQL and PocketBase (tests/it/support) and small fake
//! HTTP servers for Kong's status endpoint and Zitadel's JWKS: all up, PocketBase down and back,
//! a hanging dependency, the single-flight cache, `/health` with everything down, the JSON
//! error format, and the PostgreSQL check over TLS (a TLS-only server with a test CA: right
//! CA up; another CA, the bundled Azure roots, a wrong host name, plain text against TLS and
//! TLS against plain text down with code `tls`). The configuration is `generated/local/services/health.json` with its addresses
//! pointed at the test servers, built with the same `from_config` the binary uses; one test runs
//! the binary itself.
//!
//! Not here: the probes' and the cache's unit tests (src/services/health/).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use axum::routing::get;
use axum::Router;
use kombiform_model::secret;
use kombiform_model::services::{HealthConfig, Probe};
use kombiform_services::health::{self, FailureKind, Readiness, ReadyReport, Status};
use kombiform_services::server;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use kombiform_model::{PostgresTls, PostgresTlsMode};
use kombiform_test_support::pocketbase::PocketBase;
use kombiform_test_support::postgres::{Postgres, OTHER_LOOPBACK};
use kombiform_test_support::tls::TestCa;

/// The generated local configuration.
fn local_config() -> Result<HealthConfig> {
    let text = crate::sso_env::generated("local/services/health.json")?;
    serde_json::from_str(&text).context("parsing local/services/health.json")
}

/// Where each check of the local config should point in a test.
pub(crate) struct Targets {
    pub kong: String,
    pub pocketbase: String,
    pub jwks: String,
    /// Host and port of PostgreSQL.
    pub postgres: (String, u16),
}

/// The local config with every check pointed at `targets`, and the given timeout and TTL.
pub(crate) fn config(targets: &Targets, timeout_ms: u32, ttl_ms: u32) -> Result<HealthConfig> {
    let mut cfg = local_config()?;
    cfg.check_timeout_ms = timeout_ms;
    cfg.cache_ttl_ms = ttl_ms;
    for check in &mut cfg.checks {
        match (check.name.as_str(), &mut check.probe) {
            ("kong", Probe::Http(h)) => h.url = targets.kong.clone(),
            ("pocketbase", Probe::Http(h)) => h.url = targets.pocketbase.clone(),
            ("zitadel-jwks", Probe::Http(h)) => h.url = targets.jwks.clone(),
            ("postgres", Probe::Postgres(pg)) => {
                pg.host = targets.postgres.0.clone();
                pg.port = targets.postgres.1;
            }
            (name, _) => bail!("unexpected check {name} in the local health.json"),
        }
    }
    Ok(cfg)
}

/// A readiness over `cfg`; the PostgreSQL password resolves to a fixed test value (the test
/// servers use trust auth).
fn readiness(cfg: &HealthConfig) -> Result<Readiness> {
    health::from_config(cfg, &|r| {
        secret::resolve(r, |_| Some("test-password".to_string()))
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building a tokio runtime")
}

/// A loopback port nothing listens on (bound, then released).
pub(crate) fn closed_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a probe port")?;
    Ok(l.local_addr()?.port())
}

/// A fake HTTP dependency: answers `body` with 200 at `path` after `delay`, counting requests.
struct Fake {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    /// Requests received whose answer is not sent yet.
    pending: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Fake {
    async fn start(path: &str, body: &'static str) -> Result<Fake> {
        let hits = Arc::new(AtomicUsize::new(0));
        let pending = Arc::new(AtomicUsize::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (h, p, d) = (hits.clone(), pending.clone(), delay_ms.clone());
        let handler = move || {
            let (h, p, d) = (h.clone(), p.clone(), d.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                p.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(d.load(Ordering::SeqCst))).await;
                p.fetch_sub(1, Ordering::SeqCst);
                ([("content-type", "application/json")], body)
            }
        };
        let app = Router::new().route(path, get(handler));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Fake {
            addr,
            hits,
            pending,
            delay_ms,
            task,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const KONG_STATUS: &str = r#"{"database":{"reachable":true},"server":{"connections_active":1}}"#;
const JWKS: &str =
    r#"{"keys":[{"use":"sig","kty":"RSA","kid":"1","alg":"RS256","n":"sXch","e":"AQAB"}]}"#;

/// Fake Kong (`/status`) and Zitadel JWKS (`/oauth/v2/keys`).
async fn fakes() -> Result<(Fake, Fake)> {
    Ok((
        Fake::start("/status", KONG_STATUS).await?,
        Fake::start("/oauth/v2/keys", JWKS).await?,
    ))
}

/// Serves `health::edge::app(readiness)` on a free loopback port with the binary's server;
/// returns its base URL.
async fn serve(readiness: Readiness) -> Result<(String, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = health::edge::app(readiness);
    let task = tokio::spawn(server::serve(
        listener,
        app,
        server::Limits::default(),
        std::future::pending(),
    ));
    Ok((format!("http://{addr}"), task))
}

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(kombiform_sys::tls::client_config().unwrap())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the test HTTP client")
}

/// `GET base/ready`: the status code and the parsed report.
async fn get_ready(client: &reqwest::Client, base: &str) -> Result<(u16, ReadyReport)> {
    let response = client.get(format!("{base}/ready")).send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let report = serde_json::from_str(&text).with_context(|| format!("/ready body: {text}"))?;
    Ok((status, report))
}

/// Each check's status by name.
fn statuses(report: &ReadyReport) -> BTreeMap<&str, Status> {
    report
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.status))
        .collect()
}

/// PostgreSQL with the platform database (schema applied) and PocketBase.
fn platform(cfg: &HealthConfig) -> Result<(Postgres, PocketBase)> {
    let pg = Postgres::start()?;
    let database = cfg
        .checks
        .iter()
        .find_map(|c| match &c.probe {
            Probe::Postgres(p) => Some(p.database.clone()),
            Probe::Http(_) => None,
        })
        .context("no postgres check in health.json")?;
    pg.create_database(&database)?;
    let mut db = pg.connect(&database)?;
    db.batch_execute(&kombiform_emit::sql::schema_sql())
        .context("applying the platform schema")?;
    // The health service's own role (CONNECT only): the checks log in as it.
    db.batch_execute(&crate::sso_env::generated("local/sql/003_roles.sql")?)
        .context("creating the services' roles")?;
    let pb = PocketBase::start()?;
    Ok((pg, pb))
}

#[test]
fn all_up_is_200_with_every_check_up_and_its_latency() -> Result<()> {
    let cfg = local_config()?;
    let (pg, pb) = platform(&cfg)?;
    runtime()?.block_on(async {
        let (kong, jwks) = fakes().await?;
        let targets = Targets {
            kong: kong.url("/status"),
            pocketbase: format!("{}/api/health", pb.url()),
            jwks: jwks.url("/oauth/v2/keys"),
            postgres: (pg.host().to_string(), pg.port()),
        };
        let (base, _server) = serve(readiness(&config(&targets, 2000, 1000)?)?).await?;
        let (code, report) = get_ready(&client()?, &base).await?;
        assert_eq!(code, 200, "{report:?}");
        assert_eq!(report.status, Status::Up);
        let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["kong", "pocketbase", "postgres", "zitadel-jwks"]);
        for c in &report.checks {
            assert_eq!(c.status, Status::Up, "{c:?}");
            assert!(c.critical);
            assert!(c.latency_ms > 0.0 && c.latency_ms < 2000.0, "{c:?}");
            assert!(c.reason.is_none());
            println!("measured: {} check {:.2} ms", c.name, c.latency_ms);
        }
        assert_eq!((kong.hits(), jwks.hits()), (1, 1));
        Ok(())
    })
}

/// A TCP forwarder to `upstream` on a fixed loopback port that can be closed and reopened:
/// "down" means connection refused, as when the dependency's process is gone.
struct Switch {
    port: u16,
    upstream: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Switch {
    async fn start(upstream: SocketAddr) -> Result<Switch> {
        let port = closed_port()?;
        let switch = Switch {
            port,
            upstream,
            tasks: Arc::default(),
        };
        switch.up().await?;
        Ok(switch)
    }

    async fn up(&self) -> Result<()> {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .with_context(|| format!("re-binding port {}", self.port))?;
        let (upstream, tasks) = (self.upstream, self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                if let Ok(mut t) = tasks.lock() {
                    t.push(conn);
                }
            }
        });
        self.tasks
            .lock()
            .map_err(|_| anyhow!("switch lock poisoned"))?
            .push(accept);
        Ok(())
    }

    /// Closes the port and every forwarded connection.
    fn down(&self) -> Result<()> {
        let mut tasks = self
            .tasks
            .lock()
            .map_err(|_| anyhow!("switch lock poisoned"))?;
        for t in tasks.drain(..) {
            t.abort();
        }
        Ok(())
    }
}

#[test]
fn pocketbase_down_is_503_with_only_pocketbase_down_and_recovers() -> Result<()> {
    let cfg = local_config()?;
    let (pg, pb) = platform(&cfg)?;
    let pb_addr: SocketAddr = pb
        .url()
        .trim_start_matches("http://")
        .parse()
        .context("PocketBase url")?;
    runtime()?.block_on(async {
        let (kong, jwks) = fakes().await?;
        let switch = Switch::start(pb_addr).await?;
        let targets = Targets {
            kong: kong.url("/status"),
            pocketbase: format!("http://127.0.0.1:{}/api/health", switch.port),
            jwks: jwks.url("/oauth/v2/keys"),
            postgres: (pg.host().to_string(), pg.port()),
        };
        // No cache: each /ready is a new round, so no test waits out a TTL (the cache itself
        // is tested with fifty concurrent requests below).
        let (base, _server) = serve(readiness(&config(&targets, 2000, 0)?)?).await?;
        let client = client()?;

        let (code, report) = get_ready(&client, &base).await?;
        assert_eq!(code, 200, "through the switch: {report:?}");

        switch.down()?;
        let (code, report) = get_ready(&client, &base).await?;
        assert_eq!(code, 503, "{report:?}");
        assert_eq!(report.status, Status::Down);
        let s = statuses(&report);
        assert_eq!(s["pocketbase"], Status::Down);
        assert_eq!(s["postgres"], Status::Up);
        assert_eq!(s["kong"], Status::Up);
        assert_eq!(s["zitadel-jwks"], Status::Up);
        let reason = report
            .checks
            .iter()
            .find(|c| c.name == "pocketbase")
            .and_then(|c| c.reason.clone())
            .context("a down check has a reason")?;
        assert_eq!(reason.code, FailureKind::Unreachable);
        assert!(!reason.message.contains("127.0.0.1"), "{reason:?}");

        switch.up().await?;
        let (code, report) = get_ready(&client, &base).await?;
        assert_eq!(code, 200, "recovered: {report:?}");
        assert_eq!(statuses(&report)["pocketbase"], Status::Up);
        switch.down()?;
        Ok(())
    })
}

#[test]
fn a_hanging_dependency_is_down_by_timeout_and_does_not_block_the_answer() -> Result<()> {
    runtime()?.block_on(async {
        let (kong, jwks) = fakes().await?;
        kong.delay_ms.store(30_000, Ordering::SeqCst);
        let mut cfg = local_config()?;
        cfg.check_timeout_ms = 500;
        cfg.checks
            .retain(|c| c.name == "kong" || c.name == "zitadel-jwks");
        for check in &mut cfg.checks {
            if let Probe::Http(h) = &mut check.probe {
                h.url = match check.name.as_str() {
                    "kong" => kong.url("/status"),
                    _ => jwks.url("/oauth/v2/keys"),
                };
            }
        }
        let (base, _server) = serve(readiness(&cfg)?).await?;
        let (code, report) = get_ready(&client()?, &base).await?;
        // The answer came while Kong still hangs: /ready did not wait for it.
        assert_eq!(kong.pending.load(Ordering::SeqCst), 1);
        assert_eq!(code, 503);
        let kong_report = &report.checks[0];
        assert_eq!(kong_report.name, "kong");
        assert_eq!(kong_report.status, Status::Down);
        let reason = kong_report.reason.as_ref().context("kong has a reason")?;
        assert_eq!(reason.code, FailureKind::Timeout);
        assert_eq!(reason.message, "no answer within 500 ms");
        assert!(kong_report.latency_ms >= 500.0, "{kong_report:?}");
        assert_eq!(report.checks[1].status, Status::Up);
        Ok(())
    })
}

#[test]
fn a_jwks_without_keys_is_down() -> Result<()> {
    runtime()?.block_on(async {
        let kong = Fake::start("/status", KONG_STATUS).await?;
        let jwks = Fake::start("/oauth/v2/keys", r#"{"keys":[]}"#).await?;
        let mut cfg = local_config()?;
        cfg.checks
            .retain(|c| c.name == "kong" || c.name == "zitadel-jwks");
        for check in &mut cfg.checks {
            if let Probe::Http(h) = &mut check.probe {
                h.url = match check.name.as_str() {
                    "kong" => kong.url("/status"),
                    _ => jwks.url("/oauth/v2/keys"),
                };
            }
        }
        let (base, _server) = serve(readiness(&cfg)?).await?;
        let (code, report) = get_ready(&client()?, &base).await?;
        assert_eq!(code, 503);
        let s = statuses(&report);
        assert_eq!((s["kong"], s["zitadel-jwks"]), (Status::Up, Status::Down));
        assert_eq!(
            report.checks[1].reason.as_ref().map(|r| r.code),
            Some(FailureKind::Body)
        );
        Ok(())
    })
}

#[test]
fn fifty_concurrent_ready_requests_within_the_ttl_reach_kong_once() -> Result<()> {
    runtime()?.block_on(async {
        let (kong, jwks) = fakes().await?;
        // Slow enough that the requests overlap the round (single-flight, not only the cache).
        kong.delay_ms.store(200, Ordering::SeqCst);
        let mut cfg = local_config()?;
        cfg.cache_ttl_ms = 10_000;
        cfg.checks
            .retain(|c| c.name == "kong" || c.name == "zitadel-jwks");
        for check in &mut cfg.checks {
            if let Probe::Http(h) = &mut check.probe {
                h.url = match check.name.as_str() {
                    "kong" => kong.url("/status"),
                    _ => jwks.url("/oauth/v2/keys"),
                };
            }
        }
        let readiness = readiness(&cfg)?;
        let (base, _server) = serve(readiness.clone()).await?;
        let client = client()?;
        let requests: Vec<_> = (0..50)
            .map(|_| {
                let (client, base) = (client.clone(), base.clone());
                tokio::spawn(async move { get_ready(&client, &base).await })
            })
            .collect();
        for r in requests {
            let (code, report) = r.await??;
            assert_eq!(code, 200, "{report:?}");
        }
        assert_eq!(kong.hits(), 1);
        assert_eq!(jwks.hits(), 1);
        assert_eq!(readiness.rounds(), 1);
        Ok(())
    })
}

#[test]
fn unknown_paths_and_methods_get_the_json_error_format() -> Result<()> {
    runtime()?.block_on(async {
        let mut cfg = local_config()?;
        cfg.checks.clear();
        let (base, _server) = serve(readiness(&cfg)?).await?;
        let client = client()?;

        let response = client
            .get(format!("{base}/nope"))
            .header("x-request-id", "test-req-1")
            .send()
            .await?;
        assert_eq!(response.status().as_u16(), 404);
        assert_eq!(
            response
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            Some("test-req-1")
        );
        let body: serde_json::Value = response.json().await?;
        assert_eq!(body["error"]["code"], "not_found");
        assert_eq!(body["error"]["requestId"], "test-req-1");
        assert!(body["error"]["message"].is_string());
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");

        let response = client.post(format!("{base}/health")).send().await?;
        assert_eq!(response.status().as_u16(), 405);
        let body: serde_json::Value = response.json().await?;
        assert_eq!(body["error"]["code"], "method_not_allowed");
        assert!(body["error"]["requestId"]
            .as_str()
            .is_some_and(|id| !id.is_empty()));
        Ok(())
    })
}

/// The `kombify-health` binary, killed on drop.
struct Binary(Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `listen` address from the binary's "listening" log line.
fn listening_addr(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    (v["fields"]["message"] == "kombify-health listening")
        .then(|| v["fields"]["listen"].as_str().map(str::to_string))
        .flatten()
}

#[test]
fn the_binary_says_alive_while_every_dependency_is_down_and_logs_no_secret() -> Result<()> {
    const PASSWORD: &str = "pw-must-never-be-logged-7f3a";
    let closed = closed_port()?;
    let targets = Targets {
        kong: format!("http://127.0.0.1:{closed}/status"),
        pocketbase: format!("http://127.0.0.1:{closed}/api/health"),
        jwks: format!("http://127.0.0.1:{closed}/oauth/v2/keys"),
        postgres: ("127.0.0.1".to_string(), closed),
    };
    let cfg = config(&targets, 1000, 1000)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("health.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg)?)?;

    let child = Command::new(env!("CARGO_BIN_EXE_kombify-health"))
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .env("PG_KOMBIFY_HEALTH_PASSWORD", PASSWORD)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting kombify-health")?;
    let mut binary = Binary(child);
    let stderr = binary.0.stderr.take().context("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .with_context(|| format!("kombify-health did not start; log so far: {log:?}"))?;
        if let Some(addr) = listening_addr(&line) {
            log.push(line);
            break addr;
        }
        log.push(line);
    };

    runtime()?.block_on(async {
        let client = client()?;
        let base = format!("http://{addr}");
        let response = client
            .get(format!("{base}/health"))
            .header("x-request-id", "alive-1")
            .send()
            .await?;
        assert_eq!(response.status().as_u16(), 200);
        let body: serde_json::Value = response.json().await?;
        assert_eq!(body, serde_json::json!({"status": "up"}));

        let (code, report) = get_ready(&client, &base).await?;
        assert_eq!(code, 503);
        assert!(report.checks.iter().all(|c| c.status == Status::Down));
        assert_eq!(report.checks.len(), 4);

        let response = client.get(format!("{base}/missing")).send().await?;
        assert_eq!(response.status().as_u16(), 404);
        let body: serde_json::Value = response.json().await?;
        assert_eq!(body["error"]["code"], "not_found");
        anyhow::Ok(())
    })?;

    drop(binary);
    log.extend(rx.iter());
    let text = log.join("\n");
    assert!(
        !text.contains(PASSWORD),
        "the password is in the log:\n{text}"
    );
    for line in &log {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not a JSON log line: {line}"))?;
        assert!(v["level"].is_string(), "{line}");
    }
    let request_line = log
        .iter()
        .find(|l| l.contains("alive-1") && l.contains("\"request\""))
        .with_context(|| format!("no request log line with the request id:\n{text}"))?;
    assert!(request_line.contains("\"status\":200"), "{request_line}");
    assert!(
        log.iter()
            .any(|l| l.contains("dependency check failed") && l.contains("postgres")),
        "a failed check is logged with its detail:\n{text}"
    );
    Ok(())
}

/// The local config with only its PostgreSQL check, pointed at `host` on `pg` with `tls`.
fn postgres_only(pg: &Postgres, host: &str, tls: PostgresTls) -> Result<HealthConfig> {
    let mut cfg = local_config()?;
    cfg.checks.retain(|c| c.name == "postgres");
    for check in &mut cfg.checks {
        if let Probe::Postgres(p) = &mut check.probe {
            p.host = host.to_string();
            p.port = pg.port();
            p.database = "postgres".to_string();
            // These servers have no service roles: the TLS checks log in as the superuser.
            p.user = pg.user().to_string();
            p.tls = tls.clone();
        }
    }
    Ok(cfg)
}

/// The probe's own failure (public message and log detail) for the PostgreSQL check of `cfg`.
fn probe_failure(cfg: &HealthConfig) -> Result<Option<health::Failure>> {
    let Some(Probe::Postgres(p)) = cfg.checks.first().map(|c| &c.probe) else {
        bail!("no PostgreSQL check");
    };
    let target = health::PostgresTarget {
        host: &p.host,
        port: p.port,
        database: &p.database,
        user: &p.user,
        tls: &p.tls,
    };
    let check = health::PostgresCheck::new(&target, "test-password", Duration::from_secs(10))
        .map_err(anyhow::Error::msg)?;
    Ok(runtime()?
        .block_on(health::probe::Probe::probe(&check))
        .err())
}

fn verify_full(ca: &TestCa) -> PostgresTls {
    PostgresTls {
        mode: PostgresTlsMode::VerifyFull,
        ca_certificates_pem: Some(ca.pem()),
    }
}

/// Asserts the check of `cfg` is down with code `tls`, the public `summary` (no host) and a
/// log detail containing `detail`; both without the password.
fn assert_tls_down(cfg: &HealthConfig, summary: &str, detail: &str) -> Result<()> {
    let report = runtime()?.block_on(readiness(cfg)?.status());
    assert_eq!(report.status, Status::Down, "{report:?}");
    let reason = report.checks[0].reason.clone().context("no reason")?;
    assert_eq!(reason.code, FailureKind::Tls, "{reason:?}");
    assert_eq!(reason.message, summary);
    let failure = probe_failure(cfg)?.context("the probe passed")?;
    assert!(failure.detail.contains(detail), "{}", failure.detail);
    assert!(
        !failure.detail.contains("test-password"),
        "{}",
        failure.detail
    );
    Ok(())
}

#[test]
fn postgres_check_verifies_the_certificate_and_the_host_name() -> Result<()> {
    let ca = TestCa::new("kombiform test CA")?;
    let pg = Postgres::start_tls(&ca)?;

    let right = postgres_only(&pg, pg.host(), verify_full(&ca))?;
    let report = runtime()?.block_on(readiness(&right)?.status());
    assert_eq!(report.status, Status::Up, "the right CA: {report:?}");

    let other = TestCa::new("another CA")?;
    let wrong_ca = postgres_only(&pg, pg.host(), verify_full(&other))?;
    assert_tls_down(
        &wrong_ca,
        "TLS: the server certificate is not trusted",
        "TLS certificate verification failed",
    )?;
    let bundled = postgres_only(&pg, pg.host(), PostgresTls::azure())?;
    assert_tls_down(
        &bundled,
        "TLS: the server certificate is not trusted",
        "bundled roots of Azure Database for PostgreSQL",
    )?;
    let wrong_host = postgres_only(&pg, OTHER_LOOPBACK, verify_full(&ca))?;
    assert_tls_down(
        &wrong_host,
        "TLS: the server certificate does not match the host name",
        "TLS host name verification failed",
    )
}

#[test]
fn postgres_check_never_mixes_plain_text_and_tls() -> Result<()> {
    let ca = TestCa::new("kombiform test CA")?;
    // A plain check against a server that accepts TLS logins only.
    let tls_only = Postgres::start_tls(&ca)?;
    let plain = postgres_only(&tls_only, tls_only.host(), PostgresTls::disabled())?;
    assert_tls_down(
        &plain,
        "the server requires TLS",
        "accepts only TLS connections",
    )?;
    // A verify-full check against a server without TLS: down, never a plain login.
    let no_tls = Postgres::start()?;
    let mut cfg = postgres_only(&no_tls, no_tls.host(), verify_full(&ca))?;
    assert_tls_down(
        &cfg,
        "TLS: the server does not offer TLS",
        "never falls back to plain text",
    )?;
    for check in &mut cfg.checks {
        if let Probe::Postgres(p) = &mut check.probe {
            p.tls = PostgresTls::disabled();
        }
    }
    let report = runtime()?.block_on(readiness(&cfg)?.status());
    assert_eq!(
        report.status,
        Status::Up,
        "the same server without TLS: {report:?}"
    );
    Ok(())
}
