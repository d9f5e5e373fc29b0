//! `kombify-sso`: reads its configuration (`generated/<env>/services/sso.json`) and secrets from
//! the environment, then serves. Thin: all logic is in `kombiform_services::sso`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use kombiform_model::services::SsoConfig;
use kombiform_services::{http, server, sso};

/// The kombify SSO service.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Path of sso.json.
    #[arg(long)]
    config: PathBuf,
    /// Listen on this address instead of the configured one (e.g. 127.0.0.1:0).
    #[arg(long)]
    listen: Option<String>,
    #[command(flatten)]
    limits: server::LimitArgs,
}

#[tokio::main]
async fn main() -> Result<()> {
    http::init_logging();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let config: SsoConfig = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", args.config.display()))?;
    let addr = args
        .listen
        .unwrap_or_else(|| format!("{}:{}", config.listen.address, config.listen.port));
    let service = Arc::new(sso::Sso::new(config, |name| std::env::var(name).ok())?);
    service.warm_up().await;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!(address = %local, "kombify-sso listening");
    sso::serve(
        listener,
        service,
        args.limits.limits(),
        http::shutdown_signal(),
    )
    .await;
    tracing::info!("kombify-sso stopped");
    Ok(())
}
