//! Load benchmark of `kombify-sso` (harness = false): starts PostgreSQL, PocketBase, a fake
//! Zitadel and the service (the SSO test environment, included by path), creates known users,
//! then sends exchanges for KNOWN users open loop at a fixed schedule (default 200 requests/s
//! for 30 s) and reports p50, p99 and max latency (measured from each request's scheduled
//! time, so queueing counts) and the error count. Target: p99 < 25 ms.
//!
//! `SSO_LOAD_RPS` and `SSO_LOAD_SECONDS` override the rate and duration. Not a test: it asserts
//! nothing, it measures.

// A benchmark reports its figures on standard output.
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![allow(dead_code)]

#[path = "../tests/it/sso_env.rs"]
mod sso_env;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use sso_env::SsoEnv;

/// globex's Zitadel org (800 seats in the local data).
const GLOBEX_ORG: &str = "284715550000000002";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<()> {
    let rps = env_u64("SSO_LOAD_RPS", 200);
    // `cargo test --all-targets` runs this without `--bench`: a short smoke run then.
    let full = std::env::args().any(|a| a == "--bench");
    let seconds = env_u64("SSO_LOAD_SECONDS", if full { 30 } else { 2 });
    let users = 20;
    eprintln!("starting PostgreSQL, PocketBase, fake Zitadel and kombify-sso …");
    let env = Arc::new(SsoEnv::start(30)?);

    let tokens: Vec<String> = (0..users)
        .map(|i| env.token(&format!("5{i:017}"), GLOBEX_ORG))
        .collect();
    for t in &tokens {
        let (status, _, body) = env.exchange_blocking(t);
        if status != 200 {
            bail!("creating a known user answered {status}: {body}");
        }
    }
    // Warm-up: connections, prepared statements, PocketBase caches.
    for t in tokens.iter().cycle().take(200) {
        env.exchange_blocking(t);
    }

    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let total = rps * seconds;
    let interval = Duration::from_secs_f64(1.0 / rps as f64);
    eprintln!("sending {total} exchanges for {users} known users at {rps}/s for {seconds} s (open loop) …");
    let results: Vec<(Duration, u16)> = client.block_on(async {
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let mut handles = Vec::with_capacity(total as usize);
        for i in 0..total {
            let scheduled = start + interval * i as u32;
            tokio::time::sleep_until(scheduled).await;
            let env = Arc::clone(&env);
            let token = tokens[(i % users) as usize].clone();
            handles.push(tokio::spawn(async move {
                let r = env
                    .http
                    .post(format!("{}/api/internal/sso/exchange", env.url))
                    .bearer_auth(&token)
                    .send()
                    .await;
                let status = match r {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => 0,
                };
                (scheduled.elapsed(), status)
            }));
        }
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            if let Ok(r) = h.await {
                out.push(r);
            }
        }
        out
    });
    let started = Instant::now();
    let errors = results.iter().filter(|(_, s)| *s != 200).count();
    let mut latencies: Vec<Duration> = results.iter().map(|(d, _)| *d).collect();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "sso_load: {} requests at {rps}/s for {seconds} s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, errors {errors} (target p99 < 25 ms)",
        latencies.len(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    let _ = started;
    drop(client);
    match Arc::try_unwrap(env) {
        Ok(env) => drop(env),
        Err(_) => eprintln!("environment still referenced; servers stop at exit"),
    }
    Ok(())
}
