//! The stand-in over raw HTTP: the binary's contract (address first, HTTPS and HTTP on one
//! port, the record file), authentication and the token endpoint, api-version, throttling
//! headers, and secrets kept out of the record. (The ARM client drives the rest of it in
//! `crates/azure/tests/it/standin.rs`.)

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use kombiform_arm_standin::{Config, StandIn};
use serde_json::{json, Value};

fn http_client(ca_pem: &str) -> Result<reqwest::Client> {
    // Another test of this binary may have installed it already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).context("the stand-in's CA")?;
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .context("building an HTTP client")
}

async fn token(http: &reqwest::Client, base: &str) -> Result<String> {
    let answer: Value = http
        .post(format!("{base}/tenant/oauth2/v2.0/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=app&client_secret=s3cret-value&scope=https%3A%2F%2Fmanagement.azure.com%2F.default")
        .send()
        .await
        .context("asking for a token")?
        .json()
        .await
        .context("reading the token answer")?;
    answer["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("a token answer without access_token")
}

async fn error_code(response: reqwest::Response) -> Result<(u16, String)> {
    let status = response.status().as_u16();
    let body: Value = response.json().await.context("reading an error answer")?;
    let code = body["error"]["code"].as_str().unwrap_or_default();
    Ok((status, code.to_owned()))
}

#[tokio::test]
async fn the_binary_prints_its_address_first_and_serves_https_and_http_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, record) = (dir.path().join("ca.pem"), dir.path().join("record.jsonl"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kombiform-arm-standin"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--time-scale",
            "0.01",
            "--ca-cert",
        ])
        .arg(&ca)
        .arg("--record")
        .arg(&record)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    // Read the first line only, then close the pipe: the stand-in must keep serving.
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr: SocketAddr = first
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("first line {first:?}"));
    assert_ne!(addr.port(), 0);

    let http = http_client(&std::fs::read_to_string(&ca).unwrap()).unwrap();
    let bearer = token(&http, &format!("https://{addr}")).await.unwrap();
    let rg = "/subscriptions/s/resourceGroups/rg?api-version=2025-04-01";
    let over_https = http
        .put(format!("https://{addr}{rg}"))
        .bearer_auth(&bearer)
        .json(&json!({"location": "westeurope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(over_https.status().as_u16(), 201);
    let over_http = http
        .get(format!("http://{addr}{rg}"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(over_http.status().as_u16(), 200);

    child.kill().unwrap();
    child.wait().unwrap();
    let lines: Vec<Value> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, String, Value, Value)> = lines
        .iter()
        .map(|l| {
            (
                l["method"].as_str().unwrap().into(),
                l["path"].as_str().unwrap().into(),
                l["api-version"].clone(),
                l["status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "POST".into(),
                "/tenant/oauth2/v2.0/token".into(),
                Value::Null,
                json!(200)
            ),
            (
                "PUT".into(),
                "/subscriptions/s/resourceGroups/rg".into(),
                json!("2025-04-01"),
                json!(201)
            ),
            (
                "GET".into(),
                "/subscriptions/s/resourceGroups/rg".into(),
                json!("2025-04-01"),
                json!(200)
            ),
        ]
    );
    assert!(!std::fs::read_to_string(&record)
        .unwrap()
        .contains("s3cret-value"));
}

#[tokio::test]
async fn a_bad_faults_spec_is_refused_with_its_reason() {
    let output = Command::new(env!("CARGO_BIN_EXE_kombiform-arm-standin"))
        .args(["--faults", "429=lots"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--faults") && stderr.contains("percentage"),
        "{stderr}"
    );
}

#[tokio::test]
async fn arm_requests_need_a_token_the_endpoint_issued_and_an_api_version() {
    let standin = StandIn::start(Config::default()).await.unwrap();
    let http = http_client(standin.ca_pem()).unwrap();
    let base = standin.url();
    let url = format!("{base}/subscriptions/s/resourceGroups/rg?api-version=2025-04-01");

    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(
        error_code(anonymous).await.unwrap(),
        (401, "AuthenticationFailed".into())
    );
    let forged = http.get(&url).bearer_auth("forged").send().await.unwrap();
    assert_eq!(
        error_code(forged).await.unwrap(),
        (401, "InvalidAuthenticationToken".into())
    );

    let bearer = token(&http, &base).await.unwrap();
    let missing = http
        .get(format!("{base}/subscriptions/s/resourceGroups/rg"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(missing).await.unwrap(),
        (400, "MissingApiVersionParameter".into())
    );
    let absent = http.get(&url).bearer_auth(&bearer).send().await.unwrap();
    assert_eq!(
        error_code(absent).await.unwrap(),
        (404, "ResourceGroupNotFound".into())
    );

    // The token endpoint answers like Entra ID.
    let form = |body: &'static str| {
        http.post(format!("{base}/tenant/oauth2/v2.0/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let no_client: Value = form("grant_type=client_credentials&scope=x/.default")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(no_client["error"], "invalid_request");
    assert_eq!(no_client["error_codes"], json!([900144]));
    let no_secret = form("grant_type=client_credentials&client_id=a&scope=x/.default")
        .await
        .unwrap();
    assert_eq!(no_secret.status().as_u16(), 401);
    assert_eq!(standin.stats().token_requests, 3);
}

#[tokio::test]
async fn answers_carry_the_remaining_budget_and_the_record_hides_write_only_values() {
    let standin = StandIn::start(Config::default()).await.unwrap();
    let http = http_client(standin.ca_pem()).unwrap();
    let base = standin.url();
    let bearer = token(&http, &base).await.unwrap();
    let mut remaining = Vec::new();
    for name in ["a", "b"] {
        let answer = http
            .put(format!(
                "{base}/subscriptions/s/resourceGroups/{name}?api-version=2025-04-01"
            ))
            .bearer_auth(&bearer)
            .json(&json!({"location": "westeurope"}))
            .send()
            .await
            .unwrap();
        let header = answer.headers()["x-ms-ratelimit-remaining-subscription-writes"]
            .to_str()
            .unwrap()
            .to_owned();
        remaining.push(header);
    }
    assert_eq!(remaining, ["199", "198"]);

    let server = format!("{base}/subscriptions/s/resourceGroups/a/providers/Microsoft.DBforPostgreSQL/flexibleServers/pg?api-version=2025-08-01");
    let answer = http
        .put(&server)
        .bearer_auth(&bearer)
        .json(&json!({"location": "westeurope", "properties": {"administratorLoginPassword": "pg-s3cret"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    assert!(answer.headers().contains_key("azure-asyncoperation"));
    assert!(answer.headers().contains_key("location"));
    let record = standin
        .records()
        .into_iter()
        .find(|r| r.path.ends_with("/flexibleServers/pg"))
        .unwrap();
    assert_eq!(
        record.body["properties"]["administratorLoginPassword"],
        "<redacted>"
    );
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let faults = kombiform_arm_standin::Faults::parse("latency=40ms").unwrap();
    let standin = StandIn::start(Config {
        faults,
        ..Config::default()
    })
    .await
    .unwrap();
    let http = http_client(standin.ca_pem()).unwrap();
    let base = standin.url();
    let bearer = token(&http, &base).await.unwrap();
    for _ in 0..3 {
        let answer = http
            .get(format!("{base}/subscriptions/s?api-version=2021-01-01"))
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200);
    }
    // Sequential requests: each arrives after the previous answer, which waited 40 ms.
    let records = standin.records();
    for pair in records.windows(2) {
        assert!(pair[1].at_ms >= pair[0].at_ms + 40, "{pair:?}");
    }
    assert_eq!(records.len(), 4);
}
