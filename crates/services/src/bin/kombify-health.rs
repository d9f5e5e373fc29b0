//! `kombify-health`: serves `GET /health` and `GET /ready` for the platform's dependencies,
//! configured by `generated/<env>/services/health.json` (`--config PATH`).
//!
//! Thin: arguments, JSON logs to stderr, config and secrets, bind, serve until SIGINT/SIGTERM.
//! Everything else is `kombiform_services::health`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use kombiform_model::services::HealthConfig;
use kombiform_services::{health, http, server};

/// Readiness and liveness endpoints for the kombify platform.
#[derive(Parser)]
#[command(name = "kombify-health", version)]
struct Args {
    /// Path of the service configuration, e.g. generated/local/services/health.json.
    #[arg(long)]
    config: PathBuf,
    /// Listen on this address instead of the configured one (e.g. 127.0.0.1:0).
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    limits: server::LimitArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    http::init_logging();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "kombify-health failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let config: HealthConfig = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", args.config.display()))?;
    let readiness = health::from_config(&config, &http::resolve_secret_allow_empty)?;
    let addr = match args.listen {
        Some(addr) => addr,
        None => format!("{}:{}", config.listen.address, config.listen.port)
            .parse()
            .with_context(|| format!("listen address {:?}", config.listen.address))?,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!(
        listen = %local,
        checks = ?readiness.names().collect::<Vec<_>>(),
        check_timeout_ms = config.check_timeout_ms,
        cache_ttl_ms = config.cache_ttl_ms,
        "kombify-health listening"
    );
    server::serve(
        listener,
        health::edge::app(readiness),
        args.limits.limits(),
        http::shutdown_signal(),
    )
    .await;
    tracing::info!("kombify-health stopped");
    Ok(())
}
